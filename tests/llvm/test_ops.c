/* test_ops.c - every op of ir/ops.def that the CPU backend runs (all but communication
 * over a group of more than one), alone or in small fused chains, on random
 * inputs, against the reference executor (cg_backend_ref), in the manner of ggml's
 * test-backend-ops.  The graphs are tests/op_cases.inc's, shared with the GPU backend's
 * test.
 *
 * The measure is the normalised error sum|a - b| / sum|b| over an output, with a bound
 * of 1e-5 for f32.  Why that bound: the reference computes in double, so its result is
 * exact to f32 precision; the backend stores f32 and accumulates reductions and GEMMs
 * of length K in f32, whose rounding error grows like sqrt(K) * 2^-24 ~ 6e-8 sqrt(K)
 * relative for random-signed terms (K up to a few hundred here: ~1e-6), and each
 * elementwise op adds about one ulp (6e-8).  1e-5 leaves a margin of ten over that and
 * still catches any wrong index, missing term or wrong formula, which give errors of
 * order 1.  Integer outputs (top-k choices, dispatch permutation and offsets) must be
 * equal.  Attention keeps the same 1e-5: its kernels sum over at most S keys and D head
 * dims in f32 and their exp is within 2 ulp; on the shapes below the worst of out, lse,
 * dq, dk, dv is 4e-7 (SLUICE_TEST_VERBOSE=1 prints every figure).  Attention's results
 * must also be bit-identical from run to run and from many threads to one.  FP8
 * quantisation (values and scales) must be bit-identical to the reference's; the
 * scaled products keep 1e-5, as the dequantised operands are exact f32 products of an
 * f8 value and a scale up to one f32 rounding. */
#include "check.h"

static void run(const char *label);

#include "op_cases.inc"


/* Run G on both backends and compare every graph output. */
static void run(const char *label)
{
	n_cases++;
	if (ir_verify(G, stderr)) {
		CHECKF(0, "%s: the test graph does not verify", label);
		ir_graph_free(G);
		return;
	}
	struct cg_exec *ref = cg_backend_ref.compile(G, stderr);
	struct cg_exec *jit = cg_backend_llvm.compile(G, stderr);
	REQUIRE(ref);
	if (!jit) {
		CHECKF(0, "%s: the LLVM backend did not compile the graph", label);
		cg_backend_ref.free(ref);
		ir_graph_free(G);
		return;
	}
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
		cg_backend_llvm.bind(jit, v->id, b);
		bufs[nb++] = b;
	}
	REQUIRE(cg_backend_ref.run(ref) == 0);
	CHECK(cg_backend_llvm.run(jit) == 0);
	for (int o = 0; o < G->n_outputs; o++) {
		const struct ir_value *v = G->outputs[o];
		int64_t n = ir_shape_numel(&v->shape);
		void *a = cg_backend_llvm.tensor(jit, v->id), *b = cg_backend_ref.tensor(ref, v->id);
		REQUIRE(b);
		if (!a) {
			CHECKF(0, "%s: output %s not kept", label, G->output_names[o]);
			continue;
		}
		if (!ir_dtype_is_float(v->dtype)) {
			size_t es = v->dtype == IR_I32 ? 4 : 8;
			CHECKF(!memcmp(a, b, es * (size_t)n), "%s: output %s differs", label,
			       G->output_names[o]);
			continue;
		}
		if (exact) {
			same_bits(label, G->output_names[o], a, b, n);
			continue;
		}
		double num = 0, den = 0, maxrel = 0;
		for (int64_t i = 0; i < n; i++) {
			double x = ((float *)a)[i], y = ((float *)b)[i];
			num += fabs(x - y);
			den += fabs(y);
			double rel = fabs(x - y) / fmax(fabs(y), 1e-6);
			maxrel = rel > maxrel ? rel : maxrel;
		}
		double err = den > 0 ? num / den : num;
		CHECKF(err <= 1e-5 && isfinite(err), "%s: output %s: normalised error %g (max rel %g)",
		       label, G->output_names[o], err, maxrel);
		if (getenv("SLUICE_TEST_VERBOSE"))
			printf("%-28s %-6s err %.3g  max rel %.3g\n", label, G->output_names[o], err, maxrel);
	}
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	cg_backend_llvm.free(jit);
	cg_backend_ref.free(ref);
	ir_graph_free(G);
}

/* The same inputs give the same bits: twice in a row, and on one thread as on many
 * (every sum of the attention kernels runs in an order fixed by the shapes alone). */
static void attention_determinism(void)
{
	attention_graph(2, 150, 4, 2, 32, 16, 1);
	REQUIRE(!ir_verify(G, stderr));
	float *res[3][5] = { { 0 } };
	void *bufs[8] = { 0 };
	int nb = 0;
	srand(777);
	for (int i = 0; i < G->n_ops; i++)
		if (G->ops[i]->kind == IR_OP_INPUT) {
			const struct ir_value *v = G->ops[i]->out[0];
			bufs[nb] = calloc((size_t)ir_shape_numel(&v->shape) + 1, 8);
			fill(v, bufs[nb++]);
		}
	const char *threads = getenv("SLUICE_THREADS");
	char *saved = threads ? strdup(threads) : NULL;
	for (int run_i = 0; run_i < 3; run_i++) {
		if (run_i == 2)
			setenv("SLUICE_THREADS", "1", 1);
		struct cg_exec *e = cg_backend_llvm.compile(G, stderr);
		REQUIRE(e);
		for (int i = 0, k = 0; i < G->n_ops; i++)
			if (G->ops[i]->kind == IR_OP_INPUT)
				cg_backend_llvm.bind(e, G->ops[i]->out[0]->id, bufs[k++]);
		CHECK(cg_backend_llvm.run(e) == 0);
		for (int o = 0; o < G->n_outputs; o++) {
			size_t n = (size_t)ir_shape_numel(&G->outputs[o]->shape);
			res[run_i][o] = malloc(n * sizeof(float));
			memcpy(res[run_i][o], cg_backend_llvm.tensor(e, G->outputs[o]->id),
			       n * sizeof(float));
			if (run_i)
				CHECKF(!memcmp(res[0][o], res[run_i][o], n * sizeof(float)),
				       "attention: output %s differs between runs (%s)",
				       G->output_names[o], run_i == 1 ? "twice" : "one thread");
		}
		cg_backend_llvm.free(e);
	}
	if (saved)
		setenv("SLUICE_THREADS", saved, 1);
	else
		unsetenv("SLUICE_THREADS");
	free(saved);
	for (int r = 0; r < 3; r++)
		for (int o = 0; o < G->n_outputs; o++)
			free(res[r][o]);
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	ir_graph_free(G);
	n_cases++;
}

/* The round trip regroup -> inverse regroup on the LLVM backend alone: the first total
 * rows come back exactly, the rest are zero; and bad counts are clamped, not run out of
 * bounds (a negative count is 0, rows past the buffer are dropped). */
static void ep_regroup_round_trip(void)
{
	enum { P = 3, El = 2, C = 11, W = 4 };
	static const int32_t counts[][P * El] = {
		{ 2, 1, 1, 3, 0, 2 },    /* total 9 < C */
		{ 4, 0, 3, 2, 1, 1 },    /* total 11 = C */
		{ 5, -2, 4, 6, 0, 3 },   /* a negative count, total past C: clamped */
	};
	for (int t = 0; t < 3; t++) {
		begin();
		struct ir_value *x = fin(S(C, W)), *rc = in(IR_I32, S(P, El), G_CNT, C);
		struct ir_value *y = op2(IR_OP_EP_REGROUP, x, rc, IR_F32, x->shape);
		struct ir_value *back = op2(IR_OP_EP_REGROUP, y, rc, IR_F32, x->shape);
		ir_op_set_int(G, back->def, "inverse", 1);
		OUT(y);
		OUT(back);
		REQUIRE(ir_verify(G, stderr) == 0);
		struct cg_exec *jit = cg_backend_llvm.compile(G, stderr);
		REQUIRE(jit);
		float xv[C * W];
		for (int i = 0; i < C * W; i++)
			xv[i] = (float)(i + 1);
		int32_t cv[P * El];
		memcpy(cv, counts[t], sizeof cv);
		cg_backend_llvm.bind(jit, x->id, xv);
		cg_backend_llvm.bind(jit, rc->id, cv);
		REQUIRE(cg_backend_llvm.run(jit) == 0);
		const float *yv = cg_backend_llvm.tensor(jit, y->id);
		const float *bv = cg_backend_llvm.tensor(jit, back->id);
		REQUIRE(yv && bv);
		int64_t total = 0;
		for (int i = 0; i < P * El; i++)
			total += cv[i] > 0 ? cv[i] : 0;
		int64_t keep = total < C ? total : C;
		for (int r = 0; r < C; r++)
			for (int d = 0; d < W; d++) {
				float want = r < keep && t < 2 ? xv[r * W + d] : 0;
				if (t == 2 && r < keep) /* clamped: a row comes back or is zero */
					want = bv[r * W + d] == 0 ? 0 : xv[r * W + d];
				CHECKF(bv[r * W + d] == want, "round trip %d: row %d col %d is %g, want %g",
				       t, r, d, bv[r * W + d], want);
			}
		/* x peer-major: (0,0) rows 0-1, (0,1) 2, (1,0) 3, (1,1) 4-6, (2,1) 7-8; y
		 * expert-major: (0,0) (1,0) (0,1) (1,1) (2,1) */
		if (t == 0)
			CHECK(yv[W] == xv[W] && yv[2 * W] == xv[3 * W] && yv[3 * W] == xv[2 * W] &&
			      yv[6 * W] == xv[6 * W] && yv[8 * W + 1] == xv[8 * W + 1] &&
			      yv[9 * W] == 0 && yv[10 * W + 3] == 0);
		n_cases++;
		cg_backend_llvm.free(jit);
		ir_graph_free(G);
	}
}

int main(void)
{
	srand(12345);
	op_cases_all();
	attention_determinism();
	ep_regroup_round_trip();
	fp8_op_cases();
	/* communication ops are refused with a message, not run wrongly */
	char *msg = NULL;
	size_t len = 0;
	FILE *err;
	struct cg_exec *e;
	begin();
	struct ir_value *x = fin(S(6, 4));
	struct ir_value *sc = in(IR_I32, S(2, 3), G_CNT, 6);
	struct ir_value *a2a = op3(IR_OP_ALL_TO_ALLV, x, sc, sc, IR_F32, S(9, 4));
	ir_op_set_str(G, a2a->def, "group", "ep");
	OUT(a2a);
	REQUIRE(ir_verify(G, stderr) == 0);
	err = open_memstream(&msg, &len);
	e = cg_backend_llvm.compile(G, err);
	fclose(err);
	CHECK(!e);
	CHECKF(strstr(msg, "cannot run op all_to_allv over a group of 2 ranks"), "message: %s", msg);
	free(msg);
	ir_graph_free(G);
	printf("%d op cases against the reference executor\n", n_cases);
	return CHECK_DONE();
}
