/*
 * recompute.c - the backward computes chosen forward values again instead of reading
 * them from the forward: activation memory traded for compute.
 *
 * Takes: a graph after autodiff (and expert_parallel, fp8), and the train setting
 * `recompute`: a list of the words below, separated by commas or spaces (none or
 * absent: nothing to do).  A graph that has recomputed ops already (read back from
 * textual IR: they carry the attr recompute = 1) is left as is.
 *
 * Chooses, by structure (no model is named), the forward ops to compute again, the set R:
 *  - norm: every RMSNorm, the chain square -> reduce_mean -> scale -> rsqrt -> r,
 *    n = x * r, y = n * w (w a parameter, or a cast of one): its six ops; x and w are
 *    kept;
 *  - swiglu: every h = silu(a) * b: the silu and the product (a and b kept), of dense
 *    layers and experts alike;
 *  - mla_up: what lies between an ATTENTION and the latents of its own block: walking
 *    back from its q, k and v through reshapes, slices, concatenations, broadcasts,
 *    RoPE and casts, and through a product by a parameter whose input is an RMSNorm of
 *    the attention's scope (MLA's up-projections wq_b and wkv_b, with their FP8
 *    quantisation of the latent); the latents and every other product's output are
 *    kept.  For plain attention (no latents) that is the RoPE and the reshapes;
 *  - layers: every forward op of every numbered layer (the scopes that `sluice check`
 *    keys "layers.3", "mtp.0") but the communication and the layer's outputs (what
 *    forward ops outside the layer read: the next layer's input), so that a layer is
 *    computed again from its inputs and what arrived by communication;
 *  and, with them, every quantisation, cast or reshape whose non-parameter inputs are
 *  all in R (the FP8 copy of a recomputed value is recomputed too).
 * Never in R: inputs, parameters, constants and communication (sends, receives,
 * collectives: the ranks issue those in the forward only).
 *
 * Rewrites: every input of a backward op that an op of R made is replaced by a copy of
 * that op (same kind, attributes, scope, stage and location; its own inputs replaced
 * alike, so that a chain is copied from its kept inputs), placed just before the first
 * backward op that reads it, in phase bwd_b (so that a weight gradient deferred by zb1p
 * finds it made), with the int attr recompute = 1.  A value is copied once; its later
 * readers share the copy.  The forward ops stay, since the forward needs them: what they
 * no longer keep alive past the forward is the saving, which the memory plan and `sluice
 * check` (the forward values that backward ops read, passes/account.c) see.
 *
 * Guarantees: the graph's outputs are the same values, since a copy computes the same op
 * on the same inputs (tests/train/recompute_test.sh sees the losses and gradients of
 * every schedule bit-identical with and without).  The partition places a copy with its
 * original's layer, like the rest of that layer's backward.
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

enum { RC_NORM = 1, RC_SWIGLU = 2, RC_MLA_UP = 4, RC_LAYERS = 8 };

static const struct {
	const char *word;
	int bit;
} words[] = {
	{ "norm", RC_NORM }, { "swiglu", RC_SWIGLU }, { "mla_up", RC_MLA_UP },
	{ "layers", RC_LAYERS },
};

/* The setting's words as bits; -1 (said on err) for a word that is not one */
static int parse_setting(const char *s, FILE *err)
{
	int bits = 0;
	if (!strcmp(s, "none"))
		return 0;
	for (const char *p = s; *p;) {
		p += strspn(p, " ,");
		size_t l = strcspn(p, " ,");
		if (!l)
			break;
		int bit = 0;
		for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
			if (strlen(words[k].word) == l && !strncmp(words[k].word, p, l))
				bit = words[k].bit;
		if (!bit) {
			fprintf(err, "error: recompute: '%.*s' is not norm, swiglu, mla_up, layers "
				"or none\n", (int)l, p);
			return -1;
		}
		bits |= bit;
		p += l;
	}
	return bits;
}

static int is_comm(enum ir_opkind k)
{
	switch (k) {
	case IR_OP_SEND:
	case IR_OP_RECV:
	case IR_OP_ALL_TO_ALL:
	case IR_OP_ALL_TO_ALLV:
	case IR_OP_ALL_REDUCE:
	case IR_OP_REDUCE_SCATTER:
	case IR_OP_ALL_GATHER:
		return 1;
	default:
		return 0;
	}
}

static int is_leaf(enum ir_opkind k)
{
	return k == IR_OP_INPUT || k == IR_OP_PARAM || k == IR_OP_CONST;
}

static const struct ir_op *def_of(const struct ir_value *v, enum ir_opkind k)
{
	return v && v->def && v->def->kind == k && v->def->phase == IR_PHASE_FWD ? v->def : NULL;
}

static int is_param(const struct ir_value *v)
{
	if (v->def && v->def->kind == IR_OP_CAST)
		v = v->def->in[0];
	return v->def && v->def->kind == IR_OP_PARAM;
}

/* An RMSNorm ending at y = n * w: its six ops into ops[], or 0 */
static int rmsnorm_ops(const struct ir_op *y, const struct ir_op *ops[6])
{
	if (y->kind != IR_OP_MUL || y->phase != IR_PHASE_FWD)
		return 0;
	for (int side = 0; side < 2; side++) {
		const struct ir_op *n = def_of(y->in[side], IR_OP_MUL);
		if (!n || !is_param(y->in[1 - side]))
			continue;
		for (int xs = 0; xs < 2; xs++) {
			const struct ir_op *r = def_of(n->in[1 - xs], IR_OP_RSQRT);
			const struct ir_op *sc = r ? def_of(r->in[0], IR_OP_SCALE) : NULL;
			const struct ir_op *m = sc ? def_of(sc->in[0], IR_OP_REDUCE_MEAN) : NULL;
			const struct ir_op *sq = m ? def_of(m->in[0], IR_OP_SQUARE) : NULL;
			if (sq && sq->in[0] == n->in[xs]) {
				const struct ir_op *all[6] = { sq, m, sc, r, n, y };
				memcpy(ops, all, sizeof all);
				return 1;
			}
		}
	}
	return 0;
}

struct rc {
	struct ir_graph *g;
	unsigned char *in_r;     /* per op index: in R */
	int *index;              /* op id -> index in the old order */
	int max_id;              /* of the old ops */
	struct ir_value **copy;  /* per value id: its copy in the backward, or NULL */
	struct ir_op **order;
	int n_order;
};

static int in_r(const struct rc *s, const struct ir_value *v)
{
	return v->def && v->def->id <= s->max_id && s->in_r[s->index[v->def->id]];
}

static void mark(struct rc *s, const struct ir_op *op)
{
	if (!is_leaf(op->kind) && !is_comm(op->kind) && op->phase == IR_PHASE_FWD)
		s->in_r[s->index[op->id]] = 1;
}

/* mla_up: the walk back from an attention input (see the top) */
static void walk_up(struct rc *s, const struct ir_value *v, const char *scope, int depth)
{
	const struct ir_op *op = v->def;
	if (!op || op->phase != IR_PHASE_FWD || depth > 64)
		return;
	switch (op->kind) {
	case IR_OP_RESHAPE:
	case IR_OP_SLICE:
	case IR_OP_CONCAT:
	case IR_OP_BROADCAST:
	case IR_OP_ROPE:
	case IR_OP_CAST:
	case IR_OP_TRANSPOSE:
		mark(s, op);
		for (int j = 0; j < op->n_in; j++)
			walk_up(s, op->in[j], scope, depth + 1);
		return;
	case IR_OP_MATMUL:
	case IR_OP_SCALED_MATMUL: {
		/* a product by a parameter of a latent: an RMSNorm of the attention's block */
		int scaled = op->kind == IR_OP_SCALED_MATMUL;
		const struct ir_value *x = op->in[0];
		const struct ir_op *q = NULL;
		if (scaled) {
			q = def_of(x, IR_OP_QUANT_FP8);
			if (!q)
				return;
			x = q->in[0];
		}
		const struct ir_value *w = op->in[scaled ? 2 : 1];
		if (w->def && w->def->kind == IR_OP_QUANT_FP8)
			w = w->def->in[0];
		if (!is_param(w))
			return;
		while (def_of(x, IR_OP_CAST) || def_of(x, IR_OP_RESHAPE))
			x = x->def->in[0];
		const struct ir_op *norm[6];
		if (!x->def || !rmsnorm_ops(x->def, norm) || strcmp(x->def->scope, scope))
			return;
		mark(s, op);
		if (q)
			mark(s, q);
		return;
	}
	default:
		return;
	}
}

static void choose(struct rc *s, int bits)
{
	struct ir_graph *g = s->g;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		const struct ir_op *norm[6];
		if ((bits & RC_NORM) && rmsnorm_ops(op, norm))
			for (int k = 0; k < 6; k++)
				mark(s, norm[k]);
		if ((bits & RC_SWIGLU) && op->kind == IR_OP_MUL)
			for (int side = 0; side < 2; side++) {
				const struct ir_op *a = def_of(op->in[side], IR_OP_SILU);
				if (a) {
					mark(s, a);
					mark(s, op);
					break;
				}
			}
		if ((bits & RC_MLA_UP) && op->kind == IR_OP_ATTENTION)
			for (int j = 0; j < 3; j++)
				walk_up(s, op->in[j], op->scope, 0);
		if ((bits & RC_LAYERS) && pass_numbered_layer(op->scope))
			mark(s, op);
	}
	/* a layer's outputs, the values that forward ops of other layers (or of none)
	 * read, stay: each layer is computed again from its inputs alone */
	if (bits & RC_LAYERS)
		for (int i = 0; i < g->n_ops; i++) {
			const struct ir_op *op = g->ops[i];
			if (op->phase != IR_PHASE_FWD)
				continue;
			for (int j = 0; j < op->n_in; j++) {
				const struct ir_op *d = op->in[j]->def;
				size_t n = d ? pass_numbered_layer(d->scope) : 0;
				if (n && (strncmp(op->scope, d->scope, n) ||
					  pass_numbered_layer(op->scope) != n))
					s->in_r[s->index[d->id]] = 0;
			}
		}
	/* an FP8 copy, a cast or a reshape of recomputed values only */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD ||
		    (op->kind != IR_OP_QUANT_FP8 && op->kind != IR_OP_CAST &&
		     op->kind != IR_OP_RESHAPE))
			continue;
		int any = 0, all = 1;
		for (int j = 0; j < op->n_in; j++) {
			if (is_param(op->in[j]))
				continue;
			any = 1;
			all = all && in_r(s, op->in[j]);
		}
		if (any && all)
			mark(s, op);
	}
}

/* The backward's copy of v (made, with the copies it reads, into the order) */
static struct ir_value *copy_of(struct rc *s, struct ir_value *v)
{
	if (s->copy[v->id])
		return s->copy[v->id];
	const struct ir_op *op = v->def;
	struct ir_value **in = rt_malloc(sizeof *in * (size_t)(op->n_in ? op->n_in : 1));
	for (int j = 0; j < op->n_in; j++)
		in[j] = in_r(s, op->in[j]) ? copy_of(s, op->in[j]) : op->in[j];
	struct ir_op *c = ir_op_new(s->g, op->kind, op->n_in, in, op->n_out);
	free(in);
	c->loc = op->loc;
	c->scope = op->scope;
	c->path = op->path;
	c->phase = IR_PHASE_BWD_B;
	c->stage = op->stage;
	for (int a = 0; a < op->n_attr; a++) {
		const struct ir_attr *at = &op->attr[a];
		switch (at->kind) {
		case IR_ATTR_INT:
			ir_op_set_int(s->g, c, at->name, at->i);
			break;
		case IR_ATTR_FLOAT:
			ir_op_set_float(s->g, c, at->name, at->f);
			break;
		case IR_ATTR_STR:
			ir_op_set_str(s->g, c, at->name, at->s);
			break;
		case IR_ATTR_INTS:
			ir_op_set_ints(s->g, c, at->name, at->n, at->ints);
			break;
		}
	}
	ir_op_set_int(s->g, c, "recompute", 1);
	for (int k = 0; k < op->n_out; k++) {
		c->out[k]->dtype = op->out[k]->dtype;
		c->out[k]->shape = op->out[k]->shape;
		s->copy[op->out[k]->id] = c->out[k];
	}
	s->order[s->n_order++] = c;
	return s->copy[v->id];
}

int pass_recompute(struct ir_graph *g, FILE *err)
{
	const struct ir_setting *st = ir_graph_setting(g, "recompute");
	if (!st)
		return 0;
	if (!st->is_str) {
		fprintf(err, "error: recompute: a list of norm, swiglu, mla_up, layers, or none; "
			"not a number\n");
		return 1;
	}
	int bits = parse_setting(st->str, err);
	if (bits < 0)
		return 1;
	int has_bwd = 0;
	for (int i = 0; i < g->n_ops; i++) {
		if (ir_op_int(g->ops[i], "recompute", 0))
			return 0; /* done already */
		has_bwd |= g->ops[i]->phase != IR_PHASE_FWD;
	}
	if (!bits || !has_bwd)
		return 0;
	int n_old = g->n_ops, max_id = 0;
	for (int i = 0; i < n_old; i++)
		max_id = g->ops[i]->id > max_id ? g->ops[i]->id : max_id;
	struct rc s = { .g = g, .max_id = max_id };
	s.in_r = rt_calloc((size_t)n_old, 1);
	s.index = rt_calloc((size_t)max_id + 1, sizeof *s.index);
	for (int i = 0; i < n_old; i++)
		s.index[g->ops[i]->id] = i;
	choose(&s, bits);
	int n_r = 0;
	for (int i = 0; i < n_old; i++)
		n_r += s.in_r[i];
	struct ir_op **old = rt_malloc(sizeof *old * (size_t)n_old);
	memcpy(old, g->ops, sizeof *old * (size_t)n_old);
	s.copy = rt_calloc((size_t)g->n_values + 1, sizeof *s.copy);
	s.order = rt_malloc(sizeof *s.order * (size_t)(n_old + n_r + 1));
	for (int i = 0; i < n_old; i++) {
		struct ir_op *op = old[i];
		if (op->phase != IR_PHASE_FWD)
			for (int j = 0; j < op->n_in; j++)
				if (in_r(&s, op->in[j]))
					op->in[j] = copy_of(&s, op->in[j]);
		s.order[s.n_order++] = op;
	}
	RT_ASSERT(s.n_order == g->n_ops);
	memcpy(g->ops, s.order, sizeof *g->ops * (size_t)s.n_order);
	free(old);
	free(s.in_r);
	free(s.index);
	free(s.copy);
	free(s.order);
	return 0;
}
