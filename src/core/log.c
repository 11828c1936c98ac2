/* log.c — forwards library log lines to the hook installed by cli/.
 *
 * The library has no opinion about where lines go; with no hook it is silent.
 */
#include "mpirec/log.h"

#include <stdarg.h>
#include <stdio.h>

static MrLogFn g_fn;
static void *g_ud;
static MrLogLevel g_max = MR_LOG_INFO;

void mr_log_set_hook(MrLogFn fn, void *userdata, MrLogLevel max_level)
{
    g_fn = fn;
    g_ud = userdata;
    g_max = max_level;
}

int mr_log_enabled(MrLogLevel level) { return g_fn != NULL && level <= g_max; }

void mr_log(MrLogLevel level, const char *fmt, ...)
{
    if (!mr_log_enabled(level))
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    g_fn(level, line, g_ud);
}
