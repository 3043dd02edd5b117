/* program.h (codegen) - building a rank's compiled program from the IR.
 *
 * The target-neutral part of code generation: the graph after the passes is cut into
 * chunks (per pipeline stage: the forward, and the backward), each chunk becomes a
 * graph of its own that a backend compiles, the values that cross chunks become
 * buffers (saved for the backward, or sent to another stage), and the schedule
 * becomes the program's action list.  The result is the runtime's struct rt_program
 * (runtime/program.h), which knows nothing of the IR. */
#ifndef SLUICE_CG_PROGRAM_H
#define SLUICE_CG_PROGRAM_H

#include <stdio.h>

#include "codegen/backend.h"
#include "ir/ir.h"
#include "runtime/program.h"

struct cg_layout {
	int pp, dp, ep;
	int microbatches;          /* per data-parallel rank per step */
	const char *schedule;      /* "1f1b", "zb1p", "dualpipe", "dualpipev" */
	int stages;                /* the model's stages: pp, or 2 pp for dualpipev (0: pp) */
	int zero;                  /* 1: AdamW states sharded over each gradient's group */
	const int *layer_stage;    /* [n_layers]: the stage of each layer (partition);
				      NULL: layers cut into pp runs of equal length */
	int n_layers;
};

/* The layers of g: 1 + the largest N of the scopes "layers.N...", 0 when none. */
int cg_count_layers(const struct ir_graph *g);

/* The stage of every op of g (after autodiff), in op->stage, of l->stages (or l->pp)
 * stages: layer ops from
 * l->layer_stage; other forward ops follow their inputs (the latest stage among
 * them), other backward ops too (the earliest: the backward runs down the stages);
 * ops fed only by inputs and parameters go where they are first needed.  0, or -1
 * with a message when a forward value would have to flow up the stages' order. */
int cg_assign_stages(struct ir_graph *g, const struct cg_layout *l, FILE *err);

/* Build rank `rank`'s program (rank = stage * dp + data-parallel index) for the graph
 * after the passes, compiling each chunk with backend be (NULL: do not compile; the
 * chunks then have no code, for printing).  g's ops must carry their stages
 * (cg_assign_stages).  NULL with a message on err. */
struct rt_program *cg_program_build(const struct ir_graph *g, const struct cg_layout *l,
				    int rank, const struct cg_backend *be, FILE *err);

#endif
