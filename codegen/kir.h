/* kir.h - the kernel IR: what one compiled kernel does, independent of the target.
 *
 * A kernel reads and writes numbered buffers (flat arrays of one scalar type) and runs
 * a list of statements once per point p of a one-dimensional parallel index space
 * [0, extent): p is variable 0.  A renderer decides how the index space is spread
 * (the LLVM renderer makes a function run(bufs, lo, hi) that loops p over a chunk and
 * hands chunks to threads; a CUDA renderer would give each thread one p).  Inside,
 * statements are sequential loops over integer ranges, stores (plain or adding into
 * the buffer), assignments to scalar variables, and conditionals.  Expressions are
 * constants, variables, loads, arithmetic, comparisons, selects, conversions and
 * reductions (sum or max of an expression over a range, with the order of the
 * additions left to the renderer: it may reassociate them, e.g. to vectorise).
 *
 * For GPUs a kernel also says how its index space maps to threads (struct kir_launch):
 * a point per thread, or a point per block of threads.  In a block kernel every thread
 * runs the body, computing the same values, except that the iterations of a "spread"
 * loop or reduction are shared among the block's threads (a spread reduction is a
 * cooperative one: each thread reduces its share, then the block combines the
 * partial results, and every thread gets the total); a store outside spread loops is
 * made once.  Spread constructs do not nest, and exist only in block kernels.  Shared
 * arrays (kir_shared) are per-block scratch, written in a spread loop and read after
 * a barrier (kir_barrier) by any thread.  A renderer for one thread (the CPU) runs a
 * block kernel as a point kernel: spread loops and reductions are plain ones,
 * barriers nothing, shared arrays local arrays.
 *
 * Buffers may store bf16 or f16 (KIR_BF16, KIR_F16, storage types only): a load gives
 * f32, a store takes f32 and rounds it to the nearest value of the format, ties to
 * even.
 *
 * Everything is typed; types never mix implicitly (kir_cvt converts).  Kernels and
 * their nodes live in one ir_arena freed by kir_kernel_free().  Conventions that a
 * renderer may rely on: buffers do not change size; a store that adds (KIR_STORE_ADD)
 * is only used where no two points p touch the same element, so p may run in any order
 * and in parallel; both operands of a select are evaluated (so a renderer may compute
 * them unconditionally, as vector code does), hence every load anywhere in an
 * expression must be in bounds: builders clamp indices rather than guard them. */
#ifndef SLUICE_KIR_H
#define SLUICE_KIR_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

enum kir_type {
	KIR_F32, KIR_F64, KIR_I32, KIR_I64, KIR_BOOL,
	KIR_BF16, KIR_F16, /* storage only: buffers and shared arrays hold them, loads give f32 */
	KIR_F8E4M3, KIR_F8E5M2 /* storage only, one byte: a load gives the f32 value, a store
				* rounds to nearest (ties to even), saturating, NaN kept */
};

enum kir_op {
	KIR_CONST, KIR_VAR, KIR_LOAD,
	KIR_SLOAD,     /* an element of a shared array */
	/* unary (float): */
	KIR_NEG, KIR_EXP, KIR_LOG, KIR_SQRT, KIR_TANH, KIR_SIN, KIR_COS, KIR_ABS,
	KIR_RBF16, KIR_RF16, /* f32 rounded to the nearest bf16 / f16 value (ties to even) */
	KIR_RF8E4M3, KIR_RF8E5M2, /* f32 rounded to the nearest e4m3 / e5m2 value (ties to
			  * even, subnormals kept), saturating at +-448 / +-57344 (infinities
			  * too); NaN stays NaN.  The result is an f32 */
	KIR_CVT,       /* to the node's type */
	KIR_NOT,       /* bool */
	/* binary, both operands of one type (comparisons give bool): */
	KIR_ADD, KIR_SUB, KIR_MUL, KIR_DIV, KIR_REM, KIR_MAX, KIR_MIN, KIR_POW,
	KIR_LT, KIR_LE, KIR_EQ, KIR_NE, KIR_AND, KIR_OR,
	KIR_SELECT,    /* a ? b : c */
	KIR_REDUCE     /* red over var in [a, b) of c */
};

enum kir_red { KIR_RED_SUM, KIR_RED_MAX };

struct kir_expr {
	enum kir_op op;
	enum kir_type type;
	double f;            /* KIR_CONST of a float type */
	int64_t i;           /* KIR_CONST of an integer or bool type */
	int var;             /* KIR_VAR, KIR_REDUCE's index */
	int buf;             /* KIR_LOAD */
	enum kir_red red;    /* KIR_REDUCE */
	int spread;          /* KIR_REDUCE: cooperative, over the threads of a block */
	struct kir_expr *a, *b, *c;
};

enum kir_stmt_kind {
	KIR_S_LOOP, KIR_S_STORE, KIR_S_STORE_ADD, KIR_S_SET, KIR_S_IF,
	KIR_S_SSTORE,   /* into a shared array */
	KIR_S_BARRIER   /* every thread of the block waits here (__syncthreads) */
};

struct kir_block {
	struct kir_stmt *head, **tail;
};

struct kir_stmt {
	enum kir_stmt_kind kind;
	int var;                       /* LOOP index, SET target */
	int buf;                       /* STORE; SSTORE: the shared array */
	int spread;                    /* LOOP: iterations shared by a block's threads */
	struct kir_expr *lo, *hi;      /* LOOP range; IF condition in lo */
	struct kir_expr *idx, *val;    /* STORE index and value; SET value in val */
	struct kir_block body, other;  /* LOOP/IF body, IF else */
	struct kir_stmt *next;
};

struct kir_buf {
	const char *name;
	enum kir_type type;
	int written;         /* stored to by the kernel */
};

struct kir_var {
	const char *name;
	enum kir_type type;
	int is_index;        /* the parallel index or a loop index: read-only */
};

/* Per-block scratch memory: count elements of type. */
struct kir_shared {
	const char *name;
	enum kir_type type;
	int64_t count;
};

enum kir_map {
	KIR_MAP_THREAD,   /* point p is thread p of the grid (blocks of `threads`) */
	KIR_MAP_BLOCK     /* point p is block p of the grid, run by `threads` threads */
};

struct kir_launch {
	enum kir_map map;
	int threads;      /* threads per block, a multiple of 32; 0: the renderer's choice */
};

struct kir_kernel {
	struct ir_arena *arena;
	const char *name;
	int64_t extent;      /* points of the parallel index space (variable 0) */
	struct kir_launch launch;
	int n_shared, cap_shared;
	struct kir_shared *shared;
	int n_bufs, cap_bufs;
	struct kir_buf *bufs;
	int n_vars, cap_vars;
	struct kir_var *vars;
	struct kir_block body;
};

/* A new kernel with the parallel index "p" (variable 0) over [0, extent). */
struct kir_kernel *kir_kernel_new(const char *name, int64_t extent);
void kir_kernel_free(struct kir_kernel *k);
int kir_buf(struct kir_kernel *k, const char *name, enum kir_type t);
int kir_local(struct kir_kernel *k, const char *name, enum kir_type t);
/* Make k a block kernel: point p is run by a block of `threads` threads. */
void kir_kernel_block(struct kir_kernel *k, int threads);
int kir_shared(struct kir_kernel *k, const char *name, enum kir_type t, int64_t count);
/* The type of a load from storage of type t: f32 for bf16 and f16, else t. */
enum kir_type kir_value_type(enum kir_type t);

/* expressions */
struct kir_expr *kir_f32(struct kir_kernel *k, double v);
struct kir_expr *kir_f64(struct kir_kernel *k, double v);
struct kir_expr *kir_i64(struct kir_kernel *k, int64_t v);
struct kir_expr *kir_const(struct kir_kernel *k, enum kir_type t, double v);
struct kir_expr *kir_var(struct kir_kernel *k, int var);
struct kir_expr *kir_load(struct kir_kernel *k, int buf, struct kir_expr *idx);
struct kir_expr *kir_load_shared(struct kir_kernel *k, int sh, struct kir_expr *idx);
struct kir_expr *kir_un(struct kir_kernel *k, enum kir_op op, struct kir_expr *a);
struct kir_expr *kir_bin(struct kir_kernel *k, enum kir_op op, struct kir_expr *a,
			 struct kir_expr *b);
struct kir_expr *kir_cvt(struct kir_kernel *k, enum kir_type t, struct kir_expr *a);
struct kir_expr *kir_select(struct kir_kernel *k, struct kir_expr *c, struct kir_expr *a,
			    struct kir_expr *b);
/* red over index variable var (from kir_index) in [lo, hi) of body, which reads var. */
struct kir_expr *kir_reduce(struct kir_kernel *k, enum kir_red red, int var,
			    struct kir_expr *lo, struct kir_expr *hi, struct kir_expr *body);
/* The same, cooperative: the block's threads share the range (block kernels only). */
struct kir_expr *kir_reduce_spread(struct kir_kernel *k, enum kir_red red, int var,
				   struct kir_expr *lo, struct kir_expr *hi,
				   struct kir_expr *body);
/* A fresh index variable (for kir_loop or kir_reduce). */
int kir_index(struct kir_kernel *k, const char *name);

/* statements, appended to a block (k->body for the top level) */
struct kir_block *kir_loop(struct kir_kernel *k, struct kir_block *b, int var,
			   struct kir_expr *lo, struct kir_expr *hi);
/* A loop whose iterations the block's threads share (block kernels only): they must
 * not depend on each other. */
struct kir_block *kir_loop_spread(struct kir_kernel *k, struct kir_block *b, int var,
				  struct kir_expr *lo, struct kir_expr *hi);
void kir_store(struct kir_kernel *k, struct kir_block *b, int buf, struct kir_expr *idx,
	       struct kir_expr *val);
void kir_store_add(struct kir_kernel *k, struct kir_block *b, int buf,
		   struct kir_expr *idx, struct kir_expr *val);
void kir_store_shared(struct kir_kernel *k, struct kir_block *b, int sh,
		      struct kir_expr *idx, struct kir_expr *val);
void kir_barrier(struct kir_kernel *k, struct kir_block *b);
void kir_set(struct kir_kernel *k, struct kir_block *b, int var, struct kir_expr *val);
/* Returns the then-block; *else_out (when non-NULL) gets the else-block. */
struct kir_block *kir_if(struct kir_kernel *k, struct kir_block *b, struct kir_expr *cond,
			 struct kir_block **else_out);

/* Text form, for tests and `--dump`.  Deterministic. */
void kir_print(const struct kir_kernel *k, FILE *out);
const char *kir_type_name(enum kir_type t);
int kir_type_is_float(enum kir_type t);

#endif
