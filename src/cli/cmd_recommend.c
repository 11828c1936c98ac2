/* cmd_recommend.c — `mpirec recommend`: top-k items for users, JSON Lines out.
 *
 * Serial and without MPI (like `inspect`), so it runs anywhere the files are.
 * Input: --user ID (with --text), or lines from --users FILE or stdin: plain ids
 * or JSON objects (mr_serve_parse_request). Lines are answered in batches (one
 * query-tower pass and one index search per batch), in input order, one JSON
 * object per line. A batch is cut at --batch lines, at the end of the input, or
 * as soon as no further input is ready (poll), so a process feeding requests
 * through a pipe gets its answers without waiting for a full batch.
 *
 * A malformed line gets {"line": N, "error": "..."} and the run goes on; the exit
 * code is then 4 (data error). Loading errors (files missing, damaged, from
 * different models) stop before any output with their own codes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "mpirec/log.h"
#include "mpirec/serve.h"

static const char *help =
    "Usage: mpirec recommend --index INDEX.h5 [--checkpoint CKPT]\n"
    "                        (--user ID [--text TEXT] | --users FILE | < requests)\n"
    "                        [-k K] [--rerank N] [--exclude-seen] [--text-field NAME]\n"
    "                        [--nprobe P] [--batch B] [-q|-v]\n\n"
    "Top-k items for users from a candidate index, one JSON object per line on stdout:\n"
    "  {\"user\": ID, \"items\": [...], \"scores\": [...]} plus \"ratings\" with --rerank,\n"
    "  \"unknown_user\": true (not in the training vocabulary: the OOV embedding was used),\n"
    "  \"text_ignored\": true (text given to a model without a text tower),\n"
    "  \"k_clamped\": true (fewer than k items exist, e.g. k > item count or after\n"
    "  --exclude-seen: the list is shorter than k).\n\n"
    "  --index FILE        the index (mpirec train writes RUN/index.h5; mpirec index)\n"
    "  --checkpoint CKPT   the model: a checkpoint file, a `latest` pointer, a run's\n"
    "                      checkpoints/ directory or the run directory (default: the\n"
    "                      checkpoint the index was built from). It must be the model\n"
    "                      the index was built from (checked).\n"
    "  --user ID           one user; --text TEXT adds text for a model with a text tower\n"
    "  --users FILE        one request per line (default: stdin): a plain user id, or\n"
    "                      {\"user\": ID, \"text\": TEXT} (other members are ignored; missing\n"
    "                      or null text = no tokens)\n"
    "  -k K                items per user (default 10)\n"
    "  --rerank N          retrieve N (>= k) and order them by the ranking model's\n"
    "                      predicted rating; output the first k with \"ratings\"\n"
    "  --exclude-seen      never return items the user interacted with in training\n"
    "                      (read from INDEX.seen.h5 beside the index)\n"
    "  --text-field NAME   JSON member holding the text (default \"text\")\n"
    "  --nprobe P          ivf index: lists to probe (default: the index's own)\n"
    "  --batch B           requests per batch (default 256)\n"
    "  -q / -v             fewer / more messages on stderr\n";

static int g_verbose = 1;
static int g_clamp_all; /* k was larger than the item count */

static void log_hook(MrLogLevel level, const char *line, void *ud)
{
    (void)ud;
    if (level <= MR_LOG_WARN || g_verbose >= 1 + (level >= MR_LOG_PROGRESS))
        fprintf(stderr, "%s%s\n", level == MR_LOG_WARN ? "warning: " : "", line);
}

/* ---- input lines ---- */

typedef struct LineReader {
    int fd;
    char *buf;
    size_t cap, beg, end;
    int eof;
} LineReader;

/* 1: a line in [*line, *len) (valid until the next call), 0: end of input,
 * 2: no complete line and nothing ready to read (only when !may_block),
 * -1: read error (errno). */
static int lr_next(LineReader *r, int may_block, const char **line, size_t *len)
{
    for (;;) {
        char *nl = r->end > r->beg ? memchr(r->buf + r->beg, '\n', r->end - r->beg) : NULL;
        if (nl) {
            *line = r->buf + r->beg;
            *len = (size_t)(nl - (r->buf + r->beg));
            r->beg = (size_t)(nl - r->buf) + 1;
            return 1;
        }
        if (r->eof) {
            if (r->end > r->beg) {
                *line = r->buf + r->beg;
                *len = r->end - r->beg;
                r->beg = r->end;
                return 1;
            }
            return 0;
        }
        if (!may_block) {
            struct pollfd pf = {r->fd, POLLIN, 0};
            if (poll(&pf, 1, 0) == 0)
                return 2;
        }
        if (r->beg > 0) {
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->end -= r->beg;
            r->beg = 0;
        }
        if (r->end == r->cap) {
            size_t c = r->cap ? 2 * r->cap : 65536;
            char *p = realloc(r->buf, c);
            if (!p) {
                errno = ENOMEM;
                return -1;
            }
            r->buf = p;
            r->cap = c;
        }
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (got == 0)
            r->eof = 1;
        r->end += (size_t)got;
    }
}

/* ---- one batch ---- */

typedef struct Slot {
    int64_t line; /* input line number (1-based) */
    char *error;  /* parse error, or NULL */
    int64_t q;    /* index into the batch's valid requests */
} Slot;

typedef struct Batch {
    Slot *slot;
    MrServeRequest *req;
    int64_t n, nvalid, cap;
    int64_t *items;
    float *scores, *ratings;
    int *count;
    unsigned *flags;
} Batch;

static void batch_clear(Batch *b)
{
    for (int64_t i = 0; i < b->n; i++)
        free(b->slot[i].error);
    for (int64_t i = 0; i < b->nvalid; i++)
        mr_serve_request_free(&b->req[i]);
    b->n = b->nvalid = 0;
}

static int append_floats(char **o, size_t *ol, size_t *oc, const char *name, const float *v, int n)
{
    int bad = mr_serve_buf_printf(o, ol, oc, ", \"%s\": [", name);
    for (int a = 0; a < n && !bad; a++)
        bad = mr_serve_buf_printf(o, ol, oc, "%s%.9g", a ? ", " : "", (double)v[a]);
    return bad || mr_serve_buf_printf(o, ol, oc, "]");
}

/* Answer the batch and write its lines to stdout. */
static int flush_batch(MrServer *srv, Batch *b, const MrServeParams *p, int64_t *bad_lines,
                       MrErr *e)
{
    if (b->n == 0)
        return MR_OK;
    int k = p->k;
    int rc = b->nvalid ? mr_server_recommend(srv, b->req, b->nvalid, p, b->items, b->scores,
                                             b->ratings, b->count, b->flags, e)
                       : MR_OK;
    if (rc)
        return rc;
    char *o = NULL;
    size_t ol = 0, oc = 0;
    int bad = 0;
    for (int64_t i = 0; i < b->n && !bad; i++) {
        const Slot *s = &b->slot[i];
        if (s->error) {
            (*bad_lines)++;
            bad = mr_serve_buf_printf(&o, &ol, &oc,
                                      "{\"line\": %lld, \"error\": ", (long long)s->line) ||
                  mr_serve_json_string(&o, &ol, &oc, s->error, strlen(s->error)) ||
                  mr_serve_buf_printf(&o, &ol, &oc, "}\n");
            continue;
        }
        const MrServeRequest *q = &b->req[s->q];
        int n = b->count[s->q];
        unsigned fl = b->flags[s->q];
        bad = mr_serve_buf_printf(&o, &ol, &oc, "{\"user\": ") ||
              mr_serve_json_string(&o, &ol, &oc, q->user, q->user_len) ||
              mr_serve_buf_printf(&o, &ol, &oc, ", \"items\": [");
        for (int a = 0; a < n && !bad; a++) {
            size_t il;
            const char *id = mr_server_item_id(srv, b->items[s->q * k + a], &il);
            bad = (a && mr_serve_buf_printf(&o, &ol, &oc, ", ")) ||
                  mr_serve_json_string(&o, &ol, &oc, id, il);
        }
        bad = bad || mr_serve_buf_printf(&o, &ol, &oc, "]") ||
              append_floats(&o, &ol, &oc, "scores", b->scores + s->q * k, n) ||
              (p->rerank && append_floats(&o, &ol, &oc, "ratings", b->ratings + s->q * k, n)) ||
              ((fl & MR_SERVE_UNKNOWN_USER) &&
               mr_serve_buf_printf(&o, &ol, &oc, ", \"unknown_user\": true")) ||
              ((fl & MR_SERVE_TEXT_IGNORED) &&
               mr_serve_buf_printf(&o, &ol, &oc, ", \"text_ignored\": true")) ||
              (((fl & MR_SERVE_K_CLAMPED) || g_clamp_all) &&
               mr_serve_buf_printf(&o, &ol, &oc, ", \"k_clamped\": true")) ||
              mr_serve_buf_printf(&o, &ol, &oc, "}\n");
    }
    if (bad)
        rc = mr_err_set(e, MR_ENOMEM, "out of memory formatting the answers");
    else if (fwrite(o, 1, ol, stdout) != ol || fflush(stdout) != 0)
        rc = mr_err_set(e, MR_EIO, "cannot write to stdout: %s", strerror(errno));
    free(o);
    batch_clear(b);
    return rc;
}

static int add_line(Batch *b, int64_t lineno, const char *line, size_t len, const char *field)
{
    Slot *s = &b->slot[b->n++];
    s->line = lineno;
    s->error = NULL;
    MrErr pe;
    mr_err_clear(&pe);
    int rc = mr_serve_parse_request(line, len, field, &b->req[b->nvalid], &pe);
    if (rc == MR_ENOMEM)
        return rc;
    if (rc) {
        s->error = strdup(pe.msg);
        return s->error ? MR_OK : MR_ENOMEM;
    }
    s->q = b->nvalid++;
    return MR_OK;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_recommend(int argc, char **argv)
{
    const char *index = NULL, *ckpt = NULL, *user = NULL, *text = NULL, *users = NULL;
    const char *field = "text";
    MrServeParams p = {10, 0, 0, 0};
    long batch = 256;
    MrErr e;
    mr_err_clear(&e);
    int rc = MR_OK;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *endp = NULL;
/* a missing value ends the option loop (break leaves the for) */
#define NEEDV(what)                                                                                \
    if (!v) {                                                                                      \
        rc = mr_err_set(&e, MR_EUSAGE, "%s needs %s", a, what);                                    \
        break;                                                                                     \
    }                                                                                              \
    i++
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("%s\n%s", help, cli_exit_codes_help);
            return 0;
        } else if (!strcmp(a, "--index")) {
            NEEDV("a file");
            index = v;
        } else if (!strcmp(a, "--checkpoint")) {
            NEEDV("a checkpoint");
            ckpt = v;
        } else if (!strcmp(a, "--user")) {
            NEEDV("a user id");
            user = v;
        } else if (!strcmp(a, "--text")) {
            NEEDV("text");
            text = v;
        } else if (!strcmp(a, "--users")) {
            NEEDV("a file");
            users = v;
        } else if (!strcmp(a, "--text-field")) {
            NEEDV("a member name");
            field = v;
        } else if (!strcmp(a, "-k") || !strcmp(a, "--k") || !strcmp(a, "--rerank") ||
                   !strcmp(a, "--nprobe") || !strcmp(a, "--batch")) {
            NEEDV("a number");
            errno = 0;
            long x = strtol(v, &endp, 10);
            int lo = !strcmp(a, "--rerank") || !strcmp(a, "--nprobe") ? 0 : 1;
            if (errno || endp == v || *endp || x < lo || x > (1L << 30))
                rc = mr_err_set(&e, MR_EUSAGE, "%s needs an integer >= %d (got '%s')", a, lo, v);
            else if (!strcmp(a, "--rerank"))
                p.rerank = (int)x;
            else if (!strcmp(a, "--nprobe"))
                p.nprobe = x;
            else if (!strcmp(a, "--batch"))
                batch = x;
            else
                p.k = (int)x;
        } else if (!strcmp(a, "--exclude-seen")) {
            p.exclude_seen = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            g_verbose = 0;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            g_verbose = 2;
        } else {
            rc = mr_err_set(&e, MR_EUSAGE, "unknown option '%s' (see mpirec recommend --help)", a);
        }
#undef NEEDV
    }
    if (!rc && !index)
        rc = mr_err_set(&e, MR_EUSAGE, "--index FILE is required (see mpirec recommend --help)");
    if (!rc && user && users)
        rc = mr_err_set(&e, MR_EUSAGE, "give --user or --users, not both");
    if (!rc && text && !user)
        rc = mr_err_set(&e, MR_EUSAGE, "--text goes with --user (in a file, use JSON lines)");
    if (!rc && p.rerank && p.rerank < p.k)
        rc = mr_err_set(&e, MR_EUSAGE,
                        "--rerank N retrieves the N items to re-rank, so N (%d) must be at least "
                        "-k (%d)",
                        p.rerank, p.k);
    if (rc) {
        fprintf(stderr, "mpirec recommend: %s\n", e.msg);
        return rc;
    }
    mr_log_set_hook(log_hook, NULL, MR_LOG_DEBUG);

    int fd = 0;
    if (users) {
        fd = open(users, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = mr_err_set(&e, MR_EIO, "cannot open %s: %s", users, strerror(errno));
            fprintf(stderr, "mpirec: %s: %s\n", mr_err_name(rc), e.msg);
            return rc;
        }
    }
    double t0 = now_s();
    MrServer *srv = NULL;
    rc = mr_server_open(
        &srv, index, ckpt,
        (p.exclude_seen ? MR_SERVE_LOAD_SEEN : 0) | (p.rerank ? MR_SERVE_LOAD_RATING : 0), &e);
    Batch b;
    memset(&b, 0, sizeof b);
    int64_t nq = 0, bad_lines = 0;
    double t_open = now_s() - t0;
    if (!rc) {
        const MrServerInfo *in = mr_server_info(srv);
        mr_log(MR_LOG_INFO,
               "recommend: index %s (%lld items, dim %d), checkpoint %s (step %lld)%s%s, "
               "loaded in %.2f s",
               in->index_path, (long long)in->items, in->dim, in->ckpt_path, (long long)in->step,
               in->seen_path[0] ? ", exclude-seen " : "", in->seen_path, t_open);
        if (p.k > in->items)
            fprintf(stderr,
                    "mpirec recommend: k = %d is larger than the %lld items of the index: every "
                    "answer has at most %lld items and says \"k_clamped\": true\n",
                    p.k, (long long)in->items, (long long)in->items);
        if (p.rerank > in->items)
            fprintf(stderr,
                    "mpirec recommend: --rerank %d is larger than the %lld items of the "
                    "index: all of them are re-ranked\n",
                    p.rerank, (long long)in->items);
        /* Ask for what exists (buffers stay proportional to the corpus); every
         * answer then says k_clamped, since it is shorter than the k asked for. */
        if (p.k > in->items) {
            p.k = (int)in->items;
            g_clamp_all = 1;
        }
        if (p.rerank > in->items)
            p.rerank = (int)in->items;
        b.cap = user ? 1 : batch;
        b.slot = calloc((size_t)b.cap, sizeof *b.slot);
        b.req = calloc((size_t)b.cap, sizeof *b.req);
        b.items = malloc((size_t)(b.cap * p.k) * sizeof *b.items);
        b.scores = malloc((size_t)(b.cap * p.k) * sizeof *b.scores);
        b.ratings = malloc((size_t)(b.cap * p.k) * sizeof *b.ratings);
        b.count = malloc((size_t)b.cap * sizeof *b.count);
        b.flags = malloc((size_t)b.cap * sizeof *b.flags);
        if (!b.slot || !b.req || !b.items || !b.scores || !b.ratings || !b.count || !b.flags)
            rc = mr_err_set(&e, MR_ENOMEM, "out of memory for a batch of %ld requests", batch);
    }
    if (!rc && user) {
        b.slot[0].line = 1;
        b.slot[0].q = 0;
        b.n = b.nvalid = 1;
        b.req[0].user = strdup(user);
        b.req[0].user_len = strlen(user);
        if (text) {
            b.req[0].text = strdup(text);
            b.req[0].text_len = strlen(text);
        }
        if (!b.req[0].user || (text && !b.req[0].text))
            rc = mr_err_set(&e, MR_ENOMEM, "out of memory");
        if (!rc)
            rc = flush_batch(srv, &b, &p, &bad_lines, &e);
        nq = 1;
    } else if (!rc) {
        LineReader lr = {fd, NULL, 0, 0, 0, 0};
        int64_t lineno = 0;
        for (;;) {
            const char *line;
            size_t len;
            int got = lr_next(&lr, b.n == 0, &line, &len);
            if (got == 2 || got == 0) {
                if ((rc = flush_batch(srv, &b, &p, &bad_lines, &e)) || got == 0)
                    break;
                continue;
            }
            if (got < 0) {
                rc = mr_err_set(&e, MR_EIO, "cannot read %s: %s", users ? users : "stdin",
                                strerror(errno));
                break;
            }
            lineno++;
            size_t t = 0;
            while (t < len && (line[t] == ' ' || line[t] == '\t' || line[t] == '\r'))
                t++;
            if (t == len)
                continue; /* blank lines are skipped */
            nq++;
            if ((rc = add_line(&b, lineno, line, len, field))) {
                rc = mr_err_set(&e, MR_ENOMEM, "out of memory reading requests");
                break;
            }
            if (b.n == b.cap && (rc = flush_batch(srv, &b, &p, &bad_lines, &e)))
                break;
        }
        free(lr.buf);
    }
    double secs = now_s() - t0 - t_open;
    if (!rc)
        mr_log(MR_LOG_INFO, "recommend: %lld requests in %.3f s (%.0f per second)%s", (long long)nq,
               secs, secs > 0 ? (double)nq / secs : 0.0,
               bad_lines ? ", some malformed (see the \"error\" lines)" : "");
    batch_clear(&b);
    free(b.slot);
    free(b.req);
    free(b.items);
    free(b.scores);
    free(b.ratings);
    free(b.count);
    free(b.flags);
    mr_server_close(&srv);
    if (users)
        close(fd);
    if (!rc && bad_lines)
        rc = mr_err_set(&e, MR_EDATA, "%lld malformed request line%s (answered with \"error\")",
                        (long long)bad_lines, bad_lines == 1 ? "" : "s");
    if (rc)
        fprintf(stderr, "mpirec: %s: %s\n", mr_err_name(rc), e.msg);
    return rc;
}
