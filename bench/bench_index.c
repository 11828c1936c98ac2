/* bench_index.c — queries per second of the candidate index: exact search, and
 * IVF search at the smallest nprobe reaching given recall@k targets.
 *
 * A synthetic corpus stands in for trained item embeddings: `clusters` random
 * unit directions, items scattered around them (per-dimension noise `noise`) with
 * log-normal norms (sigma 0.5, so norms vary about 7x between the 1st and 99th
 * percentile), queries drawn around the same directions. Ground truth is the
 * exact top k of every query (our exact search, spot-checked here against a
 * double-precision loop).
 *
 * For each thread count (openblas_set_num_threads, which is what
 * OPENBLAS_NUM_THREADS sets, and the index sizes its own team from it):
 *   exact: batch search of the queries, `repeats` times -> median QPS;
 *   ivf:   nprobe swept upwards (then bisected) on the first `sweep-queries`
 *          queries until each target recall is reached; the recall reported at
 *          that nprobe is over all queries; it is timed `repeats` times -> median
 *          QPS.
 * --nprobe N skips the sweep and times nprobe N only (for profiling a search).
 * --sq8 also builds the same index with index.quantize (8-bit codes, int8 kernel,
 * exact rescoring of the best `--rescore` candidates) and reports it as "ivf-sq8".
 * Each timing repeat runs exact and every ivf configuration once, in turn; QPS is
 * the median over repeats, by wall clock and by process CPU time.
 * Timing uses the first `time-queries` queries (a batch; default 2000) so that
 * slow configurations (FAISS at recall 0.99) stay affordable.
 * With --dir the vectors and ground truth are written as .npy files, so that
 * tools/bench_faiss.py runs FAISS on exactly the same data
 * (tools/bench_index.sh drives both). Output: a table on stderr and one JSON
 * object per measurement on stdout.
 *
 * Not a test: it asserts nothing beyond the spot check, and it is slow (minutes at
 * 1M items).
 */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/index.h"
#include "bench_util.h"

typedef struct Opts {
    int64_t items, queries, time_queries, sweep_queries, nlist, rescore, nprobe;
    int dim, k, repeats, clusters, quantize, no_ivf, sq8;
    double noise, qnoise;
    uint64_t seed;
    char threads[64], targets[64];
    const char *dir;
} Opts;

/* Bytes the index holds in memory, from its public arrays (what mr_index_build
 * allocated; the derived search layout included). */
static double index_bytes(const MrIndex *ix)
{
    double n = (double)ix->n, d = ix->d, L = (double)ix->nlist;
    double cells = (double)ix->nblk * d * MR_INDEX_LANES;
    double b = n * d * 4 + (double)ix->ids_off[ix->n] + (n + 1) * 8;
    if (ix->id_order)
        b += n * 8;
    if (ix->nlist > 0) {
        b += L * d * 4 + L * 4 + 2 * (L + 1) * 8 + n * 8; /* centroids, bias, offsets, items */
        b += L * 8;                                         /* scan_order */
        b += ceil(L / MR_INDEX_LANES) * MR_INDEX_LANES * d * 4; /* cent_blk */
        b += ix->list_emb ? cells * 4 : 0;
        b += ix->codes ? cells + 2 * d * 4 : 0;
    }
    return b;
}

/* Peak resident set size of this process, MiB. */
static double peak_rss_mib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : -1;
}

/* CPU time of the whole process (all threads), seconds. */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 1-minute load average (the machine is shared: recorded with every figure). */
static double load1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static double gauss(uint64_t seed, uint64_t i)
{
    double u1 = mr_hash_unit(mr_mix(seed, 2 * i)), u2 = mr_hash_unit(mr_mix(seed, 2 * i + 1));
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void make_data(const Opts *o, float **X, float **Q)
{
    int d = o->dim;
    double *mu = malloc((size_t)o->clusters * (size_t)d * sizeof *mu);
    for (int c = 0; c < o->clusters; c++) {
        double s = 0;
        for (int t = 0; t < d; t++) {
            mu[c * d + t] = gauss(mr_mix(o->seed, 1), (uint64_t)(c * d + t));
            s += mu[c * d + t] * mu[c * d + t];
        }
        for (int t = 0; t < d; t++)
            mu[c * d + t] /= sqrt(s);
    }
    *X = malloc((size_t)(o->items * d) * sizeof **X);
    *Q = malloc((size_t)(o->queries * d) * sizeof **Q);
    double v[1024];
    for (int64_t i = 0; i < o->items; i++) {
        int c = (int)(mr_mix(mr_mix(o->seed, 2), (uint64_t)i) % (uint64_t)o->clusters);
        double s = 0;
        for (int t = 0; t < d; t++) {
            v[t] = mu[c * d + t] + o->noise * gauss(mr_mix(o->seed, 3), (uint64_t)(i * d + t));
            s += v[t] * v[t];
        }
        double norm = exp(0.5 * gauss(mr_mix(o->seed, 4), (uint64_t)i));
        for (int t = 0; t < d; t++)
            (*X)[i * d + t] = (float)(v[t] / sqrt(s) * norm);
    }
    for (int64_t q = 0; q < o->queries; q++) {
        int c = (int)(mr_mix(mr_mix(o->seed, 6), (uint64_t)q) % (uint64_t)o->clusters);
        for (int t = 0; t < d; t++)
            (*Q)[q * d + t] = (float)(mu[c * d + t] +
                                      o->qnoise * gauss(mr_mix(o->seed, 7), (uint64_t)(q * d + t)));
    }
    free(mu);
}

/* .npy version 1.0, little-endian, C order. */
static int write_npy(const char *dir, const char *name, const char *descr, const void *data,
                     int64_t rows, int64_t cols, size_t elem)
{
    char path[4096], hdr[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int hl = snprintf(hdr, sizeof hdr,
                      "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }", descr,
                      (long long)rows, (long long)cols);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    unsigned short len = (unsigned short)(hl + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(len & 0xff, f);
    fputc(len >> 8, f);
    fwrite(hdr, 1, (size_t)hl, f);
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    size_t n = (size_t)(rows * cols);
    int ok = fwrite(data, elem, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

static double recall(const int64_t *gt, const int64_t *got, int64_t nq, int k)
{
    int64_t hit = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                if (got[q * k + b] == gt[q * k + a]) {
                    hit++;
                    break;
                }
    return (double)hit / (double)(nq * k);
}

static int parse_list(const char *s, double *v, int max)
{
    int n = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < max; tok = strtok(NULL, ","))
        v[n++] = atof(tok);
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_index [--items N] [--dim D] [--queries Q] [--time-queries T]\n"
            "                   [--sweep-queries S]\n"
            "                   [--k K] [--threads 1,2] [--repeats R] [--targets 0.9,0.95,0.99]\n"
            "                   [--nlist L] [--clusters C] [--noise S] [--qnoise S] [--quantize]\n"
            "                   [--rescore R] [--sq8] [--nprobe N]\n"
            "                   [--seed S] [--dir DIR] [--no-ivf]\n");
}

static int search_ivf(const MrIndex *ix, const float *Q, int64_t nq, int k, int64_t np, int64_t *it,
                      float *sc)
{
    MrErr e;
    if (mr_index_search(ix, Q, nq, k, np, NULL, it, sc, &e) != MR_OK) {
        fprintf(stderr, "search failed: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    Opts o = {.items = 1000000,
              .queries = 10000,
              .time_queries = 2000,
              .sweep_queries = 2000,
              .dim = 32,
              .k = 10,
              .repeats = 5,
              .clusters = 1000,
              .noise = 0.16,
              .qnoise = 0.1,
              .seed = 42,
              .threads = "1,2",
              .targets = "0.9,0.95,0.99"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quantize")) {
            o.quantize = 1;
            continue;
        }
        if (!strcmp(a, "--sq8")) {
            o.sq8 = 1;
            continue;
        }
        if (!strcmp(a, "--no-ivf")) {
            o.no_ivf = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--items"))
            o.items = atoll(v);
        else if (!strcmp(a, "--dim"))
            o.dim = atoi(v);
        else if (!strcmp(a, "--queries"))
            o.queries = atoll(v);
        else if (!strcmp(a, "--time-queries"))
            o.time_queries = atoll(v);
        else if (!strcmp(a, "--sweep-queries"))
            o.sweep_queries = atoll(v);
        else if (!strcmp(a, "--k"))
            o.k = atoi(v);
        else if (!strcmp(a, "--threads"))
            snprintf(o.threads, sizeof o.threads, "%s", v);
        else if (!strcmp(a, "--targets"))
            snprintf(o.targets, sizeof o.targets, "%s", v);
        else if (!strcmp(a, "--repeats"))
            o.repeats = atoi(v);
        else if (!strcmp(a, "--nlist"))
            o.nlist = atoll(v);
        else if (!strcmp(a, "--nprobe"))
            o.nprobe = atoll(v);
        else if (!strcmp(a, "--rescore"))
            o.rescore = atoll(v);
        else if (!strcmp(a, "--clusters"))
            o.clusters = atoi(v);
        else if (!strcmp(a, "--noise"))
            o.noise = atof(v);
        else if (!strcmp(a, "--qnoise"))
            o.qnoise = atof(v);
        else if (!strcmp(a, "--seed"))
            o.seed = (uint64_t)atoll(v);
        else if (!strcmp(a, "--dir"))
            o.dir = v;
        else {
            usage();
            return 2;
        }
    }
    if (o.items < 1 || o.dim < 1 || o.dim > 1024 || o.queries < 1 || o.k < 1 || o.repeats < 1) {
        usage();
        return 2;
    }
    int64_t nq = o.queries;
    int64_t nt = o.time_queries > 0 && o.time_queries < nq ? o.time_queries : nq;
    int64_t nsw = o.sweep_queries > 0 && o.sweep_queries < nq ? o.sweep_queries : nq;
    int d = o.dim, k = o.k;
    double tgt[8], thr[8];
    int ntgt = parse_list(o.targets, tgt, 8), nthr = parse_list(o.threads, thr, 8);

    double t0 = bench_now();
    float *X, *Q;
    make_data(&o, &X, &Q);
    fprintf(stderr, "data: %lld items x %d, %lld queries (%.1f s)\n", (long long)o.items, d,
            (long long)nq, bench_now() - t0);

    MrConfig cfg;
    mr_config_defaults(&cfg);
    MrIndexParams p;
    mr_index_params_from_config(&p, &cfg, o.seed);
    p.kind = o.no_ivf ? MR_INDEX_EXACT : MR_INDEX_IVF;
    p.nlist = o.nlist;
    p.nprobe = 1; /* swept below; the build's own nprobe search is not what we time */
    p.quantize = o.quantize;
    if (o.rescore > 0)
        p.rescore = o.rescore;
    MrIndex ix;
    MrErr e;
    int maxthr = 1;
    for (int i = 0; i < nthr; i++)
        maxthr = (int)thr[i] > maxthr ? (int)thr[i] : maxthr;
    openblas_set_num_threads(maxthr);
    t0 = bench_now();
    if (mr_index_build(&ix, &p, X, o.items, d, NULL, NULL, Q, 100, k, &e) != MR_OK) {
        fprintf(stderr, "build failed: %s\n", e.msg);
        return 1;
    }
    double build_s = bench_now() - t0;
    if (!o.no_ivf)
        fprintf(stderr, "ivf build: nlist %lld, %.1f s with %d threads\n", (long long)ix.nlist,
                build_s, maxthr);

    size_t m = (size_t)(nq * k);
    int64_t *gt = malloc(m * sizeof *gt), *it = malloc(m * sizeof *it);
    float *sc = malloc(m * sizeof *sc);
    t0 = bench_now();
    if (mr_index_search_exact(&ix, Q, nq, k, NULL, gt, sc, &e) != MR_OK) {
        fprintf(stderr, "exact failed: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "ground truth: %.1f s\n", bench_now() - t0);
    /* spot check against double precision: the top item's score */
    int bad = 0;
    for (int64_t q = 0; q < nq; q += nq / 16 + 1) {
        double best = -INFINITY;
        for (int64_t i = 0; i < o.items; i++) {
            double s = 0;
            for (int t = 0; t < d; t++)
                s += (double)Q[q * d + t] * X[i * d + t];
            best = s > best ? s : best;
        }
        bad += fabs(best - sc[q * k]) > 1e-4 * (1 + fabs(best));
    }
    if (bad) {
        fprintf(stderr, "spot check FAILED on %d queries\n", bad);
        return 1;
    }
    if (o.dir) {
        mkdir(o.dir, 0755);
        if (write_npy(o.dir, "items.npy", "<f4", X, o.items, d, 4) ||
            write_npy(o.dir, "queries.npy", "<f4", Q, nq, d, 4) ||
            write_npy(o.dir, "gt.npy", "<i8", gt, nq, k, 8)) {
            fprintf(stderr, "cannot write to %s: %s\n", o.dir, strerror(errno));
            return 1;
        }
    }
    /* memory: the index's arrays, and what exact search alone would need (the
     * embeddings and ids: an exact index is exactly that) */
    double ib = index_bytes(&ix),
           eb = (double)o.items * d * 4 + (double)ix.ids_off[ix.n] + (double)(o.items + 1) * 8;
    fprintf(stderr, "index memory: %.1f MiB (exact: %.1f MiB); peak RSS so far %.0f MiB\n",
            ib / 1048576, eb / 1048576, peak_rss_mib());
    printf("{\"impl\": \"mpirec\", \"kind\": \"build\", \"items\": %lld, \"dim\": %d, \"nlist\": "
           "%lld, \"quantize\": %d, \"seconds\": %.2f, \"threads\": %d, \"index_mib\": %.1f, "
           "\"exact_mib\": %.1f, \"load1\": %.2f}\n",
           (long long)o.items, d, (long long)ix.nlist, o.quantize, build_s, maxthr, ib / 1048576,
           eb / 1048576, load1());

    /* The variants timed: ix (float lists, or codes with --quantize), and with --sq8
     * a second index with the same parameters and seed (so the same k-means and
     * lists) whose lists are 8-bit codes. */
    MrIndex sx;
    memset(&sx, 0, sizeof sx);
    const MrIndex *var[2] = {&ix, NULL};
    const char *vname[2] = {o.quantize ? "ivf-sq8" : "ivf", "ivf-sq8"};
    int nvar = o.no_ivf ? 0 : 1;
    if (o.sq8 && !o.no_ivf && !o.quantize) {
        MrIndexParams ps = p;
        ps.quantize = 1;
        t0 = bench_now();
        if (mr_index_build(&sx, &ps, X, o.items, d, NULL, NULL, Q, 100, k, &e) != MR_OK) {
            fprintf(stderr, "sq8 build failed: %s\n", e.msg);
            return 1;
        }
        double sb = bench_now() - t0, sib = index_bytes(&sx);
        fprintf(stderr, "ivf-sq8 build: %.1f s, index memory %.1f MiB\n", sb, sib / 1048576);
        printf("{\"impl\": \"mpirec\", \"kind\": \"build-sq8\", \"items\": %lld, \"seconds\": "
               "%.2f, \"threads\": %d, \"index_mib\": %.1f, \"rescore\": %lld, \"load1\": %.2f}\n",
               (long long)o.items, sb, maxthr, sib / 1048576, (long long)sx.p.rescore, load1());
        var[nvar++] = &sx;
    }

    /* recall as a function of nprobe (thread count does not change results) */
    int64_t L = ix.nlist;
    int64_t best_np[2][8];
    double best_rec[2][8];
    for (int v = 0; v < nvar; v++) {
        for (int j = 0; j < ntgt; j++)
            best_np[v][j] = -1;
        int64_t lo = 0, np = 1; /* recall(lo) < every unmet target */
        if (o.nprobe > 0) { /* fixed nprobe: no sweep, one "target" */
            ntgt = 1;
            tgt[0] = 0;
            best_np[v][0] = o.nprobe < L ? o.nprobe : L;
        }
        while (o.nprobe <= 0) {
            if (search_ivf(var[v], Q, nsw, k, np, it, sc))
                return 1;
            double r = recall(gt, it, nsw, k);
            fprintf(stderr, "  nprobe %5lld  %s recall@%d %.4f (first %lld queries)\n",
                    (long long)np, vname[v], k, r, (long long)nsw);
            for (int j = 0; j < ntgt; j++) {
                if (best_np[v][j] >= 0 || r < tgt[j])
                    continue;
                /* bisect (lo, np] for the smallest nprobe reaching tgt[j] */
                int64_t a = lo, b = np;
                while (b - a > 1) {
                    int64_t mid = a + (b - a) / 2;
                    if (search_ivf(var[v], Q, nsw, k, mid, it, sc))
                        return 1;
                    if (recall(gt, it, nsw, k) >= tgt[j])
                        b = mid;
                    else
                        a = mid;
                }
                best_np[v][j] = b;
            }
            int done = 1;
            for (int j = 0; j < ntgt; j++)
                done &= best_np[v][j] >= 0;
            if (done || np >= L)
                break;
            lo = np;
            np = np < 8 ? np + 1 : np + np / 4;
            if (np > L)
                np = L;
        }
        /* the recall reported is over all queries */
        for (int j = 0; j < ntgt; j++)
            if (best_np[v][j] >= 0) {
                if (search_ivf(var[v], Q, nq, k, best_np[v][j], it, sc))
                    return 1;
                best_rec[v][j] = recall(gt, it, nq, k);
            }
    }

    /* Timing: each repeat times exact search and then every (variant, target) once,
     * so that the runs compared in a ratio alternate under the same load. Wall
     * clock gives the QPS; the process CPU time is recorded too (queries per CPU
     * second: less sensitive to other processes taking the cores, though not to
     * their use of the shared caches). */
    int nslot = 1 + 2 * 8;
    double *runs = malloc((size_t)(nslot * o.repeats) * sizeof *runs);
    double *cpu = malloc((size_t)(nslot * o.repeats) * sizeof *cpu);
    for (int ti = 0; ti < nthr; ti++) {
        int th = (int)thr[ti];
        openblas_set_num_threads(th);
        for (int r = 0; r < o.repeats; r++) {
            double c0 = cpu_now();
            t0 = bench_now();
            if (mr_index_search_exact(&ix, Q, nt, k, NULL, it, sc, &e) != MR_OK)
                return 1;
            runs[r] = (double)nt / (bench_now() - t0);
            cpu[r] = (double)nt / (cpu_now() - c0);
            for (int v = 0; v < nvar; v++)
                for (int j = 0; j < ntgt; j++) {
                    if (best_np[v][j] < 0)
                        continue;
                    int slot = 1 + v * 8 + j;
                    c0 = cpu_now();
                    t0 = bench_now();
                    if (search_ivf(var[v], Q, nt, k, best_np[v][j], it, sc))
                        return 1;
                    runs[slot * o.repeats + r] = (double)nt / (bench_now() - t0);
                    cpu[slot * o.repeats + r] = (double)nt / (cpu_now() - c0);
                }
        }
        double qe = bench_median(runs, o.repeats), ce = bench_median(cpu, o.repeats);
        fprintf(stderr, "threads %d: exact %.0f QPS, %.0f per CPU second (median of %d, %lld queries)\n",
                th, qe, ce, o.repeats, (long long)nt);
        printf("{\"impl\": \"mpirec\", \"kind\": \"exact\", \"items\": %lld, \"threads\": %d, "
               "\"queries\": %lld, \"qps\": %.1f, \"qps_cpu\": %.1f, \"load1\": %.2f}\n",
               (long long)o.items, th, (long long)nt, qe, ce, load1());
        for (int v = 0; v < nvar; v++)
            for (int j = 0; j < ntgt; j++) {
                if (best_np[v][j] < 0) {
                    fprintf(stderr, "  %s target %.2f not reached\n", vname[v], tgt[j]);
                    continue;
                }
                int slot = 1 + v * 8 + j;
                double qi = bench_median(runs + slot * o.repeats, o.repeats);
                double ci = bench_median(cpu + slot * o.repeats, o.repeats);
                int quant = var[v]->p.quantize;
                fprintf(stderr,
                        "  %s recall@%d >= %.2f: nprobe %lld (recall %.4f) %.0f QPS = %.1fx "
                        "exact (CPU time: %.1fx)\n",
                        vname[v], k, tgt[j], (long long)best_np[v][j], best_rec[v][j], qi, qi / qe,
                        ci / ce);
                printf("{\"impl\": \"mpirec\", \"kind\": \"%s\", \"quantize\": %d, \"rescore\": "
                       "%lld, \"items\": %lld, \"threads\": %d, \"target\": %.3f, \"nprobe\": "
                       "%lld, \"nlist\": %lld, \"recall\": %.4f, \"qps\": %.1f, \"qps_cpu\": %.1f, "
                       "\"speedup_vs_exact\": %.2f, \"speedup_cpu\": %.2f, \"load1\": %.2f}\n",
                       vname[v], quant, (long long)var[v]->p.rescore, (long long)o.items, th,
                       tgt[j], (long long)best_np[v][j], (long long)L, best_rec[v][j], qi, ci,
                       qi / qe, ci / ce, load1());
            }
        fflush(stdout);
    }
    printf("{\"impl\": \"mpirec\", \"kind\": \"memory\", \"items\": %lld, \"peak_rss_mib\": "
           "%.0f}\n",
           (long long)o.items, peak_rss_mib());
    free(runs);
    free(cpu);
    mr_index_free(&sx);
    free(gt);
    free(it);
    free(sc);
    free(X);
    free(Q);
    mr_index_free(&ix);
    return 0;
}
