/* test_cuda_golden.c - golden CUDA C: what the lowering (planned for the GPU target) and
 * the CUDA renderer make of a few graphs, compared with tests/cuda/golden/NAME.cu:
 *   silu_mul   silu(x @ w) * y: the matmul listed as a library step, one kernel
 *   rmsnorm    x * rsqrt(mean(x^2)) * w, then silu: a block reduction, a spread row
 *   softmax    over the last axis: block max and sum
 *   xent       cross entropy: the row log-sum-exp, the mean over rows in double
 *   bf16       silu of a bf16 input into a bf16 output: loads widen, stores round
 *   fp8        x W in FP8: x and W quantised into bytes (1x128 tiles, 128x128
 *              blocks; a block of threads per tile), W and the scales relaid for
 *              cuBLASLt's block-scaled GEMM
 *   stage      by hand: a row staged in a shared array, a barrier, a block sum
 * And how the GPU target runs the scaled products of tiny_moe's fp8 step
 * (cg_fp8_gemm_form): some of each of the linear layers' three FP8 GEMMs, the grouped
 * forward on tensor cores, and the rest (K of 64, the grouped weight gradient)
 * dequantised, each step with the scratch buffers its form needs.
 * A change in what the compiler emits shows here in review.  When it is meant, rewrite
 * the files with SLUICE_REGEN_GOLDEN=1 (from the source root:
 * SLUICE_REGEN_GOLDEN=1 build/tests/cuda/test_cuda_golden) and review the diff;
 * test_cuda_nvrtc then compiles every file in tests/cuda/golden/. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/cuda/cuda_impl.h"
#include "frontend/frontend.h"
#include "ir/golden.h"
#include "passes/passes.h"

#define SHAPE(...) ir_shape_make((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
				 (int64_t[]){ __VA_ARGS__ })

static struct ir_value *input(struct ir_graph *g, const char *name, enum ir_dtype t,
			      struct ir_shape s)
{
	struct ir_value *v = ir_op1(g, IR_OP_INPUT, 0, NULL, t, s);
	ir_op_set_str(g, v->def, "name", name);
	return v;
}

static struct ir_value *op2(struct ir_graph *g, enum ir_opkind k, struct ir_value *a,
			    struct ir_value *b, struct ir_shape s)
{
	struct ir_value *in[2] = { a, b };
	return ir_op1(g, k, 2, in, a->dtype, s);
}

static struct ir_graph *silu_mul(void)
{
	struct ir_graph *g = ir_graph_new("silu_mul");
	struct ir_value *x = input(g, "x", IR_F32, SHAPE(4, 64));
	struct ir_value *w = ir_op1(g, IR_OP_PARAM, 0, NULL, IR_F32, SHAPE(64, 128));
	struct ir_value *y = input(g, "y", IR_F32, SHAPE(4, 128));
	struct ir_value *a = op2(g, IR_OP_MATMUL, x, w, SHAPE(4, 128));
	struct ir_value *s = ir_op1(g, IR_OP_SILU, 1, &a, IR_F32, a->shape);
	ir_graph_add_output(g, "out", op2(g, IR_OP_MUL, s, y, a->shape));
	return g;
}

static struct ir_graph *rmsnorm(void)
{
	struct ir_graph *g = ir_graph_new("rmsnorm");
	struct ir_value *x = input(g, "x", IR_F32, SHAPE(4, 8, 64));
	struct ir_value *w = ir_op1(g, IR_OP_PARAM, 0, NULL, IR_F32, SHAPE(64));
	struct ir_value *sq = ir_op1(g, IR_OP_SQUARE, 1, &x, IR_F32, x->shape);
	struct ir_value *ms = ir_op1(g, IR_OP_REDUCE_MEAN, 1, &sq, IR_F32, SHAPE(4, 8, 1));
	ir_op_set_int(g, ms->def, "axis", -1);
	ir_op_set_int(g, ms->def, "keepdim", 1);
	struct ir_value *r = ir_op1(g, IR_OP_RSQRT, 1, &ms, IR_F32, ms->shape);
	struct ir_value *y = op2(g, IR_OP_MUL, op2(g, IR_OP_MUL, x, r, x->shape), w, x->shape);
	ir_graph_add_output(g, "y", ir_op1(g, IR_OP_SILU, 1, &y, IR_F32, x->shape));
	return g;
}

static struct ir_graph *softmax(void)
{
	struct ir_graph *g = ir_graph_new("softmax");
	struct ir_value *x = input(g, "x", IR_F32, SHAPE(8, 100));
	ir_graph_add_output(g, "y", ir_op1(g, IR_OP_SOFTMAX, 1, &x, IR_F32, x->shape));
	return g;
}

static struct ir_graph *xent(void)
{
	struct ir_graph *g = ir_graph_new("xent");
	struct ir_value *x = input(g, "logits", IR_F32, SHAPE(8, 50));
	struct ir_value *t = input(g, "targets", IR_I32, SHAPE(8));
	struct ir_value *in[2] = { x, t };
	ir_graph_add_output(g, "loss", ir_op1(g, IR_OP_CROSS_ENTROPY, 2, in, IR_F32, ir_shape_of(0)));
	return g;
}

static struct ir_graph *bf16(void)
{
	struct ir_graph *g = ir_graph_new("bf16");
	struct ir_value *x = input(g, "x", IR_BF16, SHAPE(16, 48));
	ir_graph_add_output(g, "y", ir_op1(g, IR_OP_SILU, 1, &x, IR_BF16, x->shape));
	return g;
}

static struct ir_value *quant(struct ir_graph *g, struct ir_value *x, int64_t tr, int64_t tc,
			      struct ir_value **scale)
{
	struct ir_op *q = ir_op_new(g, IR_OP_QUANT_FP8, 1, &x, 2);
	ir_op_set_int(g, q, "tile_r", tr);
	ir_op_set_int(g, q, "tile_c", tc);
	q->out[0]->dtype = IR_F8E4M3;
	q->out[0]->shape = x->shape;
	q->out[1]->shape = SHAPE(x->shape.dim[0] / tr, x->shape.dim[1] / tc);
	*scale = q->out[1];
	return q->out[0];
}

static struct ir_graph *fp8(void)
{
	struct ir_graph *g = ir_graph_new("fp8");
	struct ir_value *x = input(g, "x", IR_BF16, SHAPE(64, 256));
	struct ir_value *w = ir_op1(g, IR_OP_PARAM, 0, NULL, IR_F32, SHAPE(256, 128));
	struct ir_value *in[4];
	in[0] = quant(g, x, 1, 128, &in[2]);
	in[1] = quant(g, w, 128, 128, &in[3]);
	struct ir_value *y = ir_op1(g, IR_OP_SCALED_MATMUL, 4, in, IR_BF16, SHAPE(64, 128));
	ir_op_set_ints(g, y->def, "a_tile", 2, (int64_t[]){ 1, 128 });
	ir_op_set_ints(g, y->def, "b_tile", 2, (int64_t[]){ 128, 128 });
	ir_graph_add_output(g, "y", y);
	return g;
}

/* a block kernel by hand: y[p, j] = x[p, C-1-j] - mean(x[p, :]), stored as bf16 */
static struct kir_kernel *stage(void)
{
	enum { C = 200 };
	struct kir_kernel *k = kir_kernel_new("stage", 12);
	kir_kernel_block(k, 64);
	int x = kir_buf(k, "x", KIR_F32), y = kir_buf(k, "y", KIR_BF16);
	int sh = kir_shared(k, "row", KIR_F32, C);
	int j = kir_index(k, "j");
	struct kir_expr *row = kir_bin(k, KIR_MUL, kir_var(k, 0), kir_i64(k, C));
	struct kir_block *b = kir_loop_spread(k, &k->body, j, kir_i64(k, 0), kir_i64(k, C));
	kir_store_shared(k, b, sh, kir_var(k, j), kir_load(k, x, kir_bin(k, KIR_ADD, row, kir_var(k, j))));
	kir_barrier(k, &k->body);
	int mean = kir_local(k, "mean", KIR_F32);
	kir_set(k, &k->body, mean,
		kir_bin(k, KIR_DIV, kir_reduce_spread(k, KIR_RED_SUM, j, kir_i64(k, 0), kir_i64(k, C),
						      kir_load_shared(k, sh, kir_var(k, j))),
			kir_f32(k, C)));
	b = kir_loop_spread(k, &k->body, j, kir_i64(k, 0), kir_i64(k, C));
	struct kir_expr *rev = kir_load_shared(k, sh, kir_bin(k, KIR_SUB, kir_i64(k, C - 1), kir_var(k, j)));
	kir_store(k, b, y, kir_bin(k, KIR_ADD, row, kir_var(k, j)), kir_bin(k, KIR_SUB, rev, kir_var(k, mean)));
	return k;
}

static char *render_graph(struct ir_graph *g, int *n_ks, int *n_block)
{
	struct cg_plan p;
	char *text = NULL;
	size_t len = 0;
	REQUIRE(cg_plan_graph(&p, g, &cg_target_cuda, "k", stderr) == 0);
	FILE *f = open_memstream(&text, &len);
	REQUIRE(f);
	cg_cuda_render_plan(&p, f);
	fclose(f);
	*n_ks = p.n_ks;
	*n_block = 0;
	for (int i = 0; i < p.n_ks; i++)
		*n_block += p.ks[i]->launch.map == KIR_MAP_BLOCK;
	cg_plan_free(&p);
	ir_graph_free(g);
	return text;
}

static void golden(const char *name, const char *text)
{
	char path[256];
	snprintf(path, sizeof path, "tests/cuda/golden/%s.cu", name);
	CHECKF(golden_compare(path, text), "%s: the CUDA C differs from %s", name, path);
}

static void fp8_forms(void)
{
	struct sl_override over = { "precision", "fp8" };
	struct ir_graph *g = sl_compile_file("models/tiny_moe.sl", 1, &over, stderr);
	REQUIRE(g);
	REQUIRE(pass_pipeline_run(g, "fp8", stderr) == 0);
	struct cg_plan p;
	REQUIRE(cg_plan_graph(&p, g, &cg_target_cuda, "k", stderr) == 0);
	int n[CG_FP8_GROUPED_WGRAD + 1] = { 0 }, wgrad_grouped = 0, bad = 0, quants = 0, fused = 0;
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == IR_OP_QUANT_FP8) {
			quants++;
			fused += p.inlined[g->ops[i]->in[0]->id];
		}
	/* the quantisations of SwiGLU's product and of the experts' hidden rows compute
	 * their producer in place (lower.c's fuses_into_quant) */
	printf("tiny_moe fp8: %d of %d quantisations fused with their producer\n", fused, quants);
	CHECK(fused > 0);
	for (int i = 0; i < p.n_steps; i++) {
		const struct cg_step *st = &p.steps[i];
		const struct ir_op *op = st->op;
		if (st->kind == CG_STEP_KERNEL || (op->kind != IR_OP_SCALED_MATMUL &&
						    op->kind != IR_OP_SCALED_GROUPED_MATMUL &&
						    op->kind != IR_OP_SCALED_GROUPED_MATMUL_WGRAD))
			continue;
		enum cg_fp8_form f = cg_fp8_gemm_form(&p, op);
		n[f]++;
		wgrad_grouped += op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD && f == CG_FP8_DEQUANT;
		CHECKF(op->kind != IR_OP_SCALED_GROUPED_MATMUL_WGRAD || f == CG_FP8_GROUPED_WGRAD ||
		       f == CG_FP8_DEQUANT, "op %d: a grouped weight gradient in form %d", op->id, f);
		/* the scratch buffers of each form (lower.c's emit_scaled) */
		int want = f == CG_FP8_FWD ? 3 : f == CG_FP8_DGRAD || f == CG_FP8_WGRAD ||
			   f == CG_FP8_GROUPED || f == CG_FP8_GROUPED_WGRAD ? 2 : p.buf_type[op->out[0]->id] == KIR_F32 ? 2 : 3;
		bad += st->n_bufs != op->n_in + op->n_out + want;
	}
	printf("tiny_moe fp8 on the GPU target: %d forward, %d input-gradient, %d weight-gradient "
	       "FP8 GEMMs, %d grouped and %d grouped weight gradients on tensor cores, %d "
	       "dequantised (%d of them grouped weight gradients)\n", n[CG_FP8_FWD],
	       n[CG_FP8_DGRAD], n[CG_FP8_WGRAD], n[CG_FP8_GROUPED], n[CG_FP8_GROUPED_WGRAD],
	       n[CG_FP8_DEQUANT], wgrad_grouped);
	CHECK(n[CG_FP8_FWD] > 0 && n[CG_FP8_DGRAD] > 0 && n[CG_FP8_WGRAD] > 0);
	/* every expert weight gradient of tiny_moe (widths 64..256, multiples of 8) takes
	 * the tensor cores */
	CHECK(n[CG_FP8_GROUPED] > 0 && n[CG_FP8_GROUPED_WGRAD] > 0 && wgrad_grouped == 0);
	CHECKF(bad == 0, "%d scaled steps with other scratch buffers than their form's", bad);
	cg_plan_free(&p);
	ir_graph_free(g);
}

int main(void)
{
	fp8_forms();
	struct { const char *name; struct ir_graph *(*make)(void); int ks, blocks; } cases[] = {
		{ "silu_mul", silu_mul, 1, 1 },
		{ "rmsnorm", rmsnorm, 2, 2 },
		{ "softmax", softmax, 1, 1 },
		{ "xent", xent, 2, 2 },
		{ "bf16", bf16, 1, 1 },
		{ "fp8", fp8, 5, 2 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int n, nb;
		char *text = render_graph(cases[i].make(), &n, &nb);
		CHECKF(n == cases[i].ks && nb == cases[i].blocks, "%s: %d kernels (%d block), want %d (%d)",
		       cases[i].name, n, nb, cases[i].ks, cases[i].blocks);
		golden(cases[i].name, text);
		free(text);
	}
	/* a library step is listed, not generated */
	int n, nb;
	char *text = render_graph(silu_mul(), &n, &nb);
	CHECK(strstr(text, ir_op_name(IR_OP_MATMUL)) && strstr(text, "cuBLASLt"));
	free(text);

	struct kir_kernel *k = stage();
	text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	cg_cuda_render(&k, 1, f);
	fclose(f);
	golden("stage", text);
	unsigned grid[3], block[3];
	cg_cuda_launch(k, grid, block);
	CHECK(grid[0] == 12 && block[0] == 64);
	free(text);
	kir_kernel_free(k);
	return CHECK_DONE();
}
