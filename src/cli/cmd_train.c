/* cmd_train.c — `mpirec train`: ingest, train, evaluate, checkpoint, index.
 *
 * Signals: SIGTERM and SIGUSR1 only set a flag (async-signal-safe); the trainer
 * agrees on it at the next step boundary, writes a checkpoint and returns, and we
 * exit with 75 ("checkpointed, please requeue"). A second signal while saving
 * changes nothing: the flag is already set and the write is atomic anyway.
 * SA_RESTART: a signal that lands inside a read/write/fsync of the checkpoint or
 * of a log file must not turn it into an EINTR failure.
 *
 * Run-directory lock: rank 0 holds DIR/checkpoints/mpirec.lock (flock, ckpt.h)
 * from before ingestion until after the last file is written, so a second job
 * pointed at the same DIR fails fast (exit 5, the message names the holder)
 * instead of interleaving checkpoints with this one. The kernel drops the lock
 * when rank 0 dies, so a killed or requeued job never blocks its successor.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mpirec/ckpt.h"
#include "mpirec/dataset.h"
#include "mpirec/log.h"
#include "mpirec/train.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const char *help =
    "Usage: mpirec train --config C.json [--set key=value ...] --out DIR\n"
    "                    [--resume auto|CHECKPOINT.h5] [-q|-v]\n\n"
    "Train a two-tower retrieval / ranking / multitask model (TFRS semantics) with\n"
    "every rank of the MPI job (mpirun -np P mpirec train ...). The global batch, the\n"
    "data order and the initial weights do not depend on P.\n\n"
    "Writes to DIR: config.json (effective config), data_summary.json, metrics.jsonl\n"
    "(one object per evaluation: epoch, step, train_loss, top_k..., rmse,\n"
    "examples_per_sec, seconds), steps.jsonl (every train.log_every steps: loss,\n"
    "examples/s, compute and communication seconds, bytes sent per rank, load\n"
    "imbalance), checkpoints/ckpt-<step>.h5 with checkpoints/latest, index.h5 (the\n"
    "candidate index), summary.json.\n\n"
    "  --resume auto   continue from the newest valid checkpoint in DIR/checkpoints\n"
    "                  (start fresh when there is none); always safe to pass\n"
    "  --resume PATH   continue from that checkpoint\n"
    "  -q / -v         fewer / more messages\n\n"
    "SIGTERM or SIGUSR1: checkpoint at the next step boundary and exit with 75.\n"
    "One job per DIR: a second `mpirec train` on a DIR in use (lock file\n"
    "DIR/checkpoints/mpirec.lock) fails at once with exit 5, naming the holder.\n"
    "Details: docs/resume.md, docs/slurm.md.\n"
    "Config keys: `mpirec config --keys`.\n";

int cmd_train(int argc, char **argv)
{
    CliConfigArgs ca = {0};
    const char *out = NULL, *resume = NULL;
    int verbose = 1;
    MrErr e;
    mr_err_clear(&e);
    int rc = MR_OK;
    const CliValOpt opts[] = {
        {"--out", "-o", &out, NULL, "--out needs a directory"},
        {"--resume", NULL, &resume, NULL, "--resume needs 'auto' or a checkpoint path"},
    };
    rc = cli_parse_args("train", help, argc, argv, &ca, opts, (int)(sizeof opts / sizeof *opts),
                        &verbose, &e);
    if (rc == CLI_HELP_SHOWN)
        return 0;
    if (!rc && !out)
        rc = mr_err_set(&e, MR_EUSAGE, "--out DIR is required (see mpirec train --help)");
    if (!rc && !ca.config_path && ca.nsets == 0)
        rc = mr_err_set(&e, MR_EUSAGE, "--config C.json is required (see mpirec train --help)");
    if (rc) {
        fprintf(stderr, "mpirec train: %s\n", e.msg);
        return rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    MrComm comm;
    if ((rc = cli_start(&comm, &argc, &argv, verbose, MR_PROGRESS_AUTO, &e))) {
        fprintf(stderr, "mpirec: %s\n", e.msg);
        return rc;
    }
    MrConfig cfg;
    MrDataset d;
    memset(&d, 0, sizeof d);
    rc = cli_load_config(&comm, &ca, &cfg, &e);
    if (!rc)
        cli_set_progress(cfg.train.progress);
    char path[MR_PATH_MAX + 64];
    MrCkptLock *lock = NULL;
    if (!rc && comm.rank == 0) {
        snprintf(path, sizeof path, "%s/checkpoints", out);
        rc = cli_mkdirs(path, &e);
        if (!rc) {
            /* Before anything is written into DIR (config.json included). */
            char owner[MR_PATH_MAX + 64];
            snprintf(owner, sizeof owner, "'mpirec train' with %d rank%s", comm.size,
                     comm.size == 1 ? "" : "s");
            rc = mr_ckpt_dir_lock(path, owner, &lock, &e);
        }
        char *js = rc ? NULL : mr_config_to_json(&cfg);
        if (js) {
            mr_log(MR_LOG_INFO, "mpirec %s, %d rank%s; effective config:\n%s", MPIREC_VERSION,
                   comm.size, comm.size == 1 ? "" : "s", js);
            snprintf(path, sizeof path, "%s/config.json", out);
            rc = cli_write_file(path, js, &e);
            free(js);
        }
    }
    rc = mr_comm_agree(&comm, rc, &e);
    if (!rc)
        rc = mr_ingest(&d, &comm, &cfg, &e);
    if (!rc && comm.rank == 0) {
        cli_print_data_summary(&d.sum);
        char *js = mr_data_summary_json(&d.sum);
        snprintf(path, sizeof path, "%s/data_summary.json", out);
        if (js) {
            size_t n = strlen(js);
            char *t = malloc(n + 2);
            if (t) {
                memcpy(t, js, n);
                memcpy(t + n, "\n", 2);
                rc = cli_write_file(path, t, &e);
            }
            free(t);
        }
        free(js);
    }
    rc = mr_comm_agree(&comm, rc, &e);
    MrTrainResult res;
    memset(&res, 0, sizeof res);
    if (!rc) {
        MrTrainOptions o = {out, resume, (volatile const int *)&g_stop};
        rc = mr_train_run(&comm, &cfg, &d, &o, &res, &e);
    }
    if (!rc && comm.rank == 0) {
        char buf[4096];
        int k = snprintf(buf, sizeof buf,
                         "{\"steps\": %" PRId64 ", \"stopped_by_signal\": %s, \"ranks\": %d"
                         ", \"train_seconds\": %.3f, \"examples_per_sec\": %.1f"
                         ", \"seconds\": %.3f, \"checkpoint\": \"%s\", \"records\": %" PRId64,
                         res.steps, res.stopped ? "true" : "false", comm.size, res.train_seconds,
                         res.examples_per_sec, res.seconds, res.checkpoint, d.sum.records);
        for (int j = 0; res.last.has_topk && j < res.last.nk; j++)
            k += snprintf(buf + k, sizeof buf - (size_t)k, ", \"top_%d\": %.9g", res.last.ks[j],
                          res.last.topk[j]);
        if (res.last.has_rmse)
            k += snprintf(buf + k, sizeof buf - (size_t)k, ", \"rmse\": %.9g", res.last.rmse);
        snprintf(buf + k, sizeof buf - (size_t)k, "}\n");
        snprintf(path, sizeof path, "%s/summary.json", out);
        rc = cli_write_file(path, buf, &e);
        if (!res.stopped)
            mr_log(MR_LOG_INFO, "done: %" PRId64 " steps in %.1f s; results in %s", res.steps,
                   res.train_seconds, out);
    }
    rc = mr_comm_agree(&comm, rc, &e);
    if (!rc && res.stopped)
        rc = MR_EREQUEUE;
    mr_ckpt_dir_unlock(&lock);
    mr_dataset_free(&d);
    return cli_finish(&comm, rc, &e);
}
