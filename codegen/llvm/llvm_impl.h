/* llvm_impl.h - private to the LLVM CPU backend (codegen/llvm/): the JIT, the renderer
 * of kernel IR to LLVM IR, the GEMM library kernel and the lowering of IR ops to
 * kernels.  Nothing outside codegen/llvm/ and tests/llvm/ includes it. */
#ifndef SLUICE_LLVM_IMPL_H
#define SLUICE_LLVM_IMPL_H

#include <stdint.h>
#include <stdio.h>

#include <llvm-c/Core.h>

#include "codegen/kir.h"
#include "codegen/plan.h"
#include "ir/ir.h"

extern const struct cg_target cg_target_llvm; /* backend.c: what the lowering makes for it */

/* A compiled kernel: fn(bufs, lo, hi) runs points lo..hi-1 of the parallel space. */
typedef void (*cg_kernel_fn)(void **bufs, int64_t lo, int64_t hi);

/* --- jit.c: one LLJIT instance with a target machine for the host CPU ------------- */
struct cg_jit;
struct cg_jit *cg_jit_new(FILE *err);
void cg_jit_free(struct cg_jit *j);
/* Render the kernels into one module, optimise it at O3 for the host CPU (loops
 * vectorised), add it to the JIT and look every kernel up into fns[i].  Kernel names
 * must be unique within the JIT.  When dump is non-NULL the optimised LLVM IR is
 * written there.  0 on success, else a message on err. */
int cg_jit_compile(struct cg_jit *j, struct kir_kernel *const *ks, int n, cg_kernel_fn *fns,
		   FILE *dump, FILE *err);
/* "znver3 +avx2,+fma,..." for reports: the host CPU name LLVM sees. */
const char *cg_jit_cpu(const struct cg_jit *j);

/* --- render.c: kernel IR to LLVM IR ------------------------------------------------ */
/* Adds one function per kernel, named as the kernel, to module m: void name(i8** bufs,
 * i64 lo, i64 hi).  cpu and features become the functions' target attributes. */
void cg_render_kernels(LLVMModuleRef m, struct kir_kernel *const *ks, int n,
		       const char *cpu, const char *features);

/* --- gemm.c: C[M,N] (+)= A[M,K] B[K,N] with arbitrary strides -------------------- */
struct rt_pool;
struct cg_gemm {
	int64_t M, N, K;
	const float *a;      /* element (i,k) at a[i*rsa + k*csa] */
	int64_t rsa, csa;
	const float *b;      /* element (k,j) at b[k*rsb + j*csb] */
	int64_t rsb, csb;
	float *c;            /* element (i,j) at c[i*ldc + j] */
	int64_t ldc;
	int accumulate;      /* 0: C = AB, 1: C += AB */
};
/* Packing buffers kept between calls, for a pool of up to n_slots threads. */
struct cg_gemm_ws;
struct cg_gemm_ws *cg_gemm_ws_new(int n_slots);
void cg_gemm_ws_free(struct cg_gemm_ws *ws);
/* Runs a batch of independent products, split over the pool's threads (pool NULL: on
 * the caller).  ws NULL: buffers for this call only. */
void cg_gemm_run(struct rt_pool *pool, struct cg_gemm_ws *ws, const struct cg_gemm *g, int n);
/* The plain triple loop in double, for tests. */
void cg_gemm_ref(const struct cg_gemm *g);

/* --- attention.c: ATTENTION and ATTENTION_BWD, flash-style ------------------------- */
struct cg_attn {
	int64_t B, S, H, Hkv, Dk, Dv;
	double scale;
	int causal;
	const float *q, *k, *v;      /* [B,S,H,Dk], [B,S,Hkv,Dk], [B,S,Hkv,Dv] */
	float *out, *lse;            /* forward: [B,S,H,Dv], [B,H,S] */
	const float *o, *l, *dout;   /* backward: the forward's out and lse, and dout */
	float *dq, *dk, *dv;         /* backward: shaped as q, k, v */
	float *delta;                /* backward: scratch of B*H floats per position */
};
/* Split over the pool's threads (pool NULL: on the caller); the results do not depend
 * on the number of threads. */
void cg_attention_fwd(struct rt_pool *pool, const struct cg_attn *a);
void cg_attention_bwd(struct rt_pool *pool, const struct cg_attn *a);

#endif
