/* gemm_tmpl.h — the one GEMM entry point of the model kernels over `real`
 * (row-major; CBLAS_GEMM is cblas_sgemm or cblas_dgemm, set by the includer).
 *
 * It exists so that degenerate shapes never reach BLAS (M or N == 0: nothing to do;
 * K == 0: C = beta C, which the reference BLAS and OpenBLAS disagree on handling),
 * and so that there is a single place to route small products differently.
 */

void S_(mr_mk_gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, R_ alpha, const R_ *A,
                    int64_t lda, const R_ *Bm, int64_t ldb, R_ beta, R_ *C, int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0 ? (R_)0 : beta * C[i * ldc + j];
        return;
    }
    CBLAS_GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
               (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, Bm, (blasint)ldb, beta,
               C, (blasint)ldc);
}
