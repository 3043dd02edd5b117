/* test_account.c - pass_account on hand-built graphs whose counts are worked out in
 * the comments beside each check. */
#include <math.h>
#include <string.h>

#include "build.h"
#include "check.h"
#include "passes/passes.h"

static struct ir_shape sh1(int64_t a) { return ir_shape_of(1, a); }
static struct ir_shape sh2(int64_t a, int64_t b) { return ir_shape_of(2, a, b); }
static struct ir_shape sh3(int64_t a, int64_t b, int64_t c) { return ir_shape_of(3, a, b, c); }

static const struct pass_layer_stats *layer(const struct pass_account *a, const char *key)
{
	for (int i = 0; i < a->n_layers; i++)
		if (!strcmp(a->layers[i].scope, key))
			return &a->layers[i];
	fprintf(stderr, "no layer '%s' in the table\n", key);
	return NULL;
}

/* A dense model: embed [10,8], one MLP 8 -> 16 -> 8 with a residual, head [8,10],
 * 2 x 4 tokens. */
static struct ir_graph *dense_graph(void)
{
	struct ir_graph *g = ir_graph_new("dense");
	in_scope(g, "");
	struct ir_value *tok = b_input(g, "tokens", IR_I32, sh2(2, 4));
	struct ir_value *tgt = b_input(g, "targets", IR_I32, sh2(2, 4));
	in_scope(g, "embed");
	struct ir_value *emb = b_param(g, "embed.weight", sh2(10, 8), 1);
	struct ir_value *x = b_gather(g, emb, tok);
	in_scope(g, "layers.0.mlp");
	struct ir_value *w1 = b_param(g, "layers.0.mlp.w1", sh2(8, 16), 1);
	struct ir_value *w2 = b_param(g, "layers.0.mlp.w2", sh2(16, 8), 1);
	struct ir_value *h = b_matmul(g, x, w1);
	struct ir_value *a = b_un(g, IR_OP_SILU, h);
	struct ir_value *y = b_matmul(g, a, w2);
	in_scope(g, "layers.0");
	struct ir_value *x2 = b_bin(g, IR_OP_ADD, x, y);
	in_scope(g, "head");
	struct ir_value *wh = b_param(g, "head.weight", sh2(8, 10), 1);
	struct ir_value *logits = b_reshape(g, b_matmul(g, x2, wh), sh2(8, 10));
	struct ir_value *t = b_reshape(g, tgt, sh1(8));
	in_scope(g, "");
	ir_graph_add_output(g, "loss", b_xent(g, logits, t));
	return g;
}

static void test_dense(void)
{
	struct ir_graph *g = dense_graph();
	REQUIRE(ir_verify(g, stderr) == 0);
	struct pass_account a;
	REQUIRE(pass_account(g, &a) == 0);
	/* 80 + 128 + 128 + 80 */
	CHECKF(a.params_total == 416, "%lld", (long long)a.params_total);
	CHECK(a.params_mtp == 0);
	/* a token reads one row (8) of the embedding and all of the rest */
	CHECKF(a.params_active == 8 + 128 + 128 + 80, "%lld", (long long)a.params_active);
	/* three products, each 3 x 2MNK over 8 tokens: 6 x (128 + 128 + 80) per token */
	CHECKF(fabs(a.flops_per_token - 2016.0) < 1e-9, "%g", a.flops_per_token);
	/* saved: tokens (32 B, for the gather), x (256, w1's grad), h (512, silu),
	 * a (512, w2's grad), x2 (256, head's grad), logits (320) and targets (32) for the
	 * cross entropy */
	CHECKF(a.activation_bytes == 32 + 256 + 512 + 512 + 256 + 320 + 32, "%lld",
	       (long long)a.activation_bytes);

	const struct pass_layer_stats *l;
	REQUIRE((l = layer(&a, "embed")));
	CHECK(l->params == 80 && l->params_active == 8 && l->flops_per_token == 0);
	CHECK(l->activation_bytes == 256);
	REQUIRE((l = layer(&a, "layers.0")));
	CHECK(l->params == 256 && l->params_active == 256);
	CHECKF(fabs(l->flops_per_token - 1536.0) < 1e-9, "%g", l->flops_per_token);
	CHECK(l->activation_bytes == 512 + 512 + 256);
	REQUIRE((l = layer(&a, "head")));
	CHECK(l->params == 80 && l->params_active == 80);
	CHECK(fabs(l->flops_per_token - 480.0) < 1e-9);
	CHECK(l->activation_bytes == 320 + 32);
	REQUIRE((l = layer(&a, "top")));
	CHECK(l->activation_bytes == 32);
	/* the table adds up */
	int64_t p = 0, act = 0;
	double f = 0;
	for (int i = 0; i < a.n_layers; i++) {
		p += a.layers[i].params;
		act += a.layers[i].activation_bytes;
		f += a.layers[i].flops_per_token;
	}
	CHECK(p == a.params_total && act == a.activation_bytes);
	CHECK(fabs(f - a.flops_per_token) < 1e-9);
	pass_account_free(&a);
	ir_graph_free(g);
}

/* The same dense model after a hand-written backward: the activation rule becomes
 * "forward values a backward op reads". */
static void test_after_backward(void)
{
	struct ir_graph *g = dense_graph();
	struct ir_value *x = NULL, *h = NULL;
	for (int i = 0; i < g->n_ops; i++) {
		if (g->ops[i]->kind == IR_OP_GATHER_ROWS)
			x = g->ops[i]->out[0];
		if (g->ops[i]->kind == IR_OP_MATMUL && !h)
			h = g->ops[i]->out[0];
	}
	REQUIRE(x && h);
	in_scope(g, "layers.0.mlp");
	struct ir_value *d = b_un(g, IR_OP_NEG, h);  /* reads h: 512 B */
	d->def->phase = IR_PHASE_BWD_B;
	struct ir_value *d2 = b_bin(g, IR_OP_MUL, x, x); /* reads x: 256 B */
	d2->def->phase = IR_PHASE_BWD_W;
	struct pass_account a;
	REQUIRE(pass_account(g, &a) == 0);
	CHECKF(a.activation_bytes == 512 + 256, "%lld", (long long)a.activation_bytes);
	/* FLOPs and parameters count the forward only */
	CHECK(a.params_total == 416);
	CHECK(fabs(a.flops_per_token - 2016.0) < 1e-9);
	pass_account_free(&a);
	ir_graph_free(g);
}

/* A MoE layer with 4 experts, top-2, a shared expert, a routing bias that is not
 * trained, and an MTP module that shares the head.  4 tokens, width 8, expert width 6. */
static void test_moe(void)
{
	struct ir_graph *g = ir_graph_new("moe");
	in_scope(g, "");
	struct ir_value *tok = b_input(g, "tokens", IR_I32, sh2(1, 4));
	struct ir_value *tgt = b_input(g, "targets", IR_I32, sh1(4));
	in_scope(g, "embed");
	struct ir_value *emb = b_param(g, "embed.weight", sh2(5, 8), 1);
	struct ir_value *xf = b_reshape(g, b_gather(g, emb, tok), sh2(4, 8));

	in_scope(g, "layers.0.moe");
	struct ir_value *gate = b_param(g, "layers.0.moe.gate", sh2(8, 4), 1);
	struct ir_value *bias = b_param(g, "layers.0.moe.bias", sh1(4), 0);
	struct ir_value *s = b_un(g, IR_OP_SIGMOID, b_matmul(g, xf, gate));
	struct ir_value *sb = b_bin(g, IR_OP_ADD, s, bias);
	struct ir_value *idx = ir_op1(g, IR_OP_TOPK, 1, &sb, IR_I32, sh2(4, 2));
	ir_op_set_int(g, idx->def, "k", 2);
	struct ir_value *ta[2] = { s, idx };
	struct ir_value *gates = ir_op1(g, IR_OP_TAKE_ALONG, 2, ta, IR_F32, sh2(4, 2));
	struct ir_value *din[2] = { xf, idx };
	struct ir_op *disp = ir_op_new(g, IR_OP_MOE_DISPATCH, 2, din, 3);
	ir_op_set_int(g, disp, "experts", 4);
	disp->out[0]->shape = sh2(8, 8);
	disp->out[1]->dtype = IR_I32;
	disp->out[1]->shape = sh1(5);
	disp->out[2]->dtype = IR_I32;
	disp->out[2]->shape = sh1(8);
	struct ir_value *xs = disp->out[0], *off = disp->out[1], *perm = disp->out[2];
	in_scope(g, "layers.0.moe.experts");
	struct ir_value *w1 = b_param(g, "layers.0.moe.experts.w1", sh3(4, 8, 6), 1);
	struct ir_value *w2 = b_param(g, "layers.0.moe.experts.w2", sh3(4, 6, 8), 1);
	struct ir_value *g1[3] = { xs, w1, off };
	struct ir_value *hh = ir_op1(g, IR_OP_GROUPED_MATMUL, 3, g1, IR_F32, sh2(8, 6));
	struct ir_value *aa = b_un(g, IR_OP_SILU, hh);
	struct ir_value *g2[3] = { aa, w2, off };
	struct ir_value *ys = ir_op1(g, IR_OP_GROUPED_MATMUL, 3, g2, IR_F32, sh2(8, 8));
	in_scope(g, "layers.0.moe");
	struct ir_value *cin[3] = { ys, perm, gates };
	struct ir_value *y = ir_op1(g, IR_OP_MOE_COMBINE, 3, cin, IR_F32, sh2(4, 8));
	in_scope(g, "layers.0.moe.shared");
	struct ir_value *ws1 = b_param(g, "layers.0.moe.shared.w1", sh2(8, 6), 1);
	struct ir_value *ws2 = b_param(g, "layers.0.moe.shared.w2", sh2(6, 8), 1);
	struct ir_value *sh = b_matmul(g, b_un(g, IR_OP_SILU, b_matmul(g, xf, ws1)), ws2);
	in_scope(g, "layers.0");
	struct ir_value *o = b_bin(g, IR_OP_ADD, y, sh);

	in_scope(g, "head");
	struct ir_value *wh = b_param(g, "head.weight", sh2(8, 5), 1);
	struct ir_value *loss = b_xent(g, b_matmul(g, o, wh), tgt);
	in_scope(g, "mtp");
	struct ir_value *mp = b_param(g, "mtp.proj", sh2(8, 8), 1);
	struct ir_value *mloss = b_xent(g, b_matmul(g, b_matmul(g, o, mp), wh), tgt);
	in_scope(g, "");
	ir_graph_add_output(g, "loss", b_bin(g, IR_OP_ADD, loss, mloss));
	REQUIRE(ir_verify(g, stderr) == 0);

	struct pass_account a;
	REQUIRE(pass_account(g, &a) == 0);
	/* embed 40, gate 32, experts 192 + 192, shared 48 + 48, head 40; not the bias */
	CHECKF(a.params_total == 592, "%lld", (long long)a.params_total);
	/* the MTP projection; the head it shares is the main model's */
	CHECKF(a.params_mtp == 64, "%lld", (long long)a.params_mtp);
	/* one embedding row 8, gate 32, experts 2/4 of 384, shared 96, head 40 */
	CHECKF(a.params_active == 8 + 32 + 192 + 96 + 40, "%lld", (long long)a.params_active);
	/* per product, 3 x 2MNK: gate 768, experts 2 x 2304 (8 rows = 4 tokens x 2),
	 * shared 2 x 1152, head 960, mtp 1536 + 960; over 4 tokens */
	double flops = (768.0 + 2 * 2304 + 2 * 1152 + 960 + 1536 + 960) / 4;
	CHECKF(fabs(a.flops_per_token - flops) < 1e-9, "%g vs %g", a.flops_per_token, flops);
	/* saved: tokens 16, xf 128, sigmoid's output 64, topk indices 32 (take_along),
	 * gates 32 and ys 256 (combine), perm 32 (dispatch), offsets 20 and xs 256 (first
	 * grouped matmul), h 192 (silu), a 192 (second grouped matmul), shared hidden 96
	 * (silu) and 96 (w2), o 128 (head), logits 80, targets 16, mtp hidden 128, mtp
	 * logits 80 */
	int64_t act = 16 + 128 + 64 + 32 + 32 + 256 + 32 + 20 + 256 + 192 + 192 + 96 + 96 +
		      128 + 80 + 16 + 128 + 80;
	CHECKF(a.activation_bytes == act, "%lld vs %lld", (long long)a.activation_bytes,
	       (long long)act);
	const struct pass_layer_stats *l;
	REQUIRE((l = layer(&a, "layers.0")));
	CHECKF(l->params == 512 && l->params_active == 32 + 192 + 96, "%lld %lld",
	       (long long)l->params, (long long)l->params_active);
	REQUIRE((l = layer(&a, "mtp")));
	CHECK(l->params == 64);
	CHECKF(fabs(l->flops_per_token - 624.0) < 1e-9, "%g", l->flops_per_token);
	pass_account_free(&a);
	ir_graph_free(g);
}

/* Expert weights whose offsets come from elsewhere than a dispatch: k from the op's
 * top_k attribute, else from a TOPK of the same scope. */
static void test_grouped_k_fallbacks(void)
{
	for (int pass = 0; pass < 2; pass++) {
		struct ir_graph *g = ir_graph_new("g");
		in_scope(g, "layers.1.moe");
		struct ir_value *xs = b_input(g, "xs", IR_F32, sh2(12, 8));
		struct ir_value *off = b_input(g, "off", IR_I32, sh1(9));
		struct ir_value *w = b_param(g, "layers.1.moe.w", sh3(8, 8, 4), 1);
		if (pass == 1) {
			struct ir_value *sc = b_input(g, "scores", IR_F32, sh2(4, 8));
			struct ir_value *t = ir_op1(g, IR_OP_TOPK, 1, &sc, IR_I32, sh2(4, 3));
			ir_op_set_int(g, t->def, "k", 3);
		}
		struct ir_value *in[3] = { xs, w, off };
		struct ir_value *y = ir_op1(g, IR_OP_GROUPED_MATMUL, 3, in, IR_F32, sh2(12, 4));
		if (pass == 0)
			ir_op_set_int(g, y->def, "top_k", 2);
		ir_graph_add_output(g, "loss", y);
		struct pass_account a;
		REQUIRE(pass_account(g, &a) == 0);
		/* 256 weights, k/8 of them */
		CHECKF(a.params_active == (pass == 0 ? 64 : 96), "%lld",
		       (long long)a.params_active);
		pass_account_free(&a);
		ir_graph_free(g);
	}
}

/* A product of two inputs has no backward; one of an input and a weight has one
 * (the weight's gradient) and saves only the input. */
static void test_backward_multiplier(void)
{
	struct ir_graph *g = ir_graph_new("mm");
	in_scope(g, "");
	struct ir_value *x = b_input(g, "x", IR_F32, sh2(4, 8));
	struct ir_value *z = b_input(g, "z", IR_F32, sh2(8, 8));
	struct ir_value *w = b_param(g, "layers.0.w", sh2(8, 2), 1);
	struct ir_value *xz = b_matmul(g, x, z);      /* 2*4*8*8 = 512, no backward */
	struct ir_value *y = b_matmul(g, xz, w);      /* 2*4*2*8 = 128, x 2 */
	struct ir_value *r = ir_op1(g, IR_OP_REDUCE_SUM, 1, &y, IR_F32, sh1(2));
	ir_op_set_int(g, r->def, "axis", 0);
	ir_graph_add_output(g, "loss", r);
	struct pass_account a;
	REQUIRE(pass_account(g, &a) == 0);
	/* no "tokens" input, no lookup: the first integer input is absent, so 1 token */
	CHECKF(fabs(a.flops_per_token - (512.0 + 256.0)) < 1e-9, "%g", a.flops_per_token);
	CHECKF(a.activation_bytes == 4 * 8 * 4, "%lld", (long long)a.activation_bytes);
	CHECK(a.params_total == 16 && a.params_active == 16);
	pass_account_free(&a);
	ir_graph_free(g);
}

/* Counts that pass 2^63 are refused, not wrapped. */
static void test_overflow(void)
{
	struct ir_graph *g = ir_graph_new("big");
	int64_t half = (int64_t)1 << 62;
	struct ir_value *a = b_param(g, "a", sh1(half), 1);
	struct ir_value *b = b_param(g, "b", sh1(half), 1);
	ir_graph_add_output(g, "loss", b_bin(g, IR_OP_ADD, a, b));
	struct pass_account acc;
	CHECK(pass_account(g, &acc) != 0);
	CHECK(acc.layers == NULL && acc.params_total == 0);
	ir_graph_free(g);
}

/* The per-op table of what a backward reads, against what autodiff's backward does
 * read, op by op, including ops the models do not use. */
static void test_rule_matches_autodiff(void)
{
	static const enum ir_opkind unary[] = {
		IR_OP_NEG, IR_OP_EXP, IR_OP_LOG, IR_OP_SQRT, IR_OP_RSQRT, IR_OP_RECIP,
		IR_OP_SQUARE, IR_OP_SIGMOID, IR_OP_SILU, IR_OP_TANH, IR_OP_RELU, IR_OP_CAST,
		IR_OP_SOFTMAX, IR_OP_REDUCE_SUM, IR_OP_REDUCE_MEAN, IR_OP_REDUCE_MAX,
	};
	static const enum ir_opkind binary[] = { IR_OP_ADD, IR_OP_SUB, IR_OP_MUL, IR_OP_DIV };
	int n_un = (int)(sizeof unary / sizeof unary[0]);
	int n_bin = (int)(sizeof binary / sizeof binary[0]);
	/* cases: each unary op; each binary op with both sides weights, with only the
	 * left, with only the right; a product with both and with one side a weight */
	for (int c = 0; c < n_un + 3 * n_bin + 2; c++) {
		struct ir_graph *g = ir_graph_new("op");
		in_scope(g, "layers.0");
		struct ir_value *x = b_input(g, "x", IR_F32, sh2(4, 8));
		struct ir_value *h = b_bin(g, IR_OP_MUL, x, b_param(g, "w", sh2(4, 8), 1));
		struct ir_value *h2 = b_bin(g, IR_OP_MUL, x, b_param(g, "w2", sh2(4, 8), 1));
		struct ir_value *y;
		const char *what;
		/* the op in a layer of its own: the table tells its inputs from its output */
		in_scope(g, "layers.1");
		if (c < n_un) {
			enum ir_opkind k = unary[c];
			what = ir_op_name(k);
			if (k == IR_OP_REDUCE_SUM || k == IR_OP_REDUCE_MEAN || k == IR_OP_REDUCE_MAX) {
				y = ir_op1(g, k, 1, &h, IR_F32, sh1(4));
				ir_op_set_int(g, y->def, "axis", 1);
			} else if (k == IR_OP_CAST) {
				y = ir_op1(g, k, 1, &h, IR_BF16, h->shape);
			} else {
				y = b_un(g, k, h);
			}
		} else if (c < n_un + 3 * n_bin) {
			int b = (c - n_un) % n_bin, side = (c - n_un) / n_bin;
			what = ir_op_name(binary[b]);
			y = b_bin(g, binary[b], side == 2 ? x : h, side == 1 ? x : h2);
		} else {
			int one = c == n_un + 3 * n_bin + 1;
			what = one ? "matmul(x, w3)" : "matmul(h, w3)";
			y = b_matmul(g, one ? x : h, b_param(g, "w3", sh2(8, 3), 1));
		}
		ir_graph_add_output(g, "loss", y);
		REQUIRE(ir_verify(g, stderr) == 0);
		struct pass_account before, after;
		REQUIRE(pass_account(g, &before) == 0);
		REQUIRE(pass_autodiff(g, stderr) == 0);
		REQUIRE(pass_account(g, &after) == 0);
		CHECKF(before.activation_bytes == after.activation_bytes,
		       "case %d (%s): the rule says %lld bytes, the backward reads %lld", c, what,
		       (long long)before.activation_bytes, (long long)after.activation_bytes);
		CHECK(before.n_layers == after.n_layers);
		for (int i = 0; i < before.n_layers; i++) {
			const struct pass_layer_stats *l = layer(&after, before.layers[i].scope);
			CHECKF(l && l->activation_bytes == before.layers[i].activation_bytes,
			       "case %d (%s): %s", c, what, before.layers[i].scope);
		}
		pass_account_free(&before);
		pass_account_free(&after);
		ir_graph_free(g);
	}
}

int main(void)
{
	test_dense();
	test_after_backward();
	test_moe();
	test_grouped_k_fallbacks();
	test_backward_multiplier();
	test_overflow();
	test_rule_matches_autodiff();
	return CHECK_DONE();
}
