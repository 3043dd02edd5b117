/* test_ir_models.c - every model of models/ (globbed now, so new models are covered):
 * it compiles to a graph that verifies, and its IR prints, parses and prints back to
 * the same text, before the passes and after all of them; its DOT picture is written.
 * The forward IR of tiny_gpt is compared with tests/ir/golden/tiny_gpt.ir.  After every
 * pass of the pipeline, the IR read back runs through the passes again unchanged (the
 * tiny models also with precision = bf16). */
#include <glob.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "frontend/frontend.h"
#include "golden.h"
#include "ir/dot.h"
#include "irtest.h"
#include "passes/passes.h"

static void round_trip(const struct ir_graph *g, const char *what)
{
	char *a = ir_print_str(g);
	struct sink s;
	struct ir_graph *h = ir_parse(a, strlen(a), what, sink_open(&s));
	char *errs = sink_take(&s);
	CHECKF(h, "%s: the printed IR does not parse:\n%s", what, errs);
	if (h) {
		char *b = ir_print_str(h);
		CHECKF(!strcmp(a, b), "%s: print, parse, print differs", what);
		int n = ir_verify(h, stderr);
		CHECKF(n == 0, "%s: the parsed IR does not verify (%d problems)", what, n);
		free(b);
		ir_graph_free(h);
	}
	free(errs);
	free(a);
}

static void check_model(const char *path)
{
	clock_t t0 = clock();
	struct ir_graph *g = sl_compile_file(path, 0, NULL, stderr);
	CHECKF(g, "%s does not compile", path);
	if (!g)
		return;
	int n = ir_verify(g, stderr);
	CHECKF(n == 0, "%s: the compiled graph does not verify", path);
	char what[512];
	snprintf(what, sizeof what, "%s (forward)", path);
	round_trip(g, what);
	int r = pass_pipeline_run(g, NULL, stderr);
	CHECKF(r == 0, "%s: the pass pipeline fails", path);
	if (r == 0) {
		snprintf(what, sizeof what, "%s (after all passes)", path);
		round_trip(g, what);
	}
	struct sink s;
	ir_dot_write(g, NULL, sink_open(&s));
	char *dot = sink_take(&s);
	CHECKF(!strncmp(dot, "digraph", 7) && dot[strlen(dot) - 2] == '}', "%s: DOT", path);
	free(dot);
	fprintf(stderr, "%s: %d ops, round trip ok (%.2f s)\n", path, g->n_ops,
		(double)(clock() - t0) / CLOCKS_PER_SEC);
	ir_graph_free(g);
}

/* What `sluice ir m.sl --after P > m.ir; sluice ir m.ir --after P` does, for every
 * pass P of the pipeline (new passes are covered as they are listed): the text printed
 * after P parses back, every pass up to P runs again on it (each must leave a graph that
 * went through it as is), and the text printed is the same.  The same text run through
 * the rest of the pipeline prints what the whole pipeline prints from the model. */
static void check_stages(const char *path, int n_over, const struct sl_override *over)
{
	struct ir_graph *full = sl_compile_file(path, n_over, over, stderr);
	if (!full || pass_pipeline_run(full, NULL, stderr)) {
		CHECKF(0, "%s: does not compile and run the pipeline", path);
		ir_graph_free(full);
		return;
	}
	char *want_full = ir_print_str(full);
	ir_graph_free(full);
	const char *const *names = pass_pipeline_names();
	for (int p = 0; names[p]; p++) {
		struct ir_graph *g = sl_compile_file(path, n_over, over, stderr);
		if (!g)
			break;
		int r = pass_pipeline_run(g, names[p], stderr);
		CHECKF(r == 0, "%s: the pipeline fails up to %s", path, names[p]);
		char *a = r == 0 ? ir_print_str(g) : NULL;
		ir_graph_free(g);
		if (!a)
			continue;
		for (int rest = 0; rest < 2; rest++) {
			struct sink s;
			struct ir_graph *h = ir_parse(a, strlen(a), path, sink_open(&s));
			char *errs = sink_take(&s);
			CHECKF(h, "%s after %s: the printed IR does not parse:\n%s", path, names[p],
			       errs);
			free(errs);
			if (!h)
				break;
			CHECKF(sl_settings_check_graph(h, stderr) == 0,
			       "%s after %s: train settings refused", path, names[p]);
			/* rest 0: `sluice ir m.ir --after P`; rest 1: `sluice ir m.ir` */
			r = pass_pipeline_run(h, rest ? NULL : names[p], stderr);
			CHECKF(r == 0, "%s after %s: the passes fail on the graph read back%s", path,
			       names[p], rest ? " (whole pipeline)" : "");
			if (r == 0) {
				char *b = ir_print_str(h);
				CHECKF(!strcmp(rest ? want_full : a, b),
				       "%s after %s: read back and %s, the IR differs", path,
				       names[p], rest ? "run through the pipeline" : "printed");
				free(b);
			}
			ir_graph_free(h);
		}
		free(a);
	}
	free(want_full);
}

int main(void)
{
	/* the golden forward IR of tiny_gpt */
	struct ir_graph *g = sl_compile_file("models/tiny_gpt.sl", 0, NULL, stderr);
	CHECKF(g, "models/tiny_gpt.sl does not compile");
	if (g) {
		char *text = ir_print_str(g);
		CHECK(golden_compare("tests/ir/golden/tiny_gpt.ir", text));
		free(text);
		ir_graph_free(g);
	}
	glob_t gl;
	int r = glob("models/*.sl", 0, NULL, &gl);
	CHECKF(r == 0 && gl.gl_pathc > 0, "no models/*.sl found (run from the source root)");
	for (size_t i = 0; r == 0 && i < gl.gl_pathc; i++)
		check_model(gl.gl_pathv[i]);
	for (size_t i = 0; r == 0 && i < gl.gl_pathc; i++)
		check_stages(gl.gl_pathv[i], 0, NULL);
	/* precision bf16: its pass rewrites the forward graph */
	static const struct sl_override bf16[] = { { "precision", "bf16" } };
	check_stages("models/tiny_gpt.sl", 1, bf16);
	check_stages("models/tiny_moe.sl", 1, bf16);
	if (r == 0)
		globfree(&gl);
	return CHECK_DONE();
}
