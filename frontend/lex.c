/*
 * lex.c - source text to tokens.
 *
 * The whole source is checked first: it must be UTF-8 without NUL bytes (an error
 * names the line and column of the first bad byte).  Then it is cut into tokens, kept
 * in one array in the compilation's arena.  Newlines are white space: statements end
 * where an expression cannot continue (a line that starts with an operator continues
 * the one before).  Comments run from '#' or '//' to the end of the line.
 * Integer literals that do not fit in 64 bits are errors; '_' may separate digits.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/fe.h"
#include "ir/ir.h"

static const struct {
	const char *word;
	enum fe_tok tok;
} keywords[] = {
	{ "model", T_MODEL }, { "const", T_CONST }, { "block", T_BLOCK },
	{ "graph", T_GRAPH }, { "train", T_TRAIN }, { "for", T_FOR }, { "in", T_IN },
	{ "if", T_IF }, { "else", T_ELSE }, { "return", T_RETURN }, { "param", T_PARAM },
	{ "true", T_TRUE }, { "false", T_FALSE }, { "as", T_AS },
};

/* Length of the UTF-8 sequence at p (1..4), or 0 when it is not valid UTF-8. */
int fe_utf8_len(const unsigned char *p, size_t left)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	int n;
	unsigned min;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if (left < (size_t)n)
		return 0;
	unsigned cp = c & (0x7F >> n);
	for (int k = 1; k < n; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

static void check_encoding(struct fe *f)
{
	const unsigned char *s = (const unsigned char *)f->src;
	struct fe_loc loc = { 1, 1 };
	for (size_t p = 0; p < f->len;) {
		if (s[p] == 0)
			fe_error(f, loc, "the file may be binary or UTF-16; model files are UTF-8 text",
				 "NUL byte in the source");
		int n = fe_utf8_len(s + p, f->len - p);
		if (!n)
			fe_error(f, loc, "model files must be UTF-8 text",
				 "invalid UTF-8 byte 0x%02x", s[p]);
		if (s[p] == '\n') {
			loc.line++;
			loc.col = 1;
		} else {
			loc.col++;
		}
		p += (size_t)n;
	}
}

struct lexer {
	struct fe *f;
	size_t p;
	struct fe_loc loc;
};

static int at(const struct lexer *l, size_t k)
{
	return l->p + k < l->f->len ? (unsigned char)l->f->src[l->p + k] : 0;
}

static void adv(struct lexer *l)
{
	unsigned char c = (unsigned char)l->f->src[l->p++];
	if (c == '\n') {
		l->loc.line++;
		l->loc.col = 1;
	} else if ((c & 0xC0) != 0x80) {
		l->loc.col++;
	}
}

static int is_ident_start(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static void push(struct fe *f, int *cap, struct fe_token t)
{
	if (f->ntok == *cap) {
		int nc = *cap ? 2 * *cap : 256;
		struct fe_token *nt = ir_alloc(f->a, sizeof *nt * (size_t)nc);
		if (f->ntok)
			memcpy(nt, f->toks, sizeof *nt * (size_t)f->ntok);
		f->toks = nt;
		*cap = nc;
	}
	f->toks[f->ntok++] = t;
}

static void lex_number(struct lexer *l, struct fe_token *t)
{
	struct fe *f = l->f;
	char buf[128];
	size_t n = 0;
	int is_float = 0;
	while (is_digit(at(l, 0)) || at(l, 0) == '_') {
		if (at(l, 0) != '_' && n < sizeof buf - 1)
			buf[n++] = (char)at(l, 0);
		adv(l);
	}
	/* "0..n" is a range: a '.' belongs to the number only before a digit */
	if (at(l, 0) == '.' && is_digit(at(l, 1))) {
		is_float = 1;
		buf[n < sizeof buf - 1 ? n++ : n] = '.';
		adv(l);
		while (is_digit(at(l, 0)) || at(l, 0) == '_') {
			if (at(l, 0) != '_' && n < sizeof buf - 1)
				buf[n++] = (char)at(l, 0);
			adv(l);
		}
	}
	if ((at(l, 0) == 'e' || at(l, 0) == 'E') &&
	    (is_digit(at(l, 1)) || ((at(l, 1) == '+' || at(l, 1) == '-') && is_digit(at(l, 2))))) {
		is_float = 1;
		if (n < sizeof buf - 2)
			buf[n++] = 'e';
		adv(l);
		if (at(l, 0) == '+' || at(l, 0) == '-') {
			if (n < sizeof buf - 1)
				buf[n++] = (char)at(l, 0);
			adv(l);
		}
		while (is_digit(at(l, 0))) {
			if (n < sizeof buf - 1)
				buf[n++] = (char)at(l, 0);
			adv(l);
		}
	}
	if (is_ident_start(at(l, 0)))
		fe_error(f, l->loc, NULL, "unexpected '%c' after a number", at(l, 0));
	if (n >= sizeof buf - 2)
		fe_error(f, t->loc, NULL, "number literal too long");
	buf[n] = 0;
	if (is_float) {
		t->kind = T_FLOAT;
		t->fval = strtod(buf, NULL);
		if (!isfinite(t->fval))
			fe_error(f, t->loc, NULL, "number %s is out of range", buf);
	} else {
		t->kind = T_INT;
		errno = 0;
		char *end;
		unsigned long long v = strtoull(buf, &end, 10);
		if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
			fe_error(f, t->loc, "integers are 64-bit: at most 9223372036854775807",
				 "integer %s does not fit in 64 bits", buf);
		t->ival = (int64_t)v;
	}
}

void fe_lex(struct fe *f)
{
	check_encoding(f);
	struct lexer l = { f, 0, { 1, 1 } };
	int cap = 0;
	for (;;) {
		/* white space and comments */
		for (;;) {
			int c = at(&l, 0);
			if (l.p >= f->len)
				break;
			if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
				adv(&l);
			} else if (c == '#' || (c == '/' && at(&l, 1) == '/')) {
				while (l.p < f->len && at(&l, 0) != '\n')
					adv(&l);
			} else {
				break;
			}
		}
		struct fe_token t = { 0 };
		t.loc = l.loc;
		if (l.p >= f->len) {
			t.kind = T_EOF;
			push(f, &cap, t);
			return;
		}
		int c = at(&l, 0);
		if (is_ident_start(c)) {
			size_t s = l.p;
			while (is_ident_start(at(&l, 0)) || is_digit(at(&l, 0)))
				adv(&l);
			t.kind = T_IDENT;
			t.text = ir_strndup(f->a, f->src + s, l.p - s);
			for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
				if (!strcmp(t.text, keywords[k].word))
					t.kind = keywords[k].tok;
			push(f, &cap, t);
			continue;
		}
		if (is_digit(c) || (c == '.' && is_digit(at(&l, 1)))) {
			lex_number(&l, &t);
			push(f, &cap, t);
			continue;
		}
		if (c == '"') {
			adv(&l);
			size_t s = l.p;
			while (l.p < f->len && at(&l, 0) != '"' && at(&l, 0) != '\n')
				adv(&l);
			if (at(&l, 0) != '"')
				fe_error(f, t.loc, "strings end on the line they start",
					 "unterminated string");
			t.kind = T_STR;
			t.text = ir_strndup(f->a, f->src + s, l.p - s);
			adv(&l);
			push(f, &cap, t);
			continue;
		}
		int c1 = at(&l, 1);
		int two = 0;
		switch (c) {
		case '(': t.kind = T_LPAREN; break;
		case ')': t.kind = T_RPAREN; break;
		case '[': t.kind = T_LBRACK; break;
		case ']': t.kind = T_RBRACK; break;
		case '{': t.kind = T_LBRACE; break;
		case '}': t.kind = T_RBRACE; break;
		case ',': t.kind = T_COMMA; break;
		case ':': t.kind = T_COLON; break;
		case ';': t.kind = T_SEMI; break;
		case '?': t.kind = T_QUESTION; break;
		case '%': t.kind = T_PERCENT; break;
		case '.': t.kind = c1 == '.' ? (two = 1, T_DOTDOT) : T_DOT; break;
		case '=': t.kind = c1 == '=' ? (two = 1, T_EQ) : T_ASSIGN; break;
		case '+': t.kind = c1 == '=' ? (two = 1, T_PLUSEQ) : T_PLUS; break;
		case '-': t.kind = c1 == '=' ? (two = 1, T_MINUSEQ) : T_MINUS; break;
		case '/': t.kind = c1 == '=' ? (two = 1, T_SLASHEQ) : T_SLASH; break;
		case '*':
			t.kind = c1 == '*' ? (two = 1, T_POW) : c1 == '=' ? (two = 1, T_STAREQ) : T_STAR;
			break;
		case '!': t.kind = c1 == '=' ? (two = 1, T_NE) : T_NOT; break;
		case '<': t.kind = c1 == '=' ? (two = 1, T_LE) : T_LT; break;
		case '>': t.kind = c1 == '=' ? (two = 1, T_GE) : T_GT; break;
		case '&':
			if (c1 != '&')
				fe_error(f, t.loc, "'and' is written '&&'", "unexpected character '&'");
			t.kind = T_AND;
			two = 1;
			break;
		case '|':
			if (c1 != '|')
				fe_error(f, t.loc, "'or' is written '||'", "unexpected character '|'");
			t.kind = T_OR;
			two = 1;
			break;
		default:
			if (c >= 0x80) {
				unsigned cp = 0;
				int n = fe_utf8_len((const unsigned char *)f->src + l.p, f->len - l.p);
				cp = (unsigned)c & (0x7Fu >> n);
				for (int k = 1; k < n; k++)
					cp = (cp << 6) | ((unsigned)at(&l, (size_t)k) & 0x3F);
				fe_error(f, t.loc, "names are ASCII letters, digits and '_'",
					 "unexpected character U+%04X", cp);
			}
			if (c < 0x20 || c == 0x7f)
				fe_error(f, t.loc, NULL, "unexpected control character 0x%02x", c);
			fe_error(f, t.loc, NULL, "unexpected character '%c'", c);
		}
		adv(&l);
		if (two)
			adv(&l);
		push(f, &cap, t);
	}
}
