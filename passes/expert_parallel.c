/*
 * expert_parallel.c - MoE experts sharded over the expert-parallel group.
 *
 * Takes: a graph after autodiff, and the train setting `ep` (1: nothing to do).
 *
 * Guarantees afterwards, for every MOE_DISPATCH of E experts (El = E / ep per rank):
 *  - Dispatch: the rows it sorted by expert (xs, R = tokens x top_k rows) are sorted by
 *    the rank that holds their expert too, since rank q holds experts q*El .. q*El+El-1.
 *    EP_COUNTS gives the rows per (rank, expert) [ep, El]; an ALL_TO_ALL over "ep" tells
 *    every rank what it will receive; ALL_TO_ALLV sends the rows into a receive buffer
 *    of C rows; EP_REGROUP puts the received rows in expert order, and EP_OFFSETS gives
 *    the local experts' segments, which the grouped matmuls read in place of the global
 *    offsets.
 *  - Every op between the dispatch and the combine that works on expert rows (grouped
 *    matmuls, their weight gradients, the elementwise ops between them, forward and
 *    backward) now works on the C local rows; the expert weights become their local
 *    slice [El, ...] (attr ep_global_rows = E on the PARAM, so the program builder
 *    knows the global tensor and which rows this rank holds), and so do their casts
 *    (precision bf16 and fp8 read a bf16 cast of the f32 PARAM) and their gradients.
 *  - Combine: expert rows read by a token-side op (MOE_COMBINE, MOE_COMBINE_BWD_GATE,
 *    MOE_UNDISPATCH) go back through EP_REGROUP (inverse) and ALL_TO_ALLV the other way,
 *    landing where the dispatch took them from; token-order rows read by an expert-side
 *    op (the combine's input gradient) take the dispatch's way.
 *  - The receive buffer holds C rows, the setting ep_capacity times the rows of an
 *    even routing (tokens x top_k: what each rank receives when every expert gets its
 *    share), default 2, at most the most a rank can be sent, every token of every rank
 *    of the group choosing min(top_k, El) of this rank's experts: W = ep x tokens x
 *    min(top_k, El) (ep_capacity = worst asks for W).  A routing that sends some rank
 *    more than C rows is an overflow: the executor sees it when the counts are
 *    exchanged, on every rank of the group alike (runtime/exec.c), runs the rest of the
 *    step on no rows, and the engine runs the step again on programs built with twice
 *    the capacity (runtime/engine.c, tools/train.c).  No token is dropped.
 *
 * Leaves alone: the router, the loads and balance losses (they are per token, before
 * the dispatch), the shared experts, everything outside MoE layers; stages (the new
 * ops take their scope and phase from the op they serve, and the partition places them
 * by scope).  A graph that has its exchanges already is left as is.
 */
#include "passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

/* an expert weight as a grouped product reads it: its PARAM [E, ...], or a cast of it
 * (the bf16 pass casts the f32 master weight each step) */
static struct ir_value *expert_param(struct ir_value *v)
{
	const struct ir_op *d = v->def;
	if (d && d->kind == IR_OP_CAST && d->in[0]->def && d->in[0]->def->kind == IR_OP_PARAM)
		v = d->in[0];
	return v;
}

static int expert_weight(struct ir_value *v)
{
	struct ir_value *p = expert_param(v);
	return p->def && p->def->kind == IR_OP_PARAM && v->shape.rank >= 1;
}

struct ep_layer {
	struct ir_value *xs, *off, *loff, *sc, *rc;
	int64_t rows, cap, experts, local;
};

/* value id -> its local (expert-row) version, per layer; -1 none */
struct ep_state {
	struct ir_graph *g;
	int ep;
	struct ir_value **local;      /* per value id: its version on the local rows */
	struct ir_value **token;      /* per value id (a local value): back in token order */
	int *layer_of;                /* per value id: the layer whose local rows it is on */
	struct ep_layer *layers;
	int n_layers;
	struct ir_op **order;         /* the new op list */
	int n_order;
	int cap_vals;                 /* the maps' size */
};

static void push(struct ep_state *s, struct ir_op *op)
{
	s->order[s->n_order++] = op;
}

static struct ir_value *mk(struct ep_state *s, const struct ir_op *like, enum ir_opkind k,
			   int n_in, struct ir_value **in, enum ir_dtype t, struct ir_shape sh)
{
	ir_graph_set_context(s->g, like->loc, like->scope);
	struct ir_value *v = ir_op1(s->g, k, n_in, in, t, sh);
	v->def->phase = like->phase;
	v->def->stage = -1;
	RT_ASSERT(v->id < s->cap_vals);
	push(s, v->def);
	return v;
}

/* rows in token order (R) to this layer's local rows (C): the dispatch's way */
static struct ir_value *to_local(struct ep_state *s, const struct ir_op *like, int li,
				 struct ir_value *v)
{
	struct ep_layer *L = &s->layers[li];
	struct ir_shape sh = v->shape;
	sh.dim[0] = L->cap;
	struct ir_value *in[3] = { v, L->sc, L->rc };
	struct ir_value *r = mk(s, like, IR_OP_ALL_TO_ALLV, 3, in, v->dtype, sh);
	ir_op_set_str(s->g, r->def, "group", "ep");
	struct ir_value *in2[2] = { r, L->rc };
	struct ir_value *y = mk(s, like, IR_OP_EP_REGROUP, 2, in2, v->dtype, sh);
	ir_op_set_int(s->g, y->def, "inverse", 0);
	return y;
}

/* local rows back to token order: the combine's way */
static struct ir_value *to_token(struct ep_state *s, const struct ir_op *like, int li,
				 struct ir_value *v)
{
	struct ep_layer *L = &s->layers[li];
	struct ir_value *in[2] = { v, L->rc };
	struct ir_value *r = mk(s, like, IR_OP_EP_REGROUP, 2, in, v->dtype, v->shape);
	ir_op_set_int(s->g, r->def, "inverse", 1);
	struct ir_shape sh = v->shape;
	sh.dim[0] = L->rows;
	struct ir_value *in2[3] = { r, L->rc, L->sc };
	struct ir_value *y = mk(s, like, IR_OP_ALL_TO_ALLV, 3, in2, v->dtype, sh);
	ir_op_set_str(s->g, y->def, "group", "ep");
	return y;
}

static int is_token_consumer(enum ir_opkind k)
{
	return k == IR_OP_MOE_COMBINE || k == IR_OP_MOE_COMBINE_BWD_GATE ||
	       k == IR_OP_MOE_UNDISPATCH;
}

static int already_parallel(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == IR_OP_ALL_TO_ALLV)
			return 1;
	return 0;
}

double pass_ep_capacity(const struct ir_graph *g)
{
	const struct ir_setting *cs = ir_graph_setting(g, "ep_capacity");
	return !cs ? PASS_EP_CAPACITY : cs->is_str ? 0.0 : cs->num;
}

int pass_expert_parallel(struct ir_graph *g, FILE *err)
{
	const struct ir_setting *st = ir_graph_setting(g, "ep");
	int ep = st && !st->is_str ? (int)st->num : 1;
	if (ep <= 1 || already_parallel(g))
		return 0;
	/* the receive capacity, in even shares; 0: the worst case */
	double factor = pass_ep_capacity(g);
	int n_dispatch = 0;
	for (int i = 0; i < g->n_ops; i++)
		n_dispatch += g->ops[i]->kind == IR_OP_MOE_DISPATCH;
	if (!n_dispatch) {
		if (err)
			fprintf(err, "error: ep = %d but the model has no experts\n", ep);
		return 1;
	}
	int n_old = g->n_ops;
	struct ir_op **old = rt_malloc(sizeof *old * (size_t)n_old);
	memcpy(old, g->ops, sizeof *old * (size_t)n_old);
	/* each dispatch adds 5 ops; each conversion 2, at most one per value and layer */
	int cap_vals = g->n_values + 8 * n_dispatch + 4 * n_old + 16;
	struct ep_state s = { .g = g, .ep = ep, .cap_vals = cap_vals };
	s.local = rt_calloc((size_t)cap_vals, sizeof *s.local);
	s.token = rt_calloc((size_t)cap_vals, sizeof *s.token);
	s.layer_of = rt_calloc((size_t)cap_vals, sizeof *s.layer_of);
	s.layers = rt_calloc((size_t)n_dispatch, sizeof *s.layers);
	s.order = rt_calloc((size_t)(n_old + 5 * n_dispatch + 4 * n_old) + 1, sizeof *s.order);
	int rc = 1;
	for (int i = 0; i < cap_vals; i++)
		s.layer_of[i] = -1;
	for (int i = 0; i < n_old; i++) {
		struct ir_op *op = old[i];
		if (op->kind == IR_OP_MOE_DISPATCH) {
			push(&s, op);
			struct ep_layer *L = &s.layers[s.n_layers];
			L->xs = op->out[0];
			L->off = op->out[1];
			L->experts = ir_op_int(op, "experts", 0);
			if (L->experts <= 0 || L->experts % ep) {
				if (err)
					fprintf(err, "error: %lld experts are not divisible by ep = %d\n",
						(long long)L->experts, ep);
				goto done;
			}
			L->local = L->experts / ep;
			int64_t tokens = op->in[0]->shape.dim[0], k = op->in[1]->shape.dim[1];
			L->rows = L->xs->shape.dim[0];
			L->cap = (int64_t)ep * tokens * (k < L->local ? k : L->local);
			double even = (double)tokens * (double)k;
			if (factor > 0 && ceil(factor * even) < (double)L->cap)
				L->cap = (int64_t)ceil(factor * even);
			struct ir_value *in[1] = { L->off };
			L->sc = mk(&s, op, IR_OP_EP_COUNTS, 1, in, IR_I32,
				   ir_shape_of(2, (int64_t)ep, L->local));
			ir_op_set_int(g, L->sc->def, "ranks", ep);
			in[0] = L->sc;
			L->rc = mk(&s, op, IR_OP_ALL_TO_ALL, 1, in, IR_I32, L->sc->shape);
			ir_op_set_str(g, L->rc->def, "group", "ep");
			in[0] = L->rc;
			L->loff = mk(&s, op, IR_OP_EP_OFFSETS, 1, in, IR_I32,
				     ir_shape_of(1, L->local + 1));
			struct ir_value *xe = to_local(&s, op, s.n_layers, L->xs);
			s.local[L->xs->id] = xe;
			s.layer_of[xe->id] = s.n_layers;
			s.n_layers++;
			continue;
		}
		/* does it read local rows, or a layer's offsets? */
		int li = -1;
		for (int k = 0; k < op->n_in && li < 0; k++) {
			const struct ir_value *v = op->in[k];
			if (s.local[v->id])
				li = s.layer_of[s.local[v->id]->id];
			else if (s.layer_of[v->id] >= 0)
				li = s.layer_of[v->id];
			for (int l = 0; l < s.n_layers && li < 0; l++)
				if (v == s.layers[l].off)
					li = l;
		}
		if (li < 0) {
			push(&s, op);
			continue;
		}
		struct ep_layer *L = &s.layers[li];
		if (is_token_consumer(op->kind)) {
			for (int k = 0; k < op->n_in; k++) {
				struct ir_value *v = op->in[k];
				struct ir_value *lv = s.local[v->id] ? s.local[v->id]
					: s.layer_of[v->id] >= 0 ? v : NULL;
				if (!lv)
					continue;
				if (!s.token[lv->id])
					s.token[lv->id] = to_token(&s, op, li, lv);
				op->in[k] = s.token[lv->id];
			}
			push(&s, op);
			continue;
		}
		/* an expert-side op: on the local rows, with the local offsets and weights */
		for (int k = 0; k < op->n_in; k++) {
			struct ir_value *v = op->in[k];
			if (v == L->off) {
				op->in[k] = L->loff;
			} else if (s.local[v->id]) {
				op->in[k] = s.local[v->id];
			} else if (s.layer_of[v->id] >= 0) {
				/* local already */
			} else if (expert_weight(v) &&
				   (v->shape.dim[0] == L->experts ||
				    ir_op_attr(expert_param(v)->def, "ep_global_rows")) &&
				   (op->kind == IR_OP_GROUPED_MATMUL ||
				    op->kind == IR_OP_GROUPED_MATMUL_WGRAD)) {
				/* the PARAM, or its cast (precision bf16): both become the slice */
				struct ir_value *p = expert_param(v);
				if (!ir_op_attr(p->def, "ep_global_rows")) {
					ir_op_set_int(g, p->def, "ep_global_rows", L->experts);
					p->shape.dim[0] = L->local;
				}
				v->shape.dim[0] = L->local;
			} else if (v->def && v->def->kind != IR_OP_PARAM &&
				   v->def->kind != IR_OP_CONST && v->shape.rank >= 1 &&
				   v->shape.dim[0] == L->rows && ir_dtype_is_float(v->dtype)) {
				/* token-order rows into the experts: the dispatch's way */
				if (!s.local[v->id]) {
					s.local[v->id] = to_local(&s, op, li, v);
					s.layer_of[s.local[v->id]->id] = li;
				}
				op->in[k] = s.local[v->id];
			} else if (v->shape.rank >= 1 && v->shape.dim[0] == L->rows) {
				if (err)
					fprintf(err, "error: expert parallelism: %s reads %%%d, rows of "
						"the experts that the pass cannot move\n",
						ir_op_name(op->kind), v->id);
				goto done;
			}
		}
		/* outputs: the rows are now the C local ones, the experts the El local ones
		 * (a weight gradient, or a sum of them) */
		for (int o = 0; o < op->n_out; o++) {
			struct ir_value *v = op->out[o];
			if (v->shape.rank < 1)
				continue;
			if (op->kind == IR_OP_GROUPED_MATMUL_WGRAD || v->shape.dim[0] == L->experts)
				v->shape.dim[0] = L->local;
			else if (v->shape.dim[0] == L->rows)
				v->shape.dim[0] = L->cap;
			s.layer_of[v->id] = li;
		}
		push(&s, op);
	}
	RT_ASSERT(s.n_order == g->n_ops);
	memcpy(g->ops, s.order, sizeof *g->ops * (size_t)g->n_ops);
	rc = 0;
done:
	free(old);
	free(s.local);
	free(s.token);
	free(s.layer_of);
	free(s.layers);
	free(s.order);
	return rc;
}
