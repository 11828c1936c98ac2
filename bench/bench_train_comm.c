/* bench_train_comm.c — the alpha-beta model of this machine's MPI, fitted and then
 * checked against the collectives of one training step at their real sizes.
 *
 *   mpirun -np P bench_train_comm [--batch B] [--dim D] [--users U] [--items I]
 *                                 [--repeats R]
 *
 * Everything goes through mpirec's own communicator (src/dist/comm.c), so the
 * figures include its wrappers and its byte accounting (MrComm.bytes_sent).
 *
 * 1. alpha and beta. A pairwise exchange (mr_comm_alltoallv_small: every rank sends
 *    n bytes to every other rank) at n = 8 B ... 16 MiB, median of R timings of the
 *    slowest rank. With P - 1 messages per rank per exchange,
 *        t(n) / (P - 1) = alpha + n / beta;
 *    alpha = t(8 B) / (P - 1); beta by least squares over 32 KiB .. 4 MiB (the
 *    sizes a step sends); the 16 MiB rate (beyond the caches) is printed apart.
 * 2. One retrieval step's collectives (docs/training.md, src/train/step.c,
 *    src/dist/emb.c), for a rank holding B/P examples with U unique users and I
 *    unique items (defaults: U = B/P, I = B/(2P)):
 *      step:        allgatherv of the candidate outputs (B/P x D floats per rank),
 *                   reduce-scatter of their gradients (B x D floats), the
 *                   agreement allreduce (6 doubles);
 *      row mode:    per table: alltoall of counts, alltoallv of ids (8 B per row),
 *                   alltoallv of rows back (4D B), alltoall of counts, alltoallv
 *                   of (id, gradient) records (8 + 4D B); ids spread evenly
 *                   over owners, so (P-1)/P of each goes to other ranks;
 *      replicated:  per table: allgather of the count, allgatherv of the rank's
 *                   (id, gradient) records to every rank.
 *    Each part is timed on its own (median over R of the slowest rank's time) next
 *    to the model  collectives x (P - 1) alpha + bytes sent / beta, with the bytes
 *    the communicator counted; then the totals per mode (row / replicated, global
 *    or local negatives; with local negatives the two candidate collectives drop).
 * Prints one JSON line per result (stdout, rank 0). Not a test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/comm.h"
#include "bench_util.h"

static MrComm g_c;

static void check(int rc, const MrErr *e)
{
    if (rc) {
        fprintf(stderr, "bench_train_comm: [rank %d] %s\n", g_c.rank, e->msg);
        mr_comm_abort(&g_c, 1);
    }
}

static void *xalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        fprintf(stderr, "bench_train_comm: out of memory (%zu bytes)\n", n);
        mr_comm_abort(&g_c, 1);
    }
    return p;
}

/* Slowest rank's time of the last operation. */
static double slowest(MrComm *c, double t)
{
    MrErr e;
    check(mr_comm_allreduce_f64(c, &t, 1, MR_MAX, &e), &e);
    return t;
}

/* Pairwise exchange of n bytes to every other rank. */
static double exchange(MrComm *c, char *sb, char *rb, int64_t *sn, int64_t *rn, int64_t n)
{
    MrErr e;
    for (int q = 0; q < c->size; q++)
        sn[q] = rn[q] = q == c->rank ? 0 : n;
    check(mr_comm_barrier(c, &e), &e);
    double t0 = mr_comm_wtime();
    check(mr_comm_alltoallv_small(c, sb, sn, rb, rn, &e), &e);
    return slowest(c, mr_comm_wtime() - t0);
}

typedef struct Bufs {
    char *sb, *rb;
    float *fs, *fr;
    int64_t *sn, *rn, *cnt, *cnt2;
} Bufs;

/* Even split of `total` bytes over the other ranks (self gets 0). */
static void spread(const MrComm *c, int64_t total, int64_t unit, int64_t *v)
{
    int P = c->size;
    int64_t units = total / unit, k = 0;
    for (int q = 0; q < P; q++) {
        if (q == c->rank) {
            v[q] = 0;
            continue;
        }
        v[q] = (units / (P - 1) + (k < units % (P - 1) ? 1 : 0)) * unit;
        k++;
    }
}

/* One table's row-mode exchange for `u` unique rows (lookup + gradients). Returns
 * the number of collectives. */
static int row_table(MrComm *c, Bufs *b, int64_t u, int D)
{
    MrErr e;
    int P = c->size;
    int64_t remote = u * (P - 1) / P;
    spread(c, remote * 8, 8, b->sn);
    check(mr_comm_alltoall_i64(c, b->sn, b->rn, &e), &e);
    check(mr_comm_alltoallv_small(c, b->sb, b->sn, b->rb, b->rn, &e), &e);
    spread(c, remote * 4 * D, 4 * D, b->sn);
    spread(c, remote * 4 * D, 4 * D, b->rn);
    check(mr_comm_alltoallv_small(c, b->sb, b->sn, b->rb, b->rn, &e), &e);
    spread(c, remote * (8 + 4 * D), 8 + 4 * D, b->sn);
    check(mr_comm_alltoall_i64(c, b->sn, b->rn, &e), &e);
    check(mr_comm_alltoallv_small(c, b->sb, b->sn, b->rb, b->rn, &e), &e);
    return 5;
}

static int repl_table(MrComm *c, Bufs *b, int64_t u, int D)
{
    MrErr e;
    int64_t mine = u * (8 + 4 * D);
    check(mr_comm_allgather(c, &mine, 8, b->rn, &e), &e);
    check(mr_comm_allgatherv(c, b->sb, (size_t)mine, b->rb, b->rn, &e), &e);
    return 2;
}

/* The step-level collectives with global negatives: part 0 = allgatherv of the
 * candidate outputs, 1 = reduce-scatter of their gradients, 2 = the agreement
 * allreduce (6 doubles). */
static int step_part(MrComm *c, Bufs *b, int64_t B, int D, int part)
{
    MrErr e;
    int P = c->size;
    for (int q = 0; q < P; q++) {
        int64_t lo = B * q / P, hi = B * (q + 1) / P;
        b->cnt[q] = (hi - lo) * D;          /* floats */
        b->cnt2[q] = (hi - lo) * D * 4;     /* bytes */
    }
    if (part == 0)
        check(mr_comm_allgatherv(c, b->fs, (size_t)b->cnt2[c->rank], b->fr, b->cnt2, &e), &e);
    else if (part == 1)
        check(mr_comm_reduce_scatter_f32(c, b->fr, b->fs, b->cnt, &e), &e);
    else {
        double agree[6] = {0};
        check(mr_comm_allreduce_f64(c, agree, 6, MR_SUM, &e), &e);
    }
    return 1;
}

int main(int argc, char **argv)
{
    MrErr e;
    if (mr_comm_init(&g_c, &argc, &argv, &e)) {
        fprintf(stderr, "bench_train_comm: %s\n", e.msg);
        return 1;
    }
    MrComm *c = &g_c;
    int P = c->size, D = 32, R = 20;
    int64_t B = 8192, U = -1, I = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc)
            D = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--users") && i + 1 < argc)
            U = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--items") && i + 1 < argc)
            I = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            R = atoi(argv[++i]);
        else {
            if (c->rank == 0)
                fprintf(stderr,
                        "usage: mpirun -np P %s [--batch B] [--dim D] [--users U] [--items I] "
                        "[--repeats R]\n",
                        argv[0]);
            mr_comm_finalize(c);
            return 2;
        }
    }
    if (P < 2) {
        if (c->rank == 0)
            fprintf(stderr, "bench_train_comm: needs at least 2 ranks (mpirun -np 2 ...)\n");
        mr_comm_finalize(c);
        return 2;
    }
    if (U < 0)
        U = B / P;
    if (I < 0)
        I = B / (2 * P);
    if (R < 3)
        R = 3;
    const int64_t NMAX = (int64_t)16 << 20;
    int64_t rec = 8 + 4 * (int64_t)D, umax = U > I ? U : I;
    size_t big = (size_t)NMAX * (size_t)(P - 1);
    size_t need = (size_t)(umax * rec * P);
    if (need > big)
        big = need;
    Bufs b;
    b.sb = xalloc(big);
    b.rb = xalloc(big);
    b.fs = xalloc((size_t)(B * D) * sizeof(float));
    b.fr = xalloc((size_t)(B * D) * sizeof(float));
    b.sn = xalloc((size_t)P * 8);
    b.rn = xalloc((size_t)P * 8);
    b.cnt = xalloc((size_t)P * 8);
    b.cnt2 = xalloc((size_t)P * 8);
    double *t = xalloc((size_t)R * sizeof(double));

    /* 1. alpha, beta */
    int64_t sizes[] = {8,       64,      512,     4096,    32768,    131072,
                       262144,  1 << 20, 2 << 20, 4 << 20, 16 << 20};
    int ns = (int)(sizeof sizes / sizeof sizes[0]);
    double tm[16];
    for (int k = 0; k < ns; k++) {
        exchange(c, b.sb, b.rb, b.sn, b.rn, sizes[k]); /* warm-up */
        for (int r = 0; r < R; r++)
            t[r] = exchange(c, b.sb, b.rb, b.sn, b.rn, sizes[k]);
        tm[k] = bench_median(t, R) / (P - 1);
        if (c->rank == 0)
            printf("{\"kind\": \"exchange\", \"ranks\": %d, \"bytes\": %lld, \"seconds_per_message\": "
                   "%.9f, \"gb_s\": %.3f}\n",
                   P, (long long)sizes[k], tm[k], sizes[k] / tm[k] / 1e9);
    }
    /* beta: least squares of t - alpha = n / beta over the message sizes a step
     * sends (32 KiB .. 4 MiB); 16 MiB (beyond the caches) reported apart. */
    double alpha = tm[0], sxx = 0, sxy = 0;
    for (int k = 0; k < ns; k++)
        if (sizes[k] >= 32768 && sizes[k] <= (4 << 20)) {
            sxx += (double)sizes[k] * (double)sizes[k];
            sxy += (double)sizes[k] * (tm[k] - alpha);
        }
    double beta = sxy > 0 ? sxx / sxy : sizes[ns - 1] / tm[ns - 1];
    if (c->rank == 0)
        printf("{\"kind\": \"alphabeta\", \"ranks\": %d, \"alpha_us\": %.3f, \"beta_gb_s\": %.3f, "
               "\"beta_16mib_gb_s\": %.3f}\n",
               P, alpha * 1e6, beta / 1e9, sizes[ns - 1] / tm[ns - 1] / 1e9);

    /* 2. one step's collectives, each part timed on its own (median of R) */
    const char *parts[] = {"allgatherv_candidates", "reduce_scatter_candidate_grads",
                           "agree_allreduce", "row_tables", "replicated_tables"};
    double pm[5], pmodel[5];
    int64_t pbytes[5];
    int pcoll[5];
    for (int k = 0; k < 5; k++) {
        for (int r = -1; r < R; r++) {
            check(mr_comm_barrier(c, &e), &e);
            int64_t b0 = c->bytes_sent;
            double t0 = mr_comm_wtime();
            int n = k < 3   ? step_part(c, &b, B, D, k)
                    : k == 3 ? row_table(c, &b, U, D) + row_table(c, &b, I, D)
                             : repl_table(c, &b, U, D) + repl_table(c, &b, I, D);
            double dt = slowest(c, mr_comm_wtime() - t0);
            if (r >= 0)
                t[r] = dt;
            pcoll[k] = n;
            pbytes[k] = c->bytes_sent - b0;
        }
        pm[k] = bench_median(t, R);
        pmodel[k] = pcoll[k] * (P - 1) * alpha + (double)pbytes[k] / beta;
        if (c->rank == 0)
            printf("{\"kind\": \"part\", \"part\": \"%s\", \"ranks\": %d, \"collectives\": %d, "
                   "\"bytes_sent_rank0\": %lld, \"measured_ms\": %.4f, \"model_ms\": %.4f}\n",
                   parts[k], P, pcoll[k], (long long)pbytes[k], pm[k] * 1e3, pmodel[k] * 1e3);
    }
    /* totals per mode: global negatives = parts 0-2 + tables; local = agree + tables */
    const char *modes[] = {"row", "replicated", "row_local_negatives", "replicated_local_negatives"};
    for (int m = 0; m < 4; m++) {
        int tab = m % 2 ? 4 : 3, glob = m < 2;
        double meas = pm[2] + pm[tab] + (glob ? pm[0] + pm[1] : 0);
        double model = pmodel[2] + pmodel[tab] + (glob ? pmodel[0] + pmodel[1] : 0);
        int64_t by = pbytes[2] + pbytes[tab] + (glob ? pbytes[0] + pbytes[1] : 0);
        int nc = pcoll[2] + pcoll[tab] + (glob ? pcoll[0] + pcoll[1] : 0);
        if (c->rank == 0)
            printf("{\"kind\": \"step\", \"mode\": \"%s\", \"ranks\": %d, \"batch\": %lld, "
                   "\"dim\": %d, \"users_per_rank\": %lld, \"items_per_rank\": %lld, "
                   "\"collectives\": %d, \"bytes_sent_rank0\": %lld, \"measured_ms\": %.4f, "
                   "\"model_ms\": %.4f}\n",
                   modes[m], P, (long long)B, D, (long long)U, (long long)I, nc, (long long)by,
                   meas * 1e3, model * 1e3);
    }
    free(t);
    free(b.sb);
    free(b.rb);
    free(b.fs);
    free(b.fr);
    free(b.sn);
    free(b.rn);
    free(b.cnt);
    free(b.cnt2);
    mr_comm_finalize(c);
    return 0;
}
