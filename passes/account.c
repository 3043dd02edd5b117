/*
 * account.c - what a model costs: parameters, active parameters per token, training
 * FLOPs per token and activation memory per micro-batch, in all and per layer.
 *
 * Takes a forward IR graph as the frontend lowers it (a graph after autodiff is
 * accepted too: then only its forward ops are counted, and the activation rule below
 * is replaced by the exact one the backward gives).  Reads the graph, changes nothing.
 *
 * The rules, chosen to match how DeepSeek reports its models:
 *  - Parameters: PARAM ops that are trainable (attr trainable absent or non-zero).
 *    Non-trainable parameters, such as the auxiliary-loss-free routing biases that no
 *    gradient touches, are buffers and not counted (V3's main model has 58 x 256 =
 *    14,848 of them: 0.000002% of 671B, so DeepSeek's figure cannot tell either way).  Parameters
 *    whose path starts with "mtp." form the MTP module and are counted apart from the
 *    main model; the MTP module reuses the main model's embedding and output head (the
 *    same PARAM values), so those are counted once, in the main model.  DeepSeek's
 *    "14B MTP module" counts them again (its checkpoint stores copies): 11.6B + 2 x
 *    0.93B.
 *  - Active parameters per token (the total is the main model's; each row of the
 *    table, the MTP module's too, has its own): a parameter read by a dense op is
 *    wholly active; the expert weights w[E,...] of a grouped matmul are active k/E
 *    (each token runs through k of the E experts), k from the MOE_DISPATCH that routed
 *    the rows; an embedding table read by GATHER_ROWS is active one row per token.
 *    The last rule is why V2-Lite comes out at 2.45B, as DeepSeek reports (2.4B),
 *    rather than 2.66B.  A parameter used several ways takes its largest fraction
 *    (tied embeddings: the head's matmul makes the whole table active).
 *  - Training FLOPs per token: matrix products only (MATMUL, GROUPED_MATMUL, and
 *    ATTENTION's score and value products q k^T and p v); elementwise ops, softmax and
 *    norms are left out (under 1% of a transformer's work).  A product of M x K by
 *    K x N is 2MNK in the forward pass, and the backward repeats that work once for
 *    each operand that needs a gradient: 3x for almost every product, 2x when one
 *    operand is an input or a constant.  Grouped matmuls count the rows they actually
 *    hold, tokens x k, so a token pays for its k experts, not for all E.  The causal
 *    mask does not halve the attention products (the full square is counted, as the
 *    three-op lowering computed it; the kernels skip the masked tiles), nor does the
 *    backward's recomputation of q k^T add to them.
 *    Per token means divided by the tokens of one micro-batch (the "tokens" input).
 *    Of them, flops_fp8_per_token are the products that precision fp8 quantises (the
 *    fp8 pass's choice, pass_fp8_products; scaled products count as what they scale).
 *  - Activation memory per micro-batch: the bytes of forward values that the backward
 *    reads, each counted once.  In a forward graph that is decided per op by what its
 *    backward needs (table at saved_inputs()), and only for ops on the gradient path
 *    (an output that depends on a trainable parameter and reaches the loss).  Values
 *    that are functions of parameters alone (a cast of a weight) are weight memory,
 *    not activations, and are left out; inputs (token ids, targets) are counted.
 *    In a graph after autodiff it is exactly the forward values that some backward op
 *    reads, with the same exclusions; the per-op table mirrors autodiff.c's rules, and
 *    the two give the same bytes on every model in models/.  No recomputation.
 *  - The per-layer table is keyed by the top-level scope: the first component of the
 *    scope (of the path, for parameters), with the second one too when it is a number:
 *    "layers.3", "embed", "head", "mtp.0".  Ops at the top scope go to "top".
 */
#include "passes.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The layer key of a scope or path: "layers.3.moe.experts.w1" -> "layers.3",
 * "head.w" -> "head", "" -> "top".  Kept as a prefix of the string it came from. */
struct lkey {
	const char *s;
	size_t n;
};

struct acct {
	const struct ir_graph *g;
	int nv;
	int backward;            /* the graph holds backward ops */
	int64_t tokens;
	int *origin;             /* value id -> PARAM op's value id it is a view of, or -1 */
	unsigned char *rg;       /* depends on a trainable parameter */
	unsigned char *reach;    /* reaches the loss through differentiable edges */
	unsigned char *saved;    /* needed by the backward */
	double *active_frac;     /* per PARAM value id */
	struct lkey *key;        /* per value id: layer key of its defining op */
	struct pass_layer_stats *layers;
	int n_layers, cap_layers;
};

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	return p;
}

/* *acc += v; non-zero when the sum leaves int64 (then *acc is left wrapped) */
static int add_ovf(int64_t *acc, int64_t v)
{
	return __builtin_add_overflow(*acc, v, acc);
}

static int is_trainable_param(const struct ir_op *op)
{
	return op->kind == IR_OP_PARAM && ir_op_int(op, "trainable", 1) != 0;
}

static int is_mtp_path(const char *p)
{
	return p && !strncmp(p, "mtp.", 4);
}

/* Ops that show a value under another shape, dtype or scale (autodiff.c's "weight
 * side" views, and FP8 casts): a weight seen through them is still the weight. */
static int is_view(enum ir_opkind k)
{
	return k == IR_OP_CAST || k == IR_OP_RESHAPE || k == IR_OP_TRANSPOSE ||
	       k == IR_OP_BROADCAST || k == IR_OP_SLICE || k == IR_OP_SCALE ||
	       k == IR_OP_NEG || k == IR_OP_STOP_GRAD || k == IR_OP_QUANT_FP8 ||
	       k == IR_OP_DEQUANT_FP8;
}

/* A scaled product counts as the product it scales (its operands are its first inputs,
 * its scales the last two: weight-side views). */
static enum ir_opkind plain_kind(enum ir_opkind k)
{
	return k == IR_OP_SCALED_MATMUL ? IR_OP_MATMUL
	       : k == IR_OP_SCALED_GROUPED_MATMUL ? IR_OP_GROUPED_MATMUL
	       : k == IR_OP_SCALED_GROUPED_MATMUL_WGRAD ? IR_OP_GROUPED_MATMUL_WGRAD : k;
}

/* Ops through which no gradient flows to any input. */
static int is_nondiff(enum ir_opkind k)
{
	return k == IR_OP_STOP_GRAD || k == IR_OP_TOPK || k == IR_OP_EXPERT_COUNT ||
	       k == IR_OP_INPUT || k == IR_OP_PARAM || k == IR_OP_CONST;
}

/* The gradient flows to input i of op (for ops that are differentiable at all). */
static int diff_input(const struct ir_op *op, int i)
{
	if (!ir_dtype_is_float(op->in[i]->dtype))
		return 0;
	switch (op->kind) {
	case IR_OP_GATHER_ROWS:
	case IR_OP_MOE_DISPATCH:
	case IR_OP_TAKE_ALONG:
	case IR_OP_PUT_ALONG:
	case IR_OP_SCATTER_ROWS:
	case IR_OP_CROSS_ENTROPY:
		return i == 0;
	case IR_OP_DEQUANT_FP8:
		return i == 0;
	default:
		return 1;
	}
}

/* The layer key of a scope or path (see struct lkey). */
static struct lkey layer_key(const char *s)
{
	if (!s || !*s)
		return (struct lkey){ "top", 3 };
	const char *dot = strchr(s, '.');
	if (!dot)
		return (struct lkey){ s, strlen(s) };
	const char *p = dot + 1, *q = p;
	while (*q && isdigit((unsigned char)*q))
		q++;
	size_t n = (q > p && (*q == '.' || !*q)) ? (size_t)(q - s) : (size_t)(dot - s);
	return (struct lkey){ s, n };
}

size_t pass_numbered_layer(const char *scope)
{
	struct lkey k = layer_key(scope);
	int numbered = k.n > 0 && k.s[k.n - 1] >= '0' && k.s[k.n - 1] <= '9' &&
		       memchr(k.s, '.', k.n);
	return numbered ? k.n : 0;
}

static struct pass_layer_stats *layer_of(struct acct *A, struct lkey k)
{
	for (int i = A->n_layers - 1; i >= 0; i--)
		if (strlen(A->layers[i].scope) == k.n && !memcmp(A->layers[i].scope, k.s, k.n))
			return &A->layers[i];
	if (A->n_layers == A->cap_layers) {
		A->cap_layers = A->cap_layers ? 2 * A->cap_layers : 16;
		struct pass_layer_stats *l =
			realloc(A->layers, sizeof *l * (size_t)A->cap_layers);
		if (!l) {
			fprintf(stderr, "sluice: out of memory\n");
			abort();
		}
		A->layers = l;
	}
	struct pass_layer_stats *l = &A->layers[A->n_layers++];
	memset(l, 0, sizeof *l);
	char *name = xcalloc(k.n + 1, 1);
	memcpy(name, k.s, k.n);
	l->scope = name;
	return l;
}

static int64_t value_bytes(const struct ir_value *v)
{
	int64_t n = ir_shape_numel(&v->shape);
	if (n < 0)
		return -1;
	int64_t sz = (int64_t)ir_dtype_size(v->dtype);
	if (n && sz > INT64_MAX / n)
		return -1;
	return n * sz;
}

/* Tokens of one micro-batch: the "tokens" input, else the indices of the first
 * embedding lookup, else the first integer input; 1 when there is none. */
static int64_t count_tokens(const struct ir_graph *g)
{
	const struct ir_op *first_int = NULL, *first_gather = NULL;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT) {
			const char *name = ir_op_str(op, "name", op->out[0]->name);
			if (name && !strcmp(name, "tokens"))
				return ir_shape_numel(&op->out[0]->shape);
			if (!first_int && !ir_dtype_is_float(op->out[0]->dtype))
				first_int = op;
		}
		if (op->kind == IR_OP_GATHER_ROWS && !first_gather)
			first_gather = op;
	}
	if (first_gather)
		return ir_shape_numel(&first_gather->in[1]->shape);
	if (first_int)
		return ir_shape_numel(&first_int->out[0]->shape);
	return 1;
}

/* k of the expert weights of a grouped matmul: the choices per token of the dispatch
 * that made its offsets; else the op's own top_k attribute; else a TOPK op in the
 * same scope; else the rows per token. */
static int64_t grouped_k(const struct acct *A, const struct ir_op *op)
{
	const struct ir_value *off = op->in[2];
	if (off->def && off->def->kind == IR_OP_MOE_DISPATCH && off->def->n_in >= 2) {
		const struct ir_shape *s = &off->def->in[1]->shape;
		if (s->rank >= 1 && s->dim[s->rank - 1] > 0)
			return s->dim[s->rank - 1];
	}
	int64_t k = ir_op_int(op, "top_k", -1);
	if (k > 0)
		return k;
	for (int i = 0; i < A->g->n_ops; i++) {
		const struct ir_op *t = A->g->ops[i];
		if (t->kind == IR_OP_TOPK && !strcmp(t->scope, op->scope))
			return ir_op_int(t, "k", 1);
	}
	int64_t rows = op->in[0]->shape.rank ? op->in[0]->shape.dim[0] : 1;
	return A->tokens > 0 && rows >= A->tokens ? rows / A->tokens : 1;
}

static void mark_saved(struct acct *A, const struct ir_value *v)
{
	A->saved[v->id] = 1;
}

/* What the backward of a forward op reads, for an op whose output needs a gradient.
 * need[i]: input i needs a gradient.  The same choices as passes/autodiff.c's rules
 * (tests/check/test_plan_models.c holds the two to the same figure on every model). */
static void saved_inputs(struct acct *A, const struct ir_op *op)
{
	int need[3] = { 0, 0, 0 };
	for (int i = 0; i < op->n_in && i < 3; i++)
		need[i] = A->rg[op->in[i]->id] && A->reach[op->in[i]->id];
	switch (plain_kind(op->kind)) {
	/* linear in every input, shape only: nothing */
	case IR_OP_NEG: case IR_OP_SCALE: case IR_OP_CAST: case IR_OP_STOP_GRAD:
	case IR_OP_ADD: case IR_OP_SUB: case IR_OP_REDUCE_SUM: case IR_OP_REDUCE_MEAN:
	case IR_OP_SUM_TO: case IR_OP_RESHAPE: case IR_OP_TRANSPOSE: case IR_OP_BROADCAST:
	case IR_OP_SLICE: case IR_OP_CONCAT: case IR_OP_ROPE:
		break;
	/* derivative from the output */
	case IR_OP_EXP: case IR_OP_SIGMOID: case IR_OP_TANH: case IR_OP_SQRT:
	case IR_OP_RSQRT: case IR_OP_RECIP: case IR_OP_SOFTMAX:
		mark_saved(A, op->out[0]);
		break;
	/* derivative from the input */
	case IR_OP_LOG: case IR_OP_SQUARE: case IR_OP_SILU: case IR_OP_RELU:
		mark_saved(A, op->in[0]);
		break;
	case IR_OP_REDUCE_MAX: /* the position of the maximum, from the input */
		mark_saved(A, op->in[0]);
		break;
	case IR_OP_MUL:
	case IR_OP_MATMUL:
		if (need[0])
			mark_saved(A, op->in[1]);
		if (need[1])
			mark_saved(A, op->in[0]);
		break;
	case IR_OP_DIV: /* y = a / b: da = dy / b, db = -dy y / b */
		mark_saved(A, op->in[1]);
		if (need[1])
			mark_saved(A, op->out[0]);
		break;
	case IR_OP_GROUPED_MATMUL:
		mark_saved(A, op->in[2]);
		if (need[0])
			mark_saved(A, op->in[1]);
		if (need[1])
			mark_saved(A, op->in[0]);
		break;
	case IR_OP_GATHER_ROWS: case IR_OP_SCATTER_ROWS: case IR_OP_TAKE_ALONG:
	case IR_OP_PUT_ALONG:
		mark_saved(A, op->in[1]);
		break;
	case IR_OP_CROSS_ENTROPY:
		mark_saved(A, op->in[0]);
		mark_saved(A, op->in[1]);
		break;
	case IR_OP_MOE_DISPATCH:
		mark_saved(A, op->out[2]); /* perm, for the undispatch */
		break;
	case IR_OP_MOE_COMBINE:
		mark_saved(A, op->in[1]);
		if (need[0])
			mark_saved(A, op->in[2]);
		if (need[2])
			mark_saved(A, op->in[0]);
		break;
	case IR_OP_DEQUANT_FP8:
		mark_saved(A, op->in[1]);
		break;
	case IR_OP_ATTENTION: /* the backward recomputes the probabilities from lse */
		for (int i = 0; i < 3; i++)
			mark_saved(A, op->in[i]);
		mark_saved(A, op->out[0]);
		mark_saved(A, op->out[1]);
		break;
	default:
		/* anything else: assume the backward reads every input */
		for (int i = 0; i < op->n_in; i++)
			mark_saved(A, op->in[i]);
		break;
	}
}

static const struct ir_value *loss_value(const struct ir_graph *g)
{
	const struct ir_value *v = ir_graph_output(g, "loss");
	return v;
}

static int analyse(struct acct *A)
{
	const struct ir_graph *g = A->g;
	for (int i = 0; i < A->nv; i++)
		A->origin[i] = -1;

	/* forward sweep: views of parameters, dependence on trainable parameters */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD) {
			A->backward = 1;
			continue;
		}
		if (op->kind == IR_OP_PARAM) {
			A->origin[op->out[0]->id] = op->out[0]->id;
			A->rg[op->out[0]->id] = (unsigned char)is_trainable_param(op);
			continue;
		}
		if (is_view(op->kind) && op->n_in >= 1 && op->n_out >= 1 &&
		    A->origin[op->in[0]->id] >= 0)
			for (int j = 0; j < op->n_out; j++) /* a weight's FP8 scales are it too */
				A->origin[op->out[j]->id] = A->origin[op->in[0]->id];
		int rg = 0;
		if (!is_nondiff(op->kind))
			for (int j = 0; j < op->n_in; j++)
				if (A->rg[op->in[j]->id] && diff_input(op, j))
					rg = 1;
		for (int j = 0; j < op->n_out; j++)
			A->rg[op->out[j]->id] =
				(unsigned char)(rg && ir_dtype_is_float(op->out[j]->dtype));
	}

	/* backward sweep: what reaches the loss (every graph output when there is none
	 * named "loss", gradients of a backward graph excepted) */
	const struct ir_value *loss = loss_value(g);
	if (loss) {
		A->reach[loss->id] = 1;
	} else {
		for (int i = 0; i < g->n_outputs; i++)
			if (strncmp(g->output_names[i], "grad.", 5))
				A->reach[g->outputs[i]->id] = 1;
	}
	for (int i = g->n_ops - 1; i >= 0; i--) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD || is_nondiff(op->kind))
			continue;
		int any = 0;
		for (int j = 0; j < op->n_out; j++)
			any |= A->reach[op->out[j]->id];
		if (!any)
			continue;
		for (int j = 0; j < op->n_in; j++)
			if (diff_input(op, j))
				A->reach[op->in[j]->id] = 1;
	}
	return 0;
}

static int64_t active_count(const struct ir_value *v, double frac)
{
	int64_t n = ir_shape_numel(&v->shape);
	return (int64_t)llround((double)n * frac);
}

/* The whole count; flops and act, when given, take each figure per value id too (the
 * partition pass sums them over its own units): flops by the value a product
 * defines, saved_bytes by the value the backward saves. */
static int account_run(const struct ir_graph *g, struct pass_account *out, double *flops,
		       int64_t *saved_bytes)
{
	memset(out, 0, sizeof *out);
	struct acct A = { 0 };
	A.g = g;
	A.nv = g->n_values;
	A.origin = xcalloc((size_t)A.nv, sizeof *A.origin);
	A.rg = xcalloc((size_t)A.nv, 1);
	A.reach = xcalloc((size_t)A.nv, 1);
	A.saved = xcalloc((size_t)A.nv, 1);
	A.active_frac = xcalloc((size_t)A.nv, sizeof *A.active_frac);
	A.key = xcalloc((size_t)A.nv, sizeof *A.key);
	int rc = 0;

	A.tokens = count_tokens(g);
	if (A.tokens <= 0)
		A.tokens = 1;
	analyse(&A);
	unsigned char *fp8 = xcalloc((size_t)A.nv, 1), *fp8_weight = xcalloc((size_t)A.nv, 1);
	pass_fp8_products(g, fp8);

	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		struct lkey key =
			layer_key(op->kind == IR_OP_PARAM && op->path ? op->path : op->scope);
		for (int j = 0; j < op->n_out; j++)
			A.key[op->out[j]->id] = key;
		layer_of(&A, key); /* the table in the order of the ops */
	}

	/* uses of parameters: the active fraction of each */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD || is_view(op->kind))
			continue;
		enum ir_opkind kind = plain_kind(op->kind);
		int n_in = kind != op->kind ? op->n_in - 2 : op->n_in; /* not the scales */
		for (int j = 0; j < n_in; j++) {
			int p = A.origin[op->in[j]->id];
			if (p < 0)
				continue;
			double f = 1.0;
			if (kind == IR_OP_GROUPED_MATMUL && j == 1) {
				const struct ir_shape *w = &op->in[1]->shape;
				int64_t e = w->rank ? w->dim[0] : 1;
				int64_t k = grouped_k(&A, op);
				f = e > 0 ? (double)(k < e ? k : e) / (double)e : 1.0;
			} else if (op->kind == IR_OP_GATHER_ROWS && j == 0) {
				const struct ir_shape *t = &op->in[0]->shape;
				f = t->rank && t->dim[0] > 0 ? 1.0 / (double)t->dim[0] : 1.0;
			}
			if (f > A.active_frac[p])
				A.active_frac[p] = f;
		}
	}

	/* parameters */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (!is_trainable_param(op))
			continue;
		const struct ir_value *v = op->out[0];
		int64_t n = ir_shape_numel(&v->shape);
		if (n < 0) {
			rc = -1;
			goto done;
		}
		int64_t act = active_count(v, A.active_frac[v->id]);
		struct pass_layer_stats *l = layer_of(&A, A.key[v->id]);
		int ovf = add_ovf(&l->params, n) | add_ovf(&l->params_active, act);
		if (is_mtp_path(op->path))
			ovf |= add_ovf(&out->params_mtp, n);
		else
			ovf |= add_ovf(&out->params_total, n) | add_ovf(&out->params_active, act);
		if (ovf) {
			rc = -1;
			goto done;
		}
	}

	/* FLOPs of the matrix products, forward and backward */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		double fwd = 0;
		enum ir_opkind kind = plain_kind(op->kind);
		if (kind == IR_OP_MATMUL) {
			const struct ir_shape *a = &op->in[0]->shape, *y = &op->out[0]->shape;
			if (a->rank < 2 || y->rank < 2)
				continue;
			int64_t k = ir_op_int(op, "trans_a", 0) ? a->dim[a->rank - 2]
								 : a->dim[a->rank - 1];
			fwd = 2.0 * (double)ir_shape_numel(y) * (double)k;
		} else if (kind == IR_OP_GROUPED_MATMUL) {
			const struct ir_shape *x = &op->in[0]->shape, *y = &op->out[0]->shape;
			if (x->rank < 1)
				continue;
			fwd = 2.0 * (double)ir_shape_numel(y) * (double)x->dim[x->rank - 1];
		} else if (op->kind != IR_OP_ATTENTION) {
			continue;
		}
		int need[3] = { 0, 0, 0 };
		for (int j = 0; j < 3 && j < op->n_in; j++)
			need[j] = A.rg[op->out[0]->id] && A.reach[op->out[0]->id] &&
				  A.rg[op->in[j]->id] && A.reach[op->in[j]->id];
		double f;
		if (op->kind == IR_OP_ATTENTION) {
			/* its two products q k^T and p v, as the three-op lowering counted them:
			 * p needs a gradient when q or k does */
			const int64_t *q = op->in[0]->shape.dim, *v = op->in[2]->shape.dim;
			double sq = 2.0 * (double)q[0] * (double)q[2] * (double)q[1] * (double)q[1];
			f = sq * (double)q[3] * (1 + need[0] + need[1]) +
			    sq * (double)v[3] * (1 + (need[0] || need[1]) + need[2]);
		} else {
			f = fwd * (1 + need[0] + need[1]);
		}
		f /= (double)A.tokens;
		out->flops_per_token += f;
		if (fp8[op->out[0]->id]) {
			out->flops_fp8_per_token += f;
			int p = A.origin[op->in[1]->id];
			if (p >= 0 && !fp8_weight[p]) {
				const struct ir_shape *w = &g->values[p]->shape;
				int64_t n = ir_shape_numel(w), blocks = 1;
				for (int d = 0; d < w->rank; d++)
					blocks *= d < w->rank - 2 ? w->dim[d] : (w->dim[d] + 127) / 128;
				fp8_weight[p] = 1;
				out->params_fp8 += n;
				out->fp8_weight_bytes += n + 4 * blocks;
			}
		}
		if (flops)
			flops[op->out[0]->id] += f;
		layer_of(&A, A.key[op->out[0]->id])->flops_per_token += f;
	}

	/* activations: what the backward reads */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (A.backward) {
			if (op->phase == IR_PHASE_FWD)
				continue;
			for (int j = 0; j < op->n_in; j++) {
				const struct ir_value *v = op->in[j];
				if (v->def && v->def->phase == IR_PHASE_FWD)
					A.saved[v->id] = 1;
			}
		} else if (!is_nondiff(op->kind) && op->n_out >= 1) {
			int need = 0;
			for (int j = 0; j < op->n_out; j++)
				need |= A.rg[op->out[j]->id] && A.reach[op->out[j]->id];
			if (need)
				saved_inputs(&A, op);
		}
	}
	for (int i = 0; i < A.nv; i++) {
		const struct ir_value *v = g->values[i];
		if (!A.saved[i] || A.origin[i] >= 0 || !v->def || v->def->kind == IR_OP_CONST)
			continue;
		int64_t b = value_bytes(v);
		if (b < 0) {
			rc = -1;
			goto done;
		}
		if (add_ovf(&out->activation_bytes, b) |
		    add_ovf(&layer_of(&A, A.key[i])->activation_bytes, b)) {
			rc = -1;
			goto done;
		}
		if (saved_bytes)
			saved_bytes[i] = b;
	}

	/* rows with nothing to show (scopes of backward ops, of the loss) are dropped */
	int kept = 0;
	for (int i = 0; i < A.n_layers; i++) {
		struct pass_layer_stats *l = &A.layers[i];
		if (l->params || l->flops_per_token > 0 || l->activation_bytes)
			A.layers[kept++] = *l;
		else
			free((char *)l->scope);
	}
	A.n_layers = kept;

done:
	free(fp8);
	free(fp8_weight);
	free(A.origin);
	free(A.rg);
	free(A.reach);
	free(A.saved);
	free(A.active_frac);
	free(A.key);
	out->n_layers = A.n_layers;
	out->layers = A.layers;
	if (rc) {
		pass_account_free(out);
		memset(out, 0, sizeof *out);
	}
	return rc;
}

int pass_account(const struct ir_graph *g, struct pass_account *out)
{
	return account_run(g, out, NULL, NULL);
}

int pass_account_values(const struct ir_graph *g, double *flops, int64_t *act)
{
	memset(flops, 0, sizeof *flops * (size_t)g->n_values);
	memset(act, 0, sizeof *act * (size_t)g->n_values);
	struct pass_account a;
	int rc = account_run(g, &a, flops, act);
	if (!rc)
		pass_account_free(&a);
	return rc;
}

void pass_account_free(struct pass_account *a)
{
	for (int i = 0; i < a->n_layers; i++)
		free((char *)a->layers[i].scope);
	free(a->layers);
	a->layers = NULL;
	a->n_layers = 0;
}
