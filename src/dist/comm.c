/* comm.c — the only translation unit of mpirec that calls MPI collectives.
 *
 * Approach: one duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so that every
 * failure is a returned code with MPI_Error_string's text; a second duplicate for
 * non-blocking reductions, so that they can be in flight while blocking
 * collectives run on the first. Byte counts are 64-bit in the API; when a count
 * or displacement does not fit an int, the v-collectives fall back to pairwise
 * MPI_Sendrecv in chunks (MPI 3.1 has no large-count collectives).
 *
 * Not here: the choice of what to exchange (dist/exchange.c and friends) and the
 * MPI-IO file setup (ckpt/), which borrows the communicator via mr_comm_raw().
 */
#include "mpirec/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct CommImpl {
    MPI_Comm comm;    /* blocking collectives */
    MPI_Comm comm_nb; /* non-blocking reductions */
    int *iscratch;    /* [4P] int counts/displacements, so collectives never allocate */
    int64_t *lscratch; /* [2P + 2] 64-bit displacements */
    MPI_Request nb_req; /* the one outstanding non-blocking reduction */
    int nb_active;
} CommImpl;

#define CHUNK_BYTES ((int64_t)1 << 30)

static MPI_Comm C(const MrComm *c) { return ((CommImpl *)c->impl)->comm; }

static int mpi_fail(MrErr *e, int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error code %d", rc);
    return mr_err_set(e, MR_EMPI, "%s failed: %s", what, text);
}

#define CHECK(call, what)                                                                          \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS)                                                                    \
            return mpi_fail(e, rc_, what);                                                         \
    } while (0)

int mr_comm_init(MrComm *c, int *argc, char ***argv, MrErr *e)
{
    memset(c, 0, sizeof *c);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        /* Open MPI's OMPIO selects its 'sm' shared-file-pointer component on every
         * MPI_File_open (HDF5 checkpoints). It keeps a POSIX named semaphore in
         * /dev/shm named after the file's base name, and a rank killed inside it
         * (SIGKILL or preemption during a checkpoint write) leaves it locked: the
         * next job that opens a file of the same name (the resumed run writing that
         * checkpoint again) waits forever. Seen in CI as hung resume tests after
         * e2e.preempt_sigkill, with /dev/shm/sem.OMPIO_ckpt-000000024.h5.tmp left.
         * mpirec never uses shared file pointers: leave 'sm' out, unless the user
         * set the parameter. */
        (void)setenv("OMPI_MCA_sharedfp", "^sm", 0);
        int rc = MPI_Init(argc, argv);
        if (rc != MPI_SUCCESS)
            return mr_err_set(e, MR_EMPI, "MPI_Init failed (code %d)", rc);
        c->owns_mpi = 1;
    }
    CommImpl *im = calloc(1, sizeof *im);
    if (!im)
        return mr_err_set(e, MR_ENOMEM, "out of memory creating the communicator");
    c->impl = im;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &im->comm), "MPI_Comm_dup");
    CHECK(MPI_Comm_set_errhandler(im->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &im->comm_nb), "MPI_Comm_dup");
    CHECK(MPI_Comm_set_errhandler(im->comm_nb, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    CHECK(MPI_Comm_rank(im->comm, &c->rank), "MPI_Comm_rank");
    CHECK(MPI_Comm_size(im->comm, &c->size), "MPI_Comm_size");
    MPI_Comm node;
    CHECK(MPI_Comm_split_type(im->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node),
          "MPI_Comm_split_type");
    CHECK(MPI_Comm_size(node, &c->node_size), "MPI_Comm_size");
    MPI_Comm_free(&node);
    im->iscratch = malloc((size_t)c->size * 4 * sizeof *im->iscratch);
    im->lscratch = malloc((size_t)(2 * c->size + 2) * sizeof *im->lscratch);
    if (!im->iscratch || !im->lscratch)
        return mr_err_set(e, MR_ENOMEM, "out of memory creating the communicator");
    return MR_OK;
}

void mr_comm_finalize(MrComm *c)
{
    if (!c)
        return;
    CommImpl *im = c->impl;
    if (im) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) {
            if (im->comm != MPI_COMM_NULL && im->comm != 0)
                MPI_Comm_free(&im->comm);
            if (im->comm_nb != MPI_COMM_NULL && im->comm_nb != 0)
                MPI_Comm_free(&im->comm_nb);
        }
        free(im->iscratch);
        free(im->lscratch);
        free(im);
        c->impl = NULL;
    }
    if (c->owns_mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Finalize();
        c->owns_mpi = 0;
    }
}

void mr_comm_abort(const MrComm *c, int code)
{
    MPI_Abort(c && c->impl ? C(c) : MPI_COMM_WORLD, code);
}

double mr_comm_wtime(void) { return MPI_Wtime(); }

void *mr_comm_raw(const MrComm *c) { return &((CommImpl *)c->impl)->comm; }

void mr_comm_processor_name(char *buf, size_t n)
{
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS)
        snprintf(name, sizeof name, "unknown");
    snprintf(buf, n, "%s", name);
}

/* Accounting helpers: every public collective is bracketed by these. */
#define T0() double t0_ = MPI_Wtime()
#define T1() (c->comm_seconds += MPI_Wtime() - t0_)

int mr_comm_barrier(MrComm *c, MrErr *e)
{
    T0();
    CHECK(MPI_Barrier(C(c)), "MPI_Barrier");
    T1();
    return MR_OK;
}

int mr_comm_agree(MrComm *c, int status, MrErr *e)
{
    /* One allreduce carries both the worst status and (negated) the lowest failing
     * rank, so the common all-OK case costs a single 16-byte reduction. */
    int64_t v[2] = {status, status ? -(int64_t)c->rank : -(int64_t)c->size};
    T0();
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT64_T, MPI_MAX, C(c));
    T1();
    if (rc != MPI_SUCCESS)
        return mpi_fail(e, rc, "MPI_Allreduce (error agreement)");
    if (v[0] == 0)
        return MR_OK;
    int root = (int)-v[1];
    char msg[MR_ERR_SIZE];
    memset(msg, 0, sizeof msg);
    if (c->rank == root && e)
        memcpy(msg, e->msg, sizeof msg);
    rc = MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, root, C(c));
    if (rc != MPI_SUCCESS)
        return mpi_fail(e, rc, "MPI_Bcast (error agreement)");
    msg[sizeof msg - 1] = '\0';
    if (status == 0) {
        if (c->size > 1)
            mr_err_set(e, (int)v[0], "rank %d failed: %s", root, msg);
        else
            mr_err_set(e, (int)v[0], "%s", msg);
    }
    return (int)v[0];
}

int mr_comm_bcast(MrComm *c, void *buf, size_t bytes, int root, MrErr *e)
{
    T0();
    for (size_t off = 0; off < bytes; off += (size_t)CHUNK_BYTES) {
        size_t n = bytes - off < (size_t)CHUNK_BYTES ? bytes - off : (size_t)CHUNK_BYTES;
        CHECK(MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, root, C(c)), "MPI_Bcast");
    }
    if (c->rank == root)
        c->bytes_sent += (int64_t)bytes;
    T1();
    return MR_OK;
}

static int allreduce(MrComm *c, void *buf, size_t n, size_t elsize, MPI_Datatype t,
                     MrReduceOp op, MrErr *e)
{
    MPI_Op mop = op == MR_SUM ? MPI_SUM : op == MR_MAX ? MPI_MAX : MPI_MIN;
    const size_t chunk = (size_t)INT_MAX / 2;
    T0();
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * elsize, (int)k, t, mop, C(c)),
              "MPI_Allreduce");
    }
    c->bytes_sent += (int64_t)(n * elsize);
    T1();
    return MR_OK;
}

int mr_comm_allreduce_i64(MrComm *c, int64_t *buf, size_t n, MrReduceOp op, MrErr *e)
{
    return allreduce(c, buf, n, sizeof *buf, MPI_INT64_T, op, e);
}

int mr_comm_allreduce_f64(MrComm *c, double *buf, size_t n, MrReduceOp op, MrErr *e)
{
    return allreduce(c, buf, n, sizeof *buf, MPI_DOUBLE, op, e);
}

int mr_comm_allreduce_f32(MrComm *c, float *buf, size_t n, MrReduceOp op, MrErr *e)
{
    return allreduce(c, buf, n, sizeof *buf, MPI_FLOAT, op, e);
}

int mr_comm_exscan_i64(MrComm *c, int64_t *buf, size_t n, MrErr *e)
{
    if (n > (size_t)INT_MAX)
        return mr_err_set(e, MR_EINTERNAL, "exscan of %zu elements", n);
    T0();
    int rc = MPI_Exscan(MPI_IN_PLACE, buf, (int)n, MPI_INT64_T, MPI_SUM, C(c));
    T1();
    if (rc != MPI_SUCCESS)
        return mpi_fail(e, rc, "MPI_Exscan");
    /* MPI leaves rank 0's buffer undefined. */
    if (c->rank == 0)
        memset(buf, 0, n * sizeof *buf);
    c->bytes_sent += (int64_t)(n * sizeof *buf);
    return MR_OK;
}

int mr_comm_allgather(MrComm *c, const void *send, size_t bytes, void *recv, MrErr *e)
{
    if (bytes * (size_t)c->size > (size_t)INT_MAX) {
        int64_t *rb = malloc((size_t)c->size * sizeof *rb);
        if (!rb)
            return mr_err_set(e, MR_ENOMEM, "out of memory in allgather");
        for (int q = 0; q < c->size; q++)
            rb[q] = (int64_t)bytes;
        int rc = mr_comm_allgatherv(c, send, bytes, recv, rb, e);
        free(rb);
        return rc;
    }
    T0();
    CHECK(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, C(c)),
          "MPI_Allgather");
    c->bytes_sent += (int64_t)bytes * (c->size - 1);
    T1();
    return MR_OK;
}

/* Pairwise exchange used when 64-bit counts do not fit MPI's ints. */
static int pairwise(MrComm *c, const char *send, const int64_t *sbytes, const int64_t *sdisp,
                    char *recv, const int64_t *rbytes, const int64_t *rdisp, MrErr *e)
{
    int P = c->size, me = c->rank;
    memcpy(recv + rdisp[me], send + sdisp[me], (size_t)sbytes[me]);
    for (int k = 1; k < P; k++) {
        int to = (me + k) % P, from = (me - k + P) % P;
        int64_t sent = 0, got = 0;
        while (sent < sbytes[to] || got < rbytes[from]) {
            int ns = (int)(sbytes[to] - sent < CHUNK_BYTES ? sbytes[to] - sent : CHUNK_BYTES);
            int nr = (int)(rbytes[from] - got < CHUNK_BYTES ? rbytes[from] - got : CHUNK_BYTES);
            CHECK(MPI_Sendrecv(send + sdisp[to] + sent, ns, MPI_BYTE, to, 77,
                               recv + rdisp[from] + got, nr, MPI_BYTE, from, 77, C(c),
                               MPI_STATUS_IGNORE),
                  "MPI_Sendrecv");
            sent += ns;
            got += nr;
        }
    }
    return MR_OK;
}

static int fits_int(const int64_t *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] < 0 || v[i] > INT_MAX)
            return 0;
    return 1;
}

int mr_comm_allgatherv(MrComm *c, const void *send, size_t bytes, void *recv,
                       const int64_t *recv_bytes, MrErr *e)
{
    int P = c->size;
    int64_t *disp = ((CommImpl *)c->impl)->lscratch;
    int *ic = ((CommImpl *)c->impl)->iscratch;
    disp[0] = 0;
    for (int q = 0; q < P; q++)
        disp[q + 1] = disp[q] + recv_bytes[q];
    int rc = MR_OK;
    T0();
    if (fits_int(disp, P + 1) && fits_int(recv_bytes, P)) {
        for (int q = 0; q < P; q++) {
            ic[q] = (int)recv_bytes[q];
            ic[P + q] = (int)disp[q];
        }
        int mrc = MPI_Allgatherv(send, (int)bytes, MPI_BYTE, recv, ic, ic + P, MPI_BYTE, C(c));
        if (mrc != MPI_SUCCESS)
            rc = mpi_fail(e, mrc, "MPI_Allgatherv");
    } else {
        /* Large: every rank broadcasts its part in turn. */
        memcpy((char *)recv + disp[c->rank], send, bytes);
        for (int q = 0; q < P && rc == MR_OK; q++)
            for (int64_t off = 0; off < recv_bytes[q] && rc == MR_OK; off += CHUNK_BYTES) {
                int n = (int)(recv_bytes[q] - off < CHUNK_BYTES ? recv_bytes[q] - off : CHUNK_BYTES);
                int mrc = MPI_Bcast((char *)recv + disp[q] + off, n, MPI_BYTE, q, C(c));
                if (mrc != MPI_SUCCESS)
                    rc = mpi_fail(e, mrc, "MPI_Bcast (large allgatherv)");
            }
    }
    T1();
    c->bytes_sent += (int64_t)bytes * (P - 1);
    return rc;
}

int mr_comm_gatherv(MrComm *c, const void *send, size_t bytes, void *recv,
                    const int64_t *recv_bytes, int root, MrErr *e)
{
    int P = c->size;
    int big = bytes > (size_t)INT_MAX;
    int64_t total = 0;
    if (c->rank == root) {
        for (int q = 0; q < P; q++) {
            if (recv_bytes[q] > INT_MAX)
                big = 1;
            total += recv_bytes[q];
        }
        if (total > INT_MAX)
            big = 1;
    }
    /* All ranks must take the same path. */
    int64_t flag = big;
    int rc = mr_comm_allreduce_i64(c, &flag, 1, MR_MAX, e);
    if (rc)
        return rc;
    T0();
    if (!flag) {
        int *ic = NULL;
        if (c->rank == root) {
            ic = malloc((size_t)P * 2 * sizeof *ic);
            if (!ic)
                return mr_err_set(e, MR_ENOMEM, "out of memory in gatherv");
            int64_t d = 0;
            for (int q = 0; q < P; q++) {
                ic[q] = (int)recv_bytes[q];
                ic[P + q] = (int)d;
                d += recv_bytes[q];
            }
        }
        int mrc = MPI_Gatherv(send, (int)bytes, MPI_BYTE, recv, ic, ic ? ic + P : NULL, MPI_BYTE,
                              root, C(c));
        free(ic);
        if (mrc != MPI_SUCCESS)
            return mpi_fail(e, mrc, "MPI_Gatherv");
    } else {
        /* Large: point-to-point in chunks, root receives in rank order. */
        if (c->rank == root) {
            int64_t d = 0;
            for (int q = 0; q < P; q++) {
                char *dst = (char *)recv + d;
                if (q == root)
                    memcpy(dst, send, bytes);
                else
                    for (int64_t off = 0; off < recv_bytes[q]; off += CHUNK_BYTES) {
                        int n = (int)(recv_bytes[q] - off < CHUNK_BYTES ? recv_bytes[q] - off
                                                                        : CHUNK_BYTES);
                        CHECK(MPI_Recv(dst + off, n, MPI_BYTE, q, 78, C(c), MPI_STATUS_IGNORE),
                              "MPI_Recv (gatherv)");
                    }
                d += recv_bytes[q];
            }
        } else {
            for (size_t off = 0; off < bytes; off += (size_t)CHUNK_BYTES) {
                int n = (int)(bytes - off < (size_t)CHUNK_BYTES ? bytes - off : (size_t)CHUNK_BYTES);
                CHECK(MPI_Send((const char *)send + off, n, MPI_BYTE, root, 78, C(c)),
                      "MPI_Send (gatherv)");
            }
        }
    }
    T1();
    if (c->rank != root)
        c->bytes_sent += (int64_t)bytes;
    return MR_OK;
}

int mr_comm_alltoall_i64(MrComm *c, const int64_t *send, int64_t *recv, MrErr *e)
{
    T0();
    CHECK(MPI_Alltoall(send, 1, MPI_INT64_T, recv, 1, MPI_INT64_T, C(c)), "MPI_Alltoall");
    T1();
    c->bytes_sent += 8 * (c->size - 1);
    return MR_OK;
}

/* Fill the scratch displacement arrays; returns 1 when everything fits in ints. */
static int prepare_v(MrComm *c, const int64_t *send_bytes, const int64_t *recv_bytes)
{
    int P = c->size;
    int64_t *sd = ((CommImpl *)c->impl)->lscratch, *rd = sd + P + 1;
    sd[0] = rd[0] = 0;
    for (int q = 0; q < P; q++) {
        sd[q + 1] = sd[q] + send_bytes[q];
        rd[q + 1] = rd[q] + recv_bytes[q];
    }
    return fits_int(sd, P + 1) && fits_int(rd, P + 1);
}

static int alltoallv_core(MrComm *c, const void *send, const int64_t *send_bytes, void *recv,
                          const int64_t *recv_bytes, int big, MrErr *e)
{
    int P = c->size;
    int64_t *sd = ((CommImpl *)c->impl)->lscratch, *rd = sd + P + 1;
    int *ic = ((CommImpl *)c->impl)->iscratch;
    int rc = MR_OK;
    T0();
    if (!big) {
        for (int q = 0; q < P; q++) {
            ic[q] = (int)send_bytes[q];
            ic[P + q] = (int)sd[q];
            ic[2 * P + q] = (int)recv_bytes[q];
            ic[3 * P + q] = (int)rd[q];
        }
        int mrc = MPI_Alltoallv(send, ic, ic + P, MPI_BYTE, recv, ic + 2 * P, ic + 3 * P,
                                MPI_BYTE, C(c));
        if (mrc != MPI_SUCCESS)
            rc = mpi_fail(e, mrc, "MPI_Alltoallv");
    } else {
        rc = pairwise(c, send, send_bytes, sd, recv, recv_bytes, rd, e);
    }
    T1();
    c->bytes_sent += sd[P] - send_bytes[c->rank];
    return rc;
}

int mr_comm_alltoallv(MrComm *c, const void *send, const int64_t *send_bytes, void *recv,
                      const int64_t *recv_bytes, MrErr *e)
{
    /* Whether any rank needs the large-message path must be agreed first. */
    int64_t big = !prepare_v(c, send_bytes, recv_bytes);
    int rc = mr_comm_allreduce_i64(c, &big, 1, MR_MAX, e);
    if (rc)
        return rc;
    prepare_v(c, send_bytes, recv_bytes); /* the allreduce does not touch scratch, but be safe */
    return alltoallv_core(c, send, send_bytes, recv, recv_bytes, (int)big, e);
}

int mr_comm_alltoallv_small(MrComm *c, const void *send, const int64_t *send_bytes, void *recv,
                            const int64_t *recv_bytes, MrErr *e)
{
    if (!prepare_v(c, send_bytes, recv_bytes))
        return mr_err_set(e, MR_EINTERNAL,
                          "alltoallv_small called with more than 2 GiB: buffers were not sized "
                          "with a collective check");
    return alltoallv_core(c, send, send_bytes, recv, recv_bytes, 0, e);
}

int mr_comm_reduce_scatter_f32(MrComm *c, const float *send, float *recv, const int64_t *counts,
                               MrErr *e)
{
    int P = c->size;
    int *ic = ((CommImpl *)c->impl)->iscratch;
    int64_t total = 0;
    for (int q = 0; q < P; q++) {
        if (counts[q] > INT_MAX)
            return mr_err_set(e, MR_EINTERNAL, "reduce_scatter part of %lld floats",
                              (long long)counts[q]);
        ic[q] = (int)counts[q];
        total += counts[q];
    }
    T0();
    int mrc = MPI_Reduce_scatter(send, recv, ic, MPI_FLOAT, MPI_SUM, C(c));
    T1();
    if (mrc != MPI_SUCCESS)
        return mpi_fail(e, mrc, "MPI_Reduce_scatter");
    c->bytes_sent += (int64_t)(total - counts[c->rank]) * (int64_t)sizeof(float);
    return MR_OK;
}

int mr_comm_iallreduce_f32_start(MrComm *c, float *buf, size_t n, MrCommRequest *req, MrErr *e)
{
    CommImpl *im = c->impl;
    if (n > (size_t)INT_MAX)
        return mr_err_set(e, MR_EINTERNAL, "iallreduce of %zu floats", n);
    if (im->nb_active)
        return mr_err_set(e, MR_EINTERNAL, "a non-blocking reduction is already in flight");
    T0();
    int mrc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, im->comm_nb,
                             &im->nb_req);
    T1();
    if (mrc != MPI_SUCCESS)
        return mpi_fail(e, mrc, "MPI_Iallreduce");
    im->nb_active = 1;
    req->impl = im;
    c->bytes_sent += (int64_t)(n * sizeof(float));
    return MR_OK;
}

int mr_comm_iallreduce_wait(MrComm *c, MrCommRequest *req, MrErr *e)
{
    CommImpl *im = c->impl;
    if (!req->impl || !im->nb_active)
        return MR_OK;
    T0();
    int mrc = MPI_Wait(&im->nb_req, MPI_STATUS_IGNORE);
    T1();
    im->nb_active = 0;
    req->impl = NULL;
    if (mrc != MPI_SUCCESS)
        return mpi_fail(e, mrc, "MPI_Wait (iallreduce)");
    return MR_OK;
}
