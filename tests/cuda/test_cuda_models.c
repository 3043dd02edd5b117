/* test_cuda_models.c - whole training graphs (forward + backward as pass_autodiff makes
 * them) on the CUDA backend against the reference executor, with the same random
 * parameters and tokens (tests/llvm/test_models.c's), made small with --set
 * overrides: the loss and every parameter gradient must agree to a normalised error
 * sum|a-b|/sum|b| of 1e-4, and the routing choices exactly.  Exits 77 (skipped)
 * without a GPU.
 *
 * The bound: each op agrees to about 1e-6 (test_cuda_ops.c: f32 throughout, cuBLASLt
 * without TF32), but a step graph chains a few dozen of them forward and back, and a
 * gradient that is a sum of many terms of both signs (a norm's weight, the embedding
 * rows of a frequent token) loses relative accuracy as its terms cancel; 1e-4 is the
 * usual bound for fp32 GEMMs summed in another order and still catches a wrong
 * kernel, whose errors are of order 1.  The worst figure is printed.
 *
 * mix_gpt below is tiny_gpt with its attention replaced by a learned causal token
 * mixing (a softmax over a projection, then a batched matmul): batched matmuls with
 * transposed operands in the backward, and a causal softmax, in a whole step.  tiny_gpt
 * and tiny_moe run attention and (tiny_moe) the grouped GEMMs through the library
 * kernels (codegen/cuda/lib.h).  A graph the backend refuses because it has no kernel
 * for an op is reported, not failed (harness.h says which ops). */
#include "check.h"
#include "frontend/frontend.h"
#include "harness.h"
#include "passes/passes.h"

static struct rt_gpu *gpu;

static double frand(double lo, double hi)
{
	return lo + (hi - lo) * (rand() / (double)RAND_MAX);
}

static void model_graph(const char *path, struct ir_graph *g, int64_t vocab)
{
	REQUIRE(g);
	REQUIRE(pass_autodiff(g, stderr) == 0);
	for (int i = 0, n = g->n_ops; i < n; i++)
		if (g->ops[i]->kind == IR_OP_TOPK)
			ir_graph_add_output(g, ir_sprintf(g->arena, "choice.%d", g->ops[i]->id),
					    g->ops[i]->out[0]);
	struct cg_exec *ref = cg_backend_ref.compile(g, stderr);
	REQUIRE(ref);
	size_t mark = rt_gpu_arena_mark(gpu);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	struct cg_exec *dev = cg_backend_cuda.compile(g, err);
	fclose(err);
	if (!dev) {
		int expected = harness_needs_missing_kernel(g) &&
			       strstr(msg, "the CUDA backend has no kernel for");
		CHECKF(expected, "%s: the CUDA backend did not compile the step: %s", path, msg);
		if (expected)
			printf("%s: %d ops, refused: %s", path, g->n_ops, strstr(msg, "the CUDA backend"));
		free(msg);
		cg_backend_ref.free(ref);
		ir_graph_free(g);
		return;
	}
	free(msg);
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
		cg_backend_cuda.bind(dev, v->id, (void *)(uintptr_t)harness_upload(gpu, v, b));
		bufs[i] = b;
	}
	REQUIRE(cg_backend_ref.run(ref) == 0);
	CHECK(cg_backend_cuda.run(dev) == 0);
	CHECK(rt_gpu_sync(gpu, RT_STREAM_COMPUTE) == 0);
	double worst = 0;
	const char *worst_name = "";
	int compared = 0, choices = 0;
	float loss_dev = NAN, loss_ref = NAN;
	for (int o = 0; o < g->n_outputs; o++) {
		const struct ir_value *v = g->outputs[o];
		int64_t n = ir_shape_numel(&v->shape);
		void *d = cg_backend_cuda.tensor(dev, v->id), *b = cg_backend_ref.tensor(ref, v->id);
		REQUIRE(b);
		if (!d) {
			CHECKF(0, "%s: output %s not kept", path, g->output_names[o]);
			continue;
		}
		void *a = harness_download(gpu, v, (rt_dptr)(uintptr_t)d);
		if (!ir_dtype_is_float(v->dtype)) {
			choices++;
			CHECKF(!memcmp(a, b, (size_t)n * (v->dtype == IR_I64 ? 8 : 4)),
			       "%s: %s differs", path, g->output_names[o]);
			free(a);
			continue;
		}
		double e = harness_error(a, b, n);
		CHECKF(e <= 1e-4 && isfinite(e), "%s: %s: normalised error %g", path,
		       g->output_names[o], e);
		if (e > worst || !compared) {
			worst = e;
			worst_name = g->output_names[o];
		}
		if (!strcmp(g->output_names[o], "loss")) {
			loss_dev = *(float *)a;
			loss_ref = *(float *)b;
		}
		compared++;
		free(a);
	}
	printf("%s: %d ops, %d outputs and %d topk choices compared on the GPU, loss %.6f "
	       "(reference %.6f), worst %s %.3g (bound 1e-4), device arena %lld bytes\n",
	       path, g->n_ops, compared, choices, loss_dev, loss_ref, worst_name, worst,
	       (long long)cg_backend_cuda.arena_bytes(dev));
	for (int i = 0; i < g->n_ops; i++)
		free(bufs[i]);
	free(bufs);
	cg_backend_cuda.free(dev);
	cg_backend_ref.free(ref);
	rt_gpu_arena_reset(gpu, mark);
	ir_graph_free(g);
}

static const char mix_gpt[] =
	"model mix_gpt\n"
	"const vocab = 64, dim = 32, layers = 2, seq = 8\n"
	"block layer(x) {\n"
	"  n = rmsnorm(x, name: mix_norm)\n"
	"  p = softmax(linear(n, seq, name: mix), causal: true)\n"
	"  h = x + linear(matmul(p, linear(n, dim, name: value)), dim, name: out)\n"
	"  return h + swiglu(rmsnorm(h, name: ffn_norm), hidden: 48)\n"
	"}\n"
	"graph(tokens: i32[2, seq], targets: i32[2, seq]) {\n"
	"  x = embed(tokens, vocab, dim)\n"
	"  for i in 0..layers { x = layer(x) }\n"
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
	/* mix_gpt's source must stand on its own: check it before needing a GPU */
	struct ir_graph *mix = sl_compile_source(mix_gpt, sizeof mix_gpt - 1, "mix_gpt.sl", 0, NULL,
						 stderr);
	REQUIRE(mix);
	gpu = harness_open((size_t)1 << 30);
	model_graph("mix_gpt.sl", mix, 64);
	model_graph("models/tiny_gpt.sl",
		    sl_compile_file("models/tiny_gpt.sl", (int)(sizeof gpt / sizeof *gpt), gpt, stderr),
		    64);
	model_graph("models/tiny_moe.sl",
		    sl_compile_file("models/tiny_moe.sl", (int)(sizeof moe / sizeof *moe), moe, stderr),
		    64);
	rt_gpu_close(gpu);
	return CHECK_DONE();
}
