/* cmd_check.c - 'sluice check': what a model costs, before anything runs.
 *
 * Compiles the model, counts it (passes/account.c: the rules behind every figure are
 * written there), runs the pass pipeline and plans the memory of the training step
 * (passes/memplan.c), and prints the figures for a person or, with --json, as one
 * JSON object for a program. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "args.h"
#include "codegen/backend.h"
#include "commands.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

/* Where the runtime places every buffer: CUDA's allocation granularity for tensors. */
enum { CHECK_ALIGN = 256 };

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice check FILE [--json] [--verbose] [--set NAME=VALUE]... [--ranks N]\n"
		"\n"
		"Parameters (total, the MTP module apart, active per token), training FLOPs per\n"
		"token (forward + backward), activation memory per micro-batch and the planned\n"
		"peak of the memory arena of one training step, for a model file (.sl).\n"
		"\n"
		"  --json             print one JSON object instead of the report\n"
		"  --verbose          add a table of the figures per layer\n"
		"  --set NAME=VALUE   override a constant or a train setting (repeatable)\n"
		"  --ranks N          ranks of the job (default pp x ep): with it, or with\n"
		"                     --set pp=P (P > 1) or ep=E (E > 1), a table of the pipeline\n"
		"                     stages: layers, parameters, FLOPs and the memory of one\n"
		"                     rank of each (passes/partition.c); the layout settings\n"
		"                     are the train settings pp, ep, microbatches, zero, schedule\n"
		"  -h, --help         this help\n"
		"\n"
		"Exit status 0; 2 for bad usage; 1 for an error in the model or an impossible\n"
		"layout, and also when the pass pipeline fails: the figures are printed then\n"
		"without the memory plan.  The rules behind each figure open passes/account.c,\n"
		"passes/memplan.c and passes/partition.c.\n");
}

struct check_opts {
	const char *file;
	int json, verbose;
	int ranks;                 /* 0: not given */
	struct args_overrides over;
};

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct check_opts *o)
{
	for (int i = 1; i < argc;) {
		const char *a = argv[i];
		if (args_is_help(a)) {
			usage(stdout);
			return EXIT_OK;
		}
		int r = args_take_set(argc, argv, &i, &o->over, "check");
		if (r < 0)
			return EXIT_USAGE;
		if (r > 0)
			continue;
		const char *ranks;
		r = args_take_value(argc, argv, &i, "--ranks", &ranks, "check");
		if (r < 0)
			return EXIT_USAGE;
		if (r > 0) {
			char *end;
			long n = strtol(ranks, &end, 10);
			if (end == ranks || *end || n < 1 || n > (1 << 24)) {
				fprintf(stderr, "sluice check: --ranks takes a whole number from 1 "
						"to %d, got '%s'\n", 1 << 24, ranks);
				return EXIT_USAGE;
			}
			o->ranks = (int)n;
			continue;
		}
		if (!strcmp(a, "--json")) {
			o->json = 1;
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			o->verbose = 1;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "sluice check: unknown option '%s'\n", a);
			usage(stderr);
			return EXIT_USAGE;
		} else if (o->file) {
			fprintf(stderr, "sluice check: one model file at a time ('%s' and '%s')\n",
				o->file, a);
			return EXIT_USAGE;
		} else {
			o->file = a;
		}
		i++;
	}
	if (!o->file) {
		fprintf(stderr, "sluice check: no model file given\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	return -1;
}

/* --- what the report needs beyond the accounting -------------------------------- */

struct check_extra {
	double buffers;          /* parameters no gradient updates (routing biases) */
	int64_t tokens;          /* of one micro-batch */
	struct ir_shape tokens_shape;
	int have_plan;
	int64_t peak;            /* the arena as planned */
	double naive;            /* the arena with one slot per value (may pass 2^63) */
	int n_ops_step;          /* ops of the planned step */
	int have_cpu_plan;
	int64_t cpu_arena;       /* what the CPU backend allocates: its plan after fusion */
	int have_gpu_plan;
	int64_t gpu_bytes;       /* what the CUDA backend takes from the GPU's arena */
	int have_fp8;            /* precision fp8: the fp8 pass ran before the plan */
	int64_t act_fp8;         /* activations saved for the backward after it */
	const char *recompute;   /* the setting, when it recomputes something */
	int64_t act_rc;          /* activations saved for the backward after that */
	int ep;                  /* the expert-parallel group, when > 1: */
	double a2a[3];           /* bytes a rank sends over it a micro-batch, forward and
				  * backward: E4M3 rows, their f32 scales, rows of other dtypes */
};

/* With ep > 1: what the expert-parallel all-to-alls of one rank send to the other ranks
 * of the group a micro-batch, from the step after expert_parallel and fp8 (run on a
 * copy of g, which is after autodiff): for each ALL_TO_ALLV over "ep", the rows it
 * moves under an even routing (the fewer of its input's and output's rows: the tokens'
 * rows one way, into the receive buffer the other), times their width and the bytes of
 * their dtype, (ep - 1) / ep of them to other ranks.  0, or -1 with a message. */
static int a2a_bytes(const char *file, const struct ir_graph *g, struct check_extra *x)
{
	x->ep = (int)ir_graph_setting_num(g, "ep", 1);
	if (x->ep <= 1)
		return 0;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -1;
	ir_print(g, f);
	fclose(f);
	struct ir_graph *c = ir_parse(text, len, file, stderr);
	free(text);
	if (!c || pass_expert_parallel(c, stderr) || pass_fp8(c, stderr) || ir_verify(c, stderr)) {
		fprintf(stderr, "sluice check: %s: no all-to-all figures: the expert-parallel "
			"passes failed\n", file);
		if (c)
			ir_graph_free(c);
		return -1;
	}
	for (int i = 0; i < c->n_ops; i++) {
		const struct ir_op *op = c->ops[i];
		if (op->kind != IR_OP_ALL_TO_ALLV || strcmp(ir_op_str(op, "group", ""), "ep"))
			continue;
		const struct ir_value *in = op->in[0], *out = op->out[0];
		int64_t rows = in->shape.dim[0] < out->shape.dim[0] ? in->shape.dim[0]
								    : out->shape.dim[0];
		int64_t width = in->shape.dim[0] ? ir_shape_numel(&in->shape) / in->shape.dim[0] : 0;
		double b = (double)rows * (double)width * (double)ir_dtype_size(in->dtype) *
			   (double)(x->ep - 1) / x->ep;
		/* the scales of E4M3 rows travel beside them (passes/fp8.c) */
		int scales = in->def && in->def->kind == IR_OP_QUANT_FP8 && in == in->def->out[1];
		x->a2a[in->dtype == IR_F8E4M3 ? 0 : scales ? 1 : 2] += b;
	}
	ir_graph_free(c);
	return 0;
}

static void count_extra(const struct ir_graph *g, struct check_extra *x)
{
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_PARAM && ir_op_int(op, "trainable", 1) == 0)
			x->buffers += (double)ir_shape_numel(&op->out[0]->shape);
		if (op->kind == IR_OP_INPUT && !x->tokens) {
			const char *name = ir_op_str(op, "name", op->out[0]->name);
			if (name && !strcmp(name, "tokens")) {
				x->tokens_shape = op->out[0]->shape;
				x->tokens = ir_shape_numel(&op->out[0]->shape);
			}
		}
	}
}

static int plan_memory(const char *file, struct ir_graph *g, struct check_extra *x)
{
	/* the whole model's step: the passes that cut it over ranks come after autodiff,
	 * and the per-stage table counts them itself */
	if (pass_pipeline_run(g, "autodiff", stderr)) {
		fprintf(stderr, "sluice check: %s: no memory plan: the pass pipeline failed\n",
			file);
		return -1;
	}
	if (a2a_bytes(file, g, x))
		return -1;
	/* precision fp8: the step as it runs, its products quantised (the pass reads the
	 * setting; a no-op otherwise) */
	const struct ir_setting *prec = ir_graph_setting(g, "precision");
	if (prec && prec->is_str && !strcmp(prec->str, "fp8")) {
		struct pass_account a8;
		if (pass_fp8(g, stderr) || ir_verify(g, stderr) || pass_account(g, &a8)) {
			fprintf(stderr, "sluice check: %s: no memory plan: the fp8 pass failed\n", file);
			return -1;
		}
		x->have_fp8 = 1;
		x->act_fp8 = a8.activation_bytes;
		pass_account_free(&a8);
	}
	/* recompute: the forward values the backward computes again are not kept */
	int n_before = g->n_ops;
	if (pass_recompute(g, stderr) || ir_verify(g, stderr)) {
		fprintf(stderr, "sluice check: %s: no memory plan: the recompute pass failed\n",
			file);
		return -1;
	}
	if (g->n_ops > n_before) {
		struct pass_account ar;
		if (pass_account(g, &ar))
			return -1;
		x->recompute = ir_graph_setting(g, "recompute")->str;
		x->act_rc = ar.activation_bytes;
		pass_account_free(&ar);
	}
	struct pass_memplan p;
	if (pass_memplan(g, CHECK_ALIGN, &p)) {
		fprintf(stderr, "%s: error: the memory of a training step passes 2^63 bytes\n",
			file);
		return -1;
	}
	x->have_plan = 1;
	x->peak = p.peak;
	for (int i = 0; i < p.n_values; i++)
		if (p.offset[i] >= 0)
			x->naive += (double)((p.size[i] + CHECK_ALIGN - 1) / CHECK_ALIGN * CHECK_ALIGN);
	x->n_ops_step = g->n_ops;
	pass_memplan_free(&p);
	/* one rank's whole step: a graph already cut over ranks (read back from textual
	 * IR after expert_parallel) runs as a program of several chunks, not as one */
	int cut = 0;
	for (int i = 0; i < g->n_ops; i++)
		cut |= g->ops[i]->kind == IR_OP_ALL_TO_ALL || g->ops[i]->kind == IR_OP_ALL_TO_ALLV;
	(void)cut;
#ifdef SLUICE_HAVE_LLVM
	if (!cut)
		x->have_cpu_plan = cg_llvm_arena_plan(g, &x->cpu_arena, stderr) == 0;
#endif
#ifdef SLUICE_HAVE_CUDA
	if (!cut)
		x->have_gpu_plan = cg_cuda_arena_plan(g, &x->gpu_bytes, stderr) == 0;
#endif
	return 0;
}

/* --- readable units ----------------------------------------------------------------- */

/* 671026404352 -> "671.0B" */
static const char *fmt_count(char *buf, size_t n, double v)
{
	static const char *const unit[] = { "", "K", "M", "B", "T" };
	int u = 0;
	while (v >= 999.95 && u < 4) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%.0f", v);
	else
		snprintf(buf, n, "%.1f%s", v, unit[u]);
	return buf;
}

/* 281.2e9 -> "281.2 GFLOP" */
static const char *fmt_flops(char *buf, size_t n, double v)
{
	static const char *const unit[] = { "", "K", "M", "G", "T", "P" };
	int u = 0;
	while (v >= 999.95 && u < 5) {
		v /= 1000;
		u++;
	}
	snprintf(buf, n, u ? "%.1f %sFLOP" : "%.0f FLOP", v, unit[u]);
	return buf;
}

/* 1.5 * 2^30 -> "1.50 GiB" */
static const char *fmt_bytes(char *buf, size_t n, double v)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	int u = 0;
	while (v >= 1023.995 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

/* 671026404352 -> "671,026,404,352" */
static const char *fmt_grouped(char *buf, size_t n, int64_t v)
{
	char digits[32];
	int len = snprintf(digits, sizeof digits, "%lld", (long long)(v < 0 ? -v : v));
	size_t k = 0;
	if (v < 0 && k + 1 < n)
		buf[k++] = '-';
	for (int i = 0; i < len && k + 2 < n; i++) {
		if (i && (len - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = digits[i];
	}
	buf[k] = 0;
	return buf;
}

static const char *precision_of(const struct ir_graph *g)
{
	const struct ir_setting *p = ir_graph_setting(g, "precision");
	return p && p->is_str && p->str ? p->str : "fp32";
}

/* The products and the memory of the weights, gradients and AdamW moments by precision:
 * fp8 (DeepSeek-V3's recipe, passes/fp8.c), bf16 or fp32. */
static void print_precision(const struct ir_graph *g, const struct pass_account *a,
			    const struct check_extra *x)
{
	char b1[64], b2[64], b3[64];
	const char *prec = precision_of(g);
	int fp8 = !strcmp(prec, "fp8"), bf16 = !strcmp(prec, "bf16");
	double n = (double)(a->params_total + a->params_mtp), f = a->flops_per_token;
	double f8 = a->flops_fp8_per_token;
	printf("  precision             %s\n", fp8 ? "fp8: E4M3 products in the linear and expert "
	       "layers (DeepSeek-V3's recipe)" : bf16 ? "bf16 products" : "fp32 throughout");
	if (fp8)
		printf("    GEMM FLOPs/token    fp8 %s (%.1f%%), bf16/f32 %s (output head, routers, "
		       "attention core)\n", fmt_flops(b1, sizeof b1, f8), f > 0 ? 100 * f8 / f : 0.0,
		       fmt_flops(b2, sizeof b2, f - f8));
	else
		printf("    GEMM FLOPs/token    %s %s (under fp8: %s of it, %.1f%%, in E4M3)\n",
		       bf16 ? "bf16" : "f32", fmt_flops(b1, sizeof b1, f),
		       fmt_flops(b2, sizeof b2, f8), f > 0 ? 100 * f8 / f : 0.0);
	printf("    weights             f32 master %s", fmt_bytes(b1, sizeof b1, 4 * n));
	if (fp8)
		printf(" + E4M3 copies %s (%s weights, with a scale per 128x128 block)",
		       fmt_bytes(b2, sizeof b2, (double)a->fp8_weight_bytes),
		       fmt_count(b3, sizeof b3, (double)a->params_fp8));
	else if (bf16)
		printf(" + bf16 copies %s", fmt_bytes(b2, sizeof b2, 2 * n));
	printf("\n    gradients           f32 %s\n", fmt_bytes(b1, sizeof b1, 4 * n));
	if (fp8)
		printf("    AdamW moments       bf16 %s (the recipe's; f32 would take %s)\n",
		       fmt_bytes(b1, sizeof b1, 4 * n), fmt_bytes(b2, sizeof b2, 8 * n));
	else
		printf("    AdamW moments       f32 %s\n", fmt_bytes(b1, sizeof b1, 8 * n));
	if (x->have_fp8)
		printf("    activations         %s per micro-batch after the fp8 pass (%s before: the "
		       "linear layers' inputs saved as their E4M3 copies where the backward reads "
		       "them only there)\n", fmt_bytes(b1, sizeof b1, (double)x->act_fp8),
		       fmt_bytes(b2, sizeof b2, (double)a->activation_bytes));
	if (x->ep > 1) {
		double t = x->a2a[0] + x->a2a[1] + x->a2a[2];
		printf("    all-to-all (ep %d)   %s a rank sends a micro-batch, forward and backward, "
		       "under an even routing, at the dtypes' widths", x->ep,
		       fmt_bytes(b1, sizeof b1, t));
		if (x->a2a[0] > 0)
			printf(": E4M3 rows %s + their scales %s, other rows %s",
			       fmt_bytes(b1, sizeof b1, x->a2a[0]), fmt_bytes(b2, sizeof b2, x->a2a[1]),
			       fmt_bytes(b3, sizeof b3, x->a2a[2]));
		printf("\n");
	}
}

static void print_report(const struct ir_graph *g, const char *file,
			 const struct pass_account *a, const struct check_extra *x, int verbose)
{
	char b1[64], b2[64], b3[64];
	printf("%s (%s)\n\n", g->model, file);
	printf("  parameters            %-10s %s\n", fmt_count(b1, sizeof b1, (double)a->params_total),
	       fmt_grouped(b2, sizeof b2, a->params_total));
	printf("    active per token    %-10s %s (routed experts not chosen and embedding rows "
	       "not read left out)\n",
	       fmt_count(b1, sizeof b1, (double)a->params_active),
	       fmt_grouped(b2, sizeof b2, a->params_active));
	if (a->params_mtp)
		printf("    MTP module          %-10s %s (apart; shares the embedding and the head)\n",
		       fmt_count(b1, sizeof b1, (double)a->params_mtp),
		       fmt_grouped(b2, sizeof b2, a->params_mtp));
	if (x->buffers)
		printf("    not trained         %-10s %s (buffers, e.g. routing biases: not counted)\n",
		       fmt_count(b1, sizeof b1, x->buffers),
		       fmt_grouped(b2, sizeof b2,
				   x->buffers < 9e18 ? (int64_t)x->buffers : INT64_MAX));
	printf("  training FLOPs/token  %s (forward + backward, matrix products)\n",
	       fmt_flops(b1, sizeof b1, a->flops_per_token));
	print_precision(g, a, x);
	if (x->tokens) {
		char shape[96];
		ir_shape_str(&x->tokens_shape, shape, sizeof shape);
		printf("  micro-batch           %s tokens %s\n",
		       fmt_grouped(b1, sizeof b1, x->tokens), shape);
	}
	printf("  activations           %s per micro-batch (saved for the backward)\n",
	       fmt_bytes(b1, sizeof b1, (double)a->activation_bytes));
	if (x->recompute)
		printf("    with recompute      %s per micro-batch, recompute = %s (%s without it: "
		       "the backward computes the difference again)\n",
		       fmt_bytes(b1, sizeof b1, (double)x->act_rc), x->recompute,
		       fmt_bytes(b2, sizeof b2,
				 (double)(x->have_fp8 ? x->act_fp8 : a->activation_bytes)));
	const struct ir_setting *prec = ir_graph_setting(g, "precision");
	if (prec && prec->is_str && !strcmp(prec->str, "bf16"))
		printf("  precision             bf16: products' operands and the activations between "
		       "them in bf16, norms, softmax, loss, routing, residual stream f32 "
		       "(passes/bf16.c)\n");
	if (x->have_plan)
		printf("  planned arena peak    %s (one slot per value: %s; %d ops in the step)\n",
		       fmt_bytes(b1, sizeof b1, (double)x->peak),
		       fmt_bytes(b2, sizeof b2, x->naive), x->n_ops_step);
	else
		printf("  planned arena peak    unavailable (the pass pipeline failed)\n");
	if (x->have_cpu_plan)
		printf("  CPU backend arena     %s (the LLVM backend's plan over its fused kernels: "
		       "what 'sluice train' allocates)\n",
		       fmt_bytes(b1, sizeof b1, (double)x->cpu_arena));
	if (x->have_gpu_plan)
		printf("  GPU backend memory    %s (the CUDA backend's plan over its fused kernels, "
		       "its outputs and cuBLASLt's workspace; parameters apart)\n",
		       fmt_bytes(b1, sizeof b1, (double)x->gpu_bytes));
	if (!verbose)
		return;
	printf("\n  %-16s %12s %12s %14s %14s\n", "layer", "params", "active", "FLOPs/token",
	       "activations");
	for (int i = 0; i < a->n_layers; i++) {
		const struct pass_layer_stats *l = &a->layers[i];
		char b4[64];
		printf("  %-16s %12s %12s %14s %14s\n", l->scope,
		       fmt_count(b1, sizeof b1, (double)l->params),
		       fmt_count(b2, sizeof b2, (double)l->params_active),
		       fmt_flops(b3, sizeof b3, l->flops_per_token),
		       fmt_bytes(b4, sizeof b4, (double)l->activation_bytes));
	}
}

struct check_layout;
static void json_stages(cJSON *o, const struct check_layout *cl);

static void print_json(const struct ir_graph *g, const char *file, const struct pass_account *a,
		       const struct check_extra *x, const struct check_layout *cl)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "model", g->model);
	cJSON_AddStringToObject(o, "file", file);
	cJSON_AddNumberToObject(o, "params_total", (double)a->params_total);
	cJSON_AddNumberToObject(o, "params_active", (double)a->params_active);
	cJSON_AddNumberToObject(o, "params_mtp", (double)a->params_mtp);
	cJSON_AddNumberToObject(o, "params_untrained", x->buffers);
	cJSON_AddNumberToObject(o, "flops_per_token", a->flops_per_token);
	cJSON_AddStringToObject(o, "precision", precision_of(g));
	cJSON_AddNumberToObject(o, "flops_fp8_per_token", a->flops_fp8_per_token);
	cJSON_AddNumberToObject(o, "params_fp8", (double)a->params_fp8);
	cJSON_AddNumberToObject(o, "fp8_weight_bytes", (double)a->fp8_weight_bytes);
	if (x->have_fp8)
		cJSON_AddNumberToObject(o, "activation_bytes_fp8", (double)x->act_fp8);
	if (x->ep > 1) {
		cJSON_AddNumberToObject(o, "all_to_all_bytes", x->a2a[0] + x->a2a[1] + x->a2a[2]);
		cJSON_AddNumberToObject(o, "all_to_all_bytes_e4m3", x->a2a[0]);
		cJSON_AddNumberToObject(o, "all_to_all_bytes_scales", x->a2a[1]);
	}
	if (x->recompute)
		cJSON_AddNumberToObject(o, "activation_bytes_recompute", (double)x->act_rc);
	if (x->tokens)
		cJSON_AddNumberToObject(o, "tokens_per_micro_batch", (double)x->tokens);
	else
		cJSON_AddNullToObject(o, "tokens_per_micro_batch");
	cJSON_AddNumberToObject(o, "activation_bytes", (double)a->activation_bytes);
	if (x->have_plan) {
		cJSON_AddNumberToObject(o, "planned_peak_bytes", (double)x->peak);
		cJSON_AddNumberToObject(o, "naive_bytes", x->naive);
	} else {
		cJSON_AddNullToObject(o, "planned_peak_bytes");
		cJSON_AddNullToObject(o, "naive_bytes");
	}
	if (x->have_cpu_plan)
		cJSON_AddNumberToObject(o, "cpu_arena_bytes", (double)x->cpu_arena);
	else
		cJSON_AddNullToObject(o, "cpu_arena_bytes");
	if (x->have_gpu_plan)
		cJSON_AddNumberToObject(o, "gpu_backend_bytes", (double)x->gpu_bytes);
	else
		cJSON_AddNullToObject(o, "gpu_backend_bytes");
	cJSON *layers = cJSON_AddArrayToObject(o, "layers");
	for (int i = 0; i < a->n_layers; i++) {
		const struct pass_layer_stats *l = &a->layers[i];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "scope", l->scope);
		cJSON_AddNumberToObject(e, "params", (double)l->params);
		cJSON_AddNumberToObject(e, "params_active", (double)l->params_active);
		cJSON_AddNumberToObject(e, "flops_per_token", l->flops_per_token);
		cJSON_AddNumberToObject(e, "activation_bytes", (double)l->activation_bytes);
		cJSON_AddItemToArray(layers, e);
	}
	if (cl)
		json_stages(o, cl);
	char *s = cJSON_PrintUnformatted(o);
	if (s) {
		puts(s);
		cJSON_free(s);
	}
	cJSON_Delete(o);
}

/* --- the pipeline stages ------------------------------------------------------------- */

struct check_layout {
	int shown;
	int ranks;
	struct pass_layout l;
	struct pass_partition p;
};

/* "0-14", "15" */
static const char *fmt_layers(char *buf, size_t n, const struct pass_stage_stats *st)
{
	if (st->n_layers == 1)
		snprintf(buf, n, "%d", st->first_layer);
	else
		snprintf(buf, n, "%d-%d", st->first_layer, st->first_layer + st->n_layers - 1);
	return buf;
}

static void print_stages(const struct check_layout *cl)
{
	const struct pass_layout *l = &cl->l;
	char b[10][64];
	printf("\n  pipeline stages: %d ranks = pp %d x dp %d, ep %d, %d micro-batch%s per rank "
	       "a step, %s, ZeRO-%d\n", cl->ranks, l->pp, l->dp, l->ep, l->microbatches,
	       l->microbatches == 1 ? "" : "es", l->schedule, l->zero);
	printf("  (memory of one rank of the stage; activations: one micro-batch times those "
	       "in flight)\n\n");
	printf("  %-5s %-7s %9s %9s %13s %10s %10s %10s %17s %10s %10s\n", "stage", "layers",
	       "params", "per rank", "FLOPs/token", "weights", "grads", "optimizer",
	       "activations", "comm", "total");
	for (int s = 0; s < cl->p.pp; s++) {
		const struct pass_stage_stats *st = &cl->p.stages[s];
		char acts[96];
		snprintf(acts, sizeof acts, "%s x%d",
			 fmt_bytes(b[6], sizeof b[6], st->inflight
				 ? (double)st->mem_acts / st->inflight : 0), st->inflight);
		printf("  %-5d %-7s %9s %9s %13s %10s %10s %10s %17s %10s %10s\n", s,
		       fmt_layers(b[0], sizeof b[0], st),
		       fmt_count(b[1], sizeof b[1], (double)st->params),
		       fmt_count(b[2], sizeof b[2], (double)st->params_per_rank),
		       fmt_flops(b[9], sizeof b[9], st->flops_per_token),
		       fmt_bytes(b[3], sizeof b[3], (double)st->mem_params),
		       fmt_bytes(b[4], sizeof b[4], (double)st->mem_grads),
		       fmt_bytes(b[5], sizeof b[5], (double)st->mem_optim), acts,
		       fmt_bytes(b[7], sizeof b[7], (double)st->mem_comm),
		       fmt_bytes(b[8], sizeof b[8], (double)st->mem_total));
	}
	printf("  balance %.3f (largest / mean stage compute time; head, MTP and embedding "
	       "included)\n", cl->p.balance);
	int64_t copied = cl->p.pp > 1 ? cl->p.stages[cl->p.pp - 1].params_copied : 0;
	if (copied)
		printf("  the last stage also holds a copy of %s parameters of stage 0 (the "
		       "embedding its MTP module or head reads)\n",
		       fmt_count(b[9], sizeof b[9], (double)copied));
	if (cl->p.pp == 2 * l->pp)
		printf("  dualpipev: %d stages on %d pipeline ranks, rank r holding stages r and "
		       "%d-r (its memory the sum of its two rows)\n", cl->p.pp, l->pp,
		       cl->p.pp - 1);
	else if (l->schedule && !strcmp(l->schedule, "dualpipe"))
		printf("  dualpipe: rank r holds stages r and %d-r, each held twice (its memory "
		       "the sum of its two rows)\n", l->pp - 1);
}

static void json_stages(cJSON *o, const struct check_layout *cl)
{
	const struct pass_layout *l = &cl->l;
	cJSON *lo = cJSON_AddObjectToObject(o, "layout");
	cJSON_AddNumberToObject(lo, "ranks", cl->ranks);
	cJSON_AddNumberToObject(lo, "pp", l->pp);
	cJSON_AddNumberToObject(lo, "dp", l->dp);
	cJSON_AddNumberToObject(lo, "ep", l->ep);
	cJSON_AddNumberToObject(lo, "microbatches", l->microbatches);
	cJSON_AddNumberToObject(lo, "zero", l->zero);
	cJSON_AddStringToObject(lo, "schedule", l->schedule);
	cJSON_AddNumberToObject(lo, "balance", cl->p.balance);
	cJSON *arr = cJSON_AddArrayToObject(o, "stages");
	for (int s = 0; s < cl->p.pp; s++) {
		const struct pass_stage_stats *st = &cl->p.stages[s];
		char b[64];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddNumberToObject(e, "stage", s);
		cJSON_AddStringToObject(e, "layers", fmt_layers(b, sizeof b, st));
		cJSON_AddNumberToObject(e, "first_layer", st->first_layer);
		cJSON_AddNumberToObject(e, "n_layers", st->n_layers);
		cJSON_AddNumberToObject(e, "params", (double)st->params);
		cJSON_AddNumberToObject(e, "params_per_rank", (double)st->params_per_rank);
		cJSON_AddNumberToObject(e, "params_copied", (double)st->params_copied);
		cJSON_AddNumberToObject(e, "flops_per_token", st->flops_per_token);
		cJSON_AddNumberToObject(e, "compute_s", st->compute_s);
		cJSON_AddNumberToObject(e, "inflight", st->inflight);
		cJSON_AddNumberToObject(e, "mem_params", (double)st->mem_params);
		cJSON_AddNumberToObject(e, "mem_grads", (double)st->mem_grads);
		cJSON_AddNumberToObject(e, "mem_optim", (double)st->mem_optim);
		cJSON_AddNumberToObject(e, "mem_acts", (double)st->mem_acts);
		cJSON_AddNumberToObject(e, "mem_comm", (double)st->mem_comm);
		cJSON_AddNumberToObject(e, "mem_total", (double)st->mem_total);
		cJSON_AddItemToArray(arr, e);
	}
}

/* The messages of a layout check, each line after "FILE: " as the model's errors are. */
static void print_prefixed(const char *file, char *text)
{
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		fprintf(stderr, "%s: %s\n", file, line);
		line = nl ? nl + 1 : NULL;
	}
}

/* The layout from the settings and --ranks: -1 when there is none to show, 0 when
 * it is read and possible, else the exit status (message printed). */
static int read_layout(const char *file, const struct ir_graph *g, int ranks,
		       struct check_layout *cl)
{
	char *text = NULL;
	size_t len = 0;
	FILE *msg = open_memstream(&text, &len);
	if (!msg) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	int rc = 0;
	if (pass_layout_read(g, ranks, &cl->l, msg)) {
		rc = EXIT_INPUT;
	} else if (!ranks && cl->l.pp == 1 && cl->l.ep == 1) {
		rc = -1;
	} else {
		cl->ranks = ranks ? ranks : cl->l.pp * cl->l.ep;
		if (pass_layout_check(g, &cl->l, cl->ranks, msg))
			rc = EXIT_INPUT;
		else
			cl->shown = 1;
	}
	fclose(msg);
	print_prefixed(file, text);
	free(text);
	return rc;
}

int cmd_check(int argc, char **argv)
{
	struct check_opts o = { 0 };
	int rc = parse_args(argc, argv, &o);
	if (rc >= 0) {
		args_overrides_free(&o.over);
		return rc;
	}
	/* a model, or textual IR at any stage (what 'sluice ir' prints) */
	int status = EXIT_INPUT;
	struct ir_graph *g = cmd_ir_read("check", o.file, &o.over, &status);
	if (!g) {
		args_overrides_free(&o.over);
		return status;
	}
	struct check_layout cl = { 0 };
	struct pass_account acct;
	struct check_extra x = { 0 };
	/* the precision's casts before everything counted (activations by their dtype) */
	if (pass_pipeline_run(g, "bf16", stderr)) {
		fprintf(stderr, "sluice check: %s: the pass pipeline failed\n", o.file);
		rc = EXIT_INPUT;
		goto out;
	}
	rc = read_layout(o.file, g, o.ranks, &cl);
	if (rc > 0)
		goto out;
	/* the stages are planned on the forward graph, as the figures above them */
	if (cl.shown) {
		/* into the schedule's stages, as train cuts them (dualpipev: 2 pp) */
		struct pass_layout cut = cl.l;
		if (cl.l.pp > 1) {
			struct pass_schedule sched;
			if (pass_schedule_build(cl.l.schedule, cl.l.pp, cl.l.microbatches, &sched,
						stderr)) {
				rc = EXIT_INPUT;
				goto out;
			}
			cut.pp = sched.stages;
			pass_schedule_free(&sched);
		}
		struct pass_rates rates = { 0, 0 };
		if (pass_partition_plan(g, &cut, &rates, &cl.p, stderr)) {
			fprintf(stderr, "sluice check: %s: no pipeline stages\n", o.file);
			rc = EXIT_INPUT;
			goto out;
		}
	}
	rc = EXIT_OK;
	if (pass_account(g, &acct)) {
		fprintf(stderr, "%s: error: the model's counts pass 2^63 (parameters or bytes)\n",
			o.file);
		rc = EXIT_INPUT;
		goto out;
	}
	count_extra(g, &x);
	/* the pipeline rewrites g: everything taken from the forward graph is taken above */
	if (plan_memory(o.file, g, &x))
		rc = EXIT_INPUT;
	if (o.json) {
		print_json(g, o.file, &acct, &x, cl.shown ? &cl : NULL);
	} else {
		print_report(g, o.file, &acct, &x, o.verbose);
		if (cl.shown)
			print_stages(&cl);
	}
	pass_account_free(&acct);
out:
	pass_partition_free(&cl.p);
	ir_graph_free(g);
	args_overrides_free(&o.over);
	return rc;
}
