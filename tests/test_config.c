/* test_config.c — the config table: defaults, JSON, --set, and the error texts. */
#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/config.h"

static int apply(MrConfig *c, const char *json, MrErr *e)
{
    return mr_config_apply_json(c, json, strlen(json), "test.json", e);
}

/* Every default in the table parses (a bad default would leave zeros) and the
 * documented defaults hold. */
static void test_defaults(void)
{
    MrConfig c;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(c.model.embedding_dim, 32);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.initial_accumulator, 0.1, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.optimizer.epsilon, 1e-7, 0);
    CU_ASSERT_EQUAL(c.eval.ks.n, 5);
    CU_ASSERT_EQUAL(c.eval.ks.v[4], 100);
    CU_ASSERT_EQUAL(c.model.ranking_layers.n, 2);
    CU_ASSERT_STRING_EQUAL(c.data.separator, ",");
    CU_ASSERT_STRING_EQUAL(c.data.quote, "\"");
    CU_ASSERT_EQUAL(c.data.columns.rating.index, -1);
    CU_ASSERT_EQUAL(c.split.seed, 42);
    CU_ASSERT_DOUBLE_EQUAL(c.split.test_fraction, 0.2, 0);
}

/* Nested sections map to dotted keys; columns take names or indices. */
static void test_json_values(void)
{
    MrConfig c;
    MrErr e;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(apply(&c,
                          "{\"data\": {\"format\": \"delimited\", \"separator\": \"\\t\","
                          " \"header\": false, \"columns\": {\"user\": 0, \"item\": 1}},"
                          " \"model\": {\"query_layers\": [64, 32], \"text\": {\"dim\": 8}}}",
                          &e),
                    MR_OK);
    CU_ASSERT_EQUAL(c.data.format, MR_FMT_DELIMITED);
    CU_ASSERT_STRING_EQUAL(c.data.separator, "\t");
    CU_ASSERT_EQUAL(c.data.header, 0);
    CU_ASSERT_EQUAL(c.data.columns.user.index, 0);
    CU_ASSERT_EQUAL(c.data.columns.item.index, 1);
    CU_ASSERT_EQUAL(c.model.query_layers.n, 2);
    CU_ASSERT_EQUAL(c.model.query_layers.v[1], 32);
    CU_ASSERT_EQUAL(c.model.text.dim, 8);
}

/* Unknown keys are named, with a suggestion. */
static void test_unknown_key(void)
{
    MrConfig c;
    MrErr e;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(apply(&c, "{\"model\": {\"embeding_dim\": 8}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "unknown key 'model.embeding_dim'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "model.embedding_dim"));
    CU_ASSERT_EQUAL(apply(&c, "{\"zzz\": 1}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'zzz'"));
}

/* Wrong types and out-of-range values name the key and the expectation. */
static void test_type_and_range(void)
{
    MrConfig c;
    MrErr e;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(apply(&c, "{\"train\": {\"batch_size\": \"big\"}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "train.batch_size: expected an integer, got a string"));
    CU_ASSERT_EQUAL(apply(&c, "{\"train\": {\"batch_size\": 0}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "train.batch_size = 0 is out of range"));
    CU_ASSERT_EQUAL(apply(&c, "{\"train\": {\"batch_size\": 3.5}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "expected an integer"));
    CU_ASSERT_EQUAL(apply(&c, "{\"model\": {\"task\": \"ranker\"}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "expected one of retrieval, ranking, multitask"));
    CU_ASSERT_EQUAL(apply(&c, "{\"model\": 3}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'model' is a section"));
    CU_ASSERT_EQUAL(apply(&c, "{\"model\": {\"task\": \"ranking\",}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "test.json:1:"));
    CU_ASSERT_EQUAL(apply(&c, "[1, 2]", &e), MR_ECONFIG);
    CU_ASSERT_EQUAL(apply(&c, "{\"eval\": {\"ks\": [1, \"x\"]}}", &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "eval.ks[1]"));
}

/* --set reads JSON when it parses, else a string. */
static void test_set(void)
{
    MrConfig c;
    MrErr e;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(mr_config_set(&c, "model.query_layers=[32,16]", &e), MR_OK);
    CU_ASSERT_EQUAL(c.model.query_layers.n, 2);
    CU_ASSERT_EQUAL(mr_config_set(&c, "data.path=/tmp/x y.csv", &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(c.data.path, "/tmp/x y.csv");
    CU_ASSERT_EQUAL(mr_config_set(&c, "data.separator=::", &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(c.data.separator, "::");
    CU_ASSERT_EQUAL(mr_config_set(&c, "data.separator=1", &e), MR_OK);
    CU_ASSERT_STRING_EQUAL(c.data.separator, "1");
    CU_ASSERT_EQUAL(mr_config_set(&c, "loss.logq=true", &e), MR_OK);
    CU_ASSERT_EQUAL(c.loss.logq, 1);
    CU_ASSERT_EQUAL(mr_config_set(&c, "data.columns.user=3", &e), MR_OK);
    CU_ASSERT_EQUAL(c.data.columns.user.index, 3);
    CU_ASSERT_EQUAL(mr_config_set(&c, "nokey", &e), MR_EUSAGE);
    CU_ASSERT_EQUAL(mr_config_set(&c, "train.epochs=-1", &e), MR_ECONFIG);
}

/* The printed config parses back to the same struct. */
static void test_roundtrip(void)
{
    MrConfig a, b;
    MrErr e;
    mr_config_defaults(&a);
    mr_config_set(&a, "optimizer.lr=0.123456789012345678", &e);
    mr_config_set(&a, "data.separator=\t", &e);
    mr_config_set(&a, "model.task=multitask", &e);
    char *s = mr_config_to_json(&a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    mr_config_defaults(&b);
    CU_ASSERT_EQUAL(apply(&b, s, &e), MR_OK);
    CU_ASSERT_EQUAL(memcmp(&a, &b, sizeof a), 0);
    free(s);
    char key[128];
    CU_ASSERT_EQUAL(mr_config_resume_compatible(&a, &b, key, sizeof key), 1);
    b.model.embedding_dim = 8;
    CU_ASSERT_EQUAL(mr_config_resume_compatible(&a, &b, key, sizeof key), 0);
    CU_ASSERT_STRING_EQUAL(key, "model.embedding_dim");
    b = a;
    b.train.epochs = 9;
    CU_ASSERT_EQUAL(mr_config_resume_compatible(&a, &b, key, sizeof key), 1);
    CU_ASSERT_EQUAL(mr_config_model_hash(&a), mr_config_model_hash(&b));
}

/* Cross-field validation. */
static void test_validate(void)
{
    MrConfig c;
    MrErr e;
    mr_config_defaults(&c);
    CU_ASSERT_EQUAL(mr_config_validate(&c, &e), MR_OK);
    c.model.text.enabled = 1;
    CU_ASSERT_EQUAL(mr_config_validate(&c, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "data.columns.text"));
    mr_config_defaults(&c);
    mr_config_set(&c, "model.query_layers=[8]", &e);
    CU_ASSERT_EQUAL(mr_config_validate(&c, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "query tower outputs 8"));
    mr_config_defaults(&c);
    c.data.header = 0;
    CU_ASSERT_EQUAL(mr_config_validate(&c, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "0-based index"));
}

/* Reading a missing file or a directory names the path. */
static void test_read_file(void)
{
    char *t;
    size_t n;
    MrErr e;
    CU_ASSERT_EQUAL(mr_config_read_file("/nonexistent/c.json", &t, &n, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "/nonexistent/c.json"));
    CU_ASSERT_EQUAL(mr_config_read_file("/tmp", &t, &n, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "is a directory"));
}

int add_suite_config(void)
{
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "defaults", test_defaults);
    CU_add_test(s, "json_values", test_json_values);
    CU_add_test(s, "unknown_key", test_unknown_key);
    CU_add_test(s, "type_and_range", test_type_and_range);
    CU_add_test(s, "set", test_set);
    CU_add_test(s, "roundtrip", test_roundtrip);
    CU_add_test(s, "validate", test_validate);
    CU_add_test(s, "read_file", test_read_file);
    return 0;
}
