/* test_mpi_vocab.c — distributed vocabularies equal a naive serial build, for the
 * rank count the test runs under (ctest: P = 1, 2, 3, 4).
 *
 * Every rank generates the same global multiset of strings from a hash (ids with
 * shared long prefixes, the empty string, bytes >= 0x80, strings that are
 * prefixes of others), takes a rank-dependent, deliberately uneven slice of it
 * (rank 1 gets nothing), deduplicates locally with counts, and builds. The serial
 * reference sorts the whole multiset with qsort on every rank. */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/hash.h"
#include "mpirec/strtab.h"
#include "mpirec/vocab.h"
#include "test_util.h"

#define NTOT 5000

typedef struct Str {
    char s[24];
    uint32_t len;
} Str;

static Str g_all[NTOT];

static void gen_all(void)
{
    for (int i = 0; i < NTOT; i++) {
        uint64_t h = mr_mix(99, (uint64_t)i);
        int kind = (int)(h % 5);
        uint64_t v = (h >> 8) % 700; /* ~700 distinct values per kind: many repeats */
        /* Skewed counts: low values repeat more. */
        v = v * v / 700;
        Str *s = &g_all[i];
        switch (kind) {
        case 0: s->len = (uint32_t)snprintf(s->s, sizeof s->s, "user_0000000%llu", (unsigned long long)v); break;
        case 1: s->len = (uint32_t)snprintf(s->s, sizeof s->s, "%llu", (unsigned long long)v); break;
        case 2: s->len = (uint32_t)(v % 4); memset(s->s, 'a', s->len); break; /* "", a, aa, aaa */
        case 3: s->len = 3; s->s[0] = (char)0xE9; s->s[1] = (char)(v & 0xff); s->s[2] = 'x'; break;
        default: s->len = (uint32_t)snprintf(s->s, sizeof s->s, "B%05llu", (unsigned long long)v); break;
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    const Str *x = a, *y = b;
    return mr_strcmp(x->s, x->len, y->s, y->len);
}

/* Serial: sorted unique strings and their counts. */
static int serial_unique(Str *u, int64_t *cnt)
{
    static Str tmp[NTOT];
    memcpy(tmp, g_all, sizeof tmp);
    qsort(tmp, NTOT, sizeof tmp[0], cmp_str);
    int n = 0;
    for (int i = 0; i < NTOT; i++) {
        if (n && cmp_str(&u[n - 1], &tmp[i]) == 0) {
            cnt[n - 1]++;
            continue;
        }
        u[n] = tmp[i];
        cnt[n++] = 1;
    }
    return n;
}

/* This rank's slice: uneven, rank 1 empty. */
static void my_slice(int *lo, int *hi)
{
    int P = g_test_comm->size, r = g_test_comm->rank;
    int64_t w = 0, before = 0;
    for (int q = 0; q < P; q++) {
        int64_t wq = q == 1 ? 0 : q + 1;
        w += wq;
        if (q < r)
            before += wq;
    }
    int64_t mine = r == 1 ? 0 : r + 1;
    *lo = (int)(before * NTOT / w);
    *hi = (int)((before + mine) * NTOT / w);
}

/* Local dedup of the slice through a strtab. */
typedef struct Local {
    MrStrTab t;
    int64_t *cnt;
    const char **s;
    uint32_t *l;
    int64_t n;
} Local;

static void local_build(Local *L)
{
    int lo, hi;
    my_slice(&lo, &hi);
    mr_strtab_init(&L->t, 16);
    L->cnt = calloc(NTOT, sizeof *L->cnt);
    for (int i = lo; i < hi; i++) {
        int64_t id = mr_strtab_intern(&L->t, g_all[i].s, g_all[i].len,
                                      mr_strhash(g_all[i].s, g_all[i].len), NULL);
        L->cnt[id]++;
    }
    L->n = L->t.n;
    L->s = malloc((size_t)(L->n + 1) * sizeof *L->s);
    L->l = malloc((size_t)(L->n + 1) * sizeof *L->l);
    for (int64_t k = 0; k < L->n; k++) {
        size_t len;
        L->s[k] = mr_strtab_str(&L->t, k, &len);
        L->l[k] = (uint32_t)len;
    }
}

static void local_free(Local *L)
{
    mr_strtab_free(&L->t);
    free(L->cnt);
    free(L->s);
    free(L->l);
}

/* Find a string in the serial unique list. */
static int serial_index(const Str *u, int nu, const char *s, uint32_t l)
{
    int lo = 0, hi = nu - 1;
    while (lo <= hi) {
        int m = (lo + hi) / 2;
        int c = mr_strcmp(u[m].s, u[m].len, s, l);
        if (!c)
            return m;
        if (c < 0)
            lo = m + 1;
        else
            hi = m - 1;
    }
    return -1;
}

/* Full vocabulary: ids are the serial sorted positions + 1, ranges tile 1..V,
 * gathered strings and counts equal the serial ones. */
static void test_full_vocab(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    gen_all();
    static Str u[NTOT];
    static int64_t ucnt[NTOT];
    int nu = serial_unique(u, ucnt);
    Local L;
    local_build(&L);
    MrVocab v;
    int64_t *ids = malloc((size_t)(L.n + 1) * sizeof *ids);
    CU_ASSERT_EQUAL_FATAL(mr_vocab_build(&v, c, L.n, L.s, L.l, L.cnt, 1, 0, ids, &e), MR_OK);
    CU_ASSERT_EQUAL(v.size, nu);
    for (int64_t k = 0; k < L.n; k++)
        CU_ASSERT_EQUAL(ids[k], serial_index(u, nu, L.s[k], L.l[k]) + 1);
    /* Owned range matches the serial list. */
    for (int64_t id = v.lo; id < v.hi; id++) {
        int64_t k = id - v.lo;
        CU_ASSERT_EQUAL(mr_strcmp(v.bytes + v.off[k], (size_t)(v.off[k + 1] - v.off[k]),
                                  u[id - 1].s, u[id - 1].len), 0);
        CU_ASSERT_EQUAL(v.count[k], ucnt[id - 1]);
    }
    int64_t span[2] = {v.lo, v.hi};
    int64_t *spans = malloc((size_t)c->size * sizeof span);
    mr_comm_allgather(c, span, sizeof span, spans, &e);
    CU_ASSERT_EQUAL(spans[0], 1);
    for (int q = 1; q < c->size; q++)
        CU_ASSERT_EQUAL(spans[2 * q], spans[2 * q - 1]);
    CU_ASSERT_EQUAL(spans[2 * c->size - 1], nu + 1);
    char *gb;
    int64_t *goff, *gcnt;
    CU_ASSERT_EQUAL(mr_vocab_gather(&v, c, 0, &gb, &goff, &gcnt, &e), MR_OK);
    if (c->rank == 0) {
        for (int k = 0; k < nu; k++) {
            CU_ASSERT_EQUAL(mr_strcmp(gb + goff[k], (size_t)(goff[k + 1] - goff[k]), u[k].s,
                                      u[k].len), 0);
            CU_ASSERT_EQUAL(gcnt[k], ucnt[k]);
        }
    }
    int64_t *all_counts;
    CU_ASSERT_EQUAL(mr_vocab_allgather_counts(&v, c, &all_counts, &e), MR_OK);
    CU_ASSERT_EQUAL(all_counts[0], 0);
    for (int k = 0; k < nu; k++)
        CU_ASSERT_EQUAL(all_counts[k + 1], ucnt[k]);
    uint64_t h1, h2;
    CU_ASSERT_EQUAL(mr_vocab_hash(&v, c, &h1, &e), MR_OK);
    int64_t hh[2] = {(int64_t)h1, -(int64_t)h1};
    mr_comm_allreduce_i64(c, hh, 2, MR_MAX, &e);
    CU_ASSERT_EQUAL(hh[0], -hh[1]); /* same on every rank */
    (void)h2;
    free(gb);
    free(goff);
    free(gcnt);
    free(all_counts);
    free(spans);
    free(ids);
    mr_vocab_free(&v);
    local_free(&L);
}

/* min_count and max_size: the kept set is the serial top-N by (count desc, bytes
 * asc) among strings with count >= min_count, ids in byte order. Zero-count local
 * strings (test-only) are looked up but never added. */
static void test_filtered_vocab(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    gen_all();
    static Str u[NTOT];
    static int64_t ucnt[NTOT];
    int nu = serial_unique(u, ucnt);
    for (int trial = 0; trial < 3; trial++) {
        int64_t min_count = trial == 0 ? 3 : 1, max_size = trial == 0 ? 0 : (trial == 1 ? 50 : 777);
        /* Serial selection. */
        static uint8_t kept[NTOT];
        int64_t cand = 0;
        for (int k = 0; k < nu; k++) {
            kept[k] = ucnt[k] >= min_count;
            cand += kept[k];
        }
        if (max_size && cand > max_size) {
            /* Repeatedly drop the worst candidate: lowest count, then largest bytes. */
            while (cand > max_size) {
                int worst = -1;
                for (int k = 0; k < nu; k++)
                    if (kept[k] && (worst < 0 || ucnt[k] < ucnt[worst] ||
                                    (ucnt[k] == ucnt[worst] && cmp_str(&u[k], &u[worst]) > 0)))
                        worst = k;
                kept[worst] = 0;
                cand--;
            }
        }
        int64_t *sid = calloc(NTOT, sizeof *sid);
        int64_t next = 1;
        for (int k = 0; k < nu; k++)
            sid[k] = kept[k] ? next++ : 0;
        Local L;
        local_build(&L);
        MrVocab v;
        int64_t *ids = malloc((size_t)(L.n + 1) * sizeof *ids);
        CU_ASSERT_EQUAL_FATAL(
            mr_vocab_build(&v, c, L.n, L.s, L.l, L.cnt, min_count, max_size, ids, &e), MR_OK);
        CU_ASSERT_EQUAL(v.size, next - 1);
        int bad = 0;
        for (int64_t k = 0; k < L.n; k++)
            bad += ids[k] != sid[serial_index(u, nu, L.s[k], L.l[k])];
        CU_ASSERT_EQUAL(bad, 0);
        free(ids);
        free(sid);
        mr_vocab_free(&v);
        local_free(&L);
    }
}

/* Token vocabulary: count desc, ties by bytes DESC, top max_tokens-2, ids from 2. */
static void test_token_vocab(void)
{
    MrComm *c = g_test_comm;
    MrErr e;
    gen_all();
    static Str u[NTOT];
    static int64_t ucnt[NTOT];
    int nu = serial_unique(u, ucnt);
    int64_t max_tokens = 40;
    /* Serial order. */
    static int ord[NTOT];
    for (int k = 0; k < nu; k++)
        ord[k] = k;
    for (int i = 1; i < nu; i++)
        for (int j = i; j > 0; j--) {
            int a = ord[j - 1], b = ord[j];
            int better = ucnt[b] > ucnt[a] || (ucnt[b] == ucnt[a] && cmp_str(&u[b], &u[a]) > 0);
            if (!better)
                break;
            ord[j - 1] = b;
            ord[j] = a;
        }
    Local L;
    local_build(&L);
    MrTokenVocab tv;
    int64_t *ids = malloc((size_t)(L.n + 1) * sizeof *ids);
    CU_ASSERT_EQUAL_FATAL(
        mr_token_vocab_build(&tv, c, L.n, L.s, L.l, L.cnt, max_tokens, ids, &e), MR_OK);
    CU_ASSERT_EQUAL(tv.size, max_tokens);
    for (int k = 0; k < max_tokens - 2; k++) {
        const Str *s = &u[ord[k]];
        CU_ASSERT_EQUAL(mr_strcmp(tv.bytes + tv.off[k], (size_t)(tv.off[k + 1] - tv.off[k]), s->s,
                                  s->len), 0);
        CU_ASSERT_EQUAL(mr_token_vocab_find(&tv, s->s, s->len), k + 2);
    }
    CU_ASSERT_EQUAL(mr_token_vocab_find(&tv, "not-a-token", 11), 1);
    for (int64_t k = 0; k < L.n; k++) {
        int si = serial_index(u, nu, L.s[k], L.l[k]);
        int64_t want = 1;
        for (int r = 0; r < max_tokens - 2; r++)
            if (ord[r] == si)
                want = r + 2;
        CU_ASSERT_EQUAL(ids[k], want);
    }
    free(ids);
    mr_token_vocab_free(&tv);
    local_free(&L);
}

int add_suite_mpi_vocab(void)
{
    CU_pSuite s = CU_add_suite("mpi_vocab", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "full_vocab", test_full_vocab);
    CU_add_test(s, "filtered_vocab", test_filtered_vocab);
    CU_add_test(s, "token_vocab", test_token_vocab);
    return 0;
}
