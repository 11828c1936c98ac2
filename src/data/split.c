/* split.c — train/test assignment, identical for every rank count.
 *
 * Random: the keyed hash rule of SEMANTICS.md section 8 on the global record
 * number; nothing to communicate.
 *
 * Temporal: the last floor(f * N) records by (timestamp, record number) are test.
 * Finding the cut without gathering timestamps: map each record to a 128-bit key
 * (order-preserving bits of the double, then the record number) and select the
 * K-th smallest key by radix selection, 8 bits per round, one 256-bin histogram
 * allreduce per round (16 rounds, 32 KB moved in total).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/dataset.h"
#include "mpirec/hash.h"
#include "mpirec/reader.h"

void mr_split_random(uint8_t *is_test, int64_t first, int64_t n, uint64_t seed, double fraction)
{
    uint64_t base = mr_mix(seed, MR_TAG_SPLIT), thr = mr_split_threshold(fraction);
    for (int64_t i = 0; i < n; i++)
        is_test[i] = (uint8_t)mr_split_is_test(base, (uint64_t)(first + i), thr);
}

/* Order-preserving map of a double to uint64 (negative numbers flipped). */
static uint64_t dbl_key(double x)
{
    uint64_t u;
    if (x == 0)
        x = 0; /* -0 and +0 compare equal */
    memcpy(&u, &x, 8);
    return (u >> 63) ? ~u : u | 0x8000000000000000ULL;
}

int mr_split_temporal(uint8_t *is_test, MrComm *c, const double *ts, int64_t first, int64_t n,
                      double fraction, MrErr *e)
{
    int64_t N = n;
    int rc = mr_comm_allreduce_i64(c, &N, 1, MR_SUM, e);
    if (rc)
        return rc;
    int64_t n_test = (int64_t)floor(fraction * (double)N);
    memset(is_test, 0, (size_t)n);
    if (n_test <= 0)
        return MR_OK;
    /* Target: the key of rank K = N - n_test (0-based) in ascending order; every key
     * >= it is test. Keys are unique (record numbers are), so exactly n_test. */
    int64_t K = N - n_test;
    uint64_t hi_pre = 0, lo_pre = 0; /* bits fixed so far */
    int64_t *hist = malloc(256 * sizeof *hist);
    if (!hist)
        return mr_err_set(e, MR_ENOMEM, "out of memory in the temporal split");
    for (int round = 0; round < 16; round++) {
        int word = round < 8 ? 0 : 1;
        int shift = 56 - 8 * (round % 8);
        memset(hist, 0, 256 * sizeof *hist);
        for (int64_t i = 0; i < n; i++) {
            uint64_t kh = dbl_key(ts[i]), kl = (uint64_t)(first + i);
            /* Only keys matching the prefix fixed so far take part. */
            int match;
            if (word == 0)
                match = round == 0 || (kh >> (shift + 8)) == (hi_pre >> (shift + 8));
            else
                match = kh == hi_pre && (round == 8 || (kl >> (shift + 8)) == (lo_pre >> (shift + 8)));
            if (match)
                hist[((word ? kl : kh) >> shift) & 255]++;
        }
        if ((rc = mr_comm_allreduce_i64(c, hist, 256, MR_SUM, e))) {
            free(hist);
            return rc;
        }
        int d = 0;
        while (d < 255 && K >= hist[d]) {
            K -= hist[d];
            d++;
        }
        if (word == 0)
            hi_pre |= (uint64_t)d << shift;
        else
            lo_pre |= (uint64_t)d << shift;
    }
    free(hist);
    for (int64_t i = 0; i < n; i++) {
        uint64_t kh = dbl_key(ts[i]), kl = (uint64_t)(first + i);
        is_test[i] = kh > hi_pre || (kh == hi_pre && kl >= lo_pre);
    }
    return MR_OK;
}

static int digits(const char *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int mr_parse_timestamp(const char *p, size_t len, double *out)
{
    while (len && (*p == ' ' || *p == '\t')) {
        p++;
        len--;
    }
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == 'Z'))
        len--;
    if (mr_parse_double(p, len, out) == 0)
        return 0;
    int y, mo, d, h = 0, mi = 0, s = 0;
    if (len < 10 || p[4] != '-' || p[7] != '-' || digits(p, 4, &y) || digits(p + 5, 2, &mo) ||
        digits(p + 8, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    if (len > 10) {
        if ((p[10] != ' ' && p[10] != 'T') || len < 16 || p[13] != ':' || digits(p + 11, 2, &h) ||
            digits(p + 14, 2, &mi) || h > 23 || mi > 59)
            return -1;
        if (len > 16) {
            if (len != 19 || p[16] != ':' || digits(p + 17, 2, &s) || s > 60)
                return -1;
        }
    }
    *out = (double)(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s);
    return 0;
}
