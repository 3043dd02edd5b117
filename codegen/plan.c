/* plan.c - what every backend does with a plan (lower.c) besides rendering its
 * kernels: lay its buffers out in one arena, and find its distinct kernels.
 *
 * The layout.  pass_memplan works on the liveness of an IR graph, but after fusion the
 * buffers that exist and the order in which they are read are those of the plan's
 * steps, not of the ops (an inlined value has no buffer; its inputs are read by its
 * consumer's kernel, later).  So the plan is described to memplan as a graph of its
 * own: one op per step, reading the buffers the step reads and defining those it
 * writes first.  A value is live from its step to its last reader, both included, so
 * no step's outputs overlap its inputs: a library routine may read and write at once. */
#include <stdlib.h>
#include <string.h>

#include "codegen/plan.h"
#include "passes/passes.h"
#include "runtime/rt.h"

static enum ir_dtype shadow_dtype(enum kir_type t)
{
	return t == KIR_I64 ? IR_I64 : t == KIR_I32 ? IR_I32 : t == KIR_BF16 ? IR_BF16
	       : t == KIR_F16 ? IR_F16 : t == KIR_F8E4M3 ? IR_F8E4M3 : t == KIR_F8E5M2 ? IR_F8E5M2
	       : IR_F32;
}

int cg_plan_layout(const struct cg_plan *p, int64_t *off, int64_t *peak, FILE *err)
{
	const struct ir_graph *g = p->g;
	struct ir_graph *sg = ir_graph_new("plan");
	struct ir_value **sv = rt_calloc((size_t)p->n_bufs + 1, sizeof *sv);
	struct ir_value **in = rt_calloc((size_t)p->n_bufs + 1, sizeof *in);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_INPUT && op->kind != IR_OP_PARAM)
			continue;
		int id = op->out[0]->id;
		sv[id] = ir_op1(sg, IR_OP_PARAM, 0, NULL, shadow_dtype(p->buf_type[id]),
				ir_shape_of(1, p->buf_numel[id]));
	}
	for (int s = 0; s < p->n_steps; s++) {
		const struct cg_step *st = &p->steps[s];
		int n_in = 0, n_out = 0;
		for (int i = 0; i < st->n_bufs; i++) {
			if (sv[st->bufs[i]])
				in[n_in++] = sv[st->bufs[i]];
			else if (st->writes[i])
				n_out++;
		}
		struct ir_op *op = ir_op_new(sg, IR_OP_ADD, n_in, in, n_out);
		for (int i = 0, o = 0; i < st->n_bufs; i++) {
			int b = st->bufs[i];
			if (sv[b] || !st->writes[i])
				continue;
			/* a buffer in two places of one step's list: define it once */
			int dup = 0;
			for (int j = 0; j < o; j++)
				if (op->out[j] == sv[b])
					dup = 1;
			if (dup)
				continue;
			sv[b] = op->out[o++];
			sv[b]->dtype = shadow_dtype(p->buf_type[b]);
			sv[b]->shape = ir_shape_of(1, p->buf_numel[b]);
		}
	}
	for (int i = 0; i < g->n_outputs; i++)
		if (g->outputs[i] && sv[g->outputs[i]->id])
			ir_graph_add_output(sg, g->output_names[i], sv[g->outputs[i]->id]);

	struct pass_memplan mp;
	int rc = 0;
	if (pass_memplan(sg, 64, &mp)) {
		fprintf(err, "sluice: %s: the memory plan overflows\n", p->target->name);
		rc = 1;
	} else {
		*peak = mp.peak;
		for (int b = 0; b < p->n_bufs; b++)
			off[b] = sv[b] ? mp.offset[sv[b]->id] : -2;
		pass_memplan_free(&mp);
	}
	free(sv);
	free(in);
	ir_graph_free(sg);
	return rc;
}

int cg_plan_distinct_kernels(const struct cg_plan *p, int *uniq, struct kir_kernel **ks)
{
	int n = p->n_ks, n_uniq = 0;
	char **text = rt_calloc((size_t)n + 1, sizeof *text);
	for (int i = 0; i < n; i++) {
		size_t len = 0;
		FILE *f = open_memstream(&text[i], &len);
		if (!f)
			RT_BUG("open_memstream failed");
		kir_print(p->ks[i], f);
		fclose(f);
		char *body = strchr(text[i], '\n'); /* past the line with the name */
		uniq[i] = -1;
		for (int j = 0; j < i && uniq[i] < 0; j++)
			if (uniq[j] >= 0 && ks[uniq[j]] == p->ks[j] &&
			    !strcmp(body, strchr(text[j], '\n')))
				uniq[i] = uniq[j];
		if (uniq[i] < 0) {
			uniq[i] = n_uniq;
			ks[n_uniq++] = p->ks[i];
		}
	}
	for (int i = 0; i < n; i++)
		free(text[i]);
	free(text);
	return n_uniq;
}
