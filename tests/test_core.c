/* test_core.c — err buffer and the counter-based hashing of SEMANTICS.md section 8,
 * checked against ../shared/reference/test_vectors.jsonl (values copied below from
 * that file; the e2e parity test re-derives them from the reference itself). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "mpirec/err.h"
#include "mpirec/hash.h"
#include "mpirec/strtab.h"

#include <string.h>

/* splitmix64 and the split hash for seed 42, rows 0..7. */
static void test_splitmix_vectors(void)
{
    CU_ASSERT_EQUAL(mr_splitmix64(0), 0xe220a8397b1dcdafULL);
    CU_ASSERT_EQUAL(mr_splitmix64(1), 0x910a2dec89025cc1ULL);
    const uint64_t want[8] = {0x3e4a12d70b0af178ULL, 0x71818ad83cba8f05ULL, 0xfcee76b4159be538ULL,
                              0xf475f3a10120426aULL, 0x569a7244cdbecd2cULL, 0x9f02d6c6b96eb40eULL,
                              0x7aed48e69c7d4a3eULL, 0x9fadfce576dda0d5ULL};
    uint64_t base = mr_mix(42, MR_TAG_SPLIT);
    for (uint64_t r = 0; r < 8; r++)
        CU_ASSERT_EQUAL(mr_mix(base, r), want[r]);
}

/* is_test for rows 0..19 at fraction 0.2: only rows 9, 10, 11. */
static void test_split_rule(void)
{
    uint64_t base = mr_mix(42, MR_TAG_SPLIT), thr = mr_split_threshold(0.2);
    for (uint64_t r = 0; r < 20; r++)
        CU_ASSERT_EQUAL(mr_split_is_test(base, r, thr), r >= 9 && r <= 11);
}

/* Epoch order of rows 0..9: sort by key, ties by r. */
static void test_epoch_order(void)
{
    const int want0[10] = {0, 1, 2, 3, 6, 8, 7, 5, 4, 9};
    const int want1[10] = {8, 6, 0, 2, 7, 3, 5, 1, 9, 4};
    for (int epoch = 0; epoch < 2; epoch++) {
        int rows[10];
        for (int i = 0; i < 10; i++)
            rows[i] = i;
        for (int i = 1; i < 10; i++)
            for (int j = i; j > 0; j--) {
                uint64_t a = mr_order_key(42, (uint64_t)epoch, (uint64_t)rows[j - 1]);
                uint64_t b = mr_order_key(42, (uint64_t)epoch, (uint64_t)rows[j]);
                if (a > b || (a == b && rows[j - 1] > rows[j])) {
                    int t = rows[j];
                    rows[j] = rows[j - 1];
                    rows[j - 1] = t;
                }
            }
        for (int i = 0; i < 10; i++)
            CU_ASSERT_EQUAL(rows[i], epoch ? want1[i] : want0[i]);
    }
}

/* Initial values: user embedding stream 1 and query dense stream 100. */
static void test_init_values(void)
{
    const float want[8] = {-0.02452269196510315f, 0.012546330690383911f, 0.035563189536333084f,
                           0.033626604825258255f, -0.007330792956054211f, 0.027346109971404076f,
                           0.009293818846344948f, 0.04000140354037285f};
    uint64_t base = mr_init_base(42, MR_STREAM_USER);
    for (int j = 0; j < 8; j++)
        CU_ASSERT_EQUAL(mr_init_value(base, (uint64_t)j, -0.05, 0.05), want[j]);
    const float wq[4] = {-0.19532325863838196f, 0.11881542205810547f, 0.16587406396865845f,
                         0.16214004158973694f};
    double lim = sqrt(6.0 / 96.0);
    base = mr_init_base(42, MR_STREAM_QDENSE);
    for (int j = 0; j < 4; j++)
        CU_ASSERT_EQUAL(mr_init_value(base, (uint64_t)j, -lim, lim), wq[j]);
}

/* mr_err_set formats and returns the code; prefix keeps the callee's text. */
static void test_err(void)
{
    MrErr e;
    mr_err_clear(&e);
    CU_ASSERT_EQUAL(e.code, MR_OK);
    CU_ASSERT_EQUAL(mr_err_set(&e, MR_EDATA, "line %d: bad", 7), MR_EDATA);
    CU_ASSERT_STRING_EQUAL(e.msg, "line 7: bad");
    CU_ASSERT_EQUAL(mr_err_prefix(&e, "file %s", "x.csv"), MR_EDATA);
    CU_ASSERT_STRING_EQUAL(e.msg, "file x.csv: line 7: bad");
    CU_ASSERT_EQUAL(mr_err_set(NULL, MR_EIO, "ignored"), MR_EIO);
}

/* mr_strhash as first written (variable-length memcpy of the tail): the fast tail
 * loads must give the same value for every length and alignment. */
static uint64_t strhash_ref(const char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i);
        h = (h ^ w) * 0x94D049BB133111EBULL;
        h ^= h >> 32;
    }
    return mr_splitmix64(h);
}

static void test_strhash_tail(void)
{
    char buf[64];
    for (int i = 0; i < 64; i++)
        buf[i] = (char)(mr_splitmix64((uint64_t)i) | 0x80); /* high bytes: sign extension bugs */
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 48; n++)
            CU_ASSERT_EQUAL(mr_strhash(buf + off, n), strhash_ref(buf + off, n));
}

/* Strings of every length 0..40 that differ in one byte (first, middle, last,
 * inside and outside the inline prefix) intern to different ids, and find()
 * returns them again. */
static void near_miss(char *s, size_t cap, size_t n, int v)
{
    memset(s, 'a', cap);
    if (v > 0 && n > 0) /* v = 1: the middle byte, 2: the last, 3: the first */
        s[v == 1 ? n / 2 : v == 2 ? n - 1 : 0] = (char)('b' + v);
}

static void test_strtab_near_misses(void)
{
    MrStrTab t;
    CU_ASSERT_EQUAL_FATAL(mr_strtab_init(&t, 4), 0);
    char s[48];
    int64_t ids[41][4];
    for (size_t n = 0; n <= 40; n++)
        for (int v = 0; v < 4; v++) {
            near_miss(s, sizeof s, n, v);
            int is_new = -1;
            ids[n][v] = mr_strtab_intern(&t, s, n, mr_strhash(s, n), &is_new);
            CU_ASSERT(ids[n][v] >= 0);
            CU_ASSERT_EQUAL(mr_strtab_find(&t, s, n, mr_strhash(s, n)), ids[n][v]);
        }
    for (size_t n = 0; n <= 40; n++)
        for (int v = 0; v < 4; v++)
            for (size_t m = 0; m <= 40; m++)
                for (int w = 0; w < 4; w++) {
                    char a[48], b[48];
                    near_miss(a, sizeof a, n, v);
                    near_miss(b, sizeof b, m, w);
                    int same_str = n == m && memcmp(a, b, n) == 0;
                    CU_ASSERT_EQUAL(ids[n][v] == ids[m][w], same_str);
                }
    mr_strtab_free(&t);
}


/* The batch interning (pair probes, hashes computed ahead, growth in the middle
 * of a batch) gives the same ids as one intern at a time, and the hashes it hands
 * back are mr_strhash's. The strings share prefixes (a 3-letter alphabet), repeat,
 * include the near misses above at every length 0..40, and outnumber the initial
 * table many times over, so that probes go past their home pair. */
static void test_strtab_batch(void)
{
    enum { DISTINCT = 20000, DRAWS = 60000, MAXLEN = 40 };
    char *pool = malloc((size_t)DISTINCT * MAXLEN);
    uint32_t *plen = malloc(DISTINCT * sizeof *plen);
    const char **p = malloc(DRAWS * sizeof *p);
    uint32_t *len = malloc(DRAWS * sizeof *len), *ids = malloc(DRAWS * sizeof *ids);
    uint64_t *hs = malloc(DRAWS * sizeof *hs);
    CU_ASSERT_FATAL(pool && plen && p && len && ids && hs);
    uint64_t x = 12345;
    for (int k = 0; k < DISTINCT; k++) {
        char *q = pool + (size_t)k * MAXLEN;
        if (k < 41 * 4) {
            char s[48];
            near_miss(s, sizeof s, (size_t)(k / 4), k % 4);
            plen[k] = (uint32_t)(k / 4);
            memcpy(q, s, plen[k]);
        } else {
            x = mr_splitmix64(x);
            plen[k] = (uint32_t)(x % (MAXLEN + 1));
            for (uint32_t j = 0; j < plen[k]; j++) {
                x = mr_splitmix64(x);
                q[j] = "abc"[x % 3];
            }
        }
    }
    for (int i = 0; i < DRAWS; i++) {
        x = mr_splitmix64(x);
        int k = (int)(x % DISTINCT);
        p[i] = pool + (size_t)k * MAXLEN;
        len[i] = plen[k];
    }
    MrStrTab a, b;
    CU_ASSERT_EQUAL_FATAL(mr_strtab_init(&a, 4), 0);
    CU_ASSERT_EQUAL_FATAL(mr_strtab_init(&b, 4), 0);
    const int64_t sizes[] = {1, 7, 2048, 5000, DRAWS};
    for (int64_t i = 0, s = 0; i < DRAWS; s++) {
        int64_t m = sizes[s % 5] < DRAWS - i ? sizes[s % 5] : DRAWS - i;
        CU_ASSERT_EQUAL_FATAL(mr_strtab_intern_batch(&a, m, p + i, len + i, ids + i, hs + i), 0);
        i += m;
    }
    int bad_id = 0, bad_hash = 0, bad_find = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint64_t h = mr_strhash(p[i], len[i]);
        bad_hash += hs[i] != h;
        bad_id += (int64_t)ids[i] != mr_strtab_intern(&b, p[i], len[i], h, NULL);
        bad_find += mr_strtab_find(&a, p[i], len[i], h) != (int64_t)ids[i];
    }
    CU_ASSERT_EQUAL(bad_id, 0);
    CU_ASSERT_EQUAL(bad_hash, 0);
    CU_ASSERT_EQUAL(bad_find, 0);
    CU_ASSERT_EQUAL(a.n, b.n);
    CU_ASSERT(a.n > 1000); /* the pool really has many distinct strings */
    mr_strtab_free(&a);
    mr_strtab_free(&b);
    free(pool);
    free(plen);
    free(p);
    free(len);
    free(ids);
    free(hs);
}

/* Merging sorted runs gives every index once, in mr_strcmp order, equal strings in
 * run order; runs may be empty, strings share long prefixes (the 8-byte prefix
 * keys tie) and repeat within and across runs. */
static void test_merge_string_runs(void)
{
    enum { RUNS = 5, PER = 300, N = RUNS * PER };
    static char pool[N][24];
    const char *s[N];
    uint32_t l[N];
    int64_t start[RUNS + 1], idx[N], out[N];
    uint64_t x = 99;
    int64_t k = 0;
    for (int r = 0; r < RUNS; r++) {
        start[r] = k;
        int m = r == 2 ? 0 : PER; /* run 2 is empty */
        for (int i = 0; i < m; i++, k++) {
            x = mr_splitmix64(x);
            l[k] = (uint32_t)(x % 20);
            memcpy(pool[k], "prefix--", 8); /* long strings tie on the prefix key */
            for (uint32_t j = 8; j < l[k]; j++)
                pool[k][j] = "ab"[(x >> j) & 1];
            s[k] = pool[k];
        }
        int64_t n = k - start[r];
        for (int64_t i = 0; i < n; i++)
            idx[i] = start[r] + i;
        CU_ASSERT_EQUAL_FATAL(mr_sort_strings(idx, n, s, l), 0);
        /* lay the run out in sorted order */
        char tmp[PER][24];
        uint32_t tl[PER];
        for (int64_t i = 0; i < n; i++) {
            memcpy(tmp[i], s[idx[i]], 24);
            tl[i] = l[idx[i]];
        }
        for (int64_t i = 0; i < n; i++) {
            memcpy(pool[start[r] + i], tmp[i], 24);
            l[start[r] + i] = tl[i];
        }
    }
    start[RUNS] = k;
    CU_ASSERT_EQUAL_FATAL(mr_merge_string_runs(out, RUNS, start, s, l), 0);
    static uint8_t seen[N];
    memset(seen, 0, sizeof seen);
    int bad = 0;
    for (int64_t i = 0; i < k; i++) {
        bad += out[i] < 0 || out[i] >= k || seen[out[i]]++;
        if (i > 0) {
            int c = mr_strcmp(s[out[i - 1]], l[out[i - 1]], s[out[i]], l[out[i]]);
            bad += c > 0 || (c == 0 && out[i - 1] > out[i]); /* equal: run (index) order */
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
}

int add_suite_core(void)
{
    CU_pSuite s = CU_add_suite("core", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "splitmix_vectors", test_splitmix_vectors);
    CU_add_test(s, "split_rule", test_split_rule);
    CU_add_test(s, "epoch_order", test_epoch_order);
    CU_add_test(s, "init_values", test_init_values);
    CU_add_test(s, "err", test_err);
    CU_add_test(s, "strhash_tail", test_strhash_tail);
    CU_add_test(s, "strtab_near_misses", test_strtab_near_misses);
    CU_add_test(s, "strtab_batch", test_strtab_batch);
    CU_add_test(s, "merge_string_runs", test_merge_string_runs);
    return 0;
}
