/*
 * diag.c - diagnostics of the model language.
 *
 * An error prints "FILE:LINE:COL: error: MESSAGE", the source line, a caret under the
 * column and, where one helps, "hint: ...".  Then it ends the compilation (longjmp to
 * sl_compile_source, which frees everything).  Very long lines are shown as a window
 * around the column; bytes that would garble a terminal are shown as '?'.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/fe.h"

static const char *const tok_names[T_COUNT] = {
	[T_EOF] = "end of file", [T_IDENT] = "a name", [T_INT] = "an integer",
	[T_FLOAT] = "a number", [T_STR] = "a string",
	[T_LPAREN] = "'('", [T_RPAREN] = "')'", [T_LBRACK] = "'['", [T_RBRACK] = "']'",
	[T_LBRACE] = "'{'", [T_RBRACE] = "'}'", [T_COMMA] = "','", [T_COLON] = "':'",
	[T_SEMI] = "';'", [T_QUESTION] = "'?'", [T_DOTDOT] = "'..'", [T_DOT] = "'.'",
	[T_ASSIGN] = "'='", [T_PLUSEQ] = "'+='", [T_MINUSEQ] = "'-='", [T_STAREQ] = "'*='",
	[T_SLASHEQ] = "'/='", [T_PLUS] = "'+'", [T_MINUS] = "'-'", [T_STAR] = "'*'",
	[T_SLASH] = "'/'", [T_PERCENT] = "'%'", [T_POW] = "'**'", [T_EQ] = "'=='",
	[T_NE] = "'!='", [T_LT] = "'<'", [T_LE] = "'<='", [T_GT] = "'>'", [T_GE] = "'>='",
	[T_AND] = "'&&'", [T_OR] = "'||'", [T_NOT] = "'!'",
	[T_MODEL] = "'model'", [T_CONST] = "'const'", [T_BLOCK] = "'block'",
	[T_GRAPH] = "'graph'", [T_TRAIN] = "'train'", [T_FOR] = "'for'", [T_IN] = "'in'",
	[T_IF] = "'if'", [T_ELSE] = "'else'", [T_RETURN] = "'return'", [T_PARAM] = "'param'",
	[T_TRUE] = "'true'", [T_FALSE] = "'false'", [T_AS] = "'as'",
};

const char *fe_tok_name(enum fe_tok t)
{
	return (unsigned)t < T_COUNT && tok_names[t] ? tok_names[t] : "?";
}

/* Byte offset where line `line` (1-based) starts, or len when past the end. */
static size_t line_start(const struct fe *f, int line)
{
	size_t p = 0;
	for (int l = 1; l < line && p < f->len; p++)
		if (f->src[p] == '\n')
			l++;
	return p;
}

static int is_cont(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

/* Print the source line and a caret under column col (code points). */
static void show_line(const struct fe *f, int line, int col)
{
	if (!f->src || line < 1)
		return;
	size_t s = line_start(f, line), e = s;
	while (e < f->len && f->src[e] != '\n')
		e++;
	if (e > s && f->src[e - 1] == '\r')
		e--;
	/* the byte offset of the caret */
	size_t c = s;
	for (int k = 1; k < col && c < e; c++)
		if (c + 1 >= e || !is_cont((unsigned char)f->src[c + 1]))
			k++;
	/* a window of about 100 columns around the caret on long lines */
	size_t ws = s, we = e;
	if (e - s > 120) {
		ws = c > s + 60 ? c - 60 : s;
		we = ws + 120 < e ? ws + 120 : e;
		while (ws > s && is_cont((unsigned char)f->src[ws]))
			ws--;
		while (we < e && is_cont((unsigned char)f->src[we]))
			we++;
	}
	const char *pre = ws > s ? "..." : "";
	fprintf(f->err, "  %s", pre);
	for (size_t p = ws; p < we;) {
		unsigned char ch = (unsigned char)f->src[p];
		int n = ch >= 0x80 ? fe_utf8_len((const unsigned char *)f->src + p, we - p) : 1;
		if (ch >= 0x80 && n > 0) {
			fwrite(f->src + p, 1, (size_t)n, f->err);
			p += (size_t)n;
			continue;
		}
		fputc(ch == '\t' || (ch >= 0x20 && ch < 0x7f) ? ch : '?', f->err);
		p++;
	}
	fprintf(f->err, "%s\n  %s", we < e ? "..." : "", pre);
	for (size_t p = ws; p < c && p < we; p++)
		if (!is_cont((unsigned char)f->src[p]))
			fputc(f->src[p] == '\t' ? '\t' : ' ', f->err);
	fprintf(f->err, "^\n");
}

void fe_error(struct fe *f, struct fe_loc loc, const char *hint, const char *fmt, ...)
{
	va_list ap;
	fprintf(f->err, "%s:%d:%d: error: ", f->file, loc.line, loc.col);
	va_start(ap, fmt);
	vfprintf(f->err, fmt, ap);
	va_end(ap);
	fputc('\n', f->err);
	show_line(f, loc.line, loc.col);
	if (hint)
		fprintf(f->err, "  hint: %s\n", hint);
	longjmp(f->jb, 1);
}

static int edit_distance(const char *a, const char *b, int limit)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return limit + 1;
	int row[65];
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int prev = row[0], best = row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int cur = row[j];
			int v = prev + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < v)
				v = row[j] + 1;
			if (row[j - 1] + 1 < v)
				v = row[j - 1] + 1;
			row[j] = v;
			prev = cur;
			if (v < best)
				best = v;
		}
		if (best > limit)
			return limit + 1;
	}
	return row[lb];
}

const char *fe_closest(const char *s, const char *const *names, int n)
{
	const char *best = NULL;
	int bd = 3;
	for (int i = 0; i < n; i++) {
		if (!names[i])
			continue;
		int d = edit_distance(s, names[i], 2);
		if (d < bd) {
			bd = d;
			best = names[i];
		}
	}
	return best;
}
