/* serve.h — using a trained model: evaluation and index building from a
 * checkpoint (collective, `mpirec eval` / `mpirec index`), and the query path of
 * `mpirec recommend` (serial): query embeddings, retrieval from the index,
 * exclude-seen, re-ranking by the rating model. docs/serving.md has the details.
 *
 * Checkpoints are named by a path that may be the checkpoint file, a `latest`
 * pointer file, a run's checkpoints/ directory or the run directory itself
 * (mr_serve_resolve_checkpoint).
 *
 * Consistency: an index belongs to a checkpoint when the config model hash, the
 * item vocabulary and the candidate tower's output on a sample of items all
 * agree; anything else is MR_EFORMAT naming both files. The exclude-seen data
 * (training (user, item) pairs) lives in a file next to the index,
 * <index without .h5>.seen.h5, written by `mpirec train` and `mpirec index`
 * (mr_serve_seen_path; format in docs/serving.md).
 *
 * Item numbers in results are index items: item k is item vocabulary id k + 1,
 * whose id string mr_server_item_id gives.
 */
#ifndef MPIREC_SERVE_H
#define MPIREC_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/dataset.h"
#include "mpirec/err.h"
#include "mpirec/train.h"

/* What the /meta of a training checkpoint says (filled by mr_serve_run_config). */
typedef struct MrServeCkptInfo {
    char path[MR_PATH_MAX]; /* the resolved checkpoint file */
    int64_t step, epoch, batch;
    uint64_t model_hash;
    int64_t ranks; /* P at save */
} MrServeCkptInfo;

/* ---- checkpoints (no MPI) --------------------------------------------------- */

/* Resolve `arg` to a checkpoint file: a regular mpirec/HDF5 file is returned as
 * is; a `latest` pointer file (text holding a file name) names a file in its own
 * directory; a directory holding `latest` (a run's checkpoints/) or a run directory
 * (holding checkpoints/) gives the file `latest` names, or, without `latest`, the
 * newest checkpoint that verifies. MR_EIO when arg cannot be read or the
 * directory holds no checkpoint, MR_EFORMAT when arg is neither a checkpoint nor
 * a pointer. */
int mr_serve_resolve_checkpoint(const char *arg, char *out, size_t n, MrErr *e);
/* The exclude-seen file that belongs to an index file: a trailing ".h5" is
 * replaced by ".seen.h5", otherwise ".seen.h5" is appended. MR_EUSAGE when the
 * result does not fit. */
int mr_serve_seen_path(const char *index_path, char *out, size_t n, MrErr *e);

/* ---- eval and index from a checkpoint (Collective) --------------------------- */

/* The config a checkpoint was trained with, with overrides applied in order: the
 * JSON file config_path (may be NULL), then the `key=value` strings sets[0..nsets).
 * Overrides may change run keys (data.path, eval.*, index.*, ...), not the
 * model: a changed model key is MR_ECONFIG naming it. Resolves ckpt_arg and fills
 * info. Rank 0 reads the file; Collective. */
int mr_serve_run_config(MrComm *c, const char *ckpt_arg, const char *config_path,
                        const char *const *sets, int nsets, MrConfig *cfg, MrServeCkptInfo *info,
                        MrErr *e);
/* Load the checkpoint info->path into a fresh state for the ingested dataset d
 * (any P, any sharding: tables are read by global row) and evaluate it exactly as
 * training does (mr_evaluate): test split into *test, and the training split into
 * *train when train is not NULL. The data must give the checkpoint's vocabularies
 * (MR_ECONFIG otherwise). Collective. */
int mr_serve_evaluate(MrComm *c, const MrConfig *cfg, const MrDataset *d,
                      const MrServeCkptInfo *info, MrMetrics *test, MrMetrics *train, MrErr *e);
/* Load the checkpoint as above and write the candidate index `out` and its
 * exclude-seen file, exactly as training writes them at its end
 * (mr_export_index). Collective. */
int mr_serve_build_index(MrComm *c, const MrConfig *cfg, const MrDataset *d,
                         const MrServeCkptInfo *info, const char *out, MrErr *e);

/* ---- requests (no MPI) ------------------------------------------------------- */

typedef struct MrServeRequest {
    char *user; /* malloc'd, NUL-terminated (may contain no NUL itself) */
    size_t user_len;
    char *text; /* malloc'd; NULL when the request has no text */
    size_t text_len;
} MrServeRequest;

/* Parse one input line (without its newline): a JSON object {"user": ID,
 * "<text_field>": TEXT, ...} when its first non-blank byte is '{' (ID a string or
 * a number, taken literally; TEXT a string or null; other members ignored),
 * otherwise a plain user id with surrounding ASCII blanks removed. MR_EDATA with
 * the reason (and byte offset) for a malformed line or a missing user. r is
 * always safe to free. */
int mr_serve_parse_request(const char *line, size_t len, const char *text_field, MrServeRequest *r,
                           MrErr *e);
void mr_serve_request_free(MrServeRequest *r);
/* Append s[0..n) to the growable buffer (*buf, *len, *cap; *buf may start NULL)
 * as a quoted JSON string: '"' and '\\' escaped, control bytes as \n, \t, \u00XX,
 * invalid UTF-8 bytes as \ufffd. The buffer stays NUL-terminated. -1 when out of
 * memory. */
int mr_serve_json_string(char **buf, size_t *len, size_t *cap, const char *s, size_t n);
/* Append printf-formatted text to the same kind of buffer; -1 when out of memory. */
int mr_serve_buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- the server (serial) ----------------------------------------------------- */

typedef struct MrServer MrServer;

enum {
    MR_SERVE_LOAD_SEEN = 1,  /* open the exclude-seen file of the index */
    MR_SERVE_LOAD_RATING = 2 /* the rating head is needed (rerank): MR_EUSAGE without one */
};

/* Per-query flags of a result. */
enum {
    MR_SERVE_UNKNOWN_USER = 1, /* not in the user vocabulary: the OOV row was used */
    MR_SERVE_TEXT_IGNORED = 2, /* text given, but the model has no text tower */
    MR_SERVE_K_CLAMPED = 4     /* fewer than k items exist (after exclusions) */
};

typedef struct MrServeParams {
    int k;            /* items per query (>= 1) */
    int rerank;       /* 0: order by retrieval score; N >= k: retrieve N, order by rating */
    int exclude_seen; /* drop the user's training items (needs MR_SERVE_LOAD_SEEN) */
    int64_t nprobe;   /* ivf: lists to probe, 0 = the index's own */
} MrServeParams;

typedef struct MrServerInfo {
    char index_path[MR_PATH_MAX];
    char ckpt_path[MR_PATH_MAX];
    char seen_path[MR_PATH_MAX]; /* "" when not loaded */
    int64_t step;                /* checkpoint step */
    int64_t items, users;        /* vocabulary sizes (without OOV) */
    int dim;                     /* embedding dim of the index */
    int has_text, has_rating;
    int64_t seen_pairs, seen_bytes; /* exclude-seen data (0 when not loaded) */
} MrServerInfo;

/* Load the index, the checkpoint (ckpt_arg resolved; NULL = the checkpoint the
 * index records as its source), and with flags the seen file; check that they
 * belong together. Errors name the file and what is wrong: MR_EIO (cannot read),
 * MR_EFORMAT (truncated, corrupt, wrong kind, from another model), MR_EUSAGE
 * (rerank without a rating head). *s is NULL on failure. */
int mr_server_open(MrServer **s, const char *index_path, const char *ckpt_arg, unsigned flags,
                   MrErr *e);
void mr_server_close(MrServer **s);

/* Answer nq requests, batched (one query-tower pass and one index search per
 * batch). Outputs, caller-allocated: items/scores [nq x k] (index items, -1 and 0
 * after the count), ratings [nq x k] when p->rerank (else may be NULL), count [nq]
 * items returned, flags [nq] (MR_SERVE_*). With rerank N, the top N by retrieval
 * score (after exclusions) are ordered by predicted rating (ties: retrieval
 * order) and the first k returned with their retrieval scores and ratings. */
int mr_server_recommend(MrServer *s, const MrServeRequest *req, int64_t nq, const MrServeParams *p,
                        int64_t *items, float *scores, float *ratings, int *count, unsigned *flags,
                        MrErr *e);

/* Queries */
const MrServerInfo *mr_server_info(const MrServer *s);
/* Id string of index item k (borrowed, not NUL-terminated; length in *len). */
const char *mr_server_item_id(const MrServer *s, int64_t k, size_t *len);

#endif
