/* canary.c — negative control of tools/sanitize.sh: the sanitizer settings and
 * suppressions that the real tests run under must still catch mpirec-side bugs.
 * Under mpirun with 2 ranks, `canary MODE` is
 *   0  clean (must exit 0: the Open MPI / HDF5 suppressions hide their noise)
 *   1  a 77-byte leak of our own        (LeakSanitizer must report it)
 *   2  a heap-buffer-overflow read       (AddressSanitizer)
 *   3  a signed integer overflow         (UBSan, fatal with -fno-sanitize-recover)
 */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int mode = argc > 1 ? atoi(argv[1]) : 0;
    volatile int big = INT_MAX;
    char *p = malloc(77);
    if (!p)
        return 2;
    memset(p, 1, 77);
    if (mode == 1)
        p = NULL;
    if (mode == 2) {
        volatile char c = p[77];
        (void)c;
    }
    if (mode == 3) {
        volatile int x = big + argc;
        (void)x;
    }
    free(p);
    MPI_Finalize();
    return 0;
}
