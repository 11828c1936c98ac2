/* gen.c — the synthetic data generator (see gen.h for the planted model).
 *
 * Parallel writing without holding rows: rank r owns rows [r*K/P, (r+1)*K/P).
 * Pass 1 formats them into a scratch buffer only to count bytes; an exclusive
 * scan gives each rank its file offset; pass 2 formats again and pwrite()s chunks
 * at that offset. Formatting twice is cheaper than any exchange of data and keeps
 * memory at one chunk per rank. Numbers are formatted by hand (no printf in the
 * row loop).
 */
#include "mpirec/gen.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpirec/hash.h"

#define NCAND 32
#define NCLUSTER 50
#define WORDS_PER_CLUSTER 20
#define WBUF (4 << 20)

static const char *common_words[] = {"good", "great", "bad",  "ok",    "love",
                                     "fine", "nice",  "poor", "works", "cheap"};

typedef struct Gen {
    const MrConfig *cfg;
    uint64_t seed;
    int dim;
    int64_t U, I, K;
    float *fi;        /* [I x dim] item factors */
    float *alias_p;   /* [I] Vose alias table over item popularity */
    int64_t *alias_a; /* [I] */
    int text, jsonl;
} Gen;

static double unit(uint64_t h) { return mr_hash_unit(h); }

static double gauss(uint64_t h)
{
    double u1 = unit(h), u2 = unit(mr_splitmix64(h));
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void user_factor(const Gen *g, int64_t u, float *f)
{
    uint64_t b = mr_mix(mr_mix(g->seed, MR_TAG_GEN), 1000000007ULL + (uint64_t)u);
    double s = 1.0 / sqrt(sqrt((double)g->dim)); /* <f_u, f_i> ~ N(0, 1) */
    for (int k = 0; k < g->dim; k++)
        f[k] = (float)(gauss(mr_mix(b, (uint64_t)k)) * s);
}

static int gen_init(Gen *g, const MrConfig *cfg, MrErr *e)
{
    memset(g, 0, sizeof *g);
    g->cfg = cfg;
    g->seed = cfg->gen.seed;
    g->dim = cfg->gen.dim;
    g->U = cfg->gen.users;
    g->I = cfg->gen.items;
    g->K = cfg->gen.interactions;
    g->text = cfg->gen.text;
    g->jsonl = cfg->gen.format == MR_FMT_JSONL;
    g->fi = malloc((size_t)g->I * (size_t)g->dim * sizeof *g->fi);
    g->alias_p = malloc((size_t)g->I * sizeof *g->alias_p);
    g->alias_a = malloc((size_t)g->I * sizeof *g->alias_a);
    double *w = malloc((size_t)g->I * sizeof *w);
    int64_t *small = malloc((size_t)g->I * sizeof *small), *large = malloc((size_t)g->I * 8);
    if (!g->fi || !g->alias_p || !g->alias_a || !w || !small || !large) {
        free(w);
        free(small);
        free(large);
        return mr_err_set(e, MR_ENOMEM, "out of memory for %lld synthetic items",
                          (long long)g->I);
    }
    double s = 1.0 / sqrt(sqrt((double)g->dim));
    for (int64_t i = 0; i < g->I; i++) {
        uint64_t b = mr_mix(mr_mix(g->seed, MR_TAG_GEN), 2000000011ULL + (uint64_t)i);
        for (int k = 0; k < g->dim; k++)
            g->fi[i * g->dim + k] = (float)(gauss(mr_mix(b, (uint64_t)k)) * s);
    }
    /* Vose's alias method over Zipf weights 1/(i+1)^a. */
    double sum = 0;
    for (int64_t i = 0; i < g->I; i++) {
        w[i] = pow((double)(i + 1), -g->cfg->gen.zipf);
        sum += w[i];
    }
    int64_t ns = 0, nl = 0;
    for (int64_t i = 0; i < g->I; i++) {
        w[i] = w[i] * (double)g->I / sum;
        if (w[i] < 1.0)
            small[ns++] = i;
        else
            large[nl++] = i;
    }
    while (ns && nl) {
        int64_t a = small[--ns], b = large[--nl];
        g->alias_p[a] = (float)w[a];
        g->alias_a[a] = b;
        w[b] = w[b] + w[a] - 1.0;
        if (w[b] < 1.0)
            small[ns++] = b;
        else
            large[nl++] = b;
    }
    /* Leftovers are 1 up to rounding: they always keep their own item. */
    while (nl) {
        int64_t b = large[--nl];
        g->alias_p[b] = 1.0f;
        g->alias_a[b] = b;
    }
    while (ns) {
        int64_t a = small[--ns];
        g->alias_p[a] = 1.0f;
        g->alias_a[a] = a;
    }
    free(w);
    free(small);
    free(large);
    return MR_OK;
}

static void gen_free(Gen *g)
{
    free(g->fi);
    free(g->alias_p);
    free(g->alias_a);
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* Format row t into p; returns the end. At most ~200 bytes. */
static char *format_row(const Gen *g, int64_t t, char *p)
{
    uint64_t h = mr_mix(mr_mix(g->seed, MR_TAG_GEN), (uint64_t)t);
    /* Power-law user activity: low ids are more active. */
    double x = unit(h);
    int64_t u = (int64_t)((double)g->U * x * sqrt(x));
    if (u >= g->U)
        u = g->U - 1;
    float fu[64];
    int dim = g->dim < 64 ? g->dim : 64;
    user_factor(g, u, fu);
    int64_t best = 0;
    double best_s = -1e300, best_dot = 0;
    for (int c = 0; c < NCAND; c++) {
        uint64_t hc = mr_mix(h, (uint64_t)(c + 1));
        int64_t j = (int64_t)(unit(hc) * (double)g->I);
        if (j >= g->I)
            j = g->I - 1;
        if (unit(mr_splitmix64(hc)) >= g->alias_p[j])
            j = g->alias_a[j];
        const float *fi = g->fi + j * g->dim;
        double dot = 0;
        for (int k = 0; k < dim; k++)
            dot += (double)fu[k] * fi[k];
        double gum = -log(-log(unit(mr_mix(hc, 77)) * (1 - 1e-12) + 1e-300));
        double sc = 3.0 * dot + gum;
        if (sc > best_s) {
            best_s = sc;
            best = j;
            best_dot = dot;
        }
    }
    double r = 3.0 + 2.0 * tanh(best_dot) + g->cfg->gen.noise * gauss(mr_mix(h, 91));
    int rating = (int)lround(r);
    rating = rating < 1 ? 1 : rating > 5 ? 5 : rating;
    uint64_t ts = 1500000000ULL + (uint64_t)((double)t * (157680000.0 / (double)(g->K + 1))) +
                  (mr_mix(h, 93) % 3600);
    if (g->jsonl)
        p = put_str(p, "{\"user\": \"u");
    else
        *p++ = 'u';
    p = put_u64(p, (uint64_t)u);
    p = put_str(p, g->jsonl ? "\", \"item\": \"i" : ",i");
    p = put_u64(p, (uint64_t)best);
    p = put_str(p, g->jsonl ? "\", \"rating\": " : ",");
    *p++ = (char)('0' + rating);
    p = put_str(p, g->jsonl ? ", \"timestamp\": " : ",");
    p = put_u64(p, ts);
    if (g->text) {
        p = put_str(p, g->jsonl ? ", \"text\": \"" : ",\"");
        int cluster = (int)(mr_mix(g->seed ^ 0x5eed, (uint64_t)best) % NCLUSTER);
        int nt = 3 + (int)(mr_mix(h, 95) % 6);
        for (int k = 0; k < nt; k++) {
            uint64_t hk = mr_mix(h, 100 + (uint64_t)k);
            if (k)
                *p++ = ' ';
            if (unit(hk) < 0.7) {
                *p++ = 'c';
                p = put_u64(p, (uint64_t)cluster);
                *p++ = 'w';
                p = put_u64(p, mr_splitmix64(hk) % WORDS_PER_CLUSTER);
            } else {
                p = put_str(p, common_words[mr_splitmix64(hk) % 10]);
            }
        }
        *p++ = '"';
    }
    if (g->jsonl)
        *p++ = '}';
    *p++ = '\n';
    return p;
}

static const char *header(const Gen *g)
{
    if (g->jsonl)
        return "";
    return g->text ? "user,item,rating,timestamp,text\n" : "user,item,rating,timestamp\n";
}

/* Format rows [a, b); with fd >= 0 write them at `off`, else only count bytes. */
static int emit(const Gen *g, int64_t a, int64_t b, int with_header, int fd, int64_t off,
                char *buf, int64_t *bytes, const char *path, MrErr *e)
{
    char *p = buf;
    int64_t total = 0;
    if (with_header)
        p = put_str(p, header(g));
    for (int64_t t = a; t < b; t++) {
        p = format_row(g, t, p);
        if (p - buf > WBUF - 512 || t + 1 == b) {
            size_t n = (size_t)(p - buf);
            if (fd >= 0) {
                size_t done = 0;
                while (done < n) {
                    ssize_t w = pwrite(fd, buf + done, n - done, (off_t)(off + total + (int64_t)done));
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0)
                        return mr_err_set(e, MR_EIO, "cannot write %s: %s", path,
                                          w < 0 ? strerror(errno) : "short write");
                    done += (size_t)w;
                }
            }
            total += (int64_t)n;
            p = buf;
        }
    }
    if (p > buf) { /* header only */
        size_t n = (size_t)(p - buf);
        if (fd >= 0 && pwrite(fd, buf, n, (off_t)(off + total)) != (ssize_t)n)
            return mr_err_set(e, MR_EIO, "cannot write %s: %s", path, strerror(errno));
        total += (int64_t)n;
    }
    *bytes = total;
    return MR_OK;
}

int mr_gen_write(MrComm *c, const MrConfig *cfg, const char *path, MrGenStats *st, MrErr *e)
{
    double t0 = mr_comm_wtime();
    Gen g;
    int rc = gen_init(&g, cfg, e);
    char *buf = malloc(WBUF);
    if (!rc && !buf)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    int fd = -1;
    if (!rc && c->rank == 0) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            rc = mr_err_set(e, MR_EIO, "cannot create %s: %s", path, strerror(errno));
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    if (c->rank != 0) {
        fd = open(path, O_WRONLY);
        if (fd < 0)
            rc = mr_err_set(e, MR_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t a = g.K * c->rank / c->size, b = g.K * (c->rank + 1) / c->size;
    int64_t bytes = 0, off;
    rc = emit(&g, a, b, c->rank == 0, -1, 0, buf, &bytes, path, e);
    off = bytes;
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_exscan_i64(c, &off, 1, e)))
        goto out;
    int64_t written = 0;
    rc = emit(&g, a, b, c->rank == 0, fd, off, buf, &written, path, e);
    if (!rc && fsync(fd) != 0 && errno != EINVAL)
        rc = mr_err_set(e, MR_EIO, "cannot sync %s: %s", path, strerror(errno));
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t tot[2] = {b - a, written};
    if ((rc = mr_comm_allreduce_i64(c, tot, 2, MR_SUM, e)))
        goto out;
    st->rows = tot[0];
    st->bytes = tot[1];
    st->seconds = mr_comm_wtime() - t0;
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    gen_free(&g);
    return rc;
}
