/* ckpt.h — HDF5 checkpoint files: a P-independent layout, per-dataset checksums,
 * parallel writes of row-sharded tables, atomic commit and rotation.
 *
 * This module knows HDF5, files and directories; it does not know what a model
 * is. The trainer (train/) decides which datasets a checkpoint holds (schema in
 * docs/checkpoint.md) and calls the generic writers/readers below.
 *
 * File layout (every checkpoint):
 *   /            attributes: magic "MPIREC-CKPT", format_version (int), created (string)
 *   /meta        attributes written with mr_ckpt_write_attr_* (step, epoch, ...)
 *   any dataset  attribute "checksum" (uint64): see below
 * Datasets are 1-D or 2-D arrays of float32, int64, uint64, float64 or uint8.
 * Strings (vocabularies) are stored as a uint8 byte blob plus an int64 offsets
 * array [n+1], so they can be written in parallel and read by h5py as
 * bytes[off[i]:off[i+1]].
 *
 * Checksum of a dataset: the wrapping sum over its rows i (a 1-D dataset is read as
 * rows of one element) of mix(i, fnv1a64(row bytes)) — order-independent, so it can
 * be computed by the ranks that hold the rows, combined with one allreduce, and it
 * does not depend on the rank count.
 *
 * Row-sharded tables: row i lives on rank i mod P (dist/). mr_ckpt_write_rows
 * writes each rank's rows with a strided hyperslab, collectively (MPI-IO).
 * Replicated data is written by rank 0 (the others take part in the collective
 * calls with an empty selection).
 *
 * Atomic commit (mr_ckpt_writer_commit): close the file collectively, fsync it,
 * rename ckpt-<step>.h5.tmp to ckpt-<step>.h5, fsync the directory, then write
 * `latest` (the file name) through a temporary file + rename + directory fsync,
 * then delete checkpoints beyond the newest `keep`. A crash at any point leaves
 * either the previous `latest` or the new one, both pointing at complete files.
 */
#ifndef MPIREC_CKPT_H
#define MPIREC_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/err.h"

#define MR_CKPT_MAGIC "MPIREC-CKPT"
#define MR_CKPT_VERSION 1

typedef enum MrDType { MR_F32 = 0, MR_F64, MR_I64, MR_U64, MR_U8 } MrDType;

typedef struct MrCkptWriter MrCkptWriter;
typedef struct MrCkptReader MrCkptReader;

/* ---- writing (all Collective over comm) ------------------------------------- */

/* Create DIR/ckpt-<step>.h5.tmp (DIR is created by rank 0 if missing). `magic` and
 * `version` identify the file kind (checkpoints use MR_CKPT_MAGIC/MR_CKPT_VERSION;
 * the index module reuses this writer with its own magic). */
int mr_ckpt_writer_open(MrCkptWriter **w, MrComm *comm, const char *dir, const char *basename,
                        const char *magic, int version, MrErr *e);
/* Attributes under /meta (every rank passes the same value; rank 0's is written). */
int mr_ckpt_write_attr_i64(MrCkptWriter *w, const char *name, int64_t v, MrErr *e);
int mr_ckpt_write_attr_f64(MrCkptWriter *w, const char *name, double v, MrErr *e);
int mr_ckpt_write_attr_str(MrCkptWriter *w, const char *name, const char *v, MrErr *e);
/* A dataset held whole by rank 0 (data ignored on other ranks). path may contain
 * groups ("params/dense"); they are created as needed. dims[1] = 0 for 1-D. */
int mr_ckpt_write_root(MrCkptWriter *w, const char *path, MrDType t, int64_t rows, int64_t cols,
                       const void *data, MrErr *e);
/* A [rows x cols] dataset whose rows are spread over the ranks: this rank holds
 * n_local rows, global row of local row k = first + k * stride (row-sharded tables:
 * first = rank, stride = P; contiguous ranges: first = lo, stride = 1). */
int mr_ckpt_write_rows(MrCkptWriter *w, const char *path, MrDType t, int64_t rows, int64_t cols,
                       int64_t first, int64_t stride, int64_t n_local, const void *data, MrErr *e);
/* A string table split into contiguous ranges: this rank holds strings
 * [lo, lo + n_local) of `total`, as bytes + offsets (offsets relative to its own
 * bytes, n_local + 1 entries). Writes <path>/bytes and <path>/offsets. */
int mr_ckpt_write_strings(MrCkptWriter *w, const char *path, int64_t total, int64_t lo,
                          int64_t n_local, const char *bytes, const int64_t *offsets, MrErr *e);
/* Close, fsync, rename to <basename>.h5 in DIR, fsync DIR. When `latest` is not
 * NULL, point DIR/<latest> at it and keep the newest `keep` files matching
 * <prefix>-<step>.h5 (checkpoints: latest = "latest", prefix "ckpt"). Frees w. */
int mr_ckpt_writer_commit(MrCkptWriter **w, const char *latest, int keep, MrErr *e);
/* Remove the .tmp file and free w (after a failure, on every rank). */
void mr_ckpt_writer_abort(MrCkptWriter **w);

/* ---- reading ------------------------------------------------------------- */

/* Open a file for reading. comm = NULL: serial (plain HDF5); otherwise collective
 * with MPI-IO. Checks the magic and version (MR_EFORMAT with a hint otherwise). */
int mr_ckpt_open(MrCkptReader **r, MrComm *comm, const char *path, const char *magic,
                 int version, MrErr *e);
void mr_ckpt_close(MrCkptReader **r);
/* Verify every dataset's checksum (Collective when opened with a comm: the rows
 * are split over the ranks). MR_EFORMAT names the first bad dataset. */
int mr_ckpt_verify(MrCkptReader *r, MrErr *e);
int mr_ckpt_read_attr_i64(MrCkptReader *r, const char *name, int64_t *v, MrErr *e);
int mr_ckpt_read_attr_f64(MrCkptReader *r, const char *name, double *v, MrErr *e);
/* Attribute string into a malloc'd buffer (caller frees). */
int mr_ckpt_read_attr_str(MrCkptReader *r, const char *name, char **v, MrErr *e);
/* Dimensions of a dataset (cols = 0 for 1-D); MR_EFORMAT if missing. */
int mr_ckpt_dims(MrCkptReader *r, const char *path, int64_t *rows, int64_t *cols, MrErr *e);
int mr_ckpt_exists(MrCkptReader *r, const char *path);
/* Read a whole dataset into data (caller sized it from mr_ckpt_dims). */
int mr_ckpt_read_all(MrCkptReader *r, const char *path, MrDType t, void *data, MrErr *e);
/* Read rows first, first + stride, ... (n of them) into data. */
int mr_ckpt_read_rows(MrCkptReader *r, const char *path, MrDType t, int64_t first, int64_t stride,
                      int64_t n, void *data, MrErr *e);
/* Read an arbitrary list of rows (need not be sorted; duplicates allowed). */
int mr_ckpt_read_row_list(MrCkptReader *r, const char *path, MrDType t, const int64_t *rows,
                          int64_t n, void *data, MrErr *e);
/* Read strings [lo, lo + n) of a string table: malloc'd bytes and n + 1 offsets
 * relative to them (caller frees both). */
int mr_ckpt_read_strings(MrCkptReader *r, const char *path, int64_t lo, int64_t n, char **bytes,
                         int64_t **offsets, MrErr *e);

/* ---- run directories (no MPI; rank 0 calls these) ----------------------------- */

/* The newest checkpoint in DIR that opens and verifies: `latest` first, then the
 * other ckpt-<step>.h5 files by decreasing step. Skipped files are reported in
 * `skipped` (text, may be NULL). *path = "" (and MR_OK) when there is none. */
int mr_ckpt_find_latest(const char *dir, char *path, size_t n, char *skipped, size_t skipped_n,
                        MrErr *e);

/* The checksum function, exposed for tests and for the index module. */
uint64_t mr_ckpt_row_checksum(int64_t row, const void *bytes, size_t n);

#endif
