/* ref.h - the reference executor: the oracle every other executor is tested against.
 *
 * One simple loop nest per primitive op (codegen/ref.c), forward and backward helpers,
 * no fusion, no threads.  Float values of any float dtype are held as double; after
 * each op a value whose dtype is bf16, f16, f8e4m3 or f8e5m2 is rounded to that dtype
 * (round to nearest, ties to even; bf16/f16 overflow to infinity, the f8 types
 * saturate at their largest finite value).  f32 values are not rounded: the reference
 * is the exact computation in double.  Integer values are held as int64_t.
 * Accumulation is in double.  Every value is kept after a run, so any value can be read.
 *
 * The communication ops (send, recv, all_to_all, all_reduce, reduce_scatter,
 * all_gather) need ranks: running a graph that holds one is an error.
 *
 * The same executor is also a cg_backend (cg_backend_ref in codegen/backend.h) with the
 * f32 storage interface: values are converted at bind/run/tensor. */
#ifndef SLUICE_REF_H
#define SLUICE_REF_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

struct ref_exec;

/* The graph must outlive the executor. */
struct ref_exec *ref_new(const struct ir_graph *g);
void ref_free(struct ref_exec *e);

/* Give an INPUT or PARAM value its data (copied now; rounded to the value's dtype).
 * ref_bind converts doubles to integers for integer values (truncation). */
void ref_bind(struct ref_exec *e, int value_id, const double *data);
void ref_bind_int(struct ref_exec *e, int value_id, const int64_t *data);

/* Run every op of the graph in order.  0 on success; otherwise a message on err (when
 * non-NULL) naming the op and its source location, and -1. */
int ref_run(struct ref_exec *e, FILE *err);

/* A value after ref_run: doubles for float values, int64_t for integer values; NULL
 * when the value is of the other kind or was not computed. */
double *ref_value(struct ref_exec *e, int value_id);
int64_t *ref_value_int(struct ref_exec *e, int value_id);

/* x rounded to dtype t as ref.c rounds stored values (identity for f32 and ints). */
double ref_round(double x, enum ir_dtype t);

#endif
