/* cmd_inspect.c — `mpirec inspect FILE.h5 [--json]`: what a checkpoint or index
 * file holds, and whether it is intact.
 *
 * The library (mr_ckpt_inspect) reads and verifies; this file only formats: a
 * human-readable listing, or one JSON object written by hand (strings escaped
 * per RFC 8259, invalid UTF-8 replaced by U+FFFD, 64-bit checksums as hex
 * strings because JSON numbers lose bits above 2^53). It runs without MPI, so it
 * works on a login node. Exit codes: 0 intact, 9 damaged / checksum failure /
 * not an mpirec file, 5 cannot read the file, 2 usage.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mpirec/ckpt.h"

static const char *help =
    "Usage: mpirec inspect FILE.h5 [--json] [--no-verify] [--full]\n\n"
    "Print what a checkpoint (or an index file) holds: kind and format version, the\n"
    "header and its digest, every root and /meta attribute, and every dataset with\n"
    "its type, shape, storage layout and checksum. Every checksum is recomputed\n"
    "(the whole file is read) unless --no-verify.\n\n"
    "  --json       print one JSON object instead (checksums as \"0x...\" strings)\n"
    "  --no-verify  list only; do not read the data\n"
    "  --full       print long string attributes (the config) in full\n\n"
    "Exit code 0 when the file is intact, 9 when a checksum or the digest fails, the\n"
    "file is truncated or damaged, or it is not an mpirec file; 5 when it cannot be\n"
    "read at all; 2 on a usage error.\n";

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    int n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        min = 0x80;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        min = 0x800;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return n;
}

static void json_str(FILE *f, const char *str)
{
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    fputc('"', f);
    while (*s) {
        unsigned c = *s;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc((int)c, f);
            s++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n':
                fputs("\\n", f);
                break;
            case '\r':
                fputs("\\r", f);
                break;
            case '\t':
                fputs("\\t", f);
                break;
            case '\b':
                fputs("\\b", f);
                break;
            case '\f':
                fputs("\\f", f);
                break;
            default:
                fprintf(f, "\\u%04x", c);
                break;
            }
            s++;
        } else if (c < 0x80) {
            fputc((int)c, f);
            s++;
        } else {
            int n = utf8_len(s);
            if (n == 0) {
                fputs("\\ufffd", f);
                s++;
            } else {
                fwrite(s, 1, (size_t)n, f);
                s += n;
            }
        }
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else
        fputs("null", f);
}

static void json_attr_value(FILE *f, const MrCkptAttrInfo *a)
{
    switch (a->kind) {
    case MR_CKPT_VAL_INT:
        fprintf(f, "%" PRId64, a->i);
        break;
    case MR_CKPT_VAL_UINT:
        fprintf(f, "%" PRIu64, a->u);
        break;
    case MR_CKPT_VAL_FLOAT:
        json_num(f, a->f);
        break;
    default:
        json_str(f, a->s);
        break;
    }
}

static const char *status_word(int st, const char *err)
{
    return err ? "error" : st == 1 ? "ok" : st == 0 ? "mismatch" : "unchecked";
}

static void print_json(FILE *f, const MrCkptReport *r, int rc, const MrErr *e, int verify)
{
    fputs("{\"file\": ", f);
    json_str(f, r->path);
    fprintf(f,
            ", \"bytes\": %" PRId64 ", \"ok\": %s, \"exit_code\": %d, \"error\": ", r->file_bytes,
            rc == 0 ? "true" : "false", rc);
    if (rc)
        json_str(f, e->msg);
    else
        fputs("null", f);
    fputs(", \"verified\": ", f);
    fputs(verify ? "true" : "false", f);
    fputs(", \"magic\": ", f);
    if (r->magic[0])
        json_str(f, r->magic);
    else
        fputs("null", f);
    fputs(", \"format_version\": ", f);
    if (r->version >= 0)
        fprintf(f, "%" PRId64, r->version);
    else
        fputs("null", f);
    fputs(", \"header\": ", f);
    if (r->header == 1)
        fprintf(f,
                "{\"present\": true, \"bytes\": %" PRId64 ", \"digest\": \"0x%016" PRIx64
                "\", \"digest_status\": \"%s\"}",
                r->header_bytes, r->digest_stored, status_word(r->digest_status, NULL));
    else if (r->header == 0)
        fputs("{\"present\": false}", f);
    else
        fputs("{\"present\": true, \"damaged\": true}", f);
    /* Attributes: root ones in "root", /meta ones in "meta", keyed by name. */
    const char *groups[2] = {"root", "meta"};
    for (int g = 0; g < 2; g++) {
        fprintf(f, ", \"%s\": {", groups[g]);
        int first = 1;
        for (int64_t i = 0; i < r->nattrs; i++) {
            const char *n = r->attrs[i].name;
            const char *name = NULL;
            if (g == 0 && n[0] == '/' && !strchr(n + 1, '/'))
                name = n + 1;
            else if (g == 1 && strncmp(n, "/meta/", 6) == 0)
                name = n + 6;
            if (!name)
                continue;
            fputs(first ? "" : ", ", f);
            first = 0;
            json_str(f, name);
            fputs(": ", f);
            json_attr_value(f, &r->attrs[i]);
        }
        fputc('}', f);
    }
    fputs(", \"datasets\": [", f);
    for (int64_t i = 0; i < r->ndatasets; i++) {
        const MrCkptDatasetInfo *d = &r->datasets[i];
        fputs(i ? ", {\"path\": " : "{\"path\": ", f);
        json_str(f, d->path);
        fputs(", \"dtype\": ", f);
        json_str(f, d->dtype);
        fputs(", \"shape\": [", f);
        for (int k = 0; k < d->ndims && k < 8; k++)
            fprintf(f, "%s%" PRId64, k ? ", " : "", d->dims[k]);
        fputs("], \"layout\": ", f);
        json_str(f, d->layout);
        fputs(", \"checksum\": ", f);
        if (d->has_checksum)
            fprintf(f, "\"0x%016" PRIx64 "\"", d->stored);
        else
            fputs("null", f);
        fputs(", \"computed\": ", f);
        if (d->status >= 0)
            fprintf(f, "\"0x%016" PRIx64 "\"", d->computed);
        else
            fputs("null", f);
        fprintf(f, ", \"status\": \"%s\", \"error\": ", status_word(d->status, d->error));
        if (d->error)
            json_str(f, d->error);
        else
            fputs("null", f);
        fputc('}', f);
    }
    fputs("]}\n", f);
}

/* ---- text ---- */

static void print_text_value(FILE *f, const MrCkptAttrInfo *a, int full)
{
    switch (a->kind) {
    case MR_CKPT_VAL_INT:
        fprintf(f, "%" PRId64, a->i);
        break;
    case MR_CKPT_VAL_UINT:
        fprintf(f, "%" PRIu64, a->u);
        break;
    case MR_CKPT_VAL_FLOAT:
        fprintf(f, "%.17g", a->f);
        break;
    default: {
        const char *s = a->s ? a->s : "";
        size_t n = strlen(s);
        /* One line per value: control characters (newlines in the config) shown
         * as spaces, long values cut unless --full. */
        size_t lim = full || n <= 160 ? n : 120;
        for (size_t i = 0; i < lim; i++)
            fputc((unsigned char)s[i] < 0x20 ? ' ' : s[i], f);
        if (lim < n)
            fprintf(f, " ... (%zu bytes; --full shows all)", n);
        break;
    }
    }
}

static void print_text(FILE *f, const MrCkptReport *r, int rc, const MrErr *e, int verify, int full)
{
    fprintf(f, "file      %s (%" PRId64 " bytes)\n", r->path, r->file_bytes);
    if (r->magic[0])
        fprintf(f, "kind      %s, format version %" PRId64 "\n", r->magic, r->version);
    else
        fprintf(f, "kind      unknown (no magic attribute)\n");
    if (r->header == 1)
        fprintf(f, "header    %" PRId64 " bytes recorded, digest %016" PRIx64 " %s\n",
                r->header_bytes, r->digest_stored,
                r->digest_status == 1   ? "(verified)"
                : r->digest_status == 0 ? "(MISMATCH)"
                                        : "(not checked)");
    else if (r->header == 0)
        fprintf(f, "header    none (no user block: no file digest)\n");
    else
        fprintf(f, "header    DAMAGED\n");
    size_t w = 12;
    for (int64_t i = 0; i < r->nattrs; i++)
        if (strlen(r->attrs[i].name) > w)
            w = strlen(r->attrs[i].name);
    if (w > 40)
        w = 40;
    fprintf(f, "attributes (%" PRId64 ")\n", r->nattrs);
    for (int64_t i = 0; i < r->nattrs; i++) {
        fprintf(f, "  %-*s  ", (int)w, r->attrs[i].name);
        print_text_value(f, &r->attrs[i], full);
        fputc('\n', f);
    }
    size_t pw = 12;
    for (int64_t i = 0; i < r->ndatasets; i++)
        if (strlen(r->datasets[i].path) > pw)
            pw = strlen(r->datasets[i].path);
    if (pw > 48)
        pw = 48;
    fprintf(f, "datasets (%" PRId64 ")\n", r->ndatasets);
    for (int64_t i = 0; i < r->ndatasets; i++) {
        const MrCkptDatasetInfo *d = &r->datasets[i];
        char shape[160] = "[";
        size_t len = 1;
        for (int k = 0; k < d->ndims && k < 8 && len < sizeof shape - 24; k++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%" PRId64, k ? " x " : "",
                                    d->dims[k]);
        snprintf(shape + len, sizeof shape - len, "]");
        fprintf(f, "  %-*s  %-8s %-18s %-16s ", (int)pw, d->path, d->dtype, shape, d->layout);
        if (d->has_checksum)
            fprintf(f, "checksum %016" PRIx64 "  ", d->stored);
        else
            fprintf(f, "checksum none              ");
        if (d->error)
            fprintf(f, "ERROR: %s\n", d->error);
        else if (d->status == 1)
            fprintf(f, "ok\n");
        else if (d->status == 0)
            fprintf(f, "MISMATCH (computed %016" PRIx64 ")\n", d->computed);
        else
            fprintf(f, "%s\n", verify ? "not checked" : "-");
    }
    if (rc == 0)
        fprintf(f, "result    ok%s\n", verify ? " (every checksum verified)" : " (not verified)");
    else
        fprintf(f, "result    %s: %s\n", mr_err_name(rc), e->msg);
}

int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0, verify = 1, full = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help, stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--no-verify") == 0) {
            verify = 0;
        } else if (strcmp(argv[i], "--full") == 0) {
            full = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "mpirec inspect: unknown option '%s'\n\n%s", argv[i], help);
            return MR_EUSAGE;
        } else if (path) {
            fprintf(stderr, "mpirec inspect: one file at a time ('%s' and '%s')\n\n%s", path,
                    argv[i], help);
            return MR_EUSAGE;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "mpirec inspect: which file?\n\n%s", help);
        return MR_EUSAGE;
    }
    MrErr e;
    mr_err_clear(&e);
    MrCkptReport rep;
    int rc = mr_ckpt_inspect(path, verify, &rep, &e);
    if (rc == MR_EIO && !rep.nattrs && !rep.ndatasets && !json) {
        fprintf(stderr, "mpirec inspect: %s: %s\n", mr_err_name(rc), e.msg);
    } else {
        if (json)
            print_json(stdout, &rep, rc, &e, verify);
        else
            print_text(stdout, &rep, rc, &e, verify, full);
        if (rc)
            fprintf(stderr, "mpirec inspect: %s: %s\n", mr_err_name(rc), e.msg);
    }
    fflush(stdout);
    mr_ckpt_report_free(&rep);
    return rc;
}
