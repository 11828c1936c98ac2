/* err.h — error codes and the caller-provided error message buffer.
 *
 * Every fallible function in mpirec returns an int code (MR_OK = 0) and, when it
 * fails, fills the MrErr the caller passed (it may be NULL when the caller does
 * not want the text). Messages name the file, line/record, field and what was
 * expected. A caller that adds context prefixes it (mr_err_prefix) and never
 * overwrites what the callee wrote. The codes double as the process exit codes
 * of the `mpirec` program (documented in `mpirec --help`).
 */
#ifndef MPIREC_ERR_H
#define MPIREC_ERR_H

#include <stddef.h>

enum {
    MR_OK = 0,
    MR_EUSAGE = 2,     /* bad command line */
    MR_ECONFIG = 3,    /* bad configuration: unknown key, wrong type, out of range */
    MR_EDATA = 4,      /* bad input data: malformed records, missing columns, empty file */
    MR_EIO = 5,        /* file system: cannot open/read/write/rename, disk full */
    MR_ENUMERIC = 6,   /* NaN/Inf in a loss or gradient */
    MR_ENOMEM = 7,     /* allocation failed, or the pre-flight estimate does not fit */
    MR_EMPI = 8,       /* an MPI call failed or a peer rank was lost */
    MR_EFORMAT = 9,    /* checkpoint/index file corrupt, truncated, wrong version or model */
    MR_EINTERNAL = 10, /* broken invariant: a bug in mpirec */
    MR_EREQUEUE = 75   /* checkpointed after SIGTERM/SIGUSR1: please requeue (EX_TEMPFAIL) */
};

#define MR_ERR_SIZE 1024

typedef struct MrErr {
    int code;               /* the code of the first failure recorded, MR_OK if none */
    char msg[MR_ERR_SIZE];  /* NUL-terminated human-readable text */
} MrErr;

/* Lifecycle */
/* Reset to MR_OK and an empty message. Accepts NULL. */
void mr_err_clear(MrErr *e);

/* Operations */
/* Record a failure: formats the message (printf style) into e (when e is not NULL)
 * and returns `code`, so that `return mr_err_set(e, MR_EDATA, "...")` reads well. */
int mr_err_set(MrErr *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Put context in front of an existing message: "<context>: <old message>". Returns
 * e->code (or MR_EINTERNAL when e is NULL or holds no error). */
int mr_err_prefix(MrErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Queries */
/* Short name of a code ("data error", "I/O error", ...). Never NULL. */
const char *mr_err_name(int code);

#endif
