/* layers_tmpl.h — body of the layer kernels over `real` (R_ / S_ set by the including
 * kernels_float.c / kernels_double.c; declarations and buffer rules in kernels_decl.h).
 *
 * Forward and backward of each layer sit side by side with the same argument order.
 * Backward kernels accumulate (+=) into parameter and embedding-row gradients and
 * overwrite (=) activation gradients; each prototype says which. Nothing here
 * allocates.
 *
 * Embedding gather / scatter-add work on the compact row buffers of a batch (model.h):
 * duplicates of a row in the batch are summed by the scatter-add, which is Keras's
 * sparse de-duplication done before the optimizer sees the rows.
 *
 * Masked mean: the example's token list holds only non-padding tokens, so the mean
 * is sum/count over that list (Keras's GlobalAveragePooling1D with mask_zero). An
 * example with no tokens gets a zero vector and sends no gradient: Keras would
 * produce 0/0 = NaN there (SEMANTICS.md section 6); docs/model.md records this.
 */

void S_(mr_mk_gather_rows)(const R_ *T, int dim, const int32_t *slot, int64_t n, R_ *out,
                           int64_t ld_out)
{
    for (int64_t b = 0; b < n; b++)
        memcpy(out + b * ld_out, T + (int64_t)slot[b] * dim, (size_t)dim * sizeof(R_));
}

void S_(mr_mk_scatter_add_rows)(R_ *dT, int dim, const int32_t *slot, int64_t n, const R_ *g,
                                int64_t ld_g)
{
    for (int64_t b = 0; b < n; b++) {
        R_ *dst = dT + (int64_t)slot[b] * dim;
        const R_ *src = g + b * ld_g;
        for (int k = 0; k < dim; k++)
            dst[k] += src[k];
    }
}

void S_(mr_mk_masked_mean_forward)(const R_ *Tk, int T, const int64_t *off, const int32_t *tslot,
                                   int64_t n, R_ *out, int64_t ld_out)
{
    for (int64_t b = 0; b < n; b++) {
        R_ *o = out + b * ld_out;
        for (int k = 0; k < T; k++)
            o[k] = 0;
        int64_t t0 = off[b], t1 = off[b + 1];
        if (t1 <= t0)
            continue; /* no tokens: zero vector (deviation from Keras's NaN, see top) */
        for (int64_t t = t0; t < t1; t++) {
            const R_ *row = Tk + (int64_t)tslot[t] * T;
            for (int k = 0; k < T; k++)
                o[k] += row[k];
        }
        /* Divide (not multiply by 1/n) as Keras's sum(e*m)/sum(m) does. */
        R_ cnt = (R_)(t1 - t0);
        for (int k = 0; k < T; k++)
            o[k] /= cnt;
    }
}

void S_(mr_mk_masked_mean_backward)(R_ *dTk, int T, const int64_t *off, const int32_t *tslot,
                                    int64_t n, const R_ *g, int64_t ld_g)
{
    for (int64_t b = 0; b < n; b++) {
        int64_t t0 = off[b], t1 = off[b + 1];
        if (t1 <= t0)
            continue;
        const R_ *gb = g + b * ld_g;
        R_ cnt = (R_)(t1 - t0);
        for (int64_t t = t0; t < t1; t++) {
            R_ *dst = dTk + (int64_t)tslot[t] * T;
            for (int k = 0; k < T; k++)
                dst[k] += gb[k] / cnt;
        }
    }
}

void S_(mr_mk_concat_cols)(const R_ *A, int da, const R_ *Bm, int db, int64_t n, R_ *out)
{
    int64_t w = da + db;
    for (int64_t b = 0; b < n; b++) {
        memcpy(out + b * w, A + b * da, (size_t)da * sizeof(R_));
        memcpy(out + b * w + da, Bm + b * db, (size_t)db * sizeof(R_));
    }
}

void S_(mr_mk_split_add_cols)(const R_ *g, int64_t n, R_ *dA, int da, R_ *dB, int db)
{
    int64_t w = da + db;
    for (int64_t b = 0; b < n; b++) {
        const R_ *gb = g + b * w;
        for (int k = 0; k < da; k++)
            dA[b * da + k] += gb[k];
        for (int k = 0; k < db; k++)
            dB[b * db + k] += gb[da + k];
    }
}

void S_(mr_mk_dense_forward)(const MrDense *L, const R_ *params, const R_ *X, int64_t n, R_ *Y)
{
    const R_ *W = params + L->w_off; /* [in x out] */
    const R_ *bias = params + L->b_off; /* [out] */
    int out = L->out;
    /* Y = 1 * bias (broadcast) then Y += X W: bias first keeps a single GEMM. */
    for (int64_t b = 0; b < n; b++)
        memcpy(Y + b * out, bias, (size_t)out * sizeof(R_));
    S_(mr_mk_gemm)(0, 0, n, out, L->in, (R_)1, X, L->in, W, out, (R_)1, Y, out);
    if (L->relu) {
        int64_t m = n * out;
        for (int64_t i = 0; i < m; i++)
            Y[i] = Y[i] > 0 ? Y[i] : 0;
    }
}

void S_(mr_mk_dense_backward)(const MrDense *L, const R_ *params, R_ *grads, const R_ *X,
                              const R_ *Y, int64_t n, const R_ *dY, R_ *dZ, R_ *dX)
{
    int in = L->in, out = L->out;
    int64_t m = n * out;
    if (L->relu) {
        /* relu'(z) = [z > 0] = [y > 0] (y = max(z, 0)); the kink gets 0 as in TF. */
        for (int64_t i = 0; i < m; i++)
            dZ[i] = Y[i] > 0 ? dY[i] : 0;
    } else if (dZ != dY) {
        memcpy(dZ, dY, (size_t)m * sizeof(R_));
    }
    R_ *dW = grads + L->w_off, *db = grads + L->b_off;
    /* dW[in x out] += X^T dZ */
    S_(mr_mk_gemm)(1, 0, in, out, n, (R_)1, X, in, dZ, out, (R_)1, dW, out);
    for (int64_t b = 0; b < n; b++) {
        const R_ *z = dZ + b * out;
        for (int k = 0; k < out; k++)
            db[k] += z[k];
    }
    if (dX) /* dX[n x in] = dZ W^T */
        S_(mr_mk_gemm)(0, 1, n, in, out, (R_)1, dZ, out, params + L->w_off, out, (R_)0, dX, in);
}

void S_(mr_mk_mse)(const R_ *pred, const R_ *rating, int64_t n, int64_t G, double weight,
                   R_ *dpred, double *sse)
{
    /* d/dpred of weight * sum_b (pred_b - r_b)^2 / G. G is the GLOBAL batch, so the
     * ranks' partial sums add up to Keras's batch mean (SUM_OVER_BATCH_SIZE). */
    double acc = 0.0;
    R_ f = (R_)(2.0 * weight / (double)(G > 0 ? G : 1));
    for (int64_t b = 0; b < n; b++) {
        R_ diff = pred[b] - rating[b];
        acc += (double)diff * (double)diff;
        dpred[b] = f * diff;
    }
    *sse = acc;
}
