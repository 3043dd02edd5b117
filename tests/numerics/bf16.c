/* bf16.c - the bf16 pass (passes/bf16.c) on tiny_gpt and tiny_moe, made tiny with --set
 * overrides and precision=bf16:
 *
 *  - The rules: every product but the router reads bf16 operands, each a CAST (of an
 *    f32 activation, or of an f32 parameter: the master weight); the router's product,
 *    the norms' statistics, softmax, sigmoid, top-k, the cross entropy's logits, the
 *    residual adds (ops of a layer's top scope) and every PARAM are f32; the SwiGLU
 *    hidden (silu and its product) and attention's q, k, v, out are bf16; grouped
 *    products write bf16.  After autodiff every "grad.P" is f32.
 *  - The pass run again on its own output (printed and parsed back) changes nothing.
 *  - The backward.  A finite difference does not apply through rounding: the loss of a
 *    bf16 graph is piecewise constant in each parameter (a step of h = 1e-6 moves a
 *    weight's bf16 cast by 0 or by one bf16 ulp, 2^-8 relative), so its difference
 *    quotient is 0 or huge.  Instead the backward is checked in two parts:
 *    (a) structure: the bf16 graph with its rounding taken out (every bf16 value made
 *        f32, so every cast is the identity) computes the f32 model, and its gradients
 *        must equal those of the f32 graph, which numerics_models checks against
 *        finite differences, to 1e-12 of their norm (both in float64 on the reference
 *        executor; only the order of a few sums differs).  So autodiff differentiated
 *        the casts and the retyped ops into the right derivative.
 *    (b) rounding: with the rounding in, each parameter's gradient is within 10% of
 *        the f32 one in norm.  Why 10%: each bf16 rounding is off by at most 2^-9
 *        relative (0.2%); a gradient here passes a few dozen roundings forward and
 *        backward, mostly independent, so a few tenths of a percent to a few
 *        percent: measured 0.3% to 2% for every weight but the routers', 3.4% and
 *        5.0% for those (their gradient comes through the gates, dy . ys over 16
 *        dims of bf16 rows, which cancel).  A wrong derivative is off by O(1).  The
 *        routing choices do not change (the router is f32, its margins far above
 *        bf16 rounding). */
#include "numerics.h"

#include "frontend/frontend.h"

static void tokens(struct tdata *d, const char *name, int n, int vocab)
{
	double *p = tdata_set(d, name, n, NULL);
	for (int i = 0; i < n; i++)
		p[i] = (double)(int)(rnd_uniform() * vocab);
}

/* the MoE router: the product of the gate weight (named so by the moe intrinsic) */
static int is_router(const struct ir_op *op)
{
	const struct ir_op *w = op->in[1]->def;
	return op->kind == IR_OP_MATMUL && w->kind == IR_OP_PARAM && strstr(w->path, "gate.weight");
}

/* the rules, on the forward graph after the pass */
static void check_rules(const char *file, const struct ir_graph *g)
{
	int products = 0, routers = 0, weight_casts = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		const char *scope = op->scope ? op->scope : "";
		switch (op->kind) {
		case IR_OP_PARAM:
			CHECKF(op->out[0]->dtype == IR_F32, "%s: param %s is not f32", file, op->path);
			break;
		case IR_OP_MATMUL: case IR_OP_GROUPED_MATMUL: case IR_OP_ATTENTION: {
			int n = op->kind == IR_OP_ATTENTION ? 3 : 2;
			if (is_router(op)) {
				routers++;
				CHECKF(op->in[0]->dtype == IR_F32 && op->in[1]->dtype == IR_F32,
				       "%s: the router (op %d) does not read f32", file, op->id);
				break;
			}
			products++;
			for (int k = 0; k < n; k++) {
				const struct ir_value *x = op->in[k];
				CHECKF(x->dtype == IR_BF16, "%s: op %d (%s) reads %s operand %d", file,
				       op->id, ir_op_name(op->kind), ir_dtype_name(x->dtype), k);
				if (x->def->kind == IR_OP_CAST && x->def->in[0]->def->kind == IR_OP_PARAM)
					weight_casts++;
			}
			if (op->kind == IR_OP_GROUPED_MATMUL)
				CHECKF(op->out[0]->dtype == IR_BF16, "%s: op %d writes %s", file, op->id,
				       ir_dtype_name(op->out[0]->dtype));
			if (op->kind == IR_OP_ATTENTION)
				CHECKF(op->out[0]->dtype == IR_BF16 && op->out[1]->dtype == IR_F32,
				       "%s: attention op %d: out or lse", file, op->id);
			break;
		}
		case IR_OP_SQUARE: case IR_OP_REDUCE_MEAN: case IR_OP_RSQRT: case IR_OP_SOFTMAX:
		case IR_OP_SIGMOID: case IR_OP_TOPK: case IR_OP_CROSS_ENTROPY:
			CHECKF(op->in[0]->dtype == IR_F32, "%s: op %d (%s) reads %s", file, op->id,
			       ir_op_name(op->kind), ir_dtype_name(op->in[0]->dtype));
			break;
		case IR_OP_ADD:
			/* the residual adds: "layers.N" or "mtp.N" itself */
			if ((!strncmp(scope, "layers.", 7) || !strncmp(scope, "mtp.", 4)) &&
			    !strchr(strchr(scope, '.') + 1, '.'))
				CHECKF(op->out[0]->dtype == IR_F32 && op->in[0]->dtype == IR_F32 &&
				       op->in[1]->dtype == IR_F32,
				       "%s: residual add op %d (scope %s) is not f32", file, op->id, scope);
			break;
		case IR_OP_SILU:
			CHECKF(op->out[0]->dtype == IR_BF16, "%s: silu op %d is %s", file, op->id,
			       ir_dtype_name(op->out[0]->dtype));
			break;
		case IR_OP_CAST:
			/* each cast reads an f32 value into bf16, or widens a bf16 one */
			CHECK(op->in[0]->dtype != op->out[0]->dtype);
			break;
		default:
			break;
		}
	}
	printf("%s: %d products read bf16 (%d operands are weight casts), %d routers f32\n",
	       file, products, weight_casts, routers);
	CHECK(products > 0 && weight_casts > 0);
}

static char *print_str(const struct ir_graph *g, size_t *n)
{
	char *t = NULL;
	FILE *f = open_memstream(&t, n);
	REQUIRE(f);
	ir_print(g, f);
	fclose(f);
	return t;
}

/* the graph run on the reference executor with the data of d */
static struct ref_exec *run(struct ir_graph *g, const struct tdata *d)
{
	struct ref_exec *e = ref_new(g);
	tdata_bind(d, g, e);
	REQUIRE(ref_run(e, stderr) == 0);
	return e;
}

/* |a - b| / |b| over one gradient */
static double rel_diff(struct ref_exec *ea, const struct ir_value *a, struct ref_exec *eb,
		       const struct ir_value *b)
{
	const double *x = ref_value(ea, a->id), *y = ref_value(eb, b->id);
	double num = 0, den = 0;
	for (int64_t k = 0; k < ir_shape_numel(&a->shape); k++) {
		num += (x[k] - y[k]) * (x[k] - y[k]);
		den += y[k] * y[k];
	}
	return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check_model(const char *file, int n_over, const struct sl_override *over)
{
	struct sl_override *ov = calloc((size_t)n_over + 1, sizeof *ov);
	memcpy(ov, over, sizeof *ov * (size_t)n_over);
	ov[n_over] = (struct sl_override){ "precision", "bf16" };
	struct ir_graph *g32 = sl_compile_file(file, n_over, over, stderr);
	struct ir_graph *g16 = sl_compile_file(file, n_over + 1, ov, stderr);
	struct ir_graph *gid = sl_compile_file(file, n_over + 1, ov, stderr);
	REQUIRE(g32 && g16 && gid);
	REQUIRE(pass_pipeline_run(g16, "bf16", stderr) == 0);
	REQUIRE(pass_pipeline_run(gid, "bf16", stderr) == 0);
	check_rules(file, g16);

	/* again on its own output, read back: nothing changes */
	size_t n1, n2;
	char *t1 = print_str(g16, &n1);
	struct ir_graph *gp = ir_parse(t1, n1, file, stderr);
	REQUIRE(gp);
	REQUIRE(pass_bf16(gp, stderr) == 0);
	char *t2 = print_str(gp, &n2);
	CHECKF(n1 == n2 && !memcmp(t1, t2, n1), "%s: bf16 run again changes the graph", file);
	free(t1);
	free(t2);
	ir_graph_free(gp);

	REQUIRE(pass_autodiff(g32, stderr) == 0 && pass_autodiff(g16, stderr) == 0 &&
		pass_autodiff(gid, stderr) == 0);
	CHECK(ir_verify(g16, stderr) == 0);
	/* the rounding taken out: every bf16 value f32, every cast the identity */
	for (int v = 0; v < gid->n_values; v++)
		if (gid->values[v] && gid->values[v]->dtype == IR_BF16)
			gid->values[v]->dtype = IR_F32;
	CHECK(ir_verify(gid, stderr) == 0);

	const struct ir_value *tok = NULL;
	for (int i = 0; i < g32->n_ops; i++)
		if (g32->ops[i]->kind == IR_OP_INPUT &&
		    !strcmp(ir_op_str(g32->ops[i], "name", ""), "tokens"))
			tok = g32->ops[i]->out[0];
	REQUIRE(tok);
	struct tdata d = { 0 };
	int n = (int)ir_shape_numel(&tok->shape);
	tokens(&d, "tokens", n, 32);
	tokens(&d, "targets", n, 32);
	tdata_fill(&d, g32, 0.3);
	struct ref_exec *e32 = run(g32, &d), *e16 = run(g16, &d), *eid = run(gid, &d);
	double worst_id = 0, worst16 = 0;
	const char *worst_name = "";
	int grads = 0;
	for (int o = 0; o < g32->n_outputs; o++) {
		const char *name = g32->output_names[o];
		const struct ir_value *a = g32->outputs[o];
		const struct ir_value *b = ir_graph_output(g16, name), *c = ir_graph_output(gid, name);
		REQUIRE(b && c);
		if (strncmp(name, "grad.", 5))
			continue;
		grads++;
		CHECKF(b->dtype == IR_F32, "%s: %s is %s", file, name, ir_dtype_name(b->dtype));
		double did = rel_diff(eid, c, e32, a), d16 = rel_diff(e16, b, e32, a);
		CHECKF(did <= 1e-12, "%s: %s: without rounding %.3g off the f32 gradient", file,
		       name, did);
		CHECKF(d16 <= 0.1, "%s: %s: bf16 %.3g off the f32 gradient", file, name, d16);
		if (getenv("SLUICE_TEST_VERBOSE"))
			printf("  %-40s bf16 %.3g\n", name, d16);
		worst_id = fmax(worst_id, did);
		if (d16 > worst16) {
			worst16 = d16;
			worst_name = name;
		}
	}
	const struct ir_value *l32 = ir_graph_output(g32, "loss"), *l16 = ir_graph_output(g16, "loss");
	printf("%s: loss f32 %.6f bf16 %.6f; %d gradients: without rounding within %.2g of "
	       "f32, bf16 within %.3g (worst %s)\n", file, ref_value(e32, l32->id)[0],
	       ref_value(e16, l16->id)[0], grads, worst_id, worst16, worst_name);
	CHECK(grads > 0);
	ref_free(e32);
	ref_free(e16);
	ref_free(eid);
	tdata_free(&d);
	ir_graph_free(g32);
	ir_graph_free(g16);
	ir_graph_free(gid);
	free(ov);
}

int main(void)
{
	const struct sl_override gpt[] = {
		{ "dim", "16" }, { "layers", "2" }, { "heads", "2" }, { "ffn_dim", "32" },
		{ "batch", "2" }, { "seq", "8" }, { "vocab", "32" },
	};
	check_model("models/tiny_gpt.sl", (int)(sizeof gpt / sizeof gpt[0]), gpt);
	const struct sl_override moe[] = {
		{ "dim", "16" }, { "layers", "2" }, { "heads", "2" }, { "dense_dim", "32" },
		{ "experts", "4" }, { "top_k", "2" }, { "expert_dim", "8" },
		{ "batch", "2" }, { "seq", "8" }, { "vocab", "32" },
	};
	check_model("models/tiny_moe.sl", (int)(sizeof moe / sizeof moe[0]), moe);
	return CHECK_DONE();
}
