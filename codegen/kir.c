/* kir.c - building and printing kernel IR (see kir.h).  Builders check types as they
 * go: a kernel that is built is well typed, so renderers need not check again. */
#include "kir.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

static void *grow(void *p, int *cap, int need, size_t elem)
{
	if (need <= *cap)
		return p;
	int c = *cap ? *cap * 2 : 8;
	while (c < need)
		c *= 2;
	*cap = c;
	return rt_realloc(p, (size_t)c * elem);
}

static void block_init(struct kir_block *b)
{
	b->head = NULL;
	b->tail = &b->head;
}

struct kir_kernel *kir_kernel_new(const char *name, int64_t extent)
{
	struct ir_arena *a = ir_arena_new();
	struct kir_kernel *k = ir_alloc(a, sizeof *k);
	k->arena = a;
	k->name = ir_strdup(a, name);
	k->extent = extent;
	block_init(&k->body);
	kir_index(k, "p");
	return k;
}

void kir_kernel_free(struct kir_kernel *k)
{
	if (!k)
		return;
	free(k->bufs);
	free(k->vars);
	free(k->shared);
	ir_arena_free(k->arena);
}

int kir_buf(struct kir_kernel *k, const char *name, enum kir_type t)
{
	RT_ASSERT(t != KIR_BOOL);
	k->bufs = grow(k->bufs, &k->cap_bufs, k->n_bufs + 1, sizeof *k->bufs);
	k->bufs[k->n_bufs] = (struct kir_buf){ ir_strdup(k->arena, name), t, 0 };
	return k->n_bufs++;
}

static int new_var(struct kir_kernel *k, const char *name, enum kir_type t, int is_index)
{
	k->vars = grow(k->vars, &k->cap_vars, k->n_vars + 1, sizeof *k->vars);
	k->vars[k->n_vars] = (struct kir_var){ ir_strdup(k->arena, name), t, is_index };
	return k->n_vars++;
}

int kir_local(struct kir_kernel *k, const char *name, enum kir_type t)
{
	RT_ASSERT(t == kir_value_type(t));
	return new_var(k, name, t, 0);
}

void kir_kernel_block(struct kir_kernel *k, int threads)
{
	RT_ASSERT(threads >= 0 && threads % 32 == 0 && threads <= 1024);
	k->launch.map = KIR_MAP_BLOCK;
	k->launch.threads = threads;
}

int kir_shared(struct kir_kernel *k, const char *name, enum kir_type t, int64_t count)
{
	RT_ASSERT(t != KIR_BOOL && count > 0);
	k->shared = grow(k->shared, &k->cap_shared, k->n_shared + 1, sizeof *k->shared);
	k->shared[k->n_shared] = (struct kir_shared){ ir_strdup(k->arena, name), t, count };
	return k->n_shared++;
}

enum kir_type kir_value_type(enum kir_type t)
{
	return t == KIR_BF16 || t == KIR_F16 || t == KIR_F8E4M3 || t == KIR_F8E5M2 ? KIR_F32 : t;
}

int kir_index(struct kir_kernel *k, const char *name)
{
	return new_var(k, name, KIR_I64, 1);
}

int kir_type_is_float(enum kir_type t)
{
	return t == KIR_F32 || t == KIR_F64;
}

const char *kir_type_name(enum kir_type t)
{
	static const char *const n[] = { "f32", "f64", "i32", "i64", "bool", "bf16", "f16",
					  "f8e4m3", "f8e5m2" };
	return (unsigned)t < sizeof n / sizeof *n ? n[t] : "?";
}

static struct kir_expr *node(struct kir_kernel *k, enum kir_op op, enum kir_type t)
{
	struct kir_expr *e = ir_alloc(k->arena, sizeof *e);
	e->op = op;
	e->type = t;
	return e;
}

struct kir_expr *kir_const(struct kir_kernel *k, enum kir_type t, double v)
{
	struct kir_expr *e = node(k, KIR_CONST, t);
	if (kir_type_is_float(t))
		e->f = v;
	else
		e->i = (int64_t)v;
	return e;
}

struct kir_expr *kir_f32(struct kir_kernel *k, double v) { return kir_const(k, KIR_F32, v); }
struct kir_expr *kir_f64(struct kir_kernel *k, double v) { return kir_const(k, KIR_F64, v); }

struct kir_expr *kir_i64(struct kir_kernel *k, int64_t v)
{
	struct kir_expr *e = node(k, KIR_CONST, KIR_I64);
	e->i = v;
	return e;
}

struct kir_expr *kir_var(struct kir_kernel *k, int var)
{
	RT_ASSERT(var >= 0 && var < k->n_vars);
	struct kir_expr *e = node(k, KIR_VAR, k->vars[var].type);
	e->var = var;
	return e;
}

struct kir_expr *kir_load(struct kir_kernel *k, int buf, struct kir_expr *idx)
{
	RT_ASSERT(buf >= 0 && buf < k->n_bufs && idx->type == KIR_I64);
	struct kir_expr *e = node(k, KIR_LOAD, kir_value_type(k->bufs[buf].type));
	e->buf = buf;
	e->a = idx;
	return e;
}

struct kir_expr *kir_load_shared(struct kir_kernel *k, int sh, struct kir_expr *idx)
{
	RT_ASSERT(sh >= 0 && sh < k->n_shared && idx->type == KIR_I64);
	struct kir_expr *e = node(k, KIR_SLOAD, kir_value_type(k->shared[sh].type));
	e->buf = sh;
	e->a = idx;
	return e;
}

struct kir_expr *kir_un(struct kir_kernel *k, enum kir_op op, struct kir_expr *a)
{
	RT_ASSERT(op >= KIR_NEG && op <= KIR_NOT && op != KIR_CVT);
	if (op == KIR_NOT)
		RT_ASSERT(a->type == KIR_BOOL);
	else if (op == KIR_RBF16 || op == KIR_RF16 || op == KIR_RF8E4M3 || op == KIR_RF8E5M2)
		RT_ASSERT(a->type == KIR_F32);
	else if (op != KIR_NEG && op != KIR_ABS)
		RT_ASSERT(kir_type_is_float(a->type));
	struct kir_expr *e = node(k, op, a->type);
	e->a = a;
	return e;
}

struct kir_expr *kir_bin(struct kir_kernel *k, enum kir_op op, struct kir_expr *a,
			 struct kir_expr *b)
{
	RT_ASSERT(op >= KIR_ADD && op <= KIR_OR);
	if (a->type != b->type)
		RT_BUG("kir: %s of %s and %s", "binary op", kir_type_name(a->type),
		       kir_type_name(b->type));
	enum kir_type t = a->type;
	if (op == KIR_AND || op == KIR_OR)
		RT_ASSERT(t == KIR_BOOL);
	if (op == KIR_POW)
		RT_ASSERT(kir_type_is_float(t));
	if (op >= KIR_LT && op <= KIR_NE)
		t = KIR_BOOL;
	struct kir_expr *e = node(k, op, t);
	e->a = a;
	e->b = b;
	return e;
}

struct kir_expr *kir_cvt(struct kir_kernel *k, enum kir_type t, struct kir_expr *a)
{
	RT_ASSERT(t == kir_value_type(t));
	if (a->type == t)
		return a;
	struct kir_expr *e = node(k, KIR_CVT, t);
	e->a = a;
	return e;
}

struct kir_expr *kir_select(struct kir_kernel *k, struct kir_expr *c, struct kir_expr *a,
			    struct kir_expr *b)
{
	RT_ASSERT(c->type == KIR_BOOL && a->type == b->type);
	struct kir_expr *e = node(k, KIR_SELECT, a->type);
	e->a = c;
	e->b = a;
	e->c = b;
	return e;
}

struct kir_expr *kir_reduce(struct kir_kernel *k, enum kir_red red, int var,
			    struct kir_expr *lo, struct kir_expr *hi, struct kir_expr *body)
{
	RT_ASSERT(k->vars[var].is_index && lo->type == KIR_I64 && hi->type == KIR_I64);
	RT_ASSERT(kir_type_is_float(body->type));
	struct kir_expr *e = node(k, KIR_REDUCE, body->type);
	e->red = red;
	e->var = var;
	e->a = lo;
	e->b = hi;
	e->c = body;
	return e;
}

struct kir_expr *kir_reduce_spread(struct kir_kernel *k, enum kir_red red, int var,
				   struct kir_expr *lo, struct kir_expr *hi, struct kir_expr *body)
{
	RT_ASSERT(k->launch.map == KIR_MAP_BLOCK);
	struct kir_expr *e = kir_reduce(k, red, var, lo, hi, body);
	e->spread = 1;
	return e;
}

static struct kir_stmt *append(struct kir_kernel *k, struct kir_block *b,
			       enum kir_stmt_kind kind)
{
	struct kir_stmt *s = ir_alloc(k->arena, sizeof *s);
	s->kind = kind;
	block_init(&s->body);
	block_init(&s->other);
	*b->tail = s;
	b->tail = &s->next;
	return s;
}

struct kir_block *kir_loop(struct kir_kernel *k, struct kir_block *b, int var,
			   struct kir_expr *lo, struct kir_expr *hi)
{
	RT_ASSERT(k->vars[var].is_index && var != 0);
	RT_ASSERT(lo->type == KIR_I64 && hi->type == KIR_I64);
	struct kir_stmt *s = append(k, b, KIR_S_LOOP);
	s->var = var;
	s->lo = lo;
	s->hi = hi;
	return &s->body;
}

struct kir_block *kir_loop_spread(struct kir_kernel *k, struct kir_block *b, int var,
				  struct kir_expr *lo, struct kir_expr *hi)
{
	RT_ASSERT(k->launch.map == KIR_MAP_BLOCK);
	struct kir_block *body = kir_loop(k, b, var, lo, hi);
	/* the statement holding body */
	struct kir_stmt *s = (struct kir_stmt *)((char *)body - offsetof(struct kir_stmt, body));
	s->spread = 1;
	return body;
}

static void store(struct kir_kernel *k, struct kir_block *b, enum kir_stmt_kind kind,
		  int buf, struct kir_expr *idx, struct kir_expr *val)
{
	RT_ASSERT(buf >= 0 && buf < k->n_bufs && idx->type == KIR_I64);
	if (val->type != kir_value_type(k->bufs[buf].type))
		RT_BUG("kir: store of %s into %s buffer %s", kir_type_name(val->type),
		       kir_type_name(k->bufs[buf].type), k->bufs[buf].name);
	struct kir_stmt *s = append(k, b, kind);
	s->buf = buf;
	s->idx = idx;
	s->val = val;
	k->bufs[buf].written = 1;
}

void kir_store(struct kir_kernel *k, struct kir_block *b, int buf, struct kir_expr *idx,
	       struct kir_expr *val)
{
	store(k, b, KIR_S_STORE, buf, idx, val);
}

void kir_store_add(struct kir_kernel *k, struct kir_block *b, int buf,
		   struct kir_expr *idx, struct kir_expr *val)
{
	store(k, b, KIR_S_STORE_ADD, buf, idx, val);
}

void kir_store_shared(struct kir_kernel *k, struct kir_block *b, int sh,
		      struct kir_expr *idx, struct kir_expr *val)
{
	RT_ASSERT(sh >= 0 && sh < k->n_shared && idx->type == KIR_I64);
	if (val->type != kir_value_type(k->shared[sh].type))
		RT_BUG("kir: store of %s into %s shared array %s", kir_type_name(val->type),
		       kir_type_name(k->shared[sh].type), k->shared[sh].name);
	struct kir_stmt *s = append(k, b, KIR_S_SSTORE);
	s->buf = sh;
	s->idx = idx;
	s->val = val;
}

void kir_barrier(struct kir_kernel *k, struct kir_block *b)
{
	append(k, b, KIR_S_BARRIER);
}

void kir_set(struct kir_kernel *k, struct kir_block *b, int var, struct kir_expr *val)
{
	RT_ASSERT(!k->vars[var].is_index && val->type == k->vars[var].type);
	struct kir_stmt *s = append(k, b, KIR_S_SET);
	s->var = var;
	s->val = val;
}

struct kir_block *kir_if(struct kir_kernel *k, struct kir_block *b, struct kir_expr *cond,
			 struct kir_block **else_out)
{
	RT_ASSERT(cond->type == KIR_BOOL);
	struct kir_stmt *s = append(k, b, KIR_S_IF);
	s->lo = cond;
	if (else_out)
		*else_out = &s->other;
	return &s->body;
}

/* --- printing ------------------------------------------------------------------- */

static const char *op_name(enum kir_op op)
{
	static const char *const n[] = {
		"const", "var", "load", "sload", "neg", "exp", "log", "sqrt", "tanh", "sin", "cos",
		"abs", "round_bf16", "round_f16", "round_e4m3", "round_e5m2", "cvt", "not", "+", "-", "*", "/", "%", "max", "min", "pow",
		"<", "<=", "==", "!=", "&&", "||", "select", "reduce",
	};
	return n[op];
}

static void print_expr(const struct kir_kernel *k, const struct kir_expr *e, FILE *out)
{
	switch (e->op) {
	case KIR_CONST:
		if (kir_type_is_float(e->type))
			fprintf(out, "%.9g%s", e->f, e->type == KIR_F32 ? "f" : "");
		else
			fprintf(out, "%lld", (long long)e->i);
		return;
	case KIR_VAR:
		fprintf(out, "%s", k->vars[e->var].name);
		return;
	case KIR_LOAD:
	case KIR_SLOAD:
		fprintf(out, "%s[", e->op == KIR_LOAD ? k->bufs[e->buf].name : k->shared[e->buf].name);
		print_expr(k, e->a, out);
		fputc(']', out);
		return;
	case KIR_CVT:
		fprintf(out, "%s(", kir_type_name(e->type));
		print_expr(k, e->a, out);
		fputc(')', out);
		return;
	case KIR_SELECT:
		fputc('(', out);
		print_expr(k, e->a, out);
		fputs(" ? ", out);
		print_expr(k, e->b, out);
		fputs(" : ", out);
		print_expr(k, e->c, out);
		fputc(')', out);
		return;
	case KIR_REDUCE:
		fprintf(out, "%s(%s in ", e->red == KIR_RED_SUM ? "sum" : "max",
			k->vars[e->var].name);
		print_expr(k, e->a, out);
		fputs("..", out);
		print_expr(k, e->b, out);
		fputs(e->spread ? " spread: " : ": ", out);
		print_expr(k, e->c, out);
		fputc(')', out);
		return;
	default:
		break;
	}
	if (e->op >= KIR_ADD && e->op <= KIR_OR) {
		int fn = e->op == KIR_MAX || e->op == KIR_MIN || e->op == KIR_POW;
		if (fn) {
			fprintf(out, "%s(", op_name(e->op));
			print_expr(k, e->a, out);
			fputs(", ", out);
			print_expr(k, e->b, out);
		} else {
			fputc('(', out);
			print_expr(k, e->a, out);
			fprintf(out, " %s ", op_name(e->op));
			print_expr(k, e->b, out);
		}
		fputc(')', out);
		return;
	}
	fprintf(out, "%s(", op_name(e->op));
	print_expr(k, e->a, out);
	fputc(')', out);
}

static void print_block(const struct kir_kernel *k, const struct kir_block *b, int depth,
			FILE *out)
{
	for (const struct kir_stmt *s = b->head; s; s = s->next) {
		fprintf(out, "%*s", 2 * depth, "");
		switch (s->kind) {
		case KIR_S_LOOP:
			fprintf(out, "for %s in ", k->vars[s->var].name);
			print_expr(k, s->lo, out);
			fputs("..", out);
			print_expr(k, s->hi, out);
			fputs(s->spread ? " spread {\n" : " {\n", out);
			print_block(k, &s->body, depth + 1, out);
			fprintf(out, "%*s}\n", 2 * depth, "");
			break;
		case KIR_S_SSTORE:
			fprintf(out, "%s[", k->shared[s->buf].name);
			print_expr(k, s->idx, out);
			fputs("] = ", out);
			print_expr(k, s->val, out);
			fputc('\n', out);
			break;
		case KIR_S_BARRIER:
			fputs("barrier\n", out);
			break;
		case KIR_S_STORE:
		case KIR_S_STORE_ADD:
			fprintf(out, "%s[", k->bufs[s->buf].name);
			print_expr(k, s->idx, out);
			fprintf(out, "] %s ", s->kind == KIR_S_STORE ? "=" : "+=");
			print_expr(k, s->val, out);
			fputc('\n', out);
			break;
		case KIR_S_SET:
			fprintf(out, "%s = ", k->vars[s->var].name);
			print_expr(k, s->val, out);
			fputc('\n', out);
			break;
		case KIR_S_IF:
			fputs("if ", out);
			print_expr(k, s->lo, out);
			fputs(" {\n", out);
			print_block(k, &s->body, depth + 1, out);
			if (s->other.head) {
				fprintf(out, "%*s} else {\n", 2 * depth, "");
				print_block(k, &s->other, depth + 1, out);
			}
			fprintf(out, "%*s}\n", 2 * depth, "");
			break;
		}
	}
}

void kir_print(const struct kir_kernel *k, FILE *out)
{
	fprintf(out, "kernel %s(", k->name);
	for (int i = 0; i < k->n_bufs; i++)
		fprintf(out, "%s%s %s%s", i ? ", " : "", k->bufs[i].written ? "out" : "in",
			kir_type_name(k->bufs[i].type), "");
	fputs(")\n", out);
	for (int i = 0; i < k->n_bufs; i++)
		fprintf(out, "  buf %d: %s %s\n", i, k->bufs[i].name,
			kir_type_name(k->bufs[i].type));
	for (int i = 1; i < k->n_vars; i++)
		if (!k->vars[i].is_index)
			fprintf(out, "  var %s: %s\n", k->vars[i].name,
				kir_type_name(k->vars[i].type));
	for (int i = 0; i < k->n_shared; i++)
		fprintf(out, "  shared %s: %s[%lld]\n", k->shared[i].name,
			kir_type_name(k->shared[i].type), (long long)k->shared[i].count);
	fprintf(out, "  parallel p in 0..%lld", (long long)k->extent);
	if (k->launch.map == KIR_MAP_BLOCK)
		fprintf(out, " block %d", k->launch.threads);
	else if (k->launch.threads)
		fprintf(out, " threads %d", k->launch.threads);
	fputs(" {\n", out);
	print_block(k, &k->body, 2, out);
	fputs("  }\n", out);
}
