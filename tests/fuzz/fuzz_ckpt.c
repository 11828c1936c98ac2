/* fuzz_ckpt — libFuzzer target for the checkpoint loader (src/ckpt).
 *
 * The input is written to a temporary file and read the ways mpirec reads
 * checkpoints: mr_ckpt_inspect with verification (`mpirec inspect`),
 * mr_ckpt_find_latest over a directory holding it as ckpt-000000001.h5 (what
 * `--resume auto` does: digest first), and mr_ckpt_open (any kind) followed by
 * verify, attribute reads and, for each dataset the report lists, dims, a whole
 * read, strided and listed row reads, and string-table reads. Every failure must
 * be a returned code with a message; the seeds are real checkpoints and indexes
 * (tests/fuzz/corpus/fuzz_ckpt), so mutations reach the header, the digest, HDF5's
 * metadata and the datasets.
 */
#include "fuzz_common.h"
#include "mpirec/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc(int rc, const MrErr *e, const char *what)
{
    if (rc != MR_OK && rc != MR_EFORMAT && rc != MR_EIO && rc != MR_ENOMEM) {
        fprintf(stderr, "%s returned %d: %s\n", what, rc, e->msg);
        abort();
    }
    if (rc != MR_OK && !e->msg[0]) {
        fprintf(stderr, "%s failed (%d) without a message\n", what, rc);
        abort();
    }
}

static int dtype_of(const char *s, MrDType *t)
{
    static const char *const names[] = {"float32", "float64", "int64", "uint64", "uint8"};
    static const MrDType types[] = {MR_F32, MR_F64, MR_I64, MR_U64, MR_U8};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *t = types[i];
            return 1;
        }
    return 0;
}

static void read_datasets(MrCkptReader *r, const MrCkptReport *rep)
{
    MrErr e;
    for (int64_t i = 0; i < rep->ndatasets && i < 64; i++) {
        const MrCkptDatasetInfo *d = &rep->datasets[i];
        MrDType t;
        int64_t rows = 0, cols = 0;
        mr_err_clear(&e);
        int rc = mr_ckpt_dims(r, d->path, &rows, &cols, &e);
        check_rc(rc, &e, "mr_ckpt_dims");
        if (rc || !dtype_of(d->dtype, &t) || rows < 0 || cols < 0)
            continue;
        int64_t n = rows * (cols ? cols : 1);
        size_t es = mr_ckpt_dtype_size(t);
        if (n > ((int64_t)16 << 20) / (int64_t)es)
            continue;
        /* room for the whole dataset and for the 4 rows of the row list */
        void *buf = malloc((size_t)(n + 4 * (cols ? cols : 1)) * es + 1);
        if (!buf)
            continue;
        mr_err_clear(&e);
        check_rc(mr_ckpt_read_all(r, d->path, t, buf, &e), &e, "mr_ckpt_read_all");
        if (rows > 2) {
            mr_err_clear(&e);
            check_rc(mr_ckpt_read_rows(r, d->path, t, 1, 2, (rows - 1) / 2, buf, &e), &e,
                     "mr_ckpt_read_rows");
            int64_t list[4] = {rows - 1, 0, rows / 2, rows - 1};
            mr_err_clear(&e);
            check_rc(mr_ckpt_read_row_list(r, d->path, t, list, 4, buf, &e), &e,
                     "mr_ckpt_read_row_list");
        }
        free(buf);
        size_t pl = strlen(d->path);
        if (pl > 8 && strcmp(d->path + pl - 8, "/offsets") == 0 && rows > 1) {
            char table[512];
            snprintf(table, sizeof table, "%.*s", (int)(pl - 8), d->path);
            char *bytes = NULL;
            int64_t *off = NULL;
            mr_err_clear(&e);
            check_rc(mr_ckpt_read_strings(r, table, 0, rows - 1, &bytes, &off, &e), &e,
                     "mr_ckpt_read_strings");
            free(bytes);
            free(off);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write("ckpt-000000001.h5", data, size);
    char p[700];
    snprintf(p, sizeof p, "%s", path);
    MrErr e;
    mr_err_clear(&e);

    MrCkptReport rep;
    memset(&rep, 0, sizeof rep);
    check_rc(mr_ckpt_inspect(p, 1, &rep, &e), &e, "mr_ckpt_inspect");
    fz_no_open_ids("mr_ckpt_inspect");

    char found[700], skipped[1024];
    mr_err_clear(&e);
    check_rc(mr_ckpt_find_latest(fz_tmpdir(), found, sizeof found, skipped, sizeof skipped, &e), &e,
             "mr_ckpt_find_latest");
    fz_no_open_ids("mr_ckpt_find_latest");

    MrCkptReader *r = NULL;
    mr_err_clear(&e);
    int rc = mr_ckpt_open(&r, NULL, p, NULL, 0, &e);
    check_rc(rc, &e, "mr_ckpt_open");
    if (rc == MR_OK) {
        mr_err_clear(&e);
        check_rc(mr_ckpt_verify(r, &e), &e, "mr_ckpt_verify");
        int64_t v;
        char *s = NULL;
        mr_err_clear(&e);
        check_rc(mr_ckpt_read_attr_i64(r, "step", &v, &e), &e, "mr_ckpt_read_attr_i64");
        mr_err_clear(&e);
        check_rc(mr_ckpt_read_attr_str(r, "config", &s, &e), &e, "mr_ckpt_read_attr_str");
        free(s);
        read_datasets(r, &rep);
        mr_ckpt_close(&r);
    }
    mr_ckpt_report_free(&rep);
    fz_no_open_ids("the checkpoint reader");
    return 0;
}
