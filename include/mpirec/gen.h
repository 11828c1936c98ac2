/* gen.h — synthetic interaction data with planted, learnable structure.
 *
 * Row t of the file is a pure function of (seed, t): the output is byte-identical
 * for any rank count, and rows are formatted and written in chunks, so files of
 * 100M+ rows stream without being held in memory.
 *
 * Planted model: user u and item i have latent factors (Gaussian, from the hash);
 * the user of row t follows a power law over users; the item is chosen among 32
 * candidates drawn from a Zipf(gen.zipf) popularity (alias table) with probability
 * proportional to exp(3 <f_u, f_i>) (Gumbel-max; factors are scaled so that the
 * dot product is standard normal), so retrieval can learn something popularity
 * alone cannot; the rating is 3 + 2 tanh(<f_u, f_i>) plus
 * Gaussian noise (gen.noise), rounded and clipped to 1..5; timestamps increase with
 * t; with gen.text, 3-8 tokens mostly drawn from the item's cluster vocabulary.
 * Columns: user,item,rating,timestamp[,text] (CSV with header, or JSON Lines).
 */
#ifndef MPIREC_GEN_H
#define MPIREC_GEN_H

#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/err.h"

typedef struct MrGenStats {
    int64_t rows;
    int64_t bytes;
    double seconds;
} MrGenStats;

/* Write cfg->gen's dataset to `path` (created/truncated by rank 0). Collective. */
int mr_gen_write(MrComm *c, const MrConfig *cfg, const char *path, MrGenStats *st, MrErr *e);

#endif
