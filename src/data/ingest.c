/* ingest.c — parallel ingestion of one interaction file (see dataset.h).
 *
 * Flow on every rank:
 *  1. open + size; parse the header from offset 0 (every rank, no broadcast);
 *  2. byte range [lo, hi) = mr_shard_range; with quoting, count quotes (and
 *     newlines) in the range and take an exclusive scan, so each rank knows whether
 *     lo is inside quotes; then find the first record start at or after lo;
 *  3. parse records starting before hi with pread into a reusable buffer (doubled
 *     for a record longer than the buffer), interning user/item strings and text
 *     tokens into local string tables: records keep only small local ids;
 *  4. bad records: counted; their locations are kept with line numbers relative
 *     to the rank's start, and made absolute only if some rank has one (a newline
 *     count pass + exclusive scan, so the common path reads unquoted files once);
 *  5. exclusive scan of record counts -> global record numbers; split;
 *  6. vocabularies from the local string tables (vocab.c), local ids -> global ids;
 *  7. summary counts (duplicate pairs by hashing pairs to owner ranks, OOV in test).
 * Every failure is agreed on by all ranks before the next collective.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dups.h"
#include "mpirec/bigmem.h"
#include "mpirec/dataset.h"
#include "mpirec/hash.h"
#include "mpirec/log.h"
#include "mpirec/reader.h"
#include "mpirec/strtab.h"
#include "mpirec/text.h"

#define CHUNK (1 << 20)
#define MAX_BAD_KEPT 16
#define PEND 2048
#define PF_AHEAD 16 /* records ahead for software prefetches in gathers */

static const char *col_names[MR_NCOLS] = {"user", "item", "rating", "text", "timestamp"};

typedef struct BadRec {
    int64_t offset, rel_line;
    int col;
    char reason[200];
} BadRec;

/* Growable arrays of the records this rank parses. */
typedef struct Ing {
    const MrConfig *cfg;
    const char *path;
    int fd;
    int64_t size;
    int has_rating, has_ts, has_text;
    int keep_ts;              /* store timestamps (the temporal split needs them) */
    MrStrTab users, items, toks;
    uint32_t *u, *it;         /* local ids (they become the int32 vocabulary ids in place) */
    uint64_t *key;            /* duplicate-pair key of each record (count_duplicates) */
    float *rating;
    double *ts;
    int64_t *tok_off;         /* [n + 1] */
    uint32_t *tok;            /* local token ids */
    int64_t n, cap, ntok, tok_cap;
    char *scratch;            /* tokenizer output */
    size_t scratch_cap;
    /* Strings of records parsed but not yet interned (batched for prefetching):
     * pointers into the parse buffer, or into `arena` for fields the reader
     * unescaped into its scratch. Valid until the parse call returns. */
    const char *buf_lo, *buf_hi;
    int64_t npend;
    const char *pend_p[2 * PEND];
    uint32_t pend_l[2 * PEND];
    uint32_t pend_id[2 * PEND];
    char *arena;
    size_t arena_len, arena_cap;
    int64_t n_bad;
    BadRec bad[MAX_BAD_KEPT];
    int n_bad_kept;
    int stop_at_bad;
    int oom;
} Ing;

/* Room for at least `want` records (doubling otherwise). */
static int grow_records(Ing *g, int64_t want)
{
    int64_t cap = g->cap ? g->cap * 2 : 1 << 16;
    if (cap < want)
        cap = want;
    uint32_t *u = realloc(g->u, (size_t)cap * sizeof *u);
    if (!u)
        return -1;
    g->u = u;
    uint32_t *it = realloc(g->it, (size_t)cap * sizeof *it);
    if (!it)
        return -1;
    g->it = it;
    uint64_t *key = realloc(g->key, (size_t)cap * sizeof *key);
    if (!key)
        return -1;
    g->key = key;
    float *r = realloc(g->rating, (size_t)cap * sizeof *r);
    if (!r)
        return -1;
    g->rating = r;
    if (g->keep_ts) {
        double *t = realloc(g->ts, (size_t)cap * sizeof *t);
        if (!t)
            return -1;
        g->ts = t;
    }
    if (g->has_text) {
        int64_t *o = realloc(g->tok_off, (size_t)(cap + 1) * sizeof *o);
        if (!o)
            return -1;
        g->tok_off = o;
    }
    g->cap = cap;
    return 0;
}

static void note_bad(Ing *g, const MrRecord *rec, int col, const char *fmt, const char *a)
{
    if (g->n_bad_kept < MAX_BAD_KEPT) {
        BadRec *b = &g->bad[g->n_bad_kept++];
        b->offset = rec->offset;
        b->rel_line = rec->line;
        b->col = col;
        snprintf(b->reason, sizeof b->reason, fmt, a);
    }
    g->n_bad++;
}

static int take_token(const char *tok, size_t len, void *ud)
{
    Ing *g = ud;
    int64_t id = mr_strtab_intern(&g->toks, tok, len, mr_strhash(tok, len), NULL);
    if (id < 0)
        return -1;
    if (g->ntok >= g->tok_cap) {
        int64_t cap = g->tok_cap ? g->tok_cap * 2 : 1 << 16;
        uint32_t *t = realloc(g->tok, (size_t)cap * sizeof *t);
        if (!t)
            return -1;
        g->tok = t;
        g->tok_cap = cap;
    }
    g->tok[g->ntok++] = (uint32_t)id;
    return 0;
}

/* Intern the pending users and items (records n - npend .. n-1), and key each
 * record's (user, item) pair by the hashes of the two strings. */
static int flush_pending(Ing *g)
{
    int64_t m = g->npend;
    if (!m)
        return 0;
    /* users at even slots, items at odd slots of pend_*: split into two runs */
    const char *up[PEND], *ip[PEND];
    uint32_t ul[PEND], il[PEND], uid[PEND], iid[PEND];
    uint64_t uh[PEND], ih[PEND];
    for (int64_t k = 0; k < m; k++) {
        up[k] = g->pend_p[2 * k];
        ul[k] = g->pend_l[2 * k];
        ip[k] = g->pend_p[2 * k + 1];
        il[k] = g->pend_l[2 * k + 1];
    }
    if (mr_strtab_intern_batch(&g->users, m, up, ul, uid, uh) != 0 ||
        mr_strtab_intern_batch(&g->items, m, ip, il, iid, ih) != 0)
        return -1;
    int64_t first = g->n - m;
    for (int64_t k = 0; k < m; k++) {
        g->u[first + k] = uid[k];
        g->it[first + k] = iid[k];
        g->key[first + k] = mr_mix(uh[k], ih[k]);
    }
    g->npend = 0;
    g->arena_len = 0;
    return 0;
}

static int outside(const Ing *g, const char *p, size_t len)
{
    return p < g->buf_lo || p + len > g->buf_hi;
}

static const char *arena_copy(Ing *g, const char *p, size_t len)
{
    char *q = g->arena + g->arena_len;
    memcpy(q, p, len);
    g->arena_len += len;
    return q;
}

/* Queue the user and item strings of the record being added, copying those that
 * do not live in the parse buffer (the reader unescaped them into its scratch).
 * Room for both is made first, so a flush never splits a record's pair. */
static int pend_record(Ing *g, const char *up, size_t ul, const char *ip, size_t il)
{
    if (ul > UINT32_MAX - 1 || il > UINT32_MAX - 1)
        return -1;
    size_t need = (outside(g, up, ul) ? ul : 0) + (outside(g, ip, il) ? il : 0);
    if (g->arena_len + need > g->arena_cap) {
        if (flush_pending(g) != 0) /* earlier copies must not move */
            return -1;
        size_t cap = g->arena_cap ? g->arena_cap : 1 << 16;
        while (cap < need)
            cap *= 2;
        if (cap > g->arena_cap) {
            char *a = realloc(g->arena, cap);
            if (!a)
                return -1;
            g->arena = a;
            g->arena_cap = cap;
        }
    }
    if (outside(g, up, ul))
        up = arena_copy(g, up, ul);
    if (outside(g, ip, il))
        ip = arena_copy(g, ip, il);
    g->pend_p[2 * g->npend] = up;
    g->pend_l[2 * g->npend] = (uint32_t)ul;
    g->pend_p[2 * g->npend + 1] = ip;
    g->pend_l[2 * g->npend + 1] = (uint32_t)il;
    g->npend++;
    return 0;
}

static const char *kind_name(MrValKind k)
{
    switch (k) {
    case MR_VAL_ABSENT: return "missing";
    case MR_VAL_NULL: return "null";
    case MR_VAL_BOOL: return "a boolean";
    case MR_VAL_OTHER: return "an array or object";
    default: return "a value";
    }
}

/* Validate and store one record. Returns non-zero to stop parsing. */
static int on_record(const MrRecord *rec, void *ud)
{
    Ing *g = ud;
    if (rec->bad_reason) {
        note_bad(g, rec, rec->bad_col, "%s", rec->bad_reason);
        return g->stop_at_bad;
    }
    const MrField *f = rec->f;
    for (int c = MR_COL_USER; c <= MR_COL_ITEM; c++)
        if (f[c].kind != MR_VAL_TEXT && f[c].kind != MR_VAL_NUMBER) {
            note_bad(g, rec, c, "the %s id is %s", kind_name(f[c].kind));
            return g->stop_at_bad;
        }
    double rating = g->cfg->data.default_rating, ts = 0;
    if (g->has_rating) {
        const MrField *r = &f[MR_COL_RATING];
        if (r->kind != MR_VAL_TEXT && r->kind != MR_VAL_NUMBER) {
            note_bad(g, rec, MR_COL_RATING, "the rating is %s: expected a finite number",
                     kind_name(r->kind));
            return g->stop_at_bad;
        }
        if (mr_parse_double(r->p, r->len, &rating) != 0) {
            char v[48];
            snprintf(v, sizeof v, "%.*s", (int)(r->len < 40 ? r->len : 40), r->p);
            note_bad(g, rec, MR_COL_RATING, "the rating '%s' is not a finite number", v);
            return g->stop_at_bad;
        }
    }
    if (g->has_ts) {
        const MrField *t = &f[MR_COL_TIME];
        if ((t->kind != MR_VAL_TEXT && t->kind != MR_VAL_NUMBER) ||
            mr_parse_timestamp(t->p, t->len, &ts) != 0) {
            char v[48];
            snprintf(v, sizeof v, "%.*s", (int)(t->len < 40 ? t->len : 40), t->p ? t->p : "");
            note_bad(g, rec, MR_COL_TIME,
                     "the timestamp '%s' is neither a number nor an ISO-8601 date", v);
            return g->stop_at_bad;
        }
    }
    if (g->has_text && f[MR_COL_TEXT].kind == MR_VAL_OTHER) {
        note_bad(g, rec, MR_COL_TEXT, "the text is %s: expected a string", "an array or object");
        return g->stop_at_bad;
    }
    if (g->n >= g->cap && grow_records(g, 0) != 0) {
        g->oom = 1;
        return -1;
    }
    int64_t k = g->n;
    /* Count the record (g->n) only after its strings are queued; a flush inside
     * pend_record covers the earlier records only. */
    if (pend_record(g, f[MR_COL_USER].p, f[MR_COL_USER].len, f[MR_COL_ITEM].p,
                    f[MR_COL_ITEM].len) != 0) {
        g->oom = 1;
        return -1;
    }
    g->rating[k] = (float)rating;
    if (g->keep_ts)
        g->ts[k] = ts;
    if (g->has_text) {
        g->tok_off[k] = g->ntok;
        const MrField *t = &f[MR_COL_TEXT];
        if (t->kind == MR_VAL_TEXT || t->kind == MR_VAL_NUMBER) {
            if (t->len > g->scratch_cap) {
                size_t cap = t->len * 2 + 64;
                char *s = realloc(g->scratch, cap);
                if (!s) {
                    g->oom = 1;
                    return -1;
                }
                g->scratch = s;
                g->scratch_cap = cap;
            }
            if (mr_text_tokenize(t->p, t->len, g->scratch, take_token, g) != 0) {
                g->oom = 1;
                return -1;
            }
        }
        g->tok_off[k + 1] = g->ntok;
    }
    g->n++;
    if (g->npend == PEND && flush_pending(g) != 0) {
        g->oom = 1;
        return -1;
    }
    return 0;
}

static int read_at(int fd, char *buf, size_t n, int64_t off, size_t *got)
{
    size_t total = 0;
    while (total < n) {
        ssize_t r = pread(fd, buf + total, n - total, (off_t)(off + (int64_t)total));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        total += (size_t)r;
    }
    *got = total;
    return 0;
}

/* Count '\n' (and quotes) in [a, b) of the file. */
static int count_range(Ing *g, char *buf, int64_t a, int64_t b, char quote, int64_t *quotes,
                       int64_t *newlines, MrErr *e)
{
    *quotes = *newlines = 0;
    for (int64_t off = a; off < b;) {
        size_t want = (size_t)(b - off < CHUNK ? b - off : CHUNK), got;
        if (read_at(g->fd, buf, want, off, &got) != 0 || got == 0)
            return mr_err_set(e, MR_EIO, "%s: read error at byte %" PRId64 ": %s", g->path, off,
                              got == 0 ? "unexpected end of file" : strerror(errno));
        int64_t q, nl;
        mr_shard_count(buf, got, quote, &q, &nl);
        *quotes += q;
        *newlines += nl;
        off += (int64_t)got;
    }
    return MR_OK;
}

static void ing_free(Ing *g)
{
    if (g->fd >= 0)
        close(g->fd);
    mr_strtab_free(&g->users);
    mr_strtab_free(&g->items);
    mr_strtab_free(&g->toks);
    free(g->u);
    free(g->it);
    free(g->key);
    free(g->rating);
    free(g->ts);
    free(g->tok_off);
    free(g->tok);
    free(g->scratch);
    free(g->arena);
}

/* Strings of a string table as pointer/length arrays (borrowed bytes). */
static int table_views(const MrStrTab *t, const char ***s, uint32_t **l)
{
    *s = malloc((size_t)(t->n + 1) * sizeof **s);
    *l = malloc((size_t)(t->n + 1) * sizeof **l);
    if (!*s || !*l)
        return -1;
    for (int64_t k = 0; k < t->n; k++) {
        size_t len;
        (*s)[k] = mr_strtab_str(t, k, &len);
        (*l)[k] = (uint32_t)len;
    }
    return 0;
}

/* Build one id vocabulary from a local table and per-record local ids, counting
 * occurrences in the records selected by `train_only` (train or all). On success
 * the local ids in *localp become the vocabulary ids in place (4 bytes each: no
 * second array of n entries to allocate and fault in), handed over in *out;
 * *localp is set to NULL. `what` names the vocabulary in errors. */
static int build_id_vocab(MrVocab *v, MrComm *c, const MrStrTab *t, uint32_t **localp,
                          const uint8_t *is_test, int64_t n, int train_only, const MrConfig *cfg,
                          const char *what, int32_t **out, MrErr *e)
{
    uint32_t *local = *localp;
    const char **s = NULL;
    uint32_t *l = NULL;
    int64_t *cnt = calloc((size_t)(t->n + 1), sizeof *cnt);
    int64_t *ids = malloc((size_t)(t->n + 1) * sizeof *ids);
    /* The two gathers below index a table of one entry per local string, millions
     * of them: with 4-byte entries the table is half the size and more of it stays
     * in the cache (counts: while they fit, i.e. fewer than 2^32 local records). */
    uint32_t *t32 = calloc((size_t)(t->n + 1), sizeof *t32);
    int narrow = n < (int64_t)UINT32_MAX;
    int rc = (cnt && ids && t32 && table_views(t, &s, &l) == 0)
                 ? 0
                 : mr_err_set(e, MR_ENOMEM, "out of memory building a vocabulary");
    if (!(rc = mr_comm_agree(c, rc, e))) {
        /* Gathers over tables of millions of entries: prefetched, or every record
         * waits for a cache and TLB miss. */
        if (narrow) {
            for (int64_t i = 0; i < n; i++) {
                if (i + PF_AHEAD < n)
                    __builtin_prefetch(&t32[local[i + PF_AHEAD]], 1);
                t32[local[i]] += !train_only || !is_test[i];
            }
            for (int64_t k = 0; k < t->n; k++)
                cnt[k] = t32[k];
        } else {
            for (int64_t i = 0; i < n; i++) {
                if (i + PF_AHEAD < n)
                    __builtin_prefetch(&cnt[local[i + PF_AHEAD]], 1);
                if (!train_only || !is_test[i])
                    cnt[local[i]]++;
            }
        }
        rc = mr_vocab_build(v, c, t->n, s, l, cnt, cfg->vocab.min_count, cfg->vocab.max_size, ids,
                            e);
    }
    /* Record ids are 4 bytes: a vocabulary of 2^31 - 1 entries or more (with OOV)
     * is refused, on every rank (v->size is the same everywhere). */
    if (!rc && v->size >= (int64_t)INT32_MAX)
        rc = mr_err_set(e, MR_EDATA,
                        "%s: the %s vocabulary has %" PRId64 " entries; at most %d are supported "
                        "(vocab.max_size limits it)",
                        cfg->data.path, what, v->size, INT32_MAX - 1);
    if (!rc && !local && !(local = malloc(sizeof *local))) /* n = 0: still an array */
        rc = mr_err_set(e, MR_ENOMEM, "out of memory building a vocabulary");
    if (!rc) {
        for (int64_t k = 0; k < t->n; k++)
            t32[k] = (uint32_t)ids[k];
        for (int64_t i = 0; i < n; i++) {
            if (i + PF_AHEAD < n)
                __builtin_prefetch(&t32[local[i + PF_AHEAD]]);
            local[i] = t32[local[i]];
        }
        /* uint32_t and int32_t may alias; every value is below 2^31 here. */
        *localp = NULL;
        *out = (int32_t *)local;
    }
    rc = mr_comm_agree(c, rc, e);
    free(t32);
    free(s);
    free(l);
    free(cnt);
    free(ids);
    return rc;
}

static int ingest(MrDataset *d, MrComm *c, const MrConfig *cfg, MrErr *e)
{
    memset(d, 0, sizeof *d);
    double t0 = mr_comm_wtime();
    Ing g;
    memset(&g, 0, sizeof g);
    g.fd = -1;
    g.cfg = cfg;
    g.path = cfg->data.path;
    g.stop_at_bad = cfg->data.on_error == MR_ONERR_FAIL;
    MrReaderSpec spec;
    mr_reader_spec_from_config(&spec, cfg);
    g.has_rating = spec.cols[MR_COL_RATING].name[0] || spec.cols[MR_COL_RATING].index >= 0;
    g.has_ts = spec.cols[MR_COL_TIME].name[0] || spec.cols[MR_COL_TIME].index >= 0;
    /* Timestamps are always validated; they are kept only where used (8 bytes a
     * record of fresh memory otherwise). */
    g.keep_ts = g.has_ts && cfg->split.kind == MR_SPLIT_TEMPORAL;
    g.has_text = cfg->model.text.enabled;
    if (!g.has_text) {
        spec.cols[MR_COL_TEXT].name[0] = '\0';
        spec.cols[MR_COL_TEXT].index = -1;
    }
    MrReader *rd = NULL;
    char *buf = NULL;
    size_t cap = CHUNK;
    int rc = MR_OK;
    int64_t lo = 0, hi = 0, start = 0, data_start = 0, nl_lo_start = 0;
    int64_t quotes_range = 0, nl_range = -1;

    /* 1. open */
    if (!cfg->data.path[0])
        rc = mr_err_set(e, MR_ECONFIG, "data.path is not set");
    struct stat st;
    if (!rc) {
        g.fd = open(g.path, O_RDONLY);
        if (g.fd < 0)
            rc = mr_err_set(e, MR_EDATA, "cannot open data file %s: %s", g.path, strerror(errno));
        else if (fstat(g.fd, &st) != 0 || S_ISDIR(st.st_mode))
            rc = mr_err_set(e, MR_EDATA, "data file %s: %s", g.path,
                            S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
        else if (st.st_size == 0)
            rc = mr_err_set(e, MR_EDATA, "data file %s is empty", g.path);
        else
            g.size = (int64_t)st.st_size;
    }
    if (!rc) {
        buf = malloc(cap);
        if (!buf || mr_strtab_init(&g.users, 1024) || mr_strtab_init(&g.items, 1024) ||
            mr_strtab_init(&g.toks, g.has_text ? 1024 : 1))
            rc = mr_err_set(e, MR_ENOMEM, "out of memory starting ingestion");
    }
    if (!rc)
        rc = mr_reader_create(&rd, &spec, e);
    /* 1b. header, read by every rank from offset 0 */
    if (!rc) {
        size_t want = 1 << 16;
        for (;;) {
            if (want > cap) {
                char *nb = realloc(buf, want);
                if (!nb) {
                    rc = mr_err_set(e, MR_ENOMEM, "out of memory reading the header");
                    break;
                }
                buf = nb;
                cap = want;
            }
            size_t got;
            if (read_at(g.fd, buf, want, 0, &got) != 0) {
                rc = mr_err_set(e, MR_EIO, "%s: read error: %s", g.path, strerror(errno));
                break;
            }
            int need_more = 0;
            rc = mr_reader_header(rd, g.path, buf, got, (int64_t)got == g.size, &data_start,
                                  &need_more, e);
            if (rc || !need_more)
                break;
            if ((int64_t)got == g.size) {
                rc = mr_err_set(e, MR_EDATA, "%s: the header never ends", g.path);
                break;
            }
            want *= 2;
        }
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto fail;
    double tp0 = mr_comm_wtime();

    /* 2. range, quote parity, first record start */
    mr_shard_range(g.size, c->rank, c->size, &lo, &hi);
    char quote = spec.format == MR_FMT_JSONL ? 0 : spec.quote;
    int in_quotes = 0;
    if (quote) {
        /* Ranks after this one need its quote count; the last rank's is needed by
         * nobody, so it skips the pass (at P = 1 nothing is counted). */
        if (c->rank < c->size - 1)
            rc = count_range(&g, buf, lo, hi, quote, &quotes_range, &nl_range, e);
        int64_t before = quotes_range;
        int rc2 = mr_comm_agree(c, rc, e);
        if (rc2) {
            rc = rc2;
            goto fail;
        }
        if ((rc = mr_comm_exscan_i64(c, &before, 1, e)))
            goto fail;
        in_quotes = (int)(before & 1);
    }
    double t_count = mr_comm_wtime() - tp0;
    start = hi; /* no record starts in [lo, hi) unless found below */
    if (lo < hi) {
        if (c->rank == 0 || lo <= data_start) {
            start = data_start;
            /* newlines in [lo, data_start) for rank 0: the header's */
            if (data_start > lo) {
                int64_t q;
                rc = count_range(&g, buf, lo, data_start, quote, &q, &nl_lo_start, e);
            }
        } else {
            /* Look at the byte before lo, then scan forward. */
            char prev;
            size_t got;
            if (read_at(g.fd, &prev, 1, lo - 1, &got) != 0 || got != 1)
                rc = mr_err_set(e, MR_EIO, "%s: read error at byte %" PRId64, g.path, lo - 1);
            int prev_nl = prev == '\n' && !in_quotes;
            int64_t off = lo;
            while (!rc) {
                size_t want = (size_t)(g.size - off < CHUNK ? g.size - off : CHUNK);
                if (want == 0) {
                    start = g.size;
                    break;
                }
                if (read_at(g.fd, buf, want, off, &got) != 0 || got == 0) {
                    rc = mr_err_set(e, MR_EIO, "%s: read error at byte %" PRId64, g.path, off);
                    break;
                }
                int64_t k = mr_shard_first_record(buf, got, quote, in_quotes, prev_nl);
                int64_t q, nl;
                mr_shard_count(buf, k >= 0 ? (size_t)k : got, quote, &q, &nl);
                nl_lo_start += nl;
                if (k >= 0) {
                    start = off + k;
                    break;
                }
                in_quotes ^= (int)(q & 1);
                prev_nl = buf[got - 1] == '\n' && !in_quotes;
                off += (int64_t)got;
            }
        }
        if (start < data_start)
            start = data_start;
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto fail;

    /* 3. parse */
    if (start < hi) {
        int64_t buf_off = start, line = 1;
        size_t len = 0;
        int done = 0, sized = 0;
        while (!done) {
            if (len < cap && buf_off + (int64_t)len < g.size) {
                size_t got;
                size_t want = cap - len;
                if (buf_off + (int64_t)len + (int64_t)want > g.size)
                    want = (size_t)(g.size - buf_off - (int64_t)len);
                if (read_at(g.fd, buf + len, want, buf_off + (int64_t)len, &got) != 0) {
                    rc = mr_err_set(e, MR_EIO, "%s: read error at byte %" PRId64 ": %s", g.path,
                                    buf_off + (int64_t)len, strerror(errno));
                    break;
                }
                len += got;
            }
            int at_eof = buf_off + (int64_t)len >= g.size;
            size_t consumed = 0;
            int64_t next_line = line;
            g.buf_lo = buf;
            g.buf_hi = buf + len;
            int stop = mr_reader_parse(rd, buf, len, buf_off, line, hi, at_eof, on_record, &g,
                                       &consumed, &next_line, &done);
            if (!sized && !stop && consumed > 0 && g.n > 0) {
                /* Size the record arrays once for the whole range, from the record
                 * length seen in the first buffer (+3%): one allocation instead of a
                 * chain of doublings that each copy under the heap reuse below. */
                sized = 1;
                double per = (double)consumed / (double)g.n;
                int64_t est = (int64_t)((double)(hi - start) / per * 1.03) + 1024;
                if (est > g.cap && grow_records(&g, est) != 0)
                    g.oom = 1;
            }
            /* Interned before the buffer moves (pending pointers point into it). */
            if (!g.oom && flush_pending(&g) != 0)
                g.oom = 1;
            if (g.oom && !stop)
                stop = -1;
            if (stop) {
                if (g.oom)
                    rc = mr_err_set(e, MR_ENOMEM, "out of memory while parsing %s", g.path);
                break; /* a bad record with on_error=fail: reported below */
            }
            if (done || (at_eof && consumed == len))
                break;
            if (consumed == 0) {
                if (at_eof) {
                    rc = mr_err_set(e, MR_EINTERNAL, "%s: parser made no progress at byte %" PRId64,
                                    g.path, buf_off);
                    break;
                }
                /* One record longer than the buffer: double it. */
                char *nb = realloc(buf, cap * 2);
                if (!nb) {
                    rc = mr_err_set(e, MR_ENOMEM,
                                    "%s: out of memory holding a record longer than %zu bytes at "
                                    "byte %" PRId64,
                                    g.path, cap, buf_off);
                    break;
                }
                buf = nb;
                cap *= 2;
                continue;
            }
            memmove(buf, buf + consumed, len - consumed);
            len -= consumed;
            buf_off += (int64_t)consumed;
            line = next_line;
        }
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto fail;
    double t_parse = mr_comm_wtime() - tp0;
    /* No more lookups: the next phases reuse the slot arrays' memory. */
    mr_strtab_drop_lookup(&g.users);
    mr_strtab_drop_lookup(&g.items);
    mr_strtab_drop_lookup(&g.toks);

    /* 4. bad records */
    int64_t nbad = g.n_bad;
    if ((rc = mr_comm_allreduce_i64(c, &nbad, 1, MR_SUM, e)))
        goto fail;
    if (nbad > 0) {
        /* Absolute line numbers: newlines in [0, lo) by exscan of the ranges'
         * counts, plus those in [lo, start). */
        if (nl_range < 0) {
            int64_t q;
            rc = count_range(&g, buf, lo, hi, 0, &q, &nl_range, e);
        }
        if ((rc = mr_comm_agree(c, rc, e)))
            goto fail;
        int64_t before = nl_range;
        if ((rc = mr_comm_exscan_i64(c, &before, 1, e)))
            goto fail;
        int64_t base = before + nl_lo_start; /* newlines before `start` */
        int fail_now = cfg->data.on_error == MR_ONERR_FAIL ||
                       (cfg->data.on_error == MR_ONERR_SKIP && nbad > cfg->data.max_bad_records);
        if (g.n_bad_kept > 0) {
            BadRec *b = &g.bad[0];
            char where[400];
            snprintf(where, sizeof where, "%s:%" PRId64 " (byte %" PRId64 ")%s%s%s: %s", g.path,
                     base + b->rel_line, b->offset, b->col >= 0 ? ", field " : "",
                     b->col >= 0 ? col_names[b->col] : "", "", b->reason);
            snprintf(d->sum.first_bad, sizeof d->sum.first_bad, "%s", where);
            if (fail_now) {
                if (cfg->data.on_error == MR_ONERR_FAIL)
                    rc = mr_err_set(e, MR_EDATA,
                                    "bad record at %s (data.on_error=skip skips such records)",
                                    where);
                else
                    rc = mr_err_set(e, MR_EDATA,
                                    "%" PRId64 " bad records, more than data.max_bad_records = "
                                    "%" PRId64 "; the first is at %s",
                                    nbad, cfg->data.max_bad_records, where);
            }
        }
        if ((rc = mr_comm_agree(c, rc, e)))
            goto fail;
        /* Every rank should know where the first bad record was (for the summary). */
        char msg[512];
        memset(msg, 0, sizeof msg);
        int64_t who = g.n_bad_kept > 0 ? c->rank : c->size;
        if ((rc = mr_comm_allreduce_i64(c, &who, 1, MR_MIN, e)))
            goto fail;
        if (c->rank == who)
            memcpy(msg, d->sum.first_bad, sizeof msg);
        if ((rc = mr_comm_bcast(c, msg, sizeof msg, (int)who, e)))
            goto fail;
        memcpy(d->sum.first_bad, msg, sizeof msg);
        d->sum.first_bad[sizeof d->sum.first_bad - 1] = '\0';
    }

    /* 5. record numbers and split */
    int64_t n = g.n;
    d->n = n;
    int64_t first = n, total = n;
    if ((rc = mr_comm_exscan_i64(c, &first, 1, e)) ||
        (rc = mr_comm_allreduce_i64(c, &total, 1, MR_SUM, e)))
        goto fail;
    d->first = first;
    if (total == 0) {
        rc = mr_err_set(e, MR_EDATA, "%s has no data records%s", g.path,
                        spec.header && data_start > 0 ? " (only a header)" : "");
        goto fail;
    }
    double tv0 = mr_comm_wtime();
    d->is_test = malloc((size_t)n + 1);
    rc = d->is_test ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto fail;
    if (cfg->split.kind == MR_SPLIT_RANDOM)
        mr_split_random(d->is_test, first, n, cfg->split.seed, cfg->split.test_fraction);
    else if ((rc = mr_split_temporal(d->is_test, c, g.ts, first, n, cfg->split.test_fraction, e)))
        goto fail;

    /* Duplicate pairs (keys made while interning; freed once counted). */
    double td0 = mr_comm_wtime();
    rc = mr_count_duplicates(c, &g.key, n, total, 0, &d->sum.duplicate_pairs, e);
    if (rc)
        goto fail;

    /* 6. vocabularies */
    double tu0 = mr_comm_wtime();
    int train_only = cfg->vocab.from == MR_VOCAB_TRAIN;
    if ((rc = build_id_vocab(&d->users, c, &g.users, &g.u, d->is_test, n, train_only, cfg, "user",
                             &d->user, e)))
        goto fail;
    double ti0 = mr_comm_wtime();
    if ((rc = build_id_vocab(&d->items, c, &g.items, &g.it, d->is_test, n, train_only, cfg, "item",
                             &d->item, e)))
        goto fail;
    mr_log(MR_LOG_DEBUG,
           "ingest phases on rank %d: parse+intern %.3f s (quote parity %.3f s), split %.3f s, "
           "duplicate pairs %.3f s, user vocabulary %.3f s (%" PRId64
           " local), item vocabulary %.3f s (%" PRId64 " local)",
           c->rank, t_parse, t_count, td0 - tv0, tu0 - td0, ti0 - tu0, g.users.n,
           mr_comm_wtime() - ti0, g.items.n);
    if (g.has_text) {
        const char **s = NULL;
        uint32_t *l = NULL;
        int64_t *cnt = calloc((size_t)(g.toks.n + 1), sizeof *cnt);
        int64_t *ids = malloc((size_t)(g.toks.n + 1) * sizeof *ids);
        d->tok = malloc((size_t)(g.ntok + 1) * sizeof *d->tok);
        rc = (cnt && ids && d->tok && table_views(&g.toks, &s, &l) == 0)
                 ? 0
                 : mr_err_set(e, MR_ENOMEM, "out of memory building the token vocabulary");
        if (!(rc = mr_comm_agree(c, rc, e))) {
            for (int64_t i = 0; i < n; i++)
                if (!train_only || !d->is_test[i])
                    for (int64_t k = g.tok_off[i]; k < g.tok_off[i + 1]; k++)
                        cnt[g.tok[k]]++;
            rc = mr_token_vocab_build(&d->tokens, c, g.toks.n, s, l, cnt,
                                      cfg->model.text.max_tokens, ids, e);
        }
        if (!rc) {
            for (int64_t k = 0; k < g.ntok; k++)
                d->tok[k] = (int32_t)ids[g.tok[k]];
            d->tok_off = g.tok_off;
            g.tok_off = NULL;
            if (n == 0) {
                free(d->tok_off);
                d->tok_off = calloc(1, sizeof *d->tok_off);
            }
        }
        free(s);
        free(l);
        free(cnt);
        free(ids);
        if (rc)
            goto fail;
    }
    d->rating = g.rating;
    g.rating = NULL;
    d->ts = g.ts;
    g.ts = NULL;

    /* 7. summary */
    int64_t v[6] = {0, 0, 0, 0, 0, (int64_t)d->n};
    for (int64_t i = 0; i < n; i++) {
        if (d->is_test[i]) {
            v[0]++;
            v[1] += d->user[i] == 0;
            v[2] += d->item[i] == 0;
        }
        if (g.has_text)
            v[3] += d->tok_off[i + 1] == d->tok_off[i];
    }
    v[4] = g.n_bad;
    if ((rc = mr_comm_allreduce_i64(c, v, 6, MR_SUM, e)))
        goto fail;
    MrDataSummary *s = &d->sum;
    s->records = total;
    s->bad_records = v[4];
    s->users = d->users.size;
    s->items = d->items.size;
    s->tokens = g.has_text ? d->tokens.size : 0;
    s->test_records = v[0];
    s->train_records = total - v[0];
    s->test_oov_users = v[1];
    s->test_oov_items = v[2];
    s->empty_text = v[3];
    s->bytes = g.size;
    s->ranks = c->size;
    double tm[2] = {t_parse, mr_comm_wtime() - tv0};
    if ((rc = mr_comm_allreduce_f64(c, tm, 2, MR_MAX, e)))
        goto fail;
    s->parse_seconds = tm[0];
    s->vocab_seconds = tm[1];
    s->seconds = mr_comm_wtime() - t0;
    if (s->bad_records)
        mr_log(MR_LOG_WARN, "skipped %" PRId64 " bad record%s; the first: %s", s->bad_records,
               s->bad_records == 1 ? "" : "s", s->first_bad);
    if (s->empty_text)
        mr_log(MR_LOG_WARN,
               "%" PRId64 " record%s have no text tokens: their text vector is zero (Keras would "
               "give NaN)",
               s->empty_text, s->empty_text == 1 ? "" : "s");
    mr_reader_destroy(&rd);
    free(buf);
    ing_free(&g);
    return MR_OK;
fail:
    mr_reader_destroy(&rd);
    free(buf);
    ing_free(&g);
    mr_dataset_free(d);
    return rc;
}

/* Ingestion allocates and frees some tens of arrays of 10-300 MB (record arrays,
 * pair keys, string tables, the vocabulary exchange): inside the reuse window
 * (bigmem.h) each one reuses the memory of those freed before it instead of being
 * faulted in afresh. */
int mr_ingest(MrDataset *d, MrComm *c, const MrConfig *cfg, MrErr *e)
{
    int token = mr_big_reuse_begin();
    int rc = ingest(d, c, cfg, e);
    mr_big_reuse_end(token);
    return rc;
}

void mr_dataset_free(MrDataset *d)
{
    if (!d)
        return;
    free(d->user);
    free(d->item);
    free(d->rating);
    free(d->ts);
    free(d->tok_off);
    free(d->tok);
    free(d->is_test);
    mr_vocab_free(&d->users);
    mr_vocab_free(&d->items);
    mr_token_vocab_free(&d->tokens);
    MrDataSummary keep = d->sum;
    memset(d, 0, sizeof *d);
    d->sum = keep;
}

char *mr_data_summary_json(const MrDataSummary *s)
{
    char *out = malloc(2048);
    if (!out)
        return NULL;
    double mbps = s->seconds > 0 ? (double)s->bytes / 1e6 / s->seconds : 0;
    /* first_bad is a message that may contain quotes or backslashes: escape it. */
    char esc[1100];
    size_t k = 0;
    for (const char *p = s->first_bad; *p && k + 7 < sizeof esc; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            esc[k++] = '\\';
            esc[k++] = (char)ch;
        } else if (ch < 0x20) {
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\u%04x", ch);
        } else {
            esc[k++] = (char)ch;
        }
    }
    esc[k] = '\0';
    snprintf(out, 2048,
             "{\"records\": %" PRId64 ", \"bad_records\": %" PRId64 ", \"users\": %" PRId64
             ", \"items\": %" PRId64 ", \"tokens\": %" PRId64 ", \"train_records\": %" PRId64
             ", \"test_records\": %" PRId64 ", \"duplicate_pairs\": %" PRId64
             ", \"test_oov_users\": %" PRId64 ", \"test_oov_items\": %" PRId64
             ", \"empty_text\": %" PRId64 ", \"bytes\": %" PRId64
             ", \"seconds\": %.6f, \"parse_seconds\": %.6f, \"vocab_seconds\": %.6f"
             ", \"mb_per_s\": %.3f, \"mb_per_s_per_rank\": %.3f, \"ranks\": %d, \"first_bad\": "
             "\"%s\"}",
             s->records, s->bad_records, s->users, s->items, s->tokens, s->train_records,
             s->test_records, s->duplicate_pairs, s->test_oov_users, s->test_oov_items,
             s->empty_text, s->bytes, s->seconds, s->parse_seconds, s->vocab_seconds, mbps,
             s->ranks ? mbps / s->ranks : 0, s->ranks, esc);
    return out;
}
