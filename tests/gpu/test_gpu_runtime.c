/* test_gpu_runtime.c - the device layer and NVRTC modules on a real GPU: arena
 * sub-allocation, pinned copies ordered across the copy and compute streams by
 * events, a kernel compiled, launched and checked, the same module again from the
 * disk cache, modules compiled in parallel, and a compile error that prints NVRTC's
 * log with the offending source line. */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "gpu_test.h"
#include "runtime/rt.h"

static const char saxpy_src[] =
	"extern \"C\" __global__ void saxpy(float a, const float *x, float *y, int n)\n"
	"{\n"
	"	int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
	"	if (i < n)\n"
	"		y[i] = a * x[i] + y[i];\n"
	"}\n";

static const char broken_src[] =
	"extern \"C\" __global__ void broken(float *y)\n"
	"{\n"
	"	y[0] = undeclared_thing * 2.0f;\n"
	"}\n";

/* Run fn with stderr captured into a malloc'd string. */
static char *capture_stderr(int (*fn)(void *), void *arg, int *rc)
{
	char path[] = "/tmp/sluice-test-stderr-XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	*rc = fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	char *text = rt_read_file(path, NULL);
	unlink(path);
	return text;
}

struct build_args {
	struct rt_gpu *g;
	const struct rt_module_src *src;
	struct rt_module **out;
};

static int build_broken(void *p)
{
	struct build_args *b = p;
	return rt_module_build(b->g, b->src, 1, b->out, NULL);
}

static void test_device(struct rt_gpu *g)
{
	const struct rt_gpu_info *in = rt_gpu_info(g);
	printf("device 0: %s sm_%d%d, %d SMs, L2 %zu MiB\n", in->name, in->cc_major, in->cc_minor,
	       in->sm_count, in->l2_bytes >> 20);
	CHECK(in->sm_count > 0 && in->l2_bytes > 0 && in->mem_total > 0);
	size_t mark = rt_gpu_arena_mark(g);
	rt_dptr p = rt_gpu_alloc(g, 1000, 256), q = rt_gpu_alloc(g, 10, 4096);
	CHECK(p && q && p % 256 == 0 && q % 4096 == 0 && q >= p + 1000);
	CHECK(rt_gpu_alloc(g, rt_gpu_arena_size(g), 256) == 0); /* does not fit: refused */
	rt_gpu_arena_reset(g, mark);
	CHECK(rt_gpu_arena_used(g) == mark);

	/* host -> device on the copy stream, device -> device on compute after an event,
	 * back on the copy stream after another */
	size_t n = 1 << 20;
	unsigned char *h = rt_gpu_host_alloc(n), *back = rt_gpu_host_alloc(n);
	REQUIRE(h && back);
	for (size_t i = 0; i < n; i++)
		h[i] = (unsigned char)(i * 7 + 3);
	memset(back, 0, n);
	rt_dptr a = rt_gpu_alloc(g, n, 256), b = rt_gpu_alloc(g, n, 256);
	REQUIRE(a && b);
	CHECK(!rt_gpu_memset(g, b, 0x55, n, RT_STREAM_COPY));
	CHECK(!rt_gpu_copy_to_device(g, a, h, n, RT_STREAM_COPY));
	CHECK(!rt_gpu_stream_wait(g, RT_STREAM_COMPUTE, RT_STREAM_COPY));
	CHECK(!rt_gpu_copy(g, b, a, n, RT_STREAM_COMPUTE));
	CHECK(!rt_gpu_stream_wait(g, RT_STREAM_COPY, RT_STREAM_COMPUTE));
	CHECK(!rt_gpu_copy_to_host(g, back, b, n, RT_STREAM_COPY));
	CHECK(!rt_gpu_sync(g, RT_STREAM_COPY));
	CHECK(memcmp(h, back, n) == 0);
	rt_gpu_host_free(h);
	rt_gpu_host_free(back);
	rt_gpu_arena_reset(g, mark);
}

static void run_saxpy(struct rt_gpu *g, struct rt_module *m)
{
	struct rt_kernel *k = rt_module_kernel(m, "saxpy");
	REQUIRE(k);
	int n = 100000;
	float *x = rt_malloc(4 * (size_t)n), *y = rt_malloc(4 * (size_t)n);
	uint64_t s = 7;
	for (int i = 0; i < n; i++) {
		x[i] = (float)test_rand(&s);
		y[i] = (float)test_rand(&s);
	}
	size_t mark = rt_gpu_arena_mark(g);
	rt_dptr dx = rt_gpu_alloc(g, 4 * (size_t)n, 256), dy = rt_gpu_alloc(g, 4 * (size_t)n, 256);
	REQUIRE(dx && dy);
	CHECK(!rt_gpu_copy_to_device(g, dx, x, 4 * (size_t)n, RT_STREAM_COMPUTE));
	CHECK(!rt_gpu_copy_to_device(g, dy, y, 4 * (size_t)n, RT_STREAM_COMPUTE));
	float a = 2.5f;
	void *args[] = { &a, &dx, &dy, &n };
	unsigned grid[3] = { (unsigned)(n + 255) / 256, 1, 1 }, block[3] = { 256, 1, 1 };
	CHECK(!rt_kernel_launch(g, k, grid, block, 0, RT_STREAM_COMPUTE, args));
	float *out = rt_malloc(4 * (size_t)n);
	CHECK(!rt_gpu_copy_to_host(g, out, dy, 4 * (size_t)n, RT_STREAM_COMPUTE));
	CHECK(!rt_gpu_sync(g, RT_STREAM_COMPUTE));
	int wrong = 0;
	for (int i = 0; i < n; i++)
		wrong += fabsf(out[i] - (a * x[i] + y[i])) > 1e-6f * (1 + fabsf(out[i]));
	CHECKF(wrong == 0, "%d of %d saxpy results wrong", wrong, n);
	rt_gpu_arena_reset(g, mark);
	free(x), free(y), free(out);
}

int main(void)
{
	gpu_test_require("test_gpu_runtime");
	char dir[] = "/tmp/sluice-kcache-gpu-XXXXXX";
	REQUIRE(mkdtemp(dir));
	setenv("SLUICE_CACHE_DIR", dir, 1);
	struct rt_gpu *g = rt_gpu_open(0, 64u << 20);
	REQUIRE(g);
	test_device(g);

	/* cold, then from the cache */
	struct rt_module_src src = { "saxpy.cu", saxpy_src, NULL, 0 };
	struct rt_module *m = NULL;
	struct rt_compile_stats st;
	CHECK(rt_module_build(g, &src, 1, &m, &st) == 0);
	CHECK(st.compiled == 1 && st.cache_hits == 0);
	double cold = st.seconds;
	REQUIRE(m);
	run_saxpy(g, m);
	rt_module_free(m);
	CHECK(rt_module_build(g, &src, 1, &m, &st) == 0);
	CHECK(st.compiled == 0 && st.cache_hits == 1);
	printf("saxpy: cold %.1f ms, cache hit %.1f ms\n", cold * 1e3, st.seconds * 1e3);
	REQUIRE(m);
	run_saxpy(g, m);
	rt_module_free(m);

	/* an option changes the key: compiled again */
	const char *opts[] = { "--use_fast_math" };
	struct rt_module_src fast = { "saxpy.cu", saxpy_src, opts, 1 };
	CHECK(rt_module_build(g, &fast, 1, &m, &st) == 0);
	CHECK(st.compiled == 1 && st.cache_hits == 0);
	rt_module_free(m);

	/* several modules in parallel */
	enum { N = 4 };
	char text[N][512];
	struct rt_module_src many[N];
	struct rt_module *mods[N];
	for (int i = 0; i < N; i++) {
		snprintf(text[i], sizeof text[i],
			 "extern \"C\" __global__ void k%d(int *p) { p[threadIdx.x] = %d; }\n", i,
			 i * 11);
		many[i] = (struct rt_module_src){ "many.cu", text[i], NULL, 0 };
	}
	CHECK(rt_module_build(g, many, N, mods, &st) == 0);
	CHECK(st.compiled == N);
	for (int i = 0; i < N; i++) {
		char name[16];
		snprintf(name, sizeof name, "k%d", i);
		struct rt_kernel *k = mods[i] ? rt_module_kernel(mods[i], name) : NULL;
		CHECK(k != NULL);
		if (!k)
			continue;
		size_t mark = rt_gpu_arena_mark(g);
		rt_dptr d = rt_gpu_alloc(g, 32 * 4, 256);
		void *args[] = { &d };
		unsigned grid[3] = { 1, 1, 1 }, block[3] = { 32, 1, 1 };
		int out[32];
		CHECK(!rt_kernel_launch(g, k, grid, block, 0, RT_STREAM_COMPUTE, args));
		CHECK(!rt_gpu_copy_to_host(g, out, d, sizeof out, RT_STREAM_COMPUTE));
		CHECK(!rt_gpu_sync(g, RT_STREAM_COMPUTE));
		CHECK(out[0] == i * 11 && out[31] == i * 11);
		rt_gpu_arena_reset(g, mark);
		rt_module_free(mods[i]);
	}
	/* no kernel of that name */
	struct rt_module *one = NULL;
	CHECK(rt_module_build(g, &src, 1, &one, NULL) == 0);
	if (one) {
		fflush(stderr);
		CHECK(rt_module_kernel(one, "no_such_kernel") == NULL);
		rt_module_free(one);
	}

	/* a compile error: NVRTC's log and the offending line, no module */
	struct rt_module_src bad = { "broken.cu", broken_src, NULL, 0 };
	struct rt_module *bm = (struct rt_module *)1;
	struct build_args ba = { g, &bad, &bm };
	int rc;
	char *err = capture_stderr(build_broken, &ba, &rc);
	if (!err)
		err = rt_strdup("(nothing captured)");
	CHECK(rc == -1 && bm == NULL);
	CHECKF(strstr(err, "cannot compile broken.cu"), "no heading in: %s", err);
	CHECKF(strstr(err, "undeclared_thing") && strstr(err, "broken.cu(3)"),
	       "no NVRTC log in: %s", err);
	CHECKF(strstr(err, "    3 | \ty[0] = undeclared_thing * 2.0f;"),
	       "no source line in: %s", err);
	fputs(err, stdout);
	free(err);

	rt_gpu_close(g);
	/* pinned memory on a thread with no current context */
	void *pinned = rt_gpu_host_alloc(4096);
	CHECK(pinned != NULL);
	if (pinned)
		memset(pinned, 1, 4096);
	rt_gpu_host_free(pinned);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
	return CHECK_DONE();
}
