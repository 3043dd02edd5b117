/* cmd_ir.c - 'sluice ir': the IR of a model after any pass, in the textual form of
 * ir/print.c (which ir/parse.c reads back: `sluice ir` takes its own output).
 *
 * Also home of cmd_ir_load(), the "model file or IR file, then the pass pipeline"
 * front shared with 'sluice dot'. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "codegen/program.h"
#include "commands.h"
#include "train.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

static void usage(FILE *f)
{
	const char *const *names = pass_pipeline_names();
	fprintf(f,
		"usage: sluice ir FILE [--after PASS] [--set NAME=VALUE]... [-o OUT]\n"
		"\n"
		"Print the IR of FILE after the pass pipeline (or after PASS) in the textual form,\n"
		"which 'sluice ir' reads back.  FILE is a model (.sl) or textual IR (.ir, or any\n"
		"file with a line starting with '%%<digit>').\n"
		"\n"
		"  --after PASS       stop after PASS; the passes, in order:");
	for (int i = 0; names[i]; i++)
		fprintf(f, " %s", names[i]);
	fprintf(f,
		"\n"
		"  --set NAME=VALUE   override a constant or a train setting (repeatable; for\n"
		"                     textual IR, train settings only)\n"
		"  --rank R           print the compiled program of rank R instead (after all\n"
		"                     the passes): its buffers, chunks, communication ops,\n"
		"                     actions and parameters for the layout of the settings\n"
		"                     (pp, microbatches, schedule) on --ranks N ranks\n"
		"  --ranks N          the ranks of the job (default: pp)\n"
		"  -o OUT             write to OUT instead of standard output\n"
		"  -h, --help         this help\n");
}

/* --- loading: model or IR, overrides, passes ------------------------------------ */

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0, k;
	char *buf = malloc(cap);
	if (!buf)
		abort();
	while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
		n += k;
		if (n == cap) {
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb)
				abort();
			buf = nb;
		}
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		errno = EIO;
		return NULL;
	}
	*len = n;
	return buf;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && !strcmp(s + n - m, suffix);
}

/* textual IR: by extension, else by content (a line "%<digit>...": no model has one) */
static int looks_like_ir(const char *path, const char *text, size_t len)
{
	if (ends_with(path, ".ir"))
		return 1;
	if (ends_with(path, ".sl"))
		return 0;
	for (size_t i = 0; i + 1 < len; i++)
		if ((i == 0 || text[i - 1] == '\n') && text[i] == '%' && text[i + 1] >= '0' &&
		    text[i + 1] <= '9')
			return 1;
	return 0;
}

/* --set on textual IR: train settings only (constants were folded into shapes) */
static int apply_overrides_ir(const char *cmd, struct ir_graph *g,
			      const struct args_overrides *over)
{
	for (int k = 0; k < over->n; k++) {
		const char *name = over->v[k].name, *val = over->v[k].value;
		const struct ir_setting *s = ir_graph_setting(g, name);
		if (!s) {
			fprintf(stderr, "sluice %s: --set %s: textual IR has no train setting '%s' "
					"(constants are already folded into its shapes); settings:",
				cmd, name, name);
			for (int i = 0; i < g->n_settings; i++)
				fprintf(stderr, " %s", g->settings[i].name);
			fputc('\n', stderr);
			return EXIT_INPUT;
		}
		char *end;
		errno = 0;
		double num = strtod(val, &end);
		if (s->is_str)
			ir_graph_set(g, name, 0, val);
		else if (*val && !*end && errno == 0)
			ir_graph_set(g, name, num, NULL);
		else {
			fprintf(stderr, "sluice %s: --set %s=%s: the setting is a number\n", cmd, name,
				val);
			return EXIT_INPUT;
		}
	}
	return EXIT_OK;
}

int cmd_ir_check_pass(const char *cmd, const char *after)
{
	if (!after)
		return EXIT_OK;
	const char *const *names = pass_pipeline_names();
	for (int i = 0; names[i]; i++)
		if (!strcmp(names[i], after))
			return EXIT_OK;
	fprintf(stderr, "sluice %s: unknown pass '%s'; the passes, in order:", cmd, after);
	for (int i = 0; names[i]; i++)
		fprintf(stderr, " %s", names[i]);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

struct ir_graph *cmd_ir_read(const char *cmd, const char *path,
			     const struct args_overrides *over, int *status)
{
	*status = EXIT_INPUT;
	if (ends_with(path, ".sl"))
		return sl_compile_file(path, over->n, over->v, stderr);
	size_t len = 0;
	char *text = read_all(path, &len);
	if (!text) {
		fprintf(stderr, "sluice %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
		return NULL;
	}
	struct ir_graph *g;
	if (looks_like_ir(path, text, len)) {
		g = ir_parse(text, len, path, stderr);
		if (g && apply_overrides_ir(cmd, g, over) != EXIT_OK) {
			ir_graph_free(g);
			g = NULL;
		}
		if (g && sl_settings_check_graph(g, stderr)) {
			fprintf(stderr, "%s: error: the graph's train settings are refused (above)\n",
				path);
			ir_graph_free(g);
			g = NULL;
		}
	} else {
		g = sl_compile_source(text, len, path, over->n, over->v, stderr);
	}
	free(text);
	return g;
}

struct ir_graph *cmd_ir_load(const char *cmd, const char *path, const char *after,
			     const struct args_overrides *over, int *status)
{
	struct ir_graph *g = cmd_ir_read(cmd, path, over, status);
	if (!g)
		return NULL;
	if (pass_pipeline_run(g, after, stderr)) {
		ir_graph_free(g);
		*status = EXIT_INPUT;
		return NULL;
	}
	*status = EXIT_OK;
	return g;
}

/* write through a temporary file in OUT's directory, then rename: never half-written */
int cmd_ir_write_atomic(const char *cmd, const char *path,
			int (*write)(FILE *f, const void *ctx), const void *ctx)
{
	size_t n = strlen(path) + 32;
	char *tmp = malloc(n);
	if (!tmp)
		abort();
	snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
	FILE *f = fopen(tmp, "wb");
	if (!f) {
		fprintf(stderr, "sluice %s: cannot write '%s': %s\n", cmd, path, strerror(errno));
		free(tmp);
		return EXIT_INPUT;
	}
	int bad = write(f, ctx);
	bad |= fflush(f) != 0;
	bad |= fsync(fileno(f)) != 0;
	bad |= fclose(f) != 0;
	if (bad || rename(tmp, path)) {
		fprintf(stderr, "sluice %s: cannot write '%s': %s\n", cmd, path, strerror(errno));
		remove(tmp);
		free(tmp);
		return EXIT_INPUT;
	}
	free(tmp);
	return EXIT_OK;
}

/* --- the command ------------------------------------------------------------------ */

static int write_ir(FILE *f, const void *g)
{
	ir_print(g, f);
	return ferror(f) != 0;
}

int cmd_ir_take_option(int argc, char **argv, int *i, const char *cmd,
		       struct args_overrides *over, const char **after, const char **outp)
{
	int r = args_take_set(argc, argv, i, over, cmd);
	if (r == 0)
		r = args_take_value(argc, argv, i, "--after", after, cmd);
	if (r == 0)
		r = args_take_value(argc, argv, i, "-o", outp, cmd);
	return r < 0 ? -1 : r;
}

static int write_program(FILE *f, const void *p)
{
	rt_program_print(p, f);
	return ferror(f) != 0;
}

static int parse_nonneg(const char *opt, const char *s, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (!*s || *end || v < 0 || v > 1000000) {
		fprintf(stderr, "sluice ir: %s takes a non-negative integer, got '%s'\n", opt, s);
		return -1;
	}
	*out = (int)v;
	return 0;
}

int cmd_programs(const char *file, struct ir_graph *g, int ranks, int only,
		 struct rt_program ***out, int *n_out, FILE *cycle)
{
	struct cg_layout l;
	*out = NULL;
	*n_out = 0;
	if (ranks <= 0) {
		double pp = ir_graph_setting_num(g, "pp", 1), ep = ir_graph_setting_num(g, "ep", 1);
		ranks = pp >= 1 && pp <= 64 && ep >= 1 && ep <= 4096 ? (int)(pp * ep) : 1;
	}
	if (train_layout(file, g, ranks, &l))
		return EXIT_INPUT;
	int rc_stages = cg_assign_stages(g, &l, stderr);
	free((void *)l.layer_stage);
	if (rc_stages)
		return EXIT_INPUT;
	/* every rank's program, checked together; past CMD_VERIFY_RANKS ranks only the one
	 * asked for (only >= 0), unchecked: building them all would take minutes */
	struct rt_program **all = calloc((size_t)ranks, sizeof *all);
	if (!all)
		abort();
	int bad = 0, every = ranks <= CMD_VERIFY_RANKS || only < 0;
	if (only >= ranks) {
		fprintf(stderr, "sluice: --rank %d: the job has %d ranks\n", only, ranks);
		free(all);
		return EXIT_USAGE;
	}
	if (!every)
		fprintf(stderr, "sluice: note: %d ranks: rank %d's program alone, not checked "
			"against the others (that is done up to %d ranks)\n", ranks, only,
			CMD_VERIFY_RANKS);
	for (int r = 0; r < ranks && !bad; r++)
		if (every || r == only)
			bad = !(all[r] = cg_program_build(g, &l, r, NULL, stderr));
	if (!bad && every && rt_program_verify_dot(all, ranks, stderr, cycle)) {
		fprintf(stderr, "sluice: %s: the programs of the %d ranks do not match (above)\n",
			file, ranks);
		bad = 1;
	}
	if (bad) {
		for (int r = 0; r < ranks; r++)
			rt_program_free(all[r]);
		free(all);
		return EXIT_INPUT;
	}
	*out = all;
	*n_out = ranks;
	return EXIT_OK;
}

/* The program of one rank: the graph after every pass, cut by the layout. */
static int print_rank_program(const char *file, struct ir_graph *g, int rank, int ranks,
			      const char *outp)
{
	struct rt_program **all;
	int n;
	int status = cmd_programs(file, g, ranks, rank, &all, &n, NULL);
	if (status != EXIT_OK)
		return status;
	if (rank >= n) {
		fprintf(stderr, "sluice ir: --rank %d: the job has %d ranks\n", rank, n);
		status = EXIT_USAGE;
	} else if (outp) {
		status = cmd_ir_write_atomic("ir", outp, write_program, all[rank]);
	} else {
		rt_program_print(all[rank], stdout);
		if (fflush(stdout))
			status = EXIT_INPUT;
	}
	for (int r = 0; r < n; r++)
		rt_program_free(all[r]);
	free(all);
	return status;
}

int cmd_ir(int argc, char **argv)
{
	const char *file = NULL, *after = NULL, *outp = NULL, *rank_s = NULL, *ranks_s = NULL;
	struct args_overrides over = { 0 };
	int status = -1;
	for (int i = 1; i < argc && status < 0;) {
		const char *a = argv[i];
		int r;
		if (args_is_help(a)) {
			usage(stdout);
			args_overrides_free(&over);
			return EXIT_OK;
		} else if ((r = cmd_ir_take_option(argc, argv, &i, "ir", &over, &after, &outp)) != 0 ||
			   (r = args_take_value(argc, argv, &i, "--rank", &rank_s, "ir")) != 0 ||
			   (r = args_take_value(argc, argv, &i, "--ranks", &ranks_s, "ir")) != 0) {
			if (r < 0)
				status = EXIT_USAGE;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "sluice ir: unknown option '%s'\n", a);
			usage(stderr);
			status = EXIT_USAGE;
		} else if (file) {
			fprintf(stderr, "sluice ir: one file at a time ('%s' and '%s')\n", file, a);
			status = EXIT_USAGE;
		} else {
			file = a;
			i++;
		}
	}
	if (status < 0 && !file) {
		fprintf(stderr, "sluice ir: no file given\n");
		usage(stderr);
		status = EXIT_USAGE;
	}
	int rank = -1, ranks = 0;
	if (status < 0 && ((rank_s && parse_nonneg("--rank", rank_s, &rank)) ||
			   (ranks_s && parse_nonneg("--ranks", ranks_s, &ranks))))
		status = EXIT_USAGE;
	if (status < 0 && rank >= 0 && after) {
		fprintf(stderr, "sluice ir: --rank prints the program after every pass; drop "
			"--after\n");
		status = EXIT_USAGE;
	}
	if (status < 0)
		status = cmd_ir_check_pass("ir", after);
	if (status == EXIT_OK) {
		struct ir_graph *g = cmd_ir_load("ir", file, after, &over, &status);
		if (g && rank >= 0) {
			status = print_rank_program(file, g, rank, ranks, outp);
			ir_graph_free(g);
		} else if (g) {
			if (outp) {
				status = cmd_ir_write_atomic("ir", outp, write_ir, g);
			} else {
				ir_print(g, stdout);
				if (fflush(stdout)) {
					fprintf(stderr, "sluice ir: cannot write the output: %s\n",
						strerror(errno));
					status = EXIT_INPUT;
				}
			}
			ir_graph_free(g);
		}
	}
	args_overrides_free(&over);
	return status;
}
