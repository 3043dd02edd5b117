/* passes.h - passes over the IR, each ir -> ir, one file each, run in order by
 * pass_pipeline_run() (passes/pipeline.c).  Each pass's file opens with what it takes,
 * what it guarantees and what it leaves alone. */
#ifndef SLUICE_PASSES_H
#define SLUICE_PASSES_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

/* autodiff: appends the backward of the graph's "loss" output.  Every backward op
 * is tagged IR_PHASE_BWD_B (gradients w.r.t. activations) or IR_PHASE_BWD_W
 * (gradients w.r.t. parameters).  For each trainable PARAM op (attr trainable != 0)
 * with path P the graph gains an
 * output named "grad.P".  Returns 0, or non-zero with a message on err. */
int pass_autodiff(struct ir_graph *g, FILE *err);

/* Run the pipeline of passes in order, stopping after the pass named `after`
 * (NULL: run all).  Returns 0, or non-zero with a message (unknown pass name, a pass
 * failed, verification failed) on err. */
int pass_pipeline_run(struct ir_graph *g, const char *after, FILE *err);
/* The names of the passes, in order, NULL-terminated. */
const char *const *pass_pipeline_names(void);

/* --- accounting (passes/account.c) ------------------------------------------------ */
struct pass_layer_stats {
	const char *scope;        /* e.g. "layers.3" */
	int64_t params;
	int64_t params_active;
	double flops_per_token;   /* forward + backward */
	int64_t activation_bytes;
};

struct pass_account {
	int64_t params_total;       /* main model, MTP excluded */
	int64_t params_mtp;         /* the MTP module(s) */
	int64_t params_active;      /* per token: shared + top-k routed experts */
	double flops_per_token;     /* training: forward + backward */
	int64_t activation_bytes;   /* per micro-batch, saved for the backward */
	int n_layers;
	struct pass_layer_stats *layers; /* malloc'd, freed by pass_account_free */
};

int pass_account(const struct ir_graph *g, struct pass_account *out);
void pass_account_free(struct pass_account *a);

/* --- memory planning (passes/memplan.c) ------------------------------------------------ */
/* Liveness-based placement of every value in one arena.  offset[value id] is the byte
 * offset in the arena, or -1 for values that live outside it (parameters, inputs,
 * gradients of parameters, graph outputs: see memplan.c). */
struct pass_memplan {
	int n_values;
	int64_t *offset;
	int64_t *size;           /* bytes, per value id */
	int64_t peak;            /* bytes of the arena */
};

int pass_memplan(const struct ir_graph *g, size_t align, struct pass_memplan *out);
void pass_memplan_free(struct pass_memplan *p);

#endif
