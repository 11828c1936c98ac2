/* test_mpi_split.c — train/test splits are identical for every rank count.
 *
 * Temporal: N records with many tied timestamps (and negative/zero ones) are
 * spread unevenly over the ranks; the test set must be exactly the floor(f*N)
 * largest (timestamp, record number) keys, computed serially on every rank. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/dataset.h"
#include "mpirec/hash.h"
#include "test_util.h"

#define N 3001

static double ts_of(int64_t r)
{
    uint64_t h = mr_mix(5, (uint64_t)r);
    switch (h % 4) {
    case 0: return (double)(h % 17);             /* heavy ties */
    case 1: return -(double)(h % 1000) * 0.5;    /* negative */
    case 2: return 0.0;
    default: return 1.6e9 + (double)(h % 100000);
    }
}

static void slice(int64_t *first, int64_t *n)
{
    int P = g_test_comm->size, r = g_test_comm->rank;
    /* rank r gets a share proportional to r*r + 1 */
    int64_t w = 0, before = 0;
    for (int q = 0; q < P; q++) {
        w += q * q + 1;
        if (q < r)
            before += q * q + 1;
    }
    *first = before * N / w;
    *n = (before + r * r + 1) * N / w - *first;
}

static void test_temporal(void)
{
    MrErr e;
    int64_t first, n;
    slice(&first, &n);
    double fracs[3] = {0.2, 0.0, 0.5};
    for (int f = 0; f < 3; f++) {
        double *ts = malloc((size_t)(n + 1) * sizeof *ts);
        uint8_t *is_test = malloc((size_t)n + 1);
        for (int64_t i = 0; i < n; i++)
            ts[i] = ts_of(first + i);
        CU_ASSERT_EQUAL_FATAL(mr_split_temporal(is_test, g_test_comm, ts, first, n, fracs[f], &e),
                              MR_OK);
        int64_t n_test = (int64_t)floor(fracs[f] * N);
        /* Serial: record r is test iff fewer than n_test keys are greater. Count
         * directly (O(N^2) on a small N). */
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = first + i, greater = 0;
            for (int64_t s = 0; s < N; s++)
                greater += ts_of(s) > ts_of(r) || (ts_of(s) == ts_of(r) && s > r);
            bad += (greater < n_test) != is_test[i];
        }
        CU_ASSERT_EQUAL(bad, 0);
        int64_t cnt = 0;
        for (int64_t i = 0; i < n; i++)
            cnt += is_test[i];
        mr_comm_allreduce_i64(g_test_comm, &cnt, 1, MR_SUM, &e);
        CU_ASSERT_EQUAL(cnt, n_test);
        free(ts);
        free(is_test);
    }
}

/* Random split: same flags as the reference rule regardless of slicing, and the
 * reference's count on amazon_reviews.csv-sized input (999 records, seed 42:
 * 186 test). */
static void test_random(void)
{
    int64_t first, n;
    slice(&first, &n);
    uint8_t *t = malloc((size_t)n + 1);
    mr_split_random(t, first, n, 42, 0.2);
    uint64_t base = mr_mix(42, MR_TAG_SPLIT), thr = mr_split_threshold(0.2);
    for (int64_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(t[i], mr_split_is_test(base, (uint64_t)(first + i), thr));
    free(t);
    uint8_t all[999];
    mr_split_random(all, 0, 999, 42, 0.2);
    int cnt = 0;
    for (int i = 0; i < 999; i++)
        cnt += all[i];
    CU_ASSERT_EQUAL(cnt, 186);
}

/* Timestamps: numbers and ISO-8601 dates (UTC). */
static void test_timestamps(void)
{
    double t;
    CU_ASSERT_EQUAL(mr_parse_timestamp("1370131200.0", 12, &t), 0);
    CU_ASSERT_DOUBLE_EQUAL(t, 1370131200.0, 0);
    CU_ASSERT_EQUAL(mr_parse_timestamp("2016-01-17 23:30:42", 19, &t), 0);
    CU_ASSERT_DOUBLE_EQUAL(t, 1453073442.0, 0);
    CU_ASSERT_EQUAL(mr_parse_timestamp("1970-01-01", 10, &t), 0);
    CU_ASSERT_DOUBLE_EQUAL(t, 0.0, 0);
    CU_ASSERT_EQUAL(mr_parse_timestamp("2000-03-01T00:00Z", 17, &t), 0);
    CU_ASSERT_DOUBLE_EQUAL(t, 951868800.0, 0);
    CU_ASSERT_NOT_EQUAL(mr_parse_timestamp("05 28, 2013", 11, &t), 0);
    CU_ASSERT_NOT_EQUAL(mr_parse_timestamp("2016-13-01", 10, &t), 0);
    CU_ASSERT_NOT_EQUAL(mr_parse_timestamp("", 0, &t), 0);
}

int add_suite_mpi_split(void)
{
    CU_pSuite s = CU_add_suite("mpi_split", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "temporal", test_temporal);
    CU_add_test(s, "random", test_random);
    CU_add_test(s, "timestamps", test_timestamps);
    return 0;
}
