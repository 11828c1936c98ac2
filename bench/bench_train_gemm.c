/* bench_train_gemm.c — the sgemm rate behind the GEMM bound of a retrieval step.
 *
 * A step of the in-batch softmax at batch B and dimension D cannot beat its three
 * B x B x D products: logits S = Q C^T, dQ = P C and dC = P^T Q, 2 B^2 D flops
 * each. tools/bench_train.sh runs this program right before and right after each
 * timed training run, on the same core, so that the bound it compares the trainer
 * with is measured under the same machine load:
 *
 *     bound (examples/s) = rate / (6 B D)
 *
 * The rate is timed two ways and the higher one is reported as `gflops` (the
 * stricter bound):
 *   whole    three single cblas_sgemm calls on the full [B x B] matrix;
 *   blocked  the three products over row blocks of `bs` rows (default 64), the
 *            shapes mpirec's loss runs (docs/model.md), dC accumulated.
 * Each is the median of `repeats` timings after one untimed warm-up.
 *
 * Usage: OPENBLAS_NUM_THREADS=1 bench_train_gemm --batch B --dim D [--repeats R] [--block bs]
 * Prints one JSON line. Not a test: it asserts nothing.
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench_util.h"

static float *falloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)) != 0) {
        fprintf(stderr, "bench_train_gemm: out of memory (%zu floats)\n", n);
        exit(1);
    }
    return p;
}

/* Deterministic values in [-0.5, 0.5) (no denormals, no NaN). */
static void fill(float *v, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
    }
}

/* S = Q C^T [B x B]; dQ = S C [B x D]; dC = S^T Q [B x D]. */
static double time_whole(int B, int D, const float *Q, const float *C, float *S, float *dQ,
                         float *dC)
{
    double t0 = bench_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, B, D, 1.0f, Q, D, C, D, 0.0f, S, B);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, B, 1.0f, S, B, C, D, 0.0f, dQ, D);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, D, B, 1.0f, S, B, Q, D, 0.0f, dC, D);
    return bench_now() - t0;
}

/* The loss's shapes: per block of bs query rows, S_blk [bs x B] = Q_blk C^T,
 * dQ_blk = S_blk C, dC += S_blk^T Q_blk. */
static double time_blocked(int B, int D, int bs, const float *Q, const float *C, float *S,
                           float *dQ, float *dC)
{
    double t0 = bench_now();
    for (int i0 = 0; i0 < B; i0 += bs) {
        int nb = B - i0 < bs ? B - i0 : bs;
        const float *Qb = Q + (size_t)i0 * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, B, D, 1.0f, Qb, D, C, D, 0.0f, S,
                    B);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, D, B, 1.0f, S, B, C, D, 0.0f,
                    dQ + (size_t)i0 * D, D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, B, D, nb, 1.0f, S, B, Qb, D,
                    i0 ? 1.0f : 0.0f, dC, D);
    }
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    int B = 8192, D = 32, repeats = 5, bs = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            D = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--block") && i + 1 < argc)
            bs = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s --batch B --dim D [--repeats R] [--block bs]\n"
                    "prints the sgemm rate of the three B x B x D GEMMs of a retrieval step\n",
                    argv[0]);
            return 2;
        }
    }
    if (B < 1 || D < 1 || repeats < 1 || bs < 1) {
        fprintf(stderr, "bench_train_gemm: batch, dim, repeats and block must be >= 1\n");
        return 2;
    }
    size_t bd = (size_t)B * D;
    float *Q = falloc(bd), *C = falloc(bd), *dQ = falloc(bd), *dC = falloc(bd);
    float *S = falloc((size_t)B * B);
    fill(Q, bd, 1);
    fill(C, bd, 2);
    double *tw = malloc((size_t)repeats * sizeof *tw), *tb = malloc((size_t)repeats * sizeof *tb);
    if (!tw || !tb) {
        fprintf(stderr, "bench_train_gemm: out of memory\n");
        return 1;
    }
    time_whole(B, D, Q, C, S, dQ, dC); /* warm-up: page faults of S, BLAS buffers */
    time_blocked(B, D, bs, Q, C, S, dQ, dC);
    /* Interleaved, so that a change of machine load hits both alike. */
    for (int r = 0; r < repeats; r++) {
        tw[r] = time_whole(B, D, Q, C, S, dQ, dC);
        tb[r] = time_blocked(B, D, bs, Q, C, S, dQ, dC);
    }
    double w = bench_median(tw, repeats), bl = bench_median(tb, repeats);
    double flops = 6.0 * (double)B * (double)B * (double)D;
    double gw = flops / w / 1e9, gb = flops / bl / 1e9, g = gw > gb ? gw : gb;
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    printf("{\"batch\": %d, \"dim\": %d, \"block\": %d, \"repeats\": %d, \"whole_s\": %.6f, "
           "\"blocked_s\": %.6f, \"whole_gflops\": %.2f, \"blocked_gflops\": %.2f, "
           "\"gflops\": %.2f, \"bound_ex_per_s\": %.1f, \"openblas_threads\": \"%s\"}\n",
           B, D, bs, repeats, w, bl, gw, gb, g, g * 1e9 / (6.0 * (double)B * (double)D),
           thr ? thr : "unset");
    free(tw);
    free(tb);
    free(Q);
    free(C);
    free(dQ);
    free(dC);
    free(S);
    return 0;
}
