/* test_fusion.c - golden kernel IR: what the lowering makes of rmsnorm followed by
 * SiLU (square, mean, rsqrt, two broadcasting multiplies, silu).  The chain must come
 * out as two kernels: the mean of squares fused with its rsqrt, and every elementwise
 * op with its broadcasts in one loop nest.  A change in what the compiler emits shows
 * here in review; update the text only when the change is meant. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/llvm/llvm_impl.h"

static const char golden[] =
	"kernel k0_rsqrt(in f32, out f32)\n"
	"  buf 0: b0 f32\n"
	"  buf 1: b1 f32\n"
	"  parallel p in 0..32 {\n"
	"    for j in 0..1 {\n"
	"      b1[((p % 8) + (((p / 8) % 4) * 8))] = (1f / sqrt((sum(r in 0..64: (b0[((r + ((p % 8) * 64)) + (((p / 8) % 4) * 512))] * b0[((r + ((p % 8) * 64)) + (((p / 8) % 4) * 512))])) / 64f)))\n"
	"    }\n"
	"  }\n"
	"kernel k1_silu(in f32, in f32, in f32, out f32)\n"
	"  buf 0: b0 f32\n"
	"  buf 1: b1 f32\n"
	"  buf 2: b2 f32\n"
	"  buf 3: b3 f32\n"
	"  parallel p in 0..32 {\n"
	"    for j in 0..64 {\n"
	"      b3[((j + ((p % 8) * 64)) + (((p / 8) % 4) * 512))] = (((b0[((j + ((p % 8) * 64)) + (((p / 8) % 4) * 512))] * b1[((p % 8) + (((p / 8) % 4) * 8))]) * b2[j]) * (1f / (1f + exp(neg(((b0[((j + ((p % 8) * 64)) + (((p / 8) % 4) * 512))] * b1[((p % 8) + (((p / 8) % 4) * 8))]) * b2[j]))))))\n"
	"    }\n"
	"  }\n";

#define SHAPE(...) ir_shape_make((int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
				 (int64_t[]){ __VA_ARGS__ })

int main(void)
{
	struct ir_graph *g = ir_graph_new("g");
	struct ir_value *x = ir_op1(g, IR_OP_INPUT, 0, NULL, IR_F32, SHAPE(4, 8, 64));
	ir_op_set_str(g, x->def, "name", "x");
	struct ir_value *w = ir_op1(g, IR_OP_PARAM, 0, NULL, IR_F32, SHAPE(64));
	struct ir_value *sq = ir_op1(g, IR_OP_SQUARE, 1, &x, IR_F32, x->shape);
	struct ir_value *ms = ir_op1(g, IR_OP_REDUCE_MEAN, 1, &sq, IR_F32, SHAPE(4, 8, 1));
	ir_op_set_int(g, ms->def, "axis", -1);
	ir_op_set_int(g, ms->def, "keepdim", 1);
	struct ir_value *r = ir_op1(g, IR_OP_RSQRT, 1, &ms, IR_F32, ms->shape);
	struct ir_value *a[2] = { x, r };
	struct ir_value *xn = ir_op1(g, IR_OP_MUL, 2, a, IR_F32, x->shape);
	struct ir_value *b[2] = { xn, w };
	struct ir_value *y = ir_op1(g, IR_OP_MUL, 2, b, IR_F32, x->shape);
	struct ir_value *s = ir_op1(g, IR_OP_SILU, 1, &y, IR_F32, x->shape);
	ir_graph_add_output(g, "y", s);

	struct cg_plan p;
	REQUIRE(cg_plan_graph(&p, g, &cg_target_llvm, "k", stderr) == 0);
	CHECK(p.n_ks == 2 && p.n_steps == 2);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	for (int i = 0; i < p.n_ks; i++)
		kir_print(p.ks[i], f);
	fclose(f);
	CHECKF(!strcmp(text, golden), "kernel IR differs from the golden text; got:\n%s", text);
	free(text);
	cg_plan_free(&p);
	ir_graph_free(g);
	return CHECK_DONE();
}
