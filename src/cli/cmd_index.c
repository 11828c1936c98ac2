/* cmd_index.c — `mpirec index`: the candidate index of any checkpoint.
 *
 * The library does the work (mr_serve_build_index: the checkpoint's config with
 * run-level overrides, the data re-ingested, the model loaded by global row, then
 * the very function training ends with), so the file equals the one training
 * writes. The data is needed for the self-measurement (real training users'
 * query embeddings, with their text) and for the exclude-seen file. Without
 * mpirun this is one process; under mpirun the ranks share ingestion and the
 * candidate tower, and rank 0 builds and writes the index. Afterwards rank 0
 * reads the file back (which also verifies it) and prints one JSON object.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "mpirec/dataset.h"
#include "mpirec/index.h"
#include "mpirec/log.h"
#include "mpirec/serve.h"

static const char *help =
    "Usage: mpirec index --checkpoint CKPT --out INDEX.h5 [--kind exact|ivf]\n"
    "                    [--config C.json] [--set key=value ...] [-q|-v]\n\n"
    "Build the candidate index of a trained model, as `mpirec train` does at its end:\n"
    "item ids, the candidate tower's embedding of every item, the config/model hash\n"
    "and source checkpoint, the IVF layout for --kind ivf; it measures recall@k\n"
    "(index.k) against exact search on a sample of real training users' query\n"
    "embeddings (index.recall_queries) and queries per second, prints them and\n"
    "stores them in the file. With index.nprobe = 0 (default) an ivf index picks the\n"
    "smallest nprobe reaching index.target_recall. Also writes the exclude-seen file\n"
    "<INDEX without .h5>.seen.h5 (training (user, item) pairs) for `recommend\n"
    "--exclude-seen`. Stdout: one JSON object describing the index.\n\n"
    "  --checkpoint CKPT  a checkpoint file, a `latest` pointer, a run's checkpoints/\n"
    "                     directory or the run directory (then `latest`)\n"
    "  --kind K           shorthand for --set index.kind=K\n"
    "  --config/--set     overrides of the checkpoint's own config: index.*, data.path\n"
    "                     (the data must give the training vocabularies) and other run\n"
    "                     keys; keys that define the model are refused\n"
    "  -q / -v            fewer / more messages\n";

static void print_summary(const char *out, const MrServeCkptInfo *info, MrErr *e, int *rc)
{
    MrIndex ix;
    if ((*rc = mr_index_load(&ix, out, e)))
        return;
    char seen[MR_PATH_MAX + 16];
    struct stat st;
    long long ib = stat(out, &st) == 0 ? (long long)st.st_size : -1, sb = -1;
    if (!mr_serve_seen_path(out, seen, sizeof seen, e) && stat(seen, &st) == 0)
        sb = (long long)st.st_size;
    char *o = NULL;
    size_t ol = 0, oc = 0;
    int bad = mr_serve_buf_printf(&o, &ol, &oc, "{\"index\": ") ||
              mr_serve_json_string(&o, &ol, &oc, out, strlen(out)) ||
              mr_serve_buf_printf(&o, &ol, &oc, ", \"bytes\": %lld, \"seen\": ", ib) ||
              mr_serve_json_string(&o, &ol, &oc, seen, strlen(seen)) ||
              mr_serve_buf_printf(&o, &ol, &oc, ", \"seen_bytes\": %lld, \"checkpoint\": ", sb) ||
              mr_serve_json_string(&o, &ol, &oc, info->path, strlen(info->path)) ||
              mr_serve_buf_printf(
                  &o, &ol, &oc,
                  ", \"step\": %lld, \"kind\": \"%s\", \"items\": %lld, \"dim\": %d, "
                  "\"nlist\": %lld, \"nprobe\": %lld, \"quantize\": %s, \"k\": %d, \"queries\": "
                  "%lld, \"recall\": %.6g, \"qps\": %.6g, \"qps_exact\": %.6g, \"threads\": %d}\n",
                  (long long)info->step, ix.p.kind == MR_INDEX_IVF ? "ivf" : "exact",
                  (long long)ix.n, ix.d, (long long)ix.nlist, (long long)ix.stats.nprobe,
                  ix.p.quantize ? "true" : "false", ix.stats.k, (long long)ix.stats.queries,
                  ix.stats.recall, ix.stats.qps, ix.stats.qps_exact, ix.stats.threads);
    if (bad)
        *rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    else
        fputs(o, stdout);
    fflush(stdout);
    free(o);
    mr_index_free(&ix);
}

int cmd_index(int argc, char **argv)
{
    CliConfigArgs ca = {0};
    const char *out = NULL, *ckpt = NULL, *kind = NULL;
    int verbose = 1;
    MrErr e;
    mr_err_clear(&e);
    int rc = MR_OK;
    const CliValOpt opts[] = {
        {"--out", "-o", &out, NULL, "--out needs a file name"},
        {"--checkpoint", NULL, &ckpt, NULL, "--checkpoint needs a checkpoint"},
        {"--kind", NULL, &kind, "exact|ivf", "--kind needs exact or ivf"},
    };
    rc = cli_parse_args("index", help, argc, argv, &ca, opts, (int)(sizeof opts / sizeof *opts),
                        &verbose, &e);
    if (rc == CLI_HELP_SHOWN)
        return 0;
    if (!rc && (!out || !ckpt))
        rc = mr_err_set(&e, MR_EUSAGE,
                        "--checkpoint CKPT and --out FILE are required (see "
                        "mpirec index --help)");
    char kind_set[32];
    const char *sets[CLI_MAX_SETS + 1];
    int nsets = ca.nsets;
    memcpy(sets, ca.sets, sizeof(const char *) * (size_t)ca.nsets);
    if (!rc && kind) {
        snprintf(kind_set, sizeof kind_set, "index.kind=%s", kind);
        sets[nsets++] = kind_set;
    }
    if (rc) {
        fprintf(stderr, "mpirec index: %s\n", e.msg);
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
    rc = mr_serve_run_config(&comm, ckpt, ca.config_path, sets, nsets, &cfg, &info, &e);
    if (!rc && comm.rank == 0) {
        /* the directory of --out, created like train creates its run directory */
        char dir[MR_PATH_MAX];
        snprintf(dir, sizeof dir, "%s", out);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            rc = cli_mkdirs(dir, &e);
        }
    }
    rc = mr_comm_agree(&comm, rc, &e);
    if (!rc) {
        mr_log(MR_LOG_INFO, "index of checkpoint %s (step %lld), data %s", info.path,
               (long long)info.step, cfg.data.path);
        rc = mr_ingest(&d, &comm, &cfg, &e);
        if (rc)
            mr_err_prefix(&e,
                          "re-reading the training data of checkpoint %s (pass --set "
                          "data.path=FILE if it moved)",
                          info.path);
    }
    if (!rc && comm.rank == 0)
        cli_print_data_summary(&d.sum);
    if (!rc)
        rc = mr_serve_build_index(&comm, &cfg, &d, &info, out, &e);
    if (!rc && comm.rank == 0)
        print_summary(out, &info, &e, &rc);
    rc = mr_comm_agree(&comm, rc, &e);
    mr_dataset_free(&d);
    return cli_finish(&comm, rc, &e);
}
