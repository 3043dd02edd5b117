/* test_ir_verify.c - the builder and the verifier on hand-built graphs: a valid graph
 * passes, and each kind of mismatch is caught with a message naming the op, its source
 * location and the shapes involved. */
#include <string.h>

#include "check.h"
#include "irtest.h"

static char *verify_msgs(const struct ir_graph *g, int *count)
{
	struct sink s;
	*count = ir_verify(g, sink_open(&s));
	return sink_take(&s);
}

/* the graph must fail verification with a message containing each of the needles */
#define EXPECT_FAIL(g, ...)                                                               \
	do {                                                                              \
		int n_;                                                                   \
		char *m_ = verify_msgs((g), &n_);                                         \
		CHECKF(n_ > 0, "%s: expected a verification error", __func__);          \
		const char *needles_[] = { __VA_ARGS__ };                                 \
		for (size_t k_ = 0; k_ < sizeof needles_ / sizeof *needles_; k_++)        \
			CHECKF(strstr(m_, needles_[k_]), "%s: '%s' not in:\n%s", __func__, \
			       needles_[k_], m_);                                         \
		free(m_);                                                                 \
		ir_graph_free(g);                                                         \
	} while (0)

static struct ir_graph *new_graph(void)
{
	struct ir_graph *g = ir_graph_new("t");
	ir_graph_set_context(g, (struct ir_loc){ "m.sl", 3, 7 }, "layers.1");
	return g;
}

static struct ir_value *input(struct ir_graph *g, const char *name, enum ir_dtype t,
			      struct ir_shape s)
{
	struct ir_value *v = OP0(g, IR_OP_INPUT, t, s);
	ir_op_set_str(g, v->def, "name", name);
	return v;
}

static void test_builder(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(2, 4, 8));
	struct ir_value *b = OP(g, IR_OP_EXP, IR_F32, S(2, 4, 8), a);
	CHECK(a->id == 0 && b->id == 1 && g->n_values == 2 && g->n_ops == 2);
	CHECK(b->def->in[0] == a && b->def_out == 0 && b->def->kind == IR_OP_EXP);
	CHECK(!strcmp(b->def->scope, "layers.1") && b->def->loc.line == 3);
	CHECK(b->def->stage == -1 && b->def->phase == IR_PHASE_FWD);
	ir_op_set_int(g, b->def, "k", 3);
	ir_op_set_int(g, b->def, "k", 4); /* replaces */
	CHECK(b->def->n_attr == 1 && ir_op_int(b->def, "k", 0) == 4);
	CHECK(ir_op_float(b->def, "k", 0) == 4.0 && ir_op_str(b->def, "k", "d")[0] == 'd');
	ir_graph_add_output(g, "y", b);
	CHECK(ir_graph_output(g, "y") == b && !ir_graph_output(g, "z"));
	ir_graph_set(g, "steps", 10, NULL);
	ir_graph_set(g, "steps", 20, NULL);
	CHECK(g->n_settings == 1 && ir_graph_setting_num(g, "steps", 0) == 20);
	struct ir_shape s = S(3, 1, 4, 1), t = S(2, 4, 5), u = S(1, 3), r;
	CHECK(ir_shape_broadcast(&s, &t, &r) && r.rank == 3 && r.dim[0] == 1 && r.dim[1] == 4 &&
	      r.dim[2] == 5);
	CHECK(!ir_shape_broadcast(&t, &u, &r));
	struct ir_shape big = S(2, 1 << 30, 1 << 30), big3 = S(3, 1 << 30, 1 << 30, 1 << 30);
	CHECK(ir_shape_numel(&big) == (int64_t)1 << 60 && ir_shape_numel(&big3) == -1);
	int n;
	char *m = verify_msgs(g, &n);
	CHECKF(n == 0, "%s", m);
	free(m);
	ir_graph_free(g);
}

static void test_sample_valid(void)
{
	struct ir_graph *g = sample_graph();
	int n;
	char *m = verify_msgs(g, &n);
	CHECKF(n == 0, "sample graph does not verify:\n%s", m);
	free(m);
	ir_graph_free(g);
}

/* --- structure ---------------------------------------------------------------------- */

static void test_use_before_def(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(1, 4));
	OP(g, IR_OP_NEG, IR_F32, S(1, 4), a);
	struct ir_op *t = g->ops[0];
	g->ops[0] = g->ops[1];
	g->ops[1] = t;
	EXPECT_FAIL(g, "m.sl:3:7: error: neg %1 in layers.1: input 0 %0 is used before it is defined");
}

static void test_foreign_value(void)
{
	struct ir_graph *g = new_graph(), *h = new_graph();
	struct ir_value *a = input(h, "a", IR_F32, S(1, 4));
	input(g, "b", IR_F32, S(1, 4));
	input(g, "c", IR_F32, S(1, 4));
	OP(g, IR_OP_NEG, IR_F32, S(1, 4), a);
	g->values[0] = a; /* id 0 names another graph's value: not consistent */
	EXPECT_FAIL(g, "is not a value of this graph");
	ir_graph_free(h);
}

static void test_arity(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(1, 4));
	OP(g, IR_OP_ADD, IR_F32, S(1, 4), a);
	EXPECT_FAIL(g, "add %1 in layers.1: takes 2 inputs, has 1");
	g = new_graph();
	a = input(g, "a", IR_F32, S(1, 4));
	ir_op_new(g, IR_OP_NEG, 1, VALS(a), 2);
	EXPECT_FAIL(g, "has 2 outputs, must have 1");
	g = new_graph();
	ir_op_new(g, IR_OP_CONCAT, 0, NULL, 1);
	EXPECT_FAIL(g, "takes at least 1 input, has 0");
}

static void test_def_consistency(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(1, 4));
	struct ir_value *b = OP(g, IR_OP_NEG, IR_F32, S(1, 4), a);
	b->def_out = 1;
	EXPECT_FAIL(g, "output 0 %1 does not point back to this op");
	g = new_graph();
	a = input(g, "a", IR_F32, S(1, 4));
	b = OP(g, IR_OP_NEG, IR_F32, S(1, 4), a);
	struct ir_value *c = OP(g, IR_OP_NEG, IR_F32, S(1, 4), b);
	c->def->out[0] = b; /* b defined twice */
	EXPECT_FAIL(g, "output %1 is defined twice");
}

static void test_graph_output(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(1, 4));
	struct ir_value *orphan = ir_value_new(g, IR_F32, S(1, 4));
	ir_graph_add_output(g, "ok", a);
	ir_graph_add_output(g, "loss", orphan);
	EXPECT_FAIL(g, "graph output 'loss' is not defined by an op of the graph");
}

static void test_bad_shape_values(void)
{
	struct ir_graph *g = new_graph();
	input(g, "a", IR_F32, S(2, 4, -3));
	EXPECT_FAIL(g, "has negative dim -3");
	g = new_graph();
	input(g, "a", IR_F32, S(3, 1 << 30, 1 << 30, 1 << 30));
	EXPECT_FAIL(g, "more elements than fit in 64 bits");
	g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(1, 4));
	a->shape.rank = 12;
	EXPECT_FAIL(g, "has rank 12");
	g = new_graph();
	a = input(g, "a", IR_F32, S(1, 4));
	a->def->stage = -4;
	EXPECT_FAIL(g, "stage -4");
}

/* --- sources and attributes -------------------------------------------------------- */

static void test_sources(void)
{
	struct ir_graph *g = new_graph();
	OP0(g, IR_OP_INPUT, IR_I32, S(1, 4));
	EXPECT_FAIL(g, "input %0 in layers.1: missing string attribute 'name'");
	g = new_graph();
	struct ir_value *p = OP0(g, IR_OP_PARAM, IR_F32, S(1, 4));
	ir_op_set_str(g, p->def, "init", "normal");
	EXPECT_FAIL(g, "a parameter needs a path");
	g = new_graph();
	p = OP0(g, IR_OP_PARAM, IR_F32, S(1, 4));
	p->def->path = "w";
	ir_op_set_str(g, p->def, "init", "gaussian");
	EXPECT_FAIL(g, "unknown init \"gaussian\"");
	g = new_graph();
	p = OP0(g, IR_OP_PARAM, IR_I32, S(1, 4));
	p->def->path = "w";
	ir_op_set_str(g, p->def, "init", "zeros");
	EXPECT_FAIL(g, "parameter i32[4] must have a float dtype");
	g = new_graph();
	OP0(g, IR_OP_CONST, IR_F32, S(0));
	EXPECT_FAIL(g, "missing float attribute 'value'");
	g = new_graph();
	p = OP(g, IR_OP_REDUCE_SUM, IR_F32, S(0), input(g, "a", IR_F32, S(1, 4)));
	ir_op_set_float(g, p->def, "axis", 0);
	EXPECT_FAIL(g, "attribute 'axis' must be an integer");
}

/* --- elementwise ----------------------------------------------------------------- */

static void test_elementwise(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(2, 4, 8));
	OP(g, IR_OP_SIGMOID, IR_F32, S(2, 4, 9), a);
	EXPECT_FAIL(g, "sigmoid %1 in layers.1: output f32[4, 9] must have the input's shape and dtype f32[4, 8]");
	g = new_graph();
	a = input(g, "a", IR_I32, S(1, 4));
	OP(g, IR_OP_EXP, IR_I32, S(1, 4), a);
	EXPECT_FAIL(g, "input i32[4] must have a float dtype");
	g = new_graph();
	a = input(g, "a", IR_F32, S(1, 4));
	OP(g, IR_OP_CAST, IR_BF16, S(1, 5), a);
	EXPECT_FAIL(g, "output bf16[5] must have the input's shape f32[4]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	struct ir_value *b = input(g, "b", IR_F32, S(2, 3, 8));
	OP(g, IR_OP_ADD, IR_F32, S(2, 4, 8), a, b);
	EXPECT_FAIL(g, "add %2 in layers.1: shapes do not broadcast: f32[4, 8] and f32[3, 8]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	b = input(g, "b", IR_BF16, S(1, 8));
	OP(g, IR_OP_MUL, IR_F32, S(2, 4, 8), a, b);
	EXPECT_FAIL(g, "input dtypes differ: f32[4, 8] and bf16[8]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 1));
	b = input(g, "b", IR_F32, S(1, 8));
	OP(g, IR_OP_SUB, IR_F32, S(2, 4, 1), a, b);
	EXPECT_FAIL(g, "output f32[4, 1] must be f32[4, 8], the broadcast of f32[4, 1] and f32[8]");
}

/* --- reductions and shape ops ------------------------------------------------------ */

static void test_reduce_and_shape(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(2, 4, 8));
	struct ir_value *r = OP(g, IR_OP_REDUCE_MEAN, IR_F32, S(1, 4), a);
	ir_op_set_int(g, r->def, "axis", 2);
	EXPECT_FAIL(g, "axis 2 out of range for input f32[4, 8]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	r = OP(g, IR_OP_REDUCE_MAX, IR_F32, S(1, 4), a);
	ir_op_set_int(g, r->def, "axis", -1);
	ir_op_set_int(g, r->def, "keepdim", 1);
	EXPECT_FAIL(g, "output f32[4] must be f32[4, 1]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	OP(g, IR_OP_RESHAPE, IR_F32, S(2, 5, 8), a);
	EXPECT_FAIL(g, "element counts differ: f32[4, 8] has 32, f32[5, 8] has 40");
	g = new_graph();
	a = input(g, "a", IR_F32, S(3, 2, 3, 4));
	r = OP(g, IR_OP_TRANSPOSE, IR_F32, S(3, 2, 4, 3), a);
	ir_op_set_ints(g, r->def, "perm", 3, (const int64_t[]){ 0, 2, 2 });
	EXPECT_FAIL(g, "perm is not a permutation of 0..2");
	g = new_graph();
	a = input(g, "a", IR_F32, S(3, 2, 3, 4));
	r = OP(g, IR_OP_TRANSPOSE, IR_F32, S(3, 2, 3, 4), a);
	ir_op_set_ints(g, r->def, "perm", 3, (const int64_t[]){ 0, 2, 1 });
	EXPECT_FAIL(g, "output f32[2, 3, 4] must be f32[2, 4, 3]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	r = OP(g, IR_OP_SLICE, IR_F32, S(2, 4, 6), a);
	ir_op_set_int(g, r->def, "axis", 1);
	ir_op_set_int(g, r->def, "start", 4);
	EXPECT_FAIL(g, "slice [4, 10) of axis 1 is outside input f32[4, 8]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	struct ir_value *b = input(g, "b", IR_F32, S(2, 5, 2));
	r = OP(g, IR_OP_CONCAT, IR_F32, S(2, 4, 10), a, b);
	ir_op_set_int(g, r->def, "axis", -1);
	EXPECT_FAIL(g, "input 1 f32[5, 2] and input 0 f32[4, 8] differ outside axis 1");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	OP(g, IR_OP_BROADCAST, IR_F32, S(2, 3, 8), a);
	EXPECT_FAIL(g, "f32[4, 8] does not broadcast to f32[3, 8]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 4, 8));
	OP(g, IR_OP_SUM_TO, IR_F32, S(1, 4), a);
	EXPECT_FAIL(g, "f32[4] does not broadcast to f32[4, 8]");
}

/* --- contractions -------------------------------------------------------------------- */

static void test_matmul(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(3, 2, 16, 256));
	struct ir_value *b = input(g, "b", IR_F32, S(2, 128, 64));
	OP(g, IR_OP_MATMUL, IR_F32, S(3, 2, 16, 64), a, b);
	EXPECT_FAIL(g, "m.sl:3:7: error: matmul %2 in layers.1: inner dims differ: a f32[2, 16, 256] has K=256, b f32[128, 64] has K=128");
	g = new_graph();
	a = input(g, "a", IR_F32, S(3, 2, 16, 256));
	b = input(g, "b", IR_F32, S(2, 64, 256));
	struct ir_value *y = OP(g, IR_OP_MATMUL, IR_F32, S(3, 2, 16, 64), a, b);
	ir_op_set_int(g, y->def, "trans_b", 1);
	int n;
	char *m = verify_msgs(g, &n);
	CHECKF(n == 0, "trans_b matmul should verify: %s", m);
	free(m);
	ir_graph_free(g);
	g = new_graph();
	a = input(g, "a", IR_F32, S(3, 2, 16, 8));
	b = input(g, "b", IR_F32, S(3, 3, 8, 4));
	OP(g, IR_OP_MATMUL, IR_F32, S(3, 2, 16, 4), a, b);
	EXPECT_FAIL(g, "batch dims of a f32[2, 16, 8] and b f32[3, 8, 4] differ");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 16, 8));
	b = input(g, "b", IR_F32, S(2, 8, 4));
	OP(g, IR_OP_MATMUL, IR_F32, S(2, 16, 5), a, b);
	EXPECT_FAIL(g, "output f32[16, 5] must have shape [16, 4]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(2, 16, 8));
	b = input(g, "b", IR_BF16, S(2, 8, 4));
	OP(g, IR_OP_MATMUL, IR_F32, S(2, 16, 4), a, b);
	EXPECT_FAIL(g, "a f32[16, 8] and b bf16[8, 4] must have the same dtype");
	g = new_graph();
	a = input(g, "a", IR_BF16, S(2, 16, 8));
	b = input(g, "b", IR_BF16, S(2, 8, 4));
	OP(g, IR_OP_MATMUL, IR_F16, S(2, 16, 4), a, b);
	EXPECT_FAIL(g, "output f16[16, 4] must have a's dtype bf16 or f32");
}

static void test_softmax_rope(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *a = input(g, "a", IR_F32, S(3, 2, 8, 9));
	struct ir_value *y = OP(g, IR_OP_SOFTMAX, IR_F32, S(3, 2, 8, 9), a);
	ir_op_set_int(g, y->def, "causal", 1);
	EXPECT_FAIL(g, "causal needs a [..., S, S] input, got f32[2, 8, 9]");
	g = new_graph();
	a = input(g, "a", IR_F32, S(4, 2, 8, 4, 7));
	OP(g, IR_OP_ROPE, IR_F32, S(4, 2, 8, 4, 7), a);
	EXPECT_FAIL(g, "the last dim of input f32[2, 8, 4, 7] must be even");
	g = new_graph();
	a = input(g, "a", IR_F32, S(3, 2, 8, 4));
	OP(g, IR_OP_ROPE, IR_F32, S(3, 2, 8, 4), a);
	EXPECT_FAIL(g, "input [B, S, H, D] f32[2, 8, 4] must have rank 4");
}

static void test_gather_ce(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *t = input(g, "t", IR_F32, S(2, 32, 16));
	struct ir_value *i = input(g, "i", IR_F32, S(2, 2, 8));
	OP(g, IR_OP_GATHER_ROWS, IR_F32, S(3, 2, 8, 16), t, i);
	EXPECT_FAIL(g, "idx f32[2, 8] must have an integer dtype (i32 or i64)");
	g = new_graph();
	t = input(g, "t", IR_F32, S(2, 32, 16));
	i = input(g, "i", IR_I32, S(2, 2, 8));
	OP(g, IR_OP_GATHER_ROWS, IR_F32, S(3, 2, 8, 32), t, i);
	EXPECT_FAIL(g, "output f32[2, 8, 32] must be f32[2, 8, 16]");
	g = new_graph();
	struct ir_value *dy = input(g, "dy", IR_F32, S(3, 2, 8, 16));
	i = input(g, "i", IR_I64, S(2, 2, 7));
	OP(g, IR_OP_SCATTER_ROWS, IR_F32, S(2, 32, 16), dy, i);
	EXPECT_FAIL(g, "dy f32[2, 8, 16] must be [2, 7, 16]");
	g = new_graph();
	struct ir_value *l = input(g, "l", IR_F32, S(2, 16, 32));
	i = input(g, "i", IR_I32, S(1, 15));
	OP(g, IR_OP_CROSS_ENTROPY, IR_F32, S(0), l, i);
	EXPECT_FAIL(g, "targets i32[15] must have logits' N (logits f32[16, 32])");
	g = new_graph();
	l = input(g, "l", IR_F32, S(2, 16, 32));
	i = input(g, "i", IR_I32, S(1, 16));
	OP(g, IR_OP_CROSS_ENTROPY, IR_F32, S(1, 1), l, i);
	EXPECT_FAIL(g, "output f32[1] must be a float scalar");
}

/* --- routing and experts --------------------------------------------------------------- */

static void test_routing(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *s = input(g, "s", IR_F32, S(2, 16, 4));
	struct ir_value *k = OP(g, IR_OP_TOPK, IR_I32, S(2, 16, 5), s);
	ir_op_set_int(g, k->def, "k", 5);
	EXPECT_FAIL(g, "k=5 must be in 1..4 for input f32[16, 4]");
	g = new_graph();
	s = input(g, "s", IR_F32, S(2, 16, 4));
	k = OP(g, IR_OP_TOPK, IR_F32, S(2, 16, 2), s);
	ir_op_set_int(g, k->def, "k", 2);
	EXPECT_FAIL(g, "output f32[16, 2] must be i32[16, 2]");
	g = new_graph();
	s = input(g, "s", IR_F32, S(2, 16, 4));
	struct ir_value *i = input(g, "i", IR_I32, S(2, 16, 2));
	OP(g, IR_OP_TAKE_ALONG, IR_F32, S(2, 16, 3), s, i);
	EXPECT_FAIL(g, "output f32[16, 3] must have idx's shape i32[16, 2]");
	g = new_graph();
	struct ir_value *v = input(g, "v", IR_F32, S(2, 16, 2));
	i = input(g, "i", IR_I32, S(2, 8, 2));
	OP(g, IR_OP_PUT_ALONG, IR_F32, S(2, 16, 4), v, i);
	EXPECT_FAIL(g, "idx i32[8, 2] and output f32[16, 4] differ in N");
	g = new_graph();
	i = input(g, "i", IR_I32, S(3, 2, 8, 2));
	v = OP(g, IR_OP_EXPERT_COUNT, IR_F32, S(2, 2, 5), i);
	ir_op_set_int(g, v->def, "experts", 4);
	EXPECT_FAIL(g, "output f32[2, 5] must be f32[2, 4]");
}

static void test_moe(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *x = input(g, "x", IR_F32, S(2, 16, 8));
	struct ir_value *i = input(g, "i", IR_I32, S(2, 16, 2));
	struct ir_op *d = ir_op_new(g, IR_OP_MOE_DISPATCH, 2, VALS(x, i), 3);
	ir_op_set_int(g, d, "experts", 4);
	d->out[0]->shape = S(2, 32, 8);
	d->out[1]->dtype = IR_I32;
	d->out[1]->shape = S(1, 4);
	d->out[2]->dtype = IR_I32;
	d->out[2]->shape = S(1, 32);
	EXPECT_FAIL(g, "offsets i32[4] must be i32[5]");
	g = new_graph();
	struct ir_value *xs = input(g, "xs", IR_F32, S(2, 32, 8));
	struct ir_value *w = input(g, "w", IR_F32, S(3, 4, 16, 8));
	struct ir_value *off = input(g, "off", IR_I32, S(1, 5));
	OP(g, IR_OP_GROUPED_MATMUL, IR_F32, S(2, 32, 8), xs, w, off);
	EXPECT_FAIL(g, "K differs: xs f32[32, 8], weight f32[4, 16, 8]");
	g = new_graph();
	xs = input(g, "xs", IR_F32, S(2, 32, 8));
	w = input(g, "w", IR_F32, S(3, 4, 8, 16));
	off = input(g, "off", IR_I32, S(1, 4));
	OP(g, IR_OP_GROUPED_MATMUL, IR_F32, S(2, 32, 16), xs, w, off);
	EXPECT_FAIL(g, "offsets i32[4] must have E+1 = 5 entries (weight f32[4, 8, 16])");
	g = new_graph();
	struct ir_value *ys = input(g, "ys", IR_F32, S(2, 30, 8));
	struct ir_value *perm = input(g, "perm", IR_I32, S(1, 30));
	struct ir_value *gates = input(g, "gates", IR_F32, S(2, 16, 2));
	OP(g, IR_OP_MOE_COMBINE, IR_F32, S(2, 16, 8), ys, perm, gates);
	EXPECT_FAIL(g, "routed rows f32[30, 8] and perm i32[30] must have N*k = 32 rows (gates f32[16, 2])");
	g = new_graph();
	struct ir_value *dxs = input(g, "dxs", IR_F32, S(2, 32, 8));
	perm = input(g, "perm", IR_I32, S(1, 32));
	struct ir_value *dx = OP(g, IR_OP_MOE_UNDISPATCH, IR_F32, S(2, 16, 8), dxs, perm);
	ir_op_set_int(g, dx->def, "k", 3);
	EXPECT_FAIL(g, "must have N*k = 48 rows");
	g = new_graph();
	xs = input(g, "xs", IR_F32, S(2, 32, 8));
	struct ir_value *dy = input(g, "dy", IR_F32, S(2, 32, 16));
	off = input(g, "off", IR_I32, S(1, 5));
	OP(g, IR_OP_GROUPED_MATMUL_WGRAD, IR_F32, S(3, 4, 8, 15), xs, dy, off);
	EXPECT_FAIL(g, "dy f32[32, 16] must be [32, 15]");
}

/* a scaled product of f8 inputs qa, qb with scales of the given shapes and tiles */
static struct ir_value *scaled(struct ir_graph *g, enum ir_opkind k, struct ir_value *qa,
			       struct ir_value *qb, struct ir_value *off, struct ir_shape sa,
			       struct ir_shape sb, const int64_t *ta, const int64_t *tb,
			       enum ir_dtype out, struct ir_shape os)
{
	struct ir_value *a = input(g, "sa", IR_F32, sa), *b = input(g, "sb", IR_F32, sb);
	struct ir_value *y = off ? OP(g, k, out, os, qa, qb, off, a, b) : OP(g, k, out, os, qa, qb, a, b);
	if (ta)
		ir_op_set_ints(g, y->def, "a_tile", 2, ta);
	if (tb)
		ir_op_set_ints(g, y->def, "b_tile", 2, tb);
	return y;
}

static void test_scaled_products(void)
{
	static const int64_t row[2] = { 1, 128 }, col[2] = { 128, 1 }, blk[2] = { 128, 128 };
	const enum ir_opkind M = IR_OP_SCALED_MATMUL, G = IR_OP_SCALED_GROUPED_MATMUL;
	const enum ir_opkind W = IR_OP_SCALED_GROUPED_MATMUL_WGRAD;
	/* valid: a [2, 40, 300] in 1x128 tiles (ragged), b [300, 72] in 128x128 blocks */
	struct ir_graph *g = new_graph();
	struct ir_value *qa = input(g, "qa", IR_F8E4M3, S(3, 2, 40, 300));
	struct ir_value *qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(3, 2, 40, 3), S(2, 3, 1), row, blk, IR_F32, S(3, 2, 40, 72));
	CHECK(ir_verify(g, stderr) == 0);
	ir_graph_free(g);
	/* a's scale one tile short along K (300 = 2 x 128 + 44 needs 3) */
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 2), S(2, 3, 1), row, blk, IR_F32, S(2, 40, 72));
	EXPECT_FAIL(g, "scale f32[40, 2] of a f8e4m3[40, 300] must be f32[40, 3] (1x128 tiles)");
	/* b's scale in 1x128 tiles where b_tile says 128x128 */
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 300, 1), row, blk, IR_F32, S(2, 40, 72));
	EXPECT_FAIL(g, "scale f32[300, 1] of b f8e4m3[300, 72] must be f32[3, 1] (128x128 tiles)");
	/* a batched a's scale without the batch dim */
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(3, 2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 3, 1), row, blk, IR_F32, S(3, 2, 40, 72));
	EXPECT_FAIL(g, "must be f32[2, 40, 3] (1x128 tiles)");
	/* tiles missing, f32 operands, an f8 output, a shape the GEMM rule refuses */
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 3, 1), row, NULL, IR_F32, S(2, 40, 72));
	EXPECT_FAIL(g, "attribute 'b_tile' must be two positive integers [rows, cols]");
	g = new_graph();
	qa = input(g, "qa", IR_F32, S(2, 40, 300));
	qb = input(g, "qb", IR_F32, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 3, 1), row, blk, IR_F32, S(2, 40, 72));
	EXPECT_FAIL(g, "a f32[40, 300] must have an FP8 dtype");
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 300, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 3, 1), row, blk, IR_F8E4M3, S(2, 40, 72));
	EXPECT_FAIL(g, "output f8e4m3[40, 72] must be f32 or bf16");
	g = new_graph();
	qa = input(g, "qa", IR_F8E4M3, S(2, 40, 300));
	qb = input(g, "qb", IR_F8E4M3, S(2, 200, 72));
	scaled(g, M, qa, qb, NULL, S(2, 40, 3), S(2, 2, 1), row, blk, IR_F32, S(2, 40, 72));
	EXPECT_FAIL(g, "error: scaled_matmul %", "inner dims differ");
	/* grouped: the weight's scale per expert, [E, ...] */
	g = new_graph();
	struct ir_value *xs = input(g, "xs", IR_F8E4M3, S(2, 32, 130));
	struct ir_value *w = input(g, "w", IR_F8E4M3, S(3, 4, 130, 16));
	struct ir_value *off = input(g, "off", IR_I32, S(1, 5));
	scaled(g, G, xs, w, off, S(2, 32, 2), S(3, 4, 2, 1), row, blk, IR_F32, S(2, 32, 16));
	CHECK(ir_verify(g, stderr) == 0);
	ir_graph_free(g);
	g = new_graph();
	xs = input(g, "xs", IR_F8E4M3, S(2, 32, 130));
	w = input(g, "w", IR_F8E4M3, S(3, 4, 130, 16));
	off = input(g, "off", IR_I32, S(1, 5));
	scaled(g, G, xs, w, off, S(2, 32, 2), S(2, 2, 1), row, blk, IR_F32, S(2, 32, 16));
	EXPECT_FAIL(g, "scale f32[2, 1] of w f8e4m3[4, 130, 16] must be f32[4, 2, 1] (128x128 tiles)");
	/* weight gradient: both operands 128x1 over the rows */
	g = new_graph();
	xs = input(g, "xs", IR_F8E4M3, S(2, 300, 130));
	struct ir_value *dy = input(g, "dy", IR_F8E4M3, S(2, 300, 16));
	off = input(g, "off", IR_I32, S(1, 5));
	scaled(g, W, xs, dy, off, S(2, 3, 130), S(2, 3, 16), col, col, IR_F32, S(3, 4, 130, 16));
	CHECK(ir_verify(g, stderr) == 0);
	ir_graph_free(g);
	g = new_graph();
	xs = input(g, "xs", IR_F8E4M3, S(2, 300, 130));
	dy = input(g, "dy", IR_F8E4M3, S(2, 300, 16));
	off = input(g, "off", IR_I32, S(1, 5));
	scaled(g, W, xs, dy, off, S(2, 3, 130), S(2, 300, 1), col, col, IR_F32, S(3, 4, 130, 16));
	EXPECT_FAIL(g, "scale f32[300, 1] of dy f8e4m3[300, 16] must be f32[3, 16] (128x1 tiles)");
	/* quant_fp8 over a batch dim: each matrix tiled on its own */
	g = new_graph();
	struct ir_value *x = input(g, "x", IR_F32, S(3, 2, 256, 300));
	struct ir_op *q = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(x), 2);
	ir_op_set_int(g, q, "tile_r", 128);
	ir_op_set_int(g, q, "tile_c", 128);
	q->out[0]->dtype = IR_F8E4M3;
	q->out[0]->shape = x->shape;
	q->out[1]->shape = S(2, 2, 3);
	EXPECT_FAIL(g, "scale f32[2, 3] must be f32[2, 2, 3]");
}

static void test_fp8_and_comm(void)
{
	struct ir_graph *g = new_graph();
	struct ir_value *x = input(g, "x", IR_F32, S(2, 256, 300));
	struct ir_op *q = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(x), 2);
	ir_op_set_int(g, q, "tile_r", 1);
	ir_op_set_int(g, q, "tile_c", 128);
	q->out[0]->dtype = IR_F8E4M3;
	q->out[0]->shape = S(2, 256, 300);
	q->out[1]->shape = S(2, 256, 2);
	EXPECT_FAIL(g, "scale f32[256, 2] must be f32[256, 3] (x f32[256, 300] in 1x128 tiles)");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 4, 4));
	q = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(x), 2);
	ir_op_set_int(g, q, "tile_r", 1);
	ir_op_set_int(g, q, "tile_c", 128);
	q->out[0]->dtype = IR_BF16;
	q->out[0]->shape = S(2, 4, 4);
	q->out[1]->shape = S(2, 4, 1);
	EXPECT_FAIL(g, "q bf16[4, 4] must be f8e4m3");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 4, 4));
	struct ir_value *y = OP(g, IR_OP_ALL_REDUCE, IR_F32, S(2, 4, 4), x);
	(void)y;
	EXPECT_FAIL(g, "missing string attribute 'group'");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 4, 4));
	struct ir_op *s = ir_op_new(g, IR_OP_SEND, 1, VALS(x), 0);
	ir_op_set_int(g, s, "peer", 1);
	EXPECT_FAIL(g, "send (op 1) in layers.1: missing integer attribute 'tag'");
}

static void test_expert_parallel(void)
{
	struct ir_graph *g = ep_sample_graph();
	int n;
	char *m = verify_msgs(g, &n);
	CHECKF(n == 0, "%s", m);
	free(m);
	ir_graph_free(g);

	g = new_graph();
	struct ir_value *off = input(g, "off", IR_I32, S(1, 13));
	ir_op_set_int(g, OP(g, IR_OP_EP_COUNTS, IR_I32, S(2, 5, 2), off)->def, "ranks", 5);
	EXPECT_FAIL(g, "ranks=5 must be positive and divide the 12 experts of offsets i32[13]");
	g = new_graph();
	off = input(g, "off", IR_I32, S(1, 13));
	ir_op_set_int(g, OP(g, IR_OP_EP_COUNTS, IR_I32, S(2, 3, 4), off)->def, "ranks", 4);
	EXPECT_FAIL(g, "output i32[3, 4] must be i32[4, 3] (ranks=4");
	g = new_graph();
	OP(g, IR_OP_EP_COUNTS, IR_I32, S(2, 3, 4), input(g, "off", IR_I32, S(1, 13)));
	EXPECT_FAIL(g, "missing integer attribute 'ranks'");
	g = new_graph();
	OP(g, IR_OP_EP_OFFSETS, IR_I64, S(1, 4), input(g, "rc", IR_I32, S(2, 4, 3)));
	EXPECT_FAIL(g, "output i64[4] must be i32[4] (rc i32[4, 3])");
	g = new_graph();
	OP(g, IR_OP_EP_OFFSETS, IR_I32, S(1, 3), input(g, "rc", IR_F32, S(1, 2)));
	EXPECT_FAIL(g, "rc [P, El] f32[2] must have rank 2");

	g = new_graph();
	struct ir_value *x = input(g, "x", IR_F32, S(2, 8, 4));
	OP(g, IR_OP_EP_REGROUP, IR_F32, S(2, 8, 5), x, input(g, "rc", IR_I32, S(2, 2, 2)));
	EXPECT_FAIL(g, "ep_regroup %2 in layers.1: output f32[8, 5] must have the input's shape");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	OP(g, IR_OP_EP_REGROUP, IR_F32, S(2, 8, 4), x, input(g, "rc", IR_F32, S(2, 2, 2)));
	EXPECT_FAIL(g, "rc f32[2, 2] must have an integer dtype");
	g = new_graph();
	x = input(g, "x", IR_I32, S(2, 8, 4));
	OP(g, IR_OP_EP_REGROUP, IR_I32, S(2, 8, 4), x, input(g, "rc", IR_I32, S(2, 2, 2)));
	EXPECT_FAIL(g, "x i32[8, 4] must have a float dtype");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	struct ir_value *y = OP(g, IR_OP_EP_REGROUP, IR_F32, S(2, 8, 4), x,
				input(g, "rc", IR_I32, S(2, 2, 2)));
	ir_op_set_int(g, y->def, "inverse", 2);
	EXPECT_FAIL(g, "inverse=2 must be 0 or 1");

	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	struct ir_value *sc = input(g, "sc", IR_I32, S(2, 2, 3)), *rc = input(g, "rc", IR_I32, S(2, 4, 3));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 9, 4), x, sc, rc)->def, "group", "ep");
	EXPECT_FAIL(g, "sc i32[2, 3] and rc i32[4, 3] must have the same P");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	sc = input(g, "sc", IR_I32, S(2, 2, 3));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 9, 5), x, sc, sc)->def, "group", "ep");
	EXPECT_FAIL(g, "output f32[9, 5] must have the row shape of x f32[8, 4]");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	sc = input(g, "sc", IR_I32, S(2, 2, 3));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALLV, IR_BF16, S(2, 9, 4), x, sc, sc)->def, "group", "ep");
	EXPECT_FAIL(g, "output bf16[9, 4] must have x's dtype");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	sc = input(g, "sc", IR_I32, S(1, 2));
	OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 9, 4), x, sc, sc);
	EXPECT_FAIL(g, "missing string attribute 'group'");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 8, 4));
	sc = input(g, "sc", IR_I64, S(2, 1, 2));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 9, 4), x, sc, sc)->def, "group", "ep");
	EXPECT_FAIL(g, "sc i64[1, 2] and rc i64[1, 2] must be i32");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 2, 4));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALL, IR_F32, S(2, 4, 2), x)->def, "group", "ep");
	EXPECT_FAIL(g, "output f32[4, 2] must have the input's shape and dtype f32[2, 4]");
	g = new_graph();
	x = input(g, "x", IR_F32, S(2, 2, 4));
	ir_op_set_str(g, OP(g, IR_OP_ALL_TO_ALL, IR_F32, S(2, 2, 4), x, x)->def, "group", "ep");
	EXPECT_FAIL(g, "all_to_all %1 in layers.1: takes 1 input, has 2");
}

static void test_no_location(void)
{
	struct ir_graph *g = ir_graph_new("t");
	struct ir_value *a = OP0(g, IR_OP_INPUT, IR_F32, S(1, 4));
	ir_op_set_str(g, a->def, "name", "a");
	OP(g, IR_OP_TANH, IR_F32, S(1, 5), a);
	int n;
	char *m = verify_msgs(g, &n);
	CHECKF(n == 1 && !strncmp(m, "error: tanh %1: output f32[5]", 29), "got: %s", m);
	free(m);
	CHECK(ir_verify(g, NULL) == 1);
	ir_graph_free(g);
}

int main(void)
{
	test_builder();
	test_sample_valid();
	test_use_before_def();
	test_foreign_value();
	test_arity();
	test_def_consistency();
	test_graph_output();
	test_bad_shape_values();
	test_sources();
	test_elementwise();
	test_reduce_and_shape();
	test_matmul();
	test_softmax_rope();
	test_gather_ce();
	test_routing();
	test_moe();
	test_fp8_and_comm();
	test_scaled_products();
	test_expert_parallel();
	test_no_location();
	return CHECK_DONE();
}
