/* backend.h - the one interface every executor of an IR graph sits behind: the
 * reference executor (codegen/ref.c), the CPU backend through LLVM (codegen/llvm/),
 * and the CUDA backend (codegen/cuda/).
 *
 * Storage: on the CPU, float values (any float dtype) are held as f32, i32 as int32_t,
 * i64 as int64_t.  Inputs and parameters are bound to caller-owned memory before run;
 * every other value lives in the executor's memory and is read through cg_tensor()
 * after run (graph outputs, gradients "grad.P", and any value when the executor keeps
 * them all, as the reference does).
 *
 * On the GPU (cg_backend_cuda) every address is a device address (an rt_dptr cast
 * through uintptr_t to void *): bind takes one, tensor gives one.  bf16 and f16
 * values are held in 16 bits, f32 in f32, i32 and i64 as such; inputs and parameters
 * are bound in their IR dtype's storage.  run queues every step on the GPU's compute
 * stream (RT_STREAM_COMPUTE) and returns without waiting for it. */
#ifndef SLUICE_BACKEND_H
#define SLUICE_BACKEND_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"

struct cg_exec;

struct cg_backend {
	const char *name;
	/* Compile a graph; NULL with a message on err when it cannot. */
	struct cg_exec *(*compile)(const struct ir_graph *g, FILE *err);
	/* Point value `id` (an INPUT or PARAM output) at caller memory. */
	void (*bind)(struct cg_exec *e, int value_id, void *data);
	/* Run all ops once.  0 on success. */
	int (*run)(struct cg_exec *e);
	/* Storage of a value after run (NULL when the executor did not keep it). */
	void *(*tensor)(struct cg_exec *e, int value_id);
	void (*free)(struct cg_exec *e);
	/* Bytes of the one arena the executor allocated for intermediate values, as its
	 * memory plan laid it out; NULL for executors that keep every value apart (the
	 * reference). */
	int64_t (*arena_bytes)(const struct cg_exec *e);
	/* 1: bf16, f16 and f8 values are held at their width (the GPU); 0: every float
	 * value in an f32 (the CPU backends).  A compiled program's buffers say which. */
	int narrow;
};

extern const struct cg_backend cg_backend_ref;   /* codegen/ref.c */
#ifdef SLUICE_HAVE_LLVM
extern const struct cg_backend cg_backend_llvm;  /* codegen/llvm/ */
/* The arena the LLVM backend would allocate for g (its plan over the fused kernels'
 * buffers), without compiling or allocating anything: what `sluice check` reports and
 * `sluice train` then allocates.  0 on success. */
int cg_llvm_arena_plan(const struct ir_graph *g, int64_t *bytes, FILE *err);
#endif
#ifdef SLUICE_HAVE_CUDA
struct rt_gpu;
extern const struct cg_backend cg_backend_cuda;  /* codegen/cuda/ */
/* The GPU that cg_backend_cuda compiles for and runs on (its compute stream), set once
 * before compile.  The executor's memory comes from that GPU's arena (rt_gpu_alloc). */
void cg_cuda_use_gpu(struct rt_gpu *g);
/* The device memory the CUDA backend would take from the GPU's arena for g, without
 * compiling or allocating anything: the arena of its plan (arena_bytes after compile),
 * the graph outputs it allocates alone, cuBLASLt's workspace, each rounded up to 256
 * bytes.  Inputs and parameters, bound by the caller, are not counted.  A graph whose
 * sends, receives and collectives span several ranks (the program executor runs
 * them) is planned with their outputs as buffers.  0 on success. */
int cg_cuda_arena_plan(const struct ir_graph *g, int64_t *bytes, FILE *err);
#endif

#endif
