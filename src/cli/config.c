/* config.c — the table of configuration keys, and everything driven by it.
 *
 * Approach: `keys[]` lists every dotted key with its type, the offset of its field
 * in MrConfig, its default (as JSON text, parsed by the same setter as user input
 * so defaults cannot drift from the parser), its range and a one-line help. JSON
 * documents are walked recursively into dotted paths and each leaf is looked up in
 * the table; `--set` parses its value as JSON when it can, as a string otherwise.
 * Output goes back through the table, so the printed config lists every key.
 *
 * This is the only file that includes cJSON.h. The tree is freed right after the
 * values are copied out. Numbers are parsed by cJSON (strtod in the C locale; we
 * never call setlocale) and printed with round-trip precision.
 */
#include "mpirec/config.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpirec/hash.h"

typedef enum KType { K_BOOL, K_INT, K_I64, K_U64, K_DBL, K_STR, K_ENUM, K_LIST, K_COL } KType;

/* Resume classes: a K_MODEL key defines the model or its data (shape, vocabulary
 * source, data order); changing it between save and resume is refused. K_RUN keys
 * (epochs, intervals, logging, rank layout, learning rate) may change freely. */
enum { K_RUN = 0, K_MODEL = 1 };

typedef struct Key {
    const char *key;
    KType type;
    size_t off;
    size_t size;              /* K_STR: buffer size */
    const char *def;          /* default as JSON text */
    double min, max;          /* numbers and list elements, inclusive */
    const char *const *names; /* K_ENUM: NULL-terminated value names */
    int cls;                  /* K_RUN or K_MODEL */
    const char *help;
} Key;

static const char *const fmt_names[] = {"csv", "delimited", "jsonl", NULL};
static const char *const onerr_names[] = {"fail", "skip", NULL};
static const char *const split_names[] = {"random", "temporal", NULL};
static const char *const vfrom_names[] = {"train", "all", NULL};
static const char *const task_names[] = {"retrieval", "ranking", "multitask", NULL};
static const char *const opt_names[] = {"adagrad", "sgd", "adam", NULL};
static const char *const neg_names[] = {"global", "local", NULL};
static const char *const shard_names[] = {"replicated", "row", NULL};
static const char *const index_names[] = {"exact", "ivf", NULL};
static const char *const prog_names[] = {"auto", "plain", "none", NULL};
static const char *const genfmt_names[] = {"csv", "delimited", "jsonl", NULL};

#define O(f) offsetof(MrConfig, f)
#define S(f) sizeof(((MrConfig *)0)->f)
#define BIG 9.0e15 /* integers stay exact in a double up to 2^53 */

static const Key keys[] = {
    {"data.path", K_STR, O(data.path), S(data.path), "\"\"", 0, 0, NULL, K_RUN,
     "interaction file to read (a resumed run checks that it gives the same vocabularies)"},
    {"data.format", K_ENUM, O(data.format), 0, "\"csv\"", 0, 0, fmt_names, K_MODEL,
     "csv (RFC 4180), delimited (any separator string) or jsonl"},
    {"data.separator", K_STR, O(data.separator), S(data.separator), "\",\"", 0, 0, NULL, K_MODEL,
     "field separator for csv/delimited (e.g. \",\", \"\\t\", \";\", \"::\")"},
    {"data.header", K_BOOL, O(data.header), 0, "true", 0, 0, NULL, K_MODEL,
     "first line holds column names"},
    {"data.quote", K_STR, O(data.quote), S(data.quote), "\"\\\"\"", 0, 0, NULL, K_MODEL,
     "quote character, or \"\" for none"},
    {"data.columns.user", K_COL, O(data.columns.user), 0, "\"user\"", 0, 0, NULL, K_MODEL,
     "user column: name, or 0-based index without header"},
    {"data.columns.item", K_COL, O(data.columns.item), 0, "\"item\"", 0, 0, NULL, K_MODEL,
     "item column: name or index"},
    {"data.columns.rating", K_COL, O(data.columns.rating), 0, "\"\"", 0, 0, NULL, K_MODEL,
     "rating column (\"\" = none; data.default_rating is used)"},
    {"data.columns.text", K_COL, O(data.columns.text), 0, "\"\"", 0, 0, NULL, K_MODEL,
     "optional text column for the query tower (\"\" = none)"},
    {"data.columns.timestamp", K_COL, O(data.columns.timestamp), 0, "\"\"", 0, 0, NULL, K_MODEL,
     "optional timestamp column (needed by split.kind=temporal)"},
    {"data.on_error", K_ENUM, O(data.on_error), 0, "\"fail\"", 0, 0, onerr_names, K_MODEL,
     "bad records: fail (stop with the record's location) or skip (count them)"},
    {"data.max_bad_records", K_I64, O(data.max_bad_records), 0, "1000", 0, BIG, NULL, K_RUN,
     "with on_error=skip, fail when more records than this are bad"},
    {"data.default_rating", K_DBL, O(data.default_rating), 0, "1.0", -1e30, 1e30, NULL, K_MODEL,
     "rating given to every record when no rating column is configured"},
    {"split.kind", K_ENUM, O(split.kind), 0, "\"random\"", 0, 0, split_names, K_MODEL,
     "random (keyed hash of seed and record number) or temporal (last fraction by time)"},
    {"split.test_fraction", K_DBL, O(split.test_fraction), 0, "0.2", 0, 0.99, NULL, K_MODEL,
     "fraction of records in the test split"},
    {"split.seed", K_U64, O(split.seed), 0, "42", 0, BIG, NULL, K_MODEL, "seed of the split hash"},
    {"vocab.from", K_ENUM, O(vocab.from), 0, "\"train\"", 0, 0, vfrom_names, K_MODEL,
     "build user/item vocabularies from the train split or all records (as the notebooks)"},
    {"vocab.min_count", K_I64, O(vocab.min_count), 0, "1", 1, BIG, NULL, K_MODEL,
     "strings seen fewer times map to OOV"},
    {"vocab.max_size", K_I64, O(vocab.max_size), 0, "0", 0, BIG, NULL, K_MODEL,
     "keep the most frequent N strings (ties by byte order); 0 = all"},
    {"model.task", K_ENUM, O(model.task), 0, "\"retrieval\"", 0, 0, task_names, K_MODEL,
     "retrieval, ranking or multitask"},
    {"model.embedding_dim", K_INT, O(model.embedding_dim), 0, "32", 1, 4096, NULL, K_MODEL,
     "user and item embedding dimension"},
    {"model.embedding_init", K_DBL, O(model.embedding_init), 0, "0.05", 0, 10, NULL, K_MODEL,
     "embeddings start uniform(-x, x) (Keras default 0.05)"},
    {"model.query_layers", K_LIST, O(model.query_layers), 0, "[]", 1, 65536, NULL, K_MODEL,
     "Dense sizes of the query tower (ReLU between, none after the last)"},
    {"model.candidate_layers", K_LIST, O(model.candidate_layers), 0, "[]", 1, 65536, NULL,
     K_MODEL, "Dense sizes of the candidate tower"},
    {"model.ranking_layers", K_LIST, O(model.ranking_layers), 0, "[32, 16]", 1, 65536, NULL,
     K_MODEL, "hidden sizes (ReLU) of the rating MLP; a linear Dense(1) follows"},
    {"model.text.enabled", K_BOOL, O(model.text.enabled), 0, "false", 0, 0, NULL, K_MODEL,
     "concatenate the mean text-token embedding to the query tower input"},
    {"model.text.max_tokens", K_INT, O(model.text.max_tokens), 0, "10000", 3, 1 << 26, NULL,
     K_MODEL, "text vocabulary size incl. padding (0) and OOV (1); table rows"},
    {"model.text.dim", K_INT, O(model.text.dim), 0, "32", 1, 4096, NULL, K_MODEL,
     "text token embedding dimension"},
    {"loss.retrieval_weight", K_DBL, O(loss.retrieval_weight), 0, "1.0", 0, 1e30, NULL, K_RUN,
     "multitask weight of the retrieval loss"},
    {"loss.rating_weight", K_DBL, O(loss.rating_weight), 0, "1.0", 0, 1e30, NULL, K_RUN,
     "multitask weight of the rating MSE"},
    {"loss.temperature", K_DBL, O(loss.temperature), 0, "0", 0, 1e30, NULL, K_RUN,
     "divide logits by this (0 = none)"},
    {"loss.remove_accidental_hits", K_BOOL, O(loss.remove_accidental_hits), 0, "false", 0, 0,
     NULL, K_RUN, "mask in-batch negatives that are the positive's item"},
    {"loss.logq", K_BOOL, O(loss.logq), 0, "false", 0, 0, NULL, K_RUN,
     "subtract log(item frequency in the train split) from the logits"},
    {"loss.num_hard_negatives", K_INT, O(loss.num_hard_negatives), 0, "0", 0, 1 << 30, NULL,
     K_RUN, "keep only the n highest-scoring negatives per row (0 = all)"},
    {"train.batch_size", K_I64, O(train.batch_size), 0, "4096", 1, 1 << 26, NULL, K_MODEL,
     "global batch size (independent of the rank count)"},
    {"train.epochs", K_INT, O(train.epochs), 0, "3", 0, 1 << 30, NULL, K_RUN, "epochs"},
    {"train.seed", K_U64, O(train.seed), 0, "42", 0, BIG, NULL, K_MODEL,
     "seed of the initial weights and the per-epoch order"},
    {"train.max_steps", K_I64, O(train.max_steps), 0, "0", 0, BIG, NULL, K_RUN,
     "stop after this many steps in total (0 = run all epochs)"},
    {"train.log_every", K_I64, O(train.log_every), 0, "100", 1, BIG, NULL, K_RUN,
     "steps between progress lines and steps.jsonl records"},
    {"train.progress", K_ENUM, O(train.progress), 0, "\"auto\"", 0, 0, prog_names, K_RUN,
     "auto (redraw on a terminal), plain (one line each) or none"},
    {"optimizer.name", K_ENUM, O(optimizer.name), 0, "\"adagrad\"", 0, 0, opt_names, K_MODEL,
     "adagrad (Keras), sgd or adam"},
    {"optimizer.lr", K_DBL, O(optimizer.lr), 0, "0.1", 0, 1e6, NULL, K_RUN, "learning rate"},
    {"optimizer.embedding_lr", K_DBL, O(optimizer.embedding_lr), 0, "-1", -1, 1e6, NULL, K_RUN,
     "learning rate of embedding tables (-1 = optimizer.lr)"},
    {"optimizer.initial_accumulator", K_DBL, O(optimizer.initial_accumulator), 0, "0.1", 0, 1e6,
     NULL, K_MODEL, "Adagrad accumulator start (Keras 0.1)"},
    {"optimizer.epsilon", K_DBL, O(optimizer.epsilon), 0, "1e-7", 0, 1, NULL, K_RUN,
     "Adagrad/Adam epsilon (Keras 1e-7)"},
    {"optimizer.beta1", K_DBL, O(optimizer.beta1), 0, "0.9", 0, 0.999999, NULL, K_RUN, "Adam beta1"},
    {"optimizer.beta2", K_DBL, O(optimizer.beta2), 0, "0.999", 0, 0.999999999, NULL, K_RUN,
     "Adam beta2"},
    {"dist.negatives", K_ENUM, O(dist.negatives), 0, "\"global\"", 0, 0, neg_names, K_RUN,
     "global: softmax over the whole global batch (P-invariant); local: over the rank's slice"},
    {"dist.embedding_sharding", K_ENUM, O(dist.embedding_sharding), 0, "\"replicated\"", 0, 0,
     shard_names, K_RUN, "replicated tables, or row-sharded (row i on rank i mod P)"},
    {"dist.memory_limit_mb", K_DBL, O(dist.memory_limit_mb), 0, "0", 0, 1e12, NULL, K_RUN,
     "per-rank memory budget for the pre-flight check (0 = detect)"},
    {"dist.overlap", K_BOOL, O(dist.overlap), 0, "true", 0, 0, NULL, K_RUN,
     "overlap the dense-gradient allreduce with embedding work"},
    {"eval.ks", K_LIST, O(eval.ks), 0, "[1, 5, 10, 50, 100]", 1, 1 << 20, NULL, K_RUN,
     "k values of the factorized top-k accuracy"},
    {"eval.batch_size", K_I64, O(eval.batch_size), 0, "4096", 1, 1 << 24, NULL, K_RUN,
     "queries per scoring block"},
    {"eval.every_epochs", K_INT, O(eval.every_epochs), 0, "1", 0, 1 << 30, NULL, K_RUN,
     "evaluate every N epochs (0 = only after training)"},
    {"eval.train_split", K_BOOL, O(eval.train_split), 0, "false", 0, 0, NULL, K_RUN,
     "also evaluate on the training split"},
    {"checkpoint.every_steps", K_I64, O(checkpoint.every_steps), 0, "0", 0, BIG, NULL, K_RUN,
     "checkpoint every N steps (0 = off)"},
    {"checkpoint.every_seconds", K_DBL, O(checkpoint.every_seconds), 0, "1800", 0, 1e12, NULL,
     K_RUN, "checkpoint every T seconds of training (0 = off)"},
    {"checkpoint.keep", K_INT, O(checkpoint.keep), 0, "3", 1, 1 << 20, NULL, K_RUN,
     "checkpoints kept in the run directory"},
    {"checkpoint.at_end", K_BOOL, O(checkpoint.at_end), 0, "true", 0, 0, NULL, K_RUN,
     "write a checkpoint when training ends"},
    {"index.kind", K_ENUM, O(index.kind), 0, "\"exact\"", 0, 0, index_names, K_RUN,
     "exact (brute force) or ivf (k-means partitions + exact rescore)"},
    {"index.build_at_end", K_BOOL, O(index.build_at_end), 0, "true", 0, 0, NULL, K_RUN,
     "write DIR/index.h5 when training ends (retrieval and multitask)"},
    {"index.nlist", K_I64, O(index.nlist), 0, "0", 0, BIG, NULL, K_RUN,
     "IVF partitions (0 = about 4 * sqrt(items))"},
    {"index.nprobe", K_I64, O(index.nprobe), 0, "0", 0, BIG, NULL, K_RUN,
     "IVF partitions probed per query (0 = smallest reaching index.target_recall)"},
    {"index.target_recall", K_DBL, O(index.target_recall), 0, "0.95", 0, 1, NULL, K_RUN,
     "recall@k the automatic nprobe aims for"},
    {"index.kmeans_iters", K_INT, O(index.kmeans_iters), 0, "20", 1, 10000, NULL, K_RUN,
     "k-means iterations"},
    {"index.quantize", K_BOOL, O(index.quantize), 0, "false", 0, 0, NULL, K_RUN,
     "score int8 codes first, rescore the best exactly"},
    {"index.rescore", K_I64, O(index.rescore), 0, "0", 0, BIG, NULL, K_RUN,
     "candidates rescored exactly per query when quantized (0 = 2 * k)"},
    {"index.recall_queries", K_I64, O(index.recall_queries), 0, "1000", 1, BIG, NULL, K_RUN,
     "query sample for the build-time recall and QPS measurement"},
    {"index.k", K_INT, O(index.k), 0, "10", 1, 1 << 20, NULL, K_RUN,
     "k of the build-time recall measurement"},
    {"gen.users", K_I64, O(gen.users), 0, "10000", 1, BIG, NULL, K_RUN, "synthetic users"},
    {"gen.items", K_I64, O(gen.items), 0, "2000", 1, BIG, NULL, K_RUN, "synthetic items"},
    {"gen.interactions", K_I64, O(gen.interactions), 0, "200000", 0, BIG, NULL, K_RUN,
     "synthetic interactions (rows)"},
    {"gen.seed", K_U64, O(gen.seed), 0, "7", 0, BIG, NULL, K_RUN, "generator seed"},
    {"gen.dim", K_INT, O(gen.dim), 0, "8", 1, 1024, NULL, K_RUN, "planted latent dimension"},
    {"gen.zipf", K_DBL, O(gen.zipf), 0, "1.0", 0, 10, NULL, K_RUN, "item popularity exponent"},
    {"gen.noise", K_DBL, O(gen.noise), 0, "0.3", 0, 100, NULL, K_RUN, "rating noise stddev"},
    {"gen.text", K_BOOL, O(gen.text), 0, "false", 0, 0, NULL, K_RUN,
     "emit a text column tied to item clusters"},
    {"gen.format", K_ENUM, O(gen.format), 0, "\"csv\"", 0, 0, genfmt_names, K_RUN,
     "csv or jsonl output"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static const Key *find_key(const char *k)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, k) == 0)
            return &keys[i];
    return NULL;
}

/* True when `prefix` is a section (a proper dotted prefix of some key). */
static int is_section(const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].key, prefix, n) == 0 && keys[i].key[n] == '.')
            return 1;
    return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t s = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            size_t x = d[i - 1][j] + 1, y = d[i][j - 1] + 1;
            d[i][j] = s < x ? (s < y ? s : y) : (x < y ? x : y);
        }
    return d[la][lb];
}

static int unknown_key(MrErr *e, const char *source, const char *k)
{
    const char *best = NULL;
    size_t bd = 4;
    for (size_t i = 0; i < NKEYS; i++) {
        size_t dd = edit_distance(k, keys[i].key);
        if (dd < bd) {
            bd = dd;
            best = keys[i].key;
        }
    }
    if (best)
        return mr_err_set(e, MR_ECONFIG, "%s: unknown key '%s' (did you mean '%s'?)", source, k,
                          best);
    return mr_err_set(e, MR_ECONFIG,
                      "%s: unknown key '%s' (run `mpirec config --keys` for the list)", source, k);
}

static const char *type_desc(const Key *k)
{
    switch (k->type) {
    case K_BOOL: return "true or false";
    case K_INT:
    case K_I64:
    case K_U64: return "an integer";
    case K_DBL: return "a number";
    case K_STR: return "a string";
    case K_ENUM: return "one of the names listed";
    case K_LIST: return "a list of integers, e.g. [32, 16]";
    case K_COL: return "a column name (string) or 0-based index (integer)";
    }
    return "?";
}

static int enum_err(MrErr *e, const char *source, const Key *k, const char *got)
{
    char list[256] = "";
    for (int i = 0; k->names[i]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, k->names[i], sizeof list - strlen(list) - 1);
    }
    return mr_err_set(e, MR_ECONFIG, "%s: %s = \"%s\": expected one of %s", source, k->key, got,
                      list);
}

static int range_err(MrErr *e, const char *source, const Key *k, double v)
{
    return mr_err_set(e, MR_ECONFIG, "%s: %s = %.17g is out of range: expected %.15g to %.15g",
                      source, k->key, v, k->min, k->max);
}

static int is_integer(double v) { return isfinite(v) && v == floor(v); }

/* Store one JSON value into the field of key k. */
static int set_value(MrConfig *c, const Key *k, const cJSON *v, const char *source, MrErr *e)
{
    char *field = (char *)c + k->off;
    switch (k->type) {
    case K_BOOL:
        if (!cJSON_IsBool(v))
            break;
        *(int *)field = cJSON_IsTrue(v);
        return MR_OK;
    case K_INT:
    case K_I64:
    case K_U64:
    case K_DBL: {
        if (!cJSON_IsNumber(v))
            break;
        double d = v->valuedouble;
        if (k->type != K_DBL && !is_integer(d))
            return mr_err_set(e, MR_ECONFIG, "%s: %s = %.17g: expected an integer", source,
                              k->key, d);
        if (!isfinite(d) || d < k->min || d > k->max)
            return range_err(e, source, k, d);
        if (k->type == K_INT)
            *(int *)field = (int)d;
        else if (k->type == K_I64)
            *(int64_t *)field = (int64_t)d;
        else if (k->type == K_U64)
            *(uint64_t *)field = (uint64_t)d;
        else
            *(double *)field = d;
        return MR_OK;
    }
    case K_STR: {
        if (!cJSON_IsString(v))
            break;
        size_t n = strlen(v->valuestring);
        if (n >= k->size)
            return mr_err_set(e, MR_ECONFIG, "%s: %s is %zu bytes long: at most %zu allowed",
                              source, k->key, n, k->size - 1);
        memcpy(field, v->valuestring, n + 1);
        return MR_OK;
    }
    case K_ENUM: {
        if (!cJSON_IsString(v))
            break;
        for (int i = 0; k->names[i]; i++)
            if (strcmp(k->names[i], v->valuestring) == 0) {
                *(int *)field = i;
                return MR_OK;
            }
        return enum_err(e, source, k, v->valuestring);
    }
    case K_LIST: {
        if (!cJSON_IsArray(v))
            break;
        MrIntList *l = (MrIntList *)field;
        int n = cJSON_GetArraySize(v);
        int cap = (int)(sizeof l->v / sizeof l->v[0]);
        if (n > cap)
            return mr_err_set(e, MR_ECONFIG, "%s: %s has %d elements: at most %d allowed", source,
                              k->key, n, cap);
        MrIntList tmp = {0};
        const cJSON *x;
        cJSON_ArrayForEach(x, v)
        {
            if (!cJSON_IsNumber(x) || !is_integer(x->valuedouble))
                return mr_err_set(e, MR_ECONFIG, "%s: %s[%d]: expected an integer", source,
                                  k->key, tmp.n);
            if (x->valuedouble < k->min || x->valuedouble > k->max)
                return mr_err_set(e, MR_ECONFIG,
                                  "%s: %s[%d] = %.17g is out of range: expected %.15g to %.15g",
                                  source, k->key, tmp.n, x->valuedouble, k->min, k->max);
            tmp.v[tmp.n++] = (int)x->valuedouble;
        }
        *l = tmp;
        return MR_OK;
    }
    case K_COL: {
        MrColumn *col = (MrColumn *)field;
        if (cJSON_IsString(v)) {
            size_t n = strlen(v->valuestring);
            if (n >= sizeof col->name)
                return mr_err_set(e, MR_ECONFIG, "%s: %s: column name longer than %zu bytes",
                                  source, k->key, sizeof col->name - 1);
            memcpy(col->name, v->valuestring, n + 1);
            col->index = -1;
            return MR_OK;
        }
        if (cJSON_IsNumber(v)) {
            double d = v->valuedouble;
            if (!is_integer(d) || d < 0 || d > 1e6)
                return mr_err_set(e, MR_ECONFIG,
                                  "%s: %s = %.17g: expected a 0-based column index (0..1000000)",
                                  source, k->key, d);
            col->name[0] = '\0';
            col->index = (int)d;
            return MR_OK;
        }
        if (cJSON_IsNull(v)) {
            col->name[0] = '\0';
            col->index = -1;
            return MR_OK;
        }
        break;
    }
    }
    const char *got = cJSON_IsObject(v)   ? "an object"
                      : cJSON_IsArray(v)  ? "a list"
                      : cJSON_IsString(v) ? "a string"
                      : cJSON_IsNumber(v) ? "a number"
                      : cJSON_IsBool(v)   ? "a boolean"
                                          : "null";
    return mr_err_set(e, MR_ECONFIG, "%s: %s: expected %s, got %s", source, k->key, type_desc(k),
                      got);
}

static int apply_object(MrConfig *c, const cJSON *obj, const char *prefix, const char *source,
                        MrErr *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        char path[512];
        if (snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", it->string) >=
            (int)sizeof path)
            return mr_err_set(e, MR_ECONFIG, "%s: key path too long near '%s'", source, prefix);
        /* A repeated name would silently drop one of the two values. */
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (strcmp(prev->string, it->string) == 0)
                return mr_err_set(e, MR_ECONFIG, "%s: key '%s' appears twice (which value is meant?)",
                                  source, path);
        const Key *k = find_key(path);
        if (k) {
            int rc = set_value(c, k, it, source, e);
            if (rc)
                return rc;
        } else if (is_section(path)) {
            if (!cJSON_IsObject(it))
                return mr_err_set(e, MR_ECONFIG, "%s: '%s' is a section: expected an object",
                                  source, path);
            int rc = apply_object(c, it, path, source, e);
            if (rc)
                return rc;
        } else {
            return unknown_key(e, source, path);
        }
    }
    return MR_OK;
}

/* Report a JSON syntax error with line and column, from the parse-end pointer. */
static int syntax_err(MrErr *e, const char *source, const char *text, const char *end)
{
    int line = 1, col = 1;
    for (const char *p = text; p < end && *p; p++) {
        if (*p == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return mr_err_set(e, MR_ECONFIG, "%s:%d:%d: invalid JSON near here", source, line, col);
}

int mr_config_apply_json(MrConfig *c, const char *json, size_t len, const char *source, MrErr *e)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root)
        return syntax_err(e, source, json, end ? end : json);
    /* Anything but whitespace after the document is an error too. */
    for (const char *p = end; p && p < json + len && *p; p++)
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(root);
            return syntax_err(e, source, json, p);
        }
    int rc;
    if (!cJSON_IsObject(root))
        rc = mr_err_set(e, MR_ECONFIG, "%s: the config must be a JSON object of sections", source);
    else
        rc = apply_object(c, root, "", source, e);
    cJSON_Delete(root);
    return rc;
}

void mr_config_defaults(MrConfig *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        cJSON *v = cJSON_Parse(keys[i].def);
        int rc = v ? set_value(c, &keys[i], v, "defaults", NULL) : MR_EINTERNAL;
        cJSON_Delete(v);
        /* A bad default is a bug in the table; the config unit test catches it. */
        (void)rc;
    }
}

int mr_config_set(MrConfig *c, const char *assignment, MrErr *e)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return mr_err_set(e, MR_EUSAGE, "--set %s: expected key.path=value", assignment);
    char key[512];
    size_t kn = (size_t)(eq - assignment);
    if (kn >= sizeof key)
        return mr_err_set(e, MR_ECONFIG, "--set: key too long");
    memcpy(key, assignment, kn);
    key[kn] = '\0';
    const Key *k = find_key(key);
    if (!k)
        return unknown_key(e, "--set", key);
    const char *val = eq + 1;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(val, &end, 1);
    int rc;
    if (v && !(k->type == K_STR && !cJSON_IsString(v))) {
        rc = set_value(c, k, v, "--set", e);
    } else {
        cJSON *s = cJSON_CreateString(val);
        rc = s ? set_value(c, k, s, "--set", e) : mr_err_set(e, MR_ENOMEM, "out of memory");
        cJSON_Delete(s);
    }
    cJSON_Delete(v);
    return rc;
}

static int col_set(const MrColumn *col) { return col->name[0] != '\0' || col->index >= 0; }

int mr_config_validate(const MrConfig *c, MrErr *e)
{
    if (!col_set(&c->data.columns.user))
        return mr_err_set(e, MR_ECONFIG, "data.columns.user must name a column");
    if (!col_set(&c->data.columns.item))
        return mr_err_set(e, MR_ECONFIG, "data.columns.item must name a column");
    if (c->data.format != MR_FMT_JSONL) {
        if (c->data.separator[0] == '\0')
            return mr_err_set(e, MR_ECONFIG, "data.separator must not be empty");
        if (strlen(c->data.quote) > 1)
            return mr_err_set(e, MR_ECONFIG, "data.quote must be one character or \"\"");
        if (c->data.quote[0] && strchr(c->data.separator, c->data.quote[0]))
            return mr_err_set(e, MR_ECONFIG, "data.separator must not contain the quote character");
        if (strchr(c->data.separator, '\n') || strchr(c->data.separator, '\r'))
            return mr_err_set(e, MR_ECONFIG, "data.separator must not contain a line break");
        const MrColumn *cols[] = {&c->data.columns.user, &c->data.columns.item,
                                  &c->data.columns.rating, &c->data.columns.text,
                                  &c->data.columns.timestamp};
        const char *names[] = {"user", "item", "rating", "text", "timestamp"};
        for (int i = 0; i < 5; i++)
            if (!c->data.header && cols[i]->name[0])
                return mr_err_set(e, MR_ECONFIG,
                                  "data.columns.%s = \"%s\": data.header is false, so columns "
                                  "must be given by 0-based index",
                                  names[i], cols[i]->name);
    } else {
        const MrColumn *cols[] = {&c->data.columns.user, &c->data.columns.item,
                                  &c->data.columns.rating, &c->data.columns.text,
                                  &c->data.columns.timestamp};
        const char *names[] = {"user", "item", "rating", "text", "timestamp"};
        for (int i = 0; i < 5; i++)
            if (cols[i]->index >= 0)
                return mr_err_set(e, MR_ECONFIG,
                                  "data.columns.%s: JSON Lines fields are named, not indexed",
                                  names[i]);
    }
    if (c->split.kind == MR_SPLIT_TEMPORAL && !col_set(&c->data.columns.timestamp))
        return mr_err_set(e, MR_ECONFIG, "split.kind = temporal needs data.columns.timestamp");
    if (c->model.text.enabled && !col_set(&c->data.columns.text))
        return mr_err_set(e, MR_ECONFIG, "model.text.enabled needs data.columns.text");
    if (c->model.task != MR_TASK_RANKING) {
        int qd = c->model.query_layers.n ? c->model.query_layers.v[c->model.query_layers.n - 1]
                                         : c->model.embedding_dim +
                                               (c->model.text.enabled ? c->model.text.dim : 0);
        int cd = c->model.candidate_layers.n
                     ? c->model.candidate_layers.v[c->model.candidate_layers.n - 1]
                     : c->model.embedding_dim;
        if (qd != cd)
            return mr_err_set(e, MR_ECONFIG,
                              "the query tower outputs %d values and the candidate tower %d: "
                              "retrieval needs equal sizes (set model.query_layers or "
                              "model.candidate_layers so that their last sizes match)",
                              qd, cd);
    }
    if (c->eval.ks.n == 0)
        return mr_err_set(e, MR_ECONFIG, "eval.ks must list at least one k");
    if (c->gen.format == MR_FMT_DELIMITED)
        return mr_err_set(e, MR_ECONFIG, "gen.format must be csv or jsonl");
    if (c->loss.remove_accidental_hits && c->model.task == MR_TASK_RANKING)
        return mr_err_set(e, MR_ECONFIG, "loss.remove_accidental_hits applies to retrieval only");
    return MR_OK;
}

int mr_config_read_file(const char *path, char **text, size_t *len, MrErr *e)
{
    *text = NULL;
    *len = 0;
    struct stat st;
    if (stat(path, &st) != 0)
        return mr_err_set(e, MR_ECONFIG, "config file %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return mr_err_set(e, MR_ECONFIG, "config file %s: is a directory, expected a JSON file",
                          path);
    if (st.st_size > (1 << 24))
        return mr_err_set(e, MR_ECONFIG, "config file %s: %lld bytes, expected a small JSON file",
                          path, (long long)st.st_size);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mr_err_set(e, MR_ECONFIG, "config file %s: %s", path, strerror(errno));
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return mr_err_set(e, MR_ENOMEM, "out of memory reading %s", path);
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mr_err_set(e, MR_EIO, "config file %s: read error", path);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return MR_OK;
}

/* ---- output ---------------------------------------------------------------- */

static cJSON *value_json(const MrConfig *c, const Key *k)
{
    const char *field = (const char *)c + k->off;
    switch (k->type) {
    case K_BOOL: return cJSON_CreateBool(*(const int *)field);
    case K_INT: return cJSON_CreateNumber(*(const int *)field);
    case K_I64: return cJSON_CreateNumber((double)*(const int64_t *)field);
    case K_U64: return cJSON_CreateNumber((double)*(const uint64_t *)field);
    case K_DBL: return cJSON_CreateNumber(*(const double *)field);
    case K_STR: return cJSON_CreateString(field);
    case K_ENUM: return cJSON_CreateString(k->names[*(const int *)field]);
    case K_LIST: {
        const MrIntList *l = (const MrIntList *)field;
        return cJSON_CreateIntArray(l->v, l->n);
    }
    case K_COL: {
        const MrColumn *col = (const MrColumn *)field;
        if (col->index >= 0)
            return cJSON_CreateNumber(col->index);
        return cJSON_CreateString(col->name);
    }
    }
    return cJSON_CreateNull();
}

/* Attach v at dotted path `key` under root, creating sections as needed. */
static void put_path(cJSON *root, const char *key, cJSON *v)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", key);
    cJSON *node = root;
    char *save = NULL;
    char *tok = strtok_r(buf, ".", &save);
    while (tok) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            cJSON_AddItemToObject(node, tok, v);
            return;
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(node, tok);
        if (!child)
            child = cJSON_AddObjectToObject(node, tok);
        node = child;
        tok = next;
    }
}

static cJSON *to_tree(const MrConfig *c, int only_model)
{
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; root && i < NKEYS; i++)
        if (!only_model || keys[i].cls == K_MODEL)
            put_path(root, keys[i].key, value_json(c, &keys[i]));
    return root;
}

char *mr_config_to_json(const MrConfig *c)
{
    cJSON *root = to_tree(c, 0);
    char *s = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return s;
}

char *mr_config_help(void)
{
    size_t cap = 64 * 1024, n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        char line[512];
        int w = snprintf(line, sizeof line, "  %-30s %-10s %s\n", keys[i].key, keys[i].def,
                         keys[i].help);
        if (w > 0 && n + (size_t)w + 1 < cap) {
            memcpy(out + n, line, (size_t)w + 1);
            n += (size_t)w;
        }
    }
    return out;
}

int mr_config_resume_compatible(const MrConfig *saved, const MrConfig *now, char *key, size_t n)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].cls != K_MODEL)
            continue;
        cJSON *a = value_json(saved, &keys[i]), *b = value_json(now, &keys[i]);
        int same = cJSON_Compare(a, b, 1);
        cJSON_Delete(a);
        cJSON_Delete(b);
        if (!same) {
            snprintf(key, n, "%s", keys[i].key);
            return 0;
        }
    }
    return 1;
}

uint64_t mr_config_model_hash(const MrConfig *c)
{
    cJSON *root = to_tree(c, 1);
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    uint64_t h = 0x6d70697265630001ULL;
    for (const char *p = s; p && *p; p++)
        h = mr_mix(h, (unsigned char)*p);
    free(s);
    return h;
}

const char *mr_task_name(MrTask t) { return task_names[t]; }
const char *mr_format_name(MrFormat f) { return fmt_names[f]; }
