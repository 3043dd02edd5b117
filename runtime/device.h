/* device.h - where a program's buffers live, and the few operations the executor
 * (exec.c) and the training engine (engine.c) apply to them: the host's memory (CPU
 * ranks, device_host.c) or a GPU's (runtime/cuda/program_device.c).  One step loop
 * serves both; what differs sits behind struct rt_device_ops, as QBE's targets sit
 * behind its Target struct.
 *
 * Addresses: a buffer's address is a void * in the device's address space: a host
 * pointer on the host device, a GPU address (rt_dptr) cast through uintptr_t on CUDA.
 * Code outside the device implementations dereferences one only through
 * rt_device_view / rt_device_stage (which copy when the device is not the host).
 *
 * Order: zero, copy, add_f32, input and the optimizer's operations are queued in that
 * order on the device's compute stream (the host runs them at once); upload and
 * download are complete on return, after everything queued before them;
 * comm_begin makes c's communication stream (its lane, rt_comm_set_lane) wait for the
 * compute stream (before a communication op that reads what the compute stream
 * wrote), comm_wait completes a group's started operations for what follows on the
 * compute stream (MPI: waits on the host; NCCL: the compute stream waits for c's
 * communication stream).
 *
 * The optimizer works on a table of tensors made once (optim_new): weights, gradients
 * and AdamW's two moments of every trainable tensor a rank steps, all fp32 and all on
 * the device.  On a GPU each of its operations is one launch over the whole table. */
#ifndef SLUICE_RT_DEVICE_H
#define SLUICE_RT_DEVICE_H

#include <stddef.h>
#include <stdint.h>

struct rt_pool;
struct rt_gpu;
struct rt_comm;
struct rt_adamw;
struct rt_device;

struct rt_dev_tensor {
	void *w, *g, *m, *v;        /* device addresses, n floats each */
	size_t n;
	int decay;                  /* weight decay applies */
	int counted;                /* counted in the gradient norm (its owner rank) */
	int bf16_moments;           /* m and v hold n bf16 each (the FP8 recipe) */
};

struct rt_dev_optim;

struct rt_device_ops {
	/* bytes of zeroed device memory; NULL (message printed) when it does not fit */
	void *(*alloc)(struct rt_device *d, size_t bytes);
	void (*free)(struct rt_device *d, void *mem);
	int (*upload)(struct rt_device *d, void *dst, const void *src, size_t bytes);
	int (*download)(struct rt_device *d, void *dst, const void *src, size_t bytes);
	/* queued on the compute stream */
	void (*zero)(struct rt_device *d, void *dst, size_t bytes);
	void (*copy)(struct rt_device *d, void *dst, const void *src, size_t bytes);
	void (*add_f32)(struct rt_device *d, void *dst, const void *src, size_t n);
	/* host bytes bound for dst, for the compute stream (a training step's inputs):
	 * on a GPU staged in pinned memory and copied on the copy stream; src may change
	 * once this returns */
	void (*input)(struct rt_device *d, void *dst, const void *src, size_t bytes);
	/* a copy of src into host memory dst (pinned memory from host_alloc on a GPU),
	 * taken after what the compute stream has queued and landing while the host goes
	 * on (the copy stream); complete after snapshot_wait.  dst == src: nothing to do */
	void (*snapshot)(struct rt_device *d, void *dst, const void *src, size_t bytes);
	void (*snapshot_wait)(struct rt_device *d);
	void *(*host_alloc)(struct rt_device *d, size_t bytes);
	void (*host_free)(struct rt_device *d, void *mem);
	void (*comm_begin)(struct rt_device *d, struct rt_comm *c);
	void (*comm_wait)(struct rt_device *d, struct rt_comm *c);
	int (*sync)(struct rt_device *d);   /* everything queued is done */
	/* the optimizer over a table of tensors (copied: the caller's array may go) */
	struct rt_dev_optim *(*optim_new)(struct rt_device *d, const struct rt_dev_tensor *t,
					  int n);
	void (*optim_free)(struct rt_device *d, struct rt_dev_optim *o);
	void (*scale_grads)(struct rt_device *d, struct rt_dev_optim *o, float s);
	/* the L2 norm of the counted gradients together (squares summed in double) */
	double (*grad_norm)(struct rt_device *d, struct rt_dev_optim *o);
	/* one AdamW step of every tensor at step t (1-based), gradients times grad_scale */
	void (*adamw)(struct rt_device *d, struct rt_dev_optim *o, const struct rt_adamw *a,
		      float lr, int64_t t, float grad_scale);
	void (*destroy)(struct rt_device *d); /* frees impl; NULL: nothing to free */
};

struct rt_device {
	const struct rt_device_ops *ops;
	const char *name;           /* "cpu", "cuda" */
	int host;                   /* buffers are host memory */
	struct rt_gpu *gpu;         /* CUDA: the GPU (not owned); else NULL */
	struct rt_pool *pool;       /* threads for host-side work (owned) */
	void *impl;
};

/* The host: buffers in host memory, every operation done at once on the calling
 * thread (split over the pool where today's code splits it). */
struct rt_device *rt_device_host_new(void);
/* GPU g (opened by the caller, who closes it after rt_device_free): buffers in its
 * memory, the optimizer kernels compiled by NVRTC.  NULL with a message in err when
 * this build has no CUDA or the kernels do not build. */
struct rt_device *rt_device_cuda_new(struct rt_gpu *g, char *err, size_t errlen);
void rt_device_free(struct rt_device *d);

/* The bytes at device address src, readable on the host: src itself on the host
 * device, else a malloc'd copy (set in *copy, which the caller frees; NULL on the
 * host).  NULL when the copy failed. */
const void *rt_device_view(struct rt_device *d, const void *src, size_t bytes, void **copy);
/* Host memory to write bytes bound for device address dst: dst itself on the host,
 * else a malloc'd buffer that rt_device_put uploads to dst and frees. */
void *rt_device_stage(struct rt_device *d, void *dst, size_t bytes);
int rt_device_put(struct rt_device *d, void *dst, void *staged, size_t bytes);

#endif
