/* dot.h - the graph as Graphviz DOT text, for `sluice dot`.
 *
 * Nodes show the op, its attributes and output types (parameters their path, inputs
 * their name); scopes are nested clusters ("layers.3" > "attn"); backward ops are
 * coloured by phase (B input-gradient red, W weight-gradient violet), communication
 * ops orange.  Repeated layers -- consecutive indices of one scope family
 * ("layers.3", "layers.4", ...) whose ops match in kind, shapes, attributes and wiring
 * -- can be drawn once, as "layers.3 .. layers.60 (x58)", so that a 61-layer model
 * stays readable.  Rendering DOT to SVG/PNG/PDF is the caller's job (libgvc). */
#ifndef SLUICE_IR_DOT_H
#define SLUICE_IR_DOT_H

#include <stdio.h>

#include "ir.h"

enum ir_dot_collapse {
	IR_DOT_COLLAPSE_AUTO, /* on when a family has more than IR_DOT_AUTO_LAYERS units */
	IR_DOT_COLLAPSE_ON,
	IR_DOT_COLLAPSE_OFF,
};

#define IR_DOT_AUTO_LAYERS 4

struct ir_dot_options {
	enum ir_dot_collapse collapse;
	const char *title; /* NULL: "model NAME" */
};

/* Write g as DOT to out.  Returns the number of runs of layers collapsed. */
int ir_dot_write(const struct ir_graph *g, const struct ir_dot_options *opt, FILE *out);

#endif
