/* gemm.c - a blocked, packed, register-blocked single-precision GEMM in C with vector
 * extensions, for MATMUL, GROUPED_MATMUL and GROUPED_MATMUL_WGRAD.
 *
 * The structure is the one of GotoBLAS/BLIS: C is cut into blocks of MC rows and NC
 * columns (the unit of work handed to a thread); for each slice of KC along K, the
 * block's part of B is packed into NR-column panels and A into MR-row panels
 * (contiguous, zero-padded, so the micro-kernel reads both with unit stride whatever
 * the strides of the operands: transposes cost nothing extra), then the micro-kernel
 * (gemm_kernel.inc) runs over the MR x NR tiles.  The micro-kernel is compiled for
 * AVX-512, AVX2+FMA and plain SSE, and picked once from what the CPU supports.
 * Accumulation is in f32 with FMA; each KC slice is added into C. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "llvm_impl.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

enum { GEMM_MR = 6, GEMM_KC = 128, GEMM_MC = 96, GEMM_NC = 256 };

/* Loops run along whichever of A's axes is contiguous: k inner for a row-major A, the
 * MR rows inner for a transposed one. */
static void pack_a(const struct cg_gemm *g, int64_t pc, int64_t kc, int64_t i0, int64_t i1,
		   float *ap)
{
	for (int64_t ir = i0; ir < i1; ir += GEMM_MR) {
		float *dst = ap + (ir - i0) * kc;
		int mr = (int)(i1 - ir < GEMM_MR ? i1 - ir : GEMM_MR);
		const float *src = g->a + ir * g->rsa + pc * g->csa;
		if (g->rsa == 1) {
			for (int64_t k = 0; k < kc; k++)
				for (int i = 0; i < GEMM_MR; i++)
					dst[k * GEMM_MR + i] = i < mr ? src[k * g->csa + i] : 0.0f;
			continue;
		}
		for (int i = 0; i < GEMM_MR; i++) {
			if (i >= mr) {
				for (int64_t k = 0; k < kc; k++)
					dst[k * GEMM_MR + i] = 0.0f;
				continue;
			}
			const float *row = src + i * g->rsa;
			for (int64_t k = 0; k < kc; k++)
				dst[k * GEMM_MR + i] = row[k * g->csa];
		}
	}
}

static void pack_b(const struct cg_gemm *g, int64_t pc, int64_t kc, int64_t j0, int64_t j1,
		   int nr_full, float *bp)
{
	for (int64_t jr = j0; jr < j1; jr += nr_full) {
		float *dst = bp + (jr - j0) * kc;
		int nr = (int)(j1 - jr < nr_full ? j1 - jr : nr_full);
		for (int64_t k = 0; k < kc; k++) {
			const float *src = g->b + (pc + k) * g->rsb + jr * g->csb;
			float *d = dst + k * nr_full;
			if (g->csb != 1)
				break;
			memcpy(d, src, (size_t)nr * sizeof *d);
			for (int j = nr; j < nr_full; j++)
				d[j] = 0.0f;
		}
		if (g->csb == 1)
			continue;
		/* transposed B: walk each column along k, where it is contiguous */
		for (int j = 0; j < nr_full; j++) {
			if (j >= nr) {
				for (int64_t k = 0; k < kc; k++)
					dst[k * nr_full + j] = 0.0f;
				continue;
			}
			const float *col = g->b + pc * g->rsb + (jr + j) * g->csb;
			for (int64_t k = 0; k < kc; k++)
				dst[k * nr_full + j] = col[k * g->rsb];
		}
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#define GK_VL 16
#define GK_SFX avx512
#define GK_TARGET __attribute__((target("avx512f,fma")))
#include "gemm_kernel.inc"
#undef GK_VL
#undef GK_SFX
#undef GK_TARGET
#define GK_VL 8
#define GK_SFX avx2
#define GK_TARGET __attribute__((target("avx2,fma")))
#include "gemm_kernel.inc"
#undef GK_VL
#undef GK_SFX
#undef GK_TARGET
#endif
#define GK_VL 4
#define GK_SFX generic
#define GK_TARGET
#include "gemm_kernel.inc"
#undef GK_VL
#undef GK_SFX
#undef GK_TARGET

typedef void (*block_fn)(const struct cg_gemm *, int64_t, int64_t, int64_t, int64_t, float *,
			 float *, int);

static block_fn pick_block(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	const char *force = getenv("SLUICE_GEMM_ISA");
	if (force && !strcmp(force, "generic"))
		return block_generic;
	if (force && !strcmp(force, "avx2"))
		return block_avx2;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return block_avx512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return block_avx2;
#endif
	return block_generic;
}

/* Packing buffers, one slot per thread that may run a chunk at once, kept between
 * calls: fresh large allocations cost a page fault per 4 KiB on every call, which
 * halved the speed of products of 1000 and more. */
struct gemm_slot {
	float *ap, *bp;
	size_t ap_n, bp_n;  /* floats */
	atomic_int busy;
};

struct cg_gemm_ws {
	int n;
	struct gemm_slot *slot;
};

struct cg_gemm_ws *cg_gemm_ws_new(int n_slots)
{
	struct cg_gemm_ws *ws = rt_calloc(1, sizeof *ws);
	ws->n = n_slots > 0 ? n_slots : 1;
	ws->slot = rt_calloc((size_t)ws->n, sizeof *ws->slot);
	return ws;
}

void cg_gemm_ws_free(struct cg_gemm_ws *ws)
{
	if (!ws)
		return;
	for (int i = 0; i < ws->n; i++) {
		free(ws->slot[i].ap);
		free(ws->slot[i].bp);
	}
	free(ws->slot);
	free(ws);
}

static float *ensure(float *p, size_t *have, size_t need)
{
	if (*have >= need)
		return p;
	free(p);
	p = aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64);
	if (!p)
		RT_BUG("out of memory for GEMM packing buffers");
	*have = need;
	return p;
}

struct gemm_job {
	const struct cg_gemm *g;
	int n;
	int64_t *first_tile; /* prefix sums of tiles per product, n + 1 */
	block_fn block;
	int64_t max_k;
	struct cg_gemm_ws *ws;
};

static int64_t tiles_n(const struct cg_gemm *g)
{
	return (g->N + GEMM_NC - 1) / GEMM_NC;
}

static int64_t tiles_m(const struct cg_gemm *g)
{
	return (g->M + GEMM_MC - 1) / GEMM_MC;
}

/* Tiles are numbered column-block major, so a chunk of consecutive tiles mostly walks
 * down one column block and packs its part of B once. */
static void run_tiles(void *ctx, int64_t lo, int64_t hi)
{
	struct gemm_job *job = ctx;
	/* packing buffers as large as this job's shapes need, from a free slot */
	size_t kc = (size_t)(job->max_k < GEMM_KC ? job->max_k : GEMM_KC);
	size_t kall = (size_t)job->max_k;
	struct gemm_slot *sl = NULL;
	for (int i = 0; !sl; i = (i + 1) % job->ws->n)
		if (!atomic_exchange(&job->ws->slot[i].busy, 1))
			sl = &job->ws->slot[i];
	float *ap = sl->ap = ensure(sl->ap, &sl->ap_n, GEMM_MC * kc);
	float *bp = sl->bp = ensure(sl->bp, &sl->bp_n, (GEMM_NC + 32) * kall);
	int p = 0;
	const struct cg_gemm *last_g = NULL;
	int64_t last_j0 = -1;
	for (int64_t t = lo; t < hi; t++) {
		while (t >= job->first_tile[p + 1])
			p++;
		const struct cg_gemm *g = &job->g[p];
		int64_t local = t - job->first_tile[p], tm = tiles_m(g);
		int64_t i0 = (local % tm) * GEMM_MC, j0 = (local / tm) * GEMM_NC;
		int64_t i1 = i0 + GEMM_MC < g->M ? i0 + GEMM_MC : g->M;
		int64_t j1 = j0 + GEMM_NC < g->N ? j0 + GEMM_NC : g->N;
		job->block(g, i0, i1, j0, j1, ap, bp, g == last_g && j0 == last_j0);
		last_g = g;
		last_j0 = j0;
	}
	atomic_store(&sl->busy, 0);
}

void cg_gemm_run(struct rt_pool *pool, struct cg_gemm_ws *ws, const struct cg_gemm *g, int n)
{
	static block_fn block;
	if (!block)
		block = pick_block();
	int threads = pool ? rt_pool_threads(pool) : 1;
	struct cg_gemm_ws *own = ws ? NULL : cg_gemm_ws_new(threads);
	struct gemm_job job = { g, n, rt_malloc(sizeof(int64_t) * (size_t)(n + 1)), block, 1,
				ws ? ws : own };
	RT_ASSERT(job.ws->n >= threads);
	job.first_tile[0] = 0;
	for (int i = 0; i < n; i++) {
		int64_t t = 0;
		if (g[i].M > 0 && g[i].N > 0) {
			if (g[i].K == 0) {
				if (!g[i].accumulate)
					for (int64_t r = 0; r < g[i].M; r++)
						memset(g[i].c + r * g[i].ldc, 0,
						       sizeof(float) * (size_t)g[i].N);
			} else {
				t = tiles_m(&g[i]) * tiles_n(&g[i]);
			}
		}
		job.first_tile[i + 1] = job.first_tile[i] + t;
		if (t && g[i].K > job.max_k)
			job.max_k = g[i].K;
	}
	int64_t total = job.first_tile[n];
	/* a few tiles per chunk when there are many, one when there are few */
	int64_t grain = total / (4 * threads) > 1 ? total / (4 * threads) : 1;
	if (pool)
		rt_pool_run(pool, total, grain, run_tiles, &job);
	else if (total)
		run_tiles(&job, 0, total);
	free(job.first_tile);
	cg_gemm_ws_free(own);
}

void cg_gemm_ref(const struct cg_gemm *g)
{
	for (int64_t i = 0; i < g->M; i++)
		for (int64_t j = 0; j < g->N; j++) {
			double s = 0;
			for (int64_t k = 0; k < g->K; k++)
				s += (double)g->a[i * g->rsa + k * g->csa] *
				     g->b[k * g->rsb + j * g->csb];
			float *c = &g->c[i * g->ldc + j];
			*c = (float)(g->accumulate ? *c + s : s);
		}
}
