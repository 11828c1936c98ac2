/* common.c — start/stop, logging, config loading: the plumbing every subcommand
 * shares. The log hook is the one place that decides who prints what: rank 0
 * prints info and progress; every rank prints its own errors, prefixed [rank r]
 * when there is more than one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "mpirec/log.h"

const char *cli_exit_codes_help =
    "Exit codes:\n"
    "  0   done\n"
    "  2   usage error (bad command line)\n"
    "  3   config error (unknown key, wrong type, out-of-range value, missing file)\n"
    "  4   data error (malformed record, missing column, empty file)\n"
    "  5   I/O error (cannot read/write, disk full, run directory not writable)\n"
    "  6   numerical failure (NaN/Inf in a loss or gradient)\n"
    "  7   out of memory (or the pre-flight memory estimate does not fit)\n"
    "  8   MPI error (a collective failed or a rank was lost)\n"
    "  9   checkpoint/index file corrupt, truncated, or from another version/model\n"
    "  10  internal error (a bug: please report it)\n"
    "  75  checkpointed after SIGTERM/SIGUSR1: requeue and resume with --resume auto\n";

typedef struct LogState {
    int rank, size;
    int tty;            /* stderr is a terminal: redraw progress in place */
    int progress_shown; /* a progress line is on screen without newline */
    MrProgress mode;
} LogState;

static LogState g_log;

static void log_hook(MrLogLevel level, const char *line, void *ud)
{
    LogState *s = ud;
    if (level == MR_LOG_ERROR || level == MR_LOG_WARN) {
        if (s->progress_shown) {
            fputc('\n', stderr);
            s->progress_shown = 0;
        }
        if (s->size > 1)
            fprintf(stderr, "[rank %d] %s%s\n", s->rank, level == MR_LOG_WARN ? "warning: " : "",
                    line);
        else
            fprintf(stderr, "%s%s\n", level == MR_LOG_WARN ? "warning: " : "", line);
        fflush(stderr);
        return;
    }
    if (s->rank != 0)
        return;
    if (level == MR_LOG_PROGRESS) {
        if (s->mode == MR_PROGRESS_NONE)
            return;
        if (s->tty && s->mode == MR_PROGRESS_AUTO) {
            fprintf(stderr, "\r\033[K%s", line);
            s->progress_shown = 1;
        } else {
            fprintf(stderr, "%s\n", line);
        }
        fflush(stderr);
        return;
    }
    if (s->progress_shown) {
        fputc('\n', stderr);
        s->progress_shown = 0;
    }
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

int cli_start(MrComm *comm, int *argc, char ***argv, int verbose, MrProgress progress, MrErr *e)
{
    int rc = mr_comm_init(comm, argc, argv, e);
    if (rc)
        return rc;
    g_log.rank = comm->rank;
    g_log.size = comm->size;
    g_log.tty = isatty(STDERR_FILENO);
    g_log.mode = progress;
    MrLogLevel max = verbose <= 0 ? MR_LOG_WARN : verbose == 1 ? MR_LOG_PROGRESS : MR_LOG_DEBUG;
    mr_log_set_hook(log_hook, &g_log, max);
    return MR_OK;
}

void cli_set_progress(MrProgress mode) { g_log.mode = mode; }

int cli_finish(MrComm *comm, int rc, MrErr *e)
{
    if (g_log.progress_shown && g_log.rank == 0) {
        fputc('\n', stderr);
        g_log.progress_shown = 0;
    }
    if (rc != MR_OK && rc != MR_EREQUEUE) {
        /* The library returns the same code on every rank after an agreement, so
         * rank 0 prints; a rank whose failure was not agreed prints its own. */
        if (comm->rank == 0 || comm->size == 1)
            fprintf(stderr, "mpirec: %s: %s\n", mr_err_name(rc), e->msg);
    }
    mr_comm_finalize(comm);
    return rc;
}

int cli_take_config_arg(CliConfigArgs *a, int argc, char **argv, int *i, MrErr *e)
{
    const char *arg = argv[*i];
    if (strcmp(arg, "--config") == 0 || strcmp(arg, "-c") == 0) {
        if (*i + 1 >= argc) {
            mr_err_set(e, MR_EUSAGE, "%s needs a file name", arg);
            return -1;
        }
        a->config_path = argv[++*i];
        return 1;
    }
    if (strncmp(arg, "--config=", 9) == 0) {
        a->config_path = arg + 9;
        return 1;
    }
    if (strcmp(arg, "--set") == 0 || strcmp(arg, "-s") == 0) {
        if (*i + 1 >= argc) {
            mr_err_set(e, MR_EUSAGE, "%s needs key.path=value", arg);
            return -1;
        }
        if (a->nsets >= CLI_MAX_SETS) {
            mr_err_set(e, MR_EUSAGE, "too many --set options (at most %d)", CLI_MAX_SETS);
            return -1;
        }
        a->sets[a->nsets++] = argv[++*i];
        return 1;
    }
    if (strncmp(arg, "--set=", 6) == 0) {
        if (a->nsets >= CLI_MAX_SETS) {
            mr_err_set(e, MR_EUSAGE, "too many --set options (at most %d)", CLI_MAX_SETS);
            return -1;
        }
        a->sets[a->nsets++] = arg + 6;
        return 1;
    }
    return 0;
}

int cli_load_config(MrComm *comm, const CliConfigArgs *a, MrConfig *cfg, MrErr *e)
{
    mr_config_defaults(cfg);
    int64_t len = 0;
    char *text = NULL;
    int rc = MR_OK;
    if (a->config_path) {
        if (comm->rank == 0) {
            size_t n = 0;
            rc = mr_config_read_file(a->config_path, &text, &n, e);
            len = (int64_t)n;
        }
        rc = mr_comm_agree(comm, rc, e);
        if (rc) {
            free(text);
            return rc;
        }
        if ((rc = mr_comm_bcast(comm, &len, sizeof len, 0, e)))
            return rc;
        if (comm->rank != 0) {
            text = malloc((size_t)len + 1);
            if (!text)
                rc = mr_err_set(e, MR_ENOMEM, "out of memory");
        }
        rc = mr_comm_agree(comm, rc, e);
        if (rc) {
            free(text);
            return rc;
        }
        if ((rc = mr_comm_bcast(comm, text, (size_t)len, 0, e))) {
            free(text);
            return rc;
        }
        text[len] = '\0';
        rc = mr_config_apply_json(cfg, text, (size_t)len, a->config_path, e);
        free(text);
        if (rc)
            return rc;
    }
    for (int i = 0; i < a->nsets; i++)
        if ((rc = mr_config_set(cfg, a->sets[i], e)))
            return rc;
    return mr_config_validate(cfg, e);
}

int cli_mkdirs(const char *path, MrErr *e)
{
    char buf[MR_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return mr_err_set(e, MR_EIO, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0775) != 0 && errno != EEXIST)
            return mr_err_set(e, MR_EIO, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0775) != 0 && errno != EEXIST)
        return mr_err_set(e, MR_EIO, "cannot create directory %s: %s", buf, strerror(errno));
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return mr_err_set(e, MR_EIO, "%s exists and is not a directory", buf);
    if (access(buf, W_OK) != 0)
        return mr_err_set(e, MR_EIO, "directory %s is not writable: %s", buf, strerror(errno));
    return MR_OK;
}

int cli_write_file(const char *path, const char *text, MrErr *e)
{
    char tmp[MR_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return mr_err_set(e, MR_EIO, "cannot write %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        int err = errno;
        unlink(tmp);
        return mr_err_set(e, MR_EIO, "cannot write %s: %s", tmp, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return mr_err_set(e, MR_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(err));
    }
    return MR_OK;
}

/* Whether v is one of the '|'-separated choices. */
static int is_choice(const char *v, const char *choices)
{
    size_t n = strlen(v);
    for (const char *c = choices; *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, v, n) == 0)
            return 1;
        if (!bar)
            break;
        c = bar + 1;
    }
    return 0;
}

int cli_parse_args(const char *cmd, const char *help, int argc, char **argv, CliConfigArgs *ca,
                   const CliValOpt *opts, int n, int *verbose, MrErr *e)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (ca) {
            int t = cli_take_config_arg(ca, argc, argv, &i, e);
            if (t < 0)
                return MR_EUSAGE;
            if (t)
                continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s\n%s", help, cli_exit_codes_help);
            return CLI_HELP_SHOWN;
        }
        if (verbose && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
            *verbose = 0;
            continue;
        }
        if (verbose && (!strcmp(a, "-v") || !strcmp(a, "--verbose"))) {
            *verbose = 2;
            continue;
        }
        int k = 0;
        while (k < n && strcmp(a, opts[k].name) && !(opts[k].alias && !strcmp(a, opts[k].alias)))
            k++;
        if (k == n)
            return mr_err_set(e, MR_EUSAGE, "unknown option '%s' (see mpirec %s --help)", a, cmd);
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v || (opts[k].choices && !is_choice(v, opts[k].choices)))
            return mr_err_set(e, MR_EUSAGE, "%s", opts[k].missing);
        *opts[k].value = v;
    }
    return MR_OK;
}
