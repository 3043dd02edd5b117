/* test_ir_dot.c - the DOT writer: nodes carry op, shape, dtype and parameter paths;
 * scopes become nested clusters; runs of identical layers collapse (and only those);
 * edges leaving a collapsed run start at its representative; backward ops are styled. */
#include <string.h>

#include "check.h"
#include "ir/dot.h"
#include "irtest.h"

static char *dot_str(const struct ir_graph *g, enum ir_dot_collapse c, int *runs)
{
	struct ir_dot_options o = { c, NULL };
	struct sink s;
	*runs = ir_dot_write(g, &o, sink_open(&s));
	return sink_take(&s);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* n_layers residual layers of (param, matmul, add); layer `odd` has a wider matmul */
static struct ir_graph *layered(int n_layers, int odd)
{
	struct ir_graph *g = ir_graph_new("stack");
	struct ir_value *x = OP0(g, IR_OP_INPUT, IR_F32, S(2, 4, 8));
	ir_op_set_str(g, x->def, "name", "x");
	char scope[32], path[48];
	for (int l = 0; l < n_layers; l++) {
		snprintf(scope, sizeof scope, "layers.%d.ffn", l);
		ir_graph_set_context(g, (struct ir_loc){ "m.sl", 5, 3 }, ir_strdup(g->arena, scope));
		int w = l == odd ? 16 : 8;
		struct ir_value *p = OP0(g, IR_OP_PARAM, IR_F32, S(2, 8, w));
		snprintf(path, sizeof path, "layers.%d.ffn.w", l);
		p->def->path = ir_strdup(g->arena, path);
		ir_op_set_str(g, p->def, "init", "normal");
		struct ir_value *h = OP(g, IR_OP_MATMUL, IR_F32, S(2, 4, w), x, p);
		if (w != 8)
			h = OP(g, IR_OP_SLICE, IR_F32, S(2, 4, 8), h), ir_op_set_int(g, h->def, "axis", 1);
		snprintf(scope, sizeof scope, "layers.%d", l);
		ir_graph_set_context(g, (struct ir_loc){ "m.sl", 6, 3 }, ir_strdup(g->arena, scope));
		x = OP(g, IR_OP_ADD, IR_F32, S(2, 4, 8), x, h);
	}
	ir_graph_set_context(g, (struct ir_loc){ "m.sl", 9, 3 }, "head");
	struct ir_value *y = OP(g, IR_OP_REDUCE_SUM, IR_F32, S(0), OP(g, IR_OP_SQUARE, IR_F32, S(2, 4, 8), x));
	ir_op_set_int(g, y->def, "axis", 0);
	ir_graph_add_output(g, "loss", y);
	return g;
}

static void test_sample(void)
{
	struct ir_graph *g = sample_graph();
	int runs;
	char *d = dot_str(g, IR_DOT_COLLAPSE_AUTO, &runs);
	CHECK(runs == 0);
	CHECKF(strstr(d, "label=\"param layers.0.attn.wq\\nf32[16, 16]\""), "%s", d);
	CHECK(strstr(d, "label=\"input tokens\\ni32[2, 8]\""));
	CHECK(strstr(d, "label=\"moe_dispatch experts=4\\nf32[32, 16]\\ni32[5]\\ni32[32]\""));
	CHECK(strstr(d, "label=\"softmax causal=1\\nf32[2, 2, 8, 8]\""));
	/* nested clusters: layers.0 holds attn and moe */
	const char *l0 = strstr(d, "label=\"layers.0\"");
	const char *attn = strstr(d, "label=\"attn\"");
	CHECK(l0 && attn && attn > l0);
	CHECK(strstr(d, "label=\"embed\"") && strstr(d, "label=\"head\""));
	CHECK(count(d, "subgraph cluster_") == 8 /* 5 forward, backward and its head, legend */);
	/* the W-phase op and the send are styled, and the gradient output is marked */
	CHECK(strstr(d, "fillcolor=\"#d9d2e9\"") && strstr(d, "shape=cds"));
	CHECK(strstr(d, "peripheries=2") && strstr(d, "legend"));
	CHECK(strstr(d, "label=\"loss\", shape=doubleoctagon"));
	free(d);
	ir_graph_free(g);
}

static void test_collapse(void)
{
	int runs;
	/* 8 identical layers: collapsed by default, to one cluster of 3 ops */
	struct ir_graph *g = layered(8, -1);
	char *d = dot_str(g, IR_DOT_COLLAPSE_AUTO, &runs);
	CHECK(runs == 1);
	CHECKF(strstr(d, "label=\"layers.0 .. layers.7 (x8)\""), "%s", d);
	CHECK(count(d, "label=\"matmul") == 1 && count(d, "label=\"add") == 1);
	CHECK(!strstr(d, "layers.1.ffn.w"));
	/* the head's input comes from the representative's add (n3), not from layers.7 */
	CHECKF(strstr(d, "n3 -> n"), "%s", d);
	free(d);
	d = dot_str(g, IR_DOT_COLLAPSE_OFF, &runs);
	CHECK(runs == 0 && !strstr(d, "(x") && count(d, "label=\"matmul") == 8);
	free(d);
	ir_graph_free(g);

	/* a different layer breaks the run in two */
	g = layered(8, 2);
	d = dot_str(g, IR_DOT_COLLAPSE_ON, &runs);
	CHECK(runs == 2);
	CHECKF(strstr(d, "label=\"layers.0 .. layers.1 (x2)\"") &&
		       strstr(d, "label=\"layers.3 .. layers.7 (x5)\"") &&
		       strstr(d, "label=\"layers.2\""),
	       "%s", d);
	CHECK(count(d, "label=\"matmul") == 3 && strstr(d, "label=\"slice axis=1"));
	free(d);
	ir_graph_free(g);

	/* few layers: not collapsed unless asked */
	g = layered(3, -1);
	d = dot_str(g, IR_DOT_COLLAPSE_AUTO, &runs);
	CHECK(runs == 0 && count(d, "label=\"matmul") == 3);
	free(d);
	d = dot_str(g, IR_DOT_COLLAPSE_ON, &runs);
	CHECK(runs == 1 && strstr(d, "(x3)"));
	free(d);
	ir_graph_free(g);
}

static void test_escaping(void)
{
	struct ir_graph *g = ir_graph_new("we\"ird\\");
	ir_graph_set_context(g, (struct ir_loc){ 0 }, "a \"b\"");
	struct ir_value *x = OP0(g, IR_OP_INPUT, IR_F32, S(1, 4));
	ir_op_set_str(g, x->def, "name", "x\"\n");
	int runs;
	char *d = dot_str(g, IR_DOT_COLLAPSE_AUTO, &runs);
	CHECKF(strstr(d, "model we\\\"ird\\\\") && strstr(d, "input x\\\"?") &&
		       strstr(d, "label=\"a \\\"b\\\"\""),
	       "%s", d);
	free(d);
	ir_graph_free(g);
}

int main(void)
{
	test_sample();
	test_collapse();
	test_escaping();
	return CHECK_DONE();
}
