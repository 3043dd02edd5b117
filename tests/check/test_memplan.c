/* test_memplan.c - pass_memplan: a hand-checked chain, alignment, what lives outside
 * the arena, and the no-overlap property on random graphs against a liveness computed
 * here independently. */
#include <string.h>

#include "build.h"
#include "check.h"
#include "passes/passes.h"
#include "plan_check.h"

/* x -> exp -> exp -> exp -> sum: the first and third temporaries can share bytes. */
static void test_chain(void)
{
	struct ir_graph *g = ir_graph_new("chain");
	struct ir_value *x = b_input(g, "x", IR_F32, ir_shape_of(1, (int64_t)256));
	struct ir_value *y1 = b_un(g, IR_OP_EXP, x);
	struct ir_value *y2 = b_un(g, IR_OP_EXP, y1);
	struct ir_value *y3 = b_un(g, IR_OP_EXP, y2);
	struct ir_value *s = ir_op1(g, IR_OP_REDUCE_SUM, 1, &y3, IR_F32, ir_shape_of(0));
	ir_op_set_int(g, s->def, "axis", 0);
	ir_graph_add_output(g, "loss", s);
	struct pass_memplan p;
	REQUIRE(pass_memplan(g, 64, &p) == 0);
	CHECKF(p.peak == 2048, "%lld", (long long)p.peak);
	CHECK(p.offset[x->id] == -1 && p.offset[s->id] == -1);
	CHECK(p.offset[y1->id] == p.offset[y3->id]);
	CHECK(p.offset[y1->id] != p.offset[y2->id]);
	check_plan(g, &p, 64);
	pass_memplan_free(&p);
	ir_graph_free(g);
}

/* 4-byte values in a 256-aligned arena; parameters and their gradients outside. */
static void test_align_and_outside(void)
{
	struct ir_graph *g = ir_graph_new("align");
	struct ir_value *w = b_param(g, "w", ir_shape_of(1, (int64_t)1), 1);
	struct ir_value *a = b_un(g, IR_OP_EXP, w);
	struct ir_value *b = b_un(g, IR_OP_EXP, w);
	struct ir_value *c = b_bin(g, IR_OP_ADD, a, b);
	struct ir_value *gw = b_un(g, IR_OP_NEG, c);
	gw->def->phase = IR_PHASE_BWD_W;
	ir_graph_add_output(g, "loss", c);
	ir_graph_add_output(g, "grad.w", gw);
	struct pass_memplan p;
	REQUIRE(pass_memplan(g, 256, &p) == 0);
	CHECK(p.offset[w->id] == -1 && p.offset[c->id] == -1 && p.offset[gw->id] == -1);
	CHECK(p.offset[a->id] % 256 == 0 && p.offset[b->id] % 256 == 0);
	CHECK(p.offset[a->id] != p.offset[b->id]);
	CHECKF(p.peak == 512, "%lld", (long long)p.peak);
	check_plan(g, &p, 256);
	pass_memplan_free(&p);
	ir_graph_free(g);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

/* A random graph: inputs, parameters, ops of 1 to 3 inputs drawn from what exists
 * (recent values more often: long and short lifetimes both), some with 3 outputs,
 * some values made outputs.  Memplan reads only the structure, so shapes are free. */
static struct ir_graph *random_graph(int n_ops)
{
	struct ir_graph *g = ir_graph_new("random");
	static const enum ir_dtype dts[] = { IR_F32, IR_BF16, IR_F8E4M3, IR_I32, IR_I64 };
	int n0 = 1 + (int)rnd(4);
	for (int i = 0; i < n0; i++) {
		struct ir_shape s = ir_shape_of(1, (int64_t)(1 + rnd(300)));
		if (rnd(2))
			b_input(g, "x", dts[rnd(5)], s);
		else
			b_param(g, "p", s, 1);
	}
	for (int i = 0; i < n_ops; i++) {
		int nin = 1 + (int)rnd(3);
		struct ir_value *in[3];
		for (int j = 0; j < nin; j++) {
			int nvals = g->n_values;
			int pick = rnd(3) ? nvals - 1 - (int)rnd(nvals < 6 ? (uint32_t)nvals : 6)
					  : (int)rnd((uint32_t)nvals);
			in[j] = g->values[pick];
		}
		int nout = rnd(8) ? 1 : 3;
		struct ir_op *op = ir_op_new(g, nout == 3 ? IR_OP_MOE_DISPATCH : IR_OP_CONCAT,
					     nin, in, nout);
		for (int j = 0; j < nout; j++) {
			op->out[j]->dtype = dts[rnd(5)];
			op->out[j]->shape = rnd(10) ? ir_shape_of(1, (int64_t)(1 + rnd(5000)))
						    : ir_shape_of(2, (int64_t)rnd(3),
								  (int64_t)(1 + rnd(100)));
			if (!rnd(15))
				ir_graph_add_output(g, "out", op->out[j]);
		}
	}
	return g;
}

static void test_random(void)
{
	static const size_t aligns[] = { 1, 8, 64, 256 };
	for (int t = 0; t < 60; t++) {
		struct ir_graph *g = random_graph(20 + (int)rnd(250));
		size_t align = aligns[t % 4];
		struct pass_memplan p;
		REQUIRE(pass_memplan(g, align, &p) == 0);
		check_plan(g, &p, (int64_t)align);
		pass_memplan_free(&p);
		ir_graph_free(g);
	}
}

/* A value whose size overflows is refused, not planned. */
static void test_overflow(void)
{
	struct ir_graph *g = ir_graph_new("big");
	struct ir_value *x = b_input(g, "x", IR_F32, ir_shape_of(1, (int64_t)4));
	int64_t big = (int64_t)1 << 40;
	ir_op1(g, IR_OP_BROADCAST, 1, &x, IR_F32, ir_shape_of(3, big, big, (int64_t)4));
	struct pass_memplan p;
	CHECK(pass_memplan(g, 64, &p) != 0);
	CHECK(p.offset == NULL && p.size == NULL);
	ir_graph_free(g);

	/* two values of 2^61 bytes each fit, four live at once do not */
	g = ir_graph_new("big2");
	x = b_input(g, "x", IR_F32, ir_shape_of(1, (int64_t)4));
	struct ir_value *v[4];
	for (int i = 0; i < 4; i++)
		v[i] = ir_op1(g, IR_OP_BROADCAST, 1, &x, IR_F32, ir_shape_of(1, (int64_t)1 << 59));
	struct ir_value *s = b_bin(g, IR_OP_ADD, b_bin(g, IR_OP_ADD, v[0], v[1]),
				   b_bin(g, IR_OP_ADD, v[2], v[3]));
	ir_graph_add_output(g, "loss", s);
	CHECK(pass_memplan(g, 64, &p) != 0);
	ir_graph_free(g);
}

int main(void)
{
	test_chain();
	test_align_and_outside();
	test_random();
	test_overflow();
	return CHECK_DONE();
}
