/* test_ckpt.c — the checkpoint file layer in one process: round trips of every
 * type and of strings, corruption (flipped bytes anywhere, truncation), the
 * `latest` pointer and rotation, magic/version checks, write failures (injected
 * and a real full disk on tmpfs), the run-directory lock across two processes,
 * and the inspect report.
 *
 * Files go under $MPIREC_TMP/mpirec-test-<tag>/ckpt/<test>. Tests that corrupt
 * files also capture stderr and require it to stay empty: HDF5 must never print
 * its error stack.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpirec/ckpt.h"
#include "mpirec/index.h"
#include "test_util.h"

/* ---- helpers ---------------------------------------------------------------- */

/* HDF5 1.10 leaks metadata-cache entries whose load fails on a damaged file (in
 * H5C_protect). find_latest and verify never let HDF5 parse a file whose digest
 * failed, but mr_ckpt_open (which does not read the whole file) and inspect do.
 * Under AddressSanitizer those calls on deliberately damaged files are exempt
 * from leak checking; our own leaks of HDF5 ids are caught by no_open_ids(), the
 * suite's last test. */
#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
/* HDF5 recycles freed blocks through its own free lists; with the limits at 0
 * (and the lists emptied) a block leaked here was really allocated here. */
#define DAMAGED_BEGIN()                                                                            \
    do {                                                                                           \
        H5set_free_list_limits(0, 0, 0, 0, 0, 0);                                                  \
        H5garbage_collect();                                                                       \
        __lsan_disable();                                                                          \
    } while (0)
#define DAMAGED_END() __lsan_enable()
#else
#define DAMAGED_BEGIN() ((void)0)
#define DAMAGED_END()   ((void)0)
#endif

/* Every HDF5 file, dataset, group, attribute... we opened is closed again. */
static void no_open_ids(void)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != 0)
        fprintf(stderr, "\n  %zd HDF5 ids still open\n", n);
    CU_ASSERT_EQUAL(n, 0);
}

/* A fresh empty directory for one test. */
static const char *fresh_dir(const char *name)
{
    static char dir[4][1024];
    static int k;
    k = (k + 1) & 3;
    snprintf(dir[k], sizeof dir[k], "%s/ckpt/%s", test_tmp_dir(), name);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir[k], dir[k]);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot prepare %s\n", dir[k]);
    return dir[k];
}

static int file_exists(const char *dir, const char *name)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (buf)
        buf[got] = '\0';
    if (n)
        *n = got;
    return buf;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void flip_byte(const char *path, int64_t off)
{
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    unsigned char c = 0;
    CU_ASSERT_EQUAL(pread(fd, &c, 1, off), 1);
    c ^= 0x5a;
    CU_ASSERT_EQUAL(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

/* stderr capture: everything written to fd 2 between begin and end. */
static int g_saved_stderr = -1;
static char g_cap_path[1200];

static void capture_begin(void)
{
    fflush(stderr);
    snprintf(g_cap_path, sizeof g_cap_path, "%s/ckpt-stderr.txt", test_tmp_dir());
    int fd = open(g_cap_path, O_CREAT | O_TRUNC | O_RDWR, 0644);
    g_saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Returns what was captured (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(g_saved_stderr, 2);
    close(g_saved_stderr);
    g_saved_stderr = -1;
    char *s = slurp(g_cap_path, NULL);
    return s ? s : strdup("");
}

/* Deterministic values. */
static float fval(int64_t r, int64_t c, int salt)
{
    return (float)(r * 100 + c) * 0.5f + (float)salt;
}

/* A small checkpoint: /params/w [R x D] f32, /optim/acc [R x D] f32, /data/cursor
 * i64[3], /vocab/user strings, /meta step/epoch/config. */
enum { SR = 50, SD = 4 };
static int write_small(MrComm *comm, const char *dir, int64_t step, const char *latest, int keep,
                       MrErr *e)
{
    char base[64];
    snprintf(base, sizeof base, "ckpt-%" PRId64, step);
    MrCkptWriter *w = NULL;
    int rc = mr_ckpt_writer_open(&w, comm, dir, base, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
    if (rc)
        return rc;
    float wv[SR * SD], acc[SR * SD];
    for (int r = 0; r < SR; r++)
        for (int c = 0; c < SD; c++) {
            wv[r * SD + c] = fval(r, c, (int)step);
            acc[r * SD + c] = 0.1f + (float)r;
        }
    int64_t cursor[3] = {step, 7, -1};
    const char *words[] = {"", "alice", "bob", "caf\xc3\xa9", "\xff\x80z"};
    char bytes[64];
    int64_t off[6] = {0};
    for (int i = 0; i < 5; i++) {
        size_t l = strlen(words[i]);
        memcpy(bytes + off[i], words[i], l);
        off[i + 1] = off[i] + (int64_t)l;
    }
    if (!(rc = mr_ckpt_write_attr_i64(w, "step", step, e)) &&
        !(rc = mr_ckpt_write_attr_i64(w, "epoch", 1, e)) &&
        !(rc = mr_ckpt_write_attr_str(w, "config", "{\"model\": {\"embedding_dim\": 4}}", e)) &&
        !(rc = mr_ckpt_write_root(w, "params/w", MR_F32, SR, SD, wv, e)) &&
        !(rc = mr_ckpt_write_root(w, "optim/acc", MR_F32, SR, SD, acc, e)) &&
        !(rc = mr_ckpt_write_root(w, "data/cursor", MR_I64, 3, 0, cursor, e)) &&
        !(rc = mr_ckpt_write_strings(w, "vocab/user", 5, 0, 5, bytes, off, e)))
        return mr_ckpt_writer_commit(&w, latest, keep, e);
    mr_ckpt_writer_abort(&w);
    return rc;
}

static char *latest_text(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/latest", dir);
    char *s = slurp(p, NULL);
    return s ? s : strdup("(missing)");
}

/* Absolute offset of a contiguous dataset's data (H5Dget_offset + user block when
 * HDF5 reports it relative to the base address); checked against `expect`. */
static int64_t data_offset(const char *file, const char *dset, const void *expect, size_t n)
{
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    CU_ASSERT_FATAL(d >= 0);
    haddr_t a = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    CU_ASSERT_FATAL(a != HADDR_UNDEF);
    size_t len = 0;
    unsigned char *all = (unsigned char *)slurp(file, &len);
    int64_t found = -1;
    int64_t cands[2] = {(int64_t)a, (int64_t)a + MR_CKPT_USERBLOCK};
    for (int i = 0; i < 2 && found < 0; i++)
        if (cands[i] + (int64_t)n <= (int64_t)len && memcmp(all + cands[i], expect, n) == 0)
            found = cands[i];
    free(all);
    CU_ASSERT_FATAL(found >= 0);
    return found;
}

/* ---- round trips -------------------------------------------------------------- */

/* Every type, 1-D and 2-D, written whole (write_root) and as rows (write_rows),
 * read back whole, strided and as a row list; /meta attributes of every kind,
 * including a 100 KB string (dense attribute storage) and UTF-8; a 0-row
 * dataset. Run with the serial writer (comm NULL) and through MPI-IO (P = 1). */
static void test_roundtrip_types(void)
{
    for (int mode = 0; mode < 2; mode++) {
        MrComm *comm = mode ? g_test_comm : NULL;
        const char *dir = fresh_dir(mode ? "types-mpiio" : "types-serial");
        MrErr e;
        mr_err_clear(&e);
        MrCkptWriter *w = NULL;
        CU_ASSERT_EQUAL_FATAL(
            mr_ckpt_writer_open(&w, comm, dir, "ckpt-1", MR_CKPT_MAGIC, MR_CKPT_VERSION, &e),
            MR_OK);
        enum { R = 37, C = 3 };
        float f32[R * C];
        double f64[R * C];
        int64_t i64[R];
        uint64_t u64[R * C];
        uint8_t u8[R];
        for (int i = 0; i < R * C; i++) {
            f32[i] = (float)i * 0.25f - 3.0f;
            f64[i] = (double)i * 1e-3 - 1e300 * (i == 5);
            u64[i] = UINT64_MAX - (uint64_t)i;
        }
        for (int i = 0; i < R; i++) {
            i64[i] = (int64_t)i * -1000000007LL;
            u8[i] = (uint8_t)(i * 7 + 128);
        }
        size_t big_n = 100000;
        char *big = malloc(big_n + 1);
        for (size_t i = 0; i < big_n; i++)
            big[i] = (char)('a' + i % 26);
        big[big_n] = '\0';
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_i64(w, "step", 1234567890123LL, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_i64(w, "step", 42, &e), MR_OK); /* replaces */
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_f64(w, "lr", 0.125, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_str(w, "name", "na\xc3\xafve \"q\"", &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_str(w, "empty", "", &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_str(w, "config", big, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "t/f32", MR_F32, R, C, f32, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "/t/f64", MR_F64, R, C, f64, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "t/i64", MR_I64, R, 0, i64, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_rows(w, "t/u64", MR_U64, R, C, 0, 1, R, u64, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_rows(w, "t/deep/er/u8", MR_U8, R, 0, 0, 1, R, u8, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "t/none", MR_F32, 0, C, NULL, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, NULL, 0, &e), MR_OK);
        CU_ASSERT_PTR_NULL(w);
        CU_ASSERT(file_exists(dir, "ckpt-1.h5"));
        CU_ASSERT(!file_exists(dir, "ckpt-1.h5.tmp"));
        CU_ASSERT(!file_exists(dir, "latest"));

        char path[1200];
        snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
        for (int rmode = 0; rmode < 2; rmode++) {
            MrCkptReader *r = NULL;
            CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, rmode ? g_test_comm : NULL, path, MR_CKPT_MAGIC,
                                               MR_CKPT_VERSION, &e),
                                  MR_OK);
            CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
            int64_t v = 0, rows = -1, cols = -1;
            double d = 0;
            char *s = NULL;
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_i64(r, "step", &v, &e), MR_OK);
            CU_ASSERT_EQUAL(v, 42);
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_f64(r, "lr", &d, &e), MR_OK);
            CU_ASSERT_EQUAL(d, 0.125);
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_str(r, "name", &s, &e), MR_OK);
            CU_ASSERT_STRING_EQUAL(s, "na\xc3\xafve \"q\"");
            free(s);
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_str(r, "empty", &s, &e), MR_OK);
            CU_ASSERT_STRING_EQUAL(s, "");
            free(s);
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_str(r, "config", &s, &e), MR_OK);
            CU_ASSERT(s && strcmp(s, big) == 0);
            free(s);
            /* Wrong kind and missing attributes are format errors with the name. */
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_i64(r, "lr", &v, &e), MR_EFORMAT);
            ASSERT_HAS(e.msg, "/meta/lr");
            CU_ASSERT_EQUAL(mr_ckpt_read_attr_i64(r, "nope", &v, &e), MR_EFORMAT);
            ASSERT_HAS(e.msg, "/meta/nope is missing");

            CU_ASSERT_EQUAL(mr_ckpt_dims(r, "t/f32", &rows, &cols, &e), MR_OK);
            CU_ASSERT(rows == R && cols == C);
            CU_ASSERT_EQUAL(mr_ckpt_dims(r, "t/i64", &rows, &cols, &e), MR_OK);
            CU_ASSERT(rows == R && cols == 0);
            CU_ASSERT_EQUAL(mr_ckpt_dims(r, "t/none", &rows, &cols, &e), MR_OK);
            CU_ASSERT(rows == 0 && cols == C);
            CU_ASSERT(mr_ckpt_exists(r, "t/deep/er/u8"));
            CU_ASSERT(mr_ckpt_exists(r, "/t/deep"));
            CU_ASSERT(!mr_ckpt_exists(r, "t/deep/nope/u8"));
            CU_ASSERT_EQUAL(mr_ckpt_dims(r, "t/missing", &rows, &cols, &e), MR_EFORMAT);
            ASSERT_HAS(e.msg, "/t/missing is missing");

            float rf32[R * C];
            double rf64[R * C];
            int64_t ri64[R];
            uint64_t ru64[R * C];
            uint8_t ru8[R];
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/f32", MR_F32, rf32, &e), MR_OK);
            CU_ASSERT(memcmp(rf32, f32, sizeof f32) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/f64", MR_F64, rf64, &e), MR_OK);
            CU_ASSERT(memcmp(rf64, f64, sizeof f64) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/i64", MR_I64, ri64, &e), MR_OK);
            CU_ASSERT(memcmp(ri64, i64, sizeof i64) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/u64", MR_U64, ru64, &e), MR_OK);
            CU_ASSERT(memcmp(ru64, u64, sizeof u64) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/deep/er/u8", MR_U8, ru8, &e), MR_OK);
            CU_ASSERT(memcmp(ru8, u8, sizeof u8) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/none", MR_F32, NULL, &e), MR_OK);
            /* The stored type must match. */
            CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "t/f32", MR_I64, ri64, &e), MR_EFORMAT);
            ASSERT_HAS(e.msg, "holds float32, expected int64");

            /* Strided: rows 2, 5, 8, ... */
            int n = (R - 2 + 2) / 3;
            CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "t/f64", MR_F64, 2, 3, n, rf64, &e), MR_OK);
            for (int k = 0; k < n; k++)
                CU_ASSERT(memcmp(rf64 + k * C, f64 + (2 + 3 * k) * C, C * sizeof(double)) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "t/i64", MR_I64, 1, 10, 4, ri64, &e), MR_OK);
            CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "t/i64", MR_I64, 1, 10, 5, ri64, &e), MR_EFORMAT);
            ASSERT_HAS(e.msg, "has 37 rows");
            /* A row list: unsorted, with duplicates. */
            int64_t list[] = {36, 0, 5, 5, 17, 36, 1};
            CU_ASSERT_EQUAL(mr_ckpt_read_row_list(r, "t/u64", MR_U64, list, 7, ru64, &e), MR_OK);
            for (int k = 0; k < 7; k++)
                CU_ASSERT(memcmp(ru64 + k * C, u64 + list[k] * C, C * 8) == 0);
            CU_ASSERT_EQUAL(mr_ckpt_read_row_list(r, "t/deep/er/u8", MR_U8, list, 7, ru8, &e),
                            MR_OK);
            for (int k = 0; k < 7; k++)
                CU_ASSERT_EQUAL(ru8[k], u8[list[k]]);
            int64_t badlist[] = {3, 37};
            CU_ASSERT_EQUAL(mr_ckpt_read_row_list(r, "t/u64", MR_U64, badlist, 2, ru64, &e),
                            MR_EFORMAT);
            ASSERT_HAS(e.msg, "row 37 requested");
            mr_ckpt_close(&r);
            CU_ASSERT_PTR_NULL(r);
        }
        /* The stored checksum is the documented function of the data. */
        MrCkptReport rep;
        CU_ASSERT_EQUAL(mr_ckpt_inspect(path, 1, &rep, &e), MR_OK);
        CU_ASSERT(rep.ok);
        for (int64_t i = 0; i < rep.ndatasets; i++) {
            const MrCkptDatasetInfo *di = &rep.datasets[i];
            CU_ASSERT_EQUAL(di->status, 1);
            if (strcmp(di->path, "/t/f32") == 0)
                CU_ASSERT_EQUAL(di->stored, mr_ckpt_checksum(0, f32, R, C * 4));
            if (strcmp(di->path, "/t/i64") == 0)
                CU_ASSERT_EQUAL(di->stored, mr_ckpt_checksum(0, i64, R, 8));
            if (strcmp(di->path, "/t/none") == 0)
                CU_ASSERT_EQUAL(di->stored, 0);
        }
        uint64_t one = 0;
        for (int i = 0; i < R; i++)
            one += mr_ckpt_row_checksum(i, f32 + i * C, C * 4);
        CU_ASSERT_EQUAL(one, mr_ckpt_checksum(0, f32, R, C * 4));
        CU_ASSERT_EQUAL(rep.ndatasets, 6);
        mr_ckpt_report_free(&rep);
        free(big);
    }
}

/* The round trips again with 40-byte transfer slabs (MPIREC_CKPT_SLAB): every
 * read and write loops over many slabs. */
static void test_roundtrip_small_slabs(void)
{
    setenv("MPIREC_CKPT_SLAB", "40", 1);
    test_roundtrip_types();
    unsetenv("MPIREC_CKPT_SLAB");
}

/* String tables: empty strings, bytes >= 0x80 (not valid UTF-8 either), a table
 * of only empty strings, and a table with no strings; whole and partial reads. */
static void test_strings(void)
{
    const char *dir = fresh_dir("strings");
    MrErr e;
    const char *words[] = {
        "", "x", "", "\xc3\xa9t\xc3\xa9", "\x80\xff\xfe", "long string with spaces", ""};
    enum { N = 7 };
    char bytes[128];
    int64_t off[N + 1] = {0};
    for (int i = 0; i < N; i++) {
        size_t l = strlen(words[i]);
        memcpy(bytes + off[i], words[i], l);
        off[i + 1] = off[i] + (int64_t)l;
    }
    int64_t zero_off[4] = {0, 0, 0, 0};
    int64_t none_off[1] = {0};
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL_FATAL(
        mr_ckpt_writer_open(&w, g_test_comm, dir, "ckpt-1", MR_CKPT_MAGIC, MR_CKPT_VERSION, &e),
        MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_strings(w, "vocab/words", N, 0, N, bytes, off, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_strings(w, "vocab/empties", 3, 0, 3, "", zero_off, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_strings(w, "vocab/none", 0, 0, 0, NULL, none_off, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, "latest", 3, &e), MR_OK);

    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, NULL, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    char *b = NULL;
    int64_t *o = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_read_strings(r, "vocab/words", 0, N, &b, &o, &e), MR_OK);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(o[i + 1] - o[i], (int64_t)strlen(words[i]));
        CU_ASSERT(memcmp(b + o[i], words[i], strlen(words[i])) == 0);
    }
    free(b);
    free(o);
    CU_ASSERT_EQUAL(mr_ckpt_read_strings(r, "vocab/words", 3, 3, &b, &o, &e), MR_OK);
    CU_ASSERT_EQUAL(o[0], 0);
    CU_ASSERT_EQUAL(o[3], (int64_t)(strlen(words[3]) + strlen(words[4]) + strlen(words[5])));
    CU_ASSERT(memcmp(b + o[1], words[4], 3) == 0);
    free(b);
    free(o);
    CU_ASSERT_EQUAL(mr_ckpt_read_strings(r, "vocab/words", 5, 3, &b, &o, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "has 7 strings");
    CU_ASSERT_EQUAL(mr_ckpt_read_strings(r, "vocab/empties", 0, 3, &b, &o, &e), MR_OK);
    CU_ASSERT(o[0] == 0 && o[3] == 0 && b[0] == '\0');
    free(b);
    free(o);
    CU_ASSERT_EQUAL(mr_ckpt_read_strings(r, "vocab/none", 0, 0, &b, &o, &e), MR_OK);
    CU_ASSERT(o[0] == 0);
    free(b);
    free(o);
    int64_t rows = 0, cols = 0;
    CU_ASSERT_EQUAL(mr_ckpt_dims(r, "vocab/words/offsets", &rows, &cols, &e), MR_OK);
    CU_ASSERT_EQUAL(rows, N + 1);
    mr_ckpt_close(&r);
}

/* Deflate (chunked + shuffle) round trip, and the report says so. */
static void test_deflate(void)
{
    const char *dir = fresh_dir("deflate");
    MrErr e;
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL_FATAL(
        mr_ckpt_writer_open(&w, g_test_comm, dir, "ckpt-1", MR_CKPT_MAGIC, MR_CKPT_VERSION, &e),
        MR_OK);
    mr_ckpt_writer_set_deflate(w, 4);
    enum { R = 5000, C = 8 };
    float *v = malloc(R * C * sizeof *v), *back = malloc(R * C * sizeof *back);
    for (int i = 0; i < R * C; i++)
        v[i] = (float)(i % 97);
    CU_ASSERT_EQUAL(mr_ckpt_write_rows(w, "p/v", MR_F32, R, C, 0, 1, R, v, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, "latest", 2, &e), MR_OK);
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, NULL, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "p/v", MR_F32, back, &e), MR_OK);
    CU_ASSERT(memcmp(v, back, R * C * sizeof *v) == 0);
    mr_ckpt_close(&r);
    MrCkptReport rep;
    CU_ASSERT_EQUAL(mr_ckpt_inspect(path, 1, &rep, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(rep.ndatasets, 1);
    CU_ASSERT_STRING_EQUAL(rep.datasets[0].layout, "chunked+shuffle+deflate");
    CU_ASSERT(rep.file_bytes < R * C * 4 / 4); /* repetitive data compresses */
    mr_ckpt_report_free(&rep);
    free(v);
    free(back);
}

/* Argument errors are MR_EINTERNAL with the dataset named; a failure is sticky
 * and commit then refuses and removes the .tmp. */
static void test_bad_arguments(void)
{
    const char *dir = fresh_dir("badargs");
    MrErr e;
    MrCkptWriter *w = NULL;
    float v[8] = {0};
    CU_ASSERT_EQUAL(mr_ckpt_writer_open(&w, NULL, dir, "bad/name", MR_CKPT_MAGIC, 1, &e),
                    MR_EINTERNAL);
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-1", MR_CKPT_MAGIC, 1, &e),
                          MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "a//b", MR_F32, 2, 4, v, &e), MR_EINTERNAL);
    ASSERT_HAS(e.msg, "bad dataset path");
    /* Sticky: the next call repeats the failure. */
    CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "ok", MR_F32, 2, 4, v, &e), MR_EINTERNAL);
    ASSERT_HAS(e.msg, "bad dataset path");
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, "latest", 2, &e), MR_EINTERNAL);
    ASSERT_HAS(e.msg, "not written");
    CU_ASSERT(!file_exists(dir, "ckpt-1.h5.tmp"));
    CU_ASSERT(!file_exists(dir, "ckpt-1.h5"));

    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-2", MR_CKPT_MAGIC, 1, &e),
                          MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_rows(w, "x", MR_F32, 2, 4, 1, 1, 2, v, &e), MR_EINTERNAL);
    ASSERT_HAS(e.msg, "do not fit in 2 rows");
    mr_ckpt_writer_abort(&w);
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT(!file_exists(dir, "ckpt-2.h5.tmp"));

    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-3", MR_CKPT_MAGIC, 1, &e),
                          MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "x", MR_F32, 2, 4, v, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "x", MR_F32, 2, 4, v, &e), MR_EINTERNAL);
    ASSERT_HAS(e.msg, "written twice");
    mr_ckpt_writer_abort(&w);
    mr_ckpt_writer_abort(&w); /* NULL-safe */
}

/* ---- corruption --------------------------------------------------------------- */

/* One flipped byte inside a dataset's data (located with H5Dget_offset): open
 * works, verify fails on the digest (pointing at inspect), read_all names the
 * dataset, inspect marks exactly that dataset, find_latest skips the file.
 * Nothing on stderr. */
static void test_flip_data_byte(void)
{
    const char *dir = fresh_dir("flipdata");
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, 1, "latest", 0, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, 2, "latest", 0, &e), MR_OK);
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt-2.h5", dir);
    float expect[SD];
    for (int c = 0; c < SD; c++)
        expect[c] = fval(0, c, 2);
    int64_t off = data_offset(path, "/params/w", expect, sizeof expect);
    flip_byte(path, off + 4 * SD * 10 + 3); /* row 10 */

    capture_begin();
    MrCkptReader *r = NULL;
    int rc_open = mr_ckpt_open(&r, NULL, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e);
    int rc_verify = -1, rc_read = -1;
    char verify_msg[MR_ERR_SIZE] = "", read_msg[MR_ERR_SIZE] = "";
    if (!rc_open) {
        rc_verify = mr_ckpt_verify(r, &e);
        snprintf(verify_msg, sizeof verify_msg, "%s", e.msg);
        float buf[SR * SD];
        rc_read = mr_ckpt_read_all(r, "params/w", MR_F32, buf, &e);
        snprintf(read_msg, sizeof read_msg, "%s", e.msg);
        /* Other datasets are still readable. */
        CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "optim/acc", MR_F32, buf, &e), MR_OK);
    }
    mr_ckpt_close(&r);
    MrCkptReport rep;
    DAMAGED_BEGIN();
    int rc_insp = mr_ckpt_inspect(path, 1, &rep, &e);
    DAMAGED_END();
    char found[1200], skipped[4096];
    int rc_find = mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e);
    char *err = capture_end();

    CU_ASSERT_EQUAL(rc_open, MR_OK);
    CU_ASSERT_EQUAL(rc_verify, MR_EFORMAT);
    ASSERT_HAS(verify_msg, "is corrupt: its digest does not match");
    ASSERT_HAS(verify_msg, "mpirec inspect");
    CU_ASSERT_EQUAL(rc_read, MR_EFORMAT);
    ASSERT_HAS(read_msg, "checksum mismatch in dataset /params/w");
    CU_ASSERT_EQUAL(rc_insp, MR_EFORMAT);
    CU_ASSERT_EQUAL(rep.ok, 0);
    CU_ASSERT_EQUAL(rep.digest_status, 0);
    for (int64_t i = 0; i < rep.ndatasets; i++)
        CU_ASSERT_EQUAL(rep.datasets[i].status, strcmp(rep.datasets[i].path, "/params/w") ? 1 : 0);
    mr_ckpt_report_free(&rep);
    CU_ASSERT_EQUAL(rc_find, MR_OK);
    ASSERT_HAS(found, "ckpt-1.h5");
    ASSERT_HAS(skipped, "ckpt-2.h5 (named by latest)");
    ASSERT_HAS(skipped, "is corrupt: its digest does not match");
    CU_ASSERT_STRING_EQUAL(err, "");
    free(err);
}

/* A flipped byte ANYWHERE (header, superblock, object headers, heaps, padding,
 * data) is an error, never a crash or HDF5 output: every 3rd byte of a small
 * checkpoint through open + verify, every 41st also through inspect and
 * find_latest's path. */
static void test_flip_anywhere(void)
{
    const char *dir = fresh_dir("flipany");
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, 7, NULL, 0, &e), MR_OK);
    char good[1200], bad[1200];
    snprintf(good, sizeof good, "%s/ckpt-7.h5", dir);
    snprintf(bad, sizeof bad, "%s/sub/ckpt-7.h5", dir);
    char sub[1200];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    mkdir(sub, 0755);
    size_t n = 0;
    char *orig = slurp(good, &n);
    CU_ASSERT_FATAL(orig && n > 1024);
    int undetected = 0, inspect_ok = 0, find_ok = 0;
    int64_t first_undetected = -1;
    capture_begin();
    for (size_t pos = 0; pos < n; pos += 3) {
        orig[pos] ^= 0x5a;
        spit(bad, orig, n);
        orig[pos] ^= 0x5a;
        MrCkptReader *r = NULL;
        DAMAGED_BEGIN(); /* mr_ckpt_open lets HDF5 parse damaged metadata */
        int rc = mr_ckpt_open(&r, NULL, bad, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e);
        if (!rc)
            rc = mr_ckpt_verify(r, &e);
        mr_ckpt_close(&r);
        DAMAGED_END();
        if (rc == MR_OK) {
            undetected++;
            if (first_undetected < 0)
                first_undetected = (int64_t)pos;
        }
        if (pos % 41 == 0) {
            MrCkptReport rep;
            DAMAGED_BEGIN();
            if (mr_ckpt_inspect(bad, 1, &rep, &e) == MR_OK)
                inspect_ok++;
            DAMAGED_END();
            mr_ckpt_report_free(&rep);
            char found[1200];
            mr_ckpt_find_latest(sub, found, sizeof found, NULL, 0, &e);
            if (found[0])
                find_ok++;
        }
    }
    char *err = capture_end();
    if (undetected)
        fprintf(stderr, "\n  %d flips undetected, first at byte %" PRId64 " of %zu\n", undetected,
                first_undetected, n);
    CU_ASSERT_EQUAL(undetected, 0);
    CU_ASSERT_EQUAL(inspect_ok, 0);
    CU_ASSERT_EQUAL(find_ok, 0);
    if (err[0])
        fprintf(stderr, "\n  stderr: %.500s\n", err);
    CU_ASSERT_STRING_EQUAL(err, "");
    free(err);
    /* The intact copy still verifies. */
    spit(bad, orig, n);
    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, bad, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    mr_ckpt_close(&r);
    free(orig);
}

/* Truncation at several points: a clear "truncated" format error, no output. */
static void test_truncated(void)
{
    const char *dir = fresh_dir("trunc");
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, 3, NULL, 0, &e), MR_OK);
    char good[1200], bad[1200];
    snprintf(good, sizeof good, "%s/ckpt-3.h5", dir);
    snprintf(bad, sizeof bad, "%s/cut.h5", dir);
    size_t n = 0;
    char *orig = slurp(good, &n);
    CU_ASSERT_FATAL(orig != NULL);
    size_t cuts[] = {0, 1, 8, 100, 511, 512, 513, 600, n / 2, n - 100, n - 1};
    capture_begin();
    char msgs[11][MR_ERR_SIZE];
    int codes[11], icodes[11];
    for (int i = 0; i < 11; i++) {
        spit(bad, orig, cuts[i]);
        MrCkptReader *r = NULL;
        codes[i] = mr_ckpt_open(&r, NULL, bad, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e);
        snprintf(msgs[i], sizeof msgs[i], "%s", e.msg);
        mr_ckpt_close(&r);
        MrCkptReport rep;
        DAMAGED_BEGIN();
        icodes[i] = mr_ckpt_inspect(bad, 1, &rep, &e);
        DAMAGED_END();
        mr_ckpt_report_free(&rep);
    }
    char *err = capture_end();
    for (int i = 0; i < 11; i++) {
        CU_ASSERT_EQUAL(codes[i], MR_EFORMAT);
        CU_ASSERT_EQUAL(icodes[i], MR_EFORMAT);
        ASSERT_HAS(msgs[i], "truncated");
        if (cuts[i] >= 512) {
            char want[64];
            snprintf(want, sizeof want, "%zu of %zu bytes", cuts[i], n);
            ASSERT_HAS(msgs[i], want);
        }
    }
    CU_ASSERT_STRING_EQUAL(err, "");
    free(err);
    free(orig);
}

/* ---- directories ----------------------------------------------------------------- */

/* find_latest: `latest` first; missing `latest` -> scan; `latest` naming a
 * corrupt, missing or bogus file -> the previous one; uncommitted .tmp never;
 * nothing good -> "" with every skip explained; missing directory -> "". */
static void test_find_latest(void)
{
    const char *dir = fresh_dir("findlatest");
    MrErr e;
    char found[1200], skipped[8192], p[1200];
    for (int s = 1; s <= 3; s++)
        CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, s, "latest", 0, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-3.h5");
    CU_ASSERT_STRING_EQUAL(skipped, "");

    /* latest points at 2: it wins over the newer 3 (the pointer is the truth). */
    snprintf(p, sizeof p, "%s/latest", dir);
    spit(p, "ckpt-2.h5\n", 10);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-2.h5");

    /* No latest: scan by step. */
    unlink(p);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-3.h5");

    /* An uncommitted newer .tmp is ignored. */
    snprintf(p, sizeof p, "%s/ckpt-4.h5.tmp", dir);
    spit(p, "partial", 7);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-3.h5");

    /* latest -> corrupt 3: fall back to 2. */
    snprintf(p, sizeof p, "%s/latest", dir);
    spit(p, "ckpt-3.h5\n", 10);
    snprintf(p, sizeof p, "%s/ckpt-3.h5", dir);
    flip_byte(p, 700);
    capture_begin();
    int rc = mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e);
    char *err = capture_end();
    CU_ASSERT_EQUAL(rc, MR_OK);
    ASSERT_HAS(found, "/ckpt-2.h5");
    ASSERT_HAS(skipped, "ckpt-3.h5 (named by latest)");
    ASSERT_HAS(skipped, "corrupt");
    CU_ASSERT_STRING_EQUAL(err, "");
    free(err);

    /* latest -> a missing file, and latest holding a path: fall back. */
    snprintf(p, sizeof p, "%s/latest", dir);
    spit(p, "ckpt-99.h5", 10);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-2.h5");
    ASSERT_HAS(skipped, "No such file");
    spit(p, "../elsewhere.h5\n", 16);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    ASSERT_HAS(found, "/ckpt-2.h5");
    ASSERT_HAS(skipped, "latest: does not hold a file name");

    /* Nothing good. */
    snprintf(p, sizeof p, "%s/ckpt-2.h5", dir);
    truncate(p, 1000);
    snprintf(p, sizeof p, "%s/ckpt-1.h5", dir);
    truncate(p, 0);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    CU_ASSERT_STRING_EQUAL(found, "");
    ASSERT_HAS(skipped, "ckpt-3.h5: ");
    ASSERT_HAS(skipped, "ckpt-2.h5: ");
    ASSERT_HAS(skipped, "truncated");
    ASSERT_HAS(skipped, "ckpt-1.h5: ");

    /* No directory at all: no checkpoint, not an error. */
    snprintf(p, sizeof p, "%s/does-not-exist", dir);
    CU_ASSERT_EQUAL(mr_ckpt_find_latest(p, found, sizeof found, skipped, sizeof skipped, &e),
                    MR_OK);
    CU_ASSERT_STRING_EQUAL(found, "");
}

/* keep-K rotation: only the newest K remain, `latest` names the newest, stale
 * .tmp files of the same prefix go, other files stay. */
static void test_rotation(void)
{
    const char *dir = fresh_dir("rotation");
    MrErr e;
    char p[1200];
    snprintf(p, sizeof p, "%s/ckpt-9.h5.tmp", dir);
    spit(p, "stale", 5);
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    spit(p, "mine", 4);
    for (int s = 1; s <= 5; s++) {
        CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, s * 10, "latest", 2, &e), MR_OK);
        char *l = latest_text(dir);
        char want[32];
        snprintf(want, sizeof want, "ckpt-%d.h5\n", s * 10);
        CU_ASSERT_STRING_EQUAL(l, want);
        free(l);
    }
    CU_ASSERT(!file_exists(dir, "ckpt-10.h5"));
    CU_ASSERT(!file_exists(dir, "ckpt-20.h5"));
    CU_ASSERT(!file_exists(dir, "ckpt-30.h5"));
    CU_ASSERT(file_exists(dir, "ckpt-40.h5"));
    CU_ASSERT(file_exists(dir, "ckpt-50.h5"));
    CU_ASSERT(!file_exists(dir, "ckpt-9.h5.tmp"));
    CU_ASSERT(!file_exists(dir, "latest.tmp"));
    CU_ASSERT(file_exists(dir, "notes.txt"));
    /* keep <= 0 keeps everything. */
    CU_ASSERT_EQUAL(write_small(NULL, dir, 60, "latest", 0, &e), MR_OK);
    CU_ASSERT(file_exists(dir, "ckpt-40.h5") && file_exists(dir, "ckpt-50.h5") &&
              file_exists(dir, "ckpt-60.h5"));
    /* The current file is kept even when older by step than the K newest. */
    CU_ASSERT_EQUAL(write_small(NULL, dir, 5, "latest", 1, &e), MR_OK);
    CU_ASSERT(file_exists(dir, "ckpt-5.h5") && file_exists(dir, "ckpt-60.h5"));
    CU_ASSERT(!file_exists(dir, "ckpt-50.h5"));
}

/* Magic and version mismatches are refused with a hint; magic = NULL accepts
 * any mpirec kind; plain HDF5 and non-HDF5 files are told apart. */
static void test_magic_version(void)
{
    const char *dir = fresh_dir("magic");
    MrErr e;
    MrCkptWriter *w = NULL;
    int64_t x[2] = {1, 2};
    CU_ASSERT_EQUAL_FATAL(
        mr_ckpt_writer_open(&w, NULL, dir, "index", MR_INDEX_MAGIC, MR_INDEX_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "x", MR_I64, 2, 0, x, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, NULL, 0, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-1", MR_CKPT_MAGIC, 99, &e),
                          MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, NULL, 0, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-0", MR_CKPT_MAGIC, 0, &e),
                          MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, NULL, 0, &e), MR_OK);

    char p[1200];
    MrCkptReader *r = NULL;
    snprintf(p, sizeof p, "%s/index.h5", dir);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EFORMAT);
    CU_ASSERT_PTR_NULL(r);
    ASSERT_HAS(e.msg, "is a 'MPIREC-INDEX' file, expected 'MPIREC-CKPT'");
    ASSERT_HAS(e.msg, "hint: this is a candidate index");
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, NULL, 0, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    mr_ckpt_close(&r);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_INDEX_MAGIC, MR_INDEX_VERSION, &e), MR_OK);
    mr_ckpt_close(&r);

    snprintf(p, sizeof p, "%s/ckpt-1.h5", dir);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "format version 99");
    ASSERT_HAS(e.msg, "reads version 1");
    ASSERT_HAS(e.msg, "hint: it was written by a newer mpirec");
    snprintf(p, sizeof p, "%s/ckpt-0.h5", dir);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "hint: it was written by an older mpirec");

    /* A plain HDF5 file (no user block, no magic). */
    snprintf(p, sizeof p, "%s/plain.h5", dir);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    H5Fclose(f);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "no 'magic' attribute");
    /* Not HDF5 at all. */
    snprintf(p, sizeof p, "%s/text.h5", dir);
    char junk[2000];
    memset(junk, 'j', sizeof junk);
    spit(p, junk, sizeof junk);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "not a valid mpirec file");
    /* Missing file and directory: I/O errors. */
    snprintf(p, sizeof p, "%s/nope.h5", dir);
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, p, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EIO);
    ASSERT_HAS(e.msg, "No such file");
    CU_ASSERT_EQUAL(mr_ckpt_open(&r, NULL, dir, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_EIO);
    ASSERT_HAS(e.msg, "is a directory");
}

/* ---- write failures ---------------------------------------------------------------- */

/* Injected failures (MPIREC_FAULT_INJECT) at every point: during a dataset
 * write, at close, fsync, rename and at the `latest` update. Each time the error
 * names the file, the .tmp is gone and the previous checkpoint and `latest` are
 * untouched (after a `latest` failure the new file exists, complete). */
static void test_fault_injection(void)
{
    const char *dir = fresh_dir("faults");
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(write_small(g_test_comm, dir, 1, "latest", 3, &e), MR_OK);
    const char *items[] = {"ckpt_write_after:0", "ckpt_write_after:900", "ckpt_commit:close",
                           "ckpt_commit:fsync",  "ckpt_commit:rename",   "ckpt_commit:latest"};
    /* (ckpt_commit:lose needs P > 1: test_mpi_ckpt.c) */
    const char *expect[] = {"injected",     "injected",      "cannot close",
                            "cannot fsync", "cannot rename", "cannot update latest"};
    for (int mode = 0; mode < 2; mode++)
        for (int i = 0; i < 6; i++) {
            setenv("MPIREC_FAULT_INJECT", items[i], 1);
            int rc = write_small(mode ? g_test_comm : NULL, dir, 2, "latest", 3, &e);
            unsetenv("MPIREC_FAULT_INJECT");
            CU_ASSERT_EQUAL(rc, MR_EIO);
            ASSERT_HAS(e.msg, "ckpt-2.h5");
            ASSERT_HAS(e.msg, expect[i]);
            ASSERT_HAS(e.msg, "MPIREC_FAULT_INJECT=");
            CU_ASSERT(!file_exists(dir, "ckpt-2.h5.tmp"));
            CU_ASSERT_EQUAL(file_exists(dir, "ckpt-2.h5"), i == 5);
            if (i >= 2) /* commit stages: the prefix says what state is left */
                ASSERT_HAS(e.msg, i == 5 ? "was written, but" : "not committed");
            char *l = latest_text(dir);
            CU_ASSERT_STRING_EQUAL(l, "ckpt-1.h5\n");
            free(l);
            char found[1200];
            CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, NULL, 0, &e), MR_OK);
            ASSERT_HAS(found, "/ckpt-1.h5");
            char p[1200];
            snprintf(p, sizeof p, "%s/ckpt-2.h5", dir);
            unlink(p);
        }
    /* Items of other modules are ignored; malformed ones are config errors. */
    setenv("MPIREC_FAULT_INJECT", "train_step:3,ckpt_write_after:x", 1);
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-3", MR_CKPT_MAGIC, 1, &e), MR_ECONFIG);
    ASSERT_HAS(e.msg, "ckpt_write_after:x");
    setenv("MPIREC_FAULT_INJECT", "ckpt_commit:never", 1);
    CU_ASSERT_EQUAL(mr_ckpt_writer_open(&w, NULL, dir, "ckpt-3", MR_CKPT_MAGIC, 1, &e), MR_ECONFIG);
    setenv("MPIREC_FAULT_INJECT", "train_step:3,ckpt_write_after:5@7", 1); /* not this rank */
    CU_ASSERT_EQUAL(write_small(NULL, dir, 3, "latest", 3, &e), MR_OK);
    unsetenv("MPIREC_FAULT_INJECT");
}

/* A real full disk: a 12 MiB tmpfs holds one small checkpoint; writing a 16 MiB
 * table then fails with ENOSPC (the space reservation reports it before any
 * byte of the table is written), with the serial writer and with a
 * communicator of one rank. Needs mount(2) (root in this container); says so on
 * stdout when it cannot. */
static void test_disk_full_tmpfs(void)
{
    const char *dir = fresh_dir("diskfull");
    umount2(dir, MNT_DETACH); /* a mount left by an interrupted run */
    if (mount("tmpfs", dir, "tmpfs", 0, "size=12m") != 0) {
        printf("\n  [tmpfs not mountable here (%s): the injected-failure test covers this]\n",
               strerror(errno));
        return;
    }
    MrErr e;
    CU_ASSERT_EQUAL(write_small(NULL, dir, 1, "latest", 3, &e), MR_OK);
    float *big = calloc(1 << 22, sizeof *big);
    for (int mode = 0; mode < 2; mode++) {
        MrComm *comm = mode ? g_test_comm : NULL;
        MrCkptWriter *w = NULL;
        capture_begin();
        int rc = mr_ckpt_writer_open(&w, comm, dir, "ckpt-2", MR_CKPT_MAGIC, 1, &e);
        if (!rc)
            rc = mr_ckpt_write_root(w, "params/big", MR_F32, 1 << 20, 4, big, &e);
        char msg[MR_ERR_SIZE];
        snprintf(msg, sizeof msg, "%s", e.msg);
        int rc2 = w ? mr_ckpt_writer_commit(&w, "latest", 3, &e) : rc;
        char *err = capture_end();
        CU_ASSERT_EQUAL(rc, MR_EIO);
        CU_ASSERT_EQUAL(rc2, MR_EIO);
        ASSERT_HAS(msg, "ckpt-2.h5.tmp");
        ASSERT_HAS(msg, "params/big");
        ASSERT_HAS(msg, "No space left on device");
        ASSERT_HAS(msg, "MiB free on the file system");
        CU_ASSERT_STRING_EQUAL(err, "");
        free(err);
        CU_ASSERT(!file_exists(dir, "ckpt-2.h5.tmp"));
        CU_ASSERT(!file_exists(dir, "ckpt-2.h5"));
        char *l = latest_text(dir);
        CU_ASSERT_STRING_EQUAL(l, "ckpt-1.h5\n");
        free(l);
        char found[1200];
        CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, NULL, 0, &e), MR_OK);
        ASSERT_HAS(found, "/ckpt-1.h5");
    }
    free(big);
    CU_ASSERT_EQUAL(umount2(dir, MNT_DETACH), 0);
}

/* The run-directory lock, two processes: the second gets MR_EIO naming the
 * holder (host, pid, SLURM job, owner text); once the holder dies without
 * unlocking, the kernel has released the lock and the second process gets it. */
static void test_dir_lock(void)
{
    const char *dir = fresh_dir("lock");
    MrErr e;
    int up[2], down[2];
    CU_ASSERT_FATAL(pipe(up) == 0 && pipe(down) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        /* Child: take the lock, report, wait, then die holding it. */
        setenv("SLURM_JOB_ID", "4242", 1);
        MrCkptLock *l = NULL;
        MrErr ce;
        char ok = mr_ckpt_dir_lock(dir, "train rank 0", &l, &ce) == MR_OK ? 'y' : 'n';
        if (write(up[1], &ok, 1) != 1)
            _exit(3);
        char c;
        if (read(down[0], &c, 1) != 1)
            _exit(4);
        _exit(0);
    }
    char ok = 0;
    CU_ASSERT_EQUAL(read(up[0], &ok, 1), 1);
    CU_ASSERT_EQUAL(ok, 'y');
    MrCkptLock *l = NULL;
    CU_ASSERT_EQUAL(mr_ckpt_dir_lock(dir, "second job", &l, &e), MR_EIO);
    CU_ASSERT_PTR_NULL(l);
    char want[64];
    snprintf(want, sizeof want, "pid=%ld", (long)pid);
    ASSERT_HAS(e.msg, "is in use by another job");
    ASSERT_HAS(e.msg, want);
    ASSERT_HAS(e.msg, "host=");
    ASSERT_HAS(e.msg, "slurm_job=4242");
    ASSERT_HAS(e.msg, "owner=train rank 0");
    ASSERT_HAS(e.msg, dir);
    /* The holder dies (like a preempted job): its lock goes with it. */
    CU_ASSERT_EQUAL(write(down[1], "x", 1), 1);
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
    CU_ASSERT_EQUAL(mr_ckpt_dir_lock(dir, "second job", &l, &e), MR_OK);
    CU_ASSERT_PTR_NOT_NULL(l);
    /* Within one process too, a second holder is refused (flock is per open). */
    MrCkptLock *l2 = NULL;
    CU_ASSERT_EQUAL(mr_ckpt_dir_lock(dir, NULL, &l2, &e), MR_EIO);
    snprintf(want, sizeof want, "pid=%ld", (long)getpid());
    ASSERT_HAS(e.msg, want);
    ASSERT_HAS(e.msg, "owner=second job");
    mr_ckpt_dir_unlock(&l);
    CU_ASSERT_PTR_NULL(l);
    mr_ckpt_dir_unlock(&l); /* NULL-safe */
    CU_ASSERT_EQUAL(mr_ckpt_dir_lock(dir, NULL, &l2, &e), MR_OK);
    mr_ckpt_dir_unlock(&l2);
}

/* The inspect report of a checkpoint: attributes in order with their kinds,
 * datasets with type, shape, layout and verified checksums; --no-verify leaves
 * the status unchecked. */
static void test_inspect_report(void)
{
    const char *dir = fresh_dir("inspect");
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(write_small(NULL, dir, 5, "latest", 2, &e), MR_OK);
    char p[1200];
    snprintf(p, sizeof p, "%s/ckpt-5.h5", dir);
    MrCkptReport rep;
    CU_ASSERT_EQUAL(mr_ckpt_inspect(p, 1, &rep, &e), MR_OK);
    CU_ASSERT(rep.ok);
    CU_ASSERT_EQUAL(rep.header, 1);
    CU_ASSERT_EQUAL(rep.digest_status, 1);
    CU_ASSERT_EQUAL(rep.header_bytes, rep.file_bytes);
    CU_ASSERT_STRING_EQUAL(rep.magic, MR_CKPT_MAGIC);
    CU_ASSERT_EQUAL(rep.version, MR_CKPT_VERSION);
    const char *names[] = {"/created",     "/format_version", "/magic",    "/writer",
                           "/meta/config", "/meta/epoch",     "/meta/step"};
    CU_ASSERT_EQUAL_FATAL(rep.nattrs, 7);
    for (int i = 0; i < 7; i++)
        CU_ASSERT_STRING_EQUAL(rep.attrs[i].name, names[i]);
    CU_ASSERT_EQUAL(rep.attrs[6].kind, MR_CKPT_VAL_INT);
    CU_ASSERT_EQUAL(rep.attrs[6].i, 5);
    CU_ASSERT_EQUAL(rep.attrs[4].kind, MR_CKPT_VAL_STRING);
    const char *dsn[] = {"/data/cursor", "/optim/acc", "/params/w", "/vocab/user/bytes",
                         "/vocab/user/offsets"};
    CU_ASSERT_EQUAL_FATAL(rep.ndatasets, 5);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_STRING_EQUAL(rep.datasets[i].path, dsn[i]);
        CU_ASSERT_EQUAL(rep.datasets[i].status, 1);
        CU_ASSERT_STRING_EQUAL(rep.datasets[i].layout, "contiguous");
    }
    CU_ASSERT_STRING_EQUAL(rep.datasets[2].dtype, "float32");
    CU_ASSERT(rep.datasets[2].ndims == 2 && rep.datasets[2].dims[0] == SR &&
              rep.datasets[2].dims[1] == SD);
    CU_ASSERT_STRING_EQUAL(rep.datasets[4].dtype, "int64");
    CU_ASSERT(rep.datasets[4].ndims == 1 && rep.datasets[4].dims[0] == 6);
    mr_ckpt_report_free(&rep);
    CU_ASSERT_EQUAL(mr_ckpt_inspect(p, 0, &rep, &e), MR_OK);
    CU_ASSERT_EQUAL(rep.digest_status, -1);
    CU_ASSERT_EQUAL(rep.datasets[0].status, -1);
    CU_ASSERT(rep.datasets[0].has_checksum);
    mr_ckpt_report_free(&rep);
    snprintf(p, sizeof p, "%s/absent.h5", dir);
    CU_ASSERT_EQUAL(mr_ckpt_inspect(p, 1, &rep, &e), MR_EIO);
    mr_ckpt_report_free(&rep);
}

/* read_row_list merges nearby rows into one range read: a few rows spaced just
 * under the merge gap span far more rows than were asked for. The staging buffer
 * must hold the whole span (an overrun here was found by ASan in serving). */
static void test_row_list_sparse(void)
{
    const char *dir = fresh_dir("rowlist-sparse");
    MrErr e;
    mr_err_clear(&e);
    enum { R = 20000, C = 32 };
    float *t = malloc((size_t)R * C * sizeof *t);
    for (int64_t i = 0; i < (int64_t)R * C; i++)
        t[i] = (float)i;
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL_FATAL(
        mr_ckpt_writer_open(&w, NULL, dir, "ckpt-1", MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_write_root(w, "tab", MR_F32, R, C, t, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_commit(&w, "latest", 3, &e), MR_OK);
    char path[1024];
    snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, NULL, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    /* 64 KiB gap / 128-byte rows = 512 rows: spacing 500 merges them all. */
    int64_t rows[6] = {19000, 500, 3000, 1000, 1500, 2500};
    float got[6 * C];
    CU_ASSERT_EQUAL(mr_ckpt_read_row_list(r, "tab", MR_F32, rows, 6, got, &e), MR_OK);
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < C; j++)
            CU_ASSERT_EQUAL(got[k * C + j], (float)(rows[k] * C + j));
    mr_ckpt_close(&r);
    free(t);
}

int add_suite_ckpt(void)
{
    CU_pSuite s = CU_add_suite("ckpt", NULL, NULL);
    if (!s)
        return -1;
    if (!CU_add_test(s, "roundtrip_types", test_roundtrip_types) ||
        !CU_add_test(s, "roundtrip_small_slabs", test_roundtrip_small_slabs) ||
        !CU_add_test(s, "strings", test_strings) || !CU_add_test(s, "deflate", test_deflate) ||
        !CU_add_test(s, "bad_arguments", test_bad_arguments) ||
        !CU_add_test(s, "flip_data_byte", test_flip_data_byte) ||
        !CU_add_test(s, "flip_anywhere", test_flip_anywhere) ||
        !CU_add_test(s, "truncated", test_truncated) ||
        !CU_add_test(s, "find_latest", test_find_latest) ||
        !CU_add_test(s, "rotation", test_rotation) ||
        !CU_add_test(s, "magic_version", test_magic_version) ||
        !CU_add_test(s, "fault_injection", test_fault_injection) ||
        !CU_add_test(s, "disk_full_tmpfs", test_disk_full_tmpfs) ||
        !CU_add_test(s, "dir_lock", test_dir_lock) ||
        !CU_add_test(s, "inspect_report", test_inspect_report) ||
        !CU_add_test(s, "row_list_sparse", test_row_list_sparse) ||
        !CU_add_test(s, "no_open_ids", no_open_ids))
        return -1;
    return 0;
}
