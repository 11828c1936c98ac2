/* ckpt.h — HDF5 checkpoint files: a P-independent layout, per-dataset checksums,
 * parallel writes of row-sharded tables, atomic commit and rotation.
 *
 * This module knows HDF5, files and directories; it does not know what a model
 * is. The trainer (train/) decides which datasets a checkpoint holds (schema in
 * docs/checkpoint.md) and calls the generic writers/readers below.
 *
 * File layout (every checkpoint; the full description is docs/checkpoint.md):
 *   bytes 0..511 user block: an ASCII header "MPIREC-FILE 1" with the file kind,
 *                its total size and a digest of every byte after the user block
 *                (HDF5 tools skip a user block; h5dump and h5py read the file as is)
 *   /            attributes: magic "MPIREC-CKPT", format_version (int64), created
 *                (string, UTC), writer (string)
 *   /meta        attributes written with mr_ckpt_write_attr_* (step, epoch, ...)
 *   any dataset  attribute "checksum" (uint64): see below
 * Datasets are 1-D or 2-D arrays of float32, int64, uint64, float64 or uint8,
 * little-endian, contiguous and uncompressed unless mr_ckpt_writer_set_deflate.
 * Strings (attributes) are fixed-length, NUL-terminated, UTF-8.
 * Strings (vocabularies) are stored as a uint8 byte blob plus an int64 offsets
 * array [n+1], so they can be written in parallel and read by h5py as
 * bytes[off[i]:off[i+1]].
 *
 * Checksum of a dataset: the wrapping sum over its rows i (a 1-D dataset is read as
 * rows of one element) of mix(i, fnv1a64(row bytes)) — order-independent, so it can
 * be computed by the ranks that hold the rows, combined with one allreduce, and it
 * does not depend on the rank count.
 *
 * Row-sharded tables: row i lives on rank i mod P (dist/). With P > 1 the file
 * is written through MPI-IO: strided rows (mr_ckpt_write_rows with stride > 1)
 * are first moved, in windows of P x 16 MiB, to the rank owning their part of
 * the window (one alltoallv per window, arithmetic on every rank's
 * first/stride/n, so exact coverage is checked too), and every rank writes one
 * contiguous block per window; replicated data is written by rank 0 (the others
 * take part with an empty selection). With P = 1 (or comm = NULL) HDF5's POSIX
 * driver writes the same file. Temporary memory: about 2 x 16 MiB per rank,
 * kept until the writer or reader is freed.
 *
 * Atomic commit (mr_ckpt_writer_commit): reserve the file's space (fallocate,
 * so that a full disk fails cleanly before HDF5 could hang or MPI-IO lose data),
 * close collectively, check on every rank that the bytes it wrote are in the
 * file (P > 1: read back, compared with a hash taken while writing), hash the
 * file for the header digest, fsync, write the header, rename
 * ckpt-<step>.h5.tmp to ckpt-<step>.h5, fsync the directory, then write `latest`
 * (the file name) through a temporary file + rename + directory fsync, then
 * delete checkpoints beyond the newest `keep`. A crash at any point leaves either
 * the previous `latest` or the new one, both pointing at complete files.
 *
 * Corruption: the per-dataset checksums catch damaged data; the user-block digest
 * catches a damaged byte anywhere else (HDF5 metadata, padding) and truncation.
 * HDF5's own error printing is switched off; its error stack becomes MrErr text.
 * HDF5 1.10 may leak a few KB when it parses damaged metadata: find_latest and
 * verify never let it parse a file whose digest fails.
 *
 * Fault injection (tests): the environment variable MPIREC_FAULT_INJECT, read at
 * mr_ckpt_writer_open, holds comma-separated items
 *   ckpt_write_after:N[@R]   dataset writes on rank R (every rank if omitted) fail
 *                            with EIO once this writer has written more than N bytes
 *                            of dataset data on that rank (N = 0: the first write)
 *   ckpt_commit:STAGE[@R]    commit fails at STAGE = close | fsync | rename | latest;
 *                            STAGE = lose flips the first byte rank R wrote after
 *                            the close, like a write MPI-IO lost without an error
 *                            (the read-back check of P > 1 runs must catch it)
 * An injected failure behaves like a real one: the error names the file, the
 * ranks agree on it, the .tmp is removed, the previous checkpoint and `latest`
 * stay as they were. MPIREC_CKPT_SLAB=BYTES (tests) shrinks the 64 MiB transfer
 * slabs so that small tables exercise the multi-slab and multi-window paths;
 * every rank must see the same value.
 */
#ifndef MPIREC_CKPT_H
#define MPIREC_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/err.h"

#define MR_CKPT_MAGIC   "MPIREC-CKPT"
#define MR_CKPT_VERSION 1

/* Size of the user block that holds the mpirec header (bytes 0..511). */
#define MR_CKPT_USERBLOCK 512
/* Name of the run-directory lock file (mr_ckpt_dir_lock). */
#define MR_CKPT_LOCK_NAME "mpirec.lock"

typedef enum MrDType { MR_F32 = 0, MR_F64, MR_I64, MR_U64, MR_U8 } MrDType;

typedef struct MrCkptWriter MrCkptWriter;
typedef struct MrCkptReader MrCkptReader;
typedef struct MrCkptLock MrCkptLock;

/* Bytes of one element of t (4, 8, 8, 8, 1). */
size_t mr_ckpt_dtype_size(MrDType t);
/* "float32", "float64", "int64", "uint64", "uint8". */
const char *mr_ckpt_dtype_name(MrDType t);

/* ---- writing (all Collective over comm; comm = NULL: one process, plain HDF5) ---- */

/* Create DIR/<basename>.h5.tmp (DIR is created by rank 0 if missing; a stale .tmp
 * of the same name is replaced). `magic` and `version` identify the file kind
 * (checkpoints use MR_CKPT_MAGIC/MR_CKPT_VERSION; the index module reuses this
 * writer with its own magic, comm = NULL on rank 0). On failure *w is NULL. */
int mr_ckpt_writer_open(MrCkptWriter **w, MrComm *comm, const char *dir, const char *basename,
                        const char *magic, int version, MrErr *e);
/* Store the datasets written from now on chunked (about 1 MiB chunks) with the
 * shuffle + deflate filters at `level` (1..9; 0 = contiguous, the default).
 * Measured in docs/checkpoint.md: float tables barely compress and writing gets
 * slower, so checkpoints leave it off. Every rank passes the same level. */
void mr_ckpt_writer_set_deflate(MrCkptWriter *w, int level);
/* Attributes under /meta (every rank passes the same value; rank 0's is written;
 * writing a name again replaces the value). */
int mr_ckpt_write_attr_i64(MrCkptWriter *w, const char *name, int64_t v, MrErr *e);
int mr_ckpt_write_attr_f64(MrCkptWriter *w, const char *name, double v, MrErr *e);
int mr_ckpt_write_attr_str(MrCkptWriter *w, const char *name, const char *v, MrErr *e);
/* A dataset held whole by rank 0 (data ignored on other ranks). path may contain
 * groups ("params/dense"); they are created as needed. cols = 0 for 1-D. Every
 * rank passes the same path, t, rows and cols. */
int mr_ckpt_write_root(MrCkptWriter *w, const char *path, MrDType t, int64_t rows, int64_t cols,
                       const void *data, MrErr *e);
/* A [rows x cols] dataset whose rows are spread over the ranks: this rank holds
 * n_local rows, global row of local row k = first + k * stride (row-sharded tables:
 * first = rank, stride = P; contiguous ranges: first = lo, stride = 1). The n_local
 * of all ranks must add up to rows (each row written once). */
int mr_ckpt_write_rows(MrCkptWriter *w, const char *path, MrDType t, int64_t rows, int64_t cols,
                       int64_t first, int64_t stride, int64_t n_local, const void *data, MrErr *e);
/* A string table split into contiguous ranges: this rank holds strings
 * [lo, lo + n_local) of `total`, as bytes + offsets (offsets relative to its own
 * bytes, n_local + 1 entries). Writes <path>/bytes and <path>/offsets. */
int mr_ckpt_write_strings(MrCkptWriter *w, const char *path, int64_t total, int64_t lo,
                          int64_t n_local, const char *bytes, const int64_t *offsets, MrErr *e);
/* Reserve, close, check, digest, fsync, write the header, rename to
 * <basename>.h5 in DIR, fsync DIR (see the top of this file). When `latest` is
 * not NULL, point DIR/<latest> at it and keep the newest
 * `keep` files matching <prefix>-<step>.h5, where basename = <prefix>-<step>
 * (checkpoints: latest = "latest", basename "ckpt-<step>"; keep <= 0 keeps all;
 * stale <prefix>-<step>.h5.tmp files are removed too). Always frees w and sets
 * *w = NULL. On failure before the rename the .tmp is removed and neither the
 * previous files nor `latest` are touched; if only updating `latest` fails, the
 * new file stays complete beside the old `latest`. A failed earlier write makes
 * commit fail with that error. Failing to delete an old file is only logged. */
int mr_ckpt_writer_commit(MrCkptWriter **w, const char *latest, int keep, MrErr *e);
/* Remove the .tmp file and free w (after a failure, on every rank: Collective
 * unless comm was NULL). Accepts NULL and *w == NULL. */
void mr_ckpt_writer_abort(MrCkptWriter **w);

/* ---- reading ------------------------------------------------------------- */

/* Open a file for reading. comm = NULL: serial (plain HDF5); otherwise collective
 * (MPI-IO when P > 1), and then EVERY function below is Collective (all ranks
 * call it in the same order; they may ask for different rows, and all return the
 * same code). Checks the header (size: truncation), the magic and version
 * (MR_EFORMAT with a hint otherwise); magic = NULL accepts any "MPIREC-" kind and
 * any version. Does not read the whole file (mr_ckpt_verify does). MR_EIO when
 * the file cannot be opened at all. */
int mr_ckpt_open(MrCkptReader **r, MrComm *comm, const char *path, const char *magic, int version,
                 MrErr *e);
/* Collective when opened with a comm. Accepts NULL and *r == NULL. */
void mr_ckpt_close(MrCkptReader **r);
/* Verify the header digest, then every dataset's checksum (the bytes and rows
 * are split over the ranks). MR_EFORMAT: a digest mismatch stops there (HDF5
 * does not parse a damaged file; the message says `mpirec inspect` names the
 * dataset), a checksum mismatch names the dataset; files without a header
 * (written by other tools) get the dataset checks only. Reads all the data:
 * mr_ckpt_read_all (and read_strings of a whole table) verify what they read,
 * read_rows and read_row_list do not. */
int mr_ckpt_verify(MrCkptReader *r, MrErr *e);
int mr_ckpt_read_attr_i64(MrCkptReader *r, const char *name, int64_t *v, MrErr *e);
int mr_ckpt_read_attr_f64(MrCkptReader *r, const char *name, double *v, MrErr *e);
/* Attribute string into a malloc'd buffer (caller frees). */
int mr_ckpt_read_attr_str(MrCkptReader *r, const char *name, char **v, MrErr *e);
/* Dimensions of a dataset (cols = 0 for 1-D); MR_EFORMAT if missing. */
int mr_ckpt_dims(MrCkptReader *r, const char *path, int64_t *rows, int64_t *cols, MrErr *e);
/* 1 when the object (dataset or group) exists, else 0. */
int mr_ckpt_exists(MrCkptReader *r, const char *path);
/* Read a whole dataset into data (caller sized it from mr_ckpt_dims) and check
 * its checksum. The stored type must be t (MR_EFORMAT otherwise). */
int mr_ckpt_read_all(MrCkptReader *r, const char *path, MrDType t, void *data, MrErr *e);
/* Read rows first, first + stride, ... (n of them) into data. With P > 1 and
 * strided requests covering at least half the table (a sharded table read back
 * at any P), the ranks read contiguous blocks and exchange rows (the mirror of
 * the windowed write); otherwise each rank reads its own selection. */
int mr_ckpt_read_rows(MrCkptReader *r, const char *path, MrDType t, int64_t first, int64_t stride,
                      int64_t n, void *data, MrErr *e);
/* Read an arbitrary list of rows (need not be sorted; duplicates allowed).
 * Nearby rows are read as one range (gaps up to 64 KiB). */
int mr_ckpt_read_row_list(MrCkptReader *r, const char *path, MrDType t, const int64_t *rows,
                          int64_t n, void *data, MrErr *e);
/* Read strings [lo, lo + n) of a string table: malloc'd bytes and n + 1 offsets
 * relative to them (caller frees both; bytes is NUL-terminated after the last
 * string for convenience). The number of strings is rows(<path>/offsets) - 1. */
int mr_ckpt_read_strings(MrCkptReader *r, const char *path, int64_t lo, int64_t n, char **bytes,
                         int64_t **offsets, MrErr *e);

/* ---- run directories (no MPI; rank 0 calls these) ----------------------------- */

/* The newest checkpoint in DIR that opens and verifies: `latest` first, then the
 * other ckpt-<step>.h5 files by decreasing step. Skipped files are reported in
 * `skipped` (text "<name>: <reason>; ...", may be NULL). *path = "" (and MR_OK)
 * when there is none, also when DIR does not exist. MR_EIO when DIR cannot be
 * read. Reads every candidate whole (verification). */
int mr_ckpt_find_latest(const char *dir, char *path, size_t n, char *skipped, size_t skipped_n,
                        MrErr *e);

/* Take the run-directory lock DIR/mpirec.lock (DIR is created if missing) with
 * flock(2): a second job using the same DIR gets MR_EIO with a message naming the
 * holder (host, pid, SLURM job id, start time and owner_text, which may be NULL).
 * The kernel drops the lock when its process dies, so a killed or requeued job
 * never blocks its successor; the stale owner record is simply overwritten.
 * Take it on one process per job (rank 0). *lock is NULL on failure. */
int mr_ckpt_dir_lock(const char *dir, const char *owner_text, MrCkptLock **lock, MrErr *e);
/* Release the lock and free it. Accepts NULL and *lock == NULL. */
void mr_ckpt_dir_unlock(MrCkptLock **lock);

/* ---- inspection (no MPI; `mpirec inspect` formats the report) ---------------- */

typedef enum MrCkptValueKind {
    MR_CKPT_VAL_INT = 0, /* i */
    MR_CKPT_VAL_FLOAT,   /* f */
    MR_CKPT_VAL_STRING,  /* s */
    MR_CKPT_VAL_OTHER,   /* s holds a description of the type */
    MR_CKPT_VAL_UINT     /* u: unsigned 64-bit (checksums) */
} MrCkptValueKind;

typedef struct MrCkptAttrInfo {
    char *name; /* "/format_version", "/meta/step": group + name */
    MrCkptValueKind kind;
    int64_t i;
    uint64_t u;
    double f;
    char *s; /* string value (or type description) */
} MrCkptAttrInfo;

typedef struct MrCkptDatasetInfo {
    char *path;     /* "/params/user" */
    char dtype[32]; /* "float32", ..., or a description of another type */
    int ndims;
    int64_t dims[8]; /* first ndims used (at most 8 recorded) */
    char layout[48]; /* "contiguous", "chunked+deflate", ... */
    int has_checksum;
    uint64_t stored;   /* the checksum attribute */
    uint64_t computed; /* valid when status >= 0 */
    int status;        /* 1 verified, 0 checksum mismatch, -1 not checked or error */
    char *error;       /* NULL, or why it could not be checked */
} MrCkptDatasetInfo;

typedef struct MrCkptReport {
    char *path;
    int64_t file_bytes;   /* size on disk */
    int header;           /* 1 mpirec header present, 0 no user block, -1 damaged */
    int64_t header_bytes; /* size the header records */
    uint64_t digest_stored, digest_computed;
    int digest_status;     /* 1 verified, 0 mismatch, -1 not checked */
    char magic[64];        /* "" when missing */
    int64_t version;       /* -1 when missing */
    MrCkptAttrInfo *attrs; /* root attributes, then /meta attributes */
    int64_t nattrs;
    MrCkptDatasetInfo *datasets; /* every dataset, by path */
    int64_t ndatasets;
    int ok; /* 1 when nothing is wrong */
} MrCkptReport;

/* Describe and (verify != 0) verify a file written with this module's conventions
 * (checkpoint, index, or any HDF5 file with the checksum attributes). Fills as
 * much of rep as it can read even when the file is damaged; then returns
 * MR_EFORMAT with the first problem in e (and rep->ok = 0). MR_EIO when the file
 * cannot be opened. rep is always safe to free. */
int mr_ckpt_inspect(const char *path, int verify, MrCkptReport *rep, MrErr *e);
void mr_ckpt_report_free(MrCkptReport *rep);

/* ---- checksums ----------------------------------------------------------------- */

/* The checksum function, exposed for tests and for the index module:
 * mr_mix(row, fnv1a64(bytes[0..n))) (hash.h). */
uint64_t mr_ckpt_row_checksum(int64_t row, const void *bytes, size_t n);
/* The checksum of n consecutive rows of row_bytes each, the first being global row
 * first_row: the wrapping sum of mr_ckpt_row_checksum over them (what the
 * "checksum" attribute of a whole dataset holds when first_row = 0). */
uint64_t mr_ckpt_checksum(int64_t first_row, const void *data, int64_t n, size_t row_bytes);

#endif
