/* harness.h - what the GPU backend's tests share: opening the GPU (or exiting 77,
 * skipped, when there is none), moving a value between the reference executor's host
 * storage (every float dtype as f32, i32 and i64 as such) and the CUDA backend's
 * device storage (bf16 and f16 in 16 bits, f8 in a byte), and the normalised error of
 * test_ops.c. */
#ifndef SLUICE_TEST_CUDA_HARNESS_H
#define SLUICE_TEST_CUDA_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"
#include "runtime/gpu.h"

/* The GPU of the tests, with ARENA bytes of device memory for inputs and executors;
 * exits 77 when there is none. */
static struct rt_gpu *harness_open(size_t arena)
{
	if (rt_gpu_count() == 0) {
		printf("skipped: no GPU: %s\n", rt_gpu_why_none());
		exit(77);
	}
	struct rt_gpu *g = rt_gpu_open(0, arena);
	if (!g) {
		fprintf(stderr, "the GPU did not open\n");
		exit(1);
	}
	cg_cuda_use_gpu(g);
	return g;
}

/* round to nearest even; NaN stays NaN */
static uint16_t harness_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static float harness_from_bf16(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* IEEE binary16 of a value that has one (the tests' inputs: multiples of 1/64 in
 * [-2, 2]); else the nearest by rounding the mantissa down, which the tests never ask */
static uint16_t harness_f16(float f)
{
	uint16_t s = f < 0 ? 0x8000 : 0;
	double a = fabs((double)f);
	if (a == 0)
		return s;
	int e;
	double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
	if (e - 1 < -14) /* subnormal: units of 2^-24 */
		return (uint16_t)(s | (uint16_t)(a * 16777216.0));
	return (uint16_t)(s | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((m * 2 - 1) * 1024));
}

static float harness_from_f16(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
	return (float)(h & 0x8000 ? -v : v);
}

/* an E4M3 (e5m2 0) or E5M2 (1) byte's value */
static float harness_from_f8(uint8_t b, int e5m2)
{
	int e = e5m2 ? (b >> 2) & 31 : (b >> 3) & 15, m = e5m2 ? b & 3 : b & 7;
	int mb = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
	double v;
	if (e5m2 && e == 31)
		v = m ? NAN : INFINITY;
	else if (!e5m2 && e == 15 && m == 7)
		v = NAN;
	else if (e == 0)
		v = ldexp(m, 1 - bias - mb);
	else
		v = ldexp((1 << mb) + m, e - bias - mb);
	return (float)(b & 0x80 ? -v : v);
}

static int harness_is_f8(enum ir_dtype t)
{
	return t == IR_F8E4M3 || t == IR_F8E5M2;
}

static size_t harness_dev_size(enum ir_dtype t)
{
	return t == IR_BF16 || t == IR_F16 ? 2 : t == IR_I64 ? 8 : harness_is_f8(t) ? 1 : 4;
}

/* Copy value v from host storage to new device memory; returns its address. */
static rt_dptr harness_upload(struct rt_gpu *g, const struct ir_value *v, const void *host)
{
	size_t n = (size_t)ir_shape_numel(&v->shape), es = harness_dev_size(v->dtype);
	rt_dptr d = rt_gpu_alloc(g, n * es + 1, 256);
	if (!d)
		exit(1);
	void *tmp = NULL;
	if (harness_is_f8(v->dtype)) {
		fprintf(stderr, "harness: f8 inputs are not uploaded (quantise f32 ones)\n");
		exit(1);
	}
	if (v->dtype == IR_BF16 || v->dtype == IR_F16) {
		uint16_t *h = malloc(n * 2 + 2);
		for (size_t i = 0; i < n; i++)
			h[i] = v->dtype == IR_BF16 ? harness_bf16(((const float *)host)[i])
						   : harness_f16(((const float *)host)[i]);
		host = tmp = h;
	}
	if (n && rt_gpu_copy_to_device(g, d, host, n * es, RT_STREAM_COMPUTE))
		exit(1);
	if (rt_gpu_sync(g, RT_STREAM_COMPUTE))
		exit(1);
	free(tmp);
	return d;
}

/* Value v from device address d, in host storage (malloc'd); waits for the GPU. */
static void *harness_download(struct rt_gpu *g, const struct ir_value *v, rt_dptr d)
{
	size_t n = (size_t)ir_shape_numel(&v->shape), es = harness_dev_size(v->dtype);
	void *raw = malloc(n * es + 8);
	if (n && rt_gpu_copy_to_host(g, raw, d, n * es, RT_STREAM_COMPUTE))
		exit(1);
	if (rt_gpu_sync(g, RT_STREAM_COMPUTE))
		exit(1);
	if (v->dtype != IR_BF16 && v->dtype != IR_F16 && !harness_is_f8(v->dtype))
		return raw;
	float *f = malloc(n * 4 + 4);
	for (size_t i = 0; i < n; i++)
		f[i] = harness_is_f8(v->dtype) ? harness_from_f8(((uint8_t *)raw)[i],
								  v->dtype == IR_F8E5M2)
		       : v->dtype == IR_BF16 ? harness_from_bf16(((uint16_t *)raw)[i])
					     : harness_from_f16(((uint16_t *)raw)[i]);
	free(raw);
	return f;
}

/* sum|a - b| / sum|b| (the sum itself when b is all zero) */
static double harness_error(const float *a, const float *b, int64_t n)
{
	double num = 0, den = 0;
	for (int64_t i = 0; i < n; i++) {
		num += fabs((double)a[i] - b[i]);
		den += fabs((double)b[i]);
	}
	return den > 0 ? num / den : num;
}

/* the graph holds an op the CUDA backend has no kernel for yet */
static int harness_needs_missing_kernel(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_ops; i++) {
		enum ir_opkind k = g->ops[i]->kind;
		if (k == IR_OP_GROUPED_MATMUL || k == IR_OP_GROUPED_MATMUL_WGRAD ||
		    k == IR_OP_ATTENTION || k == IR_OP_ATTENTION_BWD)
			return 1;
	}
	return 0;
}

#endif
