/* test_mpi_ingest.c — parallel ingestion equals a serial one, on every real file.
 *
 * For each dataset in ../shared/data, mr_ingest runs at the test's P (ctest: 1, 2,
 * 3, 4). Independently, every rank parses the whole file serially with the reader
 * (one buffer, P = 1), builds the vocabularies by sorting, and computes
 * order-independent digests of (record number, user string, item string, rating)
 * and of (record number, user id, item id). The distributed result must give the
 * same digests (summed over ranks), the same counts and the same vocabulary sizes.
 * Also: the documented behaviour on bad input (yelp-truncated, a null rating,
 * empty / header-only files, a missing column, a directory). */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/dups.h"
#include "mpirec/dataset.h"
#include "mpirec/hash.h"
#include "mpirec/reader.h"
#include "mpirec/strtab.h"
#include "test_util.h"

typedef struct Serial {
    MrStrTab u, it;
    int64_t *ul, *il;
    float *rating;
    int64_t n, cap, bad;
} Serial;

static int serial_cb(const MrRecord *rec, void *ud)
{
    Serial *s = ud;
    if (rec->bad_reason) {
        s->bad++;
        return 0;
    }
    const MrField *f = rec->f;
    double r = 1.0;
    if (f[MR_COL_RATING].kind != MR_VAL_ABSENT &&
        (f[MR_COL_RATING].kind == MR_VAL_NULL ||
         mr_parse_double(f[MR_COL_RATING].p, f[MR_COL_RATING].len, &r) != 0)) {
        s->bad++;
        return 0;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->ul = realloc(s->ul, (size_t)s->cap * 8);
        s->il = realloc(s->il, (size_t)s->cap * 8);
        s->rating = realloc(s->rating, (size_t)s->cap * 4);
    }
    s->ul[s->n] = mr_strtab_intern(&s->u, f[0].p, f[0].len, mr_strhash(f[0].p, f[0].len), NULL);
    s->il[s->n] = mr_strtab_intern(&s->it, f[1].p, f[1].len, mr_strhash(f[1].p, f[1].len), NULL);
    s->rating[s->n] = (float)r;
    s->n++;
    return 0;
}

/* Rank of each table entry in byte order, + 1 (the serial vocabulary ids). */
static int64_t *serial_ids(const MrStrTab *t)
{
    int64_t n = t->n;
    int64_t *idx = malloc((size_t)(n + 1) * 8), *id = malloc((size_t)(n + 1) * 8);
    const char **s = calloc((size_t)(n + 1), sizeof *s);
    uint32_t *l = calloc((size_t)(n + 1), 4);
    for (int64_t k = 0; k < n; k++) {
        size_t len;
        s[k] = mr_strtab_str(t, k, &len);
        l[k] = (uint32_t)len;
        idx[k] = k;
    }
    mr_sort_strings(idx, n, s, l);
    for (int64_t k = 0; k < n; k++)
        id[idx[k]] = k + 1;
    free(idx);
    free(s);
    free(l);
    return id;
}

static uint64_t str_digest(const MrStrTab *t, int64_t id)
{
    size_t len;
    const char *p = mr_strtab_str(t, id, &len);
    return mr_strhash(p, len);
}

/* Serial digests of one file: {records, digest of strings, digest of ids, users,
 * items, bad}. */
static void serial_digest(const MrConfig *cfg, uint64_t out[6])
{
    FILE *f = fopen(cfg->data.path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    struct stat st;
    fstat(fileno(f), &st);
    char *buf = malloc((size_t)st.st_size + 1);
    CU_ASSERT_EQUAL_FATAL(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    MrReaderSpec spec;
    mr_reader_spec_from_config(&spec, cfg);
    MrReader *r;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &spec, &e), MR_OK);
    int64_t data_start;
    int need_more;
    CU_ASSERT_EQUAL_FATAL(mr_reader_header(r, cfg->data.path, buf, (size_t)st.st_size, 1,
                                           &data_start, &need_more, &e),
                          MR_OK);
    Serial s;
    memset(&s, 0, sizeof s);
    mr_strtab_init(&s.u, 1024);
    mr_strtab_init(&s.it, 1024);
    size_t consumed;
    int64_t next_line;
    int done;
    mr_reader_parse(r, buf + data_start, (size_t)(st.st_size - data_start), data_start, 1,
                    st.st_size, 1, serial_cb, &s, &consumed, &next_line, &done);
    int64_t *uid = serial_ids(&s.u), *iid = serial_ids(&s.it);
    uint64_t d1 = 0, d2 = 0;
    for (int64_t k = 0; k < s.n; k++) {
        uint32_t rb;
        memcpy(&rb, &s.rating[k], 4);
        d1 += mr_mix((uint64_t)k, str_digest(&s.u, s.ul[k]) ^
                                      (str_digest(&s.it, s.il[k]) * 31) ^ ((uint64_t)rb << 7));
        d2 += mr_mix((uint64_t)k, (uint64_t)uid[s.ul[k]] * 1000003u + (uint64_t)iid[s.il[k]]);
    }
    out[0] = (uint64_t)s.n;
    out[1] = d1;
    out[2] = d2;
    out[3] = (uint64_t)s.u.n;
    out[4] = (uint64_t)s.it.n;
    out[5] = (uint64_t)s.bad;
    free(uid);
    free(iid);
    mr_strtab_free(&s.u);
    mr_strtab_free(&s.it);
    free(s.ul);
    free(s.il);
    free(s.rating);
    mr_reader_destroy(&r);
    free(buf);
}

/* The distributed digests need the strings of this rank's records: look them up
 * through the gathered vocabularies (every rank gathers them at rank 0 and the
 * root broadcasts the digests per id). */
static void dist_digest(const MrDataset *d, uint64_t out[3])
{
    MrComm *c = g_test_comm;
    MrErr e;
    char *ub, *ib;
    int64_t *uo, *io, *uc, *ic;
    CU_ASSERT_EQUAL_FATAL(mr_vocab_gather(&d->users, c, 0, &ub, &uo, &uc, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_vocab_gather(&d->items, c, 0, &ib, &io, &ic, &e), MR_OK);
    int64_t U = d->users.size, I = d->items.size;
    uint64_t *uh = calloc((size_t)U + 1, 8), *ih = calloc((size_t)I + 1, 8);
    if (c->rank == 0) {
        for (int64_t k = 0; k < U; k++)
            uh[k + 1] = mr_strhash(ub + uo[k], (size_t)(uo[k + 1] - uo[k]));
        for (int64_t k = 0; k < I; k++)
            ih[k + 1] = mr_strhash(ib + io[k], (size_t)(io[k + 1] - io[k]));
    }
    mr_comm_bcast(c, uh, (size_t)(U + 1) * 8, 0, &e);
    mr_comm_bcast(c, ih, (size_t)(I + 1) * 8, 0, &e);
    uint64_t d1 = 0, d2 = 0;
    for (int64_t i = 0; i < d->n; i++) {
        uint64_t k = (uint64_t)(d->first + i);
        uint32_t rb;
        memcpy(&rb, &d->rating[i], 4);
        d1 += mr_mix(k, uh[d->user[i]] ^ (ih[d->item[i]] * 31) ^ ((uint64_t)rb << 7));
        d2 += mr_mix(k, (uint64_t)d->user[i] * 1000003u + (uint64_t)d->item[i]);
    }
    int64_t v[4] = {(int64_t)(d1 & 0xffffffff), (int64_t)(d1 >> 32), (int64_t)(d2 & 0xffffffff),
                    (int64_t)(d2 >> 32)};
    mr_comm_allreduce_i64(c, v, 4, MR_SUM, &e);
    out[0] = (uint64_t)d->sum.records;
    out[1] = (uint64_t)v[0] + ((uint64_t)v[1] << 32);
    out[2] = (uint64_t)v[2] + ((uint64_t)v[3] << 32);
    free(uh);
    free(ih);
    free(ub);
    free(uo);
    free(uc);
    free(ib);
    free(io);
    free(ic);
}

static void cfg_for(MrConfig *c, const char *rel, const char *json)
{
    MrErr e;
    mr_config_defaults(c);
    CU_ASSERT_EQUAL_FATAL(mr_config_apply_json(c, json, strlen(json), rel, &e), MR_OK);
    snprintf(c->data.path, sizeof c->data.path, "%s", test_data_path(rel));
    c->vocab.from = MR_VOCAB_ALL;
}

static void check_file(const char *rel, const char *json, int64_t records, int64_t users,
                       int64_t items)
{
    MrConfig cfg;
    cfg_for(&cfg, rel, json);
    uint64_t ser[6], dis[3];
    serial_digest(&cfg, ser);
    MrDataset d;
    MrErr e;
    int rc = mr_ingest(&d, g_test_comm, &cfg, &e);
    if (rc)
        fprintf(stderr, "%s: %s\n", rel, e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, MR_OK);
    dist_digest(&d, dis);
    CU_ASSERT_EQUAL(d.sum.records, records);
    CU_ASSERT_EQUAL(d.sum.users, users);
    CU_ASSERT_EQUAL(d.sum.items, items);
    CU_ASSERT_EQUAL(dis[0], ser[0]);
    CU_ASSERT_EQUAL(dis[1], ser[1]);
    CU_ASSERT_EQUAL(dis[2], ser[2]);
    CU_ASSERT_EQUAL((uint64_t)d.sum.users, ser[3]);
    CU_ASSERT_EQUAL((uint64_t)d.sum.items, ser[4]);
    CU_ASSERT_EQUAL(d.sum.train_records + d.sum.test_records, records);
    mr_dataset_free(&d);
}

static void test_amazon(void)
{
    check_file("amazon_reviews.csv",
               "{\"data\": {\"columns\": {\"user\": \"reviewerID\", \"item\": \"asin\", "
               "\"rating\": \"overall\"}}}",
               999, 963, 40);
}

static void test_ml100k(void)
{
    check_file("ml-100k/u.data",
               "{\"data\": {\"format\": \"delimited\", \"separator\": \"\\t\", \"header\": "
               "false, \"quote\": \"\", \"columns\": {\"user\": 0, \"item\": 1, \"rating\": 2}}}",
               100000, 943, 1682);
}

/* Book-Crossing: all fields quoted, ';', Latin-1, CRLF, no final newline. Line
 * 12,804 quotes an ISBN with MySQL backslash escapes ("\"8804501367\""), which is
 * not CSV: it is reported and, with on_error=skip, skipped (counts from Python's
 * csv module without that row: 39,267 records, 4,286 users, 29,247 items). */
static void test_bookcrossing(void)
{
    check_file("bookcrossing-39k/BX-Book-Ratings.csv",
               "{\"data\": {\"format\": \"delimited\", \"separator\": \";\", \"header\": false, "
               "\"on_error\": \"skip\", \"columns\": {\"user\": 0, \"item\": 1, \"rating\": 2}}}",
               39267, 4286, 29247);
}

static void test_electronics(void)
{
    const char *js = "{\"data\": {\"columns\": {\"user\": \"UserId\", \"item\": \"ItemId\", "
                     "\"rating\": \"rating\"}}}";
    check_file("amazon-electronics-50k/ratings_Electronics.csv", js, 50698, 47141, 3529);
    /* No (user, item) pair repeats in this file (Python: 0). With the default
     * train-only vocabularies most test users are OOV (id 0): pairs must still be
     * compared by their strings, not by ids. */
    MrConfig cfg;
    cfg_for(&cfg, "amazon-electronics-50k/ratings_Electronics.csv", js);
    cfg.vocab.from = MR_VOCAB_TRAIN;
    MrDataset d;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_OK);
    CU_ASSERT_EQUAL(d.sum.duplicate_pairs, 0);
    CU_ASSERT(d.sum.test_oov_users > 1000);
    mr_dataset_free(&d);
}

static void test_yelp(void)
{
    check_file("yelp-999/yelp_academic_dataset_review.json",
               "{\"data\": {\"format\": \"jsonl\", \"columns\": {\"user\": \"user_id\", \"item\": "
               "\"business_id\", \"rating\": \"stars\"}}}",
               999, 993, 822);
}

/* yelp-truncated: fails by default naming the cut record's line (3,611); with
 * skip gives 3,610 records and reports 1 skipped. */
static void test_yelp_truncated(void)
{
    const char *js = "{\"data\": {\"format\": \"jsonl\", \"columns\": {\"user\": \"user_id\", "
                     "\"item\": \"business_id\", \"rating\": \"stars\"}}}";
    MrConfig cfg;
    cfg_for(&cfg, "yelp-truncated/yelp_academic_dataset_review.json", js);
    MrDataset d;
    MrErr e;
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "yelp_academic_dataset_review.json:3611"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "byte"));
    cfg.data.on_error = MR_ONERR_SKIP;
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_OK);
    CU_ASSERT_EQUAL(d.sum.records, 3610);
    CU_ASSERT_EQUAL(d.sum.bad_records, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(d.sum.first_bad, ":3611"));
    mr_dataset_free(&d);
    cfg.data.max_bad_records = 0;
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "max_bad_records"));
}

/* amazon-fashion: one "overall": null is a bad record, not a 0 rating; 134
 * duplicate (user, item) pairs are kept and counted. */
static void test_fashion(void)
{
    const char *js = "{\"data\": {\"format\": \"jsonl\", \"columns\": {\"user\": \"reviewerID\", "
                     "\"item\": \"asin\", \"rating\": \"overall\"}}}";
    MrConfig cfg;
    cfg_for(&cfg, "amazon-fashion-5core/AMAZON_FASHION_5.json", js);
    MrDataset d;
    MrErr e;
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "rating"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "null"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "AMAZON_FASHION_5.json:2 "));
    cfg.data.on_error = MR_ONERR_SKIP;
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_OK);
    CU_ASSERT_EQUAL(d.sum.records, 3175);
    CU_ASSERT_EQUAL(d.sum.bad_records, 1);
    CU_ASSERT_EQUAL(d.sum.users, 406);
    CU_ASSERT_EQUAL(d.sum.items, 31);
    /* 134 repeated pairs in the file; the null-rating row is one of them, so 133
     * among the kept rows (counted with Python over the file). */
    CU_ASSERT_EQUAL(d.sum.duplicate_pairs, 133);
    mr_dataset_free(&d);
}

/* Scratch files visible to every rank (same name on every rank). */
static const char *scratch(const char *name, const char *content)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    if (g_test_comm->rank == 0) {
        FILE *f = fopen(path, "wb");
        fputs(content, f);
        fclose(f);
    }
    MrErr e;
    mr_comm_barrier(g_test_comm, &e);
    return path;
}

static void test_bad_files(void)
{
    MrConfig cfg;
    MrDataset d;
    MrErr e;
    mr_config_defaults(&cfg);
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", scratch("empty.csv", ""));
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "empty"));
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", scratch("hdr.csv", "user,item\r\n"));
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "no data records"));
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", scratch("cols.csv", "uid,item\na,b\n"));
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "uid"));
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", test_tmp_dir());
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "directory"));
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s/none.csv", test_tmp_dir());
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "none.csv"));
    /* A non-numeric rating names the line, the field and the value. */
    cfg.data.columns.rating = (MrColumn){"rating", -1};
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s",
             scratch("nan.csv", "user,item,rating\na,b,4\nc,d,NaN\n"));
    CU_ASSERT_EQUAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_EDATA);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "nan.csv:3"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "rating"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'NaN'"));
    /* Fewer records than ranks: fine. */
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s",
             scratch("two.csv", "user,item,rating\na,b,4\nc,d,5"));
    cfg.split.test_fraction = 0;
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_OK);
    CU_ASSERT_EQUAL(d.sum.records, 2);
    CU_ASSERT_EQUAL(d.sum.users, 2);
    mr_dataset_free(&d);
}

/* Duplicate pairs on a file large enough for many buckets of the distributed
 * count (80K records drawn from 400 x 300 pairs: about 22K repeats), against a
 * naive count over the generating pairs. */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_duplicates_many(void)
{
    enum { N = 80000 };
    static int64_t pair[N];
    static char text[N * 24 + 64];
    size_t len = (size_t)snprintf(text, sizeof text, "user,item,rating\n");
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int u = (int)((x >> 33) % 400), it = (int)((x >> 13) % 300);
        pair[i] = (int64_t)u * 1000 + it;
        len += (size_t)snprintf(text + len, sizeof text - len, "u%d,i%d,%d\n", u, it, 1 + i % 5);
    }
    qsort(pair, N, sizeof *pair, cmp_i64);
    int64_t want = 0;
    for (int i = 1; i < N; i++)
        want += pair[i] == pair[i - 1];
    MrConfig cfg;
    MrDataset d;
    MrErr e;
    mr_config_defaults(&cfg);
    cfg.data.columns.rating = (MrColumn){"rating", -1};
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", scratch("dups.csv", text));
    CU_ASSERT_EQUAL_FATAL(mr_ingest(&d, g_test_comm, &cfg, &e), MR_OK);
    CU_ASSERT_EQUAL(d.sum.records, N);
    CU_ASSERT(want > N / 8); /* ~21.6K expected: many repeats */
    CU_ASSERT_EQUAL(d.sum.duplicate_pairs, want);
    mr_dataset_free(&d);
}

/* The duplicate count alone, on every rank count and in rounds: keys drawn with
 * many repeats (also across ranks), each rank holding an uneven slice; the count
 * must equal a naive count over all keys for the default round size, for small
 * rounds (several rounds of several buckets), and for a total so small that there
 * is one bucket and ranks own none. */
static void dup_case(int64_t total, int64_t distinct, int64_t round_keys)
{
    int P = g_test_comm->size, r = g_test_comm->rank;
    int64_t *all = malloc((size_t)(total + 1) * sizeof *all);
    CU_ASSERT_FATAL(all != NULL);
    uint64_t x = 777;
    for (int64_t i = 0; i < total; i++) {
        x = mr_splitmix64(x);
        all[i] = (int64_t)mr_splitmix64(x % (uint64_t)distinct); /* uniform 64-bit keys */
    }
    /* Slices of uneven sizes: rank q gets a share growing with q. */
    int64_t lo = total * r * (r + 1) / (P * (P + 1)), hi = total * (r + 1) * (r + 2) / (P * (P + 1));
    int64_t n = hi - lo;
    uint64_t *keys = malloc((size_t)(n + 1) * sizeof *keys);
    CU_ASSERT_FATAL(keys != NULL);
    for (int64_t i = 0; i < n; i++)
        keys[i] = (uint64_t)all[lo + i];
    qsort(all, (size_t)total, sizeof *all, cmp_i64);
    int64_t want = 0;
    for (int64_t i = 1; i < total; i++)
        want += all[i] == all[i - 1];
    int64_t got = -1;
    MrErr e;
    CU_ASSERT_EQUAL(mr_count_duplicates(g_test_comm, &keys, n, total, round_keys, &got, &e), MR_OK);
    CU_ASSERT_PTR_NULL(keys);
    CU_ASSERT_EQUAL(got, want);
    free(all);
}

static void test_duplicate_rounds(void)
{
    dup_case(200000, 60000, 0);     /* 16 buckets, one round */
    dup_case(200000, 60000, 20000); /* the most rounds, several buckets each */
    dup_case(200000, 150000, 7000); /* fewer repeats */
    dup_case(5, 3, 1);              /* one bucket: ranks after the first own none */
    dup_case(1, 1, 1);
}

int add_suite_mpi_ingest(void)
{
    CU_pSuite s = CU_add_suite("mpi_ingest", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "amazon", test_amazon);
    CU_add_test(s, "ml100k", test_ml100k);
    CU_add_test(s, "bookcrossing", test_bookcrossing);
    CU_add_test(s, "electronics", test_electronics);
    CU_add_test(s, "yelp", test_yelp);
    CU_add_test(s, "yelp_truncated", test_yelp_truncated);
    CU_add_test(s, "fashion", test_fashion);
    CU_add_test(s, "bad_files", test_bad_files);
    CU_add_test(s, "duplicates_many", test_duplicates_many);
    CU_add_test(s, "duplicate_rounds", test_duplicate_rounds);
    return 0;
}
