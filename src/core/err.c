/* err.c — the MrErr message buffer.
 *
 * Deliberately tiny: formatting into a fixed buffer cannot fail, so reporting an
 * error never needs memory. Truncation of an over-long message is acceptable.
 */
#include "mpirec/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mr_err_clear(MrErr *e)
{
    if (!e)
        return;
    e->code = MR_OK;
    e->msg[0] = '\0';
}

int mr_err_set(MrErr *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int mr_err_prefix(MrErr *e, const char *fmt, ...)
{
    if (!e || e->code == MR_OK)
        return e ? (e->code ? e->code : MR_EINTERNAL) : MR_EINTERNAL;
    char ctx[MR_ERR_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    /* Assemble "<ctx>: <old>" by hand, truncating the tail if it does not fit. */
    char out[MR_ERR_SIZE];
    size_t a = strlen(ctx), b = strlen(e->msg), cap = sizeof out - 1;
    if (a > cap)
        a = cap;
    memcpy(out, ctx, a);
    size_t n = a;
    for (const char *sep = ": "; *sep && n < cap; sep++)
        out[n++] = *sep;
    if (b > cap - n)
        b = cap - n;
    memcpy(out + n, e->msg, b);
    out[n + b] = '\0';
    memcpy(e->msg, out, n + b + 1);
    return e->code;
}

const char *mr_err_name(int code)
{
    switch (code) {
    case MR_OK: return "ok";
    case MR_EUSAGE: return "usage error";
    case MR_ECONFIG: return "config error";
    case MR_EDATA: return "data error";
    case MR_EIO: return "I/O error";
    case MR_ENUMERIC: return "numerical failure";
    case MR_ENOMEM: return "out of memory";
    case MR_EMPI: return "MPI error";
    case MR_EFORMAT: return "file format error";
    case MR_EINTERNAL: return "internal error";
    case MR_EREQUEUE: return "checkpointed, requeue";
    default: return "error";
    }
}
