/*
 * ref.c - the reference executor (see ref.h): the executable definition of every op
 * of ir/ops.def, written to be read, not to be fast.
 *
 * Conventions:
 *  - Each op is a plain function over raw arrays with its dimensions named, in the
 *    style of llm.c (matmul_forward(out, a, b, M, K, N, ...)); exec_op() unpacks the
 *    IR op into those arguments.  Backward helpers sit next to their forward op.
 *  - Float values are double arrays, integer values int64_t arrays.  An op that reads
 *    an integer value as numbers (e.g. CAST) gets a converted copy (in_double()).
 *  - Bad data that the IR cannot rule out (an index out of range, offsets that are not
 *    increasing) is an error of the run, reported with the op and its location.
 */
#include "ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "runtime/rt.h"

struct ref_exec {
	const struct ir_graph *g;
	int n;           /* values of the graph when the executor was made */
	double **d;      /* float values, by value id */
	int64_t **iv;    /* integer values, by value id */
	unsigned char *bound;
	/* the op being run, for messages */
	const struct ir_op *cur;
	FILE *err;
};

/* --- dtypes ------------------------------------------------------------------------- */

static int is_int(enum ir_dtype t)
{
	return !ir_dtype_is_float(t);
}

/* Round x to a binary float format with `prec` bits of precision (implicit bit
 * included), smallest normal exponent emin (subnormals below it) and largest finite
 * value maxv.  Ties go to even through nearbyint() in the default rounding mode.
 * Beyond maxv: saturate gives +-maxv (the FP8 formats, as DeepSeek-V3 and Transformer
 * Engine cast: scaled so that a tile's max-abs lands on the largest value, anything
 * past it clamps; infinities too), else +-infinity.  NaN stays NaN. */
static double round_format(double x, int prec, int emin, double maxv, int saturate)
{
	if (x == 0 || isnan(x))
		return x;
	if (isinf(x))
		return saturate ? copysign(maxv, x) : x;
	int e;
	frexp(x, &e); /* x = m * 2^e, 0.5 <= |m| < 1: the leading bit has exponent e-1 */
	int lead = e - 1 < emin ? emin : e - 1;
	double q = ldexp(1.0, lead - (prec - 1));
	double r = nearbyint(x / q) * q;
	if (fabs(r) > maxv)
		return saturate ? copysign(maxv, x) : copysign(INFINITY, x);
	return r;
}

double ref_round(double x, enum ir_dtype t)
{
	switch (t) {
	case IR_BF16: return round_format(x, 8, -126, 0x1.FEp127, 0);
	case IR_F16: return round_format(x, 11, -14, 65504.0, 0);
	case IR_F8E4M3: return round_format(x, 4, -6, 448.0, 1);
	case IR_F8E5M2: return round_format(x, 3, -14, 57344.0, 1);
	default: return x;
	}
}

/* --- shapes and strides ------------------------------------------------------------- */

static int64_t numel(const struct ir_shape *s)
{
	int64_t n = 1;
	for (int i = 0; i < s->rank; i++)
		n *= s->dim[i];
	return n;
}

/* product of dims [from, to) */
static int64_t dims_prod(const struct ir_shape *s, int from, int to)
{
	int64_t n = 1;
	for (int i = from; i < to; i++)
		n *= s->dim[i];
	return n;
}

static int64_t last_dim(const struct ir_shape *s)
{
	return s->rank ? s->dim[s->rank - 1] : 1;
}

static void strides_of(const struct ir_shape *s, int64_t *st)
{
	int64_t acc = 1;
	for (int i = s->rank - 1; i >= 0; i--) {
		st[i] = acc;
		acc *= s->dim[i];
	}
}

/* Strides that read `in` at each index of `out` under numpy broadcasting (dims
 * aligned on the right; a dim of 1, or a missing one, gets stride 0). */
static void bcast_strides(const struct ir_shape *in, const struct ir_shape *out, int64_t *st)
{
	int64_t ist[IR_MAX_RANK];
	strides_of(in, ist);
	for (int d = 0; d < out->rank; d++) {
		int j = d - (out->rank - in->rank);
		st[d] = j < 0 || in->dim[j] == 1 ? 0 : ist[j];
	}
}

/* An odometer over a shape carrying one running offset per operand. */
#define IT_MAX 3
struct iter {
	int rank, nop;
	int64_t dim[IR_MAX_RANK], idx[IR_MAX_RANK];
	int64_t st[IT_MAX][IR_MAX_RANK];
	int64_t off[IT_MAX];
};

static void iter_init(struct iter *it, const struct ir_shape *s, int nop)
{
	memset(it, 0, sizeof *it);
	it->rank = s->rank;
	it->nop = nop;
	for (int d = 0; d < s->rank; d++)
		it->dim[d] = s->dim[d];
}

static void iter_next(struct iter *it)
{
	for (int d = it->rank - 1; d >= 0; d--) {
		it->idx[d]++;
		for (int k = 0; k < it->nop; k++)
			it->off[k] += it->st[k][d];
		if (it->idx[d] < it->dim[d])
			return;
		for (int k = 0; k < it->nop; k++)
			it->off[k] -= it->st[k][d] * it->dim[d];
		it->idx[d] = 0;
	}
}

/* --- elementwise ---------------------------------------------------------------------- */

static double unary(enum ir_opkind k, double x, double alpha, double beta)
{
	switch (k) {
	case IR_OP_NEG: return -x;
	case IR_OP_EXP: return exp(x);
	case IR_OP_LOG: return log(x);
	case IR_OP_SQRT: return sqrt(x);
	case IR_OP_RSQRT: return 1.0 / sqrt(x);
	case IR_OP_RECIP: return 1.0 / x;
	case IR_OP_SQUARE: return x * x;
	case IR_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
	case IR_OP_SILU: return x / (1.0 + exp(-x));
	case IR_OP_TANH: return tanh(x);
	case IR_OP_RELU: return x > 0 ? x : 0;
	case IR_OP_SCALE: return alpha * x + beta;
	default: return x; /* CAST, STOP_GRAD */
	}
}

static double binary(enum ir_opkind k, double a, double b)
{
	switch (k) {
	case IR_OP_ADD: return a + b;
	case IR_OP_SUB: return a - b;
	case IR_OP_MUL: return a * b;
	default: return a / b;
	}
}

static void unary_forward(double *out, const double *x, int64_t n, enum ir_opkind k,
			  double alpha, double beta)
{
	for (int64_t i = 0; i < n; i++)
		out[i] = unary(k, x[i], alpha, beta);
}

static void binary_forward(double *out, const struct ir_shape *os, const double *a,
			   const struct ir_shape *as, const double *b,
			   const struct ir_shape *bs, enum ir_opkind k)
{
	struct iter it;
	iter_init(&it, os, 2);
	bcast_strides(as, os, it.st[0]);
	bcast_strides(bs, os, it.st[1]);
	int64_t n = numel(os);
	for (int64_t i = 0; i < n; i++, iter_next(&it))
		out[i] = binary(k, a[it.off[0]], b[it.off[1]]);
}

/* d/dx silu(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static void silu_backward(double *dx, const double *x, const double *dy, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		double s = 1.0 / (1.0 + exp(-x[i]));
		dx[i] = dy[i] * s * (1.0 + x[i] * (1.0 - s));
	}
}

static void relu_backward(double *dx, const double *x, const double *dy, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		dx[i] = x[i] > 0 ? dy[i] : 0;
}

/* --- reductions: the input seen as [outer, n, inner], reduced over n ------------------- */

static void reduce_forward(double *out, const double *x, int64_t outer, int64_t n,
			   int64_t inner, enum ir_opkind k)
{
	for (int64_t o = 0; o < outer; o++)
		for (int64_t i = 0; i < inner; i++) {
			const double *p = x + o * n * inner + i;
			double acc = k == IR_OP_REDUCE_MAX ? -INFINITY : 0;
			for (int64_t j = 0; j < n; j++)
				acc = k == IR_OP_REDUCE_MAX ? (p[j * inner] > acc ? p[j * inner] : acc)
							    : acc + p[j * inner];
			if (k == IR_OP_REDUCE_MEAN)
				acc /= (double)n;
			out[o * inner + i] = acc;
		}
}

/* dy goes to the first maximal entry of each reduced line */
static void reduce_max_backward(double *dx, const double *x, const double *dy,
				int64_t outer, int64_t n, int64_t inner)
{
	for (int64_t o = 0; o < outer; o++)
		for (int64_t i = 0; i < inner; i++) {
			const double *p = x + o * n * inner + i;
			int64_t best = 0;
			for (int64_t j = 1; j < n; j++)
				if (p[j * inner] > p[best * inner])
					best = j;
			for (int64_t j = 0; j < n; j++)
				dx[o * n * inner + j * inner + i] = j == best ? dy[o * inner + i] : 0;
		}
}

/* out (small) += x (big) over the broadcast dims */
static void sum_to_forward(double *out, const struct ir_shape *os, const double *x,
			   const struct ir_shape *xs)
{
	memset(out, 0, sizeof *out * (size_t)numel(os));
	struct iter it;
	iter_init(&it, xs, 1);
	bcast_strides(os, xs, it.st[0]);
	int64_t n = numel(xs);
	for (int64_t i = 0; i < n; i++, iter_next(&it))
		out[it.off[0]] += x[i];
}

static void broadcast_forward(double *out, const struct ir_shape *os, const double *x,
			      const struct ir_shape *xs)
{
	struct iter it;
	iter_init(&it, os, 1);
	bcast_strides(xs, os, it.st[0]);
	int64_t n = numel(os);
	for (int64_t i = 0; i < n; i++, iter_next(&it))
		out[i] = x[it.off[0]];
}

/* --- shape ops ------------------------------------------------------------------------ */

static void transpose_forward(double *out, const struct ir_shape *os, const double *x,
			      const struct ir_shape *xs, const int64_t *perm)
{
	int64_t xst[IR_MAX_RANK];
	strides_of(xs, xst);
	struct iter it;
	iter_init(&it, os, 1);
	for (int d = 0; d < os->rank; d++)
		it.st[0][d] = xst[perm[d]];
	int64_t n = numel(os);
	for (int64_t i = 0; i < n; i++, iter_next(&it))
		out[i] = x[it.off[0]];
}

/* x [outer, L_in, inner] -> out [outer, L, inner], rows start .. start+L-1 */
static void slice_forward(double *out, const double *x, int64_t outer, int64_t L_in,
			  int64_t L, int64_t inner, int64_t start)
{
	for (int64_t o = 0; o < outer; o++)
		memcpy(out + o * L * inner, x + (o * L_in + start) * inner,
		       sizeof *out * (size_t)(L * inner));
}

/* --- matmul --------------------------------------------------------------------------- */

/* out[M,N] = op(a) op(b); op(a) is [M,K] (a stored [K,M] when ta), op(b) is [K,N]
 * (b stored [N,K] when tb). */
static void matmul_forward(double *out, const double *a, const double *b, int64_t M,
			   int64_t K, int64_t N, int ta, int tb)
{
	/* op(a)[m,k] = a[m*am + k*ak], op(b)[k,n] = b[k*bk + n*bn].  Each output sums
	 * its products in the order k = 0, 1, ...; the loop order only decides which
	 * memory is walked contiguously (rows of b unless b is stored transposed). */
	int64_t am = ta ? 1 : K, ak = ta ? M : 1, bk = tb ? 1 : N, bn = tb ? K : 1;
	for (int64_t m = 0; m < M; m++) {
		double *o = out + m * N;
		if (tb) {
			for (int64_t n = 0; n < N; n++) {
				double acc = 0;
				for (int64_t k = 0; k < K; k++)
					acc += a[m * am + k * ak] * b[k * bk + n * bn];
				o[n] = acc;
			}
			continue;
		}
		for (int64_t n = 0; n < N; n++)
			o[n] = 0;
		for (int64_t k = 0; k < K; k++) {
			double av = a[m * am + k * ak];
			for (int64_t n = 0; n < N; n++)
				o[n] += av * b[k * bk + n];
		}
	}
}

/* --- softmax ---------------------------------------------------------------------------- */

/* x [rows, V]; causal: row r of each [S, V] matrix sees columns 0..r only */
static void softmax_forward(double *y, const double *x, int64_t rows, int64_t V,
			    int64_t S, int causal)
{
	for (int64_t r = 0; r < rows; r++) {
		const double *xr = x + r * V;
		double *yr = y + r * V;
		int64_t n = causal ? (r % S) + 1 : V;
		if (n > V)
			n = V;
		double mx = -INFINITY;
		for (int64_t j = 0; j < n; j++)
			mx = xr[j] > mx ? xr[j] : mx;
		double sum = 0;
		for (int64_t j = 0; j < n; j++) {
			yr[j] = exp(xr[j] - mx);
			sum += yr[j];
		}
		for (int64_t j = 0; j < V; j++)
			yr[j] = j < n ? yr[j] / sum : 0;
	}
}

static void softmax_backward(double *dx, const double *y, const double *dy, int64_t rows,
			     int64_t V, int64_t S, int causal)
{
	for (int64_t r = 0; r < rows; r++) {
		const double *yr = y + r * V, *dyr = dy + r * V;
		int64_t n = causal ? (r % S) + 1 : V;
		if (n > V)
			n = V;
		double dot = 0;
		for (int64_t j = 0; j < n; j++)
			dot += dyr[j] * yr[j];
		for (int64_t j = 0; j < V; j++)
			dx[r * V + j] = j < n ? yr[j] * (dyr[j] - dot) : 0;
	}
}

/* --- attention ----------------------------------------------------------------------------- */

/* q [B,S,H,Dk], k [B,S,Hkv,Dk], v [B,S,Hkv,Dv]; query head h reads kv head h / (H/Hkv).
 * One row of scores at a time (s, S long): the S x S matrix is never stored. */
static double attention_scores(double *s, const double *q, const double *k, int64_t b,
			       int64_t i, int64_t h, int64_t S, int64_t H, int64_t Hkv,
			       int64_t Dk, double scale, int64_t n)
{
	const double *qi = q + ((b * S + i) * H + h) * Dk;
	int64_t kh = h / (H / Hkv);
	double mx = -INFINITY;
	for (int64_t j = 0; j < n; j++) {
		const double *kj = k + ((b * S + j) * Hkv + kh) * Dk;
		double acc = 0;
		for (int64_t d = 0; d < Dk; d++)
			acc += qi[d] * kj[d];
		s[j] = scale * acc;
		mx = s[j] > mx ? s[j] : mx;
	}
	return mx;
}

static void attention_forward(double *out, double *lse, const double *q, const double *k,
			      const double *v, int64_t B, int64_t S, int64_t H, int64_t Hkv,
			      int64_t Dk, int64_t Dv, double scale, int causal)
{
	double *s = rt_malloc(sizeof *s * (size_t)(S ? S : 1));
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				int64_t n = causal ? i + 1 : S, kh = h / (H / Hkv);
				double mx = attention_scores(s, q, k, b, i, h, S, H, Hkv, Dk, scale, n);
				double sum = 0;
				for (int64_t j = 0; j < n; j++)
					sum += exp(s[j] - mx);
				double l = mx + log(sum);
				lse[(b * H + h) * S + i] = l;
				double *o = out + ((b * S + i) * H + h) * Dv;
				for (int64_t c = 0; c < Dv; c++)
					o[c] = 0;
				for (int64_t j = 0; j < n; j++) {
					double pj = exp(s[j] - l);
					const double *vj = v + ((b * S + j) * Hkv + kh) * Dv;
					for (int64_t c = 0; c < Dv; c++)
						o[c] += pj * vj[c];
				}
			}
	free(s);
}

/* p = exp(s - lse) from the saved lse; D = dout . out per row; ds = p (dp - D) */
static void attention_backward(double *dq, double *dk, double *dv, const double *q,
			       const double *k, const double *v, const double *out,
			       const double *lse, const double *dout, int64_t B, int64_t S,
			       int64_t H, int64_t Hkv, int64_t Dk, int64_t Dv, double scale,
			       int causal)
{
	double *s = rt_malloc(sizeof *s * (size_t)(S ? S : 1));
	memset(dq, 0, sizeof *dq * (size_t)(B * S * H * Dk));
	memset(dk, 0, sizeof *dk * (size_t)(B * S * Hkv * Dk));
	memset(dv, 0, sizeof *dv * (size_t)(B * S * Hkv * Dv));
	for (int64_t b = 0; b < B; b++)
		for (int64_t h = 0; h < H; h++)
			for (int64_t i = 0; i < S; i++) {
				int64_t n = causal ? i + 1 : S, kh = h / (H / Hkv);
				int64_t qo = ((b * S + i) * H + h);
				attention_scores(s, q, k, b, i, h, S, H, Hkv, Dk, scale, n);
				double l = lse[(b * H + h) * S + i];
				const double *doi = dout + qo * Dv, *oi = out + qo * Dv;
				double D = 0;
				for (int64_t c = 0; c < Dv; c++)
					D += doi[c] * oi[c];
				for (int64_t j = 0; j < n; j++) {
					int64_t ko = (b * S + j) * Hkv + kh;
					const double *vj = v + ko * Dv;
					double pj = exp(s[j] - l), dp = 0;
					for (int64_t c = 0; c < Dv; c++)
						dp += doi[c] * vj[c];
					double ds = pj * (dp - D);
					for (int64_t c = 0; c < Dv; c++)
						dv[ko * Dv + c] += pj * doi[c];
					for (int64_t d = 0; d < Dk; d++) {
						dq[qo * Dk + d] += scale * ds * k[ko * Dk + d];
						dk[ko * Dk + d] += scale * ds * q[qo * Dk + d];
					}
				}
			}
	free(s);
}

/* --- rope ------------------------------------------------------------------------------ */

/* x [B,S,H,D]: pairs (i, i+D/2) rotated by s * theta^(-2i/D) (negated when inverse) */
static void rope_forward(double *y, const double *x, int64_t B, int64_t S, int64_t H,
			 int64_t D, double theta, int inverse)
{
	int64_t half = D / 2;
	for (int64_t b = 0; b < B; b++)
		for (int64_t s = 0; s < S; s++)
			for (int64_t h = 0; h < H; h++) {
				const double *xp = x + ((b * S + s) * H + h) * D;
				double *yp = y + ((b * S + s) * H + h) * D;
				for (int64_t i = 0; i < half; i++) {
					double ang = (double)s * pow(theta, -2.0 * (double)i / (double)D);
					if (inverse)
						ang = -ang;
					double c = cos(ang), sn = sin(ang);
					double x1 = xp[i], x2 = xp[i + half];
					yp[i] = x1 * c - x2 * sn;
					yp[i + half] = x1 * sn + x2 * c;
				}
			}
}

/* --- embedding rows ----------------------------------------------------------------------- */

static void gather_rows_forward(double *out, const double *table, const int64_t *idx,
				int64_t N, int64_t D)
{
	for (int64_t n = 0; n < N; n++)
		memcpy(out + n * D, table + idx[n] * D, sizeof *out * (size_t)D);
}

static void scatter_rows_forward(double *out, const double *dy, const int64_t *idx,
				 int64_t N, int64_t V, int64_t D)
{
	memset(out, 0, sizeof *out * (size_t)(V * D));
	for (int64_t n = 0; n < N; n++)
		for (int64_t d = 0; d < D; d++)
			out[idx[n] * D + d] += dy[n * D + d];
}

/* --- cross entropy ------------------------------------------------------------------------ */

static double logsumexp(const double *x, int64_t V)
{
	double mx = -INFINITY;
	for (int64_t v = 0; v < V; v++)
		mx = x[v] > mx ? x[v] : mx;
	double s = 0;
	for (int64_t v = 0; v < V; v++)
		s += exp(x[v] - mx);
	return mx + log(s);
}

/* mean over the targets that are not ignored (< 0); 0 when all are ignored */
static double cross_entropy_forward(const double *logits, const int64_t *targets,
				    int64_t N, int64_t V)
{
	double sum = 0;
	int64_t count = 0;
	for (int64_t n = 0; n < N; n++) {
		if (targets[n] < 0)
			continue;
		sum += logsumexp(logits + n * V, V) - logits[n * V + targets[n]];
		count++;
	}
	return count ? sum / (double)count : 0;
}

static void cross_entropy_backward(double *dlogits, const double *logits,
				   const int64_t *targets, double dloss, int64_t N, int64_t V)
{
	int64_t count = 0;
	for (int64_t n = 0; n < N; n++)
		count += targets[n] >= 0;
	for (int64_t n = 0; n < N; n++) {
		double *dl = dlogits + n * V;
		if (targets[n] < 0) {
			memset(dl, 0, sizeof *dl * (size_t)V);
			continue;
		}
		double lse = logsumexp(logits + n * V, V);
		for (int64_t v = 0; v < V; v++)
			dl[v] = dloss / (double)count *
				(exp(logits[n * V + v] - lse) - (v == targets[n]));
	}
}

/* --- routing ----------------------------------------------------------------------------- */

/* indices of the k largest of each row, largest first, ties to the lower index */
static void topk_forward(int64_t *out, const double *x, int64_t N, int64_t E, int64_t k)
{
	unsigned char *taken = rt_calloc((size_t)E, 1);
	for (int64_t n = 0; n < N; n++) {
		memset(taken, 0, (size_t)E);
		const double *xr = x + n * E;
		for (int64_t j = 0; j < k; j++) {
			int64_t best = -1;
			for (int64_t e = 0; e < E; e++)
				if (!taken[e] && (best < 0 || xr[e] > xr[best]))
					best = e;
			taken[best] = 1;
			out[n * k + j] = best;
		}
	}
	free(taken);
}

static void take_along_forward(double *out, const double *x, const int64_t *idx,
			       int64_t N, int64_t E, int64_t k)
{
	for (int64_t n = 0; n < N; n++)
		for (int64_t j = 0; j < k; j++)
			out[n * k + j] = x[n * E + idx[n * k + j]];
}

static void put_along_forward(double *out, const double *v, const int64_t *idx,
			      int64_t N, int64_t E, int64_t k)
{
	memset(out, 0, sizeof *out * (size_t)(N * E));
	for (int64_t n = 0; n < N; n++)
		for (int64_t j = 0; j < k; j++)
			out[n * E + idx[n * k + j]] += v[n * k + j];
}

/* idx [G, per_group] -> counts [G, E] */
static void expert_count_forward(double *out, const int64_t *idx, int64_t G,
				 int64_t per_group, int64_t E)
{
	memset(out, 0, sizeof *out * (size_t)(G * E));
	for (int64_t gi = 0; gi < G; gi++)
		for (int64_t i = 0; i < per_group; i++)
			out[gi * E + idx[gi * per_group + i]] += 1;
}

/* x [N,D], idx [N,k] -> xs [N*k,D] sorted by expert (stable), offsets [E+1], perm [N*k] */
static void moe_dispatch_forward(double *xs, int64_t *offsets, int64_t *perm,
				 const double *x, const int64_t *idx, int64_t N, int64_t D,
				 int64_t k, int64_t E)
{
	memset(offsets, 0, sizeof *offsets * (size_t)(E + 1));
	for (int64_t c = 0; c < N * k; c++)
		offsets[idx[c] + 1]++;
	for (int64_t e = 0; e < E; e++)
		offsets[e + 1] += offsets[e];
	int64_t *pos = rt_malloc(sizeof *pos * (size_t)(E ? E : 1));
	memcpy(pos, offsets, sizeof *pos * (size_t)E);
	for (int64_t c = 0; c < N * k; c++) {
		int64_t r = pos[idx[c]]++;
		perm[r] = c;
		memcpy(xs + r * D, x + (c / k) * D, sizeof *xs * (size_t)D);
	}
	free(pos);
}

/* dx[n] = sum over the rows r holding a choice of token n of dxs[r] */
static void moe_undispatch_forward(double *dx, const double *dxs, const int64_t *perm,
				   int64_t R, int64_t N, int64_t D, int64_t k)
{
	memset(dx, 0, sizeof *dx * (size_t)(N * D));
	for (int64_t r = 0; r < R; r++)
		for (int64_t d = 0; d < D; d++)
			dx[(perm[r] / k) * D + d] += dxs[r * D + d];
}

/* xs [R,K] times w[e] ([K,N], or [N,K] when tb) for the rows of expert e */
static void grouped_matmul_forward(double *out, const double *xs, const double *w,
				   const int64_t *offsets, int64_t R, int64_t K, int64_t N,
				   int64_t E, int tb)
{
	memset(out, 0, sizeof *out * (size_t)(R * N));
	for (int64_t e = 0; e < E; e++) {
		int64_t r0 = offsets[e], r1 = offsets[e + 1];
		matmul_forward(out + r0 * N, xs + r0 * K, w + e * K * N, r1 - r0, K, N, 0, tb);
	}
}

/* dw[e] = xs[rows of e]^T dy[rows of e] ([K,N]; stored [N,K] when tb) */
static void grouped_matmul_wgrad(double *dw, const double *xs, const double *dy,
				 const int64_t *offsets, int64_t K, int64_t N, int64_t E, int tb)
{
	for (int64_t e = 0; e < E; e++) {
		int64_t r0 = offsets[e], rows = offsets[e + 1] - r0;
		if (tb) /* [N,K] = dy^T xs */
			matmul_forward(dw + e * K * N, dy + r0 * N, xs + r0 * K, N, rows, K, 1, 0);
		else
			matmul_forward(dw + e * K * N, xs + r0 * K, dy + r0 * N, K, rows, N, 1, 0);
	}
}

/* y[n] = sum_j gates[n,j] * ys[r(n,j)], r(n,j) the row with perm[r] = n*k + j */
static void moe_combine_forward(double *y, const double *ys, const int64_t *perm,
				const double *gates, int64_t R, int64_t N, int64_t D, int64_t k)
{
	int64_t *row = rt_malloc(sizeof *row * (size_t)(N * k > 0 ? N * k : 1));
	for (int64_t c = 0; c < N * k; c++)
		row[c] = -1;
	for (int64_t r = 0; r < R; r++)
		row[perm[r]] = r;
	for (int64_t n = 0; n < N; n++)
		for (int64_t d = 0; d < D; d++) {
			double acc = 0;
			for (int64_t j = 0; j < k; j++) {
				int64_t r = row[n * k + j];
				if (r >= 0)
					acc += gates[n * k + j] * ys[r * D + d];
			}
			y[n * D + d] = acc;
		}
	free(row);
}

static void moe_combine_backward_data(double *dys, const double *dy, const int64_t *perm,
				      const double *gates, int64_t R, int64_t D, int64_t k)
{
	for (int64_t r = 0; r < R; r++) {
		int64_t c = perm[r]; /* = n*k + j, also the index of gates[n,j] */
		for (int64_t d = 0; d < D; d++)
			dys[r * D + d] = gates[c] * dy[(c / k) * D + d];
	}
}

/* dgates[n,j] = dy[n] . ys[r(n,j)] (0 for a choice no row holds) */
static void moe_combine_backward_gate(double *dgates, const double *dy, const double *ys,
				      const int64_t *perm, int64_t R, int64_t N, int64_t D,
				      int64_t k)
{
	memset(dgates, 0, sizeof *dgates * (size_t)(N * k));
	for (int64_t r = 0; r < R; r++) {
		int64_t c = perm[r];
		double acc = 0;
		for (int64_t d = 0; d < D; d++)
			acc += dy[(c / k) * D + d] * ys[r * D + d];
		dgates[c] = acc;
	}
}

/* --- expert parallelism ------------------------------------------------------------------ */

/* counts[p, j] = offsets[p*El + j + 1] - offsets[p*El + j]: rows for expert p*El + j */
static void ep_counts_forward(int64_t *counts, const int64_t *offsets, int64_t P, int64_t El)
{
	for (int64_t q = 0; q < P * El; q++)
		counts[q] = offsets[q + 1] - offsets[q];
}

/* off[e+1] = off[e] + sum_p rc[p, e]: the local experts' segments, expert-major */
static void ep_offsets_forward(int64_t *off, const int64_t *rc, int64_t P, int64_t El)
{
	off[0] = 0;
	for (int64_t e = 0; e < El; e++) {
		int64_t n = 0;
		for (int64_t p = 0; p < P; p++)
			n += rc[p * El + e];
		off[e + 1] = off[e] + n;
	}
}

/* Rows in blocks (p, e) of rc[p, e] rows of D numbers: peer-major in x, expert-major in y
 * (inverse: the other way); y zero past the total.  Counts are >= 0 and sum to <= C. */
static void ep_regroup_forward(double *y, const double *x, const int64_t *rc, int64_t P,
			       int64_t El, int64_t C, int64_t D, int inverse)
{
	int64_t *pm = rt_malloc(sizeof *pm * (size_t)(P * El > 0 ? P * El : 1));
	int64_t *em = rt_malloc(sizeof *em * (size_t)(P * El > 0 ? P * El : 1));
	int64_t at = 0;
	for (int64_t p = 0; p < P; p++)
		for (int64_t e = 0; e < El; e++) {
			pm[p * El + e] = at;
			at += rc[p * El + e];
		}
	at = 0;
	for (int64_t e = 0; e < El; e++)
		for (int64_t p = 0; p < P; p++) {
			em[p * El + e] = at;
			at += rc[p * El + e];
		}
	memset(y, 0, sizeof *y * (size_t)(C * D));
	for (int64_t b = 0; b < P * El; b++) {
		int64_t from = inverse ? em[b] : pm[b], to = inverse ? pm[b] : em[b];
		memcpy(y + to * D, x + from * D, sizeof *y * (size_t)(rc[b] * D));
	}
	free(pm);
	free(em);
}

/* ALL_TO_ALLV (and ALL_TO_ALL) on a group of one rank: the first T rows of x, then zeros.
 * Rows of D elements of `size` bytes (doubles or int64_t, the executor's storage). */
static void all_to_allv_single(void *y, const void *x, int64_t T, int64_t C, int64_t D,
			       size_t size)
{
	memcpy(y, x, size * (size_t)(T * D));
	memset((char *)y + size * (size_t)(T * D), 0, size * (size_t)((C - T) * D));
}

/* --- FP8 --------------------------------------------------------------------------------- */

/* The largest finite value of an FP8 format: what a tile's max-abs is scaled to. */
static double fp8_max(enum ir_dtype t)
{
	return t == IR_F8E5M2 ? 57344.0 : 448.0;
}

/* x [M,K] in tiles of tr x tc, in f32 arithmetic as ir.h states (the LLVM backend's
 * kernel computes the same bits): scale = fl32(amax / max), q = round(fl32(x / scale)).
 * x is read as f32 (a double here may carry more). */
static void quant_fp8_forward(double *q, double *scale, const double *x, int64_t M,
			      int64_t K, int64_t tr, int64_t tc, enum ir_dtype qt)
{
	int64_t Ms = (M + tr - 1) / tr, Ks = (K + tc - 1) / tc;
	for (int64_t ti = 0; ti < Ms; ti++)
		for (int64_t tj = 0; tj < Ks; tj++) {
			float amax = 0;
			for (int64_t i = ti * tr; i < M && i < (ti + 1) * tr; i++)
				for (int64_t j = tj * tc; j < K && j < (tj + 1) * tc; j++)
					amax = fmaxf(amax, fabsf((float)x[i * K + j]));
			float s = (float)(amax / fp8_max(qt));
			scale[ti * Ks + tj] = s;
			for (int64_t i = ti * tr; i < M && i < (ti + 1) * tr; i++)
				for (int64_t j = tj * tc; j < K && j < (tj + 1) * tc; j++)
					q[i * K + j] = s > 0 ? ref_round((float)x[i * K + j] / s, qt) : 0;
		}
}

static void dequant_fp8_forward(double *x, const double *q, const double *scale,
				int64_t M, int64_t K, int64_t tr, int64_t tc)
{
	int64_t Ks = (K + tc - 1) / tc;
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < K; j++)
			x[i * K + j] = q[i * K + j] * scale[(i / tr) * Ks + j / tc];
}

/* q [..., M, K] with its scale [..., Ms, Ks] in tiles of tile[0] x tile[1], dequantised
 * into a new array */
static double *dequant_all(const double *q, const struct ir_shape *qs, const double *scale,
			   const int64_t *tile)
{
	int r = qs->rank;
	int64_t M = qs->dim[r - 2], K = qs->dim[r - 1], n = M * K, nb = 1;
	for (int d = 0; d < r - 2; d++)
		nb *= qs->dim[d];
	int64_t ns = ((M + tile[0] - 1) / tile[0]) * ((K + tile[1] - 1) / tile[1]);
	double *x = rt_malloc(sizeof *x * (size_t)(nb * n > 0 ? nb * n : 1));
	for (int64_t b = 0; b < nb; b++)
		dequant_fp8_forward(x + b * n, q + b * n, scale + b * ns, M, K, tile[0], tile[1]);
	return x;
}

/* --- running a graph ------------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static int fail(struct ref_exec *e, const char *fmt, ...)
{
	if (!e->err)
		return -1;
	const struct ir_op *op = e->cur;
	if (op && op->loc.file)
		fprintf(e->err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
	fprintf(e->err, "error: reference executor: ");
	if (op)
		fprintf(e->err, "op %d (%s): ", op->id, ir_op_name(op->kind));
	va_list ap;
	va_start(ap, fmt);
	vfprintf(e->err, fmt, ap);
	va_end(ap);
	fputc('\n', e->err);
	return -1;
}

static size_t nbytes(const struct ir_value *v, size_t elem)
{
	int64_t n = numel(&v->shape);
	return (size_t)(n > 0 ? n : 1) * elem;
}

/* storage of a value, made on first use */
static double *fbuf(struct ref_exec *e, const struct ir_value *v)
{
	if (!e->d[v->id])
		e->d[v->id] = rt_calloc(nbytes(v, sizeof(double)), 1);
	return e->d[v->id];
}

static int64_t *ibuf(struct ref_exec *e, const struct ir_value *v)
{
	if (!e->iv[v->id])
		e->iv[v->id] = rt_calloc(nbytes(v, sizeof(int64_t)), 1);
	return e->iv[v->id];
}

/* a value read as doubles: the value itself, or a converted copy in *tmp */
static const double *in_double(struct ref_exec *e, const struct ir_value *v, double **tmp)
{
	if (!is_int(v->dtype))
		return e->d[v->id];
	int64_t n = numel(&v->shape);
	*tmp = rt_malloc(nbytes(v, sizeof(double)));
	for (int64_t i = 0; i < n; i++)
		(*tmp)[i] = (double)e->iv[v->id][i];
	return *tmp;
}

static int check_index(struct ref_exec *e, const int64_t *idx, int64_t n, int64_t lo,
		       int64_t hi, const char *what)
{
	for (int64_t i = 0; i < n; i++)
		if (idx[i] < lo || idx[i] >= hi)
			return fail(e, "%s %lld at position %lld is outside [%lld, %lld)", what,
				    (long long)idx[i], (long long)i, (long long)lo, (long long)hi);
	return 0;
}

static int check_offsets(struct ref_exec *e, const int64_t *off, int64_t E, int64_t R)
{
	if (off[0] < 0 || off[E] > R)
		return fail(e, "expert offsets span [%lld, %lld), rows are %lld",
			    (long long)off[0], (long long)off[E], (long long)R);
	for (int64_t i = 0; i < E; i++)
		if (off[i + 1] < off[i])
			return fail(e, "expert offsets decrease at expert %lld", (long long)i);
	return 0;
}

/* the sum of an integer value's entries, all of which must be >= 0 (row counts) */
static int count_total(struct ref_exec *e, const struct ir_value *v, const char *what,
		       int64_t *total)
{
	const int64_t *c = e->iv[v->id];
	*total = 0;
	for (int64_t i = 0, n = numel(&v->shape); i < n; i++) {
		if (c[i] < 0)
			return fail(e, "%s %lld at position %lld is negative", what, (long long)c[i],
				    (long long)i);
		*total += c[i];
	}
	return 0;
}

/* Write the double result `tmp` into an integer output (truncating) */
static void store_int(struct ref_exec *e, const struct ir_value *v, const double *tmp)
{
	int64_t *o = ibuf(e, v), n = numel(&v->shape);
	for (int64_t i = 0; i < n; i++)
		o[i] = (int64_t)tmp[i];
}

/* where an op writes its (first) output: the value's doubles, or for an integer value a
 * scratch array that exec_op() converts once the op is done */
static double *obuf(struct ref_exec *e, const struct ir_value *v, double **tout)
{
	if (!is_int(v->dtype))
		return fbuf(e, v);
	if (!*tout)
		*tout = rt_malloc(nbytes(v, sizeof(double)));
	return *tout;
}

static int axis_of(const struct ir_op *op, int rank)
{
	int64_t a = ir_op_int(op, "axis", -1);
	return (int)(a < 0 ? a + rank : a);
}

/* For a scaled product: its two f8 operands dequantised with their scales into *a and
 * *b (which the caller frees); for other ops nothing. */
static int scaled_operands(struct ref_exec *e, const struct ir_op *op, double **a, double **b)
{
	int base = op->kind == IR_OP_SCALED_MATMUL ? 2
		   : op->kind == IR_OP_SCALED_GROUPED_MATMUL ||
		   op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD ? 3 : 0;
	if (!base)
		return 0;
	for (int i = 0; i < 2; i++) {
		const struct ir_attr *t = ir_op_attr(op, i ? "b_tile" : "a_tile");
		const struct ir_shape *qs = &op->in[i]->shape, *ss = &op->in[base + i]->shape;
		if (!t || t->kind != IR_ATTR_INTS || t->n != 2 || t->ints[0] < 1 || t->ints[1] < 1 ||
		    qs->rank < 2 || ss->rank != qs->rank ||
		    ss->dim[ss->rank - 2] != (qs->dim[qs->rank - 2] + t->ints[0] - 1) / t->ints[0] ||
		    ss->dim[ss->rank - 1] != (qs->dim[qs->rank - 1] + t->ints[1] - 1) / t->ints[1])
			return fail(e, "scale %d does not match the tiles of its operand", i);
		double *d = dequant_all(e->d[op->in[i]->id], qs, e->d[op->in[base + i]->id],
					t->ints);
		*(i ? b : a) = d;
	}
	return 0;
}

static int exec_op(struct ref_exec *e, const struct ir_op *op)
{
	const struct ir_value *y = op->n_out ? op->out[0] : NULL;
	const struct ir_value *x = op->n_in ? op->in[0] : NULL;
	const struct ir_shape *ys = y ? &y->shape : NULL, *xs = x ? &x->shape : NULL;
	int64_t n = y ? numel(ys) : 0;
	double *t0 = NULL, *t1 = NULL, *tout = NULL;
	int rc = 0;

	switch (op->kind) {
	case IR_OP_INPUT:
	case IR_OP_PARAM:
		if (!e->bound[y->id])
			return fail(e, "%s '%s' (value %%%d) was not bound",
				    op->kind == IR_OP_INPUT ? "input" : "parameter",
				    op->kind == IR_OP_INPUT ? ir_op_str(op, "name", "?")
							    : (op->path ? op->path : "?"),
				    y->id);
		return 0;
	case IR_OP_CONST: {
		double c = ir_op_float(op, "value", 0);
		if (is_int(y->dtype)) {
			int64_t *o = ibuf(e, y);
			for (int64_t i = 0; i < n; i++)
				o[i] = (int64_t)c;
		} else {
			double *o = obuf(e, y, &tout);
			for (int64_t i = 0; i < n; i++)
				o[i] = c;
		}
		return 0;
	}
	case IR_OP_NEG: case IR_OP_EXP: case IR_OP_LOG: case IR_OP_SQRT: case IR_OP_RSQRT:
	case IR_OP_RECIP: case IR_OP_SQUARE: case IR_OP_SIGMOID: case IR_OP_SILU:
	case IR_OP_TANH: case IR_OP_RELU: case IR_OP_SCALE: case IR_OP_CAST:
	case IR_OP_STOP_GRAD: {
		const double *a = in_double(e, x, &t0);
		double *o = obuf(e, y, &tout);
		unary_forward(o, a, n, op->kind, ir_op_float(op, "alpha", 1),
			      ir_op_float(op, "beta", 0));
		break;
	}
	case IR_OP_ADD: case IR_OP_SUB: case IR_OP_MUL: case IR_OP_DIV: {
		const double *a = in_double(e, op->in[0], &t0);
		const double *b = in_double(e, op->in[1], &t1);
		double *o = obuf(e, y, &tout);
		binary_forward(o, ys, a, &op->in[0]->shape, b, &op->in[1]->shape, op->kind);
		if (is_int(y->dtype) && op->kind == IR_OP_DIV) /* integer division truncates */
			for (int64_t i = 0; i < n; i++)
				o[i] = trunc(o[i]);
		break;
	}
	case IR_OP_REDUCE_SUM: case IR_OP_REDUCE_MEAN: case IR_OP_REDUCE_MAX: {
		int ax = axis_of(op, xs->rank);
		if (ax < 0 || ax >= xs->rank)
			return fail(e, "axis out of range");
		const double *a = in_double(e, x, &t0);
		double *o = obuf(e, y, &tout);
		reduce_forward(o, a, dims_prod(xs, 0, ax), xs->dim[ax],
			       dims_prod(xs, ax + 1, xs->rank), op->kind);
		break;
	}
	case IR_OP_SUM_TO:
		sum_to_forward(obuf(e, y, &tout), ys, in_double(e, x, &t0), xs);
		break;
	case IR_OP_BROADCAST:
		broadcast_forward(obuf(e, y, &tout), ys, in_double(e, x, &t0), xs);
		break;
	case IR_OP_RESHAPE:
		if (is_int(y->dtype) && is_int(x->dtype))
			memcpy(ibuf(e, y), e->iv[x->id], nbytes(y, sizeof(int64_t)));
		else
			memcpy(obuf(e, y, &tout), in_double(e, x, &t0), nbytes(y, sizeof(double)));
		break;
	case IR_OP_TRANSPOSE: {
		const struct ir_attr *p = ir_op_attr(op, "perm");
		if (!p || p->kind != IR_ATTR_INTS || p->n != ys->rank)
			return fail(e, "perm attribute missing or of the wrong length");
		transpose_forward(obuf(e, y, &tout), ys, in_double(e, x, &t0), xs, p->ints);
		break;
	}
	case IR_OP_SLICE: {
		int ax = axis_of(op, xs->rank);
		int64_t start = ir_op_int(op, "start", 0);
		if (ax < 0 || ax >= xs->rank || start < 0 || start + ys->dim[ax] > xs->dim[ax])
			return fail(e, "slice out of range");
		slice_forward(obuf(e, y, &tout), in_double(e, x, &t0), dims_prod(xs, 0, ax), xs->dim[ax],
			      ys->dim[ax], dims_prod(xs, ax + 1, xs->rank), start);
		break;
	}
	case IR_OP_CONCAT: {
		int ax = axis_of(op, ys->rank);
		int64_t outer = dims_prod(ys, 0, ax), inner = dims_prod(ys, ax + 1, ys->rank);
		double *o = obuf(e, y, &tout);
		int64_t at = 0;
		for (int i = 0; i < op->n_in; i++) {
			double *tmp = NULL;
			const double *a = in_double(e, op->in[i], &tmp);
			int64_t L = op->in[i]->shape.dim[ax];
			for (int64_t oo = 0; oo < outer; oo++)
				memcpy(o + (oo * ys->dim[ax] + at) * inner, a + oo * L * inner,
				       sizeof *o * (size_t)(L * inner));
			at += L;
			free(tmp);
		}
		break;
	}
	case IR_OP_MATMUL: case IR_OP_SCALED_MATMUL: {
		const struct ir_value *A = op->in[0], *Bv = op->in[1];
		int ta = (int)ir_op_int(op, "trans_a", 0), tb = (int)ir_op_int(op, "trans_b", 0);
		int r = ys->rank, ra = A->shape.rank, rb = Bv->shape.rank;
		if (r < 2 || ra < 2 || rb < 2)
			return fail(e, "operands of rank below 2");
		int64_t M = ys->dim[r - 2], N = ys->dim[r - 1];
		int64_t K = ta ? A->shape.dim[ra - 2] : A->shape.dim[ra - 1];
		/* batch dims broadcast like elementwise ops, in units of whole matrices */
		struct ir_shape ob = *ys, ab = A->shape, bb = Bv->shape;
		ob.rank -= 2, ab.rank -= 2, bb.rank -= 2;
		struct iter it;
		iter_init(&it, &ob, 2);
		bcast_strides(&ab, &ob, it.st[0]);
		bcast_strides(&bb, &ob, it.st[1]);
		const double *a, *b;
		if (scaled_operands(e, op, &t0, &t1))
			return -1;
		a = t0 ? t0 : in_double(e, A, &t0);
		b = t1 ? t1 : in_double(e, Bv, &t1);
		double *o = obuf(e, y, &tout);
		int64_t nb = numel(&ob);
		for (int64_t i = 0; i < nb; i++, iter_next(&it))
			matmul_forward(o + i * M * N, a + it.off[0] * M * K, b + it.off[1] * K * N,
				       M, K, N, ta, tb);
		break;
	}
	case IR_OP_SOFTMAX: case IR_OP_SOFTMAX_BWD: {
		int64_t V = last_dim(ys), S = ys->rank >= 2 ? ys->dim[ys->rank - 2] : 1;
		int causal = (int)ir_op_int(op, "causal", 0);
		if (op->kind == IR_OP_SOFTMAX)
			softmax_forward(obuf(e, y, &tout), in_double(e, x, &t0), n / V, V, S, causal);
		else
			softmax_backward(obuf(e, y, &tout), in_double(e, x, &t0),
					 in_double(e, op->in[1], &t1), n / V, V, S, causal);
		break;
	}
	case IR_OP_ROPE: {
		if (xs->rank != 4 || xs->dim[3] % 2)
			return fail(e, "rope needs x[B,S,H,D] with D even");
		rope_forward(obuf(e, y, &tout), in_double(e, x, &t0), xs->dim[0], xs->dim[1],
			     xs->dim[2], xs->dim[3], ir_op_float(op, "theta", 10000.0),
			     (int)ir_op_int(op, "inverse", 0));
		break;
	}
	case IR_OP_GATHER_ROWS: {
		int64_t V = x->shape.dim[0], D = last_dim(xs), N = numel(&op->in[1]->shape);
		const int64_t *idx = e->iv[op->in[1]->id];
		if (check_index(e, idx, N, 0, V, "row index"))
			return -1;
		gather_rows_forward(obuf(e, y, &tout), in_double(e, x, &t0), idx, N, D);
		break;
	}
	case IR_OP_SCATTER_ROWS: {
		int64_t V = ys->dim[0], D = last_dim(ys), N = numel(&op->in[1]->shape);
		const int64_t *idx = e->iv[op->in[1]->id];
		if (check_index(e, idx, N, 0, V, "row index"))
			return -1;
		scatter_rows_forward(obuf(e, y, &tout), in_double(e, x, &t0), idx, N, V, D);
		break;
	}
	case IR_OP_CROSS_ENTROPY: case IR_OP_CROSS_ENTROPY_BWD: {
		int64_t V = last_dim(xs), N = numel(&op->in[1]->shape);
		const int64_t *tg = e->iv[op->in[1]->id];
		if (check_index(e, tg, N, -INT64_MAX, V, "target"))
			return -1;
		if (op->kind == IR_OP_CROSS_ENTROPY)
			obuf(e, y, &tout)[0] = cross_entropy_forward(in_double(e, x, &t0), tg, N, V);
		else
			cross_entropy_backward(obuf(e, y, &tout), in_double(e, x, &t0), tg,
					       in_double(e, op->in[2], &t1)[0], N, V);
		break;
	}
	case IR_OP_TOPK: {
		int64_t E = last_dim(xs), k = ir_op_int(op, "k", last_dim(ys));
		if (k != last_dim(ys) || k > E)
			return fail(e, "k = %lld does not fit the shapes", (long long)k);
		topk_forward(ibuf(e, y), in_double(e, x, &t0), numel(xs) / E, E, k);
		break;
	}
	case IR_OP_TAKE_ALONG: case IR_OP_PUT_ALONG: {
		int take = op->kind == IR_OP_TAKE_ALONG;
		int64_t E = take ? last_dim(xs) : last_dim(ys), k = last_dim(&op->in[1]->shape);
		int64_t N = numel(&op->in[1]->shape) / k;
		const int64_t *idx = e->iv[op->in[1]->id];
		if (check_index(e, idx, N * k, 0, E, "index"))
			return -1;
		if (take)
			take_along_forward(obuf(e, y, &tout), in_double(e, x, &t0), idx, N, E, k);
		else
			put_along_forward(obuf(e, y, &tout), in_double(e, x, &t0), idx, N, E, k);
		break;
	}
	case IR_OP_EXPERT_COUNT: {
		int64_t G = ys->dim[0], E = last_dim(ys), ni = numel(xs);
		if (ys->rank != 2 || ni % G)
			return fail(e, "output must be [G, E] with G dividing the choices");
		if (check_index(e, e->iv[x->id], ni, 0, E, "expert"))
			return -1;
		expert_count_forward(obuf(e, y, &tout), e->iv[x->id], G, ni / G, E);
		break;
	}
	case IR_OP_MOE_DISPATCH: {
		int64_t D = last_dim(xs), k = last_dim(&op->in[1]->shape);
		int64_t N = numel(&op->in[1]->shape) / k, E = numel(&op->out[1]->shape) - 1;
		const int64_t *idx = e->iv[op->in[1]->id];
		if (numel(xs) != N * D || numel(ys) != N * k * D)
			return fail(e, "shapes of x, idx and xs do not agree");
		if (check_index(e, idx, N * k, 0, E, "expert"))
			return -1;
		moe_dispatch_forward(obuf(e, y, &tout), ibuf(e, op->out[1]), ibuf(e, op->out[2]),
				     in_double(e, x, &t0), idx, N, D, k, E);
		break;
	}
	case IR_OP_MOE_UNDISPATCH: {
		int64_t R = numel(&op->in[1]->shape), D = last_dim(ys), N = numel(ys) / D;
		int64_t k = ir_op_int(op, "k", R / (N ? N : 1));
		const int64_t *perm = e->iv[op->in[1]->id];
		if (check_index(e, perm, R, 0, N * k, "perm entry"))
			return -1;
		moe_undispatch_forward(obuf(e, y, &tout), in_double(e, x, &t0), perm, R, N, D, k);
		break;
	}
	case IR_OP_GROUPED_MATMUL: case IR_OP_GROUPED_MATMUL_WGRAD:
	case IR_OP_SCALED_GROUPED_MATMUL: case IR_OP_SCALED_GROUPED_MATMUL_WGRAD: {
		int wgrad = op->kind == IR_OP_GROUPED_MATMUL_WGRAD ||
			    op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD;
		const struct ir_value *w = wgrad ? y : op->in[1];
		int tb = (int)ir_op_int(op, "trans_b", 0);
		if (w->shape.rank != 3)
			return fail(e, "expert weights must be [E, K, N]");
		int64_t E = w->shape.dim[0];
		int64_t K = tb ? w->shape.dim[2] : w->shape.dim[1];
		int64_t N = tb ? w->shape.dim[1] : w->shape.dim[2];
		int64_t R = x->shape.dim[0];
		if (numel(&op->in[2]->shape) != E + 1)
			return fail(e, "offsets must have E+1 = %lld entries", (long long)(E + 1));
		const int64_t *off = e->iv[op->in[2]->id];
		if (check_offsets(e, off, E, R) || scaled_operands(e, op, &t0, &t1))
			return -1;
		const double *a = t0 ? t0 : in_double(e, x, &t0);
		const double *b = t1 ? t1 : in_double(e, op->in[1], &t1);
		if (wgrad)
			grouped_matmul_wgrad(obuf(e, y, &tout), a, b, off, K, N, E, tb);
		else
			grouped_matmul_forward(obuf(e, y, &tout), a, b, off, R, K, N, E, tb);
		break;
	}
	case IR_OP_MOE_COMBINE: {
		const struct ir_value *gates = op->in[2];
		int64_t R = numel(&op->in[1]->shape), D = last_dim(ys), k = last_dim(&gates->shape);
		int64_t N = numel(&gates->shape) / k;
		const int64_t *perm = e->iv[op->in[1]->id];
		if (check_index(e, perm, R, 0, N * k, "perm entry"))
			return -1;
		moe_combine_forward(obuf(e, y, &tout), in_double(e, x, &t0), perm,
				    in_double(e, gates, &t1), R, N, D, k);
		break;
	}
	case IR_OP_MOE_COMBINE_BWD_DATA: {
		const struct ir_value *gates = op->in[2];
		int64_t R = numel(&op->in[1]->shape), D = last_dim(ys), k = last_dim(&gates->shape);
		const int64_t *perm = e->iv[op->in[1]->id];
		if (check_index(e, perm, R, 0, numel(&gates->shape), "perm entry"))
			return -1;
		moe_combine_backward_data(obuf(e, y, &tout), in_double(e, x, &t0), perm,
					  in_double(e, gates, &t1), R, D, k);
		break;
	}
	case IR_OP_MOE_COMBINE_BWD_GATE: {
		int64_t R = numel(&op->in[2]->shape), D = last_dim(xs), k = last_dim(ys);
		int64_t N = numel(ys) / k;
		const int64_t *perm = e->iv[op->in[2]->id];
		if (check_index(e, perm, R, 0, N * k, "perm entry"))
			return -1;
		moe_combine_backward_gate(obuf(e, y, &tout), in_double(e, x, &t0),
					  in_double(e, op->in[1], &t1), perm, R, N, D, k);
		break;
	}
	case IR_OP_SILU_BWD:
		silu_backward(obuf(e, y, &tout), in_double(e, x, &t0), in_double(e, op->in[1], &t1), n);
		break;
	case IR_OP_RELU_BWD:
		relu_backward(obuf(e, y, &tout), in_double(e, x, &t0), in_double(e, op->in[1], &t1), n);
		break;
	case IR_OP_REDUCE_MAX_BWD: {
		int ax = axis_of(op, xs->rank);
		if (ax < 0 || ax >= xs->rank)
			return fail(e, "axis out of range");
		reduce_max_backward(obuf(e, y, &tout), in_double(e, x, &t0), in_double(e, op->in[1], &t1),
				    dims_prod(xs, 0, ax), xs->dim[ax],
				    dims_prod(xs, ax + 1, xs->rank));
		break;
	}
	case IR_OP_QUANT_FP8: case IR_OP_DEQUANT_FP8: {
		const struct ir_value *sv = op->kind == IR_OP_QUANT_FP8 ? op->out[1] : op->in[1];
		const struct ir_shape *ss = &sv->shape;
		if (xs->rank < 2 || ss->rank != xs->rank)
			return fail(e, "q and scale need one rank, at least 2");
		int64_t M = xs->dim[xs->rank - 2], K = last_dim(xs);
		int64_t Ms = ss->dim[ss->rank - 2], Ks = last_dim(ss), nb = M * K != 0 ? numel(xs) / (M * K) : 0;
		if (!Ms || !Ks)
			return fail(e, "empty scale");
		int64_t tr = ir_op_int(op, "tile_r", (M + Ms - 1) / Ms);
		int64_t tc = ir_op_int(op, "tile_c", (K + Ks - 1) / Ks);
		if (tr <= 0 || tc <= 0 || (M + tr - 1) / tr != Ms || (K + tc - 1) / tc != Ks)
			return fail(e, "scale shape does not match the tiles");
		const double *a = in_double(e, x, &t0);
		if (op->kind == IR_OP_QUANT_FP8) {
			double *q = obuf(e, y, &tout), *s = fbuf(e, op->out[1]);
			for (int64_t b = 0; b < nb; b++)
				quant_fp8_forward(q + b * M * K, s + b * Ms * Ks, a + b * M * K, M, K,
						  tr, tc, y->dtype);
		} else {
			const double *s = in_double(e, op->in[1], &t1);
			double *o = obuf(e, y, &tout);
			for (int64_t b = 0; b < nb; b++)
				dequant_fp8_forward(o + b * M * K, a + b * M * K, s + b * Ms * Ks, M,
						    K, tr, tc);
		}
		break;
	}
	case IR_OP_EP_COUNTS: {
		int64_t P = ys->rank == 2 ? ys->dim[0] : 0, El = last_dim(ys);
		if (!is_int(x->dtype) || !is_int(y->dtype) || ys->rank != 2 ||
		    numel(xs) != P * El + 1)
			return fail(e, "offsets must be integers [P*El+1] for counts [P, El]");
		ep_counts_forward(ibuf(e, y), e->iv[x->id], P, El);
		break;
	}
	case IR_OP_EP_OFFSETS: {
		int64_t El = last_dim(xs), P = El ? numel(xs) / El : 0;
		if (!is_int(x->dtype) || !is_int(y->dtype) || xs->rank != 2 || numel(ys) != El + 1)
			return fail(e, "rc must be integers [P, El] and the output [El+1]");
		ep_offsets_forward(ibuf(e, y), e->iv[x->id], P, El);
		break;
	}
	case IR_OP_EP_REGROUP: {
		const struct ir_value *cv = op->in[1];
		if (!is_int(cv->dtype) || cv->shape.rank != 2 || is_int(x->dtype) ||
		    is_int(y->dtype) || xs->rank < 1 || numel(xs) != n)
			return fail(e, "needs float rows x and y of one shape and integer rc [P, El]");
		int64_t P = cv->shape.dim[0], El = cv->shape.dim[1], C = xs->dim[0];
		int64_t D = dims_prod(xs, 1, xs->rank), T;
		if (count_total(e, cv, "count", &T))
			return -1;
		if (T > C)
			return fail(e, "the counts total %lld rows, the buffer holds %lld",
				    (long long)T, (long long)C);
		ep_regroup_forward(fbuf(e, y), e->d[x->id], e->iv[cv->id], P, El, C, D,
				   ir_op_int(op, "inverse", 0) != 0);
		break;
	}
	case IR_OP_ALL_TO_ALL: case IR_OP_ALL_TO_ALLV: {
		int v = op->kind == IR_OP_ALL_TO_ALLV;
		int64_t P = v ? op->in[1]->shape.dim[0] : xs->dim[0];
		if (xs->rank < 1 || ys->rank != xs->rank || is_int(x->dtype) != is_int(y->dtype) ||
		    (v && (op->in[1]->shape.rank != 2 || op->in[2]->shape.rank != 2 ||
			   !is_int(op->in[1]->dtype) || !is_int(op->in[2]->dtype))))
			return fail(e, "shapes or dtypes of x, the counts and y do not agree");
		if (P != 1)
			return fail(e, "a group of %lld ranks needs the program executor; the "
				       "reference runs one rank (a group of one)", (long long)P);
		int64_t R = xs->dim[0], C = ys->dim[0], D = dims_prod(xs, 1, xs->rank), T = R;
		if (dims_prod(ys, 1, ys->rank) != D)
			return fail(e, "x and y rows differ in size");
		if (v) {
			int64_t ts, tr;
			if (count_total(e, op->in[1], "send count", &ts) ||
			    count_total(e, op->in[2], "receive count", &tr))
				return -1;
			if (ts != tr)
				return fail(e, "a rank alone sends %lld rows to itself but receives "
					       "%lld", (long long)ts, (long long)tr);
			if (ts > R || ts > C)
				return fail(e, "%lld rows do not fit: x has %lld, y %lld", (long long)ts,
					    (long long)R, (long long)C);
			T = ts;
		} else if (R != C) {
			return fail(e, "x and y differ in shape");
		}
		if (is_int(x->dtype))
			all_to_allv_single(ibuf(e, y), e->iv[x->id], T, C, D, sizeof(int64_t));
		else
			all_to_allv_single(fbuf(e, y), e->d[x->id], T, C, D, sizeof(double));
		break;
	}
	case IR_OP_ATTENTION: case IR_OP_ATTENTION_BWD: {
		const struct ir_shape *ks = &op->in[1]->shape, *vs = &op->in[2]->shape;
		if (xs->rank != 4 || ks->rank != 4 || vs->rank != 4 || ks->dim[2] < 1 ||
		    xs->dim[2] % ks->dim[2])
			return fail(e, "attention needs q[B,S,H,Dqk], k and v [B,S,Hkv,D], Hkv | H");
		int64_t B = xs->dim[0], S = xs->dim[1], H = xs->dim[2], Dk = xs->dim[3];
		int64_t Hkv = ks->dim[2], Dv = vs->dim[3];
		double scale = ir_op_float(op, "scale", 1);
		int causal = (int)ir_op_int(op, "causal", 1);
		const double *q = e->d[x->id], *k = e->d[op->in[1]->id], *v = e->d[op->in[2]->id];
		if (op->kind == IR_OP_ATTENTION)
			attention_forward(fbuf(e, y), fbuf(e, op->out[1]), q, k, v, B, S, H, Hkv, Dk,
					  Dv, scale, causal);
		else
			attention_backward(fbuf(e, y), fbuf(e, op->out[1]), fbuf(e, op->out[2]), q, k,
					   v, e->d[op->in[3]->id], e->d[op->in[4]->id],
					   e->d[op->in[5]->id], B, S, H, Hkv, Dk, Dv, scale, causal);
		break;
	}
	case IR_OP_SEND: case IR_OP_RECV: case IR_OP_ALL_REDUCE:
	case IR_OP_REDUCE_SCATTER: case IR_OP_ALL_GATHER:
		return fail(e, "communication needs ranks; the reference executor runs one "
			       "graph on one rank (run the graph before the parallel passes)");
	default:
		return fail(e, "no reference implementation");
	}
	if (tout)
		store_int(e, y, tout);
	free(t0);
	free(t1);
	free(tout);
	return rc;
}

/* --- the public interface ------------------------------------------------------------------ */

struct ref_exec *ref_new(const struct ir_graph *g)
{
	struct ref_exec *e = rt_calloc(1, sizeof *e);
	e->g = g;
	e->n = g->n_values;
	e->d = rt_calloc((size_t)(e->n ? e->n : 1), sizeof *e->d);
	e->iv = rt_calloc((size_t)(e->n ? e->n : 1), sizeof *e->iv);
	e->bound = rt_calloc((size_t)(e->n ? e->n : 1), 1);
	return e;
}

void ref_free(struct ref_exec *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->n; i++) {
		free(e->d[i]);
		free(e->iv[i]);
	}
	free(e->d);
	free(e->iv);
	free(e->bound);
	free(e);
}

void ref_bind(struct ref_exec *e, int value_id, const double *data)
{
	RT_ASSERT(value_id >= 0 && value_id < e->n);
	const struct ir_value *v = e->g->values[value_id];
	int64_t n = numel(&v->shape);
	if (is_int(v->dtype)) {
		int64_t *o = ibuf(e, v);
		for (int64_t i = 0; i < n; i++)
			o[i] = (int64_t)data[i];
	} else {
		double *o = fbuf(e, v);
		for (int64_t i = 0; i < n; i++)
			o[i] = ref_round(data[i], v->dtype);
	}
	e->bound[value_id] = 1;
}

void ref_bind_int(struct ref_exec *e, int value_id, const int64_t *data)
{
	RT_ASSERT(value_id >= 0 && value_id < e->n);
	const struct ir_value *v = e->g->values[value_id];
	int64_t n = numel(&v->shape);
	if (is_int(v->dtype)) {
		memcpy(ibuf(e, v), data, nbytes(v, sizeof(int64_t)));
	} else {
		double *o = fbuf(e, v);
		for (int64_t i = 0; i < n; i++)
			o[i] = ref_round((double)data[i], v->dtype);
	}
	e->bound[value_id] = 1;
}

int ref_run(struct ref_exec *e, FILE *err)
{
	e->err = err;
	for (int i = 0; i < e->g->n_ops; i++) {
		const struct ir_op *op = e->g->ops[i];
		e->cur = op;
		for (int j = 0; j < op->n_in; j++) {
			const struct ir_value *v = op->in[j];
			if (v->id >= e->n || (is_int(v->dtype) ? !e->iv[v->id] : !e->d[v->id]))
				return fail(e, "input %d (value %%%d) has not been computed", j, v->id);
		}
		for (int j = 0; j < op->n_out; j++)
			if (op->out[j]->id >= e->n)
				return fail(e, "the graph grew after the executor was made");
		if (exec_op(e, op))
			return -1;
		/* stored values take their dtype's precision (f32 stays exact, see ref.h) */
		if (op->kind == IR_OP_INPUT || op->kind == IR_OP_PARAM)
			continue;
		for (int j = 0; j < op->n_out; j++) {
			const struct ir_value *v = op->out[j];
			if (is_int(v->dtype) || v->dtype == IR_F32)
				continue;
			double *p = e->d[v->id];
			for (int64_t k = 0, n = numel(&v->shape); k < n; k++)
				p[k] = ref_round(p[k], v->dtype);
		}
	}
	e->cur = NULL;
	return 0;
}

double *ref_value(struct ref_exec *e, int value_id)
{
	return value_id >= 0 && value_id < e->n ? e->d[value_id] : NULL;
}

int64_t *ref_value_int(struct ref_exec *e, int value_id)
{
	return value_id >= 0 && value_id < e->n ? e->iv[value_id] : NULL;
}

/* --- cg_backend_ref: the f32 storage interface of backend.h over the executor --------------- */

struct cg_exec {
	struct ref_exec *ref;
	void **user;     /* caller memory bound to INPUT/PARAM values */
	void **mirror;   /* f32 / i32 / i64 copies handed out by tensor() */
	double *scratch;
	size_t scratch_n;
};

static struct cg_exec *cgref_compile(const struct ir_graph *g, FILE *err)
{
	(void)err;
	struct cg_exec *c = rt_calloc(1, sizeof *c);
	c->ref = ref_new(g);
	int n = g->n_values ? g->n_values : 1;
	c->user = rt_calloc((size_t)n, sizeof *c->user);
	c->mirror = rt_calloc((size_t)n, sizeof *c->mirror);
	return c;
}

static void cgref_bind(struct cg_exec *c, int value_id, void *data)
{
	RT_ASSERT(value_id >= 0 && value_id < c->ref->n);
	c->user[value_id] = data;
}

static int cgref_run(struct cg_exec *c)
{
	struct ref_exec *e = c->ref;
	for (int id = 0; id < e->n; id++) {
		if (!c->user[id])
			continue;
		const struct ir_value *v = e->g->values[id];
		int64_t n = numel(&v->shape);
		if (v->dtype == IR_I64) {
			ref_bind_int(e, id, c->user[id]);
			continue;
		}
		if ((size_t)n > c->scratch_n) {
			free(c->scratch);
			c->scratch_n = (size_t)n;
			c->scratch = rt_malloc(sizeof *c->scratch * c->scratch_n);
		}
		for (int64_t i = 0; i < n; i++)
			c->scratch[i] = v->dtype == IR_I32 ? (double)((const int32_t *)c->user[id])[i]
							   : (double)((const float *)c->user[id])[i];
		ref_bind(e, id, c->scratch);
	}
	return ref_run(e, stderr);
}

static void *cgref_tensor(struct cg_exec *c, int value_id)
{
	struct ref_exec *e = c->ref;
	if (value_id < 0 || value_id >= e->n)
		return NULL;
	const struct ir_value *v = e->g->values[value_id];
	int64_t n = numel(&v->shape);
	if (is_int(v->dtype) ? !e->iv[value_id] : !e->d[value_id])
		return NULL;
	if (!c->mirror[value_id])
		c->mirror[value_id] = rt_malloc(nbytes(v, v->dtype == IR_I64 ? 8 : 4));
	void *m = c->mirror[value_id];
	for (int64_t i = 0; i < n; i++) {
		if (v->dtype == IR_I64)
			((int64_t *)m)[i] = e->iv[value_id][i];
		else if (v->dtype == IR_I32)
			((int32_t *)m)[i] = (int32_t)e->iv[value_id][i];
		else
			((float *)m)[i] = (float)e->d[value_id][i];
	}
	return m;
}

static void cgref_free(struct cg_exec *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->ref->n; i++)
		free(c->mirror[i]);
	ref_free(c->ref);
	free(c->user);
	free(c->mirror);
	free(c->scratch);
	free(c);
}

const struct cg_backend cg_backend_ref = {
	.name = "ref",
	.compile = cgref_compile,
	.bind = cgref_bind,
	.run = cgref_run,
	.tensor = cgref_tensor,
	.free = cgref_free,
};
