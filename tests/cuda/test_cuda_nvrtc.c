/* test_cuda_nvrtc.c - every golden CUDA C file (the .cu files of tests/cuda/golden/), the
 * library kernels of codegen/cuda/lib_kernels.cu, and every kernel the lowering makes
 * of the tiny models' whole training steps (tiny_gpt, tiny_moe at their own sizes,
 * forward and backward, planned for cg_target_cuda; tiny_moe in fp8 too) compile with NVRTC for sm_90, to a
 * cubin, with no error and no warning.  NVRTC compiles without a
 * GPU or driver, so this runs on any machine whose build found it (the runtime's
 * rt_module_build needs a device to read the architecture from, so NVRTC is called
 * directly here); elsewhere the test exits 77, skipped.  Running the kernels needs a
 * GPU: that is the GPU backend's test. */
#include <stdio.h>
#include <stdlib.h>

#ifndef SLUICE_HAVE_NVRTC
int main(void)
{
	printf("skipped: this build has no NVRTC\n");
	return 77;
}
#else
#include <dirent.h>
#include <string.h>

#include <nvrtc.h>

#include "check.h"
#include "codegen/cuda/cuda_impl.h"
#include "frontend/frontend.h"
#include "codegen/cuda/lib.h"
#include "ir/golden.h"
#include "passes/passes.h"

#define GOLDEN "tests/cuda/golden"

/* 0 when src compiles cleanly; else prints why */
static int compile(const char *name, const char *src)
{
	nvrtcProgram prog;
	nvrtcResult r = nvrtcCreateProgram(&prog, src, name, 0, NULL, NULL);
	if (r != NVRTC_SUCCESS) {
		fprintf(stderr, "%s: nvrtcCreateProgram: %s\n", name, nvrtcGetErrorString(r));
		return 1;
	}
	const char *opts[] = { "--gpu-architecture=sm_90", "--std=c++17" };
	r = nvrtcCompileProgram(prog, 2, opts);
	size_t n = 0;
	char *log = NULL;
	if (nvrtcGetProgramLogSize(prog, &n) == NVRTC_SUCCESS && n > 1) {
		log = malloc(n + 1);
		if (log && nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS)
			log[0] = 0;
	}
	int bad = r != NVRTC_SUCCESS || (log && log[strspn(log, " \t\r\n")]);
	if (bad)
		fprintf(stderr, "%s: %s\n%s\n", name, nvrtcGetErrorString(r), log ? log : "");
	size_t cubin = 0;
	if (!bad && (nvrtcGetCUBINSize(prog, &cubin) != NVRTC_SUCCESS || cubin == 0)) {
		fprintf(stderr, "%s: no cubin\n", name);
		bad = 1;
	}
	free(log);
	nvrtcDestroyProgram(&prog);
	return bad;
}

/* the step graph of a model (precision PREC, or the file's), planned for the GPU,
 * rendered and compiled */
static void model_compiles(const char *path, const char *prec)
{
	struct sl_override over = { "precision", prec };
	struct ir_graph *g = sl_compile_file(path, prec ? 1 : 0, &over, stderr);
	REQUIRE(g);
	REQUIRE(pass_pipeline_run(g, prec ? "fp8" : "autodiff", stderr) == 0);
	struct cg_plan p;
	REQUIRE(cg_plan_graph(&p, g, &cg_target_cuda, "k", stderr) == 0);
	/* the distinct kernels, as the backend builds them: the others differ in name only */
	int *uniq = calloc((size_t)p.n_ks + 1, sizeof *uniq);
	struct kir_kernel **ks = calloc((size_t)p.n_ks + 1, sizeof *ks);
	int n = cg_plan_distinct_kernels(&p, uniq, ks);
	char *src = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&src, &len);
	REQUIRE(f);
	cg_cuda_render(ks, n, f);
	fclose(f);
	CHECKF(compile(path, src) == 0, "the kernels of %s do not compile cleanly", path);
	printf("%s%s%s: the %d kernels of its step (%d distinct) compile\n", path,
	       prec ? ", precision " : "", prec ? prec : "", p.n_ks, n);
	free(src);
	free(ks);
	free(uniq);
	cg_plan_free(&p);
	ir_graph_free(g);
}

int main(void)
{
	int major = 0, minor = 0;
	nvrtcVersion(&major, &minor);
	DIR *d = opendir(GOLDEN);
	REQUIRE(d);
	int files = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 4 || strcmp(e->d_name + l - 3, ".cu"))
			continue;
		char path[512];
		snprintf(path, sizeof path, "%s/%s", GOLDEN, e->d_name);
		char *src = read_file(path, NULL);
		REQUIRE(src);
		CHECKF(compile(e->d_name, src) == 0, "%s does not compile cleanly", path);
		free(src);
		files++;
	}
	closedir(d);
	CHECKF(files >= 6, "only %d golden files", files);
	printf("NVRTC %d.%d compiled %d golden files for sm_90\n", major, minor, files);
	/* the library kernels (codegen/cuda/lib_kernels.cu), as cg_cuda_lib_load builds them */
	CHECKF(compile("sluice_lib.cu", cg_cuda_lib_source()) == 0,
	       "the library kernels do not compile cleanly");
	model_compiles("models/tiny_gpt.sl", NULL);
	model_compiles("models/tiny_moe.sl", NULL);
	model_compiles("models/tiny_moe.sl", "fp8"); /* f8 in bytes, quantisation kernels */
	return CHECK_DONE();
}
#endif
