/* csvscan_variant.h — the csv fast path's kernels of src/data/reader_impl.h
 * (mr_csv_masks, mr_bit_select) wrapped under names of the including file's
 * choosing, so that tests/CMakeLists.txt can compile them with fewer ISA
 * extensions than the library (csvscan_avx2.c, csvscan_sse2.c) and
 * test_reader_csvfast.c can compare every path on an AVX-512 machine. */
#ifndef CSVSCAN_NAME
#error define CSVSCAN_NAME(x) before including csvscan_variant.h
#endif
#include "data/reader_impl.h"

/* The masks of the block at p; returns the name of the path compiled. */
const char *CSVSCAN_NAME(csvscan_masks)(const char *p, char s0, char q, MrCsvMasks *out);
int CSVSCAN_NAME(csvscan_select)(uint64_t x, int n);
/* Whether mr_bit_select was compiled with pdep. */
int CSVSCAN_NAME(csvscan_has_pdep)(void);

const char *CSVSCAN_NAME(csvscan_masks)(const char *p, char s0, char q, MrCsvMasks *out)
{
    *out = mr_csv_masks(p, s0, q);
    return MR_CSV_MASKS_KIND;
}

int CSVSCAN_NAME(csvscan_select)(uint64_t x, int n)
{
    return mr_bit_select(x, n);
}

int CSVSCAN_NAME(csvscan_has_pdep)(void)
{
#if defined(__BMI2__) && !defined(__znver1__) && !defined(__znver2__)
    return 1;
#else
    return 0;
#endif
}
