/* vocab.h — vocabularies built across ranks, equal to a serial build for any P.
 *
 * Id vocabularies (users, items): the sorted unique byte strings (np.unique order,
 * memcmp with shorter-prefix-first), optionally filtered by min_count and max_size
 * (most frequent first, ties by byte order; the kept strings stay in byte order).
 * Index 0 is OOV; string v of the sorted list has id v + 1.
 *
 * Token vocabulary (text): Keras adapt() order — count descending, ties by bytes
 * DESCENDING — truncated to max_tokens - 2; id 0 is padding, 1 is OOV, tokens
 * start at 2. Small (<= max_tokens), so every rank ends up with all of it.
 *
 * Distributed build (no rank ever holds all strings of an id vocabulary):
 *  1. each rank brings its local unique strings with local counts;
 *  2. a sample sort by bytes sends every string to the rank owning its byte range
 *     (splitters from an allgathered sample), merging duplicates and summing counts;
 *  3. min_count / max_size are applied with a few reductions (threshold count,
 *     then an exclusive scan for ties, which are in rank order because ranges are
 *     ordered);
 *  4. an exclusive scan of kept counts gives each owner its id range [lo, hi);
 *  5. the ids travel back to the ranks that asked, in the order they asked.
 * Hash partitioning alone cannot give global sorted ids with one scan; the range
 * partition of step 2 is what makes "sort, assign offsets by scan" correct.
 *
 * Ownership: after the build, rank r holds the strings and counts of its own id
 * range (used to write checkpoints in parallel and to gather the item ids for the
 * index on rank 0).
 */
#ifndef MPIREC_VOCAB_H
#define MPIREC_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/err.h"

typedef struct MrVocab {
    int64_t size;       /* number of strings V (ids 1..V; 0 is OOV) */
    int64_t lo, hi;     /* this rank's ids: [lo, hi), 1 <= lo <= hi <= V + 1 */
    char *bytes;        /* strings of ids lo..hi-1, back to back */
    int64_t *off;       /* [hi - lo + 1] offsets into bytes */
    int64_t *count;     /* [hi - lo] occurrences counted for the build */
} MrVocab;

typedef struct MrTokenVocab {
    int64_t size;       /* ids in use: 2 + learned tokens (<= max_tokens) */
    char *bytes;        /* token of id 2 + k: bytes[off[k] .. off[k+1]) */
    int64_t *off;       /* [size - 2 + 1] */
    int64_t *count;     /* [size - 2] */
    void *lookup;       /* owned: hash table for mr_token_vocab_find */
} MrTokenVocab;

/* Lifecycle */
/* Build an id vocabulary. Input: this rank's n local unique strings (strs[i] of
 * length lens[i]), with counts[i] occurrences (a string with count 0 takes part in
 * the lookup but is never added: e.g. seen only in the test split). Output: the
 * vocabulary and ids[i] for every local string (0 when not kept). Collective. */
int mr_vocab_build(MrVocab *v, MrComm *c, int64_t n, const char *const *strs,
                   const uint32_t *lens, const int64_t *counts, int64_t min_count,
                   int64_t max_size, int64_t *ids, MrErr *e);
void mr_vocab_free(MrVocab *v);

/* Build the token vocabulary from local unique tokens and counts; ids[i] for each
 * local token (1 = OOV when not kept). Collective. */
int mr_token_vocab_build(MrTokenVocab *v, MrComm *c, int64_t n, const char *const *strs,
                         const uint32_t *lens, const int64_t *counts, int64_t max_tokens,
                         int64_t *ids, MrErr *e);
void mr_token_vocab_free(MrTokenVocab *v);
/* Build a token vocabulary from a list already in id order (checkpoint load). */
int mr_token_vocab_from_list(MrTokenVocab *v, int64_t n, const char *bytes, const int64_t *off,
                             const int64_t *counts, MrErr *e);
/* Id of a token (2..size-1), or 1 (OOV). */
int64_t mr_token_vocab_find(const MrTokenVocab *v, const char *tok, size_t len);

/* Operations */
/* Gather the whole vocabulary on `root` (bytes + offsets [V+1] + counts [V]), for
 * the index and for small tools. Other ranks get NULLs. Collective. */
int mr_vocab_gather(const MrVocab *v, MrComm *c, int root, char **bytes, int64_t **off,
                    int64_t **counts, MrErr *e);
/* Counts of all ids [V + 1] (index 0 = 0) on every rank (e.g. item frequencies for
 * the logQ correction). Collective. */
int mr_vocab_allgather_counts(const MrVocab *v, MrComm *c, int64_t **counts, MrErr *e);
/* Order-independent hash of the whole vocabulary (same on every rank, any P), to
 * check that a resumed run sees the same vocabulary as its checkpoint. Collective. */
int mr_vocab_hash(const MrVocab *v, MrComm *c, uint64_t *h, MrErr *e);

#endif
