/* passes.h - passes over the IR, each ir -> ir, one file each, run in order by
 * pass_pipeline_run() (passes/pipeline.c).  Each pass's file opens with what it takes,
 * what it guarantees and what it leaves alone. */
#ifndef SLUICE_PASSES_H
#define SLUICE_PASSES_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

/* bf16: with the train setting precision = bf16, mixed precision as practised (see
 * bf16.c for the rules): products read bf16 operands (weights cast each step from the
 * f32 parameters) and accumulate in f32, activations between products are bf16,
 * norms, softmax, cross entropy, routing and the residual stream stay f32.  Runs
 * before autodiff, which differentiates the casts.  0, or non-zero with a message. */
int pass_bf16(struct ir_graph *g, FILE *err);

/* autodiff: appends the backward of the graph's "loss" output.  Every backward op
 * is tagged IR_PHASE_BWD_B (gradients w.r.t. activations) or IR_PHASE_BWD_W
 * (gradients w.r.t. parameters).  For each trainable PARAM op (attr trainable != 0)
 * with path P the graph gains an
 * output named "grad.P".  Returns 0, or non-zero with a message on err. */
int pass_autodiff(struct ir_graph *g, FILE *err);

/* expert_parallel: with the train setting ep > 1, each MoE layer's experts sharded
 * over the "ep" group: dispatch and combine become all-to-alls around the local
 * experts (see expert_parallel.c).  0, or non-zero with a message on err.  The
 * receive buffers hold the setting ep_capacity (default PASS_EP_CAPACITY) times the
 * rows of an even routing, or the worst case for ep_capacity = worst (an overflow is
 * seen alike on every rank and the step runs again, larger). */
#define PASS_EP_CAPACITY 2.0
int pass_expert_parallel(struct ir_graph *g, FILE *err);
/* The setting ep_capacity of g: a number of even shares, 0 for worst. */
double pass_ep_capacity(const struct ir_graph *g);

/* fp8: with the train setting precision = fp8, DeepSeek-V3's recipe: the forward,
 * input-gradient and weight-gradient products of linear and expert layers become
 * scaled products of E4M3 operands (1x128 activation tiles, 128x128 weight blocks, 128x1
 * for the weight gradient's operands); the output head, the router and every other op
 * keep their precision (see fp8.c).  0, or non-zero with a message on err. */
int pass_fp8(struct ir_graph *g, FILE *err);
/* fp8[value id] (g->n_values entries) = 1 for the output of each forward product that
 * the fp8 pass quantises (its backward products with it), whatever the precision
 * setting; scaled products of a graph quantised already count too. */
void pass_fp8_products(const struct ir_graph *g, unsigned char *fp8);

/* chunk: every op but inputs, parameters and constants gets attr part = "attn",
 * "dispatch", "mlp" or "combine", from its kind and its inputs (see chunk.c); with the
 * phases (fwd, bwd_b, bwd_w) they name the chunks the program builder cuts.  0, or
 * non-zero with a message on err. */
/* recompute.c: forward values the backward computes again (the train setting
 * `recompute`) */
int pass_recompute(struct ir_graph *g, FILE *err);

int pass_chunk(struct ir_graph *g, FILE *err);

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
	double flops_fp8_per_token; /* the part of it in products that precision fp8 runs
				     * in E4M3 (linear and expert layers; see fp8.c) */
	int64_t params_fp8;         /* the weights those products read (an E4M3 copy each) */
	int64_t fp8_weight_bytes;   /* those copies: a byte per weight, an f32 scale per
				     * 128x128 block */
	int64_t activation_bytes;   /* per micro-batch, saved for the backward */
	int n_layers;
	struct pass_layer_stats *layers; /* malloc'd, freed by pass_account_free */
};

int pass_account(const struct ir_graph *g, struct pass_account *out);
/* The same counts per value id (arrays [g->n_values], zeroed here): flops[v] the
 * training FLOPs per token of the matrix product that defines v, act[v] the bytes of v
 * when the backward saves it.  Returns non-zero when a count passes 2^63. */
int pass_account_values(const struct ir_graph *g, double *flops, int64_t *act);
void pass_account_free(struct pass_account *a);
/* When the scope lies in a numbered layer, one that the per-layer table keys with its
 * number ("layers.3.attn" -> "layers.3", "mtp.0": the ops a loop made per iteration),
 * the length of that key in scope; else 0 */
size_t pass_numbered_layer(const char *scope);

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

/* --- pipeline stages (passes/partition.c) ------------------------------------------------ */
/* A layout: pp stages of dp ranks each; ep-way expert parallelism inside dp; micro-batches
 * per data-parallel rank per step; zero 1 shards AdamW's states over dp; the schedule
 * ("1f1b", "zb1p", "gpipe", "dualpipe", "dualpipev") sets the micro-batches each stage
 * keeps in flight. */
struct pass_layout { int pp, dp, ep, microbatches, zero; const char *schedule; };
/* flops_per_s: the backend's measured or stated rate (0: PASS_DEFAULT_FLOPS); mem_limit:
 * bytes a rank may hold (0: no limit). */
struct pass_rates { double flops_per_s; double mem_limit; };
/* NVIDIA's stated dense BF16 rate of an H100 or H200 (SXM), FLOP/s */
#define PASS_DEFAULT_FLOPS 989e12

/* One rank of one stage: its layers, parameters (params: the stage's own, whole;
 * params_per_rank: what one rank holds, experts / ep, copies included; params_copied:
 * parameters of stage 0 that this stage reads, held as copies), training FLOPs per token,
 * one micro-batch's forward + backward time at the rate, and memory in bytes. */
struct pass_stage_stats {
	int first_layer, n_layers;
	int64_t params, params_per_rank;
	double flops_per_token;
	int64_t mem_params, mem_grads, mem_optim, mem_acts, mem_comm, mem_total;
	int inflight;              /* micro-batches whose activations the stage holds */
	int64_t params_copied;
	double compute_s;
};
struct pass_partition {
	int pp, n_layers;
	int *layer_stage;                /* [n_layers] */
	struct pass_stage_stats *stages; /* [pp] */
	double balance;                  /* largest / mean stage compute time */
};

/* pp, ep, microbatches, zero and schedule from the train settings (defaults 1, 1, 1, 0,
 * "1f1b"); dp = ranks / pp, with ranks 0 meaning pp x ep (dp 0 when pp does not divide
 * ranks: pass_layout_check says so).  Non-zero with a message when a setting is no
 * whole number in range. */
int pass_layout_read(const struct ir_graph *g, int ranks, struct pass_layout *l, FILE *err);
/* The impossible layouts, each with its message: ranks not divisible by pp, ep not
 * dividing dp, experts not divisible by ep, more stages than layers, an unknown
 * schedule.  ranks 0: pp x ep.  Returns 0 when the layout can run. */
int pass_layout_check(const struct ir_graph *g, const struct pass_layout *l, int ranks,
		      FILE *err);
/* inflight[s], s < l->pp: the micro-batches stage s keeps in flight under l's schedule */
void pass_layout_inflight(const struct pass_layout *l, int *inflight);

/* Cut the layers into l->pp stages (see partition.c for the cost model and the
 * objective).  out is malloc'd; free it with pass_partition_free.  Non-zero with a
 * message for an impossible layout or when no split fits r->mem_limit. */
int pass_partition_plan(const struct ir_graph *g, const struct pass_layout *l,
			const struct pass_rates *r, struct pass_partition *out, FILE *err);
/* Sets op->stage of every op of g (forward and backward, from the op's scope; ops at the
 * top level before the layers -> 0, after -> pp-1, INPUT/PARAM/CONST ops -> the lowest
 * stage among their consumers), and checks that no forward value flows from a higher
 * stage to a lower one (an error naming the op otherwise). */
int pass_partition_assign(struct ir_graph *g, const struct pass_partition *p, FILE *err);
void pass_partition_free(struct pass_partition *p);

/* The cost model as vectors over units: 0 the part before the layers, 1..n_layers the
 * layers, n_layers + 1 the part after.  Every array has n_layers + 2 entries but
 * mem_cross, n_layers + 1: mem_cross[b] are the bytes crossing between layer b-1 and
 * layer b (b in 1..n_layers-1), a micro-batch's values and their gradients.  Memory in
 * bytes per rank; mem_copied counts on stages other than 0 only; a stage holds the
 * largest mem_ep of its units. */
struct pass_unit_costs {
	int n_layers;
	double *time, *flops_per_token;
	int64_t *params, *params_expert, *params_copied;
	double *mem_params, *mem_grads, *mem_optim, *mem_copied, *mem_act, *mem_ep;
	double *mem_cross;
};
int pass_partition_costs(const struct ir_graph *g, const struct pass_layout *l,
			 const struct pass_rates *r, struct pass_unit_costs *c, FILE *err);
void pass_unit_costs_free(struct pass_unit_costs *c);
/* The stage s of pp that holds layers [first, first + n): its compute time, and its
 * memory per rank (*comm, when given, gets the communication buffers' share). */
double pass_partition_stage_time(const struct pass_unit_costs *c, int first, int n, int s,
				 int pp);
double pass_partition_stage_mem(const struct pass_unit_costs *c, int first, int n, int s,
				int pp, const int *inflight, double *comm);
/* The best split (layer_stage[n_layers]) by dynamic programming; non-zero with a
 * message when pp > n_layers or nothing fits mem_limit (0: no limit). */
int pass_partition_split(const struct pass_unit_costs *c, int pp, const int *inflight,
			 double mem_limit, int *layer_stage, FILE *err);


/* --- pipeline schedules (passes/schedule.c, passes/simulate.c) -------------------------- */
/* A schedule: for each of `ranks` ranks the ordered list of what its compute stream runs.
 * The model is cut into `stages` stages; a micro-batch runs every stage forward, in order,
 * then every stage backward, in reverse.  Where each stage of a micro-batch runs:
 * 1f1b, zb1p: stage r on rank r; dualpipe (stages = ranks): micro-batches 0..M/2-1 run
 * down (stage s on rank s), M/2..M-1 enter at the last rank and run up (stage s on rank
 * ranks-1-s): rank r holds stages r and ranks-1-r, two copies of the parameters;
 * dualpipev (stages = 2 ranks): stage s on rank s, then on rank 2 ranks-1-s (down the
 * ranks and back up), rank r holds stages r and 2 ranks-1-r, one copy. */
enum pass_sched_kind {
	PASS_SCHED_1F1B, PASS_SCHED_ZB1P, PASS_SCHED_DUALPIPE, PASS_SCHED_DUALPIPEV,
};
enum pass_act_kind {
	PASS_ACT_F,      /* forward of (mb, stage) */
	PASS_ACT_B,      /* input-grad part of the backward; its W comes later */
	PASS_ACT_W,      /* weight-grad part of a backward whose B ran earlier */
	PASS_ACT_BW,     /* full backward, B and W as one chunk (what 1F1B runs) */
	PASS_ACT_FB,     /* forward of (mb, stage) overlapped with the full backward of
			  * (mb2, stage2) */
	PASS_ACT_SEND_F, /* simulated only: (mb, stage)'s forward output to the next stage */
	PASS_ACT_SEND_B, /* simulated only: (mb, stage)'s input gradient to the stage before */
};
struct pass_act {
	enum pass_act_kind kind;
	int mb, stage;
	int mb2, stage2;           /* FB: the backward's micro-batch and stage; else -1 */
};
struct pass_schedule {
	enum pass_sched_kind kind;
	int ranks, stages, microbatches;
	int param_copies;          /* model copies the ranks hold between them: 2 for dualpipe */
	int *n_acts;               /* [ranks] */
	struct pass_act **acts;    /* [ranks][n_acts[r]] */
};
/* The schedule named `name` ("1f1b", "zb1p", "dualpipe", "dualpipev"); non-zero with a
 * message when it is unknown or cannot run (dualpipe: odd ranks, fewer than 2 ranks
 * micro-batches or an odd number; dualpipev: fewer than 2 ranks micro-batches; every
 * schedule: at least one rank and one micro-batch). */
int pass_schedule_build(const char *name, int ranks, int microbatches,
			struct pass_schedule *out, FILE *err);
void pass_schedule_free(struct pass_schedule *s);
const char *pass_act_name(enum pass_act_kind k);
/* the rank that runs stage `stage` of micro-batch `mb` */
int pass_schedule_rank(const struct pass_schedule *s, int mb, int stage);
/* Every rank runs the forward, the input-grad and the weight-grad of each (mb, stage) it
 * holds exactly once and of no other, F before B before W in its list.  0, or non-zero
 * with the first fault on err. */
int pass_schedule_verify(const struct pass_schedule *s, FILE *err);

/* Costs in seconds (or any unit).  f, b, w: per stage, the forward, the full backward and
 * its weight-grad part (the input-grad part is b - w); fb > 0: an overlapped pair's cost,
 * else f of its forward + b of its backward; transfer: one point-to-point send. */
struct pass_sched_costs {
	const double *f, *b, *w;   /* [stages] */
	double fb, transfer;
};
/* One simulated action: on stream 0 (compute) the schedule's, on stream 1
 * (communication) the sends between ranks. */
struct pass_sim_event {
	struct pass_act act;
	int rank, stream;
	double start, end;
};
struct pass_sim_rank {
	double busy;               /* compute time */
	double bubble;             /* step - busy: idle compute time inside the step */
	double end;                /* when its last action ends */
	int peak_acts;             /* most micro-batch stages whose forward ran and whose
				    * input-grad (B, BW, or FB's backward) has not */
	double params;             /* parameters held, in model / ranks (1: a 1f1b stage) */
};
struct pass_sim {
	double step;               /* the last end over every rank and stream */
	struct pass_sim_rank *ranks;
	int n_events;
	struct pass_sim_event *events; /* per rank in list order, sends after the compute */
};
/* Runs the schedule against the costs: each action starts when its stream is free and its
 * inputs are there (F after the forward of the stage before plus a transfer between
 * ranks; B, BW after the backward of the stage after, or the last stage's own forward;
 * W after its B; FB's two parts each after their own inputs, the pair starting when both
 * are).  Non-zero with the stuck actions on err when the lists wait on each other. */
int pass_schedule_simulate(const struct pass_schedule *s, const struct pass_sched_costs *c,
			   struct pass_sim *out, FILE *err);
void pass_sim_free(struct pass_sim *sim);

#endif
