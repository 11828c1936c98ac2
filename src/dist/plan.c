/* plan.c — per-epoch global batches independent of the rank count.
 *
 * Order: training records sorted by (mr_order_key(seed, epoch, r), r). Steps:
 *  1. every rank hashes its training records; (key, r) pairs go to the rank owning
 *     key's slice of [0, 2^64) (keys are uniform, so equal slices balance);
 *  2. the owner sorts its pairs (LSD radix on the key; stable, and the pairs
 *     arrive in increasing r because ranks hold increasing record ranges, so equal
 *     keys stay ordered by r), and an exclusive scan of counts turns local ranks
 *     into global positions, sent back in arrival order;
 *  3. each record moves once, with its fields and tokens, to the rank whose slice
 *     of its global batch holds its position; the receiver sorts by position.
 * Nobody holds the whole order. Costs per epoch: 16 + 8 bytes per record for the
 * positions and one record exchange.
 */
#include <stdlib.h>
#include <string.h>

#include "mpirec/dist.h"
#include "mpirec/hash.h"

void mr_batch_slice(int64_t N, int64_t B, int64_t b, int rank, int P, int64_t *G, int64_t *lo,
                    int64_t *hi)
{
    int64_t g = N - b * B;
    if (g > B)
        g = B;
    if (g < 0)
        g = 0;
    *G = g;
    *lo = g * rank / P;
    *hi = g * (rank + 1) / P;
}

/* Rank whose slice of a batch of size G holds offset o. */
static int slice_owner(int64_t G, int64_t o, int P)
{
    int q = (int)((o * P) / G);
    while (q + 1 < P && G * (q + 1) / P <= o)
        q++;
    while (q > 0 && G * q / P > o)
        q--;
    return q;
}

typedef struct KR {
    uint64_t key;
    int64_t r;
    int64_t idx; /* arrival index */
} KR;

/* Stable LSD radix sort by key (8 passes of 8 bits). */
static int radix_kr(KR *a, int64_t n)
{
    if (n < 2)
        return 0;
    KR *b = malloc((size_t)n * sizeof *b);
    if (!b)
        return -1;
    for (int pass = 0; pass < 8; pass++) {
        int sh = pass * 8;
        int64_t cnt[257] = {0};
        for (int64_t i = 0; i < n; i++)
            cnt[((a[i].key >> sh) & 255) + 1]++;
        for (int d = 0; d < 256; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t i = 0; i < n; i++)
            b[cnt[(a[i].key >> sh) & 255]++] = a[i];
        memcpy(a, b, (size_t)n * sizeof *a);
    }
    free(b);
    return 0;
}

typedef struct PosIdx {
    int64_t pos, idx;
} PosIdx;

static int radix_pos(PosIdx *a, int64_t n)
{
    if (n < 2)
        return 0;
    PosIdx *b = malloc((size_t)n * sizeof *b);
    if (!b)
        return -1;
    for (int pass = 0; pass < 8; pass++) {
        int sh = pass * 8;
        int64_t cnt[257] = {0};
        for (int64_t i = 0; i < n; i++)
            cnt[(((uint64_t)a[i].pos >> sh) & 255) + 1]++;
        if (cnt[(((uint64_t)a[0].pos >> sh) & 255) + 1] == n)
            continue;
        for (int d = 0; d < 256; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t i = 0; i < n; i++)
            b[cnt[((uint64_t)a[i].pos >> sh) & 255]++] = a[i];
        memcpy(a, b, (size_t)n * sizeof *a);
    }
    free(b);
    return 0;
}

/* Wire record: pos, user, item (i64), rating (f32), ntok (i32), tokens (i32 x ntok). */
#define REC_FIXED (8 + 8 + 8 + 4 + 4)

int mr_epoch_plan(MrEpochPlan *p, MrComm *c, const MrDataset *d, uint64_t seed, int64_t epoch,
                  int64_t B, MrErr *e)
{
    memset(p, 0, sizeof *p);
    int P = c->size;
    int text = d->tok_off != NULL;
    int rc = MR_OK;
    int64_t nt = 0;
    for (int64_t i = 0; i < d->n; i++)
        nt += !d->is_test[i];
    int64_t *tr = malloc((size_t)(nt + 1) * sizeof *tr);     /* local index of train record k */
    int64_t *sn = calloc((size_t)P, 8), *rn = calloc((size_t)P, 8), *at = calloc((size_t)P, 8);
    KR *send = malloc((size_t)(nt + 1) * sizeof *send), *recv = NULL;
    int64_t *pos_back = NULL, *pos_mine = NULL, *order_k = malloc((size_t)(nt + 1) * 8);
    char *rs = NULL, *rr = NULL;
    PosIdx *pi = NULL;
    if (!tr || !sn || !rn || !at || !send || !order_k)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory planning epoch %lld", (long long)epoch);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    /* 1. keys to owners */
    int64_t k = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (!d->is_test[i])
            tr[k++] = i;
    for (int64_t j = 0; j < nt; j++) {
        uint64_t key = mr_order_key(seed, (uint64_t)epoch, (uint64_t)(d->first + tr[j]));
        int q = (int)(((unsigned __int128)key * (unsigned)P) >> 64);
        sn[q]++;
    }
    for (int q = 1; q < P; q++)
        at[q] = at[q - 1] + sn[q - 1];
    for (int64_t j = 0; j < nt; j++) {
        int64_t r = d->first + tr[j];
        uint64_t key = mr_order_key(seed, (uint64_t)epoch, (uint64_t)r);
        int q = (int)(((unsigned __int128)key * (unsigned)P) >> 64);
        order_k[j] = at[q];
        send[at[q]].key = key;
        send[at[q]].r = r;
        send[at[q]].idx = 0;
        at[q]++;
    }
    int64_t nr = 0;
    for (int q = 0; q < P; q++)
        sn[q] *= (int64_t)sizeof(KR);
    if ((rc = mr_comm_alltoall_i64(c, sn, rn, e)))
        goto out;
    for (int q = 0; q < P; q++)
        nr += rn[q] / (int64_t)sizeof(KR);
    recv = malloc((size_t)(nr + 1) * sizeof *recv);
    pos_back = malloc((size_t)(nr + 1) * sizeof *pos_back);
    pos_mine = malloc((size_t)(nt + 1) * sizeof *pos_mine);
    rc = (recv && pos_back && pos_mine) ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_alltoallv(c, send, sn, recv, rn, e)))
        goto out;
    /* 2. sort, positions */
    for (int64_t j = 0; j < nr; j++)
        recv[j].idx = j;
    rc = radix_kr(recv, nr) ? mr_err_set(e, MR_ENOMEM, "out of memory sorting keys") : 0;
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t base = nr, N = nt;
    if ((rc = mr_comm_exscan_i64(c, &base, 1, e)) ||
        (rc = mr_comm_allreduce_i64(c, &N, 1, MR_SUM, e)))
        goto out;
    for (int64_t j = 0; j < nr; j++)
        pos_back[recv[j].idx] = base + j;
    for (int q = 0; q < P; q++) {
        int64_t t = sn[q] / (int64_t)sizeof(KR) * 8;
        sn[q] = rn[q] / (int64_t)sizeof(KR) * 8; /* reply: 8 bytes per received pair */
        rn[q] = t;
    }
    int64_t *pos_sendorder = (int64_t *)send; /* reuse: nt * 16 >= nt * 8 bytes */
    if ((rc = mr_comm_alltoallv(c, pos_back, sn, pos_sendorder, rn, e)))
        goto out;
    for (int64_t j = 0; j < nt; j++)
        pos_mine[j] = pos_sendorder[order_k[j]];
    /* 3. move records to the rank whose slice holds them */
    memset(sn, 0, (size_t)P * 8);
    for (int64_t j = 0; j < nt; j++) {
        int64_t b = pos_mine[j] / B, G, lo, hi;
        mr_batch_slice(N, B, b, 0, P, &G, &lo, &hi);
        int q = slice_owner(G, pos_mine[j] - b * B, P);
        int64_t ntok = text ? d->tok_off[tr[j] + 1] - d->tok_off[tr[j]] : 0;
        sn[q] += REC_FIXED + 4 * ntok;
    }
    int64_t total_s = 0;
    for (int q = 0; q < P; q++) {
        at[q] = total_s;
        total_s += sn[q];
    }
    rs = malloc((size_t)total_s + 1);
    rc = rs ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory packing epoch records");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    for (int64_t j = 0; j < nt; j++) {
        int64_t i = tr[j], b = pos_mine[j] / B, G, lo, hi;
        mr_batch_slice(N, B, b, 0, P, &G, &lo, &hi);
        int q = slice_owner(G, pos_mine[j] - b * B, P);
        int32_t ntok = text ? (int32_t)(d->tok_off[i + 1] - d->tok_off[i]) : 0;
        char *w = rs + at[q];
        memcpy(w, &pos_mine[j], 8);
        int64_t uid = d->user[i], iid = d->item[i]; /* 8 bytes on the wire */
        memcpy(w + 8, &uid, 8);
        memcpy(w + 16, &iid, 8);
        memcpy(w + 24, &d->rating[i], 4);
        memcpy(w + 28, &ntok, 4);
        if (ntok)
            memcpy(w + 32, d->tok + d->tok_off[i], (size_t)ntok * 4);
        at[q] += REC_FIXED + 4 * (int64_t)ntok;
    }
    if ((rc = mr_comm_alltoall_i64(c, sn, rn, e)))
        goto out;
    int64_t total_r = 0;
    for (int q = 0; q < P; q++)
        total_r += rn[q];
    rr = malloc((size_t)total_r + 1);
    rc = rr ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory receiving epoch records");
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_alltoallv(c, rs, sn, rr, rn, e)))
        goto out;
    free(rs);
    rs = NULL;
    /* unpack, sort by position */
    int64_t n = 0, ntk = 0;
    for (const char *q = rr; q < rr + total_r; n++) {
        int32_t t;
        memcpy(&t, q + 28, 4);
        ntk += t;
        q += REC_FIXED + 4 * (int64_t)t;
    }
    int64_t *qoff = malloc((size_t)(n + 1) * sizeof *qoff);
    pi = malloc((size_t)(n + 1) * sizeof *pi);
    p->pos = malloc((size_t)(n + 1) * 8);
    p->user = malloc((size_t)(n + 1) * 8);
    p->item = malloc((size_t)(n + 1) * 8);
    p->rating = malloc((size_t)(n + 1) * 4);
    if (text) {
        p->tok_off = malloc((size_t)(n + 1) * 8);
        p->tok = malloc((size_t)(ntk + 1) * 4);
    }
    rc = (qoff && pi && p->pos && p->user && p->item && p->rating &&
          (!text || (p->tok_off && p->tok)))
             ? 0
             : mr_err_set(e, MR_ENOMEM, "out of memory for the epoch plan");
    if (!rc) {
        const char *q = rr;
        for (int64_t j = 0; j < n; j++) {
            int32_t t;
            qoff[j] = q - rr;
            memcpy(&pi[j].pos, q, 8);
            pi[j].idx = j;
            memcpy(&t, q + 28, 4);
            q += REC_FIXED + 4 * (int64_t)t;
        }
        if (radix_pos(pi, n))
            rc = mr_err_set(e, MR_ENOMEM, "out of memory sorting the epoch plan");
    }
    if (!rc) {
        int64_t tk = 0;
        for (int64_t j = 0; j < n; j++) {
            const char *q = rr + qoff[pi[j].idx];
            int32_t t;
            memcpy(&p->pos[j], q, 8);
            memcpy(&p->user[j], q + 8, 8);
            memcpy(&p->item[j], q + 16, 8);
            memcpy(&p->rating[j], q + 24, 4);
            memcpy(&t, q + 28, 4);
            if (text) {
                p->tok_off[j] = tk;
                memcpy(p->tok + tk, q + 32, (size_t)t * 4);
                tk += t;
            }
        }
        if (text)
            p->tok_off[n] = tk;
    }
    free(qoff);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    p->N = N;
    p->B = B;
    p->n = n;
    p->n_batches = (N + B - 1) / B;
    /* Largest local slice (records and tokens) over the epoch's batches. */
    for (int64_t b = 0; b < p->n_batches; b++) {
        int64_t a, bnd, G, off;
        mr_epoch_plan_batch(p, c->rank, P, b, &a, &bnd, &G, &off);
        if (bnd - a > p->max_slice)
            p->max_slice = bnd - a;
        if (text && p->tok_off[bnd] - p->tok_off[a] > p->max_slice_tokens)
            p->max_slice_tokens = p->tok_off[bnd] - p->tok_off[a];
    }
out:
    free(tr);
    free(sn);
    free(rn);
    free(at);
    free(send);
    free(recv);
    free(pos_back);
    free(pos_mine);
    free(order_k);
    free(rs);
    free(rr);
    free(pi);
    if (rc)
        mr_epoch_plan_free(p);
    return rc;
}

void mr_epoch_plan_batch(const MrEpochPlan *p, int rank, int P, int64_t b, int64_t *a,
                         int64_t *bnd, int64_t *G, int64_t *offset)
{
    int64_t lo, hi;
    mr_batch_slice(p->N, p->B, b, rank, P, G, &lo, &hi);
    /* Positions are sorted: the slice is [b*B + lo, b*B + hi). Records of earlier
     * batches come first, so the start index is the count of positions below. */
    int64_t first = b * p->B + lo;
    int64_t l = 0, h = p->n;
    while (l < h) {
        int64_t m = (l + h) / 2;
        if (p->pos[m] < first)
            l = m + 1;
        else
            h = m;
    }
    *a = l;
    *bnd = l + (hi - lo);
    *offset = lo;
}

void mr_epoch_plan_free(MrEpochPlan *p)
{
    if (!p)
        return;
    free(p->pos);
    free(p->user);
    free(p->item);
    free(p->rating);
    free(p->tok_off);
    free(p->tok);
    memset(p, 0, sizeof *p);
}
