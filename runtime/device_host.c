/* device_host.c - the host device (see device.h): buffers in host memory, every
 * operation done at once.  This is the code path CPU ranks always had (the same loops,
 * the same order, so the same bits), moved behind the device interface; and the
 * helpers that read and write device memory from the host, for either device. */
#include "device.h"

#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "optim.h"
#include "pool.h"
#include "rt.h"

static void *host_alloc(struct rt_device *d, size_t bytes)
{
	void *m = rt_pool_alloc_zeroed(d->pool, bytes);
	if (!m)
		fprintf(stderr, "sluice: cannot allocate %.1f MiB of host memory\n",
			(double)bytes / 1048576.0);
	return m;
}

static void host_free(struct rt_device *d, void *mem)
{
	(void)d;
	free(mem);
}

static int host_move(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	(void)d;
	if (dst != src)
		memcpy(dst, src, bytes);
	return 0;
}

static void host_zero(struct rt_device *d, void *dst, size_t bytes)
{
	(void)d;
	memset(dst, 0, bytes);
}

static void host_copy(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	host_move(d, dst, src, bytes);
}

static void host_add_f32(struct rt_device *d, void *dst, const void *src, size_t n)
{
	(void)d;
	float *restrict a = dst;
	const float *restrict b = src;
	for (size_t i = 0; i < n; i++)
		a[i] += b[i];
}

static void host_input(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	host_move(d, dst, src, bytes);
}

static void host_snapshot(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	host_move(d, dst, src, bytes);
}

static void host_nothing(struct rt_device *d)
{
	(void)d;
}

static void *host_host_alloc(struct rt_device *d, size_t bytes)
{
	return rt_pool_alloc_zeroed(d->pool, bytes);
}

static void host_comm_begin(struct rt_device *d, struct rt_comm *c)
{
	(void)d;
	(void)c;
}

static void host_comm_wait(struct rt_device *d, struct rt_comm *c)
{
	(void)d;
	rt_comm_sync(c, NULL);
}

static int host_sync(struct rt_device *d)
{
	(void)d;
	return 0;
}

/* --- the optimizer: runtime/optim.c over the table ---------------------------- */

struct rt_dev_optim {
	struct rt_dev_tensor *t;
	int n;
	float **grads;              /* the counted ones, in table order */
	size_t *grad_n;
	int n_counted;
};

static struct rt_dev_optim *host_optim_new(struct rt_device *d, const struct rt_dev_tensor *t,
					   int n)
{
	(void)d;
	struct rt_dev_optim *o = rt_calloc(1, sizeof *o);
	o->t = rt_calloc((size_t)n + 1, sizeof *o->t);
	memcpy(o->t, t, sizeof *t * (size_t)n);
	o->n = n;
	o->grads = rt_calloc((size_t)n + 1, sizeof *o->grads);
	o->grad_n = rt_calloc((size_t)n + 1, sizeof *o->grad_n);
	for (int k = 0; k < n; k++)
		if (t[k].counted) {
			o->grads[o->n_counted] = t[k].g;
			o->grad_n[o->n_counted++] = t[k].n;
		}
	return o;
}

static void host_optim_free(struct rt_device *d, struct rt_dev_optim *o)
{
	(void)d;
	if (!o)
		return;
	free(o->t);
	free(o->grads);
	free(o->grad_n);
	free(o);
}

static void host_scale_grads(struct rt_device *d, struct rt_dev_optim *o, float s)
{
	(void)d;
	for (int k = 0; k < o->n; k++) {
		float *g = o->t[k].g;
		for (size_t i = 0; i < o->t[k].n; i++)
			g[i] *= s;
	}
}

static double host_grad_norm(struct rt_device *d, struct rt_dev_optim *o)
{
	return rt_grad_norm(d->pool, o->grads, o->grad_n, o->n_counted);
}

static void host_adamw(struct rt_device *d, struct rt_dev_optim *o, const struct rt_adamw *a,
		       float lr, int64_t t, float grad_scale)
{
	for (int k = 0; k < o->n; k++) {
		const struct rt_dev_tensor *x = &o->t[k];
		if (x->bf16_moments)
			rt_adamw_step_bf16m(d->pool, a, lr, t, x->w, x->g, x->m, x->v, x->n,
					    grad_scale, x->decay);
		else
			rt_adamw_step(d->pool, a, lr, t, x->w, x->g, x->m, x->v, x->n,
				      grad_scale, x->decay);
	}
}

static const struct rt_device_ops host_ops = {
	.alloc = host_alloc,
	.free = host_free,
	.upload = host_move,
	.download = host_move,
	.zero = host_zero,
	.copy = host_copy,
	.add_f32 = host_add_f32,
	.input = host_input,
	.snapshot = host_snapshot,
	.snapshot_wait = host_nothing,
	.host_alloc = host_host_alloc,
	.host_free = host_free,
	.comm_begin = host_comm_begin,
	.comm_wait = host_comm_wait,
	.sync = host_sync,
	.optim_new = host_optim_new,
	.optim_free = host_optim_free,
	.scale_grads = host_scale_grads,
	.grad_norm = host_grad_norm,
	.adamw = host_adamw,
};

struct rt_device *rt_device_host_new(void)
{
	struct rt_device *d = rt_calloc(1, sizeof *d);
	d->ops = &host_ops;
	d->name = "cpu";
	d->host = 1;
	d->pool = rt_pool_new(0);
	return d;
}

#ifndef SLUICE_HAVE_CUDA
struct rt_device *rt_device_cuda_new(struct rt_gpu *g, char *err, size_t errlen)
{
	(void)g;
	snprintf(err, errlen, "this sluice was built without CUDA: no GPU device");
	return NULL;
}
#endif

void rt_device_free(struct rt_device *d)
{
	if (!d)
		return;
	if (d->ops->destroy)
		d->ops->destroy(d);
	if (d->pool)
		rt_pool_free(d->pool);
	free(d);
}

/* --- host views of device memory ------------------------------------------------ */

const void *rt_device_view(struct rt_device *d, const void *src, size_t bytes, void **copy)
{
	*copy = NULL;
	if (d->host)
		return src;
	*copy = rt_malloc(bytes ? bytes : 1);
	if (d->ops->download(d, *copy, src, bytes)) {
		free(*copy);
		*copy = NULL;
		return NULL;
	}
	return *copy;
}

void *rt_device_stage(struct rt_device *d, void *dst, size_t bytes)
{
	return d->host ? dst : rt_malloc(bytes ? bytes : 1);
}

int rt_device_put(struct rt_device *d, void *dst, void *staged, size_t bytes)
{
	if (staged == dst)
		return 0;
	int rc = d->ops->upload(d, dst, staged, bytes);
	free(staged);
	return rc;
}
