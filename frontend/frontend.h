/* frontend.h - the model language: source text to IR.
 *
 * sl_compile_* lex, parse, check and lower a model file to a forward IR graph
 * (shapes and dtypes inferred, verified).  On any error in the user's input they
 * print diagnostics to err ("FILE:LINE:COL: error: ...", the source line, a caret,
 * a hint where one helps) and return NULL.  They never abort on bad input. */
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
