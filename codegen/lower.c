/* lower.c - an IR graph to a plan: kernel IR for every op, library GEMM calls for the
 * contractions, in the graph's order.
 *
 * Fusion.  Most ops are "pointwise": each element of the output is an expression of
 * elements of the inputs at computable indices (elementwise math with broadcasting,
 * SCALE, CAST, CONST, views such as RESHAPE/TRANSPOSE/SLICE/BROADCAST/CONCAT, gathers,
 * ROPE, and reductions: an output element is a reduction over a line of the input).
 * op_at() builds that expression for an op at a multi-index; val_at() reads a value at a
 * multi-index, either from its buffer or, when the value is "inlined", by building its
 * op's expression in place.  A value is inlined when its op is pointwise, it has
 * exactly one use, that use is a pointwise op reading each element
 * once (same element count, or a reduction), and it is no graph output: so a chain of
 * elementwise ops, views and broadcasts ends up as one kernel, and an elementwise
 * chain feeding a reduction is computed inside the reduction.  A reduction itself is
 * inlined only into a consumer of its own size (the rsqrt of a mean square), never
 * into one that broadcasts it, which would recompute it per element.  CONST is
 * inlined into every pointwise consumer.
 *
 * Pointwise kernels run over the rows of the output (all dims but the last) in parallel
 * and over the last dim in an inner loop, so the inner loop is contiguous and vectorises.
 * The other ops (softmax, cross entropy, routing, MoE permutations) get one or two
 * kernels each, written out below; MATMUL, the grouped matmuls, ATTENTION and its
 * backward are library steps, which each backend supplies.
 *
 * Targets.  On a target that asks for blocks (cg_target.block_threads, a GPU), the
 * kernels over rows run a row per block: the loops over the row are spread over the
 * block's threads and the reductions over it are cooperative.  That is the case for
 * softmax, cross entropy, pointwise kernels with rows of a warp or more, and
 * pointwise kernels whose rows are short but which reduce (the mean square of a norm);
 * other kernels keep a point per thread.
 *
 * Floats of every dtype are stored as f32 unless the target keeps bf16 and f16 in 16
 * bits; values of dtype bf16 or f16 are rounded to that format after each op (by the
 * store, in 16-bit buffers), as the reference does, so such graphs agree with it.
 * f8 values are f32 holding a value of their format (rounded after each op, exactly
 * as the reference) on targets that emulate FP8 (cg_target.emulate_fp8, the CPU):
 * QUANT_FP8 is a kernel per tile (max-abs, scale, rounding, in the f32 arithmetic that
 * ir.h states), a scaled product dequantises its operands into two scratch buffers and
 * runs the unscaled library GEMM over them (products and sums in f32).  On targets
 * that store FP8 (cg_target.fp8_storage, the GPU) f8 values are bytes, rounded by the
 * store; the quantisation is the same kernel.  On every target an elementwise producer
 * of the quantised value (SwiGLU's product, a residual add, a cast) with no other
 * reader is computed inside the quantisation kernel instead of being stored and read
 * back (fuses_into_quant).  A scaled product runs as the target's
 * block-scaled FP8 GEMM where cg_fp8_gemm_form finds the shape (the forward and the
 * input gradient of a linear layer: K in 128-blocks, bf16 or f32 out; its weight gradient,
 * tokens in 128-blocks, f32 out), with kernels ahead that relay the operands and the
 * scales as that GEMM wants them; the grouped forward (and input gradient) of expert
 * layers widens its E4M3 operands to bf16 for the target's grouped product that applies
 * the scales every 128 of K, and its weight gradient likewise for the target's one that
 * applies them every 128 rows; elsewhere (other shapes) the operands are dequantised
 * into f32 as above.
 * Other targets refuse FP8 ops.  Simplifications, on purpose: INPUT and
 * PARAM data are used as given (the reference rounds bound data to the value's dtype:
 * bind bf16 values that are already bf16); indices read from data (embedding rows, top-k
 * choices) are clamped into range instead of reported; an inlined value read twice in
 * one expression is computed twice (LLVM's CSE removes the repeat within a block). */
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

typedef struct kir_expr kx;

struct kb {
	struct cg_plan *p;
	const struct ir_op *op;
	struct kir_kernel *k;
	int n, cap;
	int *glob;
};

static void *grow(void *ptr, int *cap, int need, size_t elem)
{
	if (need <= *cap)
		return ptr;
	int c = *cap ? *cap * 2 : 16;
	while (c < need)
		c *= 2;
	*cap = c;
	return rt_realloc(ptr, (size_t)c * elem);
}

static enum kir_type storage_type(const struct cg_target *tg, enum ir_dtype t)
{
	if (tg->half_storage && (t == IR_BF16 || t == IR_F16))
		return t == IR_BF16 ? KIR_BF16 : KIR_F16;
	if (tg->fp8_storage && (t == IR_F8E4M3 || t == IR_F8E5M2))
		return t == IR_F8E4M3 ? KIR_F8E4M3 : KIR_F8E5M2;
	return t == IR_I32 ? KIR_I32 : t == IR_I64 ? KIR_I64 : KIR_F32;
}

static enum kir_type compute_type(enum ir_dtype t)
{
	return ir_dtype_is_float(t) ? KIR_F32 : KIR_I64;
}

static int add_buf(struct cg_plan *p, enum kir_type t, int64_t numel)
{
	p->buf_type = grow(p->buf_type, &p->cap_bufs, p->n_bufs + 1, sizeof *p->buf_type);
	int cap = p->cap_bufs;
	(void)cap;
	p->buf_numel = rt_realloc(p->buf_numel, sizeof *p->buf_numel * (size_t)p->cap_bufs);
	p->buf_type[p->n_bufs] = t;
	p->buf_numel[p->n_bufs] = numel;
	return p->n_bufs++;
}

static struct kb kb_begin(struct cg_plan *p, const struct ir_op *op, const char *what,
			  int64_t extent, const char *prefix)
{
	char name[96];
	snprintf(name, sizeof name, "%s%d_%s%s%s", prefix, p->n_ks, ir_op_name(op->kind),
		 what ? "_" : "", what ? what : "");
	struct kb kb = { p, op, kir_kernel_new(name, extent), 0, 0, NULL };
	return kb;
}

static int kb_buf(struct kb *kb, int gid)
{
	if (gid < kb->p->n_values)
		gid = kb->p->alias[gid];
	for (int i = 0; i < kb->n; i++)
		if (kb->glob[i] == gid)
			return i;
	char name[32]; /* by position, so that kernels of repeated layers read the same */
	snprintf(name, sizeof name, "b%d", kb->n);
	int li = kir_buf(kb->k, name, kb->p->buf_type[gid]);
	kb->glob = grow(kb->glob, &kb->cap, kb->n + 1, sizeof *kb->glob);
	kb->glob[kb->n++] = gid;
	RT_ASSERT(li == kb->n - 1);
	return li;
}

static void kb_end(struct kb *kb, int64_t grain)
{
	struct cg_plan *p = kb->p;
	p->ks = grow(p->ks, &p->cap_ks, p->n_ks + 1, sizeof *p->ks);
	p->ks[p->n_ks] = kb->k;
	p->steps = grow(p->steps, &p->cap_steps, p->n_steps + 1, sizeof *p->steps);
	struct cg_step *s = &p->steps[p->n_steps++];
	memset(s, 0, sizeof *s);
	s->kind = CG_STEP_KERNEL;
	s->op = kb->op;
	s->kernel = p->n_ks++;
	s->extent = kb->k->extent;
	s->grain = grain > 0 ? grain : 1;
	s->n_bufs = kb->n;
	s->bufs = kb->glob;
	s->writes = rt_calloc((size_t)kb->n + 1, 1);
	for (int i = 0; i < kb->n; i++)
		s->writes[i] = (unsigned char)kb->k->bufs[i].written;
}

/* --- integer index arithmetic with constant folding ------------------------------- */

static int is_c(const kx *e, int64_t v)
{
	return e->op == KIR_CONST && e->type == KIR_I64 && e->i == v;
}

static kx *c64(struct kb *kb, int64_t v)
{
	return kir_i64(kb->k, v);
}

static kx *iadd(struct kb *kb, kx *a, kx *b)
{
	if (is_c(a, 0))
		return b;
	if (is_c(b, 0))
		return a;
	if (a->op == KIR_CONST && b->op == KIR_CONST)
		return c64(kb, a->i + b->i);
	return kir_bin(kb->k, KIR_ADD, a, b);
}

static kx *imul(struct kb *kb, kx *a, int64_t c)
{
	if (c == 0 || is_c(a, 0))
		return c64(kb, 0);
	if (c == 1)
		return a;
	if (a->op == KIR_CONST)
		return c64(kb, a->i * c);
	return kir_bin(kb->k, KIR_MUL, a, c64(kb, c));
}

static kx *idiv(struct kb *kb, kx *a, int64_t c)
{
	if (c == 1)
		return a;
	return kir_bin(kb->k, KIR_DIV, a, c64(kb, c));
}

static kx *irem(struct kb *kb, kx *a, int64_t c)
{
	if (c == 1)
		return c64(kb, 0);
	return kir_bin(kb->k, KIR_REM, a, c64(kb, c));
}

static kx *iclamp(struct kb *kb, kx *a, int64_t lo, int64_t hi)
{
	a = kir_bin(kb->k, KIR_MAX, a, c64(kb, lo));
	return kir_bin(kb->k, KIR_MIN, a, c64(kb, hi));
}

static kx *fc(struct kb *kb, double v)
{
	return kir_f32(kb->k, v);
}

static kx *fbin(struct kb *kb, enum kir_op op, kx *a, kx *b)
{
	return kir_bin(kb->k, op, a, b);
}

static kx *flat(struct kb *kb, const struct ir_shape *s, kx **idx)
{
	kx *f = c64(kb, 0);
	int64_t st = 1;
	for (int d = s->rank - 1; d >= 0; d--) {
		if (s->dim[d] != 1)
			f = iadd(kb, f, imul(kb, idx[d], st));
		st *= s->dim[d];
	}
	return f;
}

static void unflat(struct kb *kb, const struct ir_shape *s, kx *f, kx **idx)
{
	int64_t st = 1;
	for (int d = s->rank - 1; d >= 0; d--) {
		idx[d] = s->dim[d] == 1 ? c64(kb, 0) : irem(kb, idiv(kb, f, st), s->dim[d]);
		st *= s->dim[d];
	}
}

/* --- loads and stores in compute types ----------------------------------------------- */

/* Values of dtype bf16 or f16 are stored as f32 holding a value of that format, as the
 * reference rounds them after every op. */
static kx *round_to(struct kb *kb, kx *v, enum ir_dtype t)
{
	enum kir_op r = t == IR_BF16 ? KIR_RBF16 : t == IR_F16 ? KIR_RF16
			: t == IR_F8E4M3 ? KIR_RF8E4M3 : t == IR_F8E5M2 ? KIR_RF8E5M2 : KIR_CONST;
	if (v->type != KIR_F32 || r == KIR_CONST || v->op == r)
		return v;
	if ((r == KIR_RF8E4M3 || r == KIR_RF8E5M2) && !kb->p->target->emulate_fp8)
		return v; /* a one-byte store rounds (fp8_storage), else refused in cg_plan_graph */
	return kir_un(kb->k, r, v);
}

static kx *ld(struct kb *kb, int gid, kx *i, enum kir_type want)
{
	kx *v = kir_load(kb->k, kb_buf(kb, gid), i);
	return kir_cvt(kb->k, want, v);
}

static kx *ldv(struct kb *kb, const struct ir_value *v, kx *i)
{
	return ld(kb, v->id, i, compute_type(v->dtype));
}

static void st(struct kb *kb, struct kir_block *b, int gid, kx *i, kx *val)
{
	enum kir_type t = kb->p->buf_type[gid];
	if (gid < kb->p->n_values && t == kir_value_type(t))
		val = round_to(kb, val, kb->p->g->values[gid]->dtype);
	else if ((t == KIR_BF16 && val->op == KIR_RBF16) || (t == KIR_F16 && val->op == KIR_RF16))
		val = val->a; /* the 16-bit store rounds alike */
	kir_store(kb->k, b, kb_buf(kb, gid), i, kir_cvt(kb->k, kir_value_type(t), val));
}

static void st_add(struct kb *kb, struct kir_block *b, int gid, kx *i, kx *val)
{
	kir_store_add(kb->k, b, kb_buf(kb, gid), i,
		      kir_cvt(kb->k, kir_value_type(kb->p->buf_type[gid]), val));
}

/* --- rows over blocks of threads (targets with block_threads) ------------------------ */

/* Make kb's kernel a block kernel for rows of len elements, if the target wants
 * blocks: up to block_threads threads, no more warps than the row fills.  1 if so. */
static int kb_rows(struct kb *kb, int64_t len)
{
	int max = kb->p->target->block_threads;
	if (max <= 0)
		return 0;
	int64_t t = (len + 31) / 32 * 32;
	kir_kernel_block(kb->k, (int)(t < 32 ? 32 : t > max ? max : t));
	return 1;
}

static struct kir_block *row_loop(struct kb *kb, struct kir_block *b, int var, kx *lo, kx *hi)
{
	if (kb->k->launch.map == KIR_MAP_BLOCK)
		return kir_loop_spread(kb->k, b, var, lo, hi);
	return kir_loop(kb->k, b, var, lo, hi);
}

static kx *row_reduce(struct kb *kb, enum kir_red red, int var, kx *lo, kx *hi, kx *body)
{
	if (kb->k->launch.map == KIR_MAP_BLOCK)
		return kir_reduce_spread(kb->k, red, var, lo, hi, body);
	return kir_reduce(kb->k, red, var, lo, hi, body);
}

/* The reductions of e that every thread of a block evaluates alike (not those inside
 * another reduction's body), counted; with set, made cooperative.  The longest range
 * of a constant length goes to *len. */
static int spread_reductions(kx *e, int set, int64_t *len)
{
	if (!e)
		return 0;
	if (e->op == KIR_REDUCE) {
		e->spread |= set;
		if (e->a->op == KIR_CONST && e->b->op == KIR_CONST && e->b->i - e->a->i > *len)
			*len = e->b->i - e->a->i;
		return 1 + spread_reductions(e->a, set, len) + spread_reductions(e->b, set, len);
	}
	return spread_reductions(e->a, set, len) + spread_reductions(e->b, set, len) +
	       spread_reductions(e->c, set, len);
}

/* --- pointwise ops ------------------------------------------------------------------- */

static int is_pointwise(enum ir_opkind k)
{
	switch (k) {
	case IR_OP_CONST: case IR_OP_NEG: case IR_OP_EXP: case IR_OP_LOG: case IR_OP_SQRT:
	case IR_OP_RSQRT: case IR_OP_RECIP: case IR_OP_SQUARE: case IR_OP_SIGMOID:
	case IR_OP_SILU: case IR_OP_TANH: case IR_OP_RELU: case IR_OP_SCALE: case IR_OP_CAST:
	case IR_OP_STOP_GRAD: case IR_OP_ADD: case IR_OP_SUB: case IR_OP_MUL: case IR_OP_DIV:
	case IR_OP_SILU_BWD: case IR_OP_RELU_BWD: case IR_OP_BROADCAST: case IR_OP_RESHAPE:
	case IR_OP_TRANSPOSE: case IR_OP_SLICE: case IR_OP_CONCAT: case IR_OP_GATHER_ROWS:
	case IR_OP_TAKE_ALONG: case IR_OP_ROPE: case IR_OP_REDUCE_SUM: case IR_OP_REDUCE_MEAN:
	case IR_OP_REDUCE_MAX: case IR_OP_SUM_TO:
		return 1;
	default:
		return 0;
	}
}

static int is_reduction(enum ir_opkind k)
{
	return k == IR_OP_REDUCE_SUM || k == IR_OP_REDUCE_MEAN || k == IR_OP_REDUCE_MAX ||
	       k == IR_OP_SUM_TO;
}

/* Producers a QUANT_FP8 computes in place of reading their output (the quantisation
 * fused into its producer: the norm's scaling, SwiGLU's product, a residual add): the
 * elementwise arithmetic, whose reads follow the tile's own layout.  Views and gathers,
 * which would scatter the tile's reads, are read from their buffers. */
static int fuses_into_quant(enum ir_opkind k)
{
	switch (k) {
	case IR_OP_NEG: case IR_OP_SCALE: case IR_OP_CAST: case IR_OP_ADD: case IR_OP_SUB:
	case IR_OP_MUL: case IR_OP_DIV: case IR_OP_SILU: case IR_OP_RELU: case IR_OP_SIGMOID:
	case IR_OP_TANH: case IR_OP_EXP: case IR_OP_SQUARE: case IR_OP_STOP_GRAD:
		return 1;
	default:
		return 0;
	}
}

static kx *op_at(struct kb *kb, const struct ir_op *op, kx **idx);

static kx *val_at(struct kb *kb, const struct ir_value *v, kx **idx)
{
	if (kb->p->inlined[v->id])
		return op_at(kb, v->def, idx);
	return ldv(kb, v, flat(kb, &v->shape, idx));
}

/* indices into `in` for an output index under numpy broadcasting */
static void bmap(struct kb *kb, const struct ir_shape *in, const struct ir_shape *out,
		 kx **idx, kx **iidx)
{
	for (int d = 0; d < in->rank; d++) {
		int od = d + out->rank - in->rank;
		iidx[d] = in->dim[d] == 1 ? c64(kb, 0) : idx[od];
	}
}

static kx *sigmoid(struct kb *kb, kx *x)
{
	kx *e = kir_un(kb->k, KIR_EXP, kir_un(kb->k, KIR_NEG, x));
	return fbin(kb, KIR_DIV, fc(kb, 1), fbin(kb, KIR_ADD, fc(kb, 1), e));
}

static int norm_axis(int64_t axis, int rank)
{
	return (int)(axis < 0 ? axis + rank : axis);
}

static kx *reduce_at(struct kb *kb, const struct ir_op *op, kx **idx)
{
	const struct ir_value *in = op->in[0];
	const struct ir_shape *is = &in->shape;
	kx *iidx[IR_MAX_RANK];
	if (op->kind == IR_OP_SUM_TO) {
		const struct ir_shape *os = &op->out[0]->shape;
		int vars[IR_MAX_RANK], nv = 0;
		for (int d = 0; d < is->rank; d++) {
			int od = d - (is->rank - os->rank);
			if (od >= 0 && (os->dim[od] == is->dim[d] || is->dim[d] == 1)) {
				iidx[d] = is->dim[d] == 1 ? c64(kb, 0) : idx[od];
			} else {
				vars[nv] = kir_index(kb->k, "r");
				iidx[d] = kir_var(kb->k, vars[nv]);
				vars[nv++] |= d << 16;
			}
		}
		kx *body = val_at(kb, in, iidx);
		for (int i = nv - 1; i >= 0; i--) {
			int var = vars[i] & 0xffff, d = vars[i] >> 16;
			body = kir_reduce(kb->k, KIR_RED_SUM, var, c64(kb, 0), c64(kb, is->dim[d]), body);
		}
		return body;
	}
	int axis = norm_axis(ir_op_int(op, "axis", -1), is->rank);
	int keep = (int)ir_op_int(op, "keepdim", 0);
	int var = kir_index(kb->k, "r");
	for (int d = 0, od = 0; d < is->rank; d++) {
		if (d == axis) {
			iidx[d] = kir_var(kb->k, var);
			od += keep;
		} else {
			iidx[d] = idx[od++];
		}
	}
	kx *body = val_at(kb, in, iidx);
	int mx = op->kind == IR_OP_REDUCE_MAX;
	kx *r = kir_reduce(kb->k, mx ? KIR_RED_MAX : KIR_RED_SUM, var, c64(kb, 0),
			   c64(kb, is->dim[axis]), body);
	if (op->kind == IR_OP_REDUCE_MEAN)
		r = fbin(kb, KIR_DIV, r, fc(kb, (double)is->dim[axis]));
	return r;
}

static kx *op_at_raw(struct kb *kb, const struct ir_op *op, kx **idx);

static kx *op_at(struct kb *kb, const struct ir_op *op, kx **idx)
{
	return round_to(kb, op_at_raw(kb, op, idx), op->out[0]->dtype);
}

static kx *op_at_raw(struct kb *kb, const struct ir_op *op, kx **idx)
{
	struct kir_kernel *k = kb->k;
	const struct ir_value *out = op->out[0];
	const struct ir_shape *os = &out->shape;
	kx *iidx[IR_MAX_RANK], *jidx[IR_MAX_RANK];
	if (op->kind == IR_OP_CONST)
		return kir_const(k, compute_type(out->dtype), ir_op_float(op, "value", 0));
	if (is_reduction(op->kind))
		return reduce_at(kb, op, idx);
	const struct ir_value *in = op->in[0];
	switch (op->kind) {
	case IR_OP_ADD: case IR_OP_SUB: case IR_OP_MUL: case IR_OP_DIV: {
		bmap(kb, &in->shape, os, idx, iidx);
		bmap(kb, &op->in[1]->shape, os, idx, jidx);
		kx *a = val_at(kb, in, iidx), *b = val_at(kb, op->in[1], jidx);
		enum kir_op bo = op->kind == IR_OP_ADD ? KIR_ADD : op->kind == IR_OP_SUB ? KIR_SUB
				 : op->kind == IR_OP_MUL ? KIR_MUL : KIR_DIV;
		enum kir_type t = compute_type(out->dtype);
		return fbin(kb, bo, kir_cvt(k, t, a), kir_cvt(k, t, b));
	}
	case IR_OP_SILU_BWD: case IR_OP_RELU_BWD: {
		bmap(kb, &in->shape, os, idx, iidx);
		bmap(kb, &op->in[1]->shape, os, idx, jidx);
		kx *x = val_at(kb, in, iidx), *dy = val_at(kb, op->in[1], jidx);
		if (op->kind == IR_OP_RELU_BWD)
			return kir_select(k, fbin(kb, KIR_LT, fc(kb, 0), x), dy, fc(kb, 0));
		kx *s = sigmoid(kb, x);
		kx *t = fbin(kb, KIR_ADD, fc(kb, 1), fbin(kb, KIR_MUL, x, fbin(kb, KIR_SUB, fc(kb, 1), s)));
		return fbin(kb, KIR_MUL, fbin(kb, KIR_MUL, dy, s), t);
	}
	case IR_OP_BROADCAST:
		bmap(kb, &in->shape, os, idx, iidx);
		return val_at(kb, in, iidx);
	case IR_OP_RESHAPE: {
		if (!kb->p->inlined[in->id]) /* same row-major order: the flat index is the same */
			return ldv(kb, in, flat(kb, os, idx));
		/* Dims are matched from the right in groups of equal size (192 = 6 x 32):
		 * within a group the index is flattened and split again, so a dim both
		 * shapes share maps straight through and the inner loop stays linear. */
		const struct ir_shape *is = &in->shape;
		int o = os->rank, i = is->rank;
		while (o > 0 || i > 0) {
			int o0 = o, i0 = i;
			int64_t po = 1, pi = 1;
			do {
				if ((po <= pi && o > 0) || i == 0)
					po *= os->dim[--o];
				else
					pi *= is->dim[--i];
			} while ((po != pi || (o > 0 && os->dim[o - 1] == 1) ||
				  (i > 0 && is->dim[i - 1] == 1)) && (o > 0 || i > 0));
			struct ir_shape og = { o0 - o, { 0 } }, ig = { i0 - i, { 0 } };
			memcpy(og.dim, &os->dim[o], sizeof(int64_t) * (size_t)og.rank);
			memcpy(ig.dim, &is->dim[i], sizeof(int64_t) * (size_t)ig.rank);
			unflat(kb, &ig, flat(kb, &og, &idx[o]), &iidx[i]);
		}
		return val_at(kb, in, iidx);
	}
	case IR_OP_TRANSPOSE: {
		const struct ir_attr *pa = ir_op_attr(op, "perm");
		for (int d = 0; d < os->rank; d++)
			iidx[pa->ints[d]] = idx[d];
		return val_at(kb, in, iidx);
	}
	case IR_OP_SLICE: {
		int axis = norm_axis(ir_op_int(op, "axis", 0), os->rank);
		for (int d = 0; d < os->rank; d++)
			iidx[d] = d == axis ? iadd(kb, idx[d], c64(kb, ir_op_int(op, "start", 0))) : idx[d];
		return val_at(kb, in, iidx);
	}
	case IR_OP_CONCAT: {
		int axis = norm_axis(ir_op_int(op, "axis", 0), os->rank);
		int64_t off = 0;
		kx *r = NULL;
		enum kir_type t = compute_type(out->dtype);
		for (int i = 0; i < op->n_in; i++) {
			int64_t L = op->in[i]->shape.dim[axis];
			for (int d = 0; d < os->rank; d++)
				iidx[d] = d == axis ? iclamp(kb, iadd(kb, idx[d], c64(kb, -off)), 0, L - 1)
						    : idx[d];
			kx *v = kir_cvt(k, t, val_at(kb, op->in[i], iidx));
			r = r ? kir_select(k, fbin(kb, KIR_LT, idx[axis], c64(kb, off)), r, v) : v;
			off += L;
		}
		return r;
	}
	case IR_OP_GATHER_ROWS: {
		const struct ir_value *ix = op->in[1];
		int64_t V = in->shape.dim[0];
		kx *row = kir_cvt(k, KIR_I64, val_at(kb, ix, idx));
		iidx[0] = iclamp(kb, row, 0, V - 1);
		iidx[1] = idx[os->rank - 1];
		return val_at(kb, in, iidx);
	}
	case IR_OP_TAKE_ALONG: {
		int r = in->shape.rank;
		int64_t E = in->shape.dim[r - 1];
		kx *col = kir_cvt(k, KIR_I64, val_at(kb, op->in[1], idx));
		for (int d = 0; d + 1 < r; d++)
			iidx[d] = idx[d];
		iidx[r - 1] = iclamp(kb, col, 0, E - 1);
		return val_at(kb, in, iidx);
	}
	case IR_OP_ROPE: {
		int64_t D = os->dim[3], half = D / 2;
		double theta = ir_op_float(op, "theta", 10000.0);
		int inv = (int)ir_op_int(op, "inverse", 0);
		kx *i = idx[3];
		kx *first = fbin(kb, KIR_LT, i, c64(kb, half));
		kx *i2 = irem(kb, i, half);
		for (int d = 0; d < 3; d++)
			iidx[d] = jidx[d] = idx[d];
		iidx[3] = i2;
		jidx[3] = iadd(kb, i2, c64(kb, half));
		kx *x1 = val_at(kb, in, iidx), *x2 = val_at(kb, in, jidx);
		/* cos and sin from the table emit_rope_table() made: [S, half, 2] */
		(void)theta;
		(void)inv;
		int tab = kb->p->rope_table[out->id];
		RT_ASSERT(tab >= 0);
		kx *at = imul(kb, iadd(kb, imul(kb, idx[1], half), i2), 2);
		kx *c = ld(kb, tab, at, KIR_F32);
		kx *s = ld(kb, tab, iadd(kb, at, c64(kb, 1)), KIR_F32);
		kx *y1 = fbin(kb, KIR_SUB, fbin(kb, KIR_MUL, x1, c), fbin(kb, KIR_MUL, x2, s));
		kx *y2 = fbin(kb, KIR_ADD, fbin(kb, KIR_MUL, x1, s), fbin(kb, KIR_MUL, x2, c));
		return kir_select(k, first, y1, y2);
	}
	default:
		break;
	}
	/* unary elementwise */
	kx *x = val_at(kb, in, idx);
	if (op->kind == IR_OP_CAST)
		return kir_cvt(k, compute_type(out->dtype), x);
	if (op->kind == IR_OP_STOP_GRAD)
		return x;
	if (!kir_type_is_float(x->type))
		x = kir_cvt(k, KIR_F32, x);
	switch (op->kind) {
	case IR_OP_NEG: return kir_un(k, KIR_NEG, x);
	case IR_OP_EXP: return kir_un(k, KIR_EXP, x);
	case IR_OP_LOG: return kir_un(k, KIR_LOG, x);
	case IR_OP_SQRT: return kir_un(k, KIR_SQRT, x);
	case IR_OP_RSQRT: return fbin(kb, KIR_DIV, fc(kb, 1), kir_un(k, KIR_SQRT, x));
	case IR_OP_RECIP: return fbin(kb, KIR_DIV, fc(kb, 1), x);
	case IR_OP_SQUARE: return fbin(kb, KIR_MUL, x, x);
	case IR_OP_SIGMOID: return sigmoid(kb, x);
	case IR_OP_SILU: return fbin(kb, KIR_MUL, x, sigmoid(kb, x));
	case IR_OP_TANH: return kir_un(k, KIR_TANH, x);
	case IR_OP_RELU: return kir_select(k, fbin(kb, KIR_LT, fc(kb, 0), x), x, fc(kb, 0));
	case IR_OP_SCALE:
		return fbin(kb, KIR_ADD, fbin(kb, KIR_MUL, x, fc(kb, ir_op_float(op, "alpha", 1))),
			    fc(kb, ir_op_float(op, "beta", 0)));
	default:
		RT_BUG("lower: %s is not pointwise", ir_op_name(op->kind));
	}
}

/* ROPE's angles s * theta^(-2i/D) for every position s and pair i, as cos and sin
 * computed in double and stored in f32: one small kernel ahead of the op, so that the
 * pointwise expression (often fused into a transpose) only loads them. */
static void emit_rope_table(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_shape *s = &op->out[0]->shape;
	int64_t S = s->dim[1], D = s->dim[3], half = D / 2;
	double theta = ir_op_float(op, "theta", 10000.0);
	int inv = (int)ir_op_int(op, "inverse", 0);
	int tab = add_buf(p, KIR_F32, S * half * 2 > 0 ? S * half * 2 : 1);
	p->rope_table[op->out[0]->id] = tab;
	struct kb kb = kb_begin(p, op, "table", S, prefix);
	struct kir_kernel *k = kb.k;
	int i = kir_index(k, "i");
	struct kir_block *b = kir_loop(k, &k->body, i, c64(&kb, 0), c64(&kb, half));
	kx *ex = kir_bin(k, KIR_MUL, kir_cvt(k, KIR_F64, kir_var(k, i)), kir_f64(k, -2.0 / (double)D));
	kx *ang = kir_bin(k, KIR_MUL, kir_cvt(k, KIR_F64, kir_var(k, 0)),
			  kir_bin(k, KIR_POW, kir_f64(k, theta), ex));
	if (inv)
		ang = kir_un(k, KIR_NEG, ang);
	kx *at = imul(&kb, iadd(&kb, imul(&kb, kir_var(k, 0), half), kir_var(k, i)), 2);
	st(&kb, b, tab, at, kir_cvt(k, KIR_F32, kir_un(k, KIR_COS, ang)));
	st(&kb, b, tab, iadd(&kb, at, c64(&kb, 1)), kir_cvt(k, KIR_F32, kir_un(k, KIR_SIN, ang)));
	kb_end(&kb, 16);
}

/* Rows of the output in parallel, the last dim in an inner loop. */
static void emit_pointwise(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *v = op->out[0];
	const struct ir_shape *s = &v->shape;
	int64_t n = ir_shape_numel(s);
	int64_t last = s->rank ? s->dim[s->rank - 1] : 1;
	int64_t rows = last ? n / last : 0;
	struct kb kb = kb_begin(p, op, NULL, rows, prefix);
	kx *idx[IR_MAX_RANK];
	struct ir_shape lead = *s;
	if (lead.rank)
		lead.rank--;
	unflat(&kb, &lead, kir_var(kb.k, 0), idx);
	struct kir_block *b = &kb.k->body;
	if (last >= 32)
		kb_rows(&kb, last);
	if (s->rank) {
		int j = kir_index(kb.k, "j");
		b = row_loop(&kb, b, j, c64(&kb, 0), c64(&kb, last));
		idx[s->rank - 1] = kir_var(kb.k, j);
	}
	kx *val = op_at(&kb, op, idx);
	/* short rows that reduce a warp or more: the block reduces, once per element */
	int64_t rlen = 0;
	if (kb.k->launch.map != KIR_MAP_BLOCK && spread_reductions(val, 0, &rlen) && rlen >= 32 &&
	    kb_rows(&kb, rlen))
		spread_reductions(val, 1, &rlen);
	st(&kb, b, v->id, flat(&kb, s, idx), kir_cvt(kb.k, compute_type(v->dtype), val));
	kb_end(&kb, last ? (16384 + last - 1) / last : 1);
}

/* --- the other ops, one or two kernels each ------------------------------------------- */

static int scratch(struct cg_plan *p, enum kir_type t, int64_t n)
{
	return add_buf(p, t, n);
}

static int64_t rows_of(const struct ir_shape *s)
{
	int64_t n = 1;
	for (int d = 0; d + 1 < s->rank; d++)
		n *= s->dim[d];
	return n;
}

static int64_t last_of(const struct ir_shape *s)
{
	return s->rank ? s->dim[s->rank - 1] : 1;
}

static int local(struct kb *kb, struct kir_block *b, const char *name, kx *init)
{
	int v = kir_local(kb->k, name, init->type);
	kir_set(kb->k, b, v, init);
	return v;
}

static kx *var(struct kb *kb, int v)
{
	return kir_var(kb->k, v);
}

static int64_t grain_rows(int64_t len)
{
	return len > 0 ? (8192 + len - 1) / len : 1;
}

/* SOFTMAX and SOFTMAX_BWD: one row per point. */
static void emit_softmax(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_shape *s = &op->out[0]->shape;
	int64_t R = rows_of(s), V = last_of(s);
	int64_t S = s->rank >= 2 ? s->dim[s->rank - 2] : 1;
	int causal = (int)ir_op_int(op, "causal", 0);
	int bwd = op->kind == IR_OP_SOFTMAX_BWD;
	struct kb kb = kb_begin(p, op, NULL, R, prefix);
	kb_rows(&kb, V);
	struct kir_block *b = &kb.k->body;
	kx *row = imul(&kb, var(&kb, 0), V);
	kx *n = c64(&kb, V);
	if (causal)
		n = kir_bin(kb.k, KIR_MIN, iadd(&kb, irem(&kb, var(&kb, 0), S), c64(&kb, 1)), c64(&kb, V));
	int nv = local(&kb, b, "n", n);
	int j = kir_index(kb.k, "j");
	kx *at = iadd(&kb, row, var(&kb, j));
	struct kir_block *lb;
	if (!bwd) {
		const struct ir_value *x = op->in[0];
		int m = local(&kb, b, "m", row_reduce(&kb, KIR_RED_MAX, j, c64(&kb, 0), var(&kb, nv), ldv(&kb, x, at)));
		kx *e = kir_un(kb.k, KIR_EXP, fbin(&kb, KIR_SUB, ldv(&kb, x, at), var(&kb, m)));
		int sum = local(&kb, b, "s", row_reduce(&kb, KIR_RED_SUM, j, c64(&kb, 0), var(&kb, nv), e));
		int inv = local(&kb, b, "inv", fbin(&kb, KIR_DIV, fc(&kb, 1), var(&kb, sum)));
		lb = row_loop(&kb, b, j, c64(&kb, 0), c64(&kb, V));
		kx *y = fbin(&kb, KIR_MUL, e, var(&kb, inv));
		st(&kb, lb, op->out[0]->id, at,
		   kir_select(kb.k, fbin(&kb, KIR_LT, var(&kb, j), var(&kb, nv)), y, fc(&kb, 0)));
	} else {
		const struct ir_value *y = op->in[0], *dy = op->in[1];
		kx *prod = fbin(&kb, KIR_MUL, ldv(&kb, dy, at), ldv(&kb, y, at));
		int dot = local(&kb, b, "dot", row_reduce(&kb, KIR_RED_SUM, j, c64(&kb, 0), var(&kb, nv), prod));
		lb = row_loop(&kb, b, j, c64(&kb, 0), c64(&kb, V));
		kx *dx = fbin(&kb, KIR_MUL, ldv(&kb, y, at), fbin(&kb, KIR_SUB, ldv(&kb, dy, at), var(&kb, dot)));
		st(&kb, lb, op->out[0]->id, at,
		   kir_select(kb.k, fbin(&kb, KIR_LT, var(&kb, j), var(&kb, nv)), dx, fc(&kb, 0)));
	}
	kb_end(&kb, grain_rows(V));
}

/* row n of logits: locals m (max) and s (sum of exp(x - m)); returns lse expression */
static kx *row_lse(struct kb *kb, struct kir_block *b, const struct ir_value *x, kx *row,
		   int64_t V)
{
	int j = kir_index(kb->k, "j");
	kx *at = iadd(kb, row, var(kb, j));
	int m = local(kb, b, "m", row_reduce(kb, KIR_RED_MAX, j, c64(kb, 0), c64(kb, V), ldv(kb, x, at)));
	kx *e = kir_un(kb->k, KIR_EXP, fbin(kb, KIR_SUB, ldv(kb, x, at), var(kb, m)));
	int s = local(kb, b, "s", row_reduce(kb, KIR_RED_SUM, j, c64(kb, 0), c64(kb, V), e));
	return fbin(kb, KIR_ADD, var(kb, m), kir_un(kb->k, KIR_LOG, var(kb, s)));
}

static void emit_cross_entropy(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *t = op->in[1];
	int64_t N = ir_shape_numel(&t->shape), V = last_of(&x->shape);
	int loss = scratch(p, KIR_F32, N), valid = scratch(p, KIR_F32, N);
	/* per row: loss and whether it counts */
	struct kb kb = kb_begin(p, op, "rows", N, prefix);
	kb_rows(&kb, V);
	struct kir_block *b = &kb.k->body;
	kx *n = var(&kb, 0);
	int tv = local(&kb, b, "t", ldv(&kb, t, n));
	kx *ok = fbin(&kb, KIR_LE, c64(&kb, 0), var(&kb, tv));
	kx *row = imul(&kb, n, V);
	kx *lse = row_lse(&kb, b, x, row, V);
	kx *xt = ldv(&kb, x, iadd(&kb, row, iclamp(&kb, var(&kb, tv), 0, V - 1)));
	st(&kb, b, loss, n, kir_select(kb.k, ok, fbin(&kb, KIR_SUB, lse, xt), fc(&kb, 0)));
	st(&kb, b, valid, n, kir_select(kb.k, ok, fc(&kb, 1), fc(&kb, 0)));
	kb_end(&kb, grain_rows(V));
	/* the mean over counted rows, summed in double */
	kb = kb_begin(p, op, "mean", 1, prefix);
	kb_rows(&kb, N);
	b = &kb.k->body;
	int i = kir_index(kb.k, "i");
	kx *tot = row_reduce(&kb, KIR_RED_SUM, i, c64(&kb, 0), c64(&kb, N),
			     kir_cvt(kb.k, KIR_F64, ld(&kb, loss, var(&kb, i), KIR_F32)));
	kx *cnt = row_reduce(&kb, KIR_RED_SUM, i, c64(&kb, 0), c64(&kb, N),
			     kir_cvt(kb.k, KIR_F64, ld(&kb, valid, var(&kb, i), KIR_F32)));
	int tv2 = local(&kb, b, "tot", tot), cv = local(&kb, b, "cnt", cnt);
	kx *mean = kir_select(kb.k, kir_bin(kb.k, KIR_LT, kir_f64(kb.k, 0), var(&kb, cv)),
			      kir_bin(kb.k, KIR_DIV, var(&kb, tv2), var(&kb, cv)), kir_f64(kb.k, 0));
	st(&kb, b, op->out[0]->id, c64(&kb, 0), kir_cvt(kb.k, KIR_F32, mean));
	kb_end(&kb, 1);
}

static void emit_cross_entropy_bwd(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *t = op->in[1], *dl = op->in[2];
	int64_t N = ir_shape_numel(&t->shape), V = last_of(&x->shape);
	int scale = scratch(p, KIR_F32, 1);
	struct kb kb = kb_begin(p, op, "scale", 1, prefix);
	kb_rows(&kb, N);
	struct kir_block *b = &kb.k->body;
	int i = kir_index(kb.k, "i");
	kx *okf = kir_select(kb.k, fbin(&kb, KIR_LE, c64(&kb, 0), ldv(&kb, t, var(&kb, i))),
			     kir_f64(kb.k, 1), kir_f64(kb.k, 0));
	int cv = local(&kb, b, "cnt", row_reduce(&kb, KIR_RED_SUM, i, c64(&kb, 0), c64(&kb, N), okf));
	kx *sc = kir_bin(kb.k, KIR_DIV, kir_cvt(kb.k, KIR_F64, ldv(&kb, dl, c64(&kb, 0))),
			 kir_bin(kb.k, KIR_MAX, var(&kb, cv), kir_f64(kb.k, 1)));
	st(&kb, b, scale, c64(&kb, 0), kir_cvt(kb.k, KIR_F32, sc));
	kb_end(&kb, 1);

	kb = kb_begin(p, op, "rows", N, prefix);
	kb_rows(&kb, V);
	b = &kb.k->body;
	kx *n = var(&kb, 0);
	int tv = local(&kb, b, "t", ldv(&kb, t, n));
	kx *ok = fbin(&kb, KIR_LE, c64(&kb, 0), var(&kb, tv));
	kx *row = imul(&kb, n, V);
	int lse = local(&kb, b, "lse", row_lse(&kb, b, x, row, V));
	int g = local(&kb, b, "g", kir_select(kb.k, ok, ld(&kb, scale, c64(&kb, 0), KIR_F32), fc(&kb, 0)));
	int j = kir_index(kb.k, "v");
	struct kir_block *lb = row_loop(&kb, b, j, c64(&kb, 0), c64(&kb, V));
	kx *at = iadd(&kb, row, var(&kb, j));
	kx *pr = kir_un(kb.k, KIR_EXP, fbin(&kb, KIR_SUB, ldv(&kb, x, at), var(&kb, lse)));
	kx *hot = kir_select(kb.k, fbin(&kb, KIR_EQ, var(&kb, j), var(&kb, tv)), fc(&kb, 1), fc(&kb, 0));
	st(&kb, lb, op->out[0]->id, at, fbin(&kb, KIR_MUL, var(&kb, g), fbin(&kb, KIR_SUB, pr, hot)));
	kb_end(&kb, grain_rows(V));
}

/* TOPK: k rounds of "largest entry after the previous pick" in the order (value
 * descending, index ascending), which is the reference's ties-to-lower-index rule. */
static void emit_topk(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0];
	int64_t E = last_of(&x->shape), N = rows_of(&x->shape), K = last_of(&op->out[0]->shape);
	struct kb kb = kb_begin(p, op, NULL, N, prefix);
	struct kir_block *b = &kb.k->body;
	kx *row = imul(&kb, var(&kb, 0), E);
	int pv = local(&kb, b, "pv", fc(&kb, 1.0 / 0.0));
	int pi = local(&kb, b, "pi", c64(&kb, -1));
	int j = kir_index(kb.k, "j"), e = kir_index(kb.k, "e");
	struct kir_block *jb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, K));
	int bi = local(&kb, jb, "bi", c64(&kb, -1));
	int bv = local(&kb, jb, "bv", fc(&kb, 0));
	struct kir_block *eb = kir_loop(kb.k, jb, e, c64(&kb, 0), c64(&kb, E));
	int xe = local(&kb, eb, "xe", ldv(&kb, x, iadd(&kb, row, var(&kb, e))));
	kx *after = kir_bin(kb.k, KIR_OR, fbin(&kb, KIR_LT, var(&kb, xe), var(&kb, pv)),
			    kir_bin(kb.k, KIR_AND, fbin(&kb, KIR_EQ, var(&kb, xe), var(&kb, pv)),
				    fbin(&kb, KIR_LT, var(&kb, pi), var(&kb, e))));
	kx *better = kir_bin(kb.k, KIR_OR, fbin(&kb, KIR_LT, var(&kb, bi), c64(&kb, 0)),
			     fbin(&kb, KIR_LT, var(&kb, bv), var(&kb, xe)));
	struct kir_block *tb = kir_if(kb.k, eb, kir_bin(kb.k, KIR_AND, after, better), NULL);
	kir_set(kb.k, tb, bi, var(&kb, e));
	kir_set(kb.k, tb, bv, var(&kb, xe));
	st(&kb, jb, op->out[0]->id, iadd(&kb, imul(&kb, var(&kb, 0), K), var(&kb, j)), var(&kb, bi));
	kir_set(kb.k, jb, pv, var(&kb, bv));
	kir_set(kb.k, jb, pi, var(&kb, bi));
	kb_end(&kb, grain_rows(E * K));
}

/* out[n, :] = 0, then out[n, col(n, j)] += val(n, j): PUT_ALONG and EXPERT_COUNT */
static void emit_put_along(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_shape *os = &op->out[0]->shape;
	int64_t N = os->dim[0], E = os->dim[1];
	const struct ir_value *idx = op->kind == IR_OP_PUT_ALONG ? op->in[1] : op->in[0];
	int64_t per = ir_shape_numel(&idx->shape) / (N ? N : 1);
	if (op->kind == IR_OP_EXPERT_COUNT && p->target->block_threads > 0) {
		/* a block an entry (n, e), its choices counted over the block's threads: the
		 * counts are whole numbers, so any order of the sum gives the same value (a
		 * thread a group walking all 65,536 choices of moe_bench's step took 3.5 ms) */
		struct kb kb = kb_begin(p, op, NULL, N * E, prefix);
		kb_rows(&kb, per);
		struct kir_block *b = &kb.k->body;
		int n = local(&kb, b, "n", idiv(&kb, var(&kb, 0), E));
		int e = local(&kb, b, "e", irem(&kb, var(&kb, 0), E));
		int j = kir_index(kb.k, "j");
		kx *at = iadd(&kb, imul(&kb, var(&kb, n), per), var(&kb, j));
		kx *hit = kir_bin(kb.k, KIR_EQ, iclamp(&kb, ldv(&kb, idx, at), 0, E - 1), var(&kb, e));
		kx *cnt = row_reduce(&kb, KIR_RED_SUM, j, c64(&kb, 0), c64(&kb, per),
				     kir_select(kb.k, hit, fc(&kb, 1), fc(&kb, 0)));
		st(&kb, b, op->out[0]->id, var(&kb, 0), cnt);
		kb_end(&kb, 1);
		return;
	}
	struct kb kb = kb_begin(p, op, NULL, N, prefix);
	struct kir_block *b = &kb.k->body;
	kx *n = var(&kb, 0);
	int e = kir_index(kb.k, "e"), j = kir_index(kb.k, "j");
	struct kir_block *zb = kir_loop(kb.k, b, e, c64(&kb, 0), c64(&kb, E));
	st(&kb, zb, op->out[0]->id, iadd(&kb, imul(&kb, n, E), var(&kb, e)), fc(&kb, 0));
	struct kir_block *jb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, per));
	kx *at = iadd(&kb, imul(&kb, n, per), var(&kb, j));
	kx *col = iclamp(&kb, ldv(&kb, idx, at), 0, E - 1);
	kx *val = op->kind == IR_OP_PUT_ALONG ? ldv(&kb, op->in[0], at) : fc(&kb, 1);
	st_add(&kb, jb, op->out[0]->id, iadd(&kb, imul(&kb, n, E), col), val);
	kb_end(&kb, grain_rows(E));
}

/* SCATTER_ROWS: columns in blocks of 64 in parallel, rows in order within each.  On a
 * target of blocks of threads (a GPU) the rows are first listed by table row, in
 * token order (a count per table row, their offsets, the list), then a point (a
 * thread) an element of the table sums its row's list in order into a register: the
 * CPU's sums, each a chain of loads that do not wait on stores.  Adding in place, a
 * thread a column (768 for gpt2_124m) walking all 16,384 tokens of a step, was a chain
 * of dependent read-modify-writes: 4.1 ms; in bands of table rows no better, since
 * the tokens of a step fall in few rows. */
static void emit_scatter_rows(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *dy = op->in[0], *idx = op->in[1];
	int64_t V = op->out[0]->shape.dim[0], D = op->out[0]->shape.dim[1];
	int64_t N = ir_shape_numel(&idx->shape);
	if (p->target->block_threads > 0) {
		int cnt = scratch(p, KIR_I64, V), off = scratch(p, KIR_I64, V);
		int list = scratch(p, KIR_I64, N);
		/* per table row v: how many tokens name it */
		struct kb kb = kb_begin(p, op, "count", V, prefix);
		struct kir_block *b = &kb.k->body;
		int n = kir_index(kb.k, "n");
		int c = local(&kb, b, "c", c64(&kb, 0));
		struct kir_block *nb = kir_loop(kb.k, b, n, c64(&kb, 0), c64(&kb, N));
		kx *hit = kir_bin(kb.k, KIR_EQ, iclamp(&kb, ldv(&kb, idx, var(&kb, n)), 0, V - 1),
				  var(&kb, 0));
		kir_set(kb.k, nb, c, iadd(&kb, var(&kb, c), kir_select(kb.k, hit, c64(&kb, 1),
									c64(&kb, 0))));
		st(&kb, b, cnt, var(&kb, 0), var(&kb, c));
		kb_end(&kb, 256);
		/* where each row's list starts: the counts summed in pieces of SCAN_PIECE rows
		 * (a point a piece), the pieces' starts (one point), then each piece's rows
		 * (a point a piece); one thread over all 50,304 rows took 1.0 ms */
		enum { SCAN_PIECE = 1024 };
		int64_t P = (V + SCAN_PIECE - 1) / SCAN_PIECE;
		int part = scratch(p, KIR_I64, P);
		kb = kb_begin(p, op, "pieces", P, prefix);
		b = &kb.k->body;
		int v = kir_index(kb.k, "v");
		int lo = local(&kb, b, "lo", imul(&kb, var(&kb, 0), SCAN_PIECE));
		int hi = local(&kb, b, "hi", kir_bin(kb.k, KIR_MIN, iadd(&kb, var(&kb, lo),
				c64(&kb, SCAN_PIECE)), c64(&kb, V)));
		int at = local(&kb, b, "at", c64(&kb, 0));
		struct kir_block *vb = kir_loop(kb.k, b, v, var(&kb, lo), var(&kb, hi));
		kir_set(kb.k, vb, at, iadd(&kb, var(&kb, at), ld(&kb, cnt, var(&kb, v), KIR_I64)));
		st(&kb, b, part, var(&kb, 0), var(&kb, at));
		kb_end(&kb, 1);
		kb = kb_begin(p, op, "starts", 1, prefix);
		b = &kb.k->body;
		int q = kir_index(kb.k, "q");
		at = local(&kb, b, "at", c64(&kb, 0));
		struct kir_block *qb = kir_loop(kb.k, b, q, c64(&kb, 0), c64(&kb, P));
		int pc = local(&kb, qb, "pc", ld(&kb, part, var(&kb, q), KIR_I64));
		st(&kb, qb, part, var(&kb, q), var(&kb, at));
		kir_set(kb.k, qb, at, iadd(&kb, var(&kb, at), var(&kb, pc)));
		kb_end(&kb, 1);
		kb = kb_begin(p, op, "offsets", P, prefix);
		b = &kb.k->body;
		v = kir_index(kb.k, "v");
		lo = local(&kb, b, "lo", imul(&kb, var(&kb, 0), SCAN_PIECE));
		hi = local(&kb, b, "hi", kir_bin(kb.k, KIR_MIN, iadd(&kb, var(&kb, lo),
				c64(&kb, SCAN_PIECE)), c64(&kb, V)));
		at = local(&kb, b, "at", ld(&kb, part, var(&kb, 0), KIR_I64));
		vb = kir_loop(kb.k, b, v, var(&kb, lo), var(&kb, hi));
		st(&kb, vb, off, var(&kb, v), var(&kb, at));
		kir_set(kb.k, vb, at, iadd(&kb, var(&kb, at), ld(&kb, cnt, var(&kb, v), KIR_I64)));
		kb_end(&kb, 1);
		/* each row's tokens, in order */
		kb = kb_begin(p, op, "list", V, prefix);
		b = &kb.k->body;
		n = kir_index(kb.k, "n");
		int k = local(&kb, b, "k", ld(&kb, off, var(&kb, 0), KIR_I64));
		nb = kir_loop(kb.k, b, n, c64(&kb, 0), c64(&kb, N));
		hit = kir_bin(kb.k, KIR_EQ, iclamp(&kb, ldv(&kb, idx, var(&kb, n)), 0, V - 1),
			      var(&kb, 0));
		struct kir_block *hb = kir_if(kb.k, nb, hit, NULL);
		st(&kb, hb, list, kir_bin(kb.k, KIR_MIN, var(&kb, k), c64(&kb, N - 1)), var(&kb, n));
		kir_set(kb.k, hb, k, iadd(&kb, var(&kb, k), c64(&kb, 1)));
		kb_end(&kb, 256);
		/* an element a point: its row's tokens summed in order */
		kb = kb_begin(p, op, "sum", V * D, prefix);
		b = &kb.k->body;
		int row = local(&kb, b, "row", idiv(&kb, var(&kb, 0), D));
		int d = local(&kb, b, "d", irem(&kb, var(&kb, 0), D));
		int j = kir_index(kb.k, "j");
		lo = local(&kb, b, "lo", ld(&kb, off, var(&kb, row), KIR_I64));
		int sum = local(&kb, b, "s", fc(&kb, 0));
		struct kir_block *jb = kir_loop(kb.k, b, j, var(&kb, lo),
						iadd(&kb, var(&kb, lo), ld(&kb, cnt, var(&kb, row), KIR_I64)));
		kx *tok = iclamp(&kb, ld(&kb, list, var(&kb, j), KIR_I64), 0, N - 1);
		kir_set(kb.k, jb, sum, fbin(&kb, KIR_ADD, var(&kb, sum),
					    ldv(&kb, dy, iadd(&kb, imul(&kb, tok, D), var(&kb, d)))));
		st(&kb, b, op->out[0]->id, var(&kb, 0), var(&kb, sum));
		kb_end(&kb, 256);
		return;
	}
	enum { BLK = 64 };
	struct kb kb = kb_begin(p, op, NULL, (D + BLK - 1) / BLK, prefix);
	struct kir_block *b = &kb.k->body;
	kx *d0 = imul(&kb, var(&kb, 0), BLK);
	int d1 = local(&kb, b, "d1", kir_bin(kb.k, KIR_MIN, iadd(&kb, d0, c64(&kb, BLK)), c64(&kb, D)));
	int v = kir_index(kb.k, "v"), n = kir_index(kb.k, "n"), d = kir_index(kb.k, "d");
	struct kir_block *vb = kir_loop(kb.k, b, v, c64(&kb, 0), c64(&kb, V));
	vb = kir_loop(kb.k, vb, d, d0, var(&kb, d1));
	st(&kb, vb, op->out[0]->id, iadd(&kb, imul(&kb, var(&kb, v), D), var(&kb, d)), fc(&kb, 0));
	struct kir_block *nb = kir_loop(kb.k, b, n, c64(&kb, 0), c64(&kb, N));
	int r = local(&kb, nb, "r", iclamp(&kb, ldv(&kb, idx, var(&kb, n)), 0, V - 1));
	struct kir_block *db = kir_loop(kb.k, nb, d, d0, var(&kb, d1));
	st_add(&kb, db, op->out[0]->id, iadd(&kb, imul(&kb, var(&kb, r), D), var(&kb, d)),
	       ldv(&kb, dy, iadd(&kb, imul(&kb, var(&kb, n), D), var(&kb, d))));
	kb_end(&kb, 1);
}

/* SUM_TO over leading dimensions (a bias's gradient: [B, S, D] to [D]) on a target of
 * blocks of threads: a point an output element leaves each thread R rows to add in
 * turn, too long a chain (3.6 ms for [8192, 768]).  So the rows in pieces of SUM_PIECE:
 * each piece's sum a point of a scratch [P, O], then the P pieces' sums in order, a
 * point an element.  Another order of the sums than the CPU's, fixed.  0 when the op
 * is not of that shape (or too short to gain): emitted as a pointwise kernel. */
enum { SUM_PIECE = 64 };

static int emit_sum_to_split(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *in = op->in[0], *out = op->out[0];
	const struct ir_shape *is = &in->shape, *os = &out->shape;
	int lead = is->rank - os->rank;
	if (lead <= 0)
		return 0;
	for (int d = 0; d < os->rank; d++)
		if (os->dim[d] != is->dim[lead + d])
			return 0;
	int64_t O = ir_shape_numel(os), R = O ? ir_shape_numel(is) / O : 0;
	if (R < 4 * SUM_PIECE)
		return 0;
	int64_t P = (R + SUM_PIECE - 1) / SUM_PIECE;
	int part = scratch(p, KIR_F32, P * O);
	struct kb kb = kb_begin(p, op, "part", P * O, prefix);
	kx *o = irem(&kb, var(&kb, 0), O), *q = idiv(&kb, var(&kb, 0), O);
	int r = kir_index(kb.k, "r");
	kx *iidx[IR_MAX_RANK];
	unflat(&kb, is, iadd(&kb, imul(&kb, var(&kb, r), O), o), iidx);
	kx *lo = imul(&kb, q, SUM_PIECE);
	kx *hi = kir_bin(kb.k, KIR_MIN, iadd(&kb, lo, c64(&kb, SUM_PIECE)), c64(&kb, R));
	kx *sum = kir_reduce(kb.k, KIR_RED_SUM, r, lo, hi,
			     kir_cvt(kb.k, KIR_F32, val_at(&kb, in, iidx)));
	st(&kb, &kb.k->body, part, var(&kb, 0), sum);
	kb_end(&kb, 256);
	kb = kb_begin(p, op, "sum", O, prefix);
	int j = kir_index(kb.k, "j");
	sum = kir_reduce(kb.k, KIR_RED_SUM, j, c64(&kb, 0), c64(&kb, P),
			 ld(&kb, part, iadd(&kb, imul(&kb, var(&kb, j), O), var(&kb, 0)), KIR_F32));
	st(&kb, &kb.k->body, out->id, var(&kb, 0), kir_cvt(kb.k, compute_type(out->dtype), sum));
	kb_end(&kb, 256);
	return 1;
}

/* MOE_DISPATCH: counting sort of the choices by expert (one point), then row copies. */
/* MOE_DISPATCH on a target of blocks of threads: the same stable counting sort as
 * below, over pieces of DISPATCH_PIECE choices in parallel (a point an expert and a
 * piece counts its choices, one point the offsets, a point an expert and a piece
 * places them in order), then the rows a point an element.  One thread sorting all
 * 32,768 choices of moe_1b's step took 2.9 ms a layer. */
enum { DISPATCH_PIECE = 512 };

static void emit_dispatch_blocks(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *idx = op->in[1];
	const struct ir_value *xs = op->out[0], *off = op->out[1], *perm = op->out[2];
	int64_t N = x->shape.dim[0], D = x->shape.dim[1], K = idx->shape.dim[1];
	int64_t E = off->shape.dim[0] - 1, C = N * K;
	int64_t P = C > 0 ? (C + DISPATCH_PIECE - 1) / DISPATCH_PIECE : 1;
	int start = scratch(p, KIR_I64, E * P > 0 ? E * P : 1);
	/* point e * P + q: the choices of expert e in piece q */
	struct kb kb = kb_begin(p, op, "count", E * P, prefix);
	struct kir_block *b = &kb.k->body;
	int e = local(&kb, b, "e", idiv(&kb, var(&kb, 0), P));
	int q = local(&kb, b, "q", irem(&kb, var(&kb, 0), P));
	int c = kir_index(kb.k, "c");
	int lo = local(&kb, b, "lo", imul(&kb, var(&kb, q), DISPATCH_PIECE));
	int hi = local(&kb, b, "hi", kir_bin(kb.k, KIR_MIN, iadd(&kb, var(&kb, lo),
			c64(&kb, DISPATCH_PIECE)), c64(&kb, C)));
	int n = local(&kb, b, "n", c64(&kb, 0));
	struct kir_block *lb = kir_loop(kb.k, b, c, var(&kb, lo), var(&kb, hi));
	kx *hit = kir_bin(kb.k, KIR_EQ, iclamp(&kb, ldv(&kb, idx, var(&kb, c)), 0, E - 1),
			  var(&kb, e));
	kir_set(kb.k, lb, n, iadd(&kb, var(&kb, n), kir_select(kb.k, hit, c64(&kb, 1), c64(&kb, 0))));
	st(&kb, b, start, var(&kb, 0), var(&kb, n));
	kb_end(&kb, 64);
	/* where each (expert, piece) starts, in (e, q) order: a point an expert sums its
	 * pieces, one point the experts (off), a point an expert its pieces' starts (one
	 * point over all E x P = 8,192 pieces of moe_bench's step was a chain of loads) */
	int tot = scratch(p, KIR_I64, E > 0 ? E : 1);
	kb = kb_begin(p, op, "totals", E, prefix);
	b = &kb.k->body;
	int i = kir_index(kb.k, "i");
	int at = local(&kb, b, "at", c64(&kb, 0));
	lb = kir_loop(kb.k, b, i, imul(&kb, var(&kb, 0), P), imul(&kb, iadd(&kb, var(&kb, 0),
									  c64(&kb, 1)), P));
	kir_set(kb.k, lb, at, iadd(&kb, var(&kb, at), ld(&kb, start, var(&kb, i), KIR_I64)));
	st(&kb, b, tot, var(&kb, 0), var(&kb, at));
	kb_end(&kb, 64);
	kb = kb_begin(p, op, "offsets", 1, prefix);
	b = &kb.k->body;
	at = local(&kb, b, "at", c64(&kb, 0));
	e = kir_index(kb.k, "e");
	lb = kir_loop(kb.k, b, e, c64(&kb, 0), c64(&kb, E));
	st(&kb, lb, off->id, var(&kb, e), var(&kb, at));
	kir_set(kb.k, lb, at, iadd(&kb, var(&kb, at), ld(&kb, tot, var(&kb, e), KIR_I64)));
	st(&kb, b, off->id, c64(&kb, E), var(&kb, at));
	kb_end(&kb, 1);
	kb = kb_begin(p, op, "starts", E, prefix);
	b = &kb.k->body;
	i = kir_index(kb.k, "i");
	at = local(&kb, b, "at", ldv(&kb, off, var(&kb, 0)));
	lb = kir_loop(kb.k, b, i, imul(&kb, var(&kb, 0), P), imul(&kb, iadd(&kb, var(&kb, 0),
									  c64(&kb, 1)), P));
	int cnt = local(&kb, lb, "cnt", ld(&kb, start, var(&kb, i), KIR_I64));
	st(&kb, lb, start, var(&kb, i), var(&kb, at));
	kir_set(kb.k, lb, at, iadd(&kb, var(&kb, at), var(&kb, cnt)));
	kb_end(&kb, 64);
	/* point e * P + q: expert e's choices of piece q placed in order */
	kb = kb_begin(p, op, "place", E * P, prefix);
	b = &kb.k->body;
	e = local(&kb, b, "e", idiv(&kb, var(&kb, 0), P));
	q = local(&kb, b, "q", irem(&kb, var(&kb, 0), P));
	c = kir_index(kb.k, "c");
	lo = local(&kb, b, "lo", imul(&kb, var(&kb, q), DISPATCH_PIECE));
	hi = local(&kb, b, "hi", kir_bin(kb.k, KIR_MIN, iadd(&kb, var(&kb, lo),
			c64(&kb, DISPATCH_PIECE)), c64(&kb, C)));
	int r = local(&kb, b, "r", ld(&kb, start, var(&kb, 0), KIR_I64));
	lb = kir_loop(kb.k, b, c, var(&kb, lo), var(&kb, hi));
	hit = kir_bin(kb.k, KIR_EQ, iclamp(&kb, ldv(&kb, idx, var(&kb, c)), 0, E - 1),
		      var(&kb, e));
	struct kir_block *hb = kir_if(kb.k, lb, hit, NULL);
	st(&kb, hb, perm->id, kir_bin(kb.k, KIR_MIN, var(&kb, r), c64(&kb, C - 1)), var(&kb, c));
	kir_set(kb.k, hb, r, iadd(&kb, var(&kb, r), c64(&kb, 1)));
	kb_end(&kb, 64);
	/* the rows, a point an element */
	kb = kb_begin(p, op, "rows", C * D, prefix);
	b = &kb.k->body;
	int row = local(&kb, b, "row", idiv(&kb, var(&kb, 0), D));
	int src = local(&kb, b, "src", imul(&kb, idiv(&kb, iclamp(&kb, ldv(&kb, perm, var(&kb, row)),
								       0, C - 1), K), D));
	st(&kb, b, xs->id, var(&kb, 0), ldv(&kb, x, iadd(&kb, var(&kb, src),
							 irem(&kb, var(&kb, 0), D))));
	kb_end(&kb, 256);
}

static void emit_dispatch(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *idx = op->in[1];
	const struct ir_value *xs = op->out[0], *off = op->out[1], *perm = op->out[2];
	int64_t N = x->shape.dim[0], D = x->shape.dim[1], K = idx->shape.dim[1];
	int64_t E = off->shape.dim[0] - 1, C = N * K;
	if (p->target->block_threads > 0) {
		emit_dispatch_blocks(p, op, prefix);
		return;
	}
	int pos = scratch(p, KIR_I64, E > 0 ? E : 1);
	struct kb kb = kb_begin(p, op, "sort", 1, prefix);
	struct kir_block *b = &kb.k->body;
	int e = kir_index(kb.k, "e"), c = kir_index(kb.k, "c");
	struct kir_block *lb = kir_loop(kb.k, b, e, c64(&kb, 0), c64(&kb, E + 1));
	st(&kb, lb, off->id, var(&kb, e), c64(&kb, 0));
	lb = kir_loop(kb.k, b, c, c64(&kb, 0), c64(&kb, C));
	kx *ex = iclamp(&kb, ldv(&kb, idx, var(&kb, c)), 0, E - 1);
	st_add(&kb, lb, off->id, iadd(&kb, ex, c64(&kb, 1)), c64(&kb, 1));
	lb = kir_loop(kb.k, b, e, c64(&kb, 0), c64(&kb, E));
	st_add(&kb, lb, off->id, iadd(&kb, var(&kb, e), c64(&kb, 1)), ldv(&kb, off, var(&kb, e)));
	st(&kb, lb, pos, var(&kb, e), ldv(&kb, off, var(&kb, e)));
	lb = kir_loop(kb.k, b, c, c64(&kb, 0), c64(&kb, C));
	int ev = local(&kb, lb, "ex", iclamp(&kb, ldv(&kb, idx, var(&kb, c)), 0, E - 1));
	int r = local(&kb, lb, "r", ld(&kb, pos, var(&kb, ev), KIR_I64));
	st(&kb, lb, pos, var(&kb, ev), iadd(&kb, var(&kb, r), c64(&kb, 1)));
	st(&kb, lb, perm->id, var(&kb, r), var(&kb, c));
	kb_end(&kb, 1);

	kb = kb_begin(p, op, "rows", C, prefix);
	b = &kb.k->body;
	int d = kir_index(kb.k, "d");
	int src = local(&kb, b, "src", imul(&kb, idiv(&kb, ldv(&kb, perm, var(&kb, 0)), K), D));
	lb = kir_loop(kb.k, b, d, c64(&kb, 0), c64(&kb, D));
	st(&kb, lb, xs->id, iadd(&kb, imul(&kb, var(&kb, 0), D), var(&kb, d)),
	   ldv(&kb, x, iadd(&kb, var(&kb, src), var(&kb, d))));
	kb_end(&kb, grain_rows(D));
}

/* inverse of perm: row[c] = r with perm[r] = c, -1 for choices no row holds */
static int emit_inverse_perm(struct cg_plan *p, const struct ir_op *op,
			     const struct ir_value *perm, int64_t C, const char *prefix)
{
	int row = scratch(p, KIR_I64, C > 0 ? C : 1);
	int64_t R = perm->shape.dim[0];
	if (p->target->block_threads > 0) {
		/* a point a choice, then a point a row: a choice is held by one row at most
		 * (perm is a permutation), so no two points store to one element */
		struct kb kb = kb_begin(p, op, "unset", C, prefix);
		st(&kb, &kb.k->body, row, var(&kb, 0), c64(&kb, -1));
		kb_end(&kb, 256);
		kb = kb_begin(p, op, "inv", R, prefix);
		struct kir_block *b = &kb.k->body;
		int c = local(&kb, b, "c", ldv(&kb, perm, var(&kb, 0)));
		kx *in = kir_bin(kb.k, KIR_AND, kir_bin(kb.k, KIR_LE, c64(&kb, 0), var(&kb, c)),
				 kir_bin(kb.k, KIR_LT, var(&kb, c), c64(&kb, C)));
		struct kir_block *tb = kir_if(kb.k, b, in, NULL);
		st(&kb, tb, row, iclamp(&kb, var(&kb, c), 0, C - 1), var(&kb, 0));
		kb_end(&kb, 256);
		return row;
	}
	struct kb kb = kb_begin(p, op, "inv", 1, prefix);
	struct kir_block *b = &kb.k->body;
	int c = kir_index(kb.k, "c"), r = kir_index(kb.k, "r");
	struct kir_block *lb = kir_loop(kb.k, b, c, c64(&kb, 0), c64(&kb, C));
	st(&kb, lb, row, var(&kb, c), c64(&kb, -1));
	lb = kir_loop(kb.k, b, r, c64(&kb, 0), c64(&kb, R));
	st(&kb, lb, row, iclamp(&kb, ldv(&kb, perm, var(&kb, r)), 0, C - 1), var(&kb, r));
	kb_end(&kb, 1);
	return row;
}

/* MOE_COMBINE (weighted by gates) and MOE_UNDISPATCH (plain sum): per token n,
 * out[n] = sum_j w(n,j) * in[row(n,j)] */
static void emit_combine(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	int comb = op->kind == IR_OP_MOE_COMBINE;
	const struct ir_value *ys = op->in[0], *perm = op->in[1];
	int64_t N = op->out[0]->shape.dim[0], D = op->out[0]->shape.dim[1];
	int64_t K = comb ? op->in[2]->shape.dim[1] : ir_op_int(op, "k", 1);
	int row = emit_inverse_perm(p, op, perm, N * K, prefix);
	if (p->target->block_threads > 0) {
		/* a point an element, its K terms summed in order in a register (a point a
		 * token adding whole rows in place read and wrote a row a thread: 1.9 ms a
		 * layer of moe_1b) */
		struct kb kb = kb_begin(p, op, NULL, N * D, prefix);
		struct kir_block *b = &kb.k->body;
		int n = local(&kb, b, "n", idiv(&kb, var(&kb, 0), D));
		int d = local(&kb, b, "d", irem(&kb, var(&kb, 0), D));
		int sum = local(&kb, b, "s", fc(&kb, 0));
		int j = kir_index(kb.k, "j");
		struct kir_block *jb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, K));
		kx *c = iadd(&kb, imul(&kb, var(&kb, n), K), var(&kb, j));
		int r = local(&kb, jb, "r", ld(&kb, row, c, KIR_I64));
		int w = local(&kb, jb, "w", comb ? ldv(&kb, op->in[2], c) : fc(&kb, 1));
		struct kir_block *tb = kir_if(kb.k, jb, fbin(&kb, KIR_LE, c64(&kb, 0), var(&kb, r)), NULL);
		kir_set(kb.k, tb, sum, fbin(&kb, KIR_ADD, var(&kb, sum), fbin(&kb, KIR_MUL, var(&kb, w),
			ldv(&kb, ys, iadd(&kb, imul(&kb, var(&kb, r), D), var(&kb, d))))));
		st(&kb, b, op->out[0]->id, var(&kb, 0), var(&kb, sum));
		kb_end(&kb, 256);
		return;
	}
	struct kb kb = kb_begin(p, op, NULL, N, prefix);
	struct kir_block *b = &kb.k->body;
	kx *n = var(&kb, 0);
	int d = kir_index(kb.k, "d"), j = kir_index(kb.k, "j");
	struct kir_block *lb = kir_loop(kb.k, b, d, c64(&kb, 0), c64(&kb, D));
	st(&kb, lb, op->out[0]->id, iadd(&kb, imul(&kb, n, D), var(&kb, d)), fc(&kb, 0));
	struct kir_block *jb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, K));
	kx *c = iadd(&kb, imul(&kb, n, K), var(&kb, j));
	int r = local(&kb, jb, "r", ld(&kb, row, c, KIR_I64));
	int w = local(&kb, jb, "w", comb ? ldv(&kb, op->in[2], c) : fc(&kb, 1));
	struct kir_block *tb = kir_if(kb.k, jb, fbin(&kb, KIR_LE, c64(&kb, 0), var(&kb, r)), NULL);
	lb = kir_loop(kb.k, tb, d, c64(&kb, 0), c64(&kb, D));
	st_add(&kb, lb, op->out[0]->id, iadd(&kb, imul(&kb, n, D), var(&kb, d)),
	       fbin(&kb, KIR_MUL, var(&kb, w), ldv(&kb, ys, iadd(&kb, imul(&kb, var(&kb, r), D), var(&kb, d)))));
	kb_end(&kb, grain_rows(D * K));
}

/* MOE_COMBINE_BWD_DATA and _GATE: one row r of the routed buffer per point; on a target
 * of blocks of threads a row per block, its elements and its dot product spread over
 * the block (a row per thread was 7.3 and 4.4 ms a step of moe_bench, 8 x 1024). */
static void emit_combine_bwd(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *dy = op->in[0];
	int64_t D = dy->shape.dim[1];
	if (op->kind == IR_OP_MOE_COMBINE_BWD_DATA) {
		const struct ir_value *perm = op->in[1], *gates = op->in[2];
		int64_t R = perm->shape.dim[0], K = gates->shape.dim[1];
		int64_t C = ir_shape_numel(&gates->shape);
		struct kb kb = kb_begin(p, op, NULL, R, prefix);
		kb_rows(&kb, D);
		struct kir_block *b = &kb.k->body;
		int c = local(&kb, b, "c", iclamp(&kb, ldv(&kb, perm, var(&kb, 0)), 0, C - 1));
		int g = local(&kb, b, "g", ldv(&kb, gates, var(&kb, c)));
		int src = local(&kb, b, "src", imul(&kb, idiv(&kb, var(&kb, c), K), D));
		int d = kir_index(kb.k, "d");
		struct kir_block *lb = row_loop(&kb, b, d, c64(&kb, 0), c64(&kb, D));
		st(&kb, lb, op->out[0]->id, iadd(&kb, imul(&kb, var(&kb, 0), D), var(&kb, d)),
		   fbin(&kb, KIR_MUL, var(&kb, g), ldv(&kb, dy, iadd(&kb, var(&kb, src), var(&kb, d)))));
		kb_end(&kb, grain_rows(D));
		return;
	}
	const struct ir_value *ys = op->in[1], *perm = op->in[2];
	int64_t R = perm->shape.dim[0];
	int64_t C = ir_shape_numel(&op->out[0]->shape), K = op->out[0]->shape.dim[1];
	struct kb kb = kb_begin(p, op, "zero", C, prefix);
	st(&kb, &kb.k->body, op->out[0]->id, var(&kb, 0), fc(&kb, 0));
	kb_end(&kb, 4096);
	kb = kb_begin(p, op, NULL, R, prefix);
	kb_rows(&kb, D);
	struct kir_block *b = &kb.k->body;
	int c = local(&kb, b, "c", iclamp(&kb, ldv(&kb, perm, var(&kb, 0)), 0, C - 1));
	int src = local(&kb, b, "src", imul(&kb, idiv(&kb, var(&kb, c), K), D));
	int d = kir_index(kb.k, "d");
	kx *dot = row_reduce(&kb, KIR_RED_SUM, d, c64(&kb, 0), c64(&kb, D),
			     fbin(&kb, KIR_MUL, ldv(&kb, dy, iadd(&kb, var(&kb, src), var(&kb, d))),
				  ldv(&kb, ys, iadd(&kb, imul(&kb, var(&kb, 0), D), var(&kb, d)))));
	st(&kb, b, op->out[0]->id, var(&kb, c), dot);
	kb_end(&kb, grain_rows(D));
}

/* --- expert parallelism ------------------------------------------------------------------ */

/* EP_COUNTS: counts[q] = offsets[q+1] - offsets[q], q = p*El + j, one entry per point */
static void emit_ep_counts(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *off = op->in[0];
	struct kb kb = kb_begin(p, op, NULL, ir_shape_numel(&op->out[0]->shape), prefix);
	kx *q = var(&kb, 0);
	st(&kb, &kb.k->body, op->out[0]->id, q,
	   kir_bin(kb.k, KIR_SUB, ldv(&kb, off, iadd(&kb, q, c64(&kb, 1))), ldv(&kb, off, q)));
	kb_end(&kb, 4096);
}

/* EP_OFFSETS: the running sum over e of sum_p rc[p, e], in one point */
static void emit_ep_offsets(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *rc = op->in[0];
	int64_t P = rc->shape.dim[0], El = rc->shape.dim[1];
	struct kb kb = kb_begin(p, op, NULL, 1, prefix);
	struct kir_block *b = &kb.k->body;
	int acc = local(&kb, b, "acc", c64(&kb, 0));
	st(&kb, b, op->out[0]->id, c64(&kb, 0), var(&kb, acc));
	int e = kir_index(kb.k, "e"), q = kir_index(kb.k, "p");
	struct kir_block *eb = kir_loop(kb.k, b, e, c64(&kb, 0), c64(&kb, El));
	struct kir_block *qb = kir_loop(kb.k, eb, q, c64(&kb, 0), c64(&kb, P));
	kir_set(kb.k, qb, acc, iadd(&kb, var(&kb, acc),
				    ldv(&kb, rc, iadd(&kb, imul(&kb, var(&kb, q), El), var(&kb, e)))));
	st(&kb, eb, op->out[0]->id, iadd(&kb, var(&kb, e), c64(&kb, 1)), var(&kb, acc));
	kb_end(&kb, 1);
}

/* Loops over the blocks (p, e) of an rc[P, El] in peer-major (p outer) or expert-major
 * order; returns the innermost block and sets *blk to the block's index p*El + e. */
static struct kir_block *ep_blocks(struct kb *kb, struct kir_block *b, int peer_major,
				   int64_t P, int64_t El, kx **blk)
{
	int o = kir_index(kb->k, "o"), i = kir_index(kb->k, "i");
	b = kir_loop(kb->k, b, o, c64(kb, 0), c64(kb, peer_major ? P : El));
	b = kir_loop(kb->k, b, i, c64(kb, 0), c64(kb, peer_major ? El : P));
	*blk = peer_major ? iadd(kb, imul(kb, var(kb, o), El), var(kb, i))
			  : iadd(kb, imul(kb, var(kb, i), El), var(kb, o));
	return b;
}

/* EP_REGROUP: one point maps every row of y to its row of x (-1: zero), then the rows
 * move in parallel.  Bad counts are clamped, not reported: a count < 0 counts as 0, and
 * a row whose place in x or in y is at or past C is not moved, so nothing is read or
 * written out of bounds and rows of y that no row reaches are zero. */
static void emit_ep_regroup(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *rc = op->in[1], *y = op->out[0];
	int64_t P = rc->shape.dim[0], El = rc->shape.dim[1], C = x->shape.dim[0];
	int64_t D = ir_shape_numel(&x->shape) / C;
	int inv = ir_op_int(op, "inverse", 0) != 0;
	int start = scratch(p, KIR_I64, P * El > 0 ? P * El : 1), row = scratch(p, KIR_I64, C);
	struct kb kb = kb_begin(p, op, "map", 1, prefix);
	struct kir_block *b = &kb.k->body, *lb;
	kx *blk;
	/* where each block starts in x */
	int at = local(&kb, b, "at", c64(&kb, 0));
	lb = ep_blocks(&kb, b, !inv, P, El, &blk);
	int bv = local(&kb, lb, "blk", blk);
	st(&kb, lb, start, var(&kb, bv), var(&kb, at));
	kir_set(kb.k, lb, at, iadd(&kb, var(&kb, at), kir_bin(kb.k, KIR_MAX, ldv(&kb, rc, var(&kb, bv)), c64(&kb, 0))));
	/* the blocks in y's order: row[dst + r] = start + r for the rows that fit */
	int dst = local(&kb, b, "dst", c64(&kb, 0));
	lb = ep_blocks(&kb, b, inv, P, El, &blk);
	bv = local(&kb, lb, "blk", blk);
	int cnt = local(&kb, lb, "cnt", kir_bin(kb.k, KIR_MAX, ldv(&kb, rc, var(&kb, bv)), c64(&kb, 0)));
	int src = local(&kb, lb, "src", ld(&kb, start, var(&kb, bv), KIR_I64));
	int r = kir_index(kb.k, "r");
	kx *lim = kir_bin(kb.k, KIR_MIN, var(&kb, cnt), kir_bin(kb.k, KIR_SUB, c64(&kb, C), var(&kb, dst)));
	struct kir_block *rb = kir_loop(kb.k, lb, r, c64(&kb, 0), lim);
	kx *from = iadd(&kb, var(&kb, src), var(&kb, r));
	st(&kb, rb, row, iadd(&kb, var(&kb, dst), var(&kb, r)),
	   kir_select(kb.k, fbin(&kb, KIR_LT, from, c64(&kb, C)), from, c64(&kb, -1)));
	kir_set(kb.k, lb, dst, iadd(&kb, var(&kb, dst), var(&kb, cnt)));
	rb = kir_loop(kb.k, b, r, kir_bin(kb.k, KIR_MIN, var(&kb, dst), c64(&kb, C)), c64(&kb, C));
	st(&kb, rb, row, var(&kb, r), c64(&kb, -1));
	kb_end(&kb, 1);

	kb = kb_begin(p, op, "rows", C, prefix);
	b = &kb.k->body;
	int sv = local(&kb, b, "s", ld(&kb, row, var(&kb, 0), KIR_I64));
	int base = local(&kb, b, "base", imul(&kb, kir_bin(kb.k, KIR_MAX, var(&kb, sv), c64(&kb, 0)), D));
	int d = kir_index(kb.k, "d");
	lb = kir_loop(kb.k, b, d, c64(&kb, 0), c64(&kb, D));
	st(&kb, lb, y->id, iadd(&kb, imul(&kb, var(&kb, 0), D), var(&kb, d)),
	   kir_select(kb.k, fbin(&kb, KIR_LE, c64(&kb, 0), var(&kb, sv)),
		      ldv(&kb, x, iadd(&kb, var(&kb, base), var(&kb, d))), fc(&kb, 0)));
	kb_end(&kb, grain_rows(D));
}

/* ALL_TO_ALL and ALL_TO_ALLV over a group of one rank (P = 1, read from the shapes):
 * the first T rows of x, zeros past them; T = all rows for ALL_TO_ALL, and for
 * ALL_TO_ALLV min(sum sc, sum rc, R, C) with counts < 0 as 0 (clamped like EP_REGROUP;
 * the reference reports sum sc != sum rc).  A larger group is the program executor's:
 * refused here. */
static int emit_all_to_all_single(struct cg_plan *p, const struct ir_op *op, const char *prefix,
				  FILE *err)
{
	int v = op->kind == IR_OP_ALL_TO_ALLV;
	const struct ir_value *x = op->in[0], *y = op->out[0];
	int64_t P = v ? op->in[1]->shape.dim[0] : x->shape.dim[0];
	if (P != 1 && p->sizing)
		return 0; /* the executor's exchange: its buffers are planned, no kernel */
	if (P != 1) {
		if (op->loc.file)
			fprintf(err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
		fprintf(err, "error: %s cannot run op %s over a group of %lld "
			"ranks (the program executor runs communication; a chunk runs only a "
			"group of one)\n", p->target->name, ir_op_name(op->kind), (long long)P);
		return 1;
	}
	int64_t R = x->shape.dim[0], C = y->shape.dim[0];
	int64_t D = C ? ir_shape_numel(&y->shape) / C : 0;
	int total = scratch(p, KIR_I64, 1);
	struct kb kb = kb_begin(p, op, "total", 1, prefix);
	struct kir_block *b = &kb.k->body;
	int t = local(&kb, b, "t", c64(&kb, R < C ? R : C));
	for (int k = 1; v && k <= 2; k++) {
		const struct ir_value *cv = op->in[k];
		int s = local(&kb, b, k == 1 ? "sent" : "received", c64(&kb, 0));
		int j = kir_index(kb.k, "j");
		struct kir_block *lb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, ir_shape_numel(&cv->shape)));
		kir_set(kb.k, lb, s, iadd(&kb, var(&kb, s),
					  kir_bin(kb.k, KIR_MAX, ldv(&kb, cv, var(&kb, j)), c64(&kb, 0))));
		kir_set(kb.k, b, t, kir_bin(kb.k, KIR_MIN, var(&kb, t), var(&kb, s)));
	}
	st(&kb, b, total, c64(&kb, 0), var(&kb, t));
	kb_end(&kb, 1);

	kb = kb_begin(p, op, "rows", C, prefix);
	b = &kb.k->body;
	struct kir_block *other;
	struct kir_block *tb = kir_if(kb.k, b, fbin(&kb, KIR_LT, var(&kb, 0), ld(&kb, total, c64(&kb, 0), KIR_I64)),
				      &other);
	int d = kir_index(kb.k, "d");
	kx *at = iadd(&kb, imul(&kb, var(&kb, 0), D), var(&kb, d));
	struct kir_block *lb = kir_loop(kb.k, tb, d, c64(&kb, 0), c64(&kb, D));
	st(&kb, lb, y->id, at, ldv(&kb, x, at));
	lb = kir_loop(kb.k, other, d, c64(&kb, 0), c64(&kb, D));
	st(&kb, lb, y->id, at, kir_cvt(kb.k, compute_type(y->dtype), fc(&kb, 0)));
	kb_end(&kb, grain_rows(D));
	return 0;
}

/* REDUCE_MAX_BWD: dy to the first maximal entry of each line, one line per point */
static void emit_reduce_max_bwd(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *dy = op->in[1];
	const struct ir_shape *s = &x->shape;
	int axis = norm_axis(ir_op_int(op, "axis", -1), s->rank);
	int64_t outer = 1, inner = 1, n = s->dim[axis];
	for (int d = 0; d < axis; d++)
		outer *= s->dim[d];
	for (int d = axis + 1; d < s->rank; d++)
		inner *= s->dim[d];
	struct kb kb = kb_begin(p, op, NULL, outer * inner, prefix);
	struct kir_block *b = &kb.k->body;
	kx *o = idiv(&kb, var(&kb, 0), inner), *i = irem(&kb, var(&kb, 0), inner);
	int base = local(&kb, b, "base", iadd(&kb, imul(&kb, o, n * inner), i));
	int j = kir_index(kb.k, "j");
	kx *at = iadd(&kb, var(&kb, base), imul(&kb, var(&kb, j), inner));
	int bi = local(&kb, b, "bi", c64(&kb, 0));
	int bv = local(&kb, b, "bv", ldv(&kb, x, var(&kb, base)));
	struct kir_block *lb = kir_loop(kb.k, b, j, c64(&kb, 1), c64(&kb, n));
	int xv = local(&kb, lb, "xv", ldv(&kb, x, at));
	struct kir_block *tb = kir_if(kb.k, lb, fbin(&kb, KIR_LT, var(&kb, bv), var(&kb, xv)), NULL);
	kir_set(kb.k, tb, bi, var(&kb, j));
	kir_set(kb.k, tb, bv, var(&kb, xv));
	int g = local(&kb, b, "g", ldv(&kb, dy, var(&kb, 0)));
	lb = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, n));
	st(&kb, lb, op->out[0]->id, at,
	   kir_select(kb.k, fbin(&kb, KIR_EQ, var(&kb, j), var(&kb, bi)), var(&kb, g), fc(&kb, 0)));
	kb_end(&kb, grain_rows(n));
}

/* --- FP8, emulated ------------------------------------------------------------------- */

static void add_lib_step_scratch(struct cg_plan *p, const struct ir_op *op,
				 enum cg_step_kind kind, int n_scratch, const int *scratch_ids);

/* x [..., M, K] at batch bt (the flat index over the leading dims), row and column: its
 * buffer at flat index at, or its producer's expression where x is inlined */
static kx *quant_in(struct kb *kb, const struct ir_value *x, kx *bt, kx *row, kx *col, kx *at)
{
	if (!kb->p->inlined[x->id])
		return ldv(kb, x, at);
	const struct ir_shape *s = &x->shape;
	kx *idx[IR_MAX_RANK];
	idx[s->rank - 2] = row;
	idx[s->rank - 1] = col;
	for (int d = s->rank - 3; d >= 0; d--) {
		idx[d] = d ? irem(kb, bt, s->dim[d]) : bt;
		bt = idiv(kb, bt, s->dim[d]);
	}
	return val_at(kb, x, idx);
}

/* QUANT_FP8: a point per tile of x [..., M, K]: amax over the tile, scale = amax / max,
 * q = round(x / scale) (0 where the scale is 0), all in f32 as ir.h states.  An
 * elementwise producer of x is computed here (fuses_into_quant) rather than stored and
 * read back: x's bf16 rounding is op_at's, so the values are those of the stored x. */
static void emit_quant_fp8(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	const struct ir_value *x = op->in[0], *q = op->out[0], *sv = op->out[1];
	const struct ir_shape *s = &x->shape;
	int64_t M = s->dim[s->rank - 2], K = s->dim[s->rank - 1];
	int64_t tr = ir_op_int(op, "tile_r", 1), tc = ir_op_int(op, "tile_c", 128);
	int64_t Ms = (M + tr - 1) / tr, Ks = (K + tc - 1) / tc;
	struct kb kb = kb_begin(p, op, NULL, ir_shape_numel(&sv->shape), prefix);
	struct kir_block *b = &kb.k->body;
	kx *pt = var(&kb, 0);
	kx *tj = irem(&kb, pt, Ks), *ti = irem(&kb, idiv(&kb, pt, Ks), Ms);
	kx *bt = idiv(&kb, pt, Ms * Ks);
	kx *r0 = imul(&kb, ti, tr), *c0 = imul(&kb, tj, tc);
	int rn = local(&kb, b, "rn", kir_bin(kb.k, KIR_MIN, c64(&kb, tr),
					     kir_bin(kb.k, KIR_SUB, c64(&kb, M), r0)));
	int cn = local(&kb, b, "cn", kir_bin(kb.k, KIR_MIN, c64(&kb, tc),
					     kir_bin(kb.k, KIR_SUB, c64(&kb, K), c0)));
	int base = local(&kb, b, "base", iadd(&kb, imul(&kb, bt, M * K),
					      iadd(&kb, imul(&kb, r0, K), c0)));
	double maxv = q->dtype == IR_F8E5M2 ? 57344.0 : 448.0;
	if (tc >= 32 && kb_rows(&kb, tr * tc)) {
		/* a block per tile: its elements in one flat range over the threads, the
		 * max-abs a block reduction */
		int e = kir_index(kb.k, "e");
		int n = local(&kb, b, "n", kir_bin(kb.k, KIR_MUL, var(&kb, rn), var(&kb, cn)));
		kx *ev = var(&kb, e);
		kx *er = kir_bin(kb.k, KIR_DIV, ev, var(&kb, cn));
		kx *ec = kir_bin(kb.k, KIR_REM, ev, var(&kb, cn));
		kx *at = iadd(&kb, var(&kb, base), iadd(&kb, imul(&kb, er, K), ec));
		kx *xe = quant_in(&kb, x, bt, iadd(&kb, r0, er), iadd(&kb, c0, ec), at);
		kx *amax = row_reduce(&kb, KIR_RED_MAX, e, c64(&kb, 0), var(&kb, n),
				      kir_un(kb.k, KIR_ABS, xe));
		int sc = local(&kb, b, "scale", fbin(&kb, KIR_DIV, amax, fc(&kb, maxv)));
		st(&kb, b, sv->id, pt, var(&kb, sc));
		struct kir_block *le = row_loop(&kb, b, e, c64(&kb, 0), var(&kb, n));
		kx *pos = fbin(&kb, KIR_LT, fc(&kb, 0), var(&kb, sc));
		kx *val = kir_select(kb.k, pos, fbin(&kb, KIR_DIV, xe, var(&kb, sc)), fc(&kb, 0));
		st(&kb, le, q->id, at, round_to(&kb, val, q->dtype));
		kb_end(&kb, grain_rows(tr * tc));
		return;
	}
	int i = kir_index(kb.k, "i"), j = kir_index(kb.k, "j");
	kx *at = iadd(&kb, var(&kb, base), iadd(&kb, imul(&kb, var(&kb, i), K), var(&kb, j)));
	kx *xe = quant_in(&kb, x, bt, iadd(&kb, r0, var(&kb, i)), iadd(&kb, c0, var(&kb, j)), at);
	kx *inner = kir_reduce(kb.k, KIR_RED_MAX, j, c64(&kb, 0), var(&kb, cn),
			       kir_un(kb.k, KIR_ABS, xe));
	kx *amax = kir_reduce(kb.k, KIR_RED_MAX, i, c64(&kb, 0), var(&kb, rn), inner);
	int sc = local(&kb, b, "scale", fbin(&kb, KIR_DIV, amax, fc(&kb, maxv)));
	st(&kb, b, sv->id, pt, var(&kb, sc));
	struct kir_block *li = kir_loop(kb.k, b, i, c64(&kb, 0), var(&kb, rn));
	struct kir_block *lj = kir_loop(kb.k, li, j, c64(&kb, 0), var(&kb, cn));
	kx *pos = fbin(&kb, KIR_LT, fc(&kb, 0), var(&kb, sc));
	kx *val = kir_select(kb.k, pos, fbin(&kb, KIR_DIV, xe, var(&kb, sc)), fc(&kb, 0));
	st(&kb, lj, q->id, at, round_to(&kb, val, q->dtype));
	kb_end(&kb, grain_rows(tr * tc));
}

/* y (buffer dst, shaped as q) = q * its tile's scale, tiles tr x tc of q's last two dims */
static void emit_dequant(struct cg_plan *p, const struct ir_op *op, const struct ir_value *q,
			 const struct ir_value *sv, int64_t tr, int64_t tc, int dst,
			 const char *prefix)
{
	const struct ir_shape *s = &q->shape;
	int64_t M = s->dim[s->rank - 2], K = s->dim[s->rank - 1];
	int64_t Ms = (M + tr - 1) / tr, Ks = (K + tc - 1) / tc;
	struct kb kb = kb_begin(p, op, "dequant", M ? ir_shape_numel(s) / K : 0, prefix);
	struct kir_block *b = &kb.k->body;
	kx *row = var(&kb, 0);
	kx *bt = idiv(&kb, row, M), *ri = irem(&kb, row, M);
	int sbase = local(&kb, b, "sbase", iadd(&kb, imul(&kb, bt, Ms * Ks),
					      imul(&kb, idiv(&kb, ri, tr), Ks)));
	int j = kir_index(kb.k, "j");
	struct kir_block *lj = kir_loop(kb.k, b, j, c64(&kb, 0), c64(&kb, K));
	kx *at = iadd(&kb, imul(&kb, row, K), var(&kb, j));
	kx *scl = ldv(&kb, sv, iadd(&kb, var(&kb, sbase), idiv(&kb, var(&kb, j), tc)));
	kx *v = fbin(&kb, KIR_MUL, ldv(&kb, q, at), scl);
	if (dst < p->n_values)
		st(&kb, lj, dst, at, v);
	else
		kir_store(kb.k, lj, kb_buf(&kb, dst), at, v);
	kb_end(&kb, grain_rows(K));
}

/* DEQUANT_FP8's tile along q's dim rank-back (2: rows, 1: columns) when it has no
 * attribute: what the scale's size gives, as the reference */
static int64_t dequant_tile(const struct ir_op *op, int back)
{
	const struct ir_shape *q = &op->in[0]->shape, *s = &op->in[1]->shape;
	int64_t n = q->dim[q->rank - back], ns = s->dim[s->rank - back];
	return ns > 0 ? (n + ns - 1) / ns : 1;
}

static int tile_is(const struct ir_attr *t, int64_t r, int64_t c)
{
	return t && t->n == 2 && t->ints[0] == r && t->ints[1] == c;
}

enum cg_fp8_form cg_fp8_gemm_form(const struct cg_plan *p, const struct ir_op *op)
{
	if (!p->target->fp8_storage)
		return CG_FP8_DEQUANT;
	const struct ir_value *a = op->in[0], *b = op->in[1], *y = op->out[0];
	const struct ir_attr *at = ir_op_attr(op, "a_tile"), *bt = ir_op_attr(op, "b_tile");
	if (op->kind == IR_OP_SCALED_GROUPED_MATMUL) {
		enum kir_type yt = p->buf_type[y->id];
		int64_t K = a->shape.dim[1], N = y->shape.dim[1], E = b->shape.dim[0];
		if (a->dtype != IR_F8E4M3 || b->dtype != IR_F8E4M3 || !tile_is(at, 1, 128) ||
		    !tile_is(bt, 128, 128) || K % 8 || N % 8 || E > 2047 || a->shape.dim[0] > INT32_MAX ||
		    K > INT32_MAX || N > INT32_MAX || (yt != KIR_F32 && yt != KIR_BF16))
			return CG_FP8_DEQUANT;
		return CG_FP8_GROUPED;
	}
	if (op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD) {
		enum kir_type yt = p->buf_type[y->id];
		int64_t K = a->shape.dim[1], N = b->shape.dim[1], E = y->shape.dim[0];
		if (a->dtype != IR_F8E4M3 || b->dtype != IR_F8E4M3 || !tile_is(at, 128, 1) ||
		    !tile_is(bt, 128, 1) || ir_op_int(op, "trans_b", 0) || K % 8 || N % 8 ||
		    E > 2047 || a->shape.dim[0] > INT32_MAX || K > INT32_MAX || N > INT32_MAX ||
		    (yt != KIR_F32 && yt != KIR_BF16))
			return CG_FP8_DEQUANT;
		return CG_FP8_GROUPED_WGRAD;
	}
	if (op->kind != IR_OP_SCALED_MATMUL)
		return CG_FP8_DEQUANT;
	if (a->dtype != IR_F8E4M3 || b->dtype != IR_F8E4M3 || b->shape.rank != 2 ||
	    a->shape.rank < 2 || p->view_of[a->id] >= 0 || p->view_of[b->id] >= 0)
		return CG_FP8_DEQUANT;
	/* cuBLASLt's block-scaled kernels: the contraction in whole 128-blocks, 16-byte
	 * rows of every operand and of the scale vectors */
	if (ir_op_int(op, "trans_a", 0)) {
		if (ir_op_int(op, "trans_b", 0) || a->shape.rank != 2 || y->shape.rank != 2 ||
		    !tile_is(at, 128, 1) || !tile_is(bt, 128, 1) || p->buf_type[y->id] != KIR_F32)
			return CG_FP8_DEQUANT;
		int64_t M = a->shape.dim[0], K = a->shape.dim[1], N = b->shape.dim[1];
		if (M % 128 || K % 16 || N % 16 || M <= 0 || M > INT32_MAX || K > INT32_MAX ||
		    N > INT32_MAX)
			return CG_FP8_DEQUANT;
		return CG_FP8_WGRAD;
	}
	enum kir_type yt = p->buf_type[y->id];
	if (!tile_is(at, 1, 128) || !tile_is(bt, 128, 128) || (yt != KIR_BF16 && yt != KIR_F32))
		return CG_FP8_DEQUANT;
	int64_t K = a->shape.dim[a->shape.rank - 1], N = y->shape.dim[y->shape.rank - 1];
	int64_t M = N ? ir_shape_numel(&y->shape) / N : 0;
	if (K % 128 || N % 16 || M % 16 || M <= 0 || M > INT32_MAX || N > INT32_MAX ||
	    K > INT32_MAX)
		return CG_FP8_DEQUANT;
	return ir_op_int(op, "trans_b", 0) ? CG_FP8_DGRAD : CG_FP8_FWD;
}

/* dst [dr, dc] (a scratch buffer) = src [sr, sc] (a value's buffer, row-major), or its
 * transpose when tr; entries that src does not cover are 0.  A point per entry. */
static void emit_relayout(struct cg_plan *p, const struct ir_op *op, int src, int64_t sr,
			  int64_t sc, int tr, int dst, int64_t dr, int64_t dc, const char *what,
			  const char *prefix)
{
	struct kb kb = kb_begin(p, op, what, dr * dc, prefix);
	kx *pt = var(&kb, 0);
	kx *i = idiv(&kb, pt, dc), *j = irem(&kb, pt, dc);
	kx *r = tr ? j : i, *c = tr ? i : j;
	kx *in = kir_bin(kb.k, KIR_AND, fbin(&kb, KIR_LT, r, c64(&kb, sr)),
			 fbin(&kb, KIR_LT, c, c64(&kb, sc)));
	kx *at = kir_select(kb.k, in, iadd(&kb, imul(&kb, r, sc), c), c64(&kb, 0));
	kx *v = kir_select(kb.k, in, ld(&kb, src, at, KIR_F32), fc(&kb, 0));
	kir_store(kb.k, &kb.k->body, kb_buf(&kb, dst), pt, v);
	kb_end(&kb, 8192);
}

/* A scaled product.  Emulated (and on fp8_storage targets where cg_fp8_gemm_form says
 * CG_FP8_DEQUANT): both operands dequantised into f32 scratch, then the unscaled GEMM,
 * into an f32 scratch that a kernel rounds into the output where the output is stored
 * narrower.  Otherwise the relayouts of cg_fp8_gemm_form, then the block-scaled GEMM. */
static void emit_scaled(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	int base = op->kind == IR_OP_SCALED_MATMUL ? 2 : 3;
	enum cg_step_kind kind = op->kind == IR_OP_SCALED_MATMUL ? CG_STEP_MATMUL
				 : op->kind == IR_OP_SCALED_GROUPED_MATMUL ? CG_STEP_GROUPED
				 : CG_STEP_WGRAD;
	enum cg_fp8_form form = cg_fp8_gemm_form(p, op);
	const struct ir_value *y = op->out[0];
	int d[3], n = 0;
	if (form == CG_FP8_WGRAD) { /* x [M, K] to [K, M], dy [M, N] to [N, M] */
		const struct ir_value *a = op->in[0], *b = op->in[1];
		int64_t M = a->shape.dim[0], K = a->shape.dim[1], N = b->shape.dim[1];
		d[0] = scratch(p, KIR_F8E4M3, K * M);
		emit_relayout(p, op, a->id, M, K, 1, d[0], K, M, "xt", prefix);
		d[1] = scratch(p, KIR_F8E4M3, N * M);
		emit_relayout(p, op, b->id, M, N, 1, d[1], N, M, "dyt", prefix);
		add_lib_step_scratch(p, op, kind, 2, d);
		return;
	}
	if (form == CG_FP8_GROUPED_WGRAD) { /* xs [R, K] and dy [R, N] in bf16 */
		const struct ir_value *a = op->in[0], *b = op->in[1];
		int64_t R = a->shape.dim[0], K = a->shape.dim[1], N = b->shape.dim[1];
		d[0] = scratch(p, KIR_BF16, R * K);
		emit_relayout(p, op, a->id, R, K, 0, d[0], R, K, "x16", prefix);
		d[1] = scratch(p, KIR_BF16, R * N);
		emit_relayout(p, op, b->id, R, N, 0, d[1], R, N, "dy16", prefix);
		add_lib_step_scratch(p, op, kind, 2, d);
		return;
	}
	if (form == CG_FP8_GROUPED) { /* xs [R, K] and w [E, K, N] (or [E, N, K]) in bf16 */
		const struct ir_value *a = op->in[0], *b = op->in[1];
		const struct ir_shape *ws = &b->shape;
		int64_t R = a->shape.dim[0], K = a->shape.dim[1];
		d[0] = scratch(p, KIR_BF16, R * K);
		emit_relayout(p, op, a->id, R, K, 0, d[0], R, K, "x16", prefix);
		d[1] = scratch(p, KIR_BF16, ir_shape_numel(ws));
		emit_relayout(p, op, b->id, ws->dim[0] * ws->dim[1], ws->dim[2], 0, d[1],
			      ws->dim[0] * ws->dim[1], ws->dim[2], "w16", prefix);
		add_lib_step_scratch(p, op, kind, 2, d);
		return;
	}
	if (form != CG_FP8_DEQUANT) {
		const struct ir_value *a = op->in[0], *b = op->in[1];
		int64_t K = a->shape.dim[a->shape.rank - 1], N = y->shape.dim[y->shape.rank - 1];
		int64_t M = ir_shape_numel(&y->shape) / N, Kb = K / 128, Nb = (N + 127) / 128;
		int64_t S = rt_gemm_block_scale_stride((int)K);
		if (form == CG_FP8_FWD) { /* W [K, N] to [N, K] */
			d[n] = scratch(p, KIR_F8E4M3, N * K);
			emit_relayout(p, op, b->id, K, N, 1, d[n++], N, K, "wt", prefix);
		}
		d[n] = scratch(p, KIR_F32, Kb * M); /* [M, K/128] to [K/128, M] */
		emit_relayout(p, op, op->in[2]->id, M, Kb, 1, d[n++], Kb, M, "sat", prefix);
		d[n] = scratch(p, KIR_F32, Nb * S); /* W's blocks to [N/128, S] */
		if (form == CG_FP8_FWD)
			emit_relayout(p, op, op->in[3]->id, Kb, Nb, 1, d[n++], Nb, S, "sbt", prefix);
		else
			emit_relayout(p, op, op->in[3]->id, Nb, Kb, 0, d[n++], Nb, S, "sbp", prefix);
		add_lib_step_scratch(p, op, kind, n, d);
		return;
	}
	for (int i = 0; i < 2; i++) {
		const struct ir_attr *t = ir_op_attr(op, i ? "b_tile" : "a_tile");
		d[i] = scratch(p, KIR_F32, ir_shape_numel(&op->in[i]->shape));
		emit_dequant(p, op, op->in[i], op->in[base + i], t->ints[0], t->ints[1], d[i], prefix);
	}
	n = 2;
	int narrow = p->target->fp8_storage && p->buf_type[y->id] != KIR_F32;
	if (narrow)
		d[n++] = scratch(p, KIR_F32, ir_shape_numel(&y->shape));
	add_lib_step_scratch(p, op, kind, n, d);
	if (narrow) { /* y = the f32 result, rounded by the store */
		struct kb kb = kb_begin(p, op, "out", ir_shape_numel(&y->shape), prefix);
		kx *pt = var(&kb, 0);
		st(&kb, &kb.k->body, y->id, pt, ld(&kb, d[2], pt, KIR_F32));
		kb_end(&kb, 8192);
	}
}

/* after an op whose output is bf16 or f16: round it in place */
static void emit_round(struct cg_plan *p, const struct ir_op *op, const char *prefix)
{
	if (p->target->half_storage) /* 16-bit buffers: every store rounds */
		return;
	for (int i = 0; i < op->n_out; i++) {
		const struct ir_value *v = op->out[i];
		if (v->dtype != IR_BF16 && v->dtype != IR_F16)
			continue;
		struct kb kb = kb_begin(p, op, "round", ir_shape_numel(&v->shape), prefix);
		st(&kb, &kb.k->body, v->id, var(&kb, 0), ldv(&kb, v, var(&kb, 0)));
		kb_end(&kb, 8192);
	}
}

/* A step that calls a library routine: it reads the op's inputs and writes its outputs
 * and n_scratch scratch buffers (ids given). */
static void add_lib_step_scratch(struct cg_plan *p, const struct ir_op *op,
				 enum cg_step_kind kind, int n_scratch, const int *scratch_ids)
{
	p->steps = grow(p->steps, &p->cap_steps, p->n_steps + 1, sizeof *p->steps);
	struct cg_step *s = &p->steps[p->n_steps++];
	memset(s, 0, sizeof *s);
	s->kind = kind;
	s->op = op;
	s->kernel = -1;
	s->n_bufs = op->n_in + op->n_out + n_scratch;
	s->bufs = rt_malloc(sizeof *s->bufs * (size_t)s->n_bufs);
	s->writes = rt_calloc((size_t)s->n_bufs, 1);
	for (int i = 0; i < op->n_in; i++) {
		int id = op->in[i]->id;
		s->bufs[i] = p->alias[p->view_of[id] >= 0 ? p->view_of[id] : id];
	}
	for (int i = 0; i < op->n_out + n_scratch; i++) {
		s->bufs[op->n_in + i] = i < op->n_out ? op->out[i]->id : scratch_ids[i - op->n_out];
		s->writes[op->n_in + i] = 1;
	}
}

static void add_lib_step(struct cg_plan *p, const struct ir_op *op, enum cg_step_kind kind)
{
	add_lib_step_scratch(p, op, kind, 0, NULL);
}

/* ATTENTION_BWD keeps D = rowsum(dout * out), [B, H, S], between its two passes */
static void add_attention_bwd(struct cg_plan *p, const struct ir_op *op)
{
	const struct ir_shape *q = &op->in[0]->shape;
	int d = scratch(p, KIR_F32, q->dim[0] * q->dim[1] * q->dim[2]);
	add_lib_step_scratch(p, op, CG_STEP_ATTENTION_BWD, 1, &d);
}

/* --- the plan ---------------------------------------------------------------------------- */

static int plan_graph(struct cg_plan *p, const struct ir_graph *g, const struct cg_target *t,
		      const char *prefix, int sizing, FILE *err)
{
	memset(p, 0, sizeof *p);
	p->sizing = sizing;
	p->g = g;
	p->target = t;
	p->n_values = g->n_values;
	p->inlined = rt_calloc((size_t)g->n_values + 1, 1);
	p->alias = rt_calloc((size_t)g->n_values + 1, sizeof *p->alias);
	p->view_of = rt_calloc((size_t)g->n_values + 1, sizeof *p->view_of);
	p->rope_table = rt_malloc(sizeof *p->rope_table * ((size_t)g->n_values + 1));
	for (int i = 0; i < g->n_values; i++)
		p->rope_table[i] = -1;
	p->is_output = rt_calloc((size_t)g->n_values + 1, 1);
	for (int i = 0; i < g->n_values; i++) {
		const struct ir_value *v = g->values[i];
		int64_t n = ir_shape_numel(&v->shape);
		add_buf(p, storage_type(t, v->dtype), n > 0 ? n : 0);
	}
	for (int i = 0; i < g->n_outputs; i++)
		if (g->outputs[i])
			p->is_output[g->outputs[i]->id] = 1;

	/* uses, and whether every use may read the value inline */
	int *uses = rt_calloc((size_t)g->n_values + 1, sizeof *uses);
	unsigned char *ok = rt_calloc((size_t)g->n_values + 1, 1);
	unsigned char *same = rt_calloc((size_t)g->n_values + 1, 1);
	for (int i = 0; i < g->n_values; i++)
		ok[i] = same[i] = 1;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		for (int j = 0; j < op->n_in; j++) {
			const struct ir_value *v = op->in[j];
			uses[v->id]++;
			int64_t nv = ir_shape_numel(&v->shape);
			int64_t no = op->n_out ? ir_shape_numel(&op->out[0]->shape) : -1;
			int reads_once = nv == no || is_reduction(op->kind);
			/* QUANT_FP8 reads its input a tile at a time (twice: the max-abs, then the
			 * rounding), so an elementwise producer is computed inside it */
			int quant = op->kind == IR_OP_QUANT_FP8 && j == 0 && v->def &&
				    fuses_into_quant(v->def->kind);
			if ((!is_pointwise(op->kind) && !quant) || !op->n_out ||
			    (!reads_once && v->def && v->def->kind != IR_OP_CONST))
				ok[v->id] = 0;
			if (nv != no)
				same[v->id] = 0;
		}
	}
	for (int i = 0; i < g->n_values; i++) {
		const struct ir_value *v = g->values[i];
		const struct ir_op *d = v->def;
		/* a reduction is inlined only into a consumer of its own size (rsqrt of a
		 * mean), which evaluates it once per element */
		if (!d || p->is_output[i] || !ok[i] || !uses[i] || !is_pointwise(d->kind) ||
		    (is_reduction(d->kind) && !same[i]))
			continue;
		if (d->kind == IR_OP_CONST || uses[i] == 1)
			p->inlined[i] = 1;
	}
	free(uses);
	free(ok);
	free(same);

	/* A RESHAPE or STOP_GRAD whose input has a buffer and whose output must have one
	 * (a GEMM or softmax reads it) is that buffer under another name, not a copy. */
	for (int i = 0; i < g->n_values; i++)
		p->alias[i] = i;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if ((op->kind != IR_OP_RESHAPE && op->kind != IR_OP_STOP_GRAD) || op->n_in != 1)
			continue;
		const struct ir_value *in = op->in[0], *out = op->out[0];
		if (p->inlined[out->id] || p->is_output[out->id] || p->inlined[in->id] ||
		    in->dtype != out->dtype)
			continue;
		p->alias[out->id] = p->alias[in->id];
	}
	/* A TRANSPOSE read only by MATMULs is not copied: the GEMM reads its input with
	 * the strides permuted (backend.c, operand()). */
	for (int i = 0; i < g->n_values; i++)
		p->view_of[i] = -1;
	int *mm_uses = rt_calloc((size_t)g->n_values + 1, sizeof *mm_uses);
	int *all_uses = rt_calloc((size_t)g->n_values + 1, sizeof *all_uses);
	for (int i = 0; i < g->n_ops; i++)
		for (int j = 0; j < g->ops[i]->n_in; j++) {
			all_uses[g->ops[i]->in[j]->id]++;
			mm_uses[g->ops[i]->in[j]->id] += g->ops[i]->kind == IR_OP_MATMUL;
		}
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_TRANSPOSE)
			continue;
		const struct ir_value *in = op->in[0], *out = op->out[0];
		if (p->inlined[out->id] || p->is_output[out->id] || p->inlined[in->id] ||
		    !all_uses[out->id] || mm_uses[out->id] != all_uses[out->id] ||
		    in->dtype != IR_F32 || out->dtype != IR_F32)
			continue;
		p->view_of[out->id] = in->id;
	}
	free(mm_uses);
	free(all_uses);

	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT || op->kind == IR_OP_PARAM)
			continue;
		if (op->kind == IR_OP_ROPE)
			emit_rope_table(p, op, prefix);
		if (op->n_out == 1 && (p->inlined[op->out[0]->id] ||
				       p->alias[op->out[0]->id] != op->out[0]->id ||
				       p->view_of[op->out[0]->id] >= 0))
			continue;
		if (op->n_out && ir_shape_numel(&op->out[0]->shape) == 0)
			continue;
		if (op->kind == IR_OP_SUM_TO && p->target->block_threads > 0 &&
		    emit_sum_to_split(p, op, prefix))
			continue;
		if (is_pointwise(op->kind)) {
			emit_pointwise(p, op, prefix);
			continue;
		}
		switch (op->kind) {
		case IR_OP_MATMUL: add_lib_step(p, op, CG_STEP_MATMUL); break;
		case IR_OP_GROUPED_MATMUL: add_lib_step(p, op, CG_STEP_GROUPED); break;
		case IR_OP_GROUPED_MATMUL_WGRAD: add_lib_step(p, op, CG_STEP_WGRAD); break;
		case IR_OP_ATTENTION: add_lib_step(p, op, CG_STEP_ATTENTION); break;
		case IR_OP_ATTENTION_BWD: add_attention_bwd(p, op); break;
		case IR_OP_SOFTMAX: case IR_OP_SOFTMAX_BWD: emit_softmax(p, op, prefix); break;
		case IR_OP_CROSS_ENTROPY: emit_cross_entropy(p, op, prefix); break;
		case IR_OP_CROSS_ENTROPY_BWD: emit_cross_entropy_bwd(p, op, prefix); break;
		case IR_OP_TOPK: emit_topk(p, op, prefix); break;
		case IR_OP_PUT_ALONG: case IR_OP_EXPERT_COUNT: emit_put_along(p, op, prefix); break;
		case IR_OP_SCATTER_ROWS: emit_scatter_rows(p, op, prefix); break;
		case IR_OP_MOE_DISPATCH: emit_dispatch(p, op, prefix); break;
		case IR_OP_MOE_COMBINE: case IR_OP_MOE_UNDISPATCH: emit_combine(p, op, prefix); break;
		case IR_OP_MOE_COMBINE_BWD_DATA: case IR_OP_MOE_COMBINE_BWD_GATE:
			emit_combine_bwd(p, op, prefix);
			break;
		case IR_OP_REDUCE_MAX_BWD: emit_reduce_max_bwd(p, op, prefix); break;
		case IR_OP_EP_COUNTS: emit_ep_counts(p, op, prefix); break;
		case IR_OP_EP_OFFSETS: emit_ep_offsets(p, op, prefix); break;
		case IR_OP_EP_REGROUP: emit_ep_regroup(p, op, prefix); break;
		case IR_OP_ALL_TO_ALL: case IR_OP_ALL_TO_ALLV:
			if (emit_all_to_all_single(p, op, prefix, err))
				return 1;
			break;
		case IR_OP_QUANT_FP8: case IR_OP_DEQUANT_FP8: case IR_OP_SCALED_MATMUL:
		case IR_OP_SCALED_GROUPED_MATMUL: case IR_OP_SCALED_GROUPED_MATMUL_WGRAD:
			if (!p->target->emulate_fp8 && !p->target->fp8_storage)
				goto refuse;
			if (op->kind == IR_OP_QUANT_FP8)
				emit_quant_fp8(p, op, prefix);
			else if (op->kind == IR_OP_DEQUANT_FP8)
				emit_dequant(p, op, op->in[0], op->in[1],
					     ir_op_int(op, "tile_r", dequant_tile(op, 2)),
					     ir_op_int(op, "tile_c", dequant_tile(op, 1)),
					     op->out[0]->id, prefix);
			else
				emit_scaled(p, op, prefix);
			break;
		case IR_OP_SEND: case IR_OP_RECV: case IR_OP_ALL_REDUCE: case IR_OP_REDUCE_SCATTER:
		case IR_OP_ALL_GATHER:
			if (p->sizing)
				break; /* the executor's: outputs planned, no kernel */
			goto refuse;
		default:
		refuse:
			if (op->loc.file)
				fprintf(err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
			fprintf(err, "error: %s cannot run op %s (communication "
				"ops run in the parallel runtime; FP8 ops where the target emulates or runs "
				"them)\n",
				p->target->name, ir_op_name(op->kind));
			return 1;
		}
		/* library GEMMs and accumulating kernels store unrounded f32 */
		emit_round(p, op, prefix);
	}
	return 0;
}

int cg_plan_graph(struct cg_plan *p, const struct ir_graph *g, const struct cg_target *t,
		  const char *prefix, FILE *err)
{
	return plan_graph(p, g, t, prefix, 0, err);
}

int cg_plan_graph_sizing(struct cg_plan *p, const struct ir_graph *g, const struct cg_target *t,
			 const char *prefix, FILE *err)
{
	return plan_graph(p, g, t, prefix, 1, err);
}

void cg_plan_free(struct cg_plan *p)
{
	for (int i = 0; i < p->n_ks; i++)
		kir_kernel_free(p->ks[i]);
	for (int i = 0; i < p->n_steps; i++) {
		free(p->steps[i].bufs);
		free(p->steps[i].writes);
	}
	free(p->ks);
	free(p->steps);
	free(p->inlined);
	free(p->alias);
	free(p->view_of);
	free(p->rope_table);
	free(p->is_output);
	free(p->buf_type);
	free(p->buf_numel);
	memset(p, 0, sizeof *p);
}
