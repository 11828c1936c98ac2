/* bench_ckpt.c — checkpoint write/read speed against the raw speed of the disk.
 *
 * Writes a Yelp-sized model (user and item embedding tables plus an Adagrad
 * accumulator of the same shapes: by default (2M+1 + 150K+1) x 32 float32 x 2,
 * about 0.55 GB) through the ckpt module, at whatever rank count it runs under,
 * in two modes:
 *   row         row i on rank i mod P, written collectively with strided
 *               hyperslabs (mr_ckpt_write_rows)
 *   replicated  every rank holds everything, rank 0 writes (mr_ckpt_write_root)
 * and measures, in the same run and on the same disk, the raw sequential write
 * speed (rank 0: write(2) in 8 MiB blocks + fsync) right before each checkpoint
 * write, after an unmeasured warm-up write of the same size, so that each pair
 * sees the same page-cache state; the ratio reported is the median of the
 * per-pair ratios. Each checkpoint write is
 * timed from writer_open to the end of commit (checksums, HDF5 writes, close,
 * read-back check, fsync, digest, rename, `latest`), the slowest rank's time.
 * Reads are timed after dropping the file from the page cache
 * (posix_fadvise DONTNEED, this file only): open + read of what each rank holds
 * (row: its strided rows; replicated: everything, on every rank). Verification
 * (mr_ckpt_verify, warm cache) is timed separately.
 *
 * Usage: [mpirun -np P] bench_ckpt [--dir DIR] [--users N] [--items M] [--dim D]
 *        [--reps K] [--deflate L] [--vocab] [--modes row,replicated] [--keep] [--debug]
 * Data are random-looking floats (the worst case for compression, like trained
 * embeddings). Prints one line per measurement and a summary with the medians.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpirec/ckpt.h"
#include "mpirec/comm.h"
#include "mpirec/hash.h"
#include "mpirec/log.h"
#include "bench_util.h"

typedef struct Opts {
    const char *dir;
    int64_t users, items;
    int dim, reps, deflate, vocab, keep;
    int row, replicated;
} Opts;

typedef struct Table {
    const char *path;
    int64_t rows;
    float *data; /* row mode: this rank's rows (rank, rank + P, ...); replicated: all */
    int64_t n_local;
} Table;

static int die(MrComm *c, const char *what, const MrErr *e)
{
    if (c->rank == 0)
        fprintf(stderr, "bench_ckpt: %s: %s\n", what, e->msg);
    mr_comm_abort(c, 1);
    return 1;
}

/* Rank 0: write `bytes` with write(2) in 8 MiB blocks, fsync; seconds. */
static double raw_write(const char *dir, int64_t bytes, const unsigned char *src, int64_t src_n)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw-write-test.bin", dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        fprintf(stderr, "bench_ckpt: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    /* 8 MiB writes of the model's own bytes (its first table, repeated). */
    const int64_t B = src_n < ((int64_t)8 << 20) ? src_n : (int64_t)8 << 20;
    double t0 = bench_now();
    for (int64_t off = 0; off < bytes; off += B) {
        int64_t n = bytes - off < B ? bytes - off : B;
        int64_t s = (off / B) * B % (src_n - B + 1);
        if (write(fd, src + s, (size_t)n) != n) {
            fprintf(stderr, "bench_ckpt: write %s: %s\n", path, strerror(errno));
            close(fd);
            unlink(path);
            return -1;
        }
    }
    if (fsync(fd) != 0)
        fprintf(stderr, "bench_ckpt: fsync %s: %s\n", path, strerror(errno));
    double t = bench_now() - t0;
    close(fd);
    unlink(path);
    return t;
}

static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* --debug: the module's own timing lines (commit phases). */
static void log_hook(MrLogLevel level, const char *line, void *ud)
{
    (void)ud;
    fprintf(stderr, "  [%s] %s\n", level == MR_LOG_DEBUG ? "debug" : "log", line);
}

static int parse(int argc, char **argv, Opts *o)
{
    o->dir = "bench-ckpt-tmp";
    o->users = 2000000;
    o->items = 150000;
    o->dim = 32;
    o->reps = 3;
    o->row = o->replicated = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dir") && v)
            o->dir = argv[++i];
        else if (!strcmp(a, "--users") && v)
            o->users = atoll(argv[++i]);
        else if (!strcmp(a, "--items") && v)
            o->items = atoll(argv[++i]);
        else if (!strcmp(a, "--dim") && v)
            o->dim = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && v)
            o->reps = atoi(argv[++i]);
        else if (!strcmp(a, "--deflate") && v)
            o->deflate = atoi(argv[++i]);
        else if (!strcmp(a, "--modes") && v) {
            const char *m = argv[++i];
            o->row = strstr(m, "row") != NULL;
            o->replicated = strstr(m, "replicated") != NULL;
        } else if (!strcmp(a, "--vocab"))
            o->vocab = 1;
        else if (!strcmp(a, "--keep"))
            o->keep = 1;
        else if (!strcmp(a, "--debug"))
            mr_log_set_hook(log_hook, NULL, MR_LOG_DEBUG);
        else {
            fprintf(stderr, "bench_ckpt: unknown or incomplete option '%s'\n", a);
            return 2;
        }
    }
    if (o->users < 1 || o->items < 1 || o->dim < 1 || o->reps < 1)
        return 2;
    return 0;
}

/* The vocabulary of n ids "u0000001"...: contiguous split over the ranks. */
static void make_vocab(int64_t n, const char *prefix, int rank, int P, char **bytes, int64_t **off,
                       int64_t *lo, int64_t *cnt)
{
    *lo = n * rank / P;
    *cnt = n * (rank + 1) / P - *lo;
    *bytes = malloc((size_t)*cnt * 24 + 1);
    *off = malloc((size_t)(*cnt + 1) * sizeof **off);
    (*off)[0] = 0;
    for (int64_t k = 0; k < *cnt; k++) {
        int len = snprintf(*bytes + (*off)[k], 24, "%s%019" PRId64, prefix, *lo + k);
        (*off)[k + 1] = (*off)[k] + len;
    }
}

int main(int argc, char **argv)
{
    MrComm comm;
    MrErr e;
    if (mr_comm_init(&comm, &argc, &argv, &e) != MR_OK) {
        fprintf(stderr, "bench_ckpt: %s\n", e.msg);
        return 1;
    }
    MrComm *c = &comm;
    int P = c->size, me = c->rank;
    Opts o;
    memset(&o, 0, sizeof o);
    if (parse(argc, argv, &o)) {
        if (me == 0)
            fprintf(
                stderr,
                "usage: bench_ckpt [--dir DIR] [--users N] [--items M] [--dim D] "
                "[--reps K] [--deflate L] [--vocab] [--modes row,replicated] [--keep] [--debug]\n");
        mr_comm_finalize(c);
        return 2;
    }
    const int D = o.dim;
    const int64_t U = o.users + 1, I = o.items + 1; /* row 0 = OOV */
    Table t[4] = {{"params/user_emb", U, NULL, 0},
                  {"params/item_emb", I, NULL, 0},
                  {"optim/user_emb/accum", U, NULL, 0},
                  {"optim/item_emb/accum", I, NULL, 0}};
    const int64_t data_bytes = 2 * (U + I) * D * (int64_t)sizeof(float);

    /* Row-mode data: this rank's rows; replicated data: everything. */
    float *all[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < 4; k++) {
        uint64_t base = mr_init_base(12345, (uint64_t)k + 1);
        all[k] = malloc((size_t)t[k].rows * D * sizeof(float));
        if (!all[k]) {
            fprintf(stderr, "bench_ckpt: out of memory\n");
            mr_comm_abort(c, 1);
        }
        for (int64_t j = 0; j < t[k].rows * D; j++)
            all[k][j] = k < 2 ? mr_init_value(base, (uint64_t)j, -0.05, 0.05)
                              : mr_init_value(base, (uint64_t)j, 0.1, 2.0);
        t[k].n_local = (t[k].rows - 1 - me) / P + 1;
        t[k].data = malloc((size_t)t[k].n_local * D * sizeof(float));
        for (int64_t q = 0; q < t[k].n_local; q++)
            memcpy(t[k].data + q * D, all[k] + (me + q * P) * D, (size_t)D * sizeof(float));
    }
    char *ub = NULL, *ib = NULL;
    int64_t *uo = NULL, *io = NULL, ulo = 0, un = 0, ilo = 0, in = 0;
    if (o.vocab) {
        make_vocab(o.users, "u", me, P, &ub, &uo, &ulo, &un);
        make_vocab(o.items, "i", me, P, &ib, &io, &ilo, &in);
    }
    if (me == 0) {
        if (mkdir(o.dir, 0775) != 0 && errno != EEXIST)
            fprintf(stderr, "bench_ckpt: cannot create %s: %s\n", o.dir, strerror(errno));
        printf("bench_ckpt: users=%" PRId64 " items=%" PRId64 " dim=%d ranks=%d tables=4 "
               "data=%.1f MB%s deflate=%d dir=%s\n",
               o.users, o.items, D, P, data_bytes / 1e6, o.vocab ? " +vocab" : "", o.deflate,
               o.dir);
        fflush(stdout);
    }
    mr_comm_barrier(c, &e);

    double raw[128], wr[2][64], rd[2][64], vf[2][64], ratio[2][64];
    int nraw = 0, nw[2] = {0, 0};
    int64_t file_bytes[2] = {0, 0};
    float *back = malloc((size_t)U * D * sizeof(float));
    for (int rep = 0; rep < o.reps && rep < 64; rep++) {
        for (int mode = 0; mode < 2; mode++) {
            if ((mode == 0 && !o.row) || (mode == 1 && !o.replicated))
                continue;
            /* A raw write right before each checkpoint write, both after the
             * previous file was deleted: the same page-cache conditions (on this
             * VM, writing into freshly freed pages is much faster than growing
             * the page cache, so unpaired numbers are not comparable). */
            double traw = 0;
            if (me == 0) {
                /* Unmeasured warm-up: on a VM, the first write into pages the
                 * guest has not used lately pays for them (several x slower);
                 * after it, both measured writes reuse the same freed pages. */
                raw_write(o.dir, data_bytes, (const unsigned char *)all[0],
                          U * D * (int64_t)sizeof(float));
                traw = raw_write(o.dir, data_bytes, (const unsigned char *)all[0],
                                 U * D * (int64_t)sizeof(float));
                if (traw > 0) {
                    raw[nraw++] = traw;
                    printf("raw write      rep %d: %.3f s  %7.1f MB/s\n", rep, traw,
                           data_bytes / traw / 1e6);
                    fflush(stdout);
                }
            }
            mr_comm_barrier(c, &e);
            const char *mname = mode == 0 ? "row" : "replicated";
            char dir[4200];
            snprintf(dir, sizeof dir, "%s/%s", o.dir, mname);
            char base[64];
            snprintf(base, sizeof base, "ckpt-%d", rep + 1);
            /* ---- write ---- */
            mr_comm_barrier(c, &e);
            double t0 = bench_now();
            MrCkptWriter *w = NULL;
            int rc = mr_ckpt_writer_open(&w, c, dir, base, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e);
            if (rc)
                return die(c, "writer_open", &e);
            mr_ckpt_writer_set_deflate(w, o.deflate);
            rc = mr_ckpt_write_attr_i64(w, "step", rep + 1, &e);
            for (int k = 0; k < 4 && !rc; k++)
                rc = mode == 0 ? mr_ckpt_write_rows(w, t[k].path, MR_F32, t[k].rows, D, me, P,
                                                    t[k].n_local, t[k].data, &e)
                               : mr_ckpt_write_root(w, t[k].path, MR_F32, t[k].rows, D, all[k], &e);
            if (!rc && o.vocab)
                rc = mr_ckpt_write_strings(w, "vocab/user", o.users, ulo, un, ub, uo, &e);
            if (!rc && o.vocab)
                rc = mr_ckpt_write_strings(w, "vocab/item", o.items, ilo, in, ib, io, &e);
            if (rc)
                return die(c, "write", &e);
            double t1 = bench_now();
            if ((rc = mr_ckpt_writer_commit(&w, "latest", 2, &e)))
                return die(c, "commit", &e);
            double t2 = bench_now();
            double tw[2] = {t2 - t0, t1 - t0};
            mr_comm_allreduce_f64(c, tw, 2, MR_MAX, &e);
            wr[mode][nw[mode]] = tw[0];
            char path[4300];
            snprintf(path, sizeof path, "%s/%s.h5", dir, base);
            struct stat st;
            if (me == 0 && stat(path, &st) == 0)
                file_bytes[mode] = (int64_t)st.st_size;
            /* ---- read (cold) ---- */
            if (me == 0)
                drop_cache(path);
            mr_comm_barrier(c, &e);
            t0 = bench_now();
            MrCkptReader *r = NULL;
            if ((rc = mr_ckpt_open(&r, c, path, MR_CKPT_MAGIC, MR_CKPT_VERSION, &e)))
                return die(c, "open", &e);
            for (int k = 0; k < 4 && !rc; k++)
                rc = mode == 0
                         ? mr_ckpt_read_rows(r, t[k].path, MR_F32, me, P, t[k].n_local, back, &e)
                         : mr_ckpt_read_all(r, t[k].path, MR_F32, back, &e);
            if (rc)
                return die(c, "read", &e);
            t1 = bench_now();
            /* Spot check of the last table read. */
            if (mode == 0 && memcmp(back, t[3].data, (size_t)t[3].n_local * D * 4) != 0)
                fprintf(stderr, "bench_ckpt: [rank %d] read back differs\n", me);
            if (mode == 1 && memcmp(back, all[3], (size_t)t[3].rows * D * 4) != 0)
                fprintf(stderr, "bench_ckpt: [rank %d] read back differs\n", me);
            rc = mr_ckpt_verify(r, &e);
            if (rc)
                return die(c, "verify", &e);
            t2 = bench_now();
            mr_ckpt_close(&r);
            double tr[3] = {t1 - t0, t2 - t1, 0};
            mr_comm_allreduce_f64(c, tr, 2, MR_MAX, &e);
            rd[mode][nw[mode]] = tr[0];
            vf[mode][nw[mode]] = tr[1];
            ratio[mode][nw[mode]] = traw > 0 ? traw / tw[0] : 0;
            nw[mode]++;
            /* Delete it now (unless --keep), like the raw file. */
            if (me == 0 && !o.keep)
                unlink(path);
            if (me == 0) {
                printf("%-10s     rep %d: write %.3f s %7.1f MB/s (datasets %.3f s, commit %.3f "
                       "s) | read cold %.3f s %7.1f MB/s | verify %.3f s\n",
                       mname, rep, tw[0], data_bytes / tw[0] / 1e6, tw[1], tw[0] - tw[1], tr[0],
                       (mode == 0 ? data_bytes : data_bytes * P) / tr[0] / 1e6, tr[1]);
                fflush(stdout);
            }
        }
    }
    if (me == 0) {
        double braw = nraw ? raw[0] : 0;
        for (int i = 1; i < nraw; i++)
            braw = raw[i] < braw ? raw[i] : braw;
        double mraw = nraw ? bench_median(raw, nraw) : 0;
        printf("summary (medians of %d reps, data %.1f MB, P=%d%s):\n", o.reps, data_bytes / 1e6, P,
               o.deflate ? ", deflate" : "");
        printf("  raw write+fsync        %7.1f MB/s (median), %7.1f MB/s (best)\n",
               mraw > 0 ? data_bytes / mraw / 1e6 : 0.0, braw > 0 ? data_bytes / braw / 1e6 : 0.0);
        for (int mode = 0; mode < 2; mode++) {
            if (!nw[mode])
                continue;
            double bw = wr[mode][0];
            for (int i = 1; i < nw[mode]; i++)
                bw = wr[mode][i] < bw ? wr[mode][i] : bw;
            double mw = bench_median(wr[mode], nw[mode]), mr = bench_median(rd[mode], nw[mode]),
                   mv = bench_median(vf[mode], nw[mode]), mq = bench_median(ratio[mode], nw[mode]);
            printf("  %-10s write        %7.1f MB/s = %3.0f%% of raw (median of paired ratios)   "
                   "file %.1f MB   read cold %7.1f MB/s   verify %.3f s\n",
                   mode == 0 ? "row" : "replicated", data_bytes / mw / 1e6, 100.0 * mq,
                   file_bytes[mode] / 1e6, (mode == 0 ? data_bytes : data_bytes * P) / mr / 1e6,
                   mv);
            printf("  %-10s best write   %7.1f MB/s = %3.0f%% of the best raw write\n",
                   mode == 0 ? "row" : "replicated", data_bytes / bw / 1e6,
                   braw > 0 ? 100.0 * braw / bw : 0.0);
        }
        if (!o.keep) {
            char cmd[4400];
            snprintf(cmd, sizeof cmd, "rm -rf '%s/row' '%s/replicated'", o.dir, o.dir);
            if (system(cmd) != 0)
                fprintf(stderr, "bench_ckpt: could not clean %s\n", o.dir);
            rmdir(o.dir);
        }
    }
    for (int k = 0; k < 4; k++) {
        free(all[k]);
        free(t[k].data);
    }
    free(back);
    free(ub);
    free(uo);
    free(ib);
    free(io);
    mr_comm_finalize(c);
    return 0;
}
