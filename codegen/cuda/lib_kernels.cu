/* lib_kernels.cu - the CUDA backend's hand-written library kernels, one translation
 * unit compiled at run time by NVRTC (codegen/cuda/lib.c embeds this file as a string;
 * the build turns it into a C array).  What each computes is what the CPU backend's
 * library steps compute (codegen/llvm/attention.c, codegen/llvm/backend.c):
 *
 *   sl_attn_fwd_*     flash attention forward: a block per (query tile, head, batch),
 *                     keys walked a tile at a time with the online softmax, the output
 *                     rows accumulated in registers, lse = m + log l saved;
 *   sl_attn_delta_*   D = rowsum(dout * out) per (batch, head, position), f32;
 *   sl_attn_dq_*      backward pass 1, a block per query tile: p = exp(s - lse) and
 *                     ds = p (dp - D) recomputed per key tile, dq = scale ds k;
 *   sl_attn_dkv_*     backward pass 2, a block per (key tile, kv head, batch), over the
 *                     query heads of its group and the query tiles from the diagonal:
 *                     dv = p^T dout, dk = scale ds^T q.  Every sum runs in a fixed
 *                     order (no atomics): results do not depend on the schedule;
 *   sl_grouped_*      grouped GEMM: a block per (64 rows of the whole R, 64 columns),
 *                     each row tile multiplied by the weight of every expert whose
 *                     rows it overlaps (rows of other experts load as zero), so rows
 *                     past the last offset come out zero;
 *   sl_wgrad_*        the per-expert weight gradient, a block per (tile of dw, expert)
 *                     summing over that expert's rows.
 * The offsets ([E+1], i32 or i64) are read in device memory, clamped to [0, R] and made
 * non-decreasing (a running maximum) by every block that needs them: no host sync.
 *
 * Storage: f32 (float) or bf16 (sl_bf16: unsigned short, the upper half of an f32,
 * as codegen/cuda/render.c stores it); loads widen exactly, stores round to nearest
 * even (cvt.rn).  Arithmetic and accumulation in f32; lse and D in f32.
 *
 * Layout: q [B,S,H,Dk], k [B,S,Hkv,Dk], v [B,S,Hkv,Dv], out and dout [B,S,H,Dv],
 * lse and D [B,H,S]; query head h reads kv head h / (H / Hkv); causal: query i sees
 * keys j <= i.
 *
 * The products are SIMT f32 (no tensor cores yet): 256 threads as 16 x 16, each owning
 * 4 x 4 entries of a 64 x 64 tile (rows ty + 16 i, columns tx + 16 j), operands staged
 * through shared memory in chunks.  A row's scores live in the 16 threads of one half
 * warp, so its maximum and sum are shuffles.  Head sizes up to 256 (NC = columns per
 * thread of an output row, 16 * NC >= D). */

typedef unsigned short sl_bf16;
__device__ __forceinline__ float sl_bf16_to_f32(sl_bf16 h) { return __uint_as_float((unsigned)h << 16); }
__device__ __forceinline__ sl_bf16 sl_f32_to_bf16(float f)
{
	sl_bf16 h;
	asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
	return h;
}

__device__ __forceinline__ float ld(const float *p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const sl_bf16 *p, long long i) { return sl_bf16_to_f32(p[i]); }
__device__ __forceinline__ void st(float *p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(sl_bf16 *p, long long i, float v) { p[i] = sl_f32_to_bf16(v); }

#define NEG_INF __int_as_float(0xff800000)
#define AT 64 /* queries or keys per tile */
#define AC 16 /* head columns per chunk of a score product */
#define AK 16 /* rows per chunk of a P V style product */

/* the maximum and the sum over the 16 threads of a half warp (those of one row) */
__device__ __forceinline__ float row_max(float v)
{
	for (int d = 8; d; d >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, d));
	return v;
}

__device__ __forceinline__ float row_sum(float v)
{
	for (int d = 8; d; d >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, d);
	return v;
}

/* s[i][j] += sum over d < D of a[(r0 + ty + 16 i) * lda + d] * b[(c0 + tx + 16 j) * ldb + d]
 * for rows below na and nb (others read as zero).  as, bs: [AT][AC + 1] of shared
 * memory; the function begins and ends with a barrier-free read of them, so callers
 * sync around it. */
template <typename T>
__device__ __forceinline__ void tile_scores(float s[4][4], const T *__restrict__ a, long long lda,
					    int na, const T *__restrict__ b, long long ldb, int nb,
					    int D, float (*as)[AC + 1], float (*bs)[AC + 1])
{
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	for (int d0 = 0; d0 < D; d0 += AC) {
		__syncthreads();
		for (int e = threadIdx.x; e < AT * AC; e += 256) {
			int r = e >> 4, c = e & 15, d = d0 + c;
			as[r][c] = r < na && d < D ? ld(a, r * lda + d) : 0.0f;
			bs[r][c] = r < nb && d < D ? ld(b, r * ldb + d) : 0.0f;
		}
		__syncthreads();
#pragma unroll
		for (int c = 0; c < AC; c++) {
			float x[4], y[4];
#pragma unroll
			for (int i = 0; i < 4; i++) {
				x[i] = as[ty + 16 * i][c];
				y[i] = bs[tx + 16 * i][c];
			}
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++)
					s[i][j] += x[i] * y[j];
		}
	}
}

/* acc[i][c] += sum over t < AT of w[ty + 16 i][t] * x[t * ldx + tx + 16 c] for rows t
 * below nx (others read as zero) and columns below D; w is [AT][AT + 1] in shared
 * memory, xs [AK][16 NC]. */
template <typename T, int NC>
__device__ __forceinline__ void tile_accum(float acc[4][NC], float (*w)[AT + 1],
					   const T *__restrict__ x, long long ldx, int nx, int D,
					   float (*xs)[16 * NC])
{
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	for (int t0 = 0; t0 < AT && t0 < nx; t0 += AK) {
		__syncthreads();
		for (int e = threadIdx.x; e < AK * 16 * NC; e += 256) {
			int t = e / (16 * NC), c = e % (16 * NC);
			xs[t][c] = t0 + t < nx && c < D ? ld(x, (t0 + t) * ldx + c) : 0.0f;
		}
		__syncthreads();
#pragma unroll 4
		for (int t = 0; t < AK; t++) {
			float p[4];
#pragma unroll
			for (int i = 0; i < 4; i++)
				p[i] = w[ty + 16 * i][t0 + t];
#pragma unroll
			for (int c = 0; c < NC; c++) {
				float y = xs[t][tx + 16 * c];
#pragma unroll
				for (int i = 0; i < 4; i++)
					acc[i][c] += p[i] * y;
			}
		}
	}
}

/* --- attention forward ------------------------------------------------------------ */

template <typename T, int NC>
__device__ __forceinline__ void attn_fwd(const T *__restrict__ q, const T *__restrict__ k,
					 const T *__restrict__ v, T *__restrict__ o,
					 float *__restrict__ lse, int S, int H, int Hkv, int Dk,
					 int Dv, float scale, int causal)
{
	__shared__ float as[AT][AC + 1], bs[AT][AC + 1];
	__shared__ float ps[AT][AT + 1];
	__shared__ float xs[AK][16 * NC];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int b = blockIdx.z, h = blockIdx.y;
	int i0 = (gridDim.x - 1 - blockIdx.x) * AT; /* the longest rows first */
	int kh = h / (H / Hkv);
	long long ldq = (long long)H * Dk, ldk = (long long)Hkv * Dk;
	long long ldv = (long long)Hkv * Dv, ldo = (long long)H * Dv;
	const T *qb = q + ((long long)b * S + i0) * ldq + (long long)h * Dk;
	const T *kb = k + (long long)b * S * ldk + (long long)kh * Dk;
	const T *vb = v + (long long)b * S * ldv + (long long)kh * Dv;
	float acc[4][NC], m[4], l[4];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		m[i] = NEG_INF;
		l[i] = 0.0f;
#pragma unroll
		for (int c = 0; c < NC; c++)
			acc[i][c] = 0.0f;
	}
	int nq = min(AT, S - i0);
	int jend = causal ? i0 + nq : S;
	for (int j0 = 0; j0 < jend; j0 += AT) {
		int nk = min(AT, S - j0);
		float s[4][4] = {};
		tile_scores(s, qb, ldq, nq, kb + j0 * ldk, ldk, nk, Dk, as, bs);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int qi = i0 + ty + 16 * i;
			float mx = NEG_INF;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int kj = j0 + tx + 16 * j;
				int ok = kj < S && (!causal || kj <= qi);
				s[i][j] = ok ? s[i][j] * scale : NEG_INF;
				mx = fmaxf(mx, s[i][j]);
			}
			float mnew = fmaxf(m[i], row_max(mx));
			float base = mnew == NEG_INF ? 0.0f : mnew;
			float corr = __expf(m[i] - base), sum = 0.0f;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				float p = __expf(s[i][j] - base);
				ps[ty + 16 * i][tx + 16 * j] = p;
				sum += p;
			}
			l[i] = l[i] * corr + row_sum(sum);
			m[i] = mnew;
#pragma unroll
			for (int c = 0; c < NC; c++)
				acc[i][c] *= corr;
		}
		tile_accum<T, NC>(acc, ps, vb + j0 * ldv, ldv, nk, Dv, xs);
	}
	T *ob = o + ((long long)b * S + i0) * ldo + (long long)h * Dv;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int r = ty + 16 * i;
		if (r >= nq)
			continue;
		float inv = 1.0f / l[i];
#pragma unroll
		for (int c = 0; c < NC; c++)
			if (tx + 16 * c < Dv)
				st(ob, r * ldo + tx + 16 * c, acc[i][c] * inv);
		if (tx == 0)
			lse[((long long)b * H + h) * S + i0 + r] = m[i] + logf(l[i]);
	}
}

/* --- attention backward --------------------------------------------------------------- */

/* D[(b H + h) S + i] = sum over c of dout * out on row (b, i, h): a warp per row */
template <typename T>
__device__ __forceinline__ void attn_delta(const T *__restrict__ o, const T *__restrict__ dout,
					   float *__restrict__ delta, long long rows, int S, int H,
					   int Dv)
{
	long long row = (long long)blockIdx.x * 8 + (threadIdx.x >> 5);
	int lane = threadIdx.x & 31;
	if (row >= rows)
		return;
	float d = 0.0f;
	for (int c = lane; c < Dv; c += 32)
		d += ld(o, row * Dv + c) * ld(dout, row * Dv + c);
	for (int w = 16; w; w >>= 1)
		d += __shfl_xor_sync(0xffffffffu, d, w);
	long long h = row % H, bi = row / H, i = bi % S, b = bi / S;
	if (lane == 0)
		delta[(b * H + h) * S + i] = d;
}

template <typename T, int NC>
__device__ __forceinline__ void attn_dq(const T *__restrict__ q, const T *__restrict__ k,
					const T *__restrict__ v, const float *__restrict__ lse,
					const float *__restrict__ delta, const T *__restrict__ dout,
					T *__restrict__ dq, int S, int H, int Hkv, int Dk, int Dv,
					float scale, int causal)
{
	__shared__ float as[AT][AC + 1], bs[AT][AC + 1];
	__shared__ float ps[AT][AT + 1];
	__shared__ float xs[AK][16 * NC];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int b = blockIdx.z, h = blockIdx.y;
	int i0 = (gridDim.x - 1 - blockIdx.x) * AT;
	int kh = h / (H / Hkv);
	long long ldq = (long long)H * Dk, ldk = (long long)Hkv * Dk;
	long long ldv = (long long)Hkv * Dv, ldo = (long long)H * Dv;
	const T *qb = q + ((long long)b * S + i0) * ldq + (long long)h * Dk;
	const T *gb = dout + ((long long)b * S + i0) * ldo + (long long)h * Dv;
	const T *kb = k + (long long)b * S * ldk + (long long)kh * Dk;
	const T *vb = v + (long long)b * S * ldv + (long long)kh * Dv;
	const float *lb = lse + ((long long)b * H + h) * S + i0;
	const float *db = delta + ((long long)b * H + h) * S + i0;
	int nq = min(AT, S - i0);
	float acc[4][NC], lr[4], dr[4];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int r = ty + 16 * i;
		lr[i] = r < nq ? lb[r] : 0.0f;
		dr[i] = r < nq ? db[r] : 0.0f;
#pragma unroll
		for (int c = 0; c < NC; c++)
			acc[i][c] = 0.0f;
	}
	int jend = causal ? i0 + nq : S;
	for (int j0 = 0; j0 < jend; j0 += AT) {
		int nk = min(AT, S - j0);
		float s[4][4] = {}, dp[4][4] = {};
		tile_scores(s, qb, ldq, nq, kb + j0 * ldk, ldk, nk, Dk, as, bs);
		tile_scores(dp, gb, ldo, nq, vb + j0 * ldv, ldv, nk, Dv, as, bs);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			int r = ty + 16 * i, qi = i0 + r;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int kj = j0 + tx + 16 * j;
				int ok = r < nq && kj < S && (!causal || kj <= qi);
				float p = ok ? __expf(s[i][j] * scale - lr[i]) : 0.0f;
				ps[r][tx + 16 * j] = p * (dp[i][j] - dr[i]);
			}
		}
		tile_accum<T, NC>(acc, ps, kb + j0 * ldk, ldk, nk, Dk, xs);
	}
	T *ob = dq + ((long long)b * S + i0) * ldq + (long long)h * Dk;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int r = ty + 16 * i;
		if (r >= nq)
			continue;
#pragma unroll
		for (int c = 0; c < NC; c++)
			if (tx + 16 * c < Dk)
				st(ob, r * ldq + tx + 16 * c, acc[i][c] * scale);
	}
}

template <typename T, int NC>
__device__ __forceinline__ void attn_dkv(const T *__restrict__ q, const T *__restrict__ k,
					 const T *__restrict__ v, const float *__restrict__ lse,
					 const float *__restrict__ delta, const T *__restrict__ dout,
					 T *__restrict__ dk, T *__restrict__ dv, int S, int H,
					 int Hkv, int Dk, int Dv, float scale, int causal)
{
	__shared__ float as[AT][AC + 1], bs[AT][AC + 1];
	__shared__ float ps[AT][AT + 1];
	__shared__ float xs[AK][16 * NC];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int b = blockIdx.z, kh = blockIdx.y, G = H / Hkv;
	int j0 = blockIdx.x * AT; /* the first key tiles see the most queries */
	long long ldq = (long long)H * Dk, ldk = (long long)Hkv * Dk;
	long long ldv = (long long)Hkv * Dv, ldo = (long long)H * Dv;
	const T *kb = k + ((long long)b * S + j0) * ldk + (long long)kh * Dk;
	const T *vb = v + ((long long)b * S + j0) * ldv + (long long)kh * Dv;
	int nk = min(AT, S - j0);
	float ak[4][NC], av[4][NC];
#pragma unroll
	for (int i = 0; i < 4; i++)
#pragma unroll
		for (int c = 0; c < NC; c++)
			ak[i][c] = av[i][c] = 0.0f;
	for (int h = kh * G; h < (kh + 1) * G; h++) {
		const T *qh = q + (long long)b * S * ldq + (long long)h * Dk;
		const T *gh = dout + (long long)b * S * ldo + (long long)h * Dv;
		const float *lb = lse + ((long long)b * H + h) * S;
		const float *db = delta + ((long long)b * H + h) * S;
		for (int i0 = causal ? j0 : 0; i0 < S; i0 += AT) {
			int nq = min(AT, S - i0);
			float lc[4], dc[4];
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int c = tx + 16 * j;
				lc[j] = c < nq ? lb[i0 + c] : 0.0f;
				dc[j] = c < nq ? db[i0 + c] : 0.0f;
			}
			/* transposed tiles: rows are keys, columns queries */
			float s[4][4] = {}, dp[4][4] = {};
			tile_scores(s, kb, ldk, nk, qh + i0 * ldq, ldq, nq, Dk, as, bs);
			tile_scores(dp, vb, ldv, nk, gh + i0 * ldo, ldo, nq, Dv, as, bs);
#pragma unroll
			for (int i = 0; i < 4; i++) {
				int kj = j0 + ty + 16 * i;
#pragma unroll
				for (int j = 0; j < 4; j++) {
					int qi = i0 + tx + 16 * j;
					int ok = tx + 16 * j < nq && kj < S && (!causal || kj <= qi);
					s[i][j] = ok ? __expf(s[i][j] * scale - lc[j]) : 0.0f;
					dp[i][j] = s[i][j] * (dp[i][j] - dc[j]);
					ps[ty + 16 * i][tx + 16 * j] = s[i][j];
				}
			}
			tile_accum<T, NC>(av, ps, gh + i0 * ldo, ldo, nq, Dv, xs);
			__syncthreads(); /* every thread is done reading p */
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++)
					ps[ty + 16 * i][tx + 16 * j] = dp[i][j];
			tile_accum<T, NC>(ak, ps, qh + i0 * ldq, ldq, nq, Dk, xs);
			__syncthreads(); /* ps is written again in the next round */
		}
	}
	T *kob = dk + ((long long)b * S + j0) * ldk + (long long)kh * Dk;
	T *vob = dv + ((long long)b * S + j0) * ldv + (long long)kh * Dv;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int r = ty + 16 * i;
		if (r >= nk)
			continue;
#pragma unroll
		for (int c = 0; c < NC; c++) {
			int d = tx + 16 * c;
			if (d < Dk)
				st(kob, r * ldk + d, ak[i][c] * scale);
			if (d < Dv)
				st(vob, r * ldv + d, av[i][c]);
		}
	}
}

/* --- grouped GEMM and its weight gradient -------------------------------------------- */

/* clamp(off[j], 0, R) of an i32 or i64 offsets array */
__device__ __forceinline__ int offset_at(const void *off, int i64, int j, int R)
{
	long long v = i64 ? ((const long long *)off)[j] : ((const int *)off)[j];
	return v < 0 ? 0 : v > R ? R : (int)v;
}

/* so[j] = the running maximum of the clamped offsets 0..j, for j <= E: the first warp
 * scans 32 at a time; the caller syncs */
__device__ __forceinline__ void load_offsets(int *so, const void *off, int i64, int E, int R)
{
	if (threadIdx.x >= 32)
		return;
	int lane = threadIdx.x, carry = 0;
	for (int base = 0; base <= E; base += 32) {
		int j = base + lane;
		int x = j <= E ? offset_at(off, i64, j, R) : 0;
		for (int d = 1; d < 32; d <<= 1) {
			int u = __shfl_up_sync(0xffffffffu, x, d);
			if (lane >= d)
				x = max(x, u);
		}
		x = max(x, carry);
		if (j <= E)
			so[j] = x;
		carry = __shfl_sync(0xffffffffu, x, 31);
	}
}

#define GT 64 /* rows and columns of an output tile */
#define GK 16 /* the reduction's chunk */

/* y[r, :] = x[r, :] . w_e (w_e [K,N], or [N,K] when trans_b) for the rows r of expert e;
 * rows of no expert zero.  Dynamic shared memory: E + 1 ints. */
template <typename T>
__device__ __forceinline__ void grouped(const T *__restrict__ x, const T *__restrict__ w,
					const void *__restrict__ off, int off_i64, T *__restrict__ y,
					int R, int K, int N, int E, int trans_b)
{
	extern __shared__ int so[];
	__shared__ float as[GK][GT + 1], bs[GK][GT + 1];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int r0 = blockIdx.x * GT, n0 = blockIdx.y * GT;
	load_offsets(so, off, off_i64, E, R);
	__syncthreads();
	float acc[4][4] = {};
	for (int e = 0; e < E; e++) {
		int lo = max(so[e], r0), hi = min(so[e + 1], r0 + GT);
		if (lo >= hi)
			continue;
		const T *we = w + (long long)e * K * N;
		for (int k0 = 0; k0 < K; k0 += GK) {
			__syncthreads();
			for (int t = threadIdx.x; t < GK * GT; t += 256) {
				int kk = t & 15, r = t >> 4, row = r0 + r;
				as[kk][r] = row >= lo && row < hi && k0 + kk < K
						    ? ld(x, (long long)row * K + k0 + kk) : 0.0f;
				int n, kb;
				if (trans_b) {
					kb = t & 15, n = t >> 4;
				} else {
					n = t & 63, kb = t >> 6;
				}
				float wv = 0.0f;
				if (n0 + n < N && k0 + kb < K)
					wv = trans_b ? ld(we, (long long)(n0 + n) * K + k0 + kb)
						     : ld(we, (long long)(k0 + kb) * N + n0 + n);
				bs[kb][n] = wv;
			}
			__syncthreads();
#pragma unroll
			for (int kk = 0; kk < GK; kk++) {
				float a[4], bb[4];
#pragma unroll
				for (int i = 0; i < 4; i++) {
					a[i] = as[kk][ty + 16 * i];
					bb[i] = bs[kk][tx + 16 * i];
				}
#pragma unroll
				for (int i = 0; i < 4; i++)
#pragma unroll
					for (int j = 0; j < 4; j++)
						acc[i][j] += a[i] * bb[j];
			}
		}
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int row = r0 + ty + 16 * i;
		if (row >= R)
			continue;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int n = n0 + tx + 16 * j;
			if (n < N)
				st(y, (long long)row * N + n, acc[i][j]);
		}
	}
}

/* dw_e = xs_e^T dy_e [K,N], or dy_e^T xs_e [N,K] when trans_b, over the rows of expert e
 * (zero for an empty expert): out[i][j] = sum over r of a[r][i] b[r][j] */
template <typename T>
__device__ __forceinline__ void wgrad(const T *__restrict__ xs, const T *__restrict__ dy,
				      const void *__restrict__ off, int off_i64, T *__restrict__ dw,
				      int R, int K, int N, int E, int trans_b)
{
	__shared__ int lim[2];
	__shared__ float as[GK][GT + 1], bs[GK][GT + 1];
	int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	int e = blockIdx.z;
	if (threadIdx.x < 2)
		lim[threadIdx.x] = 0;
	__syncthreads();
	/* the running maximum of the clamped offsets up to e and up to e + 1 */
	for (int j = threadIdx.x; j <= e + 1; j += 256) {
		int v = offset_at(off, off_i64, j, R);
		if (j <= e)
			atomicMax(&lim[0], v);
		atomicMax(&lim[1], v);
	}
	__syncthreads();
	int lo = lim[0], hi = lim[1];
	const T *a = trans_b ? dy : xs, *bm = trans_b ? xs : dy;
	int M = trans_b ? N : K, Nc = trans_b ? K : N;
	int i0 = blockIdx.y * GT, c0 = blockIdx.x * GT;
	float acc[4][4] = {};
	for (int r0 = lo; r0 < hi; r0 += GK) {
		__syncthreads();
		for (int t = threadIdx.x; t < GK * GT; t += 256) {
			int rr = t >> 6, cc = t & 63, r = r0 + rr;
			as[rr][cc] = r < hi && i0 + cc < M ? ld(a, (long long)r * M + i0 + cc) : 0.0f;
			bs[rr][cc] = r < hi && c0 + cc < Nc ? ld(bm, (long long)r * Nc + c0 + cc) : 0.0f;
		}
		__syncthreads();
#pragma unroll
		for (int rr = 0; rr < GK; rr++) {
			float x[4], y[4];
#pragma unroll
			for (int i = 0; i < 4; i++) {
				x[i] = as[rr][ty + 16 * i];
				y[i] = bs[rr][tx + 16 * i];
			}
#pragma unroll
			for (int i = 0; i < 4; i++)
#pragma unroll
				for (int j = 0; j < 4; j++)
					acc[i][j] += x[i] * y[j];
		}
	}
	T *out = dw + (long long)e * M * Nc;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		int row = i0 + ty + 16 * i;
		if (row >= M)
			continue;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int c = c0 + tx + 16 * j;
			if (c < Nc)
				st(out, (long long)row * Nc + c, acc[i][j]);
		}
	}
}

/* --- bf16 on tensor cores: mma.sync m16n8k16, operands through ldmatrix ----------------- */

/* A 128 x 128 output tile per block of 256 threads (8 warps as 2 x 4, a warp 64 x 32:
 * 4 x 4 products of m16n8k16 per 16 of the reduction), the reduction in chunks of 32
 * staged in shared memory by cp.async (16 bytes, zero-filled past the edges) with two
 * stages: the next chunk loads while this one multiplies.  An operand tile is either
 * "K-major" (its 128 rows, each 32 of the reduction contiguous: x, and w when trans_b)
 * or "MN-major" (32 reduction rows of 128 contiguous: w without trans_b, and both
 * operands of the weight gradient), read by ldmatrix with .trans for the latter.  Rows
 * padded by 8 halves so that ldmatrix's 8 row addresses fall in distinct banks.
 * Needs every row start 16-byte aligned: the caller checks (else the SIMT kernels). */
#define MT 128            /* output tile */
#define MKC 32            /* reduction chunk */
#define MSK (MKC + 8)     /* row stride of a K-major tile, halves */
#define MSN (MT + 8)      /* row stride of an MN-major tile, halves */
#define MTILE (MT * MSK)  /* halves per stage of either kind (MT * MSK >= MKC * MSN) */

__device__ __forceinline__ unsigned smem_u32(const void *p)
{
	return (unsigned)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp16(unsigned dst, const void *src, int ok)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
		     "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait()
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm4(const sl_bf16 *p, unsigned r[4])
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm4t(const sl_bf16 *p, unsigned r[4])
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}

__device__ __forceinline__ void mma16816(float c[4], const unsigned a[4], unsigned b0, unsigned b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Stage a K-major tile: rows row0 + 0..127 (valid when lo <= row < hi) of a row-major
 * matrix with row stride ld, reduction columns k0 .. k0 + 31 (valid below kn). */
__device__ __forceinline__ void stage_k(sl_bf16 *s, const sl_bf16 *base, long long ld, int row0,
					int lo, int hi, int k0, int kn)
{
	for (int q = threadIdx.x; q < MT * MKC / 8; q += 256) {
		int r = q >> 2, c = (q & 3) * 8, row = row0 + r, k = k0 + c;
		int ok = row >= lo && row < hi && k < kn;
		cp16(smem_u32(s + r * MSK + c), ok ? base + row * ld + k : base, ok);
	}
}

/* Stage an MN-major tile: reduction rows k0 .. k0 + 31 (valid when klo <= k < khi) of a
 * row-major matrix with row stride ld, columns col0 .. col0 + 127 (valid below cn). */
__device__ __forceinline__ void stage_mn(sl_bf16 *s, const sl_bf16 *base, long long ld, int k0,
					 int klo, int khi, int col0, int cn)
{
	for (int q = threadIdx.x; q < MKC * MT / 8; q += 256) {
		int r = q >> 4, c = (q & 15) * 8, k = k0 + r, col = col0 + c;
		int ok = k >= klo && k < khi && col < cn;
		cp16(smem_u32(s + r * MSN + c), ok ? base + k * ld + col : base, ok);
	}
}

/* acc += the products of one staged chunk; AK: a is K-major (else MN-major), BK likewise */
template <bool AK_, bool BK_>
__device__ __forceinline__ void mma_chunk(float acc[4][4][4], const sl_bf16 *sa, const sl_bf16 *sb)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
	int j = lane >> 3, r8 = lane & 7;
#pragma unroll
	for (int kk = 0; kk < MKC; kk += 16) {
		unsigned af[4][4], bf[4][2];
#pragma unroll
		for (int mi = 0; mi < 4; mi++) {
			int m = wm + mi * 16;
			if (AK_)
				ldsm4(sa + (m + (lane & 15)) * MSK + kk + (lane >> 4) * 8, af[mi]);
			else
				ldsm4t(sa + (kk + r8 + (j >> 1) * 8) * MSN + m + (j & 1) * 8, af[mi]);
		}
#pragma unroll
		for (int nj = 0; nj < 2; nj++) {
			int n = wn + nj * 16;
			unsigned r[4];
			if (BK_)
				ldsm4(sb + (n + r8 + (j >> 1) * 8) * MSK + kk + (j & 1) * 8, r);
			else
				ldsm4t(sb + (kk + r8 + (j & 1) * 8) * MSN + n + (j >> 1) * 8, r);
			bf[2 * nj][0] = r[0];
			bf[2 * nj][1] = r[1];
			bf[2 * nj + 1][0] = r[2];
			bf[2 * nj + 1][1] = r[3];
		}
#pragma unroll
		for (int mi = 0; mi < 4; mi++)
#pragma unroll
			for (int ni = 0; ni < 4; ni++)
				mma16816(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
	}
}

/* out[row][col] = acc for the warp's 64 x 32 of the tile at (row0, col0), rows below
 * rows and columns below cols (cols even: pairs stored as one word) */
__device__ __forceinline__ void mma_store(const float acc[4][4][4], sl_bf16 *out, long long ld,
					  int row0, int col0, int rows, int cols)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int g = lane >> 2, t = lane & 3;
#pragma unroll
	for (int mi = 0; mi < 4; mi++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			int row = row0 + (warp >> 2) * 64 + mi * 16 + g + 8 * h;
			if (row >= rows)
				continue;
#pragma unroll
			for (int ni = 0; ni < 4; ni++) {
				int col = col0 + (warp & 3) * 32 + ni * 8 + 2 * t;
				if (col >= cols)
					continue;
				unsigned lo = sl_f32_to_bf16(acc[mi][ni][2 * h]);
				unsigned hi = sl_f32_to_bf16(acc[mi][ni][2 * h + 1]);
				*(unsigned *)(out + row * ld + col) = lo | hi << 16;
			}
		}
}

/* the grouped GEMM on tensor cores: as grouped() above, 128 x 128 tiles; dynamic shared
 * memory: E + 1 ints */
template <bool TB>
__device__ __forceinline__ void grouped_mma(const sl_bf16 *__restrict__ x,
					    const sl_bf16 *__restrict__ w,
					    const void *__restrict__ off, int off_i64,
					    sl_bf16 *__restrict__ y, int R, int K, int N, int E,
					    sl_bf16 (*sa)[MTILE], sl_bf16 (*sb)[MTILE])
{
	extern __shared__ int so[];
	int r0 = blockIdx.x * MT, n0 = blockIdx.y * MT;
	load_offsets(so, off, off_i64, E, R);
	__syncthreads();
	float acc[4][4][4] = {};
	int nk = (K + MKC - 1) / MKC;
	for (int e = 0; e < E; e++) {
		int lo = max(so[e], r0), hi = min(so[e + 1], r0 + MT);
		if (lo >= hi || nk == 0)
			continue;
		const sl_bf16 *we = w + (long long)e * K * N;
		stage_k(sa[0], x, K, r0, lo, hi, 0, K);
		if (TB)
			stage_k(sb[0], we, K, n0, 0, N, 0, K);
		else
			stage_mn(sb[0], we, N, 0, 0, K, n0, N);
		cp_commit();
		for (int kt = 0; kt < nk; kt++) {
			int st = kt & 1;
			if (kt + 1 < nk) {
				int k0 = (kt + 1) * MKC;
				stage_k(sa[st ^ 1], x, K, r0, lo, hi, k0, K);
				if (TB)
					stage_k(sb[st ^ 1], we, K, n0, 0, N, k0, K);
				else
					stage_mn(sb[st ^ 1], we, N, k0, 0, K, n0, N);
				cp_commit();
				cp_wait<1>();
			} else {
				cp_wait<0>();
			}
			__syncthreads();
			mma_chunk<true, TB>(acc, sa[st], sb[st]);
			__syncthreads();
		}
	}
	mma_store(acc, y, N, r0, n0, R, N);
}

/* out[row][col] = acc in f32, as mma_store */
__device__ __forceinline__ void mma_store_f32(const float acc[4][4][4], float *out, long long ld,
					      int row0, int col0, int rows, int cols)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int g = lane >> 2, t = lane & 3;
#pragma unroll
	for (int mi = 0; mi < 4; mi++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			int row = row0 + (warp >> 2) * 64 + mi * 16 + g + 8 * h;
			if (row >= rows)
				continue;
#pragma unroll
			for (int ni = 0; ni < 4; ni++) {
				int col = col0 + (warp & 3) * 32 + ni * 8 + 2 * t;
				if (col >= cols)
					continue;
				*(float2 *)(out + row * ld + col) =
					make_float2(acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
			}
		}
}

/* The grouped GEMM of FP8 operands with DeepSeek-V3's scales (SCALED_GROUPED_MATMUL):
 * x and w hold E4M3 values widened to bf16 (exactly: every E4M3 value is a bf16 one),
 * sx one scale per 1x128 tile of x ([R][KB], KB = ceil(K/128)), sw one per 128x128
 * block of each expert's w ([E][KB][NB], or [E][NB][KB] when trans_b; NB = ceil(N/128)).
 * The products of each 128 of K are summed in f32 on their own, then scaled by the two
 * tiles' scales and added to the total (DeepSeek-V3's promotion): four chunks of 32.
 * The tensor cores run bf16 (the products of two E4M3 values are exact in f32), not
 * Hopper's FP8 instructions: FP8's arithmetic at bf16's speed.  y f32 or bf16. */
template <bool TB>
__device__ __forceinline__ void grouped_mma_fp8(const sl_bf16 *__restrict__ x,
						const sl_bf16 *__restrict__ w,
						const void *__restrict__ off, int off_i64,
						const float *__restrict__ sx,
						const float *__restrict__ sw, void *y, int y_f32,
						int R, int K, int N, int E,
						sl_bf16 (*sa)[MTILE], sl_bf16 (*sb)[MTILE])
{
	extern __shared__ int so[];
	int r0 = blockIdx.x * MT, n0 = blockIdx.y * MT, nb = n0 / 128;
	int KB = (K + 127) / 128, NB = (N + 127) / 128;
	load_offsets(so, off, off_i64, E, R);
	__syncthreads();
	float acc[4][4][4] = {}, part[4][4][4] = {};
	int nk = (K + MKC - 1) / MKC;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int rbase = r0 + (warp >> 2) * 64 + (lane >> 2);
	for (int e = 0; e < E; e++) {
		int lo = max(so[e], r0), hi = min(so[e + 1], r0 + MT);
		if (lo >= hi || nk == 0)
			continue;
		const sl_bf16 *we = w + (long long)e * K * N;
		stage_k(sa[0], x, K, r0, lo, hi, 0, K);
		if (TB)
			stage_k(sb[0], we, K, n0, 0, N, 0, K);
		else
			stage_mn(sb[0], we, N, 0, 0, K, n0, N);
		cp_commit();
		for (int kt = 0; kt < nk; kt++) {
			int st = kt & 1;
			if (kt + 1 < nk) {
				int k0 = (kt + 1) * MKC;
				stage_k(sa[st ^ 1], x, K, r0, lo, hi, k0, K);
				if (TB)
					stage_k(sb[st ^ 1], we, K, n0, 0, N, k0, K);
				else
					stage_mn(sb[st ^ 1], we, N, k0, 0, K, n0, N);
				cp_commit();
				cp_wait<1>();
			} else {
				cp_wait<0>();
			}
			__syncthreads();
			mma_chunk<true, TB>(part, sa[st], sb[st]);
			__syncthreads();
			if ((kt + 1) % (128 / MKC) && kt + 1 < nk)
				continue;
			/* a 128-block of K is summed: scale it into the total */
			int kb = kt / (128 / MKC);
			float s_w = sw[(long long)e * KB * NB + (TB ? (long long)nb * KB + kb
								   : (long long)kb * NB + nb)];
#pragma unroll
			for (int mi = 0; mi < 4; mi++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					int row = rbase + mi * 16 + 8 * h;
					float s = row >= lo && row < hi ? sx[(long long)row * KB + kb] * s_w
									: 0.0f;
#pragma unroll
					for (int ni = 0; ni < 4; ni++) {
						acc[mi][ni][2 * h] += part[mi][ni][2 * h] * s;
						acc[mi][ni][2 * h + 1] += part[mi][ni][2 * h + 1] * s;
						part[mi][ni][2 * h] = 0.0f;
						part[mi][ni][2 * h + 1] = 0.0f;
					}
				}
		}
	}
	if (y_f32)
		mma_store_f32(acc, (float *)y, N, r0, n0, R, N);
	else
		mma_store(acc, (sl_bf16 *)y, N, r0, n0, R, N);
}

/* expert e's rows [lim[0], lim[1]): the running maxima of the clamped offsets 0..e and
 * 0..e+1, by the whole block (lim in shared memory) */
__device__ __forceinline__ void expert_rows(const void *__restrict__ off, int off_i64, int e,
					    int R, int lim[2])
{
	if (threadIdx.x < 2)
		lim[threadIdx.x] = 0;
	__syncthreads();
	for (int j = threadIdx.x; j <= e + 1; j += 256) {
		int v = offset_at(off, off_i64, j, R);
		if (j <= e)
			atomicMax(&lim[0], v);
		atomicMax(&lim[1], v);
	}
	__syncthreads();
}

/* the weight gradient on tensor cores: out[i][j] = sum over expert e's rows r of
 * a[r][i] b[r][j], both operands MN-major */
__device__ __forceinline__ void wgrad_mma(const sl_bf16 *__restrict__ xs,
					  const sl_bf16 *__restrict__ dy,
					  const void *__restrict__ off, int off_i64,
					  sl_bf16 *__restrict__ dw, int R, int K, int N, int E,
					  int trans_b)
{
	__shared__ int lim[2];
	__shared__ __align__(16) sl_bf16 sa[2][MTILE], sb[2][MTILE];
	int e = blockIdx.z;
	expert_rows(off, off_i64, e, R, lim);
	int lo = lim[0], hi = lim[1];
	const sl_bf16 *a = trans_b ? dy : xs, *bm = trans_b ? xs : dy;
	int M = trans_b ? N : K, Nc = trans_b ? K : N;
	int i0 = blockIdx.y * MT, c0 = blockIdx.x * MT;
	float acc[4][4][4] = {};
	int nk = (hi - lo + MKC - 1) / MKC;
	if (nk > 0) {
		stage_mn(sa[0], a, M, lo, lo, hi, i0, M);
		stage_mn(sb[0], bm, Nc, lo, lo, hi, c0, Nc);
		cp_commit();
	}
	for (int kt = 0; kt < nk; kt++) {
		int st = kt & 1;
		if (kt + 1 < nk) {
			int k0 = lo + (kt + 1) * MKC;
			stage_mn(sa[st ^ 1], a, M, k0, lo, hi, i0, M);
			stage_mn(sb[st ^ 1], bm, Nc, k0, lo, hi, c0, Nc);
			cp_commit();
			cp_wait<1>();
		} else {
			cp_wait<0>();
		}
		__syncthreads();
		mma_chunk<false, false>(acc, sa[st], sb[st]);
		__syncthreads();
	}
	mma_store(acc, dw + (long long)e * M * Nc, Nc, i0, c0, M, Nc);
}

/* The experts' weight gradient of FP8 operands with DeepSeek-V3's scales
 * (SCALED_GROUPED_MATMUL_WGRAD): dw[e] = xs_e^T dy_e [K,N] over expert e's rows, xs
 * [R,K] and dy [R,N] E4M3 values widened to bf16 (exact), sx [RB][K] and sy [RB][N] one
 * scale per 128x1 tile (128 rows of one column; RB = ceil(R/128)).  The rows are taken
 * in chunks of 32 aligned to multiples of 32, so that a chunk lies within one 128-row
 * tile (a tile shared by two experts keeps its scale for both, as the reference does);
 * the products of a tile's rows are summed in f32 on their own, then scaled by
 * sx[tile][i] sy[tile][j] and added to the total.  dw f32 (y_f32) or bf16. */
__device__ __forceinline__ void wgrad_mma_fp8(const sl_bf16 *__restrict__ xs,
					      const sl_bf16 *__restrict__ dy,
					      const void *__restrict__ off, int off_i64,
					      const float *__restrict__ sx,
					      const float *__restrict__ sy, void *dw, int y_f32,
					      int R, int K, int N)
{
	__shared__ int lim[2];
	__shared__ __align__(16) sl_bf16 sa[2][MTILE], sb[2][MTILE];
	int e = blockIdx.z;
	expert_rows(off, off_i64, e, R, lim);
	int lo = lim[0], hi = lim[1], r0 = lo / MKC * MKC;
	int i0 = blockIdx.y * MT, c0 = blockIdx.x * MT;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	int ibase = i0 + (warp >> 2) * 64 + (lane >> 2), jbase = c0 + (warp & 3) * 32 + 2 * (lane & 3);
	float acc[4][4][4] = {}, part[4][4][4] = {};
	int nk = hi > lo ? (hi - r0 + MKC - 1) / MKC : 0;
	if (nk > 0) {
		stage_mn(sa[0], xs, K, r0, lo, hi, i0, K);
		stage_mn(sb[0], dy, N, r0, lo, hi, c0, N);
		cp_commit();
	}
	for (int kt = 0; kt < nk; kt++) {
		int st = kt & 1, r = r0 + kt * MKC;
		if (kt + 1 < nk) {
			stage_mn(sa[st ^ 1], xs, K, r + MKC, lo, hi, i0, K);
			stage_mn(sb[st ^ 1], dy, N, r + MKC, lo, hi, c0, N);
			cp_commit();
			cp_wait<1>();
		} else {
			cp_wait<0>();
		}
		__syncthreads();
		mma_chunk<false, false>(part, sa[st], sb[st]);
		__syncthreads();
		int tile = r / 128;
		if (kt + 1 < nk && (r + MKC) / 128 == tile)
			continue;
		/* the tile's rows are summed: scale them into the total */
		const float *stx = sx + (long long)tile * K, *sty = sy + (long long)tile * N;
#pragma unroll
		for (int mi = 0; mi < 4; mi++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				int i = ibase + mi * 16 + 8 * h;
				float si = i < K ? stx[i] : 0.0f;
#pragma unroll
				for (int ni = 0; ni < 4; ni++)
#pragma unroll
					for (int c = 0; c < 2; c++) {
						int j = jbase + ni * 8 + c;
						float s = j < N ? si * sty[j] : 0.0f;
						acc[mi][ni][2 * h + c] += part[mi][ni][2 * h + c] * s;
						part[mi][ni][2 * h + c] = 0.0f;
					}
			}
	}
	if (y_f32)
		mma_store_f32(acc, (float *)dw + (long long)e * K * N, N, i0, c0, K, N);
	else
		mma_store(acc, (sl_bf16 *)dw + (long long)e * K * N, N, i0, c0, K, N);
}

/* Attention forward in bf16 on tensor cores (FlashAttention-2's layout): 4 warps, each
 * owning 16 of the block's 64 queries; q's fragments stay in registers; per key tile of
 * 64, k and v are staged in shared memory by cp.async (v still loading while q k^T
 * multiplies), the scores (f32 accumulators) get the mask and the online softmax in
 * base 2 (scale log2 e folded in), and the probabilities, rounded to bf16, feed the
 * product with v straight from the accumulators (the C fragment of two n8 tiles is the
 * A fragment of one k16 step).  Head sizes fixed at compile time (DK, DV multiples of
 * 16); dynamic shared memory: 64 (DK + 8) + 64 (DV + 8) halves. */
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi)
{
	return (unsigned)sl_f32_to_bf16(lo) | (unsigned)sl_f32_to_bf16(hi) << 16;
}

template <int DK, int DV>
__device__ __forceinline__ void attn_fwd_mma(const sl_bf16 *__restrict__ q,
					     const sl_bf16 *__restrict__ k,
					     const sl_bf16 *__restrict__ v, sl_bf16 *__restrict__ o,
					     float *__restrict__ lse, int S, int H, int Hkv,
					     float scale, int causal)
{
	extern __shared__ __align__(16) unsigned char att_smem[];
	const int SK = DK + 8, SV = DV + 8;
	sl_bf16 *ks = (sl_bf16 *)att_smem, *vs = ks + 64 * SK;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	int j8 = lane >> 3, r8 = lane & 7;
	int b = blockIdx.z, h = blockIdx.y;
	int i0 = (gridDim.x - 1 - blockIdx.x) * 64;
	int kh = h / (H / Hkv);
	long long ldq = (long long)H * DK, ldk = (long long)Hkv * DK;
	long long ldv = (long long)Hkv * DV, ldo = (long long)H * DV;
	const sl_bf16 *qb = q + ((long long)b * S + i0) * ldq + (long long)h * DK;
	const sl_bf16 *kb = k + (long long)b * S * ldk + (long long)kh * DK;
	const sl_bf16 *vb = v + (long long)b * S * ldv + (long long)kh * DV;
	int nq = min(64, S - i0);

	/* q through the k buffer into registers */
	for (int c = threadIdx.x; c < 64 * DK / 8; c += 128) {
		int r = c / (DK / 8), col = c % (DK / 8) * 8, ok = r < nq;
		cp16(smem_u32(ks + r * SK + col), ok ? qb + r * ldq + col : qb, ok);
	}
	cp_commit();
	cp_wait<0>();
	__syncthreads();
	unsigned qf[DK / 16][4];
#pragma unroll
	for (int kk = 0; kk < DK / 16; kk++)
		ldsm4(ks + (warp * 16 + (lane & 15)) * SK + kk * 16 + (lane >> 4) * 8, qf[kk]);

	float oacc[DV / 8][4] = {};
	float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f;
	const float sl2 = scale * 1.4426950408889634f;
	int qi0 = i0 + warp * 16 + g, qi1 = qi0 + 8;
	int jend = causal ? i0 + nq : S;
	for (int j0 = 0; j0 < jend; j0 += 64) {
		int nk = min(64, S - j0);
		__syncthreads(); /* every warp is done with the buffers */
		for (int c = threadIdx.x; c < 64 * DK / 8; c += 128) {
			int r = c / (DK / 8), col = c % (DK / 8) * 8, ok = r < nk;
			cp16(smem_u32(ks + r * SK + col), ok ? kb + (j0 + r) * ldk + col : kb, ok);
		}
		cp_commit();
		for (int c = threadIdx.x; c < 64 * DV / 8; c += 128) {
			int r = c / (DV / 8), col = c % (DV / 8) * 8, ok = r < nk;
			cp16(smem_u32(vs + r * SV + col), ok ? vb + (j0 + r) * ldv + col : vb, ok);
		}
		cp_commit();
		cp_wait<1>();
		__syncthreads();
		float sc[8][4] = {};
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++)
#pragma unroll
			for (int nj = 0; nj < 4; nj++) {
				unsigned r[4];
				ldsm4(ks + (nj * 16 + r8 + (j8 >> 1) * 8) * SK + kk * 16 + (j8 & 1) * 8, r);
				mma16816(sc[2 * nj], qf[kk], r[0], r[1]);
				mma16816(sc[2 * nj + 1], qf[kk], r[2], r[3]);
			}
		float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
		for (int nb = 0; nb < 8; nb++)
#pragma unroll
			for (int e = 0; e < 2; e++) {
				int kj = j0 + nb * 8 + 2 * t + e;
				int ok0 = kj < S && (!causal || kj <= qi0);
				int ok1 = kj < S && (!causal || kj <= qi1);
				sc[nb][e] = ok0 ? sc[nb][e] * sl2 : NEG_INF;
				sc[nb][2 + e] = ok1 ? sc[nb][2 + e] * sl2 : NEG_INF;
				mx0 = fmaxf(mx0, sc[nb][e]);
				mx1 = fmaxf(mx1, sc[nb][2 + e]);
			}
		for (int d = 1; d < 4; d <<= 1) {
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, d));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, d));
		}
		float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
		float b0 = mn0 == NEG_INF ? 0.0f : mn0, b1 = mn1 == NEG_INF ? 0.0f : mn1;
		float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1), s0 = 0.0f, s1 = 0.0f;
#pragma unroll
		for (int nb = 0; nb < 8; nb++)
#pragma unroll
			for (int e = 0; e < 2; e++) {
				sc[nb][e] = exp2f(sc[nb][e] - b0);
				sc[nb][2 + e] = exp2f(sc[nb][2 + e] - b1);
				s0 += sc[nb][e];
				s1 += sc[nb][2 + e];
			}
		for (int d = 1; d < 4; d <<= 1) {
			s0 += __shfl_xor_sync(0xffffffffu, s0, d);
			s1 += __shfl_xor_sync(0xffffffffu, s1, d);
		}
		l0 = l0 * c0 + s0;
		l1 = l1 * c1 + s1;
		m0 = mn0;
		m1 = mn1;
#pragma unroll
		for (int nd = 0; nd < DV / 8; nd++) {
			oacc[nd][0] *= c0;
			oacc[nd][1] *= c0;
			oacc[nd][2] *= c1;
			oacc[nd][3] *= c1;
		}
		cp_wait<0>();
		__syncthreads();
#pragma unroll
		for (int kk = 0; kk < 4; kk++) {
			unsigned pa[4] = { pack_bf16(sc[2 * kk][0], sc[2 * kk][1]),
					   pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
					   pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
					   pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };
#pragma unroll
			for (int nd = 0; nd < DV / 16; nd++) {
				unsigned r[4];
				ldsm4t(vs + (kk * 16 + r8 + (j8 & 1) * 8) * SV + nd * 16 + (j8 >> 1) * 8, r);
				mma16816(oacc[2 * nd], pa, r[0], r[1]);
				mma16816(oacc[2 * nd + 1], pa, r[2], r[3]);
			}
		}
	}
	float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
	sl_bf16 *ob = o + (long long)b * S * ldo + (long long)h * DV;
#pragma unroll
	for (int nd = 0; nd < DV / 8; nd++) {
		int col = nd * 8 + 2 * t;
		if (qi0 < S)
			*(unsigned *)(ob + qi0 * ldo + col) = pack_bf16(oacc[nd][0] * inv0, oacc[nd][1] * inv0);
		if (qi1 < S)
			*(unsigned *)(ob + qi1 * ldo + col) = pack_bf16(oacc[nd][2] * inv1, oacc[nd][3] * inv1);
	}
	float *lb = lse + ((long long)b * H + h) * S;
	if (t == 0 && qi0 < S)
		lb[qi0] = (m0 + log2f(l0)) * 0.6931471805599453f;
	if (t == 0 && qi1 < S)
		lb[qi1] = (m1 + log2f(l1)) * 0.6931471805599453f;
}

/* Attention backward in bf16 on tensor cores: the two passes of the SIMT kernels (dq
 * per query tile; dk and dv per key tile over the group's heads and the query tiles
 * from the diagonal), with tiles of 32 rows against 32 so that the four operand tiles
 * (q, dout, k, v) fit the 48 KiB of shared memory a block gets without opting in.  Two
 * warps of 16 rows each.  Per pair of tiles: s = q k^T and dp = dout v^T on tensor
 * cores, p = exp(s - lse) and ds = p (dp - D) in f32 registers, then p and ds, rounded
 * to bf16, are the A operand of dq += ds k, dv += p^T dout, dk += ds^T q (in the second
 * pass the tiles are transposed: rows are keys).  lib.c takes it unless
 * $SLUICE_CUDA_ATTN_BWD_MMA=0. */

/* rows 0 .. n - 1 of a 32-row tile of D columns into shared memory (row stride SD),
 * zero past n */
template <int D, int SD>
__device__ __forceinline__ void stage32(sl_bf16 *s, const sl_bf16 *base, long long ld, int n)
{
	for (int c = threadIdx.x; c < 32 * D / 8; c += blockDim.x) {
		int r = c / (D / 8), col = c % (D / 8) * 8, ok = r < n;
		cp16(smem_u32(s + r * SD + col), ok ? base + r * ld + col : base, ok);
	}
}

/* c[4][4] += a (the warp's 16 rows of a K-major tile, stride SA) times b^T (32 rows of a
 * K-major tile, stride SB), over D */
template <int D, int SA, int SB>
__device__ __forceinline__ void mma_abt32(float c[4][4], const sl_bf16 *a, const sl_bf16 *b)
{
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j8 = lane >> 3, r8 = lane & 7;
#pragma unroll
	for (int kk = 0; kk < D / 16; kk++) {
		unsigned af[4];
		ldsm4(a + (warp * 16 + (lane & 15)) * SA + kk * 16 + (lane >> 4) * 8, af);
#pragma unroll
		for (int nj = 0; nj < 2; nj++) {
			unsigned r[4];
			ldsm4(b + (nj * 16 + r8 + (j8 >> 1) * 8) * SB + kk * 16 + (j8 & 1) * 8, r);
			mma16816(c[2 * nj], af, r[0], r[1]);
			mma16816(c[2 * nj + 1], af, r[2], r[3]);
		}
	}
}

/* acc[D/8][4] += w (the warp's 16 x 32 in C fragments, rounded to bf16) times x (32 rows
 * of an MN-major tile of D columns, stride SX) */
template <int D, int SX>
__device__ __forceinline__ void mma_wx32(float acc[][4], const float w[4][4], const sl_bf16 *x)
{
	int lane = threadIdx.x & 31, j8 = lane >> 3, r8 = lane & 7;
#pragma unroll
	for (int kq = 0; kq < 2; kq++) {
		unsigned pa[4] = { pack_bf16(w[2 * kq][0], w[2 * kq][1]),
				   pack_bf16(w[2 * kq][2], w[2 * kq][3]),
				   pack_bf16(w[2 * kq + 1][0], w[2 * kq + 1][1]),
				   pack_bf16(w[2 * kq + 1][2], w[2 * kq + 1][3]) };
#pragma unroll
		for (int nd = 0; nd < D / 16; nd++) {
			unsigned r[4];
			ldsm4t(x + (kq * 16 + r8 + (j8 & 1) * 8) * SX + nd * 16 + (j8 >> 1) * 8, r);
			mma16816(acc[2 * nd], pa, r[0], r[1]);
			mma16816(acc[2 * nd + 1], pa, r[2], r[3]);
		}
	}
}

template <int DK, int DV>
__device__ __forceinline__ void attn_dq_mma(const sl_bf16 *__restrict__ q,
					    const sl_bf16 *__restrict__ k,
					    const sl_bf16 *__restrict__ v,
					    const float *__restrict__ lse,
					    const float *__restrict__ delta,
					    const sl_bf16 *__restrict__ dout, sl_bf16 *__restrict__ dq,
					    int S, int H, int Hkv, float scale, int causal)
{
	extern __shared__ __align__(16) unsigned char att_smem[];
	const int SK = DK + 8, SV = DV + 8;
	sl_bf16 *qs = (sl_bf16 *)att_smem, *gs = qs + 32 * SK, *ks = gs + 32 * SV, *vs = ks + 32 * SK;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	int b = blockIdx.z, h = blockIdx.y;
	int i0 = (gridDim.x - 1 - blockIdx.x) * 32;
	int kh = h / (H / Hkv);
	long long ldq = (long long)H * DK, ldk = (long long)Hkv * DK;
	long long ldv = (long long)Hkv * DV, ldo = (long long)H * DV;
	const sl_bf16 *kb = k + (long long)b * S * ldk + (long long)kh * DK;
	const sl_bf16 *vb = v + (long long)b * S * ldv + (long long)kh * DV;
	int nq = min(32, S - i0);
	stage32<DK, DK + 8>(qs, q + ((long long)b * S + i0) * ldq + (long long)h * DK, ldq, nq);
	stage32<DV, DV + 8>(gs, dout + ((long long)b * S + i0) * ldo + (long long)h * DV, ldo, nq);
	cp_commit();
	const float log2e = 1.4426950408889634f, sl2 = scale * log2e;
	int qi0 = i0 + warp * 16 + g, qi1 = qi0 + 8;
	const float *lb = lse + ((long long)b * H + h) * S, *db = delta + ((long long)b * H + h) * S;
	float l0 = qi0 < S ? lb[qi0] * log2e : 0.0f, l1 = qi1 < S ? lb[qi1] * log2e : 0.0f;
	float d0 = qi0 < S ? db[qi0] : 0.0f, d1 = qi1 < S ? db[qi1] : 0.0f;
	float acc[DK / 8][4] = {};
	int jend = causal ? i0 + nq : S;
	for (int j0 = 0; j0 < jend; j0 += 32) {
		int nk = min(32, S - j0);
		__syncthreads();
		stage32<DK, DK + 8>(ks, kb + j0 * ldk, ldk, nk);
		stage32<DV, DV + 8>(vs, vb + j0 * ldv, ldv, nk);
		cp_commit();
		cp_wait<0>();
		__syncthreads();
		float sc[4][4] = {}, dp[4][4] = {};
		mma_abt32<DK, DK + 8, DK + 8>(sc, qs, ks);
		mma_abt32<DV, DV + 8, DV + 8>(dp, gs, vs);
#pragma unroll
		for (int nb = 0; nb < 4; nb++)
#pragma unroll
			for (int e = 0; e < 2; e++) {
				int kj = j0 + nb * 8 + 2 * t + e;
				int ok0 = qi0 < S && kj < S && (!causal || kj <= qi0);
				int ok1 = qi1 < S && kj < S && (!causal || kj <= qi1);
				float p0 = ok0 ? exp2f(sc[nb][e] * sl2 - l0) : 0.0f;
				float p1 = ok1 ? exp2f(sc[nb][2 + e] * sl2 - l1) : 0.0f;
				sc[nb][e] = p0 * (dp[nb][e] - d0);
				sc[nb][2 + e] = p1 * (dp[nb][2 + e] - d1);
			}
		mma_wx32<DK, DK + 8>(acc, sc, ks);
	}
	sl_bf16 *ob = dq + (long long)b * S * ldq + (long long)h * DK;
#pragma unroll
	for (int nd = 0; nd < DK / 8; nd++) {
		int col = nd * 8 + 2 * t;
		if (qi0 < S)
			*(unsigned *)(ob + qi0 * ldq + col) =
				pack_bf16(acc[nd][0] * scale, acc[nd][1] * scale);
		if (qi1 < S)
			*(unsigned *)(ob + qi1 * ldq + col) =
				pack_bf16(acc[nd][2] * scale, acc[nd][3] * scale);
	}
}

template <int DK, int DV>
__device__ __forceinline__ void attn_dkv_mma(const sl_bf16 *__restrict__ q,
					     const sl_bf16 *__restrict__ k,
					     const sl_bf16 *__restrict__ v,
					     const float *__restrict__ lse,
					     const float *__restrict__ delta,
					     const sl_bf16 *__restrict__ dout,
					     sl_bf16 *__restrict__ dk, sl_bf16 *__restrict__ dv, int S,
					     int H, int Hkv, float scale, int causal)
{
	extern __shared__ __align__(16) unsigned char att_smem[];
	const int SK = DK + 8, SV = DV + 8;
	sl_bf16 *ks = (sl_bf16 *)att_smem, *vs = ks + 32 * SK, *qs = vs + 32 * SV, *gs = qs + 32 * SK;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	int b = blockIdx.z, kh = blockIdx.y, G = H / Hkv;
	int j0 = blockIdx.x * 32; /* the first key tiles see the most queries */
	long long ldq = (long long)H * DK, ldk = (long long)Hkv * DK;
	long long ldv = (long long)Hkv * DV, ldo = (long long)H * DV;
	int nk = min(32, S - j0);
	stage32<DK, DK + 8>(ks, k + ((long long)b * S + j0) * ldk + (long long)kh * DK, ldk, nk);
	stage32<DV, DV + 8>(vs, v + ((long long)b * S + j0) * ldv + (long long)kh * DV, ldv, nk);
	cp_commit();
	const float log2e = 1.4426950408889634f, sl2 = scale * log2e;
	int kj0 = j0 + warp * 16 + g, kj1 = kj0 + 8;
	float ak[DK / 8][4] = {}, av[DV / 8][4] = {};
	for (int h = kh * G; h < (kh + 1) * G; h++) {
		const sl_bf16 *qh = q + (long long)b * S * ldq + (long long)h * DK;
		const sl_bf16 *gh = dout + (long long)b * S * ldo + (long long)h * DV;
		const float *lb = lse + ((long long)b * H + h) * S;
		const float *db = delta + ((long long)b * H + h) * S;
		for (int i0 = causal ? j0 : 0; i0 < S; i0 += 32) {
			int nq = min(32, S - i0);
			__syncthreads();
			stage32<DK, DK + 8>(qs, qh + i0 * ldq, ldq, nq);
			stage32<DV, DV + 8>(gs, gh + i0 * ldo, ldo, nq);
			cp_commit();
			float lq[4][2], dd[4][2];
#pragma unroll
			for (int nb = 0; nb < 4; nb++)
#pragma unroll
				for (int e = 0; e < 2; e++) {
					int qi = i0 + nb * 8 + 2 * t + e;
					lq[nb][e] = qi < S ? lb[qi] * log2e : 0.0f;
					dd[nb][e] = qi < S ? db[qi] : 0.0f;
				}
			cp_wait<0>();
			__syncthreads();
			/* transposed: rows are the warp's keys, columns the tile's queries */
			float sc[4][4] = {}, dp[4][4] = {};
			mma_abt32<DK, DK + 8, DK + 8>(sc, ks, qs);
			mma_abt32<DV, DV + 8, DV + 8>(dp, vs, gs);
#pragma unroll
			for (int nb = 0; nb < 4; nb++)
#pragma unroll
				for (int e = 0; e < 2; e++) {
					int qi = i0 + nb * 8 + 2 * t + e;
					int ok0 = qi < S && kj0 < S && (!causal || kj0 <= qi);
					int ok1 = qi < S && kj1 < S && (!causal || kj1 <= qi);
					float p0 = ok0 ? exp2f(sc[nb][e] * sl2 - lq[nb][e]) : 0.0f;
					float p1 = ok1 ? exp2f(sc[nb][2 + e] * sl2 - lq[nb][e]) : 0.0f;
					sc[nb][e] = p0;
					sc[nb][2 + e] = p1;
					dp[nb][e] = p0 * (dp[nb][e] - dd[nb][e]);
					dp[nb][2 + e] = p1 * (dp[nb][2 + e] - dd[nb][e]);
				}
			mma_wx32<DV, DV + 8>(av, sc, gs);
			mma_wx32<DK, DK + 8>(ak, dp, qs);
		}
	}
	sl_bf16 *kob = dk + (long long)b * S * ldk + (long long)kh * DK;
	sl_bf16 *vob = dv + (long long)b * S * ldv + (long long)kh * DV;
#pragma unroll
	for (int nd = 0; nd < DK / 8; nd++) {
		int col = nd * 8 + 2 * t;
		if (kj0 < S)
			*(unsigned *)(kob + kj0 * ldk + col) = pack_bf16(ak[nd][0] * scale, ak[nd][1] * scale);
		if (kj1 < S)
			*(unsigned *)(kob + kj1 * ldk + col) = pack_bf16(ak[nd][2] * scale, ak[nd][3] * scale);
	}
#pragma unroll
	for (int nd = 0; nd < DV / 8; nd++) {
		int col = nd * 8 + 2 * t;
		if (kj0 < S)
			*(unsigned *)(vob + kj0 * ldv + col) = pack_bf16(av[nd][0], av[nd][1]);
		if (kj1 < S)
			*(unsigned *)(vob + kj1 * ldv + col) = pack_bf16(av[nd][2], av[nd][3]);
	}
}

/* --- the entry points: extern "C" names per storage type and head-size bound ------------ */

#define ATTN_ENTRIES(T, TN, NC)                                                             \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_attn_fwd_##TN##_nc##NC(const T *q, const T *k, const T *v, T *o, float *lse, \
					 int S, int H, int Hkv, int Dk, int Dv, float scale,   \
					 int causal)                                           \
	{                                                                                   \
		attn_fwd<T, NC>(q, k, v, o, lse, S, H, Hkv, Dk, Dv, scale, causal);         \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_attn_dq_##TN##_nc##NC(const T *q, const T *k, const T *v, const float *lse, \
					const float *delta, const T *dout, T *dq, int S, int H, \
					int Hkv, int Dk, int Dv, float scale, int causal)      \
	{                                                                                   \
		attn_dq<T, NC>(q, k, v, lse, delta, dout, dq, S, H, Hkv, Dk, Dv, scale,     \
			       causal);                                                     \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_attn_dkv_##TN##_nc##NC(const T *q, const T *k, const T *v,                 \
					 const float *lse, const float *delta, const T *dout,  \
					 T *dk, T *dv, int S, int H, int Hkv, int Dk, int Dv,  \
					 float scale, int causal)                              \
	{                                                                                   \
		attn_dkv<T, NC>(q, k, v, lse, delta, dout, dk, dv, S, H, Hkv, Dk, Dv, scale, \
				causal);                                                    \
	}

#define TYPE_ENTRIES(T, TN)                                                                 \
	ATTN_ENTRIES(T, TN, 8)                                                              \
	ATTN_ENTRIES(T, TN, 16)                                                             \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_attn_delta_##TN(const T *o, const T *dout, float *delta, long long rows,   \
				   int S, int H, int Dv)                                      \
	{                                                                                   \
		attn_delta<T>(o, dout, delta, rows, S, H, Dv);                              \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_grouped_##TN(const T *x, const T *w, const void *off, int off_i64, T *y,    \
				int R, int K, int N, int E, int trans_b)                      \
	{                                                                                   \
		grouped<T>(x, w, off, off_i64, y, R, K, N, E, trans_b);                     \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(256)                                   \
		sl_wgrad_##TN(const T *xs, const T *dy, const void *off, int off_i64, T *dw,   \
			      int R, int K, int N, int E, int trans_b)                        \
	{                                                                                   \
		wgrad<T>(xs, dy, off, off_i64, dw, R, K, N, E, trans_b);                    \
	}

TYPE_ENTRIES(float, f32)
TYPE_ENTRIES(sl_bf16, bf16)

extern "C" __global__ void __launch_bounds__(256)
	sl_grouped_mma_bf16(const sl_bf16 *x, const sl_bf16 *w, const void *off, int off_i64,
			    sl_bf16 *y, int R, int K, int N, int E, int trans_b)
{
	__shared__ __align__(16) sl_bf16 sa[2][MTILE], sb[2][MTILE];
	if (trans_b)
		grouped_mma<true>(x, w, off, off_i64, y, R, K, N, E, sa, sb);
	else
		grouped_mma<false>(x, w, off, off_i64, y, R, K, N, E, sa, sb);
}

extern "C" __global__ void __launch_bounds__(256)
	sl_grouped_mma_fp8(const sl_bf16 *x, const sl_bf16 *w, const void *off, int off_i64,
			   const float *sx, const float *sw, void *y, int y_f32, int R, int K,
			   int N, int E, int trans_b)
{
	__shared__ __align__(16) sl_bf16 sa[2][MTILE], sb[2][MTILE];
	if (trans_b)
		grouped_mma_fp8<true>(x, w, off, off_i64, sx, sw, y, y_f32, R, K, N, E, sa, sb);
	else
		grouped_mma_fp8<false>(x, w, off, off_i64, sx, sw, y, y_f32, R, K, N, E, sa, sb);
}

extern "C" __global__ void __launch_bounds__(256)
	sl_wgrad_mma_bf16(const sl_bf16 *xs, const sl_bf16 *dy, const void *off, int off_i64,
			  sl_bf16 *dw, int R, int K, int N, int E, int trans_b)
{
	wgrad_mma(xs, dy, off, off_i64, dw, R, K, N, E, trans_b);
}

extern "C" __global__ void __launch_bounds__(256)
	sl_wgrad_mma_fp8(const sl_bf16 *xs, const sl_bf16 *dy, const void *off, int off_i64,
			 const float *sx, const float *sy, void *dw, int y_f32, int R, int K,
			 int N)
{
	wgrad_mma_fp8(xs, dy, off, off_i64, sx, sy, dw, y_f32, R, K, N);
}

#define ATTN_MMA_ENTRY(DK, DV)                                                              \
	extern "C" __global__ void __launch_bounds__(128)                                   \
		sl_attn_fwd_mma_bf16_d##DK##_##DV(const sl_bf16 *q, const sl_bf16 *k,         \
						  const sl_bf16 *v, sl_bf16 *o, float *lse,    \
						  int S, int H, int Hkv, float scale,          \
						  int causal)                                  \
	{                                                                                   \
		attn_fwd_mma<DK, DV>(q, k, v, o, lse, S, H, Hkv, scale, causal);            \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(64)                                    \
		sl_attn_dq_mma_bf16_d##DK##_##DV(const sl_bf16 *q, const sl_bf16 *k,          \
						 const sl_bf16 *v, const float *lse,           \
						 const float *delta, const sl_bf16 *dout,      \
						 sl_bf16 *dq, int S, int H, int Hkv,           \
						 float scale, int causal)                      \
	{                                                                                   \
		attn_dq_mma<DK, DV>(q, k, v, lse, delta, dout, dq, S, H, Hkv, scale, causal); \
	}                                                                                   \
	extern "C" __global__ void __launch_bounds__(64)                                    \
		sl_attn_dkv_mma_bf16_d##DK##_##DV(const sl_bf16 *q, const sl_bf16 *k,         \
						  const sl_bf16 *v, const float *lse,          \
						  const float *delta, const sl_bf16 *dout,     \
						  sl_bf16 *dk, sl_bf16 *dv, int S, int H,      \
						  int Hkv, float scale, int causal)            \
	{                                                                                   \
		attn_dkv_mma<DK, DV>(q, k, v, lse, delta, dout, dk, dv, S, H, Hkv, scale,   \
				     causal);                                               \
	}
ATTN_MMA_ENTRY(64, 64)
ATTN_MMA_ENTRY(128, 128)
ATTN_MMA_ENTRY(192, 128)
