/* cmd_train.c - 'sluice train': options, then the training driver (tools/train.c). */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "train.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice train FILE.sl [options]\n"
		"\n"
		"Train a model: compile it, run the passes (autodiff among them), and loop:\n"
		"sample a batch, forward and backward, clip, AdamW, learning-rate schedule;\n"
		"MoE routing biases move toward balance after each step.  On a terminal a\n"
		"progress bar shows step, loss, tokens/s and the time left; plain lines\n"
		"otherwise.  Ctrl-C saves a checkpoint and exits; --resume continues exactly\n"
		"(on the CPU every later loss is bit-identical to an uninterrupted run).\n"
		"\n"
		"  --data SHARD        training tokens (llm.c shard, e.g. from 'sluice data');\n"
		"                      default: English text from Debian's fortunes, prepared\n"
		"                      on first use in ~/.cache/sluice ($SLUICE_CACHE_DIR)\n"
		"  --val-data SHARD    validation tokens; default: the last tenth of --data\n"
		"  --steps N           steps in all (default: the model's train section)\n"
		"  --device cpu|cuda   where to train (cuda when a GPU is present and this\n"
		"                      sluice has the CUDA backend, else cpu)\n"
		"  --backend ref|llvm  the CPU executor: llvm (JIT, the fast one, when built)\n"
		"                      or ref (the plain-C reference executor)\n"
		"  --set NAME=VALUE    override a constant or train setting of the model\n"
		"                      (repeatable): e.g. batch, seq, lr, warmup, wd, clip, dim;\n"
		"                      also read when the model declares them: min_lr, beta1,\n"
		"                      beta2, eps, val_batches, seed\n"
		"  --metrics FILE      one JSON object per step: step, loss (the objective),\n"
		"                      lm_loss (its next-token part, when the objective adds\n"
		"                      MTP or balance terms), lr, tokens_per_s, grad_norm,\n"
		"                      gflops, val_loss (next-token cross-entropy on held-out\n"
		"                      data, nats per token, when measured), expert load\n"
		"                      max/mean per MoE layer, time_s and cpu_s since the start\n"
		"  --trace OUT.json    one step's timeline of every rank as a Chrome/Perfetto\n"
		"                      trace (a process per rank: its chunks, communication and\n"
		"                      waits), with the step's time, each rank's compute share\n"
		"                      and the measured costs to simulate (sluice schedule)\n"
		"  --trace-step N      the step traced (default: the third of the run)\n"
		"  --out DIR           checkpoints go to DIR/checkpoint.safetensors\n"
		"                      (default runs/MODEL)\n"
		"  --resume DIR        continue from DIR's checkpoint (or a .safetensors file)\n"
		"  --seed N            initialisation and sampling seed (default 1337)\n"
		"  --eval-every N      validation loss every N steps (default: steps/10; 0: never)\n"
		"  --ckpt-every N      checkpoint every N steps (default 500) and at the end\n"
		"  --stop-at STEP      stop after STEP with a checkpoint, as Ctrl-C would\n"
		"  --ranks N           train on N CPU ranks, processes started through Open MPI's\n"
		"                      mpirun (as 'mpirun -np N sluice train ...' would); the\n"
		"                      layout comes from the settings pp, microbatches and\n"
		"                      schedule, dp = N / pp\n"
		"  --gpus N            train on N GPUs of this node, one process each over\n"
		"                      NCCL (--device cuda); torchrun's RANK/WORLD_SIZE/\n"
		"                      LOCAL_RANK/MASTER_ADDR/MASTER_PORT are read when set\n"
		"  --quiet             no progress display\n");
}

static int parse_count(const char *opt, const char *s, int64_t *out)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || v < 0) {
		fprintf(stderr, "sluice train: %s takes a non-negative integer, got '%s'\n", opt, s);
		return -1;
	}
	*out = v;
	return 0;
}

int cmd_train(int argc, char **argv)
{
	struct train_opts o = { .steps = -1, .eval_every = -1, .ckpt_every = -1, .stop_at = -1 };
	const char *steps = NULL, *seed = NULL, *eval = NULL, *ckpt = NULL, *stop = NULL,
		   *ranks = NULL, *gpus = NULL, *trace_step = NULL;
	int rc = EXIT_USAGE;
	for (int i = 1; i < argc;) {
		int r;
		if (args_is_help(argv[i])) {
			usage(stdout);
			rc = EXIT_OK;
			goto done;
		}
		if (!strcmp(argv[i], "--quiet")) {
			o.quiet = 1;
			i++;
			continue;
		}
		if ((r = args_take_set(argc, argv, &i, &o.over, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--data", &o.data, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--val-data", &o.val_data, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--steps", &steps, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--device", &o.device, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--backend", &o.backend, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--metrics", &o.metrics, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--trace", &o.trace, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--trace-step", &trace_step, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--out", &o.out, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--resume", &o.resume, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--seed", &seed, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--eval-every", &eval, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--ckpt-every", &ckpt, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--stop-at", &stop, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--ranks", &ranks, "train")) ||
		    (r = args_take_value(argc, argv, &i, "--gpus", &gpus, "train"))) {
			if (r < 0)
				goto done;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "sluice train: unknown option '%s'\n", argv[i]);
			usage(stderr);
			goto done;
		}
		if (o.model) {
			fprintf(stderr, "sluice train: one model file, got '%s' and '%s'\n", o.model,
				argv[i]);
			goto done;
		}
		o.model = argv[i++];
	}
	if (!o.model) {
		fprintf(stderr, "sluice train: no model file\n");
		usage(stderr);
		goto done;
	}
	int64_t v;
	if ((steps && parse_count("--steps", steps, &o.steps)) ||
	    (eval && parse_count("--eval-every", eval, &o.eval_every)) ||
	    (ckpt && parse_count("--ckpt-every", ckpt, &o.ckpt_every)) ||
	    (stop && parse_count("--stop-at", stop, &o.stop_at)) ||
	    (trace_step && parse_count("--trace-step", trace_step, &o.trace_step)))
		goto done;
	if (trace_step && (!o.trace || o.trace_step < 1)) {
		fprintf(stderr, "sluice train: %s\n", o.trace ? "--trace-step counts from 1"
			: "--trace-step without --trace OUT.json");
		goto done;
	}
	if (ranks) {
		if (parse_count("--ranks", ranks, &v))
			goto done;
		if (v < 1 || v > 4096) {
			fprintf(stderr, "sluice train: --ranks takes 1 to 4096, got %s\n", ranks);
			goto done;
		}
		o.ranks = (int)v;
	}
	if (gpus) {
		if (parse_count("--gpus", gpus, &v))
			goto done;
		if (v < 1 || v > 1024) {
			fprintf(stderr, "sluice train: --gpus takes 1 to 1024, got %s\n", gpus);
			goto done;
		}
		o.gpus = (int)v;
	}
	if (seed) {
		if (parse_count("--seed", seed, &v))
			goto done;
		o.seed = (uint64_t)v;
		o.has_seed = 1;
	}
	if ((steps && o.steps == 0) || (ckpt && o.ckpt_every == 0)) {
		fprintf(stderr, "sluice train: --steps and --ckpt-every must be positive\n");
		goto done;
	}
	if (o.backend && strcmp(o.backend, "ref") && strcmp(o.backend, "llvm")) {
		fprintf(stderr, "sluice train: --backend takes ref or llvm, got '%s'\n", o.backend);
		goto done;
	}
	rc = train_run(&o);
done:
	args_overrides_free(&o.over);
	return rc;
}
