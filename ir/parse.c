/*
 * parse.c - reads the textual IR that print.c writes (the grammar is in print.c).
 *
 * The parser takes any bytes: every malformed input gives one diagnostic,
 * "FILE:LINE:COL: error: message", the offending line and a caret, and NULL.  It
 * checks what it needs to build a well-formed graph (values defined before use and
 * once, arity from ops.def, dtypes, ranks, attribute syntax); the shape and dtype
 * rules of each op are ir_verify()'s job, so a parsed graph may still fail it.
 *
 * Value ids are kept: %7 in the text is value 7 of the graph, so that a graph with
 * gaps in its ids (left by passes that dropped ops) prints back identically.  Gaps
 * become values that no op defines.  Ids sparser than 16 per defined value (plus a
 * fixed slack) are refused, so that "%99999999" cannot make us allocate gigabytes.
 */
#include "ir.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VALUE_ID (1 << 24)

enum tok {
	T_EOF,
	T_NL,
	T_NAME,   /* identifier, dots allowed after the first char */
	T_VALUE,  /* %N */
	T_INT,
	T_FLOAT,
	T_STRING,
	T_PUNCT,  /* one of = , : { } [ ] @ */
};

struct parser {
	const char *src, *end, *p;
	const char *filename;
	FILE *err;
	struct ir_graph *g;
	jmp_buf fail;
	/* the current token */
	enum tok t;
	const char *tstart;
	int tline, tcol;
	char punct;
	long long ival;
	double fval;
	char *sval;        /* names and strings, in the graph's arena */
	/* position of p */
	int line;
	const char *line_start;
	/* value ids of the text -> values */
	struct ir_value **byid;
	int cap_byid;
	int max_id, max_id_line, max_id_col, n_defined;
	const char *last_file;
	int seen_model;
	void *tmp;         /* malloc'd scratch of the statement being parsed, freed on error */
};

static void error_at(struct parser *ps, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));

static void error_at(struct parser *ps, int line, int col, const char *fmt, ...)
{
	if (ps->err) {
		va_list ap;
		fprintf(ps->err, "%s:%d:%d: error: ", ps->filename, line, col);
		va_start(ap, fmt);
		vfprintf(ps->err, fmt, ap);
		va_end(ap);
		fputc('\n', ps->err);
		/* the source line, then a caret under the column */
		const char *ls = ps->src;
		for (int l = 1; l < line && ls < ps->end; ls++)
			if (*ls == '\n')
				l++;
		const char *le = ls;
		while (le < ps->end && *le != '\n')
			le++;
		int shown = 0;
		fputs("  ", ps->err);
		for (const char *c = ls; c < le && shown < 400; c++, shown++) {
			unsigned char ch = (unsigned char)*c;
			fputc(ch == '\t' ? ' ' : (ch < 0x20 || ch >= 0x7f) ? '?' : ch, ps->err);
		}
		if (le - ls > 400)
			fputs("...", ps->err);
		fputs("\n  ", ps->err);
		for (int c = 1; c < col && c <= 400; c++)
			fputc(' ', ps->err);
		fputs("^\n", ps->err);
	}
	longjmp(ps->fail, 1);
}

#define ERR(ps, ...) error_at((ps), (ps)->tline, (ps)->tcol, __VA_ARGS__)

static int col_of(struct parser *ps, const char *at)
{
	long c = at - ps->line_start + 1;
	return c > INT_MAX ? INT_MAX : (int)c;
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static const char *tok_desc(const struct parser *ps)
{
	switch (ps->t) {
	case T_EOF: return "end of file";
	case T_NL: return "end of line";
	case T_NAME: return "a name";
	case T_VALUE: return "a value";
	case T_INT: return "an integer";
	case T_FLOAT: return "a number";
	case T_STRING: return "a string";
	case T_PUNCT:
		switch (ps->punct) {
		case '=': return "'='";
		case ',': return "','";
		case ':': return "':'";
		case '{': return "'{'";
		case '}': return "'}'";
		case '[': return "'['";
		case ']': return "']'";
		default: return "'@'";
		}
	}
	return "?";
}

static void lex_string(struct parser *ps)
{
	/* p at the opening quote; the decoded string is never longer than the text */
	const char *q = ps->p + 1;
	size_t cap = 0;
	for (const char *r = q; r < ps->end && *r != '\n'; r++)
		cap++;
	char *buf = ir_alloc(ps->g->arena, cap + 1);
	size_t n = 0;
	for (;;) {
		if (q >= ps->end || *q == '\n')
			ERR(ps, "unterminated string");
		char c = *q;
		if (c == '"') {
			q++;
			break;
		}
		if (c == 0)
			error_at(ps, ps->line, col_of(ps, q), "NUL byte in a string");
		if (c == '\\') {
			const char *esc = q;
			q++;
			if (q >= ps->end)
				ERR(ps, "unterminated string");
			switch (*q) {
			case '"': c = '"'; q++; break;
			case '\\': c = '\\'; q++; break;
			case 'n': c = '\n'; q++; break;
			case 't': c = '\t'; q++; break;
			case 'x': {
				int v = 0;
				for (int k = 1; k <= 2; k++) {
					char h = q + k < ps->end ? q[k] : 0;
					int d = is_digit(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10
						: (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
					if (d < 0)
						error_at(ps, ps->line, col_of(ps, esc),
							 "\\x in a string needs two hex digits");
					v = v * 16 + d;
				}
				if (v == 0)
					error_at(ps, ps->line, col_of(ps, esc), "\\x00 in a string");
				c = (char)v;
				q += 3;
				break;
			}
			default:
				error_at(ps, ps->line, col_of(ps, esc),
					 "unknown escape in a string (use \\\" \\\\ \\n \\t \\xHH)");
			}
		} else {
			q++;
		}
		buf[n++] = c;
	}
	buf[n] = 0;
	ps->sval = buf;
	ps->t = T_STRING;
	ps->p = q;
}

static void lex_number(struct parser *ps)
{
	const char *q = ps->p;
	if (*q == '-' || *q == '+')
		q++;
	if (q < ps->end && is_alpha(*q)) {
		/* -inf, -nan */
		const char *s = q;
		while (q < ps->end && (is_alpha(*q) || is_digit(*q)))
			q++;
		if ((q - s == 3 && !strncmp(s, "inf", 3)) || (q - s == 3 && !strncmp(s, "nan", 3))) {
			ps->fval = !strncmp(s, "inf", 3) ? INFINITY : NAN;
			if (*ps->p == '-')
				ps->fval = -ps->fval;
			ps->t = T_FLOAT;
			ps->p = q;
			return;
		}
		ERR(ps, "malformed number");
	}
	int is_float = 0, digits = 0;
	while (q < ps->end && is_digit(*q))
		q++, digits++;
	if (q < ps->end && *q == '.') {
		is_float = 1;
		q++;
		while (q < ps->end && is_digit(*q))
			q++, digits++;
	}
	if (digits && q < ps->end && (*q == 'e' || *q == 'E')) {
		is_float = 1;
		q++;
		if (q < ps->end && (*q == '+' || *q == '-'))
			q++;
		int ed = 0;
		while (q < ps->end && is_digit(*q))
			q++, ed++;
		if (!ed)
			ERR(ps, "malformed number: exponent without digits");
	}
	if (!digits || (q < ps->end && (is_alpha(*q) || is_digit(*q) || *q == '.')))
		ERR(ps, "malformed number");
	char buf[128];
	size_t n = (size_t)(q - ps->p);
	if (n >= sizeof buf)
		ERR(ps, "number too long");
	memcpy(buf, ps->p, n);
	buf[n] = 0;
	errno = 0;
	if (is_float) {
		ps->fval = strtod(buf, NULL);
		ps->t = T_FLOAT;
	} else {
		ps->ival = strtoll(buf, NULL, 10);
		if (errno == ERANGE)
			ERR(ps, "integer out of range");
		ps->t = T_INT;
	}
	ps->p = q;
}

static void next(struct parser *ps)
{
	const char *p = ps->p;
	for (;;) {
		while (p < ps->end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		if (p < ps->end && *p == '#') {
			while (p < ps->end && *p != '\n')
				p++;
			continue;
		}
		break;
	}
	ps->p = p;
	ps->tstart = p;
	ps->tline = ps->line;
	ps->tcol = col_of(ps, p);
	if (p >= ps->end) {
		ps->t = T_EOF;
		return;
	}
	char c = *p;
	if (c == '\n') {
		ps->t = T_NL;
		ps->p = p + 1;
		ps->line++;
		ps->line_start = ps->p;
		return;
	}
	if (is_alpha(c)) {
		const char *q = p;
		while (q < ps->end && (is_alpha(*q) || is_digit(*q) || *q == '.'))
			q++;
		ps->sval = ir_strndup(ps->g->arena, p, (size_t)(q - p));
		ps->t = T_NAME;
		ps->p = q;
		return;
	}
	if (c == '%') {
		const char *q = p + 1;
		long long v = 0;
		if (q >= ps->end || !is_digit(*q))
			ERR(ps, "expected a value id after '%%'");
		while (q < ps->end && is_digit(*q)) {
			v = v * 10 + (*q - '0');
			if (v >= MAX_VALUE_ID)
				ERR(ps, "value id too large (the limit is %d)", MAX_VALUE_ID - 1);
			q++;
		}
		ps->ival = v;
		ps->t = T_VALUE;
		ps->p = q;
		return;
	}
	if (c == '"') {
		lex_string(ps);
		return;
	}
	if (is_digit(c) || c == '-' || c == '+') {
		lex_number(ps);
		return;
	}
	if (strchr("=,:{}[]@", c) && c) {
		ps->t = T_PUNCT;
		ps->punct = c;
		ps->p = p + 1;
		return;
	}
	if (c == 0)
		ERR(ps, "NUL byte in the input");
	if ((unsigned char)c >= 0x80)
		ERR(ps, "unexpected byte 0x%02x (non-ASCII text belongs in a quoted string)",
		    (unsigned char)c);
	if ((unsigned char)c < 0x20 || c == 0x7f)
		ERR(ps, "unexpected control character 0x%02x", (unsigned char)c);
	ERR(ps, "unexpected character '%c'", c);
}

static int is_punct(struct parser *ps, char c)
{
	return ps->t == T_PUNCT && ps->punct == c;
}

static void expect_punct(struct parser *ps, char c, const char *what)
{
	if (!is_punct(ps, c))
		ERR(ps, "expected '%c' %s, found %s", c, what, tok_desc(ps));
	next(ps);
}

static const char *expect_name(struct parser *ps, const char *what)
{
	if (ps->t != T_NAME && ps->t != T_STRING)
		ERR(ps, "expected %s, found %s", what, tok_desc(ps));
	const char *s = ps->sval;
	next(ps);
	return s;
}

static void expect_eol(struct parser *ps)
{
	if (ps->t != T_NL && ps->t != T_EOF)
		ERR(ps, "expected the end of the line, found %s", tok_desc(ps));
}

static struct ir_value *lookup(struct parser *ps)
{
	int id = (int)ps->ival;
	if (id >= ps->cap_byid || !ps->byid[id])
		ERR(ps, "value %%%d is used before it is defined", id);
	return ps->byid[id];
}

static void reserve_id(struct parser *ps, int id)
{
	if (id < ps->cap_byid)
		return;
	int c = ps->cap_byid ? ps->cap_byid : 256;
	while (c <= id)
		c *= 2;
	struct ir_value **nb = realloc(ps->byid, sizeof *nb * (size_t)c);
	if (!nb) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	memset(nb + ps->cap_byid, 0, sizeof *nb * (size_t)(c - ps->cap_byid));
	ps->byid = nb;
	ps->cap_byid = c;
}

static void *grow_tmp(struct parser *ps, size_t n)
{
	void *p = realloc(ps->tmp, n);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	ps->tmp = p;
	return p;
}

static void free_tmp(struct parser *ps)
{
	free(ps->tmp);
	ps->tmp = NULL;
}

static void parse_type(struct parser *ps, struct ir_value *v)
{
	if (ps->t != T_NAME)
		ERR(ps, "expected a type such as f32[16, 256], found %s", tok_desc(ps));
	enum ir_dtype dt;
	if (!ir_dtype_parse(ps->sval, &dt))
		ERR(ps, "unknown dtype '%s' (f32, bf16, f16, f8e4m3, f8e5m2, i32, i64)", ps->sval);
	next(ps);
	expect_punct(ps, '[', "after the dtype");
	struct ir_shape s = { 0 };
	if (!is_punct(ps, ']')) {
		for (;;) {
			if (ps->t != T_INT)
				ERR(ps, "expected a dimension, found %s", tok_desc(ps));
			if (ps->ival < 0)
				ERR(ps, "negative dimension %lld", ps->ival);
			if (s.rank == IR_MAX_RANK)
				ERR(ps, "too many dimensions (the limit is %d)", IR_MAX_RANK);
			s.dim[s.rank++] = ps->ival;
			next(ps);
			if (is_punct(ps, ']'))
				break;
			expect_punct(ps, ',', "or ']' in the shape");
		}
	}
	next(ps);
	v->dtype = dt;
	v->shape = s;
}

static void parse_attrs(struct parser *ps, struct ir_op *op)
{
	next(ps); /* '{' */
	if (is_punct(ps, '}')) {
		next(ps);
		return;
	}
	for (;;) {
		int line = ps->tline, col = ps->tcol;
		const char *name = expect_name(ps, "an attribute name");
		if (ir_op_attr(op, name))
			error_at(ps, line, col, "attribute '%s' given twice", name);
		expect_punct(ps, '=', "after the attribute name");
		switch (ps->t) {
		case T_INT:
			ir_op_set_int(ps->g, op, name, ps->ival);
			next(ps);
			break;
		case T_FLOAT:
			ir_op_set_float(ps->g, op, name, ps->fval);
			next(ps);
			break;
		case T_NAME:
			if (!strcmp(ps->sval, "inf") || !strcmp(ps->sval, "nan")) {
				ir_op_set_float(ps->g, op, name, ps->sval[0] == 'i' ? INFINITY : NAN);
				next(ps);
				break;
			}
			ERR(ps, "expected an attribute value (integer, number, \"string\" or "
				"[integers]), found the name '%s'", ps->sval);
		case T_STRING:
			ir_op_set_str(ps->g, op, name, ps->sval);
			next(ps);
			break;
		case T_PUNCT:
			if (ps->punct == '[') {
				int n = 0, cap = 0;
				int64_t *v = NULL;
				next(ps);
				while (!is_punct(ps, ']')) {
					if (ps->t != T_INT)
						ERR(ps, "expected an integer in the list, found %s",
						    tok_desc(ps));
					if (n == cap) {
						cap = cap ? 2 * cap : 8;
						v = grow_tmp(ps, sizeof *v * (size_t)cap);
					}
					v[n++] = ps->ival;
					next(ps);
					if (is_punct(ps, ']'))
						break;
					if (!is_punct(ps, ','))
						ERR(ps, "expected ',' or ']' in the list, found %s",
						    tok_desc(ps));
					next(ps);
				}
				next(ps);
				ir_op_set_ints(ps->g, op, name, n, v);
				free_tmp(ps);
				break;
			}
			/* fall through */
		default:
			ERR(ps, "expected an attribute value (integer, number, \"string\" or "
				"[integers]), found %s", tok_desc(ps));
		}
		if (is_punct(ps, '}')) {
			next(ps);
			return;
		}
		expect_punct(ps, ',', "or '}' between attributes");
	}
}

static int parse_int_field(struct parser *ps, const char *what)
{
	if (ps->t != T_INT)
		ERR(ps, "expected %s, found %s", what, tok_desc(ps));
	if (ps->ival < INT_MIN || ps->ival > INT_MAX)
		ERR(ps, "%s out of range", what);
	int v = (int)ps->ival;
	next(ps);
	return v;
}

static void parse_loc(struct parser *ps, struct ir_op *op)
{
	/* ps->p is right after '@'; the file name has its own lexical rules */
	const char *p = ps->p;
	const char *file = NULL;
	if (p < ps->end && *p == '"') {
		next(ps);
		file = ps->sval;
		next(ps);
		if (!is_punct(ps, ':'))
			ERR(ps, "expected ':' after the file name of the location");
		next(ps);
	} else if (p < ps->end && !is_digit(*p)) {
		const char *q = p;
		while (q < ps->end && (is_alpha(*q) || is_digit(*q) || strchr("./+~-", *q)) && *q)
			q++;
		if (q == p || q >= ps->end || *q != ':')
			error_at(ps, ps->line, col_of(ps, p),
				 "expected a location FILE:LINE:COL after '@'");
		if (ps->last_file && strlen(ps->last_file) == (size_t)(q - p) &&
		    !strncmp(ps->last_file, p, (size_t)(q - p)))
			file = ps->last_file;
		else
			file = ir_strndup(ps->g->arena, p, (size_t)(q - p));
		ps->p = q + 1;
		next(ps);
	} else {
		next(ps);
	}
	if (file && ps->last_file && !strcmp(file, ps->last_file))
		file = ps->last_file;
	ps->last_file = file ? file : ps->last_file;
	op->loc.file = file;
	op->loc.line = parse_int_field(ps, "a line number");
	expect_punct(ps, ':', "between the line and the column");
	op->loc.col = parse_int_field(ps, "a column number");
}

/* %A[:name], %B = op %X, %Y {attrs} : types trailer... (or without outputs) */
static void parse_op(struct parser *ps)
{
	struct def {
		int id, line, col;
		const char *name;
	} defs[16];
	int n_def = 0;
	if (ps->t == T_VALUE) {
		for (;;) {
			if (ps->t != T_VALUE)
				ERR(ps, "expected a value such as %%3, found %s", tok_desc(ps));
			if (n_def == (int)(sizeof defs / sizeof defs[0]))
				ERR(ps, "too many outputs");
			struct def *d = &defs[n_def++];
			d->id = (int)ps->ival;
			d->line = ps->tline;
			d->col = ps->tcol;
			d->name = NULL;
			if (d->id < ps->cap_byid && ps->byid[d->id])
				ERR(ps, "value %%%d is defined twice", d->id);
			for (int k = 0; k < n_def - 1; k++)
				if (defs[k].id == d->id)
					ERR(ps, "value %%%d is defined twice", d->id);
			next(ps);
			if (is_punct(ps, ':')) {
				next(ps);
				d->name = expect_name(ps, "a value name after ':'");
			}
			if (is_punct(ps, '='))
				break;
			expect_punct(ps, ',', "or '=' after the outputs");
		}
		next(ps);
	}
	if (ps->t != T_NAME)
		ERR(ps, "expected an op name, found %s", tok_desc(ps));
	int op_line = ps->tline, op_col = ps->tcol;
	enum ir_opkind kind;
	if (!ir_op_parse(ps->sval, &kind))
		ERR(ps, "unknown op '%s'", ps->sval);
	next(ps);

	/* inputs */
	struct ir_value **in = NULL;
	int n_in = 0, cap_in = 0;
	if (ps->t == T_VALUE) {
		for (;;) {
			if (ps->t != T_VALUE)
				ERR(ps, "expected a value such as %%3, found %s", tok_desc(ps));
			if (n_in == cap_in) {
				cap_in = cap_in ? cap_in * 2 : 4;
				in = grow_tmp(ps, sizeof *in * (size_t)cap_in);
			}
			struct ir_value *v = lookup(ps);
			in[n_in++] = v;
			next(ps);
			if (!is_punct(ps, ','))
				break;
			next(ps);
		}
	}
	int want_in = ir_op_arity_in(kind), want_out = ir_op_arity_out(kind);
	if (want_in >= 0 ? n_in != want_in : n_in < 1) {
		if (want_in >= 0)
			error_at(ps, op_line, op_col, "%s takes %d input%s, %d given",
				 ir_op_name(kind), want_in, want_in == 1 ? "" : "s", n_in);
		error_at(ps, op_line, op_col, "%s takes at least one input", ir_op_name(kind));
	}
	if (n_def != want_out)
		error_at(ps, op_line, op_col, "%s has %d output%s, %d given", ir_op_name(kind),
			 want_out, want_out == 1 ? "" : "s", n_def);
	struct ir_op *op = ir_op_new(ps->g, kind, n_in, in, n_def);
	free_tmp(ps);
	op->scope = "";
	op->loc = (struct ir_loc){ 0 };

	if (is_punct(ps, '{'))
		parse_attrs(ps, op);
	if (n_def) {
		if (!is_punct(ps, ':'))
			ERR(ps, "expected ':' and the output type%s, found %s", n_def > 1 ? "s" : "",
			    tok_desc(ps));
		next(ps);
		for (int i = 0; i < n_def; i++) {
			if (i)
				expect_punct(ps, ',', "between output types");
			parse_type(ps, op->out[i]);
		}
	}
	int seen_phase = 0, seen_stage = 0, seen_scope = 0, seen_path = 0, seen_loc = 0;
	while (ps->t != T_NL && ps->t != T_EOF) {
		if (is_punct(ps, '@')) {
			if (seen_loc++)
				ERR(ps, "location given twice");
			parse_loc(ps, op);
			continue;
		}
		if (ps->t != T_NAME)
			ERR(ps, "expected a phase, 'stage', 'scope', 'path', '@location' or the end "
				"of the line, found %s", tok_desc(ps));
		const char *w = ps->sval;
		if (!strcmp(w, "fwd") || !strcmp(w, "bwd_b") || !strcmp(w, "bwd_w") ||
		    !strcmp(w, "opt")) {
			if (seen_phase++)
				ERR(ps, "phase given twice");
			op->phase = w[0] == 'f' ? IR_PHASE_FWD : w[0] == 'o' ? IR_PHASE_OPT
				: w[4] == 'b' ? IR_PHASE_BWD_B : IR_PHASE_BWD_W;
			next(ps);
		} else if (!strcmp(w, "stage")) {
			if (seen_stage++)
				ERR(ps, "stage given twice");
			next(ps);
			op->stage = parse_int_field(ps, "a stage number");
		} else if (!strcmp(w, "scope")) {
			if (seen_scope++)
				ERR(ps, "scope given twice");
			next(ps);
			op->scope = expect_name(ps, "a scope");
		} else if (!strcmp(w, "path")) {
			if (seen_path++)
				ERR(ps, "path given twice");
			next(ps);
			op->path = expect_name(ps, "a parameter path");
		} else {
			ERR(ps, "unexpected '%s' (expected a phase, 'stage', 'scope', 'path' or "
				"'@location')", w);
		}
	}
	/* only now are the outputs visible: an op cannot use its own outputs */
	for (int i = 0; i < n_def; i++) {
		reserve_id(ps, defs[i].id);
		ps->byid[defs[i].id] = op->out[i];
		op->out[i]->name = defs[i].name;
		if (defs[i].id > ps->max_id) {
			ps->max_id = defs[i].id;
			ps->max_id_line = defs[i].line;
			ps->max_id_col = defs[i].col;
		}
		ps->n_defined++;
	}
}

static void parse_statement(struct parser *ps)
{
	if (ps->t == T_NAME && !strcmp(ps->sval, "model")) {
		if (ps->seen_model++)
			ERR(ps, "the model name is given twice");
		next(ps);
		ps->g->model = expect_name(ps, "the model name");
	} else if (ps->t == T_NAME && !strcmp(ps->sval, "train")) {
		next(ps);
		int line = ps->tline, col = ps->tcol;
		const char *name = expect_name(ps, "a setting name");
		if (ir_graph_setting(ps->g, name))
			error_at(ps, line, col, "setting '%s' given twice", name);
		expect_punct(ps, '=', "after the setting name");
		if (ps->t == T_STRING)
			ir_graph_set(ps->g, name, 0, ps->sval);
		else if (ps->t == T_INT)
			ir_graph_set(ps->g, name, (double)ps->ival, NULL);
		else if (ps->t == T_FLOAT)
			ir_graph_set(ps->g, name, ps->fval, NULL);
		else if (ps->t == T_NAME && (!strcmp(ps->sval, "inf") || !strcmp(ps->sval, "nan")))
			ir_graph_set(ps->g, name, ps->sval[0] == 'i' ? INFINITY : NAN, NULL);
		else
			ERR(ps, "expected a number or a \"string\", found %s", tok_desc(ps));
		next(ps);
	} else if (ps->t == T_NAME && !strcmp(ps->sval, "output")) {
		next(ps);
		int line = ps->tline, col = ps->tcol;
		const char *name = expect_name(ps, "an output name");
		if (ir_graph_output(ps->g, name))
			error_at(ps, line, col, "output '%s' given twice", name);
		expect_punct(ps, '=', "after the output name");
		if (ps->t != T_VALUE)
			ERR(ps, "expected a value such as %%3, found %s", tok_desc(ps));
		ir_graph_add_output(ps->g, name, lookup(ps));
		next(ps);
	} else {
		parse_op(ps);
	}
	expect_eol(ps);
}

/* Make value ids those of the text: g->values[id] is the value written %id. */
static void renumber(struct parser *ps)
{
	struct ir_graph *g = ps->g;
	int n = ps->n_defined ? ps->max_id + 1 : 0;
	if (n > 16 * ps->n_defined + 65536)
		error_at(ps, ps->max_id_line, ps->max_id_col,
			 "value ids are too sparse (%%%d with only %d values defined)", ps->max_id,
			 ps->n_defined);
	struct ir_value **vals = malloc(sizeof *vals * (size_t)(n ? n : 1));
	if (!vals)
		abort();
	for (int id = 0; id < n; id++) {
		struct ir_value *v = id < ps->cap_byid ? ps->byid[id] : NULL;
		if (!v) {
			v = ir_alloc(g->arena, sizeof *v); /* a gap: no op defines it */
			v->dtype = IR_F32;
		}
		v->id = id;
		vals[id] = v;
	}
	free(g->values);
	g->values = vals;
	g->n_values = g->cap_values = n;
}

struct ir_graph *ir_parse(const char *text, size_t len, const char *filename, FILE *err)
{
	/* on the heap: longjmp leaves locals changed after setjmp indeterminate */
	struct parser *const ps = calloc(1, sizeof *ps);
	if (!ps)
		abort();
	ps->src = ps->p = ps->line_start = text ? text : "";
	ps->end = ps->src + (text ? len : 0);
	ps->filename = filename ? filename : "<ir>";
	ps->err = err;
	ps->line = 1;
	ps->max_id = -1;
	ps->g = ir_graph_new("model");
	if (setjmp(ps->fail)) {
		free(ps->byid);
		free(ps->tmp);
		ir_graph_free(ps->g);
		free(ps);
		return NULL;
	}
	next(ps);
	while (ps->t != T_EOF) {
		if (ps->t == T_NL) {
			next(ps);
			continue;
		}
		parse_statement(ps);
		if (ps->t == T_NL)
			next(ps);
	}
	renumber(ps);
	struct ir_graph *g = ps->g;
	free(ps->byid);
	free(ps);
	return g;
}
