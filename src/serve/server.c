/* server.c — the query path of `mpirec recommend`: a trained model loaded for
 * serving, one process, no MPI.
 *
 * What is loaded: the index (item ids, candidate embeddings, IVF layout), from
 * the checkpoint the config, the dense parameters, the user vocabulary, the text
 * vocabulary and token table (text models), and optionally the exclude-seen file.
 * The user table is NOT loaded: each batch reads just its users' rows from the
 * checkpoint (which stays open), so start-up cost and memory do not grow with the
 * number of users. The item table is not needed either: the index holds the
 * candidate tower's output for every item, which is also what the rating model
 * consumes. That is only right if the index was built from these very weights,
 * so opening checks it: same model hash, same item vocabulary, and the
 * candidate tower of this checkpoint reproduces the index embeddings of a sample
 * of items (a different checkpoint of the same model fails this).
 *
 * A batch: user ids -> vocabulary ids (binary search; unknown -> OOV row 0,
 * flagged) and text -> token ids (Keras standardisation, text.h) -> one
 * query-tower pass -> one index search for the whole batch with per-query
 * exclusions (the user's training items) -> optionally the rating MLP over
 * every (query, retrieved item) pair in one pass, then a stable sort per query
 * by predicted rating.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/ckpt.h"
#include "mpirec/index.h"
#include "mpirec/log.h"
#include "mpirec/model.h"
#include "mpirec/serve.h"
#include "mpirec/text.h"
#include "mpirec/vocab.h"
#include "serve_internal.h"

#define BATCH         256 /* queries per query-tower pass and index search */
#define WEIGHT_SAMPLE 16  /* items whose embeddings are checked against the index */

struct MrServer {
    MrServerInfo info;
    MrIndex ix;
    MrConfig cfg;
    MrModel model;
    MrModelWork w;
    MrCkptReader *r; /* open for the user rows */
    MrServeCkptMeta meta;
    char *ubytes;  /* user vocabulary (sorted by bytes) */
    int64_t *uoff; /* [U + 1] */
    int64_t U, V;
    MrTokenVocab tv;
    int has_tv;
    float *text_tab; /* [text_rows x T] */
    ServeSeen seen;
    int has_seen;
};

/* ---- reading table rows ---------------------------------------------------------- */

typedef struct RowPos {
    int64_t row, pos;
} RowPos;

static int cmp_rowpos(const void *a, const void *b)
{
    const RowPos *x = a, *y = b;
    return x->row < y->row ? -1 : x->row > y->row ? 1 : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Rows rows[0..n) (any order, repeats allowed) of the float table `path` with D
 * columns into out [n x D]: the distinct rows are sorted and read as runs of
 * consecutive rows with mr_ckpt_read_rows, so no more than the requested rows
 * are read. (mr_ckpt_read_row_list would coalesce nearby rows into spans and
 * read the gaps between them too.) */
static int read_row_set(MrCkptReader *r, const char *path, int D, const int64_t *rows, int64_t n,
                        float *out, MrErr *e)
{
    if (n == 0)
        return MR_OK;
    RowPos *ref = malloc((size_t)n * sizeof *ref);
    float *tmp = malloc((size_t)(n * D) * sizeof *tmp);
    int rc = ref && tmp ? MR_OK : mr_err_set(e, MR_ENOMEM, "out of memory reading %s", path);
    for (int64_t i = 0; !rc && i < n; i++) {
        ref[i].row = rows[i];
        ref[i].pos = i;
    }
    if (!rc)
        qsort(ref, (size_t)n, sizeof *ref, cmp_rowpos);
    for (int64_t i = 0; !rc && i < n;) {
        int64_t a = ref[i].row, b = a + 1, j = i + 1;
        while (j < n && ref[j].row <= b) {
            b = ref[j].row + 1;
            j++;
        }
        rc = mr_ckpt_read_rows(r, path, MR_F32, a, 1, b - a, tmp, e);
        for (int64_t k = i; !rc && k < j; k++)
            memcpy(out + ref[k].pos * D, tmp + (ref[k].row - a) * D, (size_t)D * sizeof *out);
        i = j;
    }
    free(ref);
    free(tmp);
    return rc;
}

/* ---- lifecycle ---------------------------------------------------------------- */

void mr_server_close(MrServer **ps)
{
    if (!ps || !*ps)
        return;
    MrServer *s = *ps;
    *ps = NULL;
    mr_index_free(&s->ix);
    mr_model_free(&s->model);
    mr_model_work_free(&s->w);
    mr_ckpt_close(&s->r);
    free(s->ubytes);
    free(s->uoff);
    if (s->has_tv)
        mr_token_vocab_free(&s->tv);
    free(s->text_tab);
    serve_seen_free(&s->seen);
    free(s);
}

/* Dataset shape check: path must be [rows x cols] (cols 0: 1-D). */
static int want_dims(MrServer *s, const char *path, int64_t rows, int64_t cols, MrErr *e)
{
    int64_t r = 0, c = 0;
    int rc = mr_ckpt_dims(s->r, path, &r, &c, e);
    if (rc)
        return mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    if (r != rows || c != cols)
        return mr_err_set(
            e, MR_EFORMAT, "checkpoint %s: %s is [%lld x %lld], its config needs [%lld x %lld]",
            s->info.ckpt_path, path, (long long)r, (long long)c, (long long)rows, (long long)cols);
    return MR_OK;
}

static int read_vocab(MrServer *s, const char *path, int64_t *n, char **bytes, int64_t **off,
                      MrErr *e)
{
    char p[64];
    int64_t rows = 0, cols = 0;
    snprintf(p, sizeof p, "%s/offsets", path);
    int rc = mr_ckpt_dims(s->r, p, &rows, &cols, e);
    if (!rc && (rows < 1 || cols != 0))
        rc = mr_err_set(e, MR_EFORMAT, "%s is not a string table", path);
    if (!rc)
        rc = mr_ckpt_read_strings(s->r, path, 0, rows - 1, bytes, off, e);
    if (rc)
        return mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    *n = rows - 1;
    return MR_OK;
}

/* The index must hold this checkpoint's item vocabulary, in vocabulary order. */
static int check_items(MrServer *s, MrErr *e)
{
    char *b = NULL;
    int64_t *o = NULL, V = 0;
    int rc = read_vocab(s, "vocab/item", &V, &b, &o, e);
    if (rc)
        return rc;
    s->V = V;
    if (V != s->ix.n) {
        rc = mr_err_set(e, MR_EFORMAT,
                        "index %s has %lld items but checkpoint %s has %lld: they belong to "
                        "different data",
                        s->info.index_path, (long long)s->ix.n, s->info.ckpt_path, (long long)V);
    } else {
        for (int64_t k = 0; k < V; k++) {
            int64_t l = o[k + 1] - o[k], li = s->ix.ids_off[k + 1] - s->ix.ids_off[k];
            if (l != li || memcmp(b + o[k], s->ix.ids + s->ix.ids_off[k], (size_t)l) != 0) {
                rc = mr_err_set(e, MR_EFORMAT,
                                "index %s and checkpoint %s have different item vocabularies "
                                "(item %lld is '%.*s' in the index, '%.*s' in the checkpoint): "
                                "they belong to different data",
                                s->info.index_path, s->info.ckpt_path, (long long)k,
                                (int)(li < 80 ? li : 80), s->ix.ids + s->ix.ids_off[k],
                                (int)(l < 80 ? l : 80), b + o[k]);
                break;
            }
        }
    }
    free(b);
    free(o);
    return rc;
}

/* The candidate tower of this checkpoint must reproduce the index's embeddings. */
static int check_weights(MrServer *s, MrErr *e)
{
    const MrModelShape *sh = &s->model.s;
    int64_t n = s->V < WEIGHT_SAMPLE ? s->V : WEIGHT_SAMPLE, rows[WEIGHT_SAMPLE];
    int d = sh->cout;
    float *x = malloc((size_t)(n * sh->D) * sizeof *x), *c = malloc((size_t)(n * d) * sizeof *c);
    int rc = x && c ? MR_OK : mr_err_set(e, MR_ENOMEM, "out of memory");
    for (int64_t j = 0; j < n; j++)
        rows[j] = 1 + j * s->V / n; /* index item rows[j] - 1 */
    if (!rc && (rc = read_row_set(s->r, "params/item", sh->D, rows, n, x, e)))
        mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    if (!rc)
        rc = mr_model_candidate_forward(&s->model, x, n, c, &s->w, e);
    for (int64_t j = 0; !rc && j < n; j++) {
        const float *a = c + j * d, *b = s->ix.emb + (rows[j] - 1) * d;
        double diff = 0, norm = 0;
        for (int t = 0; t < d; t++) {
            diff = fmax(diff, fabs((double)a[t] - b[t]));
            norm = fmax(norm, fabs((double)b[t]));
        }
        /* The same kernels on the same rows: equal up to the blocking of sgemm. */
        if (!(diff <= 1e-4 * (1.0 + norm))) {
            int64_t k = rows[j] - 1, l = s->ix.ids_off[k + 1] - s->ix.ids_off[k];
            rc = mr_err_set(e, MR_EFORMAT,
                            "index %s was built from other weights than checkpoint %s (step "
                            "%lld): same model config, but the candidate embedding of item "
                            "'%.*s' differs by %.3g; the index records %s (step %lld) as its "
                            "source. Rebuild it: mpirec index --checkpoint %s --out FILE",
                            s->info.index_path, s->info.ckpt_path, (long long)s->meta.step,
                            (int)(l < 80 ? l : 80), s->ix.ids + s->ix.ids_off[k], diff,
                            s->ix.source[0] ? s->ix.source : "(unknown)",
                            (long long)s->ix.source_step, s->info.ckpt_path);
        }
    }
    free(x);
    free(c);
    return rc;
}

static int load_text(MrServer *s, MrErr *e)
{
    const MrModelShape *sh = &s->model.s;
    char *b = NULL;
    int64_t *o = NULL, n = 0;
    int64_t *cnt = NULL;
    int rc = read_vocab(s, "vocab/text", &n, &b, &o, e);
    if (!rc && (rc = want_dims(s, "vocab/text/count", n, 0, e)) == MR_OK) {
        cnt = malloc((size_t)(n + 1) * sizeof *cnt);
        rc = cnt ? mr_ckpt_read_all(s->r, "vocab/text/count", MR_I64, cnt, e)
                 : mr_err_set(e, MR_ENOMEM, "out of memory");
        if (rc)
            mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    }
    if (!rc && n + 2 > sh->text_rows)
        rc = mr_err_set(e, MR_EFORMAT, "checkpoint %s: %lld text tokens for a table of %lld rows",
                        s->info.ckpt_path, (long long)n, (long long)sh->text_rows);
    if (!rc) {
        rc = mr_token_vocab_from_list(&s->tv, n, b, o, cnt, e);
        if (rc)
            mr_err_prefix(e, "checkpoint %s: text vocabulary", s->info.ckpt_path);
        else
            s->has_tv = 1;
    }
    free(b);
    free(o);
    free(cnt);
    if (rc || (rc = want_dims(s, "params/text", sh->text_rows, sh->T, e)))
        return rc;
    s->text_tab = malloc((size_t)(sh->text_rows * sh->T) * sizeof *s->text_tab);
    if (!s->text_tab)
        return mr_err_set(e, MR_ENOMEM, "out of memory for the text table");
    if ((rc = mr_ckpt_read_all(s->r, "params/text", MR_F32, s->text_tab, e)))
        return mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    return MR_OK;
}

static int open_impl(MrServer *s, const char *index_path, const char *ckpt_arg, unsigned flags,
                     MrErr *e)
{
    snprintf(s->info.index_path, sizeof s->info.index_path, "%s", index_path);
    int rc = mr_index_load(&s->ix, index_path, e);
    if (rc)
        return rc;
    if (!ckpt_arg || !*ckpt_arg) {
        if (!s->ix.source[0])
            return mr_err_set(e, MR_EUSAGE,
                              "index %s does not record the checkpoint it was built from: pass "
                              "--checkpoint",
                              index_path);
        ckpt_arg = s->ix.source;
    }
    if ((rc = mr_serve_resolve_checkpoint(ckpt_arg, s->info.ckpt_path, sizeof s->info.ckpt_path,
                                          e))) {
        if (ckpt_arg == s->ix.source)
            mr_err_prefix(e, "index %s was built from %s (pass --checkpoint if it moved)",
                          index_path, ckpt_arg);
        return rc;
    }
    const char *cp = s->info.ckpt_path;
    if ((rc = mr_ckpt_open(&s->r, NULL, cp, MR_CKPT_MAGIC, MR_CKPT_VERSION, e)))
        return rc;
    char *config = NULL;
    if ((rc = serve_read_ckpt_meta(s->r, cp, &s->meta, &config, e)))
        return rc;
    mr_config_defaults(&s->cfg);
    rc = mr_config_apply_json(&s->cfg, config, strlen(config), cp, e);
    free(config);
    if (rc)
        return mr_err_prefix(e, "the config stored in checkpoint %s", cp);
    s->info.step = s->meta.step;
    if (s->ix.model_hash != s->meta.model_hash)
        return mr_err_set(e, MR_EFORMAT,
                          "index %s belongs to another model than checkpoint %s (model hash "
                          "%016llx vs %016llx: the model config differs; the index was built "
                          "from %s)",
                          index_path, cp, (unsigned long long)s->ix.model_hash,
                          (unsigned long long)s->meta.model_hash,
                          s->ix.source[0] ? s->ix.source : "an unknown checkpoint");
    if ((rc = check_items(s, e)) ||
        (rc = read_vocab(s, "vocab/user", &s->U, &s->ubytes, &s->uoff, e)))
        return rc;
    MrModelShape sh;
    if ((rc = mr_model_shape(&sh, &s->cfg, s->U + 1, s->V + 1, e)))
        return mr_err_prefix(e, "the config stored in checkpoint %s", cp);
    if ((rc = want_dims(s, "params/dense", (int64_t)sh.n_dense, 0, e)) ||
        (rc = want_dims(s, "params/user", s->U + 1, sh.D, e)) ||
        (rc = want_dims(s, "params/item", s->V + 1, sh.D, e)))
        return rc;
    if (s->ix.d != sh.cout || sh.qout != sh.cout)
        return mr_err_set(e, MR_EFORMAT,
                          "index %s holds %d-dimensional embeddings, the towers of checkpoint %s "
                          "give %d (query) and %d (candidate)",
                          index_path, s->ix.d, cp, sh.qout, sh.cout);
    if ((rc = mr_model_init(&s->model, &sh, s->cfg.train.seed, e)))
        return rc;
    if (sh.n_dense && (rc = mr_ckpt_read_all(s->r, "params/dense", MR_F32, s->model.params, e)))
        return mr_err_prefix(e, "checkpoint %s", cp);
    if ((rc = mr_model_work_init(&s->w, &sh, BATCH, 1, BATCH, WEIGHT_SAMPLE,
                                 sh.text ? sh.text_rows : 0, e)))
        return rc;
    if (sh.text && (rc = load_text(s, e)))
        return rc;
    if ((rc = check_weights(s, e)))
        return rc;
    if ((flags & MR_SERVE_LOAD_RATING) && sh.nr == 0)
        return mr_err_set(e, MR_EUSAGE,
                          "re-ranking needs a rating model, but checkpoint %s is a %s model "
                          "(model.task ranking or multitask has one)",
                          cp, mr_task_name(s->cfg.model.task));
    if (flags & MR_SERVE_LOAD_SEEN) {
        if ((rc = mr_serve_seen_path(index_path, s->info.seen_path, sizeof s->info.seen_path, e)) ||
            (rc = serve_seen_load(&s->seen, s->info.seen_path, &s->meta, s->U, s->V, e)))
            return rc;
        s->has_seen = 1;
        s->info.seen_pairs = s->seen.pairs;
        s->info.seen_bytes = s->seen.file_bytes;
    }
    s->info.items = s->V;
    s->info.users = s->U;
    s->info.dim = s->ix.d;
    s->info.has_text = sh.text;
    s->info.has_rating = sh.nr > 0;
    if (s->ix.source_step != s->meta.step)
        mr_log(MR_LOG_DEBUG,
               "index %s records step %lld, checkpoint %s is step %lld (weights "
               "checked equal)",
               index_path, (long long)s->ix.source_step, cp, (long long)s->meta.step);
    return MR_OK;
}

int mr_server_open(MrServer **ps, const char *index_path, const char *ckpt_arg, unsigned flags,
                   MrErr *e)
{
    *ps = NULL;
    MrServer *s = calloc(1, sizeof *s);
    if (!s)
        return mr_err_set(e, MR_ENOMEM, "out of memory");
    int rc = open_impl(s, index_path, ckpt_arg, flags, e);
    if (rc)
        mr_server_close(&s);
    *ps = s;
    return rc;
}

/* ---- queries ------------------------------------------------------------------- */

const MrServerInfo *mr_server_info(const MrServer *s)
{
    return &s->info;
}

const char *mr_server_item_id(const MrServer *s, int64_t k, size_t *len)
{
    if (k < 0 || k >= s->ix.n) {
        *len = 0;
        return "";
    }
    *len = (size_t)(s->ix.ids_off[k + 1] - s->ix.ids_off[k]);
    return s->ix.ids + s->ix.ids_off[k];
}

/* Vocabulary id of a user string (np.unique byte order), or 0. */
static int64_t find_user(const MrServer *s, const char *id, size_t len)
{
    int64_t a = 0, b = s->U;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        size_t ml = (size_t)(s->uoff[m + 1] - s->uoff[m]);
        int c = memcmp(s->ubytes + s->uoff[m], id, ml < len ? ml : len);
        if (c == 0)
            c = ml < len ? -1 : ml > len;
        if (c == 0)
            return m + 1;
        if (c < 0)
            a = m + 1;
        else
            b = m;
    }
    return 0;
}

typedef struct TokAcc {
    const MrTokenVocab *tv;
    int32_t *out;
    int64_t n;
} TokAcc;

static int tok_cb(const char *tok, size_t len, void *ud)
{
    TokAcc *a = ud;
    a->out[a->n++] = (int32_t)mr_token_vocab_find(a->tv, tok, len);
    return 0;
}

typedef struct RankRef {
    float rating;
    int pos;
} RankRef;

static int cmp_rank(const void *x, const void *y)
{
    const RankRef *a = x, *b = y;
    if (a->rating != b->rating)
        return a->rating > b->rating ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

typedef struct Scratch {
    int64_t *uid;
    int32_t *uslot;
    float *urows, *Q;
    int64_t *tok_off;
    int32_t *tok;
    size_t tok_cap;
    char *tscratch;
    size_t ts_cap;
    int64_t *excl_off, *excl;
    size_t excl_cap;
    int64_t *ritems, *short_q;
    float *rscores, *Qr, *Cr, *pred;
    RankRef *ref;
} Scratch;

static void scratch_free(Scratch *x)
{
    free(x->uid);
    free(x->uslot);
    free(x->urows);
    free(x->Q);
    free(x->tok_off);
    free(x->tok);
    free(x->tscratch);
    free(x->excl_off);
    free(x->excl);
    free(x->ritems);
    free(x->short_q);
    free(x->rscores);
    free(x->Qr);
    free(x->Cr);
    free(x->pred);
    free(x->ref);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* An ivf search returns only what the probed lists hold: after exclusions that
 * can be fewer than N items although the index has enough. Those queries (few,
 * typically) are answered again by exact search, so a short list always means
 * that no more items exist. */
static int ivf_shortfall(MrServer *s, Scratch *x, int64_t nb, int N, const MrExclusions *ex,
                         MrErr *e)
{
    int d = s->ix.d, rc = MR_OK;
    int64_t m = 0, ne = 0;
    for (int64_t j = 0; j < nb; j++) {
        int64_t nex = ex ? ex->excl_off[j + 1] - ex->excl_off[j] : 0;
        int64_t want = s->ix.n - nex < N ? s->ix.n - nex : N;
        if (x->ritems[j * N + (want > 0 ? want - 1 : 0)] < 0 && want > 0) {
            x->short_q[m++] = j;
            ne += nex;
        }
    }
    if (m == 0)
        return MR_OK;
    float *Q = malloc((size_t)(m * d) * sizeof *Q);
    int64_t *off = malloc((size_t)(m + 1) * sizeof *off), *exl = malloc((size_t)(ne + 1) * 8);
    int64_t *it = malloc((size_t)(m * N) * sizeof *it);
    float *sc = malloc((size_t)(m * N) * sizeof *sc);
    if (!Q || !off || !exl || !it || !sc)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    for (int64_t i = 0, t = 0; !rc && i < m; i++) {
        int64_t j = x->short_q[i];
        memcpy(Q + i * d, x->Q + j * d, (size_t)d * sizeof *Q);
        off[i] = t;
        if (ex)
            for (int64_t a = ex->excl_off[j]; a < ex->excl_off[j + 1]; a++)
                exl[t++] = ex->excl[a];
        off[i + 1] = t;
    }
    MrExclusions sub = {off, exl};
    if (!rc)
        rc = mr_index_search_exact(&s->ix, Q, m, N, ex ? &sub : NULL, it, sc, e);
    for (int64_t i = 0; !rc && i < m; i++) {
        int64_t j = x->short_q[i];
        memcpy(x->ritems + j * N, it + i * N, (size_t)N * sizeof *it);
        memcpy(x->rscores + j * N, sc + i * N, (size_t)N * sizeof *sc);
    }
    free(Q);
    free(off);
    free(exl);
    free(it);
    free(sc);
    return rc;
}

/* Queries [0, nb) of the batch starting at req. */
static int run_batch(MrServer *s, Scratch *x, const MrServeRequest *req, int64_t nb,
                     const MrServeParams *p, int N, int k, int64_t *items, float *scores,
                     float *ratings, int *count, unsigned *flags, MrErr *e)
{
    const MrModelShape *sh = &s->model.s;
    int d = s->ix.d, rc;
    /* users and tokens */
    int64_t nt = 0;
    for (int64_t j = 0; j < nb; j++) {
        flags[j] = 0;
        x->uid[j] = find_user(s, req[j].user, req[j].user_len);
        x->uslot[j] = (int32_t)j;
        if (x->uid[j] == 0)
            flags[j] |= MR_SERVE_UNKNOWN_USER;
        x->tok_off[j] = nt;
        if (!req[j].text)
            continue;
        if (!sh->text) {
            flags[j] |= MR_SERVE_TEXT_IGNORED;
            continue;
        }
        /* at most one token per two bytes, plus one */
        size_t tl = req[j].text_len;
        if (grow((void **)&x->tok, &x->tok_cap, (size_t)nt + tl / 2 + 2, sizeof *x->tok) ||
            grow((void **)&x->tscratch, &x->ts_cap, tl + 1, 1))
            return mr_err_set(e, MR_ENOMEM, "out of memory for request text");
        TokAcc a = {&s->tv, x->tok + nt, 0};
        mr_text_tokenize(req[j].text, tl, x->tscratch, tok_cb, &a);
        nt += a.n;
    }
    x->tok_off[nb] = nt;
    if ((rc = read_row_set(s->r, "params/user", sh->D, x->uid, nb, x->urows, e)))
        return mr_err_prefix(e, "checkpoint %s", s->info.ckpt_path);
    MrBatchView bv;
    memset(&bv, 0, sizeof bv);
    bv.B = nb;
    bv.uslot = x->uslot;
    bv.U = x->urows;
    bv.nu = nb;
    if (sh->text) {
        bv.tok_off = x->tok_off;
        bv.tslot = x->tok;
        bv.Tk = s->text_tab;
        bv.nt = sh->text_rows;
    }
    if ((rc = mr_model_query_forward(&s->model, &bv, x->Q, &s->w, e)))
        return rc;
    /* exclusions */
    MrExclusions ex = {NULL, NULL}, *exp = NULL;
    if (p->exclude_seen) {
        int64_t m = 0;
        for (int64_t j = 0; j < nb; j++) {
            int64_t u = x->uid[j];
            x->excl_off[j] = m;
            int64_t a = s->seen.off[u], b = s->seen.off[u + 1];
            if (grow((void **)&x->excl, &x->excl_cap, (size_t)(m + b - a + 1), sizeof *x->excl))
                return mr_err_set(e, MR_ENOMEM, "out of memory for exclusions");
            memcpy(x->excl + m, s->seen.item + a, (size_t)(b - a) * sizeof *x->excl);
            m += b - a;
        }
        x->excl_off[nb] = m;
        ex.excl_off = x->excl_off;
        ex.excl = x->excl;
        exp = &ex;
    }
    if ((rc = mr_index_search(&s->ix, x->Q, nb, N, p->nprobe, exp, x->ritems, x->rscores, e)))
        return rc;
    if (s->ix.p.kind == MR_INDEX_IVF && (rc = ivf_shortfall(s, x, nb, N, exp, e)))
        return rc;
    /* rerank: the rating MLP over every (query, retrieved item) pair in one pass */
    int64_t np = 0;
    if (p->rerank) {
        for (int64_t j = 0; j < nb; j++)
            for (int a = 0; a < N && x->ritems[j * N + a] >= 0; a++) {
                memcpy(x->Qr + np * d, x->Q + j * d, (size_t)d * sizeof(float));
                memcpy(x->Cr + np * d, s->ix.emb + x->ritems[j * N + a] * d,
                       (size_t)d * sizeof(float));
                np++;
            }
        if (np && (rc = mr_model_rating_forward(&s->model, x->Qr, x->Cr, np, x->pred, &s->w, e)))
            return rc;
    }
    np = 0;
    for (int64_t j = 0; j < nb; j++) {
        int m = 0;
        while (m < N && x->ritems[j * N + m] >= 0)
            m++;
        int out = m < k ? m : k;
        if (p->rerank) {
            for (int a = 0; a < m; a++) {
                x->ref[a].rating = x->pred[np + a];
                x->ref[a].pos = a;
            }
            qsort(x->ref, (size_t)m, sizeof *x->ref, cmp_rank);
            np += m;
        }
        for (int a = 0; a < k; a++) {
            int src = a < out ? (p->rerank ? x->ref[a].pos : a) : -1;
            items[j * k + a] = src >= 0 ? x->ritems[j * N + src] : -1;
            scores[j * k + a] = src >= 0 ? x->rscores[j * N + src] : 0.0f;
            if (ratings)
                ratings[j * k + a] = src >= 0 && p->rerank ? x->ref[a].rating : 0.0f;
        }
        count[j] = out;
        if (out < k)
            flags[j] |= MR_SERVE_K_CLAMPED;
    }
    return MR_OK;
}

int mr_server_recommend(MrServer *s, const MrServeRequest *req, int64_t nq, const MrServeParams *p,
                        int64_t *items, float *scores, float *ratings, int *count, unsigned *flags,
                        MrErr *e)
{
    if (p->k < 1)
        return mr_err_set(e, MR_EUSAGE, "k must be at least 1 (got %d)", p->k);
    if (p->rerank && p->rerank < p->k)
        return mr_err_set(e, MR_EUSAGE,
                          "--rerank N retrieves N items to re-rank: N (%d) must "
                          "be at least k (%d)",
                          p->rerank, p->k);
    if (p->rerank && s->model.s.nr == 0)
        return mr_err_set(e, MR_EUSAGE, "re-ranking needs a rating model; checkpoint %s has none",
                          s->info.ckpt_path);
    if (p->rerank && !ratings)
        return mr_err_set(e, MR_EINTERNAL, "recommend: rerank without a ratings buffer");
    if (p->exclude_seen && !s->has_seen)
        return mr_err_set(e, MR_EUSAGE,
                          "exclude-seen: the server was opened without the seen "
                          "file");
    if (p->nprobe < 0)
        return mr_err_set(e, MR_EUSAGE, "nprobe must be >= 0");
    /* Retrieve N: k (at most every item), or the rerank depth. */
    int64_t n_items = s->ix.n;
    int N =
        (int)((p->rerank ? p->rerank : p->k) < n_items ? (p->rerank ? p->rerank : p->k) : n_items);
    int64_t cap = nq < BATCH ? nq : BATCH, d = s->ix.d;
    Scratch x;
    memset(&x, 0, sizeof x);
    x.uid = malloc((size_t)(cap + 1) * sizeof *x.uid);
    x.uslot = malloc((size_t)(cap + 1) * sizeof *x.uslot);
    x.urows = malloc((size_t)((cap + 1) * s->model.s.D) * sizeof *x.urows);
    x.Q = malloc((size_t)((cap + 1) * d) * sizeof *x.Q);
    x.tok_off = malloc((size_t)(cap + 2) * sizeof *x.tok_off);
    x.excl_off = malloc((size_t)(cap + 2) * sizeof *x.excl_off);
    x.ritems = malloc((size_t)((cap + 1) * N) * sizeof *x.ritems);
    x.rscores = malloc((size_t)((cap + 1) * N) * sizeof *x.rscores);
    x.short_q = malloc((size_t)(cap + 1) * sizeof *x.short_q);
    int rc = MR_OK;
    if (!x.uid || !x.uslot || !x.urows || !x.Q || !x.tok_off || !x.excl_off || !x.ritems ||
        !x.rscores || !x.short_q)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory for a batch of %lld queries", (long long)cap);
    if (!rc && p->rerank) {
        x.Qr = malloc((size_t)((cap * N + 1) * d) * sizeof *x.Qr);
        x.Cr = malloc((size_t)((cap * N + 1) * d) * sizeof *x.Cr);
        x.pred = malloc((size_t)(cap * N + 1) * sizeof *x.pred);
        x.ref = malloc((size_t)(N + 1) * sizeof *x.ref);
        if (!x.Qr || !x.Cr || !x.pred || !x.ref)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory re-ranking %d items for %lld queries", N,
                            (long long)cap);
    }
    for (int64_t b0 = 0; !rc && b0 < nq; b0 += cap) {
        int64_t nb = nq - b0 < cap ? nq - b0 : cap;
        rc = run_batch(s, &x, req + b0, nb, p, N, p->k, items + b0 * p->k, scores + b0 * p->k,
                       ratings ? ratings + b0 * p->k : NULL, count + b0, flags + b0, e);
    }
    scratch_free(&x);
    return rc;
}
