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
		"usage: sluice check FILE [--json] [--verbose] [--set NAME=VALUE]...\n"
		"\n"
		"Parameters (total, the MTP module apart, active per token), training FLOPs per\n"
		"token (forward + backward), activation memory per micro-batch and the planned\n"
		"peak of the memory arena of one training step, for a model file (.sl).\n"
		"\n"
		"  --json             print one JSON object instead of the report\n"
		"  --verbose          add a table of the figures per layer\n"
		"  --set NAME=VALUE   override a constant or a train setting (repeatable)\n"
		"  -h, --help         this help\n"
		"\n"
		"Exit status 0; 2 for bad usage; 1 for an error in the model, and also when the\n"
		"pass pipeline fails: the figures are printed then without the memory plan.  The\n"
		"rules behind each figure open passes/account.c and passes/memplan.c.\n");
}

struct check_opts {
	const char *file;
	int json, verbose;
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
};

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
	if (pass_pipeline_run(g, NULL, stderr)) {
		fprintf(stderr, "sluice check: %s: no memory plan: the pass pipeline failed\n",
			file);
		return -1;
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
#ifdef SLUICE_HAVE_LLVM
	x->have_cpu_plan = cg_llvm_arena_plan(g, &x->cpu_arena, stderr) == 0;
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
	if (x->tokens) {
		char shape[96];
		ir_shape_str(&x->tokens_shape, shape, sizeof shape);
		printf("  micro-batch           %s tokens %s\n",
		       fmt_grouped(b1, sizeof b1, x->tokens), shape);
	}
	printf("  activations           %s per micro-batch (saved for the backward)\n",
	       fmt_bytes(b1, sizeof b1, (double)a->activation_bytes));
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

static void print_json(const struct ir_graph *g, const char *file, const struct pass_account *a,
		       const struct check_extra *x)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "model", g->model);
	cJSON_AddStringToObject(o, "file", file);
	cJSON_AddNumberToObject(o, "params_total", (double)a->params_total);
	cJSON_AddNumberToObject(o, "params_active", (double)a->params_active);
	cJSON_AddNumberToObject(o, "params_mtp", (double)a->params_mtp);
	cJSON_AddNumberToObject(o, "params_untrained", x->buffers);
	cJSON_AddNumberToObject(o, "flops_per_token", a->flops_per_token);
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
	char *s = cJSON_PrintUnformatted(o);
	if (s) {
		puts(s);
		cJSON_free(s);
	}
	cJSON_Delete(o);
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
	struct pass_account acct;
	struct check_extra x = { 0 };
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
	if (o.json)
		print_json(g, o.file, &acct, &x);
	else
		print_report(g, o.file, &acct, &x, o.verbose);
	pass_account_free(&acct);
out:
	ir_graph_free(g);
	args_overrides_free(&o.over);
	return rc;
}
