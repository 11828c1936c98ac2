/* fuzz_config — libFuzzer target for the configuration parser (cli/config.c).
 *
 * Input: a JSON config file, or, when it starts with "SET\n", --set assignments
 * one per line. Oracle beyond "no crash": whatever was accepted, the effective
 * config written as JSON (what config.json and every checkpoint store) must load
 * back into an identical config, with the same model hash; a rejected input must
 * come with a message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const MrConfig *c)
{
    char *j = mr_config_to_json(c);
    if (!j)
        abort();
    MrConfig c2;
    MrErr e;
    mr_config_defaults(&c2);
    if (mr_config_apply_json(&c2, j, strlen(j), "effective", &e) != MR_OK) {
        fprintf(stderr, "the effective config does not load back: %s\n%s\n", e.msg, j);
        abort();
    }
    char *j2 = mr_config_to_json(&c2);
    if (!j2 || strcmp(j, j2) != 0) {
        fprintf(stderr, "the effective config changes when loaded back:\n%s\n---\n%s\n", j,
                j2 ? j2 : "(null)");
        abort();
    }
    char key[128];
    if (mr_config_model_hash(c) != mr_config_model_hash(&c2) ||
        !mr_config_resume_compatible(c, &c2, key, sizeof key)) {
        fprintf(stderr, "loaded back, the config gives another model (%s)\n", key);
        abort();
    }
    free(j);
    free(j2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MrConfig c;
    MrErr e;
    mr_err_clear(&e);
    mr_config_defaults(&c);
    int rc = MR_OK;
    if (size >= 4 && memcmp(data, "SET\n", 4) == 0) {
        char *text = malloc(size - 3);
        if (!text)
            return 0;
        memcpy(text, data + 4, size - 4);
        text[size - 4] = '\0';
        char *save = NULL;
        for (char *a = strtok_r(text, "\n", &save); a && rc == MR_OK;
             a = strtok_r(NULL, "\n", &save))
            rc = mr_config_set(&c, a, &e);
        free(text);
    } else {
        /* exact-size copy without a terminating NUL: the parser must respect len */
        char *json = malloc(size ? size : 1);
        if (!json)
            return 0;
        memcpy(json, data, size);
        rc = mr_config_apply_json(&c, json, size, "fuzz.json", &e);
        free(json);
    }
    if (rc != MR_OK) {
        if (!e.msg[0] || (rc != MR_ECONFIG && rc != MR_EUSAGE))
            abort();
        return 0;
    }
    mr_err_clear(&e);
    rc = mr_config_validate(&c, &e);
    if (rc != MR_OK && !e.msg[0])
        abort();
    roundtrip(&c);
    return 0;
}
