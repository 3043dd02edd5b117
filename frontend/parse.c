/*
 * parse.c - tokens to the AST, by recursive descent.
 *
 *   program  := 'model' NAME { const | block | graph | train }
 *   const    := 'const' NAME '=' expr { ',' NAME '=' expr }
 *   block    := 'block' NAME '(' [ pdecl { ',' pdecl } ] ')' body
 *   pdecl    := NAME [ ':' TYPE ] [ '=' expr ]          TYPE: bool int float str tensor
 *   graph    := 'graph' '(' [ input { ',' input } ] ')' body
 *   input    := NAME ':' DTYPE '[' expr { ',' expr } ']'
 *   train    := 'train' '{' { NAME ('=' | ':') expr [ ',' | ';' ] } '}'
 *   body     := '{' { stmt } '}'
 *   stmt     := NAME ('=' | '+=' | '-=' | '*=' | '/=') expr
 *             | 'for' NAME 'in' expr '..' expr [ 'as' NAME ] body
 *             | 'if' expr body [ 'else' ( body | if-stmt ) ]
 *             | 'return' expr
 *             | 'param' NAME ':' DTYPE '[' expr { ',' expr } ']' [ '=' expr ]
 *             | ';'
 *   expr     := or [ '?' expr ':' expr ]
 *   binary operators, loosest first: || ; && ; == != < <= > >= ; + - ; * / % ;
 *   then unary - + ! ; then ** (right-associative) ; then calls NAME '(' args ')'
 *   args     := [ arg { ',' arg } ] ;  arg := [ NAME (':' | '=') ] expr
 *
 * Nesting is bounded (FE_MAX_DEPTH): a too deep input is an error, never a stack
 * overflow.  The AST keeps every node's depth so that the evaluator, which recurses
 * over it, is bounded too.
 */
#include <string.h>

#include "frontend/fe.h"
#include "ir/ir.h"

static const struct fe_token *peek(struct fe *f)
{
	return &f->toks[f->pos];
}

static const struct fe_token *peek2(struct fe *f)
{
	return &f->toks[f->pos + 1 < f->ntok ? f->pos + 1 : f->pos];
}

static const struct fe_token *next(struct fe *f)
{
	const struct fe_token *t = &f->toks[f->pos];
	if (t->kind != T_EOF)
		f->pos++;
	return t;
}

static int accept(struct fe *f, enum fe_tok k)
{
	if (peek(f)->kind == k) {
		next(f);
		return 1;
	}
	return 0;
}

static const char *found(struct fe *f, const struct fe_token *t)
{
	if (t->kind == T_IDENT)
		return ir_sprintf(f->a, "'%s'", t->text);
	if (t->kind == T_INT)
		return ir_sprintf(f->a, "%lld", (long long)t->ival);
	return fe_tok_name(t->kind);
}

static const struct fe_token *expect(struct fe *f, enum fe_tok k, const char *what)
{
	const struct fe_token *t = peek(f);
	if (t->kind != k)
		fe_error(f, t->loc, NULL, "expected %s%s%s, found %s", fe_tok_name(k),
			 what ? " " : "", what ? what : "", found(f, t));
	return next(f);
}

static const struct fe_token *expect_name(struct fe *f, const char *what)
{
	const struct fe_token *t = peek(f);
	if (t->kind != T_IDENT) {
		const char *hint = t->kind >= T_MODEL
			? "this word is a keyword of the language and cannot be used as a name" : NULL;
		fe_error(f, t->loc, hint, "expected %s, found %s", what, found(f, t));
	}
	return next(f);
}

static void enter(struct fe *f, struct fe_loc loc)
{
	if (++f->depth > FE_MAX_DEPTH)
		fe_error(f, loc, "split it up with intermediate names or blocks",
			 "nesting too deep (more than %d levels)", FE_MAX_DEPTH);
}

static void leave(struct fe *f)
{
	f->depth--;
}

static struct fe_expr *node(struct fe *f, enum fe_ekind k, struct fe_loc loc)
{
	struct fe_expr *e = ir_alloc(f->a, sizeof *e);
	e->kind = k;
	e->loc = loc;
	e->depth = 1;
	return e;
}

static void set_depth(struct fe *f, struct fe_expr *e)
{
	int d = 0;
	if (e->a && e->a->depth > d)
		d = e->a->depth;
	if (e->b && e->b->depth > d)
		d = e->b->depth;
	if (e->c && e->c->depth > d)
		d = e->c->depth;
	for (int i = 0; i < e->nargs; i++)
		if (e->args[i].e->depth > d)
			d = e->args[i].e->depth;
	e->depth = d + 1;
	if (e->depth > 2 * FE_MAX_DEPTH)
		fe_error(f, e->loc, "split it up with intermediate names",
			 "expression too deeply nested (more than %d levels)", 2 * FE_MAX_DEPTH);
}

static struct fe_expr *parse_expr(struct fe *f);
static struct fe_expr *parse_unary(struct fe *f);

static struct fe_expr *parse_call(struct fe *f, const struct fe_token *name)
{
	struct fe_expr *e = node(f, E_CALL, name->loc);
	e->name = name->text;
	expect(f, T_LPAREN, NULL);
	int cap = 0;
	while (peek(f)->kind != T_RPAREN) {
		if (e->nargs == cap) {
			int nc = cap ? 2 * cap : 8;
			struct fe_arg *na = ir_alloc(f->a, sizeof *na * (size_t)nc);
			if (e->nargs)
				memcpy(na, e->args, sizeof *na * (size_t)e->nargs);
			e->args = na;
			cap = nc;
		}
		struct fe_arg *a = &e->args[e->nargs];
		/* a keyword may name an argument too: mtp(..., block: layer) */
		if ((peek(f)->kind == T_IDENT || peek(f)->kind >= T_MODEL) &&
		    (peek2(f)->kind == T_COLON || peek2(f)->kind == T_ASSIGN)) {
			const struct fe_token *n = next(f);
			next(f);
			a->name = n->text;
			a->name_loc = n->loc;
		}
		a->e = parse_expr(f);
		if (!a->name)
			a->name_loc = a->e->loc;
		e->nargs++;
		if (!accept(f, T_COMMA))
			break;
	}
	if (peek(f)->kind != T_RPAREN)
		fe_error(f, peek(f)->loc, "arguments are separated by ','",
			 "expected ')' to close the call of '%s', found %s", name->text,
			 found(f, peek(f)));
	next(f);
	set_depth(f, e);
	return e;
}

static struct fe_expr *parse_primary(struct fe *f)
{
	const struct fe_token *t = peek(f);
	struct fe_expr *e;
	switch (t->kind) {
	case T_INT:
		next(f);
		e = node(f, E_INT, t->loc);
		e->ival = t->ival;
		return e;
	case T_FLOAT:
		next(f);
		e = node(f, E_FLOAT, t->loc);
		e->fval = t->fval;
		return e;
	case T_STR:
		next(f);
		e = node(f, E_STR, t->loc);
		e->name = t->text;
		return e;
	case T_TRUE:
	case T_FALSE:
		next(f);
		e = node(f, E_BOOL, t->loc);
		e->ival = t->kind == T_TRUE;
		return e;
	case T_IDENT:
		next(f);
		if (peek(f)->kind == T_LPAREN)
			return parse_call(f, t);
		e = node(f, E_IDENT, t->loc);
		e->name = t->text;
		return e;
	case T_LPAREN:
		next(f);
		e = parse_expr(f);
		if (peek(f)->kind != T_RPAREN)
			fe_error(f, peek(f)->loc, NULL, "expected ')' to close the '(' at %d:%d, found %s",
				 t->loc.line, t->loc.col, found(f, peek(f)));
		next(f);
		return e;
	default:
		fe_error(f, t->loc, t->kind == T_EOF ? "the file ends in the middle of an expression" : NULL,
			 "expected an expression, found %s", found(f, t));
	}
}

static struct fe_expr *parse_power(struct fe *f)
{
	struct fe_expr *base = parse_primary(f);
	if (peek(f)->kind != T_POW)
		return base;
	const struct fe_token *op = next(f);
	struct fe_expr *e = node(f, E_BINARY, op->loc);
	e->op = T_POW;
	e->a = base;
	e->b = parse_unary(f);
	set_depth(f, e);
	return e;
}

static struct fe_expr *parse_unary(struct fe *f)
{
	const struct fe_token *t = peek(f);
	if (t->kind == T_MINUS || t->kind == T_PLUS || t->kind == T_NOT) {
		next(f);
		enter(f, t->loc);
		struct fe_expr *e = node(f, E_UNARY, t->loc);
		e->op = t->kind;
		e->a = parse_unary(f);
		leave(f);
		set_depth(f, e);
		return e;
	}
	return parse_power(f);
}

static int prec(enum fe_tok k)
{
	switch (k) {
	case T_OR: return 1;
	case T_AND: return 2;
	case T_EQ: case T_NE: case T_LT: case T_LE: case T_GT: case T_GE: return 3;
	case T_PLUS: case T_MINUS: return 4;
	case T_STAR: case T_SLASH: case T_PERCENT: return 5;
	default: return 0;
	}
}

static struct fe_expr *parse_binary(struct fe *f, int min)
{
	struct fe_expr *l = parse_unary(f);
	for (;;) {
		const struct fe_token *t = peek(f);
		int p = prec(t->kind);
		if (!p || p < min)
			return l;
		next(f);
		struct fe_expr *e = node(f, E_BINARY, t->loc);
		e->op = t->kind;
		e->a = l;
		e->b = parse_binary(f, p + 1);
		set_depth(f, e);
		if (p == 3 && prec(peek(f)->kind) == 3)
			fe_error(f, peek(f)->loc, "write (a < b) && (b < c)",
				 "comparisons cannot be chained");
		l = e;
	}
}

static struct fe_expr *parse_expr(struct fe *f)
{
	enter(f, peek(f)->loc);
	struct fe_expr *c = parse_binary(f, 1);
	if (peek(f)->kind == T_QUESTION) {
		const struct fe_token *q = next(f);
		struct fe_expr *e = node(f, E_TERNARY, q->loc);
		e->a = c;
		e->b = parse_expr(f);
		if (peek(f)->kind != T_COLON)
			fe_error(f, peek(f)->loc, "a conditional reads: condition ? then : else",
				 "expected ':' of the '?' at %d:%d, found %s", q->loc.line, q->loc.col,
				 found(f, peek(f)));
		next(f);
		e->c = parse_expr(f);
		set_depth(f, e);
		c = e;
	}
	leave(f);
	return c;
}

static struct fe_expr **parse_dims(struct fe *f, int *ndims)
{
	const struct fe_token *lb = expect(f, T_LBRACK, "to start the shape");
	struct fe_expr *d[IR_MAX_RANK];
	int n = 0;
	while (peek(f)->kind != T_RBRACK) {
		if (n == IR_MAX_RANK)
			fe_error(f, peek(f)->loc, NULL, "too many dimensions (at most %d)", IR_MAX_RANK);
		d[n++] = parse_expr(f);
		if (!accept(f, T_COMMA))
			break;
	}
	expect(f, T_RBRACK, "to end the shape");
	if (!n)
		fe_error(f, lb->loc, "scalars are not graph inputs or parameters",
			 "a shape needs at least one dimension");
	struct fe_expr **v = ir_alloc(f->a, sizeof *v * (size_t)n);
	memcpy(v, d, sizeof *v * (size_t)n);
	*ndims = n;
	return v;
}

static int parse_dtype(struct fe *f)
{
	const struct fe_token *t = expect_name(f, "a dtype (f32, bf16, i32, ...)");
	enum ir_dtype dt;
	if (!ir_dtype_parse(t->text, &dt)) {
		static const char *const names[] = { "f32", "bf16", "f16", "f8e4m3", "f8e5m2",
						     "i32", "i64" };
		const char *c = fe_closest(t->text, names, 7);
		fe_error(f, t->loc, c ? ir_sprintf(f->a, "did you mean '%s'?", c)
				      : "dtypes: f32 bf16 f16 f8e4m3 f8e5m2 i32 i64",
			 "unknown dtype '%s'", t->text);
	}
	return (int)dt;
}

static struct fe_stmt *parse_body(struct fe *f);

static struct fe_stmt *parse_stmt(struct fe *f)
{
	const struct fe_token *t = peek(f);
	struct fe_stmt *s = ir_alloc(f->a, sizeof *s);
	s->loc = t->loc;
	switch (t->kind) {
	case T_FOR: {
		next(f);
		s->kind = S_FOR;
		const struct fe_token *v = expect_name(f, "the loop variable");
		s->name = v->text;
		s->name_loc = v->loc;
		expect(f, T_IN, "after the loop variable");
		s->lo = parse_expr(f);
		if (peek(f)->kind != T_DOTDOT)
			fe_error(f, peek(f)->loc, "a loop reads: for i in 0..n { ... }",
				 "expected '..' in the range, found %s", found(f, peek(f)));
		next(f);
		s->hi = parse_expr(f);
		if (accept(f, T_AS))
			s->label = expect_name(f, "a scope label after 'as'")->text;
		else if (s->hi->kind == E_IDENT)
			s->label = s->hi->name;
		else
			s->label = s->name;
		s->body = parse_body(f);
		return s;
	}
	case T_IF:
		next(f);
		s->kind = S_IF;
		s->e = parse_expr(f);
		s->body = parse_body(f);
		if (accept(f, T_ELSE)) {
			if (peek(f)->kind == T_IF) {
				enter(f, peek(f)->loc);
				s->els = parse_stmt(f);
				leave(f);
			} else {
				s->els = parse_body(f);
			}
		}
		return s;
	case T_RETURN:
		next(f);
		s->kind = S_RETURN;
		s->e = parse_expr(f);
		return s;
	case T_PARAM: {
		next(f);
		s->kind = S_PARAM;
		const struct fe_token *n = expect_name(f, "the parameter's name");
		s->name = n->text;
		s->name_loc = n->loc;
		expect(f, T_COLON, "and a type, e.g. param w: f32[dim, dim]");
		s->dtype = parse_dtype(f);
		s->dims = parse_dims(f, &s->ndims);
		if (accept(f, T_ASSIGN))
			s->e = parse_expr(f);
		return s;
	}
	case T_IDENT: {
		next(f);
		s->kind = S_ASSIGN;
		s->name = t->text;
		s->name_loc = t->loc;
		const struct fe_token *op = peek(f);
		if (op->kind != T_ASSIGN && op->kind != T_PLUSEQ && op->kind != T_MINUSEQ &&
		    op->kind != T_STAREQ && op->kind != T_SLASHEQ)
			fe_error(f, op->loc,
				 op->kind == T_LPAREN ? "a call's value must be assigned: y = f(x)" : NULL,
				 "expected '=' after '%s', found %s", t->text, found(f, op));
		next(f);
		s->op = op->kind;
		s->loc = op->loc;
		s->e = parse_expr(f);
		return s;
	}
	default:
		fe_error(f, t->loc,
			 t->kind == T_EOF ? "a '}' is missing" : "statements are assignments, for, if, return and param",
			 "expected a statement, found %s", found(f, t));
	}
}

static struct fe_stmt *parse_body(struct fe *f)
{
	const struct fe_token *lb = peek(f);
	expect(f, T_LBRACE, NULL);
	enter(f, lb->loc);
	struct fe_stmt *head = NULL, **tail = &head;
	for (;;) {
		if (accept(f, T_SEMI))
			continue;
		if (peek(f)->kind == T_RBRACE)
			break;
		if (peek(f)->kind == T_EOF)
			fe_error(f, peek(f)->loc, ir_sprintf(f->a, "the '{' at %d:%d is not closed",
							     lb->loc.line, lb->loc.col),
				 "unexpected end of file");
		*tail = parse_stmt(f);
		tail = &(*tail)->next;
	}
	next(f);
	leave(f);
	return head;
}

static void parse_block(struct fe *f)
{
	const struct fe_token *kw = next(f);
	const struct fe_token *n = expect_name(f, "the block's name");
	for (struct fe_block *b = f->prog.blocks; b; b = b->next)
		if (!strcmp(b->name, n->text))
			fe_error(f, n->loc, ir_sprintf(f->a, "the first is at line %d", b->loc.line),
				 "block '%s' is defined twice", n->text);
	struct fe_block *b = ir_alloc(f->a, sizeof *b);
	b->name = n->text;
	b->loc = n->loc;
	(void)kw;
	expect(f, T_LPAREN, "after the block's name");
	struct fe_pdecl p[64];
	int np = 0;
	while (peek(f)->kind != T_RPAREN) {
		const struct fe_token *pn = expect_name(f, "a parameter name");
		if (np == 64)
			fe_error(f, pn->loc, NULL, "too many block parameters (at most 64)");
		for (int i = 0; i < np; i++)
			if (!strcmp(p[i].name, pn->text))
				fe_error(f, pn->loc, NULL, "parameter '%s' is declared twice", pn->text);
		struct fe_pdecl *d = &p[np++];
		memset(d, 0, sizeof *d);
		d->name = pn->text;
		d->loc = pn->loc;
		if (accept(f, T_COLON)) {
			const struct fe_token *ty = expect_name(f, "a type (bool, int, float, str, tensor)");
			static const char *const types[] = { "bool", "int", "float", "str", "tensor" };
			int ok = 0;
			for (int i = 0; i < 5; i++)
				ok |= !strcmp(ty->text, types[i]);
			if (!ok) {
				const char *c = fe_closest(ty->text, types, 5);
				fe_error(f, ty->loc, c ? ir_sprintf(f->a, "did you mean '%s'?", c)
						       : "types: bool int float str tensor",
					 "unknown type '%s'", ty->text);
			}
			d->type = ty->text;
		}
		if (accept(f, T_ASSIGN))
			d->dflt = parse_expr(f);
		if (!accept(f, T_COMMA))
			break;
	}
	expect(f, T_RPAREN, "to end the parameters");
	b->nparams = np;
	b->params = ir_alloc(f->a, sizeof *b->params * (size_t)(np ? np : 1));
	memcpy(b->params, p, sizeof *p * (size_t)np);
	b->body = parse_body(f);
	struct fe_block **tail = &f->prog.blocks;
	while (*tail)
		tail = &(*tail)->next;
	*tail = b;
}

static void parse_graph(struct fe *f)
{
	const struct fe_token *kw = next(f);
	if (f->prog.has_graph)
		fe_error(f, kw->loc, ir_sprintf(f->a, "the first is at line %d", f->prog.graph_loc.line),
			 "a model has one graph");
	f->prog.has_graph = 1;
	f->prog.graph_loc = kw->loc;
	expect(f, T_LPAREN, "after 'graph'");
	struct fe_input **tail = &f->prog.inputs;
	while (peek(f)->kind != T_RPAREN) {
		const struct fe_token *n = expect_name(f, "an input name");
		for (struct fe_input *i = f->prog.inputs; i; i = i->next)
			if (!strcmp(i->name, n->text))
				fe_error(f, n->loc, NULL, "input '%s' is declared twice", n->text);
		struct fe_input *in = ir_alloc(f->a, sizeof *in);
		in->name = n->text;
		in->loc = n->loc;
		expect(f, T_COLON, "and a type, e.g. tokens: i32[batch, seq]");
		in->dtype = parse_dtype(f);
		in->dims = parse_dims(f, &in->ndims);
		*tail = in;
		tail = &in->next;
		if (!accept(f, T_COMMA))
			break;
	}
	expect(f, T_RPAREN, "to end the graph's inputs");
	f->prog.graph = parse_body(f);
}

static void parse_train(struct fe *f)
{
	const struct fe_token *kw = next(f);
	if (f->prog.train_loc.line)
		fe_error(f, kw->loc, NULL, "a model has one train section");
	f->prog.train_loc = kw->loc;
	const struct fe_token *lb = expect(f, T_LBRACE, "after 'train'");
	struct fe_setting **tail = &f->prog.settings;
	for (;;) {
		if (accept(f, T_COMMA) || accept(f, T_SEMI))
			continue;
		if (accept(f, T_RBRACE))
			break;
		if (peek(f)->kind == T_EOF)
			fe_error(f, peek(f)->loc, ir_sprintf(f->a, "the '{' at %d:%d is not closed",
							     lb->loc.line, lb->loc.col),
				 "unexpected end of file");
		const struct fe_token *n = expect_name(f, "a setting name");
		for (struct fe_setting *s = f->prog.settings; s; s = s->next)
			if (!strcmp(s->name, n->text))
				fe_error(f, n->loc, NULL, "setting '%s' is given twice", n->text);
		if (!accept(f, T_ASSIGN) && !accept(f, T_COLON))
			fe_error(f, peek(f)->loc, "settings read: name = value",
				 "expected '=' after '%s', found %s", n->text, found(f, peek(f)));
		struct fe_setting *s = ir_alloc(f->a, sizeof *s);
		s->name = n->text;
		s->loc = n->loc;
		s->e = parse_expr(f);
		*tail = s;
		tail = &s->next;
	}
}

void fe_parse(struct fe *f)
{
	const struct fe_token *t = peek(f);
	if (t->kind == T_EOF)
		fe_error(f, t->loc, "a model file starts with 'model NAME'", "empty model file");
	if (t->kind != T_MODEL)
		fe_error(f, t->loc, "a model file starts with 'model NAME'",
			 "expected 'model', found %s", found(f, t));
	next(f);
	const struct fe_token *n = expect_name(f, "the model's name");
	f->prog.model = n->text;
	f->prog.model_loc = t->loc;
	struct fe_const **ctail = &f->prog.consts;
	for (;;) {
		t = peek(f);
		switch (t->kind) {
		case T_EOF:
			if (!f->prog.has_graph)
				fe_error(f, t->loc, "add graph(tokens: i32[batch, seq], ...) { ... }",
					 "the model has no graph");
			return;
		case T_SEMI:
			next(f);
			break;
		case T_CONST:
			next(f);
			do {
				const struct fe_token *cn = expect_name(f, "a constant's name");
				for (struct fe_const *c = f->prog.consts; c; c = c->next)
					if (!strcmp(c->name, cn->text))
						fe_error(f, cn->loc,
							 ir_sprintf(f->a, "the first is at line %d", c->loc.line),
							 "constant '%s' is defined twice", cn->text);
				expect(f, T_ASSIGN, "after the constant's name");
				struct fe_const *c = ir_alloc(f->a, sizeof *c);
				c->name = cn->text;
				c->loc = cn->loc;
				c->e = parse_expr(f);
				*ctail = c;
				ctail = &c->next;
			} while (accept(f, T_COMMA));
			break;
		case T_BLOCK:
			parse_block(f);
			break;
		case T_GRAPH:
			parse_graph(f);
			break;
		case T_TRAIN:
			parse_train(f);
			break;
		case T_MODEL:
			fe_error(f, t->loc, NULL, "a file holds one model");
		default:
		{
			const char *hint = "the top level holds const, block, graph and train";
			if (t->kind == T_IDENT && f->pos > 0 && f->toks[f->pos - 1].loc.line == t->loc.line)
				hint = "is a ',' missing? constants are separated by ','";
			else if (t->kind == T_IDENT || t->kind == T_FOR || t->kind == T_IF)
				hint = "statements belong in a block or in the graph";
			fe_error(f, t->loc, hint, "expected a declaration, found %s", found(f, t));
		}
		}
	}
}
