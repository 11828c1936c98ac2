/* test_util.h — helpers shared by the test files. */
#ifndef MPIREC_TEST_UTIL_H
#define MPIREC_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/comm.h"

/* The communicator of the runner (size 1 outside mpirun). */
extern MrComm *g_test_comm;

/* CU assertion that `needle` occurs in the message `msg`; prints both (and the
 * rank) when it does not, so a failing message check shows the message. */
#define ASSERT_HAS(msg, needle)                                                                    \
    do {                                                                                           \
        const char *m_ = (msg);                                                                    \
        if (!strstr(m_, (needle)))                                                                 \
            fprintf(stderr, "\n  [rank %d] expected \"%s\" in: %s\n", g_test_comm->rank, (needle), \
                    m_);                                                                           \
        CU_ASSERT_PTR_NOT_NULL(strstr(m_, (needle)));                                              \
    } while (0)

/* Directory of the real datasets (../shared/data beside the project), from the
 * MPIREC_DATA environment variable that CTest sets. Aborts the test run loudly
 * when it is missing: these tests must not pass by skipping. */
/* Print an input to stderr with its control and non-ASCII bytes escaped (the
 * first 3000 bytes; for failure reports). */
static inline void test_dump_bytes(const char *what, const char *buf, size_t len)
{
    fprintf(stderr, "%s (%zu bytes): \"", what, len);
    for (size_t i = 0; i < len && i < 3000; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n')
            fputs("\\n", stderr);
        else if (c == '\r')
            fputs("\\r", stderr);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fputs("\"\n", stderr);
}

static inline const char *test_data_dir(void)
{
    const char *d = getenv("MPIREC_DATA");
    if (!d || !*d) {
        fprintf(stderr, "MPIREC_DATA is not set (run the tests through ctest)\n");
        exit(99);
    }
    return d;
}

/* Path of a file under the data directory in a static buffer. */
static inline const char *test_data_path(const char *rel)
{
    static char buf[4][4096];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_data_dir(), rel);
    return buf[k];
}

/* A scratch directory for this process (created on first use), from MPIREC_TMP
 * or /tmp. Rank-independent name so MPI tests can share files: pass a tag. */
static inline const char *test_tmp_dir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *base = getenv("MPIREC_TMP");
        snprintf(dir, sizeof dir, "%s/mpirec-test-%s", base && *base ? base : "/tmp",
                 getenv("MPIREC_TEST_TAG") ? getenv("MPIREC_TEST_TAG") : "x");
        char cmd[600];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot create %s\n", dir);
    }
    return dir;
}

#endif
