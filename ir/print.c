/*
 * print.c - the textual form of the IR.
 *
 * One statement a line; '#' starts a comment.  The grammar, which parse.c reads back:
 *
 *   model NAME
 *   train NAME = NUMBER | "STRING"               one line per train setting
 *   %ID[:NAME], ... = OP %IN, ... {ATTR = VALUE, ...} : TYPE, ... TRAILER...
 *   OP %IN, ... {ATTR = VALUE, ...} TRAILER...    an op without outputs (send)
 *   output NAME = %ID
 *
 * TYPE is dtype[dims], e.g. f32[16, 256] (a scalar is f32[]).  An attribute VALUE is an
 * integer (12), a float (0.02, 1.0, -inf, nan: always with a '.', an exponent or a
 * name, so that it never reads back as an integer), a string ("normal") or a list of
 * integers ([0, 2, 1, 3]).  TRAILER, each at most once, in this order when printed:
 * the phase (bwd_b, bwd_w or opt; fwd is left out), "stage N" when assigned,
 * "scope S" when not top level, "path P" for parameters, "@FILE:LINE:COL" for the
 * source location.  Names that are not plain dotted identifiers are quoted.
 *
 * %ID is the value's id in the graph, so that the numbers match what passes and the
 * verifier report; ids need not be dense.  Floats are printed with the fewest digits
 * that read back to the same double, so print -> parse -> print is exact.
 */
#include "ir.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_name(const char *s)
{
	if (!s || !*s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '.'))
			return 0;
	return 1;
}

static void print_quoted(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void print_name(FILE *out, const char *s)
{
	if (is_name(s))
		fputs(s, out);
	else
		print_quoted(out, s ? s : "");
}

/* The shortest %.Ng that reads back to exactly d. */
static void format_double(char *buf, size_t n, double d)
{
	if (isnan(d)) {
		snprintf(buf, n, signbit(d) ? "-nan" : "nan");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, n, d < 0 ? "-inf" : "inf");
		return;
	}
	if (d == floor(d) && fabs(d) < 1e16) {
		snprintf(buf, n, "%.0f", d); /* exact: 10000, not 1e+04 */
		return;
	}
	for (int p = 1; p <= 17; p++) {
		snprintf(buf, n, "%.*g", p, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

static void print_float_attr(FILE *out, double d)
{
	char buf[64];
	format_double(buf, sizeof buf, d);
	fputs(buf, out);
	if (!strpbrk(buf, ".eEna"))
		fputs(".0", out);
}

/* a train setting: integers without a point; -0 keeps its sign through "-0.0" */
static void print_number(FILE *out, double d)
{
	if (d == 0 && signbit(d)) {
		fputs("-0.0", out);
		return;
	}
	char buf[64];
	format_double(buf, sizeof buf, d);
	fputs(buf, out);
}

static void print_type(FILE *out, const struct ir_value *v)
{
	fprintf(out, "%s[", ir_dtype_name(v->dtype));
	int rank = v->shape.rank < 0 ? 0 : v->shape.rank > IR_MAX_RANK ? IR_MAX_RANK : v->shape.rank;
	for (int i = 0; i < rank; i++)
		fprintf(out, "%s%lld", i ? ", " : "", (long long)v->shape.dim[i]);
	fputc(']', out);
}

static int is_bare_file(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr("_./+~-", *s)))
			return 0;
	return 1;
}

static void print_op(FILE *out, const struct ir_op *op)
{
	for (int i = 0; i < op->n_out; i++) {
		const struct ir_value *v = op->out[i];
		fprintf(out, "%s%%%d", i ? ", " : "", v ? v->id : -1);
		if (v && v->name && *v->name) {
			fputc(':', out);
			print_name(out, v->name);
		}
	}
	fprintf(out, "%s%s", op->n_out ? " = " : "", ir_op_name(op->kind));
	for (int i = 0; i < op->n_in; i++)
		fprintf(out, "%s%%%d", i ? ", " : " ", op->in[i] ? op->in[i]->id : -1);
	if (op->n_attr) {
		fputs(" {", out);
		for (int i = 0; i < op->n_attr; i++) {
			const struct ir_attr *a = &op->attr[i];
			fprintf(out, "%s", i ? ", " : "");
			print_name(out, a->name);
			fputs(" = ", out);
			switch (a->kind) {
			case IR_ATTR_INT:
				fprintf(out, "%lld", (long long)a->i);
				break;
			case IR_ATTR_FLOAT:
				print_float_attr(out, a->f);
				break;
			case IR_ATTR_STR:
				print_quoted(out, a->s ? a->s : "");
				break;
			case IR_ATTR_INTS:
				fputc('[', out);
				for (int k = 0; k < a->n; k++)
					fprintf(out, "%s%lld", k ? ", " : "", (long long)a->ints[k]);
				fputc(']', out);
				break;
			}
		}
		fputc('}', out);
	}
	for (int i = 0; i < op->n_out; i++) {
		fputs(i ? ", " : " : ", out);
		if (op->out[i])
			print_type(out, op->out[i]);
		else
			fputs("?[]", out);
	}
	if (op->phase != IR_PHASE_FWD)
		fprintf(out, " %s", ir_phase_name(op->phase));
	if (op->stage != -1)
		fprintf(out, " stage %d", op->stage);
	if (op->scope && *op->scope) {
		fputs(" scope ", out);
		print_name(out, op->scope);
	}
	if (op->path) {
		fputs(" path ", out);
		print_name(out, op->path);
	}
	if (op->loc.file) {
		fputs(" @", out);
		if (is_bare_file(op->loc.file))
			fputs(op->loc.file, out);
		else
			print_quoted(out, op->loc.file);
		fprintf(out, ":%d:%d", op->loc.line, op->loc.col);
	} else if (op->loc.line || op->loc.col) {
		fprintf(out, " @%d:%d", op->loc.line, op->loc.col);
	}
	fputc('\n', out);
}

void ir_print(const struct ir_graph *g, FILE *out)
{
	fputs("model ", out);
	print_name(out, g->model ? g->model : "model");
	fputc('\n', out);
	for (int i = 0; i < g->n_settings; i++) {
		const struct ir_setting *s = &g->settings[i];
		fputs("train ", out);
		print_name(out, s->name);
		fputs(" = ", out);
		if (s->is_str)
			print_quoted(out, s->str ? s->str : "");
		else
			print_number(out, s->num);
		fputc('\n', out);
	}
	fputc('\n', out);
	for (int i = 0; i < g->n_ops; i++)
		print_op(out, g->ops[i]);
	if (g->n_outputs)
		fputc('\n', out);
	for (int i = 0; i < g->n_outputs; i++) {
		fputs("output ", out);
		print_name(out, g->output_names[i]);
		fprintf(out, " = %%%d\n", g->outputs[i] ? g->outputs[i]->id : -1);
	}
}
