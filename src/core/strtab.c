/* strtab.c — deduplicating byte-string table (see strtab.h).
 *
 * The hash processes 8 bytes at a time with a multiply-xorshift step; it only has
 * to spread ids well for this table and for owner-rank partitioning, and it must
 * be identical on every rank (it is: pure function of the bytes, little-endian
 * loads via memcpy).
 */
#include "mpirec/strtab.h"

#include <stdlib.h>
#include <sys/mman.h>

#include "mpirec/hash.h"

#define EMPTY UINT32_MAX

_Static_assert(MR_STRTAB_INLINE == 16, "slot_eq compares the inline prefix as two words");

/* The k <= 8 bytes at p as a zero-extended little-endian word (what memcpy into
 * a zeroed uint64_t gives), without a variable-length memcpy call and without
 * reading outside [p, p + k): two overlapping loads, whose common bytes agree. */
static inline uint64_t load_upto8(const char *p, size_t k)
{
    if (k >= 4) {
        uint32_t a, b;
        if (k == 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            return w;
        }
        memcpy(&a, p, 4);
        memcpy(&b, p + k - 4, 4);
        return (uint64_t)a | ((uint64_t)b << (8 * (k - 4)));
    }
    if (k == 0)
        return 0;
    const unsigned char *u = (const unsigned char *)p;
    return (uint64_t)u[0] | ((uint64_t)u[k / 2] << (8 * (k / 2))) | ((uint64_t)u[k - 1] << (8 * (k - 1)));
}

/* The hash, and the string's first 16 bytes as the two zero-padded words of a
 * slot's inline prefix, taken from the same loads. */
static inline uint64_t hash_prefix(const char *p, size_t n, uint64_t *w0, uint64_t *w1)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    uint64_t a = 0, b = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = i == 0 ? w : a;
        b = i == 8 ? w : b;
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    if (i < n) {
        uint64_t w = load_upto8(p + i, n - i);
        a = i == 0 ? w : a;
        b = i == 8 ? w : b;
        h = (h ^ w) * 0x94D049BB133111EBULL;
        h ^= h >> 32;
    }
    *w0 = a;
    *w1 = b;
    return mr_splitmix64(h);
}

uint64_t mr_strhash(const char *p, size_t n)
{
    uint64_t a, b;
    return hash_prefix(p, n, &a, &b);
}

/* Large slot arrays are 2 MiB aligned and marked for transparent huge pages: at
 * millions of ids every probe lands on a different 4 KiB page, and the TLB misses
 * (one page walk per lookup, which also stalls the prefetches) cost more than the
 * cache misses themselves. */
#define HUGE_PAGE (2u << 20)

static MrStrSlot *alloc_slots(int64_t cap)
{
    size_t bytes = (size_t)cap * sizeof(MrStrSlot);
    MrStrSlot *s;
    if (bytes >= HUGE_PAGE) {
        s = aligned_alloc(HUGE_PAGE, bytes); /* bytes is a power of two >= HUGE_PAGE */
#ifdef MADV_HUGEPAGE
        if (s)
            (void)madvise(s, bytes, MADV_HUGEPAGE); /* a hint: failure is harmless */
#endif
    } else {
        s = aligned_alloc(64, bytes);
    }
    if (!s)
        return NULL;
    for (int64_t i = 0; i < cap; i++)
        s[i].id = EMPTY;
    return s;
}

int mr_strtab_init(MrStrTab *t, int64_t expected)
{
    memset(t, 0, sizeof *t);
    int64_t cap = 64;
    while (cap < 2 * expected)
        cap *= 2;
    t->cap = cap;
    t->slot = alloc_slots(cap);
    t->n_cap = cap / 2;
    t->off = malloc((size_t)t->n_cap * sizeof *t->off);
    t->len = malloc((size_t)t->n_cap * sizeof *t->len);
    t->bytes_cap = 1 << 16;
    t->bytes = malloc((size_t)t->bytes_cap);
    if (!t->slot || !t->off || !t->len || !t->bytes) {
        mr_strtab_free(t);
        return -1;
    }
    return 0;
}

void mr_strtab_free(MrStrTab *t)
{
    free(t->slot);
    free(t->off);
    free(t->len);
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

void mr_strtab_drop_lookup(MrStrTab *t)
{
    free(t->slot);
    t->slot = NULL;
    t->cap = 0;
}

static int grow_slots(MrStrTab *t)
{
    int64_t cap = t->cap * 2;
    MrStrSlot *s = alloc_slots(cap);
    if (!s)
        return -1;
    for (int64_t i = 0; i < t->cap; i++) {
        if (t->slot[i].id == EMPTY)
            continue;
        int64_t j = (int64_t)(t->slot[i].hash & (uint64_t)(cap - 2));
        while (s[j].id != EMPTY)
            j = (j + 1) & (cap - 1);
        s[j] = t->slot[i];
    }
    free(t->slot);
    t->slot = s;
    t->cap = cap;
    return 0;
}

/* First slot probed for hash h: always even, so that the first two probes (a slot
 * pair, 64 bytes, 64-byte aligned) share one cache line. Linear probing goes on
 * from there one slot at a time. */
static inline int64_t home(const MrStrTab *t, uint64_t h)
{
    return (int64_t)(h & (uint64_t)(t->cap - 2));
}

static inline void prefetch_home(const MrStrTab *t, uint64_t h)
{
    int64_t j = home(t, h);
    __builtin_prefetch(&t->slot[j]);
    __builtin_prefetch(&t->slot[(j + 2) & (t->cap - 1)]);
}

static inline int slot_eq(const MrStrTab *t, const MrStrSlot *s, const char *p, size_t n,
                          uint64_t h)
{
    if (s->hash != h || s->len != n)
        return 0;
    /* The inline prefix is zero padded: compare it as two words. */
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, s->inl, 8);
    memcpy(&a1, s->inl + 8, 8);
    if (n >= 16) {
        memcpy(&b0, p, 8);
        memcpy(&b1, p + 8, 8);
    } else if (n > 8) {
        memcpy(&b0, p, 8);
        b1 = load_upto8(p + 8, n - 8);
    } else {
        b0 = load_upto8(p, n);
        b1 = 0;
    }
    if (((a0 ^ b0) | (a1 ^ b1)) != 0)
        return 0;
    return n <= MR_STRTAB_INLINE ||
           memcmp(t->bytes + t->off[s->id] + MR_STRTAB_INLINE, p + MR_STRTAB_INLINE,
                  n - MR_STRTAB_INLINE) == 0;
}

int64_t mr_strtab_find(const MrStrTab *t, const char *p, size_t n, uint64_t h)
{
    int64_t mask = t->cap - 1;
    for (int64_t j = home(t, h);; j = (j + 1) & mask) {
        const MrStrSlot *s = &t->slot[j];
        if (s->id == EMPTY)
            return -1;
        if (slot_eq(t, s, p, n, h))
            return s->id;
    }
}

/* Insert at empty slot j (found by the caller's probe). */
static int64_t insert_at(MrStrTab *t, int64_t j, const char *p, size_t n, uint64_t h)
{
    if (n > UINT32_MAX - 1 || t->n >= (int64_t)EMPTY - 1)
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
    MrStrSlot *s = &t->slot[j];
    s->hash = h;
    s->id = (uint32_t)id;
    s->len = (uint32_t)n;
    memset(s->inl, 0, sizeof s->inl);
    memcpy(s->inl, p, n < MR_STRTAB_INLINE ? n : MR_STRTAB_INLINE);
    /* A failed resize leaves a consistent table at a load just above 1/2. */
    if (2 * t->n > t->cap)
        (void)grow_slots(t);
    return id;
}

int64_t mr_strtab_intern(MrStrTab *t, const char *p, size_t n, uint64_t h, int *is_new)
{
    int64_t mask = t->cap - 1;
    int64_t j = home(t, h);
    for (;; j = (j + 1) & mask) {
        const MrStrSlot *s = &t->slot[j];
        if (s->id == EMPTY)
            break;
        if (slot_eq(t, s, p, n, h)) {
            if (is_new)
                *is_new = 0;
            return s->id;
        }
    }
    if (is_new)
        *is_new = 1;
    return insert_at(t, j, p, n, h);
}

/* The first probe step of a batch lookup: the slot pair at j = home(h), compared
 * with the hash and prefix words w0, w1 without branching on each field (the
 * branches of a slot-by-slot compare mispredict often on mixed lengths, and each
 * mispredict stalls the lookups in flight behind it). Returns the id when found,
 * -1 when the string is absent (*at = the empty slot to insert it at), -2 when the
 * caller has to go on slot by slot (both slots hold other strings, or a long string
 * matched in hash and prefix only and its tail must be compared). */
static inline int64_t pair_probe(const MrStrTab *t, int64_t j, const char *p, size_t n,
                                 uint64_t h, uint64_t w0, uint64_t w1, int64_t *at)
{
    const MrStrSlot *s = &t->slot[j];
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, s[0].inl, 8);
    memcpy(&a1, s[0].inl + 8, 8);
    memcpy(&b0, s[1].inl, 8);
    memcpy(&b1, s[1].inl + 8, 8);
    int e0 = s[0].id == EMPTY, e1 = s[1].id == EMPTY;
    int m0 = !e0 & (s[0].hash == h) & (s[0].len == n) & (((a0 ^ w0) | (a1 ^ w1)) == 0);
    int m1 = !e1 & (s[1].hash == h) & (s[1].len == n) & (((b0 ^ w0) | (b1 ^ w1)) == 0);
    if (__builtin_expect(m0 | m1, 1)) {
        /* Slot 1 is probed after slot 0, so a match in slot 0 comes first. An
         * occupied slot is never emptied, so e0 and m1 never hold together. */
        uint32_t id = m0 ? s[0].id : s[1].id;
        if (n <= MR_STRTAB_INLINE)
            return id;
        return memcmp(t->bytes + t->off[id] + MR_STRTAB_INLINE, p + MR_STRTAB_INLINE,
                      n - MR_STRTAB_INLINE) == 0
                   ? (int64_t)id
                   : -2;
    }
    if (e0 | e1) {
        *at = e0 ? j : j + 1;
        return -1;
    }
    return -2;
}

/* Lookups in flight: a probe that misses the caches waits ~100-150 ns on this
 * kind of machine, while hashing and comparing one string takes ~10 ns, so the
 * prefetch runs this many strings ahead. RING (a power of two >= AHEAD) holds what
 * was computed ahead: hash and prefix words. Both the home line and the next one
 * are prefetched: at a load near 1/2 about one lookup in ten goes on past its home
 * pair, and an unprefetched line costs it a full memory latency. */
#define AHEAD 16
#define RING 32

int mr_strtab_intern_batch(MrStrTab *t, int64_t n, const char *const *p, const uint32_t *len,
                           uint32_t *ids, uint64_t *hashes)
{
    uint64_t hs[RING], pw0[RING], pw1[RING];
    for (int64_t i = 0; i < n && i < AHEAD; i++) {
        int r = (int)(i & (RING - 1));
        hs[r] = hash_prefix(p[i], len[i], &pw0[r], &pw1[r]);
        prefetch_home(t, hs[r]);
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t k = i + AHEAD;
        if (k < n) {
            int r = (int)(k & (RING - 1));
            hs[r] = hash_prefix(p[k], len[k], &pw0[r], &pw1[r]);
            prefetch_home(t, hs[r]);
        }
        int r = (int)(i & (RING - 1));
        uint64_t h = hs[r];
        int64_t at = 0;
        int64_t id = pair_probe(t, home(t, h), p[i], len[i], h, pw0[r], pw1[r], &at);
        if (id == -1)
            id = insert_at(t, at, p[i], len[i], h);
        else if (id == -2)
            id = mr_strtab_intern(t, p[i], len[i], h, NULL);
        if (id < 0)
            return -1;
        ids[i] = (uint32_t)id;
        if (hashes)
            hashes[i] = h;
    }
    return 0;
}
