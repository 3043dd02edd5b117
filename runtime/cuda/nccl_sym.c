/* nccl_sym.c - an all-to-all with per-peer counts on the GPU, done by one kernel over
 * NCCL's registered symmetric memory: no count exchange through the host, no host
 * sync, no worst-case bytes (comm.h says what the caller sees).
 *
 * The window.  Every rank allocates the same number of bytes with ncclMemAlloc and
 * registers them with ncclCommWindowRegister(NCCL_WIN_COLL_SYMMETRIC).  NCCL then maps
 * the windows of all load/store-reachable ranks (its "LSA team": the GPUs of a node
 * joined by NVLink) side by side in every rank's address space: rank p's window starts
 * at lsaFlatBase + p * stride4G * 4 GiB, which is what nccl_device.h's ncclGetLsaPointer
 * computes on the device.  That header is C++ written for nvcc (GNU extensions, packed
 * structs, zero-length arrays in dead branches) and NVRTC cannot compile it, so the
 * kernel here is plain CUDA C: the host reads the base and stride from the window's
 * device descriptor (the fields nccl_device/impl/core__types.h declares), checks them
 * (every rank stamps its window before registering it, and the window that base and
 * stride give for rank p, this rank's own included, must hold p's stamp), and hands the
 * kernel one pointer per rank.  The flat mapping is NCCL's own, apart from the address
 * ncclMemAlloc returned (a second mapping of the same memory).  A layout that does not
 * check out is refused with the reason, on every rank.
 *
 * Inside one window (same offsets on every rank):
 *   stamp, peer pointers, per-block epochs, overflow flag   (used by its owner only)
 *   counts[n][n]   row s written by rank s: what s sends to each rank
 *   flags[ctas][n] flags[b][s] written by block b of rank s when it arrives
 *   recv           rows received, packed by source rank
 *
 * One call, per thread block b (every rank runs the same grid):
 *   1. write this rank's counts row into every rank's counts matrix;
 *   2. meet: block b of every rank (epoch e+1);
 *   3. read the whole matrix; if any rank would receive more than the room, nobody
 *      moves anything (every rank sees the same matrix, so all agree);
 *   4. store this block's share of each row block straight into the receiver's window,
 *      at the offset the matrix gives (sum of what lower ranks send there);
 *   5. meet again (epoch e+2): after it every row has landed everywhere.
 * A meeting is __syncthreads, then a system-scope release store of the epoch into
 * flags[b][me] of every rank, then acquire loads of this rank's flags[b][*] until all
 * reach the epoch.  Epochs only grow, so a rank that runs ahead cannot be mistaken for
 * one that has arrived.  Why it is safe to overwrite the matrix and the receive area in
 * the next call: a rank starts call k+1 only once its call k has ended, i.e. once the
 * same block of every rank has passed step 5 of call k (so has read the matrix), and it
 * writes rows only after meeting every rank in call k+1 (whose call k, and whatever
 * its stream ran on the received rows before call k+1, is over). */
#ifdef SLUICE_HAVE_NCCL
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_impl.h"
#include "gpu_impl.h"
#include "runtime/comm.h"
#include "runtime/rt.h"

#define SYM_MAX_RANKS 64
#define SYM_MAX_CTAS 128
#define SYM_THREADS 512
#define SYM_STAMP 0x5a17000000000000ull
#define SYM_STR_(x) #x
#define SYM_STR(x) SYM_STR_(x)

static const char sym_src[] =
	"typedef unsigned long long u64;\n"
	"typedef long long i64;\n"
	"#define MAXN " SYM_STR(SYM_MAX_RANKS) "\n"
	"__device__ __forceinline__ void put_flag(u64 *p, u64 v)\n"
	"{\n"
	"  asm volatile(\"st.release.sys.global.u64 [%0], %1;\" :: \"l\"(p), \"l\"(v) : \"memory\");\n"
	"}\n"
	"__device__ __forceinline__ u64 get_flag(const u64 *p)\n"
	"{\n"
	"  u64 v;\n"
	"  asm volatile(\"ld.acquire.sys.global.u64 %0, [%1];\" : \"=l\"(v) : \"l\"(p) : \"memory\");\n"
	"  return v;\n"
	"}\n"
	"/* block b of every rank meets: tell each rank, wait until each has told this one */\n"
	"__device__ void meet(char *const *peer, int n, int me, u64 flags, u64 epoch)\n"
	"{\n"
	"  __syncthreads();\n"
	"  if (threadIdx.x < n) {\n"
	"    __threadfence_system();\n"
	"    put_flag((u64 *)(peer[threadIdx.x] + flags) + (u64)blockIdx.x * n + me, epoch);\n"
	"    const u64 *mine = (const u64 *)(peer[me] + flags) + (u64)blockIdx.x * n + threadIdx.x;\n"
	"    while (get_flag(mine) < epoch)\n"
	"      ;\n"
	"  }\n"
	"  __syncthreads();\n"
	"}\n"
	"/* this block's threads copy LEN bytes, 16 at a time where everything is aligned */\n"
	"__device__ void copy(char *dst, const char *src, u64 len)\n"
	"{\n"
	"  u64 t = threadIdx.x, nt = blockDim.x;\n"
	"  if ((((u64)dst | (u64)src | len) & 15) == 0) {\n"
	"    int4 *d = (int4 *)dst;\n"
	"    const int4 *s = (const int4 *)src;\n"
	"    u64 m = len / 16, i = t;\n"
	"    for (; i + 3 * nt < m; i += 4 * nt) {\n"
	"      int4 a = s[i], b = s[i + nt], c = s[i + 2 * nt], e = s[i + 3 * nt];\n"
	"      d[i] = a;\n"
	"      d[i + nt] = b;\n"
	"      d[i + 2 * nt] = c;\n"
	"      d[i + 3 * nt] = e;\n"
	"    }\n"
	"    for (; i < m; i += nt)\n"
	"      d[i] = s[i];\n"
	"  } else {\n"
	"    for (u64 i = t; i < len; i += nt)\n"
	"      dst[i] = src[i];\n"
	"  }\n"
	"}\n"
	"extern \"C\" __global__ void __launch_bounds__(" SYM_STR(SYM_THREADS) ")\n"
	"sym_all_to_allv(char *const *peer, int n, int me, const char *sbuf, const i64 *scount,\n"
	"                i64 *rcount, u64 *epochs, int *overflow, u64 esize, u64 counts,\n"
	"                u64 flags, u64 recv, u64 cap)\n"
	"{\n"
	"  __shared__ i64 mat[MAXN * MAXN];\n"
	"  __shared__ u64 epoch;\n"
	"  __shared__ int over;\n"
	"  if (threadIdx.x == 0) {\n"
	"    epoch = epochs[blockIdx.x];\n"
	"    over = 0;\n"
	"  }\n"
	"  __syncthreads();\n"
	"  u64 e = epoch;\n"
	"  /* 1. this rank's row of counts into every rank's matrix */\n"
	"  for (int i = threadIdx.x; i < n * n; i += blockDim.x)\n"
	"    ((volatile i64 *)(peer[i / n] + counts))[me * n + i % n] = scount[i % n];\n"
	"  meet(peer, n, me, flags, e + 1);\n"
	"  /* 2. the whole matrix, the same on every rank */\n"
	"  for (int i = threadIdx.x; i < n * n; i += blockDim.x)\n"
	"    mat[i] = ((volatile const i64 *)(peer[me] + counts))[i];\n"
	"  __syncthreads();\n"
	"  if (threadIdx.x < n) {\n"
	"    i64 tot = 0;\n"
	"    for (int s = 0; s < n; s++) {\n"
	"      i64 v = mat[s * n + threadIdx.x];\n"
	"      if (v < 0)\n"
	"        over = 1;\n"
	"      tot += v;\n"
	"    }\n"
	"    if ((u64)tot * esize > cap)\n"
	"      over = 1;\n"
	"  }\n"
	"  __syncthreads();\n"
	"  if (blockIdx.x == 0 && threadIdx.x < n)\n"
	"    rcount[threadIdx.x] = over ? -1 : mat[threadIdx.x * n + me];\n"
	"  if (over) {\n"
	"    if (blockIdx.x == 0 && threadIdx.x == 0)\n"
	"      *overflow = 1;\n"
	"  } else {\n"
	"    /* 3. this block's share of every row block, straight into the receivers */\n"
	"    for (int j = 0; j < n; j++) {\n"
	"      int p = (me + 1 + j + blockIdx.x) % n;\n"
	"      u64 so = 0, ro = 0;\n"
	"      for (int q = 0; q < p; q++)\n"
	"        so += mat[me * n + q];\n"
	"      for (int s = 0; s < me; s++)\n"
	"        ro += mat[s * n + p];\n"
	"      u64 len = (u64)mat[me * n + p] * esize;\n"
	"      u64 per = ((len + gridDim.x - 1) / gridDim.x + 15) & ~15ull;\n"
	"      u64 lo = per * blockIdx.x, hi = lo + per;\n"
	"      lo = lo < len ? lo : len;\n"
	"      hi = hi < len ? hi : len;\n"
	"      copy(peer[p] + recv + ro * esize + lo, sbuf + so * esize + lo, hi - lo);\n"
	"    }\n"
	"  }\n"
	"  /* 4. every row has landed everywhere */\n"
	"  meet(peer, n, me, flags, e + 2);\n"
	"  if (threadIdx.x == 0)\n"
	"    epochs[blockIdx.x] = e + 2;\n"
	"}\n";

/* The head of NCCL's device-side window descriptor (struct ncclWindow_vidmem in
 * nccl_device/impl/core__types.h, NCCL 2.28); checked before use, see above. */
struct nccl_window_head {
	void *win_host;
	char *lsa_flat_base;
	int lsa_rank, world_rank;
	uint32_t stride4g;
};

/* ncclTeamLsa(comm): the LSA team of a communicator (C linkage in libnccl since the
 * device API came, 2.28; declared in the C++ nccl_device.h, so here; weak, so that an
 * NCCL without it is refused at run time rather than at link time). */
struct nccl_team {
	int n_ranks, rank, stride;
};
extern struct nccl_team ncclTeamLsa(ncclComm_t comm) __attribute__((weak));

struct rt_comm_sym {
	struct rt_comm *c;
	struct rt_gpu *g;
	ncclComm_t nc;
	ncclWindow_t win;
	void *base; /* this rank's window (ncclMemAlloc) */
	size_t bytes;
	int n, me, ctas;
	size_t off_peers, off_epochs, off_over, off_counts, off_flags, off_recv, cap;
	struct rt_module *mod;
	struct rt_kernel *kernel;
	int32_t *h_over; /* pinned */
};

static size_t up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static void sym_check(struct rt_comm_sym *s, ncclResult_t r, const char *what)
{
	if (r != ncclSuccess)
		rt_comm_fail(s->c, "%s failed: %s (%s)", what, ncclGetErrorString(r),
			     ncclGetLastError(s->nc));
}

/* Every rank's verdict: 1 where all ranks have OK set, through an all-reduce (min) on
 * a word of the window (the ranks' windows are all valid NCCL buffers). */
static int all_agree(struct rt_comm_sym *s, int ok)
{
	uint64_t word = (uint64_t)(uintptr_t)s->base + 8;
	int32_t v = ok;
	void *st = rt_comm_stream(s->c, NULL);
	if (CU(cuMemcpyHtoDAsync, ((CUdeviceptr)word, &v, sizeof v, st)))
		rt_comm_fail(s->c, "symmetric all-to-all: a copy to the window failed");
	sym_check(s, ncclAllReduce((void *)(uintptr_t)word, (void *)(uintptr_t)word, 1, ncclInt32,
				   ncclMin, s->nc, st),
		  "ncclAllReduce");
	if (CU(cuMemcpyDtoHAsync, (&v, (CUdeviceptr)word, sizeof v, st)))
		rt_comm_fail(s->c, "symmetric all-to-all: a copy from the window failed");
	rt_comm_sync(s->c, st);
	return v == 1;
}

struct rt_comm_sym *rt_comm_sym_new(struct rt_comm *c, size_t rcap_bytes, int ctas, char *err,
				    size_t errlen)
{
	if (rt_comm_kind(c) != RT_COMM_NCCL) {
		snprintf(err, errlen, "symmetric all-to-all needs an NCCL communicator (GPU ranks); "
			 "this one is %s", rt_comm_kind_name(rt_comm_kind(c)));
		return NULL;
	}
	int n = rt_comm_size(c), me = rt_comm_rank(c);
	if (ctas <= 0)
		ctas = rt_comm_max_ctas(c) > 0 ? rt_comm_max_ctas(c) : 32;
	if (ctas > SYM_MAX_CTAS)
		ctas = SYM_MAX_CTAS;
	int version = 0;
	ncclGetVersion(&version);
	if (version < 22803) {
		snprintf(err, errlen, "symmetric all-to-all: NCCL %d.%d.%d has no symmetric windows "
			 "(2.28.3 or later needed)", version / 10000, version / 100 % 100, version % 100);
		return NULL;
	}
	if (n > SYM_MAX_RANKS) {
		snprintf(err, errlen, "symmetric all-to-all: %d ranks, at most %d", n, SYM_MAX_RANKS);
		return NULL;
	}
	if (!ncclTeamLsa) {
		snprintf(err, errlen, "symmetric all-to-all: this NCCL (%d) lacks ncclTeamLsa", version);
		return NULL;
	}

	struct rt_comm_sym *s = rt_calloc(1, sizeof *s);
	s->c = c;
	s->g = rt_comm_gpu(c);
	s->nc = rt_comm_nccl(c);
	s->n = n;
	s->me = me;
	s->ctas = ctas;
	s->cap = rcap_bytes;
	s->off_peers = 64;
	s->off_epochs = up(s->off_peers + 8 * (size_t)n, 256);
	s->off_over = up(s->off_epochs + 8 * (size_t)ctas, 256);
	s->off_counts = up(s->off_over + 8, 256);
	s->off_flags = up(s->off_counts + 8 * (size_t)n * (size_t)n, 256);
	s->off_recv = up(s->off_flags + 8 * (size_t)ctas * (size_t)n, 4096);
	s->bytes = up(s->off_recv + (rcap_bytes ? rcap_bytes : 16), (size_t)2 << 20);

	/* the window, its control part zeroed and stamped before anyone can see it */
	if (rt_gpu_bind(s->g))
		rt_comm_fail(c, "symmetric all-to-all: cannot use this rank's GPU");
	sym_check(s, ncclMemAlloc(&s->base, s->bytes), "ncclMemAlloc");
	void *st = rt_comm_stream(c, NULL);
	uint64_t stamp = SYM_STAMP | (uint64_t)me;
	if (CU(cuMemsetD8Async, ((CUdeviceptr)(uintptr_t)s->base, 0, s->off_recv, st)) ||
	    CU(cuMemcpyHtoDAsync, ((CUdeviceptr)(uintptr_t)s->base, &stamp, sizeof stamp, st)))
		rt_comm_fail(c, "symmetric all-to-all: cannot clear the window");
	rt_comm_sync(c, st);
	rt_rdzv_op_begin(rt_comm_rdzv(c), "ncclCommWindowRegister");
	sym_check(s, ncclCommWindowRegister(s->nc, s->base, s->bytes, &s->win, NCCL_WIN_COLL_SYMMETRIC),
		  "ncclCommWindowRegister");
	rt_rdzv_op_end(rt_comm_rdzv(c));

	/* where NCCL put the other ranks' windows, checked */
	char why[256] = "";
	struct nccl_window_head h;
	memset(&h, 0, sizeof h);
	struct nccl_team team = ncclTeamLsa(s->nc);
	if (n == 1) {
		/* alone: NCCL maps no team, the window is the one ncclMemAlloc gave */
		h.lsa_flat_base = s->base;
		h.stride4g = 1;
	} else if (team.n_ranks != n || team.rank != me)
		snprintf(why, sizeof why, "not every rank is load/store reachable from every other "
			 "(NCCL's LSA team has %d of the %d ranks): the ranks span nodes or GPUs "
			 "without peer access", team.n_ranks, n);
	else if (!s->win || CU(cuMemcpy, ((CUdeviceptr)(uintptr_t)&h, (CUdeviceptr)(uintptr_t)s->win,
					  sizeof h)))
		snprintf(why, sizeof why, "cannot read the window's descriptor");
	else if (h.lsa_rank != me || h.stride4g == 0 || !h.lsa_flat_base)
		snprintf(why, sizeof why, "the window's descriptor is not laid out as NCCL 2.28's "
			 "(rank %d, stride %u x 4 GiB, base %p)", h.lsa_rank, h.stride4g,
			 (void *)h.lsa_flat_base);
	int ok = all_agree(s, !why[0]);
	uint64_t *peers = rt_calloc((size_t)n, sizeof *peers);
	if (ok) {
		/* every peer's window must hold that peer's stamp */
		for (int p = 0; p < n && !why[0]; p++) {
			peers[p] = (uint64_t)(uintptr_t)h.lsa_flat_base + (uint64_t)p * ((uint64_t)h.stride4g << 32);
			uint64_t got = 0;
			if (CU(cuMemcpy, ((CUdeviceptr)(uintptr_t)&got, (CUdeviceptr)peers[p], sizeof got)))
				snprintf(why, sizeof why, "cannot read rank %d's window", p);
			else if (got != (SYM_STAMP | (uint64_t)p))
				snprintf(why, sizeof why, "rank %d's window is not where the descriptor "
					 "says (read %#llx)", p, (unsigned long long)got);
		}
		ok = all_agree(s, !why[0]);
	}
	if (!ok) {
		snprintf(err, errlen, "symmetric all-to-all refused on rank %d: %s", me,
			 why[0] ? why : "another rank found the window unusable (see its message)");
		free(peers);
		rt_comm_sym_free(s);
		return NULL;
	}
	if (CU(cuMemcpyHtoDAsync, ((CUdeviceptr)(uintptr_t)s->base + s->off_peers, peers,
				   8 * (size_t)n, st)))
		rt_comm_fail(c, "symmetric all-to-all: cannot write the peer table");
	rt_comm_sync(c, st);
	free(peers);

	struct rt_module_src src = { "sluice_sym_a2a.cu", sym_src, NULL, 0 };
	if (rt_module_build(s->g, &src, 1, &s->mod, NULL) ||
	    !(s->kernel = rt_module_kernel(s->mod, "sym_all_to_allv")))
		rt_comm_fail(c, "symmetric all-to-all: cannot build its kernel (see above)");
	s->h_over = rt_gpu_host_alloc(sizeof *s->h_over);
	return s;
}

uint64_t rt_comm_sym_rbuf(const struct rt_comm_sym *s)
{
	return (uint64_t)(uintptr_t)s->base + s->off_recv;
}

void rt_comm_sym_all_to_allv(struct rt_comm_sym *s, uint64_t sbuf, uint64_t d_scounts,
			     uint64_t d_rcounts, enum rt_comm_dtype t, void *stream)
{
	uint64_t base = (uint64_t)(uintptr_t)s->base;
	uint64_t peers = base + s->off_peers, epochs = base + s->off_epochs, over = base + s->off_over;
	uint64_t esize = rt_comm_dtype_size(t), counts = s->off_counts, flags = s->off_flags,
		 recv = s->off_recv, cap = s->cap;
	int n = s->n, me = s->me;
	void *args[] = { &peers, &n, &me, &sbuf, &d_scounts, &d_rcounts, &epochs, &over,
			 &esize, &counts, &flags, &recv, &cap };
	if (rt_gpu_bind(s->g) ||
	    CU(cuLaunchKernel, ((CUfunction)s->kernel, (unsigned)s->ctas, 1, 1, SYM_THREADS, 1, 1, 0,
				(CUstream)rt_comm_stream(s->c, stream), args, NULL)))
		rt_comm_fail(s->c, "symmetric all-to-all: the kernel launch failed");
}

int rt_comm_sym_overflowed(struct rt_comm_sym *s, void *stream)
{
	void *st = rt_comm_stream(s->c, stream);
	if (CU(cuMemcpyDtoHAsync, (s->h_over, (CUdeviceptr)(uintptr_t)s->base + s->off_over,
				   sizeof *s->h_over, st)))
		rt_comm_fail(s->c, "symmetric all-to-all: cannot read the overflow flag");
	rt_comm_sync(s->c, st);
	return *s->h_over != 0;
}

void rt_comm_sym_free(struct rt_comm_sym *s)
{
	if (!s)
		return;
	void *st = rt_comm_stream(s->c, NULL);
	rt_comm_sync(s->c, st);
	if (s->mod)
		rt_module_free(s->mod);
	if (s->win)
		sym_check(s, ncclCommWindowDeregister(s->nc, s->win), "ncclCommWindowDeregister");
	if (s->base)
		sym_check(s, ncclMemFree(s->base), "ncclMemFree");
	if (s->h_over)
		rt_gpu_host_free(s->h_over);
	free(s);
}
#else
typedef int rt_nccl_sym_unused; /* without NCCL: runtime/comm_none.c */
#endif
