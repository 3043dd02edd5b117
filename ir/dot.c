/*
 * dot.c - the graph as DOT (see dot.h for what the picture shows).
 *
 * Collapsing repeated layers: a "unit" is the scope prefix up to the first integer
 * component ("layers.3" of "layers.3.moe"; "mtp.0" of "mtp.0.attn"); units of one
 * family ("layers") with consecutive indices and the same signature (per op, in op
 * order: kind, phase, scope and path relative to the unit, attributes, output types,
 * and which earlier op of the unit each input comes from) form a run.  A collapsed run
 * draws its first unit only; every op of the other units is drawn as the op at the
 * same position in the first, so edges leaving the run (layers.60 -> the head) start
 * at the representative; edges between units of one run are dropped.
 *
 * The backward ops are clustered by scope too, inside one "backward" cluster drawn
 * below the forward (invisible edges from the loss to the backward's first ops).
 *
 * Simplifications chosen on purpose: graph outputs named "grad.*" are not drawn as
 * nodes (a 61-layer model has thousands); their producers get a double border.  Edges
 * from forward values into the backward (the saved activations) are not drawn: there
 * are hundreds and they hide both structures; `sluice ir` lists them.  Big pictures
 * (over BIG_NODES nodes) ask dot for a cheaper layout (mclimit, nslimit, searchsize),
 * which takes seconds instead of minutes.
 */
#include "dot.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BIG_NODES = 400 };

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	return p;
}

/* --- a string -> int map (open addressing); keys are borrowed --------------------- */

struct smap {
	const char **key;
	size_t *klen;
	int *val;
	size_t cap, n;
};

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}
#define FNV0 0xcbf29ce484222325ull

static int *smap_slot(struct smap *m, const char *k, size_t kl)
{
	if (2 * (m->n + 1) > m->cap) {
		struct smap o = *m;
		m->cap = o.cap ? 2 * o.cap : 64;
		m->key = xcalloc(m->cap, sizeof *m->key);
		m->klen = xcalloc(m->cap, sizeof *m->klen);
		m->val = xcalloc(m->cap, sizeof *m->val);
		m->n = 0;
		for (size_t i = 0; i < o.cap; i++)
			if (o.key[i])
				*smap_slot(m, o.key[i], o.klen[i]) = o.val[i];
		free(o.key);
		free(o.klen);
		free(o.val);
	}
	size_t i = fnv(k, kl, FNV0) & (m->cap - 1);
	while (m->key[i] && !(m->klen[i] == kl && !memcmp(m->key[i], k, kl)))
		i = (i + 1) & (m->cap - 1);
	if (!m->key[i]) {
		m->key[i] = k;
		m->klen[i] = kl;
		m->val[i] = -1;
		m->n++;
	}
	return &m->val[i];
}

static void smap_free(struct smap *m)
{
	free(m->key);
	free(m->klen);
	free(m->val);
}

/* --- units and runs ------------------------------------------------------------------ */

struct unit {
	const char *prefix; /* "layers.3" (points into an op's scope) */
	size_t plen, flen;  /* prefix length; family length ("layers") */
	long long index;
	int n_ops, cap_ops;
	int *ops;           /* op indices, in op order */
	uint64_t sig;
	int rep;            /* representative unit of its run (itself when drawn) */
	int run_len;        /* for a representative: units in its run */
	int last;           /* for a representative: the last unit of its run */
};

/* length of the unit prefix of scope ("layers.3" in "layers.3.moe"), 0 if none */
static size_t unit_prefix(const char *s, size_t *flen, long long *index)
{
	const char *c = s;
	while (*c) {
		const char *e = c;
		while (*e && *e != '.')
			e++;
		int digits = e > c;
		for (const char *d = c; d < e; d++)
			digits &= *d >= '0' && *d <= '9';
		if (digits && c > s && e - c < 18) {
			*flen = (size_t)(c - s - 1);
			*index = strtoll(c, NULL, 10);
			return (size_t)(e - s);
		}
		c = *e ? e + 1 : e;
	}
	return 0;
}

struct dot {
	const struct ir_graph *g;
	FILE *out;
	int *def_op;     /* value id -> index of the op that defines it, -1 */
	int *unit_of;    /* op index -> unit, -1 */
	int *pos;        /* op index -> position in its unit */
	int *node;       /* op index -> the op index drawn for it */
	struct unit *units;
	int n_units;
	int *is_grad_out; /* op index -> 1 when it produces a grad.* output */
};

static uint64_t hash_str(uint64_t h, const char *s)
{
	return fnv(s ? s : "", s ? strlen(s) + 1 : 1, h);
}

static uint64_t unit_signature(struct dot *d, struct unit *u)
{
	uint64_t h = FNV0;
	for (int k = 0; k < u->n_ops; k++) {
		const struct ir_op *op = d->g->ops[u->ops[k]];
		int64_t head[4] = { op->kind, op->phase, op->n_in, op->n_out };
		h = fnv(head, sizeof head, h);
		h = hash_str(h, op->scope + u->plen);
		if (op->path)
			h = hash_str(h, strncmp(op->path, u->prefix, u->plen) ? op->path
								: op->path + u->plen);
		for (int i = 0; i < op->n_attr; i++) {
			const struct ir_attr *a = &op->attr[i];
			h = hash_str(h, a->name);
			int64_t v[2] = { a->kind, a->i };
			h = fnv(v, sizeof v, h);
			h = fnv(&a->f, sizeof a->f, h);
			if (a->kind == IR_ATTR_STR)
				h = hash_str(h, a->s);
			if (a->kind == IR_ATTR_INTS)
				h = fnv(a->ints, sizeof *a->ints * (size_t)a->n, h);
		}
		for (int i = 0; i < op->n_out; i++) {
			const struct ir_value *v = op->out[i];
			int64_t t[2 + IR_MAX_RANK] = { v->dtype, v->shape.rank };
			for (int r = 0; r < v->shape.rank && r < IR_MAX_RANK; r++)
				t[2 + r] = v->shape.dim[r];
			h = fnv(t, sizeof t, h);
		}
		for (int i = 0; i < op->n_in; i++) {
			int src = op->in[i] ? d->def_op[op->in[i]->id] : -1;
			int64_t w = src >= 0 && d->unit_of[src] == u - d->units ? d->pos[src] : -1;
			h = fnv(&w, sizeof w, h);
		}
	}
	return h;
}

static int cmp_unit_order(const void *a, const void *b, void *ctx)
{
	const struct unit *u = (const struct unit *)ctx + *(const int *)a;
	const struct unit *v = (const struct unit *)ctx + *(const int *)b;
	size_t n = u->flen < v->flen ? u->flen : v->flen;
	int c = memcmp(u->prefix, v->prefix, n);
	if (c)
		return c;
	if (u->flen != v->flen)
		return u->flen < v->flen ? -1 : 1;
	return u->index < v->index ? -1 : u->index > v->index;
}

/* qsort without a context argument: a small insertion sort over unit indices, which
 * are few (one per layer and block) */
static void sort_units(int *idx, int n, struct unit *units)
{
	for (int i = 1; i < n; i++) {
		int x = idx[i], j = i;
		while (j > 0 && cmp_unit_order(&idx[j - 1], &x, units) > 0) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = x;
	}
}

static int same_family(const struct unit *u, const struct unit *v)
{
	return u->flen == v->flen && !memcmp(u->prefix, v->prefix, u->flen);
}

static int find_units(struct dot *d, enum ir_dot_collapse mode)
{
	const struct ir_graph *g = d->g;
	struct smap m = { 0 };
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		size_t flen;
		long long index;
		size_t pl = op->scope ? unit_prefix(op->scope, &flen, &index) : 0;
		d->unit_of[i] = -1;
		if (!pl)
			continue;
		int *slot = smap_slot(&m, op->scope, pl);
		if (*slot < 0) {
			*slot = d->n_units;
			d->units = xrealloc(d->units, sizeof *d->units * (size_t)(d->n_units + 1));
			struct unit *u = &d->units[d->n_units++];
			memset(u, 0, sizeof *u);
			u->prefix = op->scope;
			u->plen = pl;
			u->flen = flen;
			u->index = index;
		}
		struct unit *u = &d->units[*slot];
		if (u->n_ops == u->cap_ops) {
			u->cap_ops = u->cap_ops ? 2 * u->cap_ops : 16;
			u->ops = xrealloc(u->ops, sizeof *u->ops * (size_t)u->cap_ops);
		}
		d->unit_of[i] = *slot;
		d->pos[i] = u->n_ops;
		u->ops[u->n_ops++] = i;
	}
	smap_free(&m);
	for (int k = 0; k < d->n_units; k++) {
		d->units[k].rep = k;
		d->units[k].run_len = 1;
		d->units[k].last = k;
		d->units[k].sig = unit_signature(d, &d->units[k]);
	}
	int *order = xcalloc((size_t)d->n_units, sizeof *order);
	for (int k = 0; k < d->n_units; k++)
		order[k] = k;
	sort_units(order, d->n_units, d->units);
	int collapse = mode == IR_DOT_COLLAPSE_ON;
	if (mode == IR_DOT_COLLAPSE_AUTO)
		for (int a = 0, b; a < d->n_units; a = b) {
			const struct unit *ua = &d->units[order[a]];
			for (b = a + 1; b < d->n_units && same_family(&d->units[order[b]], ua); b++)
				;
			if (b - a > IR_DOT_AUTO_LAYERS)
				collapse = 1;
		}
	int runs = 0;
	if (collapse)
		for (int a = 0, b; a < d->n_units; a = b) {
			struct unit *ua = &d->units[order[a]];
			for (b = a + 1; b < d->n_units; b++) {
				struct unit *ub = &d->units[order[b]], *prev = &d->units[order[b - 1]];
				if (!same_family(ub, ua) || ub->index != prev->index + 1 || ub->sig != ua->sig ||
				    ub->n_ops != ua->n_ops)
					break;
				ub->rep = order[a];
			}
			if (b - a > 1) {
				ua->run_len = b - a;
				ua->last = order[b - 1];
				runs++;
			}
		}
	free(order);
	for (int i = 0; i < g->n_ops; i++) {
		int u = d->unit_of[i];
		d->node[i] = u >= 0 ? d->units[d->units[u].rep].ops[d->pos[i]] : i;
	}
	return runs;
}

/* --- cluster tree ----------------------------------------------------------------- */

struct cnode {
	const char *path; /* points into a scope */
	size_t plen;
	int parent;
	int first_child, next_sibling, last_child;
	int n_ops, cap_ops;
	int *ops;
	int unit;         /* the unit whose prefix this is, or -1 */
};

struct tree {
	struct cnode *n;
	int count;
	struct smap map;
};

static int tree_node(struct tree *t, const char *path, size_t plen, int parent)
{
	int *slot = smap_slot(&t->map, path, plen);
	if (*slot >= 0)
		return *slot;
	*slot = t->count;
	t->n = xrealloc(t->n, sizeof *t->n * (size_t)(t->count + 1));
	struct cnode *c = &t->n[t->count];
	memset(c, 0, sizeof *c);
	c->path = path;
	c->plen = plen;
	c->parent = parent;
	c->first_child = c->next_sibling = c->last_child = -1;
	c->unit = -1;
	if (parent >= 0) {
		struct cnode *p = &t->n[parent];
		if (p->last_child >= 0)
			t->n[p->last_child].next_sibling = t->count;
		else
			p->first_child = t->count;
		p->last_child = t->count;
	}
	return t->count++;
}

/* the cluster of a scope: one level per dotted component, an integer joined to the
 * component before it ("layers.3.attn" -> "layers.3" > "layers.3.attn") */
static int scope_cluster(struct tree *t, const char *s)
{
	int cur = 0;
	const char *c = s;
	while (s && *c) {
		const char *e = c;
		while (*e && *e != '.')
			e++;
		/* join a following integer component */
		const char *f = *e ? e + 1 : e;
		const char *fe = f;
		while (*fe >= '0' && *fe <= '9')
			fe++;
		if (*e && fe > f && (*fe == '.' || !*fe))
			e = fe;
		cur = tree_node(t, s, (size_t)(e - s), cur);
		c = *e ? e + 1 : e;
	}
	return cur;
}

/* --- output ---------------------------------------------------------------------- */

static void put_escaped(FILE *out, const char *s, size_t n)
{
	for (size_t i = 0; i < n && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fputc('?', out);
		else
			fputc(ch, out);
	}
}

static void put_type(FILE *out, const struct ir_value *v)
{
	fprintf(out, "%s[", ir_dtype_name(v->dtype));
	for (int r = 0; r < v->shape.rank && r < IR_MAX_RANK; r++)
		fprintf(out, "%s%lld", r ? ", " : "", (long long)v->shape.dim[r]);
	fputc(']', out);
}

static int is_comm(enum ir_opkind k)
{
	return k == IR_OP_SEND || k == IR_OP_RECV || k == IR_OP_ALL_TO_ALL ||
	       k == IR_OP_ALL_TO_ALLV || k == IR_OP_ALL_REDUCE || k == IR_OP_REDUCE_SCATTER ||
	       k == IR_OP_ALL_GATHER;
}

static void put_attrs(FILE *out, const struct ir_op *op)
{
	int shown = 0;
	for (int i = 0; i < op->n_attr && shown < 4; i++) {
		const struct ir_attr *a = &op->attr[i];
		if (!strcmp(a->name, "name") || !strcmp(a->name, "init") || !strcmp(a->name, "std") ||
		    !strcmp(a->name, "fan_in"))
			continue;
		/* flags at their default say nothing */
		if (a->kind == IR_ATTR_INT && a->i == 0 &&
		    (!strcmp(a->name, "trans_a") || !strcmp(a->name, "trans_b") ||
		     !strcmp(a->name, "keepdim") || !strcmp(a->name, "causal") ||
		     !strcmp(a->name, "inverse")))
			continue;
		fputs(shown++ ? ", " : " ", out);
		put_escaped(out, a->name, strlen(a->name));
		fputc('=', out);
		switch (a->kind) {
		case IR_ATTR_INT:
			fprintf(out, "%lld", (long long)a->i);
			break;
		case IR_ATTR_FLOAT:
			fprintf(out, "%.6g", a->f);
			break;
		case IR_ATTR_STR:
			put_escaped(out, a->s ? a->s : "", 24);
			break;
		case IR_ATTR_INTS:
			fputc('[', out);
			for (int k = 0; k < a->n && k < 8; k++)
				fprintf(out, "%s%lld", k ? "," : "", (long long)a->ints[k]);
			fputs(a->n > 8 ? ",..]" : "]", out);
			break;
		}
	}
}

static void put_node(struct dot *d, int i, const char *indent)
{
	const struct ir_op *op = d->g->ops[i];
	FILE *out = d->out;
	fprintf(out, "%sn%d [label=\"", indent, i);
	if (op->kind == IR_OP_PARAM) {
		fputs("param ", out);
		put_escaped(out, op->path ? op->path : "?", 200);
	} else if (op->kind == IR_OP_INPUT) {
		const char *nm = ir_op_str(op, "name", "?");
		fputs("input ", out);
		put_escaped(out, nm, strlen(nm));
	} else {
		fputs(ir_op_name(op->kind), out);
		put_attrs(out, op);
	}
	for (int k = 0; k < op->n_out; k++) {
		fputs("\\n", out);
		put_type(out, op->out[k]);
	}
	fputc('"', out);
	const char *fill = "#ffffff", *color = "#444444", *style = "rounded,filled", *shape = "box";
	if (op->kind == IR_OP_PARAM) {
		fill = "#fff2cc", color = "#b7950b", style = "filled", shape = "note";
	} else if (op->kind == IR_OP_INPUT) {
		fill = "#d9ead3", color = "#38761d", shape = "invhouse", style = "filled";
	} else if (op->kind == IR_OP_CONST) {
		fill = "#f3f3f3", color = "#999999";
	} else if (is_comm(op->kind)) {
		fill = "#fce5cd", color = "#e69138", shape = "cds", style = "filled";
	} else if (op->phase == IR_PHASE_BWD_B) {
		fill = "#f4cccc", color = "#cc0000", style = "rounded,filled,dashed";
	} else if (op->phase == IR_PHASE_BWD_W) {
		fill = "#d9d2e9", color = "#674ea7", style = "rounded,filled,dashed";
	} else if (op->phase == IR_PHASE_OPT) {
		fill = "#eeeeee", color = "#666666";
	} else if (op->kind == IR_OP_MATMUL || op->kind == IR_OP_GROUPED_MATMUL) {
		fill = "#dde8f6", color = "#3d6fb4";
	}
	fprintf(out, ", shape=%s, style=\"%s\", fillcolor=\"%s\", color=\"%s\"", shape, style, fill,
		color);
	if (d->is_grad_out[i])
		fputs(", peripheries=2", out);
	fputs("];\n", out);
}

static int is_bwd(const struct ir_op *op)
{
	return op->phase == IR_PHASE_BWD_B || op->phase == IR_PHASE_BWD_W;
}

/* tag: 'f' for the forward tree, 'b' for the backward one (cluster names differ) */
static void put_cluster(struct dot *d, struct tree *t, int c, int depth, char tag)
{
	FILE *out = d->out;
	char indent[64];
	int ind = depth < 30 ? depth + 1 : 31;
	memset(indent, '\t', (size_t)ind);
	indent[ind] = 0;
	struct cnode *n = &t->n[c];
	if (c == 0 && tag == 'b') {
		fprintf(out, "%ssubgraph cluster_backward {\n", indent);
		fprintf(out, "%s\tlabel=\"backward\"; style=\"rounded,dashed\"; color=\"#cc0000\"; "
			     "fontcolor=\"#cc0000\";\n", indent);
	}
	if (c > 0) {
		fprintf(out, "%ssubgraph cluster_%c%d {\n", indent, tag, c);
		const struct cnode *p = &t->n[n->parent];
		/* label: the part of the path below the parent's */
		const char *lab = n->path + (n->parent > 0 ? p->plen + 1 : 0);
		size_t llen = n->plen - (size_t)(lab - n->path);
		fprintf(out, "%s\tlabel=\"", indent);
		int u = n->unit;
		if (u >= 0 && d->units[u].run_len > 1) {
			const struct unit *last = &d->units[d->units[u].last];
			put_escaped(out, n->path, n->plen);
			fputs(" .. ", out);
			put_escaped(out, last->prefix, last->plen);
			fprintf(out, " (x%d)\";\n", d->units[u].run_len);
			fprintf(out, "%s\tstyle=\"rounded,filled\"; fillcolor=\"#e8eef8\"; "
				     "color=\"#3d6fb4\"; penwidth=2;\n", indent);
		} else {
			put_escaped(out, lab, llen);
			fputs("\";\n", out);
			fprintf(out, "%s\tstyle=\"rounded,filled\"; fillcolor=\"%s\"; color=\"#999999\";\n",
				indent, depth % 2 ? "#f7f7f7" : "#ffffff");
		}
	}
	for (int k = 0; k < n->n_ops; k++)
		put_node(d, n->ops[k], c > 0 || tag == 'b' ? indent : "\t");
	for (int ch = n->first_child; ch >= 0; ch = t->n[ch].next_sibling)
		put_cluster(d, t, ch, depth + 1, tag);
	if (c > 0 || tag == 'b')
		fprintf(out, "%s}\n", indent);
}

struct edge {
	int src, dst, bwd;
};

static int cmp_edge(const void *a, const void *b)
{
	const struct edge *x = a, *y = b;
	if (x->src != y->src)
		return x->src < y->src ? -1 : 1;
	if (x->dst != y->dst)
		return x->dst < y->dst ? -1 : 1;
	return x->bwd - y->bwd;
}

int ir_dot_write(const struct ir_graph *g, const struct ir_dot_options *opt, FILE *out)
{
	struct ir_dot_options defaults = { IR_DOT_COLLAPSE_AUTO, NULL };
	if (!opt)
		opt = &defaults;
	struct dot d = { .g = g, .out = out };
	size_t nops = (size_t)g->n_ops;
	d.def_op = xcalloc((size_t)g->n_values, sizeof *d.def_op);
	d.unit_of = xcalloc(nops, sizeof *d.unit_of);
	d.pos = xcalloc(nops, sizeof *d.pos);
	d.node = xcalloc(nops, sizeof *d.node);
	d.is_grad_out = xcalloc(nops, sizeof *d.is_grad_out);
	for (int v = 0; v < g->n_values; v++)
		d.def_op[v] = -1;
	for (int i = 0; i < g->n_ops; i++)
		for (int k = 0; k < g->ops[i]->n_out; k++) {
			const struct ir_value *v = g->ops[i]->out[k];
			if (v && v->id >= 0 && v->id < g->n_values)
				d.def_op[v->id] = i;
		}
	int runs = find_units(&d, opt->collapse);

	fputs("digraph sluice {\n", out);
	fputs("\tgraph [rankdir=TB, fontname=\"Helvetica\", fontsize=12, nodesep=0.25, "
	      "ranksep=0.35, labelloc=t, label=\"", out);
	if (opt->title)
		put_escaped(out, opt->title, strlen(opt->title));
	else {
		fputs("model ", out);
		put_escaped(out, g->model ? g->model : "?", 200);
	}
	fputs("\"];\n", out);
	int drawn = 0;
	for (int i = 0; i < g->n_ops; i++)
		drawn += d.node[i] == i;
	if (drawn > BIG_NODES)
		fputs("\tgraph [mclimit=0.3, nslimit=1, nslimit1=1, searchsize=10];\n", out);
	fputs("\tnode [fontname=\"Helvetica\", fontsize=10, height=0.3, margin=\"0.08,0.03\"];\n"
	      "\tedge [color=\"#555555\", arrowsize=0.6];\n", out);

	/* graph outputs: named nodes, except gradients (marked on their producer) */
	for (int k = 0; k < g->n_outputs; k++) {
		const struct ir_value *v = g->outputs[k];
		if (!v || v->id < 0 || v->id >= g->n_values || d.def_op[v->id] < 0)
			continue;
		if (!strncmp(g->output_names[k], "grad.", 5))
			d.is_grad_out[d.node[d.def_op[v->id]]] = 1;
	}

	/* clusters: the forward (and optimizer) ops by scope; the backward ops by scope
	 * again, inside one "backward" cluster drawn below the forward */
	struct tree t[2] = { { 0 }, { 0 } };
	tree_node(&t[0], "", 0, -1);
	tree_node(&t[1], "", 0, -1);
	int has_bwd = 0;
	for (int i = 0; i < g->n_ops; i++) {
		if (d.node[i] != i)
			continue;
		const struct ir_op *op = g->ops[i];
		has_bwd |= is_bwd(op);
		struct tree *tr = &t[is_bwd(op)];
		int c = scope_cluster(tr, op->scope);
		struct cnode *n = &tr->n[c];
		if (n->n_ops == n->cap_ops) {
			n->cap_ops = n->cap_ops ? 2 * n->cap_ops : 8;
			n->ops = xrealloc(n->ops, sizeof *n->ops * (size_t)n->cap_ops);
		}
		n->ops[n->n_ops++] = i;
	}
	for (int k = 0; k < 2; k++)
		for (int u = 0; u < d.n_units; u++) {
			int *slot = smap_slot(&t[k].map, d.units[u].prefix, d.units[u].plen);
			if (*slot >= 0)
				t[k].n[*slot].unit = u;
		}
	put_cluster(&d, &t[0], 0, 0, 'f');
	if (has_bwd)
		put_cluster(&d, &t[1], 0, 0, 'b');

	/* edges, mapped to drawn nodes, without duplicates or edges inside a run */
	struct edge *e = NULL;
	size_t ne = 0, cap = 0;
	char *has_bwd_in = xcalloc(nops, 1);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		for (int k = 0; k < op->n_in; k++) {
			if (!op->in[k] || op->in[k]->id < 0 || op->in[k]->id >= g->n_values)
				continue;
			int s = d.def_op[op->in[k]->id];
			if (s < 0)
				continue;
			int us = d.unit_of[s], ud = d.unit_of[i];
			if (us >= 0 && ud >= 0 && us != ud && d.units[us].rep == d.units[ud].rep)
				continue; /* between two units of one collapsed run */
			if (d.node[s] == d.node[i])
				continue;
			if (ne == cap) {
				cap = cap ? 2 * cap : 256;
				e = xrealloc(e, sizeof *e * cap);
			}
			/* forward values read by the backward (saved activations) are not
			 * drawn: there are hundreds, and they hide both structures */
			if (is_bwd(op) && !is_bwd(g->ops[s]))
				continue;
			e[ne++] = (struct edge){ d.node[s], d.node[i], is_bwd(op) };
			if (is_bwd(op))
				has_bwd_in[d.node[i]] = 1;
		}
	}
	if (ne)
		qsort(e, ne, sizeof *e, cmp_edge);
	for (size_t k = 0; k < ne; k++) {
		if (k && e[k].src == e[k - 1].src && e[k].dst == e[k - 1].dst)
			continue;
		fprintf(out, "\tn%d -> n%d%s;\n", e[k].src, e[k].dst,
			e[k].bwd ? " [color=\"#cc6666\"]" : "");
	}
	free(e);
	/* the backward starts below the loss: invisible edges to its first ops */
	const struct ir_value *loss = ir_graph_output(g, "loss");
	int lsrc = loss && loss->id >= 0 && loss->id < g->n_values ? d.def_op[loss->id] : -1;
	for (int i = 0; has_bwd && lsrc >= 0 && i < g->n_ops; i++)
		if (d.node[i] == i && is_bwd(g->ops[i]) && !has_bwd_in[i])
			fprintf(out, "\tn%d -> n%d [style=invis];\n", d.node[lsrc], i);
	free(has_bwd_in);
	for (int k = 0; k < g->n_outputs; k++) {
		const struct ir_value *v = g->outputs[k];
		if (!v || v->id < 0 || v->id >= g->n_values || d.def_op[v->id] < 0 ||
		    !strncmp(g->output_names[k], "grad.", 5))
			continue;
		int src = d.def_op[v->id];
		if (d.node[src] != src)
			continue; /* made in a collapsed layer: its representative's stands for it */
		int u = d.unit_of[src];
		fprintf(out, "\tout%d [label=\"", k);
		put_escaped(out, g->output_names[k], strlen(g->output_names[k]));
		if (u >= 0 && d.units[u].run_len > 1)
			fprintf(out, " .. (x%d)", d.units[u].run_len);
		fprintf(out, "\", shape=doubleoctagon, style=filled, fillcolor=\"#cfe2f3\", "
			     "color=\"#0b5394\"];\n\tn%d -> out%d;\n", src, k);
	}
	if (has_bwd)
		fputs("\tsubgraph cluster_legend {\n"
		      "\t\tlabel=\"legend\"; style=\"rounded\"; color=\"#999999\"; fontsize=10;\n"
		      "\t\tlegend_f [label=\"forward\", shape=box, style=\"rounded,filled\", "
		      "fillcolor=\"#ffffff\"];\n"
		      "\t\tlegend_b [label=\"backward: input grad (B)\", shape=box, "
		      "style=\"rounded,filled,dashed\", fillcolor=\"#f4cccc\", color=\"#cc0000\"];\n"
		      "\t\tlegend_w [label=\"backward: weight grad (W)\", shape=box, "
		      "style=\"rounded,filled,dashed\", fillcolor=\"#d9d2e9\", color=\"#674ea7\"];\n"
		      "\t\tlegend_f -> legend_b -> legend_w [style=invis];\n"
		      "\t}\n", out);
	fputs("}\n", out);

	for (int k = 0; k < 2; k++) {
		for (int c = 0; c < t[k].count; c++)
			free(t[k].n[c].ops);
		free(t[k].n);
		smap_free(&t[k].map);
	}
	for (int u = 0; u < d.n_units; u++)
		free(d.units[u].ops);
	free(d.units);
	free(d.def_op);
	free(d.unit_of);
	free(d.pos);
	free(d.node);
	free(d.is_grad_out);
	return runs;
}
