/*
 * memplan.c - liveness-based placement of a graph's values in one arena.
 *
 * Takes any graph (forward only, or after autodiff and the later passes) and leaves
 * it unchanged; gives a byte offset for every value.  Guarantees afterwards:
 *  - Values that live outside the arena have offset -1: the values of INPUT and PARAM
 *    ops (the data loader and the parameter store own them) and every graph output,
 *    which includes the "grad.P" gradients of the parameters (the optimizer reads
 *    them after the step) and the loss.
 *  - Every other value gets an offset that is a multiple of `align` and a range
 *    [offset, offset + size) that overlaps no other value live at the same time.  A
 *    value is live from the op that defines it to its last use, both included, in the
 *    order of g->ops; a value that nothing reads lives only during its own op.  An
 *    op's outputs therefore never share memory with its inputs: kernels may read
 *    their inputs while they write.
 *  - peak is the size of the arena: what the runtime allocates.
 *
 * Placement walks the ops in order, as an allocator would at run time: before each op
 * its outputs are placed in the free block that fits best (smallest, then lowest),
 * or at the top of the arena, which grows (over a free block at the top when there
 * is one); after the op the values whose last use it was are freed and merged with
 * free neighbours.  Simplification, on purpose: views (RESHAPE, TRANSPOSE, CAST to the
 * same size) get their own bytes rather than aliasing their input, and ops are not
 * reordered to shorten lifetimes.  The naive arena, one slot per value, is the sum of
 * the sizes of the values in the arena.  No plan can be smaller than the largest set
 * of values live at once; on the models in models/ after autodiff this one comes
 * within 0.1% (V2, 67B) to 2.5% (tiny_gpt) of that bound, so the costlier offline
 * placements (greedy by size over the whole lifetime table) are not worth their time.
 */
#include "passes.h"

#include <stdlib.h>
#include <string.h>

struct block {
	int64_t off, size;
};

struct freelist {
	struct block *b;
	int n, cap;
	int64_t top; /* the arena's size so far */
};

static void *xmalloc_array(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	return p;
}

static void fl_insert_at(struct freelist *f, int i, struct block blk)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 64;
		struct block *nb = realloc(f->b, sizeof *nb * (size_t)f->cap);
		if (!nb) {
			fprintf(stderr, "sluice: out of memory\n");
			abort();
		}
		f->b = nb;
	}
	memmove(&f->b[i + 1], &f->b[i], sizeof *f->b * (size_t)(f->n - i));
	f->b[i] = blk;
	f->n++;
}

static void fl_remove_at(struct freelist *f, int i)
{
	memmove(&f->b[i], &f->b[i + 1], sizeof *f->b * (size_t)(f->n - i - 1));
	f->n--;
}

/* The offset of a new block of size bytes, -1 when the arena would pass 2^63 bytes. */
static int64_t fl_alloc(struct freelist *f, int64_t size)
{
	int best = -1;
	for (int i = 0; i < f->n; i++)
		if (f->b[i].size >= size && (best < 0 || f->b[i].size < f->b[best].size))
			best = i;
	if (best >= 0) {
		int64_t off = f->b[best].off;
		f->b[best].off += size;
		f->b[best].size -= size;
		if (!f->b[best].size)
			fl_remove_at(f, best);
		return off;
	}
	if (f->n && f->b[f->n - 1].off + f->b[f->n - 1].size == f->top) {
		int64_t off = f->b[f->n - 1].off;
		if (__builtin_add_overflow(off, size, &f->top))
			return -1;
		fl_remove_at(f, f->n - 1);
		return off;
	}
	int64_t off = f->top;
	if (__builtin_add_overflow(off, size, &f->top))
		return -1;
	return off;
}

static void fl_free(struct freelist *f, int64_t off, int64_t size)
{
	int lo = 0, hi = f->n; /* first block after off */
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (f->b[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	int i = lo;
	if (i > 0 && f->b[i - 1].off + f->b[i - 1].size == off) {
		f->b[i - 1].size += size;
		if (i < f->n && f->b[i - 1].off + f->b[i - 1].size == f->b[i].off) {
			f->b[i - 1].size += f->b[i].size;
			fl_remove_at(f, i);
		}
		return;
	}
	if (i < f->n && off + size == f->b[i].off) {
		f->b[i].off = off;
		f->b[i].size += size;
		return;
	}
	fl_insert_at(f, i, (struct block){ off, size });
}

static int outside_arena(const struct ir_value *v, const unsigned char *is_output)
{
	return !v->def || v->def->kind == IR_OP_INPUT || v->def->kind == IR_OP_PARAM ||
	       is_output[v->id];
}

int pass_memplan(const struct ir_graph *g, size_t align, struct pass_memplan *out)
{
	memset(out, 0, sizeof *out);
	if (!align)
		align = 1;
	int nv = g->n_values;
	out->n_values = nv;
	out->offset = xmalloc_array((size_t)nv, sizeof *out->offset);
	out->size = xmalloc_array((size_t)nv, sizeof *out->size);
	unsigned char *is_output = xmalloc_array((size_t)nv, 1);
	int *last = xmalloc_array((size_t)nv, sizeof *last);
	int *nfree = xmalloc_array((size_t)g->n_ops + 1, sizeof *nfree);
	int *free_ids = xmalloc_array((size_t)nv, sizeof *free_ids);
	struct freelist fl = { 0 };
	int rc = 0;

	for (int i = 0; i < g->n_outputs; i++)
		if (g->outputs[i])
			is_output[g->outputs[i]->id] = 1;
	for (int i = 0; i < nv; i++) {
		const struct ir_value *v = g->values[i];
		int64_t n = ir_shape_numel(&v->shape);
		int64_t es = (int64_t)ir_dtype_size(v->dtype);
		if (n < 0 || (n && es > (INT64_MAX / 2) / n)) {
			rc = -1;
			goto done;
		}
		out->size[i] = n * es;
		out->offset[i] = -1;
		last[i] = -1;
	}
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		for (int j = 0; j < op->n_out; j++)
			last[op->out[j]->id] = i;
		for (int j = 0; j < op->n_in; j++)
			last[op->in[j]->id] = i;
	}

	/* bucket the values by the op after which they die: counting sort */
	for (int i = 0; i < nv; i++)
		if (last[i] >= 0)
			nfree[last[i] + 1]++;
	for (int i = 0; i < g->n_ops; i++)
		nfree[i + 1] += nfree[i];
	{
		int *fill = xmalloc_array((size_t)g->n_ops + 1, sizeof *fill);
		memcpy(fill, nfree, sizeof *fill * ((size_t)g->n_ops + 1));
		for (int i = 0; i < nv; i++)
			if (last[i] >= 0)
				free_ids[fill[last[i]]++] = i;
		free(fill);
	}

	int64_t mask = (int64_t)align - 1;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		for (int j = 0; j < op->n_out; j++) {
			const struct ir_value *v = op->out[j];
			if (outside_arena(v, is_output))
				continue;
			int64_t sz = out->size[v->id];
			int64_t rounded = (int64_t)align > 1 ? (sz + mask) / (int64_t)align *
								   (int64_t)align
							 : sz;
			out->offset[v->id] = sz ? fl_alloc(&fl, rounded) : 0;
			if (out->offset[v->id] < 0) { /* the arena passes 2^63 bytes */
				rc = -1;
				goto done;
			}
		}
		for (int k = nfree[i]; k < nfree[i + 1]; k++) {
			int id = free_ids[k];
			const struct ir_value *v = g->values[id];
			if (outside_arena(v, is_output) || !out->size[id] || out->offset[id] < 0)
				continue;
			int64_t sz = out->size[id];
			int64_t rounded = (int64_t)align > 1 ? (sz + mask) / (int64_t)align *
								   (int64_t)align
							 : sz;
			fl_free(&fl, out->offset[id], rounded);
		}
	}
	out->peak = fl.top;

done:
	free(fl.b);
	free(is_output);
	free(last);
	free(nfree);
	free(free_ids);
	if (rc)
		pass_memplan_free(out);
	return rc;
}

void pass_memplan_free(struct pass_memplan *p)
{
	free(p->offset);
	free(p->size);
	p->offset = p->size = NULL;
	p->n_values = 0;
	p->peak = 0;
}
