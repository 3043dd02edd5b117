/* cpu_step.c - one training step (forward + backward as pass_autodiff makes it) of a
 * model on the CPU backend through LLVM against the reference executor: compile time,
 * step time (median of several for LLVM, of fewer for the slow reference), and the
 * achieved GFLOP/s from the FLOPs per token of pass_account times the tokens per step.
 * Usage: cpu_step MODEL.sl [NAME=VALUE ...] [--ref-steps N] [--steps N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "runtime/rt.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *t, int n)
{
	qsort(t, (size_t)n, sizeof *t, cmp);
	return t[n / 2];
}

static void **bind_random(const struct cg_backend *be, struct cg_exec *e,
			  const struct ir_graph *g)
{
	void **bufs = rt_calloc((size_t)g->n_ops + 1, sizeof *bufs);
	srand(1);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_INPUT && op->kind != IR_OP_PARAM)
			continue;
		const struct ir_value *v = op->out[0];
		int64_t n = ir_shape_numel(&v->shape);
		void *b = rt_calloc((size_t)n + 1, 8);
		for (int64_t j = 0; j < n; j++) {
			if (v->dtype == IR_I32)
				((int32_t *)b)[j] = rand() % 256;
			else if (v->dtype == IR_I64)
				((int64_t *)b)[j] = rand() % 256;
			else
				((float *)b)[j] = (float)(rand() / (double)RAND_MAX - 0.5) * 0.2f;
		}
		be->bind(e, v->id, b);
		bufs[i] = b;
	}
	return bufs;
}

static double time_steps(const struct cg_backend *be, const struct ir_graph *g, int steps,
			 double *compile_s, float *loss)
{
	double t0 = rt_now();
	struct cg_exec *e = be->compile(g, stderr);
	*compile_s = rt_now() - t0;
	if (!e)
		exit(1);
	void **bufs = bind_random(be, e, g);
	double *t = rt_calloc((size_t)steps, sizeof *t);
	for (int s = 0; s < steps; s++) {
		t0 = rt_now();
		if (be->run(e))
			exit(1);
		t[s] = rt_now() - t0;
	}
	*loss = *(float *)be->tensor(e, ir_graph_output(g, "loss")->id);
	double m = median(t, steps);
	free(t);
	be->free(e);
	for (int i = 0; i < g->n_ops; i++)
		free(bufs[i]);
	free(bufs);
	return m;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: cpu_step MODEL.sl [NAME=VALUE ...] [--steps N] [--ref-steps N]\n");
		return 2;
	}
	struct sl_override over[32];
	int n_over = 0, steps = 10, ref_steps = 2;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
			steps = atoi(argv[++i]);
			continue;
		}
		if (!strcmp(argv[i], "--ref-steps") && i + 1 < argc) {
			ref_steps = atoi(argv[++i]);
			continue;
		}
		char *eq = strchr(argv[i], '=');
		if (!eq || n_over == 32)
			return 2;
		*eq = 0;
		over[n_over++] = (struct sl_override){ argv[i], eq + 1 };
	}
	struct ir_graph *g = sl_compile_file(argv[1], n_over, over, stderr);
	if (!g)
		return 1;
	struct pass_account acct;
	if (pass_account(g, &acct))
		return 1;
	double tokens = ir_graph_setting_num(g, "batch", 1) * ir_graph_setting_num(g, "seq", 1);
	if (pass_autodiff(g, stderr))
		return 1;
	double flops = acct.flops_per_token * tokens;
	pass_account_free(&acct);
	double cl, cr;
	float ll, lr;
	double tl = time_steps(&cg_backend_llvm, g, steps, &cl, &ll);
	double tr = ref_steps > 0 ? time_steps(&cg_backend_ref, g, ref_steps, &cr, &lr) : 0;
	printf("model %s: %d ops after autodiff, %.0f tokens/step, %.3f GFLOP/step\n", argv[1],
	       g->n_ops, tokens, flops / 1e9);
	printf("llvm: compile %.2f s, step %.4f s (median of %d), %.1f GFLOP/s, %.0f tokens/s, loss %.6f\n",
	       cl, tl, steps, flops / tl / 1e9, tokens / tl, ll);
	if (ref_steps > 0)
		printf("ref:  step %.3f s (median of %d), %.2f GFLOP/s, loss %.6f; llvm is %.1fx faster\n",
		       tr, ref_steps, flops / tr / 1e9, lr, tr / tl);
	ir_graph_free(g);
	return 0;
}
