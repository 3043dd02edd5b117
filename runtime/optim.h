/* optim.h - the optimizer of a training step, on plain float arrays: AdamW with
 * decoupled weight decay, global gradient-norm clipping, and the learning-rate
 * schedule (linear warm-up, then cosine decay to a floor).  Master weights and
 * gradients are fp32, the moments fp32 or (precision fp8) bf16.  Everything here is deterministic: the same inputs give the same
 * bits, which bit-identical resume relies on. */
#ifndef SLUICE_RT_OPTIM_H
#define SLUICE_RT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

struct rt_pool;

struct rt_adamw {
	float beta1, beta2, eps;
	float weight_decay;      /* decoupled: w -= lr * wd * w (PyTorch's AdamW) */
};

/* One AdamW step on n elements at step t (1-based: the bias corrections use t).
 * grad_scale multiplies every gradient first (the clipping factor, 1 when none);
 * decay = 0 leaves weight decay out (norm gains, biases).  pool (NULL: the calling
 * thread) splits the elements over threads; each element's update is the same
 * whatever the split. */
void rt_adamw_step(struct rt_pool *pool, const struct rt_adamw *o, float lr, int64_t t,
		   float *w, const float *g, float *m, float *v, size_t n, float grad_scale,
		   int decay);
/* The same with the moments kept in bf16, as DeepSeek-V3's FP8 recipe keeps them: each
 * element's m and v are widened to f32, updated as above, rounded to the nearest bf16
 * (ties to even) and stored, and the weight moves by the rounded values, so that a run
 * resumed from the stored moments continues bit for bit. */
void rt_adamw_step_bf16m(struct rt_pool *pool, const struct rt_adamw *o, float lr, int64_t t,
			 float *w, const float *g, uint16_t *m, uint16_t *v, size_t n,
			 float grad_scale, int decay);
/* bf16 <-> f32: widening is exact; narrowing rounds to nearest, ties to even (NaN
 * stays NaN) */
float rt_bf16_to_f32(uint16_t h);
uint16_t rt_f32_to_bf16(float f);

/* The L2 norm of all gradients together: squares summed in double over fixed blocks
 * of RT_OPTIM_BLOCK elements, the blocks' sums added in order, so the result does not
 * depend on the number of threads in pool (NULL: the calling thread). */
#define RT_OPTIM_BLOCK 16384
double rt_grad_norm(struct rt_pool *pool, float *const *grads, const size_t *n, int count);
/* The factor that brings a gradient of norm `norm` down to max_norm (1 when it is
 * already within, or when max_norm <= 0 turns clipping off). */
float rt_clip_scale(double norm, float max_norm);

struct rt_schedule {
	float lr_max;        /* peak learning rate, reached at the end of warm-up */
	float lr_min;        /* floor of the cosine decay */
	int64_t warmup;      /* steps of linear warm-up */
	int64_t total;       /* steps in all */
};

/* The learning rate of step `step` (0-based): (step+1)/warmup * lr_max during warm-up,
 * then lr_min + (lr_max - lr_min) * (1 + cos(pi * p)) / 2 with p going from 0 to 1
 * over the remaining steps; lr_min from the last step on. */
float rt_schedule_lr(const struct rt_schedule *s, int64_t step);

#endif
