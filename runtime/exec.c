/* exec.c - the executor: runs a program's actions for one training step.
 *
 * The actions are taken in the order of the action list on the calling thread; the
 * program's device (runtime/device.h) does the work: on CPU ranks at once (the chunks
 * themselves split their loops over the thread pool), on a GPU queued on its compute
 * stream, with communication on the communication stream after it.  A communication
 * op is started where the list says and completes at the next WAIT on its group, as
 * NCCL operations complete on their stream, so one schedule serves both.
 *
 * Consecutive sends and receives of the action list go out together
 * (rt_comm_p2p_begin/end): NCCL queues every operation of a rank on its one
 * communication stream, and a send may wait there for its receive, holding back what
 * was queued after it, where MPI lets both proceed.  A 1F1B step whose sends and
 * receives between two stages cross (a stage sends micro-batch 1's activation before
 * it receives micro-batch 0's gradient, its peer the other way round) would wait
 * forever on GPUs; in one NCCL group both proceed, as with MPI.  tests/gpu/
 * train_gpu_test.sh 2 runs pp 2.
 *
 * That is not enough where sends wait on each other across communicators: DualPipe's
 * values travel both ways between two ranks, and rank 0 may queue a send of
 * micro-batch 1 that rank 1 receives only after its own send of micro-batch 3, which
 * rank 0 receives after its send.  On one stream each send would hold back the
 * receive the other waits for.  So on a GPU every communicator that carries sends and
 * receives gets a stream of its own (a lane, rt_comm_set_lane; RT_COMM_LANES - 1 of
 * them, the collectives keep the communication stream): on one communicator every
 * rank issues its operations in the same order (the verifier checks it), and the
 * communicators progress apart, as MPI's operations do.  A run of sends and receives
 * is one NCCL group only while they share a stream.  (What stopped DualPipe's first
 * step on two H200s was earlier still, NCCL's connection of each pair: see
 * connect_peers.)
 *
 * Chunk outputs are copied where they are kept: the micro-batch slot of a SAVED
 * buffer, or summed into a GRAD or OUTPUT buffer (the first micro-batch of
 * a step copies, later ones add, in micro-batch order, so the sum does not depend on
 * the schedule).
 *
 * Expert parallelism: an ALL_TO_ALL whose output gives the receive counts of an
 * ALL_TO_ALLV (the dispatch's) is run as an all-gather of every rank's send counts,
 * so that every rank of the group knows every rank's receive total, at no extra
 * collective.  When one exceeds the ALL_TO_ALLV's receive buffer, every rank of the
 * group sees it alike, zeroes the layer's counts (the rest of the step moves and
 * multiplies no rows, and so stays inside its buffers) and counts an overflow: that
 * step's result is wrong, and the engine runs it again with larger buffers.
 *
 * Widths: a send, receive or all-to-all carries its values at their dtype's width.
 * Where the buffer holds them in f32 (CPU ranks at bf16 or fp8: rt_dtype), the values
 * are packed into a narrow copy that travels (struct wire), and what arrives is
 * widened into the buffer at the group's WAIT, exactly, since every value is of its
 * dtype already.  All-reduces (gradients, f32) sum at the stored width.
 *
 * Counters: time in chunks (compute), in starting and finishing communication ops
 * (comm) and in WAIT actions (wait), per rank; the benchmarks read them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "gpu.h"
#include "program.h"
#include "rt.h"

struct rt_exec {
	struct rt_program *p;
	struct rt_device *dev;
	void *scratch;               /* device memory for host values crossing a group */
	size_t scratch_bytes;
	struct rt_comm **gc;         /* per group: its communicator, NULL when none */
	void **in, **out;
	unsigned char *fresh;        /* per buffer: not yet written this step */
	struct rt_comm *p2p;         /* a run of sends and receives is open on it */
	int64_t *recv_cap;           /* per comm op: an ALL_TO_ALL of the receive counts of
				      * an ALL_TO_ALLV, that one's receive rows; else -1 */
	struct rt_exec_stats st;
	struct wire {                /* a packed copy in flight, freed at its group's WAIT */
		int group;
		void *bytes;
		float *dst;          /* where its values are widened to; NULL: sent */
		size_t n;
		enum rt_dtype t;
	} *wires;
	int n_wires, cap_wires;
	double *trace;               /* rt_exec_trace: each action's start and end, or NULL */
	struct rt_gpu_event **marks; /* on a GPU: 2 per action, then the step's start */
	int cur;                     /* the action being taken */
	int *held, n_held;           /* actions whose end marks wait for their NCCL group */
};

void rt_exec_trace(struct rt_exec *x, double *t)
{
	x->trace = t;
	int n = 2 * x->p->n_actions + 1;
	if (!t || !x->dev->gpu || x->marks)
		return;
	x->marks = rt_calloc((size_t)n, sizeof *x->marks);
	x->held = rt_calloc((size_t)n, sizeof *x->held);
	for (int i = 0; i < n; i++)
		if (!(x->marks[i] = rt_gpu_event_new(x->dev->gpu))) {
			for (int k = 0; k < i; k++)
				rt_gpu_event_free(x->marks[k]);
			free(x->marks);
			free(x->held);
			x->marks = NULL; /* the host's clock, then */
			x->held = NULL;
			return;
		}
}

static void free_marks(struct rt_exec *x)
{
	for (int i = 0; x->marks && i < 2 * x->p->n_actions + 1; i++)
		rt_gpu_event_free(x->marks[i]);
	free(x->marks);
	free(x->held);
	x->marks = NULL;
	x->held = NULL;
}

/* The current action's start (end 0) or end (1) where its work is queued: the compute
 * stream, or c's. */
static void mark(struct rt_exec *x, int end, struct rt_comm *c)
{
	if (!x->trace || !x->marks)
		return;
	if (end && c && x->p2p) { /* queued when the group closes (p2p_end) */
		x->held[x->n_held++] = x->cur;
		return;
	}
	rt_gpu_event_record(x->marks[2 * x->cur + end],
			    c ? (enum rt_stream_kind)rt_comm_lane_stream(c) : RT_STREAM_COMPUTE);
}

/* Close the open run of sends and receives: one NCCL group, queued now, and the end
 * marks of its operations after it. */
static void p2p_close(struct rt_exec *x)
{
	rt_comm_p2p_end(x->p2p);
	for (int k = 0; k < x->n_held; k++)
		rt_gpu_event_record(x->marks[2 * x->held[k] + 1],
				    (enum rt_stream_kind)rt_comm_lane_stream(x->p2p));
	x->n_held = 0;
	x->p2p = NULL;
}

#define RT_MAX_PEERS 64 /* a rank's peers on one communicator, at most */

static void *reachable(struct rt_exec *x, void *h, size_t bytes, int up);

/* NCCL connects two ranks on a communicator at their first send or receive between
 * them, on the host and with the peer: a rank connecting on one communicator while
 * its peer connects on another waits forever (DualPipe's first exchanges do that).
 * So every pair that will exchange connects here, communicator by communicator in the
 * groups' order, which every rank shares, with one byte each way. */
static void connect_peers(struct rt_exec *x)
{
	const struct rt_program *p = x->p;
	if (x->dev->host)
		return;
	char *buf = reachable(x, NULL, 2 * (size_t)RT_MAX_PEERS, 0);
	for (int g = 0; g < p->n_groups; g++) {
		struct rt_comm *c = x->gc[g];
		int peers[RT_MAX_PEERS], n = 0;
		for (int k = 0; c && k < p->n_comms; k++) {
			const struct rt_comm_op *op = &p->comms[k];
			if (op->group != g || (op->kind != RT_COP_SEND && op->kind != RT_COP_RECV))
				continue;
			int seen = 0;
			for (int i = 0; i < n; i++)
				seen |= peers[i] == op->peer;
			if (!seen && n < RT_MAX_PEERS)
				peers[n++] = op->peer;
		}
		if (!n)
			continue;
		x->dev->ops->comm_begin(x->dev, c);
		rt_comm_p2p_begin(c);
		for (int i = 0; i < n; i++) {
			rt_comm_send(c, (uint64_t)(uintptr_t)(buf + i), 1, RT_COMM_U8, peers[i], NULL);
			rt_comm_recv(c, (uint64_t)(uintptr_t)(buf + RT_MAX_PEERS + i), 1, RT_COMM_U8,
				     peers[i], NULL);
		}
		rt_comm_p2p_end(c);
		rt_comm_sync(c, NULL);
	}
}

struct rt_exec *rt_exec_new(struct rt_program *p, struct rt_comm *world, char *err,
			    size_t errlen)
{
	struct rt_exec *x = rt_calloc(1, sizeof *x);
	RT_ASSERT(p->dev);
	x->p = p;
	x->dev = p->dev;
	x->gc = rt_calloc((size_t)p->n_groups + 1, sizeof *x->gc);
	int max_io = 1;
	for (int i = 0; i < p->n_chunks; i++) {
		if (p->chunks[i].n_in > max_io)
			max_io = p->chunks[i].n_in;
		if (p->chunks[i].n_out > max_io)
			max_io = p->chunks[i].n_out;
	}
	x->in = rt_calloc((size_t)max_io, sizeof *x->in);
	x->out = rt_calloc((size_t)max_io, sizeof *x->out);
	x->fresh = rt_calloc((size_t)p->n_bufs + 1, 1);
	x->recv_cap = rt_calloc((size_t)p->n_comms + 1, sizeof *x->recv_cap);
	/* the counts' all-gather works on host buffers (CPU ranks); a GPU program's
	 * receive buffers are sized for the worst case (tools/train.c) */
	for (int k = 0; k < p->n_comms; k++) {
		x->recv_cap[k] = -1;
		if (p->comms[k].kind != RT_COP_ALL_TO_ALL || !x->dev->host)
			continue;
		for (int v = 0; v < p->n_comms; v++)
			if (p->comms[v].kind == RT_COP_ALL_TO_ALLV &&
			    p->comms[v].rcounts == p->comms[k].out &&
			    p->bufs[p->comms[v].out].shape[0] > x->recv_cap[k])
				x->recv_cap[k] = p->bufs[p->comms[v].out].shape[0];
	}
	for (int g = 0; g < p->n_groups; g++) {
		if (!world) {
			if (p->world > 1) {
				snprintf(err, errlen, "a program of %d ranks needs a communicator",
					 p->world);
				rt_exec_free(x);
				return NULL;
			}
			continue;
		}
		x->gc[g] = rt_comm_split(world, p->groups[g].color, p->groups[g].key);
	}
	/* on a GPU, each communicator that carries sends and receives its own stream
	 * while there are lanes (see the top of the file); collectives on the first */
	int lane = 1;
	for (int k = 0; k < p->n_comms && !x->dev->host; k++) {
		struct rt_comm *c = x->gc[p->comms[k].group];
		if (c && (p->comms[k].kind == RT_COP_SEND || p->comms[k].kind == RT_COP_RECV) &&
		    rt_comm_lane_stream(c) == RT_STREAM_COMM && lane < RT_COMM_LANES)
			rt_comm_set_lane(c, lane++);
	}
	connect_peers(x);
	return x;
}

struct rt_comm *rt_exec_group(struct rt_exec *x, int group)
{
	return group >= 0 && group < x->p->n_groups ? x->gc[group] : NULL;
}

void rt_exec_free(struct rt_exec *x)
{
	if (!x)
		return;
	for (int g = 0; g < x->p->n_groups; g++)
		if (x->gc[g])
			rt_comm_free(x->gc[g]);
	free(x->gc);
	if (x->scratch)
		x->dev->ops->free(x->dev, x->scratch);
	free(x->in);
	free(x->out);
	free(x->fresh);
	free(x->recv_cap);
	free_marks(x);
	for (int i = 0; i < x->n_wires; i++)
		free(x->wires[i].bytes);
	free(x->wires);
	free(x);
}

void rt_exec_stats(const struct rt_exec *x, struct rt_exec_stats *s)
{
	*s = x->st;
}

static enum rt_comm_dtype comm_dtype(enum rt_dtype t)
{
	switch (t) {
	case RT_DT_I64: return RT_COMM_I64;
	case RT_DT_I32: return RT_COMM_I32;
	case RT_DT_BF16: return RT_COMM_BF16;
	case RT_DT_F16: return RT_COMM_F16;
	case RT_DT_F8E4M3:
	case RT_DT_F8E5M2: return RT_COMM_U8;
	default: return RT_COMM_F32;
	}
}

/* Does buffer b travel packed (held in f32, its values narrower)? */
static int packed(const struct rt_buffer *b)
{
	return b->stored != b->dtype;
}

/* A narrow copy of n values of b's dtype for group g: packed from src when src, else
 * to be widened into dst at the group's WAIT.  Its address for the communicator. */
static uint64_t wire(struct rt_exec *x, int g, const struct rt_buffer *b, const float *src,
		     float *dst, size_t n)
{
	RT_ASSERT(x->dev->host);
	if (x->n_wires == x->cap_wires) {
		x->cap_wires = x->cap_wires ? 2 * x->cap_wires : 8;
		x->wires = rt_realloc(x->wires, sizeof *x->wires * (size_t)x->cap_wires);
	}
	struct wire *w = &x->wires[x->n_wires++];
	*w = (struct wire){ .group = g, .bytes = rt_malloc(n * rt_dtype_size(b->dtype) + 1),
			    .dst = dst, .n = n, .t = b->dtype };
	if (src)
		rt_pack(b->dtype, w->bytes, src, n);
	return (uint64_t)(uintptr_t)w->bytes;
}

/* After group g's WAIT: its received copies widened where they belong, all freed. */
static void land_wires(struct rt_exec *x, int g)
{
	int k = 0;
	for (int i = 0; i < x->n_wires; i++) {
		struct wire *w = &x->wires[i];
		if (w->group != g) {
			x->wires[k++] = *w;
			continue;
		}
		if (w->dst)
			rt_unpack(w->t, w->dst, w->bytes, w->n);
		free(w->bytes);
	}
	x->n_wires = k;
}

/* Keep output o of a chunk in buffer b for micro-batch mb. */
static void keep_output(struct rt_exec *x, int b, int mb, const void *src)
{
	struct rt_buffer *buf = &x->p->bufs[b];
	void *dst = rt_buf_slot(x->p, b, mb);
	if (buf->role != RT_BUF_GRAD && buf->role != RT_BUF_OUTPUT) {
		x->dev->ops->copy(x->dev, dst, src, (size_t)buf->bytes);
		return;
	}
	if (x->fresh[b]) {
		/* not when the buffer lives in the chunk's output (copy skips dst == src) */
		x->dev->ops->copy(x->dev, dst, src, (size_t)buf->bytes);
		x->fresh[b] = 0;
		return;
	}
	RT_ASSERT(buf->dtype == RT_DT_F32);
	x->dev->ops->add_f32(x->dev, dst, src, (size_t)buf->numel);
}

static int run_chunk(struct rt_exec *x, int ci, int mb, char *err, size_t errlen)
{
	struct rt_chunk *c = &x->p->chunks[ci];
	for (int i = 0; i < c->n_in; i++)
		x->in[i] = rt_buf_slot(x->p, c->in[i], mb);
	double t0 = rt_now();
	if (c->impl->run(c->code, x->in, x->out)) {
		snprintf(err, errlen, "chunk %s failed on micro-batch %d", c->name, mb);
		return -1;
	}
	for (int i = 0; i < c->n_out; i++)
		keep_output(x, c->out[i], mb, x->out[i]);
	double dt = rt_now() - t0;
	c->seconds += dt;
	x->st.compute_s += dt;
	return 0;
}

/* Rows per peer from an i32 [P, n] count buffer: the sum of each row, checked. */
static int peer_rows(const struct rt_buffer *cb, const int32_t *c, int P, size_t *rows)
{
	int64_t n = cb->numel / P;
	for (int p = 0; p < P; p++) {
		int64_t s = 0;
		for (int64_t j = 0; j < n; j++) {
			if (c[p * n + j] < 0)
				return -1;
			s += c[p * n + j];
		}
		rows[p] = (size_t)s;
	}
	return 0;
}

/* ALL_TO_ALLV: the counts were exchanged by an earlier ALL_TO_ALL and are on the
 * host (CPU ranks), so both sides know every block's size. */
static void all_to_allv(struct rt_exec *x, const struct rt_comm_op *op, int mb,
			struct rt_comm *c)
{
	const struct rt_program *p = x->p;
	const struct rt_buffer *in = &p->bufs[op->buf], *out = &p->bufs[op->out];
	const struct rt_buffer *sb = &p->bufs[op->scounts], *rb = &p->bufs[op->rcounts];
	int P = rt_comm_size(c);
	RT_ASSERT(sb->rank >= 1 && sb->shape[0] == P && rb->shape[0] == P);
	size_t row = (size_t)(in->numel / (in->shape[0] ? in->shape[0] : 1));
	size_t *sc = rt_calloc(4 * (size_t)P, sizeof *sc);
	size_t *so = sc + P, *rc = sc + 2 * P, *ro = sc + 3 * P;
	void *c1, *c2; /* the counts, on the host */
	const int32_t *hs = rt_device_view(x->dev, rt_buf_slot(p, op->scounts, mb),
					   (size_t)sb->bytes, &c1);
	const int32_t *hr = rt_device_view(x->dev, rt_buf_slot(p, op->rcounts, mb),
					   (size_t)rb->bytes, &c2);
	if (!hs || !hr)
		RT_BUG("all_to_allv: the counts cannot be read");
	if (peer_rows(sb, hs, P, sc) || peer_rows(rb, hr, P, rc))
		RT_BUG("all_to_allv: negative counts");
	free(c1);
	free(c2);
	size_t st = 0, rt = 0, me = (size_t)rt_comm_rank(c);
	for (int q = 0; q < P; q++) {
		if ((size_t)q != me)
			x->st.a2a_bytes += (int64_t)(sc[q] * row * rt_dtype_size(in->dtype));
		so[q] = st * row;
		ro[q] = rt * row;
		st += sc[q];
		rt += rc[q];
		sc[q] *= row;
		rc[q] *= row;
	}
	if (st > (size_t)in->shape[0] || rt > (size_t)out->shape[0])
		RT_BUG("all_to_allv: %zu rows to send of %lld, %zu to receive into %lld", st,
		       (long long)in->shape[0], rt, (long long)out->shape[0]);
	char *dst = rt_buf_slot(p, op->out, mb);
	/* the rows past what arrived are zero, as the op says (on the GPU, zeroed on the
	 * compute stream before the communication stream writes the rows) */
	size_t esz = rt_dtype_size(out->stored);
	x->dev->ops->zero(x->dev, dst + rt * row * esz, ((size_t)out->numel - rt * row) * esz);
	uint64_t sa = (uint64_t)(uintptr_t)rt_buf_slot(p, op->buf, mb);
	uint64_t ra = (uint64_t)(uintptr_t)dst;
	RT_ASSERT(in->dtype == out->dtype && in->stored == out->stored);
	if (packed(in)) {
		sa = wire(x, op->group, in, (const float *)(uintptr_t)sa, NULL, st * row);
		ra = wire(x, op->group, out, NULL, (float *)dst, rt * row);
	}
	x->dev->ops->comm_begin(x->dev, c);
	mark(x, 0, c);
	rt_comm_all_to_allv(c, sa, sc, so, ra, rc, ro, comm_dtype(in->dtype), NULL);
	free(sc);
}

/* The counts of a dispatch (i32 [P, El]: rows for each rank's local experts) to the
 * ranks that receive them, as an all-gather of every rank's counts: rank q keeps row q
 * of each rank's, and learns every rank's receive total.  An overflow of cap rows on
 * any rank zeroes this rank's send and receive counts, as every rank of the group
 * does (see the top of the file). */
static void exchange_counts(struct rt_exec *x, const struct rt_comm_op *op, int mb,
			    struct rt_comm *c, int64_t cap)
{
	const struct rt_program *p = x->p;
	const struct rt_buffer *b = &p->bufs[op->buf];
	int P = rt_comm_size(c), me = rt_comm_rank(c);
	RT_ASSERT(b->dtype == RT_DT_I32 && b->rank >= 1 && b->shape[0] == P);
	size_t n = (size_t)b->numel, row = n / (size_t)P;
	int32_t *send = rt_buf_slot(p, op->buf, mb), *recv = rt_buf_slot(p, op->out, mb);
	int32_t *all = rt_malloc(sizeof *all * n * (size_t)P);
	rt_comm_all_gather(c, (uint64_t)(uintptr_t)send, (uint64_t)(uintptr_t)all, n,
			   RT_COMM_I32, NULL);
	rt_comm_sync(c, NULL);
	int64_t most = 0;
	for (int q = 0; q < P; q++) {
		int64_t total = 0;
		for (int r = 0; r < P; r++)
			for (size_t j = 0; j < row; j++)
				total += all[((size_t)r * (size_t)P + (size_t)q) * row + j];
		if (total > most)
			most = total;
	}
	for (int r = 0; r < P; r++)
		memcpy(recv + (size_t)r * row, all + ((size_t)r * (size_t)P + (size_t)me) * row,
		       row * sizeof *recv);
	free(all);
	if (most <= cap)
		return;
	memset(send, 0, n * sizeof *send);
	memset(recv, 0, n * sizeof *recv);
	x->st.ep_overflows++;
	if (most > x->st.ep_need_rows)
		x->st.ep_need_rows = most;
	x->st.ep_cap_rows = cap;
}

static void start_comm(struct rt_exec *x, int k, int mb)
{
	const struct rt_comm_op *op = &x->p->comms[k];
	const struct rt_buffer *b = &x->p->bufs[op->buf];
	struct rt_comm *c = x->gc[op->group];
	RT_ASSERT(c);
	uint64_t addr = (uint64_t)(uintptr_t)rt_buf_slot(x->p, op->buf, mb);
	size_t n = (size_t)b->numel;
	double t0 = rt_now();
	/* a copy that no chunk of this rank wrote adds zeros */
	if (op->kind == RT_COP_ALL_REDUCE && x->fresh[op->buf]) {
		x->dev->ops->zero(x->dev, rt_buf_slot(x->p, op->buf, 0), (size_t)b->bytes);
		x->fresh[op->buf] = 0;
	}
	if (op->kind != RT_COP_ALL_TO_ALLV) { /* it reads its counts first */
		x->dev->ops->comm_begin(x->dev, c);
		mark(x, 0, c);
	}
	float *slot = (float *)(uintptr_t)addr;
	switch (op->kind) {
	case RT_COP_SEND:
		if (packed(b))
			addr = wire(x, op->group, b, slot, NULL, n);
		rt_comm_send(c, addr, n, comm_dtype(b->dtype), op->peer, NULL);
		break;
	case RT_COP_RECV:
		if (packed(b))
			addr = wire(x, op->group, b, NULL, slot, n);
		rt_comm_recv(c, addr, n, comm_dtype(b->dtype), op->peer, NULL);
		break;
	case RT_COP_ALL_REDUCE:
		rt_comm_all_reduce_sum(c, addr, addr, n, comm_dtype(b->stored), NULL);
		break;
	case RT_COP_ALL_TO_ALL: {
		if (x->recv_cap[k] >= 0) {
			exchange_counts(x, op, mb, c, x->recv_cap[k]);
			break;
		}
		uint64_t ra = (uint64_t)(uintptr_t)rt_buf_slot(x->p, op->out, mb);
		if (packed(b)) {
			addr = wire(x, op->group, b, slot, NULL, n);
			ra = wire(x, op->group, b, NULL, (float *)(uintptr_t)ra, n);
		}
		rt_comm_all_to_all(c, addr, ra, n / (size_t)rt_comm_size(c), comm_dtype(b->dtype),
				   NULL);
		break;
	}
	case RT_COP_ALL_TO_ALLV:
		all_to_allv(x, op, mb, c);
		break;
	}
	mark(x, 1, c);
	x->st.comm_s += rt_now() - t0;
}

int rt_exec_step(struct rt_exec *x, char *err, size_t errlen)
{
	struct rt_program *p = x->p;
	for (int b = 0; b < p->n_bufs; b++)
		x->fresh[b] = p->bufs[b].role == RT_BUF_GRAD || p->bufs[b].role == RT_BUF_OUTPUT;
	struct rt_gpu_event *base = x->trace && x->marks ? x->marks[2 * p->n_actions] : NULL;
	double t_base = rt_now();
	if (base)
		rt_gpu_event_record(base, RT_STREAM_COMPUTE);
	for (int i = 0; i < p->n_actions; i++) {
		const struct rt_action *a = &p->actions[i];
		int p2p = a->kind == RT_ACT_COMM && (p->comms[a->index].kind == RT_COP_SEND ||
						       p->comms[a->index].kind == RT_COP_RECV);
		struct rt_comm *pc = p2p ? x->gc[p->comms[a->index].group] : NULL;
		/* a run of sends and receives on one stream is one group; another stream
		 * starts another, so that no group joins two lanes */
		if (x->p2p && (!pc || rt_comm_lane_stream(pc) != rt_comm_lane_stream(x->p2p)))
			p2p_close(x);
		if (pc && !x->p2p) {
			x->p2p = pc;
			rt_comm_p2p_begin(x->p2p);
		}
		if (x->trace)
			x->trace[2 * i] = rt_now();
		x->cur = i;
		switch (a->kind) {
		case RT_ACT_CHUNK:
			mark(x, 0, NULL);
			if (run_chunk(x, a->index, a->mb, err, errlen))
				return -1;
			mark(x, 1, NULL);
			break;
		case RT_ACT_COMM:
			start_comm(x, a->index, a->mb);
			break;
		case RT_ACT_WAIT: {
			double t0 = rt_now();
			mark(x, 0, NULL);
			if (x->gc[a->index])
				x->dev->ops->comm_wait(x->dev, x->gc[a->index]);
			mark(x, 1, NULL);
			land_wires(x, a->index);
			x->st.wait_s += rt_now() - t0;
			break;
		}
		}
		if (x->trace)
			x->trace[2 * i + 1] = rt_now();
	}
	if (x->p2p)
		p2p_close(x);
	if (x->n_wires)
		RT_BUG("a packed exchange of group %d was never waited for", x->wires[0].group);
	/* the GPU's times, on the host's clock from the step's start */
	for (int i = 0; base && i < 2 * p->n_actions; i++) {
		double ms = rt_gpu_event_ms(base, x->marks[i]);
		x->trace[i] = ms >= 0 ? t_base + ms / 1e3 : t_base;
	}
	/* a buffer no chunk wrote this step (a stage without that output) is zero */
	for (int b = 0; b < p->n_bufs; b++)
		if (x->fresh[b])
			x->dev->ops->zero(x->dev, p->bufs[b].data,
					  (size_t)(p->bufs[b].bytes * p->bufs[b].slots));
	return 0;
}

/* Host memory that a group's communicator can reach: h itself on a host device, else
 * the executor's device scratch (grown to bytes), with h uploaded when up. */
static void *reachable(struct rt_exec *x, void *h, size_t bytes, int up)
{
	if (x->dev->host)
		return h;
	if (bytes > x->scratch_bytes) {
		if (x->scratch)
			x->dev->ops->free(x->dev, x->scratch);
		x->scratch_bytes = bytes < 4096 ? 4096 : bytes;
		x->scratch = x->dev->ops->alloc(x->dev, x->scratch_bytes);
		if (!x->scratch)
			RT_BUG("no device memory for %zu bytes of communication scratch", bytes);
	}
	if (up && x->dev->ops->upload(x->dev, x->scratch, h, bytes))
		RT_BUG("upload to the communication scratch failed");
	return x->scratch;
}

/* After a collective into reachable(x, h, ...): the result back in h. */
static void back(struct rt_exec *x, struct rt_comm *c, void *h, void *a, size_t bytes)
{
	x->dev->ops->comm_wait(x->dev, c);
	if (a != h && x->dev->ops->download(x->dev, h, a, bytes))
		RT_BUG("download from the communication scratch failed");
}

void rt_exec_sum(struct rt_exec *x, int group, double *v, int n)
{
	struct rt_comm *c = rt_exec_group(x, group);
	if (!c || rt_comm_size(c) == 1 || n <= 0)
		return;
	/* gather every member's doubles (as bits) and add them in rank order: exact in
	 * double, and the same bits on every member */
	int size = rt_comm_size(c);
	size_t nb = sizeof *v * (size_t)n;
	double *all = rt_malloc(nb * (size_t)(size + 1));
	memcpy(all + (size_t)n * (size_t)size, v, nb);
	char *a = reachable(x, all, nb * (size_t)(size + 1), 1);
	x->dev->ops->comm_begin(x->dev, c);
	rt_comm_all_gather(c, (uint64_t)(uintptr_t)(a + nb * (size_t)size),
			   (uint64_t)(uintptr_t)a, (size_t)n, RT_COMM_I64, NULL);
	back(x, c, all, a, nb * (size_t)size);
	for (int i = 0; i < n; i++) {
		double s = 0.0;
		for (int r = 0; r < size; r++)
			s += all[(size_t)r * (size_t)n + (size_t)i];
		v[i] = s;
	}
	free(all);
}

void rt_exec_sum_buf(struct rt_exec *x, int group, int buf)
{
	struct rt_comm *c = rt_exec_group(x, group);
	const struct rt_buffer *b = &x->p->bufs[buf];
	if (!c || rt_comm_size(c) == 1 || !b->numel)
		return;
	RT_ASSERT(b->dtype == RT_DT_F32);
	uint64_t a = (uint64_t)(uintptr_t)b->data;
	x->dev->ops->comm_begin(x->dev, c);
	rt_comm_all_reduce_sum(c, a, a, (size_t)b->numel, RT_COMM_F32, NULL);
	x->dev->ops->comm_wait(x->dev, c);
}

#define PIECE ((size_t)1 << 30)

void rt_exec_send_host(struct rt_exec *x, int group, const void *h, size_t bytes, int peer)
{
	struct rt_comm *c = rt_exec_group(x, group);
	RT_ASSERT(c);
	/* in pieces: an MPI count is an int */
	for (size_t at = 0; at < bytes; at += PIECE) {
		size_t n = bytes - at < PIECE ? bytes - at : PIECE;
		void *a = reachable(x, (char *)h + at, n, 1);
		x->dev->ops->comm_begin(x->dev, c);
		rt_comm_send(c, (uint64_t)(uintptr_t)a, n, RT_COMM_U8, peer, NULL);
		rt_comm_sync(c, NULL);
	}
}

void rt_exec_recv_host(struct rt_exec *x, int group, void *h, size_t bytes, int peer)
{
	struct rt_comm *c = rt_exec_group(x, group);
	RT_ASSERT(c);
	for (size_t at = 0; at < bytes; at += PIECE) {
		size_t n = bytes - at < PIECE ? bytes - at : PIECE;
		void *a = reachable(x, (char *)h + at, n, 0);
		x->dev->ops->comm_begin(x->dev, c);
		rt_comm_recv(c, (uint64_t)(uintptr_t)a, n, RT_COMM_U8, peer, NULL);
		rt_comm_sync(c, NULL);
		back(x, c, (char *)h + at, a, n);
	}
}
