/* comm_impl.h - private to runtime/: what a communication backend (NCCL in
 * runtime/cuda/nccl.c, MPI in comm_mpi.c) fills in behind runtime/comm.h.
 *
 * A backend's communicator struct starts with a struct rt_comm, whose ops table the
 * rt_comm_* functions of comm.c call through, as QBE's Target does for its targets.
 * comm.c does the rest once: checking a call's arguments that every backend would
 * check alike, the layout groups, the accessors. */
#ifndef SLUICE_COMM_IMPL_H
#define SLUICE_COMM_IMPL_H

#include "comm.h"

struct rt_comm_ops {
	/* a sub-communicator (NULL for color < 0), collective over parent */
	struct rt_comm *(*split)(struct rt_comm *parent, int color, int key);
	/* frees c; for the world communicator also closes the rendezvous and the backend */
	void (*free)(struct rt_comm *c);
	void (*send)(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		     void *stream);
	void (*recv)(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		     void *stream);
	void (*sendrecv)(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
			 size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream);
	void (*all_to_all)(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			   enum rt_comm_dtype t, void *stream);
	void (*all_to_allv)(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			    const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			    const size_t *roffs, enum rt_comm_dtype t, void *stream);
	void (*all_to_allv_dev)(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
				size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t, void *stream);
	void (*all_to_all_fixed)(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
				 uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t, void *stream);
	void (*all_reduce_sum)(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			       enum rt_comm_dtype t, void *stream);
	void (*reduce_scatter_sum)(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				   enum rt_comm_dtype t, void *stream);
	void (*all_gather)(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			   enum rt_comm_dtype t, void *stream);
	void (*sync)(struct rt_comm *c, void *stream);
	/* point-to-point calls between p2p_begin and p2p_end go out together (one NCCL
	 * group); NULL where every call already proceeds on its own (MPI) */
	void (*p2p_begin)(struct rt_comm *c);
	void (*p2p_end)(struct rt_comm *c);
	void (*barrier)(struct rt_comm *c, void *stream);
};

struct rt_comm {
	const struct rt_comm_ops *ops;
	enum rt_comm_kind kind;
	int rank, size;
	struct rt_comm *world; /* the world communicator (itself for the world) */
	struct rt_rdzv *z;     /* the world's rendezvous and fault channel */
	struct rt_gpu *gpu;    /* this rank's GPU (NCCL), NULL on CPU ranks */
	int lane;              /* rt_comm_set_lane: 0 the communication stream */
};

/* The backends' world communicators: NULL with a message when this build lacks the
 * backend (comm_none.c) or it cannot start. */
struct rt_comm *rt_comm_nccl_init(const struct rt_comm_opts *o, char *err, size_t errlen);
struct rt_comm *rt_comm_mpi_init(const struct rt_comm_opts *o, char *err, size_t errlen);
#ifndef SLUICE_HAVE_MPI
extern const char rt_comm_no_mpi[]; /* why there are no CPU ranks (comm_none.c) */
#endif

#endif
