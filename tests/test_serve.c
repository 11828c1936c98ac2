/* test_serve.c — the serving library in one process: request-line parsing, JSON
 * output escaping, checkpoint-path resolution, the seen-file name, loading
 * errors, and a small train -> index -> recommend round trip whose exclusions
 * are checked against the training pairs recomputed here from the split rule.
 *
 * Files go under $MPIREC_TMP/mpirec-test-<tag>/serve/<test>. The end-to-end
 * scripts tests/e2e/recommend_*.sh cover the command line on real data.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpirec/dataset.h"
#include "mpirec/hash.h"
#include "mpirec/serve.h"
#include "mpirec/train.h"
#include "test_util.h"

static const char *fresh_dir(const char *name)
{
    static char dir[4][1024];
    static int k;
    k = (k + 1) & 3;
    snprintf(dir[k], sizeof dir[k], "%s/serve/%s", test_tmp_dir(), name);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir[k], dir[k]);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot prepare %s\n", dir[k]);
    return dir[k];
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* ---- requests ---------------------------------------------------------------- */

/* Plain ids lose surrounding blanks and the line end; nothing else is touched. */
static void test_parse_plain(void)
{
    MrServeRequest r;
    MrErr e;
    CU_ASSERT_EQUAL(mr_serve_parse_request("  A2JX Z9 \r", 11, "text", &r, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(r.user, "A2JX Z9");
    CU_ASSERT_EQUAL(r.user_len, 7);
    CU_ASSERT_PTR_NULL(r.text);
    mr_serve_request_free(&r);
    CU_ASSERT_EQUAL(mr_serve_parse_request(" \t ", 3, "text", &r, &e), MR_EDATA);
    ASSERT_HAS(e.msg, "empty request");
}

/* JSON objects: escapes (incl. a surrogate pair) decoded, numbers taken literally,
 * other members (nested) skipped, null text = no text, custom text member. */
static void test_parse_json(void)
{
    MrServeRequest r;
    MrErr e;
    const char *l1 =
        "{\"x\": [1, {\"a\": [true, null]}], \"user\": \"u\\\"1\\u00e9\\ud83d\\ude00\","
        " \"text\": \"Great \\n cable!\", \"n\": -1.5e3}";
    CU_ASSERT_EQUAL_FATAL(mr_serve_parse_request(l1, strlen(l1), "text", &r, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(r.user, "u\"1\xc3\xa9\xf0\x9f\x98\x80");
    CU_ASSERT_EQUAL(r.user_len, 9);
    CU_ASSERT_STRING_EQUAL(r.text, "Great \n cable!");
    mr_serve_request_free(&r);
    const char *l2 = "{\"user\": 196, \"summary\": \"nice\", \"text\": \"ignored\"}";
    CU_ASSERT_EQUAL_FATAL(mr_serve_parse_request(l2, strlen(l2), "summary", &r, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(r.user, "196");
    CU_ASSERT_STRING_EQUAL(r.text, "nice");
    mr_serve_request_free(&r);
    const char *l3 = "{\"text\": null, \"user\": \"a\"}";
    CU_ASSERT_EQUAL_FATAL(mr_serve_parse_request(l3, strlen(l3), "text", &r, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(r.user, "a");
    CU_ASSERT_PTR_NULL(r.text);
    mr_serve_request_free(&r);
}

/* Malformed lines: each gets MR_EDATA and a reason; the request stays freeable. */
static void test_parse_errors(void)
{
    static const struct {
        const char *line, *why;
    } cases[] = {
        {"{\"user\": \"a\"", "expected ',' or '}'"},
        {"{\"text\": \"t\"}", "no \"user\" member"},
        {"{\"user\": true}", "must be a string or a number"},
        {"{\"user\": \"a\", \"text\": 3}", "must be a string or null"},
        {"{\"user\": \"a\\q\"}", "unknown escape"},
        {"{\"user\": \"\\ud83d\"}", "unpaired surrogate"},
        {"{\"user\": \"a\"} x", "text after the object"},
        {"{\"user\": \"a\", \"n\": 01}", "expected ',' or '}'"},
        {"{\"user\": \"a\", \"n\": [1,]}", "expected a value"},
        {"{\"user\": \"a\tb\"}", "control character"},
        {"{user: 1}", "expected a member name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        MrServeRequest r;
        MrErr e;
        mr_err_clear(&e);
        int rc = mr_serve_parse_request(cases[i].line, strlen(cases[i].line), "text", &r, &e);
        CU_ASSERT_EQUAL(rc, MR_EDATA);
        ASSERT_HAS(e.msg, cases[i].why);
        CU_ASSERT_PTR_NULL(r.user);
        mr_serve_request_free(&r);
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[4096] = "{\"user\": \"a\", \"x\": ";
    size_t n = strlen(deep);
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    MrServeRequest r;
    MrErr e;
    CU_ASSERT_EQUAL(mr_serve_parse_request(deep, n, "text", &r, &e), MR_EDATA);
    ASSERT_HAS(e.msg, "nested too deeply");
}

/* Output strings: quotes, backslashes, control bytes escaped; invalid UTF-8 bytes
 * become U+FFFD; valid multi-byte sequences pass. */
static void test_json_string(void)
{
    char *b = NULL;
    size_t len = 0, cap = 0;
    const char in[] = "a\"b\\c\n\x01\xc3\xa9\xff\xe2\x82";
    CU_ASSERT_EQUAL(mr_serve_json_string(&b, &len, &cap, in, sizeof in - 1), 0);
    CU_ASSERT_STRING_EQUAL(b, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\\ufffd\\ufffd\\ufffd\"");
    CU_ASSERT_EQUAL(len, strlen(b));
    CU_ASSERT_EQUAL(mr_serve_buf_printf(&b, &len, &cap, " %d", 42), 0);
    CU_ASSERT_EQUAL(strcmp(b + len - 3, " 42"), 0);
    free(b);
}

/* ---- checkpoint names -------------------------------------------------------- */

/* A file with the mpirec header is taken as is; `latest` pointers, checkpoints/
 * directories and run directories lead to the file `latest` names; missing or
 * odd inputs give MR_EIO / MR_EFORMAT naming the path. */
static void test_resolve(void)
{
    const char *d = fresh_dir("resolve");
    char p[1200], q[1200], out[4096];
    MrErr e;
    snprintf(p, sizeof p, "%s/checkpoints", d);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/checkpoints/ckpt-000000007.h5", d);
    write_file(p, "MPIREC-FILE 1\nkind MPIREC-CKPT\n", 32);
    snprintf(q, sizeof q, "%s/checkpoints/latest", d);
    write_file(q, "ckpt-000000007.h5\n", 18);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(p, out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, p);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(q, out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, p);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(d, out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, p);
    snprintf(q, sizeof q, "%s/checkpoints/", d);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(q, out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, p);
    /* a pointer to a missing file */
    snprintf(q, sizeof q, "%s/checkpoints/latest", d);
    write_file(q, "ckpt-000000009.h5\n", 18);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(d, out, sizeof out, &e), MR_EIO);
    ASSERT_HAS(e.msg, "ckpt-000000009.h5");
    /* binary junk is not a pointer */
    write_file(q, "\x01\x02junk", 6);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(q, out, sizeof out, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "neither a checkpoint nor a `latest` pointer");
    /* an empty directory, a missing path */
    const char *empty = fresh_dir("resolve_empty");
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(empty, out, sizeof out, &e), MR_EIO);
    ASSERT_HAS(e.msg, "holds no usable checkpoint");
    snprintf(q, sizeof q, "%s/nope.h5", d);
    CU_ASSERT_EQUAL(mr_serve_resolve_checkpoint(q, out, sizeof out, &e), MR_EIO);
    ASSERT_HAS(e.msg, "nope.h5: cannot open");
}

static void test_seen_path(void)
{
    char out[64];
    MrErr e;
    CU_ASSERT_EQUAL(mr_serve_seen_path("run/index.h5", out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, "run/index.seen.h5");
    CU_ASSERT_EQUAL(mr_serve_seen_path("a/b.idx", out, sizeof out, &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(out, "a/b.idx.seen.h5");
    CU_ASSERT_EQUAL(mr_serve_seen_path("x.h5", out, 10, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_serve_seen_path("x.h5", out, 9, &e), MR_EUSAGE);
}

/* Loading errors: a missing index is I/O (5), a file that is not HDF5 is a format
 * error (9); both name the file, and the server handle stays NULL. */
static void test_open_errors(void)
{
    const char *d = fresh_dir("open_errors");
    char p[1200];
    MrServer *s = (MrServer *)1;
    MrErr e;
    snprintf(p, sizeof p, "%s/missing.h5", d);
    CU_ASSERT_EQUAL(mr_server_open(&s, p, NULL, 0, &e), MR_EIO);
    CU_ASSERT_PTR_NULL(s);
    ASSERT_HAS(e.msg, p);
    snprintf(p, sizeof p, "%s/junk.h5", d);
    write_file(p, "this is not hdf5 at all, just some text\n", 40);
    CU_ASSERT_EQUAL(mr_server_open(&s, p, NULL, 0, &e), MR_EFORMAT);
    CU_ASSERT_PTR_NULL(s);
    ASSERT_HAS(e.msg, p);
}

/* ---- a small model end to end ------------------------------------------------ */

#define NU 12
#define NI 10

/* Records: user u rates items (u*3 + j*7) % NI for j < 5, plus a repeat of its
 * first item (duplicate pairs must count once). */
static int64_t write_data(const char *path, char users[][8], char items[][8], int *ru, int *ri)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fprintf(f, "user,item,rating\n");
    int64_t n = 0;
    for (int u = 0; u < NU; u++)
        for (int j = 0; j < 6; j++) {
            int it = j < 5 ? (u * 3 + j * 7) % NI : (u * 3) % NI;
            fprintf(f, "%s,%s,%d\n", users[u], items[it], 1 + (u + j) % 5);
            ru[n] = u;
            ri[n] = it;
            n++;
        }
    fclose(f);
    return n;
}

/* Train a tiny multitask model, then serve it: with exclude-seen every training
 * item of the user is gone and nothing else is (k = all items), counts and
 * k_clamped agree with the number of seen items, the seen file holds exactly the
 * distinct training pairs, unknown users are flagged, k beyond the corpus is
 * clamped with -1 padding, text for a model without a text tower is flagged as
 * ignored, and re-ranked lists are ordered by rating and drawn
 * from the retrieval top N. */
static void test_roundtrip(void)
{
    const char *d = fresh_dir("roundtrip");
    char users[NU][8], items[NI][8], data[1200], run[1200], index[1300];
    int ru[NU * 6], ri[NU * 6];
    for (int u = 0; u < NU; u++)
        snprintf(users[u], sizeof users[u], "u%02d", u);
    for (int i = 0; i < NI; i++)
        snprintf(items[i], sizeof items[i], "i%02d", i);
    snprintf(data, sizeof data, "%s/data.csv", d);
    snprintf(run, sizeof run, "%s/run", d);
    snprintf(index, sizeof index, "%s/index.h5", run);
    int64_t nrec = write_data(data, users, items, ru, ri);
    CU_ASSERT_EQUAL_FATAL(nrec, NU * 6);
    mkdir(run, 0755);

    MrConfig cfg;
    MrErr e;
    mr_config_defaults(&cfg);
    char set[1400];
    snprintf(set, sizeof set, "data.path=%s", data);
    const char *sets[] = {set,
                          "data.columns.rating=\"rating\"",
                          "vocab.from=\"all\"",
                          "model.task=\"multitask\"",
                          "model.embedding_dim=8",
                          "model.ranking_layers=[8]",
                          "train.batch_size=16",
                          "train.epochs=2",
                          "train.progress=\"none\"",
                          "index.recall_queries=20"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        CU_ASSERT_EQUAL_FATAL(mr_config_set(&cfg, sets[i], &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_config_validate(&cfg, &e), MR_OK);
    MrDataset ds;
    memset(&ds, 0, sizeof ds);
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&ds, g_test_comm, &cfg, &e), MR_OK);
    MrTrainOptions o = {run, NULL, NULL};
    MrTrainResult res;
    int rc = mr_train_run(g_test_comm, &cfg, &ds, &o, &res, &e);
    if (rc)
        fprintf(stderr, "\n  train: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, MR_OK);
    mr_dataset_free(&ds);

    /* the training pairs, from the split rule of SEMANTICS.md section 8 */
    int seen[NU][NI];
    memset(seen, 0, sizeof seen);
    uint64_t base = mr_mix(cfg.split.seed, MR_TAG_SPLIT), thr = mr_split_threshold(0.2);
    int64_t distinct = 0, nonempty = 0;
    for (int64_t r = 0; r < nrec; r++)
        if (!mr_split_is_test(base, (uint64_t)r, thr) && !seen[ru[r]][ri[r]]++)
            distinct++;
    for (int u = 0; u < NU; u++) {
        int c = 0;
        for (int i = 0; i < NI; i++)
            c += seen[u][i] > 0;
        nonempty += c > 0;
    }
    CU_ASSERT(nonempty >= NU / 2); /* the check below has something to check */

    MrServer *s = NULL;
    rc = mr_server_open(&s, index, NULL, MR_SERVE_LOAD_SEEN | MR_SERVE_LOAD_RATING, &e);
    if (rc)
        fprintf(stderr, "\n  open: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, MR_OK);
    const MrServerInfo *in = mr_server_info(s);
    CU_ASSERT_EQUAL(in->items, NI);
    CU_ASSERT_EQUAL(in->users, NU);
    CU_ASSERT_EQUAL(in->seen_pairs, distinct);
    CU_ASSERT(in->has_rating);

    MrServeRequest req[NU + 1];
    memset(req, 0, sizeof req);
    for (int u = 0; u < NU; u++) {
        req[u].user = users[u];
        req[u].user_len = strlen(users[u]);
    }
    req[NU].user = "nobody";
    req[NU].user_len = 6;
    req[NU].text = "text for a model without a text tower";
    req[NU].text_len = strlen(req[NU].text);
    int K = NI + 3, cnt[NU + 1];
    unsigned fl[NU + 1];
    int64_t *it = malloc(sizeof(int64_t) * (NU + 1) * (size_t)K);
    float *sc = malloc(sizeof(float) * (NU + 1) * (size_t)K);
    float *ra = malloc(sizeof(float) * (NU + 1) * (size_t)K);
    MrServeParams p = {K, 0, 1, 0};
    CU_ASSERT_EQUAL_FATAL(mr_server_recommend(s, req, NU + 1, &p, it, sc, NULL, cnt, fl, &e),
                          MR_OK);
    for (int u = 0; u <= NU; u++) {
        int nseen = 0;
        for (int i = 0; u < NU && i < NI; i++)
            nseen += seen[u][i] > 0;
        CU_ASSERT_EQUAL(cnt[u], NI - nseen);
        CU_ASSERT_EQUAL((fl[u] & MR_SERVE_K_CLAMPED) != 0, 1); /* K > NI */
        CU_ASSERT_EQUAL((fl[u] & MR_SERVE_UNKNOWN_USER) != 0, u == NU);
        CU_ASSERT_EQUAL((fl[u] & MR_SERVE_TEXT_IGNORED) != 0, u == NU);
        for (int a = 0; a < K; a++) {
            int64_t x = it[u * K + a];
            if (a >= cnt[u]) {
                CU_ASSERT_EQUAL(x, -1);
                continue;
            }
            size_t l;
            const char *id = mr_server_item_id(s, x, &l);
            char buf[8] = "";
            memcpy(buf, id, l < 7 ? l : 7); /* ids are not NUL-terminated */
            int item = atoi(buf + 1);
            CU_ASSERT(u == NU || !seen[u][item]);
            if (a > 0)
                CU_ASSERT(sc[u * K + a] <= sc[u * K + a - 1]);
        }
    }
    /* re-ranking: top 3 of the retrieval top 6, ordered by rating */
    MrServeParams pr = {3, 6, 0, 0}, p6 = {6, 0, 0, 0};
    int64_t it6[(NU + 1) * 6];
    float sc6[(NU + 1) * 6];
    int c6[NU + 1];
    unsigned f6[NU + 1];
    CU_ASSERT_EQUAL_FATAL(mr_server_recommend(s, req, NU + 1, &p6, it6, sc6, NULL, c6, f6, &e),
                          MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_server_recommend(s, req, NU + 1, &pr, it, sc, ra, cnt, fl, &e), MR_OK);
    for (int u = 0; u <= NU; u++) {
        CU_ASSERT_EQUAL(cnt[u], 3);
        for (int a = 0; a < 3; a++) {
            int found = -1;
            for (int b = 0; b < 6; b++)
                if (it6[u * 6 + b] == it[u * 3 + a])
                    found = b;
            CU_ASSERT(found >= 0);
            if (found >= 0)
                CU_ASSERT_EQUAL(sc[u * 3 + a], sc6[u * 6 + found]);
            if (a > 0)
                CU_ASSERT(ra[u * 3 + a] <= ra[u * 3 + a - 1]);
        }
    }
    /* misuse: rerank depth below k, exclude-seen without the seen file */
    MrServeParams bad = {5, 3, 0, 0};
    CU_ASSERT_EQUAL(mr_server_recommend(s, req, 1, &bad, it, sc, ra, cnt, fl, &e), MR_EUSAGE);
    mr_server_close(&s);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL_FATAL(mr_server_open(&s, index, NULL, 0, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_server_recommend(s, req, 1, &p, it, sc, NULL, cnt, fl, &e), MR_EUSAGE);
    ASSERT_HAS(e.msg, "seen file");
    mr_server_close(&s);
    free(it);
    free(sc);
    free(ra);
}

int add_suite_serve(void)
{
    CU_pSuite s = CU_add_suite("serve", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "parse_plain", test_parse_plain);
    CU_add_test(s, "parse_json", test_parse_json);
    CU_add_test(s, "parse_errors", test_parse_errors);
    CU_add_test(s, "json_string", test_json_string);
    CU_add_test(s, "resolve", test_resolve);
    CU_add_test(s, "seen_path", test_seen_path);
    CU_add_test(s, "open_errors", test_open_errors);
    CU_add_test(s, "roundtrip", test_roundtrip);
    return 0;
}
