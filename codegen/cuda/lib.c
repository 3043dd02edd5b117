/* lib.c - loading and launching the library kernels of lib_kernels.cu (see lib.h, and
 * the kernels' header comment for how each works).  The source is embedded by the
 * build (lib_kernels.inc: the .cu file's bytes as a C array, made by CMakeLists.txt).
 *
 * Which kernels: bf16 with 16-byte aligned rows goes to the tensor-core kernels (the
 * attention forward for head sizes 64/64, 128/128 and 192/128; the grouped GEMM and
 * its weight gradient when K and N are multiples of 8 and E <= 2047); everything else
 * to the SIMT kernels.  The bf16 attention backward for those head sizes runs on
 * tensor cores too (verified on an H200 by tests/cuda/test_cuda_lib; 1.6 ms against
 * the SIMT kernels' 20 ms at B=4 S=2048 H=16 D=128); $SLUICE_CUDA_ATTN_BWD_MMA=0
 * takes the SIMT backward instead (test_cuda_lib_simt checks that path).
 *
 * Not done yet: the grouped GEMM's row tiles run over the whole R, so a tile that
 * straddles experts is multiplied once per expert it touches (about E / (R / 128)
 * extra tiles: little for 8 experts, up to a few times the work for hundreds of
 * small ones); the weight gradient sums an expert's rows in one block per dw tile,
 * with no split over rows, so one large expert runs long; no fp8; no Hopper wgmma.
 *
 * Launch shapes (SIMT): 256 threads per block.  Attention: a block per (64-row
 * tile, head, batch) with grid (tiles, H, B) (the backward's second kernel per kv
 * head); the variant is picked by the larger head size: columns per thread NC = 8
 * (heads up to 128) or 16 (up to 256).  Delta: a warp per row, 8 rows a block.
 * Grouped GEMM: grid (row tiles of 64 over all R, column tiles of 64), the offsets in
 * dynamic shared memory (E + 1 ints).  Weight gradient: grid (column tiles, row tiles
 * of dw[e], E). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib.h"
#include "runtime/rt.h"

static const char lib_source[] = {
#include "lib_kernels.inc"
	0
};

const char *cg_cuda_lib_source(void) { return lib_source; }

enum { T_F32, T_BF16, N_TYPES };
enum { NC8, NC16, N_NC };

/* the head sizes (Dk, Dv) of the tensor-core attention forward */
static const int mma_heads[][2] = { { 64, 64 }, { 128, 128 }, { 192, 128 } };
#define N_MMA_HEADS (int)(sizeof mma_heads / sizeof mma_heads[0])

struct cg_cuda_lib {
	struct rt_gpu *g;
	struct rt_module *m;
	struct rt_kernel *fwd[N_TYPES][N_NC], *dq[N_TYPES][N_NC], *dkv[N_TYPES][N_NC];
	struct rt_kernel *delta[N_TYPES], *grouped[N_TYPES], *wgrad[N_TYPES];
	/* bf16 on tensor cores */
	struct rt_kernel *fwd_mma[N_MMA_HEADS], *dq_mma[N_MMA_HEADS], *dkv_mma[N_MMA_HEADS];
	struct rt_kernel *grouped_mma, *wgrad_mma, *grouped_fp8, *wgrad_fp8;
	int bwd_mma; /* $SLUICE_CUDA_ATTN_BWD_MMA=1: the tensor-core attention backward */
};

static const char *const type_name[N_TYPES] = { "f32", "bf16" };

/* the kernel NAME (printf-style) of l's module; NULL and *bad set when missing */
static struct rt_kernel *kernel(struct cg_cuda_lib *l, int *bad, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static struct rt_kernel *kernel(struct cg_cuda_lib *l, int *bad, const char *fmt, ...)
{
	char name[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	struct rt_kernel *k = rt_module_kernel(l->m, name);
	if (!k) {
		fprintf(stderr, "sluice: CUDA library: no kernel %s in the module\n", name);
		*bad = 1;
	}
	return k;
}

struct cg_cuda_lib *cg_cuda_lib_load(struct rt_gpu *g)
{
	static const char *const opts[] = { "--std=c++17" };
	struct rt_module_src src = { "sluice_lib.cu", lib_source, opts, 1 };
	struct cg_cuda_lib *l = rt_calloc(1, sizeof *l);
	l->g = g;
	const char *bm = getenv("SLUICE_CUDA_ATTN_BWD_MMA");
	l->bwd_mma = !bm || atoi(bm) > 0;
	if (rt_module_build(g, &src, 1, &l->m, NULL)) {
		fprintf(stderr, "sluice: CUDA library: the kernels did not build\n");
		free(l);
		return NULL;
	}
	int bad = 0;
	for (int t = 0; t < N_TYPES; t++) {
		const char *tn = type_name[t];
		for (int c = 0; c < N_NC; c++) {
			int nc = c == NC8 ? 8 : 16;
			l->fwd[t][c] = kernel(l, &bad, "sl_attn_fwd_%s_nc%d", tn, nc);
			l->dq[t][c] = kernel(l, &bad, "sl_attn_dq_%s_nc%d", tn, nc);
			l->dkv[t][c] = kernel(l, &bad, "sl_attn_dkv_%s_nc%d", tn, nc);
		}
		l->delta[t] = kernel(l, &bad, "sl_attn_delta_%s", tn);
		l->grouped[t] = kernel(l, &bad, "sl_grouped_%s", tn);
		l->wgrad[t] = kernel(l, &bad, "sl_wgrad_%s", tn);
	}
	for (int i = 0; i < N_MMA_HEADS; i++) {
		int dk = mma_heads[i][0], dv = mma_heads[i][1];
		l->fwd_mma[i] = kernel(l, &bad, "sl_attn_fwd_mma_bf16_d%d_%d", dk, dv);
		l->dq_mma[i] = kernel(l, &bad, "sl_attn_dq_mma_bf16_d%d_%d", dk, dv);
		l->dkv_mma[i] = kernel(l, &bad, "sl_attn_dkv_mma_bf16_d%d_%d", dk, dv);
	}
	l->grouped_mma = kernel(l, &bad, "sl_grouped_mma_bf16");
	l->grouped_fp8 = kernel(l, &bad, "sl_grouped_mma_fp8");
	l->wgrad_mma = kernel(l, &bad, "sl_wgrad_mma_bf16");
	l->wgrad_fp8 = kernel(l, &bad, "sl_wgrad_mma_fp8");
	if (bad) {
		cg_cuda_lib_free(l);
		return NULL;
	}
	return l;
}

void cg_cuda_lib_free(struct cg_cuda_lib *l)
{
	if (!l)
		return;
	rt_module_free(l->m);
	free(l);
}

static int fail(const char *what, const char *why)
{
	fprintf(stderr, "sluice: CUDA library: %s: %s\n", what, why);
	return -1;
}

/* --- attention ------------------------------------------------------------------- */

enum { ATT_T = 64, ATT_THREADS = 256, ATT_DMAX = 256 };

static const char *attn_check(const struct cg_cuda_attn *a)
{
	if (a->B < 0 || a->S < 0 || a->H < 1 || a->Hkv < 1)
		return "B, S must be >= 0 and H, Hkv >= 1";
	if (a->H % a->Hkv)
		return "H must be a multiple of Hkv";
	if (a->Dk < 1 || a->Dv < 1 || a->Dk > ATT_DMAX || a->Dv > ATT_DMAX)
		return "head sizes Dk, Dv must be in 1..256";
	if (a->B > 65535 || a->H > 65535)
		return "B and H must be at most 65535";
	if (a->S > INT32_MAX / 2 || a->H * a->Dk > INT32_MAX || a->H * a->Dv > INT32_MAX)
		return "S or a row too long";
	if (a->dtype != CG_CUDA_F32 && a->dtype != CG_CUDA_BF16)
		return "unknown storage type";
	return NULL;
}

static int attn_nc(const struct cg_cuda_attn *a)
{
	return a->Dk > 128 || a->Dv > 128 ? NC16 : NC8;
}

static int aligned16(rt_dptr p) { return (p & 15) == 0; }

/* the tensor-core forward for a's head sizes (an index of mma_heads), or -1 */
static int attn_mma(const struct cg_cuda_attn *a, rt_dptr q, rt_dptr k, rt_dptr v, rt_dptr o)
{
	if (a->dtype != CG_CUDA_BF16 || !aligned16(q) || !aligned16(k) || !aligned16(v) ||
	    !aligned16(o))
		return -1;
	for (int i = 0; i < N_MMA_HEADS; i++)
		if (a->Dk == mma_heads[i][0] && a->Dv == mma_heads[i][1])
			return i;
	return -1;
}

int64_t cg_cuda_attention_bwd_scratch(const struct cg_cuda_attn *a)
{
	return a->B * a->H * a->S * (int64_t)sizeof(float);
}

int cg_cuda_attention_fwd(struct cg_cuda_lib *l, const struct cg_cuda_attn *a, rt_dptr q,
			  rt_dptr k, rt_dptr v, rt_dptr o, rt_dptr lse, enum rt_stream_kind s)
{
	const char *why = attn_check(a);
	if (why)
		return fail("attention forward", why);
	if (!a->B || !a->S)
		return 0;
	int S = (int)a->S, H = (int)a->H, Hkv = (int)a->Hkv, Dk = (int)a->Dk, Dv = (int)a->Dv;
	int causal = a->causal != 0;
	float scale = (float)a->scale;
	unsigned grid[3] = { (unsigned)((S + ATT_T - 1) / ATT_T), (unsigned)H, (unsigned)a->B };
	int mma = attn_mma(a, q, k, v, o);
	if (mma >= 0) {
		void *args[] = { &q, &k, &v, &o, &lse, &S, &H, &Hkv, &scale, &causal };
		unsigned block[3] = { 128, 1, 1 };
		unsigned smem = (unsigned)(2 * ATT_T * (Dk + 8 + Dv + 8));
		return rt_kernel_launch(l->g, l->fwd_mma[mma], grid, block, smem, s, args);
	}
	void *args[] = { &q, &k, &v, &o, &lse, &S, &H, &Hkv, &Dk, &Dv, &scale, &causal };
	unsigned block[3] = { ATT_THREADS, 1, 1 };
	return rt_kernel_launch(l->g, l->fwd[a->dtype][attn_nc(a)], grid, block, 0, s, args);
}

int cg_cuda_attention_bwd(struct cg_cuda_lib *l, const struct cg_cuda_attn *a, rt_dptr q,
			  rt_dptr k, rt_dptr v, rt_dptr o, rt_dptr lse, rt_dptr dout,
			  rt_dptr dq, rt_dptr dk, rt_dptr dv, rt_dptr scratch,
			  enum rt_stream_kind s)
{
	const char *why = attn_check(a);
	if (why)
		return fail("attention backward", why);
	if (!a->B || !a->S)
		return 0;
	int S = (int)a->S, H = (int)a->H, Hkv = (int)a->Hkv, Dk = (int)a->Dk, Dv = (int)a->Dv;
	int causal = a->causal != 0, t = a->dtype, nc = attn_nc(a);
	float scale = (float)a->scale;
	long long rows = (long long)(a->B * a->S * a->H);
	unsigned block[3] = { ATT_THREADS, 1, 1 };
	void *dargs[] = { &o, &dout, &scratch, &rows, &S, &H, &Dv };
	unsigned dgrid[3] = { (unsigned)((rows + 7) / 8), 1, 1 };
	if (rt_kernel_launch(l->g, l->delta[t], dgrid, block, 0, s, dargs))
		return -1;
	unsigned grid[3] = { 0, 1, (unsigned)a->B };
	int mma = attn_mma(a, q, k, v, o);
	if (l->bwd_mma && mma >= 0 && aligned16(dout) && aligned16(dq) && aligned16(dk) &&
	    aligned16(dv)) {
		/* 2 warps; four 32-row tiles of halves: q and k (Dk + 8), dout and v (Dv + 8) */
		unsigned mblock[3] = { 64, 1, 1 }, smem = (unsigned)(4 * 32 * (Dk + 8 + Dv + 8));
		void *qargs[] = { &q, &k, &v, &lse, &scratch, &dout, &dq, &S, &H, &Hkv, &scale,
				  &causal };
		grid[0] = (unsigned)((S + 31) / 32), grid[1] = (unsigned)H;
		if (rt_kernel_launch(l->g, l->dq_mma[mma], grid, mblock, smem, s, qargs))
			return -1;
		void *kargs[] = { &q, &k, &v, &lse, &scratch, &dout, &dk, &dv, &S, &H, &Hkv, &scale,
				  &causal };
		grid[1] = (unsigned)Hkv;
		return rt_kernel_launch(l->g, l->dkv_mma[mma], grid, mblock, smem, s, kargs);
	}
	void *qargs[] = { &q, &k, &v, &lse, &scratch, &dout, &dq, &S, &H, &Hkv, &Dk, &Dv, &scale,
			  &causal };
	grid[0] = (unsigned)((S + ATT_T - 1) / ATT_T), grid[1] = (unsigned)H;
	if (rt_kernel_launch(l->g, l->dq[t][nc], grid, block, 0, s, qargs))
		return -1;
	void *kargs[] = { &q, &k, &v, &lse, &scratch, &dout, &dk, &dv, &S, &H, &Hkv, &Dk, &Dv,
			  &scale, &causal };
	grid[1] = (unsigned)Hkv;
	return rt_kernel_launch(l->g, l->dkv[t][nc], grid, block, 0, s, kargs);
}

/* --- grouped GEMM ------------------------------------------------------------------- */

enum { G_T = 64, G_THREADS = 256, G_EMAX = 8192, G_MT = 128, G_MMA_EMAX = 2047 };

/* bf16 with every row start 16-byte aligned: the tensor-core kernels */
static int grouped_mma(const struct cg_cuda_grouped *a, rt_dptr x, rt_dptr w, rt_dptr y)
{
	return a->dtype == CG_CUDA_BF16 && a->K % 8 == 0 && a->N % 8 == 0 && aligned16(x) &&
	       aligned16(w) && aligned16(y) && a->E <= G_MMA_EMAX;
}

static const char *grouped_check(const struct cg_cuda_grouped *a)
{
	if (a->R < 0 || a->K < 0 || a->N < 0 || a->E < 0)
		return "R, K, N, E must be >= 0";
	if (a->R > INT32_MAX || a->K > INT32_MAX || a->N > INT32_MAX)
		return "R, K and N must be below 2^31";
	if (a->E > G_EMAX)
		return "at most 8192 experts";
	if (a->dtype != CG_CUDA_F32 && a->dtype != CG_CUDA_BF16)
		return "unknown storage type";
	return NULL;
}

int cg_cuda_grouped(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr x,
		    rt_dptr w, rt_dptr offsets, rt_dptr y, enum rt_stream_kind s)
{
	const char *why = grouped_check(a);
	if (why)
		return fail("grouped GEMM", why);
	if (!a->R || !a->N)
		return 0;
	int R = (int)a->R, K = (int)a->K, N = (int)a->N, E = (int)a->E;
	int i64 = a->offsets_i64 != 0, tb = a->trans_b != 0;
	void *args[] = { &x, &w, &offsets, &i64, &y, &R, &K, &N, &E, &tb };
	int mma = grouped_mma(a, x, w, y), t = mma ? G_MT : G_T;
	unsigned grid[3] = { (unsigned)((R + t - 1) / t), (unsigned)((N + t - 1) / t), 1 };
	unsigned block[3] = { G_THREADS, 1, 1 };
	if (grid[1] > 65535)
		return fail("grouped GEMM", "N too large (over 65535 column tiles)");
	unsigned smem = (unsigned)(sizeof(int) * (size_t)(E + 1));
	return rt_kernel_launch(l->g, mma ? l->grouped_mma : l->grouped[a->dtype], grid, block,
				smem, s, args);
}

int cg_cuda_grouped_fp8_ok(const struct cg_cuda_grouped *a)
{
	return !grouped_check(a) && a->dtype == CG_CUDA_BF16 && a->K % 8 == 0 && a->N % 8 == 0 &&
	       a->E <= G_MMA_EMAX;
}

int cg_cuda_grouped_fp8(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr x,
			rt_dptr w, rt_dptr offsets, rt_dptr sx, rt_dptr sw, rt_dptr y, int y_f32,
			enum rt_stream_kind s)
{
	if (!cg_cuda_grouped_fp8_ok(a) || !aligned16(x) || !aligned16(w) || !aligned16(y))
		return fail("FP8 grouped GEMM", "needs bf16 rows of 16 bytes and at most 2047 "
			    "experts");
	if (!a->R || !a->N)
		return 0;
	int R = (int)a->R, K = (int)a->K, N = (int)a->N, E = (int)a->E;
	int i64 = a->offsets_i64 != 0, tb = a->trans_b != 0, f32 = y_f32 != 0;
	void *args[] = { &x, &w, &offsets, &i64, &sx, &sw, &y, &f32, &R, &K, &N, &E, &tb };
	unsigned grid[3] = { (unsigned)((R + G_MT - 1) / G_MT), (unsigned)((N + G_MT - 1) / G_MT),
			     1 };
	unsigned block[3] = { G_THREADS, 1, 1 };
	if (grid[1] > 65535)
		return fail("FP8 grouped GEMM", "N too large (over 65535 column tiles)");
	unsigned smem = (unsigned)(sizeof(int) * (size_t)(E + 1));
	return rt_kernel_launch(l->g, l->grouped_fp8, grid, block, smem, s, args);
}

int cg_cuda_wgrad_fp8(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr xs,
		      rt_dptr dy, rt_dptr offsets, rt_dptr sx, rt_dptr sy, rt_dptr dw, int y_f32,
		      enum rt_stream_kind s)
{
	if (!cg_cuda_grouped_fp8_ok(a) || a->trans_b || !aligned16(xs) || !aligned16(dy) ||
	    !aligned16(dw))
		return fail("FP8 grouped GEMM weight gradient", "needs bf16 rows of 16 bytes, "
			    "dw [E,K,N] and at most 2047 experts");
	if (!a->E || !a->K || !a->N)
		return 0;
	int R = (int)a->R, K = (int)a->K, N = (int)a->N, f32 = y_f32 != 0;
	int i64 = a->offsets_i64 != 0;
	void *args[] = { &xs, &dy, &offsets, &i64, &sx, &sy, &dw, &f32, &R, &K, &N };
	unsigned grid[3] = { (unsigned)((N + G_MT - 1) / G_MT), (unsigned)((K + G_MT - 1) / G_MT),
			     (unsigned)a->E };
	unsigned block[3] = { G_THREADS, 1, 1 };
	if (grid[1] > 65535)
		return fail("FP8 grouped GEMM weight gradient", "dw too tall (over 65535 row tiles)");
	return rt_kernel_launch(l->g, l->wgrad_fp8, grid, block, 0, s, args);
}

int cg_cuda_wgrad(struct cg_cuda_lib *l, const struct cg_cuda_grouped *a, rt_dptr xs,
		  rt_dptr dy, rt_dptr offsets, rt_dptr dw, enum rt_stream_kind s)
{
	const char *why = grouped_check(a);
	if (why)
		return fail("grouped GEMM weight gradient", why);
	if (!a->E || !a->K || !a->N)
		return 0;
	int R = (int)a->R, K = (int)a->K, N = (int)a->N, E = (int)a->E;
	int i64 = a->offsets_i64 != 0, tb = a->trans_b != 0;
	int M = tb ? N : K, Nc = tb ? K : N;
	void *args[] = { &xs, &dy, &offsets, &i64, &dw, &R, &K, &N, &E, &tb };
	int mma = grouped_mma(a, xs, dy, dw), t = mma ? G_MT : G_T;
	unsigned grid[3] = { (unsigned)((Nc + t - 1) / t), (unsigned)((M + t - 1) / t),
			     (unsigned)E };
	unsigned block[3] = { G_THREADS, 1, 1 };
	if (grid[1] > 65535)
		return fail("grouped GEMM weight gradient", "dw too tall (over 65535 row tiles)");
	return rt_kernel_launch(l->g, mma ? l->wgrad_mma : l->wgrad[a->dtype], grid, block, 0, s,
				args);
}
