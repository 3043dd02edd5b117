/*
 * ir.c - arena, dtypes, shapes and the graph builder.  Verification, printing and
 * parsing of the textual form live in verify.c, print.c and parse.c.
 */
#include "ir.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* --- arena: a list of blocks, freed all at once --------------------------------- */

struct ir_block {
	struct ir_block *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

struct ir_arena {
	struct ir_block *head;
};

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "sluice: out of memory (asked for %zu bytes)\n", n);
		abort();
	}
	return p;
}

struct ir_arena *ir_arena_new(void)
{
	struct ir_arena *a = xmalloc(sizeof *a);
	a->head = NULL;
	return a;
}

void ir_arena_free(struct ir_arena *a)
{
	if (!a)
		return;
	for (struct ir_block *b = a->head, *nx; b; b = nx) {
		nx = b->next;
		free(b);
	}
	free(a);
}

void *ir_alloc(struct ir_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct ir_block *b = a->head;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		b = xmalloc(sizeof *b + cap);
		b->cap = cap;
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

char *ir_strndup(struct ir_arena *a, const char *s, size_t n)
{
	char *p = ir_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *ir_strdup(struct ir_arena *a, const char *s)
{
	return s ? ir_strndup(a, s, strlen(s)) : NULL;
}

char *ir_sprintf(struct ir_arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *p = ir_alloc(a, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

/* --- dtypes, op names ----------------------------------------------------------- */

static const char *const dtype_names[IR_DTYPE_COUNT] = {
	"f32", "bf16", "f16", "f8e4m3", "f8e5m2", "i32", "i64",
};
static const size_t dtype_sizes[IR_DTYPE_COUNT] = { 4, 2, 2, 1, 1, 4, 8 };

const char *ir_dtype_name(enum ir_dtype t)
{
	return (unsigned)t < IR_DTYPE_COUNT ? dtype_names[t] : "?";
}

int ir_dtype_parse(const char *s, enum ir_dtype *out)
{
	for (int i = 0; i < IR_DTYPE_COUNT; i++)
		if (!strcmp(s, dtype_names[i])) {
			*out = (enum ir_dtype)i;
			return 1;
		}
	return 0;
}

size_t ir_dtype_size(enum ir_dtype t)
{
	return (unsigned)t < IR_DTYPE_COUNT ? dtype_sizes[t] : 0;
}

int ir_dtype_is_float(enum ir_dtype t)
{
	return t != IR_I32 && t != IR_I64;
}

static const struct {
	const char *name;
	int nin, nout;
} op_info[IR_OP_COUNT] = {
#define X(e, name, nin, nout) { name, nin, nout },
#include "ops.def"
#undef X
};

const char *ir_op_name(enum ir_opkind k)
{
	return (unsigned)k < IR_OP_COUNT ? op_info[k].name : "?";
}

int ir_op_parse(const char *s, enum ir_opkind *out)
{
	for (int i = 0; i < IR_OP_COUNT; i++)
		if (!strcmp(s, op_info[i].name)) {
			*out = (enum ir_opkind)i;
			return 1;
		}
	return 0;
}

int ir_op_arity_in(enum ir_opkind k) { return op_info[k].nin; }
int ir_op_arity_out(enum ir_opkind k) { return op_info[k].nout; }

const char *ir_phase_name(enum ir_phase p)
{
	static const char *const n[] = { "fwd", "bwd_b", "bwd_w", "opt" };
	return (unsigned)p < 4 ? n[p] : "?";
}

/* --- shapes ------------------------------------------------------------------- */

struct ir_shape ir_shape_make(int rank, const int64_t *dim)
{
	struct ir_shape s = { 0 };
	s.rank = rank;
	for (int i = 0; i < rank && i < IR_MAX_RANK; i++)
		s.dim[i] = dim[i];
	return s;
}

struct ir_shape ir_shape_of(int rank, ...)
{
	struct ir_shape s = { 0 };
	va_list ap;
	va_start(ap, rank);
	s.rank = rank;
	for (int i = 0; i < rank && i < IR_MAX_RANK; i++)
		s.dim[i] = va_arg(ap, int64_t);
	va_end(ap);
	return s;
}

int64_t ir_shape_numel(const struct ir_shape *s)
{
	int64_t n = 1;
	for (int i = 0; i < s->rank; i++) {
		if (s->dim[i] < 0 || (s->dim[i] && n > INT64_MAX / s->dim[i]))
			return -1;
		n *= s->dim[i];
	}
	return n;
}

int ir_shape_eq(const struct ir_shape *a, const struct ir_shape *b)
{
	if (a->rank != b->rank)
		return 0;
	for (int i = 0; i < a->rank; i++)
		if (a->dim[i] != b->dim[i])
			return 0;
	return 1;
}

int ir_shape_broadcast(const struct ir_shape *a, const struct ir_shape *b,
		       struct ir_shape *out)
{
	struct ir_shape r = { 0 };
	r.rank = a->rank > b->rank ? a->rank : b->rank;
	for (int i = 0; i < r.rank; i++) {
		int ia = a->rank - 1 - i, ib = b->rank - 1 - i;
		int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
		if (da != db && da != 1 && db != 1)
			return 0;
		r.dim[r.rank - 1 - i] = da == 1 ? db : da;
	}
	*out = r;
	return 1;
}

char *ir_shape_str(const struct ir_shape *s, char *buf, size_t n)
{
	size_t k = 0;
	k += (size_t)snprintf(buf + k, k < n ? n - k : 0, "[");
	for (int i = 0; i < s->rank; i++)
		k += (size_t)snprintf(buf + k, k < n ? n - k : 0, "%s%lld", i ? ", " : "",
				      (long long)s->dim[i]);
	snprintf(buf + k, k < n ? n - k : 0, "]");
	return buf;
}

/* --- graph -------------------------------------------------------------------- */

struct ir_graph *ir_graph_new(const char *model)
{
	struct ir_arena *a = ir_arena_new();
	struct ir_graph *g = ir_alloc(a, sizeof *g);
	g->arena = a;
	g->model = ir_strdup(a, model ? model : "model");
	g->cur_scope = "";
	return g;
}

void ir_graph_free(struct ir_graph *g)
{
	if (!g)
		return;
	free(g->ops);
	free(g->values);
	free(g->outputs);
	free(g->output_names);
	free(g->settings);
	ir_arena_free(g->arena);
}

static void *grow(void *p, int *cap, int need, size_t elem)
{
	if (need <= *cap)
		return p;
	int c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	void *q = realloc(p, (size_t)c * elem);
	if (!q) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	*cap = c;
	return q;
}

struct ir_value *ir_value_new(struct ir_graph *g, enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *v = ir_alloc(g->arena, sizeof *v);
	v->id = g->n_values;
	v->dtype = t;
	v->shape = s;
	g->values = grow(g->values, &g->cap_values, g->n_values + 1, sizeof *g->values);
	g->values[g->n_values++] = v;
	return v;
}

void ir_graph_set_context(struct ir_graph *g, struct ir_loc loc, const char *scope)
{
	g->cur_loc = loc;
	g->cur_scope = scope ? scope : "";
}

struct ir_op *ir_op_new(struct ir_graph *g, enum ir_opkind k, int n_in,
			struct ir_value **in, int n_out)
{
	struct ir_op *op = ir_alloc(g->arena, sizeof *op);
	op->id = g->next_op_id++;
	op->kind = k;
	op->n_in = n_in;
	op->in = ir_alloc(g->arena, sizeof *op->in * (size_t)(n_in ? n_in : 1));
	for (int i = 0; i < n_in; i++)
		op->in[i] = in[i];
	op->n_out = n_out;
	op->out = ir_alloc(g->arena, sizeof *op->out * (size_t)(n_out ? n_out : 1));
	for (int i = 0; i < n_out; i++) {
		op->out[i] = ir_value_new(g, IR_F32, ir_shape_of(0));
		op->out[i]->def = op;
		op->out[i]->def_out = i;
	}
	op->loc = g->cur_loc;
	op->scope = g->cur_scope;
	op->phase = IR_PHASE_FWD;
	op->stage = -1;
	g->ops = grow(g->ops, &g->cap_ops, g->n_ops + 1, sizeof *g->ops);
	g->ops[g->n_ops++] = op;
	return op;
}

struct ir_value *ir_op1(struct ir_graph *g, enum ir_opkind k, int n_in,
			struct ir_value **in, enum ir_dtype t, struct ir_shape s)
{
	struct ir_op *op = ir_op_new(g, k, n_in, in, 1);
	op->out[0]->dtype = t;
	op->out[0]->shape = s;
	return op->out[0];
}

static struct ir_attr *attr_slot(struct ir_graph *g, struct ir_op *op, const char *name)
{
	for (int i = 0; i < op->n_attr; i++)
		if (!strcmp(op->attr[i].name, name))
			return &op->attr[i];
	struct ir_attr *na = ir_alloc(g->arena, sizeof *na * (size_t)(op->n_attr + 1));
	if (op->n_attr)
		memcpy(na, op->attr, sizeof *na * (size_t)op->n_attr);
	op->attr = na;
	struct ir_attr *a = &op->attr[op->n_attr++];
	a->name = ir_strdup(g->arena, name);
	return a;
}

void ir_op_set_int(struct ir_graph *g, struct ir_op *op, const char *name, int64_t v)
{
	struct ir_attr *a = attr_slot(g, op, name);
	a->kind = IR_ATTR_INT;
	a->i = v;
}

void ir_op_set_float(struct ir_graph *g, struct ir_op *op, const char *name, double v)
{
	struct ir_attr *a = attr_slot(g, op, name);
	a->kind = IR_ATTR_FLOAT;
	a->f = v;
}

void ir_op_set_str(struct ir_graph *g, struct ir_op *op, const char *name, const char *v)
{
	struct ir_attr *a = attr_slot(g, op, name);
	a->kind = IR_ATTR_STR;
	a->s = ir_strdup(g->arena, v);
}

void ir_op_set_ints(struct ir_graph *g, struct ir_op *op, const char *name, int n,
		    const int64_t *v)
{
	struct ir_attr *a = attr_slot(g, op, name);
	a->kind = IR_ATTR_INTS;
	a->n = n;
	a->ints = ir_alloc(g->arena, sizeof *a->ints * (size_t)(n ? n : 1));
	for (int i = 0; i < n; i++)
		a->ints[i] = v[i];
}

const struct ir_attr *ir_op_attr(const struct ir_op *op, const char *name)
{
	for (int i = 0; i < op->n_attr; i++)
		if (!strcmp(op->attr[i].name, name))
			return &op->attr[i];
	return NULL;
}

int64_t ir_op_int(const struct ir_op *op, const char *name, int64_t dflt)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	if (!a)
		return dflt;
	return a->kind == IR_ATTR_INT ? a->i : a->kind == IR_ATTR_FLOAT ? (int64_t)a->f : dflt;
}

double ir_op_float(const struct ir_op *op, const char *name, double dflt)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	if (!a)
		return dflt;
	return a->kind == IR_ATTR_FLOAT ? a->f : a->kind == IR_ATTR_INT ? (double)a->i : dflt;
}

const char *ir_op_str(const struct ir_op *op, const char *name, const char *dflt)
{
	const struct ir_attr *a = ir_op_attr(op, name);
	return a && a->kind == IR_ATTR_STR ? a->s : dflt;
}

void ir_graph_add_output(struct ir_graph *g, const char *name, struct ir_value *v)
{
	int n = g->n_outputs + 1;
	const char **names = realloc(g->output_names, sizeof *names * (size_t)n);
	struct ir_value **vals = names ? realloc(g->outputs, sizeof *vals * (size_t)n) : NULL;
	if (!names || !vals) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	g->output_names = names;
	g->outputs = vals;
	names[g->n_outputs] = ir_strdup(g->arena, name);
	vals[g->n_outputs] = v;
	g->n_outputs = n;
}

struct ir_value *ir_graph_output(const struct ir_graph *g, const char *name)
{
	for (int i = 0; i < g->n_outputs; i++)
		if (!strcmp(g->output_names[i], name))
			return g->outputs[i];
	return NULL;
}

void ir_graph_set(struct ir_graph *g, const char *name, double num, const char *str)
{
	for (int i = 0; i < g->n_settings; i++)
		if (!strcmp(g->settings[i].name, name)) {
			g->settings[i].is_str = str != NULL;
			g->settings[i].num = num;
			g->settings[i].str = ir_strdup(g->arena, str);
			return;
		}
	struct ir_setting *s = realloc(g->settings, sizeof *s * (size_t)(g->n_settings + 1));
	if (!s) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	g->settings = s;
	s[g->n_settings].name = ir_strdup(g->arena, name);
	s[g->n_settings].is_str = str != NULL;
	s[g->n_settings].num = num;
	s[g->n_settings].str = ir_strdup(g->arena, str);
	g->n_settings++;
}

const struct ir_setting *ir_graph_setting(const struct ir_graph *g, const char *name)
{
	for (int i = 0; i < g->n_settings; i++)
		if (!strcmp(g->settings[i].name, name))
			return &g->settings[i];
	return NULL;
}

double ir_graph_setting_num(const struct ir_graph *g, const char *name, double dflt)
{
	const struct ir_setting *s = ir_graph_setting(g, name);
	return s && !s->is_str ? s->num : dflt;
}
