/* cmd_bench.c - 'sluice bench': micro-benchmarks of the GPU layer.
 *   gemm   cuBLASLt products (bf16, fp8 per-tensor, fp8 block-scaled), TFLOP/s
 *   nvrtc  NVRTC compile time: cold, cold in parallel, from the disk cache
 *   comm   NCCL communication (runtime/comm.h: rt_bench_comm)
 * Timing follows tools/bench/METHOD: device events, warm-up first, inputs rotated
 * through several sets larger together than L2, random data, median of many samples.
 * tools/bench/torch_gemm.py measures PyTorch the same way, for the side-by-side table
 * tools/gpu-check.sh prints. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "runtime/comm.h" /* rt_bench_comm: the communication benchmark */
#include "runtime/gpu.h"
#include "runtime/rt.h"



/* ---- random inputs, made on the device by a run-time compiled kernel ------------ */

static const char fill_src[] =
	"typedef unsigned int u32;\n"
	"typedef unsigned long long u64;\n"
	"__device__ u32 mix(u64 x)\n"
	"{\n"
	"	x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;\n"
	"	x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;\n"
	"	x ^= x >> 33;\n"
	"	return (u32)x;\n"
	"}\n"
	"__device__ float uniform(u64 i, u64 seed, float lo, float hi)\n"
	"{\n"
	"	float u = (float)(mix(i * 0x9E3779B97F4A7C15ULL + seed) >> 8) * (1.0f / 16777216.0f);\n"
	"	return lo + (hi - lo) * u;\n"
	"}\n"
	"#define LOOP for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;"
	" i += (u64)gridDim.x * blockDim.x)\n"
	"extern \"C\" __global__ void fill_bf16(unsigned short *p, u64 n, u64 seed, float lo, float hi)\n"
	"{\n"
	"	LOOP {\n"
	"		u32 b = __float_as_uint(uniform(i, seed, lo, hi));\n"
	"		p[i] = (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);\n"
	"	}\n"
	"}\n"
	"/* random E4M3 bytes over the whole range, NaN (S.1111.111) excluded */\n"
	"extern \"C\" __global__ void fill_fp8(unsigned char *p, u64 n, u64 seed, float lo, float hi)\n"
	"{\n"
	"	LOOP {\n"
	"		u32 b = mix(i * 0x9E3779B97F4A7C15ULL + seed) & 0xffu;\n"
	"		if ((b & 0x7fu) == 0x7fu)\n"
	"			b ^= 1u;\n"
	"		p[i] = (unsigned char)b;\n"
	"	}\n"
	"}\n"
	"extern \"C\" __global__ void fill_f32(float *p, u64 n, u64 seed, float lo, float hi)\n"
	"{\n"
	"	LOOP p[i] = uniform(i, seed, lo, hi);\n"
	"}\n";

struct filler {
	struct rt_gpu *g;
	struct rt_module *mod;
	struct rt_kernel *bf16, *fp8, *f32;
};

static int filler_init(struct filler *f, struct rt_gpu *g)
{
	struct rt_module_src src = { "sluice_fill.cu", fill_src, NULL, 0 };
	f->g = g;
	if (rt_module_build(g, &src, 1, &f->mod, NULL))
		return -1;
	f->bf16 = rt_module_kernel(f->mod, "fill_bf16");
	f->fp8 = rt_module_kernel(f->mod, "fill_fp8");
	f->f32 = rt_module_kernel(f->mod, "fill_f32");
	return f->bf16 && f->fp8 && f->f32 ? 0 : -1;
}

static int fill(struct filler *f, struct rt_kernel *k, rt_dptr p, uint64_t n, uint64_t seed,
		float lo, float hi)
{
	uint64_t blocks = (n + 255) / 256, cap = 8ull * (uint64_t)rt_gpu_info(f->g)->sm_count;
	unsigned grid[3] = { (unsigned)(blocks < cap ? blocks : cap), 1, 1 };
	unsigned block[3] = { 256, 1, 1 };
	void *args[] = { &p, &n, &seed, &lo, &hi };
	return rt_kernel_launch(f->g, k, grid, block, 0, RT_STREAM_COMPUTE, args);
}

/* ---- bench gemm ---------------------------------------------------------------------- */

struct shape {
	int m, n, k;
	const char *what;
};

/* square problems, and the two GEMMs of a DeepSeek-V3 expert on 4096 tokens
 * (hidden 7168, expert hidden 2048): up/gate (N=2048, K=7168) and down (N=7168,
 * K=2048) */
static const struct shape default_shapes[] = {
	{ 4096, 4096, 4096, "square" },
	{ 8192, 8192, 8192, "square" },
	{ 4096, 2048, 7168, "moe-up" },
	{ 4096, 7168, 2048, "moe-down" },
};

enum { BIG_ALIGN = 2 << 20 };

static size_t elem_size(enum rt_gemm_mode m) { return m == RT_GEMM_BF16 ? 2 : 1; }

/* the operands of one input set (what must stream from memory) */
static size_t operand_bytes(enum rt_gemm_mode mode, const struct shape *s)
{
	return ((size_t)s->m * (size_t)s->k + (size_t)s->n * (size_t)s->k) * elem_size(mode);
}

/* arena room for one input set: operands, scales and alignment */
static size_t set_room(enum rt_gemm_mode mode, const struct shape *s)
{
	size_t M = (size_t)s->m, N = (size_t)s->n, K = (size_t)s->k;
	size_t b = operand_bytes(mode, s) + 2 * BIG_ALIGN + 2 * 256;
	if (mode == RT_GEMM_FP8_BLOCK)
		b += (K / 128 * M + (N + 127) / 128 * (size_t)rt_gemm_block_scale_stride(s->k)) * 4;
	return b;
}

/* enough input sets that their operands together are three times L2, at least 2, at
 * most 16 (tools/bench/torch_gemm.py counts the same way) */
static int sets_for(enum rt_gemm_mode mode, const struct shape *s, size_t l2)
{
	size_t per = operand_bytes(mode, s), r = (3 * l2 + per - 1) / per;
	return r < 2 ? 2 : r > 16 ? 16 : (int)r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct gemm_opts {
	int samples, batch, warmup, warmup_ms, csv;
};

static int bench_one(struct rt_gpu *g, struct rt_gemm *ctx, struct filler *fl,
		     enum rt_gemm_mode mode, const struct shape *s, const struct gemm_opts *o)
{
	size_t M = (size_t)s->m, N = (size_t)s->n, K = (size_t)s->k, e = elem_size(mode);
	int sets = sets_for(mode, s, rt_gpu_info(g)->l2_bytes);
	size_t mark = rt_gpu_arena_mark(g);
	struct rt_gemm_args *args = rt_calloc((size_t)sets, sizeof *args);
	int rc = -1;
	rt_dptr d = rt_gpu_alloc(g, M * N * 2, BIG_ALIGN);
	if (!d)
		goto out;
	for (int i = 0; i < sets; i++) {
		struct rt_gemm_args *a = &args[i];
		a->mode = mode;
		a->m = s->m;
		a->n = s->n;
		a->k = s->k;
		a->d = d;
		/* operands on 2 MiB boundaries, as PyTorch's allocator places large tensors */
		a->a = rt_gpu_alloc(g, M * K * e, BIG_ALIGN);
		a->b = rt_gpu_alloc(g, N * K * e, BIG_ALIGN);
		if (!a->a || !a->b)
			goto out;
		uint64_t seed = 1000 * (uint64_t)i;
		if (mode == RT_GEMM_BF16) {
			if (fill(fl, fl->bf16, a->a, M * K, seed + 1, -1, 1) ||
			    fill(fl, fl->bf16, a->b, N * K, seed + 2, -1, 1))
				goto out;
			continue;
		}
		size_t na = 1, nb = 1;
		if (mode == RT_GEMM_FP8_BLOCK) {
			na = K / 128 * M;
			nb = (N + 127) / 128 * (size_t)rt_gemm_block_scale_stride(s->k);
		}
		a->a_scale = rt_gpu_alloc(g, na * 4, 256);
		a->b_scale = rt_gpu_alloc(g, nb * 4, 256);
		if (!a->a_scale || !a->b_scale ||
		    fill(fl, fl->fp8, a->a, M * K, seed + 1, 0, 0) ||
		    fill(fl, fl->fp8, a->b, N * K, seed + 2, 0, 0) ||
		    fill(fl, fl->f32, a->a_scale, na, seed + 3, 0.5f / 448, 1.5f / 448) ||
		    fill(fl, fl->f32, a->b_scale, nb, seed + 4, 0.5f / 448, 1.5f / 448))
			goto out;
	}
	struct rt_gpu_event *t0 = rt_gpu_event_new(g), *t1 = rt_gpu_event_new(g);
	double *ms = rt_calloc((size_t)o->samples, sizeof *ms);
	int at = 0, bad = !t0 || !t1;
	/* warm-up: at least W products and WARMUP_MS of them, so that the GPU's clock has
	 * settled under the load (the power limit) before anything is timed */
	double warm_start = rt_now();
	do {
		for (int i = 0; i < o->warmup && !bad; i++)
			bad = rt_gemm_run(ctx, &args[at++ % sets], RT_STREAM_COMPUTE);
		bad = bad || rt_gpu_sync(g, RT_STREAM_COMPUTE);
	} while (!bad && (rt_now() - warm_start) * 1e3 < o->warmup_ms);
	for (int smp = 0; smp < o->samples && !bad; smp++) {
		bad = rt_gpu_event_record(t0, RT_STREAM_COMPUTE);
		for (int i = 0; i < o->batch && !bad; i++)
			bad = rt_gemm_run(ctx, &args[at++ % sets], RT_STREAM_COMPUTE);
		bad = bad || rt_gpu_event_record(t1, RT_STREAM_COMPUTE);
		double t = bad ? -1 : rt_gpu_event_ms(t0, t1);
		bad = bad || t < 0;
		ms[smp] = t / o->batch;
	}
	if (!bad) {
		qsort(ms, (size_t)o->samples, sizeof *ms, cmp_double);
		double med = ms[o->samples / 2], best = ms[0];
		double tflops = 2.0 * (double)M * (double)N * (double)K / (med * 1e-3) / 1e12;
		char algo[128] = "";
		rt_gemm_describe(ctx, &args[0], algo, sizeof algo);
		if (o->csv)
			printf("gemm,sluice,%s,%d,%d,%d,%.5f,%.1f\n", rt_gemm_mode_name(mode), s->m,
			       s->n, s->k, med, tflops);
		else
			printf("%-9s %-8s %6d %6d %6d %10.4f %9.1f %10.4f %4d  %s\n",
			       rt_gemm_mode_name(mode), s->what, s->m, s->n, s->k, med, tflops, best,
			       sets, algo);
		fflush(stdout);
		rc = 0;
	}
	free(ms);
	rt_gpu_event_free(t0);
	rt_gpu_event_free(t1);
out:
	if (rc)
		fprintf(stderr, "sluice bench gemm: %s M=%d N=%d K=%d failed\n",
			rt_gemm_mode_name(mode), s->m, s->n, s->k);
	rt_gpu_sync(g, RT_STREAM_COMPUTE);
	rt_gpu_arena_reset(g, mark);
	free(args);
	return rc;
}

static void gemm_usage(FILE *f)
{
	fprintf(f,
		"usage: sluice bench gemm [--m M --n N --k K] [--dtype bf16|fp8|fp8-block|all]\n"
		"                         [--device D] [--samples S] [--batch B] [--warmup W]\n"
		"                         [--warmup-ms T] [--csv]\n\n"
		"Times D[M,N] = A[M,K] . B[N,K]^T through cuBLASLt (bf16 out, fp32 accumulation):\n"
		"bf16 inputs, fp8 E4M3 with a scale per tensor, fp8 with DeepSeek-V3 block scales\n"
		"(1x128 on A, 128x128 on B).  Without --m/--n/--k: 4096^3, 8192^3 and the MoE\n"
		"shapes M=4096 N=2048 K=7168 and M=4096 N=7168 K=2048.  Each sample times B\n"
		"back-to-back products with device events; the median of S samples is reported\n"
		"(defaults S=50, B=10); before that, warm-up products run for at least T ms and\n"
		"W products (defaults T=1000, W=20), so that the clock has settled under the\n"
		"power limit; inputs are random and rotate through enough sets to exceed three\n"
		"times L2.\n");
}

static int parse_int(const char *v, const char *name, int *out)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || *end || x <= 0 || x > 1 << 20) {
		fprintf(stderr, "sluice bench: %s takes a positive integer, got '%s'\n", name, v);
		return -1;
	}
	*out = (int)x;
	return 0;
}

static int bench_gemm(int argc, char **argv)
{
	struct gemm_opts o = { 50, 10, 20, 1000, 0 };
	int m = 0, n = 0, k = 0, device = 0;
	const char *dtype = "all";
	for (int i = 1; i < argc;) {
		const char *v;
		int r;
		if (args_is_help(argv[i])) {
			gemm_usage(stdout);
			return EXIT_OK;
		}
		if (!strcmp(argv[i], "--csv")) {
			o.csv = 1;
			i++;
			continue;
		}
#define INTOPT(name, var)                                                                   \
	if ((r = args_take_value(argc, argv, &i, name, &v, "bench gemm")) != 0) {           \
		if (r < 0 || parse_int(v, name, &var))                                       \
			return EXIT_USAGE;                                                   \
		continue;                                                                    \
	}
		INTOPT("--m", m)
		INTOPT("--n", n)
		INTOPT("--k", k)
		INTOPT("--device", device)
		INTOPT("--samples", o.samples)
		INTOPT("--batch", o.batch)
		INTOPT("--warmup", o.warmup)
		INTOPT("--warmup-ms", o.warmup_ms)
#undef INTOPT
		if ((r = args_take_value(argc, argv, &i, "--dtype", &dtype, "bench gemm")) != 0) {
			if (r < 0)
				return EXIT_USAGE;
			continue;
		}
		fprintf(stderr, "sluice bench gemm: unknown argument '%s'\n", argv[i]);
		gemm_usage(stderr);
		return EXIT_USAGE;
	}
	enum rt_gemm_mode modes[3];
	int nmodes = 0;
	if (!strcmp(dtype, "all")) {
		modes[0] = RT_GEMM_BF16;
		modes[1] = RT_GEMM_FP8;
		modes[2] = RT_GEMM_FP8_BLOCK;
		nmodes = 3;
	} else if (!strcmp(dtype, "bf16")) {
		modes[nmodes++] = RT_GEMM_BF16;
	} else if (!strcmp(dtype, "fp8")) {
		modes[nmodes++] = RT_GEMM_FP8;
	} else if (!strcmp(dtype, "fp8-block")) {
		modes[nmodes++] = RT_GEMM_FP8_BLOCK;
	} else {
		fprintf(stderr, "sluice bench gemm: --dtype is bf16, fp8, fp8-block or all, not '%s'\n",
			dtype);
		return EXIT_USAGE;
	}
	struct shape one = { m, n, k, "custom" };
	const struct shape *shapes = default_shapes;
	int nshapes = (int)(sizeof default_shapes / sizeof default_shapes[0]);
	if (m || n || k) {
		if (!m || !n || !k) {
			fprintf(stderr, "sluice bench gemm: give all of --m, --n and --k\n");
			return EXIT_USAGE;
		}
		shapes = &one;
		nshapes = 1;
	}
	/* cuBLASLt's workspace: 32 MiB, or SLUICE_GEMM_WORKSPACE bytes (PyTorch passes 1 MiB) */
	size_t workspace = 32u << 20;
	const char *ws_env = getenv("SLUICE_GEMM_WORKSPACE");
	if (ws_env && *ws_env) {
		char *end;
		unsigned long long w = strtoull(ws_env, &end, 10);
		if (*end || w > (1ull << 32)) {
			fprintf(stderr, "sluice bench gemm: SLUICE_GEMM_WORKSPACE is a byte count, not '%s'\n",
				ws_env);
			return EXIT_USAGE;
		}
		workspace = (size_t)w;
	}
	for (int s = 0; s < nshapes; s++)
		for (int j = 0; j < nmodes; j++) {
			/* stand-in addresses: only the shape and mode are checked here */
			struct rt_gemm_args a = { .mode = modes[j], .m = shapes[s].m,
						  .n = shapes[s].n, .k = shapes[s].k, .a = 256,
						  .b = 256, .d = 256, .a_scale = 256, .b_scale = 256 };
			const char *why = rt_gemm_check_args(&a);
			if (why) {
				fprintf(stderr, "sluice bench gemm: M=%d N=%d K=%d (%s): %s\n",
					a.m, a.n, a.k, rt_gemm_mode_name(a.mode), why);
				return EXIT_INPUT;
			}
		}
	if (rt_gpu_count() == 0) {
		fprintf(stderr, "sluice bench gemm: no GPU: %s\n", rt_gpu_why_none());
		return EXIT_INPUT;
	}
	struct rt_gpu_info info;
	if (device >= rt_gpu_count() || rt_gpu_query(device, &info)) {
		fprintf(stderr, "sluice bench gemm: no device %d\n", device);
		return EXIT_INPUT;
	}
	/* one arena: the largest case's rotating sets, its output and the workspace */
	size_t need = 0;
	for (int s = 0; s < nshapes; s++)
		for (int j = 0; j < nmodes; j++) {
			size_t b = set_room(modes[j], &shapes[s]) *
					   (size_t)sets_for(modes[j], &shapes[s], info.l2_bytes) +
				   (size_t)shapes[s].m * (size_t)shapes[s].n * 2 + BIG_ALIGN;
			need = b > need ? b : need;
		}
	need += workspace + (1u << 20);
	struct rt_gpu *g = rt_gpu_open(device, need);
	if (!g)
		return EXIT_INPUT;
	struct filler fl = { 0 };
	struct rt_gemm *ctx = NULL;
	int rc = EXIT_INPUT;
	if (filler_init(&fl, g) || !(ctx = rt_gemm_new(g, workspace)))
		goto done;
	if (!o.csv) {
		printf("sluice bench gemm: %s (sm_%d%d, %d SMs, L2 %zu MiB), cuBLASLt %d\n", info.name,
		       info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes >> 20,
		       rt_cublaslt_version());
		printf("median of %d samples of %d back-to-back products after %d ms of warm-up; "
		       "bf16 out, fp32 accumulation\n\n",
		       o.samples, o.batch, o.warmup_ms);
		printf("%-9s %-8s %6s %6s %6s %10s %9s %10s %4s  %s\n", "dtype", "shape", "M", "N",
		       "K", "ms", "TFLOP/s", "best ms", "sets", "cuBLASLt algorithm");
	}
	rc = EXIT_OK;
	for (int s = 0; s < nshapes; s++)
		for (int j = 0; j < nmodes; j++)
			if (bench_one(g, ctx, &fl, modes[j], &shapes[s], &o))
				rc = EXIT_INPUT;
done:
	rt_gemm_free(ctx);
	rt_module_free(fl.mod);
	rt_gpu_close(g);
	return rc;
}

/* ---- bench nvrtc ------------------------------------------------------------------------ */

/* A kernel of the size sluice generates for a fused normalisation: row reduction
 * through warp shuffles and shared memory, then a scaled write.  SALT makes each
 * module's source (and so its cache key) different. */
static char *nvrtc_source(int salt)
{
	static const char fmt[] =
		"#define SALT %d\n"
		"__device__ float warp_sum(float v)\n"
		"{\n"
		"	for (int o = 16; o > 0; o >>= 1)\n"
		"		v += __shfl_xor_sync(0xffffffffu, v, o);\n"
		"	return v;\n"
		"}\n"
		"template <int COLS, int THREADS>\n"
		"__device__ void rmsnorm_row(const float *x, const float *w, float *y, float eps)\n"
		"{\n"
		"	__shared__ float part[THREADS / 32];\n"
		"	float s = 0.f;\n"
		"#pragma unroll 4\n"
		"	for (int c = threadIdx.x; c < COLS; c += THREADS)\n"
		"		s += x[c] * x[c];\n"
		"	s = warp_sum(s);\n"
		"	if ((threadIdx.x & 31) == 0)\n"
		"		part[threadIdx.x / 32] = s;\n"
		"	__syncthreads();\n"
		"	s = threadIdx.x < THREADS / 32 ? part[threadIdx.x] : 0.f;\n"
		"	s = warp_sum(s);\n"
		"	float r = rsqrtf(s / COLS + eps) * (1.0f + SALT * 1e-9f);\n"
		"#pragma unroll 4\n"
		"	for (int c = threadIdx.x; c < COLS; c += THREADS)\n"
		"		y[c] = x[c] * r * w[c];\n"
		"}\n"
		"extern \"C\" __global__ void __launch_bounds__(256)\n"
		"rmsnorm_%d(const float *x, const float *w, float *y, int rows, float eps)\n"
		"{\n"
		"	int row = blockIdx.x;\n"
		"	if (row < rows)\n"
		"		rmsnorm_row<7168, 256>(x + (size_t)row * 7168, w, y + (size_t)row * 7168, eps);\n"
		"}\n"
		"extern \"C\" __global__ void __launch_bounds__(256)\n"
		"rmsnorm_small_%d(const float *x, const float *w, float *y, int rows, float eps)\n"
		"{\n"
		"	int row = blockIdx.x;\n"
		"	if (row < rows)\n"
		"		rmsnorm_row<2048, 256>(x + (size_t)row * 2048, w, y + (size_t)row * 2048, eps);\n"
		"}\n";
	size_t n = sizeof fmt + 64;
	char *s = rt_malloc(n);
	snprintf(s, n, fmt, salt, salt, salt);
	return s;
}

static int build_n(struct rt_gpu *g, int first_salt, int n, const char *threads,
		   struct rt_compile_stats *st)
{
	struct rt_module_src *src = rt_calloc((size_t)n, sizeof *src);
	struct rt_module **mods = rt_calloc((size_t)n, sizeof *mods);
	char **text = rt_calloc((size_t)n, sizeof *text);
	char names[64];
	for (int i = 0; i < n; i++) {
		text[i] = nvrtc_source(first_salt + i);
		snprintf(names, sizeof names, "bench_%d.cu", first_salt + i);
		src[i].name = rt_strdup(names);
		src[i].source = text[i];
	}
	if (threads)
		setenv("SLUICE_COMPILE_THREADS", threads, 1);
	else
		unsetenv("SLUICE_COMPILE_THREADS");
	int rc = rt_module_build(g, src, n, mods, st);
	unsetenv("SLUICE_COMPILE_THREADS");
	for (int i = 0; i < n; i++) {
		rt_module_free(mods[i]);
		free(text[i]);
		free((char *)src[i].name);
	}
	free(src);
	free(mods);
	free(text);
	return rc;
}

static void nvrtc_usage(FILE *f)
{
	fprintf(f, "usage: sluice bench nvrtc [--modules N] [--device D] [--keep-cache]\n\n"
		   "Times NVRTC for a fused-normalisation kernel module compiled for the device's\n"
		   "own architecture: one module cold, N modules cold one after another, N modules\n"
		   "cold in parallel threads, and N modules from the disk cache (load included).\n"
		   "Runs in a fresh temporary cache directory (removed afterwards unless\n"
		   "--keep-cache).  Default N = 8.\n");
}

static int bench_nvrtc(int argc, char **argv)
{
	int n = 8, device = 0, keep = 0;
	for (int i = 1; i < argc;) {
		const char *v;
		int r;
		if (args_is_help(argv[i])) {
			nvrtc_usage(stdout);
			return EXIT_OK;
		}
		if (!strcmp(argv[i], "--keep-cache")) {
			keep = 1;
			i++;
			continue;
		}
		if ((r = args_take_value(argc, argv, &i, "--modules", &v, "bench nvrtc")) != 0) {
			if (r < 0 || parse_int(v, "--modules", &n))
				return EXIT_USAGE;
			continue;
		}
		if ((r = args_take_value(argc, argv, &i, "--device", &v, "bench nvrtc")) != 0) {
			if (r < 0 || parse_int(v, "--device", &device))
				return EXIT_USAGE;
			continue;
		}
		fprintf(stderr, "sluice bench nvrtc: unknown argument '%s'\n", argv[i]);
		nvrtc_usage(stderr);
		return EXIT_USAGE;
	}
	if (rt_gpu_count() == 0) {
		fprintf(stderr, "sluice bench nvrtc: no GPU: %s\n", rt_gpu_why_none());
		return EXIT_INPUT;
	}
	char dir[] = "/tmp/sluice-nvrtc-bench-XXXXXX";
	if (!mkdtemp(dir)) {
		fprintf(stderr, "sluice bench nvrtc: cannot make a temporary cache: %s\n",
			strerror(errno));
		return EXIT_INPUT;
	}
	char *old = getenv("SLUICE_CACHE_DIR") ? rt_strdup(getenv("SLUICE_CACHE_DIR")) : NULL;
	setenv("SLUICE_CACHE_DIR", dir, 1);
	struct rt_gpu *g = rt_gpu_open(device, 0);
	int rc = EXIT_INPUT;
	if (!g)
		goto out;
	const struct rt_gpu_info *in = rt_gpu_info(g);
	int nv = rt_nvrtc_version();
	char threads[16];
	int width = n < rt_num_cpus() ? n : rt_num_cpus();
	snprintf(threads, sizeof threads, "%d", width);
	printf("sluice bench nvrtc: NVRTC %d.%d, sm_%d%d (%s), %d CPUs, cache %s\n\n",
	       nv / 1000, nv % 1000 / 10, in->cc_major, in->cc_minor, in->name, rt_num_cpus(), dir);
	printf("%-30s %7s %9s %12s %6s\n", "case", "modules", "wall ms", "ms/module", "hits");
	struct {
		const char *what;
		int salt, n;
		const char *threads;
	} cases[] = {
		{ "cold, one module", 0, 1, "1" },
		{ "cold, one after another", 1000, n, "1" },
		{ "cold, parallel threads", 2000, n, threads },
		{ "cache hit + load, threads", 2000, n, threads },
		{ "cache hit + load, one module", 0, 1, "1" },
	};
	rc = EXIT_OK;
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct rt_compile_stats st;
		if (build_n(g, cases[c].salt, cases[c].n, cases[c].threads, &st)) {
			rc = EXIT_INPUT;
			break;
		}
		char label[64];
		if (strcmp(cases[c].threads, "1"))
			snprintf(label, sizeof label, "%s (%s)", cases[c].what, cases[c].threads);
		else
			snprintf(label, sizeof label, "%s", cases[c].what);
		printf("%-30s %7d %9.1f %12.2f %6d\n", label, cases[c].n, st.seconds * 1e3,
		       st.seconds * 1e3 / cases[c].n, st.cache_hits);
	}
	rt_gpu_close(g);
out:
	if (!keep) {
		/* the entries are ours alone: a fresh directory */
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
		if (system(cmd))
			fprintf(stderr, "sluice bench nvrtc: could not remove %s\n", dir);
	}
	if (old) {
		setenv("SLUICE_CACHE_DIR", old, 1);
		free(old);
	} else {
		unsetenv("SLUICE_CACHE_DIR");
	}
	return rc;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: sluice bench gemm|nvrtc|comm [ARGS...]\n\n"
		   "  gemm   cuBLASLt matrix products: bf16, fp8, fp8 block-scaled (TFLOP/s)\n"
		   "  nvrtc  NVRTC compile time: cold, parallel, from the disk cache\n"
		   "  comm   NCCL communication (all-to-all, send/recv, ...) across GPUs\n\n"
		   "'sluice bench NAME --help' describes each.  tools/gpu-check.sh runs them\n"
		   "beside PyTorch; results are in tools/bench/RESULTS.md.\n");
}

int cmd_bench(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (args_is_help(argv[1])) {
		usage(stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "gemm"))
		return bench_gemm(argc - 1, argv + 1);
	if (!strcmp(argv[1], "nvrtc"))
		return bench_nvrtc(argc - 1, argv + 1);
	if (!strcmp(argv[1], "comm"))
		return rt_bench_comm(argc - 1, argv + 1);
	fprintf(stderr, "sluice bench: unknown benchmark '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
