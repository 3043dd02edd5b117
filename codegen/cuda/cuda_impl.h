/* cuda_impl.h - private to the CUDA backend (codegen/cuda/): the renderer of kernel IR
 * to CUDA C for NVRTC (text only: it builds without the CUDA toolkit), and what the
 * backend (backend.c, built with the toolkit) takes from the GPU.  Nothing outside
 * codegen/cuda/ and tests/cuda/ includes it. */
#ifndef SLUICE_CUDA_IMPL_H
#define SLUICE_CUDA_IMPL_H

#include <stdint.h>
#include <stdio.h>

#include "codegen/kir.h"
#include "codegen/plan.h"

/* render.c: what the lowering makes for a GPU (16-bit storage, rows over blocks) */
extern const struct cg_target cg_target_cuda;

/* Threads per block of a point-per-thread kernel that does not say. */
#define CG_CUDA_THREADS 256

/* backend.c: cuBLASLt's workspace, taken from the GPU's arena by each executor */
#define CG_CUDA_GEMM_WORKSPACE ((int64_t)8 << 20)

/* One translation unit holding every kernel of ks as an extern "C" __global__
 * function named as the kernel, whose parameters are its buffers in order. */
void cg_cuda_render(struct kir_kernel *const *ks, int n, FILE *out);
/* The same for a plan's kernels, with every library step listed (as a comment) by
 * the routine the GPU backend calls for it. */
void cg_cuda_render_plan(const struct cg_plan *p, FILE *out);
/* The launch shape of k: grid and block dimensions. */
void cg_cuda_launch(const struct kir_kernel *k, unsigned grid[3], unsigned block[3]);
/* What runs a library step on the GPU, e.g. "cuBLASLt matmul". */
const char *cg_cuda_library(enum cg_step_kind kind);

#endif
