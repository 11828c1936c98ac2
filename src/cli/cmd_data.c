/* cmd_data.c — `mpirec data`: ingestion, split and vocabularies only; writes
 * DIR/data_summary.json and DIR/config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mpirec/dataset.h"
#include "mpirec/log.h"

static const char *help =
    "Usage: mpirec data --config C.json [--set key=value ...] [--out DIR] [-q|-v]\n\n"
    "Read the configured interaction file in parallel (each rank parses its byte\n"
    "range), split it into train/test, build the user, item (and text token)\n"
    "vocabularies, and report what was read: records, bad records, users, items,\n"
    "tokens, train/test sizes, duplicate (user, item) pairs, test users/items never\n"
    "seen in training, time and MB/s. With --out, writes DIR/data_summary.json and the\n"
    "effective config DIR/config.json. Nothing is trained.\n\n"
    "  -q / -v         fewer / more messages (-v adds the time of each ingestion phase)\n";

void cli_print_data_summary(const struct MrDataSummary *s)
{
    char tok[64] = "";
    if (s->tokens)
        snprintf(tok, sizeof tok, ", %lld text tokens", (long long)s->tokens);
    mr_log(MR_LOG_INFO,
           "data: %lld records (%lld train, %lld test), %lld users, %lld items%s, %lld bad "
           "records skipped, %lld duplicate (user,item) pairs",
           (long long)s->records, (long long)s->train_records, (long long)s->test_records,
           (long long)s->users, (long long)s->items, tok, (long long)s->bad_records,
           (long long)s->duplicate_pairs);
    if (s->test_oov_users || s->test_oov_items)
        mr_log(MR_LOG_INFO,
               "data: %lld test records have a user and %lld an item not in the vocabulary (OOV)",
               (long long)s->test_oov_users, (long long)s->test_oov_items);
    mr_log(MR_LOG_INFO, "data: %.1f MB in %.3f s on %d rank%s (%.1f MB/s, %.1f MB/s per rank)",
           s->bytes / 1e6, s->seconds, s->ranks, s->ranks == 1 ? "" : "s",
           s->seconds > 0 ? s->bytes / 1e6 / s->seconds : 0,
           s->seconds > 0 ? s->bytes / 1e6 / s->seconds / s->ranks : 0);
}

int cmd_data(int argc, char **argv)
{
    CliConfigArgs ca = {0};
    const char *out = NULL;
    int verbose = 1;
    MrErr e;
    mr_err_clear(&e);
    int rc = MR_OK;
    const CliValOpt opts[] = {
        {"--out", "-o", &out, NULL, "--out needs a directory"},
    };
    rc = cli_parse_args("data", help, argc, argv, &ca, opts, (int)(sizeof opts / sizeof *opts),
                        &verbose, &e);
    if (rc == CLI_HELP_SHOWN)
        return 0;
    if (rc) {
        fprintf(stderr, "mpirec data: %s\n", e.msg);
        return rc;
    }
    MrComm comm;
    if ((rc = cli_start(&comm, &argc, &argv, verbose, MR_PROGRESS_AUTO, &e))) {
        fprintf(stderr, "mpirec: %s\n", e.msg);
        return rc;
    }
    MrConfig cfg;
    rc = cli_load_config(&comm, &ca, &cfg, &e);
    if (!rc && out && comm.rank == 0)
        rc = cli_mkdirs(out, &e);
    rc = mr_comm_agree(&comm, rc, &e);
    MrDataset d;
    memset(&d, 0, sizeof d);
    if (!rc)
        rc = mr_ingest(&d, &comm, &cfg, &e);
    if (!rc && comm.rank == 0) {
        cli_print_data_summary(&d.sum);
        char *js = mr_data_summary_json(&d.sum);
        if (js) {
            printf("%s\n", js);
            if (out) {
                char path[MR_PATH_MAX + 32];
                snprintf(path, sizeof path, "%s/data_summary.json", out);
                size_t n = strlen(js);
                char *withnl = malloc(n + 2);
                if (withnl) {
                    memcpy(withnl, js, n);
                    withnl[n] = '\n';
                    withnl[n + 1] = '\0';
                    rc = cli_write_file(path, withnl, &e);
                    free(withnl);
                }
                char *cj = mr_config_to_json(&cfg);
                snprintf(path, sizeof path, "%s/config.json", out);
                if (!rc && cj)
                    rc = cli_write_file(path, cj, &e);
                free(cj);
            }
        }
        free(js);
    }
    rc = mr_comm_agree(&comm, rc, &e);
    mr_dataset_free(&d);
    return cli_finish(&comm, rc, &e);
}
