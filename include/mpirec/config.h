/* config.h — the run configuration (JSON), one struct for every stage.
 *
 * One table in cli/config.c lists every key with its type, default, range and
 * help; it drives the defaults, JSON parsing, `--set key=value`, validation and
 * the printed/written effective config, so a key is added in exactly one place
 * (plus its field here). Unknown keys, wrong types and out-of-range values are
 * errors naming the key and what was expected.
 *
 * The struct is plain data (fixed-size arrays, no pointers): it can be copied,
 * compared and broadcast as bytes. Rank 0 reads the file and broadcasts its text;
 * every rank parses it identically.
 */
#ifndef MPIREC_CONFIG_H
#define MPIREC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/err.h"

#define MR_PATH_MAX 4096
#define MR_NAME_MAX 256
#define MR_MAX_LAYERS 16
#define MR_MAX_KS 16

typedef enum MrFormat { MR_FMT_CSV = 0, MR_FMT_DELIMITED = 1, MR_FMT_JSONL = 2 } MrFormat;
typedef enum MrOnError { MR_ONERR_FAIL = 0, MR_ONERR_SKIP = 1 } MrOnError;
typedef enum MrSplitKind { MR_SPLIT_RANDOM = 0, MR_SPLIT_TEMPORAL = 1 } MrSplitKind;
typedef enum MrVocabFrom { MR_VOCAB_TRAIN = 0, MR_VOCAB_ALL = 1 } MrVocabFrom;
typedef enum MrTask { MR_TASK_RETRIEVAL = 0, MR_TASK_RANKING = 1, MR_TASK_MULTITASK = 2 } MrTask;
typedef enum MrOptName { MR_OPT_ADAGRAD = 0, MR_OPT_SGD = 1, MR_OPT_ADAM = 2 } MrOptName;
typedef enum MrNegatives { MR_NEG_GLOBAL = 0, MR_NEG_LOCAL = 1 } MrNegatives;
typedef enum MrSharding { MR_SHARD_REPLICATED = 0, MR_SHARD_ROW = 1 } MrSharding;
typedef enum MrIndexKind { MR_INDEX_EXACT = 0, MR_INDEX_IVF = 1 } MrIndexKind;
typedef enum MrProgress { MR_PROGRESS_AUTO = 0, MR_PROGRESS_PLAIN = 1, MR_PROGRESS_NONE = 2 } MrProgress;

/* A column: by name (header files, JSON fields) or by 0-based index. Unset = both
 * empty/-1 (only allowed for the optional columns). */
typedef struct MrColumn {
    char name[MR_NAME_MAX]; /* "" when given by index or unset */
    int index;              /* >= 0 when given by index, else -1 */
} MrColumn;

typedef struct MrIntList {
    int n;
    int v[MR_MAX_LAYERS > MR_MAX_KS ? MR_MAX_LAYERS : MR_MAX_KS];
} MrIntList;

typedef struct MrConfig {
    struct {
        char path[MR_PATH_MAX];
        MrFormat format;
        char separator[16];   /* any string: ",", "\t", ";", "::" */
        int header;           /* 1: first line names the columns */
        char quote[4];        /* "\"" or "" (no quoting) */
        struct { MrColumn user, item, rating, text, timestamp; } columns;
        MrOnError on_error;
        int64_t max_bad_records; /* with on_error=skip: fail once more than this are bad */
        double default_rating;   /* used when no rating column is configured */
    } data;
    struct {
        MrSplitKind kind;
        double test_fraction;
        uint64_t seed;
    } split;
    struct {
        MrVocabFrom from;     /* build user/item vocabularies from the train split or all records */
        int64_t min_count;    /* drop strings seen fewer times (they map to OOV) */
        int64_t max_size;     /* keep at most this many (most frequent first); 0 = no limit */
    } vocab;
    struct {
        MrTask task;
        int embedding_dim;
        double embedding_init;        /* uniform(-x, x); Keras default 0.05 */
        MrIntList query_layers;       /* Dense sizes after the query embedding(s) */
        MrIntList candidate_layers;   /* Dense sizes after the item embedding */
        MrIntList ranking_layers;     /* hidden sizes of the rating MLP; a Dense(1) follows */
        struct {
            int enabled;              /* add the text column to the query tower */
            int max_tokens;           /* vocabulary incl. padding (0) and OOV (1) */
            int dim;
        } text;
    } model;
    struct {
        double retrieval_weight;
        double rating_weight;
        double temperature;           /* 0 = none */
        int remove_accidental_hits;
        int logq;
        int num_hard_negatives;       /* 0 = none */
    } loss;
    struct {
        int64_t batch_size;           /* global batch, independent of the rank count */
        int epochs;
        uint64_t seed;
        int64_t max_steps;            /* stop after this many steps (0 = run all epochs) */
        int64_t log_every;            /* progress/steps.jsonl line every N steps */
        MrProgress progress;
    } train;
    struct {
        MrOptName name;
        double lr;
        double embedding_lr;          /* < 0: same as lr */
        double initial_accumulator;
        double epsilon;
        double beta1, beta2;
    } optimizer;
    struct {
        MrNegatives negatives;
        MrSharding embedding_sharding;
        double memory_limit_mb;       /* per rank; 0 = detect (MemAvailable / ranks on node) */
        int overlap;                  /* overlap the dense allreduce with embedding work */
    } dist;
    struct {
        MrIntList ks;
        int64_t batch_size;           /* queries per scoring block */
        int every_epochs;             /* 0 = only at the end */
        int train_split;              /* also evaluate on the training split */
    } eval;
    struct {
        int64_t every_steps;          /* 0 = off */
        double every_seconds;         /* 0 = off */
        int keep;
        int at_end;
    } checkpoint;
    struct {
        MrIndexKind kind;
        int build_at_end;
        int64_t nlist;                /* 0 = about 4 * sqrt(items) */
        int64_t nprobe;               /* 0 = smallest reaching target_recall */
        double target_recall;
        int kmeans_iters;
        int quantize;                 /* int8 codes scored first, then exact rescore */
        int64_t rescore;              /* candidates rescored exactly per query (quantized) */
        int64_t recall_queries;       /* sample size for the build-time self-measurement */
        int k;                        /* k of the recall measurement */
    } index;
    struct {
        int64_t users, items, interactions;
        uint64_t seed;
        int dim;                      /* latent factors */
        double zipf;                  /* item popularity exponent */
        double noise;                 /* rating noise (stddev) */
        int text;                     /* emit a text column tied to item clusters */
        MrFormat format;              /* csv or jsonl */
    } gen;
} MrConfig;

/* Lifecycle */
/* Fill every field with its default from the table. */
void mr_config_defaults(MrConfig *c);

/* Operations */
/* Apply a JSON document (object of sections) on top of c. `source` names the file
 * in messages. Unknown keys, wrong types, out-of-range values -> MR_ECONFIG. */
int mr_config_apply_json(MrConfig *c, const char *json, size_t len, const char *source, MrErr *e);
/* Apply one "key.path=value" override; value is read as JSON when it parses as
 * JSON, else as a string. */
int mr_config_set(MrConfig *c, const char *assignment, MrErr *e);
/* Cross-field checks (e.g. text enabled needs data.columns.text). */
int mr_config_validate(const MrConfig *c, MrErr *e);
/* Read a file into a malloc'd NUL-terminated buffer (no MPI; rank 0 uses it). */
int mr_config_read_file(const char *path, char **text, size_t *len, MrErr *e);

/* Queries */
/* The effective config as a pretty JSON document (malloc'd; caller frees). */
char *mr_config_to_json(const MrConfig *c);
/* Print "key  type  default  help" for every key into a malloc'd string. */
char *mr_config_help(void);
/* Keys whose change makes a checkpoint incompatible (model shape, vocab source):
 * returns 0 and fills `key` with the first differing key, or 1 if compatible. */
int mr_config_resume_compatible(const MrConfig *saved, const MrConfig *now, char *key, size_t n);
/* Stable 64-bit hash of the keys that define the model (shape, vocab source);
 * used to match an index to its checkpoint. */
uint64_t mr_config_model_hash(const MrConfig *c);

/* Enum names (for messages and JSON output). */
const char *mr_task_name(MrTask t);
const char *mr_format_name(MrFormat f);

#endif
