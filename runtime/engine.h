/* engine.h - the training engine: the step loop over a compiled program.
 *
 * Works on the program alone (runtime/program.h): initialises the parameters this
 * rank holds, samples every step's global batch (the same tokens whatever the
 * layout: batch x microbatches x dp sequences, drawn in one order on every rank, each
 * rank taking its own micro-batches), runs the executor, reads the losses, clips the
 * global gradient norm, takes AdamW steps, moves the MoE routing biases toward
 * balance, evaluates, writes metrics and checkpoints, and stops cleanly on Ctrl-C.
 * The program's buffers live on its device (runtime/device.h: the host or a GPU, set
 * by rt_program_alloc); the engine reaches them only through it. */
#ifndef SLUICE_RT_ENGINE_H
#define SLUICE_RT_ENGINE_H

#include <stdint.h>

#include "runtime/optim.h"
#include "runtime/program.h"

struct rt_train_config {
	const char *model;          /* the model file, for messages */
	const char *model_name;     /* the model's name, kept in checkpoints */
	const char *config_hash;    /* of parameter names and shapes */
	const char *data, *val_data;/* token shards; val_data NULL: none */
	int64_t steps;              /* in all */
	int steps_given;            /* --steps was given (else a resume keeps its own) */
	struct rt_schedule sched;   /* lr_max, lr_min, warmup; total is set from steps */
	struct rt_adamw adamw;
	float clip;
	int val_batches;
	uint64_t seed;
	int64_t eval_every;         /* 0: never; -1: about ten times a run */
	int64_t ckpt_every;         /* -1: 500 */
	int64_t stop_at;            /* -1: none */
	const char *out_dir;
	const char *resume;         /* a directory or a .safetensors file, or NULL */
	const char *metrics;        /* JSON-lines file, or NULL */
	int quiet;
	const char *backend;        /* for the report line */
	double flops_per_token;
	int zero_note;              /* say that ZeRO-1 is on */
	float ema;                  /* decay of the weights' moving average; 0: none */
	int bf16_moments;           /* AdamW's moments kept in bf16 (precision fp8, as the
				     * recipe keeps them); checkpoints hold them as f32 */
	const char *trace;          /* one step's timeline of every rank (Chrome/Perfetto
				     * JSON), or NULL */
	int64_t trace_step;         /* that step (1-based); 0: the third of the run */
	/* Expert parallelism: the program's receive buffers, in even shares (0: the worst
	 * case, which never overflows).  After an overflow the engine asks rebuild for a
	 * program and executor with buffers of ep_capacity even shares (every rank at
	 * once: it is collective), copies the weights into it, hands the old ones to
	 * retire and runs the step again.  NULL rebuild: an overflow is an error. */
	double ep_capacity;
	int (*rebuild)(void *ctx, double ep_capacity, struct rt_program **p, struct rt_exec **x);
	void (*retire)(void *ctx, struct rt_program *p, struct rt_exec *x);
	void *rebuild_ctx;
};

/* Trains; every rank of the program's world calls it (x: the program's executor).
 * Returns the exit status: 0, or 1 for an error in the input or a failed run. */
int rt_train(struct rt_program *p, struct rt_exec *x, const struct rt_train_config *c);

/* Ctrl-C (SIGINT) and SIGUSR1 (a stop sent through 'mpirun' by hand) set a flag for
 * the rest of the process, which the end of rt_train's first step acts on: the train
 * command calls it first, so that one which comes while the program compiles, or
 * again after the training ended, is neither lost nor fatal.  Without it rt_train
 * catches them while it runs and restores the handlers it found. */
void rt_train_catch_interrupts(void);

/* 1 when a Ctrl-C came since rt_train_catch_interrupts */
int rt_train_interrupted(void);

/* The file a checkpoint directory holds. */
#define RT_CKPT_FILE "checkpoint.safetensors"

#endif
