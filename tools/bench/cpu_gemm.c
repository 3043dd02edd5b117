/* cpu_gemm.c - GFLOP/s of the CPU backend's GEMM (codegen/llvm/gemm.c) at a few sizes,
 * on 1 thread and on all, best of several runs; FLOPs = 2 M N K.
 * Usage: cpu_gemm [threads]   (default: every online CPU) */
#include <stdio.h>
#include <stdlib.h>

#include "codegen/llvm/llvm_impl.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

static double bench(struct rt_pool *pool, struct cg_gemm_ws *ws, int64_t M, int64_t N, int64_t K, int ta, int tb)
{
	float *a = rt_malloc(sizeof(float) * (size_t)(M * K));
	float *b = rt_malloc(sizeof(float) * (size_t)(K * N));
	float *c = rt_malloc(sizeof(float) * (size_t)(M * N));
	for (int64_t i = 0; i < M * K; i++)
		a[i] = (float)(i % 7) * 0.1f;
	for (int64_t i = 0; i < K * N; i++)
		b[i] = (float)(i % 5) * 0.1f;
	struct cg_gemm g = { M, N, K, a, ta ? 1 : K, ta ? M : 1, b, tb ? 1 : N, tb ? K : 1, c, N, 0 };
	double flops = 2.0 * (double)M * (double)N * (double)K, best = 1e30, total = 0;
	int reps = 0;
	while (reps < 3 || (total < 1.0 && reps < 200)) {
		double t0 = rt_now();
		cg_gemm_run(pool, ws, &g, 1);
		double t = rt_now() - t0;
		best = t < best ? t : best;
		total += t;
		reps++;
	}
	free(a);
	free(b);
	free(c);
	return flops / best / 1e9;
}

int main(int argc, char **argv)
{
	int all = argc > 1 ? atoi(argv[1]) : rt_num_cpus();
	static const int64_t shapes[][5] = {
		{ 256, 256, 256, 0, 0 }, { 512, 512, 512, 0, 0 }, { 1024, 1024, 1024, 0, 0 },
		{ 2048, 2048, 2048, 0, 0 }, { 1000, 1000, 1000, 0, 0 }, { 1024, 1024, 1024, 1, 0 }, { 1024, 1024, 1024, 0, 1 },
		/* tiny_gpt's shapes at batch 8 x seq 128: tokens x dim x ffn, the head */
		{ 1024, 512, 192, 0, 0 }, { 1024, 256, 192, 0, 1 }, { 192, 512, 1024, 1, 0 },
	};
	struct rt_pool *p1 = rt_pool_new(1), *pn = rt_pool_new(all);
	struct cg_gemm_ws *ws = cg_gemm_ws_new(all); /* as the backend keeps one per run */
	printf("%-22s %12s %12s\n", "M x N x K (ta,tb)", "1 thread", "all threads");
	for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
		const int64_t *s = shapes[i];
		double g1 = bench(p1, ws, s[0], s[1], s[2], (int)s[3], (int)s[4]);
		double gn = bench(pn, ws, s[0], s[1], s[2], (int)s[3], (int)s[4]);
		char name[64];
		snprintf(name, sizeof name, "%lldx%lldx%lld (%d,%d)", (long long)s[0], (long long)s[1],
			 (long long)s[2], (int)s[3], (int)s[4]);
		printf("%-22s %8.1f GF/s %8.1f GF/s\n", name, g1, gn);
	}
	cg_gemm_ws_free(ws);
	rt_pool_free(p1);
	rt_pool_free(pn);
	return 0;
}
