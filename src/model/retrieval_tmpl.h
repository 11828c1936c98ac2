/* retrieval_tmpl.h — body of the in-batch softmax retrieval loss over `real`
 * (TFRS tasks/retrieval.py, SEMANTICS.md section 1; contract in model.h).
 *
 * The [B x G] logit matrix is never held: query rows go through in blocks of bs rows
 * (w->bs; S is [bs x G]). Per block:
 *
 *   1. S = (1/T) Qblk Cg^T                                  GEMM 1 (temperature folded
 *                                                            into alpha)
 *   2. per row, in TFRS's order: logQ (applied on the fly by the row passes as the
 *      column shift lq[j] = log(clip(p_j, 1e-6, 1))), accidental hits (+MIN_FLOAT on
 *      the other columns of the positive's id group, found from ids sorted once per
 *      call), hard negatives (the non-kept columns become -inf), then
 *      m = max_j (S_ij - lq_j) and E_ij = exp(S_ij - lq_j - m) in place, sum_i.
 *      loss_i = m + log(sum_i) - (S_i,pos - lq_pos).
 *   3. The gradient of the raw dot products is g (P - Y) with g = scale/T and
 *      P = E / sum. The row normalisation is folded into the GEMM operands instead of
 *      a third pass over the block:
 *        dQblk = diag(c) (E Cg) - g Cg[pos]          GEMM 2, c_i = g / sum_i
 *        dCg  += E^T (diag(c) Qblk); dCg[pos] -= g Q  GEMM 3
 *
 * So the block is read by the GEMMs and touched by exactly two row passes (max; exp
 * + sum), both vectorised in fastmath.c. Hard negatives (keep the positive plus the
 * n largest other logits, as top_k on S + Y MAX_FLOAT does) find the n-th largest per
 * row (a size-n min-heap pass when n <= G/16, else a quickselect on a copy of the
 * row), then mask everything below it; with n + 1 >= G the loss is the full loss and
 * nothing is selected. Ties at the selection threshold keep the lowest column indices first
 * (tf.math.top_k leaves the choice among equal values unspecified; the loss value is
 * the same either way).
 *
 * dQ and dCg are overwritten; *loss is the scaled local sum in double.
 */

/* ---- accidental hits: group the candidate columns by id (no allocation) ---- */

static int S_(id_less)(const int64_t *ids, int32_t a, int32_t b)
{
    return ids[a] < ids[b] || (ids[a] == ids[b] && a < b);
}

static void S_(sift_down)(const int64_t *ids, int32_t *ord, int64_t root, int64_t n)
{
    for (;;) {
        int64_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && S_(id_less)(ids, ord[child], ord[child + 1]))
            child++;
        if (!S_(id_less)(ids, ord[root], ord[child]))
            return;
        int32_t t = ord[root];
        ord[root] = ord[child];
        ord[child] = t;
        root = child;
    }
}

/* ord = columns sorted by (id, column) (heapsort: in place, O(G log G)); the columns
 * sharing column j's id are ord[glo[j] .. ghi[j]). */
static void S_(group_ids)(const int64_t *ids, int64_t G, int32_t *ord, int32_t *glo, int32_t *ghi)
{
    for (int64_t j = 0; j < G; j++)
        ord[j] = (int32_t)j;
    for (int64_t r = G / 2 - 1; r >= 0; r--)
        S_(sift_down)(ids, ord, r, G);
    for (int64_t end = G - 1; end > 0; end--) {
        int32_t t = ord[0];
        ord[0] = ord[end];
        ord[end] = t;
        S_(sift_down)(ids, ord, 0, end);
    }
    for (int64_t q = 0; q < G;) {
        int64_t r = q + 1;
        while (r < G && ids[ord[r]] == ids[ord[q]])
            r++;
        for (int64_t t = q; t < r; t++) {
            glo[ord[t]] = (int32_t)q;
            ghi[ord[t]] = (int32_t)r;
        }
        q = r;
    }
}

/* ---- hard negatives ---- */

/* The k-th largest (0-based) of a[0..n) (reorders a). Hoare partition around a
 * median of three; the values must not contain NaN (the caller checks). */
static R_ S_(kth_largest)(R_ *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        R_ x = a[lo], y = a[mid], z = a[hi];
        R_ pivot = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot)
                i++;
            while (a[j] < pivot)
                j--;
            if (i <= j) {
                R_ t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        /* a[lo..j] >= pivot >= a[i..hi], everything strictly between equals pivot */
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

/* Vectors of `real` (GCC/clang vector extensions; 16 floats or 8 doubles) for the
 * selection passes, and the matching integer lane type of a comparison. */
typedef R_ S_(rv) __attribute__((vector_size(64)));
#define RVL ((int64_t)(64 / sizeof(R_)))
#define RSPLAT(x) ((S_(rv)){0} + (R_)(x))
typedef __typeof__(RSPLAT(0) < RSPLAT(0)) S_(rvi);

/* Effective logits row[j] - lq[j] of columns j0 .. j0 + RVL. */
#define RLOAD_EFF(v, row, lq, j0)                                                           \
    do {                                                                                    \
        memcpy(&(v), (row) + (j0), sizeof(v));                                              \
        if (lq) {                                                                           \
            S_(rv) l_;                                                                      \
            memcpy(&l_, (lq) + (j0), sizeof l_);                                            \
            (v) = (v) - l_;                                                                 \
        }                                                                                   \
    } while (0)

/* Restore the min-heap property of h[0..n) below position r. */
static void S_(heap_down)(R_ *h, int64_t n, int64_t r)
{
    for (;;) {
        int64_t c = 2 * r + 1;
        if (c >= n)
            return;
        if (c + 1 < n && h[c + 1] < h[c])
            c++;
        if (!(h[c] < h[r]))
            return;
        R_ t = h[r];
        h[r] = h[c];
        h[c] = t;
        r = c;
    }
}

/* Offer column j's value to the heap of the n largest (tmp). 0 on NaN. */
static int S_(heap_offer)(const R_ *row, const R_ *lq, int64_t j, int64_t n, R_ *tmp)
{
    R_ v = lq ? row[j] - lq[j] : row[j];
    if (v != v)
        return 0;
    if (v > tmp[0]) {
        tmp[0] = v;
        S_(heap_down)(tmp, n, 0);
    }
    return 1;
}

/* The n-th largest effective logit of the row, excluding column pc, through a
 * min-heap of the n largest seen so far (tmp[0..n)). After the heap fills, a vector
 * of columns is looked at one by one only if one of its values beats the heap's
 * minimum (or is NaN); for n << G that is rare, so the pass runs at vector speed.
 * Returns 0 on a NaN. */
static int S_(nth_largest_heap)(const R_ *row, const R_ *lq, int64_t G, int64_t pc, int64_t n,
                                R_ *tmp, R_ *t)
{
    int64_t k = 0, j = 0;
    for (; j < G && k < n; j++) {
        if (j == pc)
            continue;
        R_ v = lq ? row[j] - lq[j] : row[j];
        if (v != v)
            return 0;
        tmp[k++] = v;
    }
    for (int64_t r = n / 2 - 1; r >= 0; r--)
        S_(heap_down)(tmp, n, r);
    for (; j < G && j % RVL; j++) /* align j to the vector width */
        if (j != pc && !S_(heap_offer)(row, lq, j, n, tmp))
            return 0;
    for (; j + RVL <= G; j += RVL) {
        S_(rv) v;
        RLOAD_EFF(v, row, lq, j);
        S_(rvi) hit = (v > RSPLAT(tmp[0])) | (v != v);
        uint64_t words[8]; /* any lane set? eight ORs instead of a lane-by-lane scan */
        memcpy(words, &hit, sizeof words);
        if (!(words[0] | words[1] | words[2] | words[3] | words[4] | words[5] | words[6] |
              words[7]))
            continue;
        /* Offer only the lanes that beat the minimum at the start of the vector: the
         * minimum only grows, so the other lanes cannot enter the heap. */
        R_ vals[RVL];
        __typeof__(hit[0]) lanes[RVL];
        memcpy(vals, &v, sizeof vals);
        memcpy(lanes, &hit, sizeof lanes);
        for (int64_t l = 0; l < RVL; l++) {
            if (!lanes[l] || j + l == pc)
                continue;
            if (vals[l] != vals[l])
                return 0;
            if (vals[l] > tmp[0]) {
                tmp[0] = vals[l];
                S_(heap_down)(tmp, n, 0);
            }
        }
    }
    for (; j < G; j++)
        if (j != pc && !S_(heap_offer)(row, lq, j, n, tmp))
            return 0;
    *t = tmp[0];
    return 1;
}

/* row[j] = -inf where row[j] - lq[j] < t, over every column (the caller restores the
 * positive); counts the columns equal to t and above t. */
static void S_(mask_below)(R_ *row, const R_ *lq, int64_t G, R_ t, int64_t *n_eq, int64_t *n_gt)
{
    S_(rvi) eq = RSPLAT(0) != RSPLAT(0), gt = eq; /* all-zero lanes */
    S_(rv) T = RSPLAT(t), NINF = RSPLAT(-INFINITY);
    int64_t j = 0;
    for (; j + RVL <= G; j += RVL) {
        S_(rv) v, x;
        RLOAD_EFF(v, row, lq, j);
        memcpy(&x, row + j, sizeof x);
        S_(rvi) lt = v < T;
        x = (S_(rv))(((S_(rvi))x & ~lt) | ((S_(rvi))NINF & lt));
        memcpy(row + j, &x, sizeof x);
        eq -= v == T; /* a true lane is -1 */
        gt -= v > T;
    }
    int64_t ne = 0, ng = 0;
    for (int64_t l = 0; l < RVL; l++) {
        ne += (int64_t)eq[l];
        ng += (int64_t)gt[l];
    }
    for (; j < G; j++) {
        R_ v = lq ? row[j] - lq[j] : row[j];
        if (v < t)
            row[j] = (R_)-INFINITY;
        ne += v == t;
        ng += v > t;
    }
    *n_eq = ne;
    *n_gt = ng;
}

/* Keep the positive column pc and the n largest other effective logits of the row;
 * set the rest to -inf. Requires 1 <= n < G - 1. The threshold t (the n-th largest)
 * comes from the heap pass when n is small against G, else from a quickselect on a
 * copy of the row; then one vector pass masks everything below t. Columns equal to
 * t are kept up to the quota, lowest index first (a rare scalar fix-up). */
static void S_(keep_hardest)(R_ *row, const R_ *lq, int64_t G, int64_t pc, int64_t n, R_ *tmp)
{
    R_ t;
    if (n * 16 <= G) {
        if (!S_(nth_largest_heap)(row, lq, G, pc, n, tmp, &t))
            return; /* NaN: the loss is NaN anyway; leave the row for the check upstream */
    } else {
        int64_t k = 0;
        for (int64_t j = 0; j < G; j++) {
            if (j == pc)
                continue;
            R_ v = lq ? row[j] - lq[j] : row[j];
            if (v != v)
                return;
            tmp[k++] = v;
        }
        t = S_(kth_largest)(tmp, k, n - 1);
    }
    R_ xpc = row[pc], vpc = lq ? xpc - lq[pc] : xpc;
    int64_t n_eq, n_gt;
    S_(mask_below)(row, lq, G, t, &n_eq, &n_gt);
    row[pc] = xpc; /* the positive is always kept and is not one of the negatives */
    n_eq -= vpc == t;
    n_gt -= vpc > t;
    int64_t quota = n - n_gt; /* columns equal to t that stay */
    if (n_eq > quota) {
        for (int64_t j = 0; j < G; j++) {
            if (j == pc || (lq ? row[j] - lq[j] : row[j]) != t)
                continue;
            if (quota > 0)
                quota--;
            else
                row[j] = (R_)-INFINITY;
        }
    }
}
#undef RLOAD_EFF
#undef RSPLAT
#undef RVL

/* ---- the loss ---- */

int S_(mr_mk_retrieval_loss)(const MrRetrievalOpts *o, int64_t B, int64_t G, int d, const R_ *Q,
                             const R_ *Cg, int64_t pos_offset, const int64_t *cand_ids,
                             const R_ *cand_p, double scale, R_ *dQ, R_ *dCg, double *loss,
                             S_(MrkBufs) *w, MrErr *e)
{
    *loss = 0.0;
    if (B < 0 || G < 0 || d < 1 || pos_offset < 0 || (B > 0 && pos_offset + B > G))
        return mr_err_set(e, MR_EINTERNAL,
                          "retrieval loss: bad shape B=%lld G=%lld d=%d pos_offset=%lld",
                          (long long)B, (long long)G, d, (long long)pos_offset);
    if (G > w->G_cap || d > w->dmax)
        return mr_err_set(e, MR_EINTERNAL,
                          "retrieval loss: G=%lld d=%d exceed the work capacity G=%lld d=%d",
                          (long long)G, d, (long long)w->G_cap, w->dmax);
    if (o->temperature < 0 || o->num_hard_negatives < 0)
        return mr_err_set(e, MR_EINTERNAL, "retrieval loss: temperature %g, hard negatives %d",
                          o->temperature, o->num_hard_negatives);
    if (o->remove_accidental_hits && G > 0 && !cand_ids)
        return mr_err_set(e, MR_EINTERNAL, "retrieval loss: remove_accidental_hits needs ids");
    if (o->logq && G > 0 && !cand_p)
        return mr_err_set(e, MR_EINTERNAL, "retrieval loss: logq needs sampling probabilities");
    if (G > 0)
        memset(dCg, 0, (size_t)(G * d) * sizeof(R_));
    if (B == 0)
        return MR_OK;

    double inv_t = o->temperature > 0 ? 1.0 / o->temperature : 1.0;
    R_ gfac = (R_)(scale * inv_t);
    const R_ *lq = NULL;
    if (o->logq) {
        for (int64_t j = 0; j < G; j++) {
            double p = (double)cand_p[j];
            p = p < 1e-6 ? 1e-6 : (p > 1.0 ? 1.0 : p); /* NaN passes through */
            w->lq[j] = (R_)log(p);
        }
        lq = w->lq;
    }
    if (o->remove_accidental_hits)
        S_(group_ids)(cand_ids, G, w->ord, w->glo, w->ghi);
    int64_t nhard = o->num_hard_negatives;
    int select = nhard > 0 && nhard + 1 < G; /* n + 1 >= G keeps every column */

    double total = 0.0;
    R_ *S = w->S;
    for (int64_t i0 = 0; i0 < B; i0 += w->bs) {
        int64_t nb = B - i0 < w->bs ? B - i0 : w->bs;
        const R_ *Qb = Q + i0 * d;
        S_(mr_mk_gemm)(0, 1, nb, G, d, (R_)inv_t, Qb, d, Cg, d, (R_)0, S, G);
        for (int64_t r = 0; r < nb; r++) {
            R_ *row = S + r * G;
            int64_t pc = pos_offset + i0 + r;
            if (o->remove_accidental_hits) {
                for (int32_t q = w->glo[pc]; q < w->ghi[pc]; q++)
                    if (w->ord[q] != pc)
                        row[w->ord[q]] += (R_)MR_MK_MIN_FLOAT;
            }
            if (select)
                S_(keep_hardest)(row, lq, G, pc, nhard, w->sel);
            R_ spos = lq ? row[pc] - lq[pc] : row[pc];
            R_ m = S_(mr_mk_row_max)(row, lq, G);
            double sum = S_(mr_mk_exp_sum)(row, lq, m, G);
            total += (double)m + log(sum) - (double)spos;
            w->rowf[r] = (R_)(scale * inv_t / sum);
        }
        R_ *Qs = w->Qs;
        for (int64_t r = 0; r < nb; r++)
            for (int k = 0; k < d; k++)
                Qs[r * d + k] = w->rowf[r] * Qb[r * d + k];
        R_ *dQb = dQ + i0 * d;
        S_(mr_mk_gemm)(0, 0, nb, d, G, (R_)1, S, G, Cg, d, (R_)0, dQb, d);
        for (int64_t r = 0; r < nb; r++) {
            const R_ *cp = Cg + (pos_offset + i0 + r) * d;
            for (int k = 0; k < d; k++)
                dQb[r * d + k] = w->rowf[r] * dQb[r * d + k] - gfac * cp[k];
        }
        S_(mr_mk_gemm)(1, 0, G, d, nb, (R_)1, S, G, Qs, d, (R_)1, dCg, d);
        for (int64_t r = 0; r < nb; r++) {
            R_ *dcp = dCg + (pos_offset + i0 + r) * d;
            for (int k = 0; k < d; k++)
                dcp[k] -= gfac * Qb[r * d + k];
        }
    }
    *loss = scale * total;
    return MR_OK;
}
