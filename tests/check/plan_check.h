/* plan_check.h - the properties every memory plan must have, checked against a
 * liveness computed here independently of passes/memplan.c. */
#ifndef SLUICE_TEST_PLAN_CHECK_H
#define SLUICE_TEST_PLAN_CHECK_H

#include <stdlib.h>

#include "check.h"
#include "passes/passes.h"

static const int64_t *plan_sort_offsets;
static inline int plan_by_offset(const void *x, const void *y)
{
	int64_t a = plan_sort_offsets[*(const int *)x], b = plan_sort_offsets[*(const int *)y];
	return a < b ? -1 : a > b;
}

/* Checks the plan of g: offsets aligned, inside the arena, no two values live at once
 * overlap, and peak between the largest live set and the naive sum. */
static inline int64_t check_plan(const struct ir_graph *g, const struct pass_memplan *p,
				 int64_t align)
{
	int nv = g->n_values;
	REQUIRE(p->n_values == nv);
	int *first = malloc(sizeof *first * (size_t)nv), *last = malloc(sizeof *last * (size_t)nv);
	REQUIRE(first && last);
	for (int i = 0; i < nv; i++)
		first[i] = last[i] = -1;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		for (int j = 0; j < op->n_out; j++)
			first[op->out[j]->id] = last[op->out[j]->id] = i;
		for (int j = 0; j < op->n_in; j++)
			if (i > last[op->in[j]->id])
				last[op->in[j]->id] = i;
	}
	int64_t naive = 0;
	for (int i = 0; i < nv; i++) {
		const struct ir_value *v = g->values[i];
		int outside = v->def->kind == IR_OP_INPUT || v->def->kind == IR_OP_PARAM;
		for (int k = 0; k < g->n_outputs; k++)
			outside |= g->outputs[k] == v;
		CHECKF(p->size[i] == ir_shape_numel(&v->shape) * (int64_t)ir_dtype_size(v->dtype),
		       "value %d", i);
		if (outside) {
			CHECKF(p->offset[i] == -1, "value %d should be outside", i);
			continue;
		}
		CHECKF(p->offset[i] >= 0, "value %d", i);
		CHECKF(p->offset[i] % align == 0, "value %d at %lld", i, (long long)p->offset[i]);
		CHECKF(p->offset[i] + p->size[i] <= p->peak, "value %d", i);
		naive += (p->size[i] + align - 1) / align * align;
	}
	/* the largest set of values live at once: a lower bound of any plan */
	int64_t *delta = calloc((size_t)g->n_ops + 1, sizeof *delta);
	REQUIRE(delta);
	for (int i = 0; i < nv; i++)
		if (p->offset[i] >= 0) {
			int64_t sz = (p->size[i] + align - 1) / align * align;
			delta[first[i]] += sz;
			delta[last[i] + 1] -= sz;
		}
	int64_t max_live = 0, live = 0;
	for (int t = 0; t < g->n_ops; t++) {
		live += delta[t];
		if (live > max_live)
			max_live = live;
	}
	free(delta);
	CHECKF(p->peak >= max_live && p->peak <= naive, "peak %lld live %lld naive %lld",
	       (long long)p->peak, (long long)max_live, (long long)naive);
	/* every pair whose bytes overlap must not be live together: sort by offset and
	 * walk each value's successors while their bytes overlap */
	int *ord = malloc(sizeof *ord * (size_t)(nv ? nv : 1));
	REQUIRE(ord);
	int n = 0;
	for (int i = 0; i < nv; i++)
		if (p->offset[i] >= 0 && p->size[i])
			ord[n++] = i;
	plan_sort_offsets = p->offset;
	qsort(ord, (size_t)n, sizeof *ord, plan_by_offset);
	for (int a = 0; a < n; a++) {
		int i = ord[a];
		for (int b = a + 1; b < n && p->offset[ord[b]] < p->offset[i] + p->size[i]; b++) {
			int j = ord[b];
			int live_together = first[i] <= last[j] && first[j] <= last[i];
			CHECKF(!live_together,
			       "values %d [%d,%d] @%lld+%lld and %d [%d,%d] @%lld+%lld", i,
			       first[i], last[i], (long long)p->offset[i], (long long)p->size[i],
			       j, first[j], last[j], (long long)p->offset[j],
			       (long long)p->size[j]);
		}
	}
	free(ord);
	free(first);
	free(last);
	return max_live;
}

#endif
