/* exec.c - the executor: runs a program's actions for one training step.
 *
 * On CPU ranks everything runs on the calling thread in the order of the action list
 * (the chunks themselves split their loops over the thread pool); a communication op
 * is started where the list says and completes at the next WAIT on its group, as NCCL
 * operations complete on their stream, so a schedule written for GPU streams runs
 * here unchanged.  Chunk outputs are copied where they are kept: the micro-batch slot
 * of a SAVED buffer, or summed into a GRAD or OUTPUT buffer (the first micro-batch of
 * a step copies, later ones add, in micro-batch order, so the sum does not depend on
 * the schedule).
 *
 * Counters: time in chunks (compute), in starting and finishing communication ops
 * (comm) and in WAIT actions (wait), per rank; the benchmarks read them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "program.h"
#include "rt.h"

struct rt_exec {
	struct rt_program *p;
	struct rt_comm **gc;         /* per group: its communicator, NULL when none */
	void **in, **out;
	unsigned char *fresh;        /* per buffer: not yet written this step */
	struct rt_exec_stats st;
};

struct rt_exec *rt_exec_new(struct rt_program *p, struct rt_comm *world, char *err,
			    size_t errlen)
{
	struct rt_exec *x = rt_calloc(1, sizeof *x);
	x->p = p;
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
	free(x->in);
	free(x->out);
	free(x->fresh);
	free(x);
}

void rt_exec_stats(const struct rt_exec *x, struct rt_exec_stats *s)
{
	*s = x->st;
}

static enum rt_comm_dtype comm_dtype(enum rt_dtype t)
{
	return t == RT_DT_I64 ? RT_COMM_I64 : t == RT_DT_I32 ? RT_COMM_I32 : RT_COMM_F32;
}

/* Keep output o of a chunk in buffer b for micro-batch mb. */
static void keep_output(struct rt_exec *x, int b, int mb, const void *src)
{
	struct rt_buffer *buf = &x->p->bufs[b];
	void *dst = rt_buf_slot(x->p, b, mb);
	if (buf->role != RT_BUF_GRAD && buf->role != RT_BUF_OUTPUT) {
		memcpy(dst, src, (size_t)buf->bytes);
		return;
	}
	if (x->fresh[b]) {
		if (dst != src) /* not when the buffer lives in the chunk's output */
			memcpy(dst, src, (size_t)buf->bytes);
		x->fresh[b] = 0;
		return;
	}
	RT_ASSERT(buf->dtype == RT_DT_F32);
	float *d = dst;
	const float *s = src;
	for (int64_t i = 0; i < buf->numel; i++)
		d[i] += s[i];
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
	if (peer_rows(sb, rt_buf_slot(p, op->scounts, mb), P, sc) ||
	    peer_rows(rb, rt_buf_slot(p, op->rcounts, mb), P, rc))
		RT_BUG("all_to_allv: negative counts");
	size_t st = 0, rt = 0;
	for (int q = 0; q < P; q++) {
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
	rt_comm_all_to_allv(c, (uint64_t)(uintptr_t)rt_buf_slot(p, op->buf, mb), sc, so,
			    (uint64_t)(uintptr_t)dst, rc, ro, comm_dtype(in->dtype), NULL);
	/* the rows past what arrived are zero, as the op says */
	size_t esz = rt_dtype_size(out->dtype);
	memset(dst + rt * row * esz, 0, ((size_t)out->numel - rt * row) * esz);
	free(sc);
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
	switch (op->kind) {
	case RT_COP_SEND:
		rt_comm_send(c, addr, n, comm_dtype(b->dtype), op->peer, NULL);
		break;
	case RT_COP_RECV:
		rt_comm_recv(c, addr, n, comm_dtype(b->dtype), op->peer, NULL);
		break;
	case RT_COP_ALL_REDUCE:
		/* a copy that no chunk of this rank wrote adds zeros */
		if (x->fresh[op->buf]) {
			memset(rt_buf_slot(x->p, op->buf, 0), 0, (size_t)b->bytes);
			x->fresh[op->buf] = 0;
		}
		rt_comm_all_reduce_sum(c, addr, addr, n, comm_dtype(b->dtype), NULL);
		break;
	case RT_COP_ALL_TO_ALL:
		rt_comm_all_to_all(c, addr, (uint64_t)(uintptr_t)rt_buf_slot(x->p, op->out, mb),
				   n / (size_t)rt_comm_size(c), comm_dtype(b->dtype), NULL);
		break;
	case RT_COP_ALL_TO_ALLV:
		all_to_allv(x, op, mb, c);
		break;
	}
	x->st.comm_s += rt_now() - t0;
}

int rt_exec_step(struct rt_exec *x, char *err, size_t errlen)
{
	struct rt_program *p = x->p;
	for (int b = 0; b < p->n_bufs; b++)
		x->fresh[b] = p->bufs[b].role == RT_BUF_GRAD || p->bufs[b].role == RT_BUF_OUTPUT;
	for (int i = 0; i < p->n_actions; i++) {
		const struct rt_action *a = &p->actions[i];
		switch (a->kind) {
		case RT_ACT_CHUNK:
			if (run_chunk(x, a->index, a->mb, err, errlen))
				return -1;
			break;
		case RT_ACT_COMM:
			start_comm(x, a->index, a->mb);
			break;
		case RT_ACT_WAIT: {
			double t0 = rt_now();
			if (x->gc[a->index])
				rt_comm_sync(x->gc[a->index], NULL);
			x->st.wait_s += rt_now() - t0;
			break;
		}
		}
	}
	/* a buffer no chunk wrote this step (a stage without that output) is zero */
	for (int b = 0; b < p->n_bufs; b++)
		if (x->fresh[b])
			memset(p->bufs[b].data, 0, (size_t)(p->bufs[b].bytes * p->bufs[b].slots));
	return 0;
}

void rt_exec_sum(struct rt_exec *x, int group, double *v, int n)
{
	struct rt_comm *c = rt_exec_group(x, group);
	if (!c || rt_comm_size(c) == 1 || n <= 0)
		return;
	/* gather every member's doubles (as bits) and add them in rank order: exact in
	 * double, and the same bits on every member */
	int size = rt_comm_size(c);
	double *all = rt_malloc(sizeof *all * (size_t)n * (size_t)size);
	rt_comm_all_gather(c, (uint64_t)(uintptr_t)v, (uint64_t)(uintptr_t)all, (size_t)n,
			   RT_COMM_I64, NULL);
	rt_comm_sync(c, NULL);
	for (int i = 0; i < n; i++) {
		double s = 0.0;
		for (int r = 0; r < size; r++)
			s += all[(size_t)r * (size_t)n + (size_t)i];
		v[i] = s;
	}
	free(all);
}

void rt_exec_sum_f32(struct rt_exec *x, int group, float *v, size_t n)
{
	struct rt_comm *c = rt_exec_group(x, group);
	if (!c || rt_comm_size(c) == 1 || !n)
		return;
	uint64_t a = (uint64_t)(uintptr_t)v;
	rt_comm_all_reduce_sum(c, a, a, n, RT_COMM_F32, NULL);
	rt_comm_sync(c, NULL);
}
