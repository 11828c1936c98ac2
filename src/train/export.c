/* export.c — the candidate index written at the end of training (and by
 * `mpirec index`), with the exclude-seen file beside it.
 *
 * Every rank runs the candidate tower over its slice of the items; rank 0 gathers
 * the outputs (placing them by item id: row-sharded slices are strided), gathers
 * the item id strings from the vocabulary owners, and collects a sample of real
 * query embeddings: training records chosen by a keyed hash of their record
 * number (so the sample is the same for every P), embedded on the ranks that hold
 * them. Rank 0 then builds, self-measures and saves the index.
 *
 * The seen file (<index without .h5>.seen.h5) holds, per user vocabulary id, the
 * distinct items of that user's TRAINING records, for `recommend --exclude-seen`.
 * It is built without a gather: every training pair goes (one alltoallv) to the
 * rank owning the user's vocabulary range, which sorts, deduplicates and encodes
 * its users; the ranks then write their byte ranges in parallel through the
 * checkpoint writer (which gives the file checksums, a digest and an atomic
 * rename). Encoding, chosen for size (docs/serving.md has the measurements):
 *   /seen/bytes uint8 [total]  for users u = 1 .. U in order: varint(n_u), then the
 *                              user's n_u sorted distinct index items (item
 *                              vocabulary id - 1) as varints of the gaps: first
 *                              item, then item - previous - 1
 * (varints are LEB128: 7 bits per byte, high bit = more). A user costs one byte
 * and a pair about one byte while a user's items lie within 128 of each other on
 * average; there is no offsets array (the reader builds one in memory with one
 * pass). The OOV user has no row. Records whose user or item is OOV
 * are not pairs (an unknown user has no history to exclude).
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpirec/ckpt.h"
#include "mpirec/hash.h"
#include "mpirec/index.h"
#include "mpirec/log.h"
#include "mpirec/train.h"

/* Checklist, the seen-file format (1 of 2): written here, read by
 * src/serve/serve_seen.c; magic, version, attribute and dataset names, the gap
 * code and the file-name rule (mr_serve_seen_path) change together. */
#define SEEN_MAGIC   "MPIREC-SEEN"
#define SEEN_VERSION 1

/* DIR and basename (without ".h5") of the seen file of an index path. */
static int seen_location(const char *index_path, char *dir, size_t dn, char *base, size_t bn,
                         MrErr *e)
{
    char a[MR_PATH_MAX], b[MR_PATH_MAX];
    if (snprintf(a, sizeof a, "%s", index_path) >= (int)sizeof a)
        return mr_err_set(e, MR_EUSAGE, "index path too long: %s", index_path);
    memcpy(b, a, sizeof b);
    const char *d = dirname(a), *f = basename(b);
    size_t fl = strlen(f);
    if (fl > 3 && strcmp(f + fl - 3, ".h5") == 0)
        fl -= 3;
    if (snprintf(dir, dn, "%s", d) >= (int)dn || fl + 6 >= bn)
        return mr_err_set(e, MR_EUSAGE, "index path too long: %s", index_path);
    memcpy(base, f, fl);
    memcpy(base + fl, ".seen", 6);
    for (const char *p = base; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return mr_err_set(e, MR_EUSAGE,
                              "index file name '%s': use only letters, digits, '-', '_' and '.' "
                              "(its exclude-seen file %s.h5 is written beside it)",
                              index_path, base);
    return MR_OK;
}

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Build and write the seen file. Collective. */
static int write_seen(MrComm *c, const MrConfig *cfg, const MrDataset *d, const char *index_path,
                      const char *source_ckpt, int64_t step, int64_t *pairs_out, char *final_path,
                      size_t fp_n, MrErr *e)
{
    int P = c->size, rc = MR_OK;
    char dir[MR_PATH_MAX], base[MR_NAME_MAX];
    int64_t U = d->users.size, V = d->items.size;
    int64_t *lo = malloc((size_t)P * 8), *scnt = calloc((size_t)P, 8),
            *rcnt = malloc((size_t)P * 8);
    int64_t *send = NULL, *recv = NULL, *pos = NULL;
    uint8_t *bytes = NULL;
    MrCkptWriter *w = NULL;
    rc = seen_location(index_path, dir, sizeof dir, base, sizeof base, e);
    if (!rc && (!lo || !scnt || !rcnt))
        rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    /* Users are routed to the owners of their vocabulary range (rank order). */
    int64_t mylo = d->users.lo, myhi = d->users.hi;
    if ((rc = mr_comm_allgather(c, &mylo, 8, lo, e)))
        goto out;
    int64_t npairs = 0;
    for (int64_t i = 0; i < d->n; i++)
        npairs += !d->is_test[i] && d->user[i] > 0 && d->item[i] > 0;
    send = malloc((size_t)(npairs + 1) * 16);
    pos = malloc((size_t)(P + 1) * 8);
    rc = send && pos
             ? 0
             : mr_err_set(e, MR_ENOMEM, "out of memory for %lld training pairs", (long long)npairs);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    /* owner of user u: the last rank whose range starts at or before u */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            pos[0] = 0;
            for (int q = 0; q < P; q++)
                pos[q + 1] = pos[q] + scnt[q];
        }
        for (int64_t i = 0; i < d->n; i++) {
            int64_t u = d->user[i], it = d->item[i];
            if (d->is_test[i] || u <= 0 || it <= 0)
                continue;
            int a = 0, b = P - 1;
            while (a < b) {
                int m = (a + b + 1) / 2;
                if (lo[m] <= u)
                    a = m;
                else
                    b = m - 1;
            }
            if (pass == 0) {
                scnt[a]++;
            } else {
                send[2 * pos[a]] = u;
                send[2 * pos[a] + 1] = it - 1;
                pos[a]++;
            }
        }
    }
    for (int q = 0; q < P; q++)
        scnt[q] *= 16;
    if ((rc = mr_comm_alltoall_i64(c, scnt, rcnt, e)))
        goto out;
    int64_t nrecv = 0;
    for (int q = 0; q < P; q++)
        nrecv += rcnt[q] / 16;
    recv = malloc((size_t)(nrecv + 1) * 16);
    rc = recv ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_comm_alltoallv(c, send, scnt, recv, rcnt, e)))
        goto out;
    free(send);
    send = NULL;
    qsort(recv, (size_t)nrecv, 16, cmp_pair);
    /* Encode this rank's users [mylo, myhi), count first. */
    bytes = malloc((size_t)(nrecv + (myhi - mylo)) * 10 + 1);
    rc = bytes ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t nb = 0, j = 0, distinct = 0;
    for (int64_t u = mylo; u < myhi; u++) {
        int64_t j1 = j, n_u = 0;
        for (; j1 < nrecv && recv[2 * j1] == u; j1++)
            n_u += j1 == j || recv[2 * j1 + 1] != recv[2 * j1 - 1];
        nb += (int64_t)put_varint(bytes + nb, (uint64_t)n_u);
        int64_t prev = -1;
        for (; j < j1; j++) {
            int64_t it = recv[2 * j + 1];
            if (it == prev)
                continue; /* a repeated (user, item) pair */
            nb += (int64_t)put_varint(bytes + nb, (uint64_t)(it - prev - 1));
            prev = it;
        }
        distinct += n_u;
    }
    if (j != nrecv)
        rc = mr_err_set(e, MR_EINTERNAL, "seen pairs: %lld pairs outside this rank's users",
                        (long long)(nrecv - j));
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t start[2] = {nb, distinct}, tot[2] = {nb, distinct};
    if ((rc = mr_comm_exscan_i64(c, start, 2, e)) ||
        (rc = mr_comm_allreduce_i64(c, tot, 2, MR_SUM, e)))
        goto out;
    uint64_t uh = 0, ih = 0;
    if ((rc = mr_vocab_hash(&d->users, c, &uh, e)) || (rc = mr_vocab_hash(&d->items, c, &ih, e)))
        goto out;
    if ((rc = mr_ckpt_writer_open(&w, c, dir, base, SEEN_MAGIC, SEEN_VERSION, e)))
        goto out;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)))                                                                            \
            goto fail;                                                                             \
    } while (0)
    TRY(mr_ckpt_write_attr_str(w, "kind", "seen", e));
    TRY(mr_ckpt_write_attr_str(w, "encoding", "varint-gaps", e));
    TRY(mr_ckpt_write_attr_i64(w, "users", U, e));
    TRY(mr_ckpt_write_attr_i64(w, "items", V, e));
    TRY(mr_ckpt_write_attr_i64(w, "pairs", tot[1], e));
    TRY(mr_ckpt_write_attr_i64(w, "model_hash", (int64_t)mr_config_model_hash(cfg), e));
    TRY(mr_ckpt_write_attr_i64(w, "user_vocab_hash", (int64_t)uh, e));
    TRY(mr_ckpt_write_attr_i64(w, "item_vocab_hash", (int64_t)ih, e));
    TRY(mr_ckpt_write_attr_str(w, "source", source_ckpt ? source_ckpt : "", e));
    TRY(mr_ckpt_write_attr_i64(w, "source_step", step, e));
    TRY(mr_ckpt_write_rows(w, "seen/bytes", MR_U8, tot[0], 0, start[0], 1, nb, bytes, e));
#undef TRY
    if (final_path && snprintf(final_path, fp_n, "%s/%s.h5", dir, base) >= (int)fp_n)
        final_path[0] = '\0';
    *pairs_out = tot[1];
    rc = mr_ckpt_writer_commit(&w, NULL, 0, e);
    goto out;
fail:
    mr_ckpt_writer_abort(&w);
out:
    free(lo);
    free(scnt);
    free(rcnt);
    free(send);
    free(recv);
    free(pos);
    free(bytes);
    return rc;
}

int mr_export_index(MrComm *c, const MrConfig *cfg, const MrDataset *d, MrState *s,
                    const char *path, const char *source_ckpt, int64_t step, MrErr *e)
{
    int P = c->size, rank0 = c->rank == 0, rc;
    int dd = s->shape.cout;
    int64_t V = s->item.rows - 1;
    int64_t *ids = NULL, n = 0, *rb = malloc((size_t)P * 2 * 8), *all_ids = NULL;
    float *C = NULL, *all_C = NULL, *emb = NULL, *Qs = NULL, *Qall = NULL;
    char *vb = NULL;
    int64_t *voff = NULL, *vcnt = NULL, *rec = NULL;
    rc = rb ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    {
        /* A name the seen file cannot take fails before any work. */
        char sd[MR_PATH_MAX], sb[MR_NAME_MAX];
        if (!rc)
            rc = seen_location(path, sd, sizeof sd, sb, sizeof sb, e);
    }
    if (!rc)
        rc = mr_candidates_slice(c, s, &ids, &C, &n, e);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t nn = n;
    if ((rc = mr_comm_allgather(c, &nn, 8, rb, e)))
        goto out;
    if (rank0) {
        all_ids = malloc((size_t)(V + 1) * 8);
        all_C = malloc((size_t)(V + 1) * (size_t)dd * 4);
        emb = malloc((size_t)(V + 1) * (size_t)dd * 4);
        if (!all_ids || !all_C || !emb)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory gathering %lld candidate embeddings",
                            (long long)V);
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    for (int q = 0; q < P; q++) {
        rb[P + q] = rb[q] * dd * 4;
        rb[q] *= 8;
    }
    if ((rc = mr_comm_gatherv(c, ids, (size_t)n * 8, all_ids, rb, 0, e)) ||
        (rc = mr_comm_gatherv(c, C, (size_t)(n * dd * 4), all_C, rb + P, 0, e)))
        goto out;
    if (rank0)
        for (int64_t k = 0; k < V; k++)
            memcpy(emb + (all_ids[k] - 1) * dd, all_C + k * dd, (size_t)dd * 4);
    if ((rc = mr_vocab_gather(&d->items, c, 0, &vb, &voff, &vcnt, e)))
        goto out;
    /* Sample of training users, chosen by record hash (independent of P). */
    int64_t want = cfg->index.recall_queries, ntrain = d->sum.train_records;
    double frac = ntrain > 0 ? (double)want / (double)ntrain : 0;
    uint64_t thr = frac >= 1 ? UINT64_MAX : (uint64_t)(frac * 18446744073709551615.0);
    uint64_t base = mr_mix(cfg->train.seed, MR_TAG_SAMPLE);
    rec = malloc((size_t)(d->n + 1) * 8);
    rc = rec ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t ns = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (!d->is_test[i] && mr_mix(base, (uint64_t)(d->first + i)) <= thr)
            rec[ns++] = i;
    int64_t cap = ns;
    if ((rc = mr_comm_allreduce_i64(c, &cap, 1, MR_MAX, e)))
        goto out;
    int qd = s->shape.qout;
    Qs = malloc((size_t)(cap + 1) * (size_t)qd * 4);
    rc = Qs ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_queries_forward(c, s, d, rec, ns, cap, Qs, e)))
        goto out;
    int64_t nsv = ns;
    if ((rc = mr_comm_allgather(c, &nsv, 8, rb, e)))
        goto out;
    int64_t tot = 0;
    for (int q = 0; q < P; q++) {
        tot += rb[q];
        rb[q] *= qd * 4;
    }
    if (rank0) {
        Qall = malloc((size_t)(tot + 1) * (size_t)qd * 4);
        if (!Qall)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    }
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_gatherv(c, Qs, (size_t)(ns * qd * 4), Qall, rb, 0, e)))
        goto out;
    if (rank0) {
        MrIndex ix;
        memset(&ix, 0, sizeof ix);
        MrIndexParams p;
        mr_index_params_from_config(&p, cfg, cfg->train.seed);
        rc = mr_index_build(&ix, &p, emb, V, dd, vb, voff, Qall, tot, cfg->index.k, e);
        if (!rc) {
            ix.model_hash = mr_config_model_hash(cfg);
            snprintf(ix.source, sizeof ix.source, "%s", source_ckpt ? source_ckpt : "");
            ix.source_step = step;
            rc = mr_index_save(&ix, path, e);
        }
        if (!rc)
            mr_log(MR_LOG_INFO,
                   "index %s: %s, %lld items, recall@%d %.4f on %lld training users, %.0f "
                   "queries/s (exact %.0f)",
                   path, cfg->index.kind == MR_INDEX_IVF ? "ivf" : "exact", (long long)V,
                   ix.stats.k, ix.stats.recall, (long long)ix.stats.queries, ix.stats.qps,
                   ix.stats.qps_exact);
        mr_index_free(&ix);
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    {
        char sp[MR_PATH_MAX + MR_NAME_MAX];
        int64_t pairs = 0;
        rc = write_seen(c, cfg, d, path, source_ckpt, step, &pairs, sp, sizeof sp, e);
        if (!rc && rank0) {
            struct stat st;
            long long sz = stat(sp, &st) == 0 ? (long long)st.st_size : -1;
            mr_log(MR_LOG_INFO,
                   "exclude-seen file %s: %lld distinct training (user, item) pairs of %lld "
                   "users, %lld bytes",
                   sp, (long long)pairs, (long long)d->users.size, sz);
        }
    }
out:
    free(rb);
    free(ids);
    free(C);
    free(all_ids);
    free(all_C);
    free(emb);
    free(vb);
    free(voff);
    free(vcnt);
    free(rec);
    free(Qs);
    free(Qall);
    return rc;
}
