/* comm.h - ranks, the launchers, the rendezvous and fault channel, and one
 * communication interface over two backends: NCCL between GPU ranks, MPI between CPU
 * ranks.
 *
 * One process per rank: per GPU, or per share of a node's CPU cores.  A job's ranks
 * come from one of:
 *   - sluice's own launcher ('--gpus N' on a command): the parent forks N copies of
 *     its own command line and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 *     MASTER_ADDR=127.0.0.1, MASTER_PORT and SLUICE_LAUNCHED=1 in each (rendezvous.c,
 *     launch.c);
 *   - torchrun (and anything else that sets RANK/WORLD_SIZE): RANK, WORLD_SIZE,
 *     LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
 *   - sluice's MPI launcher ('--ranks N', rt_launch_mpi), which runs 'mpirun -np N'
 *     over its own command line, or mpirun started by hand;
 *   - Open MPI's mpirun: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
 *     OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE;
 *   - Slurm's srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NNODES.
 * Precedence, first match wins: RANK/WORLD_SIZE, then Open MPI, then Slurm (mpirun
 * inside a Slurm allocation sets both; its own variables are the precise ones; a
 * torchrun inside either sets RANK).  With none of them the process is rank 0 of 1.
 * The rank-0 address is MASTER_ADDR when set; under Slurm else
 * SLURM_LAUNCH_NODE_IPADDR; else 127.0.0.1 when every rank is on this node (an error
 * otherwise).  The port is MASTER_PORT, else 29500 (over MPI, one rank 0 picks).
 *
 * The rendezvous (rt_rdzv_*) is a few TCP connections, all to rank 0: each rank sends
 * its rank and a hash of what it will run, rank 0 checks that every hash matches and
 * sends back a blob (NCCL's unique id).  It is no collective: NCCL or MPI moves the
 * data.
 * The connections then stay open as the job's fault channel, watched by a thread in
 * every rank: heartbeats each second, a closed connection means that rank died, a
 * rank that reports a failure (an NCCL or MPI error, an operation past its timeout) is
 * named to every other rank, and every rank then aborts its communicators and exits 1.
 *
 * The communication interface (rt_comm_*) is the same for both backends, chosen by
 * rt_comm_opts.kind; the per-rank program does not change with it:
 *   - RT_COMM_NCCL (runtime/cuda/nccl.c): buffers are device addresses, calls are
 *     queued on a CUDA stream and complete by rt_comm_sync on that stream.
 *   - RT_COMM_MPI (comm_mpi.c, Open MPI): buffers are host addresses passed as
 *     uint64_t ((uint64_t)(uintptr_t)ptr), the int64 counts of all_to_allv_dev and
 *     all_to_all_fixed too; the stream argument is ignored and rt_comm_gpu is NULL.
 *     Point-to-point calls (send, recv, sendrecv) start
 *     MPI_Isend/MPI_Irecv and return; rt_comm_sync(c, ...) waits for every one still
 *     outstanding on c, so sends and receives posted to the same peer in any order
 *     before one sync never deadlock (as in a 1F1B schedule), and their buffers must
 *     stay untouched until that sync.  Collectives complete before they return.
 *     Counts of one call must fit in an int (MPI's counts).  Sums take F32, I32 and
 *     I64; BF16 and F16 move as bytes but their sums are refused.  The rank comes
 *     from MPI (MPI_Init_thread, asking for MPI_THREAD_MULTIPLE); the rendezvous then
 *     meets rank 0 on the port rank 0 chose (broadcast over MPI; MASTER_PORT when
 *     set), checks the program hash and watches the job as for GPUs: a rank that
 *     dies, fails or hangs past SLUICE_COMM_TIMEOUT ends every rank, each exiting 1
 *     (_exit, which also frees a thread blocked inside MPI).  One MPI world
 *     communicator per process: MPI cannot be started twice.
 * Start CPU ranks with 'sluice ... --ranks N' (rt_launch_mpi runs mpirun -np N over
 * the same command line) or by hand: 'mpirun -np N ./build/sluice ...' (as root add
 * --allow-run-as-root; more ranks than cores, --oversubscribe). */
#ifndef SLUICE_COMM_H
#define SLUICE_COMM_H

#include <stddef.h>
#include <stdint.h>

/* ---- ranks ------------------------------------------------------------------- */

struct rt_rank_env {
	int rank, world;
	int local_rank, local_world; /* local_world is 0 when the environment does not say */
	char master_addr[256];
	int master_port;
	const char *source; /* "sluice launcher", "RANK/WORLD_SIZE", "Open MPI", "Slurm", "none" */
	int listen_fd;      /* rank 0 under sluice's launcher: the rendezvous socket, else -1 */
};

/* Reads the environment as described above.  0 on success; -1 with a message in err
 * when the variables are present but wrong (RANK past WORLD_SIZE, a port that is no
 * number, a multi-node job without a rank-0 address). */
int rt_rank_env_read(struct rt_rank_env *e, char *err, size_t errlen);

/* ---- the parallel layout ------------------------------------------------------ */

/* world = pp * dp: pp pipeline stages, each of dp data-parallel ranks; the dp ranks of
 * a stage are cut into expert-parallel groups of ep consecutive ranks (ep divides dp),
 * as Megatron-Core and DeepSeek-V3 lay them out.  Rank r is stage r / dp, data-parallel
 * index r % dp: the ranks of an expert group are neighbours, so on one node when ep is
 * at most the GPUs of a node.  The groups each rank belongs to:
 *   RT_GROUP_PP   the pp ranks of the same data-parallel index (sends between stages)
 *   RT_GROUP_DP   the dp ranks of its stage (gradients of the dense parameters)
 *   RT_GROUP_EP   the ep ranks of its expert group (MoE dispatch and combine)
 *   RT_GROUP_EDP  the dp/ep ranks of its stage at the same place in their expert
 *                 groups (gradients of the expert parameters) */
enum rt_group { RT_GROUP_PP, RT_GROUP_DP, RT_GROUP_EP, RT_GROUP_EDP, RT_GROUPS };
struct rt_layout {
	int pp, dp, ep;
};
/* Checks the layout against the world size: 0, or -1 with a message. */
int rt_layout_check(const struct rt_layout *l, int world, char *err, size_t errlen);
/* The group of kind g that rank belongs to: its color (the same for every member, a
 * different one for every group of that kind) and its key (its rank in the group). */
void rt_layout_group(const struct rt_layout *l, int rank, enum rt_group g, int *color, int *key);
const char *rt_group_name(enum rt_group g);

/* ---- the launchers (one node) ------------------------------------------------ */

/* When this process is not yet one of a job's ranks (none of the variables above is
 * set) and nranks > 1: creates the rendezvous socket on 127.0.0.1 (an ephemeral port
 * unless MASTER_PORT is set), runs nranks copies of this process's own command line
 * (/proc/self/exe with /proc/self/cmdline) as ranks 0..nranks-1, waits for all of
 * them and returns the job's exit status: 0 when every rank exits 0, else the first
 * failing rank's status (1 for a rank killed by a signal), after saying which rank
 * failed.  Once one rank has failed, the others get 15 s to stop by themselves (the
 * fault channel makes them) and are then killed.  Returns RT_LAUNCH_RANK when this
 * process is a rank (or nranks <= 1): carry on as that rank.  Environment variables
 * such as NCCL_NVLS_ENABLE pass through to the ranks unchanged. */
enum { RT_LAUNCH_RANK = -1 };
int rt_launch(int nranks);

/* '--ranks N': CPU ranks through Open MPI.  When this process is not yet one of a
 * job's ranks and nranks > 1: runs 'mpirun -np nranks' (mpirun found on PATH) over
 * this process's own executable and arguments, with --oversubscribe, --bind-to none
 * (and --allow-run-as-root as root), SLUICE_THREADS set to max(1, cores / nranks)
 * in the ranks unless already set, waits and returns the job's exit status (0 when
 * every rank exits 0); a job that could not be started (no mpirun, no MPI in this
 * build) returns 1 with the reason in err, and a failed job says how in err too.
 * Returns RT_LAUNCH_RANK when this process is already a rank (or nranks <= 1): the
 * caller goes on as that rank and checks the world size with rt_launch_check. */
int rt_launch_mpi(int nranks, char *err, size_t errlen);
/* 0 when this process's job (the rank environment) has nranks ranks, else -1 with a
 * message, e.g. 'mpirun -np 4' around a command that says '--ranks 2'. */
int rt_launch_check(int nranks, char *err, size_t errlen);

/* ---- rendezvous and fault channel --------------------------------------------- */

struct rt_rdzv;

struct rt_rdzv_hooks {
	/* Called from the watchdog thread (or from rt_rdzv_fail) once, before the process
	 * exits because of a fault: abort every communicator (ncclCommAbort). */
	void (*abort)(void *ctx);
	/* Called by the watchdog about every 100 ms: returns 1 and writes a message when
	 * this rank's communication has failed (ncclCommGetAsyncError), else 0. */
	int (*poll_error)(void *ctx, char *msg, size_t n);
	void *ctx;
};

struct rt_rdzv_config {
	int rank, world;
	const char *addr; /* rank 0's address */
	int port;
	int listen_fd;       /* rank 0: a listening socket to use (closed after the meeting), or -1 */
	uint64_t hash;       /* of what this rank will run: every rank's must match */
	double timeout_s;    /* for every rendezvous step; 0: SLUICE_RDZV_TIMEOUT or 120 s */
	double op_timeout_s; /* an operation running longer is a hang; 0: SLUICE_COMM_TIMEOUT or 300 s */
	double heartbeat_timeout_s; /* a peer silent for longer has stopped; 0: 30 s */
	struct rt_rdzv_hooks hooks;
};

/* Meets every other rank; rank 0 sends blob (blob_len bytes), the others receive it
 * into blob.  Returns NULL with a message in err on failure: a timeout, a rank that
 * cannot be reached, or hashes that differ (the message names the ranks that differ,
 * and every rank gets it).  On success the fault channel is being watched. */
struct rt_rdzv *rt_rdzv_open(const struct rt_rdzv_config *cfg, void *blob, size_t blob_len,
			     char *err, size_t errlen);
/* Replace the hooks (e.g. once the communicators exist). */
void rt_rdzv_set_hooks(struct rt_rdzv *z, const struct rt_rdzv_hooks *hooks);
/* Bracket each communication operation that waits on other ranks, so that a hang is
 * seen: a rank whose operation runs past op_timeout_s reports it, and rank 0 names the
 * ranks that are not inside any operation (they are the ones stuck elsewhere). */
void rt_rdzv_op_begin(struct rt_rdzv *z, const char *name);
void rt_rdzv_op_end(struct rt_rdzv *z);
/* 1 once this process is being ended for a fault (rt_rdzv_fail or a peer's failure):
 * rt_rdzv_op_begin/op_end then wait for the end instead of returning, and CUDA errors
 * caused by the abort are not reported again. */
int rt_rdzv_dying(void);
/* This rank has failed: tell every other rank, abort the communicators, exit 1. */
_Noreturn void rt_rdzv_fail(struct rt_rdzv *z, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Clean end: waits until every rank has closed (a fault meanwhile still ends the
 * process), then closes the connections and stops the watchdog.  NULL is fine. */
void rt_rdzv_close(struct rt_rdzv *z);
int rt_rdzv_rank(const struct rt_rdzv *z);
int rt_rdzv_world(const struct rt_rdzv *z);

/* FNV-1a, 64 bits: the hash of what a rank will run. */
uint64_t rt_hash64(const void *data, size_t n, uint64_t h);
#define RT_HASH64_INIT 0xcbf29ce484222325ull

/* ---- communication (NCCL: runtime/cuda/nccl.c; MPI: comm_mpi.c) ---------------- */
/* A build without the backend asked for fails in rt_comm_init with a message saying
 * so (comm_none.c). */

struct rt_comm;
struct rt_gpu;

enum rt_comm_dtype { RT_COMM_U8, RT_COMM_I32, RT_COMM_I64, RT_COMM_F32, RT_COMM_BF16, RT_COMM_F16 };
size_t rt_comm_dtype_size(enum rt_comm_dtype t);

enum rt_comm_kind { RT_COMM_NCCL, RT_COMM_MPI };
const char *rt_comm_kind_name(enum rt_comm_kind k); /* "NCCL", "MPI" */

struct rt_comm_opts {
	enum rt_comm_kind kind; /* GPU ranks over NCCL (0, the default) or CPU ranks over MPI */
	/* Bound on the SMs (CTAs) each communication kernel uses; 0: the env variables
	 * SLUICE_COMM_MIN_CTAS / SLUICE_COMM_MAX_CTAS, else NCCL's choice. */
	int min_ctas, max_ctas;
	const void *program; /* hashed for the rendezvous: every rank must pass the same */
	size_t program_len;
	double timeout_s, op_timeout_s; /* 0: defaults, see rt_rdzv_config */
	size_t arena_bytes;  /* NCCL: device memory for the GPU this rank opens (rt_gpu_open) */
};

/* The world communicator.  NCCL: reads the rank environment, opens GPU LOCAL_RANK
 * (its primary context, current on the calling thread), meets the other ranks,
 * creates the NCCL communicator (blocking mode; SLUICE_NCCL_NONBLOCKING=1 selects
 * NCCL's non-blocking mode, which costs about 45 us an operation, see nccl.c).  MPI:
 * starts MPI, checks it against the rank environment and meets the other ranks (see
 * the top of this file).  NULL with a message on failure. */
struct rt_comm *rt_comm_init(const struct rt_comm_opts *o, char *err, size_t errlen);
/* A sub-communicator of the ranks that pass the same color (ncclCommSplit with the
 * parent's SM bound, or MPI_Comm_split; ordered by key).  Every rank of parent must call it.  color < 0:
 * this rank joins none, NULL. */
struct rt_comm *rt_comm_split(struct rt_comm *parent, int color, int key);
/* The sub-communicators of a layout (rt_layout_check must have passed): groups[g] for
 * every kind of group, each made with rt_comm_split.  Every rank must call it. */
void rt_comm_groups(struct rt_comm *world, const struct rt_layout *l,
		    struct rt_comm *groups[RT_GROUPS]);
/* Frees a sub-communicator; for the world communicator, also closes the rendezvous
 * (a clean end: waits for every rank) and the GPU. */
void rt_comm_free(struct rt_comm *c);
int rt_comm_rank(const struct rt_comm *c);
/* Which GPU stream c's operations go on when the caller names none: lane 0 (the
 * default) the GPU's communication stream RT_STREAM_COMM, lane k in 1 .. RT_COMM_LANES - 1
 * stream RT_STREAM_LANE + k - 1.  Nothing on CPU ranks (MPI). */
void rt_comm_set_lane(struct rt_comm *c, int lane);
/* The stream kind (enum rt_stream_kind) of c's lane. */
int rt_comm_lane_stream(const struct rt_comm *c);
int rt_comm_size(const struct rt_comm *c);
enum rt_comm_kind rt_comm_kind(const struct rt_comm *c);
struct rt_gpu *rt_comm_gpu(const struct rt_comm *c); /* this rank's GPU; NULL over MPI */
struct rt_rdzv *rt_comm_rdzv(const struct rt_comm *c);
/* This rank has failed: every rank stops (rt_rdzv_fail). */
#define rt_comm_fail(c, ...) rt_rdzv_fail(rt_comm_rdzv(c), __VA_ARGS__)

/* Operations.  NCCL: buffers are device addresses (rt_dptr of gpu.h, passed as
 * uint64_t); stream is a CUstream, NULL for the GPU's communication stream; every
 * call is queued on the stream and returns.  MPI: host addresses, no stream, and
 * completion as the top of this file says.  Counts are elements.  A failure ends the
 * job through the fault channel. */
void rt_comm_send(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream);
void rt_comm_recv(struct rt_comm *c, uint64_t buf, size_t count, enum rt_comm_dtype t, int peer,
		  void *stream);
/* Send to one peer and receive from another at once (one NCCL group). */
void rt_comm_sendrecv(struct rt_comm *c, uint64_t sbuf, size_t scount, int speer, uint64_t rbuf,
		      size_t rcount, int rpeer, enum rt_comm_dtype t, void *stream);
/* Sends and receives issued between rt_comm_p2p_begin and rt_comm_p2p_end (on any
 * communicators of this rank) are started together: with NCCL one group, so that a
 * send waiting for its receive does not hold back a receive queued after it on the
 * same stream (the crossing sends of a pipeline schedule); with MPI, where every
 * point-to-point call proceeds on its own, nothing.  Only sends and receives go
 * between them; pairs do not nest. */
void rt_comm_p2p_begin(struct rt_comm *c);
void rt_comm_p2p_end(struct rt_comm *c);
/* count elements to every peer, peer p's block at p*count: ncclAlltoAll, or grouped
 * ncclSend/ncclRecv when SLUICE_COMM_A2A=p2p is in the environment. */
void rt_comm_all_to_all(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream);
/* Per-peer counts and element offsets known on the host (grouped ncclSend/ncclRecv). */
void rt_comm_all_to_allv(struct rt_comm *c, uint64_t sbuf, const size_t *scounts,
			 const size_t *soffs, uint64_t rbuf, const size_t *rcounts,
			 const size_t *roffs, enum rt_comm_dtype t, void *stream);
/* Per-peer counts that live on the device (written by a kernel, e.g. MoE routing):
 * d_scounts holds size int64 send counts.  The count exchange: a small all-to-all of
 * the counts (ncclAlltoAll of size int64), a copy of both count vectors to pinned host
 * memory and a host sync on the stream, then the exact all-to-allv; the send blocks
 * lie packed in peer order in sbuf, the received ones are packed into rbuf (at most
 * rcap elements, else the job fails).  The received counts are written to h_rcounts
 * (size entries).  The sync costs a round trip through the host every call and keeps
 * the call out of a CUDA graph; rt_comm_all_to_all_fixed avoids it. */
void rt_comm_all_to_allv_dev(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			     size_t rcap, size_t *h_rcounts, enum rt_comm_dtype t, void *stream);
/* Worst-case sizes, no host sync: every peer's block in sbuf is cap elements (the
 * first d_scounts[p] of them used), the counts travel beside it into d_rcounts (size
 * int64) in the same NCCL group, and rbuf receives size blocks of cap elements.
 * Bytes sent: size*cap whatever the counts. */
void rt_comm_all_to_all_fixed(struct rt_comm *c, uint64_t sbuf, uint64_t d_scounts, uint64_t rbuf,
			      uint64_t d_rcounts, size_t cap, enum rt_comm_dtype t, void *stream);
void rt_comm_all_reduce_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			    enum rt_comm_dtype t, void *stream);
/* rbuf gets this rank's block of count elements of the sum of every rank's sbuf
 * (size*count elements). */
void rt_comm_reduce_scatter_sum(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
				enum rt_comm_dtype t, void *stream);
/* rbuf (size*count elements) gets every rank's count elements of sbuf, in rank order. */
void rt_comm_all_gather(struct rt_comm *c, uint64_t sbuf, uint64_t rbuf, size_t count,
			enum rt_comm_dtype t, void *stream);
/* Waits for the stream (NCCL) or for c's outstanding sends and receives (MPI),
 * watching for a fault (the wait counts as an operation). */
void rt_comm_sync(struct rt_comm *c, void *stream);
/* Every rank of c arrives before any leaves (NCCL: a one-word all-reduce and a wait
 * for the stream; MPI: MPI_Barrier). */
void rt_comm_barrier(struct rt_comm *c, void *stream);

/* ---- all-to-all over symmetric memory (runtime/cuda/nccl_sym.c) ---------------- */
/* The third way for counts that live on the device: one kernel, no host sync and no
 * worst-case bytes.  Every rank allocates the same window with ncclMemAlloc and
 * registers it with ncclCommWindowRegister (NCCL_WIN_COLL_SYMMETRIC); NCCL maps every
 * rank's window into every other rank's address space (NVLink, load/store), and a
 * kernel compiled by NVRTC writes each rank's counts into every window, meets the
 * other ranks (flags in the windows, release/acquire at system scope), then stores
 * its rows straight into the receivers' windows and meets them again.  All ranks of
 * the communicator must be load/store reachable (one node); otherwise, or when this
 * NCCL's window layout is not the one checked for, rt_comm_sym_new says why and
 * returns NULL on every rank.  An MPI communicator has no such windows: rt_comm_sym_new
 * refuses it. */
struct rt_comm_sym;

/* Collective: every rank of C calls it with the same arguments.  RCAP_BYTES: room for
 * what one call may bring in; CTAS: thread blocks of the kernel (0: the communicator's
 * SM bound, else 32).  Failures of the machine (allocation, registration) end the job. */
struct rt_comm_sym *rt_comm_sym_new(struct rt_comm *c, size_t rcap_bytes, int ctas, char *err,
				    size_t errlen);
/* The receive buffer: the rows from rank 0, then rank 1, ..., packed, in this rank's
 * window.  Valid until the next call is queued. */
uint64_t rt_comm_sym_rbuf(const struct rt_comm_sym *s);
/* d_scounts: size int64 element counts, the send blocks packed in peer order in sbuf;
 * d_rcounts gets the size received counts (or -1 each when some rank would receive
 * more than rcap_bytes: then nothing moves and rt_comm_sym_overflowed says so).
 * Queued on the stream; nothing waits for the host, so a CUDA graph can hold it. */
void rt_comm_sym_all_to_allv(struct rt_comm_sym *s, uint64_t sbuf, uint64_t d_scounts,
			     uint64_t d_rcounts, enum rt_comm_dtype t, void *stream);
/* Waits for the stream; 1 when a call so far found its counts over the room. */
int rt_comm_sym_overflowed(struct rt_comm_sym *s, void *stream);
/* Collective (deregisters the window). */
void rt_comm_sym_free(struct rt_comm_sym *s);

/* 'sluice bench comm': runtime/cuda/bench_comm.c (comm_none.c without NCCL). */
int rt_bench_comm(int argc, char **argv);

#endif
