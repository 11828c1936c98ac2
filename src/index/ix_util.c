/* ix_util.c — the small machinery under the index searches: the top-k heap, the
 * exclusion lists, a thread team, the FNV-1a based dataset checksum.
 *
 * The heap keeps the worst of the current top k at its root, so a new candidate
 * is compared with one value and rejected in the common case; the searches check
 * the threshold themselves before calling in, so push is off the hot path.
 *
 * The team is a plain mutex/condition-variable pool that lives for one search
 * call. It does not spin: on this project's 2-core machines, spinning helpers
 * would compete with OpenBLAS's own threads between two sgemm calls. The
 * checksum is the checkpoint module's (include/mpirec/ckpt.h), repeated here until
 * the index writes through ckpt; it must stay bit-identical to
 * mr_ckpt_row_checksum.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index/ix_internal.h"
#include "mpirec/hash.h"

/* ---- heap ---------------------------------------------------------------------- */

static void sift_down(IxHeap *h, int64_t pos)
{
    float s = h->s[pos];
    int64_t it = h->i[pos];
    for (;;) {
        int64_t c = 2 * pos + 1;
        if (c >= h->n)
            break;
        /* descend towards the worse child: the root must stay the worst */
        if (c + 1 < h->n && ix_worse(h->s[c + 1], h->i[c + 1], h->s[c], h->i[c]))
            c++;
        if (!ix_worse(h->s[c], h->i[c], s, it))
            break;
        h->s[pos] = h->s[c];
        h->i[pos] = h->i[c];
        pos = c;
    }
    h->s[pos] = s;
    h->i[pos] = it;
}

void ix_heap_push_slow(IxHeap *h, float s, int64_t i)
{
    if (h->n < h->cap) {
        int64_t pos = h->n++;
        while (pos > 0) {
            int64_t p = (pos - 1) / 2;
            if (!ix_worse(s, i, h->s[p], h->i[p]))
                break;
            h->s[pos] = h->s[p];
            h->i[pos] = h->i[p];
            pos = p;
        }
        h->s[pos] = s;
        h->i[pos] = i;
        return;
    }
    h->s[0] = s;
    h->i[0] = i;
    sift_down(h, 0);
}

void ix_heap_drain(IxHeap *h, int64_t *items, float *scores, int k)
{
    /* Pop worst first into the back of the used range: best ends up in front. */
    int64_t m = h->n;
    for (int64_t j = m; j < k; j++) {
        items[j] = -1;
        scores[j] = -INFINITY;
    }
    while (h->n > 0) {
        int64_t last = --h->n;
        items[last] = h->i[0];
        scores[last] = h->s[0];
        if (last > 0) {
            h->s[0] = h->s[last];
            h->i[0] = h->i[last];
            sift_down(h, 0);
        }
    }
}

/* ---- top-m buffer ------------------------------------------------------------------ */

static inline int better(const IxTop *t, int64_t a, int64_t b)
{
    return ix_worse(t->s[b], t->i[b], t->s[a], t->i[a]);
}

static inline void swap_at(IxTop *t, int64_t a, int64_t b)
{
    float s = t->s[a];
    int64_t i = t->i[a];
    t->s[a] = t->s[b];
    t->i[a] = t->i[b];
    t->s[b] = s;
    t->i[b] = i;
}

/* Move the m best of the n entries to the front (quickselect; the order is strict
 * because an item appears at most once). */
static void select_best(IxTop *t, int64_t n, int64_t m)
{
    int64_t lo = 0, hi = n - 1, want = m - 1;
    while (lo < hi) {
        /* median of three as the pivot, parked at lo */
        int64_t mid = lo + (hi - lo) / 2;
        if (better(t, mid, lo))
            swap_at(t, mid, lo);
        if (better(t, hi, lo))
            swap_at(t, hi, lo);
        if (better(t, hi, mid))
            swap_at(t, hi, mid);
        swap_at(t, lo, mid); /* lo now holds the median */
        float ps = t->s[lo];
        int64_t pi = t->i[lo];
        int64_t a = lo + 1, b = hi;
        for (;;) {
            while (a <= b && ix_worse(ps, pi, t->s[a], t->i[a]))
                a++;
            while (a <= b && ix_worse(t->s[b], t->i[b], ps, pi))
                b--;
            if (a >= b)
                break;
            swap_at(t, a, b);
            a++;
            b--;
        }
        swap_at(t, lo, b); /* pivot to its final place b */
        if (b == want)
            return;
        if (b < want)
            lo = b + 1;
        else
            hi = b - 1;
    }
}

void ix_top_compact(IxTop *t)
{
    if (t->heap || t->n <= t->cap)
        return;
    select_best(t, t->n, t->cap);
    t->n = t->cap;
    int64_t w = 0;
    for (int64_t j = 1; j < t->n; j++)
        if (ix_worse(t->s[j], t->i[j], t->s[w], t->i[w]))
            w = j;
    t->ts = t->s[w];
    t->ti = t->i[w];
}

static int cmp_best(const void *a, const void *b, void *arg)
{
    const IxTop *t = arg;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return better(t, x, y) ? -1 : better(t, y, x) ? 1 : 0;
}

void ix_top_drain(IxTop *t, int64_t *items, float *scores, int k)
{
    if (t->heap) {
        IxHeap h = {t->s, t->i, t->n, t->cap};
        while (h.n > k) { /* keep the k best: drop the worst (the root) */
            h.n--;
            h.s[0] = h.s[h.n];
            h.i[0] = h.i[h.n];
            sift_down(&h, 0);
        }
        ix_heap_drain(&h, items, scores, k);
        t->n = 0;
        return;
    }
    ix_top_compact(t);
    int64_t m = t->n < k ? t->n : k;
    if (m < t->n)
        select_best(t, t->n, m);
    /* order the m best: insertion sort when small, else sort a permutation */
    if (m <= 32) {
        for (int64_t j = 1; j < m; j++)
            for (int64_t a = j; a > 0 && better(t, a, a - 1); a--)
                swap_at(t, a, a - 1);
        for (int64_t j = 0; j < m; j++) {
            items[j] = t->i[j];
            scores[j] = t->s[j];
        }
    } else {
        int64_t *perm = malloc((size_t)m * sizeof *perm);
        if (perm) {
            for (int64_t j = 0; j < m; j++)
                perm[j] = j;
            qsort_r(perm, (size_t)m, sizeof *perm, cmp_best, t);
            for (int64_t j = 0; j < m; j++) {
                items[j] = t->i[perm[j]];
                scores[j] = t->s[perm[j]];
            }
            free(perm);
        } else { /* no memory for the permutation: a slower in-place sort */
            for (int64_t j = 1; j < m; j++)
                for (int64_t a = j; a > 0 && better(t, a, a - 1); a--)
                    swap_at(t, a, a - 1);
            for (int64_t j = 0; j < m; j++) {
                items[j] = t->i[j];
                scores[j] = t->s[j];
            }
        }
    }
    for (int64_t j = m; j < k; j++) {
        items[j] = -1;
        scores[j] = -INFINITY;
    }
    t->n = 0;
}

/* ---- exclusions ---------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int ix_excl_prepare(IxExcl *x, const MrExclusions *ex, int64_t nq, MrErr *e)
{
    x->off = NULL;
    x->v = NULL;
    if (!ex || !ex->excl_off || nq <= 0)
        return MR_OK;
    if (ex->excl_off[0] < 0)
        return mr_err_set(e, MR_EUSAGE, "index search: exclusion offsets must start at >= 0");
    for (int64_t q = 0; q < nq; q++)
        if (ex->excl_off[q + 1] < ex->excl_off[q])
            return mr_err_set(e, MR_EUSAGE,
                              "index search: exclusion offsets decrease at query %lld",
                              (long long)q);
    int64_t base = ex->excl_off[0], total = ex->excl_off[nq] - base;
    if (total > 0 && !ex->excl)
        return mr_err_set(e, MR_EUSAGE, "index search: exclusion list is NULL");
    x->off = malloc((size_t)(nq + 1) * sizeof *x->off);
    x->v = malloc((size_t)(total > 0 ? total : 1) * sizeof *x->v);
    if (!x->off || !x->v) {
        ix_excl_free(x);
        return mr_err_set(e, MR_ENOMEM, "index search: no memory for %lld exclusions",
                          (long long)total);
    }
    for (int64_t q = 0; q <= nq; q++)
        x->off[q] = ex->excl_off[q] - base;
    if (total > 0)
        memcpy(x->v, ex->excl + base, (size_t)total * sizeof *x->v);
    for (int64_t q = 0; q < nq; q++)
        if (x->off[q + 1] - x->off[q] > 1)
            qsort(x->v + x->off[q], (size_t)(x->off[q + 1] - x->off[q]), sizeof *x->v, cmp_i64);
    return MR_OK;
}

void ix_excl_free(IxExcl *x)
{
    free(x->off);
    free(x->v);
    x->off = NULL;
    x->v = NULL;
}

/* ---- thread team ----------------------------------------------------------------- */

typedef struct TeamArg {
    IxTeam *t;
    int tid;
} TeamArg;

static void *team_main(void *p)
{
    IxTeam *t = ((TeamArg *)p)->t;
    int tid = ((TeamArg *)p)->tid;
    free(p);
    uint64_t seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->quit && t->gen == seen)
            pthread_cond_wait(&t->go, &t->mu);
        if (t->quit)
            break;
        seen = t->gen;
        void (*fn)(void *, int, int) = t->fn;
        void *arg = t->arg;
        int nth = t->n;
        pthread_mutex_unlock(&t->mu);
        fn(arg, tid, nth);
        pthread_mutex_lock(&t->mu);
        if (--t->busy == 0)
            pthread_cond_signal(&t->done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

void ix_team_start(IxTeam *t, int nthreads)
{
    memset(t, 0, sizeof *t);
    t->n = 1;
    if (nthreads <= 1)
        return;
    if (pthread_mutex_init(&t->mu, NULL) != 0)
        return;
    if (pthread_cond_init(&t->go, NULL) != 0) {
        pthread_mutex_destroy(&t->mu);
        return;
    }
    if (pthread_cond_init(&t->done, NULL) != 0) {
        pthread_cond_destroy(&t->go);
        pthread_mutex_destroy(&t->mu);
        return;
    }
    t->ok = 1;
    t->th = calloc((size_t)nthreads, sizeof *t->th);
    if (!t->th)
        return;
    for (int i = 1; i < nthreads; i++) {
        TeamArg *a = malloc(sizeof *a);
        if (!a)
            break;
        a->t = t;
        a->tid = i;
        /* The helper reads t->n only when woken, after every create has returned. */
        if (pthread_create(&t->th[i], NULL, team_main, a) != 0) {
            free(a);
            break;
        }
        t->n = i + 1;
    }
}

void ix_team_run(IxTeam *t, void (*fn)(void *arg, int tid, int nth), void *arg)
{
    if (t->n <= 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->fn = fn;
    t->arg = arg;
    t->busy = t->n - 1;
    t->gen++;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    fn(arg, 0, t->n);
    pthread_mutex_lock(&t->mu);
    while (t->busy > 0)
        pthread_cond_wait(&t->done, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

void ix_team_stop(IxTeam *t)
{
    if (t->ok) {
        pthread_mutex_lock(&t->mu);
        t->quit = 1;
        pthread_cond_broadcast(&t->go);
        pthread_mutex_unlock(&t->mu);
        for (int i = 1; i < t->n; i++)
            pthread_join(t->th[i], NULL);
        pthread_cond_destroy(&t->done);
        pthread_cond_destroy(&t->go);
        pthread_mutex_destroy(&t->mu);
    }
    free(t->th);
    memset(t, 0, sizeof *t);
    t->n = 1;
}

int ix_blas_single_begin(int team)
{
    int prev = openblas_get_num_threads();
    if (team > 1 && prev > 1)
        openblas_set_num_threads(1);
    return prev;
}

void ix_blas_single_end(int team, int prev)
{
    if (team > 1 && prev > 1)
        openblas_set_num_threads(prev);
}

int ix_threads(void)
{
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > IX_MAX_THREADS ? IX_MAX_THREADS : n;
}

double ix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- checksums ------------------------------------------------------------------- */

uint64_t ix_fnv1a64(const void *bytes, size_t n)
{
    const unsigned char *p = bytes;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t ix_row_checksum(int64_t row, const void *bytes, size_t n)
{
    return mr_mix((uint64_t)row, ix_fnv1a64(bytes, n));
}

uint64_t ix_data_checksum(const void *data, int64_t rows, size_t row_bytes)
{
    const unsigned char *p = data;
    uint64_t sum = 0;
    for (int64_t r = 0; r < rows; r++)
        sum += ix_row_checksum(r, p + (size_t)r * row_bytes, row_bytes); /* wraps mod 2^64 */
    return sum;
}
