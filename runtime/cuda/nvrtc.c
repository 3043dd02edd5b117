/* nvrtc.c - CUDA C compiled at run time by NVRTC into a cubin for the device's own
 * architecture (sm_XX read off the device), kept in the disk cache
 * (runtime/gpu_common.c) and loaded with the driver API.
 *
 * rt_module_build() compiles independent modules in parallel threads: NVRTC is
 * thread-safe per program, and a cold compile costs hundreds of milliseconds, so a
 * program with many kernels starts in the time of its slowest one.  Loading stays on
 * the calling thread (it needs the device's context). */
#include "gpu_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

#ifdef SLUICE_HAVE_NVRTC
#include <nvrtc.h>

struct rt_module {
	struct rt_gpu *g;
	CUmodule mod;
};

int rt_nvrtc_version(void)
{
	int major = 0, minor = 0;
	if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS)
		return 0;
	return major * 1000 + minor * 10;
}

static int nvrtc_fail(nvrtcResult r, const char *call, const char *what)
{
	fprintf(stderr, "sluice: NVRTC error: %s failed for %s: %s\n", call, what,
		nvrtcGetErrorString(r));
	return -1;
}
#define NVRTC(call, what)                                                             \
	({                                                                            \
		nvrtcResult nv_r_ = (call);                                           \
		nv_r_ == NVRTC_SUCCESS ? 0 : nvrtc_fail(nv_r_, #call, what);          \
	})

/* Print NVRTC's log and, under each "NAME(LINE): ..." message, that source line. */
static void print_log(const char *name, const char *source, const char *log)
{
	fprintf(stderr, "sluice: cannot compile %s:\n", name);
	size_t nlen = strlen(name);
	for (const char *p = log; *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		fprintf(stderr, "  %.*s\n", (int)len, p);
		if (len > nlen + 2 && !strncmp(p, name, nlen) && p[nlen] == '(') {
			long line = strtol(p + nlen + 1, NULL, 10);
			const char *s = source;
			for (long l = 1; l < line && s; l++) {
				s = strchr(s, '\n');
				if (s)
					s++;
			}
			if (line > 0 && s) {
				const char *e = strchr(s, '\n');
				fprintf(stderr, "  %5ld | %.*s\n", line,
					(int)(e ? e - s : (long)strlen(s)), s);
			}
		}
		p += len + (eol ? 1 : 0);
	}
}

struct job {
	const struct rt_module_src *src;
	const char *arch;
	int nvrtc_version;
	/* results */
	void *cubin;
	size_t cubin_len;
	int hit, failed;
};

static void *compile_one(void *arg)
{
	struct job *j = arg;
	const struct rt_module_src *src = j->src;
	int user_arch = 0;
	for (int i = 0; i < src->n_options; i++)
		if (!strncmp(src->options[i], "--gpu-architecture", 18) ||
		    !strncmp(src->options[i], "-arch", 5))
			user_arch = 1;
	int nopt = 0;
	const char **opts = rt_calloc((size_t)src->n_options + 2, sizeof *opts);
	char archopt[64];
	snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", j->arch);
	if (!user_arch)
		opts[nopt++] = archopt;
	for (int i = 0; i < src->n_options; i++)
		opts[nopt++] = src->options[i];

	char key[RT_KCACHE_KEY_LEN + 1];
	rt_kcache_key(key, src->source, opts, nopt, j->nvrtc_version, j->arch);
	j->cubin = rt_kcache_load(key, &j->cubin_len);
	if (j->cubin) {
		j->hit = 1;
		free(opts);
		return NULL;
	}

	nvrtcProgram prog;
	if (NVRTC(nvrtcCreateProgram(&prog, src->source, src->name, 0, NULL, NULL), src->name)) {
		j->failed = 1;
		free(opts);
		return NULL;
	}
	nvrtcResult r = nvrtcCompileProgram(prog, nopt, opts);
	free(opts);
	if (r != NVRTC_SUCCESS) {
		size_t n = 0;
		char *log = NULL;
		if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS) {
			log = rt_malloc(n + 1);
			if (nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS)
				log[0] = 0;
			log[n] = 0;
		}
		/* one module's whole report at a time, even from parallel threads */
		static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
		pthread_mutex_lock(&print_lock);
		print_log(src->name, src->source, log ? log : nvrtcGetErrorString(r));
		pthread_mutex_unlock(&print_lock);
		free(log);
		nvrtcDestroyProgram(&prog);
		j->failed = 1;
		return NULL;
	}
	if (NVRTC(nvrtcGetCUBINSize(prog, &j->cubin_len), src->name)) {
		j->failed = 1;
	} else {
		j->cubin = rt_malloc(j->cubin_len);
		if (NVRTC(nvrtcGetCUBIN(prog, j->cubin), src->name))
			j->failed = 1;
		else if (rt_kcache_store(key, j->cubin, j->cubin_len))
			fprintf(stderr, "sluice: warning: could not write %s to the kernel cache\n",
				src->name);
	}
	nvrtcDestroyProgram(&prog);
	return NULL;
}

int rt_module_build(struct rt_gpu *g, const struct rt_module_src *src, int n,
		    struct rt_module **out, struct rt_compile_stats *stats)
{
	double t0 = rt_now();
	char arch[16];
	snprintf(arch, sizeof arch, "sm_%d%d", g->info.cc_major, g->info.cc_minor);
	struct job *jobs = rt_calloc((size_t)n, sizeof *jobs);
	int version = rt_nvrtc_version();
	for (int i = 0; i < n; i++) {
		jobs[i].src = &src[i];
		jobs[i].arch = arch;
		jobs[i].nvrtc_version = version;
		out[i] = NULL;
	}
	/* at most one thread a CPU (or $SLUICE_COMPILE_THREADS), WIDTH modules at a time */
	int width = rt_num_cpus();
	const char *env = getenv("SLUICE_COMPILE_THREADS");
	if (env && atoi(env) > 0)
		width = atoi(env);
	if (width > n)
		width = n;
	if (width <= 1) {
		for (int i = 0; i < n; i++)
			compile_one(&jobs[i]);
	} else {
		pthread_t *th = rt_calloc((size_t)n, sizeof *th);
		int *started = rt_calloc((size_t)n, sizeof *started);
		for (int base = 0; base < n; base += width) {
			for (int i = base; i < n && i < base + width; i++)
				started[i] = !pthread_create(&th[i], NULL, compile_one, &jobs[i]);
			for (int i = base; i < n && i < base + width; i++) {
				if (started[i])
					pthread_join(th[i], NULL);
				else
					compile_one(&jobs[i]);
			}
		}
		free(th);
		free(started);
	}
	int failed = 0, hits = 0;
	for (int i = 0; i < n; i++) {
		failed |= jobs[i].failed;
		hits += jobs[i].hit;
	}
	if (!failed && rt_gpu_bind(g) == 0) {
		for (int i = 0; i < n && !failed; i++) {
			out[i] = rt_calloc(1, sizeof *out[i]);
			out[i]->g = g;
			if (CU(cuModuleLoadData, (&out[i]->mod, jobs[i].cubin))) {
				fprintf(stderr, "sluice: cannot load the module %s\n", src[i].name);
				free(out[i]);
				out[i] = NULL;
				failed = 1;
			}
		}
	} else {
		failed = 1;
	}
	if (failed)
		for (int i = 0; i < n; i++) {
			rt_module_free(out[i]);
			out[i] = NULL;
		}
	for (int i = 0; i < n; i++)
		free(jobs[i].cubin);
	free(jobs);
	if (stats) {
		stats->compiled = n - hits;
		stats->cache_hits = hits;
		stats->seconds = rt_now() - t0;
	}
	return failed ? -1 : 0;
}

void rt_module_free(struct rt_module *m)
{
	if (!m)
		return;
	rt_gpu_bind(m->g);
	CU(cuModuleUnload, (m->mod));
	free(m);
}

struct rt_kernel *rt_module_kernel(struct rt_module *m, const char *name)
{
	CUfunction f;
	CUresult r = rt_cu.p_cuModuleGetFunction(&f, m->mod, name);
	if (r != CUDA_SUCCESS) {
		rt_cu_fail(r, "cuModuleGetFunction", __FILE__, __LINE__);
		fprintf(stderr, "sluice: no kernel named '%s' in the module (extern \"C\" missing?)\n",
			name);
		return NULL;
	}
	return (struct rt_kernel *)f;
}

int rt_kernel_launch(struct rt_gpu *g, struct rt_kernel *k, const unsigned grid[3],
		     const unsigned block[3], unsigned smem_bytes, enum rt_stream_kind s,
		     void **args)
{
	return rt_gpu_bind(g) ||
	       CU(cuLaunchKernel, ((CUfunction)k, grid[0], grid[1], grid[2], block[0], block[1],
				   block[2], smem_bytes, g->stream[s], args, NULL));
}

#else /* CUDA without NVRTC */

int rt_nvrtc_version(void) { return 0; }

int rt_module_build(struct rt_gpu *g, const struct rt_module_src *src, int n,
		    struct rt_module **out, struct rt_compile_stats *stats)
{
	fprintf(stderr, "sluice: this sluice was built without NVRTC: no run-time kernels\n");
	return -1;
}

void rt_module_free(struct rt_module *m) { (void)m; }

struct rt_kernel *rt_module_kernel(struct rt_module *m, const char *name) { return NULL; }

int rt_kernel_launch(struct rt_gpu *g, struct rt_kernel *k, const unsigned grid[3],
		     const unsigned block[3], unsigned smem_bytes, enum rt_stream_kind s,
		     void **args)
{
	return -1;
}
#endif
