/* lib.h - the CUDA backend's hand-written library kernels: the library steps of a plan
 * that are not cuBLASLt products (CG_STEP_ATTENTION, CG_STEP_ATTENTION_BWD,
 * CG_STEP_GROUPED, CG_STEP_WGRAD).  They compute what the CPU backend computes
 * (codegen/llvm/attention.c, run_grouped and run_wgrad in codegen/llvm/backend.c); the
 * CUDA C is codegen/cuda/lib_kernels.cu, compiled at run time through rt_module_build
 * (its disk cache makes later loads cheap).
 *
 * Every call queues its kernels on stream S and returns at once (no host
 * synchronisation, nothing read back: the expert offsets are read on the device); it
 * returns 0, or -1 after printing why (bad arguments or a failed launch).  bf16 runs
 * on tensor cores where the shapes allow (see lib.c), the rest on SIMT f32 kernels.  All tensors
 * of a call share one storage type: f32, or bf16 (16 bits, the upper half of an f32,
 * as the generated kernels store it); arithmetic and accumulation are f32, lse and the
 * backward's scratch f32.  Tensors are dense and row-major. */
#ifndef SLUICE_CUDA_LIB_H
#define SLUICE_CUDA_LIB_H

#include <stdint.h>

#include "runtime/gpu.h"

enum cg_cuda_dtype { CG_CUDA_F32, CG_CUDA_BF16 };

/* The library kernels' CUDA C source, one translation unit, for rt_module_build. */
const char *cg_cuda_lib_source(void);

struct cg_cuda_lib; /* the loaded module and its kernels */
/* Compile (or take from the cache) and load the kernels on G; NULL with a message. */
struct cg_cuda_lib *cg_cuda_lib_load(struct rt_gpu *g);
void cg_cuda_lib_free(struct cg_cuda_lib *l);

/* Attention, as struct cg_attn of the CPU backend:
 *   q [B,S,H,Dk], k [B,S,Hkv,Dk], v [B,S,Hkv,Dv], o [B,S,H,Dv], lse [B,H,S] (f32);
 *   query head h attends with kv head h / (H / Hkv); scores scale * q.k; causal: query
 *   i sees keys j <= i.  Needs H a multiple of Hkv, 1 <= Dk, Dv <= 256, B <= 65535.
 * The forward writes o and lse = log sum_j exp(score_ij) (natural log) per row.  On
 * tensor cores the probabilities are rounded to bf16 before their product with v
 * (and, in the backward, p and ds before theirs), as FlashAttention does.
 * The backward reads the forward's o and lse and dout (shaped as o) and writes dq, dk,
 * dv (shaped as q, k, v; each written whole, not accumulated into); scratch holds
 * cg_cuda_attention_bwd_scratch(a) bytes of device memory (the CPU backend's delta
 * buffer, B*H*S floats, serves). */
struct cg_cuda_attn {
	int64_t B, S, H, Hkv, Dk, Dv;
	double scale;
	int causal;
	enum cg_cuda_dtype dtype; /* of q, k, v, o, dout, dq, dk, dv */
};

int cg_cuda_attention_fwd(struct cg_cuda_lib *l, const struct cg_cuda_attn *a, rt_dptr q,
			  rt_dptr k, rt_dptr v, rt_dptr o, rt_dptr lse, enum rt_stream_kind s);
int cg_cuda_attention_bwd(struct cg_cuda_lib *l, const struct cg_cuda_attn *a, rt_dptr q,
			  rt_dptr k, rt_dptr v, rt_dptr o, rt_dptr lse, rt_dptr dout,
			  rt_dptr dq, rt_dptr dk, rt_dptr dv, rt_dptr scratch,
			  enum rt_stream_kind s);
/* bytes of scratch the backward needs, 0 if none */
int64_t cg_cuda_attention_bwd_scratch(const struct cg_cuda_attn *a);

/* Grouped GEMM over experts, as GROUPED_MATMUL and its weight gradient:
 *   x [R,K], offsets [E+1] (i32 or i64, in device memory) give expert e the rows
 *   offsets[e] .. offsets[e+1] - 1, after clamping every offset into [0, R] and making
 *   them non-decreasing (a running maximum), as the CPU backend's expert_rows does.
 * cg_cuda_grouped: y [R,N], row r of expert e = x[r] . w[e], w [E,K,N] (or [E,N,K]
 *   with trans_b, y = x . w[e]^T); rows of no expert (before offsets[0], from
 *   offsets[E] on) are written zero.
 * cg_cuda_wgrad: with xs [R,K] and dy [R,N], dw[e] = xs_e^T dy_e [K,N] (or, trans_b,
 *   dy_e^T xs_e [N,K]) summed over expert e's rows; dw [E,K,N] or [E,N,K] is written
 *   whole, zero for an expert with no rows.
 * Needs R, K, N < 2^31 and E <= 8192 (every block keeps the E + 1 offsets in shared
 * memory). */
struct cg_cuda_grouped {
	int64_t R, K, N, E;
	int trans_b;
	int offsets_i64;          /* offsets are int64_t, else int32_t */
	enum cg_cuda_dtype dtype; /* of x (xs), w, y (dy, dw) */
	int fp8, y_f32;           /* cg_cuda_grouped_fp8's step, and its output's type */
};

int cg_cuda_grouped(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr x,
		    rt_dptr w, rt_dptr offsets, rt_dptr y, enum rt_stream_kind s);
int cg_cuda_wgrad(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr xs,
		  rt_dptr dy, rt_dptr offsets, rt_dptr dw, enum rt_stream_kind s);
/* The grouped product of FP8 operands with DeepSeek-V3's scales, on tensor cores: x and
 * w the E4M3 values widened to bf16, sx per 1x128 tile of x, sw per 128x128 block of
 * each expert's w (SCALED_GROUPED_MATMUL's layouts), y f32 (y_f32) or bf16; a->dtype
 * bf16.  Needs what the bf16 tensor-core kernel needs (cg_cuda_grouped_fp8_ok). */
int cg_cuda_grouped_fp8_ok(const struct cg_cuda_grouped *a);
int cg_cuda_grouped_fp8(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr x,
			rt_dptr w, rt_dptr offsets, rt_dptr sx, rt_dptr sw, rt_dptr y, int y_f32,
			enum rt_stream_kind s);
/* Its weight gradient (SCALED_GROUPED_MATMUL_WGRAD): xs [R,K] and dy [R,N] the E4M3
 * values widened to bf16, sx [ceil(R/128)][K] and sy [ceil(R/128)][N] one scale per
 * 128x1 tile, dw [E,K,N] f32 (y_f32) or bf16, the products of each 128-row tile summed
 * on their own and then scaled; a->trans_b 0, a->dtype bf16, a->N dy's columns. */
int cg_cuda_wgrad_fp8(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr xs,
		      rt_dptr dy, rt_dptr offsets, rt_dptr sx, rt_dptr sy, rt_dptr dw, int y_f32,
		      enum rt_stream_kind s);

#endif
