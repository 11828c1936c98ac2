/* fuzz_reader_csv — libFuzzer target for the CSV / delimited reader.
 *
 * Input: 4 control bytes, then the file. ctl[3] picks the dialect (csv or
 * delimited; separator , ; \t | :: or "ab"; quote " or ' or none; header or not;
 * columns by name or by index, with or without text and timestamp columns); ctl[0..3)
 * pick the rank count (2 or 3), the cut points and the first window size of the
 * sharded parse that must equal the serial one (fuzz_reader_common.h).
 */
#include "fuzz_reader_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static const char *const seps[] = {",", ";", "\t", "|", "::", "ab"};
    const uint8_t *ctl = data;
    uint8_t d = ctl[3];
    MrReaderSpec s;
    memset(&s, 0, sizeof s);
    s.format = (d & 1) ? MR_FMT_DELIMITED : MR_FMT_CSV;
    const char *sep = seps[(d >> 1 & 7) % 6];
    snprintf(s.sep, sizeof s.sep, "%s", sep);
    s.sep_len = strlen(s.sep);
    int q = d >> 4 & 3;
    s.quote = q == 1 ? 0 : q == 2 ? '\'' : '"';
    s.header = d >> 6 & 1;
    int full = d >> 7 & 1;
    for (int c = 0; c < MR_NCOLS; c++)
        s.cols[c].index = -1;
    if (s.header && !full) {
        fz_col_name(&s, MR_COL_USER, "user");
        fz_col_name(&s, MR_COL_ITEM, "item");
        fz_col_name(&s, MR_COL_RATING, "rating");
        fz_col_name(&s, MR_COL_TEXT, "text");
        fz_col_name(&s, MR_COL_TIME, "ts");
    } else {
        s.cols[MR_COL_USER].index = 0;
        s.cols[MR_COL_ITEM].index = 1;
        s.cols[MR_COL_RATING].index = 2;
        if (full) {
            s.cols[MR_COL_TIME].index = 3;
            s.cols[MR_COL_TEXT].index = 4;
        }
    }
    /* An exact-size copy, so that ASan catches any read past the end. */
    size_t len = size - 4;
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, data + 4, len);
    fz_check(&s, ctl, buf, len);
    free(buf);
    return 0;
}
