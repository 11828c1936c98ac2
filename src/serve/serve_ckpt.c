/* serve_ckpt.c — a trained model back from its checkpoint: naming the file,
 * recovering the config it was trained with, and the collective uses behind
 * `mpirec eval` and `mpirec index`.
 *
 * Eval and index rebuild exactly the state training had: the same config (the
 * checkpoint's own, with run-level overrides only), the same data re-ingested
 * (the vocabularies must hash to the checkpoint's), a fresh MrState of any P and
 * sharding filled by global row through the training checkpoint schema
 * (train/ckpt_state.h, so the schema keeps one owner), then the training code's
 * own mr_evaluate / mr_export_index. That is what makes `mpirec eval` of the
 * final checkpoint print the numbers of the run's last metrics.jsonl line and
 * `mpirec index` write the file training writes.
 *
 * Not here: the serial query path (server.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpirec/ckpt.h"
#include "mpirec/log.h"
#include "mpirec/serve.h"
#include "serve_internal.h"
#include "train/ckpt_state.h"

/* ---- naming ------------------------------------------------------------------ */

/* 1: starts like an mpirec file (user-block header) or a plain HDF5 file. */
static int looks_like_h5(const char *path)
{
    unsigned char b[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    return (n >= 11 && memcmp(b, "MPIREC-FILE", 11) == 0) || (n >= 8 && memcmp(b, sig, 8) == 0);
}

/* Read a `latest` pointer: the file name it holds, relative to its directory. */
static int read_pointer(const char *ptr, char *out, size_t n, MrErr *e)
{
    FILE *f = fopen(ptr, "rb");
    if (!f)
        return mr_err_set(e, MR_EIO, "cannot open %s: %s", ptr, strerror(errno));
    char name[MR_PATH_MAX];
    size_t got = fread(name, 1, sizeof name - 1, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    name[got] = '\0';
    while (got && (name[got - 1] == '\n' || name[got - 1] == '\r' || name[got - 1] == ' '))
        name[--got] = '\0';
    int ok = got > 0 && !more && strlen(name) == got;
    for (size_t i = 0; ok && i < got; i++)
        ok = (unsigned char)name[i] >= 0x20;
    if (!ok)
        return mr_err_set(e, MR_EFORMAT,
                          "%s is neither a checkpoint nor a `latest` pointer (a one-line file "
                          "naming a checkpoint)",
                          ptr);
    if (name[0] == '/') {
        if (snprintf(out, n, "%s", name) >= (int)n)
            return mr_err_set(e, MR_EIO, "path too long: %s", name);
        return MR_OK;
    }
    char dir[MR_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", ptr);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';
    if (snprintf(out, n, "%s%s", dir, name) >= (int)n)
        return mr_err_set(e, MR_EIO, "path too long: %s%s", dir, name);
    return MR_OK;
}

int mr_serve_resolve_checkpoint(const char *arg, char *out, size_t n, MrErr *e)
{
    struct stat st;
    if (!arg || !*arg)
        return mr_err_set(e, MR_EUSAGE, "no checkpoint given");
    if (stat(arg, &st) != 0)
        return mr_err_set(e, MR_EIO, "checkpoint %s: cannot open: %s", arg, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        char dir[MR_PATH_MAX + 16], p[MR_PATH_MAX + 32];
        if (strlen(arg) >= MR_PATH_MAX)
            return mr_err_set(e, MR_EIO, "path too long: %s", arg);
        snprintf(dir, sizeof dir, "%s", arg);
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/')
            dir[--dl] = '\0';
        snprintf(p, sizeof p, "%s/checkpoints", dir);
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            memcpy(dir, p, strlen(p) + 1); /* a run directory */
        snprintf(p, sizeof p, "%s/latest", dir);
        if (stat(p, &st) == 0)
            return mr_serve_resolve_checkpoint(p, out, n, e);
        char skipped[2048] = "";
        int rc = mr_ckpt_find_latest(dir, out, n, skipped, sizeof skipped, e);
        if (rc)
            return rc;
        if (!out[0])
            return mr_err_set(e, MR_EIO,
                              "%s holds no usable checkpoint (no `latest`, no valid "
                              "ckpt-<step>.h5)%s%s",
                              dir, skipped[0] ? "; skipped: " : "", skipped);
        return MR_OK;
    }
    if (looks_like_h5(arg) || st.st_size > 4096) {
        if (snprintf(out, n, "%s", arg) >= (int)n)
            return mr_err_set(e, MR_EIO, "path too long: %s", arg);
        return MR_OK;
    }
    char target[MR_PATH_MAX];
    int rc = read_pointer(arg, target, sizeof target, e);
    if (rc)
        return rc;
    if (stat(target, &st) != 0)
        return mr_err_set(e, MR_EIO,
                          "checkpoint %s: not an HDF5 file; read as a `latest` pointer it names "
                          "%s, which cannot be opened: %s",
                          arg, target, strerror(errno));
    if (snprintf(out, n, "%s", target) >= (int)n)
        return mr_err_set(e, MR_EIO, "path too long: %s", target);
    return MR_OK;
}

/* Checklist, the seen-file name (2 of 2, with seen_location in train/export.c). */
int mr_serve_seen_path(const char *index_path, char *out, size_t n, MrErr *e)
{
    size_t l = strlen(index_path);
    if (l > 3 && strcmp(index_path + l - 3, ".h5") == 0)
        l -= 3;
    if (l + 9 > n)
        return mr_err_set(e, MR_EUSAGE, "index path too long: %s", index_path);
    memcpy(out, index_path, l);
    memcpy(out + l, ".seen.h5", 9);
    return MR_OK;
}

/* ---- config of a checkpoint --------------------------------------------------- */

int serve_read_ckpt_meta(MrCkptReader *r, const char *path, MrServeCkptMeta *m, char **config,
                         MrErr *e)
{
    MrCkptMeta cm;
    int rc = mr_ckpt_state_read_meta(r, &cm, config, NULL, e);
    if (rc)
        return mr_err_prefix(e, "checkpoint %s", path);
    m->step = cm.step;
    m->epoch = cm.epoch;
    m->batch = cm.batch;
    m->ranks = cm.ranks;
    m->model_hash = cm.model_hash;
    m->user_vocab_hash = cm.user_vocab_hash;
    m->item_vocab_hash = cm.item_vocab_hash;
    return MR_OK;
}

/* Broadcast a malloc'd string from rank 0 (others get a malloc'd copy). */
static int bcast_text(MrComm *c, char **text, int rc, MrErr *e)
{
    int64_t len = (!rc && c->rank == 0 && *text) ? (int64_t)strlen(*text) : 0;
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_bcast(c, &len, sizeof len, 0, e)))
        return rc;
    if (c->rank != 0) {
        *text = malloc((size_t)len + 1);
        rc = *text ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    }
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_bcast(c, *text, (size_t)len, 0, e)))
        return rc;
    (*text)[len] = '\0';
    return MR_OK;
}

int mr_serve_run_config(MrComm *c, const char *ckpt_arg, const char *config_path,
                        const char *const *sets, int nsets, MrConfig *cfg, MrServeCkptInfo *info,
                        MrErr *e)
{
    memset(info, 0, sizeof *info);
    char *saved_text = NULL, *file_text = NULL;
    MrServeCkptMeta m;
    memset(&m, 0, sizeof m);
    int rc = MR_OK;
    if (c->rank == 0) {
        rc = mr_serve_resolve_checkpoint(ckpt_arg, info->path, sizeof info->path, e);
        MrCkptReader *r = NULL;
        if (!rc)
            rc = mr_ckpt_open(&r, NULL, info->path, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
        if (!rc)
            rc = serve_read_ckpt_meta(r, info->path, &m, &saved_text, e);
        mr_ckpt_close(&r);
    }
    if ((rc = bcast_text(c, &saved_text, rc, e)))
        goto out;
    if ((rc = mr_comm_bcast(c, info->path, sizeof info->path, 0, e)) ||
        (rc = mr_comm_bcast(c, &m, sizeof m, 0, e)))
        goto out;
    info->step = m.step;
    info->epoch = m.epoch;
    info->batch = m.batch;
    info->ranks = m.ranks;
    info->model_hash = m.model_hash;
    MrConfig saved;
    mr_config_defaults(&saved);
    if ((rc = mr_config_apply_json(&saved, saved_text, strlen(saved_text), info->path, e))) {
        mr_err_prefix(e, "the config stored in checkpoint %s", info->path);
        goto out;
    }
    *cfg = saved;
    if (config_path) {
        if (c->rank == 0) {
            size_t len = 0;
            rc = mr_config_read_file(config_path, &file_text, &len, e);
        }
        if ((rc = bcast_text(c, &file_text, rc, e)))
            goto out;
        if ((rc = mr_config_apply_json(cfg, file_text, strlen(file_text), config_path, e)))
            goto out;
    }
    for (int i = 0; i < nsets; i++)
        if ((rc = mr_config_set(cfg, sets[i], e)))
            goto out;
    char key[128];
    if (!mr_config_resume_compatible(&saved, cfg, key, sizeof key)) {
        rc = mr_err_set(e, MR_ECONFIG,
                        "%s would differ from the config of checkpoint %s: it defines the model, "
                        "which the checkpoint fixes (only run keys such as data.path, eval.*, "
                        "index.* may be overridden)",
                        key, info->path);
        goto out;
    }
    if ((rc = mr_config_validate(cfg, e)))
        goto out;
    if (mr_config_model_hash(cfg) != m.model_hash)
        rc = mr_err_set(e, MR_EFORMAT,
                        "checkpoint %s: its config does not give the model hash stored with it "
                        "(written by another mpirec version, or damaged)",
                        info->path);
out:
    free(saved_text);
    free(file_text);
    return rc;
}

/* ---- the state of a checkpoint (Collective) ------------------------------------ */

static int load_state(MrComm *c, const MrConfig *cfg, const MrDataset *d,
                      const MrServeCkptInfo *info, MrState *s, MrErr *e)
{
    int rc = mr_state_init(s, c, cfg, d->users.size, d->items.size, e);
    if (rc)
        return rc;
    uint64_t uh = 0, ih = 0;
    if ((rc = mr_vocab_hash(&d->users, c, &uh, e)) || (rc = mr_vocab_hash(&d->items, c, &ih, e)))
        return rc;
    MrCkptReader *r = NULL;
    if ((rc = mr_ckpt_open(&r, c, info->path, MR_CKPT_MAGIC, MR_CKPT_VERSION, e)))
        return rc;
    MrCkptMeta m;
    rc = mr_ckpt_state_read_meta(r, &m, NULL, NULL, e);
    if (rc)
        mr_err_prefix(e, "checkpoint %s", info->path);
    else if (m.user_vocab_hash != uh || m.item_vocab_hash != ih)
        rc = mr_err_set(e, MR_ECONFIG,
                        "the data (%s) gives a different %s vocabulary than checkpoint %s was "
                        "trained with (%lld users, %lld items now): pass the training data with "
                        "--set data.path=FILE",
                        cfg->data.path, m.user_vocab_hash != uh ? "user" : "item", info->path,
                        (long long)d->users.size, (long long)d->items.size);
    rc = mr_comm_agree(c, rc, e);
    if (!rc) {
        rc = mr_ckpt_state_load(r, c, s, e);
        if (rc)
            mr_err_prefix(e, "checkpoint %s", info->path);
        rc = mr_comm_agree(c, rc, e);
    }
    mr_ckpt_close(&r);
    return rc;
}

/* Item training frequencies, as the trainer computes them for the logQ option. */
static int item_counts(MrComm *c, const MrConfig *cfg, const MrDataset *d, int64_t **out, MrErr *e)
{
    *out = NULL;
    if (!cfg->loss.logq)
        return MR_OK;
    int64_t rows = d->items.size + 1;
    int64_t *cnt = calloc((size_t)rows, sizeof *cnt);
    int rc = cnt ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e))) {
        free(cnt);
        return rc;
    }
    for (int64_t i = 0; i < d->n; i++)
        if (!d->is_test[i])
            cnt[d->item[i]]++;
    if ((rc = mr_comm_allreduce_i64(c, cnt, (size_t)rows, MR_SUM, e))) {
        free(cnt);
        return rc;
    }
    *out = cnt;
    return MR_OK;
}

int mr_serve_evaluate(MrComm *c, const MrConfig *cfg, const MrDataset *d,
                      const MrServeCkptInfo *info, MrMetrics *test, MrMetrics *train, MrErr *e)
{
    MrState s;
    memset(&s, 0, sizeof s);
    MrStepCtx *x = NULL;
    int64_t *cnt = NULL;
    int rc = load_state(c, cfg, d, info, &s, e);
    if (!rc)
        rc = item_counts(c, cfg, d, &cnt, e);
    if (!rc)
        rc = mr_step_ctx_create(&x, c, cfg, &s, cnt, e);
    if (!rc)
        rc = mr_comm_agree(c, rc, e);
    if (!rc)
        rc = mr_evaluate(x, c, &s, d, 1, test, e);
    if (!rc && train)
        rc = mr_evaluate(x, c, &s, d, 0, train, e);
    mr_step_ctx_destroy(&x);
    mr_state_free(&s);
    free(cnt);
    return rc;
}

int mr_serve_build_index(MrComm *c, const MrConfig *cfg, const MrDataset *d,
                         const MrServeCkptInfo *info, const char *out, MrErr *e)
{
    MrState s;
    memset(&s, 0, sizeof s);
    int rc = load_state(c, cfg, d, info, &s, e);
    if (!rc && cfg->model.task == MR_TASK_RANKING)
        mr_log(MR_LOG_WARN,
               "checkpoint %s is a ranking model: its towers were not trained for "
               "retrieval by dot product, so the index ranks items poorly",
               info->path);
    if (!rc)
        rc = mr_export_index(c, cfg, d, &s, out, info->path, info->step, e);
    mr_state_free(&s);
    return rc;
}
