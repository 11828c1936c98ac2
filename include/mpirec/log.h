/* log.h — library logging through a hook set by the command-line front end.
 *
 * Library code never prints: it calls mr_log(), which forwards the formatted line
 * to the hook installed by cli/ (NULL hook = quiet, the default, so tests are
 * silent). Gating to rank 0 and the "[rank r]" prefix for other ranks' errors live
 * in the hook, in one place. MR_LOG_PROGRESS lines are status updates that a
 * terminal front end may redraw in place.
 */
#ifndef MPIREC_LOG_H
#define MPIREC_LOG_H

typedef enum MrLogLevel {
    MR_LOG_ERROR = 0,
    MR_LOG_WARN = 1,
    MR_LOG_INFO = 2,
    MR_LOG_PROGRESS = 3, /* transient status line (step, loss, examples/s, ETA) */
    MR_LOG_DEBUG = 4
} MrLogLevel;

typedef void (*MrLogFn)(MrLogLevel level, const char *line, void *userdata);

/* Install the hook (NULL = quiet). Lines above max_level are dropped before
 * formatting. Not thread-safe: call once at start-up. */
void mr_log_set_hook(MrLogFn fn, void *userdata, MrLogLevel max_level);

/* Format and forward one line (no trailing newline needed). */
void mr_log(MrLogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when a line at `level` would reach a hook (lets callers skip costly work). */
int mr_log_enabled(MrLogLevel level);

#endif
