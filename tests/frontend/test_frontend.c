/*
 * test_frontend.c - unit tests of the model language: the lexer's tokens and
 * locations, the parser's precedence and the evaluator's arithmetic (through train
 * settings, which land in the graph), and the lowering of the intrinsics: shapes of
 * chosen ops, parameter paths and attributes, scopes, and the size of DeepSeek-V3's IR.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "frontend/fe.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/passes.h"

/* --- lexer ------------------------------------------------------------------------- */

static void test_lexer(void)
{
	static const char src[] = "model m # caf\xc3\xa9\n"
				  "for i in 0..n { x += 3e-4 ** 1_000 }\n"
				  "a != b && !c || d >= 2.5 // end\n"
				  "\"str\" x.y ?:";
	struct fe f = { 0 };
	f.file = "lex.sl";
	f.src = src;
	f.len = sizeof src - 1;
	f.err = stderr;
	f.a = ir_arena_new();
	if (setjmp(f.jb)) {
		CHECKF(0, "the lexer failed on valid input");
		ir_arena_free(f.a);
		return;
	}
	fe_lex(&f);
	static const enum fe_tok want[] = {
		T_MODEL, T_IDENT, T_FOR, T_IDENT, T_IN, T_INT, T_DOTDOT, T_IDENT, T_LBRACE,
		T_IDENT, T_PLUSEQ, T_FLOAT, T_POW, T_INT, T_RBRACE, T_IDENT, T_NE, T_IDENT,
		T_AND, T_NOT, T_IDENT, T_OR, T_IDENT, T_GE, T_FLOAT, T_STR, T_IDENT, T_DOT,
		T_IDENT, T_QUESTION, T_COLON, T_EOF,
	};
	int n = (int)(sizeof want / sizeof want[0]);
	CHECKF(f.ntok == n, "%d tokens, want %d", f.ntok, n);
	for (int i = 0; i < n && i < f.ntok; i++)
		CHECKF(f.toks[i].kind == want[i], "token %d is %s, want %s", i,
		       fe_tok_name(f.toks[i].kind), fe_tok_name(want[i]));
	if (f.ntok == n) {
		CHECK(f.toks[5].ival == 0 && f.toks[7].loc.line == 2 && f.toks[7].loc.col == 13);
		CHECK(fabs(f.toks[11].fval - 3e-4) < 1e-18);
		CHECK(f.toks[13].ival == 1000);
		CHECK(f.toks[24].fval == 2.5);
		CHECK(!strcmp(f.toks[25].text, "str") && f.toks[25].loc.line == 4 && f.toks[25].loc.col == 1);
		CHECK(f.toks[31].loc.line == 4);
	}
	ir_arena_free(f.a);
}

/* --- helpers ------------------------------------------------------------------------- */

static struct ir_graph *compile_str(const char *src, int n_over, const struct sl_override *o)
{
	char *out = NULL;
	size_t n = 0;
	FILE *err = open_memstream(&out, &n);
	struct ir_graph *g = sl_compile_source(src, strlen(src), "t.sl", n_over, o, err);
	fclose(err);
	CHECKF(g != NULL, "does not compile:\n%s\n%s", src, out);
	free(out);
	return g;
}

static struct ir_graph *compile_model(const char *path, int n_over, const struct sl_override *o)
{
	struct ir_graph *g = sl_compile_file(path, n_over, o, stderr);
	CHECKF(g != NULL, "%s does not compile", path);
	return g;
}

static const struct ir_op *param(const struct ir_graph *g, const char *path)
{
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == IR_OP_PARAM && !strcmp(g->ops[i]->path, path))
			return g->ops[i];
	return NULL;
}

static int shape_is(const struct ir_value *v, int rank, const int64_t *d)
{
	if (v->shape.rank != rank)
		return 0;
	for (int i = 0; i < rank; i++)
		if (v->shape.dim[i] != d[i])
			return 0;
	return 1;
}

#define SHAPE(v, ...) shape_is((v), (int)(sizeof((int64_t[]){ __VA_ARGS__ }) / sizeof(int64_t)), \
			       (int64_t[]){ __VA_ARGS__ })

static const struct ir_op *first_op(const struct ir_graph *g, enum ir_opkind k, const char *scope)
{
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == k && (!scope || !strcmp(g->ops[i]->scope, scope)))
			return g->ops[i];
	return NULL;
}

static int count_ops(const struct ir_graph *g, enum ir_opkind k)
{
	int n = 0;
	for (int i = 0; i < g->n_ops; i++)
		n += g->ops[i]->kind == k;
	return n;
}

static const char tail[] =
	"graph(tokens: i32[2, 8], targets: i32[2, 8]) {\n"
	"  loss = cross_entropy(linear(embed(tokens, 16, 8), 16, name: head), targets)\n"
	"}\n";

/* --- parser and evaluator ------------------------------------------------------------- */

static void test_eval(void)
{
	char src[2048];
	snprintf(src, sizeof src,
		 "model m\nconst n = 7, x = 2.5, on = true\n"
		 "block twice(v: int = 1) { return 2 * v }\n"
		 "%s"
		 "train {\n"
		 "  steps = 1 + 2 * 3 ** 2, seed = -2 ** 2 + 10, batch = 7 / 2, warmup = -7 %% 3 + 1\n"
		 "  seq = n > 3 ? 10 : 20, zero = on && !(n == 7) || n != 7, fim = 2 ** -1\n"
		 "  lr = x * 2, microbatches = (1 + 2) * 3, pp = min(n, 3), wd = max(x, 3)\n"
		 "  global_batch = 2 ** 62, precision = \"bf16\", optimizer = adamw(lr = 0.5, eps = 3)\n"
		 "  schedule = dualpipe, ep = on, min_lr = 2e-1, val_batches = 2e3\n"
		 "}\n", tail);
	struct ir_graph *g = compile_str(src, 0, NULL);
	if (!g)
		return;
	struct { const char *k; double v; } want[] = {
		{ "steps", 19 }, { "seed", 6 }, { "batch", 3 }, { "warmup", 0 }, { "seq", 10 },
		{ "zero", 0 }, { "fim", 0.5 }, { "lr", 5 }, { "microbatches", 9 }, { "pp", 3 },
		{ "wd", 3 }, { "global_batch", 4611686018427387904.0 }, { "optimizer.lr", 0.5 },
		{ "optimizer.eps", 3 }, { "ep", 1 }, { "min_lr", 0.2 }, { "val_batches", 2000 },
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		CHECKF(ir_graph_setting_num(g, want[i].k, -99) == want[i].v, "%s = %g, want %g",
		       want[i].k, ir_graph_setting_num(g, want[i].k, -99), want[i].v);
	const struct ir_setting *s = ir_graph_setting(g, "precision");
	CHECK(s && s->is_str && !strcmp(s->str, "bf16"));
	s = ir_graph_setting(g, "schedule");
	CHECK(s && s->is_str && !strcmp(s->str, "dualpipe"));
	s = ir_graph_setting(g, "optimizer");
	CHECK(s && s->is_str && !strcmp(s->str, "adamw"));
	CHECK(sl_settings_check_graph(g, stderr) == 0);
	ir_graph_free(g);
}

/* ep_capacity: a number >= 1, or the word worst (in the train section or --set); the
 * pass sizes the receive buffers from it */
static void test_ep_capacity(void)
{
	char src[1024];
	snprintf(src, sizeof src, "model m\n%strain {\n  ep_capacity = worst\n}\n", tail);
	struct ir_graph *g = compile_str(src, 0, NULL);
	const struct ir_setting *s = g ? ir_graph_setting(g, "ep_capacity") : NULL;
	CHECK(s && s->is_str && !strcmp(s->str, "worst") && pass_ep_capacity(g) == 0);
	ir_graph_free(g);
	struct sl_override o[] = { { "ep_capacity", "1.5" } };
	g = compile_str(src, 1, o);
	CHECK(g && ir_graph_setting_num(g, "ep_capacity", 0) == 1.5 && pass_ep_capacity(g) == 1.5);
	ir_graph_free(g);
	g = compile_str("model m\ngraph(tokens: i32[2, 4], targets: i32[2, 4]) {\n"
			"  loss = cross_entropy(linear(embed(tokens, 16, 8), 16, name: head), targets)\n"
			"}\n", 0, NULL);
	CHECK(g && pass_ep_capacity(g) == PASS_EP_CAPACITY);
	ir_graph_free(g);
	const char *bad[] = { "0.5", "wrst" };
	for (int i = 0; i < 2; i++) {
		struct sl_override b[] = { { "ep_capacity", bad[i] } };
		char *out = NULL;
		size_t n = 0;
		FILE *err = open_memstream(&out, &n);
		g = sl_compile_source(src, strlen(src), "t.sl", 1, b, err);
		fclose(err);
		CHECKF(!g && strstr(out, "'ep_capacity' is a number >= 1 or worst"),
		       "ep_capacity=%s: %s", bad[i], out);
		ir_graph_free(g);
		free(out);
	}
}

/* loops, conditionals, blocks with defaults, explicit parameters, tensor arithmetic */
static void test_language(void)
{
	static const char src[] =
		"model m\nconst layers = 3\n"
		"block mlp(x, wide: bool = false) {\n"
		"  param w: f32[4, wide ? 8 : 4] = normal(0.5)\n"
		"  param b: f32[wide ? 8 : 4] = zeros\n"
		"  return silu(matmul(x, w) + b)\n"
		"}\n"
		"graph(x: f32[2, 4], targets: i32[2]) {\n"
		"  h = x\n"
		"  for i in 0..layers as blocks { if i == 1 { h = h + mlp(h) } else { h = 0.5 * h - 1 } }\n"
		"  h = mlp(h, wide: true)\n"
		"  loss = cross_entropy(h, targets)\n"
		"  loss *= 2\n"
		"}\n";
	struct ir_graph *g = compile_str(src, 0, NULL);
	if (!g)
		return;
	const struct ir_op *w = param(g, "blocks.1.w");
	CHECK(w && SHAPE(w->out[0], 4, 4) && !strcmp(ir_op_str(w, "init", ""), "normal") &&
	      ir_op_float(w, "std", 0) == 0.5);
	const struct ir_op *b = param(g, "b");
	CHECK(b && SHAPE(b->out[0], 8) && !strcmp(ir_op_str(b, "init", ""), "zeros"));
	CHECK(param(g, "w") && SHAPE(param(g, "w")->out[0], 4, 8));
	CHECK(!param(g, "blocks.0.w") && !param(g, "blocks.2.w"));
	/* 0.5 * h - 1 is two SCALE ops in blocks.0 and blocks.2 */
	int scales = 0;
	for (int i = 0; i < g->n_ops; i++)
		scales += g->ops[i]->kind == IR_OP_SCALE && !strcmp(g->ops[i]->scope, "blocks.2");
	CHECK(scales == 2);
	struct ir_value *loss = ir_graph_output(g, "loss");
	CHECK(loss && loss->shape.rank == 0 && loss->def->kind == IR_OP_SCALE);
	CHECK(ir_verify(g, stderr) == 0);
	ir_graph_free(g);
}

/* --- lowering of the models --------------------------------------------------------------- */

static void check_locations(const struct ir_graph *g, const char *file)
{
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		CHECKF(op->loc.file && !strcmp(op->loc.file, file) && op->loc.line > 0 && op->loc.col > 0,
		       "op %d (%s) has no location", i, ir_op_name(op->kind));
		if (op->kind == IR_OP_PARAM)
			CHECKF(op->path && !strncmp(op->path, op->scope, strlen(op->scope)),
			       "parameter %s is not under its scope %s", op->path, op->scope);
	}
}

static void test_tiny_gpt(void)
{
	struct ir_graph *g = compile_model("models/tiny_gpt.sl", 0, NULL);
	if (!g)
		return;
	check_locations(g, "models/tiny_gpt.sl");
	CHECK(ir_verify(g, stderr) == 0);
	const struct ir_op *p;
	CHECK((p = param(g, "embed.weight")) && SHAPE(p->out[0], 256, 192));
	CHECK((p = param(g, "head.weight")) && SHAPE(p->out[0], 192, 256));
	CHECK((p = param(g, "layers.3.attn.wq")) && SHAPE(p->out[0], 192, 192));
	CHECK((p = param(g, "layers.3.ffn.w2")) && SHAPE(p->out[0], 512, 192));
	CHECK((p = param(g, "layers.0.attn_norm.weight")) && !strcmp(ir_op_str(p, "init", ""), "ones"));
	CHECK(!param(g, "layers.4.attn.wq"));
	const struct ir_op *at = first_op(g, IR_OP_ATTENTION, "layers.2.attn");
	CHECK(at && SHAPE(at->out[0], 8, 128, 6, 32) && SHAPE(at->out[1], 8, 6, 128) &&
	      ir_op_int(at, "causal", 0) == 1 &&
	      fabs(ir_op_float(at, "scale", 0) - 1 / sqrt(32.0)) < 1e-15);
	CHECK(!first_op(g, IR_OP_SOFTMAX, "layers.2.attn"));
	const struct ir_op *rope = first_op(g, IR_OP_ROPE, "layers.0.attn");
	CHECK(rope && SHAPE(rope->out[0], 8, 128, 6, 32));
	/* rmsnorm: square, reduce_mean(keepdim), scale(beta = eps), rsqrt, mul, mul */
	const struct ir_op *sq = first_op(g, IR_OP_SQUARE, "layers.1.ffn_norm");
	CHECK(sq && g->ops[sq->id + 1]->kind == IR_OP_REDUCE_MEAN &&
	      ir_op_int(g->ops[sq->id + 1], "keepdim", 0) == 1 &&
	      g->ops[sq->id + 2]->kind == IR_OP_SCALE &&
	      ir_op_float(g->ops[sq->id + 2], "beta", 0) == 1e-6 &&
	      g->ops[sq->id + 3]->kind == IR_OP_RSQRT);
	const struct ir_op *ce = first_op(g, IR_OP_CROSS_ENTROPY, NULL);
	CHECK(ce && SHAPE(ce->in[0], 1024, 256) && SHAPE(ce->in[1], 1024));
	struct ir_value *loss = ir_graph_output(g, "loss");
	CHECK(loss && loss->shape.rank == 0 && loss->dtype == IR_F32);
	ir_graph_free(g);

	/* --set changes sizes and settings */
	struct sl_override o[2] = { { "dim", "96" }, { "seq", "64" } };
	g = compile_model("models/tiny_gpt.sl", 2, o);
	if (g) {
		CHECK((p = param(g, "embed.weight")) && SHAPE(p->out[0], 256, 96));
		CHECK(g->ops[0]->kind == IR_OP_INPUT && SHAPE(g->ops[0]->out[0], 8, 64));
		CHECK(ir_graph_setting_num(g, "seq", 0) == 64);
	}
	ir_graph_free(g);
}

static void test_tiny_moe(void)
{
	struct ir_graph *g = compile_model("models/tiny_moe.sl", 0, NULL);
	if (!g)
		return;
	check_locations(g, "models/tiny_moe.sl");
	CHECK(ir_verify(g, stderr) == 0);
	const struct ir_op *p;
	CHECK((p = param(g, "layers.1.moe.experts.w1")) && SHAPE(p->out[0], 8, 128, 128) &&
	      ir_op_int(p, "experts", 0) == 8 && ir_op_int(p, "top_k", 0) == 2);
	CHECK((p = param(g, "layers.3.moe.experts.w2")) && SHAPE(p->out[0], 8, 128, 128));
	CHECK((p = param(g, "layers.1.moe.shared.w1")) && SHAPE(p->out[0], 128, 128));
	CHECK((p = param(g, "layers.1.moe.gate.bias")) && SHAPE(p->out[0], 8) &&
	      ir_op_int(p, "trainable", 1) == 0 && !strcmp(ir_op_str(p, "init", ""), "zeros") &&
	      ir_op_float(p, "gamma", 0) == 0.001);
	CHECK(!param(g, "layers.0.moe.experts.w1") && param(g, "layers.0.ffn.w1"));
	CHECK((p = param(g, "layers.0.attn.wq_a")) && SHAPE(p->out[0], 128, 64));
	CHECK((p = param(g, "layers.0.attn.wkv_b")) && SHAPE(p->out[0], 32, 4 * 64));
	CHECK((p = param(g, "mtp.0.proj.weight")) && SHAPE(p->out[0], 256, 128));
	CHECK(param(g, "mtp.0.moe.experts.w1") && !param(g, "mtp.0.embed.weight"));
	/* routing: topk(stop_grad(s) + bias), gates normalised, one dispatch per layer */
	const struct ir_op *tk = first_op(g, IR_OP_TOPK, "layers.2.moe");
	CHECK(tk && ir_op_int(tk, "k", 0) == 2 && SHAPE(tk->out[0], 1024, 2) && tk->out[0]->dtype == IR_I32);
	CHECK(tk && tk->in[0]->def->kind == IR_OP_ADD &&
	      tk->in[0]->def->in[0]->def->kind == IR_OP_STOP_GRAD &&
	      tk->in[0]->def->in[1]->def->kind == IR_OP_PARAM);
	const struct ir_op *d = first_op(g, IR_OP_MOE_DISPATCH, "layers.2.moe");
	CHECK(d && SHAPE(d->out[0], 2048, 128) && SHAPE(d->out[1], 9) && SHAPE(d->out[2], 2048));
	const struct ir_op *c = first_op(g, IR_OP_MOE_COMBINE, "layers.2.moe");
	CHECK(c && c->in[2]->def->kind == IR_OP_DIV && SHAPE(c->out[0], 1024, 128));
	CHECK(count_ops(g, IR_OP_MOE_DISPATCH) == 4 && count_ops(g, IR_OP_GROUPED_MATMUL) == 12);
	struct ir_value *load = ir_graph_output(g, "load.layers.1.moe");
	CHECK(load && SHAPE(load, 8) && ir_graph_output(g, "load.mtp.0.moe"));
	CHECK(g->n_outputs == 5 && !strcmp(g->output_names[0], "loss"));
	/* the loss is main + 0.3 * mtp + the balance losses */
	struct ir_value *loss = ir_graph_output(g, "loss");
	CHECK(loss && loss->def->kind == IR_OP_ADD && loss->shape.rank == 0);
	ir_graph_free(g);
}

static void test_deepseek_v3(void)
{
	clock_t t0 = clock();
	struct ir_graph *g = compile_model("models/deepseek_v3.sl", 0, NULL);
	double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
	if (!g)
		return;
	/* printed, not checked: tools/bench/check_time.sh measures it */
	printf("compiling DeepSeek-V3 took %.3f s of CPU\n", secs);
	double main_params = 0, mtp_params = 0;
	int grouped = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_PARAM) {
			double n = (double)ir_shape_numel(&op->out[0]->shape);
			if (!strncmp(op->path, "mtp.", 4))
				mtp_params += n;
			else
				main_params += n;
		}
		if (op->kind == IR_OP_GROUPED_MATMUL) {
			grouped++;
			CHECK(op->in[1]->shape.dim[0] == 256 && op->in[2]->shape.dim[0] == 257);
		}
	}
	CHECKF(fabs(main_params / 671e9 - 1) < 0.005, "DeepSeek-V3 has %.4gB parameters", main_params / 1e9);
	CHECKF(mtp_params > 11e9 && mtp_params < 12.5e9, "its MTP module has %.4gB", mtp_params / 1e9);
	CHECKF(grouped == 3 * (58 + 1), "%d grouped matmuls, want one per expert weight", grouped);
	CHECKF(g->n_ops < 150 * 62, "%d ops", g->n_ops);
	const struct ir_op *p;
	CHECK((p = param(g, "layers.60.moe.experts.w1")) && SHAPE(p->out[0], 256, 7168, 2048));
	CHECK((p = param(g, "layers.2.ffn.w1")) && SHAPE(p->out[0], 7168, 18432));
	CHECK((p = param(g, "layers.10.attn.wq_b")) && SHAPE(p->out[0], 1536, 128 * 192));
	CHECK((p = param(g, "layers.10.attn.wkv_a")) && SHAPE(p->out[0], 7168, 576));
	CHECK((p = param(g, "embed.weight")) && SHAPE(p->out[0], 129280, 7168));
	/* node-limited routing: a group's top 2, the 4 best groups, then the top 8 */
	const struct ir_op *tk[3] = { NULL };
	int ntk = 0;
	for (int i = 0; i < g->n_ops && ntk < 3; i++)
		if (g->ops[i]->kind == IR_OP_TOPK && !strcmp(g->ops[i]->scope, "layers.3.moe"))
			tk[ntk++] = g->ops[i];
	CHECK(ntk == 3 && ir_op_int(tk[0], "k", 0) == 2 && SHAPE(tk[0]->in[0], 4096 * 8, 32) &&
	      ir_op_int(tk[1], "k", 0) == 4 && SHAPE(tk[1]->in[0], 4096, 8));
	CHECK(ntk == 3 && ir_op_int(tk[2], "k", 0) == 8 && ir_op_int(tk[2], "groups", 0) == 8 &&
	      ir_op_int(tk[2], "node_limit", 0) == 4);
	CHECK(ir_graph_setting_num(g, "pp", 0) == 16 && ir_graph_setting_num(g, "ep", 0) == 64);
	const struct ir_setting *st = ir_graph_setting(g, "schedule");
	CHECK(st && st->is_str && !strcmp(st->str, "dualpipe"));
	st = ir_graph_setting(g, "precision");
	CHECK(st && st->is_str && !strcmp(st->str, "fp8"));
	ir_graph_free(g);
}

static void test_zoo(void)
{
	static const struct { const char *path; double params; } zoo[] = {
		{ "models/deepseek_llm_7b.sl", 6.91e9 }, { "models/deepseek_llm_67b.sl", 67.4e9 },
		{ "models/deepseek_v2_lite.sl", 15.7e9 }, { "models/deepseek_v2.sl", 235.7e9 },
	};
	for (size_t z = 0; z < sizeof zoo / sizeof zoo[0]; z++) {
		struct ir_graph *g = compile_model(zoo[z].path, 0, NULL);
		if (!g)
			continue;
		CHECK(ir_verify(g, stderr) == 0);
		double n = 0;
		for (int i = 0; i < g->n_ops; i++)
			if (g->ops[i]->kind == IR_OP_PARAM)
				n += (double)ir_shape_numel(&g->ops[i]->out[0]->shape);
		CHECKF(fabs(n / zoo[z].params - 1) < 0.01, "%s: %.4gB parameters", zoo[z].path, n / 1e9);
		if (z == 1) { /* GQA: 8 query heads per KV head, one attention op */
			const struct ir_op *at = first_op(g, IR_OP_ATTENTION, "layers.0.attn");
			CHECK(at && SHAPE(at->in[0], 1, 4096, 64, 128) && SHAPE(at->in[1], 1, 4096, 8, 128));
			CHECK(param(g, "layers.0.attn.wk") && SHAPE(param(g, "layers.0.attn.wk")->out[0], 8192, 1024));
		}
		if (z == 2) { /* no query compression, softmax gate, no bias */
			CHECK(param(g, "layers.1.attn.wq") && !param(g, "layers.1.attn.wq_a"));
			CHECK(!param(g, "layers.1.moe.gate.bias"));
			CHECK(first_op(g, IR_OP_SOFTMAX, "layers.1.moe"));
		}
		ir_graph_free(g);
	}
}

/* DESIGN.md's example, with the output head named: default layer names inside the
 * block that mtp reuses, ':' in the train section, a positional setting argument. */
static void test_design_example(void)
{
	static const char src[] =
		"model tiny_moe\n"
		"const vocab = 256, dim = 64, layers = 3, heads = 4, seq = 32\n"
		"const experts = 8, shared = 1, top_k = 2, expert_dim = 32\n"
		"block layer(x, moe_layer: bool = true) {\n"
		"  h = x + mla(rmsnorm(x), heads: heads, q_rank: 32, kv_rank: 16, rope_dim: 8, head_dim: 16)\n"
		"  f = moe_layer ? moe(rmsnorm(h), experts: experts, shared: shared, top_k: top_k,\n"
		"                      hidden: expert_dim, gate: sigmoid, balance: bias(0.001))\n"
		"                : swiglu(rmsnorm(h), hidden: 4 * dim)\n"
		"  return h + f\n"
		"}\n"
		"graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {\n"
		"  x = embed(tokens, vocab, dim)\n"
		"  for i in 0..layers { x = layer(x, moe_layer: i >= 1) }\n"
		"  loss = cross_entropy(linear(rmsnorm(x), vocab, name: head), targets)\n"
		"  loss += 0.3 * mtp(x, tokens, targets, depth: 1)\n"
		"}\n"
		"train { batch: 4, steps: 2000, optimizer: adamw(lr: 3e-4, wd: 0.1), warmup: 100,\n"
		"        precision: bf16, pp: 4, schedule: dualpipe, ep: 4 }\n";
	struct ir_graph *g = compile_str(src, 0, NULL);
	if (!g)
		return;
	CHECK(param(g, "layers.0.norm.weight") && param(g, "layers.0.norm_1.weight"));
	CHECK(param(g, "layers.0.ffn.w1") && param(g, "layers.2.moe.experts.w3"));
	CHECK(param(g, "mtp.0.hnorm.weight") && param(g, "mtp.0.enorm.weight") &&
	      param(g, "mtp.0.norm.weight") && param(g, "mtp.0.norm_1.weight") &&
	      param(g, "mtp.0.out_norm.weight") && param(g, "mtp.0.moe.gate.bias"));
	CHECK(ir_graph_setting_num(g, "ep", 0) == 4 && ir_graph_setting_num(g, "pp", 0) == 4);
	CHECK(ir_graph_setting_num(g, "optimizer.lr", 0) == 3e-4);
	const struct ir_setting *e = ir_graph_setting(g, "schedule");
	CHECK(e && e->is_str && !strcmp(e->str, "dualpipe"));
	CHECK(ir_verify(g, stderr) == 0);
	ir_graph_free(g);
}

/* Compiling is deterministic, and the printed IR parses back to the same text. */
static void test_round_trip(void)
{
	static const char *const models[] = {
		"models/tiny_gpt.sl", "models/tiny_moe.sl", "models/deepseek_v3.sl",
		"models/deepseek_v2.sl", "models/deepseek_v2_lite.sl", "models/deepseek_llm_7b.sl",
		"models/deepseek_llm_67b.sl",
	};
	for (int m = 0; m < (int)(sizeof models / sizeof models[0]); m++) {
		struct ir_graph *a = compile_model(models[m], 0, NULL);
		struct ir_graph *b = compile_model(models[m], 0, NULL);
		if (!a || !b) {
			ir_graph_free(a);
			ir_graph_free(b);
			continue;
		}
		char *ta = NULL, *tb = NULL, *tc = NULL;
		size_t la = 0, lb = 0, lc = 0;
		FILE *fa = open_memstream(&ta, &la), *fb = open_memstream(&tb, &lb);
		ir_print(a, fa);
		ir_print(b, fb);
		fclose(fa);
		fclose(fb);
		CHECKF(la == lb && !memcmp(ta, tb, la), "%s: two compilations differ", models[m]);
		struct ir_graph *c = ir_parse(ta, la, models[m], stderr);
		CHECKF(c != NULL, "%s: printed IR does not parse", models[m]);
		if (c) {
			FILE *fc = open_memstream(&tc, &lc);
			ir_print(c, fc);
			fclose(fc);
			CHECKF(lc == la && !memcmp(ta, tc, la), "%s: IR round trip differs", models[m]);
			free(tc);
		}
		ir_graph_free(c);
		free(ta);
		free(tb);
		ir_graph_free(a);
		ir_graph_free(b);
	}
}

int main(void)
{
	test_lexer();
	test_eval();
	test_ep_capacity();
	test_language();
	test_tiny_gpt();
	test_tiny_moe();
	test_deepseek_v3();
	test_zoo();
	test_design_example();
	test_round_trip();
	return CHECK_DONE();
}
