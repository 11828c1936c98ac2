/* hash.h — the counter-based randomness of ../shared/SEMANTICS.md section 8.
 *
 * Everything random in mpirec (the train/test split, the per-epoch order, the
 * initial weights, the synthetic generator) is a pure function of (seed, domain
 * tag, global index), never of the rank count or of call order. This is what
 * makes a run independent of P and identical to the PyTorch reference.
 *
 *   splitmix64(x): z = x + golden; z = (z ^ z>>30) * C1; z = (z ^ z>>27) * C2; z ^ z>>31
 *   mix(a, b)    = splitmix64(splitmix64(a) ^ b)
 *   split:  record r is test iff (mix(mix(seed,1), r) >> 11) < floor(f * 2^53)
 *   order:  epoch e sorts training records by mix(mix(mix(seed,2), e), r), ties by r
 *   init:   element j of stream s is lo + (hi-lo) * ((mix(mix(mix(seed,3), s), j) >> 40) * 2^-24)
 */
#ifndef MPIREC_HASH_H
#define MPIREC_HASH_H

#include <math.h>
#include <stdint.h>

enum { MR_TAG_SPLIT = 1, MR_TAG_SHUFFLE = 2, MR_TAG_INIT = 3, MR_TAG_GEN = 16, MR_TAG_SAMPLE = 17 };

/* Initialisation streams (SEMANTICS.md section 8). Dense layer l of a tower adds l. */
enum {
    MR_STREAM_USER = 1,
    MR_STREAM_ITEM = 2,
    MR_STREAM_TEXT = 3,
    MR_STREAM_QDENSE = 100,
    MR_STREAM_CDENSE = 200,
    MR_STREAM_RDENSE = 300
};

static inline uint64_t mr_splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t mr_mix(uint64_t a, uint64_t b) { return mr_splitmix64(mr_splitmix64(a) ^ b); }

/* floor(f * 2^53) for the split rule, computed in double exactly as the reference. */
static inline uint64_t mr_split_threshold(double test_fraction)
{
    return (uint64_t)floor(test_fraction * 9007199254740992.0);
}

/* 1 when global record r is a test record. `base` = mr_mix(seed, MR_TAG_SPLIT). */
static inline int mr_split_is_test(uint64_t base, uint64_t r, uint64_t threshold)
{
    return (mr_mix(base, r) >> 11) < threshold;
}

/* Sort key of record r in epoch e (ascending; ties by r). */
static inline uint64_t mr_order_key(uint64_t seed, uint64_t epoch, uint64_t r)
{
    return mr_mix(mr_mix(mr_mix(seed, MR_TAG_SHUFFLE), epoch), r);
}

/* Base of an init stream: pass to mr_init_value for every element j. */
static inline uint64_t mr_init_base(uint64_t seed, uint64_t stream)
{
    return mr_mix(mr_mix(seed, MR_TAG_INIT), stream);
}

/* Element j of a uniform(lo, hi) tensor: computed in double, rounded to float. */
static inline float mr_init_value(uint64_t base, uint64_t j, double lo, double hi)
{
    double u = (double)(mr_mix(base, j) >> 40) * (1.0 / 16777216.0);
    return (float)(lo + (hi - lo) * u);
}

/* A uniform double in [0, 1) from a hash (53 bits). */
static inline double mr_hash_unit(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }

#endif
