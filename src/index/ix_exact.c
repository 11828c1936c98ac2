/* ix_exact.c — exact maximum-inner-product top-k: blocked sgemm + per-query heap.
 *
 * For a block of QB queries and a block of CB items, one sgemm writes the QB x CB
 * scores into a buffer small enough to stay in the L2 cache; then each query's
 * row is scanned into its top-k heap. The scan tests 16 scores at a time against
 * the heap's threshold (one SIMD compare into a bit mask) and looks closer only
 * when one of them could enter: after the first few blocks almost nothing does,
 * so the scan runs near memory speed. Corpus blocks go in increasing item order,
 * but the heap compares (score, item) in full, so ties always resolve to the
 * lower item index whatever the order.
 *
 * Threads: sgemm uses OpenBLAS's threads; the row scans of a block are split over
 * a team of as many threads of our own (the same split every time, and each row
 * is owned by one thread, so results do not depend on the thread count).
 *
 * Not done here: no fused score+select kernel (the sgemm is what the design asks
 * for, and at these dims its output write is the cost; see docs/index.md).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "index/ix_internal.h"

/* Query and corpus block: QB x CB floats = 1 MiB of scores. */
#define QB 256
#define CB 1024

typedef struct ExactCtx {
    const float *S;  /* [qb x cb] scores of this block pair */
    int64_t qb, cb;  /* rows, cols of S */
    int64_t q0, c0;  /* first query, first item of the block */
    IxHeap *heaps;   /* [qb] */
    const IxExcl *ex;
} ExactCtx;

/* Offer item `it` with score v to query q's heap, honouring exclusions. */
static inline void offer(IxHeap *h, float v, int64_t it, const IxExcl *ex, int64_t q)
{
    if (h->n < h->cap ? v == v : ix_worse(h->s[0], h->i[0], v, it)) {
        if (!ix_excluded(ex, q, it))
            ix_heap_push_slow(h, v, it);
    }
}

static void scan_row(const float *s, int64_t cb, int64_t c0, IxHeap *h, const IxExcl *ex,
                     int64_t q)
{
    float thr = ix_heap_thr(h);
    int64_t j = 0;
    for (; j + 16 <= cb; j += 16) {
        unsigned m = ix_mask16_ge(s + j, thr);
        while (m) {
            int t = __builtin_ctz(m);
            m &= m - 1;
            /* the threshold may have risen since the mask was taken */
            if (s[j + t] >= thr) {
                offer(h, s[j + t], c0 + j + t, ex, q);
                thr = ix_heap_thr(h);
            }
        }
    }
    for (; j < cb; j++)
        if (s[j] >= thr) {
            offer(h, s[j], c0 + j, ex, q);
            thr = ix_heap_thr(h);
        }
}

static void scan_block(void *arg, int tid, int nth)
{
    ExactCtx *c = arg;
    int64_t lo = c->qb * tid / nth, hi = c->qb * (tid + 1) / nth;
    for (int64_t r = lo; r < hi; r++)
        scan_row(c->S + r * c->cb, c->cb, c->c0, &c->heaps[r], c->ex, c->q0 + r);
}

int ix_exact_search(const float *emb, int64_t n, int d, const float *Q, int64_t nq, int k,
                    const IxExcl *ex, int64_t *out_items, float *out_scores, int nthreads,
                    MrErr *e)
{
    int64_t kk = k < n ? k : n; /* k beyond the corpus: clamped, the rest is -1 */
    float *S = malloc((size_t)QB * CB * sizeof *S);
    float *hs = malloc((size_t)QB * (size_t)(kk > 0 ? kk : 1) * sizeof *hs);
    int64_t *hi = malloc((size_t)QB * (size_t)(kk > 0 ? kk : 1) * sizeof *hi);
    IxHeap *heaps = malloc(QB * sizeof *heaps);
    if (!S || !hs || !hi || !heaps) {
        free(S);
        free(hs);
        free(hi);
        free(heaps);
        return mr_err_set(e, MR_ENOMEM, "exact search: no memory for a %d x %d score block",
                          QB, CB);
    }
    IxTeam team;
    ix_team_start(&team, nq > 1 ? nthreads : 1);
    for (int64_t q0 = 0; q0 < nq; q0 += QB) {
        int64_t qb = nq - q0 < QB ? nq - q0 : QB;
        for (int64_t r = 0; r < qb; r++)
            heaps[r] = (IxHeap){hs + r * kk, hi + r * kk, 0, kk};
        ExactCtx c = {S, qb, 0, q0, 0, heaps, ex};
        for (int64_t c0 = 0; c0 < n && kk > 0; c0 += CB) {
            int64_t cb = n - c0 < CB ? n - c0 : CB;
            /* S = Q[q0 .. q0+qb) * emb[c0 .. c0+cb)^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qb, (int)cb, d, 1.0f,
                        Q + q0 * d, d, emb + c0 * d, d, 0.0f, S, (int)cb);
            c.cb = cb;
            c.c0 = c0;
            ix_team_run(&team, scan_block, &c);
        }
        for (int64_t r = 0; r < qb; r++)
            ix_heap_drain(&heaps[r], out_items + (q0 + r) * k, out_scores + (q0 + r) * k, k);
    }
    ix_team_stop(&team);
    free(S);
    free(hs);
    free(hi);
    free(heaps);
    return MR_OK;
}
