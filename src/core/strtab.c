/* strtab.c — deduplicating byte-string table (see strtab.h).
 *
 * The hash processes 8 bytes at a time with a multiply-xorshift step; it only has
 * to spread ids well for this table and for owner-rank partitioning, and it must
 * be identical on every rank (it is: pure function of the bytes, little-endian
 * loads via memcpy).
 */
#include "mpirec/strtab.h"

#include <stdlib.h>
#include <string.h>

#include "mpirec/hash.h"

uint64_t mr_strhash(const char *p, size_t n)
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

int mr_strtab_init(MrStrTab *t, int64_t expected)
{
    memset(t, 0, sizeof *t);
    int64_t cap = 64;
    while (cap < 2 * expected)
        cap *= 2;
    t->cap = cap;
    t->hash = malloc((size_t)cap * sizeof *t->hash);
    t->slot_id = malloc((size_t)cap * sizeof *t->slot_id);
    t->n_cap = cap / 2;
    t->off = malloc((size_t)t->n_cap * sizeof *t->off);
    t->len = malloc((size_t)t->n_cap * sizeof *t->len);
    t->bytes_cap = 1 << 16;
    t->bytes = malloc((size_t)t->bytes_cap);
    if (!t->hash || !t->slot_id || !t->off || !t->len || !t->bytes) {
        mr_strtab_free(t);
        return -1;
    }
    memset(t->slot_id, 0xff, (size_t)cap * sizeof *t->slot_id);
    return 0;
}

void mr_strtab_free(MrStrTab *t)
{
    free(t->hash);
    free(t->slot_id);
    free(t->off);
    free(t->len);
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

static int grow_slots(MrStrTab *t)
{
    int64_t cap = t->cap * 2;
    uint64_t *h = malloc((size_t)cap * sizeof *h);
    int64_t *s = malloc((size_t)cap * sizeof *s);
    if (!h || !s) {
        free(h);
        free(s);
        return -1;
    }
    memset(s, 0xff, (size_t)cap * sizeof *s);
    for (int64_t i = 0; i < t->cap; i++) {
        if (t->slot_id[i] < 0)
            continue;
        int64_t j = (int64_t)(t->hash[i] & (uint64_t)(cap - 1));
        while (s[j] >= 0)
            j = (j + 1) & (cap - 1);
        s[j] = t->slot_id[i];
        h[j] = t->hash[i];
    }
    free(t->hash);
    free(t->slot_id);
    t->hash = h;
    t->slot_id = s;
    t->cap = cap;
    return 0;
}

int64_t mr_strtab_find(const MrStrTab *t, const char *p, size_t n, uint64_t h)
{
    int64_t mask = t->cap - 1;
    for (int64_t j = (int64_t)(h & (uint64_t)mask);; j = (j + 1) & mask) {
        int64_t id = t->slot_id[j];
        if (id < 0)
            return -1;
        if (t->hash[j] == h && t->len[id] == n && memcmp(t->bytes + t->off[id], p, n) == 0)
            return id;
    }
}

int64_t mr_strtab_intern(MrStrTab *t, const char *p, size_t n, uint64_t h, int *is_new)
{
    int64_t mask = t->cap - 1;
    int64_t j = (int64_t)(h & (uint64_t)mask);
    for (;; j = (j + 1) & mask) {
        int64_t id = t->slot_id[j];
        if (id < 0)
            break;
        if (t->hash[j] == h && t->len[id] == n && memcmp(t->bytes + t->off[id], p, n) == 0) {
            if (is_new)
                *is_new = 0;
            return id;
        }
    }
    if (n > UINT32_MAX)
        return -1;
    if (t->n >= t->n_cap) {
        int64_t nc = t->n_cap * 2;
        int64_t *o = realloc(t->off, (size_t)nc * sizeof *o);
        if (!o)
            return -1;
        t->off = o;
        uint32_t *l = realloc(t->len, (size_t)nc * sizeof *l);
        if (!l)
            return -1;
        t->len = l;
        t->n_cap = nc;
    }
    if (t->bytes_len + (int64_t)n > t->bytes_cap) {
        int64_t bc = t->bytes_cap * 2;
        while (bc < t->bytes_len + (int64_t)n)
            bc *= 2;
        char *b = realloc(t->bytes, (size_t)bc);
        if (!b)
            return -1;
        t->bytes = b;
        t->bytes_cap = bc;
    }
    int64_t id = t->n++;
    memcpy(t->bytes + t->bytes_len, p, n);
    t->off[id] = t->bytes_len;
    t->len[id] = (uint32_t)n;
    t->bytes_len += (int64_t)n;
    t->slot_id[j] = id;
    t->hash[j] = h;
    if (is_new)
        *is_new = 1;
    if (2 * t->n > t->cap && grow_slots(t) != 0) {
        /* The string is stored; only the resize failed. The table is still
         * consistent (load just above 1/2), so report success. */
    }
    return id;
}
