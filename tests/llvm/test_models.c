/* test_models.c - whole training graphs (forward + backward as pass_autodiff makes
 * them) of the tiny models in models/, made smaller with --set overrides, run on the
 * LLVM backend and on the reference executor with the same random parameters and
 * tokens: the loss and every parameter gradient must agree to a normalised error
 * sum|a-b|/sum|b| below 1e-5 (the bound of test_ops.c and its reasoning: f32
 * accumulation against the reference's double, errors of order sqrt(K) 2^-24 per
 * contraction, here compounded over a few layers but far below 1e-5). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/backend.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

static double frand(double lo, double hi)
{
	return lo + (hi - lo) * (rand() / (double)RAND_MAX);
}

static void model(const char *path, int n_over, const struct sl_override *over, int64_t vocab)
{
	struct ir_graph *g = sl_compile_file(path, n_over, over, stderr);
	REQUIRE(g);
	REQUIRE(pass_autodiff(g, stderr) == 0);
	struct cg_exec *ref = cg_backend_ref.compile(g, stderr);
	struct cg_exec *jit = cg_backend_llvm.compile(g, stderr);
	REQUIRE(ref && jit);
	void **bufs = calloc((size_t)g->n_ops, sizeof *bufs);
	srand(3);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_INPUT && op->kind != IR_OP_PARAM)
			continue;
		const struct ir_value *v = op->out[0];
		int64_t n = ir_shape_numel(&v->shape);
		void *b = calloc((size_t)n + 1, 8);
		for (int64_t j = 0; j < n; j++) {
			if (v->dtype == IR_I32)
				((int32_t *)b)[j] = rand() % (int)vocab;
			else if (v->dtype == IR_I64)
				((int64_t *)b)[j] = rand() % vocab;
			else
				((float *)b)[j] = (float)frand(-0.3, 0.3);
		}
		if (op->kind == IR_OP_PARAM && !strcmp(ir_op_str(op, "init", ""), "ones"))
			for (int64_t j = 0; j < n; j++)
				((float *)b)[j] += 1.0f;
		cg_backend_ref.bind(ref, v->id, b);
		cg_backend_llvm.bind(jit, v->id, b);
		bufs[i] = b;
	}
	REQUIRE(cg_backend_ref.run(ref) == 0);
	CHECK(cg_backend_llvm.run(jit) == 0);
	double worst = 0;
	const char *worst_name = "";
	int compared = 0;
	for (int o = 0; o < g->n_outputs; o++) {
		const struct ir_value *v = g->outputs[o];
		if (!ir_dtype_is_float(v->dtype))
			continue;
		const float *a = cg_backend_llvm.tensor(jit, v->id);
		const float *b = cg_backend_ref.tensor(ref, v->id);
		REQUIRE(a && b);
		double num = 0, den = 0;
		for (int64_t i = 0; i < ir_shape_numel(&v->shape); i++) {
			num += fabs((double)a[i] - b[i]);
			den += fabs((double)b[i]);
		}
		double err = den > 0 ? num / den : num;
		CHECKF(err <= 1e-5 && isfinite(err), "%s: %s: normalised error %g", path,
		       g->output_names[o], err);
		if (err > worst || !compared) {
			worst = err;
			worst_name = g->output_names[o];
		}
		compared++;
	}
	const struct ir_value *loss = ir_graph_output(g, "loss");
	REQUIRE(loss);
	printf("%s: %d ops, %d outputs compared, loss %.6f (reference %.6f), worst %s %.3g\n",
	       path, g->n_ops, compared, *(float *)cg_backend_llvm.tensor(jit, loss->id),
	       *(float *)cg_backend_ref.tensor(ref, loss->id), worst_name, worst);
	for (int i = 0; i < g->n_ops; i++)
		free(bufs[i]);
	free(bufs);
	cg_backend_llvm.free(jit);
	cg_backend_ref.free(ref);
	ir_graph_free(g);
}

int main(void)
{
	static const struct sl_override gpt[] = {
		{ "vocab", "64" }, { "dim", "32" }, { "layers", "2" }, { "heads", "2" },
		{ "ffn_dim", "48" }, { "batch", "2" }, { "seq", "8" },
	};
	static const struct sl_override moe[] = {
		{ "vocab", "64" }, { "dim", "32" }, { "layers", "2" }, { "heads", "2" },
		{ "dense_dim", "48" }, { "experts", "4" }, { "expert_dim", "16" },
		{ "batch", "2" }, { "seq", "8" },
	};
	model("models/tiny_gpt.sl", (int)(sizeof gpt / sizeof *gpt), gpt, 64);
	model("models/tiny_moe.sl", (int)(sizeof moe / sizeof *moe), moe, 64);
	return CHECK_DONE();
}
