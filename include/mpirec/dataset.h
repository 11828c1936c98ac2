/* dataset.h — parallel ingestion: file -> records -> split -> vocabularies ->
 * compact integer arrays on every rank.
 *
 * Every rank reads its byte range of the interaction file (reader.h rules), so
 * after ingestion rank r holds the records that start in its range, in file order,
 * with contiguous global record numbers first .. first + n - 1 (record numbers
 * count good records only: a skipped bad record is not a record). The split and
 * the vocabularies are then computed collectively and are identical for every P.
 *
 * The arrays are what training consumes: user and item vocabulary ids (0 = OOV),
 * ratings, optional timestamps, optional token id lists (non-padding tokens only),
 * and the test flag.
 */
#ifndef MPIREC_DATASET_H
#define MPIREC_DATASET_H

#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/err.h"
#include "mpirec/vocab.h"

typedef struct MrDataSummary {
    int64_t records;          /* good records in the file (global) */
    int64_t bad_records;      /* skipped bad records (on_error = skip) */
    int64_t users, items;     /* vocabulary sizes (without OOV) */
    int64_t tokens;           /* token vocabulary size incl. padding and OOV (0 without text) */
    int64_t train_records, test_records;
    int64_t duplicate_pairs;  /* records whose (user, item) pair occurred earlier */
    int64_t test_oov_users;   /* test records whose user is not in the vocabulary */
    int64_t test_oov_items;
    int64_t empty_text;       /* records whose text has no tokens (zero text vector) */
    int64_t bytes;            /* file size */
    double seconds;           /* wall time of the whole ingestion */
    double parse_seconds;     /* reading + parsing (slowest rank) */
    double vocab_seconds;     /* split + vocabularies + summary counts */
    int ranks;
    char first_bad[512];      /* location and reason of the first skipped record */
} MrDataSummary;

typedef struct MrDataset {
    int64_t n;                /* records held by this rank */
    int64_t first;            /* global record number of local record 0 */
    int32_t *user;            /* [n] user vocabulary id, 0 = OOV (vocabularies hold at
                               * most 2^31 - 2 ids: ingestion refuses larger ones) */
    int32_t *item;            /* [n] item vocabulary id, 0 = OOV */
    float *rating;            /* [n] */
    double *ts;               /* [n] timestamps (seconds); NULL without a timestamp column
                               * or unless split.kind is temporal */
    int64_t *tok_off;         /* [n + 1] token list of record i: tok[tok_off[i] .. tok_off[i+1]) */
    int32_t *tok;             /* token ids >= 1 (1 = OOV); NULL without text */
    uint8_t *is_test;         /* [n] */
    MrVocab users, items;     /* this rank's range of each vocabulary (vocab.h) */
    MrTokenVocab tokens;      /* whole token vocabulary (size 0 without text) */
    MrDataSummary sum;
} MrDataset;

/* Lifecycle */
/* Read, split and index the configured file. Collective; every rank returns the
 * same code. Errors name the file, line, byte offset, field and reason. */
int mr_ingest(MrDataset *d, MrComm *c, const MrConfig *cfg, MrErr *e);
void mr_dataset_free(MrDataset *d);

/* Queries */
/* The summary as one JSON object (malloc'd, caller frees). */
char *mr_data_summary_json(const MrDataSummary *s);

/* ---- split (also used by tests and tools) ---------------------------------- */
/* Random split of records first .. first+n-1 (SEMANTICS.md section 8). */
void mr_split_random(uint8_t *is_test, int64_t first, int64_t n, uint64_t seed, double fraction);
/* Temporal split: over all ranks, the floor(fraction * N) records with the largest
 * (timestamp, record number) are test. Collective (radix selection with small
 * allreduces; no rank gathers the timestamps). */
int mr_split_temporal(uint8_t *is_test, MrComm *c, const double *ts, int64_t first, int64_t n,
                      double fraction, MrErr *e);
/* Parse a timestamp field: a number (seconds), or an ISO-8601 date "YYYY-MM-DD" /
 * date-time "YYYY-MM-DD[T ]HH:MM[:SS]" in UTC. Returns 0 on success. */
int mr_parse_timestamp(const char *p, size_t len, double *out);

#endif
