/* test_models.c - whole training graphs (forward + backward as pass_autodiff makes
 * them) of the tiny models in models/, made smaller with --set overrides, and of a MoE
 * layer with node-limited routing, run on the
 * LLVM backend and on the reference executor with the same random parameters and
 * tokens: the loss and every parameter gradient must agree to a normalised error
 * sum|a-b|/sum|b| below 1e-5 (the bound of test_ops.c and its reasoning: f32
 * accumulation against the reference's double, errors of order sqrt(K) 2^-24 per
 * contraction, here compounded over a few layers but far below 1e-5).
 *
 * The two tiny models run again with precision=bf16 (passes/bf16.c before autodiff):
 * both executors round every bf16 value after every op, the reference from double,
 * the LLVM backend from f32.  The loss must still agree to 1e-5 (every forward value
 * of these graphs agrees to 3e-6: a bf16 rounding of two results a few f32 ulps apart
 * rarely lands on different sides).  The gradients get 1e-2: the backward runs in
 * bf16 too, and once two results differ by a bf16 ulp (2^-8 relative) the difference
 * is rounded again at every op and compounds down the layers; measured, tiny_gpt's
 * worst gradient is 1e-7 off and tiny_moe's 1.9e-3 (its first layer's norm weight,
 * after the MoE and MTP backward).  A wrong rule or a missing rounding gives errors
 * of order 1 (or, for a rounding, of order 2^-9 on every entry of a value: 2e-3
 * there, growing to well above 1e-2 by the first layer). */
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

static void model_graph(const char *path, struct ir_graph *g, int64_t vocab, double bound)
{
	REQUIRE(g);
	REQUIRE(pass_pipeline_run(g, "bf16", stderr) == 0); /* with precision=bf16 */
	REQUIRE(pass_autodiff(g, stderr) == 0);
	/* the routing choices as outputs, so that both executors keep them */
	for (int i = 0, n = g->n_ops; i < n; i++)
		if (g->ops[i]->kind == IR_OP_TOPK)
			ir_graph_add_output(g, ir_sprintf(g->arena, "choice.%d", g->ops[i]->id),
					    g->ops[i]->out[0]);
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
		/* bf16: the forward (the loss) as f32, the gradients at their own bound */
		double lim = strncmp(g->output_names[o], "grad.", 5) ? 1e-5 : bound;
		CHECKF(err <= lim && isfinite(err), "%s: %s: normalised error %g", path,
		       g->output_names[o], err);
		if (err > worst || !compared) {
			worst = err;
			worst_name = g->output_names[o];
		}
		compared++;
	}
	/* the routing choices themselves */
	int choices = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_value *v = g->ops[i]->out[0];
		if (g->ops[i]->kind != IR_OP_TOPK || v->dtype != IR_I32)
			continue;
		const int32_t *a = cg_backend_llvm.tensor(jit, v->id);
		const int32_t *b = cg_backend_ref.tensor(ref, v->id);
		CHECKF(a && b, "%s: topk op %d not kept", path, g->ops[i]->id);
		if (!a || !b)
			continue;
		choices++;
		CHECKF(!memcmp(a, b, (size_t)ir_shape_numel(&v->shape) * sizeof *a),
		       "%s: topk op %d chooses differently", path, g->ops[i]->id);
	}
	const struct ir_value *loss = ir_graph_output(g, "loss");
	REQUIRE(loss);
	printf("%s%s: %d ops, %d outputs and %d topk choices compared, loss %.6f (reference %.6f), worst %s %.3g\n",
	       path, bound > 1e-5 ? " (bf16)" : "", g->n_ops, compared, choices, *(float *)cg_backend_llvm.tensor(jit, loss->id),
	       *(float *)cg_backend_ref.tensor(ref, loss->id), worst_name, worst);
	for (int i = 0; i < g->n_ops; i++)
		free(bufs[i]);
	free(bufs);
	cg_backend_llvm.free(jit);
	cg_backend_ref.free(ref);
	ir_graph_free(g);
}

static void model(const char *path, int n_over, const struct sl_override *over, int64_t vocab)
{
	model_graph(path, sl_compile_file(path, n_over, over, stderr), vocab, 1e-5);
	/* the same with precision=bf16 */
	struct sl_override *ov = calloc((size_t)n_over + 1, sizeof *ov);
	memcpy(ov, over, sizeof *ov * (size_t)n_over);
	ov[n_over] = (struct sl_override){ "precision", "bf16" };
	model_graph(path, sl_compile_file(path, n_over + 1, ov, stderr), vocab, 1e-2);
	free(ov);
}

/* node-limited routing (groups, node_limit): the routing ops the limit adds */
static const char grouped_moe[] =
	"model grouped_moe\n"
	"const vocab = 64, dim = 32\n"
	"graph(tokens: i32[2, 8], targets: i32[2, 8]) {\n"
	"  x = embed(tokens, vocab, dim)\n"
	"  x = x + moe(rmsnorm(x), experts: 16, top_k: 4, hidden: 16, shared: 1, groups: 4,\n"
	"              node_limit: 2, alpha: 0.001)\n"
	"  loss = cross_entropy(linear(rmsnorm(x, name: final_norm), vocab, name: head), targets)\n"
	"}\n";

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
	model_graph("grouped_moe.sl", sl_compile_source(grouped_moe, sizeof grouped_moe - 1,
							"grouped_moe.sl", 0, NULL, stderr), 64, 1e-5);
	return CHECK_DONE();
}
