/* bench_ingest.c — ingestion throughput per rank, next to the raw read speed of the
 * same file measured in the same run.
 *
 *   mpirun -np P bench_ingest FILE [repeats]
 *
 * FILE: a CSV with header user,item,rating,timestamp (make one with
 * `mpirun -np 2 mpirec gen --out FILE --users 2000000 --items 150000
 * --interactions 40000000` for ~1 GB). Per repeat, interleaved so that noise hits
 * all three alike, every rank measures on its own byte range:
 *   raw     pread() of its range into a 8 MiB buffer (the page cache is warm after
 *           the first repeat; so are the other two measurements)
 *   parse   the reader over its range, records counted, nothing stored
 *   ingest  the whole mr_ingest: parse, intern strings, split, distributed
 *           vocabularies, id arrays, summary counts
 * Prints medians in MB/s per rank (file bytes / P / seconds of the slowest rank)
 * and the ratios, as one JSON line per measurement plus a summary line.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/dataset.h"
#include "mpirec/reader.h"
#include "bench_util.h"

#define BUF (8 << 20)

static int count_cb(const MrRecord *r, void *ud)
{
    (void)r;
    ++*(int64_t *)ud;
    return 0;
}

int main(int argc, char **argv)
{
    MrComm c;
    MrErr e;
    if (mr_comm_init(&c, &argc, &argv, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    if (argc < 2) {
        if (c.rank == 0)
            fprintf(stderr, "usage: mpirun -np P bench_ingest FILE [repeats]\n");
        mr_comm_finalize(&c);
        return 2;
    }
    const char *path = argv[1];
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    MrConfig cfg;
    mr_config_defaults(&cfg);
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", path);
    mr_config_set(&cfg, "data.columns.rating=rating", &e);
    mr_config_set(&cfg, "data.columns.timestamp=timestamp", &e);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "cannot open %s\n", path);
        mr_comm_abort(&c, 1);
    }
    int64_t size = st.st_size, lo, hi;
    mr_shard_range(size, c.rank, c.size, &lo, &hi);
    char *buf = malloc(BUF + (1 << 20));
    MrReaderSpec spec;
    mr_reader_spec_from_config(&spec, &cfg);
    MrReader *rd;
    mr_reader_create(&rd, &spec, &e);
    int64_t data_start = 0;
    int need_more = 0;
    ssize_t got0 = pread(fd, buf, 1 << 16, 0);
    mr_reader_header(rd, path, buf, got0 > 0 ? (size_t)got0 : 0, 0, &data_start, &need_more, &e);
    double *t_raw = calloc((size_t)reps, 8), *t_parse = calloc((size_t)reps, 8),
           *t_ing = calloc((size_t)reps, 8);
    int64_t records = 0;
    for (int r = 0; r < reps; r++) {
        /* raw */
        mr_comm_barrier(&c, &e);
        double t0 = mr_comm_wtime();
        for (int64_t off = lo; off < hi;) {
            size_t want = (size_t)(hi - off < BUF ? hi - off : BUF);
            ssize_t g = pread(fd, buf, want, off);
            if (g <= 0)
                break;
            off += g;
        }
        double dt = mr_comm_wtime() - t0;
        mr_comm_allreduce_f64(&c, &dt, 1, MR_MAX, &e);
        t_raw[r] = dt;
        /* parse: records starting in [lo, hi) (no quotes in generated files) */
        mr_comm_barrier(&c, &e);
        t0 = mr_comm_wtime();
        int64_t n = 0, start = lo > data_start ? lo : data_start;
        if (c.rank > 0 && lo > data_start) {
            ssize_t g = pread(fd, buf, 1 << 20, lo - 1);
            int64_t k = g > 1 ? mr_shard_first_record(buf + 1, (size_t)g - 1, 0, 0, buf[0] == '\n')
                              : -1;
            start = k >= 0 ? lo + k : hi;
        }
        int64_t off = start, line = 1;
        size_t len = 0;
        int done = start >= hi;
        while (!done) {
            ssize_t g = pread(fd, buf + len, BUF - len, off + (int64_t)len);
            if (g < 0)
                break;
            len += (size_t)g;
            int eof = off + (int64_t)len >= size;
            size_t used;
            int64_t nl;
            mr_reader_parse(rd, buf, len, off, line, hi, eof, count_cb, &n, &used, &nl, &done);
            if (done || (eof && used == len))
                break;
            memmove(buf, buf + used, len - used);
            len -= used;
            off += (int64_t)used;
            line = nl;
        }
        dt = mr_comm_wtime() - t0;
        mr_comm_allreduce_f64(&c, &dt, 1, MR_MAX, &e);
        t_parse[r] = dt;
        mr_comm_allreduce_i64(&c, &n, 1, MR_SUM, &e);
        records = n;
        /* full ingestion */
        mr_comm_barrier(&c, &e);
        MrDataset d;
        t0 = mr_comm_wtime();
        if (mr_ingest(&d, &c, &cfg, &e) != MR_OK) {
            if (c.rank == 0)
                fprintf(stderr, "ingest failed: %s\n", e.msg);
            mr_comm_abort(&c, 1);
        }
        dt = mr_comm_wtime() - t0;
        mr_comm_allreduce_f64(&c, &dt, 1, MR_MAX, &e);
        t_ing[r] = dt;
        if (c.rank == 0)
            printf("{\"repeat\": %d, \"raw_s\": %.4f, \"parse_s\": %.4f, \"ingest_s\": %.4f, "
                   "\"records\": %lld, \"users\": %lld, \"items\": %lld}\n",
                   r, t_raw[r], t_parse[r], t_ing[r], (long long)d.sum.records,
                   (long long)d.sum.users, (long long)d.sum.items);
        mr_dataset_free(&d);
    }
    double mb_rank = (double)size / 1e6 / c.size;
    double raw = mb_rank / bench_median(t_raw, reps), parse = mb_rank / bench_median(t_parse, reps),
           ing = mb_rank / bench_median(t_ing, reps);
    if (c.rank == 0) {
        printf("{\"summary\": true, \"file\": \"%s\", \"bytes\": %lld, \"records\": %lld, "
               "\"ranks\": %d, \"repeats\": %d, \"raw_mb_s_per_rank\": %.1f, "
               "\"parse_mb_s_per_rank\": %.1f, \"ingest_mb_s_per_rank\": %.1f, "
               "\"raw_over_parse\": %.2f, \"raw_over_ingest\": %.2f}\n",
               path, (long long)size, (long long)records, c.size, reps, raw, parse, ing,
               raw / parse, raw / ing);
        printf("# reproduce: mpirun -np %d %s %s %d\n", c.size, argv[0], path, reps);
    }
    mr_reader_destroy(&rd);
    free(buf);
    close(fd);
    mr_comm_finalize(&c);
    return 0;
}
