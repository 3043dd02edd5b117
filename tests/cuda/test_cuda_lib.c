/* test_cuda_lib.c - the CUDA library kernels (codegen/cuda/lib.h) against float64 CPU
 * references computed here: attention forward and backward, grouped GEMM and its weight
 * gradient, in f32 and bf16 storage, then one timing line per kernel on a larger shape.
 * Needs a GPU: elsewhere it prints why and exits 77 (skipped).
 *
 * The references read exactly what the GPU reads: the inputs after rounding to the
 * storage type, and for the backward the forward's o and lse as the GPU stored them.
 * What remains is f32 arithmetic on the GPU (and, in bf16, the rounding of the outputs):
 *   f32: |gpu - ref| <= 1e-4 max|ref| per element.  The sums are at most a few hundred
 *     terms; f32 accumulation errs by about sqrt(n) 2^-24 of the terms' magnitudes
 *     (1e-6), the fast exponential by a few ulp; 1e-4 leaves two orders of room while
 *     a wrong mask, head or row (errors of order 1) cannot pass.  Relative to the
 *     largest element, as cancelling sums (dq, ds) have entries near zero whose own
 *     relative error means nothing.
 *   bf16: |gpu - ref| <= 2^-8 |ref| + 1e-4 max|ref|: the output's rounding to bf16 (8
 *     significant bits, round to nearest: at most 2^-8 relative) on top of the f32 bound;
 *     in attention, plus 2^-8 times the sum of the absolute terms of each output's
 *     product with p or ds: the tensor-core kernels round p and ds to bf16 (each within
 *     2^-8 of itself) before multiplying them with v, dout, k or q, as FlashAttention
 *     does (o: sum_j p_j |v_j| / l, at most max|v|; dq: scale sum_j |ds_j k_j|; ...).
 *   lse (f32 in both): |gpu - ref| <= 1e-4 max(1, |ref|).
 * Outputs are poisoned with NaN before each call, so an element left unwritten fails.
 * The bf16 attention backward runs on tensor cores where the head sizes allow (lib.c);
 * with SLUICE_CUDA_ATTN_BWD_MMA=0 on the SIMT kernels (ctest runs both). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/cuda/lib.h"
#include "gpu/gpu_test.h"
#include "runtime/rt.h"

static struct rt_gpu *g;
static struct cg_cuda_lib *lib;
static uint64_t seed = 12345;

static const char *dt_name(enum cg_cuda_dtype t) { return t == CG_CUDA_BF16 ? "bf16" : "f32"; }
static size_t dt_size(enum cg_cuda_dtype t) { return t == CG_CUDA_BF16 ? 2 : 4; }

static double *rnd(int64_t n, double amp)
{
	double *x = rt_malloc(sizeof *x * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++)
		x[i] = test_rand(&seed) * amp;
	return x;
}

static rt_dptr dalloc(int64_t bytes)
{
	rt_dptr p = rt_gpu_alloc(g, (size_t)(bytes ? bytes : 1), 256);
	REQUIRE(p);
	return p;
}

/* x rounded to the storage type in place, and copied to a new device buffer */
static rt_dptr upload(double *x, int64_t n, enum cg_cuda_dtype t)
{
	size_t es = dt_size(t);
	void *h = rt_malloc(es * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++) {
		if (t == CG_CUDA_BF16) {
			uint16_t b = f32_to_bf16((float)x[i]);
			((uint16_t *)h)[i] = b;
			x[i] = bf16_to_f32(b);
		} else {
			((float *)h)[i] = (float)x[i];
			x[i] = (float)x[i];
		}
	}
	rt_dptr d = dalloc((int64_t)es * n);
	REQUIRE(rt_gpu_copy_to_device(g, d, h, es * (size_t)n, RT_STREAM_COMPUTE) == 0);
	REQUIRE(rt_gpu_sync(g, RT_STREAM_COMPUTE) == 0);
	free(h);
	return d;
}

static rt_dptr poisoned(int64_t bytes)
{
	rt_dptr d = dalloc(bytes);
	REQUIRE(rt_gpu_memset(g, d, 0xff, (size_t)bytes, RT_STREAM_COMPUTE) == 0);
	return d;
}

static double *download(rt_dptr d, int64_t n, enum cg_cuda_dtype t)
{
	size_t es = dt_size(t);
	void *h = rt_malloc(es * (size_t)(n ? n : 1));
	REQUIRE(rt_gpu_copy_to_host(g, h, d, es * (size_t)n, RT_STREAM_COMPUTE) == 0);
	REQUIRE(rt_gpu_sync(g, RT_STREAM_COMPUTE) == 0);
	double *x = rt_malloc(sizeof *x * (size_t)(n ? n : 1));
	for (int64_t i = 0; i < n; i++)
		x[i] = t == CG_CUDA_BF16 ? bf16_to_f32(((uint16_t *)h)[i]) : ((float *)h)[i];
	free(h);
	return x;
}

/* the error as a fraction of the tolerance (<= 1 passes; NaN fails), and the largest
 * error relative to max|ref| in *rel */
static double compare(const double *got, const double *ref, int64_t n, enum cg_cuda_dtype t,
		      const double *budget, double *rel)
{
	double mx = 0, worst = 0, err = 0;
	*rel = INFINITY;
	for (int64_t i = 0; i < n; i++)
		mx = fmax(mx, fabs(ref[i]));
	double floor_ = 1e-4 * (mx > 0 ? mx : 1);
	for (int64_t i = 0; i < n; i++) {
		double d = fabs(got[i] - ref[i]);
		double tol = floor_;
		if (t == CG_CUDA_BF16)
			tol += ldexp(fabs(ref[i]) + (budget ? budget[i] : 0), -8);
		if (!(d <= tol * 1e30)) /* NaN */
			return INFINITY;
		worst = fmax(worst, d / tol);
		err = fmax(err, d);
	}
	*rel = err / (mx > 0 ? mx : 1);
	return worst;
}

/* --- attention ------------------------------------------------------------------------ */

struct attn_ref {
	const struct cg_cuda_attn *a;
	const double *q, *k, *v;
};

static double dotp(const double *x, const double *y, int64_t n)
{
	double s = 0;
	for (int64_t i = 0; i < n; i++)
		s += x[i] * y[i];
	return s;
}

/* o and lse; bo[i]: sum_j p_j |v_j| / l, what rounding each p to bf16 can move o by,
 * over 2^-8 */
static void ref_fwd(const struct attn_ref *r, double *o, double *lse, double *bo)
{
	const struct cg_cuda_attn *a = r->a;
	int64_t S = a->S, H = a->H, Hkv = a->Hkv, Dk = a->Dk, Dv = a->Dv, G = H / Hkv;
	double *s = rt_malloc(sizeof *s * (size_t)S);
	for (int64_t b = 0; b < a->B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				const double *qi = r->q + ((b * S + i) * H + h) * Dk;
				int64_t n = a->causal ? i + 1 : S;
				double m = -INFINITY, l = 0;
				for (int64_t j = 0; j < n; j++) {
					s[j] = a->scale * dotp(qi, r->k + ((b * S + j) * Hkv + h / G) * Dk, Dk);
					m = fmax(m, s[j]);
				}
				double *oi = o + ((b * S + i) * H + h) * Dv;
				double *bi = bo + ((b * S + i) * H + h) * Dv;
				memset(oi, 0, sizeof *oi * (size_t)Dv);
				memset(bi, 0, sizeof *bi * (size_t)Dv);
				for (int64_t j = 0; j < n; j++) {
					double p = exp(s[j] - m);
					l += p;
					const double *vj = r->v + ((b * S + j) * Hkv + h / G) * Dv;
					for (int64_t c = 0; c < Dv; c++) {
						oi[c] += p * vj[c];
						bi[c] += p * fabs(vj[c]);
					}
				}
				for (int64_t c = 0; c < Dv; c++) {
					oi[c] /= l;
					bi[c] /= l;
				}
				lse[(b * H + h) * S + i] = m + log(l);
			}
	free(s);
}

/* dq, dk, dv from the given o and lse (as the GPU stored them) and dout; bq, bk, bv:
 * the same sums over |terms| with p and ds rounded (what rounding p and ds to bf16 can
 * move them by, over 2^-8) */
static void ref_bwd(const struct attn_ref *r, const double *o, const double *lse,
		    const double *dout, double *dq, double *dk, double *dv, double *bq,
		    double *bk, double *bv)
{
	const struct cg_cuda_attn *a = r->a;
	int64_t S = a->S, H = a->H, Hkv = a->Hkv, Dk = a->Dk, Dv = a->Dv, G = H / Hkv;
	memset(dq, 0, sizeof *dq * (size_t)(a->B * S * H * Dk));
	memset(dk, 0, sizeof *dk * (size_t)(a->B * S * Hkv * Dk));
	memset(dv, 0, sizeof *dv * (size_t)(a->B * S * Hkv * Dv));
	memset(bq, 0, sizeof *bq * (size_t)(a->B * S * H * Dk));
	memset(bk, 0, sizeof *bk * (size_t)(a->B * S * Hkv * Dk));
	memset(bv, 0, sizeof *bv * (size_t)(a->B * S * Hkv * Dv));
	for (int64_t b = 0; b < a->B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				int64_t qo = (b * S + i) * H + h;
				const double *qi = r->q + qo * Dk, *gi = dout + qo * Dv;
				double D = dotp(gi, o + qo * Dv, Dv), L = lse[(b * H + h) * S + i];
				int64_t n = a->causal ? i + 1 : S;
				for (int64_t j = 0; j < n; j++) {
					int64_t ko = (b * S + j) * Hkv + h / G;
					const double *kj = r->k + ko * Dk, *vj = r->v + ko * Dv;
					double p = exp(a->scale * dotp(qi, kj, Dk) - L);
					double ds = p * (dotp(gi, vj, Dv) - D);
					for (int64_t c = 0; c < Dk; c++) {
						dq[qo * Dk + c] += a->scale * ds * kj[c];
						dk[ko * Dk + c] += a->scale * ds * qi[c];
						bq[qo * Dk + c] += a->scale * fabs(ds * kj[c]);
						bk[ko * Dk + c] += a->scale * fabs(ds * qi[c]);
					}
					for (int64_t c = 0; c < Dv; c++) {
						dv[ko * Dv + c] += p * gi[c];
						bv[ko * Dv + c] += p * fabs(gi[c]);
					}
				}
			}
}

static void report(const char *what, const char *name, const double *got, const double *ref,
		   int64_t n, enum cg_cuda_dtype t, const double *budget)
{
	double rel;
	double w = compare(got, ref, n, t, budget, &rel);
	printf("  %-4s max|err|/max|ref| %.2e (%.2f of the tolerance)\n", name, rel, w);
	CHECKF(w <= 1, "%s: %s off by %.3g of the tolerance", what, name, w);
}

static void attn_case(int64_t B, int64_t S, int64_t H, int64_t Hkv, int64_t Dk, int64_t Dv,
		      int causal, enum cg_cuda_dtype t)
{
	size_t mark = rt_gpu_arena_mark(g);
	struct cg_cuda_attn a = { B, S, H, Hkv, Dk, Dv, 1 / sqrt((double)Dk), causal, t };
	char what[160];
	snprintf(what, sizeof what, "attention %s B=%lld S=%lld H=%lld Hkv=%lld Dk=%lld Dv=%lld%s",
		 dt_name(t), (long long)B, (long long)S, (long long)H, (long long)Hkv,
		 (long long)Dk, (long long)Dv, causal ? " causal" : "");
	printf("%s\n", what);
	int64_t nq = B * S * H * Dk, nk = B * S * Hkv * Dk, nv = B * S * Hkv * Dv;
	int64_t no = B * S * H * Dv, nl = B * H * S;
	/* q larger than k: peaked rows, so that a wrong mask or maximum shows */
	double *q = rnd(nq, 3), *k = rnd(nk, 1), *v = rnd(nv, 1), *dout = rnd(no, 1);
	rt_dptr dq_ = upload(q, nq, t), dk_ = upload(k, nk, t), dv_ = upload(v, nv, t);
	rt_dptr dg = upload(dout, no, t);
	rt_dptr o = poisoned(no * (int64_t)dt_size(t)), lse = poisoned(nl * 4);
	REQUIRE(cg_cuda_attention_fwd(lib, &a, dq_, dk_, dv_, o, lse, RT_STREAM_COMPUTE) == 0);
	double *go = download(o, no, t), *gl = download(lse, nl, CG_CUDA_F32);
	struct attn_ref r = { &a, q, k, v };
	double *ro = rt_malloc(sizeof *ro * (size_t)no), *rl = rt_malloc(sizeof *rl * (size_t)nl);
	double *bo = rt_malloc(sizeof *bo * (size_t)no);
	ref_fwd(&r, ro, rl, bo);
	report(what, "o", go, ro, no, t, bo);
	double lerr = 0;
	for (int64_t i = 0; i < nl; i++) {
		double d = fabs(gl[i] - rl[i]) / fmax(1, fabs(rl[i]));
		lerr = d == d ? fmax(lerr, d) : INFINITY;
	}
	printf("  lse  max|err|/max(1,|ref|) %.2e\n", lerr);
	CHECKF(lerr <= 1e-4, "%s: lse off by %.3g", what, lerr);

	rt_dptr gq = poisoned(nq * (int64_t)dt_size(t)), gk = poisoned(nk * (int64_t)dt_size(t));
	rt_dptr gv = poisoned(nv * (int64_t)dt_size(t));
	rt_dptr scratch = poisoned(cg_cuda_attention_bwd_scratch(&a));
	REQUIRE(cg_cuda_attention_bwd(lib, &a, dq_, dk_, dv_, o, lse, dg, gq, gk, gv, scratch,
				      RT_STREAM_COMPUTE) == 0);
	double *hq = download(gq, nq, t), *hk = download(gk, nk, t), *hv = download(gv, nv, t);
	double *rq = rt_malloc(sizeof *rq * (size_t)nq), *rk = rt_malloc(sizeof *rk * (size_t)nk);
	double *rv = rt_malloc(sizeof *rv * (size_t)nv);
	double *bq = rt_malloc(sizeof *bq * (size_t)nq), *bk = rt_malloc(sizeof *bk * (size_t)nk);
	double *bv = rt_malloc(sizeof *bv * (size_t)nv);
	ref_bwd(&r, go, gl, dout, rq, rk, rv, bq, bk, bv);
	report(what, "dq", hq, rq, nq, t, bq);
	report(what, "dk", hk, rk, nk, t, bk);
	report(what, "dv", hv, rv, nv, t, bv);
	free(q), free(k), free(v), free(dout), free(go), free(gl), free(ro), free(rl);
	free(hq), free(hk), free(hv), free(rq), free(rk), free(rv);
	free(bo), free(bq), free(bk), free(bv);
	rt_gpu_arena_reset(g, mark);
}

/* --- grouped GEMM ------------------------------------------------------------------------ */

/* the CPU backend's expert_rows: clamped into [0, R], non-decreasing */
static void expert_rows(const int64_t *off, int64_t E, int64_t R, int64_t *o)
{
	for (int64_t i = 0; i <= E; i++) {
		int64_t v = off[i] < 0 ? 0 : off[i] > R ? R : off[i];
		o[i] = i && v < o[i - 1] ? o[i - 1] : v;
	}
}

static rt_dptr upload_offsets(const int64_t *off, int64_t E, int i64)
{
	size_t n = (size_t)(E + 1), es = i64 ? 8 : 4;
	void *h = rt_malloc(n * es);
	for (size_t i = 0; i < n; i++) {
		if (i64)
			((int64_t *)h)[i] = off[i];
		else
			((int32_t *)h)[i] = (int32_t)off[i];
	}
	rt_dptr d = dalloc((int64_t)(n * es));
	REQUIRE(rt_gpu_copy_to_device(g, d, h, n * es, RT_STREAM_COMPUTE) == 0);
	REQUIRE(rt_gpu_sync(g, RT_STREAM_COMPUTE) == 0);
	free(h);
	return d;
}

static void grouped_case(int64_t R, int64_t K, int64_t N, int64_t E, const int64_t *off,
			 int tb, int i64, enum cg_cuda_dtype t)
{
	size_t mark = rt_gpu_arena_mark(g);
	struct cg_cuda_grouped a = { R, K, N, E, tb, i64, t, 0, 0 };
	char what[200];
	int n = snprintf(what, sizeof what, "grouped %s R=%lld K=%lld N=%lld E=%lld%s %s offsets",
			 dt_name(t), (long long)R, (long long)K, (long long)N, (long long)E,
			 tb ? " trans_b" : "", i64 ? "i64" : "i32");
	for (int64_t e = 0; e <= E && n < (int)sizeof what - 8; e++)
		n += snprintf(what + n, sizeof what - (size_t)n, " %lld", (long long)off[e]);
	printf("%s\n", what);
	int64_t *o = rt_malloc(sizeof *o * (size_t)(E + 1));
	expert_rows(off, E, R, o);
	double *x = rnd(R * K, 1), *w = rnd(E * K * N, 1), *dy = rnd(R * N, 1);
	rt_dptr dx = upload(x, R * K, t), dw_ = upload(w, E * K * N, t), ddy = upload(dy, R * N, t);
	rt_dptr doff = upload_offsets(off, E, i64);
	rt_dptr y = poisoned(R * N * (int64_t)dt_size(t));
	REQUIRE(cg_cuda_grouped(lib, &a, dx, dw_, doff, y, RT_STREAM_COMPUTE) == 0);
	double *gy = download(y, R * N, t);
	double *ry = rt_calloc((size_t)(R * N + 1), sizeof *ry);
	for (int64_t e = 0; e < E; e++)
		for (int64_t r = o[e]; r < o[e + 1]; r++)
			for (int64_t c = 0; c < N; c++) {
				double s = 0;
				for (int64_t kk = 0; kk < K; kk++)
					s += x[r * K + kk] *
					     (tb ? w[(e * N + c) * K + kk] : w[(e * K + kk) * N + c]);
				ry[r * N + c] = s;
			}
	report(what, "y", gy, ry, R * N, t, NULL);

	rt_dptr gw = poisoned(E * K * N * (int64_t)dt_size(t));
	REQUIRE(cg_cuda_wgrad(lib, &a, dx, ddy, doff, gw, RT_STREAM_COMPUTE) == 0);
	double *hw = download(gw, E * K * N, t);
	double *rw = rt_calloc((size_t)(E * K * N + 1), sizeof *rw);
	for (int64_t e = 0; e < E; e++)
		for (int64_t r = o[e]; r < o[e + 1]; r++)
			for (int64_t kk = 0; kk < K; kk++)
				for (int64_t c = 0; c < N; c++)
					rw[tb ? (e * N + c) * K + kk : (e * K + kk) * N + c] +=
						x[r * K + kk] * dy[r * N + c];
	report(what, "dw", hw, rw, E * K * N, t, NULL);
	free(o), free(x), free(w), free(dy), free(gy), free(ry), free(hw), free(rw);
	rt_gpu_arena_reset(g, mark);
}

/* --- timing ---------------------------------------------------------------------------- */

struct timer {
	struct rt_gpu_event *t0, *t1;
};

#define TIME(label, flops, call)                                                          \
	do {                                                                              \
		REQUIRE((call) == 0); /* warm-up */                                       \
		REQUIRE(rt_gpu_event_record(tm.t0, RT_STREAM_COMPUTE) == 0);              \
		for (int rep_ = 0; rep_ < reps; rep_++)                                   \
			REQUIRE((call) == 0);                                             \
		REQUIRE(rt_gpu_event_record(tm.t1, RT_STREAM_COMPUTE) == 0);              \
		double ms_ = rt_gpu_event_ms(tm.t0, tm.t1) / reps;                        \
		printf("timing: %-58s %8.3f ms %7.2f TFLOP/s\n", label, ms_,               \
		       (flops) / (ms_ * 1e-3) / 1e12);                                    \
	} while (0)

static void timings(enum cg_cuda_dtype t)
{
	size_t mark = rt_gpu_arena_mark(g);
	struct timer tm = { rt_gpu_event_new(g), rt_gpu_event_new(g) };
	REQUIRE(tm.t0 && tm.t1);
	int reps = 5;
	int64_t es = (int64_t)dt_size(t);
	char label[120];
	for (int shape = 0; shape < 2; shape++) {
		int64_t Dk = shape ? 192 : 128, Dv = 128;
		struct cg_cuda_attn a = { 4, 2048, 16, 16, Dk, Dv, 1 / sqrt((double)Dk), 1, t };
		int64_t n = a.B * a.S * a.H * Dk, nv = a.B * a.S * a.H * Dv;
		rt_dptr q = dalloc(n * es), k = dalloc(n * es), v = dalloc(nv * es);
		rt_dptr o = dalloc(nv * es), dout = dalloc(nv * es), dq = dalloc(n * es);
		rt_dptr dk = dalloc(n * es), dv = dalloc(nv * es), lse = dalloc(a.B * a.H * a.S * 4);
		rt_dptr scratch = dalloc(cg_cuda_attention_bwd_scratch(&a));
		double *h = rnd(n, 1);
		rt_dptr src = upload(h, n, t);
		free(h);
		REQUIRE(rt_gpu_copy(g, q, src, (size_t)(n * es), RT_STREAM_COMPUTE) == 0);
		REQUIRE(rt_gpu_copy(g, k, src, (size_t)(n * es), RT_STREAM_COMPUTE) == 0);
		REQUIRE(rt_gpu_copy(g, v, src, (size_t)(nv * es), RT_STREAM_COMPUTE) == 0);
		REQUIRE(rt_gpu_copy(g, dout, src, (size_t)(nv * es), RT_STREAM_COMPUTE) == 0);
		/* causal: half the S x S scores; forward q k^T and p v, backward s, dp, dv, dk, dq */
		double half = 2.0 * a.B * a.H * a.S * a.S * 0.5;
		double f = half * (double)(Dk + Dv), fb = half * (double)(3 * Dk + 2 * Dv);
		snprintf(label, sizeof label, "attention fwd %s B=4 S=2048 H=16 Dk=%d Dv=128 causal",
			 dt_name(t), (int)Dk);
		TIME(label, f, cg_cuda_attention_fwd(lib, &a, q, k, v, o, lse, RT_STREAM_COMPUTE));
		snprintf(label, sizeof label, "attention bwd %s B=4 S=2048 H=16 Dk=%d Dv=128 causal",
			 dt_name(t), (int)Dk);
		TIME(label, fb,
		     cg_cuda_attention_bwd(lib, &a, q, k, v, o, lse, dout, dq, dk, dv, scratch,
					   RT_STREAM_COMPUTE));
		rt_gpu_arena_reset(g, mark);
	}
	{
		struct cg_cuda_grouped a = { 16384, 2048, 1408, 8, 0, 0, t, 0, 0 };
		int64_t off[9];
		for (int e = 0; e <= 8; e++) /* unequal counts: 1/2 to 3/2 of the mean */
			off[e] = e == 8 ? a.R : e * a.R / 8 + (e % 2 ? 512 : 0);
		rt_dptr doff = upload_offsets(off, a.E, 0);
		double *hx = rnd(a.R * a.K, 1), *hw = rnd(a.E * a.K * a.N, 1);
		rt_dptr x = upload(hx, a.R * a.K, t), w = upload(hw, a.E * a.K * a.N, t);
		free(hx), free(hw);
		rt_dptr y = dalloc(a.R * a.N * es), dw = dalloc(a.E * a.K * a.N * es);
		double f = 2.0 * a.R * a.K * a.N;
		snprintf(label, sizeof label, "grouped %s E=8 R=16384 K=2048 N=1408", dt_name(t));
		TIME(label, f, cg_cuda_grouped(lib, &a, x, w, doff, y, RT_STREAM_COMPUTE));
		a.trans_b = 1;
		snprintf(label, sizeof label, "grouped %s E=8 R=16384 K=2048 N=1408 trans_b", dt_name(t));
		TIME(label, f, cg_cuda_grouped(lib, &a, x, w, doff, y, RT_STREAM_COMPUTE));
		a.trans_b = 0;
		snprintf(label, sizeof label, "wgrad %s E=8 R=16384 K=2048 N=1408", dt_name(t));
		TIME(label, f, cg_cuda_wgrad(lib, &a, x, y, doff, dw, RT_STREAM_COMPUTE));
		rt_gpu_arena_reset(g, mark);
	}
	rt_gpu_event_free(tm.t0);
	rt_gpu_event_free(tm.t1);
}

int main(void)
{
	gpu_test_require("test_cuda_lib");
	g = rt_gpu_open(0, (size_t)1 << 30);
	REQUIRE(g);
	lib = cg_cuda_lib_load(g);
	REQUIRE(lib);
	const char *bm = getenv("SLUICE_CUDA_ATTN_BWD_MMA");
	printf("bf16 attention backward: %s\n", !bm || atoi(bm) > 0
		? "tensor cores where the head sizes allow"
		: "SIMT ($SLUICE_CUDA_ATTN_BWD_MMA=0)");
	for (int ti = 0; ti < 2; ti++) {
		enum cg_cuda_dtype t = ti ? CG_CUDA_BF16 : CG_CUDA_F32;
		attn_case(1, 1, 1, 1, 8, 8, 1, t);
		attn_case(2, 100, 4, 4, 64, 64, 1, t);      /* S not a multiple of 64 */
		attn_case(1, 130, 4, 2, 128, 128, 0, t);    /* GQA, not causal */
		attn_case(2, 77, 4, 1, 192, 128, 1, t);     /* DeepSeek-V3's head sizes, one kv head */
		attn_case(1, 200, 6, 3, 40, 24, 1, t);      /* small odd head sizes */
		attn_case(1, 64, 2, 2, 256, 256, 0, t);     /* the largest heads */
		attn_case(1, 300, 2, 1, 128, 128, 1, t);    /* five key tiles */

		int64_t o1[] = { 0, 50, 50, 180, 260 };   /* an empty expert; rows 260.. none */
		grouped_case(300, 70, 90, 4, o1, 0, 0, t);
		grouped_case(300, 70, 90, 4, o1, 1, 1, t);
		int64_t o2[] = { -5, 10, 400, 300, 350 };  /* clamped, and made non-decreasing */
		grouped_case(300, 33, 65, 4, o2, 1, 0, t);
		int64_t o3[] = { 20, 20, 21, 150 };        /* rows before the first offset */
		grouped_case(150, 128, 64, 3, o3, 0, 1, t);
		int64_t o4[] = { 0, 1000 };
		grouped_case(1000, 257, 130, 1, o4, 0, 0, t);
		/* K and N multiples of 8: bf16 takes the tensor-core kernels */
		grouped_case(300, 72, 88, 4, o1, 0, 0, t);
		grouped_case(300, 72, 88, 4, o1, 1, 1, t);
		grouped_case(300, 40, 136, 4, o2, 1, 0, t);
		grouped_case(300, 40, 136, 4, o2, 0, 1, t);
		grouped_case(1000, 264, 136, 1, o4, 0, 0, t);
		int64_t o5[] = { 0, 100, 400, 512 };
		grouped_case(512, 1024, 256, 3, o5, 0, 0, t);
		grouped_case(512, 1024, 256, 3, o5, 1, 0, t);
	}
	if (!check_failures) {
		timings(CG_CUDA_BF16);
		timings(CG_CUDA_F32);
	}
	cg_cuda_lib_free(lib);
	rt_gpu_close(g);
	return CHECK_DONE();
}
