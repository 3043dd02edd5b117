/* frontend.h - the model language: source text to IR.
 *
 * sl_compile_* lex, parse, check and lower a model file to a forward IR graph
 * (shapes and dtypes inferred, verified).  On any error in the user's input they
 * print diagnostics to err ("FILE:LINE:COL: error: ...", the source line, a caret,
 * a hint where one helps) and return NULL.  They never abort on bad input.
 *
 * What the graph holds (the language: docs/language.md):
 *  - outputs: "loss" (f32 scalar: the model's loss, MTP and balance losses included),
 *    then one "load.SCOPE" (f32[E]: tokens routed to each expert in the batch) per
 *    MoE layer, e.g. "load.layers.3.moe";
 *  - settings: every setting of the train section and every --set of one (ir_graph_set),
 *    each checked against the table of train settings (sl_settings()); a call's named
 *    arguments as "NAME.ARG" ("optimizer = adamw(lr = 1e-3)": "optimizer.lr");
 *  - parameters: PARAM ops with op->path, attrs init ("normal", "zeros", "ones"), std,
 *    fan_in.  The embedding is "embed.weight" [vocab, dim], the output head
 *    "head.weight" [dim, vocab]; the MTP module's parameters start with "mtp.".
 *    Routed expert weights are one [E, in, out] tensor per matrix
 *    ("SCOPE.experts.w1|w3|w2", attrs experts and top_k).  The routing bias
 *    "SCOPE.gate.bias" [E] has attr trainable = 0 and gamma: no gradient reaches it;
 *    the optimizer moves it by gamma toward balance using "load.SCOPE". */
#ifndef SLUICE_FRONTEND_H
#define SLUICE_FRONTEND_H

#include <stddef.h>
#include <stdio.h>

#include "ir/ir.h"

/* --set NAME=VALUE from the command line: overrides a constant or a train setting. */
struct sl_override {
	const char *name;
	const char *value;
};

struct ir_graph *sl_compile_file(const char *path, int n_over,
				 const struct sl_override *over, FILE *err);
struct ir_graph *sl_compile_source(const char *src, size_t len, const char *filename,
				   int n_over, const struct sl_override *over, FILE *err);

/* --- the train settings (frontend/settings.c; docs/language.md has the table) -------- */

enum sl_setting_kind {
	SL_SETTING_INT,    /* a number with an integral value */
	SL_SETTING_FLOAT,  /* a number */
	SL_SETTING_CHOICE, /* one of the words of `choices` */
	SL_SETTING_LIST,   /* words of `choices` separated by commas, or none */
};

struct sl_setting {
	const char *name;
	enum sl_setting_kind kind;
	double lo, hi;              /* INT, FLOAT: the allowed range ... */
	unsigned char lo_open, hi_open; /* ... with its ends excluded when set */
	const char *choices;        /* CHOICE, LIST: the allowed words, separated by spaces; INT,
				     * FLOAT: words allowed beside numbers, or NULL */
	const char *alias_of;       /* another name the engine reads for `alias_of` */
	const char *meaning;        /* one line, NULL for an alias */
};

/* The table of every train setting the training engine reads, in documentation order. */
const struct sl_setting *sl_settings(int *n);
/* The entry of name, or NULL. */
const struct sl_setting *sl_setting_find(const char *name);
/* 0 when name is a train setting; else 1 with the message and a hint, as below. */
int sl_setting_check_name(const char *name, char *msg, size_t msg_n, char *hint, size_t hint_n);
/* 0 when the setting name = value (a number, or the string str when is_str) is known and
 * allowed; else 1, with the message in msg and a hint (or "") in hint. */
int sl_setting_check(const char *name, int is_str, double num, const char *str, char *msg,
		     size_t msg_n, char *hint, size_t hint_n);
/* Checks every setting of g (a graph read from textual IR has no source location):
 * prints "error: train setting: ..." to err (when not NULL) for each bad one and
 * returns their count. */
int sl_settings_check_graph(const struct ir_graph *g, FILE *err);

#endif
