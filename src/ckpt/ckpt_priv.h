/* ckpt_priv.h — what the files of src/ckpt share and nobody else sees: the
 * HDF5 error capture, type mapping, the header (user block) format, the file
 * digest, fault injection and small POSIX helpers. */
#ifndef MPIREC_CKPT_PRIV_H
#define MPIREC_CKPT_PRIV_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "mpirec/ckpt.h"
#include "mpirec/comm.h"
#include "mpirec/err.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mpirec checkpoints hash little-endian bytes; a big-endian port must convert"
#endif

#define CK_PATH_MAX 4096
/* Digest block: the digest is a sum over 1 MiB blocks of the file body, so the
 * ranks can hash disjoint block ranges and add their sums. */
#define CK_DIGEST_BLOCK ((int64_t)1 << 20)
/* Most bytes one rank moves in one H5Dread/H5Dwrite call: bounds temporary
 * buffers and keeps every MPI-IO request far below the 2 GiB int limit. */
#define CK_SLAB_BYTES ((int64_t)64 << 20)
#define CK_HEADER_SIG "MPIREC-FILE 1\n"

/* ---- HDF5 ---- */
/* Switch off HDF5's automatic error printing (idempotent, cheap) and forget any
 * noted error. Every public entry point calls it first. */
void ck_h5_quiet(void);
/* Save a summary of the current HDF5 error stack (if none is saved yet): every
 * later HDF5 call clears the stack, so a failure followed by cleanup calls must
 * be noted at once. ck_h5_ok(v) is v >= 0, noting the stack when not. */
void ck_h5_note(void);
static inline int ck_h5_ok(int64_t v)
{
    if (v >= 0)
        return 1;
    ck_h5_note();
    return 0;
}
/* mr_err_set(e, code, "<fmt> (HDF5: <summary>)") from the noted summary or the
 * current stack; clears both. */
int ck_h5_fail(MrErr *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* File type (little-endian) and memory type of an MrDType. */
hid_t ck_file_type(MrDType t);
hid_t ck_mem_type(MrDType t);
/* 1 when the stored type `ft` is exactly t. */
int ck_type_is(hid_t ft, MrDType t);
/* "float32"... for our types, else a short description. */
void ck_type_describe(hid_t ft, char *buf, size_t n);
/* Normalise "a/b" or "/a/b" to "/a/b"; MR_EINTERNAL for empty, "//" or "..". */
int ck_norm_path(const char *in, char *out, size_t n, MrErr *e);

/* ---- checksums ---- */
/* Wrapping sum over n rows of row_bytes, row k of data being global row
 * first + k * stride. */
uint64_t ck_sum_rows(int64_t first, int64_t stride, const void *data, int64_t n, size_t row_bytes);
/* Sum of a uint64 over the ranks (exact mod 2^64; comm NULL: identity). */
int ck_allreduce_u64_sum(MrComm *comm, uint64_t *v, MrErr *e);

/* ---- header (user block) and digest ---- */
typedef struct CkHeader {
    char kind[64]; /* magic of the file */
    int64_t bytes; /* total file size */
    int64_t block; /* digest block size */
    uint64_t digest;
} CkHeader;
/* Render the 512-byte user block. */
void ck_header_format(const CkHeader *h, unsigned char ub[MR_CKPT_USERBLOCK]);
/* Parse: 1 ok, 0 no mpirec header (HDF5 signature at 0), -1 damaged/unknown
 * (why in `why`). */
int ck_header_parse(const unsigned char *ub, size_t n, CkHeader *h, char *why, size_t why_n);
/* Hash of one digest block (len <= CK_DIGEST_BLOCK bytes); also the fast hash of
 * the read-back check at commit (any length). */
uint64_t ck_block_hash(const unsigned char *p, size_t len);
/* Digest contribution of blocks [b0, b1) of the body of the open file fd (body =
 * bytes [MR_CKPT_USERBLOCK, size)). MR_EIO/MR_EFORMAT on read errors. */
int ck_digest_range(int fd, const char *path, int64_t size, int64_t b0, int64_t b1, uint64_t *sum,
                    MrErr *e);
/* Full digest of a file using every rank of comm (comm NULL: this process). */
int ck_digest_file(MrComm *comm, const char *path, int64_t size, uint64_t *digest, MrErr *e);

/* ---- fault injection (MPIREC_FAULT_INJECT) ---- */
typedef struct CkFault {
    int64_t write_after; /* -1: off */
    int commit_stage;    /* 0 none, else CK_STAGE_* */
    char text[128];      /* the item, for messages */
    char commit_text[128];
} CkFault;
enum { CK_STAGE_CLOSE = 1, CK_STAGE_FSYNC, CK_STAGE_RENAME, CK_STAGE_LATEST, CK_STAGE_LOSE };
/* Read the variable for this rank. MR_ECONFIG when malformed. */
int ck_fault_load(CkFault *f, int rank, MrErr *e);

/* ---- POSIX ---- */
int ck_mkdirs(const char *path, MrErr *e);
int ck_fsync_dir(const char *dir, MrErr *e);
/* dir + "/" + name into out; MR_EIO when too long. */
int ck_join(char *out, size_t n, const char *dir, const char *name, MrErr *e);
/* Write a small file atomically: tmp, fsync, rename, fsync dir. */
int ck_write_small_file(const char *dir, const char *name, const char *text, MrErr *e);

/* ---- row progressions and windows (the redistribution of strided rows) ---- */
/* One rank's rows of a dataset: first + k*stride, k < n. */
typedef struct Prog {
    int64_t first, stride, n;
} Prog;

/* How many of g's rows fall in [ta, tb), and the index k of the first one. */
static inline int64_t prog_range(const Prog *g, int64_t ta, int64_t tb, int64_t *k0)
{
    *k0 = 0;
    if (g->n <= 0 || tb <= ta || tb - 1 < g->first)
        return 0;
    int64_t lo = g->first >= ta ? 0 : (ta - g->first + g->stride - 1) / g->stride;
    int64_t hi = (tb - 1 - g->first) / g->stride;
    if (hi > g->n - 1)
        hi = g->n - 1;
    if (hi < lo)
        return 0;
    *k0 = lo;
    return hi - lo + 1;
}

/* Rank q's block of the window [a, b): [a + (b-a)q/P, a + (b-a)(q+1)/P). */
static inline void window_block(int64_t a, int64_t b, int q, int P, int64_t *ta, int64_t *tb)
{
    *ta = a + (b - a) * q / P;
    *tb = a + (b - a) * (q + 1) / P;
}

/* ---- reading internals (ckpt_read.c) ---- */
/* Check the user block of `path` with plain POSIX reads: *has = 1 (mpirec header,
 * and the size it records equals the size on disk), 0 (no user block). MR_EIO
 * when unreadable, MR_EFORMAT when truncated or damaged (*has = 1 and h filled
 * when only the size is wrong). *size: size on disk. */
int ck_check_header(const char *path, int *has, CkHeader *h, int64_t *size, MrErr *e);
/* Verify the digest of a file whose header was checked (comm may be NULL). */
int ck_check_digest(MrComm *comm, const char *path, const CkHeader *h, uint64_t *computed,
                    MrErr *e);
/* Every dataset of the file ("/a/b"), in name order, malloc'd (free each, then the
 * array). Hard links only. */
int ck_list_datasets(hid_t file, char ***names, int64_t *n, MrErr *e);
void ck_free_names(char **names, int64_t n);
/* A string attribute (fixed or variable length) of obj, malloc'd. */
int ck_read_str_attr(hid_t obj, const char *name, char **out, MrErr *e);
/* Checksum of dataset `path` as stored (*has_stored) and as computed from its
 * bytes; the rows are split over comm's ranks (NULL: all here). Integer and
 * float datasets of any rank (a row is everything but the first dimension). */
int ck_dataset_checksum(hid_t file, MrComm *comm, hid_t dxpl, const char *file_path,
                        const char *path, int *has_stored, uint64_t *stored, uint64_t *computed,
                        MrErr *e);

/* One H5Dread of rows r0 + k*stride (k < cnt; the row is every dimension after
 * the first) into buf with memory type mt. -1 on failure (error noted). */
int ck_read_rows_once(hid_t ds, hid_t mt, int nd, const hsize_t *dims, int64_t r0, int64_t stride,
                      int64_t cnt, void *buf, hid_t dxpl);
/* Rows per transfer slab for rows of rb bytes. */
int64_t ck_slab_rows(size_t rb);
/* Rows per rank per window of the strided-row redistribution: 16 MiB (smaller
 * than a slab: the exchange buffers are touched once and stay warm). */
int64_t ck_window_rows(size_t rb);

/* A buffer kept for the life of a writer or reader (fresh pages are costly to
 * touch: on the benchmark VM about 1 s per GB). */
typedef struct CkBuf {
    void *p;
    size_t n;
} CkBuf;
/* Grow to at least n bytes (keeps the contents). 0 on success, -1 out of memory. */
int ck_buf_reserve(CkBuf *b, size_t n);
void ck_buf_free(CkBuf *b);

/* Serial open of a candidate whose digest is checked before HDF5 parses it. */
int ck_open_checked(MrCkptReader **r, const char *path, const char *magic, int version, MrErr *e);

/* ---- directories (ckpt_dir.c) ---- */
/* Step of a name "<prefix>-<digits>.h5" (tmp = 0) or "<prefix>-<digits>.h5.tmp"
 * (tmp = 1): 1 and *step when it matches, else 0. */
int ck_parse_step(const char *name, const char *prefix, int tmp, int64_t *step);
/* Keep the newest `keep` files <prefix>-<step>.h5 of dir (and `current` always),
 * delete the rest and stale <prefix>-<step>.h5.tmp files other than current's.
 * Failures are logged, not returned. */
void ck_rotate(const char *dir, const char *prefix, const char *current, int keep);

/* Agree on a status over comm (NULL: return status unchanged). */
int ck_agree(MrComm *comm, int status, MrErr *e);

#endif
