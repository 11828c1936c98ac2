/* ckpt_state.c — what a training checkpoint holds, and how it maps onto the
 * generic checkpoint file API (ckpt.h). Schema documented in docs/resume.md.
 *
 *   /meta attrs   kind "train", step, epoch, batch (cursor: next global batch of
 *                 `epoch`), seed, ranks (P at save), sharding, optimizer_step,
 *                 model_hash, config (JSON), vocab hashes (user, item, text),
 *                 metrics (JSON Lines so far), epoch_loss_sum/epoch_batches of
 *                 the epoch in progress, train_seconds, last_loss (loss of the
 *                 last step), final (1 when written after the run's final
 *                 evaluation), dense_layout (docs/resume.md has the table)
 *   /vocab/{user,item}/{bytes,offsets}, /vocab/{user,item}/count
 *   /vocab/text/{bytes,offsets,count}              (with a text feature)
 *   /params/dense           [n_dense]             float32
 *   /params/{user,item,text} [rows x dim]          float32, by global row
 *   /optim/dense            [slots * n_dense]     float32, slot-major
 *   /optim/{user,item,text}/slot<k> [rows x dim]   float32, by global row
 *
 * Every array is stored by global index, so the file does not depend on P or on
 * the sharding mode: row-sharded tables are written with a stride-P hyperslab per
 * rank, replicated tables as one contiguous share per rank (parallel too), and a
 * resumed run reads whichever rows its own layout needs.
 *
 * The RNG needs no state: everything random is a pure function of (seed, epoch,
 * record, tensor, element), so the cursor (epoch, batch) is the whole data/RNG
 * position.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_state.h"
#include "mpirec/ckpt.h"
#include "mpirec/log.h"

static int write_table(MrCkptWriter *w, MrComm *c, const MrEmbTable *t, MrErr *e)
{
    char path[96];
    int rc;
    int64_t first, stride, n;
    const float *base_w;
    size_t skip = 0;
    if (t->mode == MR_SHARD_ROW) {
        first = c->rank;
        stride = c->size;
        n = t->local_rows;
        base_w = t->w;
    } else {
        /* Every rank holds everything: each writes its share, all in parallel. */
        int64_t lo = t->rows * c->rank / c->size, hi = t->rows * (c->rank + 1) / c->size;
        first = lo;
        stride = 1;
        n = hi - lo;
        skip = (size_t)lo * (size_t)t->dim;
        base_w = t->w + skip;
    }
    snprintf(path, sizeof path, "params/%s", t->name);
    if ((rc = mr_ckpt_write_rows(w, path, MR_F32, t->rows, t->dim, first, stride, n, base_w, e)))
        return rc;
    size_t slot_len = (size_t)t->local_rows * (size_t)t->dim;
    for (int k = 0; k < t->slots; k++) {
        snprintf(path, sizeof path, "optim/%s/slot%d", t->name, k);
        if ((rc = mr_ckpt_write_rows(w, path, MR_F32, t->rows, t->dim, first, stride, n,
                                     t->state + (size_t)k * slot_len + skip, e)))
            return rc;
    }
    return MR_OK;
}

static int write_vocab(MrCkptWriter *w, MrComm *c, const char *name, const MrVocab *v, MrErr *e)
{
    char path[64];
    snprintf(path, sizeof path, "vocab/%s", name);
    int64_t n = v->hi - v->lo;
    int rc = mr_ckpt_write_strings(w, path, v->size, v->lo - 1, n, v->bytes, v->off, e);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "vocab/%s/count", name);
    return mr_ckpt_write_rows(w, path, MR_I64, v->size, 0, v->lo - 1, 1, n, v->count, e);
}

/* JSON list of the dense tensors inside params/dense: name (the reference's
 * naming: q0.W, c1.b, r2.W ...), float offset and Keras shape. Lets h5py users
 * and the parity test slice the fused buffer. */
static char *dense_layout_json(const MrModelShape *sh)
{
    size_t cap = 256 + (size_t)(sh->nq + sh->nc + sh->nr) * 160;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t k = (size_t)snprintf(out, cap, "[");
    const MrDense *ls[3] = {sh->q, sh->c, sh->r};
    int ns[3] = {sh->nq, sh->nc, sh->nr};
    const char *pre = "qcr";
    int first = 1;
    for (int t = 0; t < 3; t++)
        for (int l = 0; l < ns[t]; l++) {
            const MrDense *L = &ls[t][l];
            k += (size_t)snprintf(out + k, cap - k,
                                  "%s{\"name\": \"%c%d.W\", \"offset\": %zu, \"shape\": [%d, %d]}, "
                                  "{\"name\": \"%c%d.b\", \"offset\": %zu, \"shape\": [%d]}",
                                  first ? "" : ", ", pre[t], l, L->w_off, L->in, L->out, pre[t], l,
                                  L->b_off, L->out);
            first = 0;
        }
    snprintf(out + k, cap - k, "]");
    return out;
}

int mr_ckpt_state_save(MrComm *c, const char *dir, const MrCkptMeta *meta, const MrState *s,
                       const MrDataset *d, int keep, char *saved, size_t saved_n, MrErr *e)
{
    char base[64];
    snprintf(base, sizeof base, "ckpt-%09" PRId64, meta->step);
    MrCkptWriter *w = NULL;
    int rc = mr_ckpt_writer_open(&w, c, dir, base, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
    if (rc)
        return rc;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)))                                                                            \
            goto fail;                                                                             \
    } while (0)
    static const int64_t zero_off = 0;
    TRY(mr_ckpt_write_attr_str(w, "kind", "train", e));
    TRY(mr_ckpt_write_attr_i64(w, "step", meta->step, e));
    TRY(mr_ckpt_write_attr_i64(w, "epoch", meta->epoch, e));
    TRY(mr_ckpt_write_attr_i64(w, "batch", meta->batch, e));
    TRY(mr_ckpt_write_attr_i64(w, "seed", (int64_t)meta->seed, e));
    TRY(mr_ckpt_write_attr_i64(w, "ranks", c->size, e));
    TRY(mr_ckpt_write_attr_str(w, "sharding",
                               s->user.mode == MR_SHARD_ROW ? "row" : "replicated", e));
    TRY(mr_ckpt_write_attr_i64(w, "optimizer_step", s->opt.step, e));
    TRY(mr_ckpt_write_attr_i64(w, "model_hash", (int64_t)meta->model_hash, e));
    TRY(mr_ckpt_write_attr_i64(w, "user_vocab_hash", (int64_t)meta->user_vocab_hash, e));
    TRY(mr_ckpt_write_attr_i64(w, "item_vocab_hash", (int64_t)meta->item_vocab_hash, e));
    TRY(mr_ckpt_write_attr_i64(w, "text_vocab_hash", (int64_t)meta->text_vocab_hash, e));
    TRY(mr_ckpt_write_attr_f64(w, "epoch_loss_sum", meta->epoch_loss_sum, e));
    TRY(mr_ckpt_write_attr_i64(w, "epoch_batches", meta->epoch_batches, e));
    TRY(mr_ckpt_write_attr_f64(w, "train_seconds", meta->train_seconds, e));
    TRY(mr_ckpt_write_attr_f64(w, "last_loss", meta->last_loss, e));
    TRY(mr_ckpt_write_attr_i64(w, "final", meta->final, e));
    TRY(mr_ckpt_write_attr_str(w, "config", meta->config_json, e));
    {
        char *lay = dense_layout_json(&s->shape);
        rc = lay ? mr_ckpt_write_attr_str(w, "dense_layout", lay, e)
                 : mr_err_set(e, MR_ENOMEM, "out of memory");
        free(lay);
        if (rc)
            goto fail;
    }
    TRY(mr_ckpt_write_attr_str(w, "metrics", meta->metrics_jsonl ? meta->metrics_jsonl : "", e));
    TRY(write_vocab(w, c, "user", &d->users, e));
    TRY(write_vocab(w, c, "item", &d->items, e));
    if (s->has_text) {
        const MrTokenVocab *tv = &d->tokens;
        int64_t n = tv->size - 2;
        /* Small and identical on every rank: rank 0 writes it. */
        /* Other ranks hold an empty range after rank 0's. */
        TRY(mr_ckpt_write_strings(w, "vocab/text", n, c->rank == 0 ? 0 : n, c->rank == 0 ? n : 0,
                                  tv->bytes, c->rank == 0 ? tv->off : &zero_off, e));
        TRY(mr_ckpt_write_root(w, "vocab/text/count", MR_I64, n, 0, tv->count, e));
    }
    TRY(mr_ckpt_write_root(w, "params/dense", MR_F32, (int64_t)s->shape.n_dense, 0,
                           s->model.params, e));
    /* 1-D, slot-major: slots x n_dense values (empty for a model without dense
     * layers, never a dangling [slots x 0] shape). */
    int slots = mr_optim_state_per_param(&s->opt);
    TRY(mr_ckpt_write_root(w, "optim/dense", MR_F32, (int64_t)slots * (int64_t)s->shape.n_dense, 0,
                           s->dense_state, e));
    TRY(write_table(w, c, &s->user, e));
    TRY(write_table(w, c, &s->item, e));
    if (s->has_text)
        TRY(write_table(w, c, &s->text, e));
#undef TRY
    /* The file name is known to every rank; commit renames and rotates. */
    if (saved)
        snprintf(saved, saved_n, "%s/%s.h5", dir, base);
    return mr_ckpt_writer_commit(&w, "latest", keep, e);
fail:
    mr_ckpt_writer_abort(&w);
    return rc;
}

int mr_ckpt_state_read_meta(MrCkptReader *r, MrCkptMeta *m, char **config_json, char **metrics,
                            MrErr *e)
{
    memset(m, 0, sizeof *m);
    int64_t v;
    int rc;
    char *kind = NULL;
    if ((rc = mr_ckpt_read_attr_str(r, "kind", &kind, e)))
        return rc;
    int ok = strcmp(kind, "train") == 0;
    free(kind);
    if (!ok)
        return mr_err_set(e, MR_EFORMAT, "not a training checkpoint (kind is not \"train\")");
    if ((rc = mr_ckpt_read_attr_i64(r, "step", &m->step, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "epoch", &m->epoch, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "batch", &m->batch, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "seed", &v, e)))
        return rc;
    m->seed = (uint64_t)v;
    if ((rc = mr_ckpt_read_attr_i64(r, "ranks", &m->ranks, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "optimizer_step", &m->optimizer_step, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "model_hash", &v, e)))
        return rc;
    m->model_hash = (uint64_t)v;
    if ((rc = mr_ckpt_read_attr_i64(r, "user_vocab_hash", &v, e)))
        return rc;
    m->user_vocab_hash = (uint64_t)v;
    if ((rc = mr_ckpt_read_attr_i64(r, "item_vocab_hash", &v, e)))
        return rc;
    m->item_vocab_hash = (uint64_t)v;
    if ((rc = mr_ckpt_read_attr_f64(r, "epoch_loss_sum", &m->epoch_loss_sum, e)) ||
        (rc = mr_ckpt_read_attr_i64(r, "epoch_batches", &m->epoch_batches, e)) ||
        (rc = mr_ckpt_read_attr_f64(r, "train_seconds", &m->train_seconds, e)))
        return rc;
    /* Optional: absent in files written before they existed, so a failed read
     * means "absent" (every rank gets the same answer: the reads are collective).
     * Damage is not the caller's worry here: a resume verifies the whole file
     * (digest over every byte, every checksum) before reading any of it. */
    MrErr ignore;
    if (mr_ckpt_read_attr_f64(r, "last_loss", &m->last_loss, &ignore))
        m->last_loss = 0;
    if (mr_ckpt_read_attr_i64(r, "final", &m->final, &ignore))
        m->final = 0;
    if (mr_ckpt_read_attr_i64(r, "text_vocab_hash", &v, &ignore))
        v = 0;
    m->text_vocab_hash = (uint64_t)v;
    if (config_json && (rc = mr_ckpt_read_attr_str(r, "config", config_json, e)))
        return rc;
    if (metrics && (rc = mr_ckpt_read_attr_str(r, "metrics", metrics, e)))
        return rc;
    return MR_OK;
}

static int read_table(MrCkptReader *r, MrComm *c, MrEmbTable *t, MrErr *e)
{
    char path[96];
    int64_t rows, cols;
    snprintf(path, sizeof path, "params/%s", t->name);
    int rc = mr_ckpt_dims(r, path, &rows, &cols, e);
    if (rc)
        return rc;
    if (rows != t->rows || cols != t->dim)
        return mr_err_set(e, MR_EFORMAT,
                          "%s is [%lld x %lld] in the checkpoint but the model needs [%lld x %d]",
                          path, (long long)rows, (long long)cols, (long long)t->rows, t->dim);
    int64_t first = t->mode == MR_SHARD_ROW ? c->rank : 0;
    int64_t stride = t->mode == MR_SHARD_ROW ? c->size : 1;
    if ((rc = mr_ckpt_read_rows(r, path, MR_F32, first, stride, t->local_rows, t->w, e)))
        return rc;
    size_t slot_len = (size_t)t->local_rows * (size_t)t->dim;
    for (int k = 0; k < t->slots; k++) {
        snprintf(path, sizeof path, "optim/%s/slot%d", t->name, k);
        if (!mr_ckpt_exists(r, path))
            return mr_err_set(e, MR_EFORMAT,
                              "%s is missing: the checkpoint was written with another optimizer",
                              path);
        if ((rc = mr_ckpt_read_rows(r, path, MR_F32, first, stride, t->local_rows,
                                    t->state + (size_t)k * slot_len, e)))
            return rc;
    }
    return MR_OK;
}

int mr_ckpt_state_load(MrCkptReader *r, MrComm *c, MrState *s, MrErr *e)
{
    int64_t rows, cols;
    int rc = mr_ckpt_dims(r, "params/dense", &rows, &cols, e);
    if (rc)
        return rc;
    if (rows != (int64_t)s->shape.n_dense)
        return mr_err_set(e, MR_EFORMAT,
                          "params/dense has %lld values in the checkpoint, the model has %zu",
                          (long long)rows, s->shape.n_dense);
    if ((rc = mr_ckpt_read_all(r, "params/dense", MR_F32, s->model.params, e)))
        return rc;
    int64_t want = (int64_t)mr_optim_state_per_param(&s->opt) * (int64_t)s->shape.n_dense;
    if ((rc = mr_ckpt_dims(r, "optim/dense", &rows, &cols, e)))
        return rc;
    if (rows != want)
        return mr_err_set(e, MR_EFORMAT,
                          "optim/dense has %lld values, this optimizer needs %lld: the checkpoint "
                          "was written with another optimizer",
                          (long long)rows, (long long)want);
    if (want && (rc = mr_ckpt_read_all(r, "optim/dense", MR_F32, s->dense_state, e)))
        return rc;
    int64_t ostep;
    if ((rc = mr_ckpt_read_attr_i64(r, "optimizer_step", &ostep, e)))
        return rc;
    s->opt.step = ostep;
    if ((rc = read_table(r, c, &s->user, e)) || (rc = read_table(r, c, &s->item, e)))
        return rc;
    if (s->has_text && (rc = read_table(r, c, &s->text, e)))
        return rc;
    return MR_OK;
}
