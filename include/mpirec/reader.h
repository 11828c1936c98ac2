/* reader.h — record parsing of interaction files (CSV, delimited, JSON Lines) and
 * the byte-range sharding rules. Pure functions over byte buffers: no MPI, no
 * file I/O. data/ingest.c drives them with pread() and the collectives.
 *
 * Record boundaries (identical for every rank count, by construction):
 *  - csv/delimited with a quote character: a '\n' ends a record iff the number of
 *    quote characters before it in the file is even. Doubled quotes "" inside a
 *    quoted field count twice, so they keep the parity. This is what lets rank r
 *    learn whether its first byte is inside quotes from an exclusive scan of the
 *    quote counts of ranks < r, without a serial pass.
 *  - without quoting, and for JSON Lines (JSON strings cannot hold a raw newline):
 *    every '\n' ends a record.
 *  - a "\r\n" ending is accepted (the '\r' is not part of the last field); a file
 *    may lack its final newline; lines that are empty (or only "\r") are skipped
 *    and are not records (as Python's csv.DictReader does).
 *  - a UTF-8 byte-order mark at offset 0 is skipped.
 *  - Record numbers count data records only (not the header, not empty lines).
 *
 * Sharding: rank r of P takes bytes [r*S/P, (r+1)*S/P) of a file of S bytes and
 * parses exactly the records whose first byte lies in that range (it may read past
 * the end of its range to finish its last record). The header (if any) is parsed
 * by every rank from offset 0, and is never a data record.
 * The driver's recipe for rank r with range [lo, hi) (tests/test_reader.c runs it):
 *   mr_shard_count(file[lo..hi)) -> exclusive scans Q (quotes) and N (newlines);
 *   start = lo <= data_start ? data_start
 *         : lo + mr_shard_first_record(file[lo..], quote, Q odd, file[lo-1] == '\n')
 *           (-1: read further; none at all: the rank has no records);
 *   line  = 1 + N + newlines in file[lo..start);
 *   then mr_reader_parse from start with stop_offset = hi, growing the window
 *   (doubling) whenever it consumes nothing.
 *
 * Fields are passed through as bytes (Latin-1, invalid UTF-8: all fine). Quoted
 * fields are unescaped ("" -> "); JSON strings are unescaped (\n, \", \uXXXX ->
 * UTF-8, surrogate pairs combined).
 */
#ifndef MPIREC_READER_H
#define MPIREC_READER_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/config.h"
#include "mpirec/err.h"

enum { MR_COL_USER = 0, MR_COL_ITEM, MR_COL_RATING, MR_COL_TEXT, MR_COL_TIME, MR_NCOLS };

/* Kind of a parsed field value. */
typedef enum MrValKind {
    MR_VAL_ABSENT = 0, /* column not configured, or JSON field missing */
    MR_VAL_TEXT,       /* csv/delimited field text, or a JSON string */
    MR_VAL_NUMBER,     /* a JSON number (its text) */
    MR_VAL_NULL,       /* JSON null */
    MR_VAL_BOOL,       /* JSON true/false (text "true"/"false") */
    MR_VAL_OTHER       /* JSON array or object where a scalar was expected */
} MrValKind;

typedef struct MrField {
    const char *p;   /* bytes (not NUL-terminated); valid during the callback only */
    size_t len;
    MrValKind kind;
} MrField;

/* One record, valid only during the callback. */
typedef struct MrRecord {
    int64_t offset;            /* byte offset of the record's first byte in the file */
    int64_t line;              /* 1-based physical line number of that byte */
    MrField f[MR_NCOLS];       /* the configured columns, MR_COL_* order */
    /* For bad records (structural problems found by the parser): the fields hold
     * what could be read (possibly ABSENT) and must not be used as data. */
    const char *bad_reason;    /* NULL for a good record; else e.g. "quote never closed" */
    int bad_col;               /* MR_COL_* the problem is in, or -1 for the whole record */
} MrRecord;

/* Called for every record in order. Return 0 to continue, non-zero to stop
 * parsing (the value is returned by mr_reader_parse). */
typedef int (*MrRecordFn)(const MrRecord *rec, void *userdata);

/* Resolved reading rules (from MrConfig.data). */
typedef struct MrReaderSpec {
    MrFormat format;
    char sep[16];          /* separator string (csv/delimited) */
    size_t sep_len;
    char quote;            /* 0 = no quoting; always 0 for jsonl (create refuses others) */
    int header;            /* csv/delimited: first record names the columns */
    MrColumn cols[MR_NCOLS];
} MrReaderSpec;

typedef struct MrReader MrReader;

/* Lifecycle */
void mr_reader_spec_from_config(MrReaderSpec *s, const MrConfig *c);
int mr_reader_create(MrReader **r, const MrReaderSpec *spec, MrErr *e);
void mr_reader_destroy(MrReader **r);

/* Operations */
/* Parse the header from the start of the file (buf = the first bytes of the file,
 * at_eof when buf holds the whole file). Resolves column names to indices, or for
 * headerless files checks nothing. Sets *data_start to the offset of the first
 * byte after the header (and after a BOM). Returns MR_EDATA with a message listing
 * the columns that do exist when a configured column is missing; "empty file" when
 * there is nothing at all (or only a BOM and blank lines); MR_EAGAIN-like need for
 * more bytes is reported by *need_more = 1 (call again with a longer prefix).
 * `path` is for messages. The line number of data_start is 1 + the newlines before
 * it (mr_shard_count). Must succeed before mr_reader_parse on a header file. */
int mr_reader_header(MrReader *r, const char *path, const char *buf, size_t len, int at_eof,
                     int64_t *data_start, int *need_more, MrErr *e);

/* Parse records from buf, which holds file bytes starting at file offset
 * `buf_offset`, whose first byte is a record start (or an empty line) and lies on
 * physical line `line`. Records are parsed while their first byte is < stop_offset.
 * A record that continues past the end of buf is left unparsed unless at_eof
 * (buf ends at the end of the file: the record is then complete, or truncated —
 * e.g. an unclosed quote — and reported as bad). *consumed = bytes of complete
 * records (and skipped empty lines) parsed; *next_line = line number after them.
 * *done = 1 when a record start >= stop_offset (or the end of file) was reached.
 * Returns 0, or the callback's non-zero value (consumed then includes the record
 * just delivered), or MR_ENOMEM when an unescape buffer cannot grow (that record is
 * not consumed), or MR_EINTERNAL on a header file before mr_reader_header. An
 * incomplete record costs a scan of the bytes given: grow the window geometrically. */
int mr_reader_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset, int64_t line,
                    int64_t stop_offset, int at_eof, MrRecordFn fn, void *userdata,
                    size_t *consumed, int64_t *next_line, int *done);

/* Queries: sharding helpers (pure). */
/* Byte range [*lo, *hi) of rank r of P for a file of `size` bytes. */
void mr_shard_range(int64_t size, int r, int P, int64_t *lo, int64_t *hi);
/* Count quote characters and '\n' in buf (quote 0 = count newlines only). */
void mr_shard_count(const char *buf, size_t len, char quote, int64_t *quotes, int64_t *newlines);
/* Given the bytes starting at this rank's range start `lo` (buf = file[lo..]),
 * whether lo is inside quotes (odd quote count before it), and whether the byte
 * before lo is a record-ending newline (prev_is_newline: pass file[lo-1] == '\n';
 * it is ignored when in_quotes), find the offset (relative to buf) of the first
 * record start at or after lo. Returns -1 if none within len (the caller reads
 * further). When lo <= data_start the caller uses the header's data_start. */
int64_t mr_shard_first_record(const char *buf, size_t len, char quote, int in_quotes,
                              int prev_is_newline);

/* Strict numeric conversions used for ratings and timestamps: the whole field must
 * be a finite decimal number (leading/trailing spaces and tabs allowed; no hex, inf,
 * nan). Return 0 on success (*out set), else MR_EDATA (or MR_ENOMEM when a number
 * of 128+ characters cannot be copied); *out is untouched on failure. */
int mr_parse_double(const char *p, size_t len, double *out);

#endif
