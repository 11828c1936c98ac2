/* ix_internal.h — private pieces shared by the files of src/index/: the top-k heap,
 * exclusion lookups, the fixed-order dot product, a small thread team, the dataset
 * checksum of the HDF5 files, and the per-kind search entry points.
 *
 * Dimension letters: N items, D embedding dim, Q queries, K top-k, L lists (nlist).
 */
#ifndef MPIREC_IX_INTERNAL_H
#define MPIREC_IX_INTERNAL_H

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "mpirec/err.h"
#include "mpirec/index.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define IX_LANES MR_INDEX_LANES

/* One multiply-add of every dot product in the ivf path. Both the blocked kernel
 * and the single-row rescoring use it in the same order (t = 0 .. D-1), so an
 * item's score is bitwise the same whichever path computed it. ISO C mode keeps
 * the compiler from contracting a*b+c on its own, so the choice is ours alone. */
#if defined(__FMA__)
#define IX_MADD(a, b, c) fmaf((a), (b), (c))
#else
#define IX_MADD(a, b, c) ((a) * (b) + (c))
#endif

static inline float ix_dot(const float *q, const float *x, int d)
{
    float s = 0.0f;
    for (int t = 0; t < d; t++)
        s = IX_MADD(q[t], x[t], s);
    return s;
}

/* Bit l set when s[l] >= thr, for l < 16 (NaN never sets a bit). */
static inline unsigned ix_mask16_ge(const float *s, float thr)
{
#if defined(__AVX512F__)
    return (unsigned)_mm512_cmp_ps_mask(_mm512_loadu_ps(s), _mm512_set1_ps(thr), _CMP_GE_OQ);
#elif defined(__AVX2__)
    __m256 t = _mm256_set1_ps(thr);
    unsigned lo = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s), t, _CMP_GE_OQ));
    unsigned hi =
        (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + 8), t, _CMP_GE_OQ));
    return lo | hi << 8;
#else
    unsigned m = 0;
    for (int l = 0; l < 16; l++)
        m |= (unsigned)(s[l] >= thr) << l;
    return m;
#endif
}

/* ---- top-k heap ---------------------------------------------------------------
 * A min-heap of capacity k on (score, item) ordered "worst at the root": a is
 * worse than b when a.s < b.s, or a.s == b.s and a.i > b.i (ties go to the lower
 * item index, like tf.math.top_k). NaN scores never enter: every comparison with
 * NaN is false. */
typedef struct IxHeap {
    float *s;   /* [cap] */
    int64_t *i; /* [cap] */
    int64_t n, cap;
} IxHeap;

static inline int ix_worse(float as, int64_t ai, float bs, int64_t bi)
{
    return as < bs || (as == bs && ai > bi);
}

/* The score a candidate must reach (>=) to be worth a full comparison. */
static inline float ix_heap_thr(const IxHeap *h)
{
    return h->n < h->cap ? -INFINITY : h->s[0];
}

void ix_heap_push_slow(IxHeap *h, float s, int64_t i);

static inline void ix_heap_push(IxHeap *h, float s, int64_t i)
{
    if (h->n < h->cap) {
        if (s == s) /* not NaN */
            ix_heap_push_slow(h, s, i);
    } else if (ix_worse(h->s[0], h->i[0], s, i)) {
        ix_heap_push_slow(h, s, i);
    }
}

/* Empty the heap into items/scores best first; fill positions n .. k-1 with -1 and
 * -INFINITY. */
void ix_heap_drain(IxHeap *h, int64_t *items, float *scores, int k);

/* ---- top-m candidates ----------------------------------------------------------------
 * Small m (k = 10): the heap above. Larger m (the ivf rescoring candidates): a heap
 * costs log m unpredictable steps per insertion, so a buffer of 2m slots appends
 * anything better than its threshold and, when full, keeps the m best by
 * quickselect and raises the threshold to the m-th best: O(1) amortised per
 * insertion. (At m = 10 the quickselects cost more than the heap.) Same total
 * order either way: (score desc, item asc); NaN never enters. */
#define IX_TOP_HEAP_MAX 32

typedef struct IxTop {
    float *s; /* [cap] (heap) or [2 cap] (buffer) */
    int64_t *i;
    int64_t n, cap;
    int heap; /* 1: binary heap of IxHeap, worst at [0] */
    float ts; /* buffer: the cap-th best kept so far (-inf until known) */
    int64_t ti;
} IxTop;

/* Slots the storage must have for capacity cap. */
static inline int64_t ix_top_slots(int64_t cap)
{
    return cap <= IX_TOP_HEAP_MAX ? cap : 2 * cap;
}

static inline void ix_top_init(IxTop *t, float *s, int64_t *i, int64_t cap)
{
    t->s = s;
    t->i = i;
    t->n = 0;
    t->cap = cap;
    t->heap = cap <= IX_TOP_HEAP_MAX;
    t->ts = -INFINITY;
    t->ti = INT64_MAX;
}

void ix_top_compact(IxTop *t);

/* The score a candidate must reach (>=) to be worth ix_top_wants. */
static inline float ix_top_thr(const IxTop *t)
{
    return t->heap ? (t->n < t->cap ? -INFINITY : t->s[0]) : t->ts;
}

/* Would (v, it) enter? */
static inline int ix_top_wants(const IxTop *t, float v, int64_t it)
{
    if (t->heap)
        return t->n < t->cap ? v == v : ix_worse(t->s[0], t->i[0], v, it);
    return ix_worse(t->ts, t->ti, v, it);
}

/* Add a candidate ix_top_wants accepted. */
static inline void ix_top_push(IxTop *t, float v, int64_t it)
{
    if (t->heap) {
        IxHeap h = {t->s, t->i, t->n, t->cap};
        ix_heap_push_slow(&h, v, it);
        t->n = h.n;
        return;
    }
    t->s[t->n] = v;
    t->i[t->n] = it;
    if (++t->n == 2 * t->cap)
        ix_top_compact(t);
}

/* The best min(n, cap) entries, best first, into items/scores; the rest of the k
 * slots -1 / -inf. Empties t. */
void ix_top_drain(IxTop *t, int64_t *items, float *scores, int k);

/* ---- exclusions --------------------------------------------------------------- */
/* Per-query exclusion lists, copied and sorted so a lookup is a binary search. */
typedef struct IxExcl {
    int64_t *off; /* [Q + 1] */
    int64_t *v;   /* sorted within each query's range */
} IxExcl;

int ix_excl_prepare(IxExcl *x, const MrExclusions *ex, int64_t nq, MrErr *e);
void ix_excl_free(IxExcl *x);

static inline int ix_excluded(const IxExcl *x, int64_t q, int64_t item)
{
    if (!x->off)
        return 0;
    int64_t lo = x->off[q], hi = x->off[q + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (x->v[mid] < item)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < x->off[q + 1] && x->v[lo] == item;
}

/* ---- thread team ------------------------------------------------------------------
 * nthreads - 1 helper threads kept for the duration of one search call; run()
 * executes fn(arg, tid, nthreads) on every thread (tid 0 is the caller) and returns
 * when all are done. A team of 1 runs fn inline. If a helper cannot be created the
 * team simply has fewer threads. */
typedef struct IxTeam {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;
    int busy;
    int quit;
    void (*fn)(void *arg, int tid, int nth);
    void *arg;
    int ok; /* mutex/conds initialised */
} IxTeam;

void ix_team_start(IxTeam *t, int nthreads);
void ix_team_run(IxTeam *t, void (*fn)(void *arg, int tid, int nth), void *arg);
void ix_team_stop(IxTeam *t);
/* Threads the index uses: OpenBLAS's count, at least 1 and at most IX_MAX_THREADS. */
#define IX_MAX_THREADS 64
int ix_threads(void);
/* While a team of more than one thread runs, each of its threads calls sgemm on
 * its own share with OpenBLAS set to one thread (OpenBLAS's documented way to be
 * called from several threads): this keeps OpenBLAS's idle workers from spinning
 * against ours between calls, which on 2 cores made 2 threads slower than 1.
 * begin returns the previous setting; end restores it. */
int ix_blas_single_begin(int team);
void ix_blas_single_end(int team, int prev);
double ix_now(void);

/* ---- checksums ---------------------------------------------------------------------
 * The dataset checksum of the checkpoint format (include/mpirec/ckpt.h): wrapping
 * sum over rows i of mr_mix(i, fnv1a64(row bytes)). */
uint64_t ix_fnv1a64(const void *bytes, size_t n);
uint64_t ix_row_checksum(int64_t row, const void *bytes, size_t n);
/* rows rows of row_bytes bytes each (a 1-D dataset has rows of one element). */
uint64_t ix_data_checksum(const void *data, int64_t rows, size_t row_bytes);

/* ---- search entry points (ix_exact.c, ix_ivf.c) ------------------------------------- */
int ix_exact_search(const float *emb, int64_t n, int d, const float *Q, int64_t nq, int k,
                    const IxExcl *ex, int64_t *out_items, float *out_scores, int nthreads,
                    MrErr *e);
int ix_ivf_search(const MrIndex *ix, const float *Q, int64_t nq, int k, int64_t nprobe,
                  const IxExcl *ex, int64_t *out_items, float *out_scores, int nthreads, MrErr *e);
/* k-means + lists + codes into ix (ix->n, d, emb, p already set). */
int ix_ivf_train(MrIndex *ix, MrErr *e);
/* Derived search layout (list_blk, list_emb or codes) from the stored arrays;
 * codes_flat: [n x d] codes in list order (quantize), NULL otherwise. */
int ix_ivf_layout(MrIndex *ix, const uint8_t *codes_flat, MrErr *e);
/* codes back in list order [n x d] (for saving); caller frees. */
uint8_t *ix_ivf_codes_flat(const MrIndex *ix);
/* For each of nq queries, the rank (0 = probed first) at which each of its
 * `want` items' lists is probed: out [nq x kw]; item -1 -> rank INT64_MAX. */
int ix_ivf_list_ranks(const MrIndex *ix, const float *Q, int64_t nq, const int64_t *want, int kw,
                      int64_t *out, MrErr *e);
/* Sorting permutation of the ids (NULL when already sorted); MR_EDATA on duplicates. */
int ix_ids_order(MrIndex *ix, MrErr *e);

#endif
