/* gpu_test.h - what the GPU tests share: the skip without a GPU, and host-side
 * conversions to and from bf16 and fp8 E4M3 (round to nearest even, saturating). */
#ifndef SLUICE_GPU_TEST_H
#define SLUICE_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gpu.h"

/* Without a driver or GPU: one line saying so, then exit with $SLUICE_SKIP_EXIT
 * (ctest sets 77 and registers that as "skipped"), else 0. */
static inline void gpu_test_require(const char *test)
{
	if (rt_gpu_count() > 0)
		return;
	printf("%s: skipped: no CUDA driver/GPU (%s)\n", test, rt_gpu_why_none());
	const char *rc = getenv("SLUICE_SKIP_EXIT");
	exit(rc ? atoi(rc) : 0);
}

static inline uint16_t f32_to_bf16(float f)
{
	uint32_t b;
	memcpy(&b, &f, 4);
	return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
	uint32_t b = (uint32_t)h << 16;
	float f;
	memcpy(&f, &b, 4);
	return f;
}

/* E4M3 (OCP "fn"): bias 7, no infinities, 448 the largest, 2^-9 the smallest. */
static inline float e4m3_to_f32(uint8_t v)
{
	int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
	float x = e ? ldexpf(1.0f + (float)m / 8, e - 7) : ldexpf((float)m / 8, -6);
	if (e == 15 && m == 7)
		x = NAN;
	return s ? -x : x;
}

static inline uint8_t f32_to_e4m3(float x)
{
	/* nearest of the 127 non-negative finite codes, ties to the even code */
	uint8_t sign = signbit(x) ? 0x80 : 0;
	float a = fabsf(x);
	if (a >= 448.0f)
		return sign | 0x7e;
	uint8_t lo = 0, hi = 0x7e;
	while (hi - lo > 1) { /* largest code with value <= a */
		uint8_t mid = (uint8_t)((lo + hi) / 2);
		if (e4m3_to_f32(mid) <= a)
			lo = mid;
		else
			hi = mid;
	}
	if (e4m3_to_f32(hi) <= a)
		lo = hi;
	uint8_t best = lo;
	if (lo < 0x7e) {
		float dl = a - e4m3_to_f32(lo), dh = e4m3_to_f32((uint8_t)(lo + 1)) - a;
		if (dh < dl || (dh == dl && (lo & 1)))
			best = (uint8_t)(lo + 1);
	}
	return sign | best;
}

/* a uniform double in [-1, 1) from a 64-bit LCG */
static inline double test_rand(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(*s >> 11) / 4503599627370496.0 - 1.0;
}

#endif
