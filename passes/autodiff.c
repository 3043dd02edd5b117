/*
 * autodiff.c - reverse-mode differentiation of the graph's "loss" output.
 *
 * Takes: a forward graph (every op in phase FWD) with a float output named "loss".
 *
 * Guarantees afterwards:
 *  - The backward ops are appended after the forward ops, in an order that runs: the
 *    gradient of a value is complete (every use accumulated with ADD) before it is used.
 *    The seed is a CONST 1 of the loss's shape (a non-scalar loss is differentiated as
 *    the sum of its entries).
 *  - Every backward op is in phase BWD_B or BWD_W.  A value is on the weight side when
 *    it is a PARAM output or a view of weight-side values only (cast, reshape,
 *    transpose, slice, concat, broadcast, scale, neg: e.g. a transposed weight); every
 *    op that computes a gradient toward a weight-side value is BWD_W, every other
 *    backward op BWD_B.  Hence a BWD_B op never reads a BWD_W result, and W work (e.g.
 *    dW = x^T dy of a matmul, the grouped-matmul weight gradient, the embedding's
 *    scatter) can be deferred by a schedule.
 *  - Each backward op has the source location and scope of the forward op it
 *    differentiates.
 *  - For each trainable PARAM with path P the graph gains an output "grad.P" of the
 *    parameter's shape and dtype: a zero CONST when the loss does not depend on it.
 *  - Gradients flow only through float values.  STOP_GRAD, TOPK and EXPERT_COUNT pass
 *    none; PARAMs with attr trainable=0 get none; INPUT and CONST values get none.
 *    Broadcasting in elementwise ops and batched matmuls is undone with SUM_TO.
 *
 * Leaves alone: the forward ops (none is changed or removed; values needed by the
 * backward are read where the forward computed them: no recomputation, that is the
 * recompute pass's choice), the other outputs, stage assignments (-1 on new ops).
 *
 * A graph that has its backward already (read back from `sluice ir --after autodiff`:
 * ops in phase BWD_B/BWD_W and every "grad.P" output) is left as is; one with backward
 * ops but a "grad.P" missing is refused.
 *
 * Refused with a message: a graph without "loss", a partial backward, an
 * op on the path from a parameter to the loss that has no gradient rule (the backward
 * helpers themselves, communication and FP8 ops, which passes after this one place).
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

struct ad {
	struct ir_graph *g;
	FILE *err;
	int nv;                 /* values of the forward graph */
	struct ir_value **grad; /* accumulated gradient, by value id */
	unsigned char *req;     /* a gradient may flow into the value */
	unsigned char *wside;   /* the value is a parameter or a view of parameters */
	enum ir_phase phase;    /* of the ops being made */
	struct ir_value **flat; /* flatten_rows() of forward values, by value id */
};

/* --- making backward ops ------------------------------------------------------------ */

static struct ir_value *mk(struct ad *a, enum ir_opkind k, int n, struct ir_value **in,
			   enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *v = ir_op1(a->g, k, n, in, t, s);
	v->def->phase = a->phase;
	return v;
}

static struct ir_value *un(struct ad *a, enum ir_opkind k, struct ir_value *x)
{
	return mk(a, k, 1, &x, x->dtype, x->shape);
}

/* v in dtype t: mixed precision puts a gradient (of an f32 matmul output, say) next
 * to a forward value of another dtype (a bf16 weight); ops take operands of one dtype */
static struct ir_value *cast_to(struct ad *a, struct ir_value *v, enum ir_dtype t)
{
	if (v->dtype == t)
		return v;
	return mk(a, IR_OP_CAST, 1, &v, t, v->shape);
}

static struct ir_value *bin(struct ad *a, enum ir_opkind k, struct ir_value *x,
			    struct ir_value *y)
{
	y = cast_to(a, y, x->dtype);
	struct ir_shape s;
	if (!ir_shape_broadcast(&x->shape, &y->shape, &s))
		RT_BUG("autodiff: shapes of a binary op do not broadcast");
	struct ir_value *in[2] = { x, y };
	return mk(a, k, 2, in, x->dtype, s);
}

static struct ir_value *scale(struct ad *a, struct ir_value *x, double alpha, double beta)
{
	struct ir_value *v = un(a, IR_OP_SCALE, x);
	ir_op_set_float(a->g, v->def, "alpha", alpha);
	ir_op_set_float(a->g, v->def, "beta", beta);
	return v;
}

static struct ir_value *cnst(struct ad *a, double c, enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *v = mk(a, IR_OP_CONST, 0, NULL, t, s);
	ir_op_set_float(a->g, v->def, "value", c);
	return v;
}

static struct ir_value *reshape(struct ad *a, struct ir_value *x, struct ir_shape s)
{
	if (ir_shape_eq(&x->shape, &s))
		return x;
	return mk(a, IR_OP_RESHAPE, 1, &x, x->dtype, s);
}

static struct ir_value *broadcast(struct ad *a, struct ir_value *x, struct ir_shape s)
{
	if (ir_shape_eq(&x->shape, &s))
		return x;
	return mk(a, IR_OP_BROADCAST, 1, &x, x->dtype, s);
}

static struct ir_value *with_attrs_of(struct ad *a, struct ir_value *v, const struct ir_op *from)
{
	for (int i = 0; i < from->n_attr; i++) {
		const struct ir_attr *at = &from->attr[i];
		switch (at->kind) {
		case IR_ATTR_INT: ir_op_set_int(a->g, v->def, at->name, at->i); break;
		case IR_ATTR_FLOAT: ir_op_set_float(a->g, v->def, at->name, at->f); break;
		case IR_ATTR_STR: ir_op_set_str(a->g, v->def, at->name, at->s); break;
		case IR_ATTR_INTS: ir_op_set_ints(a->g, v->def, at->name, at->n, at->ints); break;
		}
	}
	return v;
}

/* op(x) op(y) with op the optional transpose of the last two dims; batch dims broadcast;
 * operands and product in dtype t (the forward product's operand dtype) */
static struct ir_value *matmul(struct ad *a, struct ir_value *x, struct ir_value *y, int ta,
			       int tb, enum ir_dtype t)
{
	const struct ir_shape *xs = &x->shape, *ys = &y->shape;
	struct ir_shape xb = *xs, yb = *ys, s;
	xb.rank -= 2, yb.rank -= 2;
	if (!ir_shape_broadcast(&xb, &yb, &s))
		RT_BUG("autodiff: batch dims of a matmul do not broadcast");
	s.dim[s.rank++] = ta ? xs->dim[xs->rank - 1] : xs->dim[xs->rank - 2];
	s.dim[s.rank++] = tb ? ys->dim[ys->rank - 2] : ys->dim[ys->rank - 1];
	struct ir_value *in[2] = { cast_to(a, x, t), cast_to(a, y, t) };
	struct ir_value *v = mk(a, IR_OP_MATMUL, 2, in, t, s);
	if (ta)
		ir_op_set_int(a->g, v->def, "trans_a", 1);
	if (tb)
		ir_op_set_int(a->g, v->def, "trans_b", 1);
	return v;
}

static struct ir_value *transpose_last2(struct ad *a, struct ir_value *x)
{
	struct ir_shape s = x->shape;
	int64_t perm[IR_MAX_RANK];
	for (int i = 0; i < s.rank; i++)
		perm[i] = i;
	perm[s.rank - 2] = s.rank - 1, perm[s.rank - 1] = s.rank - 2;
	s.dim[s.rank - 2] = x->shape.dim[s.rank - 1], s.dim[s.rank - 1] = x->shape.dim[s.rank - 2];
	struct ir_value *v = mk(a, IR_OP_TRANSPOSE, 1, &x, x->dtype, s);
	ir_op_set_ints(a->g, v->def, "perm", s.rank, perm);
	return v;
}

/* [..., M, K] -> [(... M), K], made once per forward value (q, k and v projections
 * of one input share it) */
static struct ir_value *flatten_rows(struct ad *a, struct ir_value *x)
{
	if (x->id < a->nv && a->flat[x->id])
		return a->flat[x->id];
	const struct ir_shape *s = &x->shape;
	int64_t last = s->dim[s->rank - 1];
	struct ir_value *v = reshape(a, x, ir_shape_of(2, ir_shape_numel(s) / (last ? last : 1), last));
	if (x->id < a->nv)
		a->flat[x->id] = v;
	return v;
}

/* --- accumulating gradients ------------------------------------------------------------ */

static void set_phase_for(struct ad *a, const struct ir_value *v)
{
	a->phase = a->wside[v->id] ? IR_PHASE_BWD_W : IR_PHASE_BWD_B;
}

/* Add the contribution c to the gradient of v (summing broadcast dims away). */
static void acc(struct ad *a, struct ir_value *v, struct ir_value *c)
{
	if (!ir_shape_eq(&c->shape, &v->shape)) {
		struct ir_value *in = c;
		c = mk(a, IR_OP_SUM_TO, 1, &in, c->dtype, v->shape);
	}
	if (c->dtype != v->dtype) {
		struct ir_value *in = c;
		c = mk(a, IR_OP_CAST, 1, &in, v->dtype, v->shape);
	}
	struct ir_value *old = a->grad[v->id];
	a->grad[v->id] = old ? bin(a, IR_OP_ADD, old, c) : c;
}

/* Does the gradient of in[i] need computing?  Sets the phase for it when it does. */
static int want(struct ad *a, const struct ir_op *op, int i)
{
	if (i >= op->n_in || !a->req[op->in[i]->id])
		return 0;
	set_phase_for(a, op->in[i]);
	return 1;
}

/* --- the rules, one per op ----------------------------------------------------------------- */

static int no_rule(struct ad *a, const struct ir_op *op)
{
	if (op->loc.file)
		fprintf(a->err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
	fprintf(a->err, "error: autodiff: op %d (%s) lies between a parameter and the loss "
			"but has no gradient rule\n", op->id, ir_op_name(op->kind));
	return -1;
}

static int backward_op(struct ad *a, struct ir_op *op)
{
	struct ir_graph *g = a->g;
	struct ir_value *y = op->out[0], *dy = a->grad[y->id];
	struct ir_value *x = op->n_in ? op->in[0] : NULL, *x1 = op->n_in > 1 ? op->in[1] : NULL;

	if (op->kind == IR_OP_ATTENTION && a->grad[op->out[1]->id])
		return no_rule(a, op); /* a use of lse on the way to the loss */
	if (!dy) /* e.g. MOE_DISPATCH: only its rows xs (output 0) carry a gradient */
		return 0;

	switch (op->kind) {
	case IR_OP_NEG:
		if (want(a, op, 0))
			acc(a, x, un(a, IR_OP_NEG, dy));
		return 0;
	case IR_OP_EXP:
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_MUL, dy, y));
		return 0;
	case IR_OP_LOG:
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_DIV, dy, x));
		return 0;
	case IR_OP_SQRT: /* dy / (2 y) */
		if (want(a, op, 0))
			acc(a, x, scale(a, bin(a, IR_OP_DIV, dy, y), 0.5, 0));
		return 0;
	case IR_OP_RSQRT: /* -dy y^3 / 2 */
		if (want(a, op, 0)) {
			struct ir_value *y3 = bin(a, IR_OP_MUL, un(a, IR_OP_SQUARE, y), y);
			acc(a, x, scale(a, bin(a, IR_OP_MUL, dy, y3), -0.5, 0));
		}
		return 0;
	case IR_OP_RECIP: /* -dy y^2 */
		if (want(a, op, 0))
			acc(a, x, un(a, IR_OP_NEG, bin(a, IR_OP_MUL, dy, un(a, IR_OP_SQUARE, y))));
		return 0;
	case IR_OP_SQUARE: /* 2 x dy */
		if (want(a, op, 0))
			acc(a, x, scale(a, bin(a, IR_OP_MUL, dy, x), 2, 0));
		return 0;
	case IR_OP_SIGMOID: /* dy y (1 - y) */
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_MUL, bin(a, IR_OP_MUL, dy, y), scale(a, y, -1, 1)));
		return 0;
	case IR_OP_TANH: /* dy (1 - y^2) */
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_MUL, dy, scale(a, un(a, IR_OP_SQUARE, y), -1, 1)));
		return 0;
	case IR_OP_SILU:
	case IR_OP_RELU:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { x, cast_to(a, dy, x->dtype) };
			acc(a, x, mk(a, op->kind == IR_OP_SILU ? IR_OP_SILU_BWD : IR_OP_RELU_BWD, 2,
				     in, x->dtype, x->shape));
		}
		return 0;
	case IR_OP_SCALE:
		if (want(a, op, 0)) {
			double alpha = ir_op_float(op, "alpha", 1);
			acc(a, x, alpha == 1 ? dy : scale(a, dy, alpha, 0));
		}
		return 0;
	case IR_OP_CAST: /* acc() casts back to x's dtype */
		if (want(a, op, 0))
			acc(a, x, dy);
		return 0;
	case IR_OP_ADD:
	case IR_OP_SUB:
		if (want(a, op, 0))
			acc(a, x, dy);
		if (want(a, op, 1))
			acc(a, x1, op->kind == IR_OP_ADD ? dy : un(a, IR_OP_NEG, dy));
		return 0;
	case IR_OP_MUL:
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_MUL, dy, x1));
		if (want(a, op, 1))
			acc(a, x1, bin(a, IR_OP_MUL, dy, x));
		return 0;
	case IR_OP_DIV: /* y = x / x1: dx = dy / x1, dx1 = -dy y / x1 */
		if (want(a, op, 0))
			acc(a, x, bin(a, IR_OP_DIV, dy, x1));
		if (want(a, op, 1))
			acc(a, x1, un(a, IR_OP_NEG, bin(a, IR_OP_DIV, bin(a, IR_OP_MUL, dy, y), x1)));
		return 0;
	case IR_OP_REDUCE_SUM:
	case IR_OP_REDUCE_MEAN:
		if (want(a, op, 0)) {
			int64_t ax = ir_op_int(op, "axis", -1);
			if (ax < 0)
				ax += x->shape.rank;
			struct ir_shape ks = x->shape;
			ks.dim[ax] = 1;
			struct ir_value *d = reshape(a, dy, ks);
			if (op->kind == IR_OP_REDUCE_MEAN) /* scaled before it is broadcast */
				d = scale(a, d, 1.0 / (double)x->shape.dim[ax], 0);
			acc(a, x, broadcast(a, d, x->shape));
		}
		return 0;
	case IR_OP_REDUCE_MAX:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { x, cast_to(a, dy, x->dtype) };
			acc(a, x, with_attrs_of(a, mk(a, IR_OP_REDUCE_MAX_BWD, 2, in, x->dtype,
						      x->shape), op));
		}
		return 0;
	case IR_OP_SUM_TO:
		if (want(a, op, 0))
			acc(a, x, broadcast(a, dy, x->shape));
		return 0;
	case IR_OP_BROADCAST: /* acc() sums the broadcast dims away */
		if (want(a, op, 0))
			acc(a, x, dy);
		return 0;
	case IR_OP_RESHAPE:
		if (want(a, op, 0))
			acc(a, x, reshape(a, dy, x->shape));
		return 0;
	case IR_OP_TRANSPOSE:
		if (want(a, op, 0)) {
			const struct ir_attr *p = ir_op_attr(op, "perm");
			int64_t inv[IR_MAX_RANK];
			for (int i = 0; i < p->n; i++)
				inv[p->ints[i]] = i;
			struct ir_value *d = mk(a, IR_OP_TRANSPOSE, 1, &dy, dy->dtype, x->shape);
			ir_op_set_ints(g, d->def, "perm", p->n, inv);
			acc(a, x, d);
		}
		return 0;
	case IR_OP_SLICE: /* zeros before, dy, zeros after, along the axis */
		if (want(a, op, 0)) {
			int64_t ax = ir_op_int(op, "axis", -1), start = ir_op_int(op, "start", 0);
			if (ax < 0)
				ax += x->shape.rank;
			int64_t len = y->shape.dim[ax], after = x->shape.dim[ax] - start - len;
			struct ir_value *parts[3];
			int n = 0;
			struct ir_shape s = x->shape;
			if (start > 0) {
				s.dim[ax] = start;
				parts[n++] = cnst(a, 0, dy->dtype, s);
			}
			parts[n++] = dy;
			if (after > 0) {
				s.dim[ax] = after;
				parts[n++] = cnst(a, 0, dy->dtype, s);
			}
			struct ir_value *d = dy;
			if (n > 1) {
				d = mk(a, IR_OP_CONCAT, n, parts, dy->dtype, x->shape);
				ir_op_set_int(g, d->def, "axis", ax);
			}
			acc(a, x, d);
		}
		return 0;
	case IR_OP_CONCAT: {
		int64_t ax = ir_op_int(op, "axis", -1), at = 0;
		if (ax < 0)
			ax += y->shape.rank;
		for (int i = 0; i < op->n_in; i++) {
			struct ir_value *xi = op->in[i];
			if (want(a, op, i)) {
				struct ir_value *d = mk(a, IR_OP_SLICE, 1, &dy, dy->dtype, xi->shape);
				ir_op_set_int(g, d->def, "axis", ax);
				ir_op_set_int(g, d->def, "start", at);
				acc(a, xi, d);
			}
			at += xi->shape.dim[ax];
		}
		return 0;
	}
	case IR_OP_MATMUL: {
		int ta = (int)ir_op_int(op, "trans_a", 0), tb = (int)ir_op_int(op, "trans_b", 0);
		/* dy in the products' dtype, cast once for both (a bf16 product writing f32,
		 * the output head's: one cast of the [tokens, vocab] gradient, not two) */
		if (want(a, op, 0)) { /* dA = dy B^T; a stored transposed gets B dy^T */
			struct ir_value *d;
			dy = cast_to(a, dy, x->dtype);
			if (!ta)
				d = matmul(a, dy, x1, 0, !tb, x->dtype);
			else if (x1->shape.rank == dy->shape.rank)
				d = matmul(a, x1, dy, tb, 1, x->dtype);
			else /* b shared by the batch: (dy B^T)^T */
				d = transpose_last2(a, matmul(a, dy, x1, 0, !tb, x->dtype));
			acc(a, x, d);
		}
		if (want(a, op, 1)) { /* dB = A^T dy */
			dy = cast_to(a, dy, x->dtype);
			struct ir_value *xa = x, *d = dy;
			if (!ta && x1->shape.rank == 2 && x->shape.rank > 2) {
				/* a weight shared by the batch: one 2-D product over all rows */
				xa = flatten_rows(a, x);
				d = flatten_rows(a, dy);
			}
			acc(a, x1, tb ? matmul(a, d, xa, 1, ta, x->dtype)
				      : matmul(a, xa, d, !ta, 0, x->dtype));
		}
		return 0;
	}
	case IR_OP_SOFTMAX:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { y, cast_to(a, dy, y->dtype) };
			acc(a, x, with_attrs_of(a, mk(a, IR_OP_SOFTMAX_BWD, 2, in, y->dtype, x->shape),
						op));
		}
		return 0;
	case IR_OP_ROPE:
		if (want(a, op, 0)) {
			struct ir_value *d = with_attrs_of(a, mk(a, IR_OP_ROPE, 1, &dy, x->dtype,
								 x->shape), op);
			ir_op_set_int(g, d->def, "inverse", !ir_op_int(op, "inverse", 0));
			acc(a, x, d);
		}
		return 0;
	case IR_OP_GATHER_ROWS:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { dy, x1 };
			acc(a, x, mk(a, IR_OP_SCATTER_ROWS, 2, in, dy->dtype, x->shape));
		}
		return 0;
	case IR_OP_SCATTER_ROWS:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { dy, x1 };
			acc(a, x, mk(a, IR_OP_GATHER_ROWS, 2, in, dy->dtype, x->shape));
		}
		return 0;
	case IR_OP_CROSS_ENTROPY:
		if (want(a, op, 0)) {
			struct ir_value *in[3] = { x, x1, dy };
			acc(a, x, mk(a, IR_OP_CROSS_ENTROPY_BWD, 3, in, x->dtype, x->shape));
		}
		return 0;
	case IR_OP_TAKE_ALONG:
	case IR_OP_PUT_ALONG:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { dy, x1 };
			acc(a, x, mk(a, op->kind == IR_OP_TAKE_ALONG ? IR_OP_PUT_ALONG : IR_OP_TAKE_ALONG,
				     2, in, dy->dtype, x->shape));
		}
		return 0;
	case IR_OP_MOE_DISPATCH:
		if (want(a, op, 0)) {
			struct ir_value *in[2] = { dy, op->out[2] };
			struct ir_value *d = mk(a, IR_OP_MOE_UNDISPATCH, 2, in, dy->dtype, x->shape);
			ir_op_set_int(g, d->def, "k", x1->shape.dim[x1->shape.rank - 1]);
			acc(a, x, d);
		}
		return 0;
	case IR_OP_GROUPED_MATMUL: {
		int tb = (int)ir_op_int(op, "trans_b", 0);
		struct ir_value *off = op->in[2];
		if (want(a, op, 0)) { /* dxs = dy w[e]^T, row by row */
			struct ir_value *in[3] = { cast_to(a, dy, x1->dtype), x1, off };
			struct ir_value *d = mk(a, IR_OP_GROUPED_MATMUL, 3, in, x1->dtype, x->shape);
			if (!tb)
				ir_op_set_int(g, d->def, "trans_b", 1);
			acc(a, x, d);
		}
		if (want(a, op, 1)) { /* dw[e] = xs^T dy over the rows of e */
			struct ir_value *in[3] = { x, cast_to(a, dy, x->dtype), off };
			struct ir_value *d = mk(a, IR_OP_GROUPED_MATMUL_WGRAD, 3, in, x->dtype,
						x1->shape);
			if (tb)
				ir_op_set_int(g, d->def, "trans_b", 1);
			acc(a, x1, d);
		}
		return 0;
	}
	case IR_OP_MOE_COMBINE: {
		struct ir_value *perm = op->in[1], *gates = op->in[2];
		if (want(a, op, 0)) {
			struct ir_value *in[3] = { cast_to(a, dy, x->dtype), perm, gates };
			acc(a, x, mk(a, IR_OP_MOE_COMBINE_BWD_DATA, 3, in, x->dtype, x->shape));
		}
		if (want(a, op, 2)) {
			struct ir_value *in[3] = { cast_to(a, dy, x->dtype), x, perm };
			acc(a, gates, mk(a, IR_OP_MOE_COMBINE_BWD_GATE, 3, in, gates->dtype,
					 gates->shape));
		}
		return 0;
	}
	case IR_OP_ATTENTION: {
		/* one op gives all three gradients (FlashAttention-2's backward) */
		int any = 0, wside = 0;
		for (int i = 0; i < 3; i++)
			if (a->req[op->in[i]->id]) {
				any = 1;
				wside |= a->wside[op->in[i]->id];
			}
		if (!any)
			return 0;
		a->phase = wside ? IR_PHASE_BWD_W : IR_PHASE_BWD_B;
		struct ir_value *in[6] = { op->in[0], op->in[1], op->in[2], y, op->out[1],
					   cast_to(a, dy, y->dtype) };
		struct ir_op *b = ir_op_new(g, IR_OP_ATTENTION_BWD, 6, in, 3);
		b->phase = a->phase;
		for (int i = 0; i < 3; i++) {
			b->out[i]->dtype = op->in[i]->dtype;
			b->out[i]->shape = op->in[i]->shape;
		}
		with_attrs_of(a, b->out[0], op);
		for (int i = 0; i < 3; i++)
			if (want(a, op, i))
				acc(a, op->in[i], b->out[i]);
		return 0;
	}
	default:
		for (int i = 0; i < op->n_in; i++)
			if (a->req[op->in[i]->id])
				return no_rule(a, op);
		return 0;
	}
}

/* --- which values a gradient reaches ---------------------------------------------------- */

static int passes_no_gradient(enum ir_opkind k)
{
	return k == IR_OP_STOP_GRAD || k == IR_OP_TOPK || k == IR_OP_EXPERT_COUNT ||
	       k == IR_OP_INPUT || k == IR_OP_CONST;
}

static int is_view(enum ir_opkind k)
{
	switch (k) {
	case IR_OP_CAST: case IR_OP_RESHAPE: case IR_OP_TRANSPOSE: case IR_OP_SLICE:
	case IR_OP_CONCAT: case IR_OP_BROADCAST: case IR_OP_SCALE: case IR_OP_NEG:
		return 1;
	default:
		return 0;
	}
}

static void mark_values(struct ad *a, int n_fwd)
{
	for (int i = 0; i < n_fwd; i++) {
		const struct ir_op *op = a->g->ops[i];
		if (op->kind == IR_OP_PARAM) {
			int id = op->out[0]->id;
			a->req[id] = ir_op_int(op, "trainable", 1) != 0 &&
				     ir_dtype_is_float(op->out[0]->dtype);
			a->wside[id] = 1;
			continue;
		}
		if (passes_no_gradient(op->kind))
			continue;
		int any = 0, all_w = 1;
		for (int j = 0; j < op->n_in; j++)
			if (a->req[op->in[j]->id]) {
				any = 1;
				all_w &= a->wside[op->in[j]->id];
			}
		for (int j = 0; j < op->n_out; j++) {
			int id = op->out[j]->id;
			a->req[id] = any && ir_dtype_is_float(op->out[j]->dtype);
			a->wside[id] = a->req[id] && all_w && is_view(op->kind);
		}
	}
}

/* --- the pass -------------------------------------------------------------------------------- */

static int has_output(const struct ir_graph *g, const char *name)
{
	for (int k = 0; k < g->n_outputs; k++)
		if (!strcmp(g->output_names[k], name))
			return 1;
	return 0;
}

/* A graph read back from textual IR after this pass has its backward: then the pass
 * leaves it as is, so that every pass can run again on what `sluice ir --after` printed.
 * It has one when an op is in a phase after the forward; that backward is whole when every
 * trainable parameter has its "grad.P" output.  Returns 0 (no backward), 1 (a whole
 * one) or -1 (a partial one: refused with a message). */
static int already_differentiated(const struct ir_graph *g, FILE *err)
{
	const struct ir_op *bwd = NULL;
	for (int i = 0; i < g->n_ops && !bwd; i++)
		if (g->ops[i]->phase != IR_PHASE_FWD)
			bwd = g->ops[i];
	if (!bwd)
		return 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_PARAM || ir_op_int(op, "trainable", 1) == 0)
			continue;
		char name[1024];
		if (op->path)
			snprintf(name, sizeof name, "grad.%s", op->path);
		else
			snprintf(name, sizeof name, "grad.%%%d", op->out[0]->id);
		if (!has_output(g, name)) {
			fprintf(err, "error: autodiff: the graph has backward ops (op %d is in "
				     "phase %s) but no output '%s': a partial backward\n",
				bwd->id, ir_phase_name(bwd->phase), name);
			return -1;
		}
	}
	return 1;
}

int pass_autodiff(struct ir_graph *g, FILE *err)
{
	struct ir_value *loss = ir_graph_output(g, "loss");
	if (!loss) {
		fprintf(err, "error: autodiff: the graph has no output named 'loss'\n");
		return 1;
	}
	if (!ir_dtype_is_float(loss->dtype)) {
		fprintf(err, "error: autodiff: the loss is of integer type %s\n",
			ir_dtype_name(loss->dtype));
		return 1;
	}
	int done = already_differentiated(g, err);
	if (done)
		return done < 0 ? 1 : 0;

	struct ad a = { .g = g, .err = err, .nv = g->n_values };
	a.grad = rt_calloc((size_t)a.nv, sizeof *a.grad);
	a.req = rt_calloc((size_t)a.nv, 1);
	a.wside = rt_calloc((size_t)a.nv, 1);
	a.flat = rt_calloc((size_t)a.nv, sizeof *a.flat);
	struct ir_loc saved_loc = g->cur_loc;
	const char *saved_scope = g->cur_scope;
	int n_fwd = g->n_ops, rc = 0;
	mark_values(&a, n_fwd);

	if (a.req[loss->id]) {
		const struct ir_op *d = loss->def;
		ir_graph_set_context(g, d->loc, d->scope);
		a.phase = IR_PHASE_BWD_B;
		a.grad[loss->id] = cnst(&a, 1.0, loss->dtype, loss->shape);
	}
	for (int i = n_fwd - 1; i >= 0 && !rc; i--) {
		struct ir_op *op = g->ops[i];
		int has_grad = 0;
		for (int j = 0; j < op->n_out; j++)
			has_grad |= a.grad[op->out[j]->id] != NULL;
		if (!has_grad)
			continue;
		ir_graph_set_context(g, op->loc, op->scope);
		rc = backward_op(&a, op);
	}

	for (int i = 0; i < n_fwd && !rc; i++) {
		struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_PARAM || ir_op_int(op, "trainable", 1) == 0)
			continue;
		struct ir_value *p = op->out[0], *d = a.grad[p->id];
		ir_graph_set_context(g, op->loc, op->scope);
		a.phase = IR_PHASE_BWD_W;
		if (!d)
			d = cnst(&a, 0, p->dtype, p->shape);
		const char *name = op->path ? ir_sprintf(g->arena, "grad.%s", op->path)
					    : ir_sprintf(g->arena, "grad.%%%d", p->id);
		int found = 0;
		for (int k = 0; k < g->n_outputs; k++)
			if (!strcmp(g->output_names[k], name)) {
				/* two PARAM ops with one path are one parameter: sum */
				g->outputs[k] = bin(&a, IR_OP_ADD, g->outputs[k], d);
				found = 1;
			}
		if (!found)
			ir_graph_add_output(g, name, d);
	}

	ir_graph_set_context(g, saved_loc, saved_scope);
	free(a.grad);
	free(a.req);
	free(a.wside);
	free(a.flat);
	return rc ? 1 : 0;
}
