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
 * FP8 (fp8_ops below, as tests/llvm/test_ops.c): QUANT_FP8 and the casts to f8 are
 * compared bit for bit with the reference (its rounding: nearest, ties to even,
 * saturating, subnormals kept; the GPU's is the hardware's cvt.rn.satfinite), the
 * scaled products that the backend dequantises (K not in 128-blocks) under 1e-5, and
 * those that run as cuBLASLt's block-scaled FP8 GEMM (cg_fp8_gemm_form: the forward and
 * input gradient, bf16 or f32 out, and the weight gradient, f32 out) under 1e-3
 * (the grouped forward on bf16 tensor cores, f32 sums of exact products, keeps 1e-5):
 * the products of two E4M3 values are exact, but the tensor cores add them within each
 * 128-block of K keeping about 14 bits (DeepSeek-V3 measured this on Hopper, hence
 * the promotion to f32 every 128), a relative 1e-4 a block, and a bf16 output is
 * rounded once more (2^-9).
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
static int n_refused, n_compared, n_backward, n_exact;
static double bound; /* when set, the bound for this case's float outputs */
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
	double tol = bound > 0 ? bound : half ? 8e-3 : 1e-5;
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
		if (exact) {
			same_bits(label, G->output_names[o], a, b, n);
			n_exact++;
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

/* fp8_op_cases() (op_cases.inc), then the products the GPU runs its own ways */
static void fp8_ops(void)
{
	fp8_op_cases();
	/* and those cuBLASLt's block-scaled FP8 GEMM runs: the forward x W (W transposed
	 * for it) and the input gradient dy W^T, bf16 out, K = 384 (3 blocks: the scale
	 * rows padded to 4), N = 320 (a ragged last block of W); the weight gradient
	 * x^T dy, 128x1 tiles over 256 tokens, f32 out */
	bound = 1e-3;
	for (int c = 0; c < 4; c++) { /* b^T or not, bf16 or f32 out */
		int tb = c % 2;
		begin();
		struct ir_value *a = fin(S(2, 64, 384)), *b = fin(tb ? S(320, 384) : S(384, 320));
		struct ir_value *y = scaled(a, b, tb, c < 2 ? IR_BF16 : IR_F32, S(2, 64, 320));
		OUT(y);
		char label[64];
		snprintf(label, sizeof label, "scaled_matmul (fp8 GEMM%s)%s", c < 2 ? "" : ", f32",
			 tb ? ", b^T" : "");
		run(label);
	}
	begin();
	struct ir_value *wx = fin(S(256, 192)), *wdy = fin(S(256, 320));
	struct ir_op *qwx = quant(wx, 128, 1, IR_F8E4M3), *qwd = quant(wdy, 128, 1, IR_F8E4M3);
	struct ir_value *wins[4] = { qwx->out[0], qwd->out[0], qwx->out[1], qwd->out[1] };
	struct ir_value *dw = ir_op1(G, IR_OP_SCALED_MATMUL, 4, wins, IR_F32, S(192, 320));
	ir_op_set_int(G, dw->def, "trans_a", 1);
	ir_op_set_ints(G, dw->def, "a_tile", 2, (int64_t[]){ 128, 1 });
	ir_op_set_ints(G, dw->def, "b_tile", 2, (int64_t[]){ 128, 1 });
	OUT(dw);
	run("scaled_matmul (fp8 GEMM), weight gradient");
	bound = 0;
	/* and the grouped forward the tensor cores run (K, N multiples of 8: the operands
	 * widened to bf16, the scales applied every 128 of K), w stored [E, K, N] and
	 * [E, N, K], f32 and bf16 out: K = 320 (a ragged last block), 300 rows over 4
	 * experts */
	for (int c = 0; c < 4; c++) {
		int tb = c % 2;
		begin();
		struct ir_value *fx = fin(S(300, 320));
		struct ir_value *fw = fin(tb ? S(4, 192, 320) : S(4, 320, 192));
		struct ir_value *foff = in(IR_I32, S(5), G_OFF, 300);
		struct ir_op *fqx = quant(fx, 1, 128, IR_F8E4M3), *fqw = quant(fw, 128, 128, IR_F8E4M3);
		struct ir_value *fin5[5] = { fqx->out[0], fqw->out[0], foff, fqx->out[1], fqw->out[1] };
		struct ir_value *fy = ir_op1(G, IR_OP_SCALED_GROUPED_MATMUL, 5, fin5,
					     c < 2 ? IR_F32 : IR_BF16, S(300, 192));
		ir_op_set_int(G, fy->def, "trans_b", tb);
		ir_op_set_ints(G, fy->def, "a_tile", 2, (int64_t[]){ 1, 128 });
		ir_op_set_ints(G, fy->def, "b_tile", 2, (int64_t[]){ 128, 128 });
		OUT(fy);
		char label[64];
		snprintf(label, sizeof label, "scaled grouped (tensor cores, %s)%s",
			 c < 2 ? "f32" : "bf16", tb ? ", w^T" : "");
		run(label);
	}
	/* and the experts' weight gradient the tensor cores run: 128x1 tiles of xs and dy,
	 * 300 rows over 4 experts (segments that start and end inside a 128-row tile and
	 * a 32-row chunk: the tile's scale serves both experts), K = 320, N = 192 (column
	 * tiles ragged against 128), f32 and bf16 out: f32 sums of exact products */
	for (int c = 0; c < 2; c++) {
		begin();
		struct ir_value *gx = fin(S(300, 320)), *gd = fin(S(300, 192));
		struct ir_value *goff = in(IR_I32, S(5), G_OFF, 300);
		struct ir_op *gqx = quant(gx, 128, 1, IR_F8E4M3), *gqd = quant(gd, 128, 1, IR_F8E4M3);
		struct ir_value *gin5[5] = { gqx->out[0], gqd->out[0], goff, gqx->out[1], gqd->out[1] };
		struct ir_value *gw = ir_op1(G, IR_OP_SCALED_GROUPED_MATMUL_WGRAD, 5, gin5,
					     c ? IR_BF16 : IR_F32, S(4, 320, 192));
		ir_op_set_ints(G, gw->def, "a_tile", 2, (int64_t[]){ 128, 1 });
		ir_op_set_ints(G, gw->def, "b_tile", 2, (int64_t[]){ 128, 1 });
		OUT(gw);
		run(c ? "scaled grouped weight gradient (tensor cores, bf16)"
		      : "scaled grouped weight gradient (tensor cores, f32)");
	}
}

int main(void)
{
	gpu = harness_open((size_t)1 << 30);
	srand(12345);
	op_cases_all();
	fp8_ops();
	/* a communication op is refused at compile, not run wrongly */
	begin();
	struct ir_value *x = fin(S(6, 4));
	struct ir_value *sc = in(IR_I32, S(2, 3), G_CNT, 6);
	struct ir_value *a2a = op3(IR_OP_ALL_TO_ALLV, x, sc, sc, IR_F32, S(9, 4));
	ir_op_set_str(G, a2a->def, "group", "ep");
	OUT(a2a);
	REQUIRE(ir_verify(G, stderr) == 0);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	struct cg_exec *e = cg_backend_cuda.compile(G, err);
	fclose(err);
	CHECK(!e);
	CHECKF(strstr(msg, "cannot run op all_to_allv over a group of 2 ranks"), "message: %s", msg);
	free(msg);
	ir_graph_free(G);
	printf("%d op cases on the CUDA backend against the reference executor, %d of them "
	       "with their backward too: %d outputs compared, %d graphs refused (no kernel "
	       "yet)\n", n_cases, n_backward, n_compared, n_refused);
	printf("worst f32 normalised error %.3g (%s), bound 1e-05\n", worst_f32, worst_f32_at);
	printf("worst with 16-bit values %.3g (%s), bound 8e-03\n", worst_16, worst_16_at);
	printf("%d FP8 outputs compared bit for bit\n", n_exact);
	rt_gpu_close(gpu);
	return CHECK_DONE();
}
