/*
 * bf16.c - mixed-precision training in bf16 (the train setting precision = bf16), as
 * it is done in practice (Megatron-LM's bf16 training, the BF16 baseline DeepSeek-V3
 * measures FP8 against): the matrix products read bf16 operands and accumulate in f32,
 * the activations between products are bf16, and what decides the stability of
 * training stays f32.
 *
 * Takes: a forward graph (the pass runs before autodiff).  Runs at precision bf16 and
 * at fp8, whose products passes/fp8.c then quantises (from these bf16 activations and
 * the f32 master weights behind the casts); with another precision it does nothing.
 *
 * The rules, by op kind and graph structure alone (no per-model code):
 *  1. Products: MATMUL, GROUPED_MATMUL and ATTENTION (q, k, v) read bf16 operands; an
 *     f32 operand is cast, once per value and layer (one cast of a normed input serves
 *     the q, k and v projections).  A weight is cast each step from its f32 PARAM,
 *     the master weight; parameters, their gradients and the optimizer's states stay
 *     f32.  Accumulation is f32 (MATMUL's contract in ir.h).
 *  2. Product outputs: ATTENTION's out and GROUPED_MATMUL's rows are bf16 (the CUDA
 *     backend's library kernels take one storage type per call); lse is f32 (ir.h).
 *     A MATMUL's output is bf16 when only ops that compute in bf16 read it (an
 *     operand of a product, an op of rule 4 whose inputs are all bf16: the SwiGLU
 *     hidden, q and k before rope); when some reader reads it as f32 (a residual add,
 *     a norm, the cross entropy of the logits) the product writes its f32 accumulator
 *     (cuBLASLt's bf16-in, f32-out GEMM), unrounded, and readers in bf16 get a cast.
 *     Repeated until nothing changes: a projection that starts a residual stream (the
 *     MTP module's) is read by a norm, so it is f32, so is the add that joins the
 *     attention's output to it, and so that output projection writes f32 too.
 *  3. F32 ops: every op not named in rules 1 and 4 computes in f32 and reads its
 *     float inputs as f32 (a bf16 input is widened by a cast): the norms' statistics
 *     (square, reduce_mean, rsqrt), exp, log, sigmoid, tanh, sqrt, recip, div,
 *     softmax, the cross entropy (the logits' log-sum-exp and the loss), the
 *     reductions, top-k and every op this list does not know.
 *  4. Dtype-following ops, which round nothing that matters (PyTorch autocast's
 *     "promote"): neg, scale, add, sub, mul, silu, relu, rope, reshape, transpose,
 *     broadcast, slice, concat, stop_grad, gather_rows, take_along, put_along,
 *     moe_dispatch (its rows) and moe_combine (its rows; the gates are read as they
 *     are), and expert_parallel's all_to_allv and ep_regroup (a graph read back) take
 *     the widest dtype of their float inputs: bf16 when all are bf16, else f32, a bf16
 *     input widened by a cast. The residual stream starts f32 (the embedding's rows of
 *     an f32 table) and so stays f32: every block joins it through an add. A MoE
 *     layer's expert and shared-expert outputs and their sum stay bf16 until that add
 *     (the combine moves bf16 rows, as V3's does).
 *  5. Routing: a MATMUL whose output reaches a TOPK through ops other than products
 *     (the router) runs wholly in f32, so the scores and the gates are f32 (Megatron's
 *     moe_router_dtype = fp32; the router is E columns wide, its cost negligible).
 *  6. Casts go up through data movement: when every reader of a reshape, a transpose
 *     or moe_dispatch's rows reads it as bf16 (product operands), the input is cast
 *     instead, so the rows move as bf16 (the dispatch, and after expert_parallel its
 *     all-to-alls, move half the bytes).
 *
 * The backward: autodiff differentiates the casts.  A cast's gradient is a cast back,
 * so every "grad.P" is f32 (the f32 widening of the bf16 weight's gradient); the
 * gradient of a bf16 activation is bf16 (autodiff keeps a gradient in its value's
 * dtype), its products again bf16 operands with f32 accumulation.  A weight gradient
 * product writes bf16 and is widened (Megatron without gradient-accumulation fusion):
 * writing it f32 at once would need autodiff to know, a possible refinement.
 *
 * Guarantees afterwards: the graph verifies; every product that is not a router reads
 * bf16 operands; PARAM, INPUT and CONST ops are untouched; new ops are CASTs, each
 * placed just before the first op that reads it, with that op's location and scope.
 * Running the pass again changes nothing (its analysis of its own output finds no
 * cast to add), so a graph read back from `sluice ir --after bf16` or later is left as
 * is; a graph with a backward but without these casts is refused (the precision must
 * be chosen before autodiff).
 *
 * With ep > 1, expert_parallel shards an expert weight's cast with its PARAM.
 *
 * On the CPU the executors hold bf16 values in f32 (LLVM) or double (reference)
 * buffers, rounded after every op: the bf16 graph trains emulated, with the numbers a
 * GPU gives up to the order of the f32 sums.
 */
#include "passes.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

enum role {
	ROLE_F32,     /* rule 3 */
	ROLE_FOLLOW,  /* rule 4 */
	ROLE_PRODUCT, /* rules 1, 2 (5: a router) */
	ROLE_AS_IS,   /* sources and explicit casts: their dtype is what it is */
};

static enum role role_of(enum ir_opkind k)
{
	switch (k) {
	case IR_OP_MATMUL: case IR_OP_GROUPED_MATMUL: case IR_OP_ATTENTION:
		return ROLE_PRODUCT;
	case IR_OP_NEG: case IR_OP_SCALE: case IR_OP_ADD: case IR_OP_SUB: case IR_OP_MUL:
	case IR_OP_SILU: case IR_OP_RELU: case IR_OP_ROPE: case IR_OP_RESHAPE:
	case IR_OP_TRANSPOSE: case IR_OP_BROADCAST: case IR_OP_SLICE: case IR_OP_CONCAT:
	case IR_OP_STOP_GRAD: case IR_OP_GATHER_ROWS: case IR_OP_TAKE_ALONG:
	case IR_OP_PUT_ALONG: case IR_OP_MOE_DISPATCH: case IR_OP_MOE_COMBINE:
	case IR_OP_ALL_TO_ALLV: case IR_OP_EP_REGROUP: /* expert_parallel's, read back */
		return ROLE_FOLLOW;
	case IR_OP_INPUT: case IR_OP_PARAM: case IR_OP_CONST: case IR_OP_CAST:
		return ROLE_AS_IS;
	default:
		return ROLE_F32;
	}
}

/* input i of op is a product's operand (not its expert offsets) */
static int is_operand(const struct ir_op *op, int i)
{
	return op->kind == IR_OP_ATTENTION ? i < 3 : i < 2;
}

/* input i of a rule-4 op sets its dtype (moe_combine's gates do not) */
static int is_data(const struct ir_op *op, int i)
{
	return ir_dtype_is_float(op->in[i]->dtype) && (op->kind != IR_OP_MOE_COMBINE || i == 0);
}

/* rule 6: ops that move rows without arithmetic, input 0 to output 0 */
static int is_mover(enum ir_opkind k)
{
	return k == IR_OP_RESHAPE || k == IR_OP_TRANSPOSE || k == IR_OP_MOE_DISPATCH;
}

/* views a MATMUL's f32 output may be read through (rule 2) */
static int is_view(enum ir_opkind k)
{
	return k == IR_OP_RESHAPE || k == IR_OP_TRANSPOSE;
}

struct use {
	int op, in; /* index into bf.ops, input index */
};

struct cast_entry {
	const char *key;     /* layer key of the reader's scope (first len chars) */
	size_t len;
	enum ir_dtype t;
	struct ir_value *v;  /* the cast */
	int next;            /* next entry of the same value, -1 */
};

struct bf {
	struct ir_graph *g;
	struct ir_op **ops;  /* the forward ops, in order */
	int n_ops, nv;
	int *use_start;      /* [nv + 1]: uses of value v are uses[use_start[v] ..] */
	struct use *uses;
	int *rd_start;       /* [n_ops + 1]: rd[rd_start[j] + i] is the dtype op j reads
			      * input i in */
	enum ir_dtype *rd;
	enum ir_dtype *dt;   /* [nv]: the dtype each value gets */
	unsigned char *is_out, *route, *wants_bf16, *f32use, *flip;
	struct cast_entry *casts;
	int n_casts, cap_casts;
	int *first_cast;     /* [nv]: first cast entry of a value, -1 */
};

static int is_router(const struct bf *b, const struct ir_op *op)
{
	return op->kind == IR_OP_MATMUL && b->route[op->out[0]->id];
}

/* --- the analysis ---------------------------------------------------------------------- */

static void index_uses(struct bf *b)
{
	b->use_start = rt_calloc((size_t)b->nv + 1, sizeof *b->use_start);
	b->rd_start = rt_calloc((size_t)b->n_ops + 1, sizeof *b->rd_start);
	for (int j = 0; j < b->n_ops; j++) {
		const struct ir_op *op = b->ops[j];
		b->rd_start[j + 1] = b->rd_start[j] + op->n_in;
		for (int i = 0; i < op->n_in; i++)
			b->use_start[op->in[i]->id + 1]++;
	}
	for (int v = 0; v < b->nv; v++)
		b->use_start[v + 1] += b->use_start[v];
	int *fill = rt_calloc((size_t)b->nv, sizeof *fill);
	b->uses = rt_calloc((size_t)b->use_start[b->nv] + 1, sizeof *b->uses);
	for (int j = 0; j < b->n_ops; j++)
		for (int i = 0; i < b->ops[j]->n_in; i++) {
			int v = b->ops[j]->in[i]->id;
			b->uses[b->use_start[v] + fill[v]++] = (struct use){ j, i };
		}
	free(fill);
	b->rd = rt_calloc((size_t)b->rd_start[b->n_ops] + 1, sizeof *b->rd);
}

/* Rule 5: values from which a TOPK is reached through ops other than products. */
static void mark_routing(struct bf *b)
{
	for (int j = b->n_ops - 1; j >= 0; j--) {
		const struct ir_op *op = b->ops[j];
		int reaches = op->kind == IR_OP_TOPK;
		for (int k = 0; k < op->n_out && !reaches; k++)
			reaches = b->route[op->out[k]->id];
		if (!reaches || role_of(op->kind) == ROLE_PRODUCT)
			continue;
		for (int i = 0; i < op->n_in; i++)
			if (ir_dtype_is_float(op->in[i]->dtype))
				b->route[op->in[i]->id] = 1;
	}
}

/* Rule 6: every op that reads v reads it as bf16 (a product's operand, or a mover
 * whose output all read as bf16). */
static int all_uses_bf16(const struct bf *b, const struct ir_value *v)
{
	int id = v->id;
	if (!ir_dtype_is_float(v->dtype) || b->is_out[id] || b->use_start[id] == b->use_start[id + 1])
		return 0;
	for (int u = b->use_start[id]; u < b->use_start[id + 1]; u++) {
		const struct ir_op *op = b->ops[b->uses[u].op];
		int i = b->uses[u].in;
		if (!((role_of(op->kind) == ROLE_PRODUCT && is_operand(op, i) && !is_router(b, op)) ||
		      (is_mover(op->kind) && i == 0 && b->wants_bf16[op->out[0]->id])))
			return 0;
	}
	return 1;
}

/* Rule 2: some op reads v as f32, directly or through reshapes and transposes. */
static int some_use_f32(const struct bf *b, const struct ir_value *v)
{
	int id = v->id;
	for (int u = b->use_start[id]; u < b->use_start[id + 1]; u++) {
		const struct ir_op *op = b->ops[b->uses[u].op];
		if (is_view(op->kind) ? b->f32use[op->out[0]->id]
				      : b->rd[b->rd_start[b->uses[u].op] + b->uses[u].in] == IR_F32)
			return 1;
	}
	return 0;
}

/* Rule 6, from the last op up: outputs that every reader reads as bf16. */
static void mark_wants_bf16(struct bf *b)
{
	for (int j = b->n_ops - 1; j >= 0; j--)
		for (int k = 0; k < b->ops[j]->n_out; k++)
			b->wants_bf16[b->ops[j]->out[k]->id] = (unsigned char)all_uses_bf16(b, b->ops[j]->out[k]);
}

/* The dtype of every forward value and the dtype each op reads each input in, by the
 * rules above (the MATMULs of b->flip write f32). */
static void assign_types(struct bf *b)
{
	for (int j = 0; j < b->n_ops; j++) {
		const struct ir_op *op = b->ops[j];
		enum ir_dtype *rd = b->rd + b->rd_start[j];
		enum role role = role_of(op->kind);
		for (int i = 0; i < op->n_in; i++)
			rd[i] = b->dt[op->in[i]->id];
		switch (role) {
		case ROLE_AS_IS:
			break;
		case ROLE_PRODUCT: {
			enum ir_dtype t = is_router(b, op) ? IR_F32 : IR_BF16;
			for (int i = 0; i < op->n_in; i++)
				if (is_operand(op, i) && ir_dtype_is_float(op->in[i]->dtype))
					rd[i] = t;
			b->dt[op->out[0]->id] = b->flip[op->out[0]->id] ? IR_F32 : t;
			break;
		}
		case ROLE_FOLLOW: {
			if (!ir_dtype_is_float(op->out[0]->dtype))
				break;
			enum ir_dtype t = IR_BF16;
			for (int i = 0; i < op->n_in; i++)
				if (is_data(op, i) && b->dt[op->in[i]->id] != IR_BF16)
					t = IR_F32;
			if (is_mover(op->kind) && b->wants_bf16[op->out[0]->id])
				t = IR_BF16;
			for (int i = 0; i < op->n_in; i++)
				if (is_data(op, i))
					rd[i] = t;
			b->dt[op->out[0]->id] = t;
			break;
		}
		case ROLE_F32:
			for (int i = 0; i < op->n_in; i++)
				if (ir_dtype_is_float(op->in[i]->dtype))
					rd[i] = IR_F32;
			break;
		}
	}
}

/* Rule 2: the MATMULs whose bf16 output some reader widens write f32.  Returns how
 * many were newly marked (a flip can make an add f32 and so widen another product's
 * output: the caller retypes and asks again, until none is added). */
static int mark_f32_outputs(struct bf *b)
{
	int n = 0;
	for (int j = b->n_ops - 1; j >= 0; j--) {
		const struct ir_op *op = b->ops[j];
		for (int k = 0; k < op->n_out; k++)
			b->f32use[op->out[k]->id] =
				b->dt[op->out[k]->id] == IR_BF16 && some_use_f32(b, op->out[k]);
		if (op->kind == IR_OP_MATMUL && b->f32use[op->out[0]->id] && !is_router(b, op) &&
		    !b->flip[op->out[0]->id]) {
			b->flip[op->out[0]->id] = 1;
			n++;
		}
	}
	return n;
}

/* --- the rewrite --------------------------------------------------------------------------- */

/* The layer key of a scope: its first component, with the second when that is a number
 * ("layers.3.attn" -> "layers.3", "mtp.0.hnorm" -> "mtp.0", "head" -> "head").  Casts
 * are shared within a layer only, so that no cast crosses a pipeline stage. */
static size_t layer_key_len(const char *s)
{
	const char *dot = strchr(s, '.');
	if (!dot)
		return strlen(s);
	const char *q = dot + 1;
	while (isdigit((unsigned char)*q))
		q++;
	return q > dot + 1 && (*q == '.' || !*q) ? (size_t)(q - s) : (size_t)(dot - s);
}

static struct ir_value *cast_for(struct bf *b, struct ir_value *v, enum ir_dtype t,
				 const struct ir_op *reader)
{
	const char *key = reader->scope ? reader->scope : "";
	size_t len = layer_key_len(key);
	for (int e = b->first_cast[v->id]; e >= 0; e = b->casts[e].next) {
		const struct cast_entry *c = &b->casts[e];
		if (c->t == t && c->len == len && !strncmp(c->key, key, len))
			return c->v;
	}
	ir_graph_set_context(b->g, reader->loc, reader->scope);
	struct ir_value *c = ir_op1(b->g, IR_OP_CAST, 1, &v, t, v->shape);
	if (b->n_casts == b->cap_casts) {
		b->cap_casts = b->cap_casts ? 2 * b->cap_casts : 64;
		b->casts = rt_realloc(b->casts, sizeof *b->casts * (size_t)b->cap_casts);
	}
	b->casts[b->n_casts] = (struct cast_entry){ key, len, t, c, b->first_cast[v->id] };
	b->first_cast[v->id] = b->n_casts++;
	return c;
}

/* Casts before the ops that read a value in another dtype, the new dtypes on the
 * outputs; the op list rebuilt with each cast just before its first reader. */
static void rewrite(struct bf *b)
{
	struct ir_graph *g = b->g;
	struct ir_loc saved_loc = g->cur_loc;
	const char *saved_scope = g->cur_scope;
	b->first_cast = rt_malloc(sizeof *b->first_cast * (size_t)b->nv);
	for (int v = 0; v < b->nv; v++)
		b->first_cast[v] = -1;
	int cap = 2 * b->n_ops + 16, n = 0;
	struct ir_op **order = rt_malloc(sizeof *order * (size_t)cap);
	for (int j = 0; j < b->n_ops; j++) {
		struct ir_op *op = b->ops[j];
		int first_new = g->n_ops;
		for (int i = 0; i < op->n_in; i++) {
			enum ir_dtype t = b->rd[b->rd_start[j] + i];
			if (t != b->dt[op->in[i]->id])
				op->in[i] = cast_for(b, op->in[i], t, op);
		}
		for (int k = 0; k < op->n_out; k++)
			op->out[k]->dtype = b->dt[op->out[k]->id];
		if (n + (g->n_ops - first_new) + 1 > cap) {
			cap = 2 * (n + (g->n_ops - first_new) + 1);
			order = rt_realloc(order, sizeof *order * (size_t)cap);
		}
		for (int k = first_new; k < g->n_ops; k++)
			order[n++] = g->ops[k];
		order[n++] = op;
	}
	RT_ASSERT(n == g->n_ops);
	memcpy(g->ops, order, sizeof *order * (size_t)n);
	free(order);
	ir_graph_set_context(g, saved_loc, saved_scope);
}

/* Does the analysis ask for a change: a cast, or a value of another dtype? */
static int changes(const struct bf *b)
{
	for (int j = 0; j < b->n_ops; j++) {
		const struct ir_op *op = b->ops[j];
		for (int i = 0; i < op->n_in; i++)
			if (b->rd[b->rd_start[j] + i] != b->dt[op->in[i]->id])
				return 1;
		for (int k = 0; k < op->n_out; k++)
			if (op->out[k]->dtype != b->dt[op->out[k]->id])
				return 1;
	}
	return 0;
}

static void bf_free(struct bf *b)
{
	free(b->ops);
	free(b->use_start);
	free(b->uses);
	free(b->rd_start);
	free(b->rd);
	free(b->dt);
	free(b->is_out);
	free(b->route);
	free(b->wants_bf16);
	free(b->f32use);
	free(b->flip);
	free(b->casts);
	free(b->first_cast);
}

int pass_bf16(struct ir_graph *g, FILE *err)
{
	/* precision fp8 has the activations between its products in bf16 too (the recipe's:
	 * passes/fp8.c quantises the bf16 operands and the f32 master weights) */
	const struct ir_setting *s = ir_graph_setting(g, "precision");
	if (!s || !s->is_str || (strcmp(s->str, "bf16") && strcmp(s->str, "fp8")))
		return 0;
	/* a graph read back after the fp8 pass has had its casts: that pass dropped the
	 * weights' (its products read the f32 PARAMs' FP8 copies) */
	for (int j = 0; j < g->n_ops; j++)
		if (g->ops[j]->kind == IR_OP_QUANT_FP8)
			return 0;
	struct bf b = { .g = g, .nv = g->n_values };
	b.ops = rt_malloc(sizeof *b.ops * (size_t)(g->n_ops + 1));
	const struct ir_op *bwd = NULL;
	for (int j = 0; j < g->n_ops; j++) {
		if (g->ops[j]->phase == IR_PHASE_FWD)
			b.ops[b.n_ops++] = g->ops[j];
		else if (!bwd)
			bwd = g->ops[j];
	}
	index_uses(&b);
	b.dt = rt_malloc(sizeof *b.dt * (size_t)b.nv);
	for (int v = 0; v < b.nv; v++)
		b.dt[v] = g->values[v] ? g->values[v]->dtype : IR_F32;
	b.is_out = rt_calloc((size_t)b.nv, 1);
	for (int k = 0; k < g->n_outputs; k++)
		b.is_out[g->outputs[k]->id] = 1;
	b.route = rt_calloc((size_t)b.nv, 1);
	b.wants_bf16 = rt_calloc((size_t)b.nv, 1);
	b.f32use = rt_calloc((size_t)b.nv, 1);
	b.flip = rt_calloc((size_t)b.nv, 1);

	mark_routing(&b);
	mark_wants_bf16(&b);
	assign_types(&b);
	while (mark_f32_outputs(&b))
		assign_types(&b);

	int rc = 0;
	if (changes(&b)) {
		if (bwd) {
			fprintf(err, "error: bf16: the graph has its backward already (op %d is in "
				     "phase %s) but not the casts of precision bf16: choose the "
				     "precision before autodiff\n", bwd->id, ir_phase_name(bwd->phase));
			rc = 1;
		} else {
			rewrite(&b);
		}
	}
	bf_free(&b);
	return rc;
}
