/* cmd_eval.c — `mpirec eval`: evaluate a checkpoint exactly as training does.
 *
 * Collective (mpirun -np P, any P): the checkpoint's own config (run-level
 * overrides only), the data re-ingested and split as in training, the model
 * loaded by global row, then mr_evaluate — the function training calls. So the
 * final checkpoint of a run gives the numbers of the run's last metrics.jsonl
 * line (bitwise at the same P; at another P the scores can differ in the last
 * bits, which can move a near-tie in top-k). Writes DIR/metrics.jsonl (one line
 * per split, training's keys) and DIR/config.json, and prints the lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mpirec/dataset.h"
#include "mpirec/log.h"
#include "mpirec/serve.h"

static const char *help =
    "Usage: mpirec eval --checkpoint CKPT --out DIR [--split test|train|both]\n"
    "                   [--config C.json] [--set key=value ...] [-q|-v]\n\n"
    "Evaluate a checkpoint on its data exactly as training does (factorized top-k\n"
    "accuracy against every item, TFRS's rule; RMSE of the rating model), with any\n"
    "number of ranks (mpirun -np P). The data of the checkpoint's config is read\n"
    "again and split with its seed; it must give the training vocabularies.\n"
    "Writes DIR/metrics.jsonl (one object per split: epoch, step, split, top_k...,\n"
    "rmse where it applies, examples, seconds, checkpoint) and DIR/config.json, and\n"
    "prints the metrics lines on stdout.\n\n"
    "  --checkpoint CKPT  a checkpoint file, a `latest` pointer, a run's checkpoints/\n"
    "                     directory or the run directory (then `latest`)\n"
    "  --split S          test (default; also train when eval.train_split is set),\n"
    "                     train, or both\n"
    "  --config/--set     overrides of the checkpoint's own config: data.path, eval.*\n"
    "                     and other run keys; keys that define the model are refused\n"
    "  -q / -v            fewer / more messages\n";

static int metrics_line(char **o, size_t *ol, size_t *oc, const MrServeCkptInfo *info,
                        const char *split, const MrMetrics *m, double secs)
{
    int bad = mr_serve_buf_printf(o, ol, oc,
                                  "{\"epoch\": %lld, \"batch\": %lld, \"step\": %lld, "
                                  "\"split\": \"%s\"",
                                  (long long)info->epoch, (long long)info->batch,
                                  (long long)info->step, split);
    for (int j = 0; m->has_topk && j < m->nk && !bad; j++)
        bad = mr_serve_buf_printf(o, ol, oc, ", \"top_%d\": %.9g", m->ks[j], m->topk[j]);
    if (m->has_rmse && !bad)
        bad = mr_serve_buf_printf(o, ol, oc, ", \"rmse\": %.9g", m->rmse);
    return bad ||
           mr_serve_buf_printf(o, ol, oc,
                               ", \"examples\": %lld, \"seconds\": %.3f, "
                               "\"checkpoint\": ",
                               (long long)m->n, secs) ||
           mr_serve_json_string(o, ol, oc, info->path, strlen(info->path)) ||
           mr_serve_buf_printf(o, ol, oc, "}\n");
}

int cmd_eval(int argc, char **argv)
{
    CliConfigArgs ca = {0};
    const char *out = NULL, *ckpt = NULL, *split = NULL;
    int verbose = 1;
    MrErr e;
    mr_err_clear(&e);
    int rc = MR_OK;
    const CliValOpt opts[] = {
        {"--out", "-o", &out, NULL, "--out needs a directory"},
        {"--checkpoint", NULL, &ckpt, NULL, "--checkpoint needs a checkpoint"},
        {"--split", NULL, &split, "test|train|both", "--split needs test, train or both"},
    };
    rc = cli_parse_args("eval", help, argc, argv, &ca, opts, (int)(sizeof opts / sizeof *opts),
                        &verbose, &e);
    if (rc == CLI_HELP_SHOWN)
        return 0;
    if (!rc && (!out || !ckpt))
        rc = mr_err_set(&e, MR_EUSAGE,
                        "--checkpoint CKPT and --out DIR are required (see "
                        "mpirec eval --help)");
    if (rc) {
        fprintf(stderr, "mpirec eval: %s\n", e.msg);
        return rc;
    }
    MrComm comm;
    if ((rc = cli_start(&comm, &argc, &argv, verbose, MR_PROGRESS_AUTO, &e))) {
        fprintf(stderr, "mpirec: %s\n", e.msg);
        return rc;
    }
    MrConfig cfg;
    MrServeCkptInfo info;
    MrDataset d;
    memset(&d, 0, sizeof d);
    rc = mr_serve_run_config(&comm, ckpt, ca.config_path, ca.sets, ca.nsets, &cfg, &info, &e);
    if (!rc && comm.rank == 0)
        rc = cli_mkdirs(out, &e);
    rc = mr_comm_agree(&comm, rc, &e);
    if (!rc) {
        mr_log(MR_LOG_INFO, "eval of checkpoint %s (step %lld), data %s, %d rank%s", info.path,
               (long long)info.step, cfg.data.path, comm.size, comm.size == 1 ? "" : "s");
        rc = mr_ingest(&d, &comm, &cfg, &e);
        if (rc)
            mr_err_prefix(&e,
                          "re-reading the data of checkpoint %s (pass --set data.path=FILE if "
                          "it moved)",
                          info.path);
    }
    if (!rc && comm.rank == 0)
        cli_print_data_summary(&d.sum);
    int want_test = !split || strcmp(split, "train") != 0;
    int want_train = split ? strcmp(split, "test") != 0 : cfg.eval.train_split;
    MrMetrics mt, mtr;
    memset(&mt, 0, sizeof mt);
    memset(&mtr, 0, sizeof mtr);
    double t0 = mr_comm_wtime();
    if (!rc)
        rc = mr_serve_evaluate(&comm, &cfg, &d, &info, &mt, want_train ? &mtr : NULL, &e);
    double secs = mr_comm_wtime() - t0;
    if (!rc && comm.rank == 0) {
        char *o = NULL;
        size_t ol = 0, oc = 0;
        int bad = (want_test && metrics_line(&o, &ol, &oc, &info, "test", &mt, secs)) ||
                  (want_train && metrics_line(&o, &ol, &oc, &info, "train", &mtr, secs));
        char path[MR_PATH_MAX + 32];
        if (bad || !o) {
            rc = mr_err_set(&e, MR_ENOMEM, "out of memory");
        } else {
            snprintf(path, sizeof path, "%s/metrics.jsonl", out);
            rc = cli_write_file(path, o, &e);
            fputs(o, stdout);
            fflush(stdout);
        }
        free(o);
        char *js = rc ? NULL : mr_config_to_json(&cfg);
        if (js) {
            snprintf(path, sizeof path, "%s/config.json", out);
            rc = cli_write_file(path, js, &e);
        }
        free(js);
        if (!rc)
            mr_log(MR_LOG_INFO, "eval: %lld test examples in %.2f s; results in %s",
                   (long long)mt.n, secs, out);
    }
    rc = mr_comm_agree(&comm, rc, &e);
    mr_dataset_free(&d);
    return cli_finish(&comm, rc, &e);
}
