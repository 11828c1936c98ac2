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
 * Threads: a team of as many threads as OpenBLAS would use; each thread runs the
 * whole sgemm + scan loop on its share with OpenBLAS set to one thread (see
 * ix_blas_single_begin). Many queries: the threads share the queries. Few (a
 * single recommendation): they share the corpus and their heaps are merged.
 * Shares are made of whole blocks of the one-thread grid, so every score comes
 * from the same sgemm call shape as with one thread, and the heap order is
 * total: results do not depend on the thread count (the tests check this bit for
 * bit).
 *
 * Not done here: no fused score + select kernel. The design asks for sgemm; at
 * d = 32 writing the score block costs about as much as computing it, so a kernel
 * that never stores the scores could be faster still.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "index/ix_internal.h"

/* Query and corpus block: QB x CB floats = 1 MiB of scores per thread. */
#define QB 256
#define CB 1024

typedef struct ExactScr {
    float *S;  /* [QB x CB] scores of one block pair */
    float *hs; /* [QB x kk] heaps */
    int64_t *hi;
    IxHeap *heaps; /* [QB] */
} ExactScr;

typedef struct ExactCtx {
    const float *emb;
    int64_t n;
    int d;
    const float *Q;
    int64_t nq;
    int k;      /* row stride of the outputs */
    int64_t kk; /* k clamped to n */
    const IxExcl *ex;
    int64_t *out_items;
    float *out_scores;
    int split_corpus; /* 1: threads share the corpus (few queries), else the queries */
    ExactScr *scr;    /* [threads] */
} ExactCtx;

/* Offer item `it` with score v to query q's heap, honouring exclusions. */
static inline void offer(IxHeap *h, float v, int64_t it, const IxExcl *ex, int64_t q)
{
    if (h->n < h->cap ? v == v : ix_worse(h->s[0], h->i[0], v, it)) {
        if (!ix_excluded(ex, q, it))
            ix_heap_push_slow(h, v, it);
    }
}

static void scan_row(const float *s, int64_t cb, int64_t c0, IxHeap *h, const IxExcl *ex, int64_t q)
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

/* Queries [q0, q0 + qb) against items [c_lo, c_hi) into w's heaps (qb <= QB). */
static void run_block(const ExactCtx *c, ExactScr *w, int64_t q0, int64_t qb, int64_t c_lo,
                      int64_t c_hi)
{
    int d = c->d;
    for (int64_t c0 = c_lo; c0 < c_hi; c0 += CB) {
        int64_t cb = c_hi - c0 < CB ? c_hi - c0 : CB;
        /* S = Q[q0 .. q0+qb) * emb[c0 .. c0+cb)^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qb, (int)cb, d, 1.0f,
                    c->Q + q0 * d, d, c->emb + c0 * d, d, 0.0f, w->S, (int)cb);
        for (int64_t r = 0; r < qb; r++)
            scan_row(w->S + r * cb, cb, c0, &w->heaps[r], c->ex, q0 + r);
    }
}

static void init_heaps(const ExactCtx *c, ExactScr *w, int64_t qb)
{
    for (int64_t r = 0; r < qb; r++)
        w->heaps[r] = (IxHeap){w->hs + r * c->kk, w->hi + r * c->kk, 0, c->kk};
}

static void exact_worker(void *arg, int tid, int nth)
{
    ExactCtx *c = arg;
    ExactScr *w = &c->scr[tid];
    /* Shares are whole blocks of the one-thread block grid, so every sgemm call
     * has the shapes and offsets it has with one thread. */
    if (c->split_corpus) {
        /* every thread: all queries (one block) against its slice of the corpus;
         * the caller merges the heaps */
        int64_t nb = (c->n + CB - 1) / CB;
        int64_t lo = nb * tid / nth * CB, hi = nb * (tid + 1) / nth * CB;
        init_heaps(c, w, c->nq);
        run_block(c, w, 0, c->nq, lo, hi < c->n ? hi : c->n);
        return;
    }
    int64_t nb = (c->nq + QB - 1) / QB;
    int64_t lo = nb * tid / nth * QB, hi = nb * (tid + 1) / nth * QB;
    hi = hi < c->nq ? hi : c->nq;
    for (int64_t q0 = lo; q0 < hi; q0 += QB) {
        int64_t qb = hi - q0 < QB ? hi - q0 : QB;
        init_heaps(c, w, qb);
        run_block(c, w, q0, qb, 0, c->n);
        for (int64_t r = 0; r < qb; r++)
            ix_heap_drain(&w->heaps[r], c->out_items + (q0 + r) * c->k,
                          c->out_scores + (q0 + r) * c->k, c->k);
    }
}

int ix_exact_search(const float *emb, int64_t n, int d, const float *Q, int64_t nq, int k,
                    const IxExcl *ex, int64_t *out_items, float *out_scores, int nthreads, MrErr *e)
{
    int64_t kk = k < n ? k : n; /* k beyond the corpus: clamped, the rest is -1 */
    int nth = nthreads < 1 ? 1 : nthreads;
    /* Few queries: share the corpus (a single query still uses every thread);
     * otherwise share the queries (no merge, and each thread's sgemm is big). */
    int split = nth > 1 && nq <= QB && nq < 64 * (int64_t)nth;
    if (!split && nth > (nq + QB - 1) / QB)
        nth = (int)((nq + QB - 1) / QB); /* a share is at least one query block */
    IxTeam team;
    ix_team_start(&team, nth);
    nth = team.n;
    ExactScr *scr = calloc((size_t)nth, sizeof *scr);
    int rc = MR_OK;
    for (int t = 0; scr && t < nth; t++) {
        scr[t].S = malloc((size_t)QB * CB * sizeof *scr[t].S);
        scr[t].hs = malloc((size_t)QB * (size_t)kk * sizeof *scr[t].hs);
        scr[t].hi = malloc((size_t)QB * (size_t)kk * sizeof *scr[t].hi);
        scr[t].heaps = malloc(QB * sizeof *scr[t].heaps);
        if (!scr[t].S || !scr[t].hs || !scr[t].hi || !scr[t].heaps)
            rc = MR_ENOMEM;
    }
    if (!scr || rc) {
        rc = mr_err_set(e, MR_ENOMEM, "exact search: no memory for %d score blocks of %d x %d", nth,
                        QB, CB);
        goto out;
    }
    ExactCtx c = {emb, n, d, Q, nq, k, kk, ex, out_items, out_scores, split && nth > 1, scr};
    int prev = ix_blas_single_begin(nth);
    ix_team_run(&team, exact_worker, &c);
    ix_blas_single_end(nth, prev);
    if (c.split_corpus) {
        /* Merge the threads' heaps into thread 0's: the heap order is total, so
         * the result is the same as one thread scanning everything. */
        for (int64_t r = 0; r < nq; r++) {
            IxHeap *h = &scr[0].heaps[r];
            for (int t = 1; t < nth; t++) {
                const IxHeap *o = &scr[t].heaps[r];
                for (int64_t j = 0; j < o->n; j++)
                    ix_heap_push(h, o->s[j], o->i[j]);
            }
            ix_heap_drain(h, out_items + r * k, out_scores + r * k, k);
        }
    }
out:
    ix_team_stop(&team);
    for (int t = 0; scr && t < nth; t++) {
        free(scr[t].S);
        free(scr[t].hs);
        free(scr[t].hi);
        free(scr[t].heaps);
    }
    free(scr);
    return rc;
}
