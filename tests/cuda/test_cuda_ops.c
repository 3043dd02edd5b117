/* test_cuda_ops.c - the op graphs of the CPU backend's conformance test
 * (tests/op_cases.inc) on the CUDA backend, against the reference executor
 * (cg_backend_ref) on the host: the same random inputs, copied to the GPU in each
 * value's storage, and every graph output copied back and compared.  Exits 77
 * (skipped) without a GPU.
 *
 * The measure is test_ops.c's normalised error sum|a - b| / sum|b| per output, and its
 * bound for f32 graphs, 1e-5, for the same reason: the reference computes in double,
 * the GPU stores f32 and accumulates in f32 (cuBLASLt in full fp32, no TF32; the
 * kernels' reductions in f32, cross entropy's mean in f64), so a contraction of
 * length K is off by about sqrt(K) 2^-24 ~ 1e-6 for K of a few hundred whatever its
 * order of summation, and CUDA's expf, logf, ... are within 2 ulp; any wrong index or
 * missing term gives errors of order 1.  Graphs that hold bf16 or f16 values keep
 * them in 16 bits here (the LLVM backend keeps them in f32, rounded alike): a sum
 * that lands next to a rounding boundary may round the other way than the
 * reference's double does, one ulp, 2^-8 relative for bf16, so their bound is 8e-3
 * (two ulps of bf16 over the whole output).  Integer outputs must be equal.
 *
 * Every case whose graph can be differentiated runs a second time with its backward
 * (make_backward below): the gradients of its f32 inputs, as pass_autodiff makes
 * them, against the reference's, under the same bound (the loss sum(y * r) itself is
 * not: its random-signed terms cancel, which makes its relative error meaningless,
 * and its parts y are compared).
 *
 * A graph holding an op the backend may lack a kernel for (harness.h) may be refused
 * with a message saying so, and is then counted as refused; any other refusal fails
 * the test. */
#include "check.h"
#include "harness.h"
#include "passes/passes.h"

static void run(const char *label);

#include "op_cases.inc"

static struct rt_gpu *gpu;
static int n_refused, n_compared, n_backward;
static double worst_f32, worst_16;
static char worst_f32_at[96], worst_16_at[96];

static int holds_16bit(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_values; i++)
		if (g->values[i]->dtype == IR_BF16 || g->values[i]->dtype == IR_F16)
			return 1;
	return 0;
}

/* Run G on the GPU and on the reference, compare every output. */
static void compare(const char *label, int backward)
{
	if (ir_verify(G, stderr)) {
		CHECKF(0, "%s: the test graph does not verify", label);
		return;
	}
	struct cg_exec *ref = cg_backend_ref.compile(G, stderr);
	REQUIRE(ref);
	size_t mark = rt_gpu_arena_mark(gpu);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	struct cg_exec *dev = cg_backend_cuda.compile(G, err);
	fclose(err);
	if (!dev) {
		int expected = harness_needs_missing_kernel(G) &&
			       strstr(msg, "the CUDA backend has no kernel for");
		CHECKF(expected, "%s: the CUDA backend did not compile the graph: %s", label, msg);
		if (expected) {
			n_refused++;
			printf("%-34s refused: %s", label, strstr(msg, "the CUDA backend"));
		}
		free(msg);
		cg_backend_ref.free(ref);
		return;
	}
	free(msg);
	int half = holds_16bit(G);
	double tol = half ? 8e-3 : 1e-5;
	void *bufs[64] = { 0 };
	int nb = 0;
	for (int i = 0; i < G->n_ops; i++) {
		const struct ir_op *op = G->ops[i];
		if (op->kind != IR_OP_INPUT && op->kind != IR_OP_PARAM)
			continue;
		const struct ir_value *v = op->out[0];
		void *b = calloc((size_t)ir_shape_numel(&v->shape) + 1, 8);
		fill(v, b);
		cg_backend_ref.bind(ref, v->id, b);
		cg_backend_cuda.bind(dev, v->id, (void *)(uintptr_t)harness_upload(gpu, v, b));
		bufs[nb++] = b;
	}
	REQUIRE(cg_backend_ref.run(ref) == 0);
	CHECKF(cg_backend_cuda.run(dev) == 0, "%s: run failed", label);
	CHECKF(rt_gpu_sync(gpu, RT_STREAM_COMPUTE) == 0, "%s: the GPU failed", label);
	double case_worst = 0;
	for (int o = 0; o < G->n_outputs; o++) {
		const struct ir_value *v = G->outputs[o];
		int64_t n = ir_shape_numel(&v->shape);
		if (backward && !strcmp(G->output_names[o], "loss"))
			continue; /* sum(y * r) cancels: its parts, the outputs y, are compared */
		void *d = cg_backend_cuda.tensor(dev, v->id), *b = cg_backend_ref.tensor(ref, v->id);
		REQUIRE(b);
		if (!d) {
			CHECKF(0, "%s: output %s not kept", label, G->output_names[o]);
			continue;
		}
		void *a = harness_download(gpu, v, (rt_dptr)(uintptr_t)d);
		n_compared++;
		if (!ir_dtype_is_float(v->dtype)) {
			size_t es = v->dtype == IR_I32 ? 4 : 8;
			CHECKF(!memcmp(a, b, es * (size_t)n), "%s: output %s differs", label,
			       G->output_names[o]);
			free(a);
			continue;
		}
		double e = harness_error(a, b, n);
		CHECKF(e <= tol && isfinite(e), "%s: output %s: normalised error %g (bound %g)", label,
		       G->output_names[o], e, tol);
		if (e > case_worst)
			case_worst = e;
		double *w = half ? &worst_16 : &worst_f32;
		char *at = half ? worst_16_at : worst_f32_at;
		if (e > *w || !at[0]) {
			*w = e;
			snprintf(at, sizeof worst_f32_at, "%s: %s", label, G->output_names[o]);
		}
		free(a);
	}
	printf("%-34s worst %.3g%s\n", label, case_worst, half ? " (16-bit values)" : "");
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	cg_backend_cuda.free(dev);
	cg_backend_ref.free(ref);
	rt_gpu_arena_reset(gpu, mark);
}

/* G made a training graph, as pass_autodiff makes them: every f32 INPUT a trainable
 * PARAM, and loss = the sum over the f32 outputs y of sum(y * r), r a new random
 * input of y's shape (y's gradient is then r).  0 when G has no backward: 16-bit
 * values, no f32 input, or an op on the way to the loss with no gradient rule (the
 * backward helpers of the cases: softmax_bwd, cross_entropy_bwd, ...). */
static int make_backward(void)
{
	int params = 0, outs = 0;
	if (holds_16bit(G))
		return 0;
	for (int i = 0; i < G->n_ops; i++)
		params += G->ops[i]->kind == IR_OP_INPUT && G->ops[i]->out[0]->dtype == IR_F32;
	for (int o = 0; o < G->n_outputs; o++)
		outs += G->outputs[o]->dtype == IR_F32;
	if (!params || !outs || G->n_values + 4 * outs > (int)(sizeof specs / sizeof *specs))
		return 0;
	for (int i = 0; i < G->n_ops; i++) {
		struct ir_op *op = G->ops[i];
		if (op->kind != IR_OP_INPUT || op->out[0]->dtype != IR_F32)
			continue;
		op->kind = IR_OP_PARAM;
		op->path = ir_op_str(op, "name", "x");
		op->out[0]->name = op->path;
		ir_op_set_str(G, op, "init", "normal"); /* bound here, not initialised */
	}
	struct ir_value *loss = NULL;
	for (int o = 0, n = G->n_outputs; o < n; o++) {
		struct ir_value *y = G->outputs[o];
		if (y->dtype != IR_F32)
			continue;
		struct ir_value *r = fin(y->shape);
		struct ir_value *m = op2(IR_OP_MUL, y, r, IR_F32, y->shape);
		struct ir_value *flat = op1(IR_OP_RESHAPE, m, S(ir_shape_numel(&y->shape)));
		struct ir_value *sum = op1(IR_OP_REDUCE_SUM, flat, SCALAR);
		ir_op_set_int(G, sum->def, "axis", -1);
		ir_op_set_int(G, sum->def, "keepdim", 0);
		loss = loss ? op2(IR_OP_ADD, loss, sum, IR_F32, SCALAR) : sum;
	}
	ir_graph_add_output(G, "loss", loss);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	int rc = pass_autodiff(G, err);
	fclose(err);
	free(msg);
	return rc == 0;
}

static void run(const char *label)
{
	n_cases++;
	compare(label, 0);
	if (make_backward()) {
		char l[96];
		snprintf(l, sizeof l, "%s, backward", label);
		n_backward++;
		compare(l, 1);
	}
	ir_graph_free(G);
}

int main(void)
{
	gpu = harness_open((size_t)1 << 30);
	srand(12345);
	op_cases_all();
	/* an op with no GPU path is refused at compile, not run wrongly */
	begin();
	struct ir_value *x = fin(S(4, 128));
	struct ir_op *q = ir_op_new(G, IR_OP_QUANT_FP8, 1, &x, 2);
	q->out[0]->dtype = IR_F8E4M3;
	q->out[0]->shape = x->shape;
	q->out[1]->shape = S(4, 1);
	ir_graph_add_output(G, "q", q->out[1]);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	struct cg_exec *e = cg_backend_cuda.compile(G, err);
	fclose(err);
	CHECK(!e);
	CHECKF(strstr(msg, "the CUDA backend cannot run op quant_fp8"), "message: %s", msg);
	free(msg);
	ir_graph_free(G);
	printf("%d op cases on the CUDA backend against the reference executor, %d of them "
	       "with their backward too: %d outputs compared, %d graphs refused (no kernel "
	       "yet)\n", n_cases, n_backward, n_compared, n_refused);
	printf("worst f32 normalised error %.3g (%s), bound 1e-05\n", worst_f32, worst_f32_at);
	printf("worst with 16-bit values %.3g (%s), bound 8e-03\n", worst_16, worst_16_at);
	rt_gpu_close(gpu);
	return CHECK_DONE();
}
