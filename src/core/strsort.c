/* strsort.c — sorting byte strings in np.unique order, fast for id-like strings.
 *
 * Approach: sort (8-byte big-endian prefix, index) pairs with an LSD radix sort
 * (8 passes of 8 bits), then sort each run of equal prefixes by full comparison.
 * Ids that differ in their first 8 bytes (most real ids, all synthetic ones) never
 * reach the comparison sort; strings sharing long prefixes degrade gracefully to
 * qsort on their run.
 */
#include <stdlib.h>
#include <string.h>

#include "mpirec/strtab.h"

typedef struct Pair {
    uint64_t key;
    int64_t idx;
} Pair;

typedef struct Ctx {
    const char *const *s;
    const uint32_t *len;
} Ctx;

static int cmp_full(const void *a, const void *b, void *ud)
{
    const Ctx *c = ud;
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    return mr_strcmp(c->s[i], c->len[i], c->s[j], c->len[j]);
}

static uint64_t prefix_key(const char *p, uint32_t n)
{
    unsigned char b[8] = {0};
    memcpy(b, p, n < 8 ? n : 8);
    uint64_t k = 0;
    for (int i = 0; i < 8; i++)
        k = (k << 8) | b[i];
    return k;
}

int mr_sort_strings(int64_t *idx, int64_t n, const char *const *strs, const uint32_t *lens)
{
    if (n < 2)
        return 0;
    Ctx ctx = {strs, lens};
    if (n < 64) {
        qsort_r(idx, (size_t)n, sizeof *idx, cmp_full, &ctx);
        return 0;
    }
    Pair *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return -1;
    }
    for (int64_t i = 0; i < n; i++) {
        a[i].key = prefix_key(strs[idx[i]], lens[idx[i]]);
        a[i].idx = idx[i];
    }
    for (int pass = 0; pass < 8; pass++) {
        int shift = pass * 8;
        int64_t cnt[257] = {0};
        for (int64_t i = 0; i < n; i++)
            cnt[((a[i].key >> shift) & 255) + 1]++;
        if (cnt[((a[0].key >> shift) & 255) + 1] == n)
            continue; /* every key has the same byte here: nothing to move */
        for (int d = 0; d < 256; d++)
            cnt[d + 1] += cnt[d];
        for (int64_t i = 0; i < n; i++)
            b[cnt[(a[i].key >> shift) & 255]++] = a[i];
        Pair *t = a;
        a = b;
        b = t;
    }
    for (int64_t i = 0; i < n; i++)
        idx[i] = a[i].idx;
    /* Runs of equal prefixes: strings of length >= 8 with the same first 8 bytes,
     * or shorter strings padded with zeros that may differ in length. */
    for (int64_t i = 0; i < n;) {
        int64_t j = i + 1;
        while (j < n && a[j].key == a[i].key)
            j++;
        if (j - i > 1)
            qsort_r(idx + i, (size_t)(j - i), sizeof *idx, cmp_full, &ctx);
        i = j;
    }
    free(a);
    free(b);
    return 0;
}

/* A binary heap of run heads, smallest string on top; ties by run number, so that
 * equal strings come out in run order. Compares 8-byte prefixes first. */
typedef struct Head {
    uint64_t key;
    int64_t at, end; /* next index of the run, and its end */
    int run;
} Head;

static int head_less(const Head *a, const Head *b, const char *const *s, const uint32_t *l)
{
    if (a->key != b->key)
        return a->key < b->key;
    int c = mr_strcmp(s[a->at], l[a->at], s[b->at], l[b->at]);
    return c < 0 || (c == 0 && a->run < b->run);
}

static void sift_down(Head *h, int n, int i, const char *const *s, const uint32_t *l)
{
    for (;;) {
        int m = i, a = 2 * i + 1, b = a + 1;
        if (a < n && head_less(&h[a], &h[m], s, l))
            m = a;
        if (b < n && head_less(&h[b], &h[m], s, l))
            m = b;
        if (m == i)
            return;
        Head t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int mr_merge_string_runs(int64_t *out, int nruns, const int64_t *start, const char *const *strs,
                         const uint32_t *lens)
{
    int64_t k = 0;
    if (nruns == 1) {
        for (int64_t i = start[0]; i < start[1]; i++)
            out[k++] = i;
        return 0;
    }
    Head *h = malloc((size_t)(nruns > 0 ? nruns : 1) * sizeof *h);
    if (!h)
        return -1;
    int n = 0;
    for (int q = 0; q < nruns; q++)
        if (start[q] < start[q + 1]) {
            int64_t a = start[q];
            h[n++] = (Head){prefix_key(strs[a], lens[a]), a, start[q + 1], q};
        }
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(h, n, i, strs, lens);
    while (n > 0) {
        out[k++] = h[0].at++;
        if (h[0].at < h[0].end)
            h[0].key = prefix_key(strs[h[0].at], lens[h[0].at]);
        else
            h[0] = h[--n];
        sift_down(h, n, 0, strs, lens);
    }
    free(h);
    return 0;
}
