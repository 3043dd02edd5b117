/* train.c - 'sluice train' wired together: the model compiled by the frontend, the
 * passes, the layout's stages, a program for this rank built and compiled by a
 * backend (codegen/program.c), then the training engine of the runtime
 * (runtime/engine.c) run on it.  This file reads settings and reports; the step loop,
 * optimizer, data, checkpoints and metrics live in runtime/.
 *
 * Layout settings: pp (pipeline stages), microbatches (per data-parallel rank per
 * step), schedule (1f1b, zb1p, dualpipe, dualpipev), ep and zero; dp is the number of ranks over pp.  What is not
 * built yet is refused with a message, never ignored. */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codegen/backend.h"
#include "codegen/program.h"
#include "commands.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "runtime/comm.h"
#include "runtime/data.h"
#include "runtime/device.h"
#include "runtime/engine.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

/* The CUDA backend is built with the CUDA toolkit (codegen/cuda/backend.c). */
static int have_cuda_backend(void)
{
#ifdef SLUICE_HAVE_CUDA
	return 1;
#else
	return 0;
#endif
}

/* A train setting by any of its names (the train section or --set), else dflt. */
static double setting(const struct ir_graph *g, const char *const *names, double dflt)
{
	for (int i = 0; names[i]; i++) {
		const struct ir_setting *s = ir_graph_setting(g, names[i]);
		if (s && !s->is_str)
			return s->num;
	}
	return dflt;
}
#define SETTING(g, dflt, ...) setting(g, (const char *const[]){ __VA_ARGS__, NULL }, dflt)

static const char *setting_str(const struct ir_graph *g, const char *name, const char *dflt)
{
	const struct ir_setting *s = ir_graph_setting(g, name);
	return s && s->is_str ? s->str : dflt;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* The value a chain of RESHAPE/CAST ops starts from. */
static const struct ir_value *through_views(const struct ir_value *v)
{
	while (v->def && (v->def->kind == IR_OP_RESHAPE || v->def->kind == IR_OP_CAST))
		v = v->def->in[0];
	return v;
}

/* The objective ("loss") may add auxiliary terms to the language-model loss (MTP,
 * balance losses).  The number to compare across models is the cross-entropy of the
 * next token alone, in nats per token: the one CROSS_ENTROPY whose targets are the
 * "targets" input itself (no slice, as MTP's are), outside an MTP block.  It becomes
 * the graph output "lm_loss" (before the passes, so that every executor keeps it);
 * when "loss" is that value already, or no single such op exists, nothing is added. */
static void mark_lm_loss(struct ir_graph *g)
{
	struct ir_value *found = NULL;
	int n = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_CROSS_ENTROPY || op->phase != IR_PHASE_FWD ||
		    (op->scope && !strncmp(op->scope, "mtp", 3)))
			continue;
		const struct ir_value *tv = through_views(op->in[1]);
		if (tv->def && tv->def->kind == IR_OP_INPUT &&
		    !strcmp(ir_op_str(tv->def, "name", ""), "targets")) {
			found = op->out[0];
			n++;
		}
	}
	struct ir_value *loss = ir_graph_output(g, "loss");
	if (n == 1 && loss && found != loss && !ir_graph_output(g, "lm_loss"))
		ir_graph_add_output(g, "lm_loss", found);
}

static const struct cg_backend *pick_backend(const char *name)
{
#ifdef SLUICE_HAVE_LLVM
	if (!name || !strcmp(name, "llvm"))
		return &cg_backend_llvm;
#else
	if (name && !strcmp(name, "llvm")) {
		fprintf(stderr, "sluice train: --backend llvm: this sluice was built without LLVM "
			"(install llvm-14-dev and rebuild: bash tools/setup.sh)\n");
		return NULL;
	}
#endif
	if (!name || !strcmp(name, "ref"))
		return &cg_backend_ref;
	fprintf(stderr, "sluice train: unknown backend '%s' (ref or llvm)\n", name);
	return NULL;
}

/* A .sl model through the frontend, or a graph in textual IR (.ir: what 'sluice ir'
 * prints), whose --set overrides can only be train settings. */
static struct ir_graph *compile_model(const struct train_opts *o)
{
	if (!ends_with(o->model, ".ir"))
		return sl_compile_file(o->model, o->over.n, o->over.v, stderr);
	size_t len;
	char *text = rt_read_file(o->model, &len);
	if (!text) {
		fprintf(stderr, "sluice train: %s: %s\n", o->model, strerror(errno));
		return NULL;
	}
	struct ir_graph *g = ir_parse(text, len, o->model, stderr);
	free(text);
	for (int i = 0; g && i < o->over.n; i++) {
		/* a number, else a word (schedule=1f1b, precision=fp32) */
		char *end;
		double v = strtod(o->over.v[i].value, &end);
		if (*end || !*o->over.v[i].value)
			ir_graph_set(g, o->over.v[i].name, 0, o->over.v[i].value);
		else
			ir_graph_set(g, o->over.v[i].name, v, NULL);
	}
	if (g && sl_settings_check_graph(g, stderr)) {
		ir_graph_free(g);
		return NULL;
	}
	return g;
}

/* The hash that ties a checkpoint to the model: name, parameter paths and shapes. */
static void config_hash(const struct ir_graph *g, char *out, size_t n)
{
	uint64_t h = RT_HASH64_INIT;
	h = rt_hash64(g->model ? g->model : "", strlen(g->model ? g->model : ""), h);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_PARAM)
			continue;
		const char *path = op->path ? op->path : ir_sprintf(g->arena, "param%d", op->out[0]->id);
		const struct ir_value *v = op->out[0];
		int rank = v->shape.rank;
		h = rt_hash64(path, strlen(path) + 1, h);
		h = rt_hash64(&rank, sizeof rank, h);
		h = rt_hash64(v->shape.dim, sizeof v->shape.dim[0] * (size_t)rank, h);
	}
	snprintf(out, n, "%016" PRIx64, h);
}

static void print_model(const struct ir_graph *g, double *flops_per_token, int64_t *arena)
{
	int64_t n_total = 0, n_train = 0;
	int n_params = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_PARAM)
			continue;
		int64_t n = ir_shape_numel(&op->out[0]->shape);
		n_params++;
		n_total += n;
		if (ir_op_int(op, "trainable", 1))
			n_train += n;
	}
	fprintf(stderr, "model: %s, %d parameter tensors, %.3f%s trainable parameters%s\n",
		g->model ? g->model : "?", n_params,
		(double)n_train / (n_train >= 1000000000 ? 1e9 : 1e6),
		n_train >= 1000000000 ? "B" : "M", n_total != n_train ? " (+ routing biases)" : "");
	struct pass_account acc;
	if (pass_account(g, &acc) == 0) {
		*flops_per_token = acc.flops_per_token;
		fprintf(stderr, "model: %.2f MFLOP per token (forward + backward)\n",
			acc.flops_per_token / 1e6);
		pass_account_free(&acc);
	}
	struct pass_memplan mp;
	if (pass_memplan(g, 64, &mp) == 0) {
		fprintf(stderr, "arena: %.2f MiB planned over the IR's values (sluice check's figure)\n",
			(double)mp.peak / (1024.0 * 1024.0));
		*arena = mp.peak;
		pass_memplan_free(&mp);
	}
}

/* Weights, gradients and both moments are 16 bytes a parameter on the host, plus the
 * planned arena: refuse a model that cannot fit rather than die allocating it. */
/* What a CPU run holds besides its code: the arena, and per trainable parameter its f32
 * weight and gradient, the two AdamW moments (f32, or bf16 at precision fp8) and the
 * moving average (ema) where there is one; a buffer its f32 value. */
static int check_memory(const struct train_opts *o, const struct ir_graph *g, int64_t arena,
			const struct rt_train_config *c)
{
	double need = (double)arena;
	double per = 8.0 + (c->bf16_moments ? 4.0 : 8.0) + (c->ema > 0 ? 4.0 : 0.0);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_PARAM)
			need += (double)ir_shape_numel(&op->out[0]->shape) *
				(ir_op_int(op, "trainable", 1) ? per : 4.0);
	}
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	double have = pages > 0 && psize > 0 ? (double)pages * (double)psize : 0.0;
	if (have > 0.0 && need > have) {
		fprintf(stderr, "sluice train: %s needs %.1f GiB for its weights, gradients, "
			"AdamW moments and activations; this machine has %.1f GiB: train a smaller "
			"configuration (--set) or on GPUs\n", o->model, need / 1073741824.0,
			have / 1073741824.0);
		return -1;
	}
	return 0;
}

/* The layout from the settings and the number of ranks; -1 with a message when it is
 * impossible or asks for what is not built yet. */
int train_layout(const char *model, const struct ir_graph *g, int world, struct cg_layout *l)
{
	struct pass_layout pl;
	if (pass_layout_read(g, world, &pl, stderr) || pass_layout_check(g, &pl, world, stderr))
		return -1;
	*l = (struct cg_layout){ .pp = pl.pp, .dp = pl.dp, .ep = pl.ep,
				 .microbatches = pl.microbatches, .schedule = pl.schedule };
	/* global_batch: sequences a step over all ranks = batch x microbatches x dp; it
	 * sets microbatches, or checks the one given */
	const struct ir_setting *gbs = ir_graph_setting(g, "global_batch");
	if (gbs && !gbs->is_str) {
		int64_t gb = (int64_t)gbs->num, batch = (int64_t)SETTING(g, 0, "batch");
		if (batch <= 0) {
			fprintf(stderr, "sluice train: %s: global_batch needs the batch setting (the "
				"sequences of a micro-batch)\n", model);
			return -1;
		}
		if (gb % (batch * l->dp)) {
			fprintf(stderr, "sluice train: %s: global_batch %" PRId64 " is not a multiple "
				"of batch %" PRId64 " x dp %d\n", model, gb, batch, l->dp);
			return -1;
		}
		int mb = (int)(gb / (batch * l->dp));
		if (ir_graph_setting(g, "microbatches") && mb != l->microbatches) {
			fprintf(stderr, "sluice train: %s: global_batch %" PRId64 " = batch %" PRId64
				" x microbatches %d x dp %d does not hold (microbatches is %d)\n",
				model, gb, batch, mb, l->dp, l->microbatches);
			return -1;
		}
		l->microbatches = mb;
		pl.microbatches = mb;
	}
	l->zero = pl.zero;
	if (pl.pp > 1) {
		/* the schedule's own conditions (dualpipe: an even pp, 2 pp micro-batches) */
		struct pass_schedule sched;
		if (pass_schedule_build(pl.schedule, pl.pp, l->microbatches, &sched, stderr))
			return -1;
		l->stages = sched.stages;
		pass_schedule_free(&sched);
		/* the layers cut by the partition pass's cost model, into the schedule's
		 * stages (dualpipev: two per rank) */
		struct pass_layout cut = pl;
		cut.pp = l->stages;
		cut.dp = pl.dp;
		struct pass_partition part;
		struct pass_rates rates = { 0, 0 };
		if (pass_partition_plan(g, &cut, &rates, &part, stderr))
			return -1;
		int *ls = rt_malloc(sizeof *ls * (size_t)(part.n_layers + 1));
		memcpy(ls, part.layer_stage, sizeof *ls * (size_t)part.n_layers);
		l->layer_stage = ls;
		l->n_layers = part.n_layers;
		pass_partition_free(&part);
	}
	return 0;
}

/* Every rank's program (without code) checked against the others before this rank
 * runs its own: sends against receives, collectives in the same order. */
static int verify_programs(const char *model, const struct ir_graph *g,
			   const struct cg_layout *l, int world)
{
	struct rt_program **all = rt_calloc((size_t)world, sizeof *all);
	int bad = 0;
	for (int r = 0; r < world && !bad; r++)
		bad = !(all[r] = cg_program_build(g, l, r, NULL, stderr));
	if (!bad && rt_program_verify(all, world, stderr)) {
		fprintf(stderr, "sluice train: %s: the programs of the %d ranks do not match "
			"(above): a bug in sluice\n", model, world);
		bad = 1;
	}
	for (int r = 0; r < world; r++)
		rt_program_free(all[r]);
	free(all);
	return bad ? -1 : 0;
}

/* cpu or cuda from --device, else cuda when a GPU and the CUDA backend are there;
 * -1 with a message when what is asked for cannot be had. */
static int pick_device(const struct train_opts *o)
{
	const char *d = o->device;
	if (!d)
		d = o->gpus > 0 || (!o->backend && !o->ranks && rt_gpu_count() > 0 &&
				    have_cuda_backend()) ? "cuda" : "cpu";
	if (!strcmp(d, "cpu")) {
		if (o->gpus) {
			fprintf(stderr, "sluice train: --gpus starts GPU ranks: not with --device cpu "
				"(--ranks N for CPU ranks)\n");
			return -1;
		}
		return 0;
	}
	if (strcmp(d, "cuda")) {
		fprintf(stderr, "sluice train: unknown device '%s' (cpu or cuda)\n", d);
		return -1;
	}
	if (!have_cuda_backend()) {
		fprintf(stderr, "sluice train: --device cuda: this sluice has no CUDA backend "
			"(built without the CUDA toolkit); use --device cpu\n");
		return -1;
	}
	if (rt_gpu_count() == 0) {
		fprintf(stderr, "sluice train: --device cuda: no GPU: %s\n", rt_gpu_why_none());
		return -1;
	}
	if (o->backend) {
		fprintf(stderr, "sluice train: --backend %s chooses the CPU executor: not with "
			"--device cuda\n", o->backend);
		return -1;
	}
	if (o->ranks) {
		fprintf(stderr, "sluice train: --ranks starts CPU ranks over MPI; GPU ranks: --gpus "
			"N\n");
		return -1;
	}
	if (o->gpus > rt_gpu_count()) {
		fprintf(stderr, "sluice train: --gpus %d: this node has %d GPU%s\n", o->gpus,
			rt_gpu_count(), rt_gpu_count() == 1 ? "" : "s");
		return -1;
	}
	return 1;
}

/* The device memory the CUDA backend's chunks may take (rt_gpu_open's arena): twice
 * its plan over the whole step (chunks are planned one by one, a cut adds buffers)
 * plus 1 GiB for library workspaces, within 80% of what is free;
 * SLUICE_GPU_ARENA_MB overrides it. */
static size_t gpu_arena_bytes(const struct ir_graph *g, int ordinal)
{
	const char *env = getenv("SLUICE_GPU_ARENA_MB");
	if (env && atol(env) > 0)
		return (size_t)atol(env) << 20;
	int64_t plan = 0;
#ifdef SLUICE_HAVE_CUDA
	if (cg_cuda_arena_plan(g, &plan, stderr))
		plan = 0;
#else
	(void)g;
#endif
	size_t want = 2 * (size_t)plan + ((size_t)1 << 30);
	struct rt_gpu_info info;
	if (rt_gpu_query(ordinal, &info) == 0 && want > info.mem_free / 10 * 8)
		want = info.mem_free / 10 * 8;
	return want;
}

/* --- expert parallelism: programs rebuilt with larger receive buffers ------------ */

struct rebuild {
	const struct train_opts *o;
	const struct cg_backend *be;
	const struct cg_layout *layout;
	struct rt_comm *comm;
	struct rt_device *dev;
	int rank;
	struct ir_graph **g;           /* train_run's: the current graph, program, executor */
	struct rt_program **prog;
	struct rt_exec **x;
	struct ir_graph **old;         /* graphs of retired programs, freed at the end (the
					* engine's configuration points into the first) */
	int n_old;
};

/* The model compiled again with ep_capacity = f and its program built for this rank,
 * as train_run does; every rank calls it at once (the executor's groups are split
 * anew). */
static int rebuild_program(void *ctx, double f, struct rt_program **p, struct rt_exec **x)
{
	struct rebuild *rb = ctx;
	struct ir_graph *g = compile_model(rb->o);
	struct rt_program *np = NULL;
	struct rt_exec *nx = NULL;
	char err[512] = "";
	if (!g)
		return -1;
	ir_graph_set(g, "ep_capacity", f, NULL);
	mark_lm_loss(g);
	struct cg_layout layout = *rb->layout;
	if (pass_pipeline_run(g, NULL, stderr) || cg_assign_stages(g, &layout, stderr))
		goto bad;
	np = cg_program_build(g, &layout, rb->rank, rb->be, stderr);
	if (!np)
		goto bad;
	int bad_alloc = rt_program_alloc(np, rb->dev, err, sizeof err);
	if (bad_alloc || !(nx = rt_exec_new(np, rb->comm, err, sizeof err))) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto bad;
	}
	rb->old = rt_realloc(rb->old, sizeof *rb->old * (size_t)(rb->n_old + 1));
	rb->old[rb->n_old++] = *rb->g;
	*rb->g = g;
	*rb->prog = *p = np;
	*rb->x = *x = nx;
	return 0;
bad:
	rt_program_free(np);
	ir_graph_free(g);
	return -1;
}

static void retire_program(void *ctx, struct rt_program *p, struct rt_exec *x)
{
	(void)ctx;
	rt_exec_free(x);
	rt_program_free(p);
}

int train_run(const struct train_opts *o)
{
	/* Ctrl-C while compiling stops after the first step */
	rt_train_catch_interrupts();
	int cuda = pick_device(o);
	if (cuda < 0)
		return EXIT_INPUT;
	const struct cg_backend *be = NULL;
#ifdef SLUICE_HAVE_CUDA
	if (cuda)
		be = &cg_backend_cuda;
#endif
	if (!cuda && !(be = pick_backend(o->backend)))
		return EXIT_INPUT;
	rt_timing("main: shared libraries loaded");
	struct ir_graph *g = compile_model(o);
	if (!g)
		return EXIT_INPUT;
	rt_timing("front end: model compiled to IR");
	int rc = EXIT_INPUT;
	struct rt_program *prog = NULL;
	struct rt_exec *x = NULL;
	struct rt_comm *comm = NULL;
	struct rt_device *dev = NULL;
	struct rt_gpu *gpu = NULL, *own_gpu = NULL;
	struct cg_layout layout = { 0 };
	char *def_train = NULL, *def_val = NULL, *out_dir = NULL;
	char hash[20];
	struct rt_train_config c = { .model = o->model, .model_name = g->model,
				     .config_hash = hash };
	/* settings before the passes add their outputs; the train section's names */
	c.steps = o->steps >= 0 ? o->steps : (int64_t)SETTING(g, 1000, "steps");
	c.steps_given = o->steps >= 0;
	float lr = (float)SETTING(g, 1e-3, "lr", "optimizer.lr", "adamw.lr");
	c.sched.lr_max = lr;
	c.sched.lr_min = (float)SETTING(g, lr * 0.1, "min_lr", "lr_min");
	c.sched.warmup = (int64_t)SETTING(g, 0, "warmup");
	c.adamw.beta1 = (float)SETTING(g, 0.9, "beta1", "optimizer.beta1", "adamw.beta1");
	c.adamw.beta2 = (float)SETTING(g, 0.95, "beta2", "optimizer.beta2", "adamw.beta2");
	c.adamw.eps = (float)SETTING(g, 1e-8, "eps", "optimizer.eps", "adamw.eps");
	c.adamw.weight_decay = (float)SETTING(g, 0.1, "wd", "weight_decay", "optimizer.wd",
					      "adamw.wd");
	c.clip = (float)SETTING(g, 1.0, "clip", "grad_clip");
	c.val_batches = (int)SETTING(g, 4, "val_batches");
	c.seed = o->has_seed ? o->seed : (uint64_t)SETTING(g, 1337, "seed");
	c.ema = (float)SETTING(g, 0, "ema");
	c.eval_every = o->eval_every;
	c.ckpt_every = o->ckpt_every;
	c.stop_at = o->stop_at;
	c.resume = o->resume;
	if (cuda && !ir_graph_setting(g, "ep_capacity")) {
		/* an overflow is caught on CPU ranks only (runtime/exec.c): GPU ranks size
		 * their receive buffers for the worst case */
		ir_graph_set(g, "ep_capacity", 0, "worst");
	} else if (cuda && pass_ep_capacity(g) > 0 && SETTING(g, 1, "ep") > 1) {
		fprintf(stderr, "sluice train: %s: ep_capacity %g: GPU ranks do not catch an "
			"overflow yet; --set ep_capacity=worst\n", o->model, pass_ep_capacity(g));
		goto done;
	}
	c.ep_capacity = pass_ep_capacity(g);
	c.metrics = o->metrics;
	c.trace = o->trace;
	c.trace_step = o->trace_step;
	c.quiet = o->quiet;
	c.backend = be->name;
	if (c.steps < 1 || c.val_batches < 1 || !(lr > 0)) {
		fprintf(stderr, "sluice train: steps, val_batches and lr must be positive\n");
		goto done;
	}
	const char *precision = setting_str(g, "precision", "fp32");
	/* bf16: the bf16 pass casts the products' operands (both backends; the CPU holds
	 * bf16 values in f32 buffers rounded after every op); fp8: the fp8 pass quantises
	 * the products, the CPU backend runs them emulated (operands rounded to E4M3 with
	 * their scales, products and sums in f32), the CUDA backend with E4M3 in bytes
	 * (cuBLASLt's block-scaled FP8 GEMM where the shape allows, else dequantised) */
	if (strcmp(precision, "fp32") && strcmp(precision, "bf16") && strcmp(precision, "fp8")) {
		fprintf(stderr, "sluice train: %s: precision %s: sluice trains in fp32, bf16 or "
			"fp8; --set precision=fp32\n", o->model, precision);
		goto done;
	}
	const char *optimizer = setting_str(g, "optimizer", "adamw");
	if (strcmp(optimizer, "adamw")) {
		fprintf(stderr, "sluice train: %s: optimizer %s: sluice trains with adamw\n",
			o->model, optimizer);
		goto done;
	}
	/* the job: --ranks N starts N CPU ranks through mpirun (after the layout is known
	 * to be possible); a process that is already a rank (mpirun -np N by hand) joins */
	char err[512] = "";
	struct rt_rank_env env;
	if (rt_rank_env_read(&env, err, sizeof err)) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto done;
	}
	int asked = cuda ? o->gpus : o->ranks;
	int world = asked > 0 && env.world == 1 ? asked : env.world, rank = env.rank;
	if (train_layout(o->model, g, world, &layout))
		goto done;
	if (cuda && layout.zero) {
		fprintf(stderr, "sluice train: %s: zero 1 (AdamW states sharded) runs on CPU ranks "
			"only for now: --set zero=0 with --device cuda, or --device cpu\n",
			o->model);
		goto done;
	}
	/* the SMs each GPU communication kernel may take (NCCL's maxCTAs, the symmetric
	 * all-to-all's blocks): CPU ranks talk through MPI, which has no such bound */
	int comm_sms = (int)SETTING(g, 0, "comm_sms");
	if (comm_sms > 0 && !cuda) {
		fprintf(stderr, "sluice train: %s: comm_sms %d bounds the SMs of GPU "
			"communication; CPU ranks talk through MPI: --device cuda, or leave it "
			"out\n", o->model, comm_sms);
		goto done;
	}
	if (cuda && o->gpus > 1 && env.world == 1) {
		/* one process per GPU: this one waits for them */
		rc = rt_launch(o->gpus);
		if (rc != RT_LAUNCH_RANK)
			goto done;
		rc = EXIT_INPUT;
	}
	if (cuda && o->gpus > 0 && rt_launch_check(o->gpus, err, sizeof err)) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto done;
	}
	if (o->ranks > 1 && env.world == 1) {
		rc = rt_launch_mpi(o->ranks, err, sizeof err);
		if (rc != RT_LAUNCH_RANK) {
			if (*err)
				fprintf(stderr, "sluice train: %s\n", err);
			goto done;
		}
		rc = EXIT_INPUT;
	}
	if (o->ranks > 0 && rt_launch_check(o->ranks, err, sizeof err)) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto done;
	}
	mark_lm_loss(g);
	/* of the global model: before the passes cut it over ranks */
	config_hash(g, hash, sizeof hash);
	if (pass_pipeline_run(g, NULL, stderr))
		goto done;
	rt_timing("passes");
	if (world > 1) {
		/* every rank must run the same model at the same layout */
		char what[256];
		snprintf(what, sizeof what, "%s pp %d dp %d ep %d mb %d %s", hash, layout.pp,
			 layout.dp, layout.ep, layout.microbatches, layout.schedule);
		struct rt_comm_opts co = { .kind = cuda ? RT_COMM_NCCL : RT_COMM_MPI,
					   .max_ctas = comm_sms,
					   .program = what, .program_len = strlen(what),
					   .arena_bytes = cuda ? gpu_arena_bytes(g, env.local_rank) : 0 };
		comm = rt_comm_init(&co, err, sizeof err);
		if (!comm) {
			fprintf(stderr, "sluice train: rank %d: %s\n", rank, err);
			goto done;
		}
		rank = rt_comm_rank(comm);
		gpu = cuda ? rt_comm_gpu(comm) : NULL;
	} else if (cuda) {
		gpu = own_gpu = rt_gpu_open(env.local_rank, gpu_arena_bytes(g, env.local_rank));
		if (!gpu)
			goto done;
	}
	int64_t arena = 0;
	if (rank == 0) {
		print_model(g, &c.flops_per_token, &arena);
		if (!strcmp(precision, "bf16"))
			fprintf(stderr, "precision: bf16 mixed precision (passes/bf16.c), %s; "
				"f32 master weights, gradients and AdamW states\n",
				cuda ? "bf16 values stored in 16 bits, products on tensor cores "
				       "accumulating in f32"
				     : "emulated on the CPU: bf16 values rounded to bf16 in f32 "
				       "buffers after every op");
	}
	/* DeepSeek-V3's FP8 recipe keeps AdamW's moments in bf16 */
	c.bf16_moments = !strcmp(precision, "fp8");
	if (rank == 0 && c.bf16_moments)
		fprintf(stderr, "precision: fp8 (passes/fp8.c): E4M3 products with 1x128 and "
			"128x128 scales, emulated on the CPU; f32 master weights and gradients, "
			"AdamW moments in bf16\n");
	if (!cuda && check_memory(o, g, arena, &c))
		goto done;
	if (cuda) {
#ifdef SLUICE_HAVE_CUDA
		cg_cuda_use_gpu(gpu);
#endif
		dev = rt_device_cuda_new(gpu, err, sizeof err);
		if (!dev) {
			fprintf(stderr, "sluice train: %s\n", err);
			goto done;
		}
		if (rank == 0)
			fprintf(stderr, "device: GPU %d (%s), %d rank%s\n", env.local_rank,
				rt_gpu_info(gpu)->name, world, world == 1 ? "" : "s");
	} else {
		dev = rt_device_host_new();
	}
	if (cg_assign_stages(g, &layout, stderr))
		goto done;
	c.zero_note = layout.zero;
	if (rank == 0) {
		fprintf(stderr, "compile: %s backend ...", be->name);
		fflush(stderr);
	}
	double t0 = rt_now();
	rt_timing("model figures (sluice check's)");
	if (world > 1 && world <= 64 && verify_programs(o->model, g, &layout, world))
		goto done;
	prog = cg_program_build(g, &layout, rank, be, stderr);
	if (!prog)
		goto done;
	rt_timing("program built, kernels compiled");
	int bad_alloc = rt_program_alloc(prog, dev, err, sizeof err);
	rt_timing("program's arena allocated");
	if (bad_alloc) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto done;
	}
	if (rank == 0) {
		fprintf(stderr, " %.1f s\n", rt_now() - t0);
		int64_t code = 0;
		for (int i = 0; i < prog->n_chunks; i++)
			if (prog->chunks[i].impl->arena_bytes)
				code += prog->chunks[i].impl->arena_bytes(prog->chunks[i].code);
		if (be->arena_bytes)
			fprintf(stderr, "arena: %.2f MiB (%" PRId64 " bytes) allocated in one block by "
				"the %s backend, as planned over its fused kernels ('sluice check': "
				"%s backend arena)\n", (double)code / (1024.0 * 1024.0), code,
				be->name, cuda ? "GPU" : "CPU");
	}
	x = rt_exec_new(prog, comm, err, sizeof err);
	if (!x) {
		fprintf(stderr, "sluice train: %s\n", err);
		goto done;
	}
	/* FIM (DeepSeek-V3's fill-in-the-middle) is applied per document when data is
	 * prepared: to the default text here; a shard given with --data has it or not */
	double fim = SETTING(g, 0, "fim");
	if (rt_fim_check(prog->vocab, fim, stderr))
		goto done;
	if (fim > 0 && o->data) {
		fprintf(stderr, "sluice train: %s: fim = %g applies when data is prepared: make the "
			"shard with 'sluice data --fim %g ...' and drop the setting, or train on the "
			"default text\n", o->model, fim, fim);
		goto done;
	}
	if (!o->data) {
		/* rank 0 prepares the default data on first use, the others then read it */
		int bad = rank == 0 && train_default_data(&def_train, &def_val, fim, c.seed, stderr);
		if (world > 1) {
			double v = bad;
			rt_exec_sum(x, prog->loss_group, &v, 1);
			bad = v > 0;
		}
		if (!bad && rank != 0) {
			FILE *quiet = fopen("/dev/null", "w");
			bad = train_default_data(&def_train, &def_val, fim, c.seed,
						 quiet ? quiet : stderr);
			if (quiet)
				fclose(quiet);
		}
		if (bad)
			goto done;
		c.data = def_train;
		c.val_data = o->val_data ? o->val_data : def_val;
	} else {
		c.data = o->data;
		c.val_data = o->val_data;
	}
	if (o->out)
		out_dir = rt_strdup(o->out);
	else if (o->resume && !ends_with(o->resume, ".safetensors"))
		out_dir = rt_strdup(o->resume);
	else {
		const char *m = g->model ? g->model : "model";
		out_dir = rt_malloc(strlen(m) + 8);
		sprintf(out_dir, "runs/%s", m);
	}
	c.out_dir = out_dir;
	struct rebuild rb = { .o = o, .be = be, .layout = &layout, .comm = comm, .dev = dev, .rank = rank,
			      .g = &g, .prog = &prog, .x = &x };
	c.rebuild = rebuild_program;
	c.retire = retire_program;
	c.rebuild_ctx = &rb;
	rc = rt_train(prog, x, &c) ? EXIT_INPUT : EXIT_OK;
	for (int i = 0; i < rb.n_old; i++)
		ir_graph_free(rb.old[i]);
	free(rb.old);
done:
	free((void *)layout.layer_stage);
	rt_exec_free(x);
	rt_program_free(prog);
	rt_device_free(dev);
	rt_gpu_close(own_gpu);
	if (comm)
		rt_comm_free(comm);
	free(def_train);
	free(def_val);
	free(out_dir);
	ir_graph_free(g);
	return rc;
}

/* --- the default data --------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *cache_dir(void)
{
	const char *env = getenv("SLUICE_CACHE_DIR");
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char buf[4096];
	if (env && *env)
		snprintf(buf, sizeof buf, "%s", env);
	else if (xdg && *xdg)
		snprintf(buf, sizeof buf, "%s/sluice", xdg);
	else if (home && *home)
		snprintf(buf, sizeof buf, "%s/.cache/sluice", home);
	else
		snprintf(buf, sizeof buf, "data");
	return rt_strdup(buf);
}

/* Append one file's fortunes to train or val: entries are separated by lines holding
 * "%"; every 20th entry goes to validation, so both see every topic.  The end of each
 * training fortune (a document, for FIM) goes to *ends. */
static void split_fortunes(const char *text, size_t len, int *counter, char **tr, size_t *ntr,
			   char **va, size_t *nva, size_t **ends, int *n_ends)
{
	size_t i = 0;
	while (i < len) {
		size_t start = i;
		/* an entry ends at a line that is just "%" */
		while (i < len) {
			size_t eol = i;
			while (eol < len && text[eol] != '\n')
				eol++;
			if (eol - i == 1 && text[i] == '%')
				break;
			i = eol < len ? eol + 1 : eol;
		}
		size_t end = i;
		while (i < len && text[i] != '\n')
			i++;
		if (i < len)
			i++;
		if (end == start)
			continue;
		int to_val = ++*counter % 20 == 0;
		char **dst = to_val ? va : tr;
		size_t *n = to_val ? nva : ntr;
		*dst = rt_realloc(*dst, *n + (end - start) + 1);
		memcpy(*dst + *n, text + start, end - start);
		*n += end - start;
		(*dst)[(*n)++] = '\n'; /* a blank line between fortunes */
		if (!to_val) {
			*ends = rt_realloc(*ends, sizeof **ends * (size_t)(*n_ends + 1));
			(*ends)[(*n_ends)++] = *n;
		}
	}
}

int train_default_data(char **train_path, char **val_path, double fim, uint64_t seed,
		       FILE *log)
{
	const char *src = getenv("SLUICE_FORTUNES_DIR");
	if (!src || !*src)
		src = "/usr/share/games/fortunes";
	char *dir = cache_dir();
	size_t n = strlen(dir) + 32;
	*train_path = rt_malloc(n);
	*val_path = rt_malloc(n);
	n += 64;
	*train_path = rt_realloc(*train_path, n);
	if (fim > 0)
		snprintf(*train_path, n, "%s/fortunes_train_fim%g_seed%" PRIu64 ".bin", dir, fim,
			 seed);
	else
		snprintf(*train_path, n, "%s/fortunes_train.bin", dir);
	snprintf(*val_path, n, "%s/fortunes_val.bin", dir);
	struct stat st;
	if (stat(*train_path, &st) == 0 && stat(*val_path, &st) == 0) {
		fprintf(log, "data: English text from Debian's fortunes, prepared in %s\n", dir);
		free(dir);
		return 0;
	}
	DIR *d = opendir(src);
	char **names = NULL;
	int nn = 0;
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			char p[4096];
			snprintf(p, sizeof p, "%s/%s", src, e->d_name);
			/* the text files: no .dat indexes, no .u8 links, no pictures */
			if (strchr(e->d_name, '.') || !strcmp(e->d_name, "art") ||
			    !strcmp(e->d_name, "ascii-art") || lstat(p, &st) || !S_ISREG(st.st_mode))
				continue;
			names = rt_realloc(names, sizeof *names * (size_t)(nn + 1));
			names[nn++] = rt_strdup(p);
		}
		closedir(d);
	}
	int rc = -1;
	if (!nn) {
		fprintf(log, "sluice train: no --data given, and no English text to train on in "
			"%s: install Debian's fortunes package (bash tools/setup.sh does) or pass "
			"--data SHARD (made by 'sluice data')\n", src);
		goto done;
	}
	qsort(names, (size_t)nn, sizeof *names, cmp_str);
	char *tr = NULL, *va = NULL;
	size_t ntr = 0, nva = 0, *ends = NULL;
	int counter = 0, n_ends = 0;
	for (int k = 0; k < nn; k++) {
		size_t len;
		char *text = rt_read_file(names[k], &len);
		if (!text)
			continue;
		split_fortunes(text, len, &counter, &tr, &ntr, &va, &nva, &ends, &n_ends);
		free(text);
	}
	fprintf(log, "data: no --data given: preparing English text from Debian's fortunes "
		"(%d files in %s, %.1f MB) into %s (first use only)\n", nn, src,
		(double)(ntr + nva) / 1e6, dir);
	if (rt_mkdir_p(dir)) {
		fprintf(log, "sluice train: cannot make %s: %s\n", dir, strerror(errno));
	} else if (ntr < 2 || nva < 2) {
		fprintf(log, "sluice train: %s holds too little text\n", src);
	} else if (!(fim > 0 ? train_write_fim_shards((unsigned char *)tr, ends, n_ends, fim, seed,
						      0.0, *train_path, NULL, log)
			     : train_write_text_shards((unsigned char *)tr, ntr, 0.0, *train_path,
						       NULL, log)) &&
		   !train_write_text_shards((unsigned char *)va, nva, 0.0, *val_path, NULL, log)) {
		rc = 0;
	}
	free(tr);
	free(va);
	free(ends);
done:
	for (int k = 0; k < nn; k++)
		free(names[k]);
	free(names);
	free(dir);
	if (rc) {
		free(*train_path);
		free(*val_path);
		*train_path = *val_path = NULL;
	}
	return rc;
}
