/* train.c — the training driver behind `mpirec train`.
 *
 * One run: pre-flight memory check, state (fresh or from a checkpoint), then
 * epochs of planned global batches; progress and per-step JSON lines every
 * train.log_every steps; checkpoints every N steps / T seconds, at the end, and
 * when a stop signal arrives; an evaluation after every eval.every_epochs epochs
 * (metrics.jsonl) and at the end; summary.json.
 *
 * Resume: the checkpoint's cursor (epoch, next batch) is the whole position (the
 * order, the split and the initial weights are pure functions of the seed), so a
 * resumed run replays exactly the batches an uninterrupted run would; the
 * optimizer state and step counter come from the file. The cursor may point just
 * past an epoch's last batch: then that epoch's evaluation is still to do.
 *
 * Collective decisions (stop, time-based checkpoint) travel in the step's own
 * agreement allreduce, so no extra collective is paid per step.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_state.h"
#include "mpirec/ckpt.h"
#include "mpirec/hash.h"
#include "mpirec/log.h"
#include "mpirec/train.h"
#include "step_ctx.h"

/* Append text to a growing string (metrics history kept for checkpoints). */
static int sb_append(char **s, size_t *len, size_t *cap, const char *t)
{
    size_t n = strlen(t);
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 4096;
        while (c < *len + n + 1)
            c *= 2;
        char *p = realloc(*s, c);
        if (!p)
            return -1;
        *s = p;
        *cap = c;
    }
    memcpy(*s + *len, t, n + 1);
    *len += n;
    return 0;
}

static int append_file(const char *path, const char *text, MrErr *e)
{
    FILE *f = fopen(path, "a");
    if (!f)
        return mr_err_set(e, MR_EIO, "cannot append to %s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    return bad ? mr_err_set(e, MR_EIO, "cannot write %s: %s", path, strerror(errno)) : MR_OK;
}

static int write_whole(const char *path, const char *text, MrErr *e)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return mr_err_set(e, MR_EIO, "cannot write %s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    return bad ? mr_err_set(e, MR_EIO, "cannot write %s: %s", path, strerror(errno)) : MR_OK;
}

static void fmt_duration(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* One metrics.jsonl object. */
static void metrics_json(char *buf, size_t n, int64_t epoch, int64_t step, const char *split,
                         double train_loss, double last_loss, const MrMetrics *m, double ex_s,
                         double seconds)
{
    int k = snprintf(buf, n, "{\"epoch\": %" PRId64 ", \"step\": %" PRId64
                             ", \"split\": \"%s\", \"train_loss\": %.9g, \"train_loss_last\": %.9g",
                     epoch, step, split, train_loss, last_loss);
    for (int j = 0; m->has_topk && j < m->nk && k < (int)n; j++)
        k += snprintf(buf + k, n - (size_t)k, ", \"top_%d\": %.9g", m->ks[j], m->topk[j]);
    if (m->has_rmse && k < (int)n)
        k += snprintf(buf + k, n - (size_t)k, ", \"rmse\": %.9g", m->rmse);
    if (k < (int)n)
        snprintf(buf + k, n - (size_t)k,
                 ", \"examples\": %" PRId64 ", \"examples_per_sec\": %.1f, \"seconds\": %.3f}\n",
                 m->n, ex_s, seconds);
}

static void log_metrics(const char *split, int64_t epoch, const MrMetrics *m)
{
    char line[1024];
    int k = snprintf(line, sizeof line, "eval %s after epoch %" PRId64 ":", split, epoch);
    for (int j = 0; m->has_topk && j < m->nk; j++)
        k += snprintf(line + k, sizeof line - (size_t)k, " top_%d %.4f", m->ks[j], m->topk[j]);
    if (m->has_rmse)
        snprintf(line + k, sizeof line - (size_t)k, " rmse %.4f", m->rmse);
    mr_log(MR_LOG_INFO, "%s", line);
}

/* Hash of the text-token vocabulary (ids 2.. in order), 0 without text. The
 * table is replicated, so every rank computes the same value locally. A resumed
 * run compares it with the checkpoint's, like the user and item vocabularies. */
static uint64_t token_vocab_hash(const MrTokenVocab *tv)
{
    int64_t n = tv->size > 2 ? tv->size - 2 : 0;
    if (n == 0 || !tv->off)
        return 0;
    uint64_t h = mr_mix(0x746f6b656e73ULL, (uint64_t)n);
    const unsigned char *b = (const unsigned char *)tv->bytes;
    for (int64_t k = 0; k < n; k++) {
        uint64_t f = 0xcbf29ce484222325ULL; /* FNV-1a of the token's bytes */
        for (int64_t i = tv->off[k]; i < tv->off[k + 1]; i++)
            f = (f ^ b[i]) * 0x100000001b3ULL;
        h = mr_mix(h, f);
    }
    return h | 1; /* never 0: 0 means "not recorded" */
}

/* MemAvailable of this node in bytes (0 if unknown). */
static int64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    int64_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %" SCNd64, &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* Name of some ckpt-*.h5 (or .h5.tmp) file in dir, or NULL (static buffer). */
static const char *first_checkpoint_file(const char *dir)
{
    static char name[256];
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    const char *found = NULL;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "ckpt-", 5) == 0 && strstr(de->d_name, ".h5")) {
            snprintf(name, sizeof name, "%s", de->d_name);
            found = name;
            break;
        }
    closedir(d);
    return found;
}

int64_t mr_state_bytes_estimate(const MrConfig *cfg, int64_t users, int64_t items, int P)
{
    int slots = cfg->optimizer.name == MR_OPT_ADAGRAD ? 1 : cfg->optimizer.name == MR_OPT_ADAM ? 2 : 0;
    int64_t D = cfg->model.embedding_dim;
    int64_t rows = (users + 1) + (items + 1);
    int64_t tbytes = rows * D * 4 * (1 + slots);
    if (cfg->model.text.enabled)
        tbytes += (int64_t)cfg->model.text.max_tokens * cfg->model.text.dim * 4 * (1 + slots);
    if (cfg->dist.embedding_sharding == MR_SHARD_ROW)
        tbytes = tbytes / P + 1;
    int64_t B = cfg->train.batch_size, Bl = B / P + 1;
    int64_t d = D + 64;
    /* step: global candidates and their grads, per-table exchange buffers, towers */
    int64_t step = B * d * 4 * 2 + 2 * B * (8 + D * 4) * 4 + Bl * d * 4 * 16;
    /* retrieval softmax block and evaluation tiles */
    step += 256 * B * 4 + (int64_t)cfg->eval.batch_size * 1024 * 4 * 2;
    /* dataset + epoch plan: ~64 bytes per record on this rank */
    return tbytes + step;
}

int mr_train_run(MrComm *c, const MrConfig *cfg, MrDataset *d, const MrTrainOptions *o,
                 MrTrainResult *res, MrErr *e)
{
    memset(res, 0, sizeof *res);
    int rc = MR_OK;
    MrState s;
    memset(&s, 0, sizeof s);
    MrStepCtx *x = NULL;
    MrEpochPlan plan;
    memset(&plan, 0, sizeof plan);
    char *metrics_hist = NULL;
    size_t mh_len = 0, mh_cap = 0;
    int64_t *item_count = NULL;
    char ckdir[MR_PATH_MAX + 32], path[MR_PATH_MAX + 64];
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", o->out_dir);
    double t_start = mr_comm_wtime();
    const int rank0 = c->rank == 0;

    /* pre-flight memory check */
    int64_t need = mr_state_bytes_estimate(cfg, d->users.size, d->items.size, c->size);
    need += d->n * 64;
    int64_t limit = (int64_t)(cfg->dist.memory_limit_mb * 1048576.0);
    if (limit <= 0) {
        int per_node = mr_comm_node_ranks(c);
        limit = mem_available() / (per_node > 0 ? per_node : 1);
    }
    if (limit > 0 && need > limit)
        rc = mr_err_set(e, MR_ENOMEM,
                        "pre-flight check: this run needs about %.1f MiB per rank (embedding "
                        "tables %s, optimizer state, step buffers) but %.1f MiB are available "
                        "per rank; use dist.embedding_sharding=row, more ranks or nodes, a "
                        "smaller model.embedding_dim or train.batch_size, or set "
                        "dist.memory_limit_mb",
                        need / 1048576.0,
                        cfg->dist.embedding_sharding == MR_SHARD_ROW ? "row-sharded" : "replicated",
                        limit / 1048576.0);
    if ((rc = mr_comm_agree(c, rc, e)))
        return rc;
    mr_log(MR_LOG_INFO, "memory: about %.1f MiB per rank (limit %.1f MiB)", need / 1048576.0,
           limit / 1048576.0);

    if ((rc = mr_state_init(&s, c, cfg, d->users.size, d->items.size, e)))
        return rc;
    uint64_t uh = 0, ih = 0, th = cfg->model.text.enabled ? token_vocab_hash(&d->tokens) : 0;
    if ((rc = mr_vocab_hash(&d->users, c, &uh, e)) || (rc = mr_vocab_hash(&d->items, c, &ih, e)))
        goto out;

    /* resume */
    int64_t step = 0, epoch0 = 0, batch0 = 0, ep_batches = 0;
    double ep_loss = 0, seconds_before = 0, last_loss = 0;
    int resumed_final = 0;
    char resume_path[MR_PATH_MAX];
    resume_path[0] = '\0';
    if (!(o->resume && o->resume[0])) {
        /* A fresh run must not share its checkpoint directory with another run:
         * rotation and a later --resume auto could pick the other run's files. */
        if (rank0) {
            const char *old = first_checkpoint_file(ckdir);
            if (old)
                rc = mr_err_set(e, MR_EUSAGE,
                                "%s already holds checkpoints of an earlier run (%s): pass "
                                "--resume auto to continue it, or use an empty --out directory",
                                ckdir, old);
        }
        if ((rc = mr_comm_agree(c, rc, e)))
            goto out;
    }
    if (o->resume && o->resume[0]) {
        if (rank0) {
            if (strcmp(o->resume, "auto") == 0) {
                char skipped[2048] = "";
                rc = mr_ckpt_find_latest(ckdir, resume_path, sizeof resume_path, skipped,
                                         sizeof skipped, e);
                if (!rc && skipped[0])
                    mr_log(MR_LOG_WARN, "skipped unusable checkpoints: %s", skipped);
                if (!rc && !resume_path[0])
                    mr_log(MR_LOG_INFO,
                           "--resume auto: no usable checkpoint in %s, starting a fresh run",
                           ckdir);
            } else {
                snprintf(resume_path, sizeof resume_path, "%s", o->resume);
            }
        }
        if ((rc = mr_comm_agree(c, rc, e)) ||
            (rc = mr_comm_bcast(c, resume_path, sizeof resume_path, 0, e)))
            goto out;
    }
    if (resume_path[0]) {
        MrCkptReader *r = NULL;
        char *saved_cfg = NULL, *hist = NULL;
        MrCkptMeta m;
        rc = mr_ckpt_open(&r, c, resume_path, MR_CKPT_MAGIC, MR_CKPT_VERSION, e);
        /* --resume auto verified the file already (find_latest); an explicit path
         * is verified here, since the row reads below do not check checksums. */
        if (!rc && strcmp(o->resume, "auto") != 0)
            rc = mr_ckpt_verify(r, e);
        if (!rc)
            rc = mr_ckpt_state_read_meta(r, &m, &saved_cfg, &hist, e);
        if (!rc) {
            MrConfig old;
            mr_config_defaults(&old);
            char key[128];
            if ((rc = mr_config_apply_json(&old, saved_cfg, strlen(saved_cfg), resume_path, e)))
                ;
            else if (!mr_config_resume_compatible(&old, cfg, key, sizeof key))
                rc = mr_err_set(e, MR_ECONFIG,
                                "cannot resume from %s: %s differs from the checkpoint's config "
                                "(it changes the model or its data); start a new run directory, "
                                "or set it back",
                                resume_path, key);
            else if (m.user_vocab_hash != uh || m.item_vocab_hash != ih)
                rc = mr_err_set(e, MR_ECONFIG,
                                "cannot resume from %s: the data gives different %s vocabulary "
                                "than the checkpoint's (has data.path's file changed?)",
                                resume_path, m.user_vocab_hash != uh ? "user" : "item");
            else if (m.text_vocab_hash && th && m.text_vocab_hash != th)
                rc = mr_err_set(e, MR_ECONFIG,
                                "cannot resume from %s: the data gives a different text-token "
                                "vocabulary than the checkpoint's (has data.path's file changed?)",
                                resume_path);
        }
        if (!rc)
            rc = mr_ckpt_state_load(r, c, &s, e);
        rc = mr_comm_agree(c, rc, e);
        mr_ckpt_close(&r);
        if (!rc) {
            step = m.step;
            epoch0 = m.epoch;
            batch0 = m.batch;
            ep_loss = m.epoch_loss_sum;
            ep_batches = m.epoch_batches;
            seconds_before = m.train_seconds;
            last_loss = m.last_loss;
            resumed_final = m.final != 0;
            if (hist && hist[0] && sb_append(&metrics_hist, &mh_len, &mh_cap, hist))
                rc = mr_err_set(e, MR_ENOMEM, "out of memory");
            mr_log(MR_LOG_INFO,
                   "resumed from %s: step %" PRId64 ", epoch %" PRId64 ", batch %" PRId64
                   " (saved with %" PRId64 " ranks, now %d)",
                   resume_path, step, epoch0 + 1, batch0, m.ranks, c->size);
        }
        free(saved_cfg);
        free(hist);
        if ((rc = mr_comm_agree(c, rc, e)))
            goto out;
    }
    if (rank0) {
        /* metrics.jsonl restarts from the checkpoint's history: a resumed run ends
         * with the same lines as an uninterrupted one. */
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
        rc = write_whole(path, metrics_hist ? metrics_hist : "", e);
        if (!rc && !resume_path[0]) {
            snprintf(path, sizeof path, "%s/steps.jsonl", o->out_dir);
            rc = write_whole(path, "", e);
        }
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;

    /* item frequencies of the training split (logQ) */
    if (cfg->loss.logq) {
        int64_t rows = d->items.size + 1;
        item_count = calloc((size_t)rows, sizeof *item_count);
        rc = item_count ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
        if ((rc = mr_comm_agree(c, rc, e)))
            goto out;
        for (int64_t i = 0; i < d->n; i++)
            if (!d->is_test[i])
                item_count[d->item[i]]++;
        if ((rc = mr_comm_allreduce_i64(c, item_count, (size_t)rows, MR_SUM, e)))
            goto out;
    }
    if ((rc = mr_step_ctx_create(&x, c, cfg, &s, item_count, e)))
        goto out;
    rc = mr_comm_agree(c, rc, e);
    if (rc)
        goto out;

    /* training */
    char *cfg_json = mr_config_to_json(cfg);
    uint64_t mhash = mr_config_model_hash(cfg);
    double last_ckpt_t = mr_comm_wtime(), seg_start = mr_comm_wtime();
    int64_t examples_seg = 0;
    int stopped = 0, max_reached = 0;
    MrMetrics last_m;
    memset(&last_m, 0, sizeof last_m);
    int evaluated_last = 0;
    int64_t epochs = cfg->train.epochs;
    int64_t cur_ep = epoch0, cur_b = batch0, cur_nb = 0;
    /* A checkpoint at step == train.max_steps: the uninterrupted run stopped right
     * after that step (the check below the step), so the resumed one trains no
     * step but still does what followed it (the evaluation). */
    if (cfg->train.max_steps > 0 && step >= cfg->train.max_steps)
        max_reached = 1;
    /* Resuming the checkpoint a finished run wrote at its end, with nothing left to
     * train: its evaluations are in the history already. Evaluate once more for
     * summary.json but append nothing, and do not rewrite the checkpoint; this
     * makes a repeated `--resume auto` (a job requeued after it finished) a no-op. */
    int done_already = resumed_final && (epoch0 >= epochs || max_reached);
    if (done_already) {
        snprintf(res->checkpoint, sizeof res->checkpoint, "%s", resume_path);
        mr_log(MR_LOG_INFO, "%s is the final checkpoint of a finished run: nothing to train",
               resume_path);
    }

    /* Write a checkpoint of the current state with the given cursor. */
#define CHECKPOINT(ep_, b_, final_)                                                                \
    do {                                                                                           \
        MrCkptMeta m_ = {0};                                                                       \
        m_.step = step;                                                                            \
        m_.epoch = (ep_);                                                                          \
        m_.batch = (b_);                                                                           \
        m_.seed = cfg->train.seed;                                                                 \
        m_.model_hash = mhash;                                                                     \
        m_.user_vocab_hash = uh;                                                                   \
        m_.item_vocab_hash = ih;                                                                   \
        m_.text_vocab_hash = th;                                                                   \
        m_.epoch_loss_sum = ep_loss;                                                               \
        m_.epoch_batches = ep_batches;                                                             \
        m_.train_seconds = seconds_before + (mr_comm_wtime() - seg_start);                         \
        m_.last_loss = last_loss;                                                                  \
        m_.final = (final_);                                                                       \
        m_.config_json = cfg_json ? cfg_json : "{}";                                               \
        m_.metrics_jsonl = metrics_hist;                                                           \
        double tc_ = mr_comm_wtime();                                                              \
        rc = mr_ckpt_state_save(c, ckdir, &m_, &s, d, cfg->checkpoint.keep, res->checkpoint,       \
                                sizeof res->checkpoint, e);                                        \
        if (!rc)                                                                                   \
            mr_log(MR_LOG_INFO, "checkpoint %s (%.2f s)", res->checkpoint, mr_comm_wtime() - tc_); \
        last_ckpt_t = mr_comm_wtime();                                                             \
    } while (0)

    /* max_reached is tested at the end of the body: when it is set before the loop
     * (see above), the cursor's epoch still gets its evaluation. */
    for (int64_t ep = epoch0; ep < epochs && !done_already && !stopped && !rc; ep++) {
        if ((rc = mr_epoch_plan(&plan, c, d, cfg->train.seed, ep, cfg->train.batch_size, e)) ||
            (rc = mr_step_reserve(x, c, &s, &plan, e)))
            break;
        int64_t b = ep == epoch0 ? batch0 : 0;
        cur_nb = plan.n_batches;
        /* Keyed on the batch, not on "resumed": a cursor (e, 0) (the end-of-run
         * checkpoint of a run whose train.epochs was then raised) starts a new
         * epoch, and its loss sum must not continue the previous epoch's. */
        if (b == 0) {
            ep_loss = 0;
            ep_batches = 0;
        }
        double ep_t0 = mr_comm_wtime();
        int64_t ep_examples = 0;
        double lw_time = 0, lw_comm = 0;
        int64_t lw_bytes = 0, lw_steps = 0, lw_examples = 0;
        for (; b < plan.n_batches && !max_reached; b++) {
            int flags = (o->stop_flag && *o->stop_flag) ? MR_STEP_STOP : 0;
            if (rank0 && cfg->checkpoint.every_seconds > 0 &&
                mr_comm_wtime() - last_ckpt_t >= cfg->checkpoint.every_seconds)
                flags |= MR_STEP_CHECKPOINT;
            MrStepStats st;
            if ((rc = mr_train_step(x, c, &s, &plan, b, flags, &st, step + 1, e)))
                break;
            step++;
            ep_loss += st.loss;
            ep_batches++;
            last_loss = st.loss;
            ep_examples += st.examples;
            examples_seg += st.examples;
            lw_time += st.seconds;
            lw_comm += st.comm_seconds;
            lw_bytes += st.bytes_sent;
            lw_steps++;
            lw_examples += st.examples;
            int log_now = step % cfg->train.log_every == 0 || b + 1 == plan.n_batches;
            if (log_now) {
                /* Collective at the same steps on every rank. */
                double v[4] = {lw_time, lw_comm, (double)lw_bytes, lw_time};
                double mx[1] = {lw_time};
                if ((rc = mr_comm_allreduce_f64(c, v, 3, MR_SUM, e)) ||
                    (rc = mr_comm_allreduce_f64(c, mx, 1, MR_MAX, e)))
                    break;
                double mean_t = v[0] / c->size;
                double ex_s = mx[0] > 0 ? lw_examples / mx[0] : 0;
                double el = mr_comm_wtime() - ep_t0;
                double left_ep = (double)(plan.n_batches - b - 1) * (el / (double)(b + 1 - (ep == epoch0 ? batch0 : 0)));
                double left = left_ep + (double)(epochs - ep - 1) * (el + left_ep);
                char eta[32];
                fmt_duration(left, eta, sizeof eta);
                mr_log(MR_LOG_PROGRESS,
                       "epoch %" PRId64 "/%" PRId64 " batch %" PRId64 "/%" PRId64 " step %" PRId64
                       "  loss %.5g  %.0f ex/s  comm %.0f%%  ETA %s",
                       ep + 1, epochs, b + 1, plan.n_batches, step, st.loss, ex_s,
                       v[0] > 0 ? 100.0 * v[1] / v[0] : 0, eta);
                if (rank0) {
                    char line[768];
                    snprintf(line, sizeof line,
                             "{\"step\": %" PRId64 ", \"epoch\": %" PRId64 ", \"batch\": %" PRId64
                             ", \"loss\": %.9g, \"examples_per_sec\": %.1f, \"steps\": %" PRId64
                             ", \"compute_seconds\": %.6f, \"comm_seconds\": %.6f"
                             ", \"bytes_sent_per_rank\": %.0f, \"load_imbalance\": %.4f"
                             ", \"ranks\": %d}\n",
                             step, ep + 1, b + 1, st.loss, ex_s, lw_steps,
                             (v[0] - v[1]) / c->size, v[1] / c->size, v[2] / c->size,
                             mean_t > 0 ? mx[0] / mean_t : 1.0, c->size);
                    snprintf(path, sizeof path, "%s/steps.jsonl", o->out_dir);
                    rc = append_file(path, line, e);
                }
                if ((rc = mr_comm_agree(c, rc, e)))
                    break;
                lw_time = lw_comm = 0;
                lw_bytes = lw_steps = lw_examples = 0;
            }
            cur_ep = ep;
            cur_b = b + 1;
            int every = cfg->checkpoint.every_steps > 0 && step % cfg->checkpoint.every_steps == 0;
            if (st.stop_requested || every || st.ckpt_requested) {
                CHECKPOINT(cur_ep, cur_b, 0);
                if ((rc = mr_comm_agree(c, rc, e)))
                    break;
            }
            if (st.stop_requested) {
                stopped = 1;
                mr_log(MR_LOG_INFO, "stop signal: checkpointed at step %" PRId64 ", exiting", step);
                break;
            }
            if (cfg->train.max_steps > 0 && step >= cfg->train.max_steps) {
                max_reached = 1;
                b++;
                break;
            }
        }
        if (rc || stopped)
            break;
        int64_t next_b = b; /* == n_batches unless max_steps stopped mid-epoch */
        int epoch_done = next_b >= plan.n_batches;
        double ep_secs = mr_comm_wtime() - ep_t0;
        int do_eval = epoch_done && cfg->eval.every_epochs > 0 &&
                      ((ep + 1) % cfg->eval.every_epochs == 0 || ep + 1 == epochs);
        if (epoch_done && !do_eval && ep + 1 == epochs)
            do_eval = 1; /* always evaluate after training */
        if (max_reached && !epoch_done)
            do_eval = 1;
        if (do_eval) {
            double te = mr_comm_wtime();
            MrMetrics m;
            if ((rc = mr_evaluate(x, c, &s, d, 1, &m, e)))
                break;
            double ex_s = ep_secs > 0 ? (double)ep_examples / ep_secs : 0;
            char line[2048];
            metrics_json(line, sizeof line, ep + 1, step, "test",
                         ep_batches ? ep_loss / (double)ep_batches : 0, last_loss, &m, ex_s,
                         mr_comm_wtime() - te);
            log_metrics("test", ep + 1, &m);
            if (sb_append(&metrics_hist, &mh_len, &mh_cap, line))
                rc = mr_err_set(e, MR_ENOMEM, "out of memory");
            if (cfg->eval.train_split && !rc) {
                MrMetrics mt;
                if ((rc = mr_evaluate(x, c, &s, d, 0, &mt, e)))
                    break;
                char l2[2048];
                metrics_json(l2, sizeof l2, ep + 1, step, "train",
                             ep_batches ? ep_loss / (double)ep_batches : 0, last_loss, &mt, ex_s,
                             mr_comm_wtime() - te);
                log_metrics("train", ep + 1, &mt);
                if (sb_append(&metrics_hist, &mh_len, &mh_cap, l2))
                    rc = mr_err_set(e, MR_ENOMEM, "out of memory");
                else
                    strncat(line, l2, sizeof line - strlen(line) - 1);
            }
            if (rank0 && !rc) {
                snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
                rc = append_file(path, line, e);
            }
            if ((rc = mr_comm_agree(c, rc, e)))
                break;
            last_m = m;
            evaluated_last = 1;
        }
        mr_epoch_plan_free(&plan);
        if (max_reached)
            break;
    }
    mr_epoch_plan_free(&plan);
    if (!rc && !stopped) {
        if (!evaluated_last) {
            if (!(rc = mr_evaluate(x, c, &s, d, 1, &last_m, e)) && done_already) {
                log_metrics("test", epochs, &last_m);
            } else if (!rc) {
                char line[2048];
                metrics_json(line, sizeof line, epochs, step, "test", 0, last_loss, &last_m, 0, 0);
                log_metrics("test", epochs, &last_m);
                sb_append(&metrics_hist, &mh_len, &mh_cap, line);
                if (rank0) {
                    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
                    rc = append_file(path, line, e);
                }
                rc = mr_comm_agree(c, rc, e);
            }
        }
        if (!rc && cfg->checkpoint.at_end && !done_already) {
            /* After the final evaluation the cursor says "done" (epochs, 0), unless
             * train.max_steps stopped inside an epoch: then it points at the next
             * batch, so a later run with a larger max_steps continues. */
            if (!max_reached || cur_b >= cur_nb) {
                cur_ep = max_reached ? cur_ep + 1 : epochs;
                cur_b = 0;
            }
            CHECKPOINT(cur_ep, cur_b, 1);
            rc = mr_comm_agree(c, rc, e);
        }
        if (!rc && cfg->index.build_at_end && cfg->model.task != MR_TASK_RANKING) {
            snprintf(path, sizeof path, "%s/index.h5", o->out_dir);
            rc = mr_export_index(c, cfg, d, &s, path, res->checkpoint, step, e);
        }
    }
    free(cfg_json);
    res->steps = step;
    res->stopped = stopped;
    res->last = last_m;
    res->train_seconds = seconds_before + (mr_comm_wtime() - seg_start);
    res->examples_per_sec =
        (mr_comm_wtime() - seg_start) > 0 ? examples_seg / (mr_comm_wtime() - seg_start) : 0;
    res->seconds = mr_comm_wtime() - t_start;
#undef CHECKPOINT
out:
    mr_epoch_plan_free(&plan);
    mr_step_ctx_destroy(&x);
    mr_state_free(&s);
    free(item_count);
    free(metrics_hist);
    return rc;
}
