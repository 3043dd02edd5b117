/*
 * pipeline.c - the passes over the IR, in order.
 *
 * Takes: a forward graph from the frontend (or a textual IR file, at any stage).
 * Runs: the passes of the list below, one a line, each ir -> ir; after every pass the
 * graph is verified, so a pass that breaks the IR is named at once.  Stops after the
 * pass given as `after` (`sluice ir --after NAME` prints the IR there).
 *
 * Memory planning and accounting read the IR but do not rewrite it: they are not in
 * this list (passes/memplan.c, passes/account.c are called by their users).
 *
 * To add a pass: one line in `passes`, in its place in the order.
 */
#include "passes.h"

#include <string.h>

/* "verify" is a pass of its own, so that `--after verify` prints the input as read */
static int pass_verify(struct ir_graph *g, FILE *err)
{
	return ir_verify(g, err);
}

static const struct pass {
	const char *name;
	int (*run)(struct ir_graph *g, FILE *err);
} passes[] = {
	{ "verify", pass_verify },
	{ "bf16", pass_bf16 },
	{ "autodiff", pass_autodiff },
	{ "expert_parallel", pass_expert_parallel },
	{ "fp8", pass_fp8 },
	{ "recompute", pass_recompute },
	{ "chunk", pass_chunk },
};

#define N_PASSES ((int)(sizeof passes / sizeof passes[0]))

const char *const *pass_pipeline_names(void)
{
	static const char *names[N_PASSES + 1];
	for (int i = 0; i < N_PASSES; i++)
		names[i] = passes[i].name;
	names[N_PASSES] = NULL;
	return names;
}

int pass_pipeline_run(struct ir_graph *g, const char *after, FILE *err)
{
	int stop = N_PASSES - 1;
	if (after) {
		for (stop = 0; stop < N_PASSES && strcmp(passes[stop].name, after); stop++)
			;
		if (stop == N_PASSES) {
			if (err) {
				fprintf(err, "error: unknown pass '%s'; the passes are:", after);
				for (int i = 0; i < N_PASSES; i++)
					fprintf(err, " %s", passes[i].name);
				fputc('\n', err);
			}
			return 1;
		}
	}
	for (int i = 0; i <= stop; i++) {
		int r = passes[i].run(g, err);
		if (r && passes[i].run == pass_verify) {
			if (err)
				fprintf(err, "error: the IR does not verify (%d problem%s)\n", r,
					r == 1 ? "" : "s");
			return 1;
		}
		if (r) {
			if (err)
				fprintf(err, "error: pass '%s' failed\n", passes[i].name);
			return 1;
		}
		if (passes[i].run != pass_verify && ir_verify(g, err)) {
			if (err)
				fprintf(err, "error: internal: the IR after pass '%s' does not verify "
					     "(a bug in that pass)\n", passes[i].name);
			return 1;
		}
	}
	return 0;
}
