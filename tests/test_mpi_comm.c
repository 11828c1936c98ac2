/* test_mpi_comm.c — the checked collective wrappers, at whatever rank count the
 * test runs under (ctest runs it at P = 1, 2, 3, 4). */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/comm.h"
#include "test_util.h"

/* Sum, max and exclusive scan of rank-dependent values. */
static void test_reduce_scan(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    int64_t v[2] = {c->rank + 1, c->rank * 10};
    CU_ASSERT_EQUAL(mr_comm_allreduce_i64(c, v, 2, MR_SUM, &e), MR_OK);
    CU_ASSERT_EQUAL(v[0], (int64_t)c->size * (c->size + 1) / 2);
    int64_t m = c->rank;
    mr_comm_allreduce_i64(c, &m, 1, MR_MAX, &e);
    CU_ASSERT_EQUAL(m, c->size - 1);
    int64_t s[2] = {c->rank + 1, 1};
    CU_ASSERT_EQUAL(mr_comm_exscan_i64(c, s, 2, &e), MR_OK);
    CU_ASSERT_EQUAL(s[0], (int64_t)c->rank * (c->rank + 1) / 2);
    CU_ASSERT_EQUAL(s[1], c->rank);
    double d = 0.5;
    mr_comm_allreduce_f64(c, &d, 1, MR_SUM, &e);
    CU_ASSERT_DOUBLE_EQUAL(d, 0.5 * c->size, 1e-12);
}

/* alltoallv with uneven sizes (rank r sends r+q+1 bytes to q), including zero. */
static void test_alltoallv(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    int P = c->size, me = c->rank;
    int64_t *sb = calloc((size_t)P, 8), *rb = calloc((size_t)P, 8);
    int64_t tot = 0;
    for (int q = 0; q < P; q++) {
        sb[q] = (q == me && P > 1) ? 0 : me + q + 1;
        tot += sb[q];
    }
    CU_ASSERT_EQUAL(mr_comm_alltoall_i64(c, sb, rb, &e), MR_OK);
    int64_t rtot = 0;
    for (int q = 0; q < P; q++) {
        CU_ASSERT_EQUAL(rb[q], (q == me && P > 1) ? 0 : q + me + 1);
        rtot += rb[q];
    }
    unsigned char *send = malloc((size_t)tot + 1), *recv = malloc((size_t)rtot + 1);
    int64_t o = 0;
    for (int q = 0; q < P; q++)
        for (int64_t k = 0; k < sb[q]; k++)
            send[o++] = (unsigned char)(me * 16 + q);
    CU_ASSERT_EQUAL(mr_comm_alltoallv(c, send, sb, recv, rb, &e), MR_OK);
    o = 0;
    for (int q = 0; q < P; q++)
        for (int64_t k = 0; k < rb[q]; k++)
            CU_ASSERT_EQUAL(recv[o++], (unsigned char)(q * 16 + me));
    free(send);
    free(recv);
    free(sb);
    free(rb);
}

/* allgatherv and reduce_scatter. */
static void test_gather_scatter(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    int P = c->size, me = c->rank;
    int64_t *rb = calloc((size_t)P, 8);
    int64_t mine = (int64_t)(me % 2 ? 0 : me + 2) * 4;
    mr_comm_allgather(c, &mine, 8, rb, &e);
    int64_t tot = 0;
    for (int q = 0; q < P; q++)
        tot += rb[q];
    int32_t *send = malloc((size_t)mine + 4), *recv = malloc((size_t)tot + 4);
    for (int64_t k = 0; k < mine / 4; k++)
        send[k] = me * 1000 + (int32_t)k;
    CU_ASSERT_EQUAL(mr_comm_allgatherv(c, send, (size_t)mine, recv, rb, &e), MR_OK);
    int64_t o = 0;
    for (int q = 0; q < P; q++)
        for (int64_t k = 0; k < rb[q] / 4; k++)
            CU_ASSERT_EQUAL(recv[o++], q * 1000 + (int32_t)k);
    int64_t *cnt = calloc((size_t)P, 8);
    int64_t n = 0;
    for (int q = 0; q < P; q++) {
        cnt[q] = q + 1;
        n += cnt[q];
    }
    float *sf = malloc((size_t)n * 4), *rf = malloc((size_t)cnt[me] * 4);
    for (int64_t k = 0; k < n; k++)
        sf[k] = (float)(k + me);
    CU_ASSERT_EQUAL(mr_comm_reduce_scatter_f32(c, sf, rf, cnt, &e), MR_OK);
    int64_t off = (int64_t)me * (me + 1) / 2;
    for (int64_t k = 0; k < cnt[me]; k++)
        CU_ASSERT_DOUBLE_EQUAL(rf[k], (double)P * (off + k) + (double)P * (P - 1) / 2, 1e-3);
    free(send);
    free(recv);
    free(rb);
    free(cnt);
    free(sf);
    free(rf);
}

/* Error agreement: the last rank fails, every rank returns its code, and the
 * others learn its message. */
static void test_agree(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    mr_err_clear(&e);
    CU_ASSERT_EQUAL(mr_comm_agree(c, 0, &e), 0);
    int st = 0;
    if (c->rank == c->size - 1)
        st = mr_err_set(&e, MR_EDATA, "bad record at line 3");
    CU_ASSERT_EQUAL(mr_comm_agree(c, st, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "bad record at line 3"));
    if (c->rank != c->size - 1)
        CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "failed"));
}

int add_suite_mpi_comm(void)
{
    CU_pSuite s = CU_add_suite("mpi_comm", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "reduce_scan", test_reduce_scan);
    CU_add_test(s, "alltoallv", test_alltoallv);
    CU_add_test(s, "gather_scatter", test_gather_scatter);
    CU_add_test(s, "agree", test_agree);
    return 0;
}
