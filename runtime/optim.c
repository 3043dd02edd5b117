/* optim.c - AdamW, gradient clipping and the learning-rate schedule (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rt.h"

/* The two loops below are most of the optimizer's time, split over threads by the
 * pool.  With GCC they are built at -O3 and without errno for sqrt (an argument that
 * is never negative sets none anyway); neither changes a result: no reassociation.
 * (GCC 12 still does not vectorise the AdamW loop this way: it wants -fno-math-errno
 * for the whole file, which is the build's choice, not this file's.) */
#if defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((optimize("O3", "no-math-errno")))
#else
#define HOT
#endif

struct adamw_job {
	const struct rt_adamw *o;
	float lr, bc1, bc2, wd, scale;
	float *w, *m, *v;
	const float *g;
};

static HOT void adamw_range(void *ctx, int64_t lo, int64_t hi)
{
	const struct adamw_job *j = ctx;
	const float b1 = j->o->beta1, b2 = j->o->beta2, eps = j->o->eps;
	const float lr = j->lr, bc1 = j->bc1, bc2 = j->bc2, wd = j->wd, scale = j->scale;
	float *restrict w = j->w, *restrict m = j->m, *restrict v = j->v;
	const float *restrict g = j->g;
	for (int64_t i = lo; i < hi; i++) {
		float gi = g[i] * scale;
		m[i] = b1 * m[i] + (1.0f - b1) * gi;
		v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
		float mhat = m[i] / bc1;
		float vhat = v[i] / bc2;
		w[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[i]);
	}
}

void rt_adamw_step(struct rt_pool *pool, const struct rt_adamw *o, float lr, int64_t t,
		   float *w, const float *g, float *m, float *v, size_t n, float grad_scale,
		   int decay)
{
	/* bias corrections in double: pow of a float base drifts from step to step */
	struct adamw_job j = {
		.o = o, .lr = lr, .wd = decay ? o->weight_decay : 0.0f, .scale = grad_scale,
		.bc1 = (float)(1.0 - pow((double)o->beta1, (double)t)),
		.bc2 = (float)(1.0 - pow((double)o->beta2, (double)t)),
		.w = w, .m = m, .v = v, .g = g,
	};
	if (pool && n > RT_OPTIM_BLOCK)
		rt_pool_run(pool, (int64_t)n, RT_OPTIM_BLOCK, adamw_range, &j);
	else
		adamw_range(&j, 0, (int64_t)n);
}

float rt_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

uint16_t rt_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
		return (uint16_t)(u >> 16 | 0x40); /* a NaN stays one */
	u += 0x7fffu + (u >> 16 & 1);
	return (uint16_t)(u >> 16);
}

struct adamw_bf16_job {
	const struct rt_adamw *o;
	float lr, bc1, bc2, wd, scale;
	float *w;
	uint16_t *m, *v;
	const float *g;
};

static HOT void adamw_bf16_range(void *ctx, int64_t lo, int64_t hi)
{
	const struct adamw_bf16_job *j = ctx;
	const float b1 = j->o->beta1, b2 = j->o->beta2, eps = j->o->eps;
	const float lr = j->lr, bc1 = j->bc1, bc2 = j->bc2, wd = j->wd, scale = j->scale;
	float *restrict w = j->w;
	uint16_t *restrict m = j->m, *restrict v = j->v;
	const float *restrict g = j->g;
	for (int64_t i = lo; i < hi; i++) {
		float gi = g[i] * scale;
		uint16_t mi = rt_f32_to_bf16(b1 * rt_bf16_to_f32(m[i]) + (1.0f - b1) * gi);
		uint16_t vi = rt_f32_to_bf16(b2 * rt_bf16_to_f32(v[i]) + (1.0f - b2) * gi * gi);
		m[i] = mi;
		v[i] = vi;
		float mhat = rt_bf16_to_f32(mi) / bc1;
		float vhat = rt_bf16_to_f32(vi) / bc2;
		w[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * w[i]);
	}
}

void rt_adamw_step_bf16m(struct rt_pool *pool, const struct rt_adamw *o, float lr, int64_t t,
			 float *w, const float *g, uint16_t *m, uint16_t *v, size_t n,
			 float grad_scale, int decay)
{
	struct adamw_bf16_job j = {
		.o = o, .lr = lr, .wd = decay ? o->weight_decay : 0.0f, .scale = grad_scale,
		.bc1 = (float)(1.0 - pow((double)o->beta1, (double)t)),
		.bc2 = (float)(1.0 - pow((double)o->beta2, (double)t)),
		.w = w, .m = m, .v = v, .g = g,
	};
	if (pool && n > RT_OPTIM_BLOCK)
		rt_pool_run(pool, (int64_t)n, RT_OPTIM_BLOCK, adamw_bf16_range, &j);
	else
		adamw_bf16_range(&j, 0, (int64_t)n);
}

static HOT double sum_squares(const float *restrict x, size_t n)
{
	/* eight running sums in a fixed pattern: vectorisable, and the same every time */
	double s[8] = { 0 };
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int k = 0; k < 8; k++)
			s[k] += (double)x[i + k] * (double)x[i + k];
	for (; i < n; i++)
		s[i % 8] += (double)x[i] * (double)x[i];
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

struct norm_job {
	float *const *grads;
	const size_t *n;
	int count;
	int64_t *first;   /* first block of each gradient */
	double *sums;     /* one per block */
};

static void norm_blocks(void *ctx, int64_t lo, int64_t hi)
{
	const struct norm_job *j = ctx;
	int k = 0;
	for (int64_t b = lo; b < hi; b++) {
		while (k + 1 < j->count && b >= j->first[k + 1])
			k++;
		size_t off = (size_t)(b - j->first[k]) * RT_OPTIM_BLOCK;
		size_t len = j->n[k] - off < RT_OPTIM_BLOCK ? j->n[k] - off : RT_OPTIM_BLOCK;
		j->sums[b] = sum_squares(j->grads[k] + off, len);
	}
}

double rt_grad_norm(struct rt_pool *pool, float *const *grads, const size_t *n, int count)
{
	int64_t *first = rt_malloc(sizeof *first * (size_t)(count + 1));
	int64_t nb = 0;
	for (int k = 0; k < count; k++) {
		first[k] = nb;
		nb += (int64_t)((n[k] + RT_OPTIM_BLOCK - 1) / RT_OPTIM_BLOCK);
	}
	first[count] = nb;
	double *sums = rt_calloc((size_t)nb + 1, sizeof *sums);
	struct norm_job j = { grads, n, count, first, sums };
	if (pool && nb > 1)
		rt_pool_run(pool, nb, 1, norm_blocks, &j);
	else
		norm_blocks(&j, 0, nb);
	double s = 0.0;
	for (int64_t b = 0; b < nb; b++)
		s += sums[b];
	free(first);
	free(sums);
	return sqrt(s);
}

float rt_clip_scale(double norm, float max_norm)
{
	if (max_norm <= 0.0f || !(norm > (double)max_norm))
		return 1.0f;
	return (float)((double)max_norm / norm);
}

float rt_schedule_lr(const struct rt_schedule *s, int64_t step)
{
	if (step < s->warmup)
		return s->lr_max * (float)(step + 1) / (float)s->warmup;
	if (step >= s->total)
		return s->lr_min;
	int64_t decay = s->total - s->warmup;
	if (decay <= 1)
		return s->lr_max;
	double p = (double)(step - s->warmup) / (double)(decay - 1);
	double c = 0.5 * (1.0 + cos(M_PI * p));
	return (float)((double)s->lr_min + ((double)s->lr_max - (double)s->lr_min) * c);
}
