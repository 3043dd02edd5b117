/*
 * verify.c - ir_verify(): the structure of a graph and the shape and dtype rule of
 * every op, as documented in ir.h (that comment is the specification).
 *
 * Structure: ops in a valid order (every input defined by an earlier op), each value
 * defined once, value->def / def_out / id consistent with the op and g->values, the
 * arity of ops.def, graph outputs defined by an op of the list.  An op kind without a
 * rule below (one appended to ops.def later) gets the structural checks only.
 *
 * Where ir.h leaves a choice open, the verifier decides (keep this list in step with
 * the code):
 *  - integer index inputs ("idx int[...]", targets, perm, offsets) may be i32 or i64;
 *    outputs documented as i32 (topk, moe_dispatch's offsets and perm) must be i32.
 *  - float attributes accept an integer value; integer attributes must be integers.
 *  - ops that compute in floating point (exp, log, sigmoid, softmax, matmul, ...)
 *    need float dtypes; neg, square, relu, stop_grad, cast and the shape ops take any.
 *  - matmul: a and b have the same dtype; the output has a's dtype or f32; b is 2-D
 *    or has exactly a's batch dims.  grouped_matmul likewise for xs and w.
 *  - cross_entropy's output and expert_count's are float scalars / f32 as documented.
 *  - quant_fp8 tiles may be partial: scale is [..., ceil(M/tile_r), ceil(K/tile_c)]; q
 *    is f8e4m3 or f8e5m2; dequant_fp8's output is any non-FP8 float of q's shape.
 *  - scaled_matmul and the scaled grouped products: the GEMM's own rule on the f8
 *    operands (both of one f8 format, as the GEMM's rule asks of its operands), each
 *    scale f32 with exactly the shape its operand's tiles give (a_tile, b_tile: two
 *    positive integers); the output f32 or bf16.
 *  - the routed row count R of moe_combine, moe_undispatch and the combine backward
 *    ops must be N*k (the layout moe_dispatch makes); moe_undispatch's N is from its
 *    output shape.
 *  - reduce_scatter / all_gather change the size of a dim by the group size, which
 *    the IR does not know: only rank and dtype are checked.  all_to_all keeps x's
 *    shape and dtype (x at least 1-D).  all_to_allv moves rows of any dtype (FP8
 *    activations, integer ids): y has x's dtype and trailing dims, sc and rc are
 *    i32 [P, n] and [P, m] with the same P (i32, not i64: the program executor reads
 *    them as such); the row counts R and C are free.
 *  - ep_counts, ep_offsets and ep_regroup: counts are integer inputs (i32 or i64) and
 *    i32 outputs; P and El are read from rc's shape (ep_offsets, ep_regroup) or from
 *    the ranks attribute and offsets (ep_counts); ep_regroup moves float rows of an
 *    at least 1-D x, inverse is 0 or 1.
 *  - attention: causal is 0 or 1 (absent: 1); scale is required; q, k, v, out and
 *    dout share one float dtype; lse is f32 whatever that dtype is.
 *  - PARAM needs a non-empty path and an init in "normal", "zeros", "ones",
 *    "uniform"; INPUT needs a name; CONST needs a value.
 */
#include "ir.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct vctx {
	const struct ir_graph *g;
	FILE *err;
	int count;
	char ring[8][128];
	int ring_i;
	/* a scaled product checked as the product it scales: named as itself */
	const struct ir_op *shadow, *real;
};

/* "f32[16, 256]" in a rotating buffer, so that one message can show several */
static const char *ty(struct vctx *c, const struct ir_value *v)
{
	char *b = c->ring[c->ring_i++ & 7];
	if (!v)
		return "(null)";
	char sh[112];
	struct ir_shape s = v->shape;
	if (s.rank < 0 || s.rank > IR_MAX_RANK)
		s.rank = 0;
	ir_shape_str(&s, sh, sizeof sh);
	snprintf(b, 128, "%s%s", ir_dtype_name(v->dtype), sh);
	return b;
}

static const char *shs(struct vctx *c, const struct ir_shape *s)
{
	char *b = c->ring[c->ring_i++ & 7];
	ir_shape_str(s, b, 128);
	return b;
}

static void report(struct vctx *c, const struct ir_op *op, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct vctx *c, const struct ir_op *op, const char *fmt, ...)
{
	c->count++;
	if (!c->err)
		return;
	if (op && op->loc.file)
		fprintf(c->err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
	else if (op && op->loc.line)
		fprintf(c->err, "%d:%d: ", op->loc.line, op->loc.col);
	fputs("error: ", c->err);
	if (op) {
		fprintf(c->err, "%s", ir_op_name(op == c->shadow ? c->real->kind : op->kind));
		if (op->n_out > 0 && op->out && op->out[0])
			fprintf(c->err, " %%%d", op->out[0]->id);
		else
			fprintf(c->err, " (op %d)", op->id);
		if (op->scope && *op->scope)
			fprintf(c->err, " in %s", op->scope);
		fputs(": ", c->err);
	}
	va_list ap;
	va_start(ap, fmt);
	vfprintf(c->err, fmt, ap);
	va_end(ap);
	fputc('\n', c->err);
}

static int is_int_t(enum ir_dtype t) { return t == IR_I32 || t == IR_I64; }
static int is_f8(enum ir_dtype t) { return t == IR_F8E4M3 || t == IR_F8E5M2; }
static int is_float_t(enum ir_dtype t) { return (unsigned)t < IR_DTYPE_COUNT && !is_int_t(t); }

static int same_shape(const struct ir_value *a, const struct ir_value *b)
{
	return ir_shape_eq(&a->shape, &b->shape);
}

/* --- attributes ---------------------------------------------------------------- */

static int attr_int(struct vctx *c, const struct ir_op *op, const char *name, int required,
		    int64_t dflt, int64_t *v)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	if (!a) {
		if (required) {
			report(c, op, "missing integer attribute '%s'", name);
			return 0;
		}
		*v = dflt;
		return 1;
	}
	if (a->kind != IR_ATTR_INT) {
		report(c, op, "attribute '%s' must be an integer", name);
		return 0;
	}
	*v = a->i;
	return 1;
}

static int attr_float(struct vctx *c, const struct ir_op *op, const char *name, int required)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	if (!a) {
		if (required)
			report(c, op, "missing float attribute '%s'", name);
		return !required;
	}
	if (a->kind != IR_ATTR_FLOAT && a->kind != IR_ATTR_INT) {
		report(c, op, "attribute '%s' must be a number", name);
		return 0;
	}
	return 1;
}

static const char *attr_str(struct vctx *c, const struct ir_op *op, const char *name)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	if (!a || a->kind != IR_ATTR_STR || !a->s) {
		report(c, op, a ? "attribute '%s' must be a string" : "missing string attribute '%s'",
		       name);
		return NULL;
	}
	return a->s;
}

/* --- shape rules ---------------------------------------------------------------- */

#define IN(i) (op->in[i])
#define OUT(i) (op->out[i])
#define FAIL(...)                          \
	do {                               \
		report(c, op, __VA_ARGS__); \
		return;                    \
	} while (0)

static int want_float(struct vctx *c, const struct ir_op *op, const struct ir_value *v,
		      const char *what)
{
	if (is_float_t(v->dtype))
		return 1;
	report(c, op, "%s %s must have a float dtype", what, ty(c, v));
	return 0;
}

static int want_int(struct vctx *c, const struct ir_op *op, const struct ir_value *v,
		    const char *what)
{
	if (is_int_t(v->dtype))
		return 1;
	report(c, op, "%s %s must have an integer dtype (i32 or i64)", what, ty(c, v));
	return 0;
}

static int want_rank(struct vctx *c, const struct ir_op *op, const struct ir_value *v,
		     int rank, const char *what)
{
	if (v->shape.rank == rank)
		return 1;
	report(c, op, "%s %s must have rank %d", what, ty(c, v), rank);
	return 0;
}

/* the output has the input's shape and dtype */
static void same_as_input(struct vctx *c, const struct ir_op *op, int need_float)
{
	if (need_float && !want_float(c, op, IN(0), "input"))
		return;
	if (!same_shape(IN(0), OUT(0)) || IN(0)->dtype != OUT(0)->dtype)
		FAIL("output %s must have the input's shape and dtype %s", ty(c, OUT(0)),
		     ty(c, IN(0)));
}

static int norm_axis(int64_t axis, int rank, int *out)
{
	if (axis < -(int64_t)rank || axis >= rank)
		return 0;
	*out = (int)(axis < 0 ? axis + rank : axis);
	return 1;
}

static void check_binary(struct vctx *c, const struct ir_op *op)
{
	struct ir_shape b;
	if (IN(0)->dtype != IN(1)->dtype)
		FAIL("input dtypes differ: %s and %s", ty(c, IN(0)), ty(c, IN(1)));
	if (!ir_shape_broadcast(&IN(0)->shape, &IN(1)->shape, &b))
		FAIL("shapes do not broadcast: %s and %s", ty(c, IN(0)), ty(c, IN(1)));
	if (!ir_shape_eq(&b, &OUT(0)->shape) || OUT(0)->dtype != IN(0)->dtype)
		FAIL("output %s must be %s%s, the broadcast of %s and %s", ty(c, OUT(0)),
		     ir_dtype_name(IN(0)->dtype), shs(c, &b), ty(c, IN(0)), ty(c, IN(1)));
}

static void check_reduce(struct vctx *c, const struct ir_op *op)
{
	int64_t axis, keep;
	int ax;
	if (!attr_int(c, op, "axis", 1, 0, &axis) || !attr_int(c, op, "keepdim", 0, 0, &keep))
		return;
	const struct ir_value *x = IN(0), *y = OUT(0);
	if (op->kind != IR_OP_REDUCE_SUM && !want_float(c, op, x, "input"))
		return;
	if (!norm_axis(axis, x->shape.rank, &ax))
		FAIL("axis %lld out of range for input %s", (long long)axis, ty(c, x));
	struct ir_shape s = x->shape;
	if (keep) {
		s.dim[ax] = 1;
	} else {
		for (int i = ax; i + 1 < s.rank; i++)
			s.dim[i] = s.dim[i + 1];
		s.rank--;
	}
	if (!ir_shape_eq(&s, &y->shape) || y->dtype != x->dtype)
		FAIL("output %s must be %s%s (input %s reduced over axis %lld%s)", ty(c, y),
		     ir_dtype_name(x->dtype), shs(c, &s), ty(c, x), (long long)axis,
		     keep ? ", kept" : "");
}

/* q[B,S,H,Dqk] k[B,S,Hkv,Dqk] v[B,S,Hkv,Dv] of one float dtype, Hkv dividing H; the
 * forward gives out[B,S,H,Dv] (q's dtype) and lse f32[B,H,S]; the backward reads out,
 * lse and dout as the forward made them and gives dq, dk, dv shaped and typed as q, k, v */
static void check_attention(struct vctx *c, const struct ir_op *op)
{
	int64_t causal;
	if (!attr_int(c, op, "causal", 0, 1, &causal) || !attr_float(c, op, "scale", 1))
		return;
	if (causal != 0 && causal != 1)
		FAIL("causal must be 0 or 1, got %lld", (long long)causal);
	const struct ir_value *q = IN(0), *k = IN(1), *v = IN(2);
	if (!want_rank(c, op, q, 4, "q [B, S, H, Dqk]") ||
	    !want_rank(c, op, k, 4, "k [B, S, Hkv, Dqk]") ||
	    !want_rank(c, op, v, 4, "v [B, S, Hkv, Dv]") || !want_float(c, op, q, "q"))
		return;
	if (k->dtype != q->dtype || v->dtype != q->dtype)
		FAIL("q %s, k %s and v %s must have one dtype", ty(c, q), ty(c, k), ty(c, v));
	const int64_t *qd = q->shape.dim, *kd = k->shape.dim, *vd = v->shape.dim;
	if (kd[0] != qd[0] || kd[1] != qd[1] || kd[3] != qd[3])
		FAIL("k %s must be [%lld, %lld, Hkv, %lld] (q %s)", ty(c, k), (long long)qd[0],
		     (long long)qd[1], (long long)qd[3], ty(c, q));
	if (vd[0] != qd[0] || vd[1] != qd[1] || vd[2] != kd[2])
		FAIL("v %s must be [%lld, %lld, %lld, Dv] (q %s, k %s)", ty(c, v), (long long)qd[0],
		     (long long)qd[1], (long long)kd[2], ty(c, q), ty(c, k));
	if (kd[2] < 1 || qd[2] % kd[2])
		FAIL("the kv heads of k %s must divide the heads of q %s", ty(c, k), ty(c, q));
	struct ir_shape os = ir_shape_of(4, qd[0], qd[1], qd[2], vd[3]);
	struct ir_shape ls = ir_shape_of(3, qd[0], qd[2], qd[1]);
	if (op->kind == IR_OP_ATTENTION) {
		if (!ir_shape_eq(&OUT(0)->shape, &os) || OUT(0)->dtype != q->dtype)
			FAIL("out %s must be %s%s", ty(c, OUT(0)), ir_dtype_name(q->dtype), shs(c, &os));
		if (!ir_shape_eq(&OUT(1)->shape, &ls) || OUT(1)->dtype != IR_F32)
			FAIL("lse %s must be f32%s", ty(c, OUT(1)), shs(c, &ls));
		return;
	}
	if (!ir_shape_eq(&IN(3)->shape, &os) || IN(3)->dtype != q->dtype)
		FAIL("out %s must be %s%s", ty(c, IN(3)), ir_dtype_name(q->dtype), shs(c, &os));
	if (!ir_shape_eq(&IN(4)->shape, &ls) || IN(4)->dtype != IR_F32)
		FAIL("lse %s must be f32%s", ty(c, IN(4)), shs(c, &ls));
	if (!same_shape(IN(5), IN(3)) || IN(5)->dtype != q->dtype)
		FAIL("dout %s must have out's shape and dtype %s", ty(c, IN(5)), ty(c, IN(3)));
	for (int i = 0; i < 3; i++)
		if (!same_shape(OUT(i), IN(i)) || OUT(i)->dtype != IN(i)->dtype)
			FAIL("output %d %s must have the shape and dtype of input %d %s", i,
			     ty(c, OUT(i)), i, ty(c, IN(i)));
}

static void check_matmul(struct vctx *c, const struct ir_op *op)
{
	const struct ir_value *a = IN(0), *b = IN(1), *y = OUT(0);
	int64_t ta, tb;
	if (!attr_int(c, op, "trans_a", 0, 0, &ta) || !attr_int(c, op, "trans_b", 0, 0, &tb))
		return;
	if (!want_float(c, op, a, "a") || !want_float(c, op, b, "b"))
		return;
	if (a->dtype != b->dtype)
		FAIL("a %s and b %s must have the same dtype", ty(c, a), ty(c, b));
	int ra = a->shape.rank, rb = b->shape.rank;
	if (ra < 2 || rb < 2)
		FAIL("a %s and b %s need at least 2 dims", ty(c, a), ty(c, b));
	if (rb != 2 && rb != ra)
		FAIL("b %s must be 2-D or have a's batch dims (a %s)", ty(c, b), ty(c, a));
	if (rb == ra)
		for (int i = 0; i < ra - 2; i++)
			if (a->shape.dim[i] != b->shape.dim[i])
				FAIL("batch dims of a %s and b %s differ", ty(c, a), ty(c, b));
	int64_t m = a->shape.dim[ra - (ta ? 1 : 2)], ka = a->shape.dim[ra - (ta ? 2 : 1)];
	int64_t kb = b->shape.dim[rb - (tb ? 1 : 2)], n = b->shape.dim[rb - (tb ? 2 : 1)];
	if (ka != kb)
		FAIL("inner dims differ: a %s%s has K=%lld, b %s%s has K=%lld", ty(c, a),
		     ta ? " (transposed)" : "", (long long)ka, ty(c, b), tb ? " (transposed)" : "",
		     (long long)kb);
	struct ir_shape s = a->shape;
	s.dim[ra - 2] = m;
	s.dim[ra - 1] = n;
	if (!ir_shape_eq(&s, &y->shape))
		FAIL("output %s must have shape %s (a %s, b %s)", ty(c, y), shs(c, &s), ty(c, a),
		     ty(c, b));
	if (y->dtype != a->dtype && y->dtype != IR_F32)
		FAIL("output %s must have a's dtype %s or f32", ty(c, y), ir_dtype_name(a->dtype));
}

/* the scale of x in tiles of tile[0] x tile[1] over its last two dims */
static struct ir_shape scale_shape(const struct ir_shape *x, const int64_t *tile)
{
	struct ir_shape s = *x;
	s.dim[s.rank - 2] = (x->dim[s.rank - 2] + tile[0] - 1) / tile[0];
	s.dim[s.rank - 1] = (x->dim[s.rank - 1] + tile[1] - 1) / tile[1];
	return s;
}

/* an f8 operand q of a scaled product and its scale s, tiled by the ints attribute
 * `tile` ([r, c]); the scale of a grouped weight [E, ...] has E leading */
static int check_operand_scale(struct vctx *c, const struct ir_op *op,
			       const struct ir_value *q, const struct ir_value *s, const char *tile,
			       const char *what)
{
	const struct ir_attr *a = ir_op_attr(op, tile);
	if (!a || a->kind != IR_ATTR_INTS || a->n != 2 || a->ints[0] < 1 || a->ints[1] < 1) {
		report(c, op, "attribute '%s' must be two positive integers [rows, cols]", tile);
		return 0;
	}
	if (!is_f8(q->dtype)) {
		report(c, op, "%s %s must have an FP8 dtype", what, ty(c, q));
		return 0;
	}
	if (q->shape.rank < 2)
		return 1; /* the GEMM's own rule reports it */
	struct ir_shape ss = scale_shape(&q->shape, a->ints);
	if (s->dtype != IR_F32 || !ir_shape_eq(&s->shape, &ss)) {
		report(c, op, "scale %s of %s %s must be f32%s (%lldx%lld tiles)", ty(c, s), what,
		       ty(c, q), shs(c, &ss), (long long)a->ints[0], (long long)a->ints[1]);
		return 0;
	}
	return 1;
}

static void check_op(struct vctx *c, const struct ir_op *op);

/* The scaled products: the unscaled op's rule on the first inputs, then the scales. */
static void check_scaled(struct vctx *c, const struct ir_op *op)
{
	enum ir_opkind plain = op->kind == IR_OP_SCALED_MATMUL ? IR_OP_MATMUL
			       : op->kind == IR_OP_SCALED_GROUPED_MATMUL ? IR_OP_GROUPED_MATMUL
			       : IR_OP_GROUPED_MATMUL_WGRAD;
	int wgrad = plain == IR_OP_GROUPED_MATMUL_WGRAD;
	int n_plain = plain == IR_OP_MATMUL ? 2 : 3;
	const struct ir_value *y = OUT(0);
	/* the unscaled op with the same operands, output and attributes, checked as such,
	 * with the output's dtype as the operands' so that the f32/bf16 rule below decides */
	struct ir_value out = *y;
	out.dtype = IN(0)->dtype;
	struct ir_value *outp = &out;
	struct ir_op shadow = *op;
	shadow.kind = plain;
	shadow.n_in = n_plain;
	shadow.out = &outp;
	int before = c->count;
	c->shadow = &shadow;
	c->real = op;
	check_op(c, &shadow);
	c->shadow = c->real = NULL;
	if (c->count != before)
		return;
	int sa = n_plain, sb = n_plain + 1;
	if (!check_operand_scale(c, op, IN(0), IN(sa), "a_tile", wgrad ? "xs" : plain ==
				 IR_OP_MATMUL ? "a" : "xs") ||
	    !check_operand_scale(c, op, IN(1), IN(sb), "b_tile", wgrad ? "dy" : plain ==
				 IR_OP_MATMUL ? "b" : "w"))
		return;
	if (y->dtype != IR_F32 && y->dtype != IR_BF16)
		FAIL("output %s must be f32 or bf16", ty(c, y));
}

static void check_op(struct vctx *c, const struct ir_op *op)
{
	const struct ir_value *x = op->n_in > 0 ? IN(0) : NULL;
	const struct ir_value *y = op->n_out > 0 ? OUT(0) : NULL;
	int64_t v, w;
	int ax;
	switch (op->kind) {
	case IR_OP_INPUT:
		attr_str(c, op, "name");
		break;
	case IR_OP_PARAM: {
		if (!op->path || !*op->path)
			report(c, op, "a parameter needs a path");
		const char *init = attr_str(c, op, "init");
		if (init && strcmp(init, "normal") && strcmp(init, "zeros") &&
		    strcmp(init, "ones") && strcmp(init, "uniform"))
			report(c, op, "unknown init \"%s\" (normal, zeros, ones, uniform)", init);
		attr_float(c, op, "std", 0);
		attr_int(c, op, "fan_in", 0, 0, &v);
		want_float(c, op, y, "parameter");
		break;
	}
	case IR_OP_CONST:
		attr_float(c, op, "value", 1);
		break;
	case IR_OP_EXP: case IR_OP_LOG: case IR_OP_SQRT: case IR_OP_RSQRT: case IR_OP_RECIP:
	case IR_OP_SIGMOID: case IR_OP_SILU: case IR_OP_TANH:
		same_as_input(c, op, 1);
		break;
	case IR_OP_NEG: case IR_OP_SQUARE: case IR_OP_RELU: case IR_OP_STOP_GRAD:
		same_as_input(c, op, 0);
		break;
	case IR_OP_SCALE:
		if (attr_float(c, op, "alpha", 1) && attr_float(c, op, "beta", 0))
			same_as_input(c, op, 1);
		break;
	case IR_OP_CAST:
		if (!same_shape(x, y))
			FAIL("output %s must have the input's shape %s", ty(c, y), ty(c, x));
		break;
	case IR_OP_ADD: case IR_OP_SUB: case IR_OP_MUL: case IR_OP_DIV:
		check_binary(c, op);
		break;
	case IR_OP_REDUCE_SUM: case IR_OP_REDUCE_MEAN: case IR_OP_REDUCE_MAX:
		check_reduce(c, op);
		break;
	case IR_OP_SUM_TO: case IR_OP_BROADCAST: {
		/* sum_to: y broadcasts to x; broadcast: x broadcasts to y */
		const struct ir_value *small = op->kind == IR_OP_SUM_TO ? y : x;
		const struct ir_value *big = op->kind == IR_OP_SUM_TO ? x : y;
		struct ir_shape b;
		if (x->dtype != y->dtype)
			FAIL("output %s must have the input's dtype %s", ty(c, y), ty(c, x));
		if (!ir_shape_broadcast(&small->shape, &big->shape, &b) ||
		    !ir_shape_eq(&b, &big->shape))
			FAIL("%s does not broadcast to %s", ty(c, small), ty(c, big));
		break;
	}
	case IR_OP_RESHAPE:
		if (x->dtype != y->dtype)
			FAIL("output %s must have the input's dtype %s", ty(c, y), ty(c, x));
		if (ir_shape_numel(&x->shape) != ir_shape_numel(&y->shape))
			FAIL("element counts differ: %s has %lld, %s has %lld", ty(c, x),
			     (long long)ir_shape_numel(&x->shape), ty(c, y),
			     (long long)ir_shape_numel(&y->shape));
		break;
	case IR_OP_TRANSPOSE: {
		const struct ir_attr *a = ir_op_attr(op, "perm");
		if (!a || a->kind != IR_ATTR_INTS)
			FAIL("missing integer-list attribute 'perm'");
		if (a->n != x->shape.rank)
			FAIL("perm has %d entries for input %s of rank %d", a->n, ty(c, x),
			     x->shape.rank);
		struct ir_shape s = { .rank = a->n };
		int used[IR_MAX_RANK] = { 0 };
		for (int i = 0; i < a->n; i++) {
			if (a->ints[i] < 0 || a->ints[i] >= a->n || used[a->ints[i]]++)
				FAIL("perm is not a permutation of 0..%d", a->n - 1);
			s.dim[i] = x->shape.dim[a->ints[i]];
		}
		if (!ir_shape_eq(&s, &y->shape) || x->dtype != y->dtype)
			FAIL("output %s must be %s%s (input %s permuted)", ty(c, y),
			     ir_dtype_name(x->dtype), shs(c, &s), ty(c, x));
		break;
	}
	case IR_OP_SLICE:
		if (!attr_int(c, op, "axis", 1, 0, &v) || !attr_int(c, op, "start", 1, 0, &w))
			return;
		if (!norm_axis(v, x->shape.rank, &ax))
			FAIL("axis %lld out of range for input %s", (long long)v, ty(c, x));
		if (y->shape.rank != x->shape.rank || x->dtype != y->dtype)
			FAIL("output %s must have the input's rank and dtype %s", ty(c, y), ty(c, x));
		for (int i = 0; i < x->shape.rank; i++)
			if (i != ax && x->shape.dim[i] != y->shape.dim[i])
				FAIL("output %s and input %s differ outside axis %d", ty(c, y),
				     ty(c, x), ax);
		if (w < 0 || w > x->shape.dim[ax] || y->shape.dim[ax] > x->shape.dim[ax] - w)
			FAIL("slice [%lld, %lld) of axis %d is outside input %s", (long long)w,
			     (long long)(w + y->shape.dim[ax]), ax, ty(c, x));
		break;
	case IR_OP_CONCAT: {
		if (!attr_int(c, op, "axis", 1, 0, &v))
			return;
		if (!norm_axis(v, x->shape.rank, &ax))
			FAIL("axis %lld out of range for input %s", (long long)v, ty(c, x));
		int64_t sum = 0;
		for (int k = 0; k < op->n_in; k++) {
			const struct ir_value *u = IN(k);
			if (u->shape.rank != x->shape.rank || u->dtype != x->dtype)
				FAIL("input %d %s must have the rank and dtype of input 0 %s", k,
				     ty(c, u), ty(c, x));
			for (int i = 0; i < x->shape.rank; i++)
				if (i != ax && u->shape.dim[i] != x->shape.dim[i])
					FAIL("input %d %s and input 0 %s differ outside axis %d", k,
					     ty(c, u), ty(c, x), ax);
			sum += u->shape.dim[ax];
		}
		struct ir_shape s = x->shape;
		s.dim[ax] = sum;
		if (!ir_shape_eq(&s, &y->shape) || x->dtype != y->dtype)
			FAIL("output %s must be %s%s", ty(c, y), ir_dtype_name(x->dtype), shs(c, &s));
		break;
	}
	case IR_OP_MATMUL:
		check_matmul(c, op);
		break;
	case IR_OP_SOFTMAX: case IR_OP_SOFTMAX_BWD:
		if (!attr_int(c, op, "causal", 0, 0, &v))
			return;
		if (x->shape.rank < 1)
			FAIL("input %s needs at least one dim", ty(c, x));
		if (v && (x->shape.rank < 2 ||
			  x->shape.dim[x->shape.rank - 1] != x->shape.dim[x->shape.rank - 2]))
			FAIL("causal needs a [..., S, S] input, got %s", ty(c, x));
		if (op->kind == IR_OP_SOFTMAX_BWD &&
		    (!same_shape(x, IN(1)) || x->dtype != IN(1)->dtype))
			FAIL("y %s and dy %s must have the same shape and dtype", ty(c, x),
			     ty(c, IN(1)));
		same_as_input(c, op, 1);
		break;
	case IR_OP_ROPE:
		if (!attr_float(c, op, "theta", 0) || !attr_int(c, op, "inverse", 0, 0, &v))
			return;
		if (!want_rank(c, op, x, 4, "input [B, S, H, D]"))
			return;
		if (x->shape.dim[3] % 2)
			FAIL("the last dim of input %s must be even", ty(c, x));
		same_as_input(c, op, 1);
		break;
	case IR_OP_GATHER_ROWS: {
		const struct ir_value *idx = IN(1);
		if (!want_rank(c, op, x, 2, "table [V, D]") || !want_int(c, op, idx, "idx"))
			return;
		if (idx->shape.rank + 1 > IR_MAX_RANK)
			FAIL("idx %s has too many dims", ty(c, idx));
		struct ir_shape s = idx->shape;
		s.dim[s.rank++] = x->shape.dim[1];
		if (!ir_shape_eq(&s, &y->shape) || y->dtype != x->dtype)
			FAIL("output %s must be %s%s (idx %s, table %s)", ty(c, y),
			     ir_dtype_name(x->dtype), shs(c, &s), ty(c, idx), ty(c, x));
		break;
	}
	case IR_OP_SCATTER_ROWS: {
		const struct ir_value *idx = IN(1);
		if (!want_int(c, op, idx, "idx") || !want_rank(c, op, y, 2, "output [V, D]"))
			return;
		struct ir_shape s = idx->shape;
		if (s.rank + 1 > IR_MAX_RANK)
			FAIL("idx %s has too many dims", ty(c, idx));
		s.dim[s.rank++] = y->shape.dim[1];
		if (!ir_shape_eq(&s, &x->shape))
			FAIL("dy %s must be %s (idx %s, output %s)", ty(c, x), shs(c, &s), ty(c, idx),
			     ty(c, y));
		if (y->dtype != x->dtype)
			FAIL("output %s must have dy's dtype %s", ty(c, y), ty(c, x));
		break;
	}
	case IR_OP_CROSS_ENTROPY: case IR_OP_CROSS_ENTROPY_BWD: {
		const struct ir_value *t = IN(1);
		if (!want_rank(c, op, x, 2, "logits [N, V]") || !want_float(c, op, x, "logits") ||
		    !want_int(c, op, t, "targets") || !want_rank(c, op, t, 1, "targets [N]"))
			return;
		if (t->shape.dim[0] != x->shape.dim[0])
			FAIL("targets %s must have logits' N (logits %s)", ty(c, t), ty(c, x));
		if (op->kind == IR_OP_CROSS_ENTROPY) {
			if (y->shape.rank != 0 || !is_float_t(y->dtype))
				FAIL("output %s must be a float scalar", ty(c, y));
		} else {
			if (IN(2)->shape.rank != 0 || !is_float_t(IN(2)->dtype))
				FAIL("dloss %s must be a float scalar", ty(c, IN(2)));
			if (!same_shape(x, y) || x->dtype != y->dtype)
				FAIL("output %s must have the shape and dtype of logits %s", ty(c, y),
				     ty(c, x));
		}
		break;
	}
	case IR_OP_TOPK:
		if (!attr_int(c, op, "k", 1, 0, &v))
			return;
		if (!want_rank(c, op, x, 2, "input [N, E]") || !want_float(c, op, x, "input"))
			return;
		if (v < 1 || v > x->shape.dim[1])
			FAIL("k=%lld must be in 1..%lld for input %s", (long long)v,
			     (long long)x->shape.dim[1], ty(c, x));
		if (y->dtype != IR_I32 || y->shape.rank != 2 || y->shape.dim[0] != x->shape.dim[0] ||
		    y->shape.dim[1] != v)
			FAIL("output %s must be i32[%lld, %lld]", ty(c, y),
			     (long long)x->shape.dim[0], (long long)v);
		break;
	case IR_OP_TAKE_ALONG: case IR_OP_PUT_ALONG: {
		const struct ir_value *idx = IN(1);
		int take = op->kind == IR_OP_TAKE_ALONG;
		const struct ir_value *big = take ? x : y, *small = take ? y : x;
		if (!want_rank(c, op, big, 2, take ? "input [N, E]" : "output [N, E]") ||
		    !want_rank(c, op, idx, 2, "idx [N, k]") || !want_int(c, op, idx, "idx"))
			return;
		if (idx->shape.dim[0] != big->shape.dim[0])
			FAIL("idx %s and %s %s differ in N", ty(c, idx), take ? "input" : "output",
			     ty(c, big));
		if (!same_shape(small, idx))
			FAIL("%s %s must have idx's shape %s", take ? "output" : "v", ty(c, small),
			     ty(c, idx));
		if (x->dtype != y->dtype)
			FAIL("output %s must have the dtype of %s", ty(c, y), ty(c, x));
		break;
	}
	case IR_OP_EXPERT_COUNT:
		if (!attr_int(c, op, "experts", 1, 0, &v))
			return;
		if (!want_rank(c, op, x, 3, "idx [G, T, k]") || !want_int(c, op, x, "idx"))
			return;
		if (v < 1)
			FAIL("experts=%lld must be positive", (long long)v);
		if (y->dtype != IR_F32 || y->shape.rank != 2 || y->shape.dim[0] != x->shape.dim[0] ||
		    y->shape.dim[1] != v)
			FAIL("output %s must be f32[%lld, %lld]", ty(c, y), (long long)x->shape.dim[0],
			     (long long)v);
		break;
	case IR_OP_MOE_DISPATCH: {
		const struct ir_value *idx = IN(1);
		if (!attr_int(c, op, "experts", 1, 0, &v))
			return;
		if (!want_rank(c, op, x, 2, "x [N, D]") || !want_rank(c, op, idx, 2, "idx [N, k]") ||
		    !want_int(c, op, idx, "idx"))
			return;
		if (v < 1)
			FAIL("experts=%lld must be positive", (long long)v);
		if (idx->shape.dim[0] != x->shape.dim[0])
			FAIL("idx %s and x %s differ in N", ty(c, idx), ty(c, x));
		int64_t r = x->shape.dim[0] * idx->shape.dim[1];
		struct ir_shape s0 = ir_shape_of(2, r, x->shape.dim[1]);
		if (!ir_shape_eq(&s0, &OUT(0)->shape) || OUT(0)->dtype != x->dtype)
			FAIL("xs %s must be %s%s (x %s, idx %s)", ty(c, OUT(0)),
			     ir_dtype_name(x->dtype), shs(c, &s0), ty(c, x), ty(c, idx));
		if (OUT(1)->dtype != IR_I32 || OUT(1)->shape.rank != 1 ||
		    OUT(1)->shape.dim[0] != v + 1)
			FAIL("offsets %s must be i32[%lld]", ty(c, OUT(1)), (long long)(v + 1));
		if (OUT(2)->dtype != IR_I32 || OUT(2)->shape.rank != 1 || OUT(2)->shape.dim[0] != r)
			FAIL("perm %s must be i32[%lld]", ty(c, OUT(2)), (long long)r);
		break;
	}
	case IR_OP_GROUPED_MATMUL: case IR_OP_GROUPED_MATMUL_WGRAD: {
		int wgrad = op->kind == IR_OP_GROUPED_MATMUL_WGRAD;
		const struct ir_value *off = IN(2);
		const struct ir_value *wt = wgrad ? y : IN(1); /* the [E, K, N] weight */
		const struct ir_value *rows = wgrad ? IN(1) : y; /* the [R, N] rows */
		if (!attr_int(c, op, "trans_b", 0, 0, &v))
			return;
		if (!want_rank(c, op, x, 2, "xs [R, K]") ||
		    !want_rank(c, op, wt, 3, wgrad ? "output [E, K, N]" : "w [E, K, N]") ||
		    !want_rank(c, op, rows, 2, wgrad ? "dy [R, N]" : "output [R, N]") ||
		    !want_rank(c, op, off, 1, "offsets [E+1]") || !want_int(c, op, off, "offsets") ||
		    !want_float(c, op, x, "xs"))
			return;
		int64_t e = wt->shape.dim[0], k = wt->shape.dim[v ? 2 : 1], n = wt->shape.dim[v ? 1 : 2];
		if (off->shape.dim[0] != e + 1)
			FAIL("offsets %s must have E+1 = %lld entries (weight %s)", ty(c, off),
			     (long long)(e + 1), ty(c, wt));
		if (x->shape.dim[1] != k)
			FAIL("K differs: xs %s, weight %s%s", ty(c, x), ty(c, wt),
			     v ? " (transposed)" : "");
		if (rows->shape.dim[0] != x->shape.dim[0] || rows->shape.dim[1] != n)
			FAIL("%s %s must be [%lld, %lld] (xs %s, weight %s)", wgrad ? "dy" : "output",
			     ty(c, rows), (long long)x->shape.dim[0], (long long)n, ty(c, x), ty(c, wt));
		if (!wgrad && wt->dtype != x->dtype)
			FAIL("xs %s and w %s must have the same dtype", ty(c, x), ty(c, wt));
		if (wgrad && rows->dtype != x->dtype)
			FAIL("xs %s and dy %s must have the same dtype", ty(c, x), ty(c, rows));
		if (y->dtype != x->dtype && y->dtype != IR_F32)
			FAIL("output %s must have xs's dtype %s or f32", ty(c, y),
			     ir_dtype_name(x->dtype));
		break;
	}
	case IR_OP_MOE_COMBINE: case IR_OP_MOE_COMBINE_BWD_DATA: case IR_OP_MOE_COMBINE_BWD_GATE: {
		/* combine: ys[R,D] perm[R] gates[N,k] -> y[N,D]
		 * bwd_data: dy[N,D] perm[R] gates[N,k] -> dys[R,D]
		 * bwd_gate: dy[N,D] ys[R,D] perm[R] -> dgates[N,k] */
		const struct ir_value *rows, *perm, *gates, *tok;
		if (op->kind == IR_OP_MOE_COMBINE) {
			rows = IN(0), perm = IN(1), gates = IN(2), tok = y;
		} else if (op->kind == IR_OP_MOE_COMBINE_BWD_DATA) {
			tok = IN(0), perm = IN(1), gates = IN(2), rows = y;
		} else {
			tok = IN(0), rows = IN(1), perm = IN(2), gates = y;
		}
		if (!want_rank(c, op, rows, 2, "routed rows [R, D]") ||
		    !want_rank(c, op, tok, 2, "token rows [N, D]") ||
		    !want_rank(c, op, gates, 2, "gates [N, k]") ||
		    !want_rank(c, op, perm, 1, "perm [R]") || !want_int(c, op, perm, "perm") ||
		    !want_float(c, op, rows, "routed rows") || !want_float(c, op, gates, "gates"))
			return;
		int64_t n = gates->shape.dim[0], k = gates->shape.dim[1];
		if (tok->shape.dim[0] != n || tok->shape.dim[1] != rows->shape.dim[1])
			FAIL("token rows %s must be [%lld, %lld] (gates %s, routed rows %s)",
			     ty(c, tok), (long long)n, (long long)rows->shape.dim[1], ty(c, gates),
			     ty(c, rows));
		if (rows->shape.dim[0] != n * k || perm->shape.dim[0] != n * k)
			FAIL("routed rows %s and perm %s must have N*k = %lld rows (gates %s)",
			     ty(c, rows), ty(c, perm), (long long)(n * k), ty(c, gates));
		if (rows->dtype != tok->dtype)
			FAIL("routed rows %s and token rows %s must have the same dtype", ty(c, rows),
			     ty(c, tok));
		break;
	}
	case IR_OP_MOE_UNDISPATCH: {
		if (!attr_int(c, op, "k", 1, 0, &v))
			return;
		const struct ir_value *perm = IN(1);
		if (!want_rank(c, op, x, 2, "dxs [R, D]") || !want_rank(c, op, y, 2, "output [N, D]") ||
		    !want_rank(c, op, perm, 1, "perm [R]") || !want_int(c, op, perm, "perm"))
			return;
		if (v < 1)
			FAIL("k=%lld must be positive", (long long)v);
		if (x->shape.dim[0] != y->shape.dim[0] * v || perm->shape.dim[0] != x->shape.dim[0])
			FAIL("dxs %s and perm %s must have N*k = %lld rows (output %s, k=%lld)",
			     ty(c, x), ty(c, perm), (long long)(y->shape.dim[0] * v), ty(c, y),
			     (long long)v);
		if (x->shape.dim[1] != y->shape.dim[1] || x->dtype != y->dtype)
			FAIL("output %s must have dxs's width and dtype %s", ty(c, y), ty(c, x));
		break;
	}
	case IR_OP_SILU_BWD:
		if (!same_shape(x, IN(1)) || x->dtype != IN(1)->dtype)
			FAIL("x %s and dy %s must have the same shape and dtype", ty(c, x),
			     ty(c, IN(1)));
		same_as_input(c, op, 1);
		break;
	case IR_OP_SEND: case IR_OP_RECV:
		attr_int(c, op, "peer", 1, 0, &v);
		attr_int(c, op, "tag", 1, 0, &v);
		break;
	case IR_OP_EP_COUNTS:
		if (!attr_int(c, op, "ranks", 1, 0, &v))
			return;
		if (!want_rank(c, op, x, 1, "offsets [E+1]") || !want_int(c, op, x, "offsets"))
			return;
		w = x->shape.dim[0] - 1;
		if (w < 1 || v < 1 || w % v)
			FAIL("ranks=%lld must be positive and divide the %lld experts of offsets %s",
			     (long long)v, (long long)w, ty(c, x));
		if (y->dtype != IR_I32 || y->shape.rank != 2 || y->shape.dim[0] != v ||
		    y->shape.dim[1] != w / v)
			FAIL("output %s must be i32[%lld, %lld] (ranks=%lld, offsets %s)", ty(c, y),
			     (long long)v, (long long)(w / v), (long long)v, ty(c, x));
		break;
	case IR_OP_EP_OFFSETS:
		if (!want_rank(c, op, x, 2, "rc [P, El]") || !want_int(c, op, x, "rc"))
			return;
		if (y->dtype != IR_I32 || y->shape.rank != 1 || y->shape.dim[0] != x->shape.dim[1] + 1)
			FAIL("output %s must be i32[%lld] (rc %s)", ty(c, y),
			     (long long)(x->shape.dim[1] + 1), ty(c, x));
		break;
	case IR_OP_EP_REGROUP: {
		const struct ir_value *rc = IN(1);
		if (!attr_int(c, op, "inverse", 0, 0, &v))
			return;
		if (v != 0 && v != 1)
			FAIL("inverse=%lld must be 0 or 1", (long long)v);
		if (!want_float(c, op, x, "x") || !want_rank(c, op, rc, 2, "rc [P, El]") ||
		    !want_int(c, op, rc, "rc"))
			return;
		if (x->shape.rank < 1)
			FAIL("x %s needs a row dim", ty(c, x));
		same_as_input(c, op, 1);
		break;
	}
	case IR_OP_ALL_TO_ALL:
		if (!attr_str(c, op, "group"))
			return;
		if (x->shape.rank < 1)
			FAIL("x %s needs a peer dim [P, ...]", ty(c, x));
		same_as_input(c, op, 0);
		break;
	case IR_OP_ALL_TO_ALLV: {
		const struct ir_value *sc = IN(1), *rc = IN(2);
		if (!attr_str(c, op, "group"))
			return;
		if (!want_rank(c, op, sc, 2, "sc [P, n]") || !want_rank(c, op, rc, 2, "rc [P, m]"))
			return;
		if (sc->dtype != IR_I32 || rc->dtype != IR_I32)
			FAIL("sc %s and rc %s must be i32 (the program executor reads them so)",
			     ty(c, sc), ty(c, rc));
		if (sc->shape.dim[0] != rc->shape.dim[0])
			FAIL("sc %s and rc %s must have the same P", ty(c, sc), ty(c, rc));
		if (x->shape.rank < 1 || y->shape.rank != x->shape.rank)
			FAIL("output %s must have the rank of x %s (at least 1)", ty(c, y), ty(c, x));
		for (int d = 1; d < x->shape.rank; d++)
			if (x->shape.dim[d] != y->shape.dim[d])
				FAIL("output %s must have the row shape of x %s", ty(c, y), ty(c, x));
		if (x->dtype != y->dtype)
			FAIL("output %s must have x's dtype %s", ty(c, y), ty(c, x));
		break;
	}
	case IR_OP_ALL_REDUCE:
		if (attr_str(c, op, "group"))
			same_as_input(c, op, 0);
		break;
	case IR_OP_REDUCE_SCATTER: case IR_OP_ALL_GATHER:
		if (attr_str(c, op, "group") &&
		    (x->shape.rank != y->shape.rank || x->dtype != y->dtype))
			FAIL("output %s must have the input's rank and dtype %s", ty(c, y), ty(c, x));
		break;
	case IR_OP_QUANT_FP8: {
		if (!attr_int(c, op, "tile_r", 1, 0, &v) || !attr_int(c, op, "tile_c", 1, 0, &w))
			return;
		if (x->shape.rank < 2)
			FAIL("x %s must have at least 2 dims [..., M, K]", ty(c, x));
		if (!want_float(c, op, x, "x"))
			return;
		if (v < 1 || w < 1)
			FAIL("tiles %lldx%lld must be positive", (long long)v, (long long)w);
		if (!is_f8(OUT(0)->dtype) || !same_shape(x, OUT(0)))
			FAIL("q %s must be f8e4m3 (or f8e5m2) with x's shape %s", ty(c, OUT(0)),
			     ty(c, x));
		int64_t tile[2] = { v, w };
		struct ir_shape ss = scale_shape(&x->shape, tile);
		if (OUT(1)->dtype != IR_F32 || !ir_shape_eq(&OUT(1)->shape, &ss))
			FAIL("scale %s must be f32%s (x %s in %lldx%lld tiles)", ty(c, OUT(1)),
			     shs(c, &ss), ty(c, x), (long long)v, (long long)w);
		break;
	}
	case IR_OP_DEQUANT_FP8: {
		const struct ir_value *s = IN(1);
		int r = x->shape.rank;
		if (r < 2 || s->shape.rank != r)
			FAIL("q %s and scale %s must have one rank, at least 2", ty(c, x), ty(c, s));
		if (!is_f8(x->dtype))
			FAIL("q %s must have an FP8 dtype", ty(c, x));
		if (s->dtype != IR_F32)
			FAIL("scale %s must be f32", ty(c, s));
		for (int d = 0; d < r; d++)
			if (d < r - 2 ? s->shape.dim[d] != x->shape.dim[d]
				      : s->shape.dim[d] < 1 || s->shape.dim[d] > x->shape.dim[d])
				FAIL("scale %s does not tile q %s", ty(c, s), ty(c, x));
		if (!same_shape(x, y) || !is_float_t(y->dtype) || is_f8(y->dtype))
			FAIL("output %s must be a non-FP8 float with q's shape %s", ty(c, y), ty(c, x));
		break;
	}
	case IR_OP_SCALED_MATMUL: case IR_OP_SCALED_GROUPED_MATMUL:
	case IR_OP_SCALED_GROUPED_MATMUL_WGRAD:
		check_scaled(c, op);
		break;
	case IR_OP_ATTENTION: case IR_OP_ATTENTION_BWD:
		check_attention(c, op);
		break;
	default:
		break; /* no rule: structural checks only */
	}
}

/* --- structure -------------------------------------------------------------------- */

int ir_verify(const struct ir_graph *g, FILE *err)
{
	struct vctx c = { .g = g, .err = err };
	unsigned char *seen = calloc((size_t)(g->n_values > 0 ? g->n_values : 1), 1);
	if (!seen) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	for (int oi = 0; oi < g->n_ops; oi++) {
		const struct ir_op *op = g->ops[oi];
		if (!op) {
			report(&c, NULL, "op %d of the list is null", oi);
			continue;
		}
		if ((unsigned)op->kind >= IR_OP_COUNT) {
			report(&c, op, "unknown op kind %d", (int)op->kind);
			continue;
		}
		int ok = 1;
		int want_in = ir_op_arity_in(op->kind), want_out = ir_op_arity_out(op->kind);
		if (want_in >= 0 ? op->n_in != want_in : op->n_in < 1) {
			report(&c, op, "takes %s%d input%s, has %d", want_in < 0 ? "at least " : "",
			       want_in < 0 ? 1 : want_in, want_in == 1 || want_in < 0 ? "" : "s",
			       op->n_in);
			ok = 0;
		}
		if (op->n_out != want_out) {
			report(&c, op, "has %d output%s, must have %d", op->n_out,
			       op->n_out == 1 ? "" : "s", want_out);
			ok = 0;
		}
		if ((unsigned)op->phase > IR_PHASE_OPT) {
			report(&c, op, "unknown phase %d", (int)op->phase);
			ok = 0;
		}
		if (op->stage < -1) {
			report(&c, op, "stage %d (must be -1, unassigned, or >= 0)", op->stage);
			ok = 0;
		}
		for (int i = 0; i < op->n_in; i++) {
			const struct ir_value *v = op->in[i];
			if (!v) {
				report(&c, op, "input %d is null", i);
				ok = 0;
			} else if (v->id < 0 || v->id >= g->n_values || g->values[v->id] != v) {
				report(&c, op, "input %d (%%%d) is not a value of this graph", i, v->id);
				ok = 0;
			} else if (!seen[v->id]) {
				report(&c, op, "input %d %%%d is used before it is defined", i, v->id);
				ok = 0;
			}
		}
		for (int i = 0; i < op->n_out; i++) {
			const struct ir_value *v = op->out[i];
			if (!v) {
				report(&c, op, "output %d is null", i);
				ok = 0;
				continue;
			}
			if (v->id < 0 || v->id >= g->n_values || g->values[v->id] != v) {
				report(&c, op, "output %d (%%%d) is not a value of this graph", i, v->id);
				ok = 0;
				continue;
			}
			if (seen[v->id]) {
				report(&c, op, "output %%%d is defined twice", v->id);
				ok = 0;
			}
			seen[v->id] = 1;
			if (v->def != op || v->def_out != i) {
				report(&c, op, "output %d %%%d does not point back to this op", i, v->id);
				ok = 0;
			}
			if ((unsigned)v->dtype >= IR_DTYPE_COUNT) {
				report(&c, op, "output %%%d has unknown dtype %d", v->id, (int)v->dtype);
				ok = 0;
			}
			if (v->shape.rank < 0 || v->shape.rank > IR_MAX_RANK) {
				report(&c, op, "output %%%d has rank %d (0..%d)", v->id, v->shape.rank,
				       IR_MAX_RANK);
				ok = 0;
				continue;
			}
			for (int d = 0; d < v->shape.rank; d++)
				if (v->shape.dim[d] < 0) {
					report(&c, op, "output %%%d has negative dim %lld", v->id,
					       (long long)v->shape.dim[d]);
					ok = 0;
					break;
				}
			if (ok && ir_shape_numel(&v->shape) < 0) {
				report(&c, op, "output %s has more elements than fit in 64 bits",
				       ty(&c, v));
				ok = 0;
			}
		}
		if (ok)
			for (int i = 0; i < op->n_in; i++)
				if ((unsigned)op->in[i]->dtype >= IR_DTYPE_COUNT ||
				    op->in[i]->shape.rank < 0 || op->in[i]->shape.rank > IR_MAX_RANK)
					ok = 0; /* reported at its definition */
		if (ok)
			check_op(&c, op);
	}
	for (int i = 0; i < g->n_outputs; i++) {
		const struct ir_value *v = g->outputs[i];
		if (!v || v->id < 0 || v->id >= g->n_values || g->values[v->id] != v || !seen[v->id])
			report(&c, NULL, "graph output '%s' is not defined by an op of the graph",
			       g->output_names[i]);
	}
	free(seen);
	return c.count;
}
