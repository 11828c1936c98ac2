/* runner.c — the CUnit test runner for every suite of mpirec.
 *
 * Usage: mpirec_tests [SUITE [TEST]]   (no argument: all unit suites)
 *        mpirec_tests --list
 * Suites register themselves through the table below (one line per test file).
 * MPI suites run under mpirun (ctest label `mpi`); each rank runs the same tests
 * and the exit code is the total number of failures over all ranks, so a failure
 * on any rank fails the test. MPI is initialised here once (a plain process is a
 * one-rank job), through the library's communicator.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/comm.h"
#include "test_util.h"

MrComm *g_test_comm;

typedef struct SuiteEntry {
    const char *name;
    int mpi; /* 1: meant to run under mpirun with several ranks (not in the default run) */
    int (*add)(void);
} SuiteEntry;

/* One line per suite (test_<module>.c exports add_suite_<name>). */
#define SUITE(name, mpi) int add_suite_##name(void);
#include "suites.def"
#undef SUITE
static const SuiteEntry suites[] = {
#define SUITE(name, mpi) {#name, mpi, add_suite_##name},
#include "suites.def"
#undef SUITE
};
#define NSUITES (sizeof suites / sizeof suites[0])

int main(int argc, char **argv)
{
    static MrComm comm;
    MrErr err;
    if (mr_comm_init(&comm, &argc, &argv, &err) != MR_OK) {
        fprintf(stderr, "mpirec_tests: %s\n", err.msg);
        return 1;
    }
    g_test_comm = &comm;
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < NSUITES; i++)
            printf("%s%s\n", suites[i].name, suites[i].mpi ? " (mpi)" : "");
        mr_comm_finalize(&comm);
        return 0;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    const char *only = argc > 1 ? argv[1] : NULL;
    int found = 0;
    for (size_t i = 0; i < NSUITES; i++) {
        if (only ? strcmp(only, suites[i].name) != 0 : suites[i].mpi)
            continue;
        found = 1;
        if (suites[i].add() != 0) {
            fprintf(stderr, "cannot register suite %s\n", suites[i].name);
            return 1;
        }
    }
    if (!found) {
        fprintf(stderr, "mpirec_tests: no suite named '%s' (see --list)\n", only);
        CU_cleanup_registry();
        mr_comm_finalize(&comm);
        return 2;
    }
    CU_basic_set_mode(comm.rank == 0 ? CU_BRM_VERBOSE : CU_BRM_SILENT);
    if (argc > 2) {
        CU_pSuite s = CU_get_suite(argv[1]);
        CU_pTest t = s ? CU_get_test(s, argv[2]) : NULL;
        if (!t) {
            fprintf(stderr, "mpirec_tests: no test '%s' in suite '%s'\n", argv[2], argv[1]);
            return 2;
        }
        CU_basic_run_test(s, t);
    } else {
        CU_basic_run_tests();
    }
    int64_t failures = (int64_t)CU_get_number_of_failures();
    if (failures && comm.rank != 0) {
        /* Silent ranks still say what failed. */
        for (CU_pFailureRecord f = CU_get_failure_list(); f; f = f->pNext)
            fprintf(stderr, "[rank %d] FAIL %s:%u: %s\n", comm.rank, f->strFileName,
                    f->uiLineNumber, f->strCondition);
    }
    CU_cleanup_registry();
    MrErr e2;
    mr_comm_allreduce_i64(&comm, &failures, 1, MR_SUM, &e2);
    mr_comm_finalize(&comm);
    return failures > 125 ? 125 : (int)failures;
}
