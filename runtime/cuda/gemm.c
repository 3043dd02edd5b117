/* gemm.c - matrix products through cuBLASLt: bf16, fp8 E4M3 with a scale per tensor,
 * and fp8 with DeepSeek-V3's block scales (1x128 tiles of activations, 128x128
 * blocks of weights), accumulation in fp32, bf16 out; and f32, f16 and bf16 with f32
 * out, in any of the layouts of runtime/gpu.h (transposed operands, leading
 * dimensions, strided batches), which is what a compiled graph's matmuls need.
 *
 * sluice's matrices are row-major and cuBLASLt's column-major, so the product
 * D[M,N] = A[M,K] . B[N,K]^T is asked of cuBLASLt as the column-major
 * D^T (N x M) = B (N x K, stored K x N, op T) . A^T (K x M, op N): the "TN" layout
 * every fp8 kernel needs, with cuBLASLt's A being our B and its B our A.  Hence the
 * 128x128 block scales (ours on B) go on cuBLASLt's A and the 1x128 scales (ours on
 * A) on cuBLASLt's B, which is also how PyTorch's torch._scaled_mm calls it.  The
 * other layouts follow: our B with trans_b ((n, k) at k*ldb + n) is cuBLASLt's A as
 * the column-major N x K matrix it is, op N; our A with trans_a ((m, k) at k*lda + m)
 * is cuBLASLt's B as the column-major M x K matrix, op T.
 *
 * A plan (descriptors, layouts and the algorithm) is made once per (mode, M, N, K,
 * layout and the operands' alignment) and kept; scale pointers, which change per call, are set on the plan's descriptor
 * before each product.  The algorithm: cuBLASLt's heuristic proposes up to
 * TUNE_CANDIDATES; on the plan's first product each is timed on the caller's own
 * buffers and the fastest kept.  The heuristic's first choice alone was measured
 * up to 5% slower than PyTorch's on the MoE down-projection shape (H200, cuBLASLt
 * 13.1); timing a few of its proposals costs milliseconds once per shape. */
#include "gpu_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/rt.h"

#ifdef SLUICE_HAVE_CUBLASLT
#include <cublasLt.h>

static int lt_fail(cublasStatus_t s, const char *call, const char *file, int line)
{
	fprintf(stderr, "sluice: cuBLASLt error: %s failed: %s: %s [%s:%d]\n", call,
		cublasLtGetStatusName(s), cublasLtGetStatusString(s), file, line);
	return -1;
}
#define LT(fn, args)                                                                 \
	({                                                                           \
		cublasStatus_t lt_s_ = fn args;                                      \
		lt_s_ == CUBLAS_STATUS_SUCCESS ? 0 : lt_fail(lt_s_, #fn, __FILE__, __LINE__); \
	})

/* what a plan is made for: the arguments but for the addresses, leading dimensions
 * and strides made explicit */
struct key {
	enum rt_gemm_mode mode;
	int m, n, k, trans_a, trans_b, batch;
	int64_t lda, ldb, ldd, stride_a, stride_b, stride_d;
	uint32_t align_a, align_b, align_d; /* of our A, B, D: cuBLASLt's B, A, D */
};

struct plan {
	struct key key;
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t la, lb, ld; /* cuBLASLt's A (our B), B (our A), C = D */
	cublasLtMatmulHeuristicResult_t cand[8];
	int ncand, chosen, tuned, timed; /* timed: the candidates were timed (not just taken) */
	struct plan *next;
};

struct rt_gemm {
	struct rt_gpu *g;
	cublasLtHandle_t lt;
	rt_dptr ws;
	size_t ws_size;
	struct plan *plans;
};

int rt_cublaslt_version(void)
{
	return (int)cublasLtGetVersion();
}

struct rt_gemm *rt_gemm_new(struct rt_gpu *g, size_t workspace_bytes)
{
	struct rt_gemm *c = rt_calloc(1, sizeof *c);
	c->g = g;
	if (workspace_bytes) {
		c->ws = rt_gpu_alloc(g, workspace_bytes, 256);
		if (!c->ws) {
			free(c);
			return NULL;
		}
		c->ws_size = workspace_bytes;
	}
	if (rt_gpu_bind(g) || LT(cublasLtCreate, (&c->lt))) {
		free(c);
		return NULL;
	}
	return c;
}

static void plan_free(struct plan *p)
{
	if (p->desc)
		cublasLtMatmulDescDestroy(p->desc);
	if (p->la)
		cublasLtMatrixLayoutDestroy(p->la);
	if (p->lb)
		cublasLtMatrixLayoutDestroy(p->lb);
	if (p->ld)
		cublasLtMatrixLayoutDestroy(p->ld);
	free(p);
}

void rt_gemm_free(struct rt_gemm *c)
{
	if (!c)
		return;
	for (struct plan *p = c->plans, *next; p; p = next) {
		next = p->next;
		plan_free(p);
	}
	rt_gpu_bind(c->g);
	cublasLtDestroy(c->lt);
	free(c);
}

enum { TUNE_CANDIDATES = 8, TUNE_ROUNDS = 5, TUNE_RUNS = 5 };

#define SET_DESC(d, attr, val)                                                       \
	LT(cublasLtMatmulDescSetAttribute, (d, attr, &(val), sizeof(val)))

/* the largest power of two up to 256 that divides P: the heuristic must only offer
 * algorithms that work at the operands' real alignment (it assumes 256 otherwise) */
static uint32_t align_of(rt_dptr p)
{
	uint32_t a = 256;
	while (a > 1 && p % a)
		a >>= 1;
	return a;
}

static int is_fp8(enum rt_gemm_mode m)
{
	return m == RT_GEMM_FP8 || m == RT_GEMM_FP8_BLOCK || m == RT_GEMM_FP8_VEC ||
	       m == RT_GEMM_FP8_BLOCK_F32;
}

/* the alignment of a batch's matrices: of the first, and of the step between them */
static uint32_t align_batch(rt_dptr p, int batch, int64_t stride, size_t elem)
{
	uint32_t a = align_of(p), s = align_of((rt_dptr)stride * elem);
	return batch > 1 && s < a ? s : a;
}

static void key_of(const struct rt_gemm_args *a, struct key *k)
{
	memset(k, 0, sizeof *k); /* the padding too: keys are compared with memcmp */
	k->mode = a->mode;
	k->m = a->m;
	k->n = a->n;
	k->k = a->k;
	k->trans_a = !!a->trans_a;
	k->trans_b = !!a->trans_b;
	k->lda = a->lda ? a->lda : k->trans_a ? a->m : a->k;
	k->ldb = a->ldb ? a->ldb : k->trans_b ? a->n : a->k;
	k->ldd = a->ldd ? a->ldd : a->n;
	k->batch = a->batch > 1 ? a->batch : 1;
	if (k->batch > 1) {
		k->stride_a = a->stride_a;
		k->stride_b = a->stride_b;
		k->stride_d = a->stride_d;
	}
	size_t ei = rt_gemm_in_bytes(a->mode), eo = rt_gemm_out_bytes(a->mode);
	k->align_a = align_batch(a->a, k->batch, k->stride_a, ei);
	k->align_b = align_batch(a->b, k->batch, k->stride_b, ei);
	k->align_d = align_batch(a->d, k->batch, k->stride_d, eo);
}

static int set_batch(cublasLtMatrixLayout_t l, int batch, int64_t stride)
{
	if (batch <= 1)
		return 0;
	int32_t n = batch;
	return LT(cublasLtMatrixLayoutSetAttribute,
		  (l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &n, sizeof n)) ||
	       LT(cublasLtMatrixLayoutSetAttribute,
		  (l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

static struct plan *plan_make(struct rt_gemm *c, const struct rt_gemm_args *a)
{
	struct plan *p = rt_calloc(1, sizeof *p);
	struct key *k = &p->key;
	key_of(a, k);
	int fp8 = is_fp8(a->mode);
	cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : a->mode == RT_GEMM_F32 ? CUDA_R_32F
			    : a->mode == RT_GEMM_F16 ? CUDA_R_16F : CUDA_R_16BF;
	cudaDataType_t out = rt_gemm_out_bytes(a->mode) == 4 ? CUDA_R_32F
			     : a->mode == RT_GEMM_F16 ? CUDA_R_16F : CUDA_R_16BF;
	/* cuBLASLt's A is our B: [N,K] K-major (op T), or with trans_b N-major (op N);
	 * its B is our A: [M,K] K-major (op N), or with trans_a M-major (op T) */
	cublasOperation_t opa = k->trans_b ? CUBLAS_OP_N : CUBLAS_OP_T;
	cublasOperation_t opb = k->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
	uint64_t M = (uint64_t)a->m, N = (uint64_t)a->n, K = (uint64_t)a->k;
	if (LT(cublasLtMatmulDescCreate, (&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
	    SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, opa) ||
	    SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, opb) ||
	    LT(cublasLtMatrixLayoutCreate,
	       (&p->la, in, k->trans_b ? N : K, k->trans_b ? K : N, k->ldb)) ||
	    LT(cublasLtMatrixLayoutCreate,
	       (&p->lb, in, k->trans_a ? M : K, k->trans_a ? K : M, k->lda)) ||
	    LT(cublasLtMatrixLayoutCreate, (&p->ld, out, N, M, k->ldd)) ||
	    set_batch(p->la, k->batch, k->stride_b) || set_batch(p->lb, k->batch, k->stride_a) ||
	    set_batch(p->ld, k->batch, k->stride_d))
		goto fail;
	int block = a->mode == RT_GEMM_FP8_BLOCK || a->mode == RT_GEMM_FP8_VEC ||
		    a->mode == RT_GEMM_FP8_BLOCK_F32;
	if (block) {
		int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
		int32_t blk = a->mode == RT_GEMM_FP8_VEC ? vec : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
		if (SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, blk) ||
		    SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, vec))
			goto fail;
	}
	if (fp8) {
		/* the heuristic wants to see scale pointers set; the real ones come per call */
		const void *as = (const void *)(uintptr_t)a->b_scale;
		const void *bs = (const void *)(uintptr_t)a->a_scale;
		if (SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, as) ||
		    SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, bs))
			goto fail;
	}
	cublasLtMatmulPreference_t pref;
	if (LT(cublasLtMatmulPreferenceCreate, (&pref)))
		goto fail;
	int returned = 0;
	int bad = LT(cublasLtMatmulPreferenceSetAttribute,
		 (pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->ws_size, sizeof c->ws_size)) ||
	      LT(cublasLtMatmulPreferenceSetAttribute,
		 (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->align_b, sizeof k->align_b)) ||
	      LT(cublasLtMatmulPreferenceSetAttribute,
		 (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->align_a, sizeof k->align_a)) ||
	      LT(cublasLtMatmulPreferenceSetAttribute,
		 (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->align_d, sizeof k->align_d)) ||
	      LT(cublasLtMatmulPreferenceSetAttribute,
		 (pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->align_d, sizeof k->align_d)) ||
	      LT(cublasLtMatmulAlgoGetHeuristic,
		 (c->lt, p->desc, p->la, p->lb, p->ld, p->ld, pref, TUNE_CANDIDATES, p->cand,
		  &returned));
	cublasLtMatmulPreferenceDestroy(pref);
	if (bad)
		goto fail;
	if (returned == 0) {
		fprintf(stderr,
			"sluice: cuBLASLt has no algorithm for a %s GEMM of M=%d N=%d K=%d%s%s (batch %d) on %s (sm_%d%d)%s\n",
			rt_gemm_mode_name(a->mode), a->m, a->n, a->k, k->trans_a ? " A^T" : "",
			k->trans_b ? " B^T" : "", k->batch, c->g->info.name,
			c->g->info.cc_major, c->g->info.cc_minor,
			is_fp8(a->mode) && a->mode != RT_GEMM_FP8 ? "; block-scaled fp8 needs sm_90" : "");
		goto fail;
	}
	p->ncand = returned;
	const char *tune = getenv("SLUICE_GEMM_TUNE");
	p->tuned = returned == 1 || (tune && !strcmp(tune, "0"));
	return p;
fail:
	plan_free(p);
	return NULL;
}

static struct plan *plan_get(struct rt_gemm *c, const struct rt_gemm_args *a)
{
	struct key k;
	key_of(a, &k);
	for (struct plan *p = c->plans; p; p = p->next)
		if (!memcmp(&p->key, &k, sizeof k))
			return p;
	struct plan *p = plan_make(c, a);
	if (p) {
		p->next = c->plans;
		c->plans = p;
	}
	return p;
}

static int matmul(struct rt_gemm *c, struct plan *p, const struct rt_gemm_args *a,
		  const cublasLtMatmulAlgo_t *algo, enum rt_stream_kind s)
{
	float alpha = 1.0f, beta = 0.0f;
	void *D = (void *)(uintptr_t)a->d;
	return LT(cublasLtMatmul,
		  (c->lt, p->desc, &alpha, (const void *)(uintptr_t)a->b, p->la,
		   (const void *)(uintptr_t)a->a, p->lb, &beta, D, p->ld, D, p->ld, algo,
		   (void *)(uintptr_t)c->ws, c->ws_size, (cudaStream_t)rt_gpu_stream(c->g, s)));
}

/* Time the candidates and keep the fastest.  Each is first run once (a candidate
 * cuBLASLt refuses at run time is dropped quietly), then TUNE_ROUNDS rounds go over all
 * of them in turn, a batch of TUNE_RUNS products each, and a candidate's time is its
 * best batch.  Going round the candidates, rather than timing one after the other,
 * spreads the drift of the GPU's clock over all of them alike: timed one after the
 * other in two short batches, the choice for bf16 4096^3 changed from run to run. */
static int tune(struct rt_gemm *c, struct plan *p, const struct rt_gemm_args *a,
		enum rt_stream_kind s)
{
	struct rt_gpu_event *t0 = rt_gpu_event_new(c->g), *t1 = rt_gpu_event_new(c->g);
	double best_ms[TUNE_CANDIDATES];
	int ok[TUNE_CANDIDATES], bad = !t0 || !t1;
	for (int i = 0; i < p->ncand && !bad; i++) {
		float alpha = 1.0f, beta = 0.0f;
		void *D = (void *)(uintptr_t)a->d;
		cudaStream_t st = (cudaStream_t)rt_gpu_stream(c->g, s);
		best_ms[i] = -1;
		ok[i] = cublasLtMatmul(c->lt, p->desc, &alpha, (const void *)(uintptr_t)a->b, p->la,
				       (const void *)(uintptr_t)a->a, p->lb, &beta, D, p->ld, D, p->ld,
				       &p->cand[i].algo, (void *)(uintptr_t)c->ws, c->ws_size,
				       st) == CUBLAS_STATUS_SUCCESS;
	}
	for (int round = 0; round < TUNE_ROUNDS && !bad; round++)
		for (int i = 0; i < p->ncand && !bad; i++) {
			if (!ok[i])
				continue;
			bad = rt_gpu_event_record(t0, s);
			for (int r = 0; r < TUNE_RUNS && !bad; r++)
				bad = matmul(c, p, a, &p->cand[i].algo, s);
			bad = bad || rt_gpu_event_record(t1, s);
			double ms = bad ? -1 : rt_gpu_event_ms(t0, t1);
			bad = bad || ms < 0;
			if (!bad && (best_ms[i] < 0 || ms < best_ms[i]))
				best_ms[i] = ms;
		}
	double best = -1;
	for (int i = 0; i < p->ncand && !bad; i++)
		if (ok[i] && best_ms[i] >= 0 && (best < 0 || best_ms[i] < best)) {
			best = best_ms[i];
			p->chosen = i;
		}
	rt_gpu_event_free(t0);
	rt_gpu_event_free(t1);
	p->tuned = p->timed = !bad;
	return bad ? -1 : 0;
}

int rt_gemm_run(struct rt_gemm *c, const struct rt_gemm_args *a, enum rt_stream_kind s)
{
	const char *why = rt_gemm_check_args(a);
	if (why) {
		fprintf(stderr, "sluice: GEMM M=%d N=%d K=%d (%s): %s\n", a->m, a->n, a->k,
			rt_gemm_mode_name(a->mode), why);
		return -1;
	}
	if (rt_gpu_bind(c->g))
		return -1;
	struct plan *p = plan_get(c, a);
	if (!p)
		return -1;
	if (is_fp8(a->mode)) {
		const void *as = (const void *)(uintptr_t)a->b_scale;
		const void *bs = (const void *)(uintptr_t)a->a_scale;
		if (SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, as) ||
		    SET_DESC(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, bs))
			return -1;
	}
	if (!p->tuned && tune(c, p, a, s))
		return -1;
	return matmul(c, p, a, &p->cand[p->chosen].algo, s);
}

int rt_gemm_describe(struct rt_gemm *c, const struct rt_gemm_args *a, char *buf, size_t n)
{
	if (rt_gpu_bind(c->g))
		return -1;
	struct plan *p = plan_get(c, a);
	if (!p)
		return -1;
	const cublasLtMatmulAlgo_t *algo = &p->cand[p->chosen].algo;
	int id = 0, tile = 0, stages = 0, splitk = 0;
	size_t w;
	cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
	cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
					     sizeof tile, &w);
	cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
					     sizeof stages, &w);
	cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
					     sizeof splitk, &w);
	snprintf(buf, n, "algo %d tile %d stages %d splitk %d ws %zu KiB, candidate %d of %d%s", id,
		 tile, stages, splitk, p->cand[p->chosen].workspaceSize / 1024, p->chosen + 1,
		 p->ncand, p->ncand == 1 ? "" : p->timed ? " (timed)" : " (heuristic's first, untimed)");
	return 0;
}

#else /* CUDA without cuBLASLt */

int rt_cublaslt_version(void) { return 0; }

struct rt_gemm *rt_gemm_new(struct rt_gpu *g, size_t workspace_bytes)
{
	fprintf(stderr, "sluice: this sluice was built without cuBLASLt: no GEMMs\n");
	return NULL;
}

void rt_gemm_free(struct rt_gemm *c) { (void)c; }

int rt_gemm_run(struct rt_gemm *c, const struct rt_gemm_args *a, enum rt_stream_kind s)
{
	return -1;
}

int rt_gemm_describe(struct rt_gemm *c, const struct rt_gemm_args *a, char *buf, size_t n)
{
	return -1;
}
#endif
