/* dups.c — the duplicate (user, item) pair count of ingestion (see dups.h).
 *
 * Duplicate (user, item) pairs: a pair occurring m times contributes m - 1.
 * Pairs are compared by their id strings, not by vocabulary ids (several unknown
 * users all map to the OOV id 0 and are not duplicates of each other): each
 * record's key is a 64-bit mix of the hashes of its user and item strings, made
 * while the strings are interned (a false match needs a 64-bit collision: ~n^2 /
 * 2^65, negligible).
 *
 * The keys are uniform, so their top `bits` bits cut them into 2^bits buckets of
 * about DUP_BUCKET keys; owner rank o counts the buckets [g0(o), g1(o)), a
 * contiguous range. The work goes in R rounds (the same R on every rank): round r
 * takes the r-th part of every owner's bucket range. In a round each rank writes
 * the keys of that round's buckets in bucket order (a counting scatter: the write
 * positions stay in cache, and keys of other rounds go to a dummy slot without a
 * branch), which is also owner order, so one alltoallv delivers every owner its
 * buckets, each source's part already sorted by bucket; a small alltoallv sends
 * the per-bucket counts. The owner then counts the repeated keys of one bucket at
 * a time with an open-addressing set that stays in L2. At P = 1 nothing moves.
 * Rounds bound the scatter and receive buffers to about 8 bytes x n / R, reused
 * from round to round: memory the process has not touched yet costs more than
 * the R - 1 extra reads of the keys. (Permuting the keys in place, to need no
 * buffer at all, was measured 2x slower: following the cycles chains one cache
 * miss to the next.) Sorting or a global hash set would miss the cache on every
 * key. */
#include "data/dups.h"

#include <stdlib.h>
#include <string.h>

#define DUP_BUCKET 16384
/* Rounds: a rank with more than DUP_ROUND_KEYS keys uses DUP_MAX_ROUNDS rounds.
 * Measured on the 1 GB file (40M keys; phase times of `mpirec data -v`, two runs
 * each): 1 round 0.81-1.12 s at P = 1 and 0.82-0.94 s at P = 2; 2 rounds 0.63-0.66 and
 * 0.37-0.47 s; 3-4 rounds 0.67-0.86 and 0.44-0.49 s (every round writes every key,
 * those of other rounds to the dummy slot). Since the string tables' slots are freed
 * before this phase (their memory is reused here), three runs each: 2 rounds
 * 0.51-0.56 / 0.28-0.31 s, 1 round 0.50-0.61 / 0.31-0.37 s. */
#define DUP_ROUND_KEYS (8 << 20)
#define DUP_MAX_ROUNDS 2

static inline int64_t dup_owner(int64_t g, int bits, int P)
{
    return (int64_t)(((unsigned __int128)(uint64_t)g * (unsigned)P) >> bits);
}

static inline int64_t dup_bucket(uint64_t key, int bits)
{
    return bits ? (int64_t)(key >> (64 - bits)) : 0;
}

/* Repeats among the keys of one bucket, given as `ns` segments. */
static int64_t bucket_repeats(const uint64_t *const *seg, const int64_t *len, int ns,
                              uint64_t *set, int64_t set_cap)
{
    int64_t tot = 0;
    for (int s = 0; s < ns; s++)
        tot += len[s];
    if (tot < 2)
        return 0;
    int l = 1;
    while (((int64_t)1 << l) < 2 * tot && ((int64_t)1 << l) < set_cap)
        l++;
    uint64_t mask = ((uint64_t)1 << l) - 1;
    memset(set, 0, ((size_t)1 << l) * sizeof *set);
    int64_t reps = 0;
    int zero = 0; /* 0 marks an empty slot, so the key 0 is tracked apart */
    for (int s = 0; s < ns; s++)
        for (int64_t i = 0; i < len[s]; i++) {
            uint64_t x = seg[s][i];
            if (!x) {
                reps += zero;
                zero = 1;
                continue;
            }
            for (uint64_t j = (x * 0x9E3779B97F4A7C15ULL) >> (64 - l);; j = (j + 1) & mask) {
                if (set[j] == x) {
                    reps++;
                    break;
                }
                if (!set[j]) {
                    set[j] = x;
                    break;
                }
            }
        }
    return reps;
}

int mr_count_duplicates(MrComm *c, uint64_t **keysp, int64_t n, int64_t total, int64_t round_keys,
                        int64_t *dups, MrErr *e)
{
    int P = c->size, me = c->rank;
    uint64_t *keys = *keysp; /* owned from here on */
    *keysp = NULL;
    int bits = 0;
    while (bits < 20 && (total >> bits) > DUP_BUCKET)
        bits++;
    int64_t nb = (int64_t)1 << bits;
    int64_t per_rank = total / P + 1;
    if (round_keys <= 0)
        round_keys = DUP_ROUND_KEYS;
    int R = (int)((per_rank + round_keys - 1) / round_keys);
    R = R < 1 ? 1 : R > DUP_MAX_ROUNDS ? DUP_MAX_ROUNDS : R;
    if (R > nb)
        R = (int)nb;
    int64_t *cnt = calloc((size_t)nb + 1, sizeof *cnt);     /* keys per bucket */
    int64_t *pos = malloc(((size_t)nb + 1) * sizeof *pos);  /* write position */
    uint8_t *rnd = malloc((size_t)nb + 1), *inr = malloc((size_t)nb + 1);
    int64_t *first = calloc((size_t)P + 1, 8);              /* owner's first bucket */
    int64_t *sn = calloc((size_t)P, 8), *rn = calloc((size_t)P, 8);
    int64_t *csn = calloc((size_t)P, 8), *crn = calloc((size_t)P, 8);
    int64_t *ccnt = malloc(((size_t)nb + 1) * 8);           /* counts sent, owner order */
    int64_t *rcnt = malloc(((size_t)P * (size_t)nb / (size_t)P + (size_t)P + 1) * 8);
    const uint64_t **seg = calloc((size_t)P, sizeof *seg);
    int64_t *slen = calloc((size_t)P, 8), *spos = calloc((size_t)P, 8);
    uint64_t *send = NULL, *recv = NULL, *set = NULL;
    int64_t recv_cap = 0;
    int rc = (cnt && pos && rnd && inr && first && sn && rn && csn && crn && ccnt && rcnt && seg &&
              slen && spos)
                 ? 0
                 : mr_err_set(e, MR_ENOMEM, "out of memory counting duplicate pairs");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    /* Owners' bucket ranges (empty for some owners when buckets are fewer than
     * ranks), and the round of each bucket. */
    for (int64_t o = 0, g = 0; o <= P; o++) {
        while (g < nb && dup_owner(g, bits, P) < o)
            g++;
        first[o] = g;
    }
    int64_t my0 = first[me], my1 = first[me + 1];
    for (int64_t g = 0; g < nb; g++) {
        int64_t o = dup_owner(g, bits, P), m = first[o + 1] - first[o];
        rnd[g] = (uint8_t)(((g - first[o]) * R) / m);
    }
    for (int64_t i = 0; i < n; i++)
        cnt[dup_bucket(keys[i], bits)]++;
    /* Buffers for the largest round. */
    int64_t most = 0;
    for (int r = 0; r < R; r++) {
        int64_t k = 0;
        for (int64_t g = 0; g < nb; g++)
            k += rnd[g] == r ? cnt[g] : 0;
        most = k > most ? k : most;
    }
    send = malloc((size_t)(most + 1) * 8); /* + the dummy slot */
    int64_t big = 0;
    rc = send ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory counting duplicate pairs");
    int64_t d = 0;
    for (int r = 0; r < R && !(rc = mr_comm_agree(c, rc, e)); r++) {
        /* This round's buckets: positions in bucket order, counts per owner. */
        int64_t at = 0, nc = 0;
        memset(sn, 0, (size_t)P * 8);
        memset(csn, 0, (size_t)P * 8);
        for (int64_t g = 0; g < nb; g++) {
            inr[g] = rnd[g] == r;
            if (inr[g]) {
                int64_t o = dup_owner(g, bits, P);
                sn[o] += cnt[g] * 8;
                csn[o] += 8;
                ccnt[nc++] = cnt[g];
            }
        }
        /* Write positions: the other owners' buckets in owner order, then my own
         * (they stay here: nothing is sent to self, so the receive buffer holds
         * only other ranks' keys). */
        const int64_t span[3][2] = {{0, my0}, {my1, nb}, {my0, my1}};
        int64_t own_at = 0;
        for (int s = 0; s < 3; s++) {
            if (s == 2)
                own_at = at;
            for (int64_t g = span[s][0]; g < span[s][1]; g++)
                if (inr[g]) {
                    pos[g] = at;
                    at += cnt[g];
                }
        }
        for (int64_t g = 0; g < nb; g++)
            if (!inr[g])
                pos[g] = at; /* the dummy slot, overwritten at will */
        for (int64_t i = 0; i < n; i++) {
            int64_t g = dup_bucket(keys[i], bits);
            send[pos[g]] = keys[i];
            pos[g] += inr[g];
        }
        /* My buckets of this round, and their counts from every source. */
        int64_t mine = 0;
        for (int64_t g = my0; g < my1; g++)
            mine += inr[g];
        for (int q = 0; q < P; q++)
            crn[q] = mine * 8;
        if (P > 1) {
            sn[me] = 0; /* my own keys stay at send + own_at */
            if ((rc = mr_comm_alltoallv(c, ccnt, csn, rcnt, crn, e)) ||
                (rc = mr_comm_alltoall_i64(c, sn, rn, e)))
                break;
            int64_t nr = 0;
            for (int q = 0; q < P; q++)
                nr += rn[q] / 8;
            if (nr + 1 > recv_cap) {
                free(recv);
                recv_cap = nr + 1 + (nr + 1) / 16; /* rounds differ a little in size */
                recv = malloc((size_t)recv_cap * 8);
            }
            rc = recv ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory counting duplicate pairs");
            if ((rc = mr_comm_agree(c, rc, e)) ||
                (rc = mr_comm_alltoallv(c, send, sn, recv, rn, e)))
                break;
        } else {
            memcpy(rcnt, ccnt, (size_t)mine * 8);
        }
        /* Source q's keys start at the sum of the earlier sources' byte counts in
         * the receive buffer; mine are in the send buffer. */
        int64_t rpos = 0;
        for (int q = 0; q < P; q++) {
            if (q == me) {
                spos[q] = own_at;
            } else {
                spos[q] = rpos;
                rpos += rn[q] / 8;
            }
        }
        for (int64_t g = 0; g < mine; g++) {
            int64_t t = 0;
            for (int q = 0; q < P; q++)
                t += rcnt[(size_t)q * (size_t)mine + (size_t)g];
            if (t > big) {
                int64_t cap = 2;
                while (cap < 2 * t)
                    cap *= 2;
                free(set);
                set = malloc((size_t)cap * sizeof *set);
                big = set ? cap / 2 : 0;
                if (!set) {
                    rc = mr_err_set(e, MR_ENOMEM, "out of memory counting duplicate pairs");
                    break;
                }
            }
            for (int q = 0; q < P; q++) {
                slen[q] = rcnt[(size_t)q * (size_t)mine + (size_t)g];
                seg[q] = (q == me ? send : recv) + spos[q];
                spos[q] += slen[q];
            }
            d += bucket_repeats(seg, slen, P, set, 2 * big);
        }
    }
    /* Every rank gets here: after the last round, or after a round that failed
     * (collectives fail on every rank; a local failure is agreed here). */
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    if ((rc = mr_comm_allreduce_i64(c, &d, 1, MR_SUM, e)))
        goto out;
    *dups = d;
out:
    free(keys);
    free(cnt);
    free(pos);
    free(rnd);
    free(inr);
    free(first);
    free(sn);
    free(rn);
    free(csn);
    free(crn);
    free(ccnt);
    free(rcnt);
    free(seg);
    free(slen);
    free(spos);
    free(send);
    free(recv);
    free(set);
    return rc;
}

