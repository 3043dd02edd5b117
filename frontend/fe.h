/*
 * fe.h - private to the frontend: tokens, the AST, the compilation context and the
 * diagnostics.  The public API is frontend.h.
 *
 * Conventions a reader needs before the code:
 *  - One compilation is one struct fe.  Everything it allocates lives in two arenas:
 *    f->a (source copy, tokens, AST, evaluation temporaries) and the IR graph's own.
 *  - The first error in the user's input ends the compilation: fe_error() prints the
 *    diagnostic and longjmps back to sl_compile_source(), which frees both arenas.
 *    Nothing is malloc'd outside them except the path set, which the same exit frees,
 *    so every error leaves through one clean path.
 *  - Locations are 1-based lines and columns; columns count UTF-8 code points.
 *  - Everything is bounded: nesting depth, loop iterations, block-call depth and the
 *    number of lowered ops, so that no input can exhaust the stack or hang.
 */
#ifndef SLUICE_FE_H
#define SLUICE_FE_H

#include <setjmp.h>
#include <stdint.h>

#include "frontend/frontend.h"

enum {
	FE_MAX_DEPTH = 256,        /* nesting of parentheses, blocks, expressions */
	FE_MAX_CALL_DEPTH = 64,    /* block calls within block calls */
	FE_MAX_EVAL_DEPTH = 2000,  /* evaluation recursion, across block calls */
	FE_MAX_ITERS = 100000,     /* loop iterations of a whole compilation */
	FE_MAX_OPS = 200000,       /* lowered IR ops (DeepSeek-V3: 6.6k) */
};

struct fe_loc {
	int line, col;
};

enum fe_tok {
	T_EOF, T_IDENT, T_INT, T_FLOAT, T_STR,
	T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_LBRACE, T_RBRACE,
	T_COMMA, T_COLON, T_SEMI, T_QUESTION, T_DOTDOT, T_DOT,
	T_ASSIGN, T_PLUSEQ, T_MINUSEQ, T_STAREQ, T_SLASHEQ,
	T_PLUS, T_MINUS, T_STAR, T_SLASH, T_PERCENT, T_POW,
	T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE, T_AND, T_OR, T_NOT,
	/* keywords */
	T_MODEL, T_CONST, T_BLOCK, T_GRAPH, T_TRAIN, T_FOR, T_IN, T_IF, T_ELSE,
	T_RETURN, T_PARAM, T_TRUE, T_FALSE, T_AS,
	T_COUNT
};

struct fe_token {
	enum fe_tok kind;
	struct fe_loc loc;
	const char *text; /* identifier or string contents, NUL-terminated (arena) */
	int64_t ival;
	double fval;
};

/* --- AST ------------------------------------------------------------------------ */

enum fe_ekind { E_INT, E_FLOAT, E_STR, E_BOOL, E_IDENT, E_UNARY, E_BINARY, E_TERNARY, E_CALL };

struct fe_expr;

struct fe_arg {
	const char *name; /* NULL when positional */
	struct fe_loc name_loc;
	struct fe_expr *e;
};

struct fe_expr {
	enum fe_ekind kind;
	struct fe_loc loc;
	int depth;
	enum fe_tok op;          /* unary and binary */
	int64_t ival;
	double fval;
	const char *name;        /* identifier, called name, string contents */
	struct fe_expr *a, *b, *c;
	int nargs;
	struct fe_arg *args;
};

enum fe_skind { S_ASSIGN, S_FOR, S_IF, S_RETURN, S_PARAM };

struct fe_stmt {
	enum fe_skind kind;
	struct fe_loc loc;
	const char *name;        /* assigned name, loop variable, parameter name */
	struct fe_loc name_loc;
	enum fe_tok op;          /* T_ASSIGN, T_PLUSEQ, ... */
	struct fe_expr *e;       /* value, condition, returned value, initializer */
	struct fe_expr *lo, *hi; /* for */
	const char *label;       /* for: scope label */
	struct fe_stmt *body;    /* for, if */
	struct fe_stmt *els;     /* if */
	int dtype;               /* param: enum ir_dtype */
	int ndims;
	struct fe_expr **dims;
	struct fe_stmt *next;
};

struct fe_pdecl {
	const char *name;
	struct fe_loc loc;
	const char *type;        /* "bool", "int", "float", "tensor", "str" or NULL */
	struct fe_expr *dflt;
};

struct fe_block {
	const char *name;
	struct fe_loc loc;
	int nparams;
	struct fe_pdecl *params;
	struct fe_stmt *body;
	int active;              /* being lowered: a call now is recursion */
	struct fe_block *next;
};

struct fe_const {
	const char *name;
	struct fe_loc loc;
	struct fe_expr *e;
	struct fe_const *next;
};

struct fe_input {
	const char *name;
	struct fe_loc loc;
	int dtype;
	int ndims;
	struct fe_expr **dims;
	struct fe_input *next;
};

struct fe_setting {
	const char *name;
	struct fe_loc loc;
	struct fe_expr *e;
	struct fe_setting *next;
};

struct fe_program {
	const char *model;
	struct fe_loc model_loc;
	struct fe_const *consts;
	struct fe_block *blocks;
	struct fe_input *inputs;
	struct fe_loc graph_loc;
	struct fe_stmt *graph;
	int has_graph;
	struct fe_setting *settings;
	struct fe_loc train_loc;
};

/* --- values of the evaluator -------------------------------------------------------- */

enum fe_vkind { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TENSOR };

struct fe_val {
	enum fe_vkind k;
	int64_t i;          /* V_INT, V_BOOL */
	double f;           /* V_FLOAT */
	const char *s;      /* V_STR */
	struct ir_value *t; /* V_TENSOR */
};

struct fe_bind {
	const char *name;
	struct fe_val v;
	struct fe_loc loc;
	int is_const;
	struct fe_bind *next;
};

struct fe_output {
	const char *name;
	struct ir_value *v;
	struct fe_output *next;
};

struct fe_pathset {
	char **slot;
	size_t cap, n;
};

/* --- the compilation ------------------------------------------------------------------ */

struct fe {
	const char *file;
	const char *src;
	size_t len;
	FILE *err;
	jmp_buf jb;
	struct ir_arena *a;

	/* lexer output */
	struct fe_token *toks;
	int ntok, pos;
	int depth;

	struct fe_program prog;

	/* lowering */
	struct ir_graph *g;
	const char *gfile;          /* file name in the graph's arena */
	struct fe_bind *globals;    /* constants, then train settings */
	struct fe_bind *frame;      /* locals of the block or graph being lowered */
	const char *scope;          /* dotted scope, "" at top level */
	struct fe_loc cur;          /* location of the expression being lowered */
	int call_depth;
	int eval_depth;
	struct ir_value *embed_w, *head_w; /* "embed.weight", "head.weight": shared by mtp */
	long iters;
	struct fe_pathset paths;    /* parameter paths and instance names in use */
	struct ir_value *aux_loss;  /* balance losses to add to "loss" */
	struct fe_output *extra_outputs, **extra_tail; /* "load.*", after "loss" */
	int n_over;
	const struct sl_override *over;
	unsigned char *over_used;
};

/* diag.c */
_Noreturn void fe_error(struct fe *f, struct fe_loc loc, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* the closest of names to s (edit distance at most 2), or NULL */
const char *fe_closest(const char *s, const char *const *names, int n);
const char *fe_tok_name(enum fe_tok t);

/* lex.c */
void fe_lex(struct fe *f);
/* length of the UTF-8 sequence at p (1..4), 0 when invalid */
int fe_utf8_len(const unsigned char *p, size_t left);

/* parse.c */
void fe_parse(struct fe *f);

/* lower.c */
void fe_lower(struct fe *f);

/* intrinsics.c: returns 1 and sets *out when name is an intrinsic or builtin */
int fe_call_intrinsic(struct fe *f, const struct fe_expr *call, struct fe_val *out);
const char *const *fe_intrinsic_names(int *n);

/* lower.c, used by intrinsics.c */
struct fe_val fe_eval(struct fe *f, const struct fe_expr *e);
struct fe_val fe_call_block_with(struct fe *f, struct fe_block *b, const struct fe_expr *call,
				 struct ir_value *x);
struct fe_block *fe_find_block(struct fe *f, const char *name);
const char *fe_val_kind_name(enum fe_vkind k);
void fe_set_loc(struct fe *f, struct fe_loc loc);
void fe_set_scope(struct fe *f, const char *scope);
/* Claim a unique instance name in the current scope: the given name, or when NULL the
 * default with _1, _2, ... appended as needed.  Returns the new scope string. */
const char *fe_instance(struct fe *f, const char *given, struct fe_loc given_loc,
			const char *dflt);
void fe_path_claim(struct fe *f, const char *path, struct fe_loc loc);
void fe_count_op(struct fe *f);

/* tensor builders: shapes checked, errors at f->cur */
struct ir_op *fe_op(struct fe *f, enum ir_opkind k, int n, struct ir_value **in, int nout);
struct ir_value *fe_op1(struct fe *f, enum ir_opkind k, int n, struct ir_value **in,
			enum ir_dtype t, struct ir_shape s);
struct ir_value *fe_param(struct fe *f, const char *scope, const char *name,
			  enum ir_dtype dt, struct ir_shape s, const char *init, double std);
struct ir_value *fe_unary(struct fe *f, enum ir_opkind k, struct ir_value *x);
struct ir_value *fe_binary(struct fe *f, enum ir_opkind k, struct ir_value *a,
			   struct ir_value *b, const char *what);
struct ir_value *fe_scale(struct fe *f, struct ir_value *x, double alpha, double beta);
struct ir_value *fe_matmul(struct fe *f, struct ir_value *a, struct ir_value *b, int trans_b);
struct ir_value *fe_reshape(struct fe *f, struct ir_value *x, struct ir_shape s);
struct ir_value *fe_transpose(struct fe *f, struct ir_value *x, int n, const int64_t *perm);
struct ir_value *fe_slice(struct fe *f, struct ir_value *x, int axis, int64_t start,
			  int64_t len);
struct ir_value *fe_concat(struct fe *f, struct ir_value *a, struct ir_value *b, int axis);
struct ir_value *fe_reduce(struct fe *f, enum ir_opkind k, struct ir_value *x, int axis,
			   int keepdim);
struct ir_value *fe_softmax(struct fe *f, struct ir_value *x, int causal);
struct ir_shape fe_shape_checked(struct fe *f, struct ir_shape s);

#endif
