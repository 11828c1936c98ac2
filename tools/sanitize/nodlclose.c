/* nodlclose.c — LD_PRELOAD shim of tools/sanitize.sh: dlclose does nothing.
 *
 * Open MPI loads its MCA components with dlopen and unloads them at
 * MPI_Finalize. LeakSanitizer then sees thousands of Open MPI allocations (live
 * until exit by design) whose allocating frame lies in a module that is gone, so
 * no suppression by module name can match them, and the only remedy was the slow
 * DWARF unwinder at every malloc (fast_unwind_on_malloc=0: about 1 s more per
 * process start, most of the sanitized test time). With the components left
 * mapped, the fast frame-pointer unwinder's first frame names the component
 * (…/openmpi/lib/openmpi3/mca_*.so) and tools/lsan-mpi.supp matches it; leaks of
 * mpirec's own memory, allocated from frames with frame pointers, still show.
 */
#include <stddef.h>

int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
