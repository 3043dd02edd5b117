/*
 * fp8.c - DeepSeek-V3's FP8 recipe: the matrix products of linear and expert layers take
 * E4M3 operands with fine-grained scales.
 *
 * Takes: a graph after autodiff (and expert_parallel), and the train setting
 * `precision` (anything but fp8: nothing to do).  A graph that has its scaled products
 * already (read back from textual IR) is left as is.
 *
 * Guarantees afterwards, for every linear layer (a forward MATMUL whose b operand is a
 * trainable 2-D PARAM W, stored [K, N]) and every expert layer (a forward
 * GROUPED_MATMUL whose weight is a trainable PARAM [E, K, N]), unless the layer is
 * kept (below):
 *  - forward  y = x W: SCALED_MATMUL (SCALED_GROUPED_MATMUL) of x quantised in 1x128
 *    tiles along K and W in 128x128 blocks (per expert);
 *  - input gradient dx = dy W^T (the backward's product that reads W, trans_b):
 *    dy in 1x128 tiles along its contraction dim N, and W in the same 128x128 blocks,
 *    which serve transposed as they are (as DeepSeek-V3 does), quantised again in the
 *    backward (the same bits) rather than kept from the forward;
 *  - weight gradient dW = x^T dy (the product whose result flows, through sums,
 *    reshapes and casts, into the graph output grad.<W's path>): x and dy both in
 *    128x1 tiles, along the contraction dim (the tokens); the grouped weight gradient
 *    alike (a tile of 128 rows may span two experts' segments: it shares one scale).
 *    x is the forward's FP8 copy (1x128), dequantised and quantised again 128x1 in the
 *    backward, as DeepSeek-V3 caches the inputs of linear layers in FP8: the backward
 *    reads the E4M3 values and their scales, not the f32 x, for this product (the
 *    reshapes of x that it read before are dropped when nothing else reads them);
 *  - each QUANT_FP8 takes the scope and phase of the product it serves, so the partition
 *    places it with it; a value quantised the same way twice is quantised once (a weight
 *    once per phase).
 *  - the products' outputs keep their values, dtypes and shapes: only the op changes, so
 *    the graph's outputs (loss, gradients) are the same values.
 * Kept in their precision (by structure, no model is named): products that read no
 * parameter (the attention core's, if written as matmuls), the output head and the MoE
 * router (a linear whose product reaches a CROSS_ENTROPY or a TOPK through at most a
 * few elementwise and shape ops: logits and routing scores), and every other op
 * (embedding, norms, attention, softmax, gating, losses).  A weight read by a kept
 * product is kept everywhere.
 *
 * The quantised ops have no gradient of their own: autodiff ran before this pass, on the
 * unquantised graph, so the backward is the straight-through one (the quantisation is
 * the identity for the gradient) and its products are quantised in turn.
 *
 * With expert parallelism (expert_parallel ran before), the rows that dispatch sends to
 * the experts' ranks go in FP8 with their scales: the token rows are quantised (1x128)
 * before the ALL_TO_ALLV, the E4M3 values and the [rows, K/128] scales each sent and
 * regrouped, and the exchange of the rows in their own dtype is dropped (the weight
 * gradient reads the received FP8 copy too).  The combine, and the backward's
 * exchanges, stay in the activations' dtype.
 *
 * The bf16 pass ran before (at precision fp8 as at bf16): the activations between the
 * products are bf16, as the recipe has them, and a product reads its weight through a
 * bf16 cast of the f32 PARAM.  This pass finds the PARAM behind the cast and quantises
 * the f32 master weight (one rounding, not f32 -> bf16 -> E4M3); the casts, read by
 * nothing then, are dropped.  A weight gradient that the bf16 pass had written bf16 and
 * widened writes f32 at once (widen_wgrad).
 *
 * Not done here, on purpose or not yet: a forward value that other backward ops read
 * too is still saved in its dtype besides its FP8 copy; the AdamW moments are the
 * engine's (bf16 at precision fp8, as the recipe keeps them); master weights and
 * gradients stay f32, as the recipe wants.
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

#define FP8_TILE 128

/* how an operand is tiled: along rows x cols of its stored last two dims */
enum tiling { T_ROW, T_COL, T_BLOCK, N_TILINGS }; /* 1x128, 128x1, 128x128 */

/* an FP8 copy: the values and their scales, and the phase that made them */
struct qpair {
	struct ir_value *q, *s;
	enum ir_phase phase;
};

struct fp8_state {
	struct ir_graph *g;
	struct ir_op **order;
	int n_order;
	/* per value id and tiling: its FP8 copy, or q NULL */
	struct qpair *quant;
	/* per value id: its forward FP8 copy quantised again in 128x1 tiles, or q NULL */
	struct qpair *requant;
	int n_vals;
	/* per value id of a weight: 1 quantised, -1 kept */
	signed char *weight;
	/* per op id: the weight whose gradient the op computes, or NULL */
	struct ir_value **wgrad_of;
};

static struct ir_value *mk(struct fp8_state *s, const struct ir_op *like, enum ir_opkind k,
			   int n_in, struct ir_value **in, enum ir_dtype t, struct ir_shape sh)
{
	ir_graph_set_context(s->g, like->loc, like->scope);
	struct ir_value *v = ir_op1(s->g, k, n_in, in, t, sh);
	v->def->phase = like->phase;
	v->def->stage = -1;
	s->order[s->n_order++] = v->def;
	return v;
}

/* The trainable f32 PARAM of rank `rank` that a product reads as w: w itself, or the
 * PARAM behind the bf16 pass's cast (the f32 master weight, which is what gets
 * quantised: one rounding, not two); else NULL. */
static struct ir_value *weight_of(const struct ir_value *w, int rank)
{
	if (w->def && w->def->kind == IR_OP_CAST && w->dtype == IR_BF16)
		w = w->def->in[0];
	const struct ir_op *p = w->def;
	return p && p->kind == IR_OP_PARAM && w->shape.rank == rank && w->dtype == IR_F32 &&
	       ir_op_int(p, "trainable", 1) != 0 ? p->out[0] : NULL;
}

static struct qpair quantise(struct fp8_state *s, const struct ir_op *like,
			     struct ir_value *x, enum tiling t);

/* The ALL_TO_ALLV over "ep" that brought rows v to this rank (through EP_REGROUP), for
 * float rows [C, K]; else NULL. */
static const struct ir_op *dispatch_of(const struct ir_value *v)
{
	const struct ir_op *rg = v->def, *a2a;
	if (!rg || rg->kind != IR_OP_EP_REGROUP || ir_op_int(rg, "inverse", 0) ||
	    !(a2a = rg->in[0]->def) || a2a->kind != IR_OP_ALL_TO_ALLV ||
	    strcmp(ir_op_str(a2a, "group", ""), "ep") || a2a->in[0]->shape.rank != 2 ||
	    v->shape.rank != 2 || (v->dtype != IR_F32 && v->dtype != IR_BF16))
		return NULL;
	return a2a;
}

/* Rows that EP dispatch brought to this rank (EP_REGROUP of an ALL_TO_ALLV over "ep"
 * of token rows x): quantised in 1x128 tiles, a tile is part of one row, so x is
 * quantised where it is and its E4M3 rows travel with their scales (a second
 * ALL_TO_ALLV and EP_REGROUP of [rows, K/128]), the same bits as quantising on arrival.
 * NULL q when v is not such rows. */
static struct qpair quantise_dispatched(struct fp8_state *s, const struct ir_op *like,
					struct ir_value *v)
{
	struct qpair none = { NULL, NULL, like->phase };
	const struct ir_op *rg = v->def, *a2a = dispatch_of(v);
	if (!a2a)
		return none;
	struct qpair t = quantise(s, a2a, a2a->in[0], T_ROW);
	struct qpair r = { NULL, NULL, a2a->phase };
	for (int i = 0; i < 2; i++) {
		struct ir_value *src = i ? t.s : t.q;
		struct ir_shape sh = src->shape;
		sh.dim[0] = a2a->out[0]->shape.dim[0];
		struct ir_value *in[3] = { src, a2a->in[1], a2a->in[2] };
		struct ir_value *moved = mk(s, a2a, IR_OP_ALL_TO_ALLV, 3, in, src->dtype, sh);
		ir_op_set_str(s->g, moved->def, "group", "ep");
		struct ir_value *in2[2] = { moved, rg->in[1] };
		struct ir_value *y = mk(s, rg, IR_OP_EP_REGROUP, 2, in2, src->dtype, sh);
		ir_op_set_int(s->g, y->def, "inverse", 0);
		*(i ? &r.s : &r.q) = y;
	}
	return r;
}

static struct qpair quantise(struct fp8_state *s, const struct ir_op *like,
			     struct ir_value *x, enum tiling t)
{
	/* values made by this pass are quantised once each, not looked up */
	struct qpair none = { NULL, NULL, like->phase };
	struct qpair *slot = x->id < s->n_vals ? &s->quant[x->id * N_TILINGS + t] : &none;
	/* a weight's copy is made again in each phase that reads it, so that it is not
	 * kept from the forward to the backward (the copies of every layer at once would
	 * take a byte per parameter; quantising is exact to repeat) */
	if (slot->q && (t != T_BLOCK || slot->phase == like->phase))
		return *slot;
	if (t == T_ROW) {
		struct qpair d = quantise_dispatched(s, like, x);
		if (d.q)
			return *slot = d;
	}
	int64_t tr = t == T_ROW ? 1 : FP8_TILE, tc = t == T_COL ? 1 : FP8_TILE;
	ir_graph_set_context(s->g, like->loc, like->scope);
	struct ir_op *q = ir_op_new(s->g, IR_OP_QUANT_FP8, 1, &x, 2);
	ir_op_set_int(s->g, q, "tile_r", tr);
	ir_op_set_int(s->g, q, "tile_c", tc);
	q->phase = like->phase;
	q->stage = -1;
	q->out[0]->dtype = IR_F8E4M3;
	q->out[0]->shape = x->shape;
	struct ir_shape ss = x->shape;
	ss.dim[ss.rank - 2] = (ss.dim[ss.rank - 2] + tr - 1) / tr;
	ss.dim[ss.rank - 1] = (ss.dim[ss.rank - 1] + tc - 1) / tc;
	q->out[1]->dtype = IR_F32;
	q->out[1]->shape = ss;
	s->order[s->n_order++] = q;
	struct qpair r = { q->out[0], q->out[1], like->phase };
	return *slot = r;
}

/* The weight gradient's activation operand x (or x reshaped to rows, as autodiff
 * flattens a batch): when the forward quantised x in 1x128 tiles, that FP8 copy is what
 * the backward reads, dequantised and quantised again in 128x1 tiles (DeepSeek-V3
 * caches the linear layers' inputs in FP8 so); the forward's f32 x is then not saved
 * for this product.  Else x itself, quantised 128x1. */
static struct qpair quantise_saved(struct fp8_state *s, const struct ir_op *like,
				   struct ir_value *xa)
{
	struct ir_value *x = xa;
	if (x->def && x->def->kind == IR_OP_RESHAPE && x->def->phase != IR_PHASE_FWD)
		x = x->def->in[0];
	struct qpair fq = { NULL, NULL, like->phase };
	if (x->id < s->n_vals) {
		fq = s->quant[x->id * N_TILINGS + T_ROW];
		if (!fq.q) /* rows that dispatch brings: their FP8 copy travels instead */
			fq = quantise_dispatched(s, like, x);
		if (fq.q)
			s->quant[x->id * N_TILINGS + T_ROW] = fq;
	}
	if (!fq.q || (x->dtype != IR_F32 && x->dtype != IR_BF16) || x->shape.rank < 2)
		return quantise(s, like, xa, T_COL);
	struct qpair *slot = &s->requant[x->id];
	if (!slot->q) {
		/* dequantised in f32 whatever x's dtype: the 128x1 tiles quantise the FP8
		 * copy's values, not a bf16 rounding of them */
		struct ir_value *in[2] = { fq.q, fq.s };
		struct ir_value *d = mk(s, like, IR_OP_DEQUANT_FP8, 2, in, IR_F32, x->shape);
		ir_op_set_int(s->g, d->def, "tile_r", 1);
		ir_op_set_int(s->g, d->def, "tile_c", FP8_TILE);
		if (!ir_shape_eq(&d->shape, &xa->shape))
			d = mk(s, like, IR_OP_RESHAPE, 1, &d, IR_F32, xa->shape);
		*slot = quantise(s, like, d, T_COL);
	}
	return *slot;
}

/* op becomes its scaled kind, reading the quantised operands (a tiled ta, b tiled tb) */
static void make_scaled(struct fp8_state *s, struct ir_op *op, enum tiling ta, enum tiling tb)
{
	struct qpair qa = ta == T_COL ? quantise_saved(s, op, op->in[0])
				      : quantise(s, op, op->in[0], ta);
	/* the gradient rows that dispatch brings to the down-projection's weight gradient:
	 * their FP8 copy, as the activations' (DeepSeek-V3 sends them in FP8 alike) */
	struct ir_value *b = op->in[1], *w = weight_of(b, b->shape.rank);
	struct qpair qb = tb == T_COL && dispatch_of(b) ? quantise_saved(s, op, b)
			  : quantise(s, op, tb == T_BLOCK && w ? w : b, tb);
	int grouped = op->kind != IR_OP_MATMUL;
	int n = grouped ? 5 : 4;
	struct ir_value **in = ir_alloc(s->g->arena, sizeof *in * (size_t)n);
	in[0] = qa.q;
	in[1] = qb.q;
	if (grouped)
		in[2] = op->in[2];
	in[n - 2] = qa.s;
	in[n - 1] = qb.s;
	op->in = in;
	op->n_in = n;
	op->kind = op->kind == IR_OP_MATMUL ? IR_OP_SCALED_MATMUL
		   : op->kind == IR_OP_GROUPED_MATMUL ? IR_OP_SCALED_GROUPED_MATMUL
		   : IR_OP_SCALED_GROUPED_MATMUL_WGRAD;
	int64_t t[2][2];
	enum tiling ts[2] = { ta, tb };
	for (int i = 0; i < 2; i++) {
		t[i][0] = ts[i] == T_ROW ? 1 : FP8_TILE;
		t[i][1] = ts[i] == T_COL ? 1 : FP8_TILE;
	}
	ir_op_set_ints(s->g, op, "a_tile", 2, t[0]);
	ir_op_set_ints(s->g, op, "b_tile", 2, t[1]);
}

/* A weight gradient product that writes bf16 (the bf16 pass's rule, before this pass)
 * read only by its widening cast to f32: it writes f32 at once instead (its scaled form
 * accumulates in f32, the recipe's weight gradients are f32), and the cast's readers
 * read it (drop_dead drops the cast). */
static void widen_wgrad(struct fp8_state *s, struct ir_op *op)
{
	struct ir_value *y = op->out[0];
	struct ir_op *cast = NULL;
	if (y->dtype != IR_BF16)
		return;
	for (int o = 0; o < s->g->n_outputs; o++)
		if (s->g->outputs[o] == y)
			return;
	for (int i = 0; i < s->n_order; i++)
		for (int j = 0; j < s->order[i]->n_in; j++)
			if (s->order[i]->in[j] == y) {
				if (cast || s->order[i]->kind != IR_OP_CAST ||
				    s->order[i]->out[0]->dtype != IR_F32)
					return;
				cast = s->order[i];
			}
	if (!cast)
		return;
	y->dtype = IR_F32;
	struct ir_value *c = cast->out[0];
	for (int i = 0; i < s->n_order; i++)
		for (int j = 0; j < s->order[i]->n_in; j++)
			if (s->order[i]->in[j] == c)
				s->order[i]->in[j] = y;
	for (int o = 0; o < s->g->n_outputs; o++)
		if (s->g->outputs[o] == c)
			s->g->outputs[o] = y;
}

/* uses: per value id, the ops that read it (a CSR list) */
struct uses {
	int *start, *ops;
};

static void uses_build(const struct ir_graph *g, struct uses *u)
{
	u->start = rt_calloc((size_t)g->n_values + 2, sizeof *u->start);
	int n = 0;
	for (int i = 0; i < g->n_ops; i++)
		for (int j = 0; j < g->ops[i]->n_in; j++, n++)
			u->start[g->ops[i]->in[j]->id + 1]++;
	for (int v = 0; v < g->n_values; v++)
		u->start[v + 1] += u->start[v];
	u->ops = rt_malloc(sizeof *u->ops * (size_t)(n + 1));
	int *fill = rt_calloc((size_t)g->n_values + 1, sizeof *fill);
	for (int i = 0; i < g->n_ops; i++)
		for (int j = 0; j < g->ops[i]->n_in; j++) {
			int v = g->ops[i]->in[j]->id;
			u->ops[u->start[v] + fill[v]++] = i;
		}
	free(fill);
}

/* Does forward value v reach a CROSS_ENTROPY or a TOPK within `depth` ops that keep
 * its meaning (shape changes, elementwise maps, softmax, a bias added)?  Logits and
 * routing scores do; a layer's output does not (a norm, a product or an attention comes
 * first). */
static int reaches_head_or_router(const struct ir_graph *g, const struct uses *u,
				  const struct ir_value *v, int depth)
{
	for (int k = u->start[v->id]; k < u->start[v->id + 1]; k++) {
		const struct ir_op *op = g->ops[u->ops[k]];
		if (op->phase != IR_PHASE_FWD)
			continue;
		switch (op->kind) {
		case IR_OP_CROSS_ENTROPY: case IR_OP_TOPK:
			return 1;
		case IR_OP_RESHAPE: case IR_OP_SIGMOID: case IR_OP_SOFTMAX: case IR_OP_STOP_GRAD:
		case IR_OP_SCALE: case IR_OP_CAST: case IR_OP_TANH: case IR_OP_ADD:
		case IR_OP_TRANSPOSE: case IR_OP_SLICE:
			if (depth > 0 && reaches_head_or_router(g, u, op->out[0], depth - 1))
				return 1;
			break;
		default:
			break;
		}
	}
	return 0;
}

/* the product(s) whose result flows into gradient value v of weight w */
static void mark_wgrad(struct fp8_state *s, struct ir_value *v, struct ir_value *w, int depth)
{
	struct ir_op *d = v->def;
	if (!d || depth > 64)
		return;
	switch (d->kind) {
	case IR_OP_MATMUL: case IR_OP_GROUPED_MATMUL_WGRAD:
		if (d->phase != IR_PHASE_FWD)
			s->wgrad_of[d->id] = w;
		return;
	case IR_OP_ADD:
		mark_wgrad(s, d->in[0], w, depth + 1);
		mark_wgrad(s, d->in[1], w, depth + 1);
		return;
	case IR_OP_RESHAPE: case IR_OP_CAST: case IR_OP_SUM_TO:
		mark_wgrad(s, d->in[0], w, depth + 1);
		return;
	default:
		return;
	}
}

/* The weights of linear and expert layers (weight[id] = 1) and those kept in their
 * precision (-1), from the forward products that read them. */
static void classify(const struct ir_graph *g, const struct uses *u, signed char *weight)
{
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		struct ir_value *w = NULL;
		if (op->kind == IR_OP_MATMUL && !ir_op_int(op, "trans_a", 0) &&
		    !ir_op_int(op, "trans_b", 0))
			w = weight_of(op->in[1], 2);
		else if (op->kind == IR_OP_GROUPED_MATMUL && !ir_op_int(op, "trans_b", 0))
			w = weight_of(op->in[1], 3);
		if (!w)
			continue;
		int keep = op->in[0]->dtype != IR_F32 && op->in[0]->dtype != IR_BF16;
		keep |= reaches_head_or_router(g, u, op->out[0], 6);
		if (keep)
			weight[w->id] = -1;
		else if (!weight[w->id])
			weight[w->id] = 1;
	}
}

void pass_fp8_products(const struct ir_graph *g, unsigned char *fp8)
{
	memset(fp8, 0, (size_t)g->n_values);
	signed char *weight = rt_calloc((size_t)g->n_values + 1, 1);
	struct uses u;
	uses_build(g, &u);
	classify(g, &u, weight);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		const struct ir_value *w = op->n_in > 1 ? weight_of(op->in[1], op->in[1]->shape.rank)
							: NULL;
		if (op->kind == IR_OP_SCALED_MATMUL || op->kind == IR_OP_SCALED_GROUPED_MATMUL)
			fp8[op->out[0]->id] = 1; /* quantised already */
		else if ((op->kind == IR_OP_MATMUL || op->kind == IR_OP_GROUPED_MATMUL) && w &&
			 weight[w->id] == 1 && !ir_op_int(op, "trans_b", 0) &&
			 !ir_op_int(op, "trans_a", 0))
			fp8[op->out[0]->id] = 1;
	}
	free(u.start);
	free(u.ops);
	free(weight);
}

/* Drop the backward's shape ops and casts that no op reads any more (the reshape of x
 * that the weight gradient read before it read the FP8 copy; the bf16 casts of the
 * quantised weights, whose products now read the f32 PARAM's FP8 copy), so that the forward
 * values they read are not kept for the backward, and the dispatch exchanges of rows
 * that now travel in FP8 (every rank drops the same ones: the pass runs alike on
 * each). */
static void drop_dead(const struct ir_graph *g, struct ir_op **order, int *n)
{
	int *uses = rt_calloc((size_t)g->n_values + 1, sizeof *uses);
	for (int i = 0; i < *n; i++)
		for (int j = 0; j < order[i]->n_in; j++)
			uses[order[i]->in[j]->id]++;
	for (int o = 0; o < g->n_outputs; o++)
		uses[g->outputs[o]->id]++;
	int k = *n;
	for (int i = *n - 1; i >= 0; i--) {
		struct ir_op *op = order[i];
		int dead = op->n_out == 1 && !uses[op->out[0]->id] &&
			   (((op->kind == IR_OP_RESHAPE || op->kind == IR_OP_TRANSPOSE ||
			      op->kind == IR_OP_CAST) && op->phase != IR_PHASE_FWD) ||
			    (op->kind == IR_OP_CAST && op->in[0]->def &&
			     op->in[0]->def->kind == IR_OP_PARAM) ||
			    op->kind == IR_OP_EP_REGROUP || op->kind == IR_OP_ALL_TO_ALLV);
		if (dead) {
			for (int j = 0; j < op->n_in; j++)
				uses[op->in[j]->id]--;
			order[i] = NULL;
		}
	}
	k = 0;
	for (int i = 0; i < *n; i++)
		if (order[i])
			order[k++] = order[i];
	*n = k;
	free(uses);
}

static int already_fp8(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_ops; i++) {
		enum ir_opkind k = g->ops[i]->kind;
		if (k == IR_OP_SCALED_MATMUL || k == IR_OP_SCALED_GROUPED_MATMUL ||
		    k == IR_OP_SCALED_GROUPED_MATMUL_WGRAD || k == IR_OP_QUANT_FP8)
			return 1;
	}
	return 0;
}

int pass_fp8(struct ir_graph *g, FILE *err)
{
	(void)err;
	const struct ir_setting *prec = ir_graph_setting(g, "precision");
	if (!prec || !prec->is_str || strcmp(prec->str, "fp8") || already_fp8(g))
		return 0;
	struct fp8_state s = { .g = g };
	int n_old = g->n_ops, max_id = 0;
	for (int i = 0; i < n_old; i++)
		max_id = g->ops[i]->id > max_id ? g->ops[i]->id : max_id;
	struct ir_op **old = rt_malloc(sizeof *old * (size_t)(n_old + 1));
	memcpy(old, g->ops, sizeof *old * (size_t)n_old);
	/* at most two quantisations per op, each one new value pair */
	s.n_vals = g->n_values + 1;
	s.quant = rt_calloc((size_t)s.n_vals * N_TILINGS, sizeof *s.quant);
	s.requant = rt_calloc((size_t)s.n_vals, sizeof *s.requant);
	s.weight = rt_calloc((size_t)s.n_vals, 1);
	s.wgrad_of = rt_calloc((size_t)max_id + 1, sizeof *s.wgrad_of);
	s.order = rt_calloc((size_t)(6 * n_old) + 1, sizeof *s.order);
	struct uses u;
	uses_build(g, &u);

	classify(g, &u, s.weight);
	/* the weight-gradient products: what flows into grad.<path> of a quantised weight */
	for (int o = 0; o < g->n_outputs; o++) {
		const char *name = g->output_names[o];
		if (strncmp(name, "grad.", 5))
			continue;
		for (int i = 0; i < n_old; i++) {
			struct ir_op *op = old[i];
			if (op->kind == IR_OP_PARAM && op->path && !strcmp(op->path, name + 5) &&
			    s.weight[op->out[0]->id] == 1)
				mark_wgrad(&s, g->outputs[o], op->out[0], 0);
		}
	}

	for (int i = 0; i < n_old; i++) {
		struct ir_op *op = old[i];
		struct ir_value *w = op->n_in > 1 ? weight_of(op->in[1], op->in[1]->shape.rank)
						  : NULL;
		int quantised_w = w && w->id < s.n_vals && s.weight[w->id] == 1;
		if (op->kind == IR_OP_MATMUL && quantised_w && op->phase == IR_PHASE_FWD &&
		    !ir_op_int(op, "trans_a", 0) && !ir_op_int(op, "trans_b", 0)) {
			make_scaled(&s, op, T_ROW, T_BLOCK);            /* y = x W */
		} else if (op->kind == IR_OP_MATMUL && quantised_w && op->phase != IR_PHASE_FWD &&
			   !ir_op_int(op, "trans_a", 0) && ir_op_int(op, "trans_b", 0)) {
			make_scaled(&s, op, T_ROW, T_BLOCK);            /* dx = dy W^T */
		} else if (op->kind == IR_OP_MATMUL && s.wgrad_of[op->id] &&
			   ir_op_int(op, "trans_a", 0) && !ir_op_int(op, "trans_b", 0) &&
			   op->in[0]->shape.rank == 2 && op->in[1]->shape.rank == 2) {
			make_scaled(&s, op, T_COL, T_COL);              /* dW = x^T dy */
		} else if (op->kind == IR_OP_GROUPED_MATMUL && quantised_w &&
			   !ir_op_int(op, "trans_b", 0) == (op->phase == IR_PHASE_FWD)) {
			make_scaled(&s, op, T_ROW, T_BLOCK);            /* experts: y, dx */
		} else if (op->kind == IR_OP_GROUPED_MATMUL_WGRAD && s.wgrad_of[op->id] &&
			   !ir_op_int(op, "trans_b", 0)) {
			make_scaled(&s, op, T_COL, T_COL);              /* experts: dW */
		}
		s.order[s.n_order++] = op;
	}
	RT_ASSERT(s.n_order == g->n_ops);
	for (int i = 0; i < s.n_order; i++)
		if (s.order[i]->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD ||
		    (s.order[i]->kind == IR_OP_SCALED_MATMUL && s.wgrad_of[s.order[i]->id]))
			widen_wgrad(&s, s.order[i]);
	drop_dead(g, s.order, &s.n_order);
	memcpy(g->ops, s.order, sizeof *g->ops * (size_t)s.n_order);
	g->n_ops = s.n_order;
	free(u.start);
	free(u.ops);
	free(old);
	free(s.quant);
	free(s.requant);
	free(s.weight);
	free(s.wgrad_of);
	free(s.order);
	return 0;
}
