/*
 * intrinsics.c - the layer intrinsics of the language and their lowering to primitive
 * IR ops (semantics of the ops: ir/ir.h).
 *
 * Each intrinsic binds its arguments by position or name against a fixed list (the
 * first few are required), claims an instance name in the current scope ("attn",
 * "norm_1", or the name: argument), and lowers inside that scope, so its ops get the
 * scope "layers.3.attn" and its parameters the paths "layers.3.attn.wq".
 *
 * Layouts: weights are [in, out] (y = x @ W); routed expert weights are one tensor of
 * [E, in, out] per matrix, used by one grouped_matmul, whatever E is.  Activations are
 * [batch, seq, dim]; attention heads are split as [batch, seq, heads, head_dim], which
 * is the layout ROPE takes.
 *
 * Simplifications, on purpose: no dropout, no biases except linear(bias: true);
 * group-limited routing (groups, node_limit) lowers to primitive ops (limit_groups) and
 * is also recorded as attributes of the final TOPK for the parallel passes.
 */
#include <math.h>
#include <string.h>

#include "frontend/fe.h"
#include "ir/ir.h"

#define MAX_ARGS 16

struct args {
	const struct fe_expr *call;
	const char *const *names;
	const struct fe_expr *e[MAX_ARGS];
};

static void bind_args(struct fe *f, const struct fe_expr *call, const char *const *names,
		      int nreq, struct args *A)
{
	int n = 0;
	while (names[n])
		n++;
	memset(A, 0, sizeof *A);
	A->call = call;
	A->names = names;
	int npos = 0;
	for (int i = 0; i < call->nargs; i++) {
		const struct fe_arg *a = &call->args[i];
		int slot = -1;
		if (a->name) {
			for (int k = 0; k < n; k++)
				if (!strcmp(names[k], a->name))
					slot = k;
			if (slot < 0) {
				const char *c = fe_closest(a->name, names, n);
				const char *all = "";
				for (int k = 0; k < n; k++)
					all = ir_sprintf(f->a, "%s%s%s", all, k ? ", " : "", names[k]);
				fe_error(f, a->name_loc,
					 c ? ir_sprintf(f->a, "did you mean '%s'?", c)
					   : ir_sprintf(f->a, "the arguments of %s are: %s", call->name, all),
					 "%s has no argument '%s'", call->name, a->name);
			}
		} else {
			if (npos != i)
				fe_error(f, a->name_loc, NULL, "a positional argument follows named ones");
			if (npos >= n)
				fe_error(f, a->name_loc, NULL, "%s takes at most %d arguments", call->name, n);
			slot = npos++;
		}
		if (A->e[slot])
			fe_error(f, a->name_loc, NULL, "argument '%s' of %s is given twice", names[slot],
				 call->name);
		A->e[slot] = a->e;
	}
	for (int k = 0; k < nreq; k++)
		if (!A->e[k]) {
			const char *sig = "";
			for (int j = 0; j < nreq; j++)
				sig = ir_sprintf(f->a, "%s%s%s", sig, j ? ", " : "", names[j]);
			fe_error(f, call->loc, ir_sprintf(f->a, "%s(%s, ...)", call->name, sig),
				 "missing argument '%s' of %s", names[k], call->name);
		}
}

static struct ir_value *a_tensor(struct fe *f, struct args *A, int i)
{
	struct fe_val v = fe_eval(f, A->e[i]);
	if (v.k != V_TENSOR)
		fe_error(f, A->e[i]->loc, NULL, "argument '%s' of %s must be a tensor, got %s",
			 A->names[i], A->call->name, fe_val_kind_name(v.k));
	return v.t;
}

static int64_t a_int(struct fe *f, struct args *A, int i, int64_t dflt, int64_t min)
{
	if (!A->e[i])
		return dflt;
	struct fe_val v = fe_eval(f, A->e[i]);
	if (v.k != V_INT)
		fe_error(f, A->e[i]->loc, NULL, "argument '%s' of %s must be an integer, got %s",
			 A->names[i], A->call->name, fe_val_kind_name(v.k));
	if (v.i < min)
		fe_error(f, A->e[i]->loc, min == 1 ? "sizes are at least 1" : NULL,
			 "argument '%s' of %s must be at least %lld, got %lld", A->names[i],
			 A->call->name, (long long)min, (long long)v.i);
	return v.i;
}

static double a_float(struct fe *f, struct args *A, int i, double dflt)
{
	if (!A->e[i])
		return dflt;
	struct fe_val v = fe_eval(f, A->e[i]);
	if (v.k != V_INT && v.k != V_FLOAT)
		fe_error(f, A->e[i]->loc, NULL, "argument '%s' of %s must be a number, got %s",
			 A->names[i], A->call->name, fe_val_kind_name(v.k));
	return v.k == V_INT ? (double)v.i : v.f;
}

static int a_bool(struct fe *f, struct args *A, int i, int dflt)
{
	if (!A->e[i])
		return dflt;
	struct fe_val v = fe_eval(f, A->e[i]);
	if (v.k != V_BOOL)
		fe_error(f, A->e[i]->loc, NULL, "argument '%s' of %s must be true or false, got %s",
			 A->names[i], A->call->name, fe_val_kind_name(v.k));
	return (int)v.i;
}

/* A bare name (gate: sigmoid), a string, or a value that is a string. */
static const char *a_sym(struct fe *f, struct args *A, int i, const char *dflt)
{
	const struct fe_expr *e = A->e[i];
	if (!e)
		return dflt;
	if (e->kind == E_STR)
		return e->name;
	if (e->kind == E_IDENT) {
		struct fe_bind *b = NULL;
		for (b = f->frame; b && strcmp(b->name, e->name); b = b->next)
			;
		if (!b)
			for (b = f->globals; b && strcmp(b->name, e->name); b = b->next)
				;
		if (!b || b->v.k != V_STR)
			return e->name;
		return b->v.s;
	}
	struct fe_val v = fe_eval(f, e);
	if (v.k != V_STR)
		fe_error(f, e->loc, NULL, "argument '%s' of %s must be a name, got %s", A->names[i],
			 A->call->name, fe_val_kind_name(v.k));
	return v.s;
}

static void check_name(struct fe *f, struct args *A, int i, const char *name)
{
	if (!name)
		return;
	int ok = *name != 0;
	for (const char *p = name; *p; p++)
		ok &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
		      (p > name && *p >= '0' && *p <= '9');
	if (!ok)
		fe_error(f, A->e[i]->loc, "names are letters, digits and '_'", "bad name '%s'", name);
}

static const char *a_name(struct fe *f, struct args *A, int i)
{
	const char *n = a_sym(f, A, i, NULL);
	check_name(f, A, i, n);
	return n;
}

static struct fe_val tv(struct ir_value *t)
{
	struct fe_val v = { .k = V_TENSOR, .t = t };
	return v;
}

static const char *shp(struct fe *f, const struct ir_value *v)
{
	char buf[256];
	ir_shape_str(&v->shape, buf, sizeof buf);
	return ir_sprintf(f->a, "%s%s", ir_dtype_name(v->dtype), buf);
}

static void need_rank(struct fe *f, struct ir_value *x, int rank, const char *fn, const char *layout)
{
	if (x->shape.rank != rank || !ir_dtype_is_float(x->dtype))
		fe_error(f, f->cur, NULL, "%s takes a float tensor %s, got %s", fn, layout, shp(f, x));
}

/* Enter the scope of a new instance; returns the outer scope. */
static const char *enter_instance(struct fe *f, struct args *A, int name_slot, const char *dflt,
				  const char **inst)
{
	const char *given = name_slot >= 0 ? a_name(f, A, name_slot) : NULL;
	fe_set_loc(f, A->call->loc);
	const char *outer = f->scope;
	*inst = fe_instance(f, given, given ? A->e[name_slot]->loc : A->call->loc, dflt);
	fe_set_scope(f, *inst);
	return outer;
}

static struct ir_value *sh(int rank, const int64_t *d, struct ir_shape *out)
{
	*out = ir_shape_make(rank, d);
	return NULL;
}

static struct ir_value *reshape(struct fe *f, struct ir_value *x, int rank, const int64_t *d)
{
	struct ir_shape s;
	sh(rank, d, &s);
	return fe_reshape(f, x, s);
}

static struct ir_value *rope(struct fe *f, struct ir_value *x, double theta)
{
	if (x->shape.dim[3] % 2)
		fe_error(f, f->cur, "rope rotates pairs of the head dimension",
			 "rope needs an even head dimension, got %lld", (long long)x->shape.dim[3]);
	struct ir_value *v = fe_op1(f, IR_OP_ROPE, 1, &x, x->dtype, x->shape);
	ir_op_set_float(f->g, v->def, "theta", theta);
	ir_op_set_int(f->g, v->def, "inverse", 0);
	return v;
}

/* y = x / sqrt(mean(x^2) + eps) * weight, weight at SCOPE.pname */
static struct ir_value *rms(struct fe *f, struct ir_value *x, double eps, const char *pname)
{
	int64_t d = x->shape.dim[x->shape.rank - 1];
	struct ir_value *w = fe_param(f, f->scope, pname, IR_F32, ir_shape_of(1, d), "ones", 0);
	struct ir_value *ms = fe_reduce(f, IR_OP_REDUCE_MEAN, fe_unary(f, IR_OP_SQUARE, x), -1, 1);
	struct ir_value *r = fe_unary(f, IR_OP_RSQRT, fe_scale(f, ms, 1, eps));
	return fe_binary(f, IR_OP_MUL, fe_binary(f, IR_OP_MUL, x, r, "rmsnorm"), w, "rmsnorm");
}

static struct ir_value *weight(struct fe *f, const char *name, int64_t in, int64_t out, double std)
{
	return fe_param(f, f->scope, name, IR_F32, ir_shape_of(2, in, out), "normal", std);
}

/* SwiGLU: (silu(x W1) * (x W3)) W2, weights under the current scope */
static struct ir_value *ffn(struct fe *f, struct ir_value *x, int64_t hidden, double std)
{
	int64_t d = x->shape.dim[x->shape.rank - 1];
	struct ir_value *w1 = weight(f, "w1", d, hidden, std);
	struct ir_value *w3 = weight(f, "w3", d, hidden, std);
	struct ir_value *w2 = weight(f, "w2", hidden, d, std);
	struct ir_value *a = fe_unary(f, IR_OP_SILU, fe_matmul(f, x, w1, 0));
	struct ir_value *h = fe_binary(f, IR_OP_MUL, a, fe_matmul(f, x, w3, 0), "swiglu");
	return fe_matmul(f, h, w2, 0);
}

/* Causal attention over q[B,S,H,dq], k[B,S,KV,dq], v[B,S,KV,dv] -> [B,S,H*dv]: one
 * ATTENTION op (grouped-query when KV < H) on the heads where the projections put them,
 * scaled by 1/sqrt(dq); its row log-sum-exp (output 1) is kept for the backward. */
static struct ir_value *attend(struct fe *f, struct ir_value *q, struct ir_value *k,
			       struct ir_value *v)
{
	int64_t B = q->shape.dim[0], S = q->shape.dim[1], H = q->shape.dim[2];
	int64_t dq = q->shape.dim[3], dv = v->shape.dim[3];
	struct ir_value *in[3] = { q, k, v };
	struct ir_shape os = fe_shape_checked(f, ir_shape_of(4, B, S, H, dv));
	struct ir_op *op = ir_op_new(f->g, IR_OP_ATTENTION, 3, in, 2);
	fe_count_op(f);
	op->out[0]->dtype = q->dtype;
	op->out[0]->shape = os;
	op->out[1]->dtype = IR_F32;
	op->out[1]->shape = ir_shape_of(3, B, H, S);
	ir_op_set_int(f->g, op, "causal", 1);
	ir_op_set_float(f->g, op, "scale", 1.0 / sqrt((double)dq));
	return reshape(f, op->out[0], 3, (int64_t[]){ B, S, H * dv });
}

/* --- the intrinsics ----------------------------------------------------------------- */

static struct fe_val in_embed(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "tokens", "vocab", "dim", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 3, &A);
	struct ir_value *tok = a_tensor(f, &A, 0);
	int64_t V = a_int(f, &A, 1, 0, 1), D = a_int(f, &A, 2, 0, 1);
	double std = a_float(f, &A, 4, 0.02);
	const char *inst;
	const char *outer = enter_instance(f, &A, 3, "embed", &inst);
	if (ir_dtype_is_float(tok->dtype) || tok->shape.rank >= IR_MAX_RANK)
		fe_error(f, A.e[0]->loc, "embed looks up integer token ids, e.g. tokens: i32[batch, seq]",
			 "dtype mismatch: embed takes an integer tensor, got %s", shp(f, tok));
	struct ir_value *table = fe_param(f, inst, "weight", IR_F32, ir_shape_of(2, V, D), "normal", std);
	struct ir_shape s = tok->shape;
	s.dim[s.rank++] = D;
	struct ir_value *in[2] = { table, tok };
	struct ir_value *y = fe_op1(f, IR_OP_GATHER_ROWS, 2, in, IR_F32, s);
	fe_set_scope(f, outer);
	return tv(y);
}

static struct fe_val in_linear(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "out", "bias", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t N = a_int(f, &A, 1, 0, 1);
	int bias = a_bool(f, &A, 2, 0);
	double std = a_float(f, &A, 4, 0.02);
	const char *inst;
	const char *outer = enter_instance(f, &A, 3, "linear", &inst);
	if (x->shape.rank < 2 || !ir_dtype_is_float(x->dtype))
		fe_error(f, A.e[0]->loc, NULL, "linear takes a float tensor [..., in], got %s", shp(f, x));
	struct ir_value *y = fe_matmul(f, x, weight(f, "weight", x->shape.dim[x->shape.rank - 1], N, std), 0);
	if (bias)
		y = fe_binary(f, IR_OP_ADD, y,
			      fe_param(f, inst, "bias", IR_F32, ir_shape_of(1, N), "zeros", 0), "'+'");
	fe_set_scope(f, outer);
	return tv(y);
}

static struct fe_val in_rmsnorm(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "eps", "name", NULL };
	struct args A;
	bind_args(f, call, names, 1, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	double eps = a_float(f, &A, 1, 1e-6);
	if (!(eps >= 0))
		fe_error(f, A.e[1]->loc, NULL, "eps must not be negative");
	const char *inst;
	const char *outer = enter_instance(f, &A, 2, "norm", &inst);
	if (x->shape.rank < 1 || !ir_dtype_is_float(x->dtype))
		fe_error(f, A.e[0]->loc, NULL, "rmsnorm takes a float tensor, got %s", shp(f, x));
	struct ir_value *y = rms(f, x, eps, "weight");
	fe_set_scope(f, outer);
	return tv(y);
}

static void heads_divide(struct fe *f, struct args *A, int64_t heads, int64_t width, int slot)
{
	if (width % heads)
		fe_error(f, A->e[slot]->loc,
			 ir_sprintf(f->a, "choose heads dividing %lld, or give head_dim", (long long)width),
			 "heads (%lld) do not divide the width (%lld)", (long long)heads, (long long)width);
}

static struct fe_val in_attention(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "heads", "kv_heads", "head_dim", "theta",
					     "rope", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t H = a_int(f, &A, 1, 0, 1);
	int64_t KV = a_int(f, &A, 2, H, 1);
	int64_t hd = a_int(f, &A, 3, 0, 1);
	double theta = a_float(f, &A, 4, 10000.0);
	int use_rope = a_bool(f, &A, 5, 1);
	double std = a_float(f, &A, 7, 0.02);
	const char *inst;
	const char *outer = enter_instance(f, &A, 6, "attn", &inst);
	need_rank(f, x, 3, "attention", "[batch, seq, dim]");
	int64_t B = x->shape.dim[0], S = x->shape.dim[1], D = x->shape.dim[2];
	if (!A.e[3]) {
		heads_divide(f, &A, H, D, 1);
		hd = D / H;
	}
	if (H % KV)
		fe_error(f, A.e[2]->loc, "each group of query heads shares one key/value head",
			 "kv_heads (%lld) must divide heads (%lld)", (long long)KV, (long long)H);
	int64_t qd, kd;
	if (__builtin_mul_overflow(H, hd, &qd) || __builtin_mul_overflow(KV, hd, &kd))
		fe_error(f, call->loc, NULL, "heads * head_dim overflows 64 bits");
	struct ir_value *q = fe_matmul(f, x, weight(f, "wq", D, qd, std), 0);
	struct ir_value *k = fe_matmul(f, x, weight(f, "wk", D, kd, std), 0);
	struct ir_value *v = fe_matmul(f, x, weight(f, "wv", D, kd, std), 0);
	q = reshape(f, q, 4, (int64_t[]){ B, S, H, hd });
	k = reshape(f, k, 4, (int64_t[]){ B, S, KV, hd });
	v = reshape(f, v, 4, (int64_t[]){ B, S, KV, hd });
	if (use_rope) {
		q = rope(f, q, theta);
		k = rope(f, k, theta);
	}
	struct ir_value *o = attend(f, q, k, v);
	struct ir_value *y = fe_matmul(f, o, weight(f, "wo", qd, D, std), 0);
	fe_set_scope(f, outer);
	return tv(y);
}

static int64_t mul3(struct fe *f, int64_t a, int64_t b, int64_t c)
{
	int64_t r;
	if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r))
		fe_error(f, f->cur, "sizes are 64-bit", "a size overflows 64 bits");
	return r;
}

static int64_t add2(struct fe *f, int64_t a, int64_t b)
{
	int64_t r;
	if (__builtin_add_overflow(a, b, &r))
		fe_error(f, f->cur, "sizes are 64-bit", "a size overflows 64 bits");
	return r;
}

/* Multi-head latent attention (DeepSeek-V2/V3): queries through an optional low-rank
 * compression (q_rank), keys and values through a compressed latent (kv_rank) plus a
 * decoupled rotary key shared by all heads (rope_dim). */
static struct fe_val in_mla(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "heads", "kv_rank", "rope_dim", "head_dim",
					     "v_dim", "q_rank", "theta", "eps", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 3, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t H = a_int(f, &A, 1, 0, 1);
	int64_t kvr = a_int(f, &A, 2, 0, 1);
	int64_t rd = a_int(f, &A, 3, 64, 2);
	int64_t hd = a_int(f, &A, 4, 128, 1);
	int64_t vd = a_int(f, &A, 5, hd, 1);
	int64_t qr = a_int(f, &A, 6, 0, 0);
	double theta = a_float(f, &A, 7, 10000.0);
	double eps = a_float(f, &A, 8, 1e-6);
	double std = a_float(f, &A, 10, 0.02);
	const char *inst;
	const char *outer = enter_instance(f, &A, 9, "attn", &inst);
	need_rank(f, x, 3, "mla", "[batch, seq, dim]");
	int64_t B = x->shape.dim[0], S = x->shape.dim[1], D = x->shape.dim[2];
	int64_t qk = add2(f, hd, rd);
	struct ir_value *q;
	if (qr) {
		struct ir_value *cq = fe_matmul(f, x, weight(f, "wq_a", D, qr, std), 0);
		cq = rms(f, cq, eps, "q_norm.weight");
		q = fe_matmul(f, cq, weight(f, "wq_b", qr, mul3(f, H, qk, 1), std), 0);
	} else {
		q = fe_matmul(f, x, weight(f, "wq", D, mul3(f, H, qk, 1), std), 0);
	}
	q = reshape(f, q, 4, (int64_t[]){ B, S, H, qk });
	struct ir_value *qn = fe_slice(f, q, 3, 0, hd);
	struct ir_value *qp = rope(f, fe_slice(f, q, 3, hd, rd), theta);

	struct ir_value *kva = fe_matmul(f, x, weight(f, "wkv_a", D, add2(f, kvr, rd), std), 0);
	struct ir_value *ckv = rms(f, fe_slice(f, kva, 2, 0, kvr), eps, "kv_norm.weight");
	struct ir_value *kp = reshape(f, fe_slice(f, kva, 2, kvr, rd), 4, (int64_t[]){ B, S, 1, rd });
	kp = rope(f, kp, theta);
	struct ir_shape bs = ir_shape_of(4, B, S, H, rd);
	kp = fe_op1(f, IR_OP_BROADCAST, 1, &kp, kp->dtype, bs);

	struct ir_value *kv = fe_matmul(f, ckv, weight(f, "wkv_b", kvr, mul3(f, H, add2(f, hd, vd), 1), std), 0);
	kv = reshape(f, kv, 4, (int64_t[]){ B, S, H, hd + vd });
	struct ir_value *kn = fe_slice(f, kv, 3, 0, hd);
	struct ir_value *v = fe_slice(f, kv, 3, hd, vd);
	/* one op-making call per statement: C leaves the order of arguments open, and
	 * the order of the ops must not depend on the compiler */
	struct ir_value *qc = fe_concat(f, qn, qp, 3);
	struct ir_value *kc = fe_concat(f, kn, kp, 3);
	struct ir_value *o = attend(f, qc, kc, v);
	struct ir_value *y = fe_matmul(f, o, weight(f, "wo", mul3(f, H, vd, 1), D, std), 0);
	fe_set_scope(f, outer);
	return tv(y);
}

static struct fe_val in_swiglu(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "hidden", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t hidden = a_int(f, &A, 1, 0, 1);
	double std = a_float(f, &A, 3, 0.02);
	const char *inst;
	const char *outer = enter_instance(f, &A, 2, "ffn", &inst);
	if (x->shape.rank < 2 || !ir_dtype_is_float(x->dtype))
		fe_error(f, A.e[0]->loc, NULL, "swiglu takes a float tensor [..., dim], got %s", shp(f, x));
	struct ir_value *y = ffn(f, x, hidden, std);
	fe_set_scope(f, outer);
	return tv(y);
}

/* Node-limited routing (DESIGN.md, "Parallel layout"): the E experts fall in G equal
 * groups; each group scores the sum of its k / M highest values of sel (the biased
 * affinities s + b); the M best groups of a token are kept, and the others' experts get
 * sel - 1e30, below every kept one, so that the TOPK that follows chooses among the kept
 * groups' experts only (k <= M E / G is checked).  Hugging Face's DeepSeek-V3 computes
 * the same with n_group = G, topk_group = M (it sums a group's top 2: k / M for V3).
 * sel carries no gradient; the result is [N, E]. */
static struct ir_value *limit_groups(struct fe *f, struct ir_value *sel, int64_t N, int64_t E,
				     int64_t G, int64_t M, int64_t k)
{
	int64_t per = E / G, kg = k / M;
	struct ir_value *rows = reshape(f, sel, 2, (int64_t[]){ N * G, per });
	struct ir_value *ti = fe_op1(f, IR_OP_TOPK, 1, &rows, IR_I32, ir_shape_of(2, N * G, kg));
	ir_op_set_int(f->g, ti->def, "k", kg);
	struct ir_value *in2[2] = { rows, ti };
	struct ir_value *top = fe_op1(f, IR_OP_TAKE_ALONG, 2, in2, IR_F32, ir_shape_of(2, N * G, kg));
	struct ir_value *score = reshape(f, fe_reduce(f, IR_OP_REDUCE_SUM, top, -1, 0), 2,
					 (int64_t[]){ N, G });
	struct ir_value *gi = fe_op1(f, IR_OP_TOPK, 1, &score, IR_I32, ir_shape_of(2, N, M));
	ir_op_set_int(f->g, gi->def, "k", M);
	struct ir_value *ones = fe_op1(f, IR_OP_CONST, 0, NULL, IR_F32, ir_shape_of(2, N, M));
	ir_op_set_float(f->g, ones->def, "value", 1.0);
	struct ir_value *pin[2] = { ones, gi };
	struct ir_value *keep = fe_op1(f, IR_OP_PUT_ALONG, 2, pin, IR_F32, ir_shape_of(2, N, G));
	/* 0 for a kept group, -1e30 for a dropped one: sel + 0 is sel exactly */
	struct ir_value *pen = reshape(f, fe_scale(f, keep, 1e30, -1e30), 3, (int64_t[]){ N, G, 1 });
	struct ir_value *sel3 = reshape(f, sel, 3, (int64_t[]){ N, G, per });
	return reshape(f, fe_binary(f, IR_OP_ADD, sel3, pen, "'+'"), 2, (int64_t[]){ N, E });
}

/* DeepSeekMoE: shared experts plus routed experts chosen by top-k over affinities.
 *   s = sigmoid(x Wg) (or softmax); choice = topk(stop_grad(s) + bias) where the bias
 *   is a non-trainable parameter moved by the optimizer by gamma toward balance;
 *   gates = s at the choice, normalised to sum 1; the routed experts run as one
 *   dispatch, three grouped matmuls and one combine.  The sequence-wise balance loss
 *   alpha * sum_e f_e P_e (f_e = E/(kT) * tokens of the sequence sent to e, P_e = mean
 *   normalised affinity) is added to the graph's loss; the expert counts of the batch
 *   are the graph output "load.SCOPE". */
static struct fe_val in_moe(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "experts", "top_k", "hidden", "shared", "gate",
					     "balance", "alpha", "norm", "scale", "groups",
					     "node_limit", "name", "std", NULL };
	struct args A;
	bind_args(f, call, names, 4, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t E = a_int(f, &A, 1, 0, 1);
	int64_t k = a_int(f, &A, 2, 0, 1);
	int64_t H = a_int(f, &A, 3, 0, 1);
	int64_t shared = a_int(f, &A, 4, 0, 0);
	const char *gate = a_sym(f, &A, 5, "sigmoid");
	if (strcmp(gate, "sigmoid") && strcmp(gate, "softmax"))
		fe_error(f, A.e[5]->loc, "gate: sigmoid or gate: softmax", "unknown gate '%s'", gate);
	int sig = !strcmp(gate, "sigmoid");
	int has_bias = sig;
	double gamma = 0.001;
	const struct fe_expr *be = A.e[6];
	if (be) {
		if (be->kind == E_IDENT && !strcmp(be->name, "none")) {
			has_bias = 0;
		} else if (be->kind == E_CALL && !strcmp(be->name, "bias") && be->nargs == 1 &&
			   !be->args[0].name) {
			has_bias = 1;
			struct fe_val g = fe_eval(f, be->args[0].e);
			if (g.k != V_INT && g.k != V_FLOAT)
				fe_error(f, be->args[0].e->loc, NULL, "gamma must be a number, got %s",
					 fe_val_kind_name(g.k));
			gamma = g.k == V_INT ? (double)g.i : g.f;
			if (!(gamma >= 0))
				fe_error(f, be->args[0].e->loc, NULL, "gamma must not be negative");
		} else {
			fe_error(f, be->loc, "balance: bias(gamma) for auxiliary-loss-free balancing, or none",
				 "bad balance");
		}
	}
	double alpha = a_float(f, &A, 7, 0.0);
	if (!(alpha >= 0))
		fe_error(f, A.e[7]->loc, NULL, "alpha must not be negative");
	int norm = a_bool(f, &A, 8, sig);
	double scale = a_float(f, &A, 9, 1.0);
	int64_t groups = a_int(f, &A, 10, 1, 1);
	int64_t node_limit = a_int(f, &A, 11, groups, 1);
	double std = a_float(f, &A, 13, 0.02);
	if (k > E)
		fe_error(f, A.e[2]->loc, NULL, "top_k (%lld) must be at most experts (%lld)",
			 (long long)k, (long long)E);
	if (E % groups)
		fe_error(f, A.e[10]->loc, NULL, "groups (%lld) must divide experts (%lld)",
			 (long long)groups, (long long)E);
	if (node_limit > groups)
		fe_error(f, A.e[11]->loc, NULL, "node_limit (%lld) must be at most groups (%lld)",
			 (long long)node_limit, (long long)groups);
	if (node_limit < groups && k % node_limit)
		fe_error(f, A.e[11] ? A.e[11]->loc : A.e[2]->loc,
			 "each kept group is scored by the sum of its top_k / node_limit highest "
			 "affinities (DeepSeek-V3: 8 / 4 = 2)",
			 "node_limit (%lld) must divide top_k (%lld)", (long long)node_limit,
			 (long long)k);
	if (node_limit < groups && k > node_limit * (E / groups))
		fe_error(f, A.e[2]->loc, NULL,
			 "top_k (%lld) must be at most the experts of node_limit groups (%lld x %lld)",
			 (long long)k, (long long)node_limit, (long long)(E / groups));
	if (E > INT32_MAX - 1)
		fe_error(f, A.e[1]->loc, NULL, "too many experts");
	const char *inst;
	const char *outer = enter_instance(f, &A, 12, "moe", &inst);
	if ((x->shape.rank != 2 && x->shape.rank != 3) || !ir_dtype_is_float(x->dtype))
		fe_error(f, A.e[0]->loc, NULL, "moe takes a float tensor [batch, seq, dim], got %s",
			 shp(f, x));
	int64_t D = x->shape.dim[x->shape.rank - 1];
	int64_t G = x->shape.rank == 3 ? x->shape.dim[0] : 1;
	int64_t T = x->shape.rank == 3 ? x->shape.dim[1] : x->shape.dim[0];
	int64_t N = mul3(f, G, T, 1), R = mul3(f, N, k, 1);
	struct ir_value *xf = reshape(f, x, 2, (int64_t[]){ N, D });

	struct ir_value *u = fe_matmul(f, xf, fe_param(f, inst, "gate.weight", IR_F32,
						       ir_shape_of(2, D, E), "normal", std), 0);
	struct ir_value *s = sig ? fe_unary(f, IR_OP_SIGMOID, u) : fe_softmax(f, u, 0);
	struct ir_value *sel = s;
	if (has_bias) {
		struct ir_value *b = fe_param(f, inst, "gate.bias", IR_F32, ir_shape_of(1, E), "zeros", 0);
		ir_op_set_int(f->g, b->def, "trainable", 0);
		ir_op_set_float(f->g, b->def, "gamma", gamma);
		sel = fe_binary(f, IR_OP_ADD, fe_unary(f, IR_OP_STOP_GRAD, s), b, "'+'");
	}
	if (node_limit < groups)
		sel = limit_groups(f, has_bias ? sel : fe_unary(f, IR_OP_STOP_GRAD, sel), N, E, groups,
				   node_limit, k);
	struct ir_value *idx = fe_op1(f, IR_OP_TOPK, 1, &sel, IR_I32, ir_shape_of(2, N, k));
	ir_op_set_int(f->g, idx->def, "k", k);
	if (groups > 1) {
		ir_op_set_int(f->g, idx->def, "groups", groups);
		ir_op_set_int(f->g, idx->def, "node_limit", node_limit);
	}
	struct ir_value *in2[2] = { s, idx };
	struct ir_value *gates = fe_op1(f, IR_OP_TAKE_ALONG, 2, in2, IR_F32, ir_shape_of(2, N, k));
	if (norm)
		gates = fe_binary(f, IR_OP_DIV, gates, fe_reduce(f, IR_OP_REDUCE_SUM, gates, -1, 1), "'/'");
	if (scale != 1.0)
		gates = fe_scale(f, gates, scale, 0);

	struct ir_value *din[2] = { xf, idx };
	struct ir_op *disp = fe_op(f, IR_OP_MOE_DISPATCH, 2, din, 3);
	ir_op_set_int(f->g, disp, "experts", E);
	disp->out[0]->dtype = IR_F32;
	disp->out[0]->shape = fe_shape_checked(f, ir_shape_of(2, R, D));
	disp->out[1]->dtype = IR_I32;
	disp->out[1]->shape = ir_shape_of(1, E + 1);
	disp->out[2]->dtype = IR_I32;
	disp->out[2]->shape = ir_shape_of(1, R);
	struct ir_value *xs = disp->out[0], *offs = disp->out[1], *perm = disp->out[2];
	struct ir_value *w[3];
	static const char *const wn[3] = { "experts.w1", "experts.w3", "experts.w2" };
	for (int i = 0; i < 3; i++) {
		struct ir_shape ws = i < 2 ? ir_shape_of(3, E, D, H) : ir_shape_of(3, E, H, D);
		w[i] = fe_param(f, inst, wn[i], IR_F32, ws, "normal", std);
		ir_op_set_int(f->g, w[i]->def, "experts", E);
		ir_op_set_int(f->g, w[i]->def, "top_k", k);
	}
	struct ir_value *gm[2];
	for (int i = 0; i < 2; i++) {
		struct ir_value *in3[3] = { xs, w[i], offs };
		gm[i] = fe_op1(f, IR_OP_GROUPED_MATMUL, 3, in3, IR_F32, ir_shape_of(2, R, H));
		ir_op_set_int(f->g, gm[i]->def, "trans_b", 0);
	}
	struct ir_value *a = fe_binary(f, IR_OP_MUL, fe_unary(f, IR_OP_SILU, gm[0]), gm[1], "moe");
	struct ir_value *in3[3] = { a, w[2], offs };
	struct ir_value *ys = fe_op1(f, IR_OP_GROUPED_MATMUL, 3, in3, IR_F32, ir_shape_of(2, R, D));
	ir_op_set_int(f->g, ys->def, "trans_b", 0);
	struct ir_value *cin[3] = { ys, perm, gates };
	struct ir_value *y = fe_op1(f, IR_OP_MOE_COMBINE, 3, cin, IR_F32, ir_shape_of(2, N, D));
	if (shared) {
		fe_set_scope(f, ir_sprintf(f->g->arena, "%s.shared", inst));
		struct ir_value *ys2 = ffn(f, xf, mul3(f, shared, H, 1), std);
		fe_set_scope(f, inst);
		y = fe_binary(f, IR_OP_ADD, y, ys2, "'+'");
	}

	/* expert load: counts per sequence, summed over the batch for the graph output */
	struct ir_value *idx3 = reshape(f, idx, 3, (int64_t[]){ G, T, k });
	struct ir_value *cnt = fe_op1(f, IR_OP_EXPERT_COUNT, 1, &idx3, IR_F32, ir_shape_of(2, G, E));
	ir_op_set_int(f->g, cnt->def, "experts", E);
	struct ir_value *load = fe_reduce(f, IR_OP_REDUCE_SUM, cnt, 0, 0);
	struct fe_output *o = ir_alloc(f->a, sizeof *o);
	o->name = ir_sprintf(f->a, "load.%s", inst);
	o->v = load;
	*f->extra_tail = o;
	f->extra_tail = &o->next;
	if (alpha > 0) {
		struct ir_value *fr = fe_scale(f, cnt, (double)E / ((double)k * (double)T), 0);
		struct ir_value *sn = fe_binary(f, IR_OP_DIV, s, fe_reduce(f, IR_OP_REDUCE_SUM, s, -1, 1), "'/'");
		struct ir_value *P = fe_reduce(f, IR_OP_REDUCE_MEAN,
					       reshape(f, sn, 3, (int64_t[]){ G, T, E }), 1, 0);
		struct ir_value *l = fe_reduce(f, IR_OP_REDUCE_SUM, fe_binary(f, IR_OP_MUL, fr, P, "moe"), -1, 0);
		l = fe_scale(f, fe_reduce(f, IR_OP_REDUCE_MEAN, l, 0, 0), alpha, 0);
		f->aux_loss = f->aux_loss ? fe_binary(f, IR_OP_ADD, f->aux_loss, l, "'+'") : l;
	}
	if (x->shape.rank == 3)
		y = reshape(f, y, 3, (int64_t[]){ G, T, D });
	fe_set_scope(f, outer);
	return tv(y);
}

static struct ir_value *xent(struct fe *f, struct ir_value *logits, struct ir_value *tg,
			     struct fe_loc tloc)
{
	if (logits->shape.rank < 2 || !ir_dtype_is_float(logits->dtype))
		fe_error(f, f->cur, NULL, "cross_entropy takes float logits [..., vocab], got %s",
			 shp(f, logits));
	if (ir_dtype_is_float(tg->dtype))
		fe_error(f, tloc, "targets are token ids, e.g. targets: i32[batch, seq]",
			 "dtype mismatch: cross_entropy takes integer targets, got %s", shp(f, tg));
	int ok = tg->shape.rank == logits->shape.rank - 1;
	for (int i = 0; ok && i < tg->shape.rank; i++)
		ok = tg->shape.dim[i] == logits->shape.dim[i];
	if (!ok)
		fe_error(f, f->cur, "the targets have the shape of the logits without the last dimension",
			 "shape mismatch in cross_entropy: logits %s and targets %s", shp(f, logits),
			 shp(f, tg));
	int64_t V = logits->shape.dim[logits->shape.rank - 1];
	int64_t N = ir_shape_numel(&tg->shape);
	struct ir_value *in[2];
	in[0] = reshape(f, logits, 2, (int64_t[]){ N, V });
	in[1] = reshape(f, tg, 1, (int64_t[]){ N });
	return fe_op1(f, IR_OP_CROSS_ENTROPY, 2, in, IR_F32, ir_shape_of(0));
}

static struct fe_val in_cross_entropy(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "logits", "targets", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct ir_value *l = a_tensor(f, &A, 0), *t = a_tensor(f, &A, 1);
	fe_set_loc(f, call->loc);
	return tv(xent(f, l, t, A.e[1]->loc));
}

/* An rmsnorm as its own instance of the current scope (default name dflt). */
static struct ir_value *rms_instance(struct fe *f, struct ir_value *x, double eps, const char *dflt)
{
	const char *outer = f->scope;
	fe_set_scope(f, fe_instance(f, NULL, f->cur, dflt));
	struct ir_value *y = rms(f, x, eps, "weight");
	fe_set_scope(f, outer);
	return y;
}

/* Multi-token prediction (DeepSeek-V3): module k (scope mtp.K-1) combines the hidden
 * state of depth k-1 at position i with the embedding of token i+k, runs one block and
 * predicts token i+k+1 through the shared embedding and output head.  Returns the mean
 * of the modules' losses; the caller weights it (loss += lambda * mtp(...)). */
static struct fe_val in_mtp(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "h", "tokens", "targets", "block", "depth", "eps",
					     "name", NULL };
	struct args A;
	bind_args(f, call, names, 3, &A);
	struct ir_value *h = a_tensor(f, &A, 0);
	struct ir_value *tok = a_tensor(f, &A, 1);
	struct ir_value *tg = a_tensor(f, &A, 2);
	const char *bname = a_sym(f, &A, 3, NULL);
	int64_t depth = a_int(f, &A, 4, 1, 1);
	double eps = a_float(f, &A, 5, 1e-6);
	struct fe_block *blk = bname ? fe_find_block(f, bname) : NULL;
	if (!bname) { /* the model's only block, if it has one */
		blk = f->prog.blocks && !f->prog.blocks->next ? f->prog.blocks : NULL;
		if (!blk)
			fe_error(f, call->loc, "name the transformer block: mtp(..., block: layer)",
				 "missing argument 'block' of mtp (the model has %s blocks)",
				 f->prog.blocks ? "several" : "no");
	}
	if (!blk)
		fe_error(f, A.e[3]->loc, "block: names a block of the model, e.g. block: layer",
			 "unknown block '%s'", bname);
	const char *inst;
	const char *outer = enter_instance(f, &A, 6, "mtp", &inst);
	need_rank(f, h, 3, "mtp", "[batch, seq, dim]");
	int64_t B = h->shape.dim[0], S = h->shape.dim[1], D = h->shape.dim[2];
	if (ir_dtype_is_float(tok->dtype) || tok->shape.rank != 2 || tok->shape.dim[0] != B ||
	    tok->shape.dim[1] != S)
		fe_error(f, A.e[1]->loc, NULL, "mtp needs token ids [%lld, %lld], got %s",
			 (long long)B, (long long)S, shp(f, tok));
	if (ir_dtype_is_float(tg->dtype) || !ir_shape_eq(&tg->shape, &tok->shape))
		fe_error(f, A.e[2]->loc, NULL, "mtp needs targets like the tokens, %s, got %s",
			 shp(f, tok), shp(f, tg));
	if (depth >= S)
		fe_error(f, A.e[4]->loc, NULL, "depth (%lld) must be less than the sequence (%lld)",
			 (long long)depth, (long long)S);
	struct ir_value *emb = f->embed_w, *head = f->head_w;
	if (!emb || !head || emb->shape.rank != 2 || head->shape.rank != 2 ||
	    emb->shape.dim[1] != D || head->shape.dim[0] != D)
		fe_error(f, call->loc,
			 "mtp shares the embedding 'embed.weight' [vocab, dim] and the output head "
			 "'head.weight' [dim, vocab]: call embed(...) and linear(..., name: head) first",
			 "mtp needs the model's embedding and output head");
	struct ir_value *prev = h, *total = NULL;
	for (int64_t d = 1; d <= depth; d++) {
		fe_set_scope(f, inst);
		const char *mod = fe_instance(f, ir_sprintf(f->a, "%lld", (long long)(d - 1)),
					      call->loc, NULL);
		fe_set_scope(f, mod);
		int64_t L = S - d;
		struct ir_value *hk = fe_slice(f, prev, 1, 0, L);
		struct ir_value *tk = fe_slice(f, tok, 1, d, L);
		struct ir_value *gin[2] = { emb, tk };
		struct ir_value *e = fe_op1(f, IR_OP_GATHER_ROWS, 2, gin, IR_F32, ir_shape_of(3, B, L, D));
		/* its own layers are claimed before the block's, which may use default names */
		struct ir_value *hn = rms_instance(f, hk, eps, "hnorm");
		struct ir_value *en = rms_instance(f, e, eps, "enorm");
		struct ir_value *c = fe_concat(f, hn, en, 2);
		const char *proj = fe_instance(f, NULL, call->loc, "proj");
		struct ir_value *p = fe_matmul(f, c, fe_param(f, proj, "weight", IR_F32,
							   ir_shape_of(2, 2 * D, D), "normal", 0.02), 0);
		struct fe_val bv = fe_call_block_with(f, blk, call, p);
		fe_set_loc(f, call->loc);
		if (bv.k != V_TENSOR || !ir_shape_eq(&bv.t->shape, &p->shape))
			fe_error(f, A.e[3] ? A.e[3]->loc : call->loc, NULL, "block '%s' must return a tensor like its input %s, got %s",
				 blk->name, shp(f, p), bv.k == V_TENSOR ? shp(f, bv.t) : fe_val_kind_name(bv.k));
		struct ir_value *logits = fe_matmul(f, rms_instance(f, bv.t, eps, "out_norm"), head, 0);
		struct ir_value *ce = xent(f, logits, fe_slice(f, tg, 1, d, L), A.e[2]->loc);
		total = total ? fe_binary(f, IR_OP_ADD, total, ce, "'+'") : ce;
		prev = bv.t;
	}
	if (depth > 1)
		total = fe_scale(f, total, 1.0 / (double)depth, 0);
	fe_set_scope(f, outer);
	return tv(total);
}

/* --- primitive functions ---------------------------------------------------------------- */

static struct fe_val in_matmul(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "a", "b", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct ir_value *a = a_tensor(f, &A, 0), *b = a_tensor(f, &A, 1);
	fe_set_loc(f, call->loc);
	return tv(fe_matmul(f, a, b, 0));
}

static const struct {
	const char *name;
	enum ir_opkind op;
} unary_fns[] = {
	{ "silu", IR_OP_SILU }, { "sigmoid", IR_OP_SIGMOID }, { "relu", IR_OP_RELU },
	{ "tanh", IR_OP_TANH }, { "exp", IR_OP_EXP }, { "log", IR_OP_LOG },
	{ "sqrt", IR_OP_SQRT }, { "rsqrt", IR_OP_RSQRT },
};

static struct fe_val in_unary(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", NULL };
	struct args A;
	bind_args(f, call, names, 1, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	fe_set_loc(f, call->loc);
	for (size_t i = 0; i < sizeof unary_fns / sizeof unary_fns[0]; i++)
		if (!strcmp(unary_fns[i].name, call->name))
			return tv(fe_unary(f, unary_fns[i].op, x));
	fe_error(f, call->loc, NULL, "internal error: unary function '%s'", call->name);
}

static struct fe_val in_softmax(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "causal", NULL };
	struct args A;
	bind_args(f, call, names, 1, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int causal = a_bool(f, &A, 1, 0);
	fe_set_loc(f, call->loc);
	return tv(fe_softmax(f, x, causal));
}

static struct fe_val in_reduce(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "x", "axis", "keepdim", NULL };
	struct args A;
	bind_args(f, call, names, 1, &A);
	struct ir_value *x = a_tensor(f, &A, 0);
	int64_t axis = a_int(f, &A, 1, -1, -IR_MAX_RANK);
	int keep = a_bool(f, &A, 2, 0);
	fe_set_loc(f, call->loc);
	if (axis >= IR_MAX_RANK)
		fe_error(f, A.e[1]->loc, NULL, "axis %lld is out of range", (long long)axis);
	return tv(fe_reduce(f, !strcmp(call->name, "sum") ? IR_OP_REDUCE_SUM : IR_OP_REDUCE_MEAN,
			    x, (int)axis, keep));
}

static struct fe_val in_minmax(struct fe *f, const struct fe_expr *call)
{
	static const char *const names[] = { "a", "b", NULL };
	struct args A;
	bind_args(f, call, names, 2, &A);
	struct fe_val a = fe_eval(f, A.e[0]), b = fe_eval(f, A.e[1]);
	int is_min = !strcmp(call->name, "min");
	if (a.k == V_INT && b.k == V_INT)
		return (is_min ? a.i <= b.i : a.i >= b.i) ? a : b;
	if ((a.k != V_INT && a.k != V_FLOAT) || (b.k != V_INT && b.k != V_FLOAT))
		fe_error(f, call->loc, NULL, "%s takes two numbers", call->name);
	double x = a.k == V_INT ? (double)a.i : a.f, y = b.k == V_INT ? (double)b.i : b.f;
	struct fe_val r = { .k = V_FLOAT, .f = is_min ? fmin(x, y) : fmax(x, y) };
	return r;
}

static const struct {
	const char *name;
	struct fe_val (*fn)(struct fe *f, const struct fe_expr *call);
} table[] = {
	{ "embed", in_embed }, { "linear", in_linear }, { "rmsnorm", in_rmsnorm },
	{ "attention", in_attention }, { "mla", in_mla }, { "swiglu", in_swiglu },
	{ "moe", in_moe }, { "mtp", in_mtp }, { "cross_entropy", in_cross_entropy },
	{ "matmul", in_matmul }, { "silu", in_unary }, { "sigmoid", in_unary },
	{ "relu", in_unary }, { "tanh", in_unary }, { "exp", in_unary }, { "log", in_unary },
	{ "sqrt", in_unary }, { "rsqrt", in_unary }, { "softmax", in_softmax },
	{ "sum", in_reduce }, { "mean", in_reduce }, { "min", in_minmax }, { "max", in_minmax },
};

#define N_TABLE (sizeof table / sizeof table[0])

const char *const *fe_intrinsic_names(int *n)
{
	static const char *names[N_TABLE];
	for (size_t i = 0; i < N_TABLE; i++)
		names[i] = table[i].name;
	*n = (int)N_TABLE;
	return names;
}

int fe_call_intrinsic(struct fe *f, const struct fe_expr *call, struct fe_val *out)
{
	for (size_t i = 0; i < N_TABLE; i++)
		if (!strcmp(table[i].name, call->name)) {
			const char *outer = f->scope;
			*out = table[i].fn(f, call);
			fe_set_scope(f, outer);
			return 1;
		}
	return 0;
}
