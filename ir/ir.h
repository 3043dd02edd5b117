/*
 * ir.h - the sluice IR: a graph of ops over values with static shapes and dtypes.
 *
 * Conventions a reader needs before the code:
 *  - A graph owns one arena; every op, value, attribute and string of the graph lives
 *    in it and is freed with ir_graph_free().  Nothing in a graph is freed singly.
 *  - Ops are kept in a list in a valid execution order (every input defined before
 *    use).  Passes that add ops append them or rebuild the list; ir_verify() checks it.
 *  - Values are SSA: each is produced by exactly one (op, output index).
 *  - Every op carries the source location that produced it, the dotted scope path of
 *    the block it came from ("layers.3.moe"), and for PARAM ops the parameter path
 *    ("layers.3.moe.experts.w1").  Clusters in pictures and per-layer tables are built
 *    from the scope.
 *  - phase says where an op belongs in a training step: forward, the input-gradient
 *    part of the backward (B), the weight-gradient part (W), or the optimizer.  Schedules
 *    place B and W separately.  stage is the pipeline stage (-1 before partitioning).
 *
 * Op semantics (shapes are written outermost first; "..." is any number of leading dims):
 *  INPUT   attrs name:str                     -> the graph input of that name
 *  PARAM   attrs init:str ("normal","zeros","ones","uniform"), std:float, fan_in:int
 *          path in op->path                   -> a trainable parameter; attrs
 *          trainable:int (default 1): 0 for a parameter no gradient touches
 *  CONST   attrs value:float                  -> a tensor of the value's shape filled with value
 *  NEG EXP LOG SQRT RSQRT RECIP SQUARE SIGMOID SILU TANH RELU: elementwise, same shape/dtype
 *  SCALE   attrs alpha:float, beta:float      y = alpha*x + beta
 *  CAST    out dtype is the target            y = (dtype)x
 *  STOP_GRAD                                  y = x, no gradient flows through it
 *  ADD SUB MUL DIV  numpy broadcasting (dims aligned on the right, 1 stretches)
 *  REDUCE_SUM/MEAN/MAX attrs axis:int (negative counts from the end), keepdim:int
 *  SUM_TO  out shape given: sums broadcast dims away (the adjoint of BROADCAST)
 *  RESHAPE out shape given, same element count, row-major
 *  TRANSPOSE attrs perm:ints                  out.dim[i] = in.dim[perm[i]]
 *  BROADCAST out shape given (numpy rules from the input)
 *  SLICE   attrs axis:int, start:int          out.dim[axis] gives the length
 *  CONCAT  attrs axis:int                     inputs joined along axis
 *  MATMUL  a[...,M,K] b[...,K,N] (b may be 2-D and shared across the batch), attrs
 *          trans_a:int, trans_b:int (last two dims swapped before the product);
 *          accumulation in at least f32               -> [...,M,N]
 *  SOFTMAX over the last axis; attrs causal:int: for a [...,S,S] input, entries with
 *          column > row are excluded (probability 0)
 *  ROPE    x[B,S,H,D], attrs theta:float, inverse:int: rotates pairs (i, i+D/2) of the
 *          last dim by angle s * theta^(-2i/D) at sequence position s (NeoX layout);
 *          inverse rotates by the negative angle (its backward)
 *  GATHER_ROWS  table[V,D], idx int[...]      -> [...,D]   (embedding lookup)
 *  SCATTER_ROWS dy[...,D], idx int[...]       -> [V,D] (V from out shape) sums rows into idx
 *  CROSS_ENTROPY logits[N,V], targets int[N]  -> [] mean over N of logsumexp - logit[t];
 *          targets < 0 are ignored (and not counted in the mean)
 *  TOPK    x[N,E], attrs k:int                -> i32[N,k] indices of the k largest,
 *          largest first, ties to the lower index
 *  TAKE_ALONG x[N,E], idx int[N,k]            -> [N,k]   x[n, idx[n,j]]
 *  PUT_ALONG  v[N,k], idx int[N,k]            -> [N,E] (E from out shape) zero except
 *          out[n, idx[n,j]] += v[n,j]
 *  EXPERT_COUNT idx int[G,T,k], attrs experts:int -> f32[G,E] times each expert is chosen
 *          in each group (a sequence); no gradient
 *  MOE_DISPATCH x[N,D], idx int[N,k], attrs experts:int
 *          -> xs[N*k,D]: the rows x[n] repeated once per choice, sorted by expert
 *             (stable: by expert, then n, then j);
 *             offsets i32[E+1]: rows of expert e are offsets[e] .. offsets[e+1]-1;
 *             perm i32[N*k]: perm[r] = n*k + j, the choice that row r holds
 *  GROUPED_MATMUL xs[R,K], w[E,K,N], offsets i32[E+1], attrs trans_b:int -> [R,N]:
 *          row r of expert e times w[e] (w[e] transposed if trans_b: then w is [E,N,K])
 *  MOE_COMBINE ys[R,D], perm i32[R], gates[N,k] -> y[N,D] = sum_j gates[n,j] * ys[r(n,j)]
 *  SILU_BWD x, dy                              -> dy * silu'(x)
 *  SOFTMAX_BWD y, dy (attrs causal like SOFTMAX) -> y * (dy - sum(dy*y))
 *  CROSS_ENTROPY_BWD logits, targets, dloss[] -> dlogits[N,V]
 *  GROUPED_MATMUL_WGRAD xs[R,K], dy[R,N], offsets -> dw[E,K,N] = per-expert xs^T dy;
 *          attrs trans_b:int as the forward op's: then dw is [E,N,K] = per-expert dy^T xs
 *  MOE_UNDISPATCH dxs[R,D], perm[R] (attrs k:int) -> dx[N,D], dx[n] = sum_j dxs[r(n,j)]
 *  MOE_COMBINE_BWD_DATA dy[N,D], perm[R], gates[N,k] -> dys[R,D] = gates[n,j]*dy[n]
 *  MOE_COMBINE_BWD_GATE dy[N,D], ys[R,D], perm[R]     -> dgates[N,k] = dy[n].ys[r(n,j)]
 *  RELU_BWD x, dy                              -> dy where x > 0, else 0
 *  REDUCE_MAX_BWD x, dy (attrs axis, keepdim like REDUCE_MAX) -> dx shaped like x: dy at
 *          the first maximal entry of each reduced line, 0 elsewhere
 *  EP_COUNTS offsets int[E+1] (as MOE_DISPATCH's), attrs ranks:int (P, dividing E)
 *          -> i32[P, El] (El = E/P experts per rank): counts[p, j] = offsets[p*El+j+1] -
 *          offsets[p*El+j], the rows routed to expert p*El+j (which rank p holds); no
 *          gradient
 *  EP_OFFSETS rc int[P, El] -> i32[El+1]: off[0] = 0, off[e+1] = off[e] + sum_p rc[p, e],
 *          the segments of the local experts once the received rows are regrouped
 *          expert-major; no gradient
 *  EP_REGROUP x[C, ...], rc int[P, El], attrs inverse:int (default 0) -> y[C, ...] (x's
 *          shape and dtype; a row is everything past the first dim).  Rows come in
 *          blocks (p, e) of rc[p, e] rows.  inverse = 0: x holds the blocks peer-major
 *          (p = 0..P-1, within p e = 0..El-1), y the same rows expert-major (e, then p);
 *          inverse = 1: x expert-major -> y peer-major.  Rows of y past the total
 *          T = sum(rc) are zero.  A count < 0 or T > C is an error of the run (the LLVM
 *          backend clamps instead: a negative count is 0, a row whose source or
 *          destination would be at or past C is not moved, see codegen/llvm/lower.c).
 *          Backward: EP_REGROUP with the other inverse (rows past T get no gradient)
 *  SEND/RECV attrs peer:int, tag:int;  ALL_TO_ALL/ALL_TO_ALLV/ALL_REDUCE/REDUCE_SCATTER/
 *          ALL_GATHER attrs group:str (e.g. "ep", "dp", "pp"): P below is the group's size
 *  ALL_TO_ALL x[P, ...] -> y[P, ...] (x's shape and dtype): block p of y is block (this
 *          rank) of peer p's x.  With P = 1 a copy.  Backward: ALL_TO_ALL
 *  ALL_TO_ALLV x[R, ...], sc i32[P, n], rc i32[P, m] -> y[C, ...] (C from the out shape,
 *          x's trailing dims and dtype): this rank sends peer p the next sum_j sc[p, j]
 *          rows of x (x packed in peer order) and receives sum_j rc[p, j] rows from peer
 *          p, packed in peer order in y; rows of y past them are zero.  The program
 *          executor runs it; with P = 1 it is a copy of the first sum(sc) rows (sum(sc)
 *          must equal sum(rc)), which the chunk executors run too.  Backward: ALL_TO_ALLV
 *          of dy with sc and rc swapped (into R rows)
 *  QUANT_FP8 x[...,M,K], attrs tile_r:int, tile_c:int (DeepSeek-V3: 1x128 tiles of
 *          activations, 128x128 blocks of weights; 128x1 for an operand whose rows are
 *          the contraction dim) -> q f8e4m3 (or f8e5m2) [...,M,K], scale f32[...,
 *          ceil(M/tile_r), ceil(K/tile_c)] (the leading dims each tiled on their own;
 *          edge tiles may be partial).  In f32 arithmetic: amax = the tile's largest
 *          |x|, scale = fl32(amax / 448) (57344 for e5m2), q = round(fl32(x / scale)) to
 *          the format, nearest, ties to even, saturating at +-448 (+-57344), subnormals
 *          kept; an all-zero tile has scale 0 and q 0.  No gradient (see passes/fp8.c)
 *  DEQUANT_FP8 q[...,M,K], scale[...,Ms,Ks] (attrs tile_r, tile_c: default
 *          ceil(M/Ms), ceil(K/Ks)) -> f32 (or bf16) [...,M,K] = q * scale of its tile
 *  SCALED_MATMUL qa, qb, sa, sb: MATMUL of DEQUANT_FP8(qa, sa) and DEQUANT_FP8(qb, sb)
 *          with MATMUL's shapes and attrs trans_a, trans_b, plus a_tile:ints [r, c] and
 *          b_tile:ints [r, c], the tiles of qa and qb as stored (before any transpose):
 *          sa is f32[..., ceil(rows/r), ceil(cols/c)] of qa's last two dims and batch
 *          dims, sb likewise of qb's; qa, qb f8 -> f32 or bf16, accumulated in at least
 *          f32 (the GPU promotes its partial sums to f32 every 128 of K)
 *  SCALED_GROUPED_MATMUL xs, w, offsets, sxs, sw: GROUPED_MATMUL of the dequantised xs
 *          (f8[R,K], tiles a_tile) and w (f8[E,K,N] or [E,N,K], each expert's matrix
 *          tiled by b_tile: sw f32[E, ceil(rows/r), ceil(cols/c)]) -> f32 or bf16 [R,N]
 *  SCALED_GROUPED_MATMUL_WGRAD xs, dy, offsets, sxs, sdy: GROUPED_MATMUL_WGRAD of the
 *          dequantised xs (f8[R,K], a_tile) and dy (f8[R,N], b_tile) -> f32 dw
 *  ATTENTION q[B,S,H,Dqk], k[B,S,Hkv,Dqk], v[B,S,Hkv,Dv], attrs causal:int, scale:float
 *          -> out[B,S,H,Dv], lse f32[B,H,S]: softmax attention with one kv head per group
 *          of H/Hkv query heads (query head h reads kv head h / (H/Hkv)):
 *            s[b,h,i,j] = scale * q[b,i,h,:] . k[b,j,h/(H/Hkv),:], j <= i when causal
 *            lse[b,h,i] = log sum_j exp(s[b,h,i,j]);  p = exp(s - lse)
 *            out[b,i,h,:] = sum_j p[b,h,i,j] v[b,j,h/(H/Hkv),:]
 *          Heads are kept where the projections and ROPE put them, [B,S,H,D] ("sequence
 *          major"): q, k and v come from a matmul's [B,S,H*D] by a reshape that moves no
 *          data, ROPE takes that layout, and out reshapes back to [B,S,H*Dv] for the
 *          output projection; a kernel reads a head's rows at a stride of H*D, which
 *          costs it nothing, where [B,H,S,D] would need four transposes per layer and
 *          their gradients.  lse (the row log-sum-exp) is what the backward needs to
 *          recompute p, so the S x S probabilities are never stored.
 *  ATTENTION_BWD q, k, v, out, lse, dout (attrs as ATTENTION) -> dq, dk, dv shaped as q, k,
 *          v: with dp = dout . v^T and D[i] = dout[i,:] . out[i,:] (FlashAttention-2),
 *          ds = p (dp - D), dq = scale ds k, dk = scale ds^T q (summed over the group's
 *          query heads), dv = p^T dout (likewise)
 */
#ifndef SLUICE_IR_H
#define SLUICE_IR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum ir_dtype {
	IR_F32,
	IR_BF16,
	IR_F16,
	IR_F8E4M3,
	IR_F8E5M2,
	IR_I32,
	IR_I64,
	IR_DTYPE_COUNT
};

enum ir_opkind {
#define X(e, name, nin, nout) IR_OP_##e,
#include "ops.def"
#undef X
	IR_OP_COUNT
};

enum ir_phase {
	IR_PHASE_FWD,
	IR_PHASE_BWD_B,   /* input gradients */
	IR_PHASE_BWD_W,   /* weight gradients, deferrable */
	IR_PHASE_OPT
};

#define IR_MAX_RANK 8

struct ir_shape {
	int rank;
	int64_t dim[IR_MAX_RANK];
};

struct ir_loc {
	const char *file; /* NULL when unknown */
	int line, col;
};

enum ir_attr_kind { IR_ATTR_INT, IR_ATTR_FLOAT, IR_ATTR_STR, IR_ATTR_INTS };

struct ir_attr {
	const char *name;
	enum ir_attr_kind kind;
	int64_t i;
	double f;
	const char *s;
	int n;           /* IR_ATTR_INTS */
	int64_t *ints;
};

struct ir_op;

struct ir_value {
	int id;
	enum ir_dtype dtype;
	struct ir_shape shape;
	struct ir_op *def;
	int def_out;      /* which output of def */
	const char *name; /* optional, for printing */
};

struct ir_op {
	int id;
	enum ir_opkind kind;
	int n_in, n_out;
	struct ir_value **in;
	struct ir_value **out;
	int n_attr;
	struct ir_attr *attr;
	struct ir_loc loc;
	const char *scope;  /* dotted block path, "" at top level */
	const char *path;   /* parameter path (PARAM) or NULL */
	enum ir_phase phase;
	int stage;          /* pipeline stage, -1 when unassigned */
};

/* A setting of the train section: name = number or string. */
struct ir_setting {
	const char *name;
	int is_str;
	double num;
	const char *str;
};

struct ir_arena;

struct ir_graph {
	struct ir_arena *arena;
	const char *model;           /* model name */
	struct ir_op **ops;
	int n_ops, cap_ops;
	struct ir_value **values;    /* indexed by value id */
	int n_values, cap_values;
	int next_op_id;
	/* named graph outputs, e.g. "loss" */
	int n_outputs;
	const char **output_names;
	struct ir_value **outputs;
	/* the train section */
	int n_settings;
	struct ir_setting *settings;
	/* builder context, see ir_graph_set_context() */
	struct ir_loc cur_loc;
	const char *cur_scope;
};

/* --- arena -------------------------------------------------------------------- */
struct ir_arena *ir_arena_new(void);
void ir_arena_free(struct ir_arena *a);
void *ir_alloc(struct ir_arena *a, size_t n);               /* zeroed, 16-aligned */
char *ir_strdup(struct ir_arena *a, const char *s);
char *ir_strndup(struct ir_arena *a, const char *s, size_t n);
char *ir_sprintf(struct ir_arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* --- dtypes and shapes -------------------------------------------------------- */
const char *ir_dtype_name(enum ir_dtype t);
int ir_dtype_parse(const char *s, enum ir_dtype *out);       /* 1 on success */
size_t ir_dtype_size(enum ir_dtype t);
int ir_dtype_is_float(enum ir_dtype t);
const char *ir_op_name(enum ir_opkind k);
int ir_op_parse(const char *s, enum ir_opkind *out);         /* 1 on success */
int ir_op_arity_in(enum ir_opkind k);                         /* -1 variadic */
int ir_op_arity_out(enum ir_opkind k);
const char *ir_phase_name(enum ir_phase p);

struct ir_shape ir_shape_make(int rank, const int64_t *dim);
struct ir_shape ir_shape_of(int rank, ...);                   /* int64_t dims */
int64_t ir_shape_numel(const struct ir_shape *s);             /* -1 on overflow */
int ir_shape_eq(const struct ir_shape *a, const struct ir_shape *b);
/* numpy broadcast of a and b into out; 0 when they do not broadcast */
int ir_shape_broadcast(const struct ir_shape *a, const struct ir_shape *b,
		       struct ir_shape *out);
/* "[16, 256, 512]" into buf */
char *ir_shape_str(const struct ir_shape *s, char *buf, size_t n);

/* --- graph building ----------------------------------------------------------- */
struct ir_graph *ir_graph_new(const char *model);
void ir_graph_free(struct ir_graph *g);
struct ir_value *ir_value_new(struct ir_graph *g, enum ir_dtype t, struct ir_shape s);
/* Make an op with the given inputs and fresh outputs (dtypes/shapes filled by caller
 * through op->out[i]); appended to g->ops. */
struct ir_op *ir_op_new(struct ir_graph *g, enum ir_opkind k, int n_in,
			struct ir_value **in, int n_out);
/* One-output convenience: output has dtype t and shape s. */
struct ir_value *ir_op1(struct ir_graph *g, enum ir_opkind k, int n_in,
			struct ir_value **in, enum ir_dtype t, struct ir_shape s);
void ir_op_set_int(struct ir_graph *g, struct ir_op *op, const char *name, int64_t v);
void ir_op_set_float(struct ir_graph *g, struct ir_op *op, const char *name, double v);
void ir_op_set_str(struct ir_graph *g, struct ir_op *op, const char *name, const char *v);
void ir_op_set_ints(struct ir_graph *g, struct ir_op *op, const char *name, int n,
		    const int64_t *v);
const struct ir_attr *ir_op_attr(const struct ir_op *op, const char *name);
int64_t ir_op_int(const struct ir_op *op, const char *name, int64_t dflt);
double ir_op_float(const struct ir_op *op, const char *name, double dflt);
const char *ir_op_str(const struct ir_op *op, const char *name, const char *dflt);
void ir_graph_add_output(struct ir_graph *g, const char *name, struct ir_value *v);
struct ir_value *ir_graph_output(const struct ir_graph *g, const char *name);
void ir_graph_set(struct ir_graph *g, const char *name, double num, const char *str);
const struct ir_setting *ir_graph_setting(const struct ir_graph *g, const char *name);
double ir_graph_setting_num(const struct ir_graph *g, const char *name, double dflt);

/* Builder context: ops made through ir_op_new() take this location and scope. */
void ir_graph_set_context(struct ir_graph *g, struct ir_loc loc, const char *scope);

/* --- checking, printing, parsing ---------------------------------------------- */
/* Verify structure, shapes and dtypes of every op.  Returns 0 when valid; otherwise
 * writes one line per problem to err (when non-NULL) and returns the count. */
int ir_verify(const struct ir_graph *g, FILE *err);
/* The textual form; ir_parse(ir_print(g)) prints back to the same text. */
void ir_print(const struct ir_graph *g, FILE *out);
/* Parse textual IR.  On error returns NULL and writes "FILE:LINE:COL: error: ..." */
struct ir_graph *ir_parse(const char *text, size_t len, const char *filename, FILE *err);

#endif
