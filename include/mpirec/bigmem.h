/* bigmem.h — phases that allocate many large arrays reuse memory instead of
 * faulting it in afresh.
 *
 * Ingestion allocates and frees some tens of arrays of 10-300 MB (record arrays,
 * pair keys, string tables, the vocabulary exchange). glibc serves every block
 * above 32 MB with its own mmap and unmaps it on free, so each array is faulted in
 * and zeroed by the kernel page by page: on the 2-core machines we measured that
 * costs 1.2-1.6 GB/s, more than the work that first writes the memory. Between
 * mr_big_reuse_begin and mr_big_reuse_end (glibc only) large blocks come from the
 * heap and freed ones stay there for the next array; the end gives the free memory
 * back (malloc_trim). Measured: docs/benchmarks.md, section 5a.
 *
 * (Hinting the arrays into 2 MiB transparent huge pages was measured too and left
 * out: on these virtual machines first-touched huge pages were slower, not faster.)
 */
#ifndef MPIREC_BIGMEM_H
#define MPIREC_BIGMEM_H

/* Opens the reuse window; returns a token for mr_big_reuse_end (0 = nothing was
 * changed). Process-wide and not thread-safe: only for phases where the calling
 * thread is the only one allocating large blocks (other threads' malloc arenas
 * cannot grow past 64 MiB without mmap, which the window turns off). */
int mr_big_reuse_begin(void);
void mr_big_reuse_end(int token);

#endif
