/*
 * lower.c - evaluate the AST and lower it to a forward IR graph.
 *
 * Takes a parsed program (parse.c); builds the graph through the builder of ir/ir.c.
 * Lowering is evaluation: constants, loops, conditionals and block calls are executed
 * at compile time, and every tensor operation met on the way appends IR ops.  So loops
 * unroll, a conditional lowers only the branch it takes, and a block called in a loop
 * gives one copy of its ops per iteration, each under its own scope ("layers.3").
 *
 * Guarantees: every op carries the location of the expression that made it and the
 * dotted scope of the loops and intrinsics around it; every shape is checked when the
 * op is made, so a mismatch is reported at the source with both shapes; parameter
 * paths are unique.  The number of ops and of loop iterations is bounded so that no
 * input can make lowering run away.
 *
 * Values are compile-time (bool, int, float, str) or tensors.  Integers are 64-bit and
 * every overflow is an error; '/' on two integers divides exactly or truncates (as C).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/fe.h"
#include "ir/ir.h"

const char *fe_val_kind_name(enum fe_vkind k)
{
	switch (k) {
	case V_NONE: return "nothing";
	case V_BOOL: return "a bool";
	case V_INT: return "an integer";
	case V_FLOAT: return "a float";
	case V_STR: return "a string";
	case V_TENSOR: return "a tensor";
	}
	return "?";
}

static const char *shape_str(struct fe *f, const struct ir_shape *s)
{
	char buf[256];
	ir_shape_str(s, buf, sizeof buf);
	return ir_strdup(f->a, buf);
}

static const char *tensor_str(struct fe *f, const struct ir_value *v)
{
	return ir_sprintf(f->a, "%s%s", ir_dtype_name(v->dtype), shape_str(f, &v->shape));
}

void fe_set_loc(struct fe *f, struct fe_loc loc)
{
	f->cur = loc;
	struct ir_loc l = { f->gfile, loc.line, loc.col };
	ir_graph_set_context(f->g, l, f->scope);
}

void fe_set_scope(struct fe *f, const char *scope)
{
	f->scope = scope;
	fe_set_loc(f, f->cur);
}

/* --- the set of claimed paths (open addressing over the arena) ------------------------ */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static int path_has(struct fe *f, const char *p)
{
	struct fe_pathset *ps = &f->paths;
	if (!ps->cap)
		return 0;
	for (size_t i = hash_str(p) & (ps->cap - 1);; i = (i + 1) & (ps->cap - 1)) {
		if (!ps->slot[i])
			return 0;
		if (!strcmp(ps->slot[i], p))
			return 1;
	}
}

static void path_add(struct fe *f, const char *p)
{
	struct fe_pathset *ps = &f->paths;
	if (2 * (ps->n + 1) > ps->cap) {
		size_t nc = ps->cap ? 2 * ps->cap : 256;
		char **ns = ir_alloc(f->a, sizeof *ns * nc);
		for (size_t k = 0; k < ps->cap; k++)
			if (ps->slot[k]) {
				size_t i = hash_str(ps->slot[k]) & (nc - 1);
				while (ns[i])
					i = (i + 1) & (nc - 1);
				ns[i] = ps->slot[k];
			}
		ps->slot = ns;
		ps->cap = nc;
	}
	size_t i = hash_str(p) & (ps->cap - 1);
	while (ps->slot[i])
		i = (i + 1) & (ps->cap - 1);
	ps->slot[i] = ir_strdup(f->a, p);
	ps->n++;
}

static const char *join(struct fe *f, const char *scope, const char *name)
{
	return *scope ? ir_sprintf(f->g->arena, "%s.%s", scope, name) : ir_strdup(f->g->arena, name);
}

void fe_path_claim(struct fe *f, const char *path, struct fe_loc loc)
{
	if (path_has(f, path))
		fe_error(f, loc, "names of parameters and layers must be unique in their scope; "
			 "give this one another name (name: ...) or move it into a loop",
			 "'%s' is defined twice", path);
	path_add(f, path);
}

const char *fe_instance(struct fe *f, const char *given, struct fe_loc given_loc,
			const char *dflt)
{
	if (given) {
		const char *p = join(f, f->scope, given);
		fe_path_claim(f, p, given_loc);
		return p;
	}
	const char *p = join(f, f->scope, dflt);
	for (int k = 1; path_has(f, p); k++)
		p = join(f, f->scope, ir_sprintf(f->a, "%s_%d", dflt, k));
	path_add(f, p);
	return p;
}

/* --- tensor builders --------------------------------------------------------------- */

void fe_count_op(struct fe *f)
{
	if (f->g->n_ops > FE_MAX_OPS)
		fe_error(f, f->cur, "a loop or a block call is probably far larger than meant",
			 "the model lowers to more than %d ops", FE_MAX_OPS);
}

struct ir_shape fe_shape_checked(struct fe *f, struct ir_shape s)
{
	for (int i = 0; i < s.rank; i++)
		if (s.dim[i] < 1)
			fe_error(f, f->cur, NULL, "dimension %d of shape %s is not positive", i,
				 shape_str(f, &s));
	/* 2^48 elements: far above any real model (DeepSeek-V3's largest tensor has 2^32),
	 * low enough that byte counts and sums over tensors in later passes fit 64 bits */
	int64_t n = ir_shape_numel(&s);
	if (n < 0 || n > ((int64_t)1 << 48))
		fe_error(f, f->cur, "a tensor holds at most 2^48 elements",
			 "a tensor of shape %s has more than 2^48 elements", shape_str(f, &s));
	return s;
}

struct ir_op *fe_op(struct fe *f, enum ir_opkind k, int n, struct ir_value **in, int nout)
{
	struct ir_op *op = ir_op_new(f->g, k, n, in, nout);
	fe_count_op(f);
	return op;
}

struct ir_value *fe_op1(struct fe *f, enum ir_opkind k, int n, struct ir_value **in,
			    enum ir_dtype t, struct ir_shape s)
{
	s = fe_shape_checked(f, s);
	struct ir_value *v = ir_op1(f->g, k, n, in, t, s);
	fe_count_op(f);
	return v;
}

struct ir_value *fe_param(struct fe *f, const char *scope, const char *name,
			  enum ir_dtype dt, struct ir_shape s, const char *init, double std)
{
	const char *path = join(f, scope, name);
	fe_path_claim(f, path, f->cur);
	struct ir_value *v = fe_op1(f, IR_OP_PARAM, 0, NULL, dt, s);
	struct ir_op *op = v->def;
	op->path = path;
	v->name = path;
	ir_op_set_str(f->g, op, "init", init);
	if (!strcmp(init, "normal") || !strcmp(init, "uniform"))
		ir_op_set_float(f->g, op, "std", std);
	ir_op_set_int(f->g, op, "fan_in", s.rank >= 2 ? s.dim[s.rank - 2] : s.dim[0]);
	if (!strcmp(path, "embed.weight"))
		f->embed_w = v;
	else if (!strcmp(path, "head.weight"))
		f->head_w = v;
	return v;
}

static void need_float(struct fe *f, struct ir_value *x, const char *what)
{
	if (!ir_dtype_is_float(x->dtype))
		fe_error(f, f->cur, "integer tensors (token ids) only index embeddings and targets",
			 "dtype mismatch: %s needs a float tensor, got %s", what, tensor_str(f, x));
}

struct ir_value *fe_unary(struct fe *f, enum ir_opkind k, struct ir_value *x)
{
	if (k != IR_OP_STOP_GRAD)
		need_float(f, x, ir_op_name(k));
	return fe_op1(f, k, 1, &x, x->dtype, x->shape);
}

struct ir_value *fe_binary(struct fe *f, enum ir_opkind k, struct ir_value *a,
			   struct ir_value *b, const char *what)
{
	need_float(f, a, what);
	need_float(f, b, what);
	if (a->dtype != b->dtype)
		fe_error(f, f->cur, NULL, "dtype mismatch in %s: %s and %s", what, tensor_str(f, a),
			 tensor_str(f, b));
	struct ir_shape s;
	if (!ir_shape_broadcast(&a->shape, &b->shape, &s))
		fe_error(f, f->cur, "shapes combine when their trailing dimensions are equal or 1",
			 "shape mismatch in %s: %s and %s", what, shape_str(f, &a->shape),
			 shape_str(f, &b->shape));
	struct ir_value *in[2] = { a, b };
	return fe_op1(f, k, 2, in, a->dtype, s);
}

struct ir_value *fe_scale(struct fe *f, struct ir_value *x, double alpha, double beta)
{
	need_float(f, x, "arithmetic");
	struct ir_value *v = fe_op1(f, IR_OP_SCALE, 1, &x, x->dtype, x->shape);
	ir_op_set_float(f->g, v->def, "alpha", alpha);
	ir_op_set_float(f->g, v->def, "beta", beta);
	return v;
}

struct ir_value *fe_matmul(struct fe *f, struct ir_value *a, struct ir_value *b, int trans_b)
{
	need_float(f, a, "matmul");
	need_float(f, b, "matmul");
	const struct ir_shape *sa = &a->shape, *sb = &b->shape;
	if (sa->rank < 2 || sb->rank < 2)
		fe_error(f, f->cur, NULL, "matmul needs matrices: %s and %s", shape_str(f, sa),
			 shape_str(f, sb));
	int64_t k = sa->dim[sa->rank - 1];
	int64_t kb = sb->dim[sb->rank - (trans_b ? 1 : 2)];
	int64_t n = sb->dim[sb->rank - (trans_b ? 2 : 1)];
	int batch_ok = sb->rank == 2;
	if (!batch_ok && sb->rank == sa->rank) {
		batch_ok = 1;
		for (int i = 0; i < sa->rank - 2; i++)
			batch_ok &= sa->dim[i] == sb->dim[i];
	}
	if (k != kb || !batch_ok)
		fe_error(f, f->cur, "in a @ b the last dimension of a must equal the first of b's last two",
			 "shape mismatch in matmul: %s and %s", shape_str(f, sa), shape_str(f, sb));
	if (a->dtype != b->dtype)
		fe_error(f, f->cur, NULL, "dtype mismatch in matmul: %s and %s", tensor_str(f, a),
			 tensor_str(f, b));
	struct ir_shape s = *sa;
	s.dim[s.rank - 1] = n;
	struct ir_value *in[2] = { a, b };
	struct ir_value *v = fe_op1(f, IR_OP_MATMUL, 2, in, a->dtype, s);
	ir_op_set_int(f->g, v->def, "trans_a", 0);
	ir_op_set_int(f->g, v->def, "trans_b", trans_b);
	return v;
}

struct ir_value *fe_reshape(struct fe *f, struct ir_value *x, struct ir_shape s)
{
	s = fe_shape_checked(f, s);
	if (ir_shape_numel(&s) != ir_shape_numel(&x->shape))
		fe_error(f, f->cur, NULL, "cannot reshape %s to %s", shape_str(f, &x->shape),
			 shape_str(f, &s));
	if (ir_shape_eq(&s, &x->shape))
		return x;
	return fe_op1(f, IR_OP_RESHAPE, 1, &x, x->dtype, s);
}

struct ir_value *fe_transpose(struct fe *f, struct ir_value *x, int n, const int64_t *perm)
{
	struct ir_shape s = x->shape;
	for (int i = 0; i < n; i++)
		s.dim[i] = x->shape.dim[perm[i]];
	struct ir_value *v = fe_op1(f, IR_OP_TRANSPOSE, 1, &x, x->dtype, s);
	ir_op_set_ints(f->g, v->def, "perm", n, perm);
	return v;
}

struct ir_value *fe_slice(struct fe *f, struct ir_value *x, int axis, int64_t start, int64_t len)
{
	if (start < 0 || len < 1 || start > x->shape.dim[axis] - len)
		fe_error(f, f->cur, NULL, "slice %lld..%lld of dimension %d of %s is out of range",
			 (long long)start, (long long)start + len, axis, shape_str(f, &x->shape));
	if (start == 0 && len == x->shape.dim[axis])
		return x;
	struct ir_shape s = x->shape;
	s.dim[axis] = len;
	struct ir_value *v = fe_op1(f, IR_OP_SLICE, 1, &x, x->dtype, s);
	ir_op_set_int(f->g, v->def, "axis", axis);
	ir_op_set_int(f->g, v->def, "start", start);
	return v;
}

struct ir_value *fe_concat(struct fe *f, struct ir_value *a, struct ir_value *b, int axis)
{
	struct ir_shape s = a->shape;
	int ok = a->shape.rank == b->shape.rank && a->dtype == b->dtype;
	for (int i = 0; ok && i < s.rank; i++)
		ok = i == axis || a->shape.dim[i] == b->shape.dim[i];
	if (!ok)
		fe_error(f, f->cur, NULL, "shape mismatch in concat: %s and %s", tensor_str(f, a),
			 tensor_str(f, b));
	s.dim[axis] = a->shape.dim[axis] + b->shape.dim[axis];
	struct ir_value *in[2] = { a, b };
	struct ir_value *v = fe_op1(f, IR_OP_CONCAT, 2, in, a->dtype, s);
	ir_op_set_int(f->g, v->def, "axis", axis);
	return v;
}

struct ir_value *fe_reduce(struct fe *f, enum ir_opkind k, struct ir_value *x, int axis,
			   int keepdim)
{
	need_float(f, x, ir_op_name(k));
	int r = x->shape.rank;
	if (axis < -r || axis >= r || r == 0)
		fe_error(f, f->cur, NULL, "axis %d is out of range for %s", axis, shape_str(f, &x->shape));
	int ax = axis < 0 ? axis + r : axis;
	struct ir_shape s = { 0 };
	for (int i = 0; i < r; i++) {
		if (i == ax) {
			if (keepdim)
				s.dim[s.rank++] = 1;
		} else {
			s.dim[s.rank++] = x->shape.dim[i];
		}
	}
	struct ir_value *v = fe_op1(f, k, 1, &x, x->dtype, s);
	ir_op_set_int(f->g, v->def, "axis", axis);
	ir_op_set_int(f->g, v->def, "keepdim", keepdim);
	return v;
}

struct ir_value *fe_softmax(struct fe *f, struct ir_value *x, int causal)
{
	need_float(f, x, "softmax");
	if (x->shape.rank < 1 || (causal && (x->shape.rank < 2 ||
					     x->shape.dim[x->shape.rank - 1] != x->shape.dim[x->shape.rank - 2])))
		fe_error(f, f->cur, NULL, "causal softmax needs [..., S, S], got %s",
			 shape_str(f, &x->shape));
	struct ir_value *v = fe_op1(f, IR_OP_SOFTMAX, 1, &x, x->dtype, x->shape);
	ir_op_set_int(f->g, v->def, "causal", causal);
	return v;
}

/* --- environments -------------------------------------------------------------------- */

static struct fe_bind *find_in(struct fe_bind *b, const char *name)
{
	for (; b; b = b->next)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

static void bind(struct fe *f, struct fe_bind **list, const char *name, struct fe_val v,
		 struct fe_loc loc)
{
	struct fe_bind *b = find_in(*list, name);
	if (!b) {
		b = ir_alloc(f->a, sizeof *b);
		b->name = name;
		b->next = *list;
		*list = b;
	}
	b->v = v;
	b->loc = loc;
}

struct fe_block *fe_find_block(struct fe *f, const char *name)
{
	for (struct fe_block *b = f->prog.blocks; b; b = b->next)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

static const char *suggest(struct fe *f, const char *name, int with_calls)
{
	const char *cand[512];
	int n = 0;
	for (struct fe_bind *b = f->frame; b && n < 200; b = b->next)
		cand[n++] = b->name;
	for (struct fe_bind *b = f->globals; b && n < 400; b = b->next)
		cand[n++] = b->name;
	if (with_calls) {
		for (struct fe_block *b = f->prog.blocks; b && n < 480; b = b->next)
			cand[n++] = b->name;
		int ni;
		const char *const *in = fe_intrinsic_names(&ni);
		for (int i = 0; i < ni && n < 512; i++)
			cand[n++] = in[i];
	}
	const char *c = fe_closest(name, cand, n);
	return c ? ir_sprintf(f->a, "did you mean '%s'?", c) : NULL;
}

static struct fe_val lookup(struct fe *f, const char *name, struct fe_loc loc)
{
	struct fe_bind *b = find_in(f->frame, name);
	if (!b)
		b = find_in(f->globals, name);
	if (b)
		return b->v;
	int ni;
	const char *const *in = fe_intrinsic_names(&ni);
	int callable = fe_find_block(f, name) != NULL;
	for (int i = 0; i < ni; i++)
		callable |= !strcmp(in[i], name);
	if (callable)
		fe_error(f, loc, ir_sprintf(f->a, "call it: %s(...)", name),
			 "'%s' is a function, not a value", name);
	const char *hint = suggest(f, name, 0);
	fe_error(f, loc, hint ? hint : "a name is a constant, a train setting, an argument of the block "
					"or a value assigned before", "unknown name '%s'", name);
}

/* --- compile-time arithmetic ------------------------------------------------------------ */

static double num(struct fe *f, struct fe_val v, struct fe_loc loc, const char *what)
{
	if (v.k == V_INT)
		return (double)v.i;
	if (v.k == V_FLOAT)
		return v.f;
	fe_error(f, loc, NULL, "%s needs a number, got %s", what, fe_val_kind_name(v.k));
}

static struct fe_val vint(int64_t i)
{
	struct fe_val v = { .k = V_INT, .i = i };
	return v;
}

static struct fe_val vflt(struct fe *f, double d, struct fe_loc loc)
{
	if (!isfinite(d))
		fe_error(f, loc, NULL, "the result is not a finite number");
	struct fe_val v = { .k = V_FLOAT, .f = d };
	return v;
}

static struct fe_val vbool(int b)
{
	struct fe_val v = { .k = V_BOOL, .i = b != 0 };
	return v;
}

static _Noreturn void overflow(struct fe *f, struct fe_loc loc, const char *op, int64_t a, int64_t b)
{
	fe_error(f, loc, "integers are 64-bit; use a float (e.g. 1.0 * x) where a large value is meant",
		 "integer overflow: %lld %s %lld does not fit in 64 bits", (long long)a, op, (long long)b);
}

static struct fe_val int_binop(struct fe *f, enum fe_tok op, int64_t a, int64_t b, struct fe_loc loc)
{
	int64_t r;
	switch (op) {
	case T_PLUS:
		if (__builtin_add_overflow(a, b, &r))
			overflow(f, loc, "+", a, b);
		return vint(r);
	case T_MINUS:
		if (__builtin_sub_overflow(a, b, &r))
			overflow(f, loc, "-", a, b);
		return vint(r);
	case T_STAR:
		if (__builtin_mul_overflow(a, b, &r))
			overflow(f, loc, "*", a, b);
		return vint(r);
	case T_SLASH:
	case T_PERCENT:
		if (b == 0)
			fe_error(f, loc, NULL, "division by zero");
		if (a == INT64_MIN && b == -1)
			overflow(f, loc, op == T_SLASH ? "/" : "%", a, b);
		return vint(op == T_SLASH ? a / b : a % b);
	case T_POW:
		if (b < 0) {
			if (a == 0)
				fe_error(f, loc, NULL, "division by zero");
			return vflt(f, pow((double)a, (double)b), loc);
		}
		if (a == 0 || a == 1)
			return vint(b == 0 ? 1 : a);
		if (a == -1)
			return vint(b % 2 ? -1 : 1);
		r = 1;
		for (int64_t k = 0; k < b; k++) /* |a| >= 2: overflows within 63 steps */
			if (__builtin_mul_overflow(r, a, &r))
				overflow(f, loc, "**", a, b);
		return vint(r);
	case T_EQ: return vbool(a == b);
	case T_NE: return vbool(a != b);
	case T_LT: return vbool(a < b);
	case T_LE: return vbool(a <= b);
	case T_GT: return vbool(a > b);
	case T_GE: return vbool(a >= b);
	default: break;
	}
	fe_error(f, loc, NULL, "operator %s does not apply to integers", fe_tok_name(op));
}

static struct fe_val flt_binop(struct fe *f, enum fe_tok op, double a, double b, struct fe_loc loc)
{
	switch (op) {
	case T_PLUS: return vflt(f, a + b, loc);
	case T_MINUS: return vflt(f, a - b, loc);
	case T_STAR: return vflt(f, a * b, loc);
	case T_SLASH:
		if (b == 0)
			fe_error(f, loc, NULL, "division by zero");
		return vflt(f, a / b, loc);
	case T_PERCENT:
		if (b == 0)
			fe_error(f, loc, NULL, "division by zero");
		return vflt(f, fmod(a, b), loc);
	case T_POW:
		if (a == 0 && b < 0)
			fe_error(f, loc, NULL, "division by zero");
		return vflt(f, pow(a, b), loc);
	case T_EQ: return vbool(a == b);
	case T_NE: return vbool(a != b);
	case T_LT: return vbool(a < b);
	case T_LE: return vbool(a <= b);
	case T_GT: return vbool(a > b);
	case T_GE: return vbool(a >= b);
	default: break;
	}
	fe_error(f, loc, NULL, "operator %s does not apply to numbers", fe_tok_name(op));
}

static const char *op_word(enum fe_tok op)
{
	switch (op) {
	case T_PLUS: return "'+'";
	case T_MINUS: return "'-'";
	case T_STAR: return "'*'";
	case T_SLASH: return "'/'";
	default: return fe_tok_name(op);
	}
}

static struct fe_val tensor_binop(struct fe *f, enum fe_tok op, struct fe_val a, struct fe_val b,
				  struct fe_loc loc)
{
	fe_set_loc(f, loc);
	struct fe_val r = { .k = V_TENSOR };
	if (a.k == V_TENSOR && b.k == V_TENSOR) {
		enum ir_opkind k = op == T_PLUS ? IR_OP_ADD : op == T_MINUS ? IR_OP_SUB
				 : op == T_STAR ? IR_OP_MUL : op == T_SLASH ? IR_OP_DIV : IR_OP_COUNT;
		if (k == IR_OP_COUNT)
			fe_error(f, loc, NULL, "operator %s does not apply to tensors", fe_tok_name(op));
		r.t = fe_binary(f, k, a.t, b.t, op_word(op));
		return r;
	}
	int tl = a.k == V_TENSOR;
	struct fe_val s = tl ? b : a;
	struct ir_value *t = tl ? a.t : b.t;
	if (s.k != V_INT && s.k != V_FLOAT)
		fe_error(f, loc, NULL, "operator %s cannot combine a tensor and %s", op_word(op),
			 fe_val_kind_name(s.k));
	double c = s.k == V_INT ? (double)s.i : s.f;
	switch (op) {
	case T_PLUS: r.t = fe_scale(f, t, 1, c); break;
	case T_MINUS: r.t = tl ? fe_scale(f, t, 1, -c) : fe_scale(f, t, -1, c); break;
	case T_STAR: r.t = fe_scale(f, t, c, 0); break;
	case T_SLASH:
		if (tl) {
			if (c == 0)
				fe_error(f, loc, NULL, "division by zero");
			r.t = fe_scale(f, t, 1 / c, 0);
		} else {
			r.t = fe_scale(f, fe_unary(f, IR_OP_RECIP, t), c, 0);
		}
		break;
	default:
		fe_error(f, loc, NULL, "operator %s does not apply to tensors", fe_tok_name(op));
	}
	return r;
}

static struct fe_val binop(struct fe *f, enum fe_tok op, struct fe_val a, struct fe_val b,
			   struct fe_loc loc)
{
	if (a.k == V_TENSOR || b.k == V_TENSOR)
		return tensor_binop(f, op, a, b, loc);
	if (op == T_EQ || op == T_NE) {
		if (a.k == V_BOOL && b.k == V_BOOL)
			return vbool((a.i == b.i) == (op == T_EQ));
		if (a.k == V_STR && b.k == V_STR)
			return vbool(!strcmp(a.s, b.s) == (op == T_EQ));
	}
	if (a.k == V_INT && b.k == V_INT)
		return int_binop(f, op, a.i, b.i, loc);
	if ((a.k != V_INT && a.k != V_FLOAT) || (b.k != V_INT && b.k != V_FLOAT))
		fe_error(f, loc, NULL, "operator %s cannot combine %s and %s", fe_tok_name(op),
			 fe_val_kind_name(a.k), fe_val_kind_name(b.k));
	return flt_binop(f, op, num(f, a, loc, ""), num(f, b, loc, ""), loc);
}

static int truth(struct fe *f, struct fe_val v, struct fe_loc loc)
{
	if (v.k != V_BOOL)
		fe_error(f, loc, v.k == V_INT ? "compare it: n != 0" : NULL,
			 "expected a bool, got %s", fe_val_kind_name(v.k));
	return (int)v.i;
}

/* --- expressions ------------------------------------------------------------------------ */

static struct fe_val call_block(struct fe *f, struct fe_block *b, const struct fe_expr *call,
				struct ir_value *first);

static struct fe_val eval(struct fe *f, const struct fe_expr *e);

/* Expressions nest at most 2 * FE_MAX_DEPTH, but block calls stack expressions on top
 * of each other: one budget for the whole recursion keeps the C stack bounded. */
struct fe_val fe_eval(struct fe *f, const struct fe_expr *e)
{
	if (++f->eval_depth > FE_MAX_EVAL_DEPTH)
		fe_error(f, e->loc, "split the expressions up with intermediate names",
			 "expressions and block calls nested too deeply");
	struct fe_val v = eval(f, e);
	f->eval_depth--;
	return v;
}

static struct fe_val eval(struct fe *f, const struct fe_expr *e)
{
	struct fe_val v = { 0 };
	switch (e->kind) {
	case E_INT:
		return vint(e->ival);
	case E_FLOAT:
		return vflt(f, e->fval, e->loc);
	case E_BOOL:
		return vbool((int)e->ival);
	case E_STR:
		v.k = V_STR;
		v.s = e->name;
		return v;
	case E_IDENT:
		return lookup(f, e->name, e->loc);
	case E_UNARY: {
		struct fe_val a = fe_eval(f, e->a);
		if (e->op == T_NOT)
			return vbool(!truth(f, a, e->a->loc));
		if (a.k == V_TENSOR) {
			fe_set_loc(f, e->loc);
			if (e->op == T_MINUS)
				a.t = fe_unary(f, IR_OP_NEG, a.t);
			return a;
		}
		if (a.k == V_INT) {
			if (e->op == T_MINUS && a.i == INT64_MIN)
				overflow(f, e->loc, "-", 0, a.i);
			return vint(e->op == T_MINUS ? -a.i : a.i);
		}
		if (a.k == V_FLOAT)
			return vflt(f, e->op == T_MINUS ? -a.f : a.f, e->loc);
		fe_error(f, e->loc, NULL, "unary %s needs a number or a tensor, got %s",
			 fe_tok_name(e->op), fe_val_kind_name(a.k));
	}
	case E_BINARY: {
		if (e->op == T_AND || e->op == T_OR) {
			int l = truth(f, fe_eval(f, e->a), e->a->loc);
			if (e->op == T_AND ? !l : l)
				return vbool(l);
			return vbool(truth(f, fe_eval(f, e->b), e->b->loc));
		}
		struct fe_val a = fe_eval(f, e->a);
		struct fe_val b = fe_eval(f, e->b);
		return binop(f, e->op, a, b, e->loc);
	}
	case E_TERNARY:
		return truth(f, fe_eval(f, e->a), e->a->loc) ? fe_eval(f, e->b) : fe_eval(f, e->c);
	case E_CALL: {
		struct fe_block *b = fe_find_block(f, e->name);
		if (b)
			return call_block(f, b, e, NULL);
		if (fe_call_intrinsic(f, e, &v))
			return v;
		fe_error(f, e->loc, suggest(f, e->name, 1), "unknown function '%s'", e->name);
	}
	}
	fe_error(f, e->loc, NULL, "internal error: unknown expression kind %d", (int)e->kind);
}

/* --- statements -------------------------------------------------------------------------- */

static int exec(struct fe *f, const struct fe_stmt *s, struct fe_val *ret, int in_graph);

static int64_t eval_size(struct fe *f, const struct fe_expr *e, const char *what)
{
	struct fe_val v = fe_eval(f, e);
	if (v.k != V_INT)
		fe_error(f, e->loc, NULL, "%s must be an integer, got %s", what, fe_val_kind_name(v.k));
	if (v.i < 1)
		fe_error(f, e->loc, "sizes are at least 1", "%s must be positive, got %lld", what,
			 (long long)v.i);
	return v.i;
}

static struct ir_shape eval_dims(struct fe *f, struct fe_expr **dims, int n)
{
	struct ir_shape s = { 0 };
	s.rank = n;
	for (int i = 0; i < n; i++)
		s.dim[i] = eval_size(f, dims[i], "a dimension");
	return s;
}

static void exec_param(struct fe *f, const struct fe_stmt *s)
{
	struct ir_shape shape = eval_dims(f, s->dims, s->ndims);
	const char *init = "normal";
	double std = 0.02;
	if (s->e) {
		const struct fe_expr *ie = s->e;
		const char *name = ie->kind == E_CALL || ie->kind == E_IDENT ? ie->name : NULL;
		if (!name || (strcmp(name, "normal") && strcmp(name, "zeros") && strcmp(name, "ones")))
			fe_error(f, ie->loc, "initializers: normal(std), zeros, ones",
				 "unknown initializer");
		init = name;
		int want = !strcmp(name, "normal");
		int have = ie->kind == E_CALL ? ie->nargs : 0;
		if (want && ie->kind == E_IDENT)
			have = 0, want = 0; /* 'normal' alone keeps the default std */
		if (have != want)
			fe_error(f, ie->loc, NULL, "%s takes %d argument%s, got %d", name, want,
				 want == 1 ? "" : "s", have);
		if (have) {
			struct fe_val v = fe_eval(f, ie->args[0].e);
			std = num(f, v, ie->args[0].e->loc, "normal()");
			if (!(std > 0))
				fe_error(f, ie->args[0].e->loc, NULL, "the std of normal() must be positive");
		}
	}
	if (!ir_dtype_is_float((enum ir_dtype)s->dtype))
		fe_error(f, s->loc, NULL, "parameters are float tensors, not %s",
			 ir_dtype_name((enum ir_dtype)s->dtype));
	if (find_in(f->globals, s->name))
		fe_error(f, s->name_loc, NULL, "'%s' is a constant", s->name);
	fe_set_loc(f, s->name_loc);
	struct fe_val v = { .k = V_TENSOR };
	v.t = fe_param(f, f->scope, s->name, (enum ir_dtype)s->dtype, shape, init, std);
	bind(f, &f->frame, s->name, v, s->name_loc);
}

static int exec_one(struct fe *f, const struct fe_stmt *s, struct fe_val *ret, int in_graph)
{
	switch (s->kind) {
	case S_ASSIGN: {
		struct fe_bind *g = find_in(f->globals, s->name);
		if (g && !find_in(f->frame, s->name))
			fe_error(f, s->name_loc, "pick another name for the local value",
				 "cannot assign to '%s': it is a constant or a train setting", s->name);
		struct fe_val v = fe_eval(f, s->e);
		if (s->op != T_ASSIGN) {
			struct fe_bind *b = find_in(f->frame, s->name);
			if (!b)
				fe_error(f, s->name_loc, ir_sprintf(f->a, "write '%s = ...' first", s->name),
					 "'%s' has no value yet", s->name);
			enum fe_tok op = s->op == T_PLUSEQ ? T_PLUS : s->op == T_MINUSEQ ? T_MINUS
					: s->op == T_STAREQ ? T_STAR : T_SLASH;
			v = binop(f, op, b->v, v, s->loc);
		}
		if (v.k == V_NONE)
			fe_error(f, s->e->loc, NULL, "this has no value");
		bind(f, &f->frame, s->name, v, s->name_loc);
		return 0;
	}
	case S_FOR: {
		struct fe_val lo = fe_eval(f, s->lo), hi = fe_eval(f, s->hi);
		if (lo.k != V_INT || hi.k != V_INT)
			fe_error(f, lo.k != V_INT ? s->lo->loc : s->hi->loc, NULL,
				 "loop bounds must be integers, got %s", fe_val_kind_name(lo.k != V_INT ? lo.k : hi.k));
		if (find_in(f->globals, s->name))
			fe_error(f, s->name_loc, NULL, "the loop variable '%s' is a constant", s->name);
		const char *outer = f->scope;
		for (int64_t i = lo.i; i < hi.i; i++) {
			if (++f->iters > FE_MAX_ITERS)
				fe_error(f, s->loc, "is the range far larger than meant?",
					 "more than %d loop iterations in the model", FE_MAX_ITERS);
			fe_set_scope(f, join(f, outer, ir_sprintf(f->a, "%s.%lld", s->label, (long long)i)));
			bind(f, &f->frame, s->name, vint(i), s->name_loc);
			int r = exec(f, s->body, ret, in_graph);
			fe_set_scope(f, outer);
			if (r)
				return r;
		}
		return 0;
	}
	case S_IF:
		if (truth(f, fe_eval(f, s->e), s->e->loc))
			return exec(f, s->body, ret, in_graph);
		return exec(f, s->els, ret, in_graph);
	case S_RETURN:
		if (in_graph)
			fe_error(f, s->loc, "the graph's result is the value of 'loss'",
				 "'return' is for blocks, not the graph");
		*ret = fe_eval(f, s->e);
		return 1;
	case S_PARAM:
		exec_param(f, s);
		return 0;
	}
	return 0;
}

static int exec(struct fe *f, const struct fe_stmt *s, struct fe_val *ret, int in_graph)
{
	if (!s)
		return 0;
	if (++f->eval_depth > FE_MAX_EVAL_DEPTH)
		fe_error(f, s->loc, NULL, "statements and block calls nested too deeply");
	int r = 0;
	for (; s && !r; s = s->next)
		r = exec_one(f, s, ret, in_graph);
	f->eval_depth--;
	return r;
}

static void check_type(struct fe *f, const struct fe_pdecl *p, struct fe_val v, struct fe_loc loc,
		       const char *block)
{
	if (!p->type)
		return;
	int ok = (!strcmp(p->type, "bool") && v.k == V_BOOL) ||
		 (!strcmp(p->type, "int") && v.k == V_INT) ||
		 (!strcmp(p->type, "float") && (v.k == V_FLOAT || v.k == V_INT)) ||
		 (!strcmp(p->type, "str") && v.k == V_STR) ||
		 (!strcmp(p->type, "tensor") && v.k == V_TENSOR);
	if (!ok)
		fe_error(f, loc, NULL, "argument '%s' of block '%s' is declared %s, got %s", p->name,
			 block, p->type, fe_val_kind_name(v.k));
}

static struct fe_val call_block(struct fe *f, struct fe_block *b, const struct fe_expr *call,
				struct ir_value *first)
{
	if (b->active)
		fe_error(f, call->loc, "blocks are unrolled at compile time; use a loop instead",
			 "block '%s' calls itself (recursion is not allowed)", b->name);
	if (f->call_depth >= FE_MAX_CALL_DEPTH)
		fe_error(f, call->loc, NULL, "blocks nested more than %d calls deep", FE_MAX_CALL_DEPTH);
	struct fe_val *args = ir_alloc(f->a, sizeof *args * (size_t)(b->nparams ? b->nparams : 1));
	struct fe_loc *locs = ir_alloc(f->a, sizeof *locs * (size_t)(b->nparams ? b->nparams : 1));
	int npos = 0;
	if (first) {
		args[0].k = V_TENSOR;
		args[0].t = first;
		locs[0] = call->loc;
		if (!b->nparams)
			fe_error(f, call->loc, NULL, "block '%s' takes no arguments", b->name);
		npos = 1;
	} else {
		for (int i = 0; i < call->nargs; i++) {
			const struct fe_arg *a = &call->args[i];
			int slot = -1;
			if (a->name) {
				for (int k = 0; k < b->nparams; k++)
					if (!strcmp(b->params[k].name, a->name))
						slot = k;
				if (slot < 0) {
					const char *names[64];
					for (int k = 0; k < b->nparams; k++)
						names[k] = b->params[k].name;
					const char *c = fe_closest(a->name, names, b->nparams);
					fe_error(f, a->name_loc, c ? ir_sprintf(f->a, "did you mean '%s'?", c) : NULL,
						 "block '%s' has no parameter '%s'", b->name, a->name);
				}
			} else {
				if (npos != i)
					fe_error(f, a->name_loc, NULL, "a positional argument follows named ones");
				if (npos >= b->nparams)
					fe_error(f, a->name_loc, NULL, "block '%s' takes %d argument%s, got more",
						 b->name, b->nparams, b->nparams == 1 ? "" : "s");
				slot = npos++;
			}
			if (args[slot].k != V_NONE)
				fe_error(f, a->name_loc, NULL, "argument '%s' is given twice",
					 b->params[slot].name);
			args[slot] = fe_eval(f, a->e);
			locs[slot] = a->e->loc;
			if (args[slot].k == V_NONE)
				fe_error(f, a->e->loc, NULL, "this has no value");
		}
	}
	/* defaults are evaluated among the constants, not the caller's locals */
	struct fe_bind *caller = f->frame;
	f->frame = NULL;
	for (int k = 0; k < b->nparams; k++) {
		if (args[k].k == V_NONE) {
			if (!b->params[k].dflt)
				fe_error(f, call->loc, ir_sprintf(f->a, "block '%s' is declared at line %d",
								   b->name, b->loc.line),
					 "missing argument '%s' of block '%s'", b->params[k].name, b->name);
			args[k] = fe_eval(f, b->params[k].dflt);
			locs[k] = call->loc;
		}
		check_type(f, &b->params[k], args[k], locs[k], b->name);
	}
	for (int k = 0; k < b->nparams; k++)
		bind(f, &f->frame, b->params[k].name, args[k], b->params[k].loc);
	b->active = 1;
	f->call_depth++;
	struct fe_val ret = { 0 };
	int r = exec(f, b->body, &ret, 0);
	f->call_depth--;
	b->active = 0;
	f->frame = caller;
	if (!r || ret.k == V_NONE)
		fe_error(f, call->loc, ir_sprintf(f->a, "end block '%s' with 'return VALUE'", b->name),
			 "block '%s' returns no value", b->name);
	return ret;
}

struct fe_val fe_call_block_with(struct fe *f, struct fe_block *b, const struct fe_expr *call,
				 struct ir_value *x)
{
	return call_block(f, b, call, x);
}

/* --- the program ------------------------------------------------------------------------- */

static const struct sl_override *find_override(struct fe *f, const char *name)
{
	for (int i = f->n_over - 1; i >= 0; i--)
		if (f->over[i].name && !strcmp(f->over[i].name, name)) {
			for (int k = 0; k < f->n_over; k++)
				if (f->over[k].name && !strcmp(f->over[k].name, name))
					f->over_used[k] = 1;
			return &f->over[i];
		}
	return NULL;
}

static int parse_int(const char *s, int64_t *out)
{
	char *end;
	if (!*s)
		return 0;
	long long v = strtoll(s, &end, 10);
	if (*end || (v == LLONG_MAX || v == LLONG_MIN))
		return 0;
	*out = v;
	return 1;
}

static int parse_num(const char *s, double *out)
{
	char *end;
	if (!*s)
		return 0;
	double v = strtod(s, &end);
	if (*end || !isfinite(v))
		return 0;
	*out = v;
	return 1;
}

static struct fe_val override_const(struct fe *f, const struct fe_const *c, struct fe_val old,
				    const struct sl_override *o)
{
	struct fe_val v = old;
	const char *s = o->value ? o->value : "";
	int ok = 1;
	if (old.k == V_INT) {
		ok = parse_int(s, &v.i);
	} else if (old.k == V_FLOAT) {
		ok = parse_num(s, &v.f);
	} else if (old.k == V_BOOL) {
		ok = !strcmp(s, "true") || !strcmp(s, "false");
		v.i = !strcmp(s, "true");
	} else if (old.k == V_STR) {
		v.s = ir_strdup(f->a, s);
	}
	if (!ok)
		fe_error(f, c->loc, NULL, "--set %s=%s: '%s' is %s, '%s' is not", c->name, s, c->name,
			 fe_val_kind_name(old.k), s);
	return v;
}

static void eval_consts(struct fe *f)
{
	for (struct fe_const *c = f->prog.consts; c; c = c->next) {
		struct fe_val v = fe_eval(f, c->e);
		if (v.k == V_TENSOR || v.k == V_NONE)
			fe_error(f, c->e->loc, NULL, "a constant is a number, a bool or a string, not %s",
				 fe_val_kind_name(v.k));
		const struct sl_override *o = find_override(f, c->name);
		if (o)
			v = override_const(f, c, v, o);
		bind(f, &f->globals, c->name, v, c->loc);
		f->globals->is_const = 1;
	}
}

/* The name of a train setting must be in the table (frontend/settings.c). */
static void check_setting_name(struct fe *f, const char *name, struct fe_loc loc)
{
	char msg[256], hint[256];
	if (sl_setting_check_name(name, msg, sizeof msg, hint, sizeof hint))
		fe_error(f, loc, hint[0] ? hint : NULL, "%s", msg);
}

/* The value of a train setting must be of its kind and in its range; where is the
 * value's location, o the --set that gave it (NULL: the train section). */
static void check_setting_value(struct fe *f, const char *name, struct fe_loc where,
				const struct sl_override *o, struct fe_val v)
{
	char msg[256], hint[256];
	double num = v.k == V_INT ? (double)v.i : v.f;
	if (!sl_setting_check(name, v.k == V_STR, num, v.s, msg, sizeof msg, hint, sizeof hint))
		return;
	if (o)
		fe_error(f, where, hint[0] ? hint : NULL, "--set %s=%s: %s", o->name,
			 o->value ? o->value : "", msg);
	fe_error(f, where, hint[0] ? hint : NULL, "%s", msg);
}

/* The value of --set NAME=TEXT for the train setting name: its kind is the table's. */
static struct fe_val override_setting(struct fe *f, const char *name, struct fe_loc loc,
				      const struct sl_override *o)
{
	const struct sl_setting *st = sl_setting_find(name);
	const char *text = o->value ? o->value : "";
	struct fe_val v = { 0 };
	double d;
	int64_t i;
	if (st->kind == SL_SETTING_CHOICE || st->kind == SL_SETTING_LIST ||
	    (st->choices && !parse_num(text, &d))) {
		/* a word (ep_capacity = worst), checked against the table later */
		v.k = V_STR;
		v.s = ir_strdup(f->a, text);
	} else if (parse_int(text, &i)) {
		v = vint(i);
	} else if (parse_num(text, &d)) {
		v = vflt(f, d, loc);
	} else {
		fe_error(f, loc, NULL, "--set %s=%s: '%s' is %s, '%s' is not", o->name, text, name,
			 st->kind == SL_SETTING_INT ? "an integer" : "a number", text);
	}
	return v;
}

static void define_setting(struct fe *f, const char *name, struct fe_loc loc, struct fe_val v,
			   int shadowed)
{
	/* an integer setting written 2e3 is the integer 2000 */
	const struct sl_setting *st = sl_setting_find(name);
	if (st && st->kind == SL_SETTING_INT && v.k == V_FLOAT && fabs(v.f) < 9e15)
		v = vint((int64_t)v.f);
	if (!shadowed)
		bind(f, &f->globals, ir_strdup(f->a, name), v, loc);
	if (v.k == V_STR)
		ir_graph_set(f->g, name, 0, v.s);
	else
		ir_graph_set(f->g, name, v.k == V_INT ? (double)v.i : v.f, NULL);
}

/* A setting's value: a number, a string, a bare name (kept as a string), or a call
 * such as adamw(lr = 3e-4), kept as the string "adamw" with sub-settings "NAME.lr".
 * Every name and value is checked against the table of train settings. */
static void eval_setting(struct fe *f, const char *name, struct fe_loc loc, const struct fe_expr *e,
			 int depth)
{
	check_setting_name(f, name, loc);
	struct fe_val v = { 0 };
	if (e->kind == E_IDENT && !find_in(f->globals, e->name) && !find_in(f->frame, e->name)) {
		v.k = V_STR;
		v.s = e->name;
	} else if (e->kind == E_CALL && strcmp(e->name, "min") && strcmp(e->name, "max")) {
		if (depth > 4)
			fe_error(f, e->loc, NULL, "settings nested too deeply");
		v.k = V_STR;
		v.s = e->name;
		/* named arguments become NAME.ARG */
		for (int i = 0; i < e->nargs; i++) {
			const struct fe_arg *a = &e->args[i];
			if (!a->name)
				fe_error(f, a->e->loc,
					 ir_sprintf(f->a, "write %s(NAME = VALUE), e.g. adamw(lr = 3e-4)",
						    e->name),
					 "name the arguments of a setting");
			const char *sub = ir_sprintf(f->a, "%s.%s", name, a->name);
			eval_setting(f, sub, a->name_loc, a->e, depth + 1);
		}
	} else {
		v = fe_eval(f, e);
		if (v.k == V_TENSOR || v.k == V_NONE)
			fe_error(f, e->loc, NULL, "a setting is a number, a bool or a name, not %s",
				 fe_val_kind_name(v.k));
		if (v.k == V_BOOL)
			v = vint(v.i);
	}
	/* --set train.NAME=V sets the setting; --set NAME=V too, unless a constant has
	 * the name */
	struct fe_bind *c = find_in(f->globals, name);
	int shadowed = c && c->is_const;
	const struct sl_override *o = find_override(f, ir_sprintf(f->a, "train.%s", name));
	if (!o && !shadowed)
		o = find_override(f, name);
	if (o)
		v = override_setting(f, name, loc, o);
	check_setting_value(f, name, o ? loc : e->loc, o, v);
	define_setting(f, name, loc, v, shadowed);
}

/* --set of a train setting that the train section does not give */
static void eval_set_settings(struct fe *f)
{
	struct fe_loc loc = f->prog.train_loc.line ? f->prog.train_loc : f->prog.model_loc;
	for (int i = 0; i < f->n_over; i++) {
		const char *nm = f->over[i].name ? f->over[i].name : "";
		int prefixed = !strncmp(nm, "train.", 6);
		const char *name = prefixed ? nm + 6 : nm;
		if (f->over_used[i] || !sl_setting_find(name))
			continue;
		struct fe_bind *c = find_in(f->globals, name);
		int shadowed = c && c->is_const;
		if (shadowed && !prefixed)
			continue;
		const struct sl_override *o = find_override(f, nm);
		struct fe_val v = override_setting(f, name, loc, o);
		check_setting_value(f, name, loc, o, v);
		define_setting(f, name, loc, v, shadowed);
	}
}

void fe_lower(struct fe *f)
{
	f->scope = "";
	fe_set_loc(f, f->prog.model_loc);
	eval_consts(f);
	for (struct fe_setting *s = f->prog.settings; s; s = s->next)
		eval_setting(f, s->name, s->loc, s->e, 0);
	eval_set_settings(f);
	for (int i = 0; i < f->n_over; i++)
		if (!f->over_used[i]) {
			const char *cand[256];
			int n = 0;
			for (struct fe_bind *b = f->globals; b && n < 200; b = b->next)
				cand[n++] = b->name;
			int nt;
			const struct sl_setting *t = sl_settings(&nt);
			for (int k = 0; k < nt && n < 256; k++)
				cand[n++] = t[k].name;
			const char *nm = f->over[i].name ? f->over[i].name : "";
			const char *c = fe_closest(nm, cand, n);
			fe_error(f, f->prog.model_loc,
				 c ? ir_sprintf(f->a, "did you mean '%s'?", c)
				   : "--set overrides a constant or a train setting of the model",
				 "--set %s: the model has no constant or train setting named '%s'", nm, nm);
		}

	for (struct fe_input *in = f->prog.inputs; in; in = in->next) {
		fe_set_loc(f, in->loc);
		struct ir_shape s = eval_dims(f, in->dims, in->ndims);
		fe_set_loc(f, in->loc);
		struct fe_val v = { .k = V_TENSOR };
		v.t = fe_op1(f, IR_OP_INPUT, 0, NULL, (enum ir_dtype)in->dtype, s);
		v.t->name = ir_strdup(f->g->arena, in->name);
		ir_op_set_str(f->g, v.t->def, "name", in->name);
		if (find_in(f->globals, in->name))
			fe_error(f, in->loc, NULL, "input '%s' has the name of a constant", in->name);
		bind(f, &f->frame, in->name, v, in->loc);
	}
	struct fe_val none;
	exec(f, f->prog.graph, &none, 1);

	struct fe_bind *lb = find_in(f->frame, "loss");
	if (!lb)
		fe_error(f, f->prog.graph_loc, "assign the training loss: loss = cross_entropy(...)",
			 "the graph does not define 'loss'");
	if (lb->v.k != V_TENSOR || lb->v.t->shape.rank != 0 || lb->v.t->dtype != IR_F32)
		fe_error(f, lb->loc, NULL, "'loss' must be an f32 scalar tensor, got %s",
			 lb->v.k == V_TENSOR ? tensor_str(f, lb->v.t) : fe_val_kind_name(lb->v.k));
	struct ir_value *loss = lb->v.t;
	if (f->aux_loss) {
		fe_set_loc(f, lb->loc);
		loss = fe_binary(f, IR_OP_ADD, loss, f->aux_loss, "'+'");
	}
	ir_graph_add_output(f->g, "loss", loss);
	for (struct fe_output *o = f->extra_outputs; o; o = o->next)
		ir_graph_add_output(f->g, o->name, o->v);
}
