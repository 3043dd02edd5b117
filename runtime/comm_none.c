/* comm_none.c - GPU communication when sluice is built without NCCL: every entry point
 * says so and fails; the ranks, the launcher and the rendezvous (rendezvous.c,
 * launch.c) work without it. */
#include "comm.h"

#ifndef SLUICE_HAVE_NCCL
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static const char why[] =
	"sluice was built without NCCL, so it cannot communicate between GPUs (CMake did not "
	"find nccl.h and libnccl, or SLUICE_WITH_CUDA/SLUICE_WITH_NCCL was OFF; see the "
	"configuration summary of the build)";

static _Noreturn void none(void)
{
	fprintf(stderr, "sluice: %s\n", why);
	exit(1);
}

size_t rt_comm_dtype_size(enum rt_comm_dtype t)
{
	static const size_t size[] = { 1, 4, 8, 4, 2, 2 };
	return (unsigned)t < sizeof size / sizeof size[0] ? size[t] : 0;
}

struct rt_comm *rt_comm_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	(void)o;
	snprintf(err, errlen, "%s", why);
	return NULL;
}

struct rt_comm *rt_comm_split(struct rt_comm *parent, int color, int key) { none(); }
void rt_comm_groups(struct rt_comm *world, const struct rt_layout *l,
		    struct rt_comm *groups[RT_GROUPS]) { none(); }
void rt_comm_free(struct rt_comm *c) { (void)c; }
int rt_comm_rank(const struct rt_comm *c) { none(); }
int rt_comm_size(const struct rt_comm *c) { none(); }
struct rt_gpu *rt_comm_gpu(const struct rt_comm *c) { none(); }
struct rt_rdzv *rt_comm_rdzv(const struct rt_comm *c) { none(); }
void rt_comm_send(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream) { none(); }
void rt_comm_recv(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream) { none(); }
void rt_comm_sendrecv(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
		      size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_all_to_all(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_all_to_allv(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			 const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			 const size_t *roffs, enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_all_to_allv_dev(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			     size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t,
			     void *stream) { none(); }
void rt_comm_all_to_all_fixed(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			      uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t,
			      void *stream) { none(); }
void rt_comm_all_reduce_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			    enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_reduce_scatter_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_all_gather(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream) { none(); }
void rt_comm_sync(struct rt_comm *c, void *stream) { none(); }
struct rt_comm_sym *rt_comm_sym_new(struct rt_comm *c, size_t rcap_bytes, int ctas, char *err,
				    size_t errlen)
{
	snprintf(err, errlen, "%s", why);
	return NULL;
}
uint64_t rt_comm_sym_rbuf(const struct rt_comm_sym *s) { none(); }
void rt_comm_sym_all_to_allv(struct rt_comm_sym *s, uint64_t sbuf, uint64_t d_scounts,
			     uint64_t d_rcounts, enum rt_comm_dtype t, void *stream) { none(); }
int rt_comm_sym_overflowed(struct rt_comm_sym *s, void *stream) { none(); }
void rt_comm_sym_free(struct rt_comm_sym *s) { (void)s; }

int rt_bench_comm(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: sluice bench comm --gpus N [--sizes 1M,8M,64M,256M]\n\n%s.\n", why);
			return 0;
		}
	fprintf(stderr, "sluice bench comm: %s\n", why);
	return 1;
}
#else
typedef int rt_comm_none_unused; /* built with NCCL: runtime/cuda/nccl.c has these */
#endif
