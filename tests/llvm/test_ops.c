/* test_ops.c - every op of ir/ops.def that the CPU backend runs (all but FP8, and
 * communication but over a group of one), alone or in small fused chains, on random
 * inputs, against the reference executor (cg_backend_ref), in the manner of ggml's
 * test-backend-ops.
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
 * must also be bit-identical from run to run and from many threads to one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/backend.h"

enum gen { G_F, G_POS, G_IDX, G_TGT, G_PERM, G_OFF, G_ROUTE, G_CNT };

struct spec {
	enum gen gen;
	int64_t hi;   /* G_IDX: [0, hi); G_TGT: [-1, hi); G_OFF: rows; G_ROUTE: experts;
		       * G_CNT: rows */
};

static struct ir_graph *G;
static struct spec specs[64];

static struct ir_value *in(enum ir_dtype t, struct ir_shape s, enum gen gen, int64_t hi)
{
	struct ir_value *v = ir_op1(G, IR_OP_INPUT, 0, NULL, t, s);
	char name[16];
	snprintf(name, sizeof name, "in%d", v->id);
	ir_op_set_str(G, v->def, "name", name);
	specs[v->id] = (struct spec){ gen, hi };
	return v;
}

static struct ir_value *fin(struct ir_shape s) { return in(IR_F32, s, G_F, 0); }

static struct ir_value *op1(enum ir_opkind k, struct ir_value *a, struct ir_shape s)
{
	return ir_op1(G, k, 1, &a, a->dtype, s);
}

static struct ir_value *op2(enum ir_opkind k, struct ir_value *a, struct ir_value *b,
			    enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *x[2] = { a, b };
	return ir_op1(G, k, 2, x, t, s);
}

static struct ir_value *op3(enum ir_opkind k, struct ir_value *a, struct ir_value *b,
			    struct ir_value *c, enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *x[3] = { a, b, c };
	return ir_op1(G, k, 3, x, t, s);
}

#define S(...) ir_shape_make((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
			     (int64_t[]){ __VA_ARGS__ })
#define SCALAR ir_shape_make(0, NULL)
#define OUT(v) ir_graph_add_output(G, #v, v)

static void begin(void)
{
	G = ir_graph_new("t");
	memset(specs, 0, sizeof specs);
}

static double frand(double lo, double hi)
{
	return lo + (hi - lo) * (rand() / (double)RAND_MAX);
}

static void fill(const struct ir_value *v, void *buf)
{
	int64_t n = ir_shape_numel(&v->shape);
	struct spec sp = specs[v->id];
	int64_t *tmp = calloc((size_t)(n + 1), sizeof *tmp);
	switch (sp.gen) {
	case G_F: case G_POS:
		for (int64_t i = 0; i < n; i++) {
			double x = sp.gen == G_F ? frand(-1, 1) : frand(0.5, 2);
			/* bf16/f16 inputs hold values of their format: multiples of 1/64 */
			if (v->dtype != IR_F32)
				x = (double)(int)(x * 64) / 64;
			((float *)buf)[i] = (float)x;
		}
		free(tmp);
		return;
	case G_IDX: for (int64_t i = 0; i < n; i++) tmp[i] = rand() % sp.hi; break;
	case G_TGT: for (int64_t i = 0; i < n; i++) tmp[i] = rand() % (sp.hi + 1) - 1; break;
	case G_PERM:
		for (int64_t i = 0; i < n; i++)
			tmp[i] = i;
		for (int64_t i = n - 1; i > 0; i--) {
			int64_t j = rand() % (i + 1), t = tmp[i];
			tmp[i] = tmp[j];
			tmp[j] = t;
		}
		break;
	case G_OFF: /* E+1 non-decreasing offsets from 0 to rows, expert 1 empty */
		for (int64_t i = 1; i < n - 1; i++) {
			int64_t step = i == 2 ? 0 : rand() % (2 * sp.hi / (n - 1) + 1);
			tmp[i] = tmp[i - 1] + step < sp.hi ? tmp[i - 1] + step : sp.hi;
		}
		tmp[n - 1] = sp.hi;
		break;
	case G_ROUTE: { /* rows of k distinct experts */
		int64_t k = v->shape.dim[v->shape.rank - 1];
		for (int64_t r = 0; r < n / k; r++)
			for (int64_t j = 0; j < k; j++) {
				int64_t e;
				int dup;
				do {
					e = rand() % sp.hi;
					dup = 0;
					for (int64_t q = 0; q < j; q++)
						dup |= tmp[r * k + q] == e;
				} while (dup);
				tmp[r * k + j] = e;
			}
		break;
	}
	case G_CNT: /* row counts, every third one 0, summing to less than rows */
		for (int64_t i = 0; i < n; i++)
			tmp[i] = i % 3 == 1 ? 0 : rand() % (sp.hi / n + 1);
		break;
	}
	for (int64_t i = 0; i < n; i++) {
		if (v->dtype == IR_I32)
			((int32_t *)buf)[i] = (int32_t)tmp[i];
		else
			((int64_t *)buf)[i] = tmp[i];
	}
	free(tmp);
}

static int n_cases;

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

static void unary_ops(void)
{
	static const enum ir_opkind ks[] = { IR_OP_NEG, IR_OP_EXP, IR_OP_LOG, IR_OP_SQRT,
		IR_OP_RSQRT, IR_OP_RECIP, IR_OP_SQUARE, IR_OP_SIGMOID, IR_OP_SILU, IR_OP_TANH,
		IR_OP_RELU, IR_OP_SCALE, IR_OP_STOP_GRAD, IR_OP_CAST };
	for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
		begin();
		int pos = ks[i] == IR_OP_LOG || ks[i] == IR_OP_SQRT || ks[i] == IR_OP_RSQRT ||
			  ks[i] == IR_OP_RECIP;
		struct ir_value *x = in(IR_F32, S(2, 3, 37), pos ? G_POS : G_F, 0);
		if (ks[i] == IR_OP_EXP || ks[i] == IR_OP_SIGMOID || ks[i] == IR_OP_SILU) {
			x = op1(IR_OP_SCALE, x, x->shape);
			ir_op_set_float(G, x->def, "alpha", 30.0);
			ir_op_set_float(G, x->def, "beta", 0.0);
		}
		struct ir_value *y = op1(ks[i], x, x->shape);
		if (ks[i] == IR_OP_SCALE) {
			ir_op_set_float(G, y->def, "alpha", -1.5);
			ir_op_set_float(G, y->def, "beta", 0.25);
		}
		OUT(y);
		run(ir_op_name(ks[i]));
	}
	/* casts between ints and floats */
	begin();
	struct ir_value *t = in(IR_I32, S(5, 7), G_IDX, 100);
	struct ir_value *f = ir_op1(G, IR_OP_CAST, 1, &t, IR_F32, S(5, 7));
	struct ir_value *h = op1(IR_OP_SCALE, f, f->shape);
	ir_op_set_float(G, h->def, "alpha", 0.37);
	ir_op_set_float(G, h->def, "beta", 0.0);
	struct ir_value *back = ir_op1(G, IR_OP_CAST, 1, &h, IR_I32, S(5, 7));
	OUT(f);
	OUT(back);
	run("cast i32<->f32");
	begin();
	struct ir_value *c = ir_op1(G, IR_OP_CONST, 0, NULL, IR_F32, S(4, 5));
	ir_op_set_float(G, c->def, "value", 2.5);
	OUT(c);
	run("const");
}

static void binary_ops(void)
{
	static const enum ir_opkind ks[] = { IR_OP_ADD, IR_OP_SUB, IR_OP_MUL, IR_OP_DIV };
	for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
		begin();
		struct ir_value *a = fin(S(4, 1, 7));
		struct ir_value *b = in(IR_F32, S(3, 1), ks[i] == IR_OP_DIV ? G_POS : G_F, 0);
		struct ir_value *y = op2(ks[i], a, b, IR_F32, S(4, 3, 7));
		OUT(y);
		run(ir_op_name(ks[i]));
	}
	begin();
	struct ir_value *x = fin(S(6, 33)), *dy = fin(S(6, 33));
	struct ir_value *y1 = op2(IR_OP_SILU_BWD, x, dy, IR_F32, S(6, 33));
	struct ir_value *y2 = op2(IR_OP_RELU_BWD, x, dy, IR_F32, S(6, 33));
	OUT(y1);
	OUT(y2);
	run("silu_bwd relu_bwd");
}

/* rmsnorm and a SwiGLU-like chain: fused elementwise + broadcast + reduction */
static void fused_chains(void)
{
	begin();
	struct ir_value *x = fin(S(3, 5, 48)), *w = fin(S(48));
	struct ir_value *sq = op1(IR_OP_SQUARE, x, x->shape);
	struct ir_value *ms = op1(IR_OP_REDUCE_MEAN, sq, S(3, 5, 1));
	ir_op_set_int(G, ms->def, "axis", -1);
	ir_op_set_int(G, ms->def, "keepdim", 1);
	struct ir_value *eps = op1(IR_OP_SCALE, ms, ms->shape);
	ir_op_set_float(G, eps->def, "alpha", 1.0);
	ir_op_set_float(G, eps->def, "beta", 1e-5);
	struct ir_value *r = op1(IR_OP_RSQRT, eps, eps->shape);
	struct ir_value *xn = op2(IR_OP_MUL, x, r, IR_F32, x->shape);
	struct ir_value *y = op2(IR_OP_MUL, xn, w, IR_F32, x->shape);
	struct ir_value *g = op1(IR_OP_SILU, y, y->shape);
	struct ir_value *u = op2(IR_OP_MUL, g, y, IR_F32, y->shape);
	struct ir_value *c = op1(IR_OP_CAST, u, u->shape);
	OUT(c);
	run("rmsnorm+swiglu chain");
}

static void reductions(void)
{
	static const enum ir_opkind ks[] = { IR_OP_REDUCE_SUM, IR_OP_REDUCE_MEAN, IR_OP_REDUCE_MAX };
	for (size_t i = 0; i < 3; i++)
		for (int axis = -1; axis < 3; axis++)
			for (int keep = 0; keep < 2; keep++) {
				begin();
				struct ir_value *x = fin(S(5, 6, 67));
				int a = axis < 0 ? 2 : axis;
				struct ir_shape s = x->shape;
				if (keep) {
					s.dim[a] = 1;
				} else {
					for (int d = a; d < 2; d++)
						s.dim[d] = s.dim[d + 1];
					s.rank = 2;
				}
				struct ir_value *e = op1(IR_OP_EXP, x, x->shape);
				struct ir_value *y = op1(ks[i], e, s);
				ir_op_set_int(G, y->def, "axis", axis);
				ir_op_set_int(G, y->def, "keepdim", keep);
				OUT(y);
				char label[64];
				snprintf(label, sizeof label, "%s axis %d keep %d", ir_op_name(ks[i]), axis, keep);
				run(label);
			}
	begin();
	struct ir_value *x = fin(S(4, 5, 6));
	struct ir_value *y1 = op1(IR_OP_SUM_TO, x, S(6));
	struct ir_value *y2 = op1(IR_OP_SUM_TO, x, S(5, 1));
	struct ir_value *y3 = op1(IR_OP_SUM_TO, x, S(4, 1, 6));
	OUT(y1);
	OUT(y2);
	OUT(y3);
	run("sum_to");
	begin();
	x = fin(S(3, 9, 4));
	struct ir_value *dy = fin(S(3, 4));
	struct ir_value *dx = op2(IR_OP_REDUCE_MAX_BWD, x, dy, IR_F32, x->shape);
	ir_op_set_int(G, dx->def, "axis", 1);
	OUT(dx);
	run("reduce_max_bwd");
}

static void shape_ops(void)
{
	begin();
	struct ir_value *x = fin(S(4, 6));
	struct ir_value *r = op1(IR_OP_RESHAPE, x, S(3, 8));
	struct ir_value *e = op1(IR_OP_EXP, r, r->shape);
	OUT(e);
	run("reshape");
	/* reshapes that share their input's buffer: of an input, of a computed value, and
	 * chained, read by ops that need a buffer (matmul, softmax) */
	begin();
	x = fin(S(2, 3, 8));
	struct ir_value *xr = op1(IR_OP_RESHAPE, x, S(6, 8));
	struct ir_value *wm = fin(S(8, 5));
	struct ir_value *mm = op2(IR_OP_MATMUL, xr, wm, IR_F32, S(6, 5));
	struct ir_value *sq = op1(IR_OP_SQUARE, mm, mm->shape);
	struct ir_value *r1 = op1(IR_OP_RESHAPE, sq, S(2, 15));
	struct ir_value *r2 = op1(IR_OP_STOP_GRAD, r1, r1->shape);
	struct ir_value *sm = op1(IR_OP_SOFTMAX, r2, r2->shape);
	struct ir_value *r3 = op1(IR_OP_RESHAPE, sm, S(30));
	OUT(mm);
	OUT(r3);
	run("reshape aliases");
	begin();
	x = fin(S(2, 3, 4));
	struct ir_value *t = op1(IR_OP_TRANSPOSE, x, S(4, 2, 3));
	int64_t perm[3] = { 2, 0, 1 };
	ir_op_set_ints(G, t->def, "perm", 3, perm);
	OUT(t);
	run("transpose");
	begin();
	x = fin(S(3, 1));
	struct ir_value *b = op1(IR_OP_BROADCAST, x, S(2, 3, 5));
	OUT(b);
	run("broadcast");
	begin();
	x = fin(S(3, 9, 5));
	struct ir_value *sl = op1(IR_OP_SLICE, x, S(3, 4, 5));
	ir_op_set_int(G, sl->def, "axis", 1);
	ir_op_set_int(G, sl->def, "start", 2);
	OUT(sl);
	run("slice");
	begin();
	struct ir_value *cs[3] = { fin(S(2, 3, 4)), fin(S(2, 1, 4)), fin(S(2, 5, 4)) };
	struct ir_value *c = ir_op1(G, IR_OP_CONCAT, 3, cs, IR_F32, S(2, 9, 4));
	ir_op_set_int(G, c->def, "axis", 1);
	OUT(c);
	run("concat");
}

static void matmuls(void)
{
	static const int64_t mkn[][3] = { { 7, 13, 9 }, { 33, 300, 65 }, { 1, 5, 1 } };
	for (int s = 0; s < 3; s++)
		for (int t = 0; t < 4; t++) {
			begin();
			int64_t M = mkn[s][0], K = mkn[s][1], N = mkn[s][2];
			int ta = t & 1, tb = t >> 1;
			struct ir_value *a = fin(ta ? S(K, M) : S(M, K));
			struct ir_value *b = fin(tb ? S(N, K) : S(K, N));
			struct ir_value *y = op2(IR_OP_MATMUL, a, b, IR_F32, S(M, N));
			ir_op_set_int(G, y->def, "trans_a", ta);
			ir_op_set_int(G, y->def, "trans_b", tb);
			OUT(y);
			char label[64];
			snprintf(label, sizeof label, "matmul %lldx%lldx%lld ta%d tb%d", (long long)M,
				 (long long)K, (long long)N, ta, tb);
			run(label);
		}
	begin();
	struct ir_value *a = fin(S(2, 3, 5, 4)), *b = fin(S(2, 3, 4, 6));
	struct ir_value *y = op2(IR_OP_MATMUL, a, b, IR_F32, S(2, 3, 5, 6));
	OUT(y);
	run("matmul batched");
	/* transposed operands the GEMM reads in place, batch dims permuted too */
	begin();
	struct ir_value *xa = fin(S(3, 2, 5, 4)), *xb = fin(S(2, 3, 6, 4));
	a = op1(IR_OP_TRANSPOSE, xa, S(2, 3, 5, 4));
	ir_op_set_ints(G, a->def, "perm", 4, (int64_t[]){ 1, 0, 2, 3 });
	b = op1(IR_OP_TRANSPOSE, xb, S(2, 3, 4, 6));
	ir_op_set_ints(G, b->def, "perm", 4, (int64_t[]){ 0, 1, 3, 2 });
	y = op2(IR_OP_MATMUL, a, b, IR_F32, S(2, 3, 5, 6));
	struct ir_value *y2 = op2(IR_OP_MATMUL, a, xb, IR_F32, S(2, 3, 5, 6));
	ir_op_set_int(G, y2->def, "trans_b", 1);
	OUT(y);
	OUT(y2);
	run("matmul of transposes");
	begin();
	a = fin(S(2, 3, 5, 4));
	b = fin(S(6, 4));
	y = op2(IR_OP_MATMUL, a, b, IR_F32, S(2, 3, 5, 6));
	ir_op_set_int(G, y->def, "trans_b", 1);
	OUT(y);
	run("matmul shared b");
}

/* ATTENTION and ATTENTION_BWD: out and lse, then dq, dk, dv from them and a random dout */
static void attention_graph(int64_t B, int64_t Sq, int64_t H, int64_t Hkv, int64_t Dk,
			    int64_t Dv, int causal)
{
	begin();
	struct ir_value *x[6] = { fin(S(B, Sq, H, Dk)), fin(S(B, Sq, Hkv, Dk)), fin(S(B, Sq, Hkv, Dv)) };
	struct ir_op *f = ir_op_new(G, IR_OP_ATTENTION, 3, x, 2);
	f->out[0]->shape = S(B, Sq, H, Dv);
	f->out[1]->shape = S(B, H, Sq);
	ir_op_set_int(G, f, "causal", causal);
	ir_op_set_float(G, f, "scale", 1 / sqrt((double)Dk));
	x[3] = f->out[0];
	x[4] = f->out[1];
	x[5] = fin(S(B, Sq, H, Dv));
	struct ir_op *b = ir_op_new(G, IR_OP_ATTENTION_BWD, 6, x, 3);
	for (int i = 0; i < 3; i++)
		b->out[i]->shape = x[i]->shape;
	ir_op_set_int(G, b, "causal", causal);
	ir_op_set_float(G, b, "scale", 1 / sqrt((double)Dk));
	ir_graph_add_output(G, "out", f->out[0]);
	ir_graph_add_output(G, "lse", f->out[1]);
	ir_graph_add_output(G, "dq", b->out[0]);
	ir_graph_add_output(G, "dk", b->out[1]);
	ir_graph_add_output(G, "dv", b->out[2]);
}

/* Shapes around the kernels' 64-wide tiles (S = 1, 63, 64, 65, 130) and their vector
 * widths (head sizes that are not multiples of 16 or 8), GQA, Dqk != Dv, not causal. */
static void attention_op(void)
{
	static const struct { int64_t B, S, H, Hkv, Dk, Dv; int causal; } cs[] = {
		{ 2, 1, 2, 2, 8, 8, 1 },     { 2, 7, 3, 3, 16, 16, 1 },  { 1, 63, 2, 2, 32, 32, 1 },
		{ 1, 64, 2, 1, 32, 32, 1 },  { 2, 65, 4, 2, 24, 20, 1 }, { 1, 130, 4, 1, 48, 32, 1 },
		{ 1, 100, 2, 2, 40, 24, 0 }, { 1, 70, 3, 1, 5, 3, 0 },
	};
	for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
		attention_graph(cs[i].B, cs[i].S, cs[i].H, cs[i].Hkv, cs[i].Dk, cs[i].Dv,
				cs[i].causal);
		char label[96];
		snprintf(label, sizeof label, "attention S=%lld H=%lld/%lld D=%lld/%lld%s",
			 (long long)cs[i].S, (long long)cs[i].H, (long long)cs[i].Hkv,
			 (long long)cs[i].Dk, (long long)cs[i].Dv, cs[i].causal ? "" : " full");
		run(label);
	}
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

static void attention_ops(void)
{
	for (int causal = 0; causal < 2; causal++) {
		begin();
		struct ir_value *x = fin(S(2, 7, 7)), *dy = fin(S(2, 7, 7));
		struct ir_value *y = op1(IR_OP_SOFTMAX, x, x->shape);
		ir_op_set_int(G, y->def, "causal", causal);
		struct ir_value *dx = op2(IR_OP_SOFTMAX_BWD, y, dy, IR_F32, x->shape);
		ir_op_set_int(G, dx->def, "causal", causal);
		OUT(y);
		OUT(dx);
		run(causal ? "softmax causal + bwd" : "softmax + bwd");
	}
	for (int inv = 0; inv < 2; inv++) {
		begin();
		struct ir_value *x = fin(S(2, 5, 3, 8));
		struct ir_value *y = op1(IR_OP_ROPE, x, x->shape);
		ir_op_set_float(G, y->def, "theta", 10000.0);
		ir_op_set_int(G, y->def, "inverse", inv);
		OUT(y);
		run(inv ? "rope inverse" : "rope");
	}
}

static void embedding_and_loss(void)
{
	begin();
	struct ir_value *tab = fin(S(11, 6)), *idx = in(IR_I32, S(2, 5), G_IDX, 11);
	struct ir_value *y = op2(IR_OP_GATHER_ROWS, tab, idx, IR_F32, S(2, 5, 6));
	struct ir_value *dy = fin(S(2, 5, 6));
	struct ir_value *dt = op2(IR_OP_SCATTER_ROWS, dy, idx, IR_F32, S(11, 6));
	OUT(y);
	OUT(dt);
	run("gather_rows scatter_rows");
	begin();
	struct ir_value *lg = fin(S(9, 13)), *tg = in(IR_I32, S(9), G_TGT, 13);
	struct ir_value *loss = op2(IR_OP_CROSS_ENTROPY, lg, tg, IR_F32, SCALAR);
	struct ir_value *dl = fin(SCALAR);
	struct ir_value *dlg = op3(IR_OP_CROSS_ENTROPY_BWD, lg, tg, dl, IR_F32, lg->shape);
	OUT(loss);
	OUT(dlg);
	run("cross_entropy + bwd");
}

static void routing_ops(void)
{
	enum { N = 7, E = 6, K = 2, D = 5, H = 6 };
	begin();
	struct ir_value *x = fin(S(N, E));
	struct ir_value *top = ir_op1(G, IR_OP_TOPK, 1, &x, IR_I32, S(N, 3));
	ir_op_set_int(G, top->def, "k", 3);
	struct ir_value *tk = op2(IR_OP_TAKE_ALONG, x, top, IR_F32, S(N, 3));
	struct ir_value *pa = op2(IR_OP_PUT_ALONG, tk, top, IR_F32, S(N, E));
	OUT(top);
	OUT(tk);
	OUT(pa);
	run("topk take_along put_along");
	begin();
	struct ir_value *ch = in(IR_I32, S(2, 5, 3), G_ROUTE, E);
	struct ir_value *cnt = ir_op1(G, IR_OP_EXPERT_COUNT, 1, &ch, IR_F32, S(2, E));
	ir_op_set_int(G, cnt->def, "experts", E);
	OUT(cnt);
	run("expert_count");

	/* dispatch, grouped matmuls, combine and their backward helpers */
	begin();
	struct ir_value *xt = fin(S(N, D)), *route = in(IR_I32, S(N, K), G_ROUTE, E);
	struct ir_value *xin[2] = { xt, route };
	struct ir_op *dop = ir_op_new(G, IR_OP_MOE_DISPATCH, 2, xin, 3);
	ir_op_set_int(G, dop, "experts", E);
	dop->out[0]->shape = S(N * K, D);
	dop->out[1]->dtype = IR_I32;
	dop->out[1]->shape = S(E + 1);
	dop->out[2]->dtype = IR_I32;
	dop->out[2]->shape = S(N * K);
	struct ir_value *xs = dop->out[0], *off = dop->out[1], *perm = dop->out[2];
	struct ir_value *w = fin(S(E, D, H)), *wt = fin(S(E, H, D));
	struct ir_value *ys = op3(IR_OP_GROUPED_MATMUL, xs, w, off, IR_F32, S(N * K, H));
	struct ir_value *ys2 = op3(IR_OP_GROUPED_MATMUL, xs, wt, off, IR_F32, S(N * K, H));
	ir_op_set_int(G, ys2->def, "trans_b", 1);
	struct ir_value *dyv = fin(S(N * K, H));
	struct ir_value *dw = op3(IR_OP_GROUPED_MATMUL_WGRAD, xs, dyv, off, IR_F32, S(E, D, H));
	struct ir_value *dw2 = op3(IR_OP_GROUPED_MATMUL_WGRAD, xs, dyv, off, IR_F32, S(E, H, D));
	ir_op_set_int(G, dw2->def, "trans_b", 1);
	struct ir_value *gates = fin(S(N, K));
	struct ir_value *y = op3(IR_OP_MOE_COMBINE, ys, perm, gates, IR_F32, S(N, H));
	struct ir_value *dy = fin(S(N, H));
	struct ir_value *dys = op3(IR_OP_MOE_COMBINE_BWD_DATA, dy, perm, gates, IR_F32, S(N * K, H));
	struct ir_value *dg = op3(IR_OP_MOE_COMBINE_BWD_GATE, dy, ys, perm, IR_F32, S(N, K));
	struct ir_value *dx = op2(IR_OP_MOE_UNDISPATCH, xs, perm, IR_F32, S(N, D));
	ir_op_set_int(G, dx->def, "k", K);
	OUT(xs);
	OUT(off);
	OUT(perm);
	OUT(ys);
	OUT(ys2);
	OUT(dw);
	OUT(dw2);
	OUT(y);
	OUT(dys);
	OUT(dg);
	OUT(dx);
	run("moe dispatch..combine");

	/* grouped matmuls on given offsets with an empty expert */
	begin();
	struct ir_value *xs3 = fin(S(23, 9)), *w3 = fin(S(4, 9, 17)), *off3 = in(IR_I32, S(5), G_OFF, 23);
	struct ir_value *y3 = op3(IR_OP_GROUPED_MATMUL, xs3, w3, off3, IR_F32, S(23, 17));
	struct ir_value *d3 = fin(S(23, 17));
	struct ir_value *g3 = op3(IR_OP_GROUPED_MATMUL_WGRAD, xs3, d3, off3, IR_F32, S(4, 9, 17));
	OUT(y3);
	OUT(g3);
	run("grouped_matmul given offsets");
}

/* Expert parallelism: counts from dispatch offsets, local offsets from received counts,
 * regrouping in both directions on random counts (zeros, a total below the rows: zero
 * padding) and the round trip, and the all-to-alls on a group of one. */
static void ep_ops(void)
{
	static const int64_t pe[][2] = { { 4, 3 }, { 1, 5 }, { 3, 1 }, { 8, 4 } };
	for (int c = 0; c < 4; c++) {
		int64_t P = pe[c][0], El = pe[c][1], E = P * El, C = 37;
		char label[64];
		begin();
		struct ir_value *off = in(IR_I32, S(E + 1), G_OFF, 50);
		struct ir_value *cnt = ir_op1(G, IR_OP_EP_COUNTS, 1, &off, IR_I32, S(P, El));
		ir_op_set_int(G, cnt->def, "ranks", P);
		struct ir_value *rc = in(IR_I32, S(P, El), G_CNT, C);
		struct ir_value *lo = ir_op1(G, IR_OP_EP_OFFSETS, 1, &rc, IR_I32, S(El + 1));
		struct ir_value *lo2 = ir_op1(G, IR_OP_EP_OFFSETS, 1, &cnt, IR_I32, S(El + 1));
		OUT(cnt);
		OUT(lo);
		OUT(lo2);
		snprintf(label, sizeof label, "ep_counts ep_offsets P%lld El%lld", (long long)P,
			 (long long)El);
		run(label);

		begin();
		struct ir_value *x = fin(S(C, 3, 5));
		rc = in(IR_I32, S(P, El), G_CNT, C);
		struct ir_value *y = op2(IR_OP_EP_REGROUP, x, rc, IR_F32, x->shape);
		struct ir_value *yi = op2(IR_OP_EP_REGROUP, x, rc, IR_F32, x->shape);
		ir_op_set_int(G, yi->def, "inverse", 1);
		struct ir_value *back = op2(IR_OP_EP_REGROUP, y, rc, IR_F32, x->shape);
		ir_op_set_int(G, back->def, "inverse", 1);
		OUT(y);
		OUT(yi);
		OUT(back);
		snprintf(label, sizeof label, "ep_regroup P%lld El%lld", (long long)P, (long long)El);
		run(label);
	}
	/* bf16 rows, 2-D */
	begin();
	struct ir_value *x = in(IR_BF16, S(300, 70), G_F, 0);
	struct ir_value *rc = in(IR_I64, S(4, 2), G_CNT, 300);
	struct ir_value *y = op2(IR_OP_EP_REGROUP, x, rc, IR_BF16, x->shape);
	OUT(y);
	run("ep_regroup bf16 i64 counts");

	/* a group of one: all_to_allv copies sum(sc) rows into a larger buffer, all_to_all
	 * its one block; integer rows too */
	begin();
	x = fin(S(20, 6));
	struct ir_value *sc = in(IR_I32, S(1, 3), G_CNT, 20);
	struct ir_value *a2a = op3(IR_OP_ALL_TO_ALLV, x, sc, sc, IR_F32, S(31, 6));
	ir_op_set_str(G, a2a->def, "group", "ep");
	struct ir_value *ids = in(IR_I32, S(20), G_IDX, 1000);
	struct ir_value *a2ai = op3(IR_OP_ALL_TO_ALLV, ids, sc, sc, IR_I32, S(25));
	ir_op_set_str(G, a2ai->def, "group", "ep");
	struct ir_value *xb = fin(S(1, 4, 5));
	struct ir_value *blk = op1(IR_OP_ALL_TO_ALL, xb, xb->shape);
	ir_op_set_str(G, blk->def, "group", "ep");
	OUT(a2a);
	OUT(a2ai);
	OUT(blk);
	run("all_to_allv all_to_all P1");
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

/* bf16 and f16 values: rounded after every op, fused or not, GEMM outputs included */
static void low_precision(void)
{
	static const enum ir_dtype ts[] = { IR_BF16, IR_F16 };
	for (int i = 0; i < 2; i++) {
		enum ir_dtype t = ts[i];
		begin();
		struct ir_value *x = fin(S(6, 40)), *w = in(t, S(40, 24), G_F, 0);
		struct ir_value *xc = ir_op1(G, IR_OP_CAST, 1, &x, t, x->shape);
		struct ir_value *e = op1(IR_OP_SILU, xc, xc->shape);
		struct ir_value *y = op2(IR_OP_MATMUL, e, w, t, S(6, 24));
		struct ir_value *sm = op1(IR_OP_SOFTMAX, y, y->shape);
		struct ir_value *out = ir_op1(G, IR_OP_CAST, 1, &sm, IR_F32, sm->shape);
		struct ir_value *ysum = op1(IR_OP_REDUCE_SUM, y, S(6));
		ir_op_set_int(G, ysum->def, "axis", -1);
		OUT(out);
		OUT(ysum);
		run(t == IR_BF16 ? "bf16 chain" : "f16 chain");
	}
}

int main(void)
{
	srand(12345);
	low_precision();
	unary_ops();
	binary_ops();
	fused_chains();
	reductions();
	shape_ops();
	matmuls();
	attention_ops();
	attention_op();
	attention_determinism();
	embedding_and_loss();
	routing_ops();
	ep_ops();
	ep_regroup_round_trip();
	/* FP8 and communication ops are refused with a message, not run wrongly */
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
	struct cg_exec *e = cg_backend_llvm.compile(G, err);
	fclose(err);
	CHECK(!e);
	CHECKF(strstr(msg, "cannot run op quant_fp8"), "message: %s", msg);
	free(msg);
	ir_graph_free(G);
	begin();
	x = fin(S(6, 4));
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
