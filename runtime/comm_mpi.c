/* comm_mpi.c - communication between CPU ranks through MPI (Open MPI): the other
 * backend of comm.h, with the same calls and completion rules as NCCL's.
 *
 * NCCL queues every call on a stream and rt_comm_sync waits for the stream.  Here
 * point-to-point calls start MPI_Isend/MPI_Irecv and keep the request on their
 * communicator; rt_comm_sync waits for all of them at once, so a schedule may post a
 * send and a receive to the same peer in either order (1F1B does) without either
 * blocking the other.  Collectives are MPI's blocking ones and are done when they
 * return.  Every MPI call is checked (MPI_ERRORS_RETURN, CHECK_MPI naming the call).
 *
 * Faults are the rendezvous's, as for GPUs: every blocking MPI call runs between
 * rt_rdzv_op_begin and op_end, so a hang past SLUICE_COMM_TIMEOUT is reported, and a
 * rank that dies or fails is named to every other rank, which then _exits 1 from the
 * watchdog thread.  _exit also ends a thread blocked inside MPI, so the abort hook has
 * nothing to do; MPI_Abort is not used, since over a dead peer it may wait itself.
 * mpirun, seeing a rank exit 1 (or die), ends the ranks still running.
 *
 * Simplifications, on purpose: element counts of one call fit in an int (MPI's
 * counts; a larger call fails with a message); sums of BF16/F16 are refused rather
 * than widened; a communicator's calls come from one thread at a time. */
#ifdef SLUICE_HAVE_MPI
#include <mpi.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "comm_impl.h"
#include "rt.h"

struct mpi_comm {
	struct rt_comm base;
	MPI_Comm mc;
	MPI_Request *req; /* started, not yet waited for */
	int nreq, req_cap;
	int *ints;        /* 4*size: counts and displacements of an all-to-allv */
	int64_t *counts;  /* size: received counts of an all-to-allv with counts exchanged */
	void *tmp;        /* a copy of a send buffer that overlaps the receive buffer */
	size_t tmp_cap;
	int started_mpi;  /* world: this process called MPI_Init_thread */
};

static const struct rt_comm_ops mpi_ops;

static struct mpi_comm *mc_of(struct rt_comm *c)
{
	RT_ASSERT(c->ops == &mpi_ops);
	return (struct mpi_comm *)c;
}

#define PTR(d) ((void *)(uintptr_t)(d))

/* ---- checking ---------------------------------------------------------------------- */

static void mpi_check(struct rt_comm *c, int rc, const char *what)
{
	if (rc == MPI_SUCCESS)
		return;
	/* A dead peer can make a call fail here before the fault channel has named it, and
	 * the channel's account is the better one: give it a moment first. */
	for (int i = 0; i < 30 && !rt_rdzv_dying(); i++)
		usleep(100 * 1000);
	if (rt_rdzv_dying())
		for (;;)
			pause(); /* the watchdog is ending the process */
	char s[MPI_MAX_ERROR_STRING];
	int n = 0;
	if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS)
		snprintf(s, sizeof s, "MPI error %d", rc);
	rt_comm_fail(c, "%.*s failed: %s", (int)strcspn(what, "("), what, s);
}
#define CHECK_MPI(c, call) mpi_check((c), (call), #call)

/* A blocking call, watched for hangs. */
#define BLOCKING_MPI(c, name, call)                                                      \
	do {                                                                             \
		rt_rdzv_op_begin((c)->world->z, name);                                   \
		CHECK_MPI((c), call);                                                    \
		rt_rdzv_op_end((c)->world->z);                                           \
	} while (0)

static int icount(struct rt_comm *c, size_t n, const char *what)
{
	if (n > INT_MAX)
		rt_comm_fail(c, "%s over MPI: %zu elements in one call, at most %d", what, n, INT_MAX);
	return (int)n;
}

static MPI_Datatype move_type(enum rt_comm_dtype t)
{
	switch (t) {
	case RT_COMM_U8: return MPI_UINT8_T;
	case RT_COMM_I32: return MPI_INT32_T;
	case RT_COMM_I64: return MPI_INT64_T;
	case RT_COMM_F32: return MPI_FLOAT;
	case RT_COMM_BF16:
	case RT_COMM_F16: return MPI_UINT16_T; /* moved, never summed */
	}
	RT_BUG("bad communication data type %d", (int)t);
}

static MPI_Datatype sum_type(struct rt_comm *c, enum rt_comm_dtype t, const char *what)
{
	if (t == RT_COMM_BF16 || t == RT_COMM_F16)
		rt_comm_fail(c, "%s over MPI: sums of %s are not supported (F32, I32 and I64 are); "
			     "sum in F32 on CPU ranks", what, t == RT_COMM_BF16 ? "BF16" : "F16");
	return move_type(t);
}

/* MPI forbids a send buffer that overlaps the receive buffer, which NCCL allows (its
 * in-place calls): such a send buffer is copied aside first. */
static const void *apart(struct mpi_comm *m, uint64_t sbuf, size_t sbytes, uint64_t rbuf,
			 size_t rbytes)
{
	if (!sbytes || !rbytes || sbuf >= rbuf + rbytes || rbuf >= sbuf + sbytes)
		return PTR(sbuf);
	if (m->tmp_cap < sbytes) {
		free(m->tmp);
		m->tmp = rt_malloc(sbytes);
		m->tmp_cap = sbytes;
	}
	memcpy(m->tmp, PTR(sbuf), sbytes);
	return m->tmp;
}

/* ---- communicators ------------------------------------------------------------------ */

static struct mpi_comm *new_comm(struct rt_comm *world, MPI_Comm mc)
{
	struct mpi_comm *m = rt_calloc(1, sizeof *m);
	struct rt_comm *c = &m->base;
	c->ops = &mpi_ops;
	c->kind = RT_COMM_MPI;
	c->world = world ? world : c;
	m->mc = mc;
	CHECK_MPI(c, MPI_Comm_set_errhandler(mc, MPI_ERRORS_RETURN));
	CHECK_MPI(c, MPI_Comm_rank(mc, &c->rank));
	CHECK_MPI(c, MPI_Comm_size(mc, &c->size));
	m->ints = rt_calloc(4 * (size_t)c->size, sizeof *m->ints);
	m->counts = rt_calloc((size_t)c->size, sizeof *m->counts);
	return m;
}

/* Rank 0's rendezvous socket on an ephemeral port of every address: its port, or -1. */
static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { 0 };
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	socklen_t len = sizeof sa;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 1024) ||
	    getsockname(fd, (struct sockaddr *)&sa, &len)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static const char *mpi_why(int rc, char *s)
{
	int n = 0;
	if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS)
		snprintf(s, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
	return s;
}

struct rt_comm *rt_comm_mpi_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	struct rt_rank_env env;
	char why[MPI_MAX_ERROR_STRING];
	if (rt_rank_env_read(&env, err, errlen))
		return NULL;
	int inited = 0, finalized = 0, provided = 0, started = 0, rc;
	MPI_Finalized(&finalized);
	if (finalized) {
		snprintf(err, errlen, "MPI was already finalized in this process (one MPI world "
			 "communicator per process)");
		return NULL;
	}
	MPI_Initialized(&inited);
	if (!inited) {
		rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
		if (rc != MPI_SUCCESS) {
			snprintf(err, errlen, "MPI_Init_thread failed: %s", mpi_why(rc, why));
			return NULL;
		}
		started = 1;
	} else {
		MPI_Query_thread(&provided);
	}
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	if (provided < MPI_THREAD_SERIALIZED) {
		snprintf(err, errlen, "this MPI offers thread level %d, below MPI_THREAD_SERIALIZED "
			 "(sluice's fault channel runs a thread beside MPI)", provided);
		return NULL;
	}
	int rank = 0, size = 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (rank != env.rank || size != env.world) {
		snprintf(err, errlen, "the rank environment (%s) says rank %d of %d, but MPI says rank "
			 "%d of %d: start CPU ranks with '--ranks N' or 'mpirun -np N'", env.source,
			 env.rank, env.world, rank, size);
		return NULL;
	}
	MPI_Comm world_mc;
	rc = MPI_Comm_dup(MPI_COMM_WORLD, &world_mc);
	if (rc != MPI_SUCCESS) {
		snprintf(err, errlen, "MPI_Comm_dup failed: %s", mpi_why(rc, why));
		return NULL;
	}
	struct mpi_comm *m = new_comm(NULL, world_mc);
	struct rt_comm *c = &m->base;
	m->started_mpi = started;
	/* The rendezvous port: MASTER_PORT when set, else one rank 0 picks and sends out
	 * over MPI, so that jobs on one machine never meet on the same port. */
	int port = env.master_port, listen_fd = env.listen_fd;
	const char *mp = getenv("MASTER_PORT");
	if ((!mp || !*mp) && size > 1) {
		int32_t p = -1;
		int p0 = 0;
		if (rank == 0 && (listen_fd = listen_any(&p0)) >= 0)
			p = p0;
		rc = MPI_Bcast(&p, 1, MPI_INT32_T, 0, world_mc);
		if (rc != MPI_SUCCESS || p <= 0) {
			snprintf(err, errlen, "rank 0 could not open a port for the rendezvous: %s",
				 rc != MPI_SUCCESS ? mpi_why(rc, why) : strerror(errno));
			goto fail;
		}
		port = p;
	}
	int version = 0, subversion = 0;
	MPI_Get_version(&version, &subversion);
	uint64_t h = rt_hash64(o->program, o->program ? o->program_len : 0, RT_HASH64_INIT);
	h = rt_hash64("MPI", 3, h);
	h = rt_hash64(&version, sizeof version, h);
	struct rt_rdzv_config rc_cfg = {
		.rank = rank,
		.world = size,
		.addr = env.master_addr,
		.port = port,
		.listen_fd = listen_fd,
		.hash = h,
		.timeout_s = o->timeout_s,
		.op_timeout_s = o->op_timeout_s,
	};
	char blob[8] = "MPI";
	c->z = rt_rdzv_open(&rc_cfg, blob, sizeof blob, err, errlen);
	if (!c->z)
		goto fail;
	return c;
fail: /* (rt_rdzv_open has closed the listening socket) */
	MPI_Comm_free(&m->mc);
	free(m->ints);
	free(m->counts);
	free(m);
	return NULL;
}

static struct rt_comm *mpi_split(struct rt_comm *parent, int color, int key)
{
	MPI_Comm mc = MPI_COMM_NULL;
	BLOCKING_MPI(parent, "MPI_Comm_split",
		     MPI_Comm_split(mc_of(parent)->mc, color < 0 ? MPI_UNDEFINED : color, key, &mc));
	if (mc == MPI_COMM_NULL)
		return NULL;
	return &new_comm(parent->world, mc)->base;
}

static void mpi_sync(struct rt_comm *c, void *stream);

static void mpi_free(struct rt_comm *c)
{
	struct mpi_comm *m = mc_of(c);
	mpi_sync(c, NULL);
	free(m->req);
	free(m->ints);
	free(m->counts);
	free(m->tmp);
	if (c != c->world) {
		CHECK_MPI(c, MPI_Comm_free(&m->mc));
		free(m);
		return;
	}
	/* the clean end: every rank gets here (a fault meanwhile still ends the job), then
	 * MPI is stopped without a watch, every rank being past the same point */
	CHECK_MPI(c, MPI_Comm_free(&m->mc));
	rt_rdzv_close(c->z);
	if (m->started_mpi)
		MPI_Finalize();
	free(m);
}

/* ---- operations ------------------------------------------------------------------------ */

static MPI_Request *new_request(struct mpi_comm *m)
{
	if (m->nreq == m->req_cap) {
		m->req_cap = m->req_cap ? 2 * m->req_cap : 16;
		m->req = rt_realloc(m->req, (size_t)m->req_cap * sizeof *m->req);
	}
	return &m->req[m->nreq++];
}

static void mpi_send(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		     void *stream)
{
	struct mpi_comm *m = mc_of(c);
	CHECK_MPI(c, MPI_Isend(PTR(buf), icount(c, count, "send"), move_type(t), peer, 0, m->mc,
			       new_request(m)));
}

static void mpi_recv(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		     void *stream)
{
	struct mpi_comm *m = mc_of(c);
	CHECK_MPI(c, MPI_Irecv(PTR(buf), icount(c, count, "receive"), move_type(t), peer, 0, m->mc,
			       new_request(m)));
}

static void mpi_sendrecv(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
			 size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream)
{
	mpi_recv(c, rbuf, rcount, t, rpeer, stream);
	mpi_send(c, sbuf, scount, t, speer, stream);
}

static void mpi_sync(struct rt_comm *c, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	if (!m->nreq)
		return;
	BLOCKING_MPI(c, "rt_comm_sync (MPI_Waitall)",
		     MPI_Waitall(m->nreq, m->req, MPI_STATUSES_IGNORE));
	m->nreq = 0;
}

static void mpi_all_to_all(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			   enum rt_comm_dtype t, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	size_t bytes = (size_t)c->size * count * rt_comm_dtype_size(t);
	int n = icount(c, count, "all-to-all");
	BLOCKING_MPI(c, "all-to-all (MPI_Alltoall)",
		     MPI_Alltoall(apart(m, sbuf, bytes, rbuf, bytes), n, move_type(t), PTR(rbuf), n,
				  move_type(t), m->mc));
}

/* counts and element offsets into int: the extent in elements of what they cover */
static size_t to_ints(struct rt_comm *c, const size_t *counts, const size_t *offs, int *ic,
		      int *io)
{
	size_t end = 0;
	for (int p = 0; p < c->size; p++) {
		ic[p] = icount(c, counts[p], "all-to-allv");
		io[p] = icount(c, offs[p], "all-to-allv (offset)");
		if (counts[p] && offs[p] + counts[p] > end)
			end = offs[p] + counts[p];
	}
	return end;
}

static void mpi_all_to_allv(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			    const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			    const size_t *roffs, enum rt_comm_dtype t, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	int *sc = m->ints, *so = sc + c->size, *rc = so + c->size, *ro = rc + c->size;
	size_t es = rt_comm_dtype_size(t);
	size_t send_end = to_ints(c, scounts, soffs, sc, so);
	size_t recv_end = to_ints(c, rcounts, roffs, rc, ro);
	BLOCKING_MPI(c, "all-to-allv (MPI_Alltoallv)",
		     MPI_Alltoallv(apart(m, sbuf, send_end * es, rbuf, recv_end * es), sc, so,
				   move_type(t), PTR(rbuf), rc, ro, move_type(t), m->mc));
}

static void mpi_all_to_allv_dev(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts,
				uint64_t rbuf, size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t,
				void *stream)
{
	struct mpi_comm *m = mc_of(c);
	const int64_t *scounts = PTR(d_scounts);
	int n = c->size;
	int *sc = m->ints, *so = sc + n, *rc = so + n, *ro = rc + n;
	/* the counts go round: this rank's counts[p] = rank p's scounts[this rank] */
	BLOCKING_MPI(c, "all-to-all of counts (MPI_Alltoall)",
		     MPI_Alltoall(scounts, 1, MPI_INT64_T, m->counts, 1, MPI_INT64_T, m->mc));
	size_t stot = 0, rtot = 0;
	for (int p = 0; p < n; p++) {
		int64_t a = scounts[p], b = m->counts[p];
		if (a < 0 || b < 0)
			rt_comm_fail(c, "all-to-all: a negative count (%lld to rank %d, %lld from it)",
				     (long long)a, p, (long long)b);
		sc[p] = icount(c, (size_t)a, "all-to-allv");
		so[p] = icount(c, stot, "all-to-allv (offset)");
		rc[p] = icount(c, (size_t)b, "all-to-allv");
		ro[p] = icount(c, rtot, "all-to-allv (offset)");
		stot += (size_t)a;
		rtot += (size_t)b;
		h_rcounts[p] = (size_t)b;
	}
	if (rtot > rcap)
		rt_comm_fail(c, "all-to-all: rank %d would receive %zu elements, room for %zu", c->rank,
			     rtot, rcap);
	size_t es = rt_comm_dtype_size(t);
	BLOCKING_MPI(c, "all-to-allv (MPI_Alltoallv)",
		     MPI_Alltoallv(apart(m, sbuf, stot * es, rbuf, rtot * es), sc, so, move_type(t),
				   PTR(rbuf), rc, ro, move_type(t), m->mc));
}

static void mpi_all_to_all_fixed(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts,
				 uint64_t rbuf, uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t,
				 void *stream)
{
	struct mpi_comm *m = mc_of(c);
	size_t cbytes = (size_t)c->size * sizeof(int64_t);
	BLOCKING_MPI(c, "all-to-all of counts (MPI_Alltoall)",
		     MPI_Alltoall(apart(m, d_scounts, cbytes, d_rcounts, cbytes), 1, MPI_INT64_T,
				  PTR(d_rcounts), 1, MPI_INT64_T, m->mc));
	mpi_all_to_all(c, sbuf, rbuf, cap, t, stream);
}

static void mpi_all_reduce_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			       enum rt_comm_dtype t, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	size_t bytes = count * rt_comm_dtype_size(t);
	const void *s = sbuf == rbuf ? MPI_IN_PLACE : apart(m, sbuf, bytes, rbuf, bytes);
	BLOCKING_MPI(c, "all-reduce (MPI_Allreduce)",
		     MPI_Allreduce(s, PTR(rbuf), icount(c, count, "all-reduce"),
				   sum_type(c, t, "all-reduce"), MPI_SUM, m->mc));
}

static void mpi_reduce_scatter_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				   enum rt_comm_dtype t, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	size_t es = rt_comm_dtype_size(t);
	BLOCKING_MPI(c, "reduce-scatter (MPI_Reduce_scatter_block)",
		     MPI_Reduce_scatter_block(apart(m, sbuf, (size_t)c->size * count * es, rbuf,
						    count * es),
					      PTR(rbuf), icount(c, count, "reduce-scatter"),
					      sum_type(c, t, "reduce-scatter"), MPI_SUM, m->mc));
}

static void mpi_all_gather(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			   enum rt_comm_dtype t, void *stream)
{
	struct mpi_comm *m = mc_of(c);
	size_t es = rt_comm_dtype_size(t);
	int n = icount(c, count, "all-gather");
	BLOCKING_MPI(c, "all-gather (MPI_Allgather)",
		     MPI_Allgather(apart(m, sbuf, count * es, rbuf, (size_t)c->size * count * es), n,
				   move_type(t), PTR(rbuf), n, move_type(t), m->mc));
}

static void mpi_barrier(struct rt_comm *c, void *stream)
{
	BLOCKING_MPI(c, "barrier (MPI_Barrier)", MPI_Barrier(mc_of(c)->mc));
}

static const struct rt_comm_ops mpi_ops = {
	.split = mpi_split,
	.free = mpi_free,
	.send = mpi_send,
	.recv = mpi_recv,
	.sendrecv = mpi_sendrecv,
	.all_to_all = mpi_all_to_all,
	.all_to_allv = mpi_all_to_allv,
	.all_to_allv_dev = mpi_all_to_allv_dev,
	.all_to_all_fixed = mpi_all_to_all_fixed,
	.all_reduce_sum = mpi_all_reduce_sum,
	.reduce_scatter_sum = mpi_reduce_scatter_sum,
	.all_gather = mpi_all_gather,
	.sync = mpi_sync,
	.barrier = mpi_barrier,
};
#else
typedef int rt_comm_mpi_unused; /* without MPI: comm_none.c */
#endif
