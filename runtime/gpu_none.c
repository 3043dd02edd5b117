/* gpu_none.c - the GPU layer of a sluice built without CUDA (no toolkit found, or
 * -DSLUICE_WITH_CUDA=OFF): every entry point exists, finds no device and says why.
 * The kernel cache and argument checks (gpu_common.c) work in every build. */
#include "gpu.h"

#ifndef SLUICE_HAVE_CUDA
#include <stdio.h>

static const char why[] =
	"this sluice was built without CUDA (the CUDA toolkit was not found, or "
	"-DSLUICE_WITH_CUDA=OFF); rebuild with the toolkit installed";

static int none(void)
{
	fprintf(stderr, "sluice: no GPU: %s\n", why);
	return -1;
}

int rt_gpu_count(void) { return 0; }
const char *rt_gpu_why_none(void) { return why; }
int rt_gpu_driver_version(void) { return 0; }
int rt_gpu_query(int ordinal, struct rt_gpu_info *info) { return none(); }

struct rt_gpu *rt_gpu_open(int ordinal, size_t arena_bytes)
{
	none();
	return NULL;
}

void rt_gpu_close(struct rt_gpu *g) { (void)g; }
const struct rt_gpu_info *rt_gpu_info(const struct rt_gpu *g) { return NULL; }
int rt_gpu_bind(struct rt_gpu *g) { return none(); }
void *rt_gpu_stream(struct rt_gpu *g, enum rt_stream_kind s) { return NULL; }
int rt_gpu_stream_wait(struct rt_gpu *g, enum rt_stream_kind w, enum rt_stream_kind s)
{
	return none();
}
int rt_gpu_sync(struct rt_gpu *g, enum rt_stream_kind s) { return none(); }
int rt_gpu_capture_begin(struct rt_gpu *g, enum rt_stream_kind s) { return none(); }
struct rt_gpu_graph *rt_gpu_capture_end(struct rt_gpu *g, enum rt_stream_kind s, int ok)
{
	return NULL;
}
int rt_gpu_graph_launch(struct rt_gpu *g, struct rt_gpu_graph *gr, enum rt_stream_kind s)
{
	return none();
}
void rt_gpu_graph_free(struct rt_gpu_graph *gr) { (void)gr; }
int rt_gpu_sync_all(struct rt_gpu *g) { return none(); }
rt_dptr rt_gpu_alloc(struct rt_gpu *g, size_t bytes, size_t align) { return 0; }
size_t rt_gpu_arena_mark(const struct rt_gpu *g) { return 0; }
void rt_gpu_arena_reset(struct rt_gpu *g, size_t mark) { (void)g; }
size_t rt_gpu_arena_size(const struct rt_gpu *g) { return 0; }
size_t rt_gpu_arena_used(const struct rt_gpu *g) { return 0; }

void *rt_gpu_host_alloc(size_t bytes)
{
	none();
	return NULL;
}

void rt_gpu_host_free(void *p) { (void)p; }
int rt_gpu_copy_to_device(struct rt_gpu *g, rt_dptr dst, const void *src, size_t n,
			  enum rt_stream_kind s)
{
	return none();
}
int rt_gpu_copy_to_host(struct rt_gpu *g, void *dst, rt_dptr src, size_t n,
			enum rt_stream_kind s)
{
	return none();
}
int rt_gpu_copy(struct rt_gpu *g, rt_dptr dst, rt_dptr src, size_t n, enum rt_stream_kind s)
{
	return none();
}
int rt_gpu_memset(struct rt_gpu *g, rt_dptr dst, unsigned char byte, size_t n,
		  enum rt_stream_kind s)
{
	return none();
}

struct rt_gpu_event *rt_gpu_event_new(struct rt_gpu *g)
{
	none();
	return NULL;
}
void rt_gpu_event_free(struct rt_gpu_event *e) { (void)e; }
int rt_gpu_event_record(struct rt_gpu_event *e, enum rt_stream_kind s) { return none(); }
double rt_gpu_event_ms(struct rt_gpu_event *a, struct rt_gpu_event *b) { return -1; }

int rt_module_build(struct rt_gpu *g, const struct rt_module_src *src, int n,
		    struct rt_module **out, struct rt_compile_stats *stats)
{
	return none();
}
void rt_module_free(struct rt_module *m) { (void)m; }
struct rt_kernel *rt_module_kernel(struct rt_module *m, const char *name) { return NULL; }
int rt_kernel_launch(struct rt_gpu *g, struct rt_kernel *k, const unsigned grid[3],
		     const unsigned block[3], unsigned smem_bytes, enum rt_stream_kind s,
		     void **args)
{
	return none();
}
int rt_nvrtc_version(void) { return 0; }

struct rt_gemm *rt_gemm_new(struct rt_gpu *g, size_t workspace_bytes)
{
	none();
	return NULL;
}
void rt_gemm_free(struct rt_gemm *c) { (void)c; }
int rt_gemm_run(struct rt_gemm *c, const struct rt_gemm_args *a, enum rt_stream_kind s)
{
	return none();
}
int rt_gemm_describe(struct rt_gemm *c, const struct rt_gemm_args *a, char *buf, size_t n)
{
	return none();
}
int rt_cublaslt_version(void) { return 0; }
#endif
