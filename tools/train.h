/* train.h - the training driver: compiles a model, runs the passes, picks a backend,
 * and drives the step loop with the runtime's optimizer, data, checkpoints, metrics
 * and progress display.  It lives in tools/ because it wires the compiler and the
 * runtime together; neither of them knows the other. */
#ifndef SLUICE_TOOLS_TRAIN_H
#define SLUICE_TOOLS_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"

struct train_opts {
	const char *model;          /* .sl file */
	struct args_overrides over; /* --set NAME=VALUE */
	const char *data;           /* --data SHARD; NULL: the default English text */
	const char *val_data;       /* --val-data SHARD; NULL: held out from --data */
	int64_t steps;              /* --steps; -1: the model's train section */
	const char *device;         /* "cpu" | "cuda" | NULL: cuda when a GPU is present */
	const char *backend;        /* "ref" | "llvm" | NULL (the best built) */
	const char *metrics;        /* --metrics FILE */
	const char *trace;          /* --trace OUT.json */
	int64_t trace_step;         /* --trace-step N; 0: the third step of the run */
	const char *out;            /* --out DIR; NULL: runs/MODEL */
	const char *resume;         /* --resume DIR (or a .safetensors file) */
	int has_seed;
	uint64_t seed;              /* --seed */
	int64_t eval_every;         /* --eval-every; -1: about ten times a run */
	int64_t ckpt_every;         /* --ckpt-every; -1: 500 */
	int64_t stop_at;            /* --stop-at STEP: stop there as Ctrl-C would; -1: no */
	int quiet;                  /* --quiet: no progress display */
	int ranks;                  /* --ranks N: CPU ranks started through mpirun; 0: as
				       the environment says (one, or mpirun's) */
	int gpus;                   /* --gpus N: GPU ranks started by sluice's launcher; 0:
				       as the environment says */
};

struct cg_layout;
struct ir_graph;
/* The layout of a job of `world` ranks from the model's settings (pp, ep,
 * microbatches, schedule, zero), its layers cut into stages by the partition pass
 * (l->layer_stage malloc'd: the caller frees it): 0, or -1 with a message naming
 * MODEL when it is impossible or asks for what is not built yet. */
int train_layout(const char *model, const struct ir_graph *g, int world, struct cg_layout *l);

/* Run a training job; returns the exit status (0, 1 input error). */
int train_run(const struct train_opts *o);

/* The default training data: English text from Debian's fortunes, turned into byte
 * shards in the cache directory on first use (said on log); with fim > 0, the training
 * shard has that share of fortunes in FIM's prefix-suffix-middle order (seeded by
 * seed; the validation shard stays plain text).  Returns 0 and malloc'd
 * paths, or -1 with a message saying what to install. */
int train_default_data(char **train_path, char **val_path, double fim, uint64_t seed,
		       FILE *log);

/* --- shared with 'sluice data' (tools/cmd_data.c) ------------------------------- */
/* "out.bin" -> "out_val.bin" (malloc'd). */
char *train_val_shard_name(const char *out);
/* Tokenize text with the byte tokenizer and write it as a shard (val_path NULL), or
 * split it: the last val_fraction of the tokens to val_path.  Says what it wrote on
 * log.  0, or -1 with a message. */
int train_write_text_shards(const unsigned char *text, size_t len, double val_fraction,
			    const char *train_path, const char *val_path, FILE *log);

/* The same with FIM applied per document first (documents end at doc_end[k] in text):
 * that share of them in prefix-suffix-middle order, seeded by seed. */
int train_write_fim_shards(const unsigned char *text, const size_t *doc_end, int n_docs,
			   double fim, uint64_t seed, double val_fraction, const char *train_path,
			   const char *val_path, FILE *log);

#endif
