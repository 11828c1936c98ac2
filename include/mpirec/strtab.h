/* strtab.h — an append-only table of byte strings with O(1) lookup.
 *
 * Used wherever strings are deduplicated: per-rank user/item/token dictionaries
 * during ingestion, and lookups into vocabularies. Strings are copied into chunked
 * storage owned by the table, ids are dense 0..n-1 in insertion order, and the hash
 * is computed once by the caller (mr_strhash) so it can be reused for partitioning.
 * Open addressing with linear probing, power-of-two capacity, load <= 1/2; each
 * slot keeps the full 64-bit hash so most probes never touch the string bytes.
 */
#ifndef MPIREC_STRTAB_H
#define MPIREC_STRTAB_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct MrStrTab {
    int64_t n;          /* strings stored */
    int64_t cap;        /* slots (power of two) */
    uint64_t *hash;     /* [cap] full hash of the slot's string */
    int64_t *slot_id;   /* [cap] string id, -1 = empty */
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

/* Operations */
/* 64-bit hash of a byte string (fast, good avalanche; not cryptographic). */
uint64_t mr_strhash(const char *p, size_t n);
/* Id of the string, inserting it if new. -1 when out of memory. *is_new may be NULL. */
int64_t mr_strtab_intern(MrStrTab *t, const char *p, size_t n, uint64_t h, int *is_new);
/* Id of the string or -1 if absent. */
int64_t mr_strtab_find(const MrStrTab *t, const char *p, size_t n, uint64_t h);

/* Queries */
static inline const char *mr_strtab_str(const MrStrTab *t, int64_t id, size_t *len)
{
    *len = t->len[id];
    return t->bytes + t->off[id];
}

#endif

#ifndef MPIREC_STRSORT_DECL
#define MPIREC_STRSORT_DECL
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
#endif
