/* vocab.c — distributed vocabularies equal to a serial np.unique build.
 *
 * The core is a sample sort of byte strings (range_exchange): every rank sorts
 * its local unique strings, a weighted sample of them is allgathered so that all
 * ranks compute the same P-1 splitters, each string goes to the rank owning its
 * byte range, and the owner merges duplicates (summing counts). Ranges are ordered
 * by rank, so after the exchange "global sorted position" = exclusive scan of the
 * owners' unique counts + local position. Replies travel back in the order the
 * requests came, so the asking rank maps its strings without another lookup.
 *
 * Selection (min_count, max_size, the token vocabulary's top-K) never gathers the
 * strings: a binary search over the count threshold with one small allreduce per
 * probe, then ties at the threshold are resolved in byte order, which is rank
 * order, with one exclusive scan.
 *
 * Not here: deciding what to count (ingest.c counts train or all occurrences).
 */
#include "mpirec/vocab.h"

#include <stdlib.h>
#include <string.h>

#include "mpirec/hash.h"
#include "mpirec/strtab.h"

/* Result of the range exchange on one rank. */
typedef struct Exchange {
    int64_t *order;        /* [n] local strings in sorted order (indices) */
    int64_t *send_n;       /* [P] strings sent to each owner (runs of `order`) */
    char *recv;            /* received wire bytes */
    int64_t n_recv;        /* entries received */
    int64_t *recv_src_n;   /* [P] entries received from each rank */
    const char **rs;       /* [n_recv] entry strings (point into recv) */
    uint32_t *rl;          /* [n_recv] */
    int64_t *rc;           /* [n_recv] counts */
    int64_t *group;        /* [n_recv] unique group of each entry */
    int64_t n_groups;      /* unique strings owned here */
    int64_t *g_first;      /* [n_groups] an entry of each group (for its string) */
    int64_t *g_count;      /* [n_groups] summed counts, groups in sorted order */
} Exchange;

static void exchange_free(Exchange *x)
{
    free(x->order);
    free(x->send_n);
    free(x->recv);
    free(x->recv_src_n);
    free(x->rs);
    free(x->rl);
    free(x->rc);
    free(x->group);
    free(x->g_first);
    free(x->g_count);
    memset(x, 0, sizeof *x);
}

#define SAMPLES_PER_RANK 64

/* Wire record: u32 length, i64 count, bytes. */
static size_t put_rec(char *p, const char *s, uint32_t len, int64_t count)
{
    memcpy(p, &len, 4);
    memcpy(p + 4, &count, 8);
    memcpy(p + 12, s, len);
    return 12 + (size_t)len;
}

static const char *get_rec(const char *p, const char **s, uint32_t *len, int64_t *count)
{
    memcpy(len, p, 4);
    memcpy(count, p + 4, 8);
    *s = p + 12;
    return p + 12 + *len;
}

typedef struct Sample {
    const char *s;
    uint32_t len;
    double w;
} Sample;

static int cmp_sample(const void *a, const void *b)
{
    const Sample *x = a, *y = b;
    return mr_strcmp(x->s, x->len, y->s, y->len);
}

/* Compute P-1 splitters (identical on every rank). Splitter strings are copied
 * into *spl_buf; spl_s/spl_l point into it. */
static int make_splitters(MrComm *c, int64_t n, const char *const *strs, const uint32_t *lens,
                          const int64_t *order, char **spl_buf, const char ***spl_s,
                          uint32_t **spl_l, MrErr *e)
{
    int P = c->size;
    *spl_buf = NULL;
    *spl_s = NULL;
    *spl_l = NULL;
    int64_t ns = n < SAMPLES_PER_RANK ? n : SAMPLES_PER_RANK;
    /* Weight of each sample: the number of local strings it stands for. */
    double w = ns ? (double)n / (double)ns : 0;
    int64_t bytes = 0;
    for (int64_t k = 0; k < ns; k++) {
        int64_t i = order[(k * n) / ns];
        bytes += 12 + lens[i];
    }
    char *sb = malloc((size_t)bytes + 1);
    int64_t *rb = malloc((size_t)P * sizeof *rb);
    int rc = (!sb || !rb) ? mr_err_set(e, MR_ENOMEM, "out of memory sampling the vocabulary") : 0;
    rc = mr_comm_agree(c, rc, e);
    if (rc) {
        free(sb);
        free(rb);
        return rc;
    }
    char *p = sb;
    for (int64_t k = 0; k < ns; k++) {
        int64_t i = order[(k * n) / ns];
        /* The weight travels in the count field, scaled to an integer. */
        p += put_rec(p, strs[i], lens[i], (int64_t)(w * 1024.0));
    }
    if ((rc = mr_comm_allgather(c, &bytes, sizeof bytes, rb, e))) {
        free(sb);
        free(rb);
        return rc;
    }
    int64_t total = 0;
    for (int q = 0; q < P; q++)
        total += rb[q];
    char *all = malloc((size_t)total + 1);
    rc = all ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory gathering vocabulary samples");
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_allgatherv(c, sb, (size_t)bytes, all, rb, e))) {
        free(sb);
        free(rb);
        free(all);
        return rc;
    }
    free(sb);
    free(rb);
    int64_t m = 0;
    for (const char *q = all; q < all + total; m++) {
        const char *s;
        uint32_t l;
        int64_t cnt;
        q = get_rec(q, &s, &l, &cnt);
    }
    Sample *smp = malloc((size_t)(m + 1) * sizeof *smp);
    const char **ss = malloc((size_t)P * sizeof *ss);
    uint32_t *sl = malloc((size_t)P * sizeof *sl);
    if (!smp || !ss || !sl) {
        free(smp);
        free(ss);
        free(sl);
        free(all);
        return mr_err_set(e, MR_ENOMEM, "out of memory choosing splitters");
    }
    const char *q = all;
    double W = 0;
    for (int64_t k = 0; k < m; k++) {
        int64_t cnt;
        q = get_rec(q, &smp[k].s, &smp[k].len, &cnt);
        smp[k].w = (double)cnt / 1024.0;
        W += smp[k].w;
    }
    qsort(smp, (size_t)m, sizeof *smp, cmp_sample);
    /* Splitter k (1..P-1) = first sample whose cumulative weight reaches k*W/P. */
    double cum = 0;
    int64_t j = 0;
    for (int k = 1; k < P; k++) {
        double target = W * k / P;
        while (j < m && cum + smp[j].w < target) {
            cum += smp[j].w;
            j++;
        }
        if (j < m) {
            ss[k - 1] = smp[j].s;
            sl[k - 1] = smp[j].len;
        } else {
            /* Fewer samples than ranks: empty ranges at the top. */
            ss[k - 1] = NULL;
            sl[k - 1] = 0;
        }
    }
    free(smp);
    *spl_buf = all;
    *spl_s = ss;
    *spl_l = sl;
    return MR_OK;
}

/* First k in [from, n) such that the splitter (spl, sl; NULL = +infinity) is <= the
 * string order[k], the strings in order[] being sorted: where the run of the next
 * owner starts. */
static int64_t run_start(const int64_t *order, int64_t n, int64_t from, const char *const *strs,
                         const uint32_t *lens, const char *spl, uint32_t sl)
{
    if (!spl)
        return n;
    int64_t lo = from, hi = n; /* answer in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t i = order[mid];
        if (mr_strcmp(spl, sl, strs[i], lens[i]) <= 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int range_exchange(Exchange *x, MrComm *c, int64_t n, const char *const *strs,
                          const uint32_t *lens, const int64_t *counts, MrErr *e)
{
    int P = c->size;
    memset(x, 0, sizeof *x);
    int rc = MR_OK;
    x->order = malloc((size_t)(n + 1) * sizeof *x->order);
    x->send_n = calloc((size_t)P, sizeof *x->send_n);
    x->recv_src_n = calloc((size_t)P, sizeof *x->recv_src_n);
    int64_t *sbytes = calloc((size_t)P, sizeof *sbytes), *rbytes = calloc((size_t)P, 8);
    if (!x->order || !x->send_n || !x->recv_src_n || !sbytes || !rbytes)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory in the vocabulary exchange");
    if (!rc) {
        for (int64_t i = 0; i < n; i++)
            x->order[i] = i;
        if (mr_sort_strings(x->order, n, strs, lens) != 0)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory sorting strings");
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto fail;
    char *spl_buf = NULL;
    const char **ss = NULL;
    uint32_t *sl = NULL;
    if (P > 1 && (rc = make_splitters(c, n, strs, lens, x->order, &spl_buf, &ss, &sl, e)))
        goto fail;
    /* The local list is sorted, so each owner gets one contiguous run of it: the
     * run boundaries come from one binary search per splitter (searching the owner
     * of every string cost ~100 ns a string, three cache misses through order[]),
     * and the bytes per owner from the packing pass. */
    int64_t *bnd = malloc(((size_t)P + 1) * sizeof *bnd);
    int64_t total_send = 0;
    for (int64_t i = 0; i < n; i++)
        total_send += 12 + lens[i];
    char *send = malloc((size_t)total_send + 1);
    rc = send && bnd ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory packing strings");
    if (!rc) {
        bnd[0] = 0;
        bnd[P] = n;
        for (int o = 1; o < P; o++) /* first k whose owner is >= o: splitter o-1 <= s */
            bnd[o] = run_start(x->order, n, bnd[o - 1], strs, lens, ss[o - 1], sl[o - 1]);
    }
    free(spl_buf);
    free(ss);
    free(sl);
    if ((rc = mr_comm_agree(c, rc, e))) {
        free(send);
        free(bnd);
        goto fail;
    }
    char *p = send;
    for (int o = 0; o < P; o++) {
        char *p0 = p;
        for (int64_t k = bnd[o]; k < bnd[o + 1]; k++) {
            int64_t i = x->order[k];
            p += put_rec(p, strs[i], lens[i], counts[i]);
        }
        x->send_n[o] = bnd[o + 1] - bnd[o];
        sbytes[o] = p - p0;
    }
    free(bnd);
    if ((rc = mr_comm_alltoall_i64(c, sbytes, rbytes, e)) ||
        (rc = mr_comm_alltoall_i64(c, x->send_n, x->recv_src_n, e))) {
        free(send);
        goto fail;
    }
    int64_t total_recv = 0;
    for (int q = 0; q < P; q++) {
        total_recv += rbytes[q];
        x->n_recv += x->recv_src_n[q];
    }
    x->recv = malloc((size_t)total_recv + 1);
    rc = x->recv ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory receiving strings");
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_alltoallv(c, send, sbytes, x->recv, rbytes, e))) {
        free(send);
        goto fail;
    }
    free(send);
    int64_t nr = x->n_recv;
    x->rs = malloc((size_t)(nr + 1) * sizeof *x->rs);
    x->rl = malloc((size_t)(nr + 1) * sizeof *x->rl);
    x->rc = malloc((size_t)(nr + 1) * sizeof *x->rc);
    x->group = malloc((size_t)(nr + 1) * sizeof *x->group);
    int64_t *ord = malloc((size_t)(nr + 1) * sizeof *ord);
    rc = (x->rs && x->rl && x->rc && x->group && ord)
             ? 0
             : mr_err_set(e, MR_ENOMEM, "out of memory merging strings");
    if (!rc) {
        const char *q = x->recv;
        for (int64_t k = 0; k < nr; k++)
            q = get_rec(q, &x->rs[k], &x->rl[k], &x->rc[k]);
        /* Each source sent one sorted run: merge the P runs (at P = 1 there is
         * nothing to do). */
        int64_t *run = malloc(((size_t)P + 1) * sizeof *run);
        if (run) {
            run[0] = 0;
            for (int s = 0; s < P; s++)
                run[s + 1] = run[s] + x->recv_src_n[s];
        }
        if (!run || mr_merge_string_runs(ord, P, run, x->rs, x->rl) != 0)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory merging received strings");
        free(run);
    }
    if (!rc) {
        int64_t ng = 0;
        for (int64_t k = 0; k < nr; k++)
            if (k == 0 || mr_strcmp(x->rs[ord[k]], x->rl[ord[k]], x->rs[ord[k - 1]],
                                    x->rl[ord[k - 1]]) != 0)
                ng++;
        x->g_first = malloc((size_t)(ng + 1) * sizeof *x->g_first);
        x->g_count = calloc((size_t)(ng + 1), sizeof *x->g_count);
        if (!x->g_first || !x->g_count)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory merging strings");
        else {
            int64_t g = -1;
            for (int64_t k = 0; k < nr; k++) {
                int64_t i = ord[k];
                if (k == 0 || mr_strcmp(x->rs[i], x->rl[i], x->rs[ord[k - 1]],
                                        x->rl[ord[k - 1]]) != 0) {
                    g++;
                    x->g_first[g] = i;
                }
                x->group[i] = g;
                x->g_count[g] += x->rc[i];
            }
            x->n_groups = ng;
        }
    }
    free(ord);
    rc = mr_comm_agree(c, rc, e);
fail:
    free(sbytes);
    free(rbytes);
    if (rc)
        exchange_free(x);
    return rc;
}

/* Send one int64 per received entry back to the rank that sent it, and place the
 * answers at the asking rank's original string indices. */
static int reply_ids(const Exchange *x, MrComm *c, const int64_t *answer_of_entry, int64_t n,
                     int64_t *ids, MrErr *e)
{
    int P = c->size;
    int64_t *sb = malloc((size_t)P * sizeof *sb), *rb = malloc((size_t)P * sizeof *rb);
    int64_t *back = malloc((size_t)(n + 1) * sizeof *back);
    int rc = (sb && rb && back) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory replying ids");
    if (!(rc = mr_comm_agree(c, rc, e))) {
        for (int q = 0; q < P; q++) {
            sb[q] = x->recv_src_n[q] * 8;
            rb[q] = x->send_n[q] * 8;
        }
        rc = mr_comm_alltoallv(c, answer_of_entry, sb, back, rb, e);
    }
    if (!rc)
        for (int64_t k = 0; k < n; k++)
            ids[x->order[k]] = back[k];
    free(sb);
    free(rb);
    free(back);
    return rc;
}

/* Largest c >= 1 with #{count >= c} >= want over all ranks (counts of kept
 * candidates). Binary search with one allreduce per probe. */
static int count_threshold(MrComm *c, const int64_t *cnt, const uint8_t *cand, int64_t n,
                           int64_t want, int64_t *thr, MrErr *e)
{
    int64_t mx = 0;
    for (int64_t i = 0; i < n; i++)
        if (cand[i] && cnt[i] > mx)
            mx = cnt[i];
    int rc = mr_comm_allreduce_i64(c, &mx, 1, MR_MAX, e);
    if (rc)
        return rc;
    int64_t lo = 1, hi = mx; /* invariant: #{>= lo} >= want */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            k += cand[i] && cnt[i] >= mid;
        if ((rc = mr_comm_allreduce_i64(c, &k, 1, MR_SUM, e)))
            return rc;
        if (k >= want)
            lo = mid;
        else
            hi = mid - 1;
    }
    *thr = lo;
    return MR_OK;
}

/* Keep the `want` best candidates by (count desc, bytes asc if !desc_ties else
 * bytes desc). Groups are in byte order locally and ranks are in byte order, so
 * tie order is rank order (or its reverse). Updates cand[] in place. */
static int select_top(MrComm *c, const int64_t *cnt, uint8_t *cand, int64_t n, int64_t want,
                      int desc_ties, MrErr *e)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += cand[i];
    int rc = mr_comm_allreduce_i64(c, &total, 1, MR_SUM, e);
    if (rc || total <= want)
        return rc;
    if (want <= 0) {
        memset(cand, 0, (size_t)n);
        return MR_OK;
    }
    int64_t thr;
    if ((rc = count_threshold(c, cnt, cand, n, want, &thr, e)))
        return rc;
    int64_t v[2] = {0, 0}; /* #{> thr}, #{== thr} */
    for (int64_t i = 0; i < n; i++)
        if (cand[i]) {
            v[0] += cnt[i] > thr;
            v[1] += cnt[i] == thr;
        }
    int64_t tot[2] = {v[0], v[1]};
    if ((rc = mr_comm_allreduce_i64(c, tot, 2, MR_SUM, e)))
        return rc;
    int64_t need = want - tot[0]; /* ties to keep, 0 < need <= tot[1] */
    int64_t before = v[1];
    if ((rc = mr_comm_exscan_i64(c, &before, 1, e)))
        return rc;
    /* before = ties on lower ranks. With descending tie order, the ties that come
     * first are those on higher ranks, local order reversed. */
    int64_t rank_in_order = desc_ties ? tot[1] - before - v[1] : before;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!cand[i] || cnt[i] > thr)
            continue;
        if (cnt[i] < thr) {
            cand[i] = 0;
            continue;
        }
        int64_t pos = desc_ties ? rank_in_order + (v[1] - 1 - k) : rank_in_order + k;
        k++;
        if (pos >= need)
            cand[i] = 0;
    }
    return MR_OK;
}

int mr_vocab_build(MrVocab *v, MrComm *c, int64_t n, const char *const *strs,
                   const uint32_t *lens, const int64_t *counts, int64_t min_count,
                   int64_t max_size, int64_t *ids, MrErr *e)
{
    memset(v, 0, sizeof *v);
    Exchange x;
    int rc = range_exchange(&x, c, n, strs, lens, counts, e);
    if (rc)
        return rc;
    int64_t ng = x.n_groups;
    uint8_t *keep = malloc((size_t)ng + 1);
    int64_t *gid = malloc((size_t)(ng + 1) * sizeof *gid);
    int64_t *ans = malloc((size_t)(x.n_recv + 1) * sizeof *ans);
    rc = (keep && gid && ans) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory building vocabulary");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    if (min_count < 1)
        min_count = 1;
    for (int64_t g = 0; g < ng; g++)
        keep[g] = x.g_count[g] >= min_count;
    if (max_size > 0 && (rc = select_top(c, x.g_count, keep, ng, max_size, 0, e)))
        goto out;
    int64_t nk = 0;
    int64_t kept_bytes = 0;
    for (int64_t g = 0; g < ng; g++)
        if (keep[g]) {
            nk++;
            kept_bytes += x.rl[x.g_first[g]];
        }
    int64_t lo = nk;
    if ((rc = mr_comm_exscan_i64(c, &lo, 1, e)))
        goto out;
    int64_t V = nk;
    if ((rc = mr_comm_allreduce_i64(c, &V, 1, MR_SUM, e)))
        goto out;
    v->size = V;
    v->lo = lo + 1;
    v->hi = lo + 1 + nk;
    v->bytes = malloc((size_t)kept_bytes + 1);
    v->off = malloc((size_t)(nk + 1) * sizeof *v->off);
    v->count = malloc((size_t)(nk + 1) * sizeof *v->count);
    rc = (v->bytes && v->off && v->count) ? 0
                                          : mr_err_set(e, MR_ENOMEM, "out of memory for vocabulary");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t k = 0, b = 0;
    v->off[0] = 0;
    for (int64_t g = 0; g < ng; g++) {
        if (!keep[g]) {
            gid[g] = 0;
            continue;
        }
        int64_t f = x.g_first[g];
        memcpy(v->bytes + b, x.rs[f], x.rl[f]);
        b += x.rl[f];
        v->count[k] = x.g_count[g];
        gid[g] = v->lo + k;
        k++;
        v->off[k] = b;
    }
    for (int64_t i = 0; i < x.n_recv; i++)
        ans[i] = gid[x.group[i]];
    rc = reply_ids(&x, c, ans, n, ids, e);
out:
    free(keep);
    free(gid);
    free(ans);
    exchange_free(&x);
    if (rc)
        mr_vocab_free(v);
    return rc;
}

void mr_vocab_free(MrVocab *v)
{
    if (!v)
        return;
    free(v->bytes);
    free(v->off);
    free(v->count);
    memset(v, 0, sizeof *v);
}

/* ---- token vocabulary -------------------------------------------------------- */

typedef struct TokRef {
    const char *s;
    uint32_t len;
    int64_t count;
} TokRef;

static int cmp_tok(const void *a, const void *b)
{
    const TokRef *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return -mr_strcmp(x->s, x->len, y->s, y->len); /* bytes descending */
}

static int token_lookup_build(MrTokenVocab *v, MrErr *e)
{
    MrStrTab *t = malloc(sizeof *t);
    int64_t n = v->size - 2;
    if (!t || mr_strtab_init(t, n) != 0) {
        free(t);
        return mr_err_set(e, MR_ENOMEM, "out of memory for the token lookup");
    }
    for (int64_t k = 0; k < n; k++) {
        const char *s = v->bytes + v->off[k];
        size_t l = (size_t)(v->off[k + 1] - v->off[k]);
        if (mr_strtab_intern(t, s, l, mr_strhash(s, l), NULL) != k) {
            mr_strtab_free(t);
            free(t);
            return mr_err_set(e, MR_EINTERNAL, "duplicate token in the token vocabulary");
        }
    }
    v->lookup = t;
    return MR_OK;
}

int mr_token_vocab_from_list(MrTokenVocab *v, int64_t n, const char *bytes, const int64_t *off,
                             const int64_t *counts, MrErr *e)
{
    memset(v, 0, sizeof *v);
    v->size = n + 2;
    v->bytes = malloc((size_t)off[n] + 1);
    v->off = malloc((size_t)(n + 1) * sizeof *v->off);
    v->count = malloc((size_t)(n + 1) * sizeof *v->count);
    if (!v->bytes || !v->off || !v->count) {
        mr_token_vocab_free(v);
        return mr_err_set(e, MR_ENOMEM, "out of memory for the token vocabulary");
    }
    memcpy(v->bytes, bytes, (size_t)off[n]);
    memcpy(v->off, off, (size_t)(n + 1) * sizeof *off);
    for (int64_t k = 0; k < n; k++)
        v->count[k] = counts ? counts[k] : 0;
    int rc = token_lookup_build(v, e);
    if (rc)
        mr_token_vocab_free(v);
    return rc;
}

int mr_token_vocab_build(MrTokenVocab *v, MrComm *c, int64_t n, const char *const *strs,
                         const uint32_t *lens, const int64_t *counts, int64_t max_tokens,
                         int64_t *ids, MrErr *e)
{
    memset(v, 0, sizeof *v);
    Exchange x;
    int rc = range_exchange(&x, c, n, strs, lens, counts, e);
    if (rc)
        return rc;
    int64_t ng = x.n_groups;
    uint8_t *keep = malloc((size_t)ng + 1);
    char *send = NULL, *all = NULL;
    int64_t *rb = malloc((size_t)c->size * sizeof *rb);
    TokRef *refs = NULL;
    rc = (keep && rb) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory building the token vocabulary");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    for (int64_t g = 0; g < ng; g++)
        keep[g] = x.g_count[g] > 0;
    int64_t want = max_tokens > 2 ? max_tokens - 2 : 0;
    if ((rc = select_top(c, x.g_count, keep, ng, want, 1, e)))
        goto out;
    /* The selection is small (<= max_tokens - 2): every rank gets all of it. */
    int64_t bytes = 0;
    for (int64_t g = 0; g < ng; g++)
        if (keep[g])
            bytes += 12 + x.rl[x.g_first[g]];
    send = malloc((size_t)bytes + 1);
    rc = send ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    char *p = send;
    for (int64_t g = 0; g < ng; g++)
        if (keep[g])
            p += put_rec(p, x.rs[x.g_first[g]], x.rl[x.g_first[g]], x.g_count[g]);
    if ((rc = mr_comm_allgather(c, &bytes, sizeof bytes, rb, e)))
        goto out;
    int64_t total = 0;
    for (int q = 0; q < c->size; q++)
        total += rb[q];
    all = malloc((size_t)total + 1);
    rc = all ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_allgatherv(c, send, (size_t)bytes, all, rb, e)))
        goto out;
    int64_t m = 0;
    for (const char *q = all; q < all + total; m++) {
        const char *s;
        uint32_t l;
        int64_t cnt;
        q = get_rec(q, &s, &l, &cnt);
    }
    refs = malloc((size_t)(m + 1) * sizeof *refs);
    v->off = malloc((size_t)(m + 1) * sizeof *v->off);
    v->count = malloc((size_t)(m + 1) * sizeof *v->count);
    v->bytes = malloc((size_t)total + 1);
    rc = (refs && v->off && v->count && v->bytes) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    const char *q = all;
    for (int64_t k = 0; k < m; k++)
        q = get_rec(q, &refs[k].s, &refs[k].len, &refs[k].count);
    qsort(refs, (size_t)m, sizeof *refs, cmp_tok);
    v->size = m + 2;
    v->off[0] = 0;
    for (int64_t k = 0; k < m; k++) {
        memcpy(v->bytes + v->off[k], refs[k].s, refs[k].len);
        v->off[k + 1] = v->off[k] + refs[k].len;
        v->count[k] = refs[k].count;
    }
    rc = token_lookup_build(v, e);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    for (int64_t i = 0; i < n; i++)
        ids[i] = mr_token_vocab_find(v, strs[i], lens[i]);
out:
    free(keep);
    free(send);
    free(all);
    free(rb);
    free(refs);
    exchange_free(&x);
    if (rc)
        mr_token_vocab_free(v);
    return rc;
}

void mr_token_vocab_free(MrTokenVocab *v)
{
    if (!v)
        return;
    if (v->lookup) {
        mr_strtab_free(v->lookup);
        free(v->lookup);
    }
    free(v->bytes);
    free(v->off);
    free(v->count);
    memset(v, 0, sizeof *v);
}

int64_t mr_token_vocab_find(const MrTokenVocab *v, const char *tok, size_t len)
{
    if (!v->lookup)
        return 1;
    int64_t k = mr_strtab_find(v->lookup, tok, len, mr_strhash(tok, len));
    return k < 0 ? 1 : k + 2;
}

/* ---- queries ---------------------------------------------------------------- */

int mr_vocab_gather(const MrVocab *v, MrComm *c, int root, char **bytes, int64_t **off,
                    int64_t **counts, MrErr *e)
{
    int P = c->size;
    int64_t n = v->hi - v->lo, nb = v->off ? v->off[n] : 0;
    *bytes = NULL;
    *off = NULL;
    *counts = NULL;
    int64_t mine[2] = {n, nb};
    int64_t *all = malloc((size_t)P * 2 * sizeof *all);
    int64_t *rb_len = malloc((size_t)P * sizeof *rb_len), *rb_bytes = malloc((size_t)P * 8),
            *rb_cnt = malloc((size_t)P * 8);
    int64_t *lens = malloc((size_t)(n + 1) * sizeof *lens);
    int rc = (all && rb_len && rb_bytes && rb_cnt && lens) ? 0 : mr_err_set(e, MR_ENOMEM, "oom");
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_allgather(c, mine, sizeof mine, all, e)))
        goto out;
    for (int64_t k = 0; k < n; k++)
        lens[k] = v->off[k + 1] - v->off[k];
    int64_t V = v->size, B = 0;
    for (int q = 0; q < P; q++) {
        rb_len[q] = all[2 * q] * 8;
        rb_bytes[q] = all[2 * q + 1];
        rb_cnt[q] = all[2 * q] * 8;
        B += all[2 * q + 1];
    }
    int64_t *glens = NULL;
    if (c->rank == root) {
        *bytes = malloc((size_t)B + 1);
        *off = malloc((size_t)(V + 1) * sizeof **off);
        *counts = malloc((size_t)(V + 1) * sizeof **counts);
        glens = malloc((size_t)(V + 1) * sizeof *glens);
        if (!*bytes || !*off || !*counts || !glens)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory gathering the vocabulary");
    }
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_gatherv(c, lens, (size_t)n * 8, glens, rb_len, root, e)) ||
        (rc = mr_comm_gatherv(c, v->bytes, (size_t)nb, *bytes, rb_bytes, root, e)) ||
        (rc = mr_comm_gatherv(c, v->count, (size_t)n * 8, *counts, rb_cnt, root, e))) {
        free(glens);
        goto out;
    }
    if (c->rank == root) {
        (*off)[0] = 0;
        for (int64_t k = 0; k < V; k++)
            (*off)[k + 1] = (*off)[k] + glens[k];
    }
    free(glens);
out:
    free(all);
    free(rb_len);
    free(rb_bytes);
    free(rb_cnt);
    free(lens);
    if (rc) {
        free(*bytes);
        free(*off);
        free(*counts);
        *bytes = NULL;
        *off = NULL;
        *counts = NULL;
    }
    return rc;
}

int mr_vocab_allgather_counts(const MrVocab *v, MrComm *c, int64_t **counts, MrErr *e)
{
    int P = c->size;
    int64_t n = v->hi - v->lo;
    int64_t *rb = malloc((size_t)P * sizeof *rb);
    *counts = malloc((size_t)(v->size + 1) * sizeof **counts);
    int rc = (rb && *counts) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory for vocabulary counts");
    if (!(rc = mr_comm_agree(c, rc, e))) {
        int64_t mine = n * 8;
        if (!(rc = mr_comm_allgather(c, &mine, sizeof mine, rb, e))) {
            (*counts)[0] = 0;
            rc = mr_comm_allgatherv(c, v->count, (size_t)mine, *counts + 1, rb, e);
        }
    }
    free(rb);
    if (rc) {
        free(*counts);
        *counts = NULL;
    }
    return rc;
}

int mr_vocab_hash(const MrVocab *v, MrComm *c, uint64_t *h, MrErr *e)
{
    uint64_t s = 0;
    for (int64_t k = 0; k < v->hi - v->lo; k++) {
        const char *p = v->bytes + v->off[k];
        s += mr_mix((uint64_t)(v->lo + k), mr_strhash(p, (size_t)(v->off[k + 1] - v->off[k])));
    }
    int64_t t[2] = {(int64_t)(s & 0xffffffffu), (int64_t)(s >> 32)};
    int rc = mr_comm_allreduce_i64(c, t, 2, MR_SUM, e);
    if (rc)
        return rc;
    uint64_t lo = (uint64_t)t[0], hi = (uint64_t)t[1];
    *h = mr_mix((uint64_t)v->size, lo + (hi << 32));
    return MR_OK;
}
