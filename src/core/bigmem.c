/* bigmem.c — the heap reuse window (see bigmem.h). */
#include "mpirec/bigmem.h"

#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>

/* glibc's defaults, restored at the end of the window. */
#define GLIBC_MMAP_MAX 65536
#define GLIBC_TRIM_THRESHOLD (128 * 1024)
#endif

int mr_big_reuse_begin(void)
{
#ifdef __GLIBC__
    if (mallopt(M_MMAP_MAX, 0) != 1)
        return 0;
    (void)mallopt(M_TRIM_THRESHOLD, INT_MAX);
    return 1;
#else
    return 0;
#endif
}

void mr_big_reuse_end(int token)
{
#ifdef __GLIBC__
    if (!token)
        return;
    (void)mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX);
    (void)mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD);
    (void)malloc_trim(0);
#else
    (void)token;
#endif
}
