/* ckpt_read.c — reading and verifying checkpoint (and index) files.
 *
 * Approach: before HDF5 sees a file, its 512-byte header is read with plain
 * POSIX calls: a file cut short (crash, full disk) is reported as truncated with
 * both sizes, and a file that was never committed (blank header) says so. Then
 * HDF5 opens it (MPI-IO when P > 1, with collective metadata reads, so every
 * read function is collective: all ranks open and close the same objects in the
 * same order, and agree on the outcome before returning).
 *
 * Verification checks the digest of the whole body first (each rank a share of
 * the 1 MiB blocks); on a mismatch it stops, so HDF5 never parses damaged
 * metadata here (it leaks, and could do worse). Then every dataset is read once,
 * each rank a contiguous share of the rows, and the sum of the row checksums is
 * compared with the stored attribute.
 *
 * Reads are cut into slabs of at most 64 MiB per rank. Contiguous selections use
 * independent transfers. Strided requests that cover the table (a row-sharded
 * table read back at any P) go through windows like the writes: every rank
 * reads one contiguous block and an alltoallv delivers each rank its rows, in
 * place. Sparse strided requests fall back to collective transfers. A row list
 * is sorted, nearby rows merged into ranges (gaps of up to 64 KiB are read and
 * dropped), and the rows scattered back to the caller's order.
 *
 * Not here: writing (ckpt_write.c), directories (ckpt_dir.c), the inspect
 * report (ckpt_inspect.c).
 */
#include "ckpt_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpirec/index.h"

#define GAP_BYTES ((int64_t)64 << 10)

struct MrCkptReader {
    MrComm *comm; /* borrowed; NULL: serial */
    int rank, size;
    hid_t file, dxpl_coll, dxpl_ind;
    char path[CK_PATH_MAX];
    int mpiio;          /* 1: MPI-IO driver (P > 1) */
    int header;         /* 1 mpirec header, 0 none */
    int digest_checked; /* the digest was verified at open */
    CkHeader hdr;
    int64_t file_size;
    char magic[64];
    int64_t version;
    CkBuf xblock, xsend; /* read_windowed's buffers, kept until close */
};

/* ---- header ---------------------------------------------------------------- */

int ck_check_header(const char *path, int *has, CkHeader *h, int64_t *size, MrErr *e)
{
    *has = 0;
    *size = 0;
    memset(h, 0, sizeof *h);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mr_err_set(e, MR_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return mr_err_set(e, MR_EIO, "cannot stat %s: %s", path, strerror(err));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return mr_err_set(e, MR_EIO, "%s is a directory, not a file", path);
    }
    *size = (int64_t)st.st_size;
    unsigned char ub[MR_CKPT_USERBLOCK];
    size_t want = *size < MR_CKPT_USERBLOCK ? (size_t)*size : MR_CKPT_USERBLOCK, got = 0;
    while (got < want) {
        ssize_t r = pread(fd, ub + got, want - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    int err = errno;
    close(fd);
    if (got < want)
        return mr_err_set(e, MR_EIO, "cannot read %s: %s", path, strerror(err));
    char why[256] = "";
    int p = ck_header_parse(ub, got, h, why, sizeof why);
    if (p < 0) {
        if (*size < MR_CKPT_USERBLOCK)
            return mr_err_set(e, MR_EFORMAT, "%s is truncated or not a checkpoint: %s", path, why);
        return mr_err_set(e, MR_EFORMAT, "%s is not a valid mpirec file: %s", path, why);
    }
    *has = p;
    if (p == 1 && h->bytes != *size) {
        if (*size < h->bytes)
            return mr_err_set(e, MR_EFORMAT,
                              "%s is truncated: %" PRId64 " of %" PRId64 " bytes (cut short by a "
                              "crash, a full disk or an incomplete copy)",
                              path, *size, h->bytes);
        return mr_err_set(e, MR_EFORMAT,
                          "%s has %" PRId64 " bytes but its header says %" PRId64
                          " (damaged or appended to)",
                          path, *size, h->bytes);
    }
    return MR_OK;
}

int ck_check_digest(MrComm *comm, const char *path, const CkHeader *h, uint64_t *computed, MrErr *e)
{
    if (h->block != CK_DIGEST_BLOCK)
        return mr_err_set(e, MR_EFORMAT,
                          "%s: digest block of %" PRId64 " bytes, expected %" PRId64
                          " (damaged header or another format)",
                          path, h->block, (int64_t)CK_DIGEST_BLOCK);
    uint64_t d = 0;
    int rc = ck_digest_file(comm, path, h->bytes, &d, e);
    if (rc)
        return rc;
    if (computed)
        *computed = d;
    if (d != h->digest)
        return mr_err_set(e, MR_EFORMAT,
                          "%s is corrupt: its digest does not match (stored %016" PRIx64
                          ", computed %016" PRIx64 "): some byte changed since it was written",
                          path, h->digest, d);
    return MR_OK;
}

/* ---- small HDF5 helpers ------------------------------------------------------ */

/* 1 when every component of path exists (H5Lexists needs the parents to exist). */
static int path_exists(hid_t file, const char *path)
{
    char buf[1100];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return 0;
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            htri_t ex = H5Lexists(file, buf, H5P_DEFAULT);
            if (ex <= 0) {
                H5Eclear2(H5E_DEFAULT);
                return 0;
            }
            if (!c)
                return 1;
            *p = c;
        }
    }
}

int ck_read_str_attr(hid_t obj, const char *name, char **out, MrErr *e)
{
    *out = NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return ck_h5_fail(e, MR_EFORMAT, "attribute %s", name);
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int rc = MR_OK;
    if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING ||
        H5Sget_simple_extent_npoints(sp) != 1) {
        rc = mr_err_set(e, MR_EFORMAT, "attribute %s is not a single string", name);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *v = NULL;
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
            H5Aread(a, mt, &v) < 0)
            rc = ck_h5_fail(e, MR_EFORMAT, "attribute %s", name);
        else if (!(*out = strdup(v ? v : "")))
            rc = mr_err_set(e, MR_ENOMEM, "out of memory reading attribute %s", name);
        if (v)
            H5free_memory(v);
        if (mt >= 0)
            H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *v = calloc(n + 1, 1);
        if (!v)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory reading attribute %s", name);
        else if (H5Aread(a, ft, v) < 0)
            rc = ck_h5_fail(e, MR_EFORMAT, "attribute %s", name);
        if (rc)
            free(v);
        else
            *out = v; /* NUL-padded or terminated: calloc'd n + 1 */
    }
    if (ft >= 0)
        H5Tclose(ft);
    if (sp >= 0)
        H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

typedef struct NameList {
    char **v;
    int64_t n, cap;
    int64_t links; /* links visited so far */
    int oom, too_deep;
} NameList;

/* Bounds of the walk. H5Lvisit (HDF5 1.10) only remembers groups it has seen when
 * their reference count is above 1, so a damaged file whose group links back to
 * itself with a count of 1 is walked forever (found by fuzz_ckpt). Our files nest
 * 3 levels deep and hold a few dozen links. */
#define CK_MAX_DEPTH 16
#define CK_MAX_LINKS 100000

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    NameList *l = data;
    int depth = 1;
    for (const char *p = name; *p; p++)
        depth += *p == '/';
    if (depth > CK_MAX_DEPTH || ++l->links > CK_MAX_LINKS) {
        l->too_deep = 1;
        return -1;
    }
    if (info->type != H5L_TYPE_HARD)
        return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0)
        return -1;
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds)
        return 0;
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 32;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    size_t len = strlen(name);
    char *s = malloc(len + 2);
    if (!s) {
        l->oom = 1;
        return -1;
    }
    s[0] = '/';
    memcpy(s + 1, name, len + 1);
    l->v[l->n++] = s;
    return 0;
}

void ck_free_names(char **names, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int ck_list_datasets(hid_t file, char ***names, int64_t *n, MrErr *e)
{
    NameList l;
    memset(&l, 0, sizeof l);
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, list_cb, &l) < 0) {
        ck_free_names(l.v, l.n);
        *names = NULL;
        *n = 0;
        if (l.oom) {
            H5Eclear2(H5E_DEFAULT);
            return mr_err_set(e, MR_ENOMEM, "out of memory listing datasets");
        }
        if (l.too_deep) {
            H5Eclear2(H5E_DEFAULT);
            return mr_err_set(e, MR_EFORMAT,
                              "cannot list the datasets: the group tree is deeper than %d levels "
                              "or has more than %d links (a damaged file, or a cycle of groups)",
                              CK_MAX_DEPTH, CK_MAX_LINKS);
        }
        return ck_h5_fail(e, MR_EFORMAT, "cannot list the datasets (damaged metadata?)");
    }
    *names = l.v;
    *n = l.n;
    return MR_OK;
}

/* Select rows r0 + k*stride (k < cnt) of a dataset with ndims dims (the row is
 * every later dimension) in fsp, and make the matching memory space. cnt = 0
 * selects nothing in either. */
static hid_t select_rows(hid_t fsp, int nd, const hsize_t *dims, int64_t r0, int64_t stride,
                         int64_t cnt)
{
    hsize_t start[H5S_MAX_RANK], str[H5S_MAX_RANK], count[H5S_MAX_RANK], block[H5S_MAX_RANK],
        md[H5S_MAX_RANK];
    for (int d = 0; d < nd; d++) {
        start[d] = 0;
        str[d] = 1;
        count[d] = 1;
        block[d] = dims[d];
        md[d] = dims[d];
    }
    start[0] = (hsize_t)r0;
    str[0] = (hsize_t)stride;
    count[0] = (hsize_t)cnt;
    block[0] = 1;
    md[0] = (hsize_t)(cnt > 0 ? cnt : 1);
    hid_t msp = H5Screate_simple(nd, md, NULL);
    if (msp < 0)
        return msp;
    herr_t s = cnt > 0 ? H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, str, count, block)
                       : (H5Sselect_none(fsp) < 0 ? -1 : H5Sselect_none(msp));
    if (s < 0) {
        H5Sclose(msp);
        return H5I_INVALID_HID;
    }
    return msp;
}

/* One H5Dread of rows r0 + k*stride (k < cnt) into buf (cnt may be 0). */
int ck_read_rows_once(hid_t ds, hid_t mt, int nd, const hsize_t *dims, int64_t r0, int64_t stride,
                      int64_t cnt, void *buf, hid_t dxpl)
{
    hid_t fsp = H5Dget_space(ds);
    if (fsp < 0)
        return -1;
    hid_t msp = select_rows(fsp, nd, dims, r0, stride, cnt);
    unsigned char dummy[16];
    int rc =
        !ck_h5_ok(msp) || !ck_h5_ok(H5Dread(ds, mt, msp, fsp, dxpl, cnt > 0 ? buf : (void *)dummy))
            ? -1
            : 0;
    if (msp >= 0)
        H5Sclose(msp);
    H5Sclose(fsp);
    return rc;
}

/* Rows per slab for rows of rb bytes. */
int ck_buf_reserve(CkBuf *b, size_t n)
{
    if (n <= b->n)
        return 0;
    void *p = realloc(b->p, n);
    if (!p)
        return -1;
    b->p = p;
    b->n = n;
    return 0;
}

void ck_buf_free(CkBuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

int64_t ck_window_rows(size_t rb)
{
    int64_t L = ck_slab_rows(rb), W = ((int64_t)16 << 20) / (int64_t)(rb ? rb : 1);
    if (W < 1)
        W = 1;
    return W < L ? W : L;
}

int64_t ck_slab_rows(size_t rb)
{
    /* MPIREC_CKPT_SLAB (bytes) shrinks the slabs so that tests with small
     * tables run the multi-slab and multi-window paths. */
    int64_t slab = CK_SLAB_BYTES;
    const char *env = getenv("MPIREC_CKPT_SLAB");
    if (env && atoll(env) > 0)
        slab = atoll(env);
    int64_t L = slab / (int64_t)(rb ? rb : 1);
    return L < 1 ? 1 : L;
}

int ck_dataset_checksum(hid_t file, MrComm *comm, hid_t dxpl, const char *file_path,
                        const char *path, int *has_stored, uint64_t *stored, uint64_t *computed,
                        MrErr *e)
{
    *has_stored = 0;
    *stored = *computed = 0;
    int P = comm ? comm->size : 1, me = comm ? comm->rank : 0;
    int rc = MR_OK;
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT), ft = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    unsigned char *buf = NULL;
    uint64_t sum = 0;
    if (ds < 0) {
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot open dataset %s", file_path, path);
        goto done;
    }
    /* The stored checksum: a uint64 scalar attribute. */
    htri_t ex = H5Aexists(ds, "checksum");
    if (ex < 0) {
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: dataset %s: cannot read its attributes", file_path,
                        path);
        goto done;
    }
    if (ex > 0) {
        hid_t a = H5Aopen(ds, "checksum", H5P_DEFAULT);
        hid_t at = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
        int bad = !ck_h5_ok(a) || !ck_h5_ok(at) || H5Tget_class(at) != H5T_INTEGER ||
                  H5Tget_size(at) != 8 || !ck_h5_ok(H5Aread(a, H5T_NATIVE_UINT64, stored));
        if (at >= 0)
            H5Tclose(at);
        if (a >= 0)
            H5Aclose(a);
        if (bad) {
            rc = ck_h5_fail(e, MR_EFORMAT, "%s: dataset %s: its checksum attribute is not a uint64",
                            file_path, path);
            goto done;
        }
        *has_stored = 1;
    }
    ft = H5Dget_type(ds);
    sp = H5Dget_space(ds);
    H5T_class_t cls = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        char what[64] = "unknown";
        if (ft >= 0)
            ck_type_describe(ft, what, sizeof what);
        rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s has type %s: no checksum convention for it",
                        file_path, path, what);
        goto done;
    }
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[H5S_MAX_RANK];
    if (nd < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: dataset %s: cannot read its shape", file_path, path);
        goto done;
    }
    size_t es = H5Tget_size(ft);
    if (nd == 0) {
        /* A scalar: one row of one element, read whole by rank 0. */
        unsigned char one[64];
        if (es > sizeof one) {
            rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s: element of %zu bytes", file_path, path,
                            es);
        } else if (me == 0) {
            if (H5Dread(ds, ft, H5S_ALL, H5S_ALL, dxpl, one) < 0)
                rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read dataset %s", file_path, path);
            else
                sum = mr_ckpt_row_checksum(0, one, es);
        }
        goto done;
    }
    int64_t rows = (int64_t)dims[0];
    size_t rb = es;
    for (int d = 1; d < nd; d++)
        rb *= (size_t)dims[d];
    int64_t a0 = rows * me / P, a1 = rows * (me + 1) / P;
    int64_t L = ck_slab_rows(rb);
    if (a1 > a0 && rb > 0) {
        int64_t want = a1 - a0 < L ? a1 - a0 : L;
        buf = malloc((size_t)want * rb);
        if (!buf) {
            rc = mr_err_set(e, MR_ENOMEM, "out of memory verifying %s", path);
            goto done;
        }
        for (int64_t r = a0; r < a1; r += L) {
            int64_t cnt = a1 - r < L ? a1 - r : L;
            if (ck_read_rows_once(ds, ft, nd, dims, r, 1, cnt, buf, dxpl) < 0) {
                rc = ck_h5_fail(e, MR_EFORMAT,
                                "%s: cannot read dataset %s (rows %" PRId64 " to %" PRId64 ")",
                                file_path, path, r, r + cnt - 1);
                break;
            }
            sum += ck_sum_rows(r, 1, buf, cnt, rb);
        }
    } else if (a1 > a0) {
        /* Zero-sized rows: each contributes mix(i, FNV offset basis). */
        sum = ck_sum_rows(a0, 1, "", a1 - a0, 0);
    }
done:
    free(buf);
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    if (ds >= 0)
        H5Dclose(ds);
    if ((rc = ck_agree(comm, rc, e)))
        return rc;
    if ((rc = ck_allreduce_u64_sum(comm, &sum, e)))
        return rc;
    *computed = sum;
    return MR_OK;
}

/* ---- open / close ------------------------------------------------------------- */

static int check_kind(MrCkptReader *r, const char *magic, int version, MrErr *e)
{
    char *m = NULL;
    int rc = MR_OK;
    htri_t ex = H5Aexists(r->file, "magic");
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return mr_err_set(e, MR_EFORMAT,
                          "%s has no 'magic' attribute: it is an HDF5 file, but not one written "
                          "by mpirec (hint: pass a checkpoint ckpt-<step>.h5 or an index file)",
                          r->path);
    }
    if ((rc = ck_read_str_attr(r->file, "magic", &m, e)))
        return mr_err_prefix(e, "%s", r->path);
    snprintf(r->magic, sizeof r->magic, "%s", m);
    free(m);
    if (magic ? strcmp(r->magic, magic) != 0 : strncmp(r->magic, "MPIREC-", 7) != 0) {
        const char *hint = "pass a checkpoint ckpt-<step>.h5 from a run's checkpoints/ directory";
        if (strcmp(r->magic, MR_INDEX_MAGIC) == 0)
            hint = "this is a candidate index (mpirec index writes it); pass a checkpoint "
                   "ckpt-<step>.h5 from a run's checkpoints/ directory";
        else if (magic && strcmp(magic, MR_INDEX_MAGIC) == 0)
            hint = "pass an index file written by `mpirec index` or by train (index.h5)";
        return mr_err_set(e, MR_EFORMAT, "%s is a '%s' file, expected '%s' (hint: %s)", r->path,
                          r->magic, magic ? magic : "MPIREC-*", hint);
    }
    if (r->header && strcmp(r->hdr.kind, r->magic) != 0)
        return mr_err_set(e, MR_EFORMAT,
                          "%s: its header says '%s' but the file says '%s' (damaged)", r->path,
                          r->hdr.kind, r->magic);
    hid_t a = H5Aopen(r->file, "format_version", H5P_DEFAULT);
    int64_t v = -1;
    int bad = !ck_h5_ok(a) || !ck_h5_ok(H5Aread(a, H5T_NATIVE_INT64, &v));
    if (a >= 0)
        H5Aclose(a);
    if (bad)
        return ck_h5_fail(e, MR_EFORMAT, "%s has no readable 'format_version' attribute", r->path);
    r->version = v;
    if (magic && v != version)
        return mr_err_set(e, MR_EFORMAT,
                          "%s has format version %" PRId64 ", this mpirec (%s) reads version %d "
                          "(hint: %s)",
                          r->path, v, MPIREC_VERSION, version,
                          v > version ? "it was written by a newer mpirec: use that version to "
                                        "read it, or start a new run"
                                      : "it was written by an older mpirec: use that version, "
                                        "or start a new run (there is no converter)");
    return MR_OK;
}

static int open_impl(MrCkptReader **rp, MrComm *comm, const char *path, const char *magic,
                     int version, int digest_first, MrErr *e)
{
    ck_h5_quiet();
    *rp = NULL;
    MrCkptReader *r = calloc(1, sizeof *r);
    int rc = r ? MR_OK : mr_err_set(e, MR_ENOMEM, "out of memory opening %s", path);
    if (r) {
        r->comm = comm;
        r->rank = comm ? comm->rank : 0;
        r->size = comm ? comm->size : 1;
        r->file = r->dxpl_coll = r->dxpl_ind = H5I_INVALID_HID;
        r->version = -1;
        if (snprintf(r->path, sizeof r->path, "%s", path) >= (int)sizeof r->path)
            rc = mr_err_set(e, MR_EIO, "path too long: %s", path);
        if (!rc)
            rc = ck_check_header(path, &r->header, &r->hdr, &r->file_size, e);
    }
    if ((rc = ck_agree(comm, rc, e))) {
        free(r);
        return rc;
    }
    if (digest_first && r->header) {
        rc = ck_check_digest(comm, path, &r->hdr, NULL, e);
        if (rc) {
            /* HDF5 never parses a file known to be damaged on this path. */
            if (rc == MR_EFORMAT && e) {
                size_t len = strlen(e->msg);
                snprintf(e->msg + len, sizeof e->msg - len,
                         " (`mpirec inspect` on it shows which dataset)");
            }
            free(r);
            return rc;
        }
        r->digest_checked = 1;
    }
    /* One rank needs no MPI-IO: HDF5's POSIX driver reads the same file. */
    int mpiio = comm && comm->size > 1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    int bad = fapl < 0;
    if (!bad && mpiio) {
        MPI_Comm mc = *(MPI_Comm *)mr_comm_raw(comm);
        bad = H5Pset_fapl_mpio(fapl, mc, MPI_INFO_NULL) < 0 ||
              H5Pset_all_coll_metadata_ops(fapl, 1) < 0;
    }
    if (!bad) {
        r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        bad = r->file < 0;
    }
    if (bad)
        rc = ck_h5_fail(e, MR_EFORMAT, "%s cannot be opened as HDF5 (damaged metadata?)", path);
    if (fapl >= 0)
        H5Pclose(fapl);
    r->mpiio = mpiio;
    if (!rc) {
        hid_t fcpl = H5Fget_create_plist(r->file);
        hsize_t ub = 0;
        if (fcpl < 0 || H5Pget_userblock(fcpl, &ub) < 0)
            rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read its creation properties", path);
        else if (ub != (hsize_t)(r->header ? MR_CKPT_USERBLOCK : 0))
            rc = mr_err_set(e, MR_EFORMAT,
                            "%s: HDF5 user block of %llu bytes does not match its "
                            "header (damaged)",
                            path, (unsigned long long)ub);
        if (fcpl >= 0)
            H5Pclose(fcpl);
    }
    if (!rc)
        rc = check_kind(r, magic, version, e);
    if (!rc) {
        r->dxpl_coll = H5Pcreate(H5P_DATASET_XFER);
        r->dxpl_ind = H5Pcreate(H5P_DATASET_XFER);
        if (r->dxpl_coll < 0 || r->dxpl_ind < 0 ||
            (mpiio && (H5Pset_dxpl_mpio(r->dxpl_coll, H5FD_MPIO_COLLECTIVE) < 0 ||
                       H5Pset_dxpl_mpio(r->dxpl_ind, H5FD_MPIO_INDEPENDENT) < 0)))
            rc = ck_h5_fail(e, MR_EINTERNAL, "transfer properties");
    }
    if ((rc = ck_agree(comm, rc, e))) {
        mr_ckpt_close(&r);
        return rc;
    }
    *rp = r;
    return MR_OK;
}

int mr_ckpt_open(MrCkptReader **r, MrComm *comm, const char *path, const char *magic, int version,
                 MrErr *e)
{
    return open_impl(r, comm, path, magic, version, 0, e);
}

/* For ckpt_dir.c: open a candidate after checking its digest (no HDF5 parsing of
 * a damaged file). */
int ck_open_checked(MrCkptReader **r, const char *path, const char *magic, int version, MrErr *e)
{
    return open_impl(r, NULL, path, magic, version, 1, e);
}

void mr_ckpt_close(MrCkptReader **rp)
{
    if (!rp || !*rp)
        return;
    MrCkptReader *r = *rp;
    *rp = NULL;
    if (r->dxpl_coll >= 0)
        H5Pclose(r->dxpl_coll);
    if (r->dxpl_ind >= 0)
        H5Pclose(r->dxpl_ind);
    if (r->file >= 0 && H5Fclose(r->file) < 0)
        H5Eclear2(H5E_DEFAULT);
    ck_buf_free(&r->xblock);
    ck_buf_free(&r->xsend);
    free(r);
}

/* ---- verify ---------------------------------------------------------------------- */

static int verify_datasets(MrCkptReader *r, MrErr *e)
{
    char **names = NULL;
    int64_t n = 0;
    int rc = ck_list_datasets(r->file, &names, &n, e);
    if (rc)
        mr_err_prefix(e, "%s", r->path);
    if ((rc = ck_agree(r->comm, rc, e))) {
        ck_free_names(names, n);
        return rc;
    }
    for (int64_t i = 0; i < n && !rc; i++) {
        int has = 0;
        uint64_t stored = 0, computed = 0;
        rc = ck_dataset_checksum(r->file, r->comm, r->dxpl_ind, r->path, names[i], &has, &stored,
                                 &computed, e);
        if (!rc && !has)
            rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s has no checksum attribute", r->path,
                            names[i]);
        else if (!rc && stored != computed)
            rc = mr_err_set(e, MR_EFORMAT,
                            "%s is corrupt: checksum mismatch in dataset %s (stored %016" PRIx64
                            ", computed %016" PRIx64 ")",
                            r->path, names[i], stored, computed);
    }
    ck_free_names(names, n);
    return rc; /* already agreed: every step above is */
}

int mr_ckpt_verify(MrCkptReader *r, MrErr *e)
{
    ck_h5_quiet();
    int rc = MR_OK;
    if (r->header && !r->digest_checked) {
        /* The digest first, and nothing more on a mismatch: HDF5 1.10 leaks (and
         * may worse) when it parses damaged metadata, and this runs inside
         * long-lived processes. `mpirec inspect` names the damaged dataset. */
        rc = ck_check_digest(r->comm, r->path, &r->hdr, NULL, e);
        if (rc == MR_EFORMAT && e) {
            size_t len = strlen(e->msg);
            snprintf(e->msg + len, sizeof e->msg - len,
                     " (`mpirec inspect` on it shows which dataset)");
        }
        if (rc)
            return rc;
    }
    return verify_datasets(r, e);
}

/* ---- attributes ---------------------------------------------------------------- */

static int meta_attr_open(MrCkptReader *r, const char *name, hid_t *g, hid_t *a, MrErr *e)
{
    *g = *a = H5I_INVALID_HID;
    if (!path_exists(r->file, "/meta"))
        return mr_err_set(e, MR_EFORMAT, "%s has no /meta group", r->path);
    *g = H5Gopen2(r->file, "/meta", H5P_DEFAULT);
    if (*g < 0)
        return ck_h5_fail(e, MR_EFORMAT, "%s: cannot open /meta", r->path);
    htri_t ex = H5Aexists(*g, name);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return mr_err_set(e, MR_EFORMAT, "%s: attribute /meta/%s is missing", r->path, name);
    }
    *a = H5Aopen(*g, name, H5P_DEFAULT);
    if (*a < 0)
        return ck_h5_fail(e, MR_EFORMAT, "%s: cannot open attribute /meta/%s", r->path, name);
    return MR_OK;
}

static int read_num_attr(MrCkptReader *r, const char *name, H5T_class_t want, hid_t mt, void *v,
                         MrErr *e)
{
    ck_h5_quiet();
    hid_t g, a;
    int rc = meta_attr_open(r, name, &g, &a, e);
    if (!rc) {
        hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
        if (t < 0 || sp < 0 || H5Tget_class(t) != want || H5Sget_simple_extent_npoints(sp) != 1)
            rc = mr_err_set(e, MR_EFORMAT, "%s: attribute /meta/%s is not a single %s", r->path,
                            name, want == H5T_INTEGER ? "integer" : "float");
        else if (!ck_h5_ok(H5Aread(a, mt, v)))
            rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read attribute /meta/%s", r->path, name);
        if (t >= 0)
            H5Tclose(t);
        if (sp >= 0)
            H5Sclose(sp);
    }
    if (a >= 0)
        H5Aclose(a);
    if (g >= 0)
        H5Gclose(g);
    return ck_agree(r->comm, rc, e);
}

int mr_ckpt_read_attr_i64(MrCkptReader *r, const char *name, int64_t *v, MrErr *e)
{
    return read_num_attr(r, name, H5T_INTEGER, H5T_NATIVE_INT64, v, e);
}

int mr_ckpt_read_attr_f64(MrCkptReader *r, const char *name, double *v, MrErr *e)
{
    return read_num_attr(r, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v, e);
}

int mr_ckpt_read_attr_str(MrCkptReader *r, const char *name, char **v, MrErr *e)
{
    ck_h5_quiet();
    *v = NULL;
    hid_t g, a;
    int rc = meta_attr_open(r, name, &g, &a, e);
    if (a >= 0)
        H5Aclose(a);
    if (!rc && (rc = ck_read_str_attr(g, name, v, e)))
        mr_err_prefix(e, "%s: /meta", r->path);
    if (g >= 0)
        H5Gclose(g);
    if ((rc = ck_agree(r->comm, rc, e))) {
        free(*v);
        *v = NULL;
    }
    return rc;
}

/* ---- datasets -------------------------------------------------------------------- */

/* Open a 1-D or 2-D dataset of type t (t < 0: any of ours). */
static int open_ds(MrCkptReader *r, const char *path_in, int t, hid_t *ds, int64_t *rows,
                   int64_t *cols, char *path, size_t pn, MrErr *e)
{
    *ds = H5I_INVALID_HID;
    int rc = ck_norm_path(path_in, path, pn, e);
    if (rc)
        return rc;
    if (!path_exists(r->file, path))
        return mr_err_set(e, MR_EFORMAT, "%s: dataset %s is missing", r->path, path);
    *ds = H5Dopen2(r->file, path, H5P_DEFAULT);
    if (*ds < 0)
        return ck_h5_fail(e, MR_EFORMAT, "%s: cannot open dataset %s", r->path, path);
    hid_t sp = H5Dget_space(*ds), ft = H5Dget_type(*ds);
    hsize_t d[H5S_MAX_RANK];
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (nd < 1 || nd > 2 || H5Sget_simple_extent_dims(sp, d, NULL) < 0) {
        rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s is not a 1-D or 2-D array", r->path, path);
    } else {
        *rows = (int64_t)d[0];
        *cols = nd == 2 ? (int64_t)d[1] : 0;
        if (nd == 2 && d[1] == 0)
            rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s has 0 columns", r->path, path);
    }
    if (!rc && t >= 0 && (ft < 0 || !ck_type_is(ft, (MrDType)t))) {
        char what[64] = "unknown";
        if (ft >= 0)
            ck_type_describe(ft, what, sizeof what);
        rc = mr_err_set(e, MR_EFORMAT, "%s: dataset %s holds %s, expected %s", r->path, path, what,
                        mr_ckpt_dtype_name((MrDType)t));
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    return rc;
}

static int stored_checksum(MrCkptReader *r, hid_t ds, const char *path, uint64_t *v, MrErr *e)
{
    hid_t a = H5Aopen(ds, "checksum", H5P_DEFAULT);
    int bad = !ck_h5_ok(a) || !ck_h5_ok(H5Aread(a, H5T_NATIVE_UINT64, v));
    if (a >= 0)
        H5Aclose(a);
    if (bad)
        return ck_h5_fail(e, MR_EFORMAT, "%s: dataset %s has no readable checksum attribute",
                          r->path, path);
    return MR_OK;
}

int mr_ckpt_dims(MrCkptReader *r, const char *path, int64_t *rows, int64_t *cols, MrErr *e)
{
    ck_h5_quiet();
    hid_t ds;
    char p[1024];
    int64_t R = 0, C = 0;
    int rc = open_ds(r, path, -1, &ds, &R, &C, p, sizeof p, e);
    if (ds >= 0)
        H5Dclose(ds);
    if ((rc = ck_agree(r->comm, rc, e)))
        return rc;
    *rows = R;
    *cols = C;
    return MR_OK;
}

int mr_ckpt_exists(MrCkptReader *r, const char *path)
{
    ck_h5_quiet();
    char p[1024];
    if (ck_norm_path(path, p, sizeof p, NULL))
        return 0;
    return path_exists(r->file, p);
}

/* Contiguous rows [a, b) into data, in slabs, independent transfers. */
static int read_range(MrCkptReader *r, hid_t ds, MrDType t, int nd, const hsize_t *dims, int64_t a,
                      int64_t b, void *data)
{
    size_t rb = mr_ckpt_dtype_size(t) * (nd == 2 ? (size_t)dims[1] : 1);
    int64_t L = ck_slab_rows(rb);
    for (int64_t k = a; k < b; k += L) {
        int64_t cnt = b - k < L ? b - k : L;
        if (ck_read_rows_once(ds, ck_mem_type(t), nd, dims, k, 1, cnt,
                              (unsigned char *)data + (size_t)(k - a) * rb, r->dxpl_ind) < 0)
            return -1;
    }
    return 0;
}

int mr_ckpt_read_all(MrCkptReader *r, const char *path_in, MrDType t, void *data, MrErr *e)
{
    ck_h5_quiet();
    hid_t ds;
    char path[1024];
    int64_t rows = 0, cols = 0;
    int rc = open_ds(r, path_in, (int)t, &ds, &rows, &cols, path, sizeof path, e);
    uint64_t stored = 0, sum = 0;
    int nd = cols ? 2 : 1;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    size_t rb = mr_ckpt_dtype_size(t) * (size_t)(cols ? cols : 1);
    if (!rc && rows > 0 && !data)
        rc = mr_err_set(e, MR_EINTERNAL, "reading %s: NULL buffer", path);
    if (!rc)
        rc = stored_checksum(r, ds, path, &stored, e);
    if (!rc && read_range(r, ds, t, nd, dims, 0, rows, data) < 0)
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read dataset %s", r->path, path);
    if (!rc && rows > 0) {
        /* Every rank holds all rows; each hashes its share. */
        int64_t a0 = rows * r->rank / r->size, a1 = rows * (r->rank + 1) / r->size;
        sum = ck_sum_rows(a0, 1, (const unsigned char *)data + (size_t)a0 * rb, a1 - a0, rb);
    }
    if (ds >= 0)
        H5Dclose(ds);
    if ((rc = ck_agree(r->comm, rc, e)))
        return rc;
    if ((rc = ck_allreduce_u64_sum(r->comm, &sum, e)))
        return rc;
    if (sum != stored)
        return mr_err_set(e, MR_EFORMAT,
                          "%s is corrupt: checksum mismatch in dataset %s (stored %016" PRIx64
                          ", computed %016" PRIx64 ")",
                          r->path, path, stored, sum);
    return MR_OK;
}

/* Strided rows of many ranks (a row-sharded table read at P ranks): windows of
 * P x 16 MiB of rows; in each, every rank reads one contiguous block
 * (independent I/O) and an alltoallv hands each rank the rows of its
 * progression. A rank's rows in consecutive blocks are consecutive in its
 * output, so they arrive in place. The mirror of write_windowed. */
static int read_windowed(MrCkptReader *r, hid_t ds, MrDType t, int nd, const hsize_t *dims,
                         int64_t rows, size_t rb, const Prog *prog, void *data, MrErr *e)
{
    int P = r->size, me = r->rank;
    int64_t Wn = (int64_t)P * ck_window_rows(rb);
    int64_t maxblk = (Wn + P - 1) / P + 1;
    int64_t *sb = malloc((size_t)P * 2 * sizeof *sb), *rbytes = sb ? sb + P : NULL;
    int rc = sb && ck_buf_reserve(&r->xblock, (size_t)maxblk * rb) == 0
                 ? MR_OK
                 : mr_err_set(e, MR_ENOMEM, "out of memory reading %s", r->path);
    /* The largest send of any window, reserved before the first exchange: inside
     * the loop the alltoallv is the only point where the ranks wait for each
     * other; a failed read is agreed on at the end. */
    int64_t maxsend = 0, k0;
    for (int64_t a = 0; a < rows; a += Wn) {
        int64_t b = a + Wn < rows ? a + Wn : rows, ta, tb, total = 0;
        window_block(a, b, me, P, &ta, &tb);
        for (int q = 0; q < P; q++)
            total += prog_range(&prog[q], ta, tb, &k0) * (int64_t)rb;
        maxsend = total > maxsend ? total : maxsend;
    }
    if (!rc && ck_buf_reserve(&r->xsend, (size_t)maxsend + 1) != 0)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory reading %s", r->path);
    unsigned char *block = r->xblock.p, *send = r->xsend.p;
    if ((rc = ck_agree(r->comm, rc, e)))
        goto done;
    int lrc = MR_OK;
    for (int64_t a = 0; a < rows; a += Wn) {
        int64_t b = a + Wn < rows ? a + Wn : rows, ta, tb;
        window_block(a, b, me, P, &ta, &tb);
        if (!lrc && tb > ta &&
            ck_read_rows_once(ds, ck_mem_type(t), nd, dims, ta, 1, tb - ta, block, r->dxpl_ind) < 0)
            lrc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read rows %" PRId64 "..%" PRId64, r->path,
                             ta, tb - 1);
        /* What each rank wants from my block. */
        for (int q = 0; q < P; q++)
            sb[q] = prog_range(&prog[q], ta, tb, &k0) * (int64_t)rb;
        unsigned char *o = send;
        for (int q = 0; q < P; q++) {
            int64_t n = prog_range(&prog[q], ta, tb, &k0);
            if (n > 0 && prog[q].stride == 1) {
                memcpy(o, block + (size_t)(prog[q].first + k0 - ta) * rb, (size_t)n * rb);
                o += (size_t)n * rb;
            } else {
                for (int64_t k = k0; k < k0 + n; k++, o += rb)
                    memcpy(o, block + (size_t)(prog[q].first + k * prog[q].stride - ta) * rb, rb);
            }
        }
        /* What I get from each block, in block order = my k order. */
        int64_t K0 = -1;
        for (int s = 0; s < P; s++) {
            int64_t sa, sz;
            window_block(a, b, s, P, &sa, &sz);
            int64_t n = prog_range(&prog[me], sa, sz, &k0);
            rbytes[s] = n * (int64_t)rb;
            if (n > 0 && K0 < 0)
                K0 = k0;
        }
        unsigned char *dst = K0 < 0 ? NULL : (unsigned char *)data + (size_t)K0 * rb;
        if ((rc = mr_comm_alltoallv(r->comm, send, sb, dst, rbytes, e)))
            break;
    }
    rc = ck_agree(r->comm, rc ? rc : lrc, e);
done:
    free(sb);
    return rc;
}

int mr_ckpt_read_rows(MrCkptReader *r, const char *path_in, MrDType t, int64_t first,
                      int64_t stride, int64_t n, void *data, MrErr *e)
{
    ck_h5_quiet();
    hid_t ds;
    char path[1024];
    int64_t rows = 0, cols = 0;
    int rc = open_ds(r, path_in, (int)t, &ds, &rows, &cols, path, sizeof path, e);
    if (!rc && (n < 0 || stride < 1 || first < 0 || (n > 0 && first + (n - 1) * stride >= rows)))
        rc = mr_err_set(e, MR_EFORMAT,
                        "%s: dataset %s has %" PRId64 " rows; rows %" PRId64 " + k*%" PRId64
                        " for k < %" PRId64 " do not fit",
                        r->path, path, rows, first, stride, n);
    if (!rc && n > 0 && !data)
        rc = mr_err_set(e, MR_EINTERNAL, "reading %s: NULL buffer", path);
    size_t rb = mr_ckpt_dtype_size(t) * (size_t)(cols ? cols : 1);
    int64_t L = ck_slab_rows(rb);
    int nd = cols ? 2 : 1;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    if ((rc = ck_agree(r->comm, rc, e))) {
        if (ds >= 0)
            H5Dclose(ds);
        return rc;
    }
    /* Which way: decided from every rank's request, identically everywhere. */
    int P = r->size, windowed = 0, contiguous = 1;
    Prog *prog = NULL;
    int64_t niter = (n + L - 1) / L;
    if (r->mpiio) {
        prog = malloc((size_t)P * sizeof *prog);
        rc = prog ? MR_OK : mr_err_set(e, MR_ENOMEM, "out of memory reading %s", path);
        if (!(rc = ck_agree(r->comm, rc, e))) {
            Prog mine = {first, stride, n};
            rc = mr_comm_allgather(r->comm, &mine, sizeof mine, prog, e);
        }
        int64_t total = 0;
        for (int q = 0; !rc && q < P; q++) {
            total += prog[q].n;
            if (prog[q].stride > 1 && prog[q].n > 1) {
                windowed = 1;
                contiguous = 0;
            }
            if ((prog[q].n + L - 1) / L > niter)
                niter = (prog[q].n + L - 1) / L;
        }
        /* Whole blocks are read: worth it when the requests cover the table. */
        windowed = windowed && total >= rows / 2;
    }
    if (!rc && windowed) {
        rc = read_windowed(r, ds, t, nd, dims, rows, rb, prog, data, e);
    } else if (!rc) {
        /* Per rank contiguous (or one process): independent transfers, each rank
         * its own number of calls; sparse strided requests: collective, the same
         * number of calls everywhere. */
        hid_t dxpl = r->mpiio && !contiguous ? r->dxpl_coll : r->dxpl_ind;
        int64_t iters = r->mpiio && !contiguous ? niter : (n + L - 1) / L;
        for (int64_t it = 0; it < iters && !rc; it++) {
            int64_t k0 = it * L, cnt = n - k0 < L ? n - k0 : L;
            if (cnt < 0)
                cnt = 0;
            if (ck_read_rows_once(ds, ck_mem_type(t), nd, dims, first + k0 * stride, stride, cnt,
                                  cnt ? (unsigned char *)data + (size_t)k0 * rb : NULL, dxpl) < 0)
                rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read dataset %s", r->path, path);
            if (dxpl == r->dxpl_coll)
                rc = ck_agree(r->comm, rc, e);
        }
        rc = ck_agree(r->comm, rc, e);
    }
    free(prog);
    if (ds >= 0)
        H5Dclose(ds);
    return rc;
}

typedef struct RowRef {
    int64_t row, pos;
} RowRef;

static int cmp_rowref(const void *a, const void *b)
{
    const RowRef *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row ? 1 : (x->pos > y->pos) - (x->pos < y->pos);
}

int mr_ckpt_read_row_list(MrCkptReader *r, const char *path_in, MrDType t, const int64_t *rows_in,
                          int64_t n, void *data, MrErr *e)
{
    ck_h5_quiet();
    hid_t ds;
    char path[1024];
    int64_t rows = 0, cols = 0;
    RowRef *ref = NULL;
    unsigned char *tmp = NULL;
    int rc = open_ds(r, path_in, (int)t, &ds, &rows, &cols, path, sizeof path, e);
    size_t rb = mr_ckpt_dtype_size(t) * (size_t)(cols ? cols : 1);
    if (!rc && n < 0)
        rc = mr_err_set(e, MR_EINTERNAL, "reading %s: %" PRId64 " rows", path, n);
    if (!rc && n > 0 && (!data || !rows_in))
        rc = mr_err_set(e, MR_EINTERNAL, "reading %s: NULL buffer", path);
    for (int64_t i = 0; !rc && i < n; i++)
        if (rows_in[i] < 0 || rows_in[i] >= rows)
            rc = mr_err_set(e, MR_EFORMAT,
                            "%s: dataset %s has %" PRId64 " rows; row %" PRId64 " requested",
                            r->path, path, rows, rows_in[i]);
    if (!rc && n > 0) {
        ref = malloc((size_t)n * sizeof *ref);
        /* A merged range may span gaps: up to (n - 1)(gap + 1) + 1 rows, capped by
         * the slab (the greedy merge below never exceeds either). */
        int64_t L = ck_slab_rows(rb), g = GAP_BYTES / (int64_t)rb;
        int64_t span = n > L ? L : (n - 1) * (g + 1) + 1;
        if (span > L)
            span = L;
        tmp = malloc((size_t)span * rb);
        if (!ref || !tmp)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory reading %" PRId64 " rows of %s", n, path);
    }
    if (!rc && n > 0) {
        for (int64_t i = 0; i < n; i++) {
            ref[i].row = rows_in[i];
            ref[i].pos = i;
        }
        qsort(ref, (size_t)n, sizeof *ref, cmp_rowref);
        /* Greedy ranges: extend while the gap is small and the range fits a slab. */
        int64_t gap_rows = GAP_BYTES / (int64_t)rb, max_rows = ck_slab_rows(rb);
        int nd = cols ? 2 : 1;
        hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
        for (int64_t i = 0; i < n && !rc;) {
            int64_t a = ref[i].row, j = i + 1;
            while (j < n && ref[j].row - ref[j - 1].row <= gap_rows + 1 &&
                   ref[j].row - a + 1 <= max_rows)
                j++;
            int64_t b = ref[j - 1].row + 1;
            if (ck_read_rows_once(ds, ck_mem_type(t), nd, dims, a, 1, b - a, tmp, r->dxpl_ind) <
                0) {
                rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read dataset %s", r->path, path);
                break;
            }
            for (int64_t k = i; k < j; k++)
                memcpy((unsigned char *)data + (size_t)ref[k].pos * rb,
                       tmp + (size_t)(ref[k].row - a) * rb, rb);
            i = j;
        }
    }
    free(ref);
    free(tmp);
    if (ds >= 0)
        H5Dclose(ds);
    return ck_agree(r->comm, rc, e);
}

int mr_ckpt_read_strings(MrCkptReader *r, const char *path_in, int64_t lo, int64_t n, char **bytes,
                         int64_t **offsets, MrErr *e)
{
    ck_h5_quiet();
    *bytes = NULL;
    *offsets = NULL;
    char base[1024], po[1100], pb[1100], p1[1024], p2[1024];
    int rc = ck_norm_path(path_in, base, sizeof base, e);
    snprintf(po, sizeof po, "%s/offsets", base);
    snprintf(pb, sizeof pb, "%s/bytes", base);
    hid_t dso = H5I_INVALID_HID, dsb = H5I_INVALID_HID;
    int64_t orows = 0, ocols = 0, nbytes = 0, bcols = 0;
    int64_t *off = NULL;
    char *buf = NULL;
    uint64_t so = 0, sb = 0, co = 0, cb = 0;
    if (!rc)
        rc = open_ds(r, po, MR_I64, &dso, &orows, &ocols, p1, sizeof p1, e);
    if (!rc)
        rc = open_ds(r, pb, MR_U8, &dsb, &nbytes, &bcols, p2, sizeof p2, e);
    if (!rc && (ocols != 0 || bcols != 0 || orows < 1))
        rc = mr_err_set(e, MR_EFORMAT, "%s: string table %s: offsets/bytes are not 1-D", r->path,
                        base);
    int64_t total = orows - 1;
    if (!rc && (lo < 0 || n < 0 || lo + n > total))
        rc = mr_err_set(e, MR_EFORMAT,
                        "%s: string table %s has %" PRId64 " strings; [%" PRId64 ", %" PRId64
                        ") requested",
                        r->path, base, total, lo, lo + n);
    if (!rc) {
        off = malloc((size_t)(n + 1) * sizeof *off);
        if (!off)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory reading %s", base);
    }
    hsize_t od[1] = {(hsize_t)orows}, bd[1] = {(hsize_t)nbytes};
    if (!rc && read_range(r, dso, MR_I64, 1, od, lo, lo + n + 1, off) < 0)
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read %s", r->path, po);
    for (int64_t k = 0; !rc && k <= n; k++)
        if (off[k] < 0 || off[k] > nbytes || (k > 0 && off[k] < off[k - 1]))
            rc = mr_err_set(e, MR_EFORMAT,
                            "%s is corrupt: string table %s has a bad offset at entry %" PRId64,
                            r->path, base, lo + k);
    int64_t b0 = rc ? 0 : off[0], b1 = rc ? 0 : off[n];
    if (!rc) {
        buf = malloc((size_t)(b1 - b0) + 1);
        if (!buf)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory reading %s", base);
    }
    if (!rc && read_range(r, dsb, MR_U8, 1, bd, b0, b1, buf) < 0)
        rc = ck_h5_fail(e, MR_EFORMAT, "%s: cannot read %s", r->path, pb);
    /* The whole table read: verify both datasets (each rank hashes a share). */
    int whole = lo == 0 && n == total;
    if (!rc && whole && (b0 != 0 || b1 != nbytes))
        rc = mr_err_set(e, MR_EFORMAT,
                        "%s is corrupt: string table %s: offsets span bytes %" PRId64 "..%" PRId64
                        " of %" PRId64,
                        r->path, base, b0, b1, nbytes);
    if (!rc && whole) {
        rc = stored_checksum(r, dso, po, &so, e);
        if (!rc)
            rc = stored_checksum(r, dsb, pb, &sb, e);
        int64_t a0 = (n + 1) * r->rank / r->size, a1 = (n + 1) * (r->rank + 1) / r->size;
        co = ck_sum_rows(a0, 1, off + a0, a1 - a0, 8);
        a0 = nbytes * r->rank / r->size;
        a1 = nbytes * (r->rank + 1) / r->size;
        cb = ck_sum_rows(a0, 1, buf + a0, a1 - a0, 1);
    }
    if (dso >= 0)
        H5Dclose(dso);
    if (dsb >= 0)
        H5Dclose(dsb);
    rc = ck_agree(r->comm, rc, e);
    if (!rc && whole) {
        rc = ck_allreduce_u64_sum(r->comm, &co, e);
        if (!rc)
            rc = ck_allreduce_u64_sum(r->comm, &cb, e);
        if (!rc && (co != so || cb != sb))
            rc = mr_err_set(e, MR_EFORMAT,
                            "%s is corrupt: checksum mismatch in dataset %s (stored %016" PRIx64
                            ", computed %016" PRIx64 ")",
                            r->path, co != so ? po : pb, co != so ? so : sb, co != so ? co : cb);
    }
    if (rc) {
        free(off);
        free(buf);
        return rc;
    }
    for (int64_t k = 0; k <= n; k++)
        off[k] -= b0;
    buf[b1 - b0] = '\0';
    *bytes = buf;
    *offsets = off;
    return MR_OK;
}
