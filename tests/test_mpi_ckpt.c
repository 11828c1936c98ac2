/* test_mpi_ckpt.c — parallel checkpoint writes and reads at whatever rank count
 * the suite runs under (ctest: P = 1, 2, 3, 4). Every rank runs every test; all
 * ranks share one directory.
 *
 * What must hold at any P: row-sharded tables (row i on rank i mod P) written
 * collectively read back identically with any other stride (a reader at P'),
 * as row lists and whole; the stored checksum equals the one computed serially
 * from the full table; a failure on one rank (bad arguments, injected I/O error,
 * a really full disk) makes every rank return the same code without hanging,
 * and leaves the previous checkpoint and `latest` untouched.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpirec/ckpt.h"
#include "test_util.h"

/* A directory shared by all ranks, emptied by rank 0. */
static const char *shared_dir(const char *name)
{
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/mpickpt/%s", test_tmp_dir(), name);
    MrErr e;
    if (g_test_comm->rank == 0) {
        char cmd[2200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot prepare %s\n", dir);
    }
    mr_comm_barrier(g_test_comm, &e);
    return dir;
}

static int exists_in(const char *dir, const char *name)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static char *latest_of(const char *dir)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/latest", dir);
    FILE *f = fopen(p, "rb");
    char *s = calloc(1, 256);
    if (f) {
        size_t n = fread(s, 1, 255, f);
        s[n] = '\0';
        fclose(f);
    } else {
        strcpy(s, "(missing)");
    }
    return s;
}

/* The global tables, as functions of (row, col). */
enum { R = 1003, C = 5, S = 101 };
static float vf(int64_t r, int64_t c)
{
    return (float)r * 0.5f - (float)c * 3.25f;
}
static int64_t vi(int64_t r)
{
    return r * 1000003 - 7;
}
static double vd(int64_t r, int64_t c)
{
    return (double)r / 3.0 + (double)c;
}
static void vstr(int64_t k, char *buf, size_t n)
{
    if (k % 7 == 0)
        buf[0] = '\0';
    else if (k % 5 == 0)
        snprintf(buf, n, "\xe2\x82\xac%" PRId64 "\xff", k);
    else
        snprintf(buf, n, "s%" PRId64, k);
}

static int64_t count_rows(int64_t first, int64_t stride, int64_t rows)
{
    return first >= rows ? 0 : (rows - 1 - first) / stride + 1;
}

/* Write a checkpoint at step `step` with the sharded tables, a replicated one
 * and a string table. */
static int write_tables(const char *dir, int64_t step, const char *latest, int keep, MrErr *e)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank;
    int64_t n = count_rows(me, P, R);
    float *f = malloc((size_t)(n ? n : 1) * C * sizeof *f);
    int64_t *iv = malloc((size_t)(n ? n : 1) * sizeof *iv);
    for (int64_t k = 0; k < n; k++) {
        int64_t r = me + k * P;
        for (int j = 0; j < C; j++)
            f[k * C + j] = vf(r, j);
        iv[k] = vi(r);
    }
    /* Contiguous ranges for the f64 table: rank q holds [R*q/P, R*(q+1)/P). */
    int64_t lo = (int64_t)R * me / P, hi = (int64_t)R * (me + 1) / P;
    double *dv = malloc((size_t)(hi - lo + 1) * 2 * sizeof *dv);
    for (int64_t r = lo; r < hi; r++) {
        dv[2 * (r - lo)] = vd(r, 0);
        dv[2 * (r - lo) + 1] = vd(r, 1);
    }
    /* Strings: contiguous ranges too. */
    int64_t slo = (int64_t)S * me / P, shi = (int64_t)S * (me + 1) / P;
    char *bytes = malloc(16 * (size_t)(shi - slo) + 1);
    int64_t *off = malloc((size_t)(shi - slo + 1) * sizeof *off);
    off[0] = 0;
    for (int64_t k = slo; k < shi; k++) {
        char s[32];
        vstr(k, s, sizeof s);
        memcpy(bytes + off[k - slo], s, strlen(s));
        off[k - slo + 1] = off[k - slo] + (int64_t)strlen(s);
    }
    float dense[7 * 3];
    for (int i = 0; i < 21; i++)
        dense[i] = (float)i + 0.5f;
    char base[64];
    snprintf(base, sizeof base, "ckpt-%" PRId64, step);
    MrCkptWriter *w = NULL;
    int rc = mr_ckpt_writer_open(&w, c, dir, base, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
    if (!rc && !(rc = mr_ckpt_write_attr_i64(w, "step", step, e)) &&
        !(rc = mr_ckpt_write_attr_i64(w, "ranks", P, e)) &&
        !(rc = mr_ckpt_write_attr_str(w, "config", "{\"k\": 1}", e)) &&
        !(rc = mr_ckpt_write_rows(w, "params/user", MR_F32, R, C, me, P, n, f, e)) &&
        !(rc = mr_ckpt_write_rows(w, "optim/user_ids", MR_I64, R, 0, me, P, n, iv, e)) &&
        !(rc = mr_ckpt_write_rows(w, "params/f64", MR_F64, R, 2, lo, 1, hi - lo, dv, e)) &&
        !(rc = mr_ckpt_write_root(w, "params/dense", MR_F32, 7, 3, me == 0 ? dense : NULL, e)) &&
        !(rc = mr_ckpt_write_strings(w, "vocab/user", S, slo, shi - slo, bytes, off, e)))
        rc = mr_ckpt_writer_commit(&w, latest, keep, e);
    if (rc)
        mr_ckpt_writer_abort(&w);
    free(f);
    free(iv);
    free(dv);
    free(bytes);
    free(off);
    return rc;
}

/* Round trip at P: write sharded, read back at every other P' = 1..5 with
 * stride P' (each rank plays the virtual ranks r' = me, me + P, ...), as a row
 * list with duplicates, whole; strings whole and by range; checksums equal the
 * serial ones; the serial reader (no MPI-IO) agrees. */
static void test_sharded_roundtrip(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank;
    MrErr e;
    const char *dir = shared_dir("roundtrip");
    int wrc = write_tables(dir, 100, "latest", 2, &e);
    if (wrc)
        fprintf(stderr, "\n  [rank %d] %s\n", me, e.msg);
    CU_ASSERT_EQUAL_FATAL(wrc, MR_OK);
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt-100.h5", dir);
    CU_ASSERT(exists_in(dir, "ckpt-100.h5"));
    CU_ASSERT(!exists_in(dir, "ckpt-100.h5.tmp"));

    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, c, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    int64_t v = 0, rows = 0, cols = 0;
    CU_ASSERT_EQUAL(mr_ckpt_read_attr_i64(r, "ranks", &v, &e), MR_OK);
    CU_ASSERT_EQUAL(v, P);
    CU_ASSERT_EQUAL(mr_ckpt_dims(r, "params/user", &rows, &cols, &e), MR_OK);
    CU_ASSERT(rows == R && cols == C);

    float *f = malloc((size_t)R * C * sizeof *f);
    int64_t *iv = malloc((size_t)R * sizeof *iv);
    for (int Pp = 1; Pp <= 5; Pp++) {
        int64_t rounds = (Pp + P - 1) / P;
        for (int64_t j = 0; j < rounds; j++) {
            int64_t rp = me + j * P; /* the virtual rank this rank plays */
            int64_t n = rp < Pp ? count_rows(rp, Pp, R) : 0;
            int64_t first = rp < Pp ? rp : 0;
            CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "params/user", MR_F32, first, Pp, n, f, &e),
                            MR_OK);
            CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "optim/user_ids", MR_I64, first, Pp, n, iv, &e),
                            MR_OK);
            int bad = 0;
            for (int64_t k = 0; k < n; k++) {
                int64_t row = rp + k * Pp;
                for (int cc = 0; cc < C; cc++)
                    bad += f[k * C + cc] != vf(row, cc);
                bad += iv[k] != vi(row);
            }
            CU_ASSERT_EQUAL(bad, 0);
        }
    }
    /* A row list: rank-dependent, unsorted, with duplicates. */
    int64_t list[64];
    uint64_t x = 88172645463325252ULL + (uint64_t)me;
    for (int k = 0; k < 64; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        list[k] = (int64_t)(x % R);
    }
    list[5] = list[6];
    list[9] = R - 1;
    CU_ASSERT_EQUAL(mr_ckpt_read_row_list(r, "params/user", MR_F32, list, 64, f, &e), MR_OK);
    int bad = 0;
    for (int k = 0; k < 64; k++)
        for (int cc = 0; cc < C; cc++)
            bad += f[k * C + cc] != vf(list[k], cc);
    CU_ASSERT_EQUAL(bad, 0);
    /* Whole tables, on every rank. */
    CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "params/user", MR_F32, f, &e), MR_OK);
    bad = 0;
    for (int64_t row = 0; row < R; row++)
        for (int cc = 0; cc < C; cc++)
            bad += f[row * C + cc] != vf(row, cc);
    CU_ASSERT_EQUAL(bad, 0);
    double *dv = malloc((size_t)R * 2 * sizeof *dv);
    CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "params/f64", MR_F64, dv, &e), MR_OK);
    bad = 0;
    for (int64_t row = 0; row < R; row++)
        bad += dv[2 * row] != vd(row, 0) || dv[2 * row + 1] != vd(row, 1);
    CU_ASSERT_EQUAL(bad, 0);
    float dense[21];
    CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "params/dense", MR_F32, dense, &e), MR_OK);
    CU_ASSERT_EQUAL(dense[20], 20.5f);
    /* Strings: whole, and this rank's share at another split. */
    char *b = NULL;
    int64_t *o = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_read_strings(r, "vocab/user", 0, S, &b, &o, &e), MR_OK);
    bad = 0;
    for (int64_t k = 0; k < S; k++) {
        char s[32];
        vstr(k, s, sizeof s);
        bad += o[k + 1] - o[k] != (int64_t)strlen(s) || memcmp(b + o[k], s, strlen(s)) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(b);
    free(o);
    int64_t a0 = (int64_t)S * me / (P + 1), a1 = (int64_t)S * (me + 2) / (P + 1);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_read_strings(r, "vocab/user", a0, a1 - a0, &b, &o, &e), MR_OK);
    bad = 0;
    for (int64_t k = a0; k < a1; k++) {
        char s[32];
        vstr(k, s, sizeof s);
        bad += o[k - a0 + 1] - o[k - a0] != (int64_t)strlen(s) ||
               memcmp(b + o[k - a0], s, strlen(s)) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(b);
    free(o);
    mr_ckpt_close(&r);

    /* The stored checksums are the serial ones (identical for every P). */
    for (int64_t row = 0; row < R; row++) {
        for (int cc = 0; cc < C; cc++)
            f[row * C + cc] = vf(row, cc);
        iv[row] = vi(row);
    }
    uint64_t want_user = mr_ckpt_checksum(0, f, R, C * sizeof(float));
    uint64_t want_ids = mr_ckpt_checksum(0, iv, R, sizeof(int64_t));
    MrCkptReport rep;
    CU_ASSERT_EQUAL(mr_ckpt_inspect(path, 1, &rep, &e), MR_OK);
    int seen = 0;
    for (int64_t i = 0; i < rep.ndatasets; i++) {
        if (strcmp(rep.datasets[i].path, "/params/user") == 0) {
            CU_ASSERT_EQUAL(rep.datasets[i].stored, want_user);
            seen++;
        }
        if (strcmp(rep.datasets[i].path, "/optim/user_ids") == 0) {
            CU_ASSERT_EQUAL(rep.datasets[i].stored, want_ids);
            seen++;
        }
        CU_ASSERT_EQUAL(rep.datasets[i].status, 1);
    }
    CU_ASSERT_EQUAL(seen, 2);
    mr_ckpt_report_free(&rep);

    /* Serial reader on every rank at once, rows of another split. */
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, NULL, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
    int64_t n = count_rows(me, P + 1, R);
    CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "params/user", MR_F32, me, P + 1, n, f, &e), MR_OK);
    bad = 0;
    for (int64_t k = 0; k < n; k++)
        bad += f[k * C] != vf(me + k * (P + 1), 0);
    CU_ASSERT_EQUAL(bad, 0);
    mr_ckpt_close(&r);
    free(f);
    free(iv);
    free(dv);

    /* find_latest (rank 0's job) sees it. */
    if (me == 0) {
        char found[1200];
        CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, NULL, 0, &e), MR_OK);
        ASSERT_HAS(found, "/ckpt-100.h5");
    }
    mr_comm_barrier(c, &e);
}

/* The same with transfer slabs of 1000 bytes (MPIREC_CKPT_SLAB): dozens of
 * slabs and windows per table, so every window and slab boundary of the
 * redistribution (writes and reads) is crossed. */
static void test_sharded_small_slabs(void)
{
    setenv("MPIREC_CKPT_SLAB", "1000", 1);
    test_sharded_roundtrip();
    unsetenv("MPIREC_CKPT_SLAB");
}

/* Deflate at P ranks: chunked + shuffle + deflate datasets need collective
 * transfers (HDF5 1.10); sharded rows still go through the windows, and the
 * read-back check goes through HDF5. Small slabs: several chunks per window. */
static void test_deflate_sharded(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank;
    MrErr e;
    const char *dir = shared_dir("deflate");
    setenv("MPIREC_CKPT_SLAB", "4000", 1);
    int64_t n = count_rows(me, P, R);
    float *f = malloc((size_t)(n ? n : 1) * C * sizeof *f),
          *all = malloc((size_t)R * C * sizeof *f);
    for (int64_t k = 0; k < n; k++)
        for (int j = 0; j < C; j++)
            f[k * C + j] = vf(me + k * P, j);
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, c, dir, "ckpt-1", MR_CKPT_MAGIC, 1, &e), MR_OK);
    mr_ckpt_writer_set_deflate(w, 1);
    int rc = mr_ckpt_write_rows(w, "params/user", MR_F32, R, C, me, P, n, f, &e);
    if (rc)
        fprintf(stderr, "\n  [rank %d] %s\n", me, e.msg);
    CU_ASSERT_EQUAL(rc, MR_OK);
    rc = rc ? rc : mr_ckpt_writer_commit(&w, "latest", 2, &e);
    if (rc)
        fprintf(stderr, "\n  [rank %d] %s\n", me, e.msg);
    CU_ASSERT_EQUAL(rc, MR_OK);
    mr_ckpt_writer_abort(&w);
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
    MrCkptReader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, c, path, MR_CKPT_MAGIC, 1, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_ckpt_read_all(r, "params/user", MR_F32, all, &e), MR_OK);
    int bad = 0;
    for (int64_t row = 0; row < R; row++)
        for (int j = 0; j < C; j++)
            bad += all[row * C + j] != vf(row, j);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(mr_ckpt_read_rows(r, "params/user", MR_F32, me, P, n, f, &e), MR_OK);
    bad = 0;
    for (int64_t k = 0; k < n; k++)
        bad += f[k * C] != vf(me + k * P, 0);
    CU_ASSERT_EQUAL(bad, 0);
    mr_ckpt_close(&r);
    unsetenv("MPIREC_CKPT_SLAB");
    free(f);
    free(all);
}

/* One rank passes rows that do not fit: every rank gets MR_EINTERNAL (the
 * others "rank R failed: ..."), commit refuses everywhere, no .tmp remains. */
static void test_error_agreement(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank, bad_rank = P - 1;
    MrErr e;
    const char *dir = shared_dir("agree");
    float row[4 * C] = {0}; /* room for the 4-row table below */
    MrCkptWriter *w = NULL;
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, c, dir, "ckpt-1", MR_CKPT_MAGIC, 1, &e), MR_OK);
    /* Each rank writes one row of a P-row table; the bad rank claims row P. */
    int rc = mr_ckpt_write_rows(w, "t", MR_F32, P, C, me == bad_rank ? P : me, 1, 1, row, &e);
    CU_ASSERT_EQUAL(rc, MR_EINTERNAL);
    if (me == bad_rank) {
        ASSERT_HAS(e.msg, "do not fit");
    } else {
        char want[32];
        snprintf(want, sizeof want, "rank %d failed", bad_rank);
        ASSERT_HAS(e.msg, want);
    }
    CU_ASSERT_EQUAL(mr_ckpt_writer_commit(&w, "latest", 2, &e), MR_EINTERNAL);
    mr_comm_barrier(c, &e);
    CU_ASSERT(!exists_in(dir, "ckpt-1.h5.tmp"));
    CU_ASSERT(!exists_in(dir, "ckpt-1.h5"));

    /* Ranks disagreeing on a shape, and rows that do not add up. */
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, c, dir, "ckpt-2", MR_CKPT_MAGIC, 1, &e), MR_OK);
    rc = mr_ckpt_write_root(w, "t", MR_F32, 4, me == bad_rank ? 3 : C, row, &e);
    if (P > 1) {
        CU_ASSERT_EQUAL(rc, MR_EINTERNAL);
        ASSERT_HAS(e.msg, "disagree");
    } else {
        CU_ASSERT_EQUAL(rc, MR_OK);
    }
    mr_ckpt_writer_abort(&w);
    CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, c, dir, "ckpt-3", MR_CKPT_MAGIC, 1, &e), MR_OK);
    rc = mr_ckpt_write_rows(w, "t", MR_F32, P + 1, C, me, 1, 1, row, &e);
    CU_ASSERT_EQUAL(rc, MR_EINTERNAL);
    ASSERT_HAS(e.msg, "the ranks hold");
    mr_ckpt_writer_abort(&w);
    mr_comm_barrier(c, &e);
    CU_ASSERT(!exists_in(dir, "ckpt-2.h5.tmp") && !exists_in(dir, "ckpt-3.h5.tmp"));

    /* Strided rows that add up but overlap (every rank claims rows 0, P, 2P...):
     * the windowed redistribution finds rows held twice (or counts that do not
     * match), on every rank. */
    if (P > 1) {
        float many[4 * C * 4] = {0};
        CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, c, dir, "ckpt-4", MR_CKPT_MAGIC, 1, &e),
                              MR_OK);
        rc = mr_ckpt_write_rows(w, "t", MR_F32, 4 * P, C, 0, P, 4, many, &e);
        CU_ASSERT_EQUAL(rc, MR_EINTERNAL);
        ASSERT_HAS(e.msg, "held");
        mr_ckpt_writer_abort(&w);
        mr_comm_barrier(c, &e);
        CU_ASSERT(!exists_in(dir, "ckpt-4.h5.tmp"));
    }
}

/* An injected I/O failure on the last rank only (during a dataset write, then at
 * fsync): every rank fails with MR_EIO, the message says where, the previous
 * checkpoint and `latest` stay. */
static void test_fault_one_rank(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank, bad_rank = P - 1;
    MrErr e;
    const char *dir = shared_dir("fault");
    CU_ASSERT_EQUAL_FATAL(write_tables(dir, 1, "latest", 3, &e), MR_OK);
    const char *items[] = {"ckpt_write_after:0", "ckpt_write_after:2000", "ckpt_commit:fsync",
                           "ckpt_commit:close", "ckpt_commit:lose"};
    /* lose: a byte the last rank wrote changes after the close, as if MPI-IO had
     * dropped a write; only P > 1 runs use MPI-IO and its read-back check. */
    int nitems = P > 1 ? 5 : 4;
    for (int i = 0; i < nitems; i++) {
        char env[64];
        snprintf(env, sizeof env, "%s@%d", items[i], bad_rank);
        setenv("MPIREC_FAULT_INJECT", env, 1);
        int rc = write_tables(dir, 2, "latest", 3, &e);
        unsetenv("MPIREC_FAULT_INJECT");
        CU_ASSERT_EQUAL(rc, MR_EIO);
        ASSERT_HAS(e.msg, "ckpt-2.h5");
        if (i == 4) {
            ASSERT_HAS(e.msg, "did not reach the file intact");
        } else if (me == bad_rank) {
            ASSERT_HAS(e.msg, "injected by MPIREC_FAULT_INJECT=");
        } else {
            char want[32];
            snprintf(want, sizeof want, "rank %d failed", bad_rank);
            ASSERT_HAS(e.msg, want);
        }
        mr_comm_barrier(c, &e);
        CU_ASSERT(!exists_in(dir, "ckpt-2.h5.tmp"));
        CU_ASSERT(!exists_in(dir, "ckpt-2.h5"));
        char *l = latest_of(dir);
        CU_ASSERT_STRING_EQUAL(l, "ckpt-1.h5\n");
        free(l);
        mr_comm_barrier(c, &e);
    }
}

/* The digest computed at commit (one pass: each digest block hashed by the rank
 * that wrote its first byte, the rest round-robin) equals the serial digest of
 * the file (inspect) and the parallel one of the reader, for a file of several
 * 1 MiB digest blocks whose rows (28 bytes) and slabs never line up with the
 * blocks: strided rows (windows), rows held by rank 0 alone (slabs), and
 * contiguous ranges, with default and with small slabs (dozens of ranges per
 * rank, many ending inside a block). */
static void test_digest_multiblock(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank;
    MrErr e;
    const char *dir = shared_dir("digest");
    enum { DR = 150001, DC = 7 };
    float *all = malloc((size_t)DR * DC * sizeof *all);
    for (int64_t i = 0; i < (int64_t)DR * DC; i++)
        all[i] = (float)(i % 1000003) * 0.25f - 7.0f;
    int64_t n = count_rows(me, P, DR);
    float *mine = malloc((size_t)(n ? n : 1) * DC * sizeof *mine);
    for (int64_t k = 0; k < n; k++)
        memcpy(mine + k * DC, all + (me + k * P) * DC, DC * sizeof *mine);
    int64_t lo = (int64_t)DR * me / P, hi = (int64_t)DR * (me + 1) / P;
    const char *slabs[] = {NULL, "300007"};
    for (int si = 0; si < 2; si++) {
        if (slabs[si])
            setenv("MPIREC_CKPT_SLAB", slabs[si], 1);
        char base[32];
        snprintf(base, sizeof base, "ckpt-%d", si + 1);
        MrCkptWriter *w = NULL;
        int rc = mr_ckpt_writer_open(&w, c, dir, base, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e);
        if (!rc)
            rc = mr_ckpt_write_rows(w, "params/strided", MR_F32, DR, DC, me, P, n, mine, &e);
        if (!rc)
            rc = mr_ckpt_write_root(w, "params/root", MR_F32, DR, DC, all, &e);
        if (!rc)
            rc = mr_ckpt_write_rows(w, "params/ranges", MR_F32, DR, DC, lo, 1, hi - lo,
                                    all + lo * DC, &e);
        if (!rc)
            rc = mr_ckpt_writer_commit(&w, "latest", 3, &e);
        else
            mr_ckpt_writer_abort(&w);
        unsetenv("MPIREC_CKPT_SLAB");
        if (rc)
            fprintf(stderr, "\n  [rank %d] %s\n", me, e.msg);
        CU_ASSERT_EQUAL_FATAL(rc, MR_OK);
        char path[1200];
        snprintf(path, sizeof path, "%s/%s.h5", dir, base);
        MrCkptReport rep;
        CU_ASSERT_EQUAL(mr_ckpt_inspect(path, 1, &rep, &e), MR_OK);
        CU_ASSERT_EQUAL(rep.digest_status, 1);
        CU_ASSERT_EQUAL(rep.digest_computed, rep.digest_stored);
        CU_ASSERT(rep.ok);
        mr_ckpt_report_free(&rep);
        MrCkptReader *r = NULL;
        CU_ASSERT_EQUAL_FATAL(mr_ckpt_open(&r, c, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_verify(r, &e), MR_OK);
        mr_ckpt_close(&r);
        mr_comm_barrier(c, &e);
    }
    free(all);
    free(mine);
}

/* A really full disk: rank 0 mounts a 12 MiB tmpfs; a 16 MiB table, sharded and
 * then held by rank 0 alone, fails on every rank with MR_EIO before any of it is
 * written (the space reservation: otherwise Open MPI 4.1's collective write loses
 * the data without an error, and HDF5's collective close hangs when its metadata
 * flush fails on one rank); nothing is renamed, `latest` and the previous
 * checkpoint stay. */
static void test_disk_full(void)
{
    MrComm *c = g_test_comm;
    int P = c->size, me = c->rank;
    MrErr e;
    const char *dir = shared_dir("diskfull");
    int64_t ok = 1;
    if (me == 0)
        umount2(dir, MNT_DETACH); /* a mount left by an interrupted run */
    if (me == 0 && mount("tmpfs", dir, "tmpfs", 0, "size=12m") != 0) {
        printf("\n  [tmpfs not mountable here (%s): the injected-failure test covers this]\n",
               strerror(errno));
        ok = 0;
    }
    mr_comm_bcast(c, &ok, sizeof ok, 0, &e);
    if (!ok)
        return;
    CU_ASSERT_EQUAL(write_tables(dir, 1, "latest", 3, &e), MR_OK);
    enum { BR = 1 << 20, BC = 4 };
    float *big = malloc((size_t)BR * BC * sizeof *big);
    for (int64_t i = 0; i < (int64_t)BR * BC; i++)
        big[i] = (float)i + 1.0f;
    for (int mode = 0; mode < 2; mode++) {
        MrCkptWriter *w = NULL;
        int rc = mr_ckpt_writer_open(&w, c, dir, "ckpt-2", MR_CKPT_MAGIC, 1, &e);
        if (!rc) {
            if (mode == 0)
                rc = mr_ckpt_write_rows(w, "params/big", MR_F32, BR, BC, me, P,
                                        (BR - 1 - me) / P + 1, big, &e);
            else
                rc = mr_ckpt_write_root(w, "params/big", MR_F32, BR, BC, big, &e);
        }
        int rc2 = w ? mr_ckpt_writer_commit(&w, "latest", 3, &e) : rc;
        CU_ASSERT_EQUAL(rc2, MR_EIO);
        ASSERT_HAS(e.msg, "ckpt-2.h5");
        ASSERT_HAS(e.msg, "MiB free on the file system");
        ASSERT_HAS(e.msg, "No space left on device");
        mr_comm_barrier(c, &e);
        CU_ASSERT(!exists_in(dir, "ckpt-2.h5.tmp"));
        CU_ASSERT(!exists_in(dir, "ckpt-2.h5"));
        char *l = latest_of(dir);
        CU_ASSERT_STRING_EQUAL(l, "ckpt-1.h5\n");
        free(l);
        if (me == 0) {
            char found[1200];
            CU_ASSERT_EQUAL(mr_ckpt_find_latest(dir, found, sizeof found, NULL, 0, &e), MR_OK);
            ASSERT_HAS(found, "/ckpt-1.h5");
        }
        mr_comm_barrier(c, &e);
    }
    free(big);
    if (me == 0)
        CU_ASSERT_EQUAL(umount2(dir, MNT_DETACH), 0);
    mr_comm_barrier(c, &e);
}

int add_suite_mpi_ckpt(void)
{
    CU_pSuite s = CU_add_suite("mpi_ckpt", NULL, NULL);
    if (!s)
        return -1;
    if (!CU_add_test(s, "sharded_roundtrip", test_sharded_roundtrip) ||
        !CU_add_test(s, "sharded_small_slabs", test_sharded_small_slabs) ||
        !CU_add_test(s, "deflate_sharded", test_deflate_sharded) ||
        !CU_add_test(s, "error_agreement", test_error_agreement) ||
        !CU_add_test(s, "fault_one_rank", test_fault_one_rank) ||
        !CU_add_test(s, "digest_multiblock", test_digest_multiblock) ||
        !CU_add_test(s, "disk_full", test_disk_full))
        return -1;
    return 0;
}
