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
 *  - settings: every setting of the train section (ir_graph_set), nested ones as
 *    "pipeline.stages";
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

#endif
