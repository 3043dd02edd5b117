/*
 * chunk.c - every op's part of its layer, the pieces DualPipe overlaps: attention,
 * dispatch, MLP, combine.
 *
 * Takes: a graph after autodiff (and expert_parallel, fp8: it runs after them so that
 * the ops they add are labelled too: a quantisation of expert rows is mlp, of other
 * values attn, by the rules below).  Gives every op but inputs,
 * parameters and constants a string attr `part`, read from the ops themselves, so it
 * holds for any model the language writes:
 *  - dispatch: the ops that send token rows to their experts: MOE_DISPATCH, the
 *    expert-parallel counts (EP_COUNTS, ALL_TO_ALL, EP_OFFSETS), the exchange that
 *    takes rows toward the experts (ALL_TO_ALLV fed by a dispatch op, EP_REGROUP
 *    forward) and, in the backward, MOE_COMBINE_BWD_DATA (the combine's gradient goes
 *    the dispatch's way);
 *  - mlp: every other op that reads rows on the experts' side (the grouped matmuls and
 *    what lies between them, forward, input-grad and weight-grad alike);
 *  - combine: the ops that bring expert rows back to their tokens: MOE_COMBINE,
 *    MOE_UNDISPATCH, MOE_COMBINE_BWD_GATE, EP_REGROUP inverse and the ALL_TO_ALLV it
 *    feeds;
 *  - attn: the rest (attention, norms, the router, shared experts, dense layers, the
 *    head and the losses).
 * The phase of each op (fwd, bwd_b: input-grads, bwd_w: weight-grads) is autodiff's.
 * The program builder (codegen/program.c) cuts each stage's forward, input-grad and
 * weight-grad at the communication ops and names each chunk by its ops' parts.
 *
 * Leaves alone: everything else; `part` is a label that no kernel reads.
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

static const char *def_part(const struct ir_value *v)
{
	return v->def ? ir_op_str(v->def, "part", "") : "";
}

int pass_chunk(struct ir_graph *g, FILE *err)
{
	unsigned char *expert = calloc((size_t)g->n_values + 1, 1);
	if (!expert) {
		fprintf(err, "error: out of memory\n");
		return 1;
	}
	for (int i = 0; i < g->n_ops; i++) {
		struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT || op->kind == IR_OP_PARAM || op->kind == IR_OP_CONST)
			continue;
		const char *part = "attn";
		int rows_out = 0; /* its first output is on the experts' side */
		switch (op->kind) {
		case IR_OP_MOE_DISPATCH:
		case IR_OP_MOE_COMBINE_BWD_DATA:
			part = "dispatch";
			rows_out = 1;
			break;
		case IR_OP_EP_COUNTS:
		case IR_OP_EP_OFFSETS:
		case IR_OP_ALL_TO_ALL:
			part = "dispatch";
			break;
		case IR_OP_EP_REGROUP:
			rows_out = !ir_op_int(op, "inverse", 0);
			part = rows_out ? "dispatch" : "combine";
			break;
		case IR_OP_ALL_TO_ALLV:
			part = !strcmp(def_part(op->in[0]), "combine") ? "combine" : "dispatch";
			rows_out = part[0] == 'd';
			break;
		case IR_OP_MOE_COMBINE:
		case IR_OP_MOE_UNDISPATCH:
		case IR_OP_MOE_COMBINE_BWD_GATE:
			part = "combine";
			break;
		default:
			for (int k = 0; k < op->n_in && !rows_out; k++)
				rows_out = expert[op->in[k]->id];
			if (rows_out)
				part = "mlp";
		}
		ir_op_set_str(g, op, "part", part);
		for (int k = 0; k < op->n_out && rows_out; k++)
			expert[op->out[k]->id] = 1;
	}
	free(expert);
	return 0;
}
