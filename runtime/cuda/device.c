/* device.c - CUDA devices through the driver API, opened from libcuda.so.1 at run
 * time: discovery, the primary context, three streams and the events between them,
 * one arena allocation per device cut into sub-allocations, pinned host memory.
 *
 * The build never links libcuda, so the same binary runs in CI (no driver) and on
 * GPU machines.  $SLUICE_LIBCUDA names another library to open (tests use it to
 * take the no-driver path on a GPU machine). */
#include "gpu_impl.h"
#include "runtime/comm.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

struct rt_cu_api rt_cu;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_status = -1;
static char why_none[512];
static int n_devices;
static int driver_version;

#define STR_(x) #x
#define STR(x) STR_(x)

int rt_cu_fail(CUresult r, const char *call, const char *file, int line)
{
	const char *name = NULL, *msg = NULL;
	if (rt_rdzv_dying())
		return -1; /* the communicators are being aborted for a reported fault */
	if (rt_cu.p_cuGetErrorName)
		rt_cu.p_cuGetErrorName(r, &name);
	if (rt_cu.p_cuGetErrorString)
		rt_cu.p_cuGetErrorString(r, &msg);
	fprintf(stderr, "sluice: CUDA error: %s failed: %s (%d): %s [%s:%d]\n", call,
		name ? name : "CUDA_ERROR_?", (int)r, msg ? msg : "unknown error", file, line);
	return -1;
}

static void load(void)
{
	const char *lib = getenv("SLUICE_LIBCUDA");
	if (!lib || !*lib)
		lib = "libcuda.so.1";
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(why_none, sizeof why_none,
			 "no CUDA driver: cannot open %s (%s)", lib, e ? e : "not found");
		return;
	}
	/* resolve every entry point; the names after macro expansion are the versioned
	 * symbols the prototypes in cuda.h describe */
#define RT_CU_SYM(fn)                                                                 \
	rt_cu.p_##fn = (__typeof__(rt_cu.p_##fn))dlsym(h, STR(fn));                   \
	if (!rt_cu.p_##fn) {                                                          \
		snprintf(why_none, sizeof why_none,                                   \
			 "the CUDA driver in %s is too old: it lacks %s", lib, STR(fn)); \
		return;                                                               \
	}
	RT_CU_FUNCS(RT_CU_SYM)
#undef RT_CU_SYM
	CUresult r = rt_cu.p_cuInit(0);
	if (r != CUDA_SUCCESS) {
		const char *name = NULL, *msg = NULL;
		rt_cu.p_cuGetErrorName(r, &name);
		rt_cu.p_cuGetErrorString(r, &msg);
		if (name && msg)
			snprintf(why_none, sizeof why_none,
				 "the CUDA driver did not start: cuInit: %s: %s", name, msg);
		else /* a stub library (CUDA_ERROR_STUB_LIBRARY, 34) names nothing */
			snprintf(why_none, sizeof why_none,
				 "the CUDA driver did not start: cuInit returned error %d%s", (int)r,
				 r == 34 ? " (a stub libcuda, not a driver)" : "");
		return;
	}
	rt_cu.p_cuDriverGetVersion(&driver_version);
	if (driver_version / 1000 < CUDA_VERSION / 1000) {
		snprintf(why_none, sizeof why_none,
			 "the CUDA driver supports CUDA %d.%d, older than the %d.%d sluice was built with",
			 driver_version / 1000, driver_version % 1000 / 10, CUDA_VERSION / 1000,
			 CUDA_VERSION % 1000 / 10);
		return;
	}
	r = rt_cu.p_cuDeviceGetCount(&n_devices);
	if (r != CUDA_SUCCESS || n_devices == 0) {
		n_devices = 0;
		snprintf(why_none, sizeof why_none, "the CUDA driver is there but sees no GPU");
		return;
	}
	/* the library stays open for the life of the process */
	load_status = 0;
}

int rt_cu_load(void)
{
	pthread_once(&load_once, load);
	return load_status;
}

int rt_gpu_count(void)
{
	return rt_cu_load() ? 0 : n_devices;
}

const char *rt_gpu_why_none(void)
{
	return rt_cu_load() ? why_none : NULL;
}

int rt_gpu_driver_version(void)
{
	rt_cu_load();
	return driver_version;
}

static int attr(int *v, CUdevice_attribute a, CUdevice d)
{
	return CU(cuDeviceGetAttribute, (v, a, d));
}

int rt_gpu_query(int ordinal, struct rt_gpu_info *info)
{
	if (ordinal < 0 || ordinal >= rt_gpu_count()) {
		fprintf(stderr, "sluice: no CUDA device %d (%d found)\n", ordinal, rt_gpu_count());
		return -1;
	}
	CUdevice d;
	int l2 = 0, smem = 0, clock = 0;
	memset(info, 0, sizeof *info);
	info->ordinal = ordinal;
	if (CU(cuDeviceGet, (&d, ordinal)) ||
	    CU(cuDeviceGetName, (info->name, (int)sizeof info->name, d)) ||
	    CU(cuDeviceGetPCIBusId, (info->pci_bus_id, (int)sizeof info->pci_bus_id, d)) ||
	    attr(&info->cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d) ||
	    attr(&info->cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d) ||
	    attr(&info->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d) ||
	    attr(&l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, d) ||
	    attr(&smem, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, d) ||
	    attr(&clock, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, d) ||
	    CU(cuDeviceTotalMem, (&info->mem_total, d)))
		return -1;
	info->l2_bytes = (size_t)l2;
	info->smem_per_block_optin = (size_t)smem;
	info->clock_mhz = clock / 1000;
	/* free memory needs a context; the primary one is shared with everyone else */
	CUcontext ctx, was = NULL;
	if (CU(cuCtxGetCurrent, (&was)) || CU(cuDevicePrimaryCtxRetain, (&ctx, d)))
		return -1;
	int bad = CU(cuCtxSetCurrent, (ctx)) || CU(cuMemGetInfo, (&info->mem_free, &info->mem_total));
	CU(cuCtxSetCurrent, (was)); /* the caller's context, whatever it was */
	CU(cuDevicePrimaryCtxRelease, (d));
	return bad ? -1 : 0;
}

/* --- an opened device ---------------------------------------------------------- */

struct rt_gpu *rt_gpu_open(int ordinal, size_t arena_bytes)
{
	if (rt_gpu_count() == 0) {
		fprintf(stderr, "sluice: no GPU: %s\n", rt_gpu_why_none());
		return NULL;
	}
	struct rt_gpu *g = rt_calloc(1, sizeof *g);
	if (rt_gpu_query(ordinal, &g->info) || CU(cuDeviceGet, (&g->dev, ordinal)) ||
	    CU(cuDevicePrimaryCtxRetain, (&g->ctx, g->dev))) {
		free(g);
		return NULL;
	}
	if (CU(cuCtxSetCurrent, (g->ctx)))
		goto fail;
	for (int s = 0; s < RT_STREAM_KINDS; s++)
		if (CU(cuStreamCreate, (&g->stream[s], CU_STREAM_NON_BLOCKING)) ||
		    CU(cuEventCreate, (&g->signal[s], CU_EVENT_DISABLE_TIMING)))
			goto fail;
	if (arena_bytes) {
		CUresult r = rt_cu.p_cuMemAlloc(&g->arena, arena_bytes);
		if (r != CUDA_SUCCESS) {
			rt_cu_fail(r, "cuMemAlloc", __FILE__, __LINE__);
			fprintf(stderr, "sluice: the arena of GPU %d (%.2f GiB) does not fit: %.2f GiB free of %.2f\n",
				ordinal, arena_bytes / 1073741824.0,
				g->info.mem_free / 1073741824.0, g->info.mem_total / 1073741824.0);
			goto fail;
		}
		g->arena_size = arena_bytes;
	}
	return g;
fail:
	rt_gpu_close(g);
	return NULL;
}

void rt_gpu_close(struct rt_gpu *g)
{
	if (!g)
		return;
	rt_cu.p_cuCtxSetCurrent(g->ctx);
	for (int s = 0; s < RT_STREAM_KINDS; s++)
		if (g->stream[s])
			CU(cuStreamSynchronize, (g->stream[s]));
	if (g->arena)
		CU(cuMemFree, (g->arena));
	for (int s = 0; s < RT_STREAM_KINDS; s++) {
		if (g->signal[s])
			CU(cuEventDestroy, (g->signal[s]));
		if (g->stream[s])
			CU(cuStreamDestroy, (g->stream[s]));
	}
	rt_cu.p_cuCtxSetCurrent(NULL);
	CU(cuDevicePrimaryCtxRelease, (g->dev));
	free(g);
}

const struct rt_gpu_info *rt_gpu_info(const struct rt_gpu *g)
{
	return &g->info;
}

int rt_gpu_bind(struct rt_gpu *g)
{
	return CU(cuCtxSetCurrent, (g->ctx));
}

void *rt_gpu_stream(struct rt_gpu *g, enum rt_stream_kind s)
{
	RT_ASSERT(s >= 0 && s < RT_STREAM_KINDS);
	return g->stream[s];
}

int rt_gpu_stream_wait(struct rt_gpu *g, enum rt_stream_kind waiter,
		       enum rt_stream_kind signaler)
{
	if (waiter == signaler)
		return 0;
	/* the wait takes the event's state at this moment, so one event per signalling
	 * stream serves every pair */
	return rt_gpu_bind(g) || CU(cuEventRecord, (g->signal[signaler], g->stream[signaler])) ||
	       CU(cuStreamWaitEvent, (g->stream[waiter], g->signal[signaler], 0));
}

int rt_gpu_sync(struct rt_gpu *g, enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuStreamSynchronize, (g->stream[s]));
}

int rt_gpu_sync_all(struct rt_gpu *g)
{
	return rt_gpu_bind(g) || CU(cuCtxSynchronize, ());
}

/* --- CUDA graphs ------------------------------------------------------------------- */

struct rt_gpu_graph {
	CUgraph graph;
	CUgraphExec exec;
};

int rt_gpu_capture_begin(struct rt_gpu *g, enum rt_stream_kind s)
{
	/* relaxed: the capture does not forbid this thread's other driver calls (the
	 * library GEMM's heuristics query, an allocation elsewhere) */
	return rt_gpu_bind(g) ||
	       CU(cuStreamBeginCapture, (g->stream[s], CU_STREAM_CAPTURE_MODE_RELAXED));
}

struct rt_gpu_graph *rt_gpu_capture_end(struct rt_gpu *g, enum rt_stream_kind s, int ok)
{
	CUgraph graph = NULL;
	if (rt_gpu_bind(g))
		return NULL;
	int rc = CU(cuStreamEndCapture, (g->stream[s], &graph));
	if (rc || !ok || !graph) {
		if (graph)
			rt_cu.p_cuGraphDestroy(graph);
		return NULL;
	}
	struct rt_gpu_graph *gr = rt_calloc(1, sizeof *gr);
	gr->graph = graph;
	if (CU(cuGraphInstantiateWithFlags, (&gr->exec, graph, 0))) {
		rt_cu.p_cuGraphDestroy(graph);
		free(gr);
		return NULL;
	}
	return gr;
}

int rt_gpu_graph_launch(struct rt_gpu *g, struct rt_gpu_graph *gr, enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuGraphLaunch, (gr->exec, g->stream[s]));
}

void rt_gpu_graph_free(struct rt_gpu_graph *gr)
{
	if (!gr)
		return;
	rt_cu.p_cuGraphExecDestroy(gr->exec);
	rt_cu.p_cuGraphDestroy(gr->graph);
	free(gr);
}

/* --- the arena ---------------------------------------------------------------------- */

rt_dptr rt_gpu_alloc(struct rt_gpu *g, size_t bytes, size_t align)
{
	if (align < 256)
		align = 256;
	RT_ASSERT((align & (align - 1)) == 0);
	size_t at = (g->arena_top + align - 1) & ~(align - 1);
	if (at > g->arena_size || bytes > g->arena_size - at) {
		fprintf(stderr,
			"sluice: GPU %d: arena full: %zu bytes asked, %zu of %zu in use\n",
			g->info.ordinal, bytes, g->arena_top, g->arena_size);
		return 0;
	}
	g->arena_top = at + bytes;
	return g->arena + at;
}

size_t rt_gpu_arena_mark(const struct rt_gpu *g) { return g->arena_top; }

void rt_gpu_arena_reset(struct rt_gpu *g, size_t mark)
{
	RT_ASSERT(mark <= g->arena_top);
	g->arena_top = mark;
}

size_t rt_gpu_arena_size(const struct rt_gpu *g) { return g->arena_size; }
size_t rt_gpu_arena_used(const struct rt_gpu *g) { return g->arena_top; }

/* --- host memory and copies ------------------------------------------------------- */

/* cuMemHostAlloc and cuMemFreeHost need a current context: when the thread has
 * none, device 0's primary context, retained for the life of the process (pinned
 * memory outlives any one rt_gpu).  *SET tells whether to unset it afterwards. */
static int host_ctx_enter(int *set)
{
	static CUcontext host_ctx;
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	CUcontext cur = NULL;
	*set = 0;
	if (rt_gpu_count() == 0) {
		fprintf(stderr, "sluice: no pinned memory without a GPU: %s\n", why_none);
		return -1;
	}
	if (CU(cuCtxGetCurrent, (&cur)))
		return -1;
	if (cur)
		return 0;
	CUdevice d;
	pthread_mutex_lock(&lock);
	int bad = !host_ctx &&
		  (CU(cuDeviceGet, (&d, 0)) || CU(cuDevicePrimaryCtxRetain, (&host_ctx, d)));
	pthread_mutex_unlock(&lock);
	if (bad || CU(cuCtxSetCurrent, (host_ctx)))
		return -1;
	*set = 1;
	return 0;
}

void *rt_gpu_host_alloc(size_t bytes)
{
	void *p = NULL;
	int set;
	if (host_ctx_enter(&set))
		return NULL;
	int bad = CU(cuMemHostAlloc, (&p, bytes ? bytes : 1, CU_MEMHOSTALLOC_PORTABLE));
	if (set)
		rt_cu.p_cuCtxSetCurrent(NULL);
	return bad ? NULL : p;
}

void rt_gpu_host_free(void *p)
{
	int set;
	if (!p || host_ctx_enter(&set))
		return;
	CU(cuMemFreeHost, (p));
	if (set)
		rt_cu.p_cuCtxSetCurrent(NULL);
}

int rt_gpu_copy_to_device(struct rt_gpu *g, rt_dptr dst, const void *src, size_t n,
			  enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuMemcpyHtoDAsync, (dst, src, n, g->stream[s]));
}

int rt_gpu_copy_to_host(struct rt_gpu *g, void *dst, rt_dptr src, size_t n,
			enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuMemcpyDtoHAsync, (dst, src, n, g->stream[s]));
}

int rt_gpu_copy(struct rt_gpu *g, rt_dptr dst, rt_dptr src, size_t n, enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuMemcpyDtoDAsync, (dst, src, n, g->stream[s]));
}

int rt_gpu_memset(struct rt_gpu *g, rt_dptr dst, unsigned char byte, size_t n,
		  enum rt_stream_kind s)
{
	return rt_gpu_bind(g) || CU(cuMemsetD8Async, (dst, byte, n, g->stream[s]));
}

/* --- events --------------------------------------------------------------------------- */

struct rt_gpu_event {
	struct rt_gpu *g;
	CUevent ev;
};

struct rt_gpu_event *rt_gpu_event_new(struct rt_gpu *g)
{
	struct rt_gpu_event *e = rt_calloc(1, sizeof *e);
	e->g = g;
	if (rt_gpu_bind(g) || CU(cuEventCreate, (&e->ev, CU_EVENT_DEFAULT))) {
		free(e);
		return NULL;
	}
	return e;
}

void rt_gpu_event_free(struct rt_gpu_event *e)
{
	if (!e)
		return;
	CU(cuEventDestroy, (e->ev));
	free(e);
}

int rt_gpu_event_record(struct rt_gpu_event *e, enum rt_stream_kind s)
{
	return rt_gpu_bind(e->g) || CU(cuEventRecord, (e->ev, e->g->stream[s]));
}

double rt_gpu_event_ms(struct rt_gpu_event *start, struct rt_gpu_event *end)
{
	float ms = 0;
	if (CU(cuEventSynchronize, (end->ev)) || CU(cuEventElapsedTime, (&ms, start->ev, end->ev)))
		return -1;
	return ms;
}
