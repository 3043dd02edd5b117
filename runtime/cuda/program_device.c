/* program_device.c - the CUDA device of runtime/device.h: a program's buffers in GPU
 * memory, the executor's copies and sums queued on the compute stream, a step's inputs
 * staged in pinned memory and copied on the copy stream, and the optimizer as three
 * kernels over the whole parameter table (CUDA C compiled by NVRTC):
 *
 *   scale_grads  g *= s over every gradient (from the sum over micro-batches and ranks
 *                to the mean over the global batch);
 *   sumsq        the squares of the counted gradients summed in double, one partial
 *                per block of CHUNK elements, then sum_parts adds the partials in a
 *                fixed order (one block): the norm is the same every run, and one
 *                double comes back to the host a step;
 *   adamw        runtime/optim.c's update, element for element, the clipping factor
 *                folded in as the gradient scale; the moments in f32, or in bf16
 *                (the FP8 recipe: rt_adamw_step_bf16m's rounding, to nearest even).
 *
 * A launch covers the table through a block list: block b steps elements
 * [off, off + CHUNK) of tensor t, so one launch serves every tensor whatever their
 * sizes (the multi-tensor launch of Apex and PyTorch's fused AdamW).
 *
 * AdamW against runtime/optim.c: the same fp32 operations in the same order, with
 * NVRTC's contraction of a*b+c into fused multiply-adds turned off (--fmad=false) and
 * IEEE division and square root (NVRTC's defaults): each element's update then rounds
 * as the host's does (tests/gpu/test_gpu_optim.c measures it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_impl.h"
#include "runtime/comm.h"
#include "runtime/device.h"
#include "runtime/optim.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

#define CHUNK 8192
#define THREADS 256
#define STR_(x) #x
#define STR(x) STR_(x)
#define PIN_BYTES (8u << 20)

static const char optim_src[] =
	"#define CHUNK " STR(CHUNK) "\n"
	"typedef unsigned long long u64;\n"
	"struct tensor { float *w, *g, *m, *v; u64 n; int decay, counted, bf16m, pad; };\n"
	"struct blk { u64 off; int t, pad; };\n"
	"extern \"C\" __global__ void add_f32(float *a, const float *b, u64 n)\n"
	"{\n"
	"	for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;\n"
	"	     i += (u64)gridDim.x * blockDim.x)\n"
	"		a[i] += b[i];\n"
	"}\n"
	"extern \"C\" __global__ void scale_grads(const tensor *t, const blk *b, float s)\n"
	"{\n"
	"	blk k = b[blockIdx.x];\n"
	"	tensor x = t[k.t];\n"
	"	u64 end = k.off + CHUNK < x.n ? k.off + CHUNK : x.n;\n"
	"	for (u64 i = k.off + threadIdx.x; i < end; i += blockDim.x)\n"
	"		x.g[i] *= s;\n"
	"}\n"
	"__device__ double block_sum(double s)\n"
	"{\n"
	"	__shared__ double sh[" STR(THREADS) "];\n"
	"	sh[threadIdx.x] = s;\n"
	"	__syncthreads();\n"
	"	for (unsigned h = blockDim.x / 2; h > 0; h /= 2) {\n"
	"		if (threadIdx.x < h)\n"
	"			sh[threadIdx.x] += sh[threadIdx.x + h];\n"
	"		__syncthreads();\n"
	"	}\n"
	"	return sh[0];\n"
	"}\n"
	"extern \"C\" __global__ void sumsq(const tensor *t, const blk *b, double *part)\n"
	"{\n"
	"	blk k = b[blockIdx.x];\n"
	"	tensor x = t[k.t];\n"
	"	double s = 0.0;\n"
	"	if (x.counted) {\n"
	"		u64 end = k.off + CHUNK < x.n ? k.off + CHUNK : x.n;\n"
	"		for (u64 i = k.off + threadIdx.x; i < end; i += blockDim.x)\n"
	"			s += (double)x.g[i] * (double)x.g[i];\n"
	"	}\n"
	"	s = block_sum(s);\n"
	"	if (threadIdx.x == 0)\n"
	"		part[blockIdx.x] = s;\n"
	"}\n"
	"extern \"C\" __global__ void sum_parts(const double *part, u64 n, double *out)\n"
	"{\n"
	"	double s = 0.0;\n"
	"	for (u64 i = threadIdx.x; i < n; i += blockDim.x)\n"
	"		s += part[i];\n"
	"	s = block_sum(s);\n"
	"	if (threadIdx.x == 0)\n"
	"		*out = s;\n"
	"}\n"
	"__device__ float bf16_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }\n"
	"__device__ unsigned short f32_bf16(float f)\n"
	"{\n"
	"	unsigned short h;\n"
	"	asm(\"cvt.rn.bf16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n"
	"	return h;\n"
	"}\n"
	"extern \"C\" __global__ void adamw(const tensor *t, const blk *b, float b1, float b2,\n"
	"				   float eps, float lr, float bc1, float bc2, float wd,\n"
	"				   float scale)\n"
	"{\n"
	"	blk k = b[blockIdx.x];\n"
	"	tensor x = t[k.t];\n"
	"	float d = x.decay ? wd : 0.0f;\n"
	"	u64 end = k.off + CHUNK < x.n ? k.off + CHUNK : x.n;\n"
	"	unsigned short *m16 = (unsigned short *)x.m, *v16 = (unsigned short *)x.v;\n"
	"	for (u64 i = k.off + threadIdx.x; i < end; i += blockDim.x) {\n"
	"		float gi = x.g[i] * scale;\n"
	"		float m, v;\n"
	"		if (x.bf16m) { /* the moments stored in bf16, rounded to nearest even */\n"
	"			m = b1 * bf16_f32(m16[i]) + (1.0f - b1) * gi;\n"
	"			v = b2 * bf16_f32(v16[i]) + (1.0f - b2) * gi * gi;\n"
	"			m16[i] = f32_bf16(m);\n"
	"			v16[i] = f32_bf16(v);\n"
	"			m = bf16_f32(m16[i]);\n"
	"			v = bf16_f32(v16[i]);\n"
	"		} else {\n"
	"			m = b1 * x.m[i] + (1.0f - b1) * gi;\n"
	"			v = b2 * x.v[i] + (1.0f - b2) * gi * gi;\n"
	"			x.m[i] = m;\n"
	"			x.v[i] = v;\n"
	"		}\n"
	"		float mhat = m / bc1;\n"
	"		float vhat = v / bc2;\n"
	"		float w = x.w[i];\n"
	"		x.w[i] = w - lr * (mhat / (sqrtf(vhat) + eps) + d * w);\n"
	"	}\n"
	"}\n";

struct cuda_dev {
	struct rt_gpu *g;
	struct rt_module *mod;
	struct rt_kernel *add, *scale, *sumsq, *sum_parts, *adamw;
	unsigned char *pin;         /* inputs staged for the copy stream */
	size_t pin_off;
	rt_dptr norm;               /* one double */
};

static struct cuda_dev *cd(struct rt_device *d)
{
	return d->impl;
}

static int failed(const char *what)
{
	fprintf(stderr, "sluice: GPU: %s failed\n", what);
	return -1;
}

static void *dev_alloc(struct rt_device *d, size_t bytes)
{
	CUdeviceptr p = 0;
	if (rt_gpu_bind(d->gpu))
		return NULL;
	CUresult r = rt_cu.p_cuMemAlloc(&p, bytes ? bytes : 1);
	if (r != CUDA_SUCCESS) {
		rt_cu_fail(r, "cuMemAlloc", __FILE__, __LINE__);
		fprintf(stderr, "sluice: %.1f MiB of GPU memory do not fit\n",
			(double)bytes / 1048576.0);
		return NULL;
	}
	if (rt_gpu_memset(d->gpu, p, 0, bytes, RT_STREAM_COMPUTE) ||
	    rt_gpu_sync(d->gpu, RT_STREAM_COMPUTE)) {
		CU(cuMemFree, (p));
		return NULL;
	}
	return (void *)(uintptr_t)p;
}

static void dev_free(struct rt_device *d, void *mem)
{
	if (mem && !rt_gpu_bind(d->gpu))
		CU(cuMemFree, ((CUdeviceptr)(uintptr_t)mem));
}

static rt_dptr A(const void *p)
{
	return (rt_dptr)(uintptr_t)p;
}

static int dev_upload(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	if (!bytes)
		return 0;
	if (rt_gpu_copy_to_device(d->gpu, A(dst), src, bytes, RT_STREAM_COMPUTE) ||
	    rt_gpu_sync(d->gpu, RT_STREAM_COMPUTE))
		return failed("upload");
	cd(d)->pin_off = 0;
	return 0;
}

static int dev_download(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	if (!bytes)
		return 0;
	if (rt_gpu_copy_to_host(d->gpu, dst, A(src), bytes, RT_STREAM_COMPUTE) ||
	    rt_gpu_sync(d->gpu, RT_STREAM_COMPUTE))
		return failed("download");
	/* every input copy was waited for by the compute stream: the staging is free */
	cd(d)->pin_off = 0;
	return 0;
}

/* The executor's operations have no way to report a failure but to stop the job:
 * a GPU that fails a copy is broken, not the user's input. */
static void must(int rc, const char *what)
{
	if (rc)
		RT_BUG("GPU: %s failed", what);
}

static void dev_zero(struct rt_device *d, void *dst, size_t bytes)
{
	if (bytes)
		must(rt_gpu_memset(d->gpu, A(dst), 0, bytes, RT_STREAM_COMPUTE), "memset");
}

static void dev_copy(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	if (bytes && dst != src)
		must(rt_gpu_copy(d->gpu, A(dst), A(src), bytes, RT_STREAM_COMPUTE), "copy");
}

static unsigned grid_for(size_t n)
{
	size_t b = (n + THREADS - 1) / THREADS;
	return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

static void launch(struct rt_device *d, struct rt_kernel *k, unsigned blocks, void **args)
{
	unsigned grid[3] = { blocks, 1, 1 }, block[3] = { THREADS, 1, 1 };
	must(rt_kernel_launch(d->gpu, k, grid, block, 0, RT_STREAM_COMPUTE, args), "kernel launch");
}

static void dev_add_f32(struct rt_device *d, void *dst, const void *src, size_t n)
{
	if (!n)
		return;
	rt_dptr a = A(dst), b = A(src);
	unsigned long long nn = n;
	void *args[] = { &a, &b, &nn };
	launch(d, cd(d)->add, grid_for(n), args);
}

static void dev_input(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	struct cuda_dev *c = cd(d);
	size_t need = (bytes + 255) / 256 * 256;
	if (need > PIN_BYTES) {
		/* larger than the staging: a plain copy, in order on the compute stream */
		must(rt_gpu_copy_to_device(d->gpu, A(dst), src, bytes, RT_STREAM_COMPUTE), "input");
		must(rt_gpu_sync(d->gpu, RT_STREAM_COMPUTE), "input");
		return;
	}
	if (c->pin_off + need > PIN_BYTES) {
		must(rt_gpu_sync(d->gpu, RT_STREAM_COPY), "input");
		c->pin_off = 0;
	}
	unsigned char *h = c->pin + c->pin_off;
	c->pin_off += need;
	memcpy(h, src, bytes);
	must(rt_gpu_copy_to_device(d->gpu, A(dst), h, bytes, RT_STREAM_COPY), "input");
	must(rt_gpu_stream_wait(d->gpu, RT_STREAM_COMPUTE, RT_STREAM_COPY), "stream wait");
}

/* The weights' copy for the moving average, on a stream of its own: on the copy
 * stream the next step's input copies queued behind it, and the step, which waits for
 * its inputs, waited for the whole copy (gpt2_124m on an H200: 650 MB, 12 ms a step,
 * +21%).  Only the next AdamW must wait for it (dev_adamw). */
static void dev_snapshot(struct rt_device *d, void *dst, const void *src, size_t bytes)
{
	must(rt_gpu_stream_wait(d->gpu, RT_STREAM_SNAPSHOT, RT_STREAM_COMPUTE), "stream wait");
	must(rt_gpu_copy_to_host(d->gpu, dst, A(src), bytes, RT_STREAM_SNAPSHOT), "snapshot");
}

static void dev_snapshot_wait(struct rt_device *d)
{
	must(rt_gpu_sync(d->gpu, RT_STREAM_SNAPSHOT), "snapshot");
}

static void *dev_host_alloc(struct rt_device *d, size_t bytes)
{
	if (rt_gpu_bind(d->gpu))
		return NULL;
	void *p = rt_gpu_host_alloc(bytes ? bytes : 1);
	if (p)
		memset(p, 0, bytes);
	return p;
}

static void dev_host_free(struct rt_device *d, void *mem)
{
	(void)d;
	if (mem)
		rt_gpu_host_free(mem);
}

static void dev_comm_begin(struct rt_device *d, struct rt_comm *c)
{
	must(rt_gpu_stream_wait(d->gpu, rt_comm_lane_stream(c), RT_STREAM_COMPUTE), "stream wait");
}

static void dev_comm_wait(struct rt_device *d, struct rt_comm *c)
{
	/* NCCL's operations are queued on the stream of c's lane */
	must(rt_gpu_stream_wait(d->gpu, RT_STREAM_COMPUTE, rt_comm_lane_stream(c)), "stream wait");
}

static int dev_sync(struct rt_device *d)
{
	return rt_gpu_sync_all(d->gpu);
}

/* --- the optimizer ------------------------------------------------------------- */

struct gpu_tensor {             /* the kernels' struct tensor */
	rt_dptr w, g, m, v;
	unsigned long long n;
	int decay, counted, bf16m, pad;
};

struct gpu_blk {                /* the kernels' struct blk */
	unsigned long long off;
	int t, pad;
};

struct rt_dev_optim {
	rt_dptr table, blocks, parts;
	unsigned n_blocks;
};

static struct rt_dev_optim *dev_optim_new(struct rt_device *d, const struct rt_dev_tensor *t,
					  int n)
{
	size_t nb = 0;
	for (int k = 0; k < n; k++)
		nb += (t[k].n + CHUNK - 1) / CHUNK;
	if (nb > 0x7fffffff) {
		fprintf(stderr, "sluice: GPU optimizer: %zu blocks of %d parameters are too many "
			"for one launch\n", nb, CHUNK);
		return NULL;
	}
	struct gpu_tensor *ht = rt_calloc((size_t)n + 1, sizeof *ht);
	struct gpu_blk *hb = rt_calloc(nb + 1, sizeof *hb);
	size_t b = 0;
	for (int k = 0; k < n; k++) {
		ht[k] = (struct gpu_tensor){ A(t[k].w), A(t[k].g), A(t[k].m), A(t[k].v), t[k].n,
					     t[k].decay, t[k].counted, t[k].bf16_moments, 0 };
		for (size_t off = 0; off < t[k].n; off += CHUNK)
			hb[b++] = (struct gpu_blk){ off, k, 0 };
	}
	struct rt_dev_optim *o = rt_calloc(1, sizeof *o);
	o->n_blocks = (unsigned)nb;
	void *tp = dev_alloc(d, sizeof *ht * ((size_t)n + 1));
	void *bp = dev_alloc(d, sizeof *hb * (nb + 1));
	void *pp = dev_alloc(d, sizeof(double) * (nb + 1));
	o->table = A(tp);
	o->blocks = A(bp);
	o->parts = A(pp);
	int bad = !tp || !bp || !pp || dev_upload(d, tp, ht, sizeof *ht * (size_t)n) ||
		  dev_upload(d, bp, hb, sizeof *hb * nb);
	free(ht);
	free(hb);
	if (bad) {
		dev_free(d, tp);
		dev_free(d, bp);
		dev_free(d, pp);
		free(o);
		return NULL;
	}
	return o;
}

static void dev_optim_free(struct rt_device *d, struct rt_dev_optim *o)
{
	if (!o)
		return;
	dev_free(d, (void *)(uintptr_t)o->table);
	dev_free(d, (void *)(uintptr_t)o->blocks);
	dev_free(d, (void *)(uintptr_t)o->parts);
	free(o);
}

static void dev_scale_grads(struct rt_device *d, struct rt_dev_optim *o, float s)
{
	if (!o->n_blocks)
		return;
	void *args[] = { &o->table, &o->blocks, &s };
	launch(d, cd(d)->scale, o->n_blocks, args);
}

static double dev_grad_norm(struct rt_device *d, struct rt_dev_optim *o)
{
	if (!o->n_blocks)
		return 0.0;
	struct cuda_dev *c = cd(d);
	void *a1[] = { &o->table, &o->blocks, &o->parts };
	launch(d, c->sumsq, o->n_blocks, a1);
	unsigned long long n = o->n_blocks;
	void *a2[] = { &o->parts, &n, &c->norm };
	launch(d, c->sum_parts, 1, a2);
	double s = 0.0;
	must(dev_download(d, &s, (void *)(uintptr_t)c->norm, sizeof s), "grad norm");
	return sqrt(s);
}

static void dev_adamw(struct rt_device *d, struct rt_dev_optim *o, const struct rt_adamw *a,
		      float lr, int64_t t, float grad_scale)
{
	if (!o->n_blocks)
		return;
	/* the weights change: a snapshot of them on the copy stream must be taken first */
	must(rt_gpu_stream_wait(d->gpu, RT_STREAM_COMPUTE, RT_STREAM_SNAPSHOT), "stream wait");
	/* the bias corrections as runtime/optim.c computes them */
	float b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
	float bc1 = (float)(1.0 - pow((double)a->beta1, (double)t));
	float bc2 = (float)(1.0 - pow((double)a->beta2, (double)t));
	void *args[] = { &o->table, &o->blocks, &b1, &b2, &eps, &lr, &bc1, &bc2, &wd,
			 &grad_scale };
	launch(d, cd(d)->adamw, o->n_blocks, args);
}

static void dev_destroy(struct rt_device *d)
{
	struct cuda_dev *c = cd(d);
	if (!c)
		return;
	rt_gpu_sync_all(d->gpu);
	dev_free(d, (void *)(uintptr_t)c->norm);
	if (c->pin)
		rt_gpu_host_free(c->pin);
	rt_module_free(c->mod);
	free(c);
	d->impl = NULL;
}

static const struct rt_device_ops cuda_ops = {
	.alloc = dev_alloc,
	.free = dev_free,
	.upload = dev_upload,
	.download = dev_download,
	.zero = dev_zero,
	.copy = dev_copy,
	.add_f32 = dev_add_f32,
	.input = dev_input,
	.snapshot = dev_snapshot,
	.snapshot_wait = dev_snapshot_wait,
	.host_alloc = dev_host_alloc,
	.host_free = dev_host_free,
	.comm_begin = dev_comm_begin,
	.comm_wait = dev_comm_wait,
	.sync = dev_sync,
	.optim_new = dev_optim_new,
	.optim_free = dev_optim_free,
	.scale_grads = dev_scale_grads,
	.grad_norm = dev_grad_norm,
	.adamw = dev_adamw,
	.destroy = dev_destroy,
};

struct rt_device *rt_device_cuda_new(struct rt_gpu *g, char *err, size_t errlen)
{
	struct rt_device *d = rt_calloc(1, sizeof *d);
	struct cuda_dev *c = rt_calloc(1, sizeof *c);
	d->ops = &cuda_ops;
	d->name = "cuda";
	d->gpu = g;
	d->impl = c;
	d->pool = rt_pool_new(0);
	c->g = g;
	static const char *const opts[] = { "--fmad=false" };
	struct rt_module_src src = { "optim.cu", optim_src, opts, 1 };
	if (rt_gpu_bind(g) || rt_module_build(g, &src, 1, &c->mod, NULL)) {
		snprintf(err, errlen, "the GPU optimizer kernels do not build (above)");
		goto fail;
	}
	c->add = rt_module_kernel(c->mod, "add_f32");
	c->scale = rt_module_kernel(c->mod, "scale_grads");
	c->sumsq = rt_module_kernel(c->mod, "sumsq");
	c->sum_parts = rt_module_kernel(c->mod, "sum_parts");
	c->adamw = rt_module_kernel(c->mod, "adamw");
	c->pin = rt_gpu_host_alloc(PIN_BYTES);
	void *norm = dev_alloc(d, sizeof(double));
	c->norm = A(norm);
	if (!c->add || !c->scale || !c->sumsq || !c->sum_parts || !c->adamw || !c->pin || !norm) {
		snprintf(err, errlen, "the GPU device cannot be set up (above)");
		goto fail;
	}
	return d;
fail:
	rt_device_free(d);
	return NULL;
}
