/* index.h — the candidate index: exact and IVF maximum-inner-product search over
 * item embeddings, self-measured recall and speed, and the INDEX.h5 file.
 *
 * Scores are unnormalised inner products q . c (what the retrieval model was
 * trained on). Item k of the index is item vocabulary id k + 1 (row 0 of the item
 * table is OOV and is never a candidate).
 *
 * exact: blocked sgemm (query block x corpus block) with a per-query top-k heap;
 * ties broken by the lower item index, so results are deterministic.
 * ivf:   k-means partitions (seeded k-means++ init) of the corpus, built for MIPS
 *        by the norm-augmentation reduction of MIPS to L2 nearest neighbours
 *        (item x -> [x, sqrt(M^2 - |x|^2)], query q -> [M q/|q|, 0]; why this is
 *        correct is in docs/index.md); a query scores the centroids, probes the
 *        nprobe best partitions and returns the exact top k among their items;
 *        optionally 8-bit scalar-quantised codes of the residuals (item minus its
 *        centroid) are scored first and the best `rescore` candidates rescored
 *        exactly.
 *
 * Scores returned by ivf come from a fixed-order fused multiply-add dot product,
 * those of exact from sgemm: the two can differ in the last bits.
 *
 * Threads: whatever OpenBLAS uses (OPENBLAS_NUM_THREADS, openblas_get_num_threads());
 * the heap work of a query block runs on the same number of threads of our own.
 */
#ifndef MPIREC_INDEX_H
#define MPIREC_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/config.h"
#include "mpirec/err.h"

#define MR_INDEX_MAGIC "MPIREC-INDEX"
#define MR_INDEX_VERSION 1
#define MR_INDEX_LANES 16 /* items per block of the ivf search layout */
/* Byte of dimension t of lane l of block b in MrIndex.codes (d dimensions). */
#define MR_INDEX_CODE_AT(d, b, t, l)                                                         \
    ((size_t)(b) * (size_t)(((d) + 3) / 4) * 4 * MR_INDEX_LANES +                           \
     (size_t)((t) / 4) * 4 * MR_INDEX_LANES + (size_t)(l) * 4 + (size_t)((t) % 4))

typedef struct MrIndexParams {
    MrIndexKind kind;
    int64_t nlist;          /* 0: about 4 * sqrt(n) */
    int64_t nprobe;         /* 0: pick the smallest reaching target_recall at build */
    double target_recall;
    int kmeans_iters;
    int quantize;
    int64_t rescore;        /* 0: 2 * k */
    uint64_t seed;
} MrIndexParams;

/* Self-measurement written into the file. */
typedef struct MrIndexStats {
    int k;                  /* k of the measurement (clamped to the item count) */
    int64_t queries;        /* sample size (0: nothing measured, recall = -1, qps = 0) */
    double recall;          /* recall@k of the ivf search vs exact (1 for exact) */
    double qps_exact;       /* queries per second, exact search, batch of all sample queries */
    double qps;             /* queries per second of this index's search */
    int64_t nprobe;         /* nprobe in effect */
    int threads;
} MrIndexStats;

typedef struct MrIndex {
    MrIndexParams p;
    int64_t n;              /* items */
    int d;                  /* embedding dim */
    float *emb;             /* [n x d] */
    /* item id strings: item k is ids[ids_off[k] .. ids_off[k+1]) */
    char *ids;
    int64_t *ids_off;       /* [n + 1] */
    /* ivf (all NULL / 0 for exact) */
    int64_t nlist;
    float aug_norm;         /* M = max item norm, the radius of the MIPS -> L2 reduction */
    float *centroids;       /* [nlist x d] first d coordinates of the augmented centroids */
    float *probe_bias;      /* [nlist] -|c_aug|^2 / 2 (the augmented centroid's full norm) */
    int64_t *list_off;      /* [nlist + 1] */
    int64_t *list_items;    /* [n] item indices grouped by list, increasing within a list */
    /* Search layout (derived at build/load, not stored): list l's items fill blocks
     * list_blk[l] .. list_blk[l+1] of MR_INDEX_LANES items, each block stored
     * dimension-major ([d][MR_INDEX_LANES]) so a SIMD lane scores one item; padding
     * lanes are zero. */
    int64_t *list_blk;      /* [nlist + 1] */
    float *cent_blk;        /* [ceil(nlist / LANES) x d x LANES] centroids, same layout */
    int64_t nblk;           /* total blocks */
    float *list_emb;        /* [nblk x d x LANES] embeddings (NULL when quantized) */
    int64_t *scan_order;    /* [nlist] the order the search scans lists in: largest item
                             * norm first (ties: lower list) */
    /* 8-bit codes of the residuals x - centroid (quantize): block b holds
     * [ceil(d/4)][LANES][4] bytes, dimension t of lane l at byte
     * MR_INDEX_CODE_AT(d, b, t, l) (the AVX-512 VNNI layout: one 64-byte row is 16
     * items x 4 dimensions); dimensions past d and padding lanes are 0. */
    uint8_t *codes;
    float *code_scale;      /* [d] residual_t ~ code_offset[t] + code_scale[t] * code (quantize) */
    float *code_offset;     /* [d] (quantize) */
    float *code_mean;       /* [d] mean code of each dimension over the items (derived) */
    /* ids lookup: item indices in id byte order, or NULL when ids are already sorted */
    int64_t *id_order;      /* [n] */
    /* provenance */
    uint64_t model_hash;    /* mr_config_model_hash of the model it came from */
    char source[512];       /* checkpoint path it was built from */
    int64_t source_step;
    MrIndexStats stats;
} MrIndex;

/* Per-query exclusions (e.g. items seen in training): excl[excl_off[q] ..
 * excl_off[q+1]) are item indices never returned for query q. Lists need not be
 * sorted; repeats and indices outside [0, n) are ignored. excl_off must not
 * decrease (MR_EUSAGE). */
typedef struct MrExclusions {
    const int64_t *excl_off; /* [nq + 1] */
    const int64_t *excl;
} MrExclusions;

/* Lifecycle */
/* Index parameters from the index.* config keys; the seed drives k-means. */
void mr_index_params_from_config(MrIndexParams *p, const MrConfig *c, uint64_t seed);
/* Build over n embeddings [n x d] (copied; the caller keeps its arrays). ids /
 * ids_off may be NULL (then ids are the decimal item indices "0", "1", ...);
 * otherwise they are copied, and must be unique (MR_EDATA names a repeat).
 * sample_queries [ns x d] (real user embeddings) are used to measure recall@k and
 * QPS (ix->stats, saved with the file), and to choose nprobe when p->nprobe = 0:
 * the smallest nprobe whose recall@k on the sample reaches p->target_recall with a
 * margin of two standard errors of the per-query recall (so that users outside
 * the sample reach it too; docs/index.md). ns = 0 measures nothing (stats.queries
 * = 0, recall = -1) and is refused (MR_EUSAGE) with p->nprobe = 0. k larger than
 * n is clamped. ix is overwritten, not freed: pass a fresh or freed index.
 * Errors: MR_EDATA (no items, a non-finite embedding, repeated ids), MR_ECONFIG
 * (bad parameters), MR_EUSAGE (k < 1, bad sample), MR_ENOMEM. On error ix is empty. */
int mr_index_build(MrIndex *ix, const MrIndexParams *p, const float *emb, int64_t n, int d,
                   const char *ids, const int64_t *ids_off, const float *sample_queries,
                   int64_t ns, int k, MrErr *e);
/* Release everything build/load allocated and zero ix. Accepts NULL and an
 * already freed index. */
void mr_index_free(MrIndex *ix);

/* Operations */
/* Top-k for nq queries [nq x d]: out_items [nq x k] item indices (-1 when fewer
 * than k candidates exist after exclusions), out_scores [nq x k] (-INFINITY for
 * the -1 slots), best first; equal scores go to the lower item index. k larger
 * than the number of items is clamped: slots n .. k-1 are -1. A query with a NaN
 * gets no candidates (all -1). nprobe 0 = the index's own (stats.nprobe); larger
 * than nlist = nlist; ignored by exact. excl may be NULL.
 * Threads: as many as OpenBLAS is set to use; while they run, OpenBLAS is set to
 * one thread (each of ours calls it on its own share) and restored afterwards,
 * so do not run other BLAS work from another thread at the same time. Results do
 * not depend on the thread count. Errors: MR_EUSAGE (k < 1, nprobe < 0, bad
 * exclusion offsets, NULL arrays), MR_ENOMEM. */
int mr_index_search(const MrIndex *ix, const float *Q, int64_t nq, int k, int64_t nprobe,
                    const MrExclusions *excl, int64_t *out_items, float *out_scores, MrErr *e);
/* Exact search regardless of kind (the reference for recall); as above. */
int mr_index_search_exact(const MrIndex *ix, const float *Q, int64_t nq, int k,
                          const MrExclusions *excl, int64_t *out_items, float *out_scores,
                          MrErr *e);

/* Files (serial HDF5, rank 0). Layout documented in docs/index.md. */
/* Write atomically (PATH.tmp, fsync, rename, fsync of the directory). MR_EIO
 * names the path and the reason. HDF5's own error printing is switched off for
 * the process (docs/index.md says why). */
int mr_index_save(const MrIndex *ix, const char *path, MrErr *e);
/* Load into ix (overwritten, not freed). MR_EIO: cannot open (missing, no
 * permission). MR_EFORMAT: not HDF5, truncated, corrupt (HDF5 metadata checks, a
 * dataset or /meta checksum, an impossible shape or offset), wrong magic (a
 * checkpoint is recognised and named) or format version. Every message names the
 * file. On error ix is empty. */
int mr_index_load(MrIndex *ix, const char *path, MrErr *e);

/* Queries */
/* Item index of an id string (len bytes, no NUL needed), or -1. Binary search
 * over the ids in byte order (vocabulary ids are stored sorted; other ids use a
 * sorted permutation kept in id_order). */
int64_t mr_index_find_item(const MrIndex *ix, const char *id, size_t len);

#endif
