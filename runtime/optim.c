/* optim.c - AdamW, gradient clipping and the learning-rate schedule (see optim.h). */
#include "optim.h"

#include <math.h>

void rt_adamw_step(const struct rt_adamw *o, float lr, int64_t t, float *w,
		   const float *g, float *m, float *v, size_t n, float grad_scale,
		   int decay)
{
	/* bias corrections in double: pow of a float base drifts from step to step */
	float bc1 = (float)(1.0 - pow((double)o->beta1, (double)t));
	float bc2 = (float)(1.0 - pow((double)o->beta2, (double)t));
	float wd = decay ? o->weight_decay : 0.0f;
	for (size_t i = 0; i < n; i++) {
		float gi = g[i] * grad_scale;
		m[i] = o->beta1 * m[i] + (1.0f - o->beta1) * gi;
		v[i] = o->beta2 * v[i] + (1.0f - o->beta2) * gi * gi;
		float mhat = m[i] / bc1;
		float vhat = v[i] / bc2;
		w[i] -= lr * (mhat / (sqrtf(vhat) + o->eps) + wd * w[i]);
	}
}

double rt_grad_norm(float *const *grads, const size_t *n, int count)
{
	double s = 0.0;
	for (int k = 0; k < count; k++)
		for (size_t i = 0; i < n[k]; i++)
			s += (double)grads[k][i] * (double)grads[k][i];
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
