/* strtab.h — an append-only table of byte strings with O(1) lookup.
 *
 * Used wherever strings are deduplicated: per-rank user/item/token dictionaries
 * during ingestion, and lookups into vocabularies. Strings are copied into
 * storage owned by the table, ids are dense 0..n-1 in insertion order, and the
 * hash is computed by the caller (mr_strhash) so it can be reused.
 *
 * Layout for speed at millions of distinct ids (where every lookup is a cache
 * miss): open addressing with linear probing, power-of-two capacity, load <= 1/2,
 * and 32-byte slots holding the full hash, the id, the length and the first 16
 * bytes of the string, so that a lookup of a string of at most 16 bytes touches
 * one cache line. mr_strtab_intern_batch prefetches the slots of the next strings
 * while it resolves the current one (memory-level parallelism).
 */
#ifndef MPIREC_STRTAB_H
#define MPIREC_STRTAB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MR_STRTAB_INLINE 16

typedef struct MrStrSlot {
    uint64_t hash;
    uint32_t id;                    /* UINT32_MAX = empty */
    uint32_t len;
    char inl[MR_STRTAB_INLINE];     /* first bytes of the string, zero padded */
} MrStrSlot;

typedef struct MrStrTab {
    int64_t n;          /* strings stored */
    int64_t cap;        /* slots (power of two) */
    MrStrSlot *slot;    /* [cap] */
    int64_t *off;       /* [n_cap] start of string id in `bytes` */
    uint32_t *len;      /* [n_cap] */
    int64_t n_cap;
    char *bytes;        /* all strings back to back (no terminators) */
    int64_t bytes_len, bytes_cap;
} MrStrTab;

/* Lifecycle */
/* Returns 0, or -1 when out of memory. */
int mr_strtab_init(MrStrTab *t, int64_t expected);
void mr_strtab_free(MrStrTab *t);
/* Frees the lookup slots and keeps the strings: ids and mr_strtab_str stay valid,
 * while intern and find must not be called any more. For tables whose lookups are
 * over (ingestion drops the 128 MB slot array of 2M users before its next phases
 * allocate). */
void mr_strtab_drop_lookup(MrStrTab *t);

/* Operations */
/* 64-bit hash of a byte string (fast, good avalanche; not cryptographic). */
uint64_t mr_strhash(const char *p, size_t n);
/* Id of the string, inserting it if new. -1 when out of memory. *is_new may be NULL. */
int64_t mr_strtab_intern(MrStrTab *t, const char *p, size_t n, uint64_t h, int *is_new);
/* Intern n strings (hashes computed here); ids[i] gets each id, and hashes[i]
 * (when hashes is not NULL) its mr_strhash. Returns 0, or -1 when out of memory.
 * Faster than n single calls on large tables. */
int mr_strtab_intern_batch(MrStrTab *t, int64_t n, const char *const *p, const uint32_t *len,
                           uint32_t *ids, uint64_t *hashes);
/* Id of the string or -1 if absent. */
int64_t mr_strtab_find(const MrStrTab *t, const char *p, size_t n, uint64_t h);

/* Queries */
static inline const char *mr_strtab_str(const MrStrTab *t, int64_t id, size_t *len)
{
    *len = t->len[id];
    return t->bytes + t->off[id];
}

/* Byte-string order of np.unique / sorted(bytes): memcmp, then shorter first. */
static inline int mr_strcmp(const char *a, size_t la, const char *b, size_t lb)
{
    size_t m = la < lb ? la : lb;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return la < lb ? -1 : la > lb;
}
/* Sort idx[0..n) (indices into strs/lens) by mr_strcmp of the strings; stable for
 * equal strings is not guaranteed. Returns 0, or -1 when out of memory. */
int mr_sort_strings(int64_t *idx, int64_t n, const char *const *strs, const uint32_t *lens);
/* Merge `nruns` runs of strings, each already in mr_strcmp order: run q is
 * strs[start[q] .. start[q + 1]); out[0..start[nruns]) gets the indices of all of
 * them in mr_strcmp order (equal strings: lower run first). Returns 0, or -1 when
 * out of memory. */
int mr_merge_string_runs(int64_t *out, int nruns, const int64_t *start, const char *const *strs,
                         const uint32_t *lens);

#endif
