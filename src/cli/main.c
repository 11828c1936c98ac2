/* main.c — the `mpirec` program: subcommand dispatch and top-level help.
 *
 * Each subcommand lives in its own cmd_<name>.c and parses its own options; this
 * file only routes argv[1] to it.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const CliCommand commands[] = {
    {"train", "train a retrieval/ranking/multitask model (mpirun -np P for P ranks)", cmd_train},
    {"gen", "write a synthetic interaction file with planted structure", cmd_gen},
    {"data", "ingest, split and build vocabularies only; report what was read", cmd_data},
    {"config", "print the configuration keys, or the effective config", cmd_config},
    {"inspect", "show and verify what a checkpoint or index file holds", cmd_inspect},
    {"eval", "evaluate a checkpoint as training does (top-k, RMSE)", cmd_eval},
    {"index", "build the candidate index (and exclude-seen file) of a checkpoint", cmd_index},
    {"recommend", "top-k items for users from an index (JSON Lines)", cmd_recommend},
};
#define NCMD (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f,
            "mpirec %s — distributed two-tower recommender training (TFRS semantics) over MPI\n\n"
            "Usage: mpirec COMMAND [OPTIONS]     (run under mpirun -np P for P ranks)\n\n"
            "Commands:\n",
            MPIREC_VERSION);
    for (size_t i = 0; i < NCMD; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`mpirec COMMAND --help` describes each command.\n\n%s", cli_exit_codes_help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MR_EUSAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("mpirec %s\n", MPIREC_VERSION);
        return 0;
    }
    for (size_t i = 0; i < NCMD; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "mpirec: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return MR_EUSAGE;
}
