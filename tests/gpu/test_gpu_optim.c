/* test_gpu_optim.c - the CUDA device of runtime/device.h against the host's: AdamW,
 * the gradient scale and norm over a table of tensors of awkward sizes (one element,
 * a block's worth plus one, several blocks), stepped five times by runtime/optim.c on
 * the host and by the fused kernel on the GPU; then the executor's operations (copy,
 * add, zero, inputs through pinned memory, snapshots on the copy stream).
 *
 * Bounds.  AdamW: the kernel performs runtime/optim.c's fp32 operations in the same
 * order, without contraction into fused multiply-adds (--fmad=false) and with IEEE
 * division and square root, so each element should round alike: the bound is a
 * relative 1e-6 (a few fp32 ulps, what a contraction would cost), and the test prints
 * the difference it saw.  The norm: squares summed in double in another order, relative
 * 1e-12.  The scale, the sums and the copies: exact.  The FP8 recipe's AdamW, moments
 * stored in bf16 (rt_adamw_step_bf16m), beside f32-moment tensors in one table: the
 * weights under the same 1e-6, the bf16 moments bit for bit (one rounding of values
 * that agree to an ulp or two of fp32 lands on the same bf16 but at a tie, which the
 * test would show). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gpu_test.h"
#include "runtime/device.h"
#include "runtime/gpu.h"
#include "runtime/optim.h"
#include "runtime/rt.h"

#define NT 5
static const size_t sizes[NT] = { 1, 8193, 1000, 3 * 8192 + 5, 100000 };

static double rel(double a, double b)
{
	double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
	return s > 0 ? d / s : 0.0;
}

static void test_optimizer(struct rt_device *d)
{
	uint64_t seed = 42;
	float *hw[NT], *hg[NT], *hm[NT], *hv[NT];
	struct rt_dev_tensor t[NT];
	for (int k = 0; k < NT; k++) {
		size_t n = sizes[k], b = n * sizeof(float);
		hw[k] = rt_malloc(b);
		hg[k] = rt_malloc(b);
		hm[k] = rt_malloc(b);
		hv[k] = rt_malloc(b);
		for (size_t i = 0; i < n; i++) {
			hw[k][i] = (float)test_rand(&seed);
			hg[k][i] = (float)(test_rand(&seed) * 1e-2);
			hm[k][i] = (float)(test_rand(&seed) * 1e-3);
			hv[k][i] = (float)(fabs(test_rand(&seed)) * 1e-5);
		}
		t[k] = (struct rt_dev_tensor){ d->ops->alloc(d, b), d->ops->alloc(d, b),
					       d->ops->alloc(d, b), d->ops->alloc(d, b), n,
					       k % 2, k != 2, 0 };
		REQUIRE(t[k].w && t[k].g && t[k].m && t[k].v);
		REQUIRE(!d->ops->upload(d, t[k].w, hw[k], b));
		REQUIRE(!d->ops->upload(d, t[k].g, hg[k], b));
		REQUIRE(!d->ops->upload(d, t[k].m, hm[k], b));
		REQUIRE(!d->ops->upload(d, t[k].v, hv[k], b));
	}
	struct rt_dev_optim *o = d->ops->optim_new(d, t, NT);
	REQUIRE(o);
	/* the scale: one multiplication, exact alike */
	d->ops->scale_grads(d, o, 0.25f);
	for (int k = 0; k < NT; k++)
		for (size_t i = 0; i < sizes[k]; i++)
			hg[k][i] *= 0.25f;
	int scale_bad = 0;
	for (int k = 0; k < NT; k++) {
		float *back = rt_malloc(sizes[k] * sizeof *back);
		REQUIRE(!d->ops->download(d, back, t[k].g, sizes[k] * sizeof *back));
		scale_bad += memcmp(back, hg[k], sizes[k] * sizeof *back) != 0;
		free(back);
	}
	CHECK(scale_bad == 0);
	/* the norm of the counted ones */
	float *cg[NT];
	size_t cn[NT];
	int nc = 0;
	for (int k = 0; k < NT; k++)
		if (t[k].counted) {
			cg[nc] = hg[k];
			cn[nc++] = sizes[k];
		}
	double hn = rt_grad_norm(NULL, cg, cn, nc), dn = d->ops->grad_norm(d, o);
	printf("gradient norm: host %.17g, GPU %.17g, relative difference %.3g\n", hn, dn,
	       rel(hn, dn));
	CHECK(rel(hn, dn) <= 1e-12);
	/* five AdamW steps with clipping folded in */
	struct rt_adamw a = { 0.9f, 0.95f, 1e-8f, 0.1f };
	for (int step = 1; step <= 5; step++) {
		float lr = 1e-3f * (float)step, clip = 0.5f + 0.1f * (float)step;
		d->ops->adamw(d, o, &a, lr, step, clip);
		for (int k = 0; k < NT; k++)
			rt_adamw_step(NULL, &a, lr, step, hw[k], hg[k], hm[k], hv[k], sizes[k], clip,
				      t[k].decay);
	}
	double worst[3] = { 0, 0, 0 };
	size_t differ = 0, total = 0;
	for (int k = 0; k < NT; k++) {
		float *host[3] = { hw[k], hm[k], hv[k] };
		void *dev[3] = { t[k].w, t[k].m, t[k].v };
		for (int j = 0; j < 3; j++) {
			float *back = rt_malloc(sizes[k] * sizeof *back);
			REQUIRE(!d->ops->download(d, back, dev[j], sizes[k] * sizeof *back));
			for (size_t i = 0; i < sizes[k]; i++) {
				double r = rel(back[i], host[j][i]);
				if (r > worst[j])
					worst[j] = r;
				differ += back[i] != host[j][i];
				total++;
			}
			free(back);
		}
	}
	printf("AdamW, 5 steps over %d tensors (%zu values): max relative difference "
	       "weights %.3g, m %.3g, v %.3g; %zu values not bit-identical\n", NT, total,
	       worst[0], worst[1], worst[2], differ);
	CHECK(worst[0] <= 1e-6 && worst[1] <= 1e-6 && worst[2] <= 1e-6);
	d->ops->optim_free(d, o);
	for (int k = 0; k < NT; k++) {
		d->ops->free(d, t[k].w);
		d->ops->free(d, t[k].g);
		d->ops->free(d, t[k].m);
		d->ops->free(d, t[k].v);
		free(hw[k]);
		free(hg[k]);
		free(hm[k]);
		free(hv[k]);
	}
}

static void test_moves(struct rt_device *d)
{
	size_t n = 100003, b = n * sizeof(float);
	float *x = rt_malloc(b), *y = rt_malloc(b), *back = rt_malloc(b), *x0 = rt_malloc(b);
	uint64_t seed = 7;
	for (size_t i = 0; i < n; i++) {
		x[i] = (float)test_rand(&seed);
		y[i] = (float)test_rand(&seed);
	}
	memcpy(x0, x, b);
	void *dx = d->ops->alloc(d, b), *dy = d->ops->alloc(d, b);
	REQUIRE(dx && dy);
	/* a fresh allocation is zero */
	REQUIRE(!d->ops->download(d, back, dx, b));
	int nonzero = 0;
	for (size_t i = 0; i < n; i++)
		nonzero += back[i] != 0.0f;
	CHECK(nonzero == 0);
	/* inputs through the pinned staging, then a copy and a sum on the compute stream */
	d->ops->input(d, dx, x, b);
	memset(x, 0, b); /* the caller may reuse its memory at once */
	d->ops->input(d, dy, y, b);
	d->ops->copy(d, dx, dy, n / 2 * sizeof(float));
	d->ops->add_f32(d, dx, dy, n);
	REQUIRE(!d->ops->download(d, back, dx, b));
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		float want = (i < n / 2 ? y[i] : x0[i]) + y[i];
		bad += back[i] != want;
	}
	CHECK(bad == 0);
	/* a snapshot of the device memory into pinned memory on the copy stream */
	float *pin = d->ops->host_alloc(d, b);
	REQUIRE(pin);
	d->ops->zero(d, dy, n / 3 * sizeof(float));
	d->ops->snapshot(d, pin, dy, b);
	d->ops->snapshot_wait(d);
	bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += pin[i] != (i < n / 3 ? 0.0f : y[i]);
	CHECK(bad == 0);
	/* view and stage */
	void *copy;
	const float *v = rt_device_view(d, dy, b, &copy);
	REQUIRE(v && copy);
	CHECK(memcmp(v, pin, b) == 0);
	free(copy);
	float *s = rt_device_stage(d, dx, b);
	for (size_t i = 0; i < n; i++)
		s[i] = (float)i;
	REQUIRE(!rt_device_put(d, dx, s, b));
	REQUIRE(!d->ops->download(d, back, dx, b));
	bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += back[i] != (float)i;
	CHECK(bad == 0);
	d->ops->host_free(d, pin);
	d->ops->free(d, dx);
	d->ops->free(d, dy);
	free(x);
	free(x0);
	free(y);
	free(back);
}

/* bf16 moments on the even tensors, f32 on the odd ones, five steps each side */
static void test_optimizer_bf16m(struct rt_device *d)
{
	uint64_t seed = 7;
	float *hw[NT], *hg[NT], *hm[NT], *hv[NT];
	uint16_t *hm16[NT], *hv16[NT];
	struct rt_dev_tensor t[NT];
	for (int k = 0; k < NT; k++) {
		size_t n = sizes[k], b = n * sizeof(float), es = k % 2 ? sizeof(float) : 2;
		hw[k] = rt_malloc(b);
		hg[k] = rt_malloc(b);
		hm[k] = rt_malloc(b);
		hv[k] = rt_malloc(b);
		hm16[k] = rt_malloc(n * 2);
		hv16[k] = rt_malloc(n * 2);
		for (size_t i = 0; i < n; i++) {
			hw[k][i] = (float)test_rand(&seed);
			hg[k][i] = (float)(test_rand(&seed) * 1e-2);
			hm16[k][i] = rt_f32_to_bf16(hm[k][i] = (float)(test_rand(&seed) * 1e-3));
			hv16[k][i] = rt_f32_to_bf16(hv[k][i] = (float)(fabs(test_rand(&seed)) * 1e-5));
		}
		t[k] = (struct rt_dev_tensor){ d->ops->alloc(d, b), d->ops->alloc(d, b),
					       d->ops->alloc(d, n * es), d->ops->alloc(d, n * es), n,
					       1, 1, k % 2 == 0 };
		REQUIRE(t[k].w && t[k].g && t[k].m && t[k].v);
		REQUIRE(!d->ops->upload(d, t[k].w, hw[k], b));
		REQUIRE(!d->ops->upload(d, t[k].g, hg[k], b));
		REQUIRE(!d->ops->upload(d, t[k].m, k % 2 ? (void *)hm[k] : hm16[k], n * es));
		REQUIRE(!d->ops->upload(d, t[k].v, k % 2 ? (void *)hv[k] : hv16[k], n * es));
	}
	struct rt_dev_optim *o = d->ops->optim_new(d, t, NT);
	REQUIRE(o);
	struct rt_adamw a = { 0.9f, 0.95f, 1e-8f, 0.1f };
	for (int step = 1; step <= 5; step++) {
		float lr = 1e-3f * (float)step;
		d->ops->adamw(d, o, &a, lr, step, 1.0f);
		for (int k = 0; k < NT; k++)
			if (k % 2)
				rt_adamw_step(NULL, &a, lr, step, hw[k], hg[k], hm[k], hv[k], sizes[k],
					      1.0f, 1);
			else
				rt_adamw_step_bf16m(NULL, &a, lr, step, hw[k], hg[k], hm16[k],
						    hv16[k], sizes[k], 1.0f, 1);
	}
	double worst = 0;
	size_t differ16 = 0, n16 = 0;
	for (int k = 0; k < NT; k++) {
		size_t n = sizes[k];
		float *back = rt_malloc(n * sizeof *back);
		REQUIRE(!d->ops->download(d, back, t[k].w, n * sizeof *back));
		for (size_t i = 0; i < n; i++)
			worst = fmax(worst, rel(back[i], hw[k][i]));
		if (k % 2 == 0) {
			uint16_t *m = rt_malloc(n * 2), *v = rt_malloc(n * 2);
			REQUIRE(!d->ops->download(d, m, t[k].m, n * 2));
			REQUIRE(!d->ops->download(d, v, t[k].v, n * 2));
			for (size_t i = 0; i < n; i++)
				differ16 += (m[i] != hm16[k][i]) + (v[i] != hv16[k][i]);
			n16 += 2 * n;
			free(m);
			free(v);
		}
		free(back);
	}
	printf("AdamW with bf16 moments, 5 steps: max relative difference of the weights "
	       "%.3g; %zu of %zu bf16 moments differ\n", worst, differ16, n16);
	CHECK(worst <= 1e-6);
	CHECK(differ16 == 0);
	d->ops->optim_free(d, o);
	for (int k = 0; k < NT; k++) {
		d->ops->free(d, t[k].w);
		d->ops->free(d, t[k].g);
		d->ops->free(d, t[k].m);
		d->ops->free(d, t[k].v);
		free(hw[k]);
		free(hg[k]);
		free(hm[k]);
		free(hv[k]);
		free(hm16[k]);
		free(hv16[k]);
	}
}

int main(void)
{
	gpu_test_require("test_gpu_optim");
	struct rt_gpu *g = rt_gpu_open(0, 0);
	REQUIRE(g);
	char err[256];
	struct rt_device *d = rt_device_cuda_new(g, err, sizeof err);
	if (!d)
		fprintf(stderr, "%s\n", err);
	REQUIRE(d);
	test_optimizer(d);
	test_optimizer_bf16m(d);
	test_moves(d);
	rt_device_free(d);
	rt_gpu_close(g);
	return CHECK_DONE();
}
