/* nccl.c - GPU communication through NCCL: the world communicator (from the
 * rendezvous's unique id), sub-communicators (ncclCommSplit), point-to-point and
 * collective operations, and the fault hooks the rendezvous's watchdog calls.
 *
 * Communicators are created in NCCL's blocking mode.  The watchdog thread of the
 * rendezvous calls ncclCommAbort when another rank fails and then ends the process, so
 * a rank blocked in a stream wait or an NCCL call is not waited for.  NCCL's
 * non-blocking mode (config.blocking = 0, every call answered ncclInProgress and
 * polled through ncclCommGetAsyncError) is there with SLUICE_NCCL_NONBLOCKING=1, but
 * measured on 2 x H200 it added about 45 us to every operation (a 1 MiB all-to-all:
 * 59 us against 13 us in blocking mode), so it is not the default.  The SM bound (minCTAs/maxCTAs) comes from the options or the
 * environment; NCCL's own variables (NCCL_NVLS_ENABLE and the rest) are read by NCCL
 * itself and never set here.
 *
 * Per-peer counts of an all-to-all live on the GPU when a kernel (the MoE router)
 * writes them, but ncclSend/ncclRecv take counts from the host.  Two ways are built:
 * rt_comm_all_to_allv_dev exchanges the counts (a small all-to-all), copies them to
 * pinned host memory and waits for the stream before sending the exact bytes; and
 * rt_comm_all_to_all_fixed sends worst-case blocks with the counts beside them, with no
 * host round trip.  'sluice bench comm' measures both against counts known on the
 * host.  A third way, a kernel over NCCL's registered symmetric memory that reads
 * the counts on the GPU, is in nccl_sym.c. */
#ifdef SLUICE_HAVE_NCCL
#include <nccl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_impl.h"
#include "gpu_impl.h"
#include "runtime/comm_impl.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

/* An NCCL communicator: the base every backend shares (comm_impl.h), then NCCL's own. */
struct nccl_comm {
	struct rt_comm base;
	ncclComm_t nc;
	/* world only */
	int blocking, min_ctas, max_ctas, a2a_p2p;
	/* count exchange: pinned host counts and device room for the received ones */
	int64_t *h_counts; /* 2*size: send counts, then received counts */
	rt_dptr d_rcounts;
	size_t *offs;      /* 4*size scratch */
};

static const struct rt_comm_ops nccl_ops;

/* The NCCL communicator behind a base one, and the world's. */
static struct nccl_comm *nc_of(const struct rt_comm *c)
{
	RT_ASSERT(c->ops == &nccl_ops);
	return (struct nccl_comm *)(uintptr_t)c;
}
#define W(c) nc_of((c)->world)

static ncclDataType_t nccl_type(enum rt_comm_dtype t)
{
	switch (t) {
	case RT_COMM_U8: return ncclUint8;
	case RT_COMM_I32: return ncclInt32;
	case RT_COMM_I64: return ncclInt64;
	case RT_COMM_F32: return ncclFloat32;
	case RT_COMM_BF16: return ncclBfloat16;
	case RT_COMM_F16: return ncclFloat16;
	}
	RT_BUG("bad communication data type %d", (int)t);
}

/* ---- the communicators the watchdog watches ------------------------------------ */

#define MAX_COMMS 64
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static ncclComm_t registered[MAX_COMMS];
static int n_registered;

static void reg_add(ncclComm_t nc)
{
	pthread_mutex_lock(&reg_lock);
	RT_ASSERT(n_registered < MAX_COMMS);
	registered[n_registered++] = nc;
	pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(ncclComm_t nc)
{
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < n_registered; i++)
		if (registered[i] == nc) {
			registered[i] = registered[--n_registered];
			break;
		}
	pthread_mutex_unlock(&reg_lock);
}

/* The watchdog's hooks.  Abort must not wait for a lock that a stuck thread holds. */
static void hook_abort(void *ctx)
{
	(void)ctx;
	int locked = pthread_mutex_trylock(&reg_lock) == 0;
	for (int i = n_registered - 1; i >= 0; i--)
		ncclCommAbort(registered[i]);
	n_registered = 0;
	if (locked)
		pthread_mutex_unlock(&reg_lock);
}

static int hook_poll(void *ctx, char *msg, size_t n)
{
	(void)ctx;
	int bad = 0;
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < n_registered && !bad; i++) {
		ncclResult_t st = ncclSuccess;
		ncclResult_t r = ncclCommGetAsyncError(registered[i], &st);
		if (r != ncclSuccess)
			st = r;
		if (st != ncclSuccess && st != ncclInProgress) {
			snprintf(msg, n, "NCCL error: %s (%s)", ncclGetErrorString(st),
				 ncclGetLastError(registered[i]));
			bad = 1;
		}
	}
	pthread_mutex_unlock(&reg_lock);
	return bad;
}

/* ---- checking ------------------------------------------------------------------- */

/* In non-blocking mode a call may still be running: wait for it (a fault meanwhile is
 * the watchdog's to handle). */
static ncclResult_t settle(ncclComm_t nc, ncclResult_t r)
{
	while (r == ncclInProgress) {
		ncclResult_t st;
		ncclResult_t q = ncclCommGetAsyncError(nc, &st);
		r = q != ncclSuccess ? q : st;
		if (r == ncclInProgress)
			sched_yield();
	}
	return r;
}

static void check(struct rt_comm *c, ncclComm_t nc, ncclResult_t r, const char *what)
{
	r = settle(nc, r);
	if (r != ncclSuccess)
		rt_comm_fail(c, "%.*s failed: %s (%s)", (int)strcspn(what, "("), what,
			     ncclGetErrorString(r), nc ? ncclGetLastError(nc) : "");
}
#define NCCL(c, call) check((c), nc_of(c)->nc, (call), #call)

static void *stream_of(struct rt_comm *c, void *stream)
{
	return stream ? stream : rt_gpu_stream(c->world->gpu, rt_comm_lane_stream(c));
}

/* ---- communicators ---------------------------------------------------------------- */

static int env_int(const char *name, int dflt)
{
	const char *s = getenv(name);
	return s && *s ? atoi(s) : dflt;
}

static ncclConfig_t make_config(const struct nccl_comm *w)
{
	ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
	cfg.blocking = w->blocking;
	if (w->min_ctas > 0)
		cfg.minCTAs = w->min_ctas;
	if (w->max_ctas > 0)
		cfg.maxCTAs = w->max_ctas;
	return cfg;
}

struct rt_comm *rt_comm_nccl_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	struct rt_rank_env env;
	if (rt_rank_env_read(&env, err, errlen))
		return NULL;
	int ngpu = rt_gpu_count();
	if (ngpu == 0) {
		snprintf(err, errlen, "no GPU: %s", rt_gpu_why_none());
		return NULL;
	}
	if (env.local_rank >= ngpu) {
		snprintf(err, errlen, "rank %d has local rank %d, but this node has %d GPU%s", env.rank,
			 env.local_rank, ngpu, ngpu == 1 ? "" : "s");
		return NULL;
	}
	struct nccl_comm *n = rt_calloc(1, sizeof *n);
	struct rt_comm *c = &n->base;
	c->ops = &nccl_ops;
	c->kind = RT_COMM_NCCL;
	c->world = c;
	c->rank = env.rank;
	c->size = env.world;
	n->blocking = env_int("SLUICE_NCCL_NONBLOCKING", 0) ? 0 : 1;
	n->min_ctas = o->min_ctas > 0 ? o->min_ctas : env_int("SLUICE_COMM_MIN_CTAS", 0);
	n->max_ctas = o->max_ctas > 0 ? o->max_ctas : env_int("SLUICE_COMM_MAX_CTAS", 0);
	const char *a2a = getenv("SLUICE_COMM_A2A");
	n->a2a_p2p = a2a && !strcmp(a2a, "p2p");
	size_t count_room = 256 * ((sizeof(int64_t) * (size_t)c->size + 255) / 256);
	c->gpu = rt_gpu_open(env.local_rank, o->arena_bytes + count_room);
	if (!c->gpu) {
		snprintf(err, errlen, "cannot open GPU %d (see above)", env.local_rank);
		free(n);
		return NULL;
	}
	n->d_rcounts = rt_gpu_alloc(c->gpu, sizeof(int64_t) * (size_t)c->size, 256);
	n->h_counts = rt_gpu_host_alloc(2 * sizeof(int64_t) * (size_t)c->size);
	n->offs = rt_calloc(4 * (size_t)c->size, sizeof *n->offs);
	ncclUniqueId id;
	memset(&id, 0, sizeof id);
	ncclResult_t r = ncclSuccess;
	if (c->rank == 0 && (r = ncclGetUniqueId(&id)) != ncclSuccess) {
		snprintf(err, errlen, "ncclGetUniqueId: %s (%s)", ncclGetErrorString(r),
			 ncclGetLastError(NULL));
		goto fail;
	}
	/* what every rank must agree on: the program, the world and NCCL's version */
	int version = 0;
	ncclGetVersion(&version);
	uint64_t h = rt_hash64(o->program, o->program ? o->program_len : 0, RT_HASH64_INIT);
	h = rt_hash64(&version, sizeof version, h);
	struct rt_rdzv_config rc = {
		.rank = c->rank,
		.world = c->size,
		.addr = env.master_addr,
		.port = env.master_port,
		.listen_fd = env.listen_fd,
		.hash = h,
		.timeout_s = o->timeout_s,
		.op_timeout_s = o->op_timeout_s,
		.hooks = { hook_abort, hook_poll, c },
	};
	c->z = rt_rdzv_open(&rc, &id, sizeof id, err, errlen);
	if (!c->z)
		goto fail;
	ncclConfig_t cfg = make_config(n);
	rt_rdzv_op_begin(c->z, "NCCL communicator set-up");
	r = ncclCommInitRankConfig(&n->nc, c->size, id, c->rank, &cfg);
	if (n->nc)
		reg_add(n->nc);
	NCCL(c, r);
	rt_rdzv_op_end(c->z);
	return c;
fail:
	rt_gpu_host_free(n->h_counts);
	rt_gpu_close(c->gpu);
	free(n->offs);
	free(n);
	return NULL;
}

static struct rt_comm *nccl_split(struct rt_comm *parent, int color, int key)
{
	struct nccl_comm *w = W(parent);
	ncclConfig_t cfg = make_config(w);
	ncclComm_t nc = NULL;
	rt_rdzv_op_begin(w->base.z, "ncclCommSplit");
	ncclResult_t r = ncclCommSplit(nc_of(parent)->nc, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key,
				       &nc, &cfg);
	check(parent, nc_of(parent)->nc, r, "ncclCommSplit");
	/* non-blocking: NCCL writes the new handle when its set-up job gets that far */
	while (!w->blocking && color >= 0 && !__atomic_load_n(&nc, __ATOMIC_ACQUIRE))
		sched_yield();
	if (nc) {
		reg_add(nc);
		check(parent, nc, settle(nc, ncclInProgress), "ncclCommSplit (new communicator)");
	}
	rt_rdzv_op_end(w->base.z);
	if (!nc)
		return NULL;
	struct nccl_comm *n = rt_calloc(1, sizeof *n);
	struct rt_comm *c = &n->base;
	c->ops = &nccl_ops;
	c->kind = RT_COMM_NCCL;
	c->world = &w->base;
	n->nc = nc;
	n->a2a_p2p = w->a2a_p2p;
	NCCL(c, ncclCommCount(nc, &c->size));
	NCCL(c, ncclCommUserRank(nc, &c->rank));
	n->offs = rt_calloc(4 * (size_t)c->size, sizeof *n->offs);
	return c;
}

static void nccl_free(struct rt_comm *c)
{
	struct nccl_comm *n = nc_of(c);
	struct rt_comm *w = c->world;
	rt_rdzv_op_begin(w->z, "ncclCommFinalize");
	NCCL(c, ncclCommFinalize(n->nc));
	rt_rdzv_op_end(w->z);
	reg_remove(n->nc);
	ncclCommDestroy(n->nc);
	free(n->offs);
	if (c != w) {
		free(n);
		return;
	}
	rt_rdzv_close(c->z);
	rt_gpu_host_free(n->h_counts);
	rt_gpu_close(c->gpu);
	free(n);
}

void *rt_comm_nccl(const struct rt_comm *c) { return c->kind == RT_COMM_NCCL ? nc_of(c)->nc : NULL; }
int rt_comm_max_ctas(const struct rt_comm *c) { return W(c)->max_ctas; }
void *rt_comm_stream(struct rt_comm *c, void *stream) { return stream_of(c, stream); }

/* ---- operations ------------------------------------------------------------------- */

#define PTR(d) ((void *)(uintptr_t)(d))

static void nccl_send(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		      void *stream)
{
	NCCL(c, ncclSend(PTR(buf), count, nccl_type(t), peer, nc_of(c)->nc, stream_of(c, stream)));
}

static void nccl_recv(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		      void *stream)
{
	NCCL(c, ncclRecv(PTR(buf), count, nccl_type(t), peer, nc_of(c)->nc, stream_of(c, stream)));
}

static void nccl_sendrecv(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
			  size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream)
{
	cudaStream_t s = stream_of(c, stream);
	ncclComm_t nc = nc_of(c)->nc;
	NCCL(c, ncclGroupStart());
	NCCL(c, ncclSend(PTR(sbuf), scount, nccl_type(t), speer, nc, s));
	NCCL(c, ncclRecv(PTR(rbuf), rcount, nccl_type(t), rpeer, nc, s));
	NCCL(c, ncclGroupEnd());
}

/* The grouped sends and receives of an all-to-allv, offsets in elements. */
static void a2av(struct rt_comm *c, uint64_t sbuf, const size_t *scounts, const size_t *soffs,
		 uint64_t rbuf, const size_t *rcounts, const size_t *roffs, enum rt_comm_dtype t,
		 cudaStream_t s)
{
	size_t es = rt_comm_dtype_size(t);
	ncclDataType_t nt = nccl_type(t);
	ncclComm_t nc = nc_of(c)->nc;
	NCCL(c, ncclGroupStart());
	for (int p = 0; p < c->size; p++) {
		if (scounts[p])
			NCCL(c, ncclSend(PTR(sbuf + soffs[p] * es), scounts[p], nt, p, nc, s));
		if (rcounts[p])
			NCCL(c, ncclRecv(PTR(rbuf + roffs[p] * es), rcounts[p], nt, p, nc, s));
	}
	NCCL(c, ncclGroupEnd());
}

static void nccl_all_to_all(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			    enum rt_comm_dtype t, void *stream)
{
	struct nccl_comm *n = nc_of(c);
	cudaStream_t s = stream_of(c, stream);
	if (!n->a2a_p2p) {
		NCCL(c, ncclAlltoAll(PTR(sbuf), PTR(rbuf), count, nccl_type(t), n->nc, s));
		return;
	}
	size_t *cnt = n->offs, *off = n->offs + c->size;
	for (int p = 0; p < c->size; p++) {
		cnt[p] = count;
		off[p] = (size_t)p * count;
	}
	a2av(c, sbuf, cnt, off, rbuf, cnt, off, t, s);
}

static void nccl_all_to_allv(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			     const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			     const size_t *roffs, enum rt_comm_dtype t, void *stream)
{
	a2av(c, sbuf, scounts, soffs, rbuf, rcounts, roffs, t, stream_of(c, stream));
}

static void nccl_all_to_allv_dev(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts,
				 uint64_t rbuf, size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t,
				 void *stream)
{
	struct nccl_comm *w = W(c);
	cudaStream_t s = stream_of(c, stream);
	size_t n = (size_t)c->size;
	/* 1. the counts go round: rank q's d_rcounts[p] = rank p's d_scounts[q].  A
	 *    sub-communicator uses the world's room for them, which fits (size <= world). */
	NCCL(c, ncclAlltoAll(PTR(d_scounts), PTR(w->d_rcounts), 1, ncclInt64, nc_of(c)->nc, s));
	/* 2. both vectors to the host, and wait: the host needs them to post the sends */
	if (rt_gpu_bind(w->base.gpu) ||
	    CU(cuMemcpyDtoHAsync, (w->h_counts, (CUdeviceptr)d_scounts, n * sizeof(int64_t), s)) ||
	    CU(cuMemcpyDtoHAsync, (w->h_counts + n, w->d_rcounts, n * sizeof(int64_t), s)))
		rt_comm_fail(c, "copying the all-to-all counts to the host failed");
	rt_comm_sync(c, s);
	/* 3. the exact exchange, packed in peer order on both sides */
	size_t *sc = nc_of(c)->offs, *so = sc + n, *rc = so + n, *ro = rc + n, stot = 0, rtot = 0;
	for (size_t p = 0; p < n; p++) {
		int64_t a = w->h_counts[p], b = w->h_counts[n + p];
		if (a < 0 || b < 0)
			rt_comm_fail(c, "all-to-all: a negative count (%lld to rank %zu, %lld from it)",
				     (long long)a, p, (long long)b);
		sc[p] = (size_t)a;
		so[p] = stot;
		stot += sc[p];
		rc[p] = (size_t)b;
		ro[p] = rtot;
		rtot += rc[p];
		h_rcounts[p] = rc[p];
	}
	if (rtot > rcap)
		rt_comm_fail(c, "all-to-all: rank %d would receive %zu elements, room for %zu", c->rank,
			     rtot, rcap);
	a2av(c, sbuf, sc, so, rbuf, rc, ro, t, s);
}

static void nccl_all_to_all_fixed(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts,
				  uint64_t rbuf, uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t,
				  void *stream)
{
	cudaStream_t s = stream_of(c, stream);
	ncclComm_t nc = nc_of(c)->nc;
	NCCL(c, ncclGroupStart());
	NCCL(c, ncclAlltoAll(PTR(d_scounts), PTR(d_rcounts), 1, ncclInt64, nc, s));
	NCCL(c, ncclAlltoAll(PTR(sbuf), PTR(rbuf), cap, nccl_type(t), nc, s));
	NCCL(c, ncclGroupEnd());
}

static void nccl_all_reduce_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				enum rt_comm_dtype t, void *stream)
{
	NCCL(c, ncclAllReduce(PTR(sbuf), PTR(rbuf), count, nccl_type(t), ncclSum, nc_of(c)->nc,
			      stream_of(c, stream)));
}

static void nccl_reduce_scatter_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				    enum rt_comm_dtype t, void *stream)
{
	NCCL(c, ncclReduceScatter(PTR(sbuf), PTR(rbuf), count, nccl_type(t), ncclSum, nc_of(c)->nc,
				  stream_of(c, stream)));
}

static void nccl_all_gather(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			    enum rt_comm_dtype t, void *stream)
{
	NCCL(c, ncclAllGather(PTR(sbuf), PTR(rbuf), count, nccl_type(t), nc_of(c)->nc,
			      stream_of(c, stream)));
}

static void nccl_sync(struct rt_comm *c, void *stream)
{
	struct rt_comm *w = c->world;
	rt_rdzv_op_begin(w->z, "rt_comm_sync");
	if (rt_gpu_bind(w->gpu) || CU(cuStreamSynchronize, (stream_of(c, stream))))
		rt_comm_fail(c, "waiting for the communication stream failed");
	rt_rdzv_op_end(w->z);
}

/* An all-reduce of one word of the world's count room, then a wait for the stream. */
static void nccl_barrier(struct rt_comm *c, void *stream)
{
	nccl_all_reduce_sum(c, W(c)->d_rcounts, W(c)->d_rcounts, 1, RT_COMM_I64, stream);
	nccl_sync(c, stream);
}

static void nccl_p2p_begin(struct rt_comm *c)
{
	NCCL(c, ncclGroupStart());
}

static void nccl_p2p_end(struct rt_comm *c)
{
	NCCL(c, ncclGroupEnd());
}

static const struct rt_comm_ops nccl_ops = {
	.split = nccl_split,
	.free = nccl_free,
	.send = nccl_send,
	.recv = nccl_recv,
	.sendrecv = nccl_sendrecv,
	.all_to_all = nccl_all_to_all,
	.all_to_allv = nccl_all_to_allv,
	.all_to_allv_dev = nccl_all_to_allv_dev,
	.all_to_all_fixed = nccl_all_to_all_fixed,
	.all_reduce_sum = nccl_all_reduce_sum,
	.reduce_scatter_sum = nccl_reduce_scatter_sum,
	.all_gather = nccl_all_gather,
	.sync = nccl_sync,
	.barrier = nccl_barrier,
	.p2p_begin = nccl_p2p_begin,
	.p2p_end = nccl_p2p_end,
};
#else
typedef int rt_nccl_unused; /* without NCCL: runtime/comm_none.c */
#endif
