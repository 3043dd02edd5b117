/* program.h - the compiled program: all that the runtime knows of a model.
 *
 * The compiler (codegen/program.c) fills one program per rank; the runtime
 * (runtime/exec.c runs its actions, runtime/engine.c trains with it) reads nothing
 * else.  A single-rank CPU step, a 1F1B pipeline and, later, DualPipe with expert
 * parallelism are the same machinery with different contents:
 *
 *  - buffers: every tensor the runtime holds for this rank, with its role (a graph
 *    input, a parameter, its gradient, a value saved for the backward or passed
 *    between stages, an output such as the loss) and its place: an offset in the
 *    program's one arena, times its micro-batch slots;
 *  - chunks: compiled code for one piece of one stage (stage 1, forward), supplied by
 *    a backend behind struct rt_chunk_impl; a chunk reads buffers and writes buffers;
 *  - communication ops: send, receive, all-reduce, each naming a group and a buffer;
 *  - actions: the schedule, an ordered list of "run chunk c for micro-batch m",
 *    "start comm op k for micro-batch m", "wait for the group's operations";
 *  - parameters: global path and shape, initializer, and the rows of dimension 0 that
 *    this rank holds, so that checkpoints name global tensors whatever the layout.
 *
 * Micro-batch slots: a buffer that lives per micro-batch (inputs, values saved for
 * the backward, values received from another stage) has `slots` copies; micro-batch m
 * uses slot m % slots.  The compiler sizes `slots` from the action list: no two
 * micro-batches of the same slot are ever live at once (1F1B: stage s of P keeps
 * P - s).
 *
 * Groups: the communicators the program's ops use.  groups[k] gives this rank's
 * color and key in a split of the world (every rank lists the same number of groups,
 * in the same order; color -1: this rank is in none of that group's communicators). */
#ifndef SLUICE_RT_PROGRAM_H
#define SLUICE_RT_PROGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/comm.h"

#define RT_MAX_RANK 8

/* A buffer's dtype is its values' (the IR's); `stored` is how the backend holds them:
 * the dtype itself, or f32 for the narrower floats (bf16, f16, f8) on the CPU backends,
 * which keep every float value in an f32 (rounded to its dtype).  Sends, receives and
 * all-to-alls carry the values at their dtype's width whatever the storage: the
 * executor packs f32-held values narrow before and widens them after (rt_pack,
 * rt_unpack), exactly, since they are already rounded to the dtype. */
enum rt_dtype { RT_DT_F32, RT_DT_I32, RT_DT_I64, RT_DT_BF16, RT_DT_F16, RT_DT_F8E4M3,
		RT_DT_F8E5M2 };
size_t rt_dtype_size(enum rt_dtype t);
const char *rt_dtype_name(enum rt_dtype t);
int rt_dtype_is_float(enum rt_dtype t);
/* n f32 values to dtype t's encoding at dst (t a float dtype narrower than f32; each
 * rounded to nearest, ties to even, which keeps a value already of t as it is; f8
 * saturates), and back. */
void rt_pack(enum rt_dtype t, void *dst, const float *src, size_t n);
void rt_unpack(enum rt_dtype t, float *dst, const void *src, size_t n);

enum rt_buf_role {
	RT_BUF_INPUT,   /* a graph input filled by the engine (tokens, targets), per micro-batch */
	RT_BUF_PARAM,   /* a parameter (master weights, fp32) */
	RT_BUF_GRAD,    /* its gradient, summed over the micro-batches of a step */
	RT_BUF_SAVED,   /* made by one chunk, read by another of this rank, per micro-batch */
	RT_BUF_COMM,    /* received from another stage, per micro-batch */
	RT_BUF_OUTPUT,  /* a value the engine reads after the step (loss, expert loads), summed */
};
const char *rt_buf_role_name(enum rt_buf_role r);

struct rt_buffer {
	const char *name;
	enum rt_dtype dtype;
	enum rt_dtype stored;       /* RT_DT_F32 or dtype (see rt_dtype); normalised by
				     * rt_program_add_buffer: the dtype for non-floats */
	enum rt_buf_role role;
	int rank;
	int64_t shape[RT_MAX_RANK];
	int64_t numel;              /* elements of one slot */
	int64_t bytes;              /* of one slot, at the stored width */
	int slots;                  /* micro-batch slots (1 for parameters and gradients) */
	int64_t offset;             /* in the arena; -1: not in it (see rt_program_layout) */
	int param;                  /* RT_BUF_PARAM, RT_BUF_GRAD: index in params; else -1 */
	void *data;                 /* set by rt_program_alloc: slot 0; slot k at + k*bytes */
};

/* What a backend supplies for each chunk. */
struct rt_chunk_impl {
	const char *backend;
	/* Run the code once: in[i] points at the chunk's i-th input; on return out[i]
	 * points at its i-th output, owned by the code until its next run.  0 on success. */
	int (*run)(void *code, void *const *in, void **out);
	void (*free)(void *code);
	/* Bytes of the code's own working memory (its arena), for reports. */
	int64_t (*arena_bytes)(const void *code);
	/* Where output i lands on every run, when that is fixed once the code is built
	 * (else NULL): a buffer written only there, once a step, can live in place. */
	void *(*output)(void *code, int i);
};

/* BWD is a stage's whole backward; a schedule that defers weight gradients (zb1p)
 * splits it into BWD_B (input gradients) and BWD_W (weight gradients) */
enum rt_chunk_kind { RT_CHUNK_FWD, RT_CHUNK_BWD, RT_CHUNK_FWD_BWD, RT_CHUNK_BWD_B,
		     RT_CHUNK_BWD_W };
const char *rt_chunk_kind_name(enum rt_chunk_kind k);

struct rt_chunk {
	const char *name;           /* "stage1.fwd" */
	int stage;
	enum rt_chunk_kind kind;
	int n_in, n_out;
	int *in, *out;              /* buffer ids, in the order the code takes them */
	const struct rt_chunk_impl *impl;
	void *code;
	double seconds;             /* time spent running it (the executor's counter) */
};

enum rt_cop_kind { RT_COP_SEND, RT_COP_RECV, RT_COP_ALL_REDUCE, RT_COP_ALL_TO_ALL,
		   RT_COP_ALL_TO_ALLV };
const char *rt_cop_kind_name(enum rt_cop_kind k);

/* ALL_TO_ALL: buf [P, ...] to out [P, ...], block p to peer p.  ALL_TO_ALLV: buf's
 * rows [R, ...] to out [C, ...]; scounts and rcounts are i32 [P, n] buffers: peer p
 * gets the next sum_j scounts[p, j] rows and sends sum_j rcounts[p, j], packed in
 * peer order in out, zero past them (expert parallelism's dispatch and combine). */
struct rt_comm_op {
	enum rt_cop_kind kind;
	int buf;
	int group;                  /* index in the program's groups */
	int peer;                   /* SEND/RECV: the peer's rank in the group */
	int tag;                    /* SEND/RECV: matches a send to its receive */
	int out;                    /* ALL_TO_ALL(V): the buffer received into */
	int scounts, rcounts;       /* ALL_TO_ALLV: the count buffers; else -1 */
};

enum rt_act_kind {
	RT_ACT_CHUNK,               /* run chunk `index` for micro-batch mb */
	RT_ACT_COMM,                /* start comm op `index` for micro-batch mb */
	RT_ACT_WAIT,                /* wait until group `index`'s started ops are done */
};

struct rt_action {
	enum rt_act_kind kind;
	int index;
	int mb;
};

enum rt_init { RT_INIT_NORMAL, RT_INIT_ZEROS, RT_INIT_ONES, RT_INIT_UNIFORM };

struct rt_param {
	const char *path;           /* global name, e.g. "layers.3.moe.experts.w1" */
	int rank;
	int64_t shape[RT_MAX_RANK]; /* global shape */
	int64_t numel;              /* global elements */
	int64_t row0, rows;         /* the rows of dimension 0 this rank holds */
	enum rt_init init;
	double std;                 /* NORMAL: its std; UNIFORM: the bound when std_given */
	int std_given;
	int64_t fan_in;             /* UNIFORM without std: bound 1/sqrt(fan_in) */
	int trainable, decay;
	int buf, grad;              /* buffer ids; grad -1 when not trainable */
	/* 1 on exactly one rank of every set of ranks holding the same rows: that rank
	 * counts it in the gradient norm and writes it to checkpoints */
	int owner;
	int reduce_group;           /* the group its gradient is summed over; -1: none */
	int zero;                   /* ZeRO-1: the gradient is reduce-scattered over
				       reduce_group, each member steps its shard of the
				       elements (AdamW states for that shard only) and the
				       weights are all-gathered; the step has no all-reduce */
	/* a routing bias moved toward balance after every step (DeepSeek-V3's
	 * auxiliary-loss-free balancing): load is the OUTPUT buffer of expert loads,
	 * load_group the group it is summed over (the data-parallel group) */
	int load, load_group;
	float gamma;
	const char *scope;          /* "layers.3.moe" */
};

struct rt_group_def {
	const char *name;           /* "dp", "pp", "grad{0,1}" */
	int color, key;
};

struct rt_program {
	int rank, world;
	struct rt_layout layout;    /* pp x dp, ep inside dp */
	int stage;                  /* this rank's pipeline stage */
	int microbatches;           /* per data-parallel rank per step */
	const char *schedule;       /* "1f1b" */
	int batch, seq, vocab;      /* sequences per micro-batch, tokens per sequence */
	int n_bufs, n_chunks, n_comms, n_actions, n_params, n_groups;
	struct rt_buffer *bufs;
	struct rt_chunk *chunks;
	struct rt_comm_op *comms;
	struct rt_action *actions;
	struct rt_param *params;
	struct rt_group_def *groups;
	int tokens, targets;        /* INPUT buffers, -1 when this stage reads none */
	int loss, lm_loss;          /* OUTPUT buffers (micro-batch means, summed), -1: not here */
	int loss_group;             /* the group the losses are summed over to reach every rank */
	int64_t arena_bytes;        /* set by rt_program_alloc */
	void *arena;                /* in dev's memory */
	struct rt_device *dev;      /* where the buffers live (rt_program_alloc; not owned) */
	int64_t aliased_bytes;      /* buffers living in the chunks' own outputs */
	char *strings;              /* owns names (see rt_program_strdup) */
};

/* Build helpers for the compiler: each returns the new element's index. */
struct rt_program *rt_program_new(int rank, int world);
const char *rt_program_strdup(struct rt_program *p, const char *s);
int rt_program_add_buffer(struct rt_program *p, const struct rt_buffer *b);
int rt_program_add_chunk(struct rt_program *p, const struct rt_chunk *c);
int rt_program_add_comm(struct rt_program *p, const struct rt_comm_op *op);
int rt_program_add_action(struct rt_program *p, enum rt_act_kind kind, int index, int mb);
int rt_program_add_param(struct rt_program *p, const struct rt_param *prm);
int rt_program_add_group(struct rt_program *p, const char *name, int color, int key);

/* Place every buffer in one arena (all slots; parameters and gradients too) and
 * allocate it in dev's memory (runtime/device.h: the host's, its pages faulted in on
 * the device's threads, or a GPU's); dev must outlive the program.  A GRAD or
 * OUTPUT buffer that one chunk writes once a step (one micro-batch) lives where that
 * chunk's code puts the output (rt_chunk_impl.output), so nothing is copied.  0, or
 * -1 with a message when it cannot be allocated. */
struct rt_device;
int rt_program_alloc(struct rt_program *p, struct rt_device *dev, char *err, size_t errlen);
static inline void *rt_buf_slot(const struct rt_program *p, int buf, int mb)
{
	const struct rt_buffer *b = &p->bufs[buf];
	return (char *)b->data + (size_t)(mb % b->slots) * (size_t)b->bytes;
}
void rt_program_free(struct rt_program *p);
/* A readable listing of the program (buffers, chunks, comm ops, actions). */
void rt_program_print(const struct rt_program *p, FILE *out);

/* The programs of every rank of a job, checked together: on every communicator, each
 * send has its receive (same shape and dtype, same micro-batch, in the same order)
 * and every member issues the same collectives in the same order; then every rank's
 * actions are played in order under the strictest rules a library may apply (a send
 * completes once its receive is posted, a collective once all members reach it), and
 * the job must finish: a set of ranks that wait on each other is said, with what each
 * waits for.  Returns the number of problems, each said on err. */
int rt_program_verify(struct rt_program *const *progs, int n, FILE *err);
/* The same, with the failure drawn on dot as Graphviz DOT too: when the job cannot
 * finish, the ranks that wait on each other (each rank, the action it is stuck at and
 * the chunk it ran last; an arrow to each rank it waits for, saying for what); when a
 * pairing fails, its first mismatch (the two ranks at the actions that do not pair,
 * with buffer, dtype, shape and micro-batch; an arrow saying what differs).  Nothing
 * is written to dot when the programs pass. */
int rt_program_verify_dot(struct rt_program *const *progs, int n, FILE *err, FILE *dot);

/* The programs of a job as Graphviz DOT: ranks as clusters holding their chunks (in
 * the order they run) and parameters, sends between stages as edges labelled with
 * what crosses per micro-batch, gradient sums as dashed edges between the ranks of a
 * group. */
void rt_programs_dot(struct rt_program *const *progs, int n, const char *title, FILE *out);

/* ---- the executor (runtime/exec.c) ------------------------------------------- */

struct rt_exec;

struct rt_exec_stats {
	double compute_s, comm_s, wait_s; /* this rank, since the last reset */
	/* expert parallelism: count exchanges whose routing overflowed a receive buffer
	 * (seen alike by every rank of the group; the step's result is then wrong and
	 * must be run again with larger buffers), the most rows one rank was sent by such
	 * an exchange, and the receive buffer's rows there */
	int64_t ep_overflows, ep_need_rows, ep_cap_rows;
	/* bytes this rank sent to the other ranks of ALL_TO_ALLV exchanges (the expert
	 * parallel dispatch and combine), at the program buffers' element widths */
	int64_t a2a_bytes;
};

/* The communicators of the program's groups: every rank of the world calls it
 * (collective).  world is NULL for a one-rank program.  The program must be allocated
 * (rt_program_alloc): the executor works on its device. */
struct rt_exec *rt_exec_new(struct rt_program *p, struct rt_comm *world, char *err,
			    size_t errlen);
/* Runs the program's actions once: a training step over every micro-batch (inputs
 * already in their slots), gradients summed over the micro-batches in the GRAD
 * buffers, outputs summed in the OUTPUT buffers.  Then the gradients are summed over
 * their groups.  0, or -1 with a message. */
int rt_exec_step(struct rt_exec *x, char *err, size_t errlen);
/* Sums n host values over a group in place (every member calls it). */
void rt_exec_sum(struct rt_exec *x, int group, double *v, int n);
/* Sums an f32 buffer of the program (slot 0) over a group in place, on its device. */
void rt_exec_sum_buf(struct rt_exec *x, int group, int buf);
/* Host bytes to and from a member of a group (complete on return; the sender's and
 * the receiver's calls pair in order). */
void rt_exec_send_host(struct rt_exec *x, int group, const void *h, size_t bytes, int peer);
void rt_exec_recv_host(struct rt_exec *x, int group, void *h, size_t bytes, int peer);
struct rt_comm *rt_exec_group(struct rt_exec *x, int group); /* NULL: no communicator */
void rt_exec_stats(const struct rt_exec *x, struct rt_exec_stats *s);
/* From the next step on, each action i's start and end (rt_now(), seconds) into t[2i]
 * and t[2i + 1] (t holds 2 x n_actions); NULL stops it.  On a GPU the times are the
 * GPU's: events recorded where each action's work is queued (a chunk's and a wait's on
 * the compute stream, an exchange's on its communicator's stream) and read after the
 * step, placed on the host's clock at the step's start. */
void rt_exec_trace(struct rt_exec *x, double *t);
void rt_exec_free(struct rt_exec *x);

#endif
