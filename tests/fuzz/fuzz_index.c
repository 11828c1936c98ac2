/* fuzz_index — libFuzzer target for the index loader (src/index/ix_file.c).
 *
 * The input is written to a temporary file and loaded with mr_index_load, as
 * `mpirec recommend` does. Whatever loads must be usable: an exact and an
 * approximate search and an id lookup run on it. A failure must be MR_EFORMAT,
 * MR_EIO or MR_ENOMEM with a message. Seeds: real exact, IVF and quantized
 * indexes (tests/fuzz/corpus/fuzz_index).
 */
#include "fuzz_common.h"
#include "mpirec/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write("index.h5", data, size);
    MrIndex ix;
    MrErr e;
    mr_err_clear(&e);
    memset(&ix, 0, sizeof ix);
    int rc = mr_index_load(&ix, path, &e);
    if (rc != MR_OK) {
        if ((rc != MR_EFORMAT && rc != MR_EIO && rc != MR_ENOMEM) || !e.msg[0]) {
            fprintf(stderr, "mr_index_load returned %d: '%s'\n", rc, e.msg);
            abort();
        }
        fz_no_open_ids("mr_index_load (failed)");
        return 0;
    }
    fz_no_open_ids("mr_index_load");
    if (ix.n > 0 && ix.d > 0 && ix.d <= 4096) {
        int k = ix.n < 10 ? (int)ix.n : 10;
        float *q = malloc(sizeof(float) * 2 * (size_t)ix.d);
        int64_t items[20];
        float scores[20];
        if (q) {
            for (int i = 0; i < 2 * ix.d; i++)
                q[i] = (float)((i * 37 % 11) - 5) / 5.0f;
            mr_err_clear(&e);
            if (mr_index_search(&ix, q, 2, k, 0, NULL, items, scores, &e) == MR_OK)
                for (int i = 0; i < 2 * k; i++)
                    if (items[i] < -1 || items[i] >= ix.n)
                        abort();
            mr_err_clear(&e);
            if (mr_index_search_exact(&ix, q, 2, k, NULL, items, scores, &e) == MR_OK)
                for (int i = 0; i < 2 * k; i++)
                    if (items[i] < -1 || items[i] >= ix.n)
                        abort();
            free(q);
        }
        if (ix.ids && ix.ids_off) {
            size_t len = (size_t)(ix.ids_off[1] - ix.ids_off[0]);
            int64_t at = mr_index_find_item(&ix, ix.ids + ix.ids_off[0], len);
            if (at < -1 || at >= ix.n)
                abort();
        }
    }
    mr_index_free(&ix);
    return 0;
}
