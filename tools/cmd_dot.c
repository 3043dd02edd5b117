/* cmd_dot.c - 'sluice dot': a picture of the graph.
 *
 * The DOT text comes from ir/dot.c.  OUT's extension picks what is written: .dot or
 * .gv writes the DOT text; .svg, .png or .pdf renders it through Graphviz's C library
 * (libgvc: layout "dot") when sluice was built with it.  Built without Graphviz, a
 * picture request writes the DOT text next to OUT (OUT with the extension .dot), says
 * so and gives the `dot` command that renders it, and exits 0: the picture is one
 * command away and nothing is lost. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SLUICE_HAVE_GRAPHVIZ
#include <graphviz/gvc.h>
#include <unistd.h>
#endif

#include "args.h"
#include "commands.h"
#include "ir/dot.h"
#include "passes/passes.h"
#include "runtime/program.h"

static void usage(FILE *f)
{
	const char *const *names = pass_pipeline_names();
	fprintf(f,
		"usage: sluice dot FILE -o OUT [--after PASS] [--collapse|--no-collapse]\n"
		"                  [--set NAME=VALUE]...\n"
		"\n"
		"Draw the graph of FILE (a model .sl or textual IR .ir) after the pass pipeline\n"
		"(or after PASS).  Nodes show the op, its output shape and dtype, parameters their\n"
		"path; scopes (layers, blocks) are clusters; backward ops are coloured by phase.\n"
		"OUT's extension picks the output: .svg, .png, .pdf (rendered with Graphviz%s),\n"
		".dot or .gv (DOT text).\n"
		"\n"
		"  -o OUT             the file to write\n"
		"  --after PASS       draw the graph after PASS; the passes, in order:",
#ifdef SLUICE_HAVE_GRAPHVIZ
		""
#else
		"; this build has no Graphviz: it writes OUT.dot and tells how to render it"
#endif
	);
	for (int i = 0; names[i]; i++)
		fprintf(f, " %s", names[i]);
	fprintf(f,
		"\n"
		"  --collapse         draw runs of identical layers once (\"layers.3 .. layers.60\n"
		"                     (x58)\"); the default when a family has more than %d layers\n"
		"  --no-collapse      draw every layer\n"
		"  --stages           draw the pipeline stages instead: every rank's compiled\n"
		"                     program as a cluster (its chunks in the order they run,\n"
		"                     its parameters), what the stages send each other per\n"
		"                     micro-batch as edges, gradient sums as dashed edges;\n"
		"                     the layout from the settings (pp, microbatches, ...)\n"
		"  --ranks N          with --stages: the ranks of the job (default: pp)\n"
		"  --set NAME=VALUE   override a constant or a train setting (repeatable)\n"
		"  -h, --help         this help\n",
		IR_DOT_AUTO_LAYERS);
}

struct dot_job {
	const struct ir_graph *g;
	struct ir_dot_options opt;
	struct rt_program **progs; /* --stages: every rank's program */
	int n_progs;
	char *cycle;               /* --stages, programs that fail to verify: the failure */
};

static void emit(const struct dot_job *j, FILE *f)
{
	if (j->cycle)
		fputs(j->cycle, f);
	else if (j->progs)
		rt_programs_dot(j->progs, j->n_progs, j->opt.title, f);
	else
		ir_dot_write(j->g, &j->opt, f);
}

static const char *extension(const char *path)
{
	const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
	return dot && (!slash || dot > slash) ? dot + 1 : "";
}

#ifdef SLUICE_HAVE_GRAPHVIZ
/* render DOT text to path in format fmt through libgvc, via a temporary file */
static int render(const char *cmd, const char *dot, const char *fmt, const char *path)
{
	size_t n = strlen(path) + 32;
	char *tmp = malloc(n);
	if (!tmp)
		abort();
	snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
	int status = EXIT_OK;
	GVC_t *gvc = gvContext();
	Agraph_t *gg = gvc ? agmemread(dot) : NULL;
	if (!gvc || !gg) {
		fprintf(stderr, "sluice %s: Graphviz could not read the DOT text (a bug: please "
				"report it with the .dot output)\n", cmd);
		status = EXIT_INPUT;
	} else if (gvLayout(gvc, gg, "dot") != 0) {
		fprintf(stderr, "sluice %s: Graphviz could not lay out the graph\n", cmd);
		status = EXIT_INPUT;
	} else {
		if (gvRenderFilename(gvc, gg, fmt, tmp) != 0) {
			fprintf(stderr, "sluice %s: Graphviz could not render %s (is its %s plugin "
					"installed? 'dot -c' registers plugins)\n", cmd, path, fmt);
			status = EXIT_INPUT;
		}
		gvFreeLayout(gvc, gg);
	}
	if (gg)
		agclose(gg);
	if (gvc)
		gvFreeContext(gvc);
	if (status == EXIT_OK && rename(tmp, path)) {
		fprintf(stderr, "sluice %s: cannot write '%s': %s\n", cmd, path, strerror(errno));
		status = EXIT_INPUT;
	}
	if (status != EXIT_OK)
		remove(tmp);
	free(tmp);
	return status;
}
#endif

static int write_text(FILE *f, const void *text)
{
	fputs(text, f);
	return ferror(f) != 0;
}

int cmd_draw_ext_ok(const char *outp)
{
	const char *ext = extension(outp);
	return !strcmp(ext, "dot") || !strcmp(ext, "gv") || !strcmp(ext, "svg") ||
	       !strcmp(ext, "png") || !strcmp(ext, "pdf");
}

int cmd_draw(const char *cmd, const char *dot, const char *outp)
{
	const char *ext = extension(outp);
	if (!strcmp(ext, "dot") || !strcmp(ext, "gv"))
		return cmd_ir_write_atomic(cmd, outp, write_text, dot);
#ifdef SLUICE_HAVE_GRAPHVIZ
	return render(cmd, dot, ext, outp);
#else
	size_t n = strlen(outp) + 8;
	char *dotp = malloc(n);
	if (!dotp)
		abort();
	snprintf(dotp, n, "%.*s.dot", (int)(strlen(outp) - strlen(ext) - 1), outp);
	int status = cmd_ir_write_atomic(cmd, dotp, write_text, dot);
	if (status == EXIT_OK)
		fprintf(stderr,
			"sluice %s: built without Graphviz: wrote %s instead of %s; render it with\n"
			"  dot -T%s %s -o %s\n",
			cmd, dotp, outp, ext, dotp, outp);
	free(dotp);
	return status;
#endif
}

static int draw(const struct dot_job *job, const char *outp)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m) {
		fprintf(stderr, "sluice dot: out of memory\n");
		return EXIT_INPUT;
	}
	emit(job, m);
	fclose(m);
	int status = cmd_draw("dot", text, outp);
	free(text);
	return status;
}

int cmd_dot(int argc, char **argv)
{
	const char *file = NULL, *after = NULL, *outp = NULL, *ranks_s = NULL;
	struct args_overrides over = { 0 };
	struct dot_job job = { .opt = { IR_DOT_COLLAPSE_AUTO, NULL } };
	int stages = 0;
	int status = -1;
	for (int i = 1; i < argc && status < 0;) {
		const char *a = argv[i];
		int r;
		if (args_is_help(a)) {
			usage(stdout);
			args_overrides_free(&over);
			return EXIT_OK;
		} else if ((r = cmd_ir_take_option(argc, argv, &i, "dot", &over, &after, &outp)) != 0) {
			if (r < 0)
				status = EXIT_USAGE;
		} else if (!strcmp(a, "--collapse")) {
			job.opt.collapse = IR_DOT_COLLAPSE_ON;
			i++;
		} else if (!strcmp(a, "--stages")) {
			stages = 1;
			i++;
		} else if ((r = args_take_value(argc, argv, &i, "--ranks", &ranks_s, "dot")) != 0) {
			if (r < 0)
				status = EXIT_USAGE;
		} else if (!strcmp(a, "--no-collapse")) {
			job.opt.collapse = IR_DOT_COLLAPSE_OFF;
			i++;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "sluice dot: unknown option '%s'\n", a);
			usage(stderr);
			status = EXIT_USAGE;
		} else if (file) {
			fprintf(stderr, "sluice dot: one file at a time ('%s' and '%s')\n", file, a);
			status = EXIT_USAGE;
		} else {
			file = a;
			i++;
		}
	}
	if (status < 0 && (!file || !outp)) {
		fprintf(stderr, "sluice dot: %s\n", !file ? "no file given" : "no output given (-o OUT)");
		usage(stderr);
		status = EXIT_USAGE;
	}
	if (status < 0) {
		if (!cmd_draw_ext_ok(outp)) {
			fprintf(stderr, "sluice dot: cannot tell the format of '%s' from its extension "
					"(.svg, .png, .pdf, .dot or .gv)\n", outp);
			status = EXIT_USAGE;
		}
	}
	int ranks = 0;
	if (status < 0 && ranks_s) {
		char *end;
		long v = strtol(ranks_s, &end, 10);
		if (!*ranks_s || *end || v < 1 || v > CMD_VERIFY_RANKS || !stages) {
			fprintf(stderr, "sluice dot: --ranks takes 1 to %d (a picture of more is "
				"no help) and goes with --stages\n", CMD_VERIFY_RANKS);
			status = EXIT_USAGE;
		}
		ranks = (int)v;
	}
	if (status < 0 && stages && after) {
		fprintf(stderr, "sluice dot: --stages draws the programs after every pass; drop "
			"--after\n");
		status = EXIT_USAGE;
	}
	if (status < 0)
		status = cmd_ir_check_pass("dot", after);
	if (status == EXIT_OK) {
		struct ir_graph *g = cmd_ir_load("dot", file, after, &over, &status);
		if (g) {
			char title[512];
			snprintf(title, sizeof title, "model %s%s%s", g->model,
				 after ? ", after " : "", after ? after : "");
			job.g = g;
			job.opt.title = title;
			if (stages) {
				snprintf(title, sizeof title, "model %s: pipeline stages", g->model);
				FILE *cycle = tmpfile();
				status = cmd_programs(file, g, ranks, -1, &job.progs, &job.n_progs,
						      cycle);
				/* programs that cannot finish, or do not pair: the cycle of
				 * waits, or the first mismatch, is the picture */
				long len = cycle && status != EXIT_OK && !fseek(cycle, 0, SEEK_END)
						   ? ftell(cycle) : 0;
				if (len > 0) {
					job.cycle = calloc((size_t)len + 1, 1);
					rewind(cycle);
					if (!job.cycle || fread(job.cycle, 1, (size_t)len, cycle) !=
								  (size_t)len)
						abort();
					if (draw(&job, outp) == EXIT_OK)
						fprintf(stderr, "sluice dot: the cycle of waits drawn in "
							"%s\n", outp);
				}
				if (cycle)
					fclose(cycle);
			}
			if (status == EXIT_OK)
				status = draw(&job, outp);
			free(job.cycle);
			for (int r = 0; r < job.n_progs; r++)
				rt_program_free(job.progs[r]);
			free(job.progs);
			ir_graph_free(g);
		}
	}
	args_overrides_free(&over);
	return status;
}
