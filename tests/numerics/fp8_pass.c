/* fp8_pass.c - the fp8 pass (passes/fp8.c) and the backward it leaves.
 *
 * Finite differences do not apply through a quantisation (a step function), so the
 * backward is tested another way: the pass runs after autodiff, which makes the
 * straight-through backward (the quantisation is the identity for the gradient); on
 * data that the quantisation leaves exact (every tile's max-abs 448, so its scale is 1,
 * and every value an E4M3 value), the quantised graph must give the unquantised one's
 * loss and gradients exactly (the reference computes in double: the sums of these
 * products are exact).  That checks that each product reads the right operands with
 * the right tiles, forward, input gradient and weight gradient, of a linear and an
 * expert layer.  On random data the two differ (so the quantisation does happen) by a
 * few percent: E4M3 keeps 3 mantissa bits, a relative rounding error of at most 2^-4
 * per operand, about 3% on a product of two, which sums of random signs do not grow;
 * the bound below is 0.1 (normalised error sum|a - b| / sum|b|).
 *
 * On tiny_moe, the pass leaves the output head and the routers alone and quantises
 * every other weight's three products. */
#include "frontend/frontend.h"
#include "numerics.h"

static const double small[] = { 0, 0.25, -0.5, 1, -1, 1.5, 2, -3, 0.75, -2 };

/* an E4M3 value other than +-448, at random */
static double e4m3_small(void)
{
	return small[(int)(rnd_uniform() * 10) % 10];
}

/* [rows, cols] of small E4M3 values with +-448 at (i, (i * step) % cols) and (i % rows,
 * i) for every i: so every row and every column holds one, and each 1x128 and 128x1
 * tile of these small shapes has max-abs 448 */
static void exact_matrix(double *m, int64_t rows, int64_t cols)
{
	for (int64_t i = 0; i < rows * cols; i++)
		m[i] = e4m3_small();
	for (int64_t i = 0; i < rows || i < cols; i++)
		m[(i % rows) * cols + i % cols] = rnd_uniform() < 0.5 ? 448 : -448;
}

static struct ir_graph *build(const char *precision)
{
	struct ir_graph *g = ir_graph_new("fp8");
	ir_graph_set(g, "precision", 0, precision);
	struct ir_value *x = t_param(g, "x", SH(2, 4, 8)), *w = t_param(g, "w", SH(8, 6));
	struct ir_value *y = OP(g, MATMUL, IR_F32, SH(2, 4, 6), x, w);
	struct ir_value *xs = t_param(g, "xs", SH(6, 8)), *ew = t_param(g, "ew", SH(2, 8, 5));
	struct ir_value *off = t_input(g, "off", IR_I32, SH(3));
	struct ir_value *gy = OP(g, GROUPED_MATMUL, IR_F32, SH(6, 5), xs, ew, off);
	t_attr_i(g, gy, "trans_b", 0);
	struct ir_value *loss = OP(g, ADD, IR_F32, SCALAR, t_weighted_sum(g, y), t_weighted_sum(g, gy));
	ir_graph_add_output(g, "loss", loss);
	REQUIRE(pass_pipeline_run(g, NULL, stderr) == 0);
	return g;
}

static int count(const struct ir_graph *g, enum ir_opkind k)
{
	int n = 0;
	for (int i = 0; i < g->n_ops; i++)
		n += g->ops[i]->kind == k;
	return n;
}

static double *run(struct ir_graph *g, const struct tdata *d, const char *out)
{
	struct ref_exec *e = ref_new(g);
	tdata_bind(d, g, e);
	REQUIRE(ref_run(e, stderr) == 0);
	struct ir_value *v = ir_graph_output(g, out);
	REQUIRE(v);
	int64_t n = ir_shape_numel(&v->shape);
	double *r = malloc(sizeof *r * (size_t)n);
	memcpy(r, ref_value(e, v->id), sizeof *r * (size_t)n);
	ref_free(e);
	return r;
}

static const char *const outs[] = { "loss", "grad.x", "grad.w", "grad.xs", "grad.ew" };

/* Precision fp8 runs the bf16 pass first: its activations, their gradients and the loss
 * are the bf16 graph's (b16), up to the quantisation; its weight gradients are written
 * f32 by the scaled products, so they are the f32 graph's (b32) up to it (the bf16 graph
 * rounds them to bf16). */
static void compare(struct ir_graph *a, struct ir_graph *b16, struct ir_graph *b32,
		    const struct tdata *d, int exact)
{
	for (int o = 0; o < 5; o++) {
		int wgrad = !strcmp(outs[o], "grad.w") || !strcmp(outs[o], "grad.ew");
		struct ir_graph *b = wgrad ? b32 : b16;
		const char *bn = wgrad ? "fp32" : "bf16";
		int64_t n = ir_shape_numel(&ir_graph_output(a, outs[o])->shape);
		double *p = run(a, d, outs[o]), *q = run(b, d, outs[o]);
		double num = 0, den = 0;
		for (int64_t i = 0; i < n; i++)
			num += fabs(p[i] - q[i]), den += fabs(q[i]);
		double err = den > 0 ? num / den : num;
		if (exact)
			CHECKF(num == 0, "%s: fp8 differs from %s on exact data (normalised %g)",
			       outs[o], bn, err);
		else
			CHECKF(err > 1e-4 && err < 0.1, "%s: fp8 vs %s on random data: %g", outs[o],
			       bn, err);
		printf("%-8s %s data: fp8 vs %s normalised difference %.3g\n", outs[o],
		       exact ? "exact " : "random", bn, err);
		free(p);
		free(q);
	}
}

static void straight_through(void)
{
	struct ir_graph *f32 = build("fp32"), *b16 = build("bf16"), *f8 = build("fp8");
	CHECK(count(f32, IR_OP_QUANT_FP8) == 0 && count(f32, IR_OP_SCALED_MATMUL) == 0);
	/* forward, input gradient, weight gradient of each layer */
	CHECK(count(f8, IR_OP_SCALED_MATMUL) == 3);
	CHECK(count(f8, IR_OP_SCALED_GROUPED_MATMUL) == 2);
	CHECK(count(f8, IR_OP_SCALED_GROUPED_MATMUL_WGRAD) == 1);
	CHECK(count(f8, IR_OP_MATMUL) == 0 && count(f8, IR_OP_GROUPED_MATMUL) == 0 &&
	      count(f8, IR_OP_GROUPED_MATMUL_WGRAD) == 0);

	/* the tiles run along each product's contraction dim: 1x128 for x and dy against
	 * the weight (whose 128x128 blocks serve W and W^T), 128x1 (over the tokens) for both
	 * operands of a weight gradient.  The exact data below has +-448 in every row and
	 * column, so it cannot tell tilings apart: this does */
	for (int i = 0; i < f8->n_ops; i++) {
		const struct ir_op *op = f8->ops[i];
		if (op->kind != IR_OP_SCALED_MATMUL && op->kind != IR_OP_SCALED_GROUPED_MATMUL &&
		    op->kind != IR_OP_SCALED_GROUPED_MATMUL_WGRAD)
			continue;
		const struct ir_attr *a = ir_op_attr(op, "a_tile"), *b = ir_op_attr(op, "b_tile");
		REQUIRE(a && b && a->n == 2 && b->n == 2);
		int wgrad = op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD ||
			    (op->kind == IR_OP_SCALED_MATMUL && ir_op_int(op, "trans_a", 0));
		if (wgrad)
			CHECK(a->ints[0] == 128 && a->ints[1] == 1 && b->ints[0] == 128 && b->ints[1] == 1);
		else
			CHECK(a->ints[0] == 1 && a->ints[1] == 128 && b->ints[0] == 128 && b->ints[1] == 128);
	}

	struct tdata d = { 0 };
	double offs[3] = { 0, 2, 6 };
	tdata_set(&d, "off", 3, offs);
	exact_matrix(tdata_set(&d, "x", 64, NULL), 8, 8);
	exact_matrix(tdata_set(&d, "w", 48, NULL), 8, 6);
	exact_matrix(tdata_set(&d, "xs", 48, NULL), 6, 8);
	double *ew = tdata_set(&d, "ew", 80, NULL);
	exact_matrix(ew, 8, 5);
	exact_matrix(ew + 40, 8, 5);
	/* the losses' weights are the gradients of y and gy: dy */
	for (int i = 0; i < f32->n_ops; i++) {
		const struct ir_op *op = f32->ops[i];
		const char *name = op->kind == IR_OP_INPUT ? ir_op_str(op, "name", "") : "";
		if (name[0] != 'R')
			continue;
		const struct ir_shape *s = &op->out[0]->shape;
		int64_t cols = s->dim[s->rank - 1], rows = ir_shape_numel(s) / cols;
		exact_matrix(tdata_set(&d, name, rows * cols, NULL), rows, cols);
	}
	compare(f8, b16, f32, &d, 1);

	tdata_free(&d);
	tdata_set(&d, "off", 3, offs);
	tdata_fill(&d, f32, 1.0);
	compare(f8, b16, f32, &d, 0);
	tdata_free(&d);
	ir_graph_free(f32);
	ir_graph_free(b16);
	ir_graph_free(f8);
}

/* the weights each op reads directly */
static int reads(const struct ir_op *op, const struct ir_value *w)
{
	for (int j = 0; j < op->n_in; j++)
		if (op->in[j] == w)
			return 1;
	return 0;
}

static void tiny_moe(void)
{
	struct sl_override o = { "precision", "fp8" };
	struct ir_graph *g = sl_compile_file("models/tiny_moe.sl", 1, &o, stderr);
	REQUIRE(g);
	REQUIRE(pass_pipeline_run(g, NULL, stderr) == 0);
	int quantised = 0, kept = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *p = g->ops[i];
		if (p->kind != IR_OP_PARAM || p->out[0]->shape.rank < 2)
			continue;
		const struct ir_value *w = p->out[0];
		int n_quant = 0, n_plain = 0;
		for (int k = 0; k < g->n_ops; k++) {
			const struct ir_op *op = g->ops[k];
			n_quant += op->kind == IR_OP_QUANT_FP8 && reads(op, w);
			n_plain += (op->kind == IR_OP_MATMUL || op->kind == IR_OP_GROUPED_MATMUL) &&
				   reads(op, w);
		}
		size_t n = strlen(p->path);
		int head = !strcmp(p->path, "head.weight");
		int router = n >= 11 && !strcmp(p->path + n - 11, "gate.weight");
		int embed = !strcmp(p->path, "embed.weight");
		if (head || router || embed) {
			CHECKF(n_quant == 0, "%s is quantised", p->path);
			kept++;
		} else {
			/* quantised in 128x128 blocks for its forward, and again for its input
			 * gradient (not kept from the forward to the backward) */
			CHECKF(n_quant == 2 && n_plain == 0, "%s: %d quantisations, %d plain products",
			       p->path, n_quant, n_plain);
			quantised++;
		}
	}
	/* three scaled products per quantised weight (y, dx, dW); what stays unscaled reads
	 * the head or a router, or computes their gradient */
	int scaled = count(g, IR_OP_SCALED_MATMUL) + count(g, IR_OP_SCALED_GROUPED_MATMUL) +
		     count(g, IR_OP_SCALED_GROUPED_MATMUL_WGRAD);
	CHECKF(scaled == 3 * quantised, "%d scaled products for %d weights", scaled, quantised);
	CHECK(count(g, IR_OP_GROUPED_MATMUL) == 0 && count(g, IR_OP_GROUPED_MATMUL_WGRAD) == 0);
	for (int k = 0; k < g->n_ops; k++) {
		const struct ir_op *op = g->ops[k];
		size_t n = strlen(op->scope);
		CHECKF(op->kind != IR_OP_MATMUL || !strcmp(op->scope, "head") ||
		       !strcmp(op->scope, "mtp.0") || (n >= 4 && !strcmp(op->scope + n - 4, ".moe")),
		       "a plain matmul left in scope %s", op->scope);
	}
	/* every weight gradient reads the forward's FP8 copy of its activation */
	int requant = 0;
	for (int k = 0; k < g->n_ops; k++) {
		const struct ir_op *op = g->ops[k];
		int wgrad = op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD ||
			    (op->kind == IR_OP_SCALED_MATMUL && ir_op_int(op, "trans_a", 0));
		if (!wgrad)
			continue;
		const struct ir_value *v = op->in[0]->def->in[0]; /* what was quantised 128x1 */
		while (v->def && v->def->kind == IR_OP_RESHAPE)
			v = v->def->in[0];
		requant += v->def && v->def->kind == IR_OP_DEQUANT_FP8;
	}
	CHECKF(requant == quantised, "%d of %d weight gradients read the FP8 copy", requant,
	       quantised);
	printf("tiny_moe: %d weights quantised (%d scaled products), %d kept\n", quantised, scaled,
	       kept);
	ir_graph_free(g);
}

int main(void)
{
	straight_through();
	tiny_moe();
	return CHECK_DONE();
}
