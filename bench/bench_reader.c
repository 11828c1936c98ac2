/* bench_reader.c — parse speed of the interaction-file readers next to the raw
 * read speed of the same file, measured in the same run.
 *
 * What it measures (median of --runs runs each, MB = 10^6 bytes):
 *   read    read() of the whole file in 4 MiB blocks into one buffer (from the page
 *           cache: the file was just written or read, so this is the memory-copy
 *           bound, the strictest thing to compare with);
 *   count   mr_shard_count over the file in memory (the sharding pre-pass);
 *   parse   mr_reader_parse over the file in memory, one call, with a callback
 *           that touches every configured field (what "parsing alone" costs);
 *   stream  read() 4 MiB blocks + parse + carry the unfinished record over, as
 *           the ingest layer does (read and parse together, one core).
 * and prints parse/read and stream/read ratios and the command line that
 * reproduces the figures. Without --file it generates a file first (--gen).
 * Single process, no MPI. Times are thread CPU time unless --clock wall.
 *
 *   bench_reader [--gen csv|csvq|delim|jsonl] [--mb N] [--path P] [--runs R]
 *                [--clock cpu|wall]
 *   bench_reader --file F --format csv|delimited|jsonl [--sep S] [--quote Q|none]
 *                [--header 0|1] [--cols user,item[,rating[,text[,timestamp]]]]
 * --cols takes names (header / JSON files) or 0-based indices; "-" skips one.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpirec/hash.h"
#include "mpirec/reader.h"
#include "bench_util.h"

#define BLOCK ((size_t)4 << 20)

/* Per-thread CPU time by default (user + system, so read()'s copy counts): on a
 * shared machine other jobs then do not show up in the figures; on a quiet
 * machine it equals wall time for this single-threaded program. --clock wall
 * switches to CLOCK_MONOTONIC. */
static clockid_t g_clock = CLOCK_THREAD_CPUTIME_ID;

typedef struct Acc {
    int64_t records, bad;
    uint64_t h; /* depends on every field, so the compiler cannot drop the work */
} Acc;

static int sink(const MrRecord *rec, void *ud)
{
    Acc *a = ud;
    a->records++;
    a->bad += rec->bad_reason != NULL;
    for (int c = 0; c < MR_NCOLS; c++)
        if (rec->f[c].len)
            a->h += rec->f[c].len * 31u + (unsigned char)rec->f[c].p[0];
    return 0;
}

/* ---- generated files ---- */

static void gen_id(char *o, uint64_t x, int n)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (int i = 0; i < n; i++, x /= 36)
        o[i] = al[x % 36];
    o[n] = '\0';
}

static int generate(const char *kind, const char *path, double mb)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    const uint64_t target = (uint64_t)(mb * 1e6);
    uint64_t n = 0, st = 12345;
    if (!strcmp(kind, "csv"))
        n += (uint64_t)fprintf(f, "user,item,rating,timestamp\n");
    else if (!strcmp(kind, "csvq"))
        n += (uint64_t)fprintf(f, "user,item,rating,summary,timestamp\n");
    static const char *texts[] = {"Great", "\"Works, mostly\"", "\"A \"\"must\"\" have\"",
                                  "Not bad at all", "\"Line one\nline two\""};
    while (n < target) {
        uint64_t r = mr_splitmix64(st++);
        char user[16], item[16];
        gen_id(user, r % 2000000u * 7919u, 13 + (int)(r >> 60 & 1));
        snprintf(item, sizeof item, "%010llu", (unsigned long long)(r >> 20) % 5000000000ull);
        int rating = 1 + (int)(r >> 40) % 5;
        long long ts = 1300000000ll + (long long)(r >> 8 & 0x3FFFFFF);
        if (!strcmp(kind, "csv"))
            n += (uint64_t)fprintf(f, "%s,%s,%d.0,%lld\n", user, item, rating, ts);
        else if (!strcmp(kind, "csvq"))
            n += (uint64_t)fprintf(f, "%s,%s,%d.0,%s,%lld\n", user, item, rating, texts[r % 5], ts);
        else if (!strcmp(kind, "delim"))
            n += (uint64_t)fprintf(f, "%llu::%llu::%d::%lld\n", (unsigned long long)(r % 6040 + 1),
                                   (unsigned long long)(r >> 16) % 3952 + 1, rating, ts);
        else
            n += (uint64_t)fprintf(f,
                                   "{\"user\":\"%s\",\"item\":\"%s\",\"rating\":%d.0,"
                                   "\"timestamp\":%lld}\n",
                                   user, item, rating, ts);
    }
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* ---- measurements ---- */

static double time_read(const char *path, char *buf, size_t *total)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    double t0 = bench_now();
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf, BLOCK);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    double t = bench_now() - t0;
    close(fd);
    *total = n;
    return t;
}

static MrReader *open_reader(const MrReaderSpec *spec, const char *path, const char *buf,
                             size_t len, int64_t *ds, int64_t *line)
{
    MrReader *r = NULL;
    MrErr e;
    int more = 0;
    if (mr_reader_create(&r, spec, &e) != MR_OK ||
        mr_reader_header(r, path, buf, len, 1, ds, &more, &e) != MR_OK) {
        fprintf(stderr, "bench_reader: %s\n", e.msg);
        mr_reader_destroy(&r);
        return NULL;
    }
    int64_t q, nl;
    mr_shard_count(buf, (size_t)*ds, spec->quote, &q, &nl);
    *line = 1 + nl;
    return r;
}

static double time_parse(MrReader *r, const char *buf, size_t len, int64_t ds, int64_t line,
                         Acc *acc)
{
    size_t consumed;
    int64_t next_line;
    int done;
    memset(acc, 0, sizeof *acc);
    double t0 = bench_now();
    mr_reader_parse(r, buf + ds, len - (size_t)ds, ds, line, INT64_MAX, 1, sink, acc, &consumed,
                    &next_line, &done);
    return bench_now() - t0;
}

/* read() + parse with the carry-over of an unfinished record, like data/ingest.c. */
static double time_stream(MrReader *r, const char *path, int64_t ds, int64_t line, Acc *acc)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t cap = 2 * BLOCK, have = 0;
    char *buf = malloc(cap);
    int64_t off = ds; /* file offset of buf[0] */
    memset(acc, 0, sizeof *acc);
    double t0 = bench_now();
    if (lseek(fd, ds, SEEK_SET) < 0) {
        free(buf);
        close(fd);
        return -1;
    }
    int eof = 0;
    while (!eof || have) {
        if (!eof) {
            if (cap - have < BLOCK) {
                cap *= 2; /* a record longer than the buffer: grow */
                buf = realloc(buf, cap);
            }
            ssize_t k = read(fd, buf + have, BLOCK);
            if (k <= 0)
                eof = 1;
            else
                have += (size_t)k;
        }
        size_t consumed;
        int64_t next_line;
        int done;
        mr_reader_parse(r, buf, have, off, line, INT64_MAX, eof, sink, acc, &consumed, &next_line,
                        &done);
        memmove(buf, buf + consumed, have - consumed);
        have -= consumed;
        off += (int64_t)consumed;
        line = next_line;
        if (done)
            break;
    }
    double t = bench_now() - t0;
    free(buf);
    close(fd);
    return t;
}

static void set_col(MrReaderSpec *s, int c, const char *v, size_t n)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%.*s", (int)n, v);
    if (!strcmp(tmp, "-") || !tmp[0])
        return;
    char *end;
    long k = strtol(tmp, &end, 10);
    if (*end == '\0') {
        s->cols[c].index = (int)k;
    } else {
        snprintf(s->cols[c].name, sizeof s->cols[c].name, "%s", tmp);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_reader [--gen csv|csvq|delim|jsonl] [--mb N] [--path P] "
                    "[--runs R] [--clock cpu|wall]\n"
                    "       bench_reader --file F --format csv|delimited|jsonl [--sep S] "
                    "[--quote Q|none] [--header 0|1] [--cols a,b,...] [--runs R]\n");
}

int main(int argc, char **argv)
{
    const char *gen = "csv", *file = NULL, *fmt = NULL, *sep = NULL, *quote = NULL, *cols = NULL,
               *path = NULL;
    int header = -1, runs = 5;
    double mb = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "--gen"))
            gen = v;
        else if (!strcmp(a, "--mb"))
            mb = atof(v);
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--runs"))
            runs = atoi(v);
        else if (!strcmp(a, "--file"))
            file = v;
        else if (!strcmp(a, "--format"))
            fmt = v;
        else if (!strcmp(a, "--sep"))
            sep = v;
        else if (!strcmp(a, "--quote"))
            quote = v;
        else if (!strcmp(a, "--header"))
            header = atoi(v);
        else if (!strcmp(a, "--cols"))
            cols = v;
        else if (!strcmp(a, "--clock"))
            g_clock = !strcmp(v, "wall") ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID;
        else {
            usage();
            return 2;
        }
    }
    if (runs < 1 || runs > 101)
        runs = 5;

    /* Defaults per generated kind; --file needs --format at least. */
    char genpath[512];
    if (!file) {
        if (strcmp(gen, "csv") && strcmp(gen, "csvq") && strcmp(gen, "delim") &&
            strcmp(gen, "jsonl")) {
            usage();
            return 2;
        }
        if (!path) {
            snprintf(genpath, sizeof genpath, "/tmp/bench_reader_%s_%gMB.dat", gen, mb);
            path = genpath;
        }
        if (generate(gen, path, mb) != 0)
            return 1;
        file = path;
        if (!strcmp(gen, "csv")) {
            fmt = "csv", sep = ",", quote = "\"", header = 1;
            cols = cols ? cols : "user,item,rating,-,timestamp";
        } else if (!strcmp(gen, "csvq")) {
            fmt = "csv", sep = ",", quote = "\"", header = 1;
            cols = cols ? cols : "user,item,rating,summary,timestamp";
        } else if (!strcmp(gen, "delim")) {
            fmt = "delimited", sep = "::", quote = "none", header = 0;
            cols = cols ? cols : "0,1,2,-,3";
        } else {
            fmt = "jsonl", sep = "", quote = "none", header = 0;
            cols = cols ? cols : "user,item,rating,-,timestamp";
        }
    } else if (!fmt) {
        usage();
        return 2;
    }

    MrReaderSpec spec;
    memset(&spec, 0, sizeof spec);
    spec.format = !strcmp(fmt, "jsonl")       ? MR_FMT_JSONL
                  : !strcmp(fmt, "delimited") ? MR_FMT_DELIMITED
                                              : MR_FMT_CSV;
    if (!sep)
        sep = spec.format == MR_FMT_JSONL ? "" : ",";
    snprintf(spec.sep, sizeof spec.sep, "%s", !strcmp(sep, "\\t") ? "\t" : sep);
    spec.sep_len = strlen(spec.sep);
    spec.quote = spec.format == MR_FMT_JSONL || (quote && !strcmp(quote, "none"))
                     ? 0
                     : (quote && quote[0] ? quote[0] : '"');
    spec.header = spec.format == MR_FMT_JSONL ? 0 : header < 0 ? 1 : header;
    for (int c = 0; c < MR_NCOLS; c++)
        spec.cols[c].index = -1;
    if (cols) {
        const char *p = cols;
        for (int c = 0; c < MR_NCOLS && *p; c++) {
            const char *q = strchr(p, ',');
            size_t n = q ? (size_t)(q - p) : strlen(p);
            set_col(&spec, c, p, n);
            p += n + (q ? 1 : 0);
            if (!q)
                break;
        }
    }

    /* Load the file once (its bytes then sit in the page cache too). */
    char *blk = malloc(BLOCK);
    size_t len = 0;
    if (!blk || time_read(file, blk, &len) < 0) {
        fprintf(stderr, "bench_reader: cannot read %s\n", file);
        return 1;
    }
    char *buf = malloc(len + 1);
    FILE *f = fopen(file, "rb");
    if (!buf || !f || fread(buf, 1, len, f) != len) {
        fprintf(stderr, "bench_reader: cannot load %s\n", file);
        return 1;
    }
    fclose(f);
    int64_t ds, line;
    MrReader *r = open_reader(&spec, file, buf, len, &ds, &line);
    if (!r)
        return 1;

    double *t_read = calloc((size_t)runs, sizeof(double)),
           *t_count = calloc((size_t)runs, sizeof(double)),
           *t_parse = calloc((size_t)runs, sizeof(double)),
           *t_stream = calloc((size_t)runs, sizeof(double));
    Acc acc, acc2;
    int64_t q = 0, nl = 0;
    for (int k = 0; k < runs; k++) {
        size_t n;
        t_read[k] = time_read(file, blk, &n);
        double t0 = bench_now();
        mr_shard_count(buf, len, spec.quote, &q, &nl);
        t_count[k] = bench_now() - t0;
        t_parse[k] = time_parse(r, buf, len, ds, line, &acc);
        t_stream[k] = time_stream(r, file, ds, line, &acc2);
    }
    if (acc.records != acc2.records || acc.h != acc2.h) {
        fprintf(stderr,
                "bench_reader: in-memory and streamed parses differ (%lld vs %lld "
                "records)\n",
                (long long)acc.records, (long long)acc2.records);
        return 1;
    }
    double mbytes = (double)len / 1e6;
    double read_s = mbytes / bench_median(t_read, runs), count_s = mbytes / bench_median(t_count, runs),
           parse_s = mbytes / bench_median(t_parse, runs), stream_s = mbytes / bench_median(t_stream, runs);

    printf("file     %s (%.1f MB, %lld records, %lld bad, %.1f bytes/record)\n", file, mbytes,
           (long long)acc.records, (long long)acc.bad,
           acc.records ? (double)len / (double)acc.records : 0.0);
    printf("format   %s, sep \"%s\", quote %s, header %d; median of %d runs, one core, %s "
           "time\n",
           fmt, spec.sep_len == 1 && spec.sep[0] == '\t' ? "\\t" : spec.sep,
           spec.quote ? "\"" : "none", spec.header, runs,
           g_clock == CLOCK_MONOTONIC ? "wall" : "thread CPU");
    printf("read     %8.0f MB/s   (read() in 4 MiB blocks, page cache)\n", read_s);
    printf("count    %8.0f MB/s   (mr_shard_count: quotes and newlines)\n", count_s);
    printf("parse    %8.0f MB/s   (in memory)   read/parse  = %.2fx\n", parse_s, read_s / parse_s);
    printf("stream   %8.0f MB/s   (read+parse)  read/stream = %.2fx   %.1f M records/s\n", stream_s,
           read_s / stream_s, (double)acc.records / bench_median(t_stream, runs) / 1e6);
    printf("check    %016llx\n", (unsigned long long)acc.h);
    printf("command  ");
    for (int i = 0; i < argc; i++)
        printf("%s%s", i ? " " : "", argv[i]);
    printf("\n");

    mr_reader_destroy(&r);
    free(t_read);
    free(t_count);
    free(t_parse);
    free(t_stream);
    free(buf);
    free(blk);
    return 0;
}
