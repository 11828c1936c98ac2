/* emb.c — embedding tables, replicated or row-sharded, with row-wise optimizer
 * state, and the per-step lookup / gradient exchange.
 *
 * Lookup: ids of the local slice are deduplicated with an open-addressing map
 * (first-occurrence order), rows are copied (replicated) or fetched from their
 * owners (row: one alltoallv of ids out, one of rows back).
 *
 * Apply: each rank's unique ids with their summed gradient rows are the
 * contributions. Replicated: allgatherv of all contributions, every rank merges
 * them per row in rank order and updates every touched row (bitwise identical
 * replicas). Row: contributions go to the row's owner (alltoallv), which merges in
 * the same rank order and updates. The per-row arithmetic is identical in both
 * modes, hence the same model.
 *
 * Cost per step and table (U_r unique ids on rank r, d columns, 4-byte floats):
 * replicated sends (8 + 4d) U_r bytes to every other rank and applies sum_r U_r
 * row updates on every rank; row sends (8 + 4d) U_r bytes once (grads) plus 8 U_r
 * out and 4d U_r back (lookup), and applies only its own rows.
 *
 * Every buffer is sized by mr_emb_reserve; the step functions never allocate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/dist.h"
#include "mpirec/hash.h"
#include "mpirec/model.h"

typedef struct IdMap {
    int64_t cap;     /* power of two */
    int64_t *key;    /* -1 = empty */
    int32_t *val;
    int64_t *used;   /* slots filled since the last clear */
    int64_t nused;
} IdMap;

typedef struct EmbImpl {
    IdMap local;       /* dedup of a lookup: id -> slot */
    IdMap merge;       /* merge of contributions: id -> accumulator row */
    int64_t gcap;      /* max contributions received per step */
    /* row-mode lookup */
    int64_t *req_ids;  /* [cap] ids in owner order */
    int64_t *req_slot; /* [cap] slot of each request */
    int64_t *in_ids;   /* [gcap] ids received by owner */
    float *out_rows;   /* [gcap x dim] rows sent back by owner */
    float *in_rows;    /* [cap x dim] rows received */
    /* contributions */
    char *send;        /* [cap x (8 + 4d)] */
    char *recv;        /* [gcap x (8 + 4d)] */
    float *acc;        /* [gcap x dim] merged gradients */
    int64_t *acc_row;  /* [gcap] local row index of each accumulator */
    int64_t *sn, *rn;  /* [P] byte counts */
    int64_t *cnt;      /* [P] */
} EmbImpl;

static int map_init(IdMap *m, int64_t n)
{
    int64_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->cap = cap;
    m->key = malloc((size_t)cap * sizeof *m->key);
    m->val = malloc((size_t)cap * sizeof *m->val);
    m->used = malloc((size_t)cap * sizeof *m->used);
    m->nused = 0;
    if (!m->key || !m->val || !m->used)
        return -1;
    memset(m->key, 0xff, (size_t)cap * sizeof *m->key);
    return 0;
}

static void map_free(IdMap *m)
{
    free(m->key);
    free(m->val);
    free(m->used);
    memset(m, 0, sizeof *m);
}

static void map_clear(IdMap *m)
{
    for (int64_t i = 0; i < m->nused; i++)
        m->key[m->used[i]] = -1;
    m->nused = 0;
}

/* Value of key, inserting `fresh` when absent (*is_new = 1). */
static int32_t map_get(IdMap *m, int64_t key, int32_t fresh, int *is_new)
{
    int64_t mask = m->cap - 1;
    for (int64_t j = (int64_t)(mr_splitmix64((uint64_t)key) & (uint64_t)mask);; j = (j + 1) & mask) {
        if (m->key[j] == key) {
            *is_new = 0;
            return m->val[j];
        }
        if (m->key[j] < 0) {
            m->key[j] = key;
            m->val[j] = fresh;
            m->used[m->nused++] = j;
            *is_new = 1;
            return fresh;
        }
    }
}

int64_t mr_emb_local_index(const MrEmbTable *t, int64_t id)
{
    if (id < 0 || id >= t->rows)
        return -1;
    if (t->mode == MR_SHARD_REPLICATED)
        return id;
    return id % t->P == t->rank ? id / t->P : -1;
}

int64_t mr_emb_global_row(const MrEmbTable *t, int64_t k)
{
    return t->mode == MR_SHARD_REPLICATED ? k : k * t->P + t->rank;
}

int mr_emb_init(MrEmbTable *t, MrComm *c, const char *name, int64_t rows, int dim,
                MrSharding mode, uint64_t seed, uint64_t stream, double init,
                const MrOptimizer *opt, MrErr *e)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->dim = dim;
    t->mode = mode;
    t->rank = c->rank;
    t->P = c->size;
    t->local_rows = mode == MR_SHARD_REPLICATED
                        ? rows
                        : (rows > c->rank ? (rows - c->rank + c->size - 1) / c->size : 0);
    t->slots = mr_optim_state_per_param(opt);
    size_t n = (size_t)t->local_rows * (size_t)dim;
    t->w = malloc(n * sizeof *t->w + 4);
    t->state = malloc(n * (size_t)t->slots * sizeof *t->state + 4);
    EmbImpl *im = calloc(1, sizeof *im);
    t->impl = im;
    int rc = (t->w && t->state && im) ? 0
                                      : mr_err_set(e, MR_ENOMEM,
                                                   "out of memory for the %s embedding table "
                                                   "(%lld rows x %d on this rank)",
                                                   name, (long long)t->local_rows, dim);
    if (!rc) {
        if (mode == MR_SHARD_REPLICATED) {
            mr_embedding_init_rows(t->w, seed, stream, 0, rows, dim, init);
        } else {
            /* Row k here is global row k*P + rank: draw exactly that row's values. */
            for (int64_t k = 0; k < t->local_rows; k++) {
                int64_t g = k * t->P + t->rank;
                mr_embedding_init_rows(t->w + k * dim, seed, stream, g, g + 1, dim, init);
            }
        }
        for (int s = 0; s < t->slots; s++) {
            float v = mr_optim_state_init(opt, s);
            for (size_t i = 0; i < n; i++)
                t->state[(size_t)s * n + i] = v;
        }
    }
    rc = mr_comm_agree(c, rc, e);
    if (rc)
        mr_emb_free(t);
    return rc;
}

void mr_emb_free(MrEmbTable *t)
{
    if (!t)
        return;
    EmbImpl *im = t->impl;
    if (im) {
        map_free(&im->local);
        map_free(&im->merge);
        free(im->req_ids);
        free(im->req_slot);
        free(im->in_ids);
        free(im->out_rows);
        free(im->in_rows);
        free(im->send);
        free(im->recv);
        free(im->acc);
        free(im->acc_row);
        free(im->sn);
        free(im->rn);
        free(im->cnt);
        free(im);
    }
    free(t->w);
    free(t->state);
    free(t->uid);
    free(t->rows_buf);
    memset(t, 0, sizeof *t);
}

int mr_emb_reserve(MrEmbTable *t, MrComm *c, int64_t ids_cap, int64_t global_cap, MrErr *e)
{
    EmbImpl *im = t->impl;
    if (ids_cap < 1)
        ids_cap = 1;
    if (global_cap < ids_cap)
        global_cap = ids_cap;
    int64_t caps[2] = {ids_cap, global_cap};
    int rc = mr_comm_allreduce_i64(c, caps, 2, MR_MAX, e);
    if (rc)
        return rc;
    if (caps[0] <= t->cap && caps[1] <= im->gcap)
        return MR_OK;
    int64_t cap = caps[0] > t->cap ? caps[0] : t->cap;
    int64_t gcap = caps[1] > im->gcap ? caps[1] : im->gcap;
    size_t d = (size_t)t->dim, rec = 8 + 4 * d;
    /* Per-step messages must fit MPI's int counts (see mr_comm_alltoallv_small). */
    if ((double)gcap * (double)rec > 2.0e9)
        return mr_err_set(e, MR_ENOMEM,
                          "%s table: %lld rows per step x %zu bytes exceeds the 2 GB message "
                          "limit; lower train.batch_size",
                          t->name, (long long)gcap, rec);
    map_free(&im->local);
    map_free(&im->merge);
#define RE(p, n)                                                                                   \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = malloc((size_t)(n) + 8);                                                             \
        if (!(p))                                                                                  \
            rc = MR_ENOMEM;                                                                        \
    } while (0)
    RE(t->uid, cap * 8);
    RE(t->rows_buf, cap * d * 4);
    RE(im->req_ids, cap * 8);
    RE(im->req_slot, cap * 8);
    RE(im->in_ids, gcap * 8);
    RE(im->out_rows, gcap * d * 4);
    RE(im->in_rows, cap * d * 4);
    RE(im->send, cap * rec);
    RE(im->recv, gcap * rec);
    RE(im->acc, gcap * d * 4);
    RE(im->acc_row, gcap * 8);
    RE(im->sn, t->P * 8);
    RE(im->rn, t->P * 8);
    RE(im->cnt, t->P * 8);
#undef RE
    if (rc || map_init(&im->local, cap) || map_init(&im->merge, gcap))
        rc = mr_err_set(e, MR_ENOMEM, "out of memory for the %s table's step buffers", t->name);
    t->cap = cap;
    im->gcap = gcap;
    return mr_comm_agree(c, rc, e);
}

int mr_emb_lookup(MrEmbTable *t, MrComm *c, const int64_t *ids, int64_t n, int32_t *slots,
                  MrErr *e)
{
    EmbImpl *im = t->impl;
    int d = t->dim;
    if (n > t->cap)
        return mr_err_set(e, MR_EINTERNAL, "%s lookup of %lld ids exceeds the reserved %lld",
                          t->name, (long long)n, (long long)t->cap);
    map_clear(&im->local);
    int64_t nu = 0;
    for (int64_t k = 0; k < n; k++) {
        int fresh;
        int32_t s = map_get(&im->local, ids[k], (int32_t)nu, &fresh);
        if (fresh)
            t->uid[nu++] = ids[k];
        slots[k] = s;
    }
    t->nu = nu;
    if (t->mode == MR_SHARD_REPLICATED) {
        for (int64_t j = 0; j < nu; j++)
            memcpy(t->rows_buf + j * d, t->w + t->uid[j] * d, (size_t)d * 4);
        return MR_OK;
    }
    /* Row mode: requests grouped by owner (counting sort), rows come back in the
     * same order. */
    int P = t->P;
    memset(im->cnt, 0, (size_t)P * 8);
    for (int64_t j = 0; j < nu; j++)
        im->cnt[t->uid[j] % P]++;
    int64_t acc = 0;
    for (int q = 0; q < P; q++) {
        int64_t x = im->cnt[q];
        im->sn[q] = x * 8;
        im->cnt[q] = acc;
        acc += x;
    }
    for (int64_t j = 0; j < nu; j++) {
        int q = (int)(t->uid[j] % P);
        im->req_ids[im->cnt[q]] = t->uid[j];
        im->req_slot[im->cnt[q]] = j;
        im->cnt[q]++;
    }
    int rc = mr_comm_alltoall_i64(c, im->sn, im->rn, e);
    if (rc)
        return rc;
    int64_t nin = 0;
    for (int q = 0; q < P; q++)
        nin += im->rn[q] / 8;
    if (nin > im->gcap)
        return mr_err_set(e, MR_EINTERNAL, "%s: %lld lookups received, reserved %lld", t->name,
                          (long long)nin, (long long)im->gcap);
    if ((rc = mr_comm_alltoallv_small(c, im->req_ids, im->sn, im->in_ids, im->rn, e)))
        return rc;
    for (int64_t j = 0; j < nin; j++)
        memcpy(im->out_rows + j * d, t->w + (im->in_ids[j] / P) * d, (size_t)d * 4);
    for (int q = 0; q < P; q++) {
        int64_t s = im->sn[q], r = im->rn[q];
        im->sn[q] = r / 8 * d * 4;
        im->rn[q] = s / 8 * d * 4;
    }
    if ((rc = mr_comm_alltoallv_small(c, im->out_rows, im->sn, im->in_rows, im->rn, e)))
        return rc;
    for (int64_t j = 0; j < nu; j++)
        memcpy(t->rows_buf + im->req_slot[j] * d, im->in_rows + j * d, (size_t)d * 4);
    return MR_OK;
}

/* Merge received contributions (in rank order) into accumulators; returns count. */
static int64_t merge_contributions(MrEmbTable *t, const char *buf, int64_t m)
{
    EmbImpl *im = t->impl;
    int d = t->dim;
    size_t rec = 8 + 4 * (size_t)d;
    map_clear(&im->merge);
    int64_t na = 0;
    for (int64_t k = 0; k < m; k++) {
        const char *p = buf + (size_t)k * rec;
        int64_t id;
        memcpy(&id, p, 8);
        int fresh;
        int32_t a = map_get(&im->merge, id, (int32_t)na, &fresh);
        float *dst = im->acc + (int64_t)a * d;
        if (fresh) {
            memcpy(dst, p + 8, (size_t)d * 4);
            im->acc_row[a] = mr_emb_local_index(t, id);
            na++;
        } else {
            float g[512];
            /* memcpy first: the record's floats are not aligned */
            for (int j0 = 0; j0 < d; j0 += 512) {
                int nb = d - j0 < 512 ? d - j0 : 512;
                memcpy(g, p + 8 + 4 * (size_t)j0, (size_t)nb * 4);
                for (int j = 0; j < nb; j++)
                    dst[j0 + j] += g[j];
            }
        }
    }
    return na;
}

int mr_emb_apply(MrEmbTable *t, MrComm *c, const float *grad, const MrOptimizer *opt, MrErr *e)
{
    EmbImpl *im = t->impl;
    int P = t->P, d = t->dim;
    size_t rec = 8 + 4 * (size_t)d;
    int64_t nu = t->nu;
    int rc;
    if (t->mode == MR_SHARD_REPLICATED) {
        for (int64_t j = 0; j < nu; j++) {
            memcpy(im->send + (size_t)j * rec, &t->uid[j], 8);
            memcpy(im->send + (size_t)j * rec + 8, grad + j * d, (size_t)d * 4);
        }
        int64_t mine = nu * (int64_t)rec;
        if ((rc = mr_comm_allgather(c, &mine, 8, im->rn, e)))
            return rc;
        int64_t m = 0;
        for (int q = 0; q < P; q++)
            m += im->rn[q] / (int64_t)rec;
        if (m > im->gcap)
            return mr_err_set(e, MR_EINTERNAL, "%s: %lld contributions, reserved %lld", t->name,
                              (long long)m, (long long)im->gcap);
        if ((rc = mr_comm_allgatherv(c, im->send, (size_t)mine, im->recv, im->rn, e)))
            return rc;
        int64_t na = merge_contributions(t, im->recv, m);
        mr_optim_rows_update(opt, t->w, t->state, t->local_rows, d, im->acc_row, im->acc, na);
        return MR_OK;
    }
    /* Row mode: contributions to owners, grouped by owner (counting sort). */
    memset(im->cnt, 0, (size_t)P * 8);
    for (int64_t j = 0; j < nu; j++)
        im->cnt[t->uid[j] % P]++;
    int64_t acc = 0;
    for (int q = 0; q < P; q++) {
        int64_t x = im->cnt[q];
        im->sn[q] = x * (int64_t)rec;
        im->cnt[q] = acc;
        acc += x;
    }
    for (int64_t j = 0; j < nu; j++) {
        int q = (int)(t->uid[j] % P);
        char *p = im->send + (size_t)im->cnt[q] * rec;
        memcpy(p, &t->uid[j], 8);
        memcpy(p + 8, grad + j * d, (size_t)d * 4);
        im->cnt[q]++;
    }
    if ((rc = mr_comm_alltoall_i64(c, im->sn, im->rn, e)))
        return rc;
    int64_t m = 0;
    for (int q = 0; q < P; q++)
        m += im->rn[q] / (int64_t)rec;
    if (m > im->gcap)
        return mr_err_set(e, MR_EINTERNAL, "%s: %lld contributions, reserved %lld", t->name,
                          (long long)m, (long long)im->gcap);
    if ((rc = mr_comm_alltoallv_small(c, im->send, im->sn, im->recv, im->rn, e)))
        return rc;
    int64_t na = merge_contributions(t, im->recv, m);
    mr_optim_rows_update(opt, t->w, t->state, t->local_rows, d, im->acc_row, im->acc, na);
    return MR_OK;
}

int64_t mr_emb_bytes(const MrEmbTable *t)
{
    const EmbImpl *im = t->impl;
    int64_t d = t->dim;
    int64_t b = t->local_rows * d * 4 * (1 + t->slots);
    b += t->cap * (8 + d * 4) * 4 + (im ? im->gcap * (8 + d * 4) * 3 : 0);
    return b;
}
