/* cmd_config.c — `mpirec config`: list every key with its default, or print the
 * effective config of a --config file with --set overrides applied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *help =
    "Usage: mpirec config [--keys] [--config FILE] [--set key.path=value ...]\n\n"
    "Without --keys, print the effective configuration (defaults, then FILE, then each\n"
    "--set in order) as JSON. With --keys, list every key, its default and meaning.\n"
    "--set values are read as JSON when they parse (numbers, true/false, [32,16]),\n"
    "otherwise as strings.\n";

int cmd_config(int argc, char **argv)
{
    CliConfigArgs ca = {0};
    MrErr e;
    mr_err_clear(&e);
    int keys = 0;
    for (int i = 1; i < argc; i++) {
        int t = cli_take_config_arg(&ca, argc, argv, &i, &e);
        if (t < 0) {
            fprintf(stderr, "mpirec config: %s\n", e.msg);
            return MR_EUSAGE;
        }
        if (t)
            continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--keys") == 0) {
            keys = 1;
            continue;
        }
        fprintf(stderr, "mpirec config: unknown option '%s'\n\n%s", argv[i], help);
        return MR_EUSAGE;
    }
    if (keys) {
        char *h = mr_config_help();
        if (h)
            fputs(h, stdout);
        free(h);
        return 0;
    }
    MrComm comm;
    int rc = cli_start(&comm, &argc, &argv, 1, MR_PROGRESS_NONE, &e);
    if (rc) {
        fprintf(stderr, "mpirec: %s\n", e.msg);
        return rc;
    }
    MrConfig cfg;
    rc = cli_load_config(&comm, &ca, &cfg, &e);
    if (!rc && comm.rank == 0) {
        char *s = mr_config_to_json(&cfg);
        if (s)
            printf("%s\n", s);
        free(s);
    }
    return cli_finish(&comm, rc, &e);
}
