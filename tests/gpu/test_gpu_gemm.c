/* test_gpu_gemm.c - every GEMM mode of runtime/cuda/gemm.c against a float64 CPU
 * product.  The reference multiplies the inputs exactly as the GPU sees them (the
 * bf16 values; the fp8 codes times their scales), so what remains is fp32
 * accumulation and the bf16 rounding of D: a relative norm error of about 1e-3.
 * Tolerances: bf16 1e-2, fp8 modes 5e-3 against the dequantised product.  Inputs
 * vary in magnitude from one 128-block to the next (2^-4 .. 2^4), so a block scale
 * applied to the wrong block shows up as an error of order 1.  D is poisoned with
 * NaN before each product: an element left unwritten fails the test.  One case per
 * mode moves A and D 16 bytes off the arena's 256-byte alignment.  The error of
 * the quantisation itself (against the product of the unquantised inputs) is
 * printed for reference and must stay under 0.1. */
#include "check.h"
#include "gpu_test.h"
#include "runtime/rt.h"

struct case_ {
	enum rt_gemm_mode mode;
	int m, n, k;
	int offset; /* bytes added to A's and D's addresses: a less aligned plan */
};

static double mag(uint64_t *s) { return ldexp(1.0, (int)floor(test_rand(s) * 4.5)); }

/* x: rows x cols; magnitudes per (row block of RB, 128-column block) */
static void make(double *x, int rows, int cols, int rb, uint64_t *s)
{
	int nrb = (rows + rb - 1) / rb, ncb = (cols + 127) / 128;
	double *m = rt_malloc(sizeof *m * (size_t)nrb * (size_t)ncb);
	for (int i = 0; i < nrb * ncb; i++)
		m[i] = mag(s);
	for (int r = 0; r < rows; r++)
		for (int c = 0; c < cols; c++)
			x[(size_t)r * cols + c] = test_rand(s) * m[(r / rb) * ncb + c / 128];
	free(m);
}

/* Quantise rows x cols to fp8 with one scale per (BR x 128) block; scales go to
 * SC at index sc_index(row block, k block).  deq gets the values the GPU sees. */
static void quant(const double *x, int rows, int cols, int br, uint8_t *q, float *sc,
		  double *deq, int scale_mode, int m_for_index)
{
	int kb_n = rt_gemm_block_scale_stride(cols);
	int per_tensor = scale_mode == RT_GEMM_FP8;
	int bw = per_tensor ? cols : 128, bh = per_tensor ? rows : br;
	for (int r0 = 0; r0 < rows; r0 += bh)
		for (int c0 = 0; c0 < cols; c0 += bw) {
			double amax = 0;
			for (int r = r0; r < r0 + bh && r < rows; r++)
				for (int c = c0; c < c0 + bw && c < cols; c++)
					amax = fmax(amax, fabs(x[(size_t)r * cols + c]));
			float s = amax > 0 ? (float)(amax / 448.0) : 1.0f;
			if (per_tensor)
				sc[0] = s;
			else if (br == 1) /* 1x128 tiles of A: [K/128][M] */
				sc[(size_t)(c0 / 128) * m_for_index + r0] = s;
			else /* 128x128 blocks of B: [N/128][stride], stride K/128 rounded up to 4 */
				sc[(size_t)(r0 / br) * kb_n + c0 / 128] = s;
			for (int r = r0; r < r0 + bh && r < rows; r++)
				for (int c = c0; c < c0 + bw && c < cols; c++) {
					size_t i = (size_t)r * cols + c;
					q[i] = f32_to_e4m3((float)(x[i] / s));
					deq[i] = (double)e4m3_to_f32(q[i]) * s;
				}
		}
}

static double rel_err(const double *ref, const float *got, size_t n, int *nonfinite)
{
	double num = 0, den = 0;
	*nonfinite = 0;
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(got[i]))
			++*nonfinite;
		num += (got[i] - ref[i]) * (got[i] - ref[i]);
		den += ref[i] * ref[i];
	}
	return sqrt(num / den);
}

static void matmul(const double *a, const double *b, double *d, int M, int N, int K)
{
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			double s = 0;
			for (int k = 0; k < K; k++)
				s += a[(size_t)m * K + k] * b[(size_t)n * K + k];
			d[(size_t)m * N + n] = s;
		}
}

static void run_case(struct rt_gpu *g, struct rt_gemm *ctx, const struct case_ *c, uint64_t seed)
{
	int M = c->m, N = c->n, K = c->k;
	size_t na = (size_t)M * K, nb = (size_t)N * K, nd = (size_t)M * N;
	uint64_t s = seed;
	double *xa = rt_malloc(8 * na), *xb = rt_malloc(8 * nb);
	double *da = rt_malloc(8 * na), *db = rt_malloc(8 * nb);
	double *ref = rt_malloc(8 * nd), *exact = rt_malloc(8 * nd);
	make(xa, M, K, 1, &s);
	make(xb, N, K, 128, &s);
	size_t esz = c->mode == RT_GEMM_BF16 ? 2 : 1;
	unsigned char *ha = rt_malloc(esz * na), *hb = rt_malloc(esz * nb);
	size_t nsa = 1, nsb = 1;
	if (c->mode == RT_GEMM_FP8_BLOCK) {
		nsa = (size_t)(K / 128) * M;
		nsb = (size_t)((N + 127) / 128) * (size_t)rt_gemm_block_scale_stride(K);
	}
	float *sa = rt_calloc(nsa, 4), *sb = rt_calloc(nsb, 4);
	for (size_t i = 0; i < nsb; i++)
		sb[i] = NAN; /* the row padding must never be read */
	if (c->mode == RT_GEMM_BF16) {
		uint16_t *a16 = (uint16_t *)ha, *b16 = (uint16_t *)hb;
		for (size_t i = 0; i < na; i++)
			da[i] = bf16_to_f32(a16[i] = f32_to_bf16((float)xa[i]));
		for (size_t i = 0; i < nb; i++)
			db[i] = bf16_to_f32(b16[i] = f32_to_bf16((float)xb[i]));
	} else {
		quant(xa, M, K, 1, ha, sa, da, c->mode, M);
		quant(xb, N, K, 128, hb, sb, db, c->mode, M);
	}
	matmul(da, db, ref, M, N, K);
	matmul(xa, xb, exact, M, N, K);

	size_t mark = rt_gpu_arena_mark(g);
	struct rt_gemm_args a = { .mode = c->mode, .m = M, .n = N, .k = K };
	a.a = rt_gpu_alloc(g, esz * na + 256, 256);
	a.b = rt_gpu_alloc(g, esz * nb, 256);
	a.d = rt_gpu_alloc(g, 2 * nd + 256, 256);
	REQUIRE(a.a && a.b && a.d);
	a.a += (rt_dptr)c->offset;
	a.d += (rt_dptr)c->offset;
	REQUIRE(!rt_gpu_copy_to_device(g, a.a, ha, esz * na, RT_STREAM_COPY));
	REQUIRE(!rt_gpu_copy_to_device(g, a.b, hb, esz * nb, RT_STREAM_COPY));
	if (c->mode != RT_GEMM_BF16) {
		a.a_scale = rt_gpu_alloc(g, 4 * nsa, 256);
		a.b_scale = rt_gpu_alloc(g, 4 * nsb, 256);
		REQUIRE(a.a_scale && a.b_scale);
		REQUIRE(!rt_gpu_copy_to_device(g, a.a_scale, sa, 4 * nsa, RT_STREAM_COPY));
		REQUIRE(!rt_gpu_copy_to_device(g, a.b_scale, sb, 4 * nsb, RT_STREAM_COPY));
	}
	uint16_t *hd = rt_malloc(2 * nd);
	float *got = rt_malloc(4 * nd);
	/* twice: the second product reuses the cached plan */
	for (int rep = 0; rep < 2; rep++) {
		REQUIRE(!rt_gpu_memset(g, a.d, 0xff, 2 * nd, RT_STREAM_COPY)); /* NaN */
		REQUIRE(!rt_gpu_stream_wait(g, RT_STREAM_COMPUTE, RT_STREAM_COPY));
		int rc = rt_gemm_run(ctx, &a, RT_STREAM_COMPUTE);
		CHECKF(rc == 0, "%s M=%d N=%d K=%d: rt_gemm_run failed", rt_gemm_mode_name(c->mode), M,
		       N, K);
		if (rc)
			break;
		REQUIRE(!rt_gpu_stream_wait(g, RT_STREAM_COPY, RT_STREAM_COMPUTE));
		REQUIRE(!rt_gpu_copy_to_host(g, hd, a.d, 2 * nd, RT_STREAM_COPY));
		REQUIRE(!rt_gpu_sync(g, RT_STREAM_COPY));
		for (size_t i = 0; i < nd; i++)
			got[i] = bf16_to_f32(hd[i]);
		int nonfinite;
		double err = rel_err(ref, got, nd, &nonfinite), q = 0;
		int qbad;
		for (size_t i = 0; i < nd; i++)
			got[i] = (float)ref[i];
		q = rel_err(exact, got, nd, &qbad);
		double tol = c->mode == RT_GEMM_BF16 ? 1e-2 : 5e-3;
		if (rep == 0)
			printf("%-9s M=%-4d N=%-4d K=%-5d%s error %.2e (bound %.0e), quantisation %.2e\n",
			       rt_gemm_mode_name(c->mode), M, N, K, c->offset ? " +16 B" : "", err,
			       tol, q);
		CHECKF(nonfinite == 0, "%s: %d elements not finite (unwritten?)",
		       rt_gemm_mode_name(c->mode), nonfinite);
		CHECKF(err < tol, "%s M=%d N=%d K=%d: error %.3e over %.0e", rt_gemm_mode_name(c->mode),
		       M, N, K, err, tol);
		CHECKF(q < 0.1, "quantisation error %.3e", q);
	}
	rt_gpu_arena_reset(g, mark);
	free(xa), free(xb), free(da), free(db), free(ref), free(exact);
	free(ha), free(hb), free(sa), free(sb), free(hd), free(got);
}

int main(void)
{
	gpu_test_require("test_gpu_gemm");
	struct rt_gpu *g = rt_gpu_open(0, 160u << 20);
	REQUIRE(g);
	struct rt_gemm *ctx = rt_gemm_new(g, 32u << 20);
	REQUIRE(ctx);
	const struct rt_gpu_info *in = rt_gpu_info(g);
	/* the last two: K/128 = 3 (padded scale rows), N = 320 (a partial weight block) */
	static const int shapes[][3] = {
		{ 256, 384, 512 }, { 128, 256, 1024 }, { 192, 256, 384 }, { 256, 320, 512 },
	};
	enum { NSHAPES = sizeof shapes / sizeof shapes[0] };
	enum rt_gemm_mode modes[] = { RT_GEMM_BF16, RT_GEMM_FP8, RT_GEMM_FP8_BLOCK };
	uint64_t seed = 12345;
	for (int mi = 0; mi < 3; mi++) {
		if (modes[mi] == RT_GEMM_FP8_BLOCK && in->cc_major != 9) {
			printf("fp8-block: skipped: needs sm_90, this is sm_%d%d\n", in->cc_major,
			       in->cc_minor);
			continue;
		}
		if (modes[mi] == RT_GEMM_FP8 && in->cc_major * 10 + in->cc_minor < 89) {
			printf("fp8: skipped: needs sm_89 or later\n");
			continue;
		}
		for (int si = 0; si < NSHAPES; si++) {
			struct case_ c = { modes[mi], shapes[si][0], shapes[si][1], shapes[si][2], 0 };
			run_case(g, ctx, &c, seed++);
		}
		/* A and D only 16-byte aligned: the plan must pick an algorithm that copes */
		struct case_ c = { modes[mi], shapes[0][0], shapes[0][1], shapes[0][2], 16 };
		run_case(g, ctx, &c, seed++);
	}
	/* bad arguments are refused with a message, not sent to cuBLASLt */
	struct rt_gemm_args bad = { .mode = RT_GEMM_FP8_BLOCK, .m = 128, .n = 128, .k = 96, .a = 256,
				    .b = 256, .d = 256, .a_scale = 256, .b_scale = 256 };
	CHECK(rt_gemm_check_args(&bad) != NULL);
	CHECK(rt_gemm_run(ctx, &bad, RT_STREAM_COMPUTE) == -1);
	/* bf16 operands need their element's alignment, fp8 ones 16 bytes */
	struct rt_gemm_args misaligned = { .mode = RT_GEMM_BF16, .m = 128, .n = 128, .k = 128,
					   .a = 256 + 1, .b = 256, .d = 256 };
	CHECK(rt_gemm_check_args(&misaligned) != NULL);
	struct rt_gemm_args misaligned8 = { .mode = RT_GEMM_FP8, .m = 128, .n = 128, .k = 128,
					    .a = 256 + 8, .b = 256, .d = 256, .a_scale = 256,
					    .b_scale = 256 };
	CHECK(rt_gemm_check_args(&misaligned8) != NULL);
	rt_gemm_free(ctx);
	rt_gpu_close(g);
	return CHECK_DONE();
}
