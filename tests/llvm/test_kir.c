/* test_kir.c - kernel IR built by hand, JIT-compiled through LLVM and run over the
 * thread pool, against plain C loops: elementwise with exp (the inline expansion),
 * a reduction (vectorised with reassociation), locals, conditionals, integer buffers,
 * store-add; and the text form of a kernel.  A block kernel (spread loop and reduction,
 * a shared array, a barrier, a bf16 buffer) runs one thread per point on the CPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/llvm/llvm_impl.h"
#include "runtime/pool.h"

struct call {
	cg_kernel_fn fn;
	void **args;
};

static void trampoline(void *ctx, int64_t lo, int64_t hi)
{
	struct call *c = ctx;
	c->fn(c->args, lo, hi);
}

int main(void)
{
	enum { R = 37, C = 131 };
	struct cg_jit *jit = cg_jit_new(stderr);
	REQUIRE(jit);
	struct rt_pool *pool = rt_pool_new(0);

	/* k0: y[p, j] = exp(x[p, j]) * 0.5 + p   (rows in parallel) */
	struct kir_kernel *k0 = kir_kernel_new("t_exp", R);
	int bx = kir_buf(k0, "x", KIR_F32), by = kir_buf(k0, "y", KIR_F32);
	int j = kir_index(k0, "j");
	struct kir_block *b = kir_loop(k0, &k0->body, j, kir_i64(k0, 0), kir_i64(k0, C));
	struct kir_expr *at = kir_bin(k0, KIR_ADD, kir_bin(k0, KIR_MUL, kir_var(k0, 0), kir_i64(k0, C)),
				      kir_var(k0, j));
	struct kir_expr *v = kir_bin(k0, KIR_MUL, kir_un(k0, KIR_EXP, kir_load(k0, bx, at)), kir_f32(k0, 0.5));
	kir_store(k0, b, by, at, kir_bin(k0, KIR_ADD, v, kir_cvt(k0, KIR_F32, kir_var(k0, 0))));

	/* k1: s[p] = sum_j x[p, j]^2;  m[p] = max_j x;  c[p] = count of x > 0 (int) */
	struct kir_kernel *k1 = kir_kernel_new("t_red", R);
	int cx = kir_buf(k1, "x", KIR_F32), cs = kir_buf(k1, "s", KIR_F32);
	int cm = kir_buf(k1, "m", KIR_F32), cc = kir_buf(k1, "c", KIR_I32);
	int j1 = kir_index(k1, "j");
	struct kir_expr *at1 = kir_bin(k1, KIR_ADD, kir_bin(k1, KIR_MUL, kir_var(k1, 0), kir_i64(k1, C)),
				       kir_var(k1, j1));
	struct kir_expr *x1 = kir_load(k1, cx, at1);
	kir_store(k1, &k1->body, cs, kir_var(k1, 0),
		  kir_reduce(k1, KIR_RED_SUM, j1, kir_i64(k1, 0), kir_i64(k1, C), kir_bin(k1, KIR_MUL, x1, x1)));
	kir_store(k1, &k1->body, cm, kir_var(k1, 0),
		  kir_reduce(k1, KIR_RED_MAX, j1, kir_i64(k1, 0), kir_i64(k1, C), x1));
	int cnt = kir_local(k1, "cnt", KIR_I32);
	kir_set(k1, &k1->body, cnt, kir_const(k1, KIR_I32, 0));
	struct kir_block *lb = kir_loop(k1, &k1->body, j1, kir_i64(k1, 0), kir_i64(k1, C));
	struct kir_block *tb = kir_if(k1, lb, kir_bin(k1, KIR_LT, kir_f32(k1, 0), x1), NULL);
	kir_set(k1, tb, cnt, kir_bin(k1, KIR_ADD, kir_var(k1, cnt), kir_const(k1, KIR_I32, 1)));
	kir_store(k1, &k1->body, cc, kir_var(k1, 0), kir_var(k1, cnt));

	/* k2 (one point): histogram of the signs with store-add */
	struct kir_kernel *k2 = kir_kernel_new("t_hist", 1);
	int hx = kir_buf(k2, "x", KIR_F32), hh = kir_buf(k2, "h", KIR_F32);
	int i2 = kir_index(k2, "i");
	struct kir_block *hb = kir_loop(k2, &k2->body, i2, kir_i64(k2, 0), kir_i64(k2, R * C));
	struct kir_expr *bin = kir_select(k2, kir_bin(k2, KIR_LT, kir_load(k2, hx, kir_var(k2, i2)), kir_f32(k2, 0)),
					  kir_i64(k2, 0), kir_i64(k2, 1));
	kir_store_add(k2, hb, hh, bin, kir_f32(k2, 1));

	struct kir_kernel *ks[3] = { k0, k1, k2 };
	cg_kernel_fn fns[3];
	REQUIRE(cg_jit_compile(jit, ks, 3, fns, NULL, stderr) == 0);

	/* the text form is stable */
	char *text = NULL;
	size_t len = 0;
	FILE *mf = open_memstream(&text, &len);
	kir_print(k1, mf);
	fclose(mf);
	CHECK(strstr(text, "sum(j in 0..131: (x[((p * 131) + j)] * x[((p * 131) + j)]))"));
	CHECK(strstr(text, "parallel p in 0..37"));
	free(text);

	float *x = malloc(sizeof(float) * R * C), *y = malloc(sizeof(float) * R * C);
	float s[R], m[R], h[2] = { 0, 0 };
	int32_t c[R];
	srand(1);
	for (int i = 0; i < R * C; i++)
		x[i] = (float)(rand() / (double)RAND_MAX * 40.0 - 20.0);
	x[5] = -100.0f; /* clamped by the inline exp: result e^-87 */
	void *a0[] = { x, y }, *a1[] = { x, s, m, c }, *a2[] = { x, h };
	struct call c0 = { fns[0], a0 }, c1 = { fns[1], a1 }, c2 = { fns[2], a2 };
	rt_pool_run(pool, R, 3, trampoline, &c0);
	rt_pool_run(pool, R, 0, trampoline, &c1);
	rt_pool_run(pool, 1, 1, trampoline, &c2);

	double maxrel = 0;
	for (int r = 0; r < R; r++)
		for (int q = 0; q < C; q++) {
			double want = exp((double)x[r * C + q]) * 0.5 + r;
			double rel = fabs(y[r * C + q] - want) / fmax(fabs(want), 1e-30);
			if (r * C + q != 5 && rel > maxrel)
				maxrel = rel;
		}
	CHECKF(maxrel < 4e-7, "inline exp: max relative error %g", maxrel);
	CHECK(y[5] > 0 && y[5] < 1e-37);
	int hist_neg = 0;
	for (int r = 0; r < R; r++) {
		double ws = 0, wm = -INFINITY;
		int wc = 0;
		for (int q = 0; q < C; q++) {
			double xv = x[r * C + q];
			ws += xv * xv;
			wm = xv > wm ? xv : wm;
			wc += xv > 0;
			hist_neg += xv < 0;
		}
		CHECKF(fabs(s[r] - ws) <= 1e-5 * ws, "row %d: sum %g want %g", r, s[r], ws);
		CHECK(m[r] == (float)wm);
		CHECK(c[r] == wc);
	}
	CHECK(h[0] == hist_neg && h[1] == R * C - hist_neg);
	/* k3, a block kernel: stage the row in a shared array, subtract its mean from the
	 * row reversed, store as bf16 */
	struct kir_kernel *k3 = kir_kernel_new("t_block", R);
	kir_kernel_block(k3, 128);
	int qx = kir_buf(k3, "x", KIR_F32), qy = kir_buf(k3, "y", KIR_BF16);
	int sh = kir_shared(k3, "row", KIR_F32, C);
	int j3 = kir_index(k3, "j");
	struct kir_expr *row3 = kir_bin(k3, KIR_MUL, kir_var(k3, 0), kir_i64(k3, C));
	struct kir_block *sb = kir_loop_spread(k3, &k3->body, j3, kir_i64(k3, 0), kir_i64(k3, C));
	kir_store_shared(k3, sb, sh, kir_var(k3, j3), kir_load(k3, qx, kir_bin(k3, KIR_ADD, row3, kir_var(k3, j3))));
	kir_barrier(k3, &k3->body);
	int mean = kir_local(k3, "mean", KIR_F32);
	kir_set(k3, &k3->body, mean,
		kir_bin(k3, KIR_DIV, kir_reduce_spread(k3, KIR_RED_SUM, j3, kir_i64(k3, 0), kir_i64(k3, C),
						       kir_load_shared(k3, sh, kir_var(k3, j3))),
			kir_f32(k3, C)));
	sb = kir_loop_spread(k3, &k3->body, j3, kir_i64(k3, 0), kir_i64(k3, C));
	struct kir_expr *rev = kir_load_shared(k3, sh, kir_bin(k3, KIR_SUB, kir_i64(k3, C - 1), kir_var(k3, j3)));
	kir_store(k3, sb, qy, kir_bin(k3, KIR_ADD, row3, kir_var(k3, j3)),
		  kir_bin(k3, KIR_SUB, rev, kir_var(k3, mean)));
	cg_kernel_fn fn3;
	REQUIRE(cg_jit_compile(jit, &k3, 1, &fn3, NULL, stderr) == 0);
	uint16_t *yb = malloc(sizeof(uint16_t) * R * C);
	void *a3[] = { x, yb };
	struct call c3 = { fn3, a3 };
	rt_pool_run(pool, R, 1, trampoline, &c3);
	int bad = 0;
	for (int r = 0; r < R; r++) {
		float ms = 0;
		for (int q = 0; q < C; q++)
			ms += x[r * C + q];
		for (int q = 0; q < C; q++) {
			float want = x[r * C + C - 1 - q] - ms / C;
			uint32_t bits;
			memcpy(&bits, &want, 4);
			bits = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16; /* to nearest even */
			uint32_t got = yb[r * C + q];
			/* the sum's order is the renderer's: allow one bf16 ulp */
			bad += got != bits && got + 1 != bits && got != bits + 1;
		}
	}
	CHECKF(bad == 0, "block kernel: %d bf16 results off by more than one ulp", bad);
	free(yb);
	kir_kernel_free(k3);

	printf("kernel IR: inline exp max rel err %.3g, host CPU %s\n", maxrel, cg_jit_cpu(jit));

	free(x);
	free(y);
	for (int i = 0; i < 3; i++)
		kir_kernel_free(ks[i]);
	rt_pool_free(pool);
	cg_jit_free(jit);
	return CHECK_DONE();
}
