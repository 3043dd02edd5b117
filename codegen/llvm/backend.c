/* backend.c - cg_backend_llvm: the CPU backend.  compile() plans the graph (lower.c),
 * JIT-compiles all its kernels in one module (jit.c), and places every buffer the
 * plan touches: INPUT and PARAM values are the caller's, graph outputs (the loss, the
 * gradients "grad.P") get their own allocations so they can be read after run, and all
 * other values and scratch buffers share one arena laid out by pass_memplan.
 *
 * The layout and the distinct kernels are the plan's (codegen/plan.c), shared with
 * the CUDA backend.
 *
 * The JIT compiles on a thread of its own while the caller goes on (the buffers are
 * placed here, and 'sluice train' initialises the weights on the pool meanwhile); the
 * first run waits for it.  Its errors (internal ones: the IR comes from sluice) are
 * printed then, and that run fails.
 *
 * run() executes the steps in order; each kernel's parallel index space is split over
 * the thread pool (runtime/pool.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"
#include "llvm_impl.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

/* The JIT's compile of the distinct kernels, on its own thread. */
struct jit_job {
	pthread_t thread;
	struct cg_jit *jit;
	struct kir_kernel **ks; /* the distinct kernels */
	int n_uniq;
	int *uniq;              /* plan kernel -> distinct index */
	cg_kernel_fn *fns;      /* per distinct kernel */
	FILE *dump;
	char *msg;              /* what the compile printed */
	size_t msg_len;
	int rc;
	double seconds;
};

struct cg_exec {
	const struct ir_graph *g;
	struct cg_plan plan;
	struct cg_jit *jit;
	struct jit_job *job;    /* while the kernels compile */
	int jit_rc;             /* the compile's result, once waited for */
	cg_kernel_fn *fns;
	struct rt_pool *pool;
	struct cg_gemm_ws *ws;  /* GEMM packing buffers, kept between runs */
	void **ptr;            /* per buffer */
	unsigned char *outside; /* per buffer: bound by the caller or allocated alone */
	unsigned char *owned;   /* per buffer: allocated alone (graph outputs) */
	void *arena;
	int64_t arena_bytes;
	void **args;
	int max_args;
	double *prof;           /* SLUICE_LLVM_PROFILE: seconds per op kind */
};

/* f32 buffers for every float dtype, a row per point: what vector loops want */
const struct cg_target cg_target_llvm = {
	.name = "the LLVM CPU backend", .half_storage = 0, .block_threads = 0, .emulate_fp8 = 1,
};

static size_t type_size(enum kir_type t)
{
	return t == KIR_I64 || t == KIR_F64 ? 8 : t == KIR_BF16 || t == KIR_F16 ? 2 : 4;
}

/* Lay the buffers out and allocate them; 0 on success. */
static int place_buffers(struct cg_exec *e, FILE *err)
{
	const struct ir_graph *g = e->g;
	struct cg_plan *p = &e->plan;
	int64_t *off = rt_calloc((size_t)p->n_bufs + 1, sizeof *off);
	int rc = cg_plan_layout(p, off, &e->arena_bytes, err);
	if (rc)
		goto done;
	/* The arena and the outputs (the gradients among them) are faulted in here, by the
	 * pool's threads and on huge pages where allowed, not page by page in the first
	 * step: that made the first step of a 160M-parameter model 2 to 3 times the next. */
	int64_t peak = e->arena_bytes;
	e->arena = peak ? rt_pool_alloc_zeroed(e->pool, (size_t)peak) : NULL;
	for (int b = 0; b < p->n_bufs; b++) {
		if (off[b] == -2)
			continue;
		if (off[b] >= 0) {
			e->ptr[b] = (char *)e->arena + off[b];
			continue;
		}
		e->outside[b] = 1;
		const struct ir_op *d = b < g->n_values ? g->values[b]->def : NULL;
		if (d && (d->kind == IR_OP_INPUT || d->kind == IR_OP_PARAM))
			continue;
		e->ptr[b] = rt_pool_alloc_zeroed(e->pool, (size_t)(p->buf_numel[b] ? p->buf_numel[b] : 1) *
							       type_size(p->buf_type[b]));
		e->owned[b] = 1;
	}
done:
	free(off);
	return rc;
}

int cg_llvm_arena_plan(const struct ir_graph *g, int64_t *bytes, FILE *err)
{
	struct cg_plan plan;
	memset(&plan, 0, sizeof plan);
	int rc = cg_plan_graph(&plan, g, &cg_target_llvm, "k", err);
	if (!rc) {
		int64_t *off = rt_calloc((size_t)plan.n_bufs + 1, sizeof *off);
		rc = cg_plan_layout(&plan, off, bytes, err);
		free(off);
	}
	cg_plan_free(&plan);
	return rc;
}

static void print_profile(const double *t)
{
	int order[IR_OP_COUNT];
	double total = 0;
	for (int i = 0; i < IR_OP_COUNT; i++) {
		order[i] = i;
		total += t[i];
	}
	for (int i = 0; i < IR_OP_COUNT; i++) /* by time, largest first */
		for (int j = i + 1; j < IR_OP_COUNT; j++)
			if (t[order[j]] > t[order[i]]) {
				int x = order[i];
				order[i] = order[j];
				order[j] = x;
			}
	fprintf(stderr, "sluice: LLVM backend time by op kind (%.3f s in all):\n", total);
	for (int i = 0; i < IR_OP_COUNT && t[order[i]] > 0; i++)
		fprintf(stderr, "  %-22s %8.4f s %5.1f%%\n", ir_op_name((enum ir_opkind)order[i]),
			t[order[i]], 100 * t[order[i]] / total);
}

static void *jit_thread(void *arg)
{
	struct jit_job *j = arg;
	double t0 = rt_now();
	FILE *err = open_memstream(&j->msg, &j->msg_len);
	j->rc = cg_jit_compile(j->jit, j->ks, j->n_uniq, j->fns, j->dump, err ? err : stderr);
	if (err)
		fclose(err);
	if (j->dump)
		fclose(j->dump);
	j->seconds = rt_now() - t0;
	return NULL;
}

/* Wait for the kernels (once); 0 when they compiled. */
static int await_kernels(struct cg_exec *e)
{
	struct jit_job *j = e->job;
	if (!j)
		return e->jit_rc;
	pthread_join(j->thread, NULL);
	if (j->msg && *j->msg)
		fputs(j->msg, stderr);
	char what[96];
	snprintf(what, sizeof what, "llvm: kernels ready (%.3f s of compile)", j->seconds);
	rt_timing(what);
	for (int i = 0; i < e->plan.n_ks; i++)
		e->fns[i] = j->fns[j->uniq[i]];
	e->jit_rc = j->rc;
	free(j->msg);
	free(j->fns);
	free(j->ks);
	free(j->uniq);
	free(j);
	e->job = NULL;
	return e->jit_rc;
}

static void llvm_free(struct cg_exec *e)
{
	if (!e)
		return;
	await_kernels(e);
	if (e->prof) {
		print_profile(e->prof);
		free(e->prof);
	}
	if (e->ptr)
		for (int b = 0; b < e->plan.n_bufs; b++)
			if (e->owned[b])
				free(e->ptr[b]);
	free(e->ptr);
	free(e->outside);
	free(e->owned);
	free(e->arena);
	free(e->args);
	free(e->fns);
	rt_pool_free(e->pool);
	cg_gemm_ws_free(e->ws);
	cg_jit_free(e->jit);
	cg_plan_free(&e->plan);
	free(e);
}

static struct cg_exec *llvm_compile(const struct ir_graph *g, FILE *err)
{
	struct cg_exec *e = rt_calloc(1, sizeof *e);
	e->g = g;
	if (cg_plan_graph(&e->plan, g, &cg_target_llvm, "k", err)) {
		llvm_free(e);
		return NULL;
	}
	rt_timing("llvm: kernels planned");
	e->jit = cg_jit_new(err);
	if (!e->jit) {
		llvm_free(e);
		return NULL;
	}
	e->fns = rt_calloc((size_t)e->plan.n_ks + 1, sizeof *e->fns);
	FILE *dump = NULL;
	const char *dump_path = getenv("SLUICE_LLVM_DUMP");
	if (dump_path && *dump_path) {
		dump = fopen(dump_path, "w");
		if (dump)
			for (int i = 0; i < e->plan.n_ks; i++)
				kir_print(e->plan.ks[i], dump);
	}
	/* each distinct kernel compiled once */
	int n = e->plan.n_ks;
	int *uniq = rt_calloc((size_t)n + 1, sizeof *uniq);
	struct kir_kernel **ks = rt_calloc((size_t)n + 1, sizeof *ks);
	int n_uniq = cg_plan_distinct_kernels(&e->plan, uniq, ks);
	struct jit_job *j = rt_calloc(1, sizeof *j);
	*j = (struct jit_job){ .jit = e->jit, .ks = ks, .n_uniq = n_uniq, .uniq = uniq,
			       .fns = rt_calloc((size_t)n_uniq + 1, sizeof *j->fns), .dump = dump };
	e->job = j;
	if (pthread_create(&j->thread, NULL, jit_thread, j)) {
		/* no thread: compile here, and report as the caller asked */
		e->job = NULL;
		jit_thread(j);
		if (j->msg && *j->msg)
			fputs(j->msg, err);
		for (int i = 0; i < n; i++)
			e->fns[i] = j->fns[uniq[i]];
		int rc = j->rc;
		free(j->msg);
		free(j->fns);
		free(j->ks);
		free(j->uniq);
		free(j);
		if (rc) {
			llvm_free(e);
			return NULL;
		}
	}
	rt_timing("llvm: kernels compiling on a thread");
	int nb = e->plan.n_bufs;
	e->ptr = rt_calloc((size_t)nb + 1, sizeof *e->ptr);
	e->outside = rt_calloc((size_t)nb + 1, 1);
	e->owned = rt_calloc((size_t)nb + 1, 1);
	e->pool = rt_pool_new(0);
	if (place_buffers(e, err)) {
		llvm_free(e);
		return NULL;
	}
	rt_timing("llvm: arena and outputs allocated");
	for (int s = 0; s < e->plan.n_steps; s++)
		if (e->plan.steps[s].n_bufs > e->max_args)
			e->max_args = e->plan.steps[s].n_bufs;
	e->args = rt_calloc((size_t)e->max_args + 1, sizeof *e->args);
	e->ws = cg_gemm_ws_new(rt_pool_threads(e->pool));
	if (getenv("SLUICE_LLVM_PROFILE"))
		e->prof = rt_calloc(IR_OP_COUNT, sizeof *e->prof);
	return e;
}

static void llvm_bind(struct cg_exec *e, int value_id, void *data)
{
	RT_ASSERT(value_id >= 0 && value_id < e->g->n_values);
	e->ptr[value_id] = data;
	e->outside[value_id] = 1;
}

static void *llvm_tensor(struct cg_exec *e, int value_id)
{
	if (value_id < 0 || value_id >= e->g->n_values || !e->outside[value_id])
		return NULL;
	return e->ptr[value_id];
}

/* --- library steps --------------------------------------------------------------------- */

struct kcall {
	cg_kernel_fn fn;
	void **args;
};

static void call_kernel(void *ctx, int64_t lo, int64_t hi)
{
	struct kcall *c = ctx;
	c->fn(c->args, lo, hi);
}

/* the storage of a value, through aliases */
static void *P(struct cg_exec *e, int id)
{
	return e->ptr[e->plan.alias[id]];
}

static int64_t ival(struct cg_exec *e, int id, int64_t i)
{
	id = e->plan.alias[id];
	if (e->plan.buf_type[id] == KIR_I32)
		return ((const int32_t *)e->ptr[id])[i];
	return ((const int64_t *)e->ptr[id])[i];
}

/* The element strides of a MATMUL operand: row-major, or, for a TRANSPOSE that the plan
 * reads in place (plan->view_of), its input's strides permuted. */
static const float *operand(struct cg_exec *e, const struct ir_value *x, int64_t *st)
{
	const struct ir_value *src = x;
	const struct ir_attr *perm = NULL;
	if (e->plan.view_of[x->id] >= 0) {
		src = e->g->values[e->plan.view_of[x->id]];
		perm = ir_op_attr(x->def, "perm");
	}
	int64_t sst[IR_MAX_RANK], acc = 1;
	for (int d = src->shape.rank - 1; d >= 0; d--) {
		sst[d] = acc;
		acc *= src->shape.dim[d];
	}
	for (int d = 0; d < x->shape.rank; d++)
		st[d] = perm ? sst[perm->ints[d]] : sst[d];
	return P(e, src->id);
}

/* A scaled product's operand i (0, 1) as dequantised into the step's scratch (the
 * plan's last two buffers, contiguous in the operand's shape); NULL for other ops. */
static const float *scaled_operand(struct cg_exec *e, const struct cg_step *st, int i,
				   int64_t *strides)
{
	const struct ir_op *op = st->op;
	if (op->kind != IR_OP_SCALED_MATMUL && op->kind != IR_OP_SCALED_GROUPED_MATMUL &&
	    op->kind != IR_OP_SCALED_GROUPED_MATMUL_WGRAD)
		return NULL;
	const struct ir_shape *s = &op->in[i]->shape;
	int64_t acc = 1;
	for (int d = s->rank - 1; d >= 0 && strides; d--) {
		strides[d] = acc;
		acc *= s->dim[d];
	}
	return e->ptr[st->bufs[st->n_bufs - 2 + i]];
}

static void run_matmul(struct cg_exec *e, const struct cg_step *st)
{
	const struct ir_op *op = st->op;
	const struct ir_value *A = op->in[0], *B = op->in[1], *Y = op->out[0];
	int ta = (int)ir_op_int(op, "trans_a", 0), tb = (int)ir_op_int(op, "trans_b", 0);
	const struct ir_shape *ys = &Y->shape, *as = &A->shape, *bs = &B->shape;
	int r = ys->rank, ra = as->rank, rb = bs->rank;
	int64_t M = ys->dim[r - 2], N = ys->dim[r - 1];
	int64_t K = ta ? as->dim[ra - 2] : as->dim[ra - 1];
	int64_t nb = 1;
	for (int d = 0; d < r - 2; d++)
		nb *= ys->dim[d];
	int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
	const float *a = scaled_operand(e, st, 0, sa), *b = scaled_operand(e, st, 1, sb);
	if (!a)
		a = operand(e, A, sa), b = operand(e, B, sb);
	int64_t rsa = ta ? sa[ra - 1] : sa[ra - 2], csa = ta ? sa[ra - 2] : sa[ra - 1];
	int64_t rsb = tb ? sb[rb - 1] : sb[rb - 2], csb = tb ? sb[rb - 2] : sb[rb - 1];
	struct cg_gemm *gs = rt_calloc((size_t)(nb ? nb : 1), sizeof *gs);
	float *c = P(e, Y->id);
	for (int64_t i = 0; i < nb; i++) {
		/* batch dims broadcast like elementwise ops, in units of whole matrices */
		int64_t rem = i, aoff = 0, boff = 0;
		for (int d = r - 3; d >= 0; d--) {
			int64_t ix = rem % ys->dim[d];
			rem /= ys->dim[d];
			int da = d - (r - ra), db = d - (r - rb);
			if (da >= 0 && as->dim[da] != 1)
				aoff += ix * sa[da];
			if (db >= 0 && bs->dim[db] != 1)
				boff += ix * sb[db];
		}
		struct cg_gemm *gm = &gs[i];
		gm->M = M, gm->N = N, gm->K = K;
		gm->a = a + aoff, gm->rsa = rsa, gm->csa = csa;
		gm->b = b + boff, gm->rsb = rsb, gm->csb = csb;
		gm->c = c + i * M * N;
		gm->ldc = N;
	}
	cg_gemm_run(e->pool, e->ws, gs, (int)nb);
	free(gs);
}

/* offsets of the experts, clamped into [0, R] and made non-decreasing */
static int64_t *expert_rows(struct cg_exec *e, const struct ir_value *off, int64_t R)
{
	int64_t E = off->shape.dim[0] - 1;
	int64_t *o = rt_malloc(sizeof *o * (size_t)(E + 1));
	for (int64_t i = 0; i <= E; i++) {
		int64_t v = ival(e, off->id, i);
		v = v < 0 ? 0 : v > R ? R : v;
		o[i] = i && v < o[i - 1] ? o[i - 1] : v;
	}
	return o;
}

static void run_grouped(struct cg_exec *e, const struct cg_step *st)
{
	const struct ir_op *op = st->op;
	const struct ir_value *xs = op->in[0], *w = op->in[1], *off = op->in[2];
	int tb = (int)ir_op_int(op, "trans_b", 0);
	int64_t R = xs->shape.dim[0], K = xs->shape.dim[1], N = op->out[0]->shape.dim[1];
	int64_t E = w->shape.dim[0];
	int64_t *o = expert_rows(e, off, R);
	float *y = P(e, op->out[0]->id);
	memset(y, 0, sizeof *y * (size_t)(R * N));
	struct cg_gemm *gs = rt_calloc((size_t)(E ? E : 1), sizeof *gs);
	const float *x = scaled_operand(e, st, 0, NULL), *wp = scaled_operand(e, st, 1, NULL);
	if (!x)
		x = P(e, xs->id), wp = P(e, w->id);
	for (int64_t i = 0; i < E; i++) {
		struct cg_gemm *gm = &gs[i];
		gm->M = o[i + 1] - o[i], gm->N = N, gm->K = K;
		gm->a = x + o[i] * K, gm->rsa = K, gm->csa = 1;
		gm->b = wp + i * K * N;
		gm->rsb = tb ? 1 : N, gm->csb = tb ? K : 1;
		gm->c = y + o[i] * N, gm->ldc = N;
	}
	cg_gemm_run(e->pool, e->ws, gs, (int)E);
	free(gs);
	free(o);
}

static void run_wgrad(struct cg_exec *e, const struct cg_step *st)
{
	const struct ir_op *op = st->op;
	const struct ir_value *xs = op->in[0], *dy = op->in[1], *off = op->in[2];
	int tb = (int)ir_op_int(op, "trans_b", 0);
	int64_t R = xs->shape.dim[0], K = xs->shape.dim[1], N = dy->shape.dim[1];
	int64_t E = op->out[0]->shape.dim[0];
	int64_t *o = expert_rows(e, off, R);
	struct cg_gemm *gs = rt_calloc((size_t)(E ? E : 1), sizeof *gs);
	const float *x = scaled_operand(e, st, 0, NULL), *d = scaled_operand(e, st, 1, NULL);
	if (!x)
		x = P(e, xs->id), d = P(e, dy->id);
	float *dw = P(e, op->out[0]->id);
	for (int64_t i = 0; i < E; i++) {
		struct cg_gemm *gm = &gs[i];
		int64_t r0 = o[i];
		gm->K = o[i + 1] - r0;
		gm->c = dw + i * K * N;
		if (!tb) { /* [K,N] = xs^T dy */
			gm->M = K, gm->N = N, gm->ldc = N;
			gm->a = x + r0 * K, gm->rsa = 1, gm->csa = K;
			gm->b = d + r0 * N, gm->rsb = N, gm->csb = 1;
		} else { /* [N,K] = dy^T xs */
			gm->M = N, gm->N = K, gm->ldc = K;
			gm->a = d + r0 * N, gm->rsa = 1, gm->csa = N;
			gm->b = x + r0 * K, gm->rsb = K, gm->csb = 1;
		}
	}
	cg_gemm_run(e->pool, e->ws, gs, (int)E);
	free(gs);
	free(o);
}

/* ATTENTION's inputs and outputs (and ATTENTION_BWD's) through the step's buffers */
static void run_attention(struct cg_exec *e, const struct cg_step *st)
{
	const struct ir_op *op = st->op;
	const struct ir_shape *q = &op->in[0]->shape, *k = &op->in[1]->shape;
	struct cg_attn a = {
		.B = q->dim[0], .S = q->dim[1], .H = q->dim[2], .Hkv = k->dim[2], .Dk = q->dim[3],
		.Dv = op->in[2]->shape.dim[3], .scale = ir_op_float(op, "scale", 1),
		.causal = (int)ir_op_int(op, "causal", 1),
	};
	float *b[12];
	for (int i = 0; i < st->n_bufs && i < 12; i++)
		b[i] = e->ptr[st->bufs[i]];
	a.q = b[0], a.k = b[1], a.v = b[2];
	if (op->kind == IR_OP_ATTENTION) {
		a.out = b[3], a.lse = b[4];
		cg_attention_fwd(e->pool, &a);
		return;
	}
	a.o = b[3], a.l = b[4], a.dout = b[5];
	a.dq = b[6], a.dk = b[7], a.dv = b[8], a.delta = b[9];
	cg_attention_bwd(e->pool, &a);
}

static int llvm_run(struct cg_exec *e)
{
	if (await_kernels(e))
		return 1;
	const struct cg_plan *p = &e->plan;
	for (int s = 0; s < p->n_steps; s++) {
		const struct cg_step *st = &p->steps[s];
		for (int i = 0; i < st->n_bufs; i++) {
			int b = st->bufs[i];
			if (!e->ptr[b] && p->buf_numel[b]) {
				fprintf(stderr, "sluice: LLVM backend: value %%%d is read by op %d (%s) "
					"but was never bound\n", b, st->op->id,
					ir_op_name(st->op->kind));
				return 1;
			}
		}
		double t0 = e->prof ? rt_now() : 0;
		switch (st->kind) {
		case CG_STEP_KERNEL: {
			for (int i = 0; i < st->n_bufs; i++)
				e->args[i] = e->ptr[st->bufs[i]];
			struct kcall c = { e->fns[st->kernel], e->args };
			rt_pool_run(e->pool, st->extent, st->grain, call_kernel, &c);
			break;
		}
		case CG_STEP_MATMUL: run_matmul(e, st); break;
		case CG_STEP_GROUPED: run_grouped(e, st); break;
		case CG_STEP_WGRAD: run_wgrad(e, st); break;
		case CG_STEP_ATTENTION: case CG_STEP_ATTENTION_BWD: run_attention(e, st); break;
		}
		if (e->prof)
			e->prof[st->op->kind] += rt_now() - t0;
	}
	return 0;
}

static int64_t llvm_arena_bytes(const struct cg_exec *e)
{
	return e->arena_bytes;
}

const struct cg_backend cg_backend_llvm = {
	.name = "llvm",
	.compile = llvm_compile,
	.bind = llvm_bind,
	.run = llvm_run,
	.tensor = llvm_tensor,
	.free = llvm_free,
	.arena_bytes = llvm_arena_bytes,
};
