/* gpu.h - the GPU layer of the runtime: devices, streams, memory, run-time compiled
 * kernels and matrix products.  This header compiles without CUDA: every handle is
 * opaque, device addresses are plain integers (rt_dptr), streams are void pointers
 * (a CUstream, which is also a cudaStream_t for NCCL and cuBLASLt).
 *
 * Built without CUDA (SLUICE_HAVE_CUDA unset), the same functions exist and fail
 * with a message saying why (runtime/gpu_none.c).  Built with CUDA, the driver
 * (libcuda.so.1) is opened at run time, so the binary starts on machines that have
 * no driver or no GPU; rt_gpu_count() then returns 0 and rt_gpu_why_none() says why.
 *
 * Errors: functions returning int give 0 on success and -1 on failure, after
 * printing to stderr which call failed and why (the CUDA error name and string). */
#ifndef SLUICE_GPU_H
#define SLUICE_GPU_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t rt_dptr; /* a device address (CUdeviceptr) */

/* --- discovery ------------------------------------------------------------ */

struct rt_gpu_info {
	int ordinal;
	char name[256];
	char pci_bus_id[32];
	int cc_major, cc_minor; /* compute capability: 9.0 on Hopper */
	int sm_count;
	int clock_mhz;          /* peak SM clock */
	size_t mem_total, mem_free;
	size_t l2_bytes;
	size_t smem_per_block_optin; /* shared memory a block can opt into */
};

/* Number of CUDA devices; 0 when there is no driver, no device or no CUDA build. */
int rt_gpu_count(void);
/* Why rt_gpu_count() is 0 (a sentence), or NULL when there are devices. */
const char *rt_gpu_why_none(void);
/* Driver API version as CUDA writes it (13000 = 13.0), 0 when none. */
int rt_gpu_driver_version(void);
int rt_gpu_query(int ordinal, struct rt_gpu_info *info);

/* --- an opened device: primary context, streams, arena ----------------------- */

/* RT_STREAM_LANE + i (i < RT_COMM_LANES - 1): further communication streams, one per
 * communicator that a program's sends and receives travel on (rt_comm_set_lane), so
 * that a send blocked on its peer holds back no other communicator's operations. */
#define RT_COMM_LANES 8
/* RT_STREAM_SNAPSHOT: copies to the host that no step waits for (the weights the
 * moving average folds in); apart from RT_STREAM_COPY, whose input copies the
 * compute stream waits for. */
enum rt_stream_kind { RT_STREAM_COMPUTE, RT_STREAM_COMM, RT_STREAM_COPY, RT_STREAM_SNAPSHOT,
		      RT_STREAM_LANE, RT_STREAM_KINDS = RT_STREAM_LANE + RT_COMM_LANES - 1 };

struct rt_gpu;

/* Retain the device's primary context, create its streams and one arena of
 * ARENA_BYTES of device memory (0: no arena).  NULL (message printed) on failure. */
struct rt_gpu *rt_gpu_open(int ordinal, size_t arena_bytes);
void rt_gpu_close(struct rt_gpu *g);
const struct rt_gpu_info *rt_gpu_info(const struct rt_gpu *g);
/* Make G's context current on the calling thread (each call below does it too). */
int rt_gpu_bind(struct rt_gpu *g);
void *rt_gpu_stream(struct rt_gpu *g, enum rt_stream_kind s);
/* Make stream WAITER wait for all work queued so far on stream SIGNALER (an event
 * recorded on one, waited on by the other; the host does not block). */
int rt_gpu_stream_wait(struct rt_gpu *g, enum rt_stream_kind waiter,
		       enum rt_stream_kind signaler);
int rt_gpu_sync(struct rt_gpu *g, enum rt_stream_kind s);
int rt_gpu_sync_all(struct rt_gpu *g);

/* CUDA graphs: the work queued on stream S between rt_gpu_capture_begin and
 * rt_gpu_capture_end is recorded, not run (kernel arguments by value, device pointers
 * as they were), and comes back as a graph that rt_gpu_graph_launch replays on S in
 * one call.  rt_gpu_capture_end(g, s, 0) ends a capture whose work failed and discards
 * it.  NULL (message printed) when the work cannot be captured. */
struct rt_gpu_graph;
int rt_gpu_capture_begin(struct rt_gpu *g, enum rt_stream_kind s);
struct rt_gpu_graph *rt_gpu_capture_end(struct rt_gpu *g, enum rt_stream_kind s, int ok);
int rt_gpu_graph_launch(struct rt_gpu *g, struct rt_gpu_graph *gr, enum rt_stream_kind s);
void rt_gpu_graph_free(struct rt_gpu_graph *gr);

/* Arena: sub-allocations from the one allocation made by rt_gpu_open, aligned to
 * ALIGN (a power of two, at least 256).  0 (message printed) when it does not fit.
 * Memory comes back in stack order: rt_gpu_arena_reset(g, mark) frees everything
 * allocated after rt_gpu_arena_mark() returned MARK. */
rt_dptr rt_gpu_alloc(struct rt_gpu *g, size_t bytes, size_t align);
size_t rt_gpu_arena_mark(const struct rt_gpu *g);
void rt_gpu_arena_reset(struct rt_gpu *g, size_t mark);
size_t rt_gpu_arena_size(const struct rt_gpu *g);
size_t rt_gpu_arena_used(const struct rt_gpu *g);

/* Pinned (page-locked) host memory, usable by every context (made in the calling
 * thread's current context, else in device 0's primary context). */
void *rt_gpu_host_alloc(size_t bytes);
void rt_gpu_host_free(void *p);

int rt_gpu_copy_to_device(struct rt_gpu *g, rt_dptr dst, const void *src, size_t n,
			  enum rt_stream_kind s);
int rt_gpu_copy_to_host(struct rt_gpu *g, void *dst, rt_dptr src, size_t n,
			enum rt_stream_kind s);
int rt_gpu_copy(struct rt_gpu *g, rt_dptr dst, rt_dptr src, size_t n,
		enum rt_stream_kind s);
int rt_gpu_memset(struct rt_gpu *g, rt_dptr dst, unsigned char byte, size_t n,
		  enum rt_stream_kind s);

/* Timing events on a stream: rt_gpu_event_ms() waits for END and returns the time
 * between the two in milliseconds (negative on error). */
struct rt_gpu_event;
struct rt_gpu_event *rt_gpu_event_new(struct rt_gpu *g);
void rt_gpu_event_free(struct rt_gpu_event *e);
int rt_gpu_event_record(struct rt_gpu_event *e, enum rt_stream_kind s);
double rt_gpu_event_ms(struct rt_gpu_event *start, struct rt_gpu_event *end);

/* --- run-time compiled kernels (NVRTC) ------------------------------------------ */

struct rt_module;
struct rt_kernel; /* a CUfunction */

struct rt_module_src {
	const char *name;              /* shown in messages, e.g. "fill.cu" */
	const char *source;            /* CUDA C */
	const char *const *options;    /* extra NVRTC options, may be NULL */
	int n_options;
};

struct rt_compile_stats {
	int compiled, cache_hits;
	double seconds; /* wall time of the whole call */
};

/* Compile N modules for G's architecture (sm_XX read off the device), in parallel
 * threads, through the disk cache, and load them.  On success OUT[i] holds each
 * module.  On a compile error NVRTC's log is printed with the offending source lines
 * and -1 returned (no module loaded).  STATS may be NULL. */
int rt_module_build(struct rt_gpu *g, const struct rt_module_src *src, int n,
		    struct rt_module **out, struct rt_compile_stats *stats);
void rt_module_free(struct rt_module *m);
struct rt_kernel *rt_module_kernel(struct rt_module *m, const char *name);
/* Launch on stream S; ARGS holds a pointer to each kernel parameter. */
int rt_kernel_launch(struct rt_gpu *g, struct rt_kernel *k, const unsigned grid[3],
		     const unsigned block[3], unsigned smem_bytes, enum rt_stream_kind s,
		     void **args);
/* NVRTC's version as major*1000 + minor*10 (13000 = 13.0); 0 when not built. */
int rt_nvrtc_version(void);

/* The kernel cache on disk ($SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice/kernels,
 * else ~/.cache/sluice/kernels).  These work without CUDA and are what the GPU
 * layer uses; they are public so that tests and tools can reach them. */
#define RT_KCACHE_KEY_LEN 64 /* hex digits of a SHA-256 */
/* KEY receives RT_KCACHE_KEY_LEN + 1 characters: the hash of everything that
 * changes the compiled code. */
void rt_kcache_key(char key[RT_KCACHE_KEY_LEN + 1], const char *source,
		   const char *const *options, int n_options, int nvrtc_version,
		   const char *arch);
/* The cache directory (created when missing), or NULL (message printed). */
const char *rt_kcache_dir(void);
/* The cached bytes for KEY (malloc'd, *LEN set) or NULL when absent or damaged. */
void *rt_kcache_load(const char *key, size_t *len);
/* Store bytes under KEY atomically: written to a unique temp file in the cache
 * directory, flushed, then renamed, so readers see the whole entry or none.
 * Returns 0, or -1 (the cache is an optimisation: callers may go on). */
int rt_kcache_store(const char *key, const void *data, size_t len);
void rt_sha256(const void *data, size_t len, unsigned char out[32]);

/* --- matrix products (cuBLASLt) ---------------------------------------------------
 *
 * D[M,N] = A[M,K] . B[N,K]^T, every matrix row-major ("TN": both operands K-major,
 * B stored as nn.Linear stores its weight), accumulation in fp32.  The mode says the
 * types:
 *   RT_GEMM_BF16       A, B, D bf16.
 *   RT_GEMM_FP8        A, B fp8 E4M3, D bf16; a_scale, b_scale each point at one
 *                      float on the device: D = (a_scale * A) . (b_scale * B)^T.
 *   RT_GEMM_FP8_BLOCK  A, B fp8 E4M3, D bf16, DeepSeek-V3's scaling: a_scale holds one
 *                      float per 1x128 tile of A, stored [K/128][M] (M fastest; element
 *                      (m, kb) at kb*M + m), b_scale one float per 128x128 block of B,
 *                      stored [ceil(N/128)][S] row-major with the row stride
 *                      S = rt_gemm_block_scale_stride(K) (K/128 rounded up to a
 *                      multiple of 4: cuBLASLt wants 16-byte aligned rows).  K must be
 *                      a multiple of 128; needs sm_90.
 *   RT_GEMM_F32        A, B, D f32, computed in full fp32 (CUBLAS_COMPUTE_32F: no
 *                      TF32), for results that must agree with a CPU's.
 *   RT_GEMM_F16        A, B, D f16.
 *   RT_GEMM_BF16_F32OUT  A, B bf16, D f32.
 *   RT_GEMM_FP8_VEC    A, B fp8 E4M3, D f32, both scaled per 1x128 tile along K (a
 *                      weight gradient in DeepSeek-V3's recipe, whose operands are
 *                      tiled along the tokens): a_scale [K/128][M] as in FP8_BLOCK,
 *                      b_scale [K/128][N] (N fastest).  K a multiple of 128; sm_90.
 *   RT_GEMM_FP8_BLOCK_F32  as RT_GEMM_FP8_BLOCK, D f32.
 * The fp8 modes take the packed TN form only: A, B and D 16-byte aligned, K and N
 * multiples of 16.  The other modes also take the layouts below, and need A, B and D
 * aligned to their element only (cuBLASLt is told the real alignment; 256 bytes, as
 * the arena gives, lets it take its fastest kernels).  Layout (all zero: the packed
 * TN form): A's element (m, k) lies at m*lda + k, or at k*lda + m when trans_a; B's
 * element (n, k) at n*ldb + k, or at k*ldb + n when trans_b (B stored [K,N], a
 * matmul's right operand); D's (m, n) at m*ldd + n; a leading dimension of 0 is the
 * packed one.  batch > 1 runs that many products at once, the i-th on a + i*stride_a,
 * b + i*stride_b, d + i*stride_d (strides in elements; each must be non-zero).  The
 * algorithm comes from cuBLASLt's heuristics: on a shape's first product the best few
 * candidates it proposes are timed on the caller's buffers (D is written several
 * times; it must not alias A or B) and the fastest is kept for that shape, layout and
 * mode ($SLUICE_GEMM_TUNE=0: take the heuristic's first choice untimed).  The
 * workspace comes from G's arena. */
enum rt_gemm_mode { RT_GEMM_BF16, RT_GEMM_FP8, RT_GEMM_FP8_BLOCK, RT_GEMM_F32, RT_GEMM_F16,
		    RT_GEMM_BF16_F32OUT, RT_GEMM_FP8_VEC, RT_GEMM_FP8_BLOCK_F32 };

struct rt_gemm;
struct rt_gemm_args {
	enum rt_gemm_mode mode;
	int m, n, k;
	rt_dptr a, b, d;
	rt_dptr a_scale, b_scale; /* fp8 modes only */
	int trans_a, trans_b;     /* layout, not fp8: see above */
	int64_t lda, ldb, ldd;
	int batch;
	int64_t stride_a, stride_b, stride_d;
};

struct rt_gemm *rt_gemm_new(struct rt_gpu *g, size_t workspace_bytes);
void rt_gemm_free(struct rt_gemm *ctx);
/* Queue one product on stream S.  Returns 0, or -1 (message printed) when cuBLASLt
 * has no algorithm for it or a call fails. */
int rt_gemm_run(struct rt_gemm *ctx, const struct rt_gemm_args *a, enum rt_stream_kind s);
/* Check the arguments without running: NULL when fine, else a static message. */
const char *rt_gemm_check_args(const struct rt_gemm_args *a);
const char *rt_gemm_mode_name(enum rt_gemm_mode m);
/* Bytes of an element of A and B, and of D, in mode M. */
size_t rt_gemm_in_bytes(enum rt_gemm_mode m);
size_t rt_gemm_out_bytes(enum rt_gemm_mode m);
int rt_gemm_block_scale_stride(int k);
/* A short description of the algorithm chosen for A's shape (for benchmarks). */
int rt_gemm_describe(struct rt_gemm *ctx, const struct rt_gemm_args *a, char *buf,
		     size_t n);
int rt_cublaslt_version(void);

#endif
