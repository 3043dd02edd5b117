/* build.h - small helpers to build IR graphs by hand in the tests of tests/check. */
#ifndef SLUICE_TEST_CHECK_BUILD_H
#define SLUICE_TEST_CHECK_BUILD_H

#include <string.h>

#include "ir/ir.h"

static inline void in_scope(struct ir_graph *g, const char *scope)
{
	struct ir_loc loc = { NULL, 0, 0 };
	ir_graph_set_context(g, loc, scope);
}

static inline struct ir_value *b_input(struct ir_graph *g, const char *name,
				       enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *v = ir_op1(g, IR_OP_INPUT, 0, NULL, t, s);
	ir_op_set_str(g, v->def, "name", name);
	v->name = ir_strdup(g->arena, name);
	return v;
}

static inline struct ir_value *b_param(struct ir_graph *g, const char *path,
				       struct ir_shape s, int trainable)
{
	struct ir_value *v = ir_op1(g, IR_OP_PARAM, 0, NULL, IR_F32, s);
	v->def->path = ir_strdup(g->arena, path);
	ir_op_set_str(g, v->def, "init", "normal");
	if (!trainable)
		ir_op_set_int(g, v->def, "trainable", 0);
	return v;
}

static inline struct ir_value *b_un(struct ir_graph *g, enum ir_opkind k,
				    struct ir_value *x)
{
	return ir_op1(g, k, 1, &x, x->dtype, x->shape);
}

static inline struct ir_value *b_bin(struct ir_graph *g, enum ir_opkind k,
				     struct ir_value *a, struct ir_value *b)
{
	struct ir_value *in[2] = { a, b };
	struct ir_shape s;
	if (!ir_shape_broadcast(&a->shape, &b->shape, &s))
		s = a->shape;
	return ir_op1(g, k, 2, in, a->dtype, s);
}

static inline struct ir_value *b_reshape(struct ir_graph *g, struct ir_value *x,
					 struct ir_shape s)
{
	return ir_op1(g, IR_OP_RESHAPE, 1, &x, x->dtype, s);
}

/* x[..., M, K] @ w[K, N] */
static inline struct ir_value *b_matmul(struct ir_graph *g, struct ir_value *x,
					struct ir_value *w)
{
	struct ir_value *in[2] = { x, w };
	struct ir_shape s = x->shape;
	s.dim[s.rank - 1] = w->shape.dim[w->shape.rank - 1];
	return ir_op1(g, IR_OP_MATMUL, 2, in, IR_F32, s);
}

static inline struct ir_value *b_gather(struct ir_graph *g, struct ir_value *table,
					struct ir_value *idx)
{
	struct ir_value *in[2] = { table, idx };
	struct ir_shape s = idx->shape;
	s.dim[s.rank++] = table->shape.dim[1];
	return ir_op1(g, IR_OP_GATHER_ROWS, 2, in, table->dtype, s);
}

static inline struct ir_value *b_xent(struct ir_graph *g, struct ir_value *logits,
				      struct ir_value *targets)
{
	struct ir_value *in[2] = { logits, targets };
	return ir_op1(g, IR_OP_CROSS_ENTROPY, 2, in, IR_F32, ir_shape_of(0));
}

#endif
