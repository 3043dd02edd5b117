/* attention.c - ATTENTION and ATTENTION_BWD on the CPU, flash-style: tiles of ATT_T
 * queries against tiles of ATT_T keys, the S x S scores never stored.
 *
 * Forward (FlashAttention's online softmax): one work item is (batch, head, query tile);
 * it walks the key tiles up to the diagonal, keeping per row the running maximum m and
 * sum l of exp(s - m), rescaling the output rows it accumulates in place whenever m
 * grows; at the end out = o / l and lse = m + log l.
 *
 * Backward (FlashAttention-2's, with p recomputed from q, k and lse): dq needs a sum
 * over keys and dk, dv a sum over queries (and over the query heads of a kv group), so
 * rather than atomics or per-thread copies there are two passes, each owning what it
 * writes:
 *   pass 1, per (batch, head, query tile): D = rowsum(dout * out) (kept in a scratch
 *     buffer for pass 2), then per key tile p = exp(s - lse), dp = dout v^T,
 *     ds = p (dp - D), dq += ds k;
 *   pass 2, per (batch, kv head, key tile): per query head of the group and query tile
 *     from the diagonal on, the same p and ds transposed, dv += p^T dout, dk += ds^T q.
 * The scores and dp are computed twice (once per pass): 7 tile products against the 5
 * of a single pass with atomic dq, in exchange for no synchronisation and results that
 * do not depend on the number of threads (every sum runs in a fixed order).
 *
 * The inner products are in attention_kernel.inc, compiled for AVX-512, AVX2+FMA and
 * plain SSE and picked once (SLUICE_GEMM_ISA forces one, as for the GEMM).  Accumulation
 * in f32; the exponentials of the tiles are a vector exp of about 2 ulp. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llvm_impl.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

enum { ATT_T = 64 };

struct att_isa {
	void (*scores)(int64_t n, const float *a, int64_t lda, int64_t D, const float *bt,
		       float alpha, float *s);
	void (*accum)(int64_t n, int64_t m, const float *w, const float *x, int64_t ldx,
		      int64_t D, float *c, int64_t ldc);
	float (*fwd_row)(const float *s, int64_t lim, float *m, float *p);
	void (*bwd_row)(const float *s, const float *dp, const float *lse, const float *delta,
			int per_col, int64_t lo, int64_t hi, float *p, float *ds);
};

/* 0, 1, ..., ATT_T - 1: the lane indices of the kernels' masks */
static _Alignas(64) const int att_iota[ATT_T] = {
	0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
	22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
	44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
};

#if defined(__x86_64__) && defined(__GNUC__)
#define AK_VL 16
#define AK_SFX avx512
#define AK_TARGET __attribute__((target("avx512f,fma")))
#include "attention_kernel.inc"
#undef AK_VL
#undef AK_SFX
#undef AK_TARGET
#define AK_VL 8
#define AK_SFX avx2
#define AK_TARGET __attribute__((target("avx2,fma")))
#include "attention_kernel.inc"
#undef AK_VL
#undef AK_SFX
#undef AK_TARGET
#endif
#define AK_VL 4
#define AK_SFX generic
#define AK_TARGET
#include "attention_kernel.inc"
#undef AK_VL
#undef AK_SFX
#undef AK_TARGET

static const struct att_isa *pick_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	const char *force = getenv("SLUICE_GEMM_ISA");
	if (force && !strcmp(force, "generic"))
		return &att_isa_generic;
	if (force && !strcmp(force, "avx2"))
		return &att_isa_avx2;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return &att_isa_avx512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return &att_isa_avx2;
#endif
	return &att_isa_generic;
}

struct att_job {
	const struct cg_attn *a;
	const struct att_isa *isa;
	int64_t tiles;  /* ATT_T tiles of the sequence */
	int64_t heads;  /* H for the forward and pass 1, Hkv for pass 2 */
};

/* per-chunk scratch: two ATT_T x ATT_T tiles and two packed, transposed tiles */
struct att_scratch {
	float *s, *p, *bt0, *bt1;
	void *mem;
};

static struct att_scratch scratch_new(const struct cg_attn *a)
{
	int64_t dmax = a->Dk > a->Dv ? a->Dk : a->Dv;
	size_t n = (size_t)(2 * ATT_T * ATT_T + (a->Dk + dmax) * ATT_T);
	struct att_scratch w;
	w.mem = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
	if (!w.mem)
		RT_BUG("out of memory for attention tiles");
	w.s = w.mem;
	w.p = w.s + ATT_T * ATT_T;
	w.bt0 = w.p + ATT_T * ATT_T;
	w.bt1 = w.bt0 + a->Dk * ATT_T;
	return w;
}

/* bt[d*ATT_T + t] = x[t*ld + d] for t < n, zero for n <= t < ATT_T; read along the rows
 * of x, where they are contiguous */
static void pack_t(float *restrict bt, const float *restrict x, int64_t ld, int64_t n,
		   int64_t D)
{
	for (int64_t t = 0; t < n; t++)
		for (int64_t d = 0; d < D; d++)
			bt[d * ATT_T + t] = x[t * ld + d];
	if (n < ATT_T)
		for (int64_t d = 0; d < D; d++)
			memset(bt + d * ATT_T + n, 0, sizeof *bt * (size_t)(ATT_T - n));
}

/* Items are numbered with the last tiles first: under the causal mask they hold the
 * most work, and the pool hands chunks out in order. */
static void item_of(const struct att_job *j, int64_t it, int64_t *b, int64_t *h, int64_t *t)
{
	*t = j->tiles - 1 - it % j->tiles;
	it /= j->tiles;
	*h = it % j->heads;
	*b = it / j->heads;
}

static void fwd_items(void *ctx, int64_t lo, int64_t hi)
{
	const struct att_job *job = ctx;
	const struct cg_attn *a = job->a;
	int64_t S = a->S, H = a->H, Hkv = a->Hkv, Dk = a->Dk, Dv = a->Dv, G = H / Hkv;
	int64_t ldq = H * Dk, ldk = Hkv * Dk, ldv = Hkv * Dv, ldo = H * Dv;
	struct att_scratch w = scratch_new(a);
	float m[ATT_T], l[ATT_T];
	for (int64_t it = lo; it < hi; it++) {
		int64_t b, h, qt;
		item_of(job, it, &b, &h, &qt);
		int64_t i0 = qt * ATT_T, nr = S - i0 < ATT_T ? S - i0 : ATT_T, kh = h / G;
		const float *q = a->q + (b * S + i0) * ldq + h * Dk;
		float *o = a->out + (b * S + i0) * ldo + h * Dv;
		for (int64_t r = 0; r < nr; r++) {
			memset(o + r * ldo, 0, sizeof *o * (size_t)Dv);
			m[r] = -INFINITY;
			l[r] = 0;
		}
		int64_t jend = a->causal ? i0 + nr : S;
		for (int64_t j0 = 0; j0 < jend; j0 += ATT_T) {
			int64_t nc = jend - j0 < ATT_T ? jend - j0 : ATT_T;
			pack_t(w.bt0, a->k + (b * S + j0) * ldk + kh * Dk, ldk, nc, Dk);
			job->isa->scores(nr, q, ldq, Dk, w.bt0, (float)a->scale, w.s);
			for (int64_t r = 0; r < nr; r++) {
				float *s = w.s + r * ATT_T, *p = w.p + r * ATT_T;
				int64_t lim = a->causal ? i0 + r - j0 + 1 : nc;
				lim = lim < nc ? lim : nc;
				if (lim <= 0) {
					memset(p, 0, sizeof *p * ATT_T);
					continue;
				}
				float mx = m[r];
				float sum = job->isa->fwd_row(s, lim, &mx, p);
				float corr = expf(m[r] - mx);
				l[r] = l[r] * corr + sum;
				m[r] = mx;
				if (corr != 1.0f)
					for (int64_t c = 0; c < Dv; c++)
						o[r * ldo + c] *= corr;
			}
			job->isa->accum(nr, nc, w.p, a->v + (b * S + j0) * ldv + kh * Dv, ldv, Dv, o,
					ldo);
		}
		for (int64_t r = 0; r < nr; r++) {
			float inv = 1.0f / l[r];
			for (int64_t c = 0; c < Dv; c++)
				o[r * ldo + c] *= inv;
			a->lse[(b * H + h) * S + i0 + r] = m[r] + logf(l[r]);
		}
	}
	free(w.mem);
}

/* pass 1: D and dq, per (batch, head, query tile) */
static void dq_items(void *ctx, int64_t lo, int64_t hi)
{
	const struct att_job *job = ctx;
	const struct cg_attn *a = job->a;
	int64_t S = a->S, H = a->H, Hkv = a->Hkv, Dk = a->Dk, Dv = a->Dv, G = H / Hkv;
	int64_t ldq = H * Dk, ldk = Hkv * Dk, ldv = Hkv * Dv, ldo = H * Dv;
	struct att_scratch w = scratch_new(a);
	for (int64_t it = lo; it < hi; it++) {
		int64_t b, h, qt;
		item_of(job, it, &b, &h, &qt);
		int64_t i0 = qt * ATT_T, nr = S - i0 < ATT_T ? S - i0 : ATT_T, kh = h / G;
		const float *q = a->q + (b * S + i0) * ldq + h * Dk;
		const float *dout = a->dout + (b * S + i0) * ldo + h * Dv;
		const float *out = a->o + (b * S + i0) * ldo + h * Dv;
		const float *lse = a->l + (b * H + h) * S + i0;
		float *delta = a->delta + (b * H + h) * S + i0;
		float *dq = a->dq + (b * S + i0) * ldq + h * Dk;
		for (int64_t r = 0; r < nr; r++) {
			float d = 0;
			for (int64_t c = 0; c < Dv; c++)
				d += dout[r * ldo + c] * out[r * ldo + c];
			delta[r] = d;
			memset(dq + r * ldq, 0, sizeof *dq * (size_t)Dk);
		}
		int64_t jend = a->causal ? i0 + nr : S;
		for (int64_t j0 = 0; j0 < jend; j0 += ATT_T) {
			int64_t nc = jend - j0 < ATT_T ? jend - j0 : ATT_T;
			const float *k = a->k + (b * S + j0) * ldk + kh * Dk;
			pack_t(w.bt0, k, ldk, nc, Dk);
			pack_t(w.bt1, a->v + (b * S + j0) * ldv + kh * Dv, ldv, nc, Dv);
			job->isa->scores(nr, q, ldq, Dk, w.bt0, (float)a->scale, w.s);
			job->isa->scores(nr, dout, ldo, Dv, w.bt1, 1.0f, w.p);
			for (int64_t r = 0; r < nr; r++) {
				float *s = w.s + r * ATT_T, *dp = w.p + r * ATT_T;
				int64_t lim = a->causal ? i0 + r - j0 + 1 : nc;
				lim = lim < nc ? lim : nc;
				job->isa->bwd_row(s, dp, lse + r, delta + r, 0, 0, lim, NULL, s);
			}
			job->isa->accum(nr, nc, w.s, k, ldk, Dk, dq, ldq);
		}
		for (int64_t r = 0; r < nr; r++)
			for (int64_t d = 0; d < Dk; d++)
				dq[r * ldq + d] *= (float)a->scale;
	}
	free(w.mem);
}

/* pass 2: dk and dv, per (batch, kv head, key tile) */
static void dkv_items(void *ctx, int64_t lo, int64_t hi)
{
	const struct att_job *job = ctx;
	const struct cg_attn *a = job->a;
	int64_t S = a->S, H = a->H, Hkv = a->Hkv, Dk = a->Dk, Dv = a->Dv, G = H / Hkv;
	int64_t ldq = H * Dk, ldk = Hkv * Dk, ldv = Hkv * Dv, ldo = H * Dv;
	struct att_scratch w = scratch_new(a);
	for (int64_t it = lo; it < hi; it++) {
		int64_t b, kh, kt;
		item_of(job, it, &b, &kh, &kt);
		/* the first tiles hold the most work here: turn the order round */
		kt = job->tiles - 1 - kt;
		int64_t j0 = kt * ATT_T, nc = S - j0 < ATT_T ? S - j0 : ATT_T;
		const float *k = a->k + (b * S + j0) * ldk + kh * Dk;
		const float *v = a->v + (b * S + j0) * ldv + kh * Dv;
		float *dk = a->dk + (b * S + j0) * ldk + kh * Dk;
		float *dv = a->dv + (b * S + j0) * ldv + kh * Dv;
		for (int64_t t = 0; t < nc; t++) {
			memset(dk + t * ldk, 0, sizeof *dk * (size_t)Dk);
			memset(dv + t * ldv, 0, sizeof *dv * (size_t)Dv);
		}
		for (int64_t h = kh * G; h < (kh + 1) * G; h++) {
			const float *lse = a->l + (b * H + h) * S;
			const float *delta = a->delta + (b * H + h) * S;
			for (int64_t i0 = a->causal ? j0 : 0; i0 < S; i0 += ATT_T) {
				int64_t nr = S - i0 < ATT_T ? S - i0 : ATT_T;
				const float *q = a->q + (b * S + i0) * ldq + h * Dk;
				const float *dout = a->dout + (b * S + i0) * ldo + h * Dv;
				float lv[ATT_T], dl[ATT_T];
				for (int64_t r = 0; r < ATT_T; r++) {
					lv[r] = r < nr ? lse[i0 + r] : 0.0f;
					dl[r] = r < nr ? delta[i0 + r] : 0.0f;
				}
				pack_t(w.bt0, q, ldq, nr, Dk);
				pack_t(w.bt1, dout, ldo, nr, Dv);
				job->isa->scores(nc, k, ldk, Dk, w.bt0, (float)a->scale, w.s);
				job->isa->scores(nc, v, ldv, Dv, w.bt1, 1.0f, w.p);
				for (int64_t t = 0; t < nc; t++) {
					float *s = w.s + t * ATT_T, *dp = w.p + t * ATT_T;
					/* query i0 + r sees key j0 + t when r >= j0 + t - i0 */
					int64_t first = a->causal ? j0 + t - i0 : 0;
					job->isa->bwd_row(s, dp, lv, dl, 1, first > 0 ? first : 0, nr, s, dp);
				}
				job->isa->accum(nc, nr, w.s, dout, ldo, Dv, dv, ldv);
				job->isa->accum(nc, nr, w.p, q, ldq, Dk, dk, ldk);
			}
		}
		for (int64_t t = 0; t < nc; t++)
			for (int64_t d = 0; d < Dk; d++)
				dk[t * ldk + d] *= (float)a->scale;
	}
	free(w.mem);
}

static const struct att_isa *isa(void)
{
	static const struct att_isa *picked;
	if (!picked)
		picked = pick_isa();
	return picked;
}

static void run(struct rt_pool *pool, struct att_job *job, int64_t n, rt_pool_fn fn)
{
	if (n <= 0)
		return;
	if (pool)
		rt_pool_run(pool, n, 1, fn, job);
	else
		fn(job, 0, n);
}

void cg_attention_fwd(struct rt_pool *pool, const struct cg_attn *a)
{
	struct att_job job = { a, isa(), (a->S + ATT_T - 1) / ATT_T, a->H };
	run(pool, &job, a->B * a->H * job.tiles, fwd_items);
}

void cg_attention_bwd(struct rt_pool *pool, const struct cg_attn *a)
{
	struct att_job job = { a, isa(), (a->S + ATT_T - 1) / ATT_T, a->H };
	run(pool, &job, a->B * a->H * job.tiles, dq_items);
	job.heads = a->Hkv;
	run(pool, &job, a->B * a->Hkv * job.tiles, dkv_items);
}
