/* comm.h — the communicator: every MPI call of mpirec goes through src/dist.
 *
 * MrComm wraps a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN set, so an
 * MPI failure becomes an MrErr (text from MPI_Error_string) instead of an abort.
 * The wrappers take byte counts as int64_t / size_t and split messages that do not
 * fit MPI's int counts, so callers never think about the 2 GiB limit.
 *
 * Other stages include this header only; mpi.h stays inside src/dist (and the
 * MPI-IO setup in src/ckpt, which borrows the raw communicator through
 * mr_comm_raw()). A plain process (no mpirun) is a communicator of size 1.
 *
 * Error agreement: a rank that fails locally must not leave its peers waiting in
 * a collective. Code that can fail on one rank only calls mr_comm_agree() before
 * the next collective, so that every rank returns the same code together.
 *
 * All functions marked "Collective" must be called by every rank of the
 * communicator, in the same order.
 */
#ifndef MPIREC_COMM_H
#define MPIREC_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/err.h"

typedef struct MrComm {
    int rank;        /* this process's rank, 0 <= rank < size */
    int size;        /* number of ranks P */
    void *impl;      /* owned: the duplicated MPI communicator (dist/comm.c) */
    int owns_mpi;    /* 1 if mr_comm_init called MPI_Init (and finalize must end it) */
    int node_size;   /* ranks sharing this rank's node (memory budget per rank) */
    /* Communication accounting, reset by the caller whenever it likes. */
    double comm_seconds;   /* wall time spent inside collectives */
    int64_t bytes_sent;    /* payload bytes this rank sent */
} MrComm;

typedef enum MrReduceOp { MR_SUM = 0, MR_MAX = 1, MR_MIN = 2 } MrReduceOp;

/* Lifecycle */
/* Initialise MPI (if not already) and duplicate MPI_COMM_WORLD. */
int mr_comm_init(MrComm *c, int *argc, char ***argv, MrErr *e);
/* Free the duplicate and finalize MPI if we initialised it. Safe on a zeroed c. */
void mr_comm_finalize(MrComm *c);
/* Kill every rank (only cli/ may call this, when a peer may be stuck in a collective). */
void mr_comm_abort(const MrComm *c, int code);

/* Queries */
double mr_comm_wtime(void);
/* Borrowed pointer to the MPI_Comm (for MPI-IO in ckpt/); cast to MPI_Comm *. */
void *mr_comm_raw(const MrComm *c);
/* Ranks on this rank's node. */
static inline int mr_comm_node_ranks(const MrComm *c) { return c->node_size; }
/* The node's name (MPI_Get_processor_name), for messages. */
void mr_comm_processor_name(char *buf, size_t n);

/* Operations. All are Collective. */
int mr_comm_barrier(MrComm *c, MrErr *e);
/* Every rank returns the maximum of the ranks' `status` (0 = OK); a non-zero
 * result means "some rank failed". When `e` is not NULL and this rank was fine but
 * another failed, e gets "rank R failed: <its message>" (the lowest failing rank's
 * message is broadcast), so all ranks can report the same cause. */
int mr_comm_agree(MrComm *c, int status, MrErr *e);
int mr_comm_bcast(MrComm *c, void *buf, size_t bytes, int root, MrErr *e);
int mr_comm_allreduce_i64(MrComm *c, int64_t *buf, size_t n, MrReduceOp op, MrErr *e);
int mr_comm_allreduce_f64(MrComm *c, double *buf, size_t n, MrReduceOp op, MrErr *e);
int mr_comm_allreduce_f32(MrComm *c, float *buf, size_t n, MrReduceOp op, MrErr *e);
/* Exclusive prefix sum over ranks, elementwise; rank 0 receives zeros. */
int mr_comm_exscan_i64(MrComm *c, int64_t *buf, size_t n, MrErr *e);
/* Same `bytes` from every rank; recv holds P * bytes, rank order. */
int mr_comm_allgather(MrComm *c, const void *send, size_t bytes, void *recv, MrErr *e);
/* Variable sizes: recv_bytes[q] from rank q, placed back to back in rank order.
 * recv_bytes must be the same on every rank (e.g. from mr_comm_allgather of the
 * sizes). Never allocates. */
int mr_comm_allgatherv(MrComm *c, const void *send, size_t bytes, void *recv,
                       const int64_t *recv_bytes, MrErr *e);
/* Gather to root only (recv and recv_bytes significant on root). */
int mr_comm_gatherv(MrComm *c, const void *send, size_t bytes, void *recv,
                    const int64_t *recv_bytes, int root, MrErr *e);
/* Exchange one int64 per pair: recv[q] = what rank q put in send[me]. */
int mr_comm_alltoall_i64(MrComm *c, const int64_t *send, int64_t *recv, MrErr *e);
/* Personalised exchange of bytes. send_bytes[q] bytes to rank q, taken back to back
 * from send in rank order; recv likewise. Messages over 2 GiB are split. */
int mr_comm_alltoallv(MrComm *c, const void *send, const int64_t *send_bytes, void *recv,
                      const int64_t *recv_bytes, MrErr *e);
/* The same without the large-message agreement (no extra collective): for
 * per-step exchanges whose buffers were sized, with a collective check, to stay
 * below 2 GiB per rank. Never allocates. */
int mr_comm_alltoallv_small(MrComm *c, const void *send, const int64_t *send_bytes, void *recv,
                            const int64_t *recv_bytes, MrErr *e);
/* Sum `counts[q]` floats of a P-part buffer into part `me` of every rank:
 * recv (counts[me] floats) = sum over ranks of their send[offset(me) .. +counts[me]). */
int mr_comm_reduce_scatter_f32(MrComm *c, const float *send, float *recv, const int64_t *counts,
                               MrErr *e);

/* Non-blocking sum allreduce of floats (for overlapping dense gradients with
 * embedding work). Start, do other work (collectives on c are allowed in between
 * since the request uses a private communicator), then wait. */
typedef struct MrCommRequest {
    void *impl;
} MrCommRequest;
int mr_comm_iallreduce_f32_start(MrComm *c, float *buf, size_t n, MrCommRequest *req, MrErr *e);
int mr_comm_iallreduce_wait(MrComm *c, MrCommRequest *req, MrErr *e);

#endif
