/* fuzz_reader_jsonl — libFuzzer target for the JSON Lines reader.
 *
 * Input: 4 control bytes, then the file. ctl[3] bit 0 adds the text and timestamp
 * fields to the configured ones (user "u", item "i", rating "r", text "t", timestamp
 * "ts"); ctl[0..3) drive the sharded parse that must equal the serial one
 * (fuzz_reader_common.h).
 */
#include "fuzz_reader_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    MrReaderSpec s;
    memset(&s, 0, sizeof s);
    s.format = MR_FMT_JSONL;
    for (int c = 0; c < MR_NCOLS; c++)
        s.cols[c].index = -1;
    fz_col_name(&s, MR_COL_USER, "u");
    fz_col_name(&s, MR_COL_ITEM, "i");
    fz_col_name(&s, MR_COL_RATING, "r");
    if (data[3] & 1) {
        fz_col_name(&s, MR_COL_TEXT, "t");
        fz_col_name(&s, MR_COL_TIME, "ts");
    }
    size_t len = size - 4;
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 4, len);
    fz_check(&s, data, buf, len);
    free(buf);
    return 0;
}
