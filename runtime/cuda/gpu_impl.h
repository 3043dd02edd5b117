/* gpu_impl.h - private to runtime/cuda/: the driver API table opened from libcuda at
 * run time, the device struct and the checking wrapper every CUDA call goes through. */
#ifndef SLUICE_GPU_IMPL_H
#define SLUICE_GPU_IMPL_H

#include <cuda.h>

#include "runtime/gpu.h"

/* Every driver entry point sluice calls.  cuda.h maps some names to versioned ones
 * (cuMemAlloc -> cuMemAlloc_v2); the table keeps the plain name as its field and
 * looks up the versioned symbol, so the prototypes always match. */
#define RT_CU_FUNCS(X)                                                                 \
	X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet)              \
	X(cuDeviceGetName) X(cuDeviceGetAttribute) X(cuDeviceTotalMem)                  \
	X(cuDeviceGetPCIBusId) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) \
	X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxSynchronize) X(cuMemGetInfo) X(cuStreamCreate)        \
	X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamWaitEvent) X(cuEventCreate) \
	X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize) X(cuEventElapsedTime)  \
	X(cuMemAlloc) X(cuMemFree) X(cuMemHostAlloc) X(cuMemFreeHost)                   \
	X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync) X(cuMemcpy)      \
	X(cuMemsetD8Async) X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) \
	X(cuLaunchKernel) X(cuGetErrorName) X(cuGetErrorString)                        \
	X(cuStreamBeginCapture) X(cuStreamEndCapture) X(cuGraphInstantiateWithFlags)    \
	X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy)

#define RT_CU_FIELD(fn) __typeof__(&fn) p_##fn;
struct rt_cu_api {
	RT_CU_FUNCS(RT_CU_FIELD)
};
#undef RT_CU_FIELD

extern struct rt_cu_api rt_cu;

/* Open libcuda and cuInit() once; 0 when the driver works, else -1 with the reason
 * kept for rt_gpu_why_none(). */
int rt_cu_load(void);

/* Report a failed driver call (name, error name and string, where); returns -1. */
int rt_cu_fail(CUresult r, const char *call, const char *file, int line);
#define CU(fn, args)                                                                 \
	({                                                                           \
		CUresult cu_r_ = rt_cu.p_##fn args;                                  \
		cu_r_ == CUDA_SUCCESS ? 0 : rt_cu_fail(cu_r_, #fn, __FILE__, __LINE__); \
	})

struct rt_gpu {
	struct rt_gpu_info info;
	CUdevice dev;
	CUcontext ctx;
	CUstream stream[RT_STREAM_KINDS];
	CUevent signal[RT_STREAM_KINDS]; /* recorded by rt_gpu_stream_wait */
	CUdeviceptr arena;
	size_t arena_size, arena_top;
};

#endif
