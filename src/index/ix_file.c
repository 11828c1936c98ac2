/* ix_file.c — INDEX.h5: write and read the candidate index (serial HDF5).
 *
 * Layout (docs/index.md has the full table), following the checkpoint module's
 * conventions so `mpirec inspect` can read and verify it:
 *   /                 attributes magic = "MPIREC-INDEX", format_version (int32),
 *                     created (UTC time, informative)
 *   /meta             attributes: parameters, provenance, self-measurement, and
 *                     meta_checksum (uint64) over all of them
 *   /emb              float32 [n x d]
 *   /ids/bytes        uint8 [total], /ids/offsets int64 [n + 1]
 *   /ivf/...          centroids, probe_bias, list_offsets, list_items, and when
 *                     quantized codes (uint8 [n x d], list order), code_scale,
 *                     code_offset
 * Every dataset has a uint64 attribute `checksum` (wrapping sum over rows of
 * mix(row, fnv1a64(row bytes))). Strings are written fixed-length, NUL-terminated
 * ASCII; the reader takes any string attribute (fixed or variable length, ASCII or
 * UTF-8 character set), so it also reads the magic of the checkpoint module's files
 * (UTF-8) and an index whose attributes were rewritten with h5py.
 *
 * Writing: a temporary file next to the target, closed, fsync'ed, renamed over the
 * target, then the directory fsync'ed: a reader sees the old file or the new one.
 * The file uses the HDF5 1.8+ object formats (libver low bound V18), whose
 * superblock and object headers carry checksums of their own, so a corrupted
 * metadata byte is caught by HDF5 itself; our checksums cover the data and the
 * /meta values. Reading validates every shape and offset against the metadata
 * before using it, so a file that passes the checksums but lies (or a bug in a
 * writer) still cannot make the search read out of bounds.
 *
 * HDF5's automatic error-stack printing is switched off (see hdf5_quiet), so
 * failures surface only as our MrErr text.
 *
 * Fuzzing builds (tests/fuzz, FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) still
 * compute the checksums but do not refuse a mismatch: a mutated file would
 * otherwise almost never get past them, and the checks behind them (shapes,
 * offsets, permutations, finiteness) are what must hold for a file that lies.
 */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "index/ix_internal.h"

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define CHECKSUMS_ENFORCED 0
#else
#define CHECKSUMS_ENFORCED 1
#endif

/* ---- the /meta attributes: one table for writer, reader and checksum ------------ */

typedef enum AKind { A_I64, A_F64, A_U64, A_STR } AKind;

enum {
    M_KIND,
    M_ITEMS,
    M_DIM,
    M_NLIST,
    M_NLIST_PARAM,
    M_NPROBE_PARAM,
    M_TARGET,
    M_ITERS,
    M_QUANT,
    M_RESCORE,
    M_SEED,
    M_AUGNORM,
    M_MODEL_HASH,
    M_SOURCE,
    M_SOURCE_STEP,
    M_K,
    M_QUERIES,
    M_RECALL,
    M_QPS_EXACT,
    M_QPS,
    M_NPROBE,
    M_THREADS,
    M_COUNT
};

static const struct {
    const char *name;
    AKind kind;
} META[M_COUNT] = {
    [M_KIND] = {"kind", A_STR},
    [M_ITEMS] = {"items", A_I64},
    [M_DIM] = {"dim", A_I64},
    [M_NLIST] = {"nlist", A_I64},
    [M_NLIST_PARAM] = {"nlist_param", A_I64},
    [M_NPROBE_PARAM] = {"nprobe_param", A_I64},
    [M_TARGET] = {"target_recall", A_F64},
    [M_ITERS] = {"kmeans_iters", A_I64},
    [M_QUANT] = {"quantize", A_I64},
    [M_RESCORE] = {"rescore", A_I64},
    [M_SEED] = {"seed", A_U64},
    [M_AUGNORM] = {"aug_norm", A_F64},
    [M_MODEL_HASH] = {"model_hash", A_U64},
    [M_SOURCE] = {"source", A_STR},
    [M_SOURCE_STEP] = {"source_step", A_I64},
    [M_K] = {"k", A_I64},
    [M_QUERIES] = {"queries", A_I64},
    [M_RECALL] = {"recall", A_F64},
    [M_QPS_EXACT] = {"qps_exact", A_F64},
    [M_QPS] = {"qps", A_F64},
    [M_NPROBE] = {"nprobe", A_I64},
    [M_THREADS] = {"threads", A_I64},
};

typedef struct MetaVal {
    int64_t i;
    double f;
    uint64_t u;
    char s[512];
} MetaVal;

static void meta_from_index(const MrIndex *ix, MetaVal *v)
{
    memset(v, 0, M_COUNT * sizeof *v);
    snprintf(v[M_KIND].s, sizeof v[M_KIND].s, "%s", ix->p.kind == MR_INDEX_IVF ? "ivf" : "exact");
    v[M_ITEMS].i = ix->n;
    v[M_DIM].i = ix->d;
    v[M_NLIST].i = ix->nlist;
    v[M_NLIST_PARAM].i = ix->p.nlist;
    v[M_NPROBE_PARAM].i = ix->p.nprobe;
    v[M_TARGET].f = ix->p.target_recall;
    v[M_ITERS].i = ix->p.kmeans_iters;
    v[M_QUANT].i = ix->p.quantize;
    v[M_RESCORE].i = ix->p.rescore;
    v[M_SEED].u = ix->p.seed;
    v[M_AUGNORM].f = ix->aug_norm;
    v[M_MODEL_HASH].u = ix->model_hash;
    snprintf(v[M_SOURCE].s, sizeof v[M_SOURCE].s, "%s", ix->source);
    v[M_SOURCE_STEP].i = ix->source_step;
    v[M_K].i = ix->stats.k;
    v[M_QUERIES].i = ix->stats.queries;
    v[M_RECALL].f = ix->stats.recall;
    v[M_QPS_EXACT].f = ix->stats.qps_exact;
    v[M_QPS].f = ix->stats.qps;
    v[M_NPROBE].i = ix->stats.nprobe;
    v[M_THREADS].i = ix->stats.threads;
}

/* Checksum of the /meta values: rows are the attributes, row bytes are the name,
 * a NUL, then the value (8 native bytes, or the string's bytes). */
static uint64_t meta_checksum(const MetaVal *v)
{
    uint64_t sum = 0;
    for (int j = 0; j < M_COUNT; j++) {
        char buf[600];
        size_t nl = strlen(META[j].name) + 1;
        memcpy(buf, META[j].name, nl);
        size_t len = nl;
        switch (META[j].kind) {
        case A_I64:
            memcpy(buf + nl, &v[j].i, 8);
            len += 8;
            break;
        case A_F64:
            memcpy(buf + nl, &v[j].f, 8);
            len += 8;
            break;
        case A_U64:
            memcpy(buf + nl, &v[j].u, 8);
            len += 8;
            break;
        case A_STR: {
            size_t sl = strnlen(v[j].s, sizeof v[j].s);
            memcpy(buf + nl, v[j].s, sl);
            len += sl;
            break;
        }
        }
        sum += ix_row_checksum(j, buf, len);
    }
    return sum;
}

/* ---- HDF5 helpers ------------------------------------------------------------------ */

/* HDF5's automatic error-stack printing goes off for the whole process and stays
 * off: mpirec reports HDF5 failures through MrErr only. It is deliberately not
 * restored after a call: HDF5 1.10 keeps some internal state after it met a
 * corrupt object header, and if printing is on when the library shuts down at
 * exit it then prints "HDF5: infinite loop closing library" plus a line of
 * interface names on stderr — after `mpirec` already reported a clean error. */
static void hdf5_quiet(void)
{
    if (H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0) {
        /* cannot happen with the default stack; if it does, HDF5 may print */
    }
}

static int close_id(hid_t id)
{
    if (id < 0)
        return 0;
    switch (H5Iget_type(id)) {
    case H5I_FILE:
        return H5Fclose(id) < 0;
    case H5I_GROUP:
        return H5Gclose(id) < 0;
    case H5I_DATASET:
        return H5Dclose(id) < 0;
    case H5I_DATASPACE:
        return H5Sclose(id) < 0;
    case H5I_DATATYPE:
        return H5Tclose(id) < 0;
    case H5I_ATTR:
        return H5Aclose(id) < 0;
    case H5I_GENPROP_LST:
        return H5Pclose(id) < 0;
    default:
        return 1;
    }
}

static hid_t str_type(size_t len)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_ASCII) < 0) {
        close_id(t);
        return -1;
    }
    return t;
}

static int wattr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR), a = -1;
    int bad = sp < 0;
    if (!bad) {
        a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
        bad = a < 0 || H5Awrite(a, mtype, v) < 0;
    }
    bad |= close_id(a);
    bad |= close_id(sp);
    return bad;
}

static int wattr_str(hid_t loc, const char *name, const char *s)
{
    hid_t t = str_type(strlen(s));
    int bad = t < 0 || wattr(loc, name, t, t, s);
    bad |= close_id(t);
    return bad;
}

/* A dataset [rows] (cols == 0) or [rows x cols] with its checksum attribute. */
static int wdset(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int64_t rows, int64_t cols,
                 size_t elem, const void *data)
{
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    hid_t sp = H5Screate_simple(cols ? 2 : 1, dims, NULL), ds = -1;
    int bad = sp < 0;
    if (!bad) {
        ds = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        bad = ds < 0;
    }
    if (!bad && rows > 0)
        bad = H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0;
    if (!bad) {
        uint64_t ck = ix_data_checksum(data, rows, elem * (size_t)(cols ? cols : 1));
        bad = wattr(ds, "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &ck);
    }
    bad |= close_id(ds);
    bad |= close_id(sp);
    return bad;
}

/* ---- save ---------------------------------------------------------------------------- */

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_file(const MrIndex *ix, const char *tmp, const char *path, MrErr *e)
{
    int rc = MR_OK;
    hid_t fapl = -1, f = -1, gm = -1, gi = -1, gv = -1;
    uint8_t *codes = NULL;
#define WFAIL(what)                                                                                \
    do {                                                                                           \
        rc = mr_err_set(e, MR_EIO,                                                                 \
                        "index file '%s': cannot write %s (HDF5 error; disk full or "              \
                        "no permission?)",                                                         \
                        path, what);                                                               \
        goto out;                                                                                  \
    } while (0)
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0)
        WFAIL("file access properties");
    /* Create the file ourselves first: errno then names the real reason. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = mr_err_set(e, MR_EIO, "index file '%s': cannot create temporary '%s': %s", path, tmp,
                        strerror(errno));
        goto out;
    }
    close(fd);
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0)
        WFAIL("the temporary file");
    int32_t ver = MR_INDEX_VERSION;
    char created[64];
    time_t now = time(NULL);
    struct tm tmv;
    if (!gmtime_r(&now, &tmv) || !strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tmv))
        snprintf(created, sizeof created, "unknown");
    if (wattr_str(f, "magic", MR_INDEX_MAGIC) ||
        wattr(f, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &ver) ||
        wattr_str(f, "created", created))
        WFAIL("root attributes");

    gm = H5Gcreate2(f, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (gm < 0)
        WFAIL("group /meta");
    MetaVal mv[M_COUNT];
    meta_from_index(ix, mv);
    for (int j = 0; j < M_COUNT; j++) {
        int bad = 0;
        switch (META[j].kind) {
        case A_I64:
            bad = wattr(gm, META[j].name, H5T_STD_I64LE, H5T_NATIVE_INT64, &mv[j].i);
            break;
        case A_F64:
            bad = wattr(gm, META[j].name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &mv[j].f);
            break;
        case A_U64:
            bad = wattr(gm, META[j].name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &mv[j].u);
            break;
        case A_STR:
            bad = wattr_str(gm, META[j].name, mv[j].s);
            break;
        }
        if (bad)
            WFAIL(META[j].name);
    }
    uint64_t mck = meta_checksum(mv);
    if (wattr(gm, "meta_checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &mck))
        WFAIL("meta_checksum");

    if (wdset(f, "emb", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ix->n, ix->d, sizeof(float), ix->emb))
        WFAIL("/emb");
    gi = H5Gcreate2(f, "ids", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (gi < 0 ||
        wdset(gi, "bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, ix->ids_off[ix->n], 0, 1, ix->ids) ||
        wdset(gi, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, ix->n + 1, 0, 8, ix->ids_off))
        WFAIL("/ids");
    if (ix->p.kind == MR_INDEX_IVF) {
        gv = H5Gcreate2(f, "ivf", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (gv < 0 ||
            wdset(gv, "centroids", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ix->nlist, ix->d,
                  sizeof(float), ix->centroids) ||
            wdset(gv, "probe_bias", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ix->nlist, 0, sizeof(float),
                  ix->probe_bias) ||
            wdset(gv, "list_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, ix->nlist + 1, 0, 8,
                  ix->list_off) ||
            wdset(gv, "list_items", H5T_STD_I64LE, H5T_NATIVE_INT64, ix->n, 0, 8, ix->list_items))
            WFAIL("/ivf");
        if (ix->p.quantize) {
            codes = ix_ivf_codes_flat(ix);
            if (!codes) {
                rc = mr_err_set(e, MR_ENOMEM, "index file '%s': no memory for the codes", path);
                goto out;
            }
            if (wdset(gv, "codes", H5T_STD_U8LE, H5T_NATIVE_UINT8, ix->n, ix->d, 1, codes) ||
                wdset(gv, "code_scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ix->d, 0, sizeof(float),
                      ix->code_scale) ||
                wdset(gv, "code_offset", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ix->d, 0, sizeof(float),
                      ix->code_offset))
                WFAIL("/ivf codes");
        }
    }
out:
#undef WFAIL
    free(codes);
    int bad = close_id(gv) | close_id(gi) | close_id(gm) | close_id(fapl);
    /* closing the file flushes it: a failure here is a failed write */
    bad |= close_id(f);
    if (bad && rc == MR_OK)
        rc = mr_err_set(e, MR_EIO,
                        "index file '%s': closing the temporary file failed "
                        "(disk full?)",
                        path);
    return rc;
}

int mr_index_save(const MrIndex *ix, const char *path, MrErr *e)
{
    if (!ix || !ix->emb || !path)
        return mr_err_set(e, MR_EUSAGE, "index save: no index or no path");
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 8), *dircopy = strdup(path);
    if (!tmp || !dircopy) {
        free(tmp);
        free(dircopy);
        return mr_err_set(e, MR_ENOMEM, "index save: no memory");
    }
    snprintf(tmp, pl + 8, "%s.tmp", path);
    hdf5_quiet();
    int rc = write_file(ix, tmp, path, e);
    if (rc == MR_OK && fsync_path(tmp, 0) != 0)
        rc = mr_err_set(e, MR_EIO, "index file '%s': fsync of '%s' failed: %s", path, tmp,
                        strerror(errno));
    if (rc == MR_OK && rename(tmp, path) != 0)
        rc = mr_err_set(e, MR_EIO, "index file '%s': cannot rename '%s' over it: %s", path, tmp,
                        strerror(errno));
    if (rc == MR_OK && fsync_path(dirname(dircopy), 1) != 0)
        rc = mr_err_set(e, MR_EIO, "index file '%s': fsync of its directory failed: %s", path,
                        strerror(errno));
    if (rc != MR_OK)
        unlink(tmp); /* may not exist; nothing to report */
    free(tmp);
    free(dircopy);
    return rc;
}

/* ---- load -------------------------------------------------------------------------- */

typedef struct Rd {
    hid_t f;
    const char *path;
    MrErr *e;
} Rd;

static int fmt(Rd *r, const char *what, const char *detail)
{
    return mr_err_set(r->e, MR_EFORMAT, "index file '%s': %s: %s", r->path, what, detail);
}

/* Open a scalar attribute and return its type (caller closes both). */
static int open_attr(Rd *r, hid_t loc, const char *name, hid_t *a, hid_t *t)
{
    *a = *t = -1;
    htri_t ex = H5Aexists(loc, name);
    if (ex <= 0)
        return fmt(r, name, ex < 0 ? "unreadable attribute" : "missing attribute");
    *a = H5Aopen(loc, name, H5P_DEFAULT);
    if (*a < 0)
        return fmt(r, name, "unreadable attribute");
    hid_t sp = H5Aget_space(*a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    close_id(sp);
    *t = H5Aget_type(*a);
    if (np != 1 || *t < 0)
        return fmt(r, name, "attribute is not a single value");
    return MR_OK;
}

static int rattr_num(Rd *r, hid_t loc, const char *name, AKind kind, void *out)
{
    hid_t a, t;
    int rc = open_attr(r, loc, name, &a, &t);
    if (rc == MR_OK) {
        H5T_class_t cl = H5Tget_class(t);
        size_t sz = H5Tget_size(t);
        H5T_sign_t sg = cl == H5T_INTEGER ? H5Tget_sign(t) : H5T_SGN_ERROR;
        int ok = kind == A_F64   ? cl == H5T_FLOAT && sz == 8
                 : kind == A_U64 ? cl == H5T_INTEGER && sz == 8 && sg == H5T_SGN_NONE
                                 : cl == H5T_INTEGER && sz <= 8 && sg == H5T_SGN_2;
        hid_t mt = kind == A_F64   ? H5T_NATIVE_DOUBLE
                   : kind == A_U64 ? H5T_NATIVE_UINT64
                                   : H5T_NATIVE_INT64;
        if (!ok)
            rc = fmt(r, name,
                     kind == A_F64   ? "expected a float64 attribute"
                     : kind == A_U64 ? "expected a uint64 attribute"
                                     : "expected a signed integer attribute");
        else if (H5Aread(a, mt, out) < 0)
            rc = fmt(r, name, "cannot read attribute");
    }
    close_id(t);
    close_id(a);
    return rc;
}

/* A string attribute as any HDF5 writer stores one: fixed-length (NUL-terminated,
 * NUL- or space-padded) or variable-length, with either character set. Our own
 * writer uses fixed-length ASCII; the checkpoint module writes UTF-8, and h5py
 * writes Python strings as variable-length UTF-8. The memory type takes the file
 * type's character set because HDF5 converts no string between ASCII and UTF-8
 * (H5Aread fails), and one byte more than the stored size so a string that fills
 * its whole width keeps its last character. Bytes are copied, not validated: the
 * values are compared with known strings or printed escaped. */
static int rattr_str(Rd *r, hid_t loc, const char *name, char *out, size_t cap)
{
    hid_t a, t, mt = -1;
    char *buf = NULL, *vs = NULL;
    int rc = open_attr(r, loc, name, &a, &t);
    if (rc != MR_OK)
        goto out;
    htri_t var = H5Tget_class(t) == H5T_STRING ? H5Tis_variable_str(t) : -1;
    H5T_cset_t cs = var < 0 ? H5T_CSET_ERROR : H5Tget_cset(t);
    size_t sz = H5Tget_size(t);
    const char *v = NULL;
    if (var < 0 || (cs != H5T_CSET_ASCII && cs != H5T_CSET_UTF8)) {
        rc = fmt(r, name, "expected a string attribute (ASCII or UTF-8)");
    } else if (var) {
        mt = H5Tcopy(H5T_C_S1);
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, cs) < 0 ||
            H5Aread(a, mt, &vs) < 0)
            rc = fmt(r, name, "cannot read string attribute");
        v = vs ? vs : "";
    } else if (sz == 0 || sz > cap) {
        rc = fmt(r, name, "string attribute has an impossible length");
    } else {
        buf = malloc(sz + 1);
        mt = H5Tcopy(H5T_C_S1);
        if (!buf || mt < 0 || H5Tset_size(mt, sz + 1) < 0 ||
            H5Tset_strpad(mt, H5T_STR_NULLTERM) < 0 || H5Tset_cset(mt, cs) < 0 ||
            H5Aread(a, mt, buf) < 0)
            rc = fmt(r, name, "cannot read string attribute");
        else
            buf[sz] = '\0';
        v = buf;
    }
    if (rc == MR_OK) {
        if (strlen(v) >= cap)
            rc = fmt(r, name, "string attribute is too long");
        else
            memcpy(out, v, strlen(v) + 1);
    }
out:
    if (vs)
        H5free_memory(vs);
    free(buf);
    close_id(mt);
    close_id(t);
    close_id(a);
    return rc;
}

/* Read a dataset whose shape must be exactly [rows] or [rows x cols] and whose
 * stored type must be the class/size/sign given; verify its checksum. */
static int rdset(Rd *r, const char *name, H5T_class_t cl, size_t elem, int sign, hid_t mtype,
                 int64_t rows, int64_t cols, void *buf)
{
    char what[96];
    snprintf(what, sizeof what, "dataset /%s", name);
    htri_t ex = H5Lexists(r->f, name, H5P_DEFAULT);
    if (ex <= 0)
        return fmt(r, what, ex < 0 ? "unreadable" : "missing");
    hid_t ds = H5Dopen2(r->f, name, H5P_DEFAULT), sp = -1, t = -1;
    int rc = MR_OK;
    if (ds < 0) {
        rc = fmt(r, what, "cannot open");
        goto out;
    }
    sp = H5Dget_space(ds);
    t = H5Dget_type(ds);
    hsize_t dims[2] = {0, 0};
    int rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (rank != (cols ? 2 : 1) || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
        dims[0] != (hsize_t)rows || (cols && dims[1] != (hsize_t)cols)) {
        char d[160];
        if (cols)
            snprintf(d, sizeof d, "shape is not [%lld x %lld] as the metadata says",
                     (long long)rows, (long long)cols);
        else
            snprintf(d, sizeof d, "shape is not [%lld] as the metadata says", (long long)rows);
        rc = fmt(r, what, d);
        goto out;
    }
    if (t < 0 || H5Tget_class(t) != cl || H5Tget_size(t) != elem ||
        (cl == H5T_INTEGER && (int)H5Tget_sign(t) != sign)) {
        rc = fmt(r, what, "unexpected element type");
        goto out;
    }
    if (rows > 0 && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        rc = fmt(r, what, "cannot read the data (truncated or corrupt file)");
        goto out;
    }
    uint64_t want;
    rc = rattr_num(r, ds, "checksum", A_U64, &want);
    if (rc) {
        mr_err_prefix(r->e, "%s", what);
        goto out;
    }
    if (ix_data_checksum(buf, rows, elem * (size_t)(cols ? cols : 1)) != want &&
        CHECKSUMS_ENFORCED)
        rc = fmt(r, what, "checksum mismatch (the file is corrupt)");
out:
    close_id(t);
    close_id(sp);
    close_id(ds);
    return rc;
}

/* Length of a 1-D dataset (for the id bytes, whose size only the offsets know). */
static int dlen(Rd *r, const char *name, int64_t *len)
{
    char what[96];
    snprintf(what, sizeof what, "dataset /%s", name);
    htri_t ex = H5Lexists(r->f, name, H5P_DEFAULT);
    if (ex <= 0)
        return fmt(r, what, ex < 0 ? "unreadable" : "missing");
    hid_t ds = H5Dopen2(r->f, name, H5P_DEFAULT);
    hid_t sp = ds < 0 ? -1 : H5Dget_space(ds);
    hsize_t dims[1];
    int rc = MR_OK;
    if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 1 ||
        H5Sget_simple_extent_dims(sp, dims, NULL) < 0)
        rc = fmt(r, what, "not a 1-D dataset");
    else
        *len = (int64_t)dims[0];
    close_id(sp);
    close_id(ds);
    return rc;
}

static int all_finite(const float *v, int64_t m)
{
    for (int64_t i = 0; i < m; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

static int read_index(Rd *r, MrIndex *ix)
{
    int rc;
    char s[512];
    /* 1. what kind of file is it */
    htri_t has_magic = H5Aexists(r->f, "magic");
    if (has_magic < 0)
        return fmt(r, "root group", "unreadable (corrupt file: HDF5 metadata check failed)");
    if (has_magic == 0)
        return fmt(r, "not an mpirec index", "no 'magic' attribute on the root group");
    if ((rc = rattr_str(r, r->f, "magic", s, sizeof s)))
        return rc;
    if (strcmp(s, MR_INDEX_MAGIC) != 0) {
        /* the other kinds of mpirec file, by the magic their writers use */
        const char *hint = !strcmp(s, "MPIREC-CKPT")
                               ? " (this is a checkpoint, not an index: give it as --checkpoint; "
                                 "the index is a run's index.h5 or a file written by `mpirec "
                                 "index`)"
                           : !strcmp(s, "MPIREC-SEEN")
                               ? " (this is an exclude-seen file, not an index: the index is the "
                                 "file without .seen)"
                               : "";
        char d[700];
        snprintf(d, sizeof d, "magic is '%.64s', expected '%s'%s", s, MR_INDEX_MAGIC, hint);
        return fmt(r, "not an mpirec index", d);
    }
    int64_t ver;
    if ((rc = rattr_num(r, r->f, "format_version", A_I64, &ver)))
        return rc;
    if (ver != MR_INDEX_VERSION) {
        char d[160];
        snprintf(d, sizeof d,
                 "format version %lld, this mpirec reads version %d (rebuild the "
                 "index with `mpirec index`)",
                 (long long)ver, MR_INDEX_VERSION);
        return fmt(r, "unsupported version", d);
    }
    /* 2. the metadata, checksummed as a whole */
    htri_t gex = H5Lexists(r->f, "meta", H5P_DEFAULT);
    if (gex <= 0)
        return fmt(r, "group /meta", "missing");
    hid_t gm = H5Gopen2(r->f, "meta", H5P_DEFAULT);
    if (gm < 0)
        return fmt(r, "group /meta", "cannot open");
    MetaVal mv[M_COUNT];
    memset(mv, 0, sizeof mv);
    uint64_t mck = 0;
    for (int j = 0; j < M_COUNT && rc == MR_OK; j++) {
        switch (META[j].kind) {
        case A_I64:
            rc = rattr_num(r, gm, META[j].name, A_I64, &mv[j].i);
            break;
        case A_F64:
            rc = rattr_num(r, gm, META[j].name, A_F64, &mv[j].f);
            break;
        case A_U64:
            rc = rattr_num(r, gm, META[j].name, A_U64, &mv[j].u);
            break;
        case A_STR:
            rc = rattr_str(r, gm, META[j].name, mv[j].s, sizeof mv[j].s);
            break;
        }
    }
    if (rc == MR_OK)
        rc = rattr_num(r, gm, "meta_checksum", A_U64, &mck);
    close_id(gm);
    if (rc)
        return mr_err_prefix(r->e, "/meta");
    if (meta_checksum(mv) != mck && CHECKSUMS_ENFORCED)
        return fmt(r, "/meta", "checksum of the metadata attributes does not match (corrupt file)");

    /* 3. the metadata must describe a possible index */
    int ivf = strcmp(mv[M_KIND].s, "ivf") == 0;
    if (!ivf && strcmp(mv[M_KIND].s, "exact") != 0)
        return fmt(r, "/meta kind", "neither 'exact' nor 'ivf'");
    int64_t n = mv[M_ITEMS].i, d = mv[M_DIM].i, L = mv[M_NLIST].i;
    if (n < 1 || d < 1 || d > (1 << 20) || n > INT64_MAX / d / 8)
        return fmt(r, "/meta", "impossible items/dim");
    if (ivf ? (L < 1 || L > n) : L != 0)
        return fmt(r, "/meta nlist", "out of range for this kind and item count");
    if (mv[M_QUANT].i != 0 && (mv[M_QUANT].i != 1 || !ivf))
        return fmt(r, "/meta quantize", "must be 0, or 1 for ivf");
    if (mv[M_NPROBE].i < 0 || mv[M_NPROBE].i > L || mv[M_NPROBE_PARAM].i < 0 ||
        mv[M_NLIST_PARAM].i < 0 || mv[M_RESCORE].i < 0 || mv[M_ITERS].i < 0 || mv[M_K].i < 0 ||
        mv[M_QUERIES].i < 0)
        return fmt(r, "/meta", "a parameter is out of range");
    if (!(mv[M_AUGNORM].f >= 0 && isfinite(mv[M_AUGNORM].f)))
        return fmt(r, "/meta aug_norm", "not a finite non-negative number");

    ix->p.kind = ivf ? MR_INDEX_IVF : MR_INDEX_EXACT;
    ix->p.nlist = mv[M_NLIST_PARAM].i;
    ix->p.nprobe = mv[M_NPROBE_PARAM].i;
    ix->p.target_recall = mv[M_TARGET].f;
    ix->p.kmeans_iters = (int)mv[M_ITERS].i;
    ix->p.quantize = (int)mv[M_QUANT].i;
    ix->p.rescore = mv[M_RESCORE].i;
    ix->p.seed = mv[M_SEED].u;
    ix->n = n;
    ix->d = (int)d;
    ix->nlist = ivf ? L : 0;
    ix->aug_norm = (float)mv[M_AUGNORM].f;
    ix->model_hash = mv[M_MODEL_HASH].u;
    snprintf(ix->source, sizeof ix->source, "%s", mv[M_SOURCE].s);
    ix->source_step = mv[M_SOURCE_STEP].i;
    ix->stats.k = (int)mv[M_K].i;
    ix->stats.queries = mv[M_QUERIES].i;
    ix->stats.recall = mv[M_RECALL].f;
    ix->stats.qps_exact = mv[M_QPS_EXACT].f;
    ix->stats.qps = mv[M_QPS].f;
    ix->stats.nprobe = mv[M_NPROBE].i;
    ix->stats.threads = (int)mv[M_THREADS].i;

    /* 4. the arrays */
    int64_t nbytes = 0;
    if ((rc = dlen(r, "ids/bytes", &nbytes)))
        return rc;
    ix->emb = malloc((size_t)(n * d) * sizeof *ix->emb);
    ix->ids_off = malloc((size_t)(n + 1) * sizeof *ix->ids_off);
    ix->ids = malloc((size_t)(nbytes > 0 ? nbytes : 1));
    if (!ix->emb || !ix->ids_off || !ix->ids)
        return mr_err_set(r->e, MR_ENOMEM, "index file '%s': no memory for %lld x %lld items",
                          r->path, (long long)n, (long long)d);
    if ((rc = rdset(r, "emb", H5T_FLOAT, 4, 0, H5T_NATIVE_FLOAT, n, d, ix->emb)) ||
        (rc = rdset(r, "ids/bytes", H5T_INTEGER, 1, H5T_SGN_NONE, H5T_NATIVE_UINT8, nbytes, 0,
                    ix->ids)) ||
        (rc = rdset(r, "ids/offsets", H5T_INTEGER, 8, H5T_SGN_2, H5T_NATIVE_INT64, n + 1, 0,
                    ix->ids_off)))
        return rc;
    if (!all_finite(ix->emb, n * d))
        return fmt(r, "dataset /emb", "holds a non-finite value");
    if (ix->ids_off[0] != 0 || ix->ids_off[n] != nbytes)
        return fmt(r, "dataset /ids/offsets", "does not span /ids/bytes");
    for (int64_t i = 0; i < n; i++)
        if (ix->ids_off[i + 1] < ix->ids_off[i])
            return fmt(r, "dataset /ids/offsets", "offsets decrease");
    if (!ivf)
        return MR_OK;

    ix->centroids = malloc((size_t)(L * d) * sizeof *ix->centroids);
    ix->probe_bias = malloc((size_t)L * sizeof *ix->probe_bias);
    ix->list_off = malloc((size_t)(L + 1) * sizeof *ix->list_off);
    ix->list_items = malloc((size_t)n * sizeof *ix->list_items);
    if (!ix->centroids || !ix->probe_bias || !ix->list_off || !ix->list_items)
        return mr_err_set(r->e, MR_ENOMEM, "index file '%s': no memory for %lld lists", r->path,
                          (long long)L);
    if ((rc = rdset(r, "ivf/centroids", H5T_FLOAT, 4, 0, H5T_NATIVE_FLOAT, L, d, ix->centroids)) ||
        (rc =
             rdset(r, "ivf/probe_bias", H5T_FLOAT, 4, 0, H5T_NATIVE_FLOAT, L, 0, ix->probe_bias)) ||
        (rc = rdset(r, "ivf/list_offsets", H5T_INTEGER, 8, H5T_SGN_2, H5T_NATIVE_INT64, L + 1, 0,
                    ix->list_off)) ||
        (rc = rdset(r, "ivf/list_items", H5T_INTEGER, 8, H5T_SGN_2, H5T_NATIVE_INT64, n, 0,
                    ix->list_items)))
        return rc;
    if (!all_finite(ix->centroids, L * d) || !all_finite(ix->probe_bias, L))
        return fmt(r, "group /ivf", "centroids hold a non-finite value");
    if (ix->list_off[0] != 0 || ix->list_off[L] != n)
        return fmt(r, "dataset /ivf/list_offsets", "does not span the items");
    for (int64_t j = 0; j < L; j++)
        if (ix->list_off[j + 1] < ix->list_off[j])
            return fmt(r, "dataset /ivf/list_offsets", "offsets decrease");
    /* list_items must be a permutation of 0 .. n-1 */
    unsigned char *seen = calloc((size_t)n, 1);
    if (!seen)
        return mr_err_set(r->e, MR_ENOMEM, "index file '%s': no memory", r->path);
    for (int64_t i = 0; i < n && rc == MR_OK; i++) {
        int64_t it = ix->list_items[i];
        if (it < 0 || it >= n || seen[it])
            rc = fmt(r, "dataset /ivf/list_items", "is not a permutation of the items");
        else
            seen[it] = 1;
    }
    free(seen);
    if (rc)
        return rc;
    uint8_t *codes = NULL;
    if (ix->p.quantize) {
        codes = malloc((size_t)(n * d));
        ix->code_scale = malloc((size_t)d * sizeof *ix->code_scale);
        ix->code_offset = malloc((size_t)d * sizeof *ix->code_offset);
        if (!codes || !ix->code_scale || !ix->code_offset) {
            free(codes);
            return mr_err_set(r->e, MR_ENOMEM, "index file '%s': no memory for codes", r->path);
        }
        if ((rc = rdset(r, "ivf/codes", H5T_INTEGER, 1, H5T_SGN_NONE, H5T_NATIVE_UINT8, n, d,
                        codes)) ||
            (rc = rdset(r, "ivf/code_scale", H5T_FLOAT, 4, 0, H5T_NATIVE_FLOAT, d, 0,
                        ix->code_scale)) ||
            (rc = rdset(r, "ivf/code_offset", H5T_FLOAT, 4, 0, H5T_NATIVE_FLOAT, d, 0,
                        ix->code_offset))) {
            free(codes);
            return rc;
        }
        if (!all_finite(ix->code_scale, d) || !all_finite(ix->code_offset, d)) {
            free(codes);
            return fmt(r, "group /ivf", "code scale/offset hold a non-finite value");
        }
    }
    rc = ix_ivf_layout(ix, codes, r->e);
    free(codes);
    return rc;
}

int mr_index_load(MrIndex *ix, const char *path, MrErr *e)
{
    memset(ix, 0, sizeof *ix);
    if (!path)
        return mr_err_set(e, MR_EUSAGE, "index load: no path");
    /* Tell "cannot open" (I/O) from "not a valid file" (format) before HDF5 does. */
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return mr_err_set(e, MR_EIO, "index file '%s': cannot open: %s", path, strerror(errno));
    fclose(fp);
    hdf5_quiet();
    int rc = MR_OK;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    hid_t f = -1;
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        rc = mr_err_set(e, MR_EINTERNAL, "index file '%s': HDF5 property list failed", path);
    } else {
        f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (f < 0)
            rc = mr_err_set(e, MR_EFORMAT,
                            "index file '%s': not a readable HDF5 file (truncated, corrupt, or "
                            "not HDF5)",
                            path);
    }
    if (rc == MR_OK) {
        Rd r = {f, path, e};
        rc = read_index(&r, ix);
        if (rc == MR_OK && (rc = ix_ids_order(ix, e)) == MR_EDATA) {
            char msg[MR_ERR_SIZE];
            snprintf(msg, sizeof msg, "%s", e ? e->msg : "duplicate item ids");
            rc = mr_err_set(e, MR_EFORMAT, "index file '%s': %s", path, msg);
        }
    }
    /* A close error on a file we only read changes nothing we loaded. */
    close_id(f);
    close_id(fapl);
    if (rc != MR_OK)
        mr_index_free(ix);
    return rc;
}
