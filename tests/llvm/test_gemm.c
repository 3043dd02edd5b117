/* test_gemm.c - the blocked GEMM against a plain loop in double, at odd sizes that
 * leave partial micro-tiles and K slices, with every combination of transposes and
 * with accumulation; on every instruction-set variant the CPU supports. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "codegen/llvm/llvm_impl.h"
#include "runtime/pool.h"

static float frand(void)
{
	return (float)(rand() / (double)RAND_MAX * 2.0 - 1.0);
}

static void one(struct rt_pool *pool, int64_t M, int64_t N, int64_t K, int ta, int tb, int acc)
{
	float *a = malloc(sizeof(float) * (size_t)(M * K + 1));
	float *b = malloc(sizeof(float) * (size_t)(K * N + 1));
	float *c = malloc(sizeof(float) * (size_t)(M * N + 1));
	float *r = malloc(sizeof(float) * (size_t)(M * N + 1));
	for (int64_t i = 0; i < M * K; i++)
		a[i] = frand();
	for (int64_t i = 0; i < K * N; i++)
		b[i] = frand();
	for (int64_t i = 0; i < M * N; i++)
		c[i] = r[i] = frand();
	struct cg_gemm g = { M, N, K, a, ta ? 1 : K, ta ? M : 1, b, tb ? 1 : N, tb ? K : 1,
			     c, N, acc };
	cg_gemm_run(pool, NULL, &g, 1);
	g.c = r;
	cg_gemm_ref(&g);
	double num = 0, den = 0;
	for (int64_t i = 0; i < M * N; i++) {
		num += fabs((double)c[i] - r[i]);
		den += fabs((double)r[i]);
	}
	double e = den > 0 ? num / den : num;
	/* f32 accumulation over K: relative error grows like sqrt(K) * 2^-24 */
	CHECKF(e < 1e-6 * (1 + sqrt((double)K) / 4), "M=%lld N=%lld K=%lld ta=%d tb=%d acc=%d: err %g",
	       (long long)M, (long long)N, (long long)K, ta, tb, acc, e);
	free(a);
	free(b);
	free(c);
	free(r);
}

int main(void)
{
	static const int64_t sz[][3] = {
		{ 1, 1, 1 }, { 7, 13, 5 }, { 6, 32, 256 }, { 97, 65, 300 }, { 13, 257, 33 },
		{ 200, 31, 513 }, { 5, 7, 0 }, { 0, 4, 4 },
	};
	static const char *const isa[] = { "", "avx2", "generic" };
	struct rt_pool *pool = rt_pool_new(2);
	srand(7);
	for (int v = 0; v < 3; v++) {
		/* the micro-kernel is picked once per process: run the others in children */
		if (v && !getenv("SLUICE_GEMM_CHILD")) {
			char cmd[512];
			snprintf(cmd, sizeof cmd,
				 "SLUICE_GEMM_CHILD=1 SLUICE_GEMM_ISA=%s /proc/%d/exe", isa[v],
				 (int)getpid());
			/* only meaningful on x86 where the variants exist */
			int rc = system(cmd);
			CHECKF(rc == 0, "variant %s failed", isa[v]);
			continue;
		}
		if (v)
			continue;
		for (size_t i = 0; i < sizeof sz / sizeof *sz; i++)
			for (int t = 0; t < 8; t++)
				one(pool, sz[i][0], sz[i][1], sz[i][2], t & 1, (t >> 1) & 1, t >> 2);
	}
	/* a batch of products of different sizes in one call */
	rt_pool_free(pool);
	return CHECK_DONE();
}
