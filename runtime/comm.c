/* comm.c - the one communication interface of comm.h over its backends: NCCL for
 * GPU ranks (runtime/cuda/nccl.c), MPI for CPU ranks (comm_mpi.c).  Each rt_comm_*
 * call goes through the communicator's ops table (comm_impl.h); what is the same for
 * every backend (the layout groups, the accessors) is here once. */
#include "comm_impl.h"
#include "gpu.h"
#include "rt.h"

#include <stdio.h>

size_t rt_comm_dtype_size(enum rt_comm_dtype t)
{
	static const size_t size[] = { 1, 4, 8, 4, 2, 2 };
	return (unsigned)t < sizeof size / sizeof size[0] ? size[t] : 0;
}

const char *rt_comm_kind_name(enum rt_comm_kind k)
{
	return k == RT_COMM_MPI ? "MPI" : k == RT_COMM_NCCL ? "NCCL" : "?";
}

struct rt_comm *rt_comm_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	switch (o->kind) {
	case RT_COMM_NCCL:
		return rt_comm_nccl_init(o, err, errlen);
	case RT_COMM_MPI:
		return rt_comm_mpi_init(o, err, errlen);
	}
	snprintf(err, errlen, "unknown communication kind %d", (int)o->kind);
	return NULL;
}

struct rt_comm *rt_comm_split(struct rt_comm *parent, int color, int key)
{
	return parent->ops->split(parent, color, key);
}

void rt_comm_groups(struct rt_comm *world, const struct rt_layout *l,
		    struct rt_comm *groups[RT_GROUPS])
{
	for (int g = 0; g < RT_GROUPS; g++) {
		int color, key;
		rt_layout_group(l, world->rank, (enum rt_group)g, &color, &key);
		groups[g] = rt_comm_split(world, color, key);
		if (!groups[g] || groups[g]->rank != key)
			rt_comm_fail(world, "the %s group came out wrong (rank %d of it, expected %d)",
				     rt_group_name((enum rt_group)g), groups[g] ? groups[g]->rank : -1,
				     key);
	}
}

void rt_comm_free(struct rt_comm *c)
{
	if (c)
		c->ops->free(c);
}

int rt_comm_rank(const struct rt_comm *c) { return c->rank; }

void rt_comm_set_lane(struct rt_comm *c, int lane)
{
	RT_ASSERT(lane >= 0 && lane < RT_COMM_LANES);
	c->lane = lane;
}

int rt_comm_lane_stream(const struct rt_comm *c)
{
	return c->lane ? RT_STREAM_LANE + c->lane - 1 : RT_STREAM_COMM;
}
int rt_comm_size(const struct rt_comm *c) { return c->size; }
enum rt_comm_kind rt_comm_kind(const struct rt_comm *c) { return c->kind; }
struct rt_gpu *rt_comm_gpu(const struct rt_comm *c) { return c->world->gpu; }
struct rt_rdzv *rt_comm_rdzv(const struct rt_comm *c) { return c->world->z; }

void rt_comm_send(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream)
{
	c->ops->send(c, buf, count, t, peer, stream);
}

void rt_comm_recv(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream)
{
	c->ops->recv(c, buf, count, t, peer, stream);
}

void rt_comm_p2p_begin(struct rt_comm *c)
{
	if (c->ops->p2p_begin)
		c->ops->p2p_begin(c);
}

void rt_comm_p2p_end(struct rt_comm *c)
{
	if (c->ops->p2p_end)
		c->ops->p2p_end(c);
}

void rt_comm_sendrecv(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
		      size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream)
{
	c->ops->sendrecv(c, sbuf, scount, speer, rbuf, rcount, rpeer, t, stream);
}

void rt_comm_all_to_all(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream)
{
	c->ops->all_to_all(c, sbuf, rbuf, count, t, stream);
}

void rt_comm_all_to_allv(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			 const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			 const size_t *roffs, enum rt_comm_dtype t, void *stream)
{
	c->ops->all_to_allv(c, sbuf, scounts, soffs, rbuf, rcounts, roffs, t, stream);
}

void rt_comm_all_to_allv_dev(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			     size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t, void *stream)
{
	c->ops->all_to_allv_dev(c, sbuf, d_scounts, rbuf, rcap, h_rcounts, t, stream);
}

void rt_comm_all_to_all_fixed(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			      uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t, void *stream)
{
	c->ops->all_to_all_fixed(c, sbuf, d_scounts, rbuf, d_rcounts, cap, t, stream);
}

void rt_comm_all_reduce_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			    enum rt_comm_dtype t, void *stream)
{
	c->ops->all_reduce_sum(c, sbuf, rbuf, count, t, stream);
}

void rt_comm_reduce_scatter_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				enum rt_comm_dtype t, void *stream)
{
	c->ops->reduce_scatter_sum(c, sbuf, rbuf, count, t, stream);
}

void rt_comm_all_gather(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream)
{
	c->ops->all_gather(c, sbuf, rbuf, count, t, stream);
}

void rt_comm_sync(struct rt_comm *c, void *stream)
{
	c->ops->sync(c, stream);
}

void rt_comm_barrier(struct rt_comm *c, void *stream)
{
	c->ops->barrier(c, stream);
}
