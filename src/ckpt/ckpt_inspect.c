/* ckpt_inspect.c — a description of any file written with this module's
 * conventions (checkpoints, INDEX.h5, or any HDF5 file whose datasets carry the
 * "checksum" attribute), for `mpirec inspect`.
 *
 * Approach: unlike mr_ckpt_open, nothing here stops at the first problem. The
 * header and the digest are checked with POSIX reads, then HDF5 opens the file
 * serially and every root and /meta attribute and every dataset (type, shape,
 * layout, stored checksum and, when asked, the recomputed one) is recorded. The
 * first problem found becomes the return code and the MrErr text, and
 * rep->ok = 0; the report holds everything that could still be read, so a
 * damaged file shows which dataset is bad.
 *
 * Not here: printing (cli/cmd_inspect.c formats text and JSON).
 */
#include "ckpt_priv.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Insp {
    MrCkptReport *rep;
    MrErr *e;
    int first; /* first problem's code */
    int64_t cap_attrs;
    int oom;
} Insp;

static void problem(Insp *s, const MrErr *e2)
{
    if (!s->first) {
        s->first = e2->code ? e2->code : MR_EFORMAT;
        mr_err_set(s->e, s->first, "%s", e2->msg);
    }
    s->rep->ok = 0;
}

static MrCkptAttrInfo *new_attr(Insp *s)
{
    MrCkptReport *rep = s->rep;
    if (rep->nattrs == s->cap_attrs) {
        int64_t cap = s->cap_attrs ? 2 * s->cap_attrs : 16;
        MrCkptAttrInfo *v = realloc(rep->attrs, (size_t)cap * sizeof *v);
        if (!v) {
            s->oom = 1;
            return NULL;
        }
        rep->attrs = v;
        s->cap_attrs = cap;
    }
    MrCkptAttrInfo *a = &rep->attrs[rep->nattrs++];
    memset(a, 0, sizeof *a);
    return a;
}

/* Format a small numeric array attribute as "int64[3] = [1, 2, 3]". */
static char *describe_array(hid_t a, hid_t t, hid_t sp)
{
    char what[64];
    ck_type_describe(t, what, sizeof what);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5T_class_t cls = H5Tget_class(t);
    size_t cap = 96 + (np > 0 && np <= 64 ? (size_t)np * 28 : 0);
    char *s = malloc(cap);
    if (!s)
        return NULL;
    int len = snprintf(s, cap, "%s[%lld]", what, (long long)np);
    if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && np > 0 && np <= 64) {
        double *v = malloc((size_t)np * sizeof *v);
        if (v && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
            len += snprintf(s + len, cap - (size_t)len, " = [");
            for (hssize_t i = 0; i < np; i++)
                len += snprintf(s + len, cap - (size_t)len, "%s%.17g", i ? ", " : "", v[i]);
            snprintf(s + len, cap - (size_t)len, "]");
        } else {
            H5Eclear2(H5E_DEFAULT);
        }
        free(v);
    }
    return s;
}

typedef struct AttrCtx {
    Insp *s;
    const char *group; /* "" for root, "/meta" */
} AttrCtx;

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)info;
    AttrCtx *c = data;
    Insp *s = c->s;
    MrCkptAttrInfo *ai = new_attr(s);
    if (!ai)
        return -1;
    size_t nl = strlen(c->group) + strlen(name) + 2;
    ai->name = malloc(nl);
    if (!ai->name) {
        s->oom = 1;
        return -1;
    }
    snprintf(ai->name, nl, "%s/%s", c->group, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    hid_t sp = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
    MrErr e2;
    mr_err_clear(&e2);
    if (a < 0 || t < 0 || sp < 0) {
        ck_h5_fail(&e2, MR_EFORMAT, "%s: cannot read attribute %s", s->rep->path, ai->name);
        ai->kind = MR_CKPT_VAL_OTHER;
        ai->s = strdup("(unreadable)");
        problem(s, &e2);
    } else {
        H5T_class_t cls = H5Tget_class(t);
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        int bad = 0;
        if (np == 1 && cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_NONE &&
            H5Tget_size(t) == 8) {
            ai->kind = MR_CKPT_VAL_UINT; /* read as int64, a checksum above 2^63 would clip */
            bad = H5Aread(a, H5T_NATIVE_UINT64, &ai->u) < 0;
        } else if (np == 1 && cls == H5T_INTEGER) {
            ai->kind = MR_CKPT_VAL_INT;
            bad = H5Aread(a, H5T_NATIVE_INT64, &ai->i) < 0;
        } else if (np == 1 && cls == H5T_FLOAT) {
            ai->kind = MR_CKPT_VAL_FLOAT;
            bad = H5Aread(a, H5T_NATIVE_DOUBLE, &ai->f) < 0;
        } else if (np == 1 && cls == H5T_STRING) {
            ai->kind = MR_CKPT_VAL_STRING;
            bad = ck_read_str_attr(loc, name, &ai->s, &e2) != MR_OK;
        } else {
            ai->kind = MR_CKPT_VAL_OTHER;
            ai->s = describe_array(a, t, sp);
        }
        if (bad) {
            if (!e2.code)
                ck_h5_fail(&e2, MR_EFORMAT, "%s: cannot read attribute %s", s->rep->path, ai->name);
            problem(s, &e2);
        }
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return 0;
}

static void list_attrs(Insp *s, hid_t obj, const char *group)
{
    AttrCtx c = {s, group};
    hsize_t idx = 0;
    if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &c) < 0) {
        MrErr e2;
        mr_err_clear(&e2);
        if (s->oom)
            mr_err_set(&e2, MR_ENOMEM, "out of memory");
        else
            ck_h5_fail(&e2, MR_EFORMAT, "%s: cannot list the attributes of %s", s->rep->path,
                       group[0] ? group : "/");
        problem(s, &e2);
    }
}

static void describe_dataset(Insp *s, hid_t file, const char *path, MrCkptDatasetInfo *d)
{
    snprintf(d->dtype, sizeof d->dtype, "unknown");
    snprintf(d->layout, sizeof d->layout, "unknown");
    d->status = -1;
    hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
    if (ds < 0) {
        MrErr e2;
        ck_h5_fail(&e2, MR_EFORMAT, "%s: cannot open dataset %s", s->rep->path, path);
        d->error = strdup(e2.msg);
        return;
    }
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    if (t >= 0)
        ck_type_describe(t, d->dtype, sizeof d->dtype);
    if (sp >= 0) {
        hsize_t dims[H5S_MAX_RANK];
        int nd = H5Sget_simple_extent_ndims(sp);
        if (nd >= 0 && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0) {
            d->ndims = nd;
            for (int i = 0; i < nd && i < 8; i++)
                d->dims[i] = (int64_t)dims[i];
        }
    }
    if (dcpl >= 0) {
        H5D_layout_t lay = H5Pget_layout(dcpl);
        const char *ln = lay == H5D_CONTIGUOUS ? "contiguous"
                         : lay == H5D_CHUNKED  ? "chunked"
                         : lay == H5D_COMPACT  ? "compact"
                                               : "other";
        int len = snprintf(d->layout, sizeof d->layout, "%s", ln);
        int nf = H5Pget_nfilters(dcpl);
        for (int i = 0; i < nf && len < (int)sizeof d->layout; i++) {
            unsigned flags = 0, cfg = 0;
            size_t nel = 0;
            char fname[32] = "";
            H5Z_filter_t f =
                H5Pget_filter2(dcpl, (unsigned)i, &flags, &nel, NULL, sizeof fname, fname, &cfg);
            const char *fn = f == H5Z_FILTER_DEFLATE      ? "deflate"
                             : f == H5Z_FILTER_SHUFFLE    ? "shuffle"
                             : f == H5Z_FILTER_FLETCHER32 ? "fletcher32"
                                                          : "filter";
            len += snprintf(d->layout + len, sizeof d->layout - (size_t)len, "+%s", fn);
        }
        H5Pclose(dcpl);
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    /* The stored checksum, when only listing. */
    htri_t ex = H5Aexists(ds, "checksum");
    if (ex > 0) {
        hid_t a = H5Aopen(ds, "checksum", H5P_DEFAULT);
        if (a >= 0 && H5Aread(a, H5T_NATIVE_UINT64, &d->stored) >= 0)
            d->has_checksum = 1;
        if (a >= 0)
            H5Aclose(a);
    }
    H5Eclear2(H5E_DEFAULT);
    H5Dclose(ds);
}

int mr_ckpt_inspect(const char *path, int verify, MrCkptReport *rep, MrErr *e)
{
    ck_h5_quiet();
    memset(rep, 0, sizeof *rep);
    rep->version = -1;
    rep->digest_status = -1;
    rep->ok = 1;
    rep->path = strdup(path);
    if (!rep->path)
        return mr_err_set(e, MR_ENOMEM, "out of memory");
    Insp s = {rep, e, 0, 0, 0};
    MrErr e2, digest_err;
    mr_err_clear(&e2);
    mr_err_clear(&digest_err);

    /* 1. Header and digest: plain reads. */
    CkHeader h;
    int has = 0;
    int64_t size = 0;
    int rc = ck_check_header(path, &has, &h, &size, &e2);
    rep->file_bytes = size;
    if (rc == MR_EIO) {
        rep->ok = 0;
        return mr_err_set(e, rc, "%s", e2.msg);
    }
    if (rc) {
        rep->header = has == 1 ? 1 : -1;
        if (has == 1) {
            rep->header_bytes = h.bytes;
            rep->digest_stored = h.digest;
        }
        problem(&s, &e2);
    } else {
        rep->header = has;
        if (has) {
            rep->header_bytes = h.bytes;
            rep->digest_stored = h.digest;
            if (verify) {
                mr_err_clear(&e2);
                rc = ck_check_digest(NULL, path, &h, &rep->digest_computed, &e2);
                rep->digest_status = rc == MR_OK ? 1 : rc == MR_EFORMAT && e2.msg[0] ? 0 : -1;
                /* Reported after the datasets: a bad dataset is the better message. */
                if (rc)
                    digest_err = e2;
            }
        }
    }

    /* 2. HDF5. */
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        mr_err_clear(&e2);
        ck_h5_fail(&e2, MR_EFORMAT, "%s cannot be opened as HDF5 (damaged metadata?)", path);
        problem(&s, digest_err.code ? &digest_err : &e2);
        return s.first;
    }
    list_attrs(&s, file, "");
    htri_t mex = H5Lexists(file, "meta", H5P_DEFAULT);
    if (mex > 0) {
        hid_t g = H5Gopen2(file, "meta", H5P_DEFAULT);
        if (g >= 0) {
            list_attrs(&s, g, "/meta");
            H5Gclose(g);
        } else {
            mr_err_clear(&e2);
            ck_h5_fail(&e2, MR_EFORMAT, "%s: cannot open /meta", path);
            problem(&s, &e2);
        }
    }
    H5Eclear2(H5E_DEFAULT);
    for (int64_t i = 0; i < rep->nattrs; i++) {
        const MrCkptAttrInfo *a = &rep->attrs[i];
        if (strcmp(a->name, "/magic") == 0 && a->kind == MR_CKPT_VAL_STRING)
            snprintf(rep->magic, sizeof rep->magic, "%s", a->s);
        if (strcmp(a->name, "/format_version") == 0 && a->kind == MR_CKPT_VAL_INT)
            rep->version = a->i;
    }
    mr_err_clear(&e2);
    if (!rep->magic[0])
        problem(&s, (mr_err_set(&e2, MR_EFORMAT,
                                "%s has no 'magic' attribute: not a file written by mpirec", path),
                     &e2));
    else if (strncmp(rep->magic, "MPIREC-", 7) != 0)
        problem(&s, (mr_err_set(&e2, MR_EFORMAT, "%s: unknown magic '%s'", path, rep->magic), &e2));
    else if (has == 1 && strcmp(h.kind, rep->magic) != 0)
        problem(&s, (mr_err_set(&e2, MR_EFORMAT,
                                "%s: its header says '%s' but the file says '%s' (damaged)", path,
                                h.kind, rep->magic),
                     &e2));

    /* 3. Datasets. */
    char **names = NULL;
    int64_t n = 0;
    mr_err_clear(&e2);
    if (ck_list_datasets(file, &names, &n, &e2) != MR_OK)
        problem(&s, &e2);
    if (n > 0) {
        rep->datasets = calloc((size_t)n, sizeof *rep->datasets);
        if (!rep->datasets) {
            ck_free_names(names, n);
            H5Fclose(file);
            mr_err_set(&e2, MR_ENOMEM, "out of memory");
            problem(&s, &e2);
            return s.first;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        MrCkptDatasetInfo *d = &rep->datasets[rep->ndatasets++];
        d->path = names[i];
        names[i] = NULL;
        describe_dataset(&s, file, d->path, d);
        if (d->error) {
            mr_err_set(&e2, MR_EFORMAT, "%s", d->error);
            problem(&s, &e2);
            continue;
        }
        if (!d->has_checksum) {
            d->error = strdup("no checksum attribute");
            mr_err_set(&e2, MR_EFORMAT, "%s: dataset %s has no checksum attribute", path, d->path);
            problem(&s, &e2);
            continue;
        }
        if (!verify)
            continue;
        int hs = 0;
        uint64_t st = 0;
        mr_err_clear(&e2);
        if (ck_dataset_checksum(file, NULL, H5P_DEFAULT, path, d->path, &hs, &st, &d->computed,
                                &e2) != MR_OK) {
            d->error = strdup(e2.msg);
            problem(&s, &e2);
            continue;
        }
        d->status = d->computed == d->stored;
        if (!d->status) {
            mr_err_set(&e2, MR_EFORMAT,
                       "%s is corrupt: checksum mismatch in dataset %s (stored %016" PRIx64
                       ", computed %016" PRIx64 ")",
                       path, d->path, d->stored, d->computed);
            problem(&s, &e2);
        }
    }
    ck_free_names(names, n);
    if (H5Fclose(file) < 0)
        H5Eclear2(H5E_DEFAULT);
    if (digest_err.code) {
        if (!s.first && digest_err.code == MR_EFORMAT) {
            size_t len = strlen(digest_err.msg);
            snprintf(digest_err.msg + len, sizeof digest_err.msg - len,
                     " (outside every dataset: HDF5 metadata or padding)");
        }
        problem(&s, &digest_err);
    }
    if (s.oom && !s.first) {
        mr_err_set(&e2, MR_ENOMEM, "out of memory");
        problem(&s, &e2);
    }
    return s.first;
}

void mr_ckpt_report_free(MrCkptReport *rep)
{
    if (!rep)
        return;
    free(rep->path);
    for (int64_t i = 0; i < rep->nattrs; i++) {
        free(rep->attrs[i].name);
        free(rep->attrs[i].s);
    }
    free(rep->attrs);
    for (int64_t i = 0; i < rep->ndatasets; i++) {
        free(rep->datasets[i].path);
        free(rep->datasets[i].error);
    }
    free(rep->datasets);
    memset(rep, 0, sizeof *rep);
}
