/* cli.h — private helpers of the command-line front end (src/cli only).
 *
 * The front end owns process concerns the library must not touch: printing,
 * exit codes, MPI start/stop, and turning a library error into one message that
 * every rank agrees on.
 */
#ifndef MPIREC_CLI_H
#define MPIREC_CLI_H

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/err.h"

#define CLI_MAX_SETS 256

/* Options common to the commands that read a config. */
typedef struct CliConfigArgs {
    const char *config_path;          /* --config FILE (NULL: defaults only) */
    const char *sets[CLI_MAX_SETS];   /* --set key=value, in order */
    int nsets;
} CliConfigArgs;

/* A subcommand: name, one-line summary, entry point, and its --help text. */
typedef struct CliCommand {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} CliCommand;

/* Start MPI and install the log hook (rank 0 prints info; every rank prints its
 * own errors with a [rank r] prefix). verbose: 0 quiet, 1 normal, 2 debug. */
int cli_start(MrComm *comm, int *argc, char ***argv, int verbose, MrProgress progress, MrErr *e);
/* Change the progress display after the config is known. */
void cli_set_progress(MrProgress mode);
/* Report an error (if rc != 0) and finalize; returns the process exit code. The
 * message is printed once, by rank 0, after the ranks agreed on it. */
int cli_finish(MrComm *comm, int rc, MrErr *e);

/* Rank 0 reads the config file and broadcasts its text; every rank applies it and
 * the --set overrides, then validates. Collective. */
int cli_load_config(MrComm *comm, const CliConfigArgs *a, MrConfig *cfg, MrErr *e);

/* Parse "--config F" and "--set k=v" at argv[*i]; returns 1 when consumed. */
int cli_take_config_arg(CliConfigArgs *a, int argc, char **argv, int *i, MrErr *e);

/* An option that takes a value: `name` (and `alias`, or NULL) followed by the value,
 * stored in *value. `choices`: NULL, or the allowed values separated by '|'.
 * `missing`: the message when the value is absent or not one of the choices. */
typedef struct CliValOpt {
    const char *name, *alias;
    const char **value;
    const char *choices;
    const char *missing;
} CliValOpt;

#define CLI_HELP_SHOWN 1000 /* cli_parse_args printed --help: exit 0 */

/* The argument loop of the commands that read a config: --config/--set (when ca
 * is not NULL), --help/-h (prints help and the exit codes, returns
 * CLI_HELP_SHOWN), -q/-v (when verbose is not NULL) and the value options of
 * `opts` (n of them). Anything else is an unknown option, named with the
 * command. Returns MR_OK, CLI_HELP_SHOWN or MR_EUSAGE (with e set). */
int cli_parse_args(const char *cmd, const char *help, int argc, char **argv, CliConfigArgs *ca,
                   const CliValOpt *opts, int n, int *verbose, MrErr *e);

/* Create a directory and its parents (rank 0 only calls it). */
int cli_mkdirs(const char *path, MrErr *e);
/* Write a whole file atomically (tmp + rename). */
int cli_write_file(const char *path, const char *text, MrErr *e);

/* Exit-code table for --help texts. */
extern const char *cli_exit_codes_help;

/* Subcommand entry points. */
int cmd_config(int argc, char **argv);
int cmd_gen(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);

struct MrDataSummary;
/* Log the ingestion summary lines (rank 0 prints them). */
void cli_print_data_summary(const struct MrDataSummary *s);
int cmd_inspect(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_recommend(int argc, char **argv);

#endif
