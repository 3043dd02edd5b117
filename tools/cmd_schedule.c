/* cmd_schedule.c - 'sluice schedule': a pipeline schedule's per-rank action lists
 * (passes/schedule.c), simulated (passes/simulate.c): step time, bubble, peak
 * activations and parameters per rank; the actions as JSON, a Chrome/Perfetto trace or
 * a picture.
 *
 * Costs come from --costs (one set for every stage, in any unit) or from the model:
 * passes/partition.c's plan for the stages the schedule cuts (pp, or 2 pp for
 * dualpipev), each stage's training FLOPs of one micro-batch at PASS_DEFAULT_FLOPS,
 * split as matrix products split them: the forward a third, the backward two thirds,
 * half of which (a third of the whole) is the weight-grad W. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "passes/passes.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice schedule FILE [--set NAME=VALUE]... [--costs F=1,B=2,W=1,FB=3,T=0]\n"
		"                       [--json] [-o OUT] [--trace OUT.json] [--dot OUT]\n"
		"\n"
		"Simulate the pipeline schedule of FILE's settings (schedule, pp, microbatches:\n"
		"set them with --set) and print per rank the step time, the bubble (idle compute\n"
		"time inside the step), its share of the step, the peak micro-batches in flight\n"
		"and the parameters held (in model / pp).  Schedules: 1f1b, zb1p, dualpipe (pp\n"
		"even, microbatches even and >= 2 pp), dualpipev (2 pp stages, microbatches\n"
		">= 2 pp).\n"
		"\n"
		"  --costs LIST       every stage's costs: F forward, B full backward, W its\n"
		"                     weight-grad part, FB an overlapped forward + backward pair\n"
		"                     (default F + B), T a send between ranks (default 0);\n"
		"                     without it, from the model's stages at %.0f TFLOP/s\n"
		"  --json             print the simulation as JSON: per rank its actions in order\n"
		"                     (kind, micro-batch, stage, stream, start, end)\n"
		"  -o OUT             write the table or the JSON to OUT\n"
		"  --trace OUT.json   write a Chrome/Perfetto trace: a process per rank, a thread\n"
		"                     per stream (model costs in their time; --costs units as ms)\n"
		"  --dot OUT          draw the schedule: ranks as rows, actions in order,\n"
		"                     dependencies between ranks as edges (.svg, .png, .pdf, .dot)\n"
		"  --set NAME=VALUE   override a constant or a train setting (repeatable)\n"
		"  -h, --help         this help\n",
		PASS_DEFAULT_FLOPS / 1e12);
}

/* "F=1,B=2,W=1,FB=3,T=0": F, B and W required */
static int parse_costs(const char *s, double *f, double *b, double *w, double *fb, double *t)
{
	int seen = 0;
	*fb = 0;
	*t = 0;
	while (*s) {
		const char *eq = strchr(s, '=');
		if (!eq)
			goto bad;
		size_t n = (size_t)(eq - s);
		char *end;
		errno = 0;
		double v = strtod(eq + 1, &end);
		if (end == eq + 1 || errno || v < 0 || v > 1e12 || (*end && *end != ','))
			goto bad;
		if (n == 1 && *s == 'F')
			*f = v, seen |= 1;
		else if (n == 1 && *s == 'B')
			*b = v, seen |= 2;
		else if (n == 1 && *s == 'W')
			*w = v, seen |= 4;
		else if (n == 2 && !strncmp(s, "FB", 2))
			*fb = v;
		else if (n == 1 && *s == 'T')
			*t = v;
		else
			goto bad;
		s = *end ? end + 1 : end;
	}
	if (seen != 7 || *w > *b)
		goto bad;
	return 0;
bad:
	fprintf(stderr, "sluice schedule: --costs takes F=..,B=..,W=.. and optionally FB=..,T=..: "
		"non-negative numbers, W (the weight-grad part of the backward) at most B\n");
	return -1;
}

struct job {
	const char *name, *unit;
	double scale;             /* costs to the unit printed */
	const struct pass_schedule *s;
	const struct pass_sim *sim;
	double f0, b0, w0, fb, t; /* --costs, to print them */
	int from_model;
};

static int by_start(const void *pa, const void *pb)
{
	const struct pass_sim_event *a = pa, *b = pb;
	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	return a->stream - b->stream;
}

/* the events of rank r ordered by start (compute before communication at a tie); the
 * simulator keeps them per rank, compute in list order */
static struct pass_sim_event *rank_events(const struct pass_sim *sim, int r, int *n)
{
	struct pass_sim_event *e = malloc((size_t)(sim->n_events + 1) * sizeof *e);
	if (!e)
		abort();
	*n = 0;
	for (int i = 0; i < sim->n_events; i++)
		if (sim->events[i].rank == r)
			e[(*n)++] = sim->events[i];
	qsort(e, (size_t)*n, sizeof *e, by_start);
	return e;
}

static void print_header(const struct job *j, FILE *f)
{
	fprintf(f, "schedule %s: pp %d, %d micro-batches, %d stages\n", j->name, j->s->ranks,
		j->s->microbatches, j->s->stages);
	if (j->from_model)
		fprintf(f, "costs: each stage's FLOPs at %.0f TFLOP/s (F 1/3, B 2/3, W 1/3 of "
			"the stage's time), times in ms\n", PASS_DEFAULT_FLOPS / 1e12);
	else
		fprintf(f, "costs: F=%g B=%g W=%g FB=%g T=%g\n", j->f0, j->b0, j->w0,
			j->fb > 0 ? j->fb : j->f0 + j->b0, j->t);
}

static int write_table(FILE *f, const void *ctx)
{
	const struct job *j = ctx;
	const struct pass_sim *sim = j->sim;
	print_header(j, f);
	fprintf(f, "step %.6g%s\n\n", sim->step * j->scale, j->unit);
	fprintf(f, "%4s %12s %12s %7s %9s %7s\n", "rank", "busy", "bubble", "bubble%", "peak acts",
		"params");
	for (int r = 0; r < j->s->ranks; r++) {
		const struct pass_sim_rank *p = &sim->ranks[r];
		fprintf(f, "%4d %12.6g %12.6g %6.1f%% %9d %6gx\n", r, p->busy * j->scale,
			p->bubble * j->scale, sim->step > 0 ? 100 * p->bubble / sim->step : 0,
			p->peak_acts, p->params);
	}
	return ferror(f) != 0;
}

static int write_json(FILE *f, const void *ctx)
{
	const struct job *j = ctx;
	const struct pass_sim *sim = j->sim;
	fprintf(f, "{\"schedule\": \"%s\", \"pp\": %d, \"microbatches\": %d, \"stages\": %d, "
		"\"unit\": \"%s\", \"step\": %.9g,\n \"ranks\": [\n", j->name, j->s->ranks,
		j->s->microbatches, j->s->stages, j->from_model ? "ms" : "", sim->step * j->scale);
	for (int r = 0; r < j->s->ranks; r++) {
		const struct pass_sim_rank *p = &sim->ranks[r];
		fprintf(f, "  {\"rank\": %d, \"busy\": %.9g, \"bubble\": %.9g, \"bubble_ratio\": %.6f, "
			"\"peak_activations\": %d, \"params\": %g, \"actions\": [", r,
			p->busy * j->scale, p->bubble * j->scale,
			sim->step > 0 ? p->bubble / sim->step : 0, p->peak_acts, p->params);
		int n;
		struct pass_sim_event *e = rank_events(sim, r, &n);
		for (int i = 0; i < n; i++) {
			fprintf(f, "%s\n    {\"kind\": \"%s\", \"mb\": %d, \"stage\": %d, ",
				i ? "," : "", pass_act_name(e[i].act.kind), e[i].act.mb, e[i].act.stage);
			if (e[i].act.kind == PASS_ACT_FB)
				fprintf(f, "\"mb2\": %d, \"stage2\": %d, ", e[i].act.mb2, e[i].act.stage2);
			fprintf(f, "\"stream\": \"%s\", \"start\": %.9g, \"end\": %.9g}",
				e[i].stream ? "comm" : "compute", e[i].start * j->scale,
				e[i].end * j->scale);
		}
		free(e);
		fprintf(f, "]}%s\n", r + 1 < j->s->ranks ? "," : "");
	}
	fprintf(f, " ]}\n");
	return ferror(f) != 0;
}

static void act_label(const struct pass_act *a, char *buf, size_t n)
{
	if (a->kind == PASS_ACT_FB)
		snprintf(buf, n, "F%d.s%d + B%d.s%d", a->mb, a->stage, a->mb2, a->stage2);
	else
		snprintf(buf, n, "%s%d.s%d", pass_act_name(a->kind), a->mb, a->stage);
}

static int write_trace(FILE *f, const void *ctx)
{
	const struct job *j = ctx;
	const struct pass_sim *sim = j->sim;
	double us = j->scale * 1e3; /* the printed unit is ms (--costs: read as ms) */
	fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
	for (int r = 0; r < j->s->ranks; r++)
		fprintf(f, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"args\": "
			"{\"name\": \"rank %d\"}},\n{\"name\": \"thread_name\", \"ph\": \"M\", "
			"\"pid\": %d, \"tid\": 0, \"args\": {\"name\": \"compute\"}},\n"
			"{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 1, "
			"\"args\": {\"name\": \"comm\"}},\n", r, r, r, r);
	for (int i = 0; i < sim->n_events; i++) {
		const struct pass_sim_event *e = &sim->events[i];
		char label[64];
		act_label(&e->act, label, sizeof label);
		fprintf(f, "{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": %d, "
			"\"tid\": %d, \"ts\": %.6f, \"dur\": %.6f, \"args\": {\"mb\": %d, "
			"\"stage\": %d}},\n", label, pass_act_name(e->act.kind), e->rank, e->stream,
			e->start * us, (e->end - e->start) * us, e->act.mb, e->act.stage);
	}
	fprintf(f, "{\"name\": \"step\", \"ph\": \"i\", \"s\": \"g\", \"pid\": 0, \"tid\": 0, "
		"\"ts\": %.6f}\n]}\n", sim->step * us);
	return ferror(f) != 0;
}

/* DOT: each rank a cluster whose actions chain in list order (a row, left to right);
 * the forward and backward dependencies between stages as edges */
static char *dot_text(const struct job *j)
{
	const struct pass_schedule *s = j->s;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		abort();
	size_t n = (size_t)s->microbatches * (size_t)s->stages;
	/* node names per (mb, stage): its forward and its backward (B, BW or FB) */
	int *fnode = malloc(2 * n * sizeof *fnode);
	if (!fnode)
		abort();
	int *bnode = fnode + n;
	for (size_t i = 0; i < 2 * n; i++)
		fnode[i] = -1;
	fprintf(f, "digraph schedule {\n  label=\"%s: pp %d, %d micro-batches\"; labelloc=t;\n"
		"  rankdir=LR; newrank=true; node [shape=box, style=filled, fontsize=10];\n",
		j->name, s->ranks, s->microbatches);
	int id = 0;
	for (int r = 0; r < s->ranks; r++) {
		fprintf(f, "  subgraph cluster_rank%d {\n    label=\"rank %d\";\n", r, r);
		for (int i = 0; i < s->n_acts[r]; i++, id++) {
			const struct pass_act *a = &s->acts[r][i];
			static const char *const color[] = { "#9ecae1", "#fdae6b", "#a1d99b",
							     "#fd8d3c", "#c6dbef" };
			char label[64];
			act_label(a, label, sizeof label);
			fprintf(f, "    a%d [label=\"%s\", fillcolor=\"%s\"];\n", id, label,
				color[a->kind <= PASS_ACT_FB ? a->kind : 0]);
			if (i)
				fprintf(f, "    a%d -> a%d [color=gray];\n", id - 1, id);
			size_t k = (size_t)a->mb * (size_t)s->stages + (size_t)a->stage;
			if (a->kind == PASS_ACT_F || a->kind == PASS_ACT_FB)
				fnode[k] = id;
			if (a->kind == PASS_ACT_B || a->kind == PASS_ACT_BW)
				bnode[k] = id;
			if (a->kind == PASS_ACT_FB)
				bnode[(size_t)a->mb2 * (size_t)s->stages + (size_t)a->stage2] = id;
		}
		fprintf(f, "  }\n");
	}
	for (int m = 0; m < s->microbatches; m++)
		for (int st = 0; st + 1 < s->stages; st++) {
			size_t k = (size_t)m * (size_t)s->stages + (size_t)st;
			if (pass_schedule_rank(s, m, st) == pass_schedule_rank(s, m, st + 1))
				continue;
			fprintf(f, "  a%d -> a%d [color=\"#3182bd\", constraint=false];\n", fnode[k],
				fnode[k + 1]);
			fprintf(f, "  a%d -> a%d [color=\"#e6550d\", constraint=false];\n",
				bnode[k + 1], bnode[k]);
		}
	fprintf(f, "}\n");
	fclose(f);
	free(fnode);
	return text;
}

/* every stage's costs from the model: the plan for s->stages stages */
static int model_costs(const char *file, const struct args_overrides *over,
		       const struct pass_schedule *s, double *f, double *b, double *w)
{
	int status;
	struct ir_graph *g = cmd_ir_load("schedule", file, NULL, over, &status);
	if (!g)
		return status;
	struct pass_layout l;
	struct pass_rates rates = { 0, 0 };
	struct pass_partition plan;
	status = EXIT_INPUT;
	if (!pass_layout_read(g, 0, &l, stderr)) {
		l.pp = s->stages;
		if (!pass_partition_plan(g, &l, &rates, &plan, stderr)) {
			for (int st = 0; st < s->stages; st++) {
				double t = plan.stages[st].compute_s;
				f[st] = t / 3, b[st] = 2 * t / 3, w[st] = t / 3;
			}
			pass_partition_free(&plan);
			status = EXIT_OK;
		}
	}
	if (status != EXIT_OK)
		fprintf(stderr, "sluice schedule: %s: no stage costs for %d stages (above); "
			"--costs gives them\n", file, s->stages);
	ir_graph_free(g);
	return status;
}

static int write_stdout(int (*write)(FILE *, const void *), const void *ctx)
{
	if (write(stdout, ctx) || fflush(stdout)) {
		fprintf(stderr, "sluice schedule: cannot write the output: %s\n", strerror(errno));
		return EXIT_INPUT;
	}
	return EXIT_OK;
}

int cmd_schedule(int argc, char **argv)
{
	const char *file = NULL, *costs_s = NULL, *outp = NULL, *trace = NULL, *dotp = NULL;
	struct args_overrides over = { 0 };
	int json = 0, status = -1;
	for (int i = 1; i < argc && status < 0;) {
		const char *a = argv[i];
		int r;
		if (args_is_help(a)) {
			usage(stdout);
			args_overrides_free(&over);
			return EXIT_OK;
		} else if (!strcmp(a, "--json")) {
			json = 1;
			i++;
		} else if ((r = args_take_set(argc, argv, &i, &over, "schedule")) != 0 ||
			   (r = args_take_value(argc, argv, &i, "--costs", &costs_s, "schedule")) != 0 ||
			   (r = args_take_value(argc, argv, &i, "-o", &outp, "schedule")) != 0 ||
			   (r = args_take_value(argc, argv, &i, "--trace", &trace, "schedule")) != 0 ||
			   (r = args_take_value(argc, argv, &i, "--dot", &dotp, "schedule")) != 0) {
			if (r < 0)
				status = EXIT_USAGE;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "sluice schedule: unknown option '%s'\n", a);
			usage(stderr);
			status = EXIT_USAGE;
		} else if (file) {
			fprintf(stderr, "sluice schedule: one file at a time ('%s' and '%s')\n", file, a);
			status = EXIT_USAGE;
		} else {
			file = a;
			i++;
		}
	}
	if (status < 0 && !file) {
		fprintf(stderr, "sluice schedule: no file given\n");
		usage(stderr);
		status = EXIT_USAGE;
	}
	if (status < 0 && dotp && !cmd_draw_ext_ok(dotp)) {
		fprintf(stderr, "sluice schedule: cannot tell the format of '%s' from its extension "
			"(.svg, .png, .pdf, .dot or .gv)\n", dotp);
		status = EXIT_USAGE;
	}
	struct job j = { .unit = "", .scale = 1 };
	if (status < 0 && costs_s && parse_costs(costs_s, &j.f0, &j.b0, &j.w0, &j.fb, &j.t))
		status = EXIT_USAGE;
	if (status >= 0) {
		args_overrides_free(&over);
		return status;
	}

	/* the settings: read the model's (and the --set overrides) without the passes */
	struct ir_graph *g = cmd_ir_read("schedule", file, &over, &status);
	struct pass_layout l;
	struct pass_schedule s = { 0 };
	char name[32] = "";
	if (g) {
		status = EXIT_INPUT;
		if (!pass_layout_read(g, 0, &l, stderr) &&
		    !pass_schedule_build(l.schedule, l.pp, l.microbatches, &s, stderr)) {
			snprintf(name, sizeof name, "%s", l.schedule);
			j.name = name;
			status = EXIT_OK;
		}
	}
	ir_graph_free(g);
	double *c = NULL;
	if (status == EXIT_OK) {
		c = malloc(3 * (size_t)s.stages * sizeof *c);
		if (!c)
			abort();
		if (costs_s) {
			for (int st = 0; st < s.stages; st++)
				c[st] = j.f0, c[s.stages + st] = j.b0, c[2 * s.stages + st] = j.w0;
		} else {
			status = model_costs(file, &over, &s, c, c + s.stages, c + 2 * s.stages);
			j.from_model = 1;
			j.unit = " ms";
			j.scale = 1e3;
		}
	}
	struct pass_sim sim = { 0 };
	if (status == EXIT_OK) {
		struct pass_sched_costs pc = { c, c + s.stages, c + 2 * s.stages, j.fb, j.t };
		if (pass_schedule_simulate(&s, &pc, &sim, stderr))
			status = EXIT_INPUT;
	}
	j.s = &s;
	j.sim = &sim;
	if (status == EXIT_OK) {
		int (*write)(FILE *, const void *) = json ? write_json : write_table;
		status = outp ? cmd_ir_write_atomic("schedule", outp, write, &j)
			      : write_stdout(write, &j);
	}
	if (status == EXIT_OK && trace)
		status = cmd_ir_write_atomic("schedule", trace, write_trace, &j);
	if (status == EXIT_OK && dotp) {
		char *text = dot_text(&j);
		status = cmd_draw("schedule", text, dotp);
		free(text);
	}
	pass_sim_free(&sim);
	pass_schedule_free(&s);
	free(c);
	args_overrides_free(&over);
	return status;
}
