/* test_optim.c - AdamW against steps computed by hand, clipping, and the schedule. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runtime/optim.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

#define NEAR(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol))

static void test_adamw(void)
{
	struct rt_adamw o = { .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f };
	float w = 1.0f, m = 0.0f, v = 0.0f;
	/* step 1: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25, update ~ 1,
	 * w = 1 - 0.1 * (1 + 0.1 * 1) = 0.89 */
	float g = 0.5f;
	rt_adamw_step(NULL, &o, 0.1f, 1, &w, &g, &m, &v, 1, 1.0f, 1);
	CHECKF(NEAR(m, 0.05, 1e-7), "m = %.9g", m);
	CHECKF(NEAR(v, 0.00025, 1e-8), "v = %.9g", v);
	CHECKF(NEAR(w, 0.890000002, 1e-6), "w = %.9g", w);
	/* step 2 with g = -0.25 and lr 0.05: m = 0.02, v = 0.00031225,
	 * mhat = 0.02 / 0.19, vhat = 0.00031225 / 0.001999,
	 * w = 0.89 - 0.05 * (mhat / sqrt(vhat) + 0.1 * 0.89) = 0.87223315 */
	g = -0.25f;
	rt_adamw_step(NULL, &o, 0.05f, 2, &w, &g, &m, &v, 1, 1.0f, 1);
	CHECKF(NEAR(m, 0.02, 1e-7), "m = %.9g", m);
	CHECKF(NEAR(v, 0.00031225, 1e-8), "v = %.9g", v);
	CHECKF(NEAR(w, 0.87223315, 2e-6), "w = %.9g", w);

	/* no decay, and the gradient scale (clipping) applied before the moments */
	float w2[2] = { 2.0f, -2.0f }, g2[2] = { 4.0f, -4.0f }, m2[2] = { 0 }, v2[2] = { 0 };
	rt_adamw_step(NULL, &o, 0.1f, 1, w2, g2, m2, v2, 2, 0.25f, 0);
	CHECKF(NEAR(m2[0], 0.1, 1e-7) && NEAR(m2[1], -0.1, 1e-7), "m = %g %g", m2[0], m2[1]);
	CHECKF(NEAR(w2[0], 1.9, 1e-6) && NEAR(w2[1], -1.9, 1e-6), "w = %g %g", w2[0], w2[1]);
}

static void test_clip(void)
{
	float a[2] = { 3.0f, 0.0f }, b[1] = { 4.0f };
	float *gs[2] = { a, b };
	size_t ns[2] = { 2, 1 };
	double norm = rt_grad_norm(NULL, gs, ns, 2);
	CHECKF(norm == 5.0, "norm = %.17g", norm);
	CHECK(NEAR(rt_clip_scale(norm, 1.0f), 0.2, 1e-7));
	CHECK(rt_clip_scale(norm, 10.0f) == 1.0f);
	CHECK(rt_clip_scale(norm, 0.0f) == 1.0f); /* off */
	CHECK(rt_clip_scale(NAN, 1.0f) == 1.0f);
}

static void test_schedule(void)
{
	struct rt_schedule s = { .lr_max = 1.0f, .lr_min = 0.1f, .warmup = 10, .total = 110 };
	CHECK(NEAR(rt_schedule_lr(&s, 0), 0.1, 1e-7));
	CHECK(NEAR(rt_schedule_lr(&s, 4), 0.5, 1e-7));
	CHECK(NEAR(rt_schedule_lr(&s, 9), 1.0, 1e-7));
	CHECK(NEAR(rt_schedule_lr(&s, 10), 1.0, 1e-7));        /* cosine starts at the peak */
	CHECK(NEAR(rt_schedule_lr(&s, 43), 0.775, 1e-6));      /* p = 1/3: 0.1 + 0.9 * 0.75 */
	CHECK(NEAR(rt_schedule_lr(&s, 109), 0.1, 1e-7));       /* the floor on the last step */
	CHECK(NEAR(rt_schedule_lr(&s, 500), 0.1, 1e-7));
	for (int64_t i = 11; i < 110; i++)
		CHECKF(rt_schedule_lr(&s, i) <= rt_schedule_lr(&s, i - 1), "step %lld", (long long)i);
	struct rt_schedule nw = { .lr_max = 0.5f, .lr_min = 0.0f, .warmup = 0, .total = 3 };
	CHECK(NEAR(rt_schedule_lr(&nw, 0), 0.5, 1e-7));
	CHECK(NEAR(rt_schedule_lr(&nw, 1), 0.25, 1e-7));
	CHECK(NEAR(rt_schedule_lr(&nw, 2), 0.0, 1e-7));
}

/* Threads change neither the norm (fixed blocks, summed in order) nor any update. */
static void test_threads(void)
{
	size_t ns[3] = { 3 * RT_OPTIM_BLOCK + 17, 5, 2 * RT_OPTIM_BLOCK };
	float *g[3], *w[2][3], *m[2][3], *v[2][3];
	uint64_t x = 12345;
	for (int k = 0; k < 3; k++) {
		g[k] = rt_malloc(ns[k] * sizeof(float));
		for (size_t i = 0; i < ns[k]; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			g[k][i] = (float)((double)(x >> 11) * 0x1.0p-53 - 0.5);
		}
		for (int r = 0; r < 2; r++) {
			w[r][k] = rt_calloc(ns[k], sizeof(float));
			m[r][k] = rt_calloc(ns[k], sizeof(float));
			v[r][k] = rt_calloc(ns[k], sizeof(float));
		}
	}
	struct rt_pool *pool = rt_pool_new(3);
	double a = rt_grad_norm(NULL, g, ns, 3), b = rt_grad_norm(pool, g, ns, 3);
	CHECKF(a == b, "%.17g != %.17g", a, b);
	double ref = 0;
	for (int k = 0; k < 3; k++)
		for (size_t i = 0; i < ns[k]; i++)
			ref += (double)g[k][i] * g[k][i];
	CHECK(NEAR(a, sqrt(ref), 1e-9 * a));
	struct rt_adamw o = { .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f };
	for (int t = 1; t <= 3; t++)
		for (int k = 0; k < 3; k++) {
			rt_adamw_step(NULL, &o, 1e-3f, t, w[0][k], g[k], m[0][k], v[0][k], ns[k], 0.5f, 1);
			rt_adamw_step(pool, &o, 1e-3f, t, w[1][k], g[k], m[1][k], v[1][k], ns[k], 0.5f, 1);
		}
	for (int k = 0; k < 3; k++) {
		CHECK(!memcmp(w[0][k], w[1][k], ns[k] * sizeof(float)));
		CHECK(!memcmp(v[0][k], v[1][k], ns[k] * sizeof(float)));
		free(g[k]);
		for (int r = 0; r < 2; r++) {
			free(w[r][k]);
			free(m[r][k]);
			free(v[r][k]);
		}
	}
	rt_pool_free(pool);
}

static uint16_t bits_bf16(uint32_t f32_bits)
{
	float f;
	memcpy(&f, &f32_bits, sizeof f);
	return rt_f32_to_bf16(f);
}

/* bf16 rounding, and AdamW with bf16 moments against the f32 step done by hand with
 * the moments rounded: bit for bit, whatever the threads */
static void test_adamw_bf16(void)
{
	/* nearest, ties to even; the largest finite rounds up to infinity; NaN stays one */
	CHECK(bits_bf16(0x3f808000u) == 0x3f80); /* a tie, to the even 0x3f80 */
	CHECK(bits_bf16(0x3f818000u) == 0x3f82); /* a tie, to the even 0x3f82 */
	CHECK(bits_bf16(0x3f808001u) == 0x3f81); /* above the tie */
	CHECK(bits_bf16(0x3f807fffu) == 0x3f80);
	CHECK(bits_bf16(0xbf808001u) == 0xbf81); /* the sign apart */
	CHECK(bits_bf16(0x7f7fffffu) == 0x7f80); /* to infinity */
	CHECK(bits_bf16(0x7f800000u) == 0x7f80);
	CHECK((bits_bf16(0x7fc00001u) & 0x7f80) == 0x7f80 && (bits_bf16(0x7fc00001u) & 0x7f));
	CHECK(rt_bf16_to_f32(0x3f80) == 1.0f && rt_bf16_to_f32(0xc000) == -2.0f);

	struct rt_adamw o = { .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f };
	enum { N = 3 * RT_OPTIM_BLOCK + 17 };
	float *w0 = malloc(N * sizeof *w0), *w1 = malloc(N * sizeof *w1), *w2 = malloc(N * sizeof *w2);
	float *g = malloc(N * sizeof *g), *mr = calloc(N, sizeof *mr), *vr = calloc(N, sizeof *vr);
	uint16_t *m1 = calloc(N, 2), *v1 = calloc(N, 2), *m2 = calloc(N, 2), *v2 = calloc(N, 2);
	REQUIRE(w0 && w1 && w2 && g && mr && vr && m1 && v1 && m2 && v2);
	uint64_t seed = 7;
	for (int i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		w0[i] = w1[i] = w2[i] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5);
	}
	struct rt_pool *pool = rt_pool_new(3);
	int same = 1, moved = 0;
	for (int t = 1; t <= 3; t++) {
		for (int i = 0; i < N; i++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			g[i] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5) * 1e-2f;
		}
		float bc1 = (float)(1.0 - pow((double)o.beta1, t));
		float bc2 = (float)(1.0 - pow((double)o.beta2, t));
		for (int i = 0; i < N; i++) { /* by hand */
			float gi = g[i] * 0.5f;
			mr[i] = rt_bf16_to_f32(rt_f32_to_bf16(o.beta1 * mr[i] + (1.0f - o.beta1) * gi));
			vr[i] = rt_bf16_to_f32(rt_f32_to_bf16(o.beta2 * vr[i] + (1.0f - o.beta2) * gi * gi));
			w0[i] -= 1e-3f * ((mr[i] / bc1) / (sqrtf(vr[i] / bc2) + o.eps) +
					  o.weight_decay * w0[i]);
		}
		rt_adamw_step_bf16m(NULL, &o, 1e-3f, t, w1, g, m1, v1, N, 0.5f, 1);
		rt_adamw_step_bf16m(pool, &o, 1e-3f, t, w2, g, m2, v2, N, 0.5f, 1);
		for (int i = 0; i < N; i++) {
			same &= !memcmp(&w0[i], &w1[i], 4) && !memcmp(&w1[i], &w2[i], 4) &&
				rt_bf16_to_f32(m1[i]) == mr[i] && m1[i] == m2[i] &&
				rt_bf16_to_f32(v1[i]) == vr[i] && v1[i] == v2[i];
			moved |= m1[i] != 0;
		}
	}
	CHECKF(same && moved, "bf16 moments: same %d, moved %d", same, moved);
	rt_pool_free(pool);
	free(w0), free(w1), free(w2), free(g), free(mr), free(vr);
	free(m1), free(v1), free(m2), free(v2);
}

int main(void)
{
	test_adamw_bf16();
	test_threads();
	test_adamw();
	test_clip();
	test_schedule();
	return CHECK_DONE();
}
