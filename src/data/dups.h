/* dups.h — exact count of repeated (user, item) pairs over all ranks (private to
 * src/data; ingest.c calls it, tests call it with small rounds).
 */
#ifndef MPIREC_DATA_DUPS_H
#define MPIREC_DATA_DUPS_H

#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/err.h"

/* *keysp: one 64-bit key per local record (equal pairs, equal keys), taken over
 * and freed here (*keysp set to NULL, also on failure); n: local records; total:
 * records over all ranks; round_keys: about how many keys a rank handles per round
 * (0 = the default: two rounds above 8M keys per rank). *dups = sum over
 * distinct keys of (occurrences - 1), identical on every rank. Collective. */
int mr_count_duplicates(MrComm *c, uint64_t **keysp, int64_t n, int64_t total, int64_t round_keys,
                        int64_t *dups, MrErr *e);

#endif
