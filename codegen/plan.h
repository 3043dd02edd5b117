/* plan.h - an IR graph lowered to a plan (codegen/lower.c): the buffers, the fused
 * kernels in kernel IR (kir.h), and the steps that run them or call a library routine
 * (GEMM, grouped GEMM, attention), in the graph's order.  Target-neutral: a backend
 * says what it wants (struct cg_target), renders the kernels (codegen/llvm/render.c,
 * codegen/cuda/render.c) and supplies the library steps. */
#ifndef SLUICE_PLAN_H
#define SLUICE_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "codegen/kir.h"
#include "ir/ir.h"

/* What a backend asks of the lowering. */
struct cg_target {
	const char *name;     /* in messages: "the LLVM CPU backend" */
	/* bf16 and f16 values in buffers of 16 bits (KIR_BF16, KIR_F16); else in f32
	 * buffers holding values of that format, rounded after every op */
	int half_storage;
	/* > 0: kernels over rows (norms, softmax, cross entropy, wide elementwise rows)
	 * run a row per block of up to this many threads, loops over the row spread over
	 * them and reductions cooperative; 0: a row per point */
	int block_threads;
	/* FP8 emulated: f8 values live in f32 buffers rounded to their format (kernel ops
	 * KIR_RF8E4M3, KIR_RF8E5M2), QUANT_FP8 and DEQUANT_FP8 are kernels, and a scaled
	 * product is its operands dequantised into scratch buffers (the step's last two)
	 * then the unscaled library GEMM over them.  0: FP8 ops are refused (a target with
	 * FP8 GEMMs of its own lowers them its way) */
	int emulate_fp8;
	/* FP8 stored: f8 values live in one-byte buffers (KIR_F8E4M3, KIR_F8E5M2: a store
	 * rounds), QUANT_FP8 and DEQUANT_FP8 are kernels, and a scaled product either
	 * runs as the target's block-scaled FP8 GEMM (cg_fp8_gemm_form) or, where that
	 * takes no such shape, dequantises its operands into f32 scratch and runs the
	 * f32 library routine, as emulate_fp8 does */
	int fp8_storage;
};

/* How a target with fp8_storage runs a scaled product (see lower.c): */
enum cg_fp8_form {
	CG_FP8_DEQUANT, /* operands dequantised into f32 scratch (the step's first two
			 * scratch buffers), the f32 routine over them, into a third f32
			 * scratch buffer that a kernel after the step rounds into the output
			 * when the output is not stored in f32 */
	CG_FP8_FWD,     /* y[M,N] = x[M,K] W[K,N]: a block-scaled FP8 GEMM (1x128 tiles of
			 * x, 128x128 blocks of W; y bf16 or f32) after three relayouts into
			 * scratch: W
			 * transposed to [N,K], x's scales to [K/128][M], W's to
			 * [N/128][S] (S: runtime/gpu.h's rt_gemm_block_scale_stride) */
	CG_FP8_DGRAD,   /* y[M,N] = dy[M,K] W[N,K]^T: the same GEMM, W read as stored, after
			 * two relayouts: dy's scales to [K/128][M], W's to [N/128][S] */
	CG_FP8_WGRAD,   /* dW[K,N] = x[M,K]^T dy[M,N], both in 128x1 tiles along the tokens
			 * M, f32 out: the FP8 GEMM with 1x128 scales on both operands,
			 * after x and dy are transposed to [K,M] and [N,M] (their scales,
			 * [M/128][K] and [M/128][N], are as that GEMM reads them) */
	CG_FP8_GROUPED, /* SCALED_GROUPED_MATMUL, 1x128 tiles of x and 128x128 blocks of
			 * each expert's w, K and N multiples of 8, at most 2047 experts, y
			 * f32 or bf16: x and w widened to bf16 into scratch (exact), then the
			 * target's grouped product that applies the scales every 128 of K */
	CG_FP8_GROUPED_WGRAD, /* SCALED_GROUPED_MATMUL_WGRAD, dW[E,K,N]: 128x1 tiles of
			 * both operands, K and N multiples of 8, at most 2047 experts, dW
			 * f32 or bf16: xs and dy widened to bf16 into scratch, then the
			 * target's weight gradient that applies the scales every 128 rows */
};

/* Buffers are numbered: ids below the graph's n_values are its values, ids above are
 * scratch buffers that some ops need (e.g. the inverse permutation of MOE_COMBINE). */
enum cg_step_kind {
	CG_STEP_KERNEL, CG_STEP_MATMUL, CG_STEP_GROUPED, CG_STEP_WGRAD, CG_STEP_ATTENTION,
	CG_STEP_ATTENTION_BWD
};

struct cg_step {
	enum cg_step_kind kind;
	const struct ir_op *op;   /* the op the step belongs to */
	int kernel;               /* CG_STEP_KERNEL: index in plan->ks */
	int64_t extent, grain;    /* parallel points, points per chunk of a CPU thread */
	int n_bufs;
	int *bufs;                /* buffer ids; for a kernel, in the kernel's order; for
				   * a library step the op's inputs, then its outputs, then
				   * its scratch buffers */
	unsigned char *writes;    /* per buffer: the step writes it */
};

struct cg_plan {
	const struct ir_graph *g;
	const struct cg_target *target;
	int n_values;
	unsigned char *inlined;   /* per value: computed inside its consumer's kernel */
	int *alias;               /* per value: the value whose buffer it uses (itself
				   * unless a RESHAPE/STOP_GRAD shares its input's) */
	int *view_of;             /* per value: for a TRANSPOSE that MATMULs read in place,
				   * its input; else -1 */
	unsigned char *is_output;
	int *rope_table;          /* per ROPE value: the buffer of its cos/sin table */
	int n_bufs, cap_bufs;     /* values + scratch */
	enum kir_type *buf_type;  /* storage type per buffer */
	int64_t *buf_numel;
	struct kir_kernel **ks;
	int n_ks, cap_ks;
	struct cg_step *steps;
	int n_steps, cap_steps;
	int sizing;               /* cg_plan_graph_sizing: exchanges over many ranks pass */
};

/* 0, or non-zero with a message on err (an op the backend cannot run). */
/* The form of scaled product op on P's target (CG_FP8_DEQUANT unless fp8_storage). */
enum cg_fp8_form cg_fp8_gemm_form(const struct cg_plan *p, const struct ir_op *op);

int cg_plan_graph(struct cg_plan *p, const struct ir_graph *g, const struct cg_target *t,
		  const char *prefix, FILE *err);
/* The same plan for its buffers' sizes alone, of a graph whose communication the
 * program executor runs: sends, receives and collectives over groups of more than one
 * rank get their output buffers and no kernel (the plan cannot run). */
int cg_plan_graph_sizing(struct cg_plan *p, const struct ir_graph *g,
			 const struct cg_target *t, const char *prefix, FILE *err);
void cg_plan_free(struct cg_plan *p);

/* plan.c: what every backend does with a plan.
 *
 * The plan's buffers laid out in one arena (pass_memplan over the steps' liveness,
 * 64-byte aligned): off[b] is buffer b's offset, -1 for a buffer outside the arena
 * (an INPUT or PARAM the caller binds, or a graph output, which the backend allocates
 * alone so it can be read after run), -2 for an id that no step touches.  *peak is
 * the arena's size.  0, or non-zero with a message on err. */
int cg_plan_layout(const struct cg_plan *p, int64_t *off, int64_t *peak, FILE *err);
/* Layers repeat, so many kernels are the same but for their name: the distinct ones,
 * in ks (room for p->n_ks), and for each kernel i the index uniq[i] of its distinct
 * one.  Returns how many are distinct. */
int cg_plan_distinct_kernels(const struct cg_plan *p, int *uniq, struct kir_kernel **ks);

#endif
