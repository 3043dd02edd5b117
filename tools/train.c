/* train.c - the training driver (see train.h).
 *
 * One step: sample a batch, run the compiled graph (forward and backward), read the
 * "loss" output and the "grad.P" output of every trainable parameter P, clip the
 * global gradient norm, take an AdamW step at the scheduled learning rate, then move
 * each MoE routing bias toward balance (DeepSeek-V3's auxiliary-loss-free balancing:
 * b_i += gamma * sign(mean load - load_i), from the graph output "load.<scope>").
 *
 * Resume is exact: a checkpoint holds the weights, both AdamW moments, the routing
 * biases, the step and the state of the sampling PRNG (the data position), so on the
 * CPU every later loss equals, bit for bit, the loss of a run that was never stopped.
 * The learning-rate schedule depends on the total step count, which the checkpoint
 * also keeps.
 *
 * Simplifications, on purpose: validation runs the training graph (forward and
 * backward) on fixed held-out windows and reads only its loss; the optimizer runs on
 * the host over fp32 arrays whatever the backend.
 */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codegen/backend.h"
#include "commands.h"
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "runtime/ckpt.h"
#include "runtime/data.h"
#include "runtime/metrics.h"
#include "runtime/optim.h"
#include "runtime/pool.h"
#include "runtime/progress.h"
#include "runtime/rt.h"

#define CKPT_FORMAT_VERSION "1"
#define CKPT_FILE "checkpoint.safetensors"

/* --- parameters ------------------------------------------------------------------ */

struct tparam {
	const struct ir_op *op;
	const char *path;
	int value_id;
	int rank;
	int64_t shape[IR_MAX_RANK];
	size_t n;
	float *w, *m, *v;       /* m, v: trainable parameters only */
	int trainable;
	int grad_id;            /* value id of "grad.P", trainable only */
	int decay;              /* weight decay: matrices and tables, not gains */
	/* routing bias: path "<scope>.gate.bias", attr trainable=0 */
	int load_id;            /* value id of "load.<scope>", -1 when none */
	const char *scope;
	float gamma;
};

struct trainer {
	const struct train_opts *o;
	struct ir_graph *g;
	const struct cg_backend *be;
	struct cg_exec *ex;
	int n_params;
	struct tparam *p;
	int n_biases;           /* routing biases that move toward balance */
	int loss_id, tokens_id, targets_id;
	int lm_id;              /* the main next-token cross-entropy (nats per token) */
	int batch, seq, vocab;
	int32_t *tokens, *targets;
	struct rt_shard train, val;
	struct rt_rng rng;      /* batch sampling: the data position */
	uint64_t seed;
	int64_t step;           /* steps done */
	int64_t total;
	struct rt_adamw adamw;
	struct rt_schedule sched;
	float clip;
	int64_t eval_every, ckpt_every;
	int val_batches;
	char *out_dir;
	char config_hash[20];
	double flops_per_token;
	float **grads;
	size_t *grad_n;
	double load_ratio;      /* last step: max/mean expert load, averaged over layers */
	int64_t arena_peak;     /* bytes pass_memplan plans for the step's values */
	struct rt_pool *pool;   /* the optimizer's threads */
};

static volatile sig_atomic_t interrupted;

/* CPU seconds of the process, all threads: on a shared machine, what a step costs */
static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
	/* a second Ctrl-C ends the process at once */
	signal(SIGINT, SIG_DFL);
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

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* the value a chain of one-input ops starts from: an INPUT's output, or NULL */
static const struct ir_op *source_input(const struct ir_value *v)
{
	for (int hops = 0; v && v->def && hops < 64; hops++) {
		const struct ir_op *op = v->def;
		if (op->kind == IR_OP_INPUT)
			return op;
		if (op->n_in < 1)
			return NULL;
		v = op->in[0];
	}
	return NULL;
}

static int find_output(const struct ir_graph *g, const char *name)
{
	struct ir_value *v = ir_graph_output(g, name);
	return v ? v->id : -1;
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

/* Collect parameters, inputs, outputs; 0 or -1 with a message. */
static int inspect_graph(struct trainer *t)
{
	struct ir_graph *g = t->g;
	t->loss_id = find_output(g, "loss");
	if (t->loss_id < 0) {
		fprintf(stderr, "sluice train: %s: the model has no 'loss' output: nothing to "
			"train\n", t->o->model);
		return -1;
	}
	t->lm_id = find_output(g, "lm_loss");
	if (t->lm_id < 0)
		t->lm_id = t->loss_id;
	const struct ir_value *lv = g->values[t->loss_id];
	if (ir_shape_numel(&lv->shape) != 1 || !ir_dtype_is_float(lv->dtype)) {
		fprintf(stderr, "sluice train: %s: 'loss' must be a float scalar\n", t->o->model);
		return -1;
	}
	t->tokens_id = t->targets_id = -1;
	t->p = rt_calloc((size_t)g->n_ops, sizeof *t->p);
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT) {
			const char *name = ir_op_str(op, "name", "");
			const struct ir_value *v = op->out[0];
			int is_tok = !strcmp(name, "tokens"), is_tgt = !strcmp(name, "targets");
			if (!is_tok && !is_tgt) {
				fprintf(stderr, "sluice train: %s: graph input '%s': sluice train feeds "
					"only 'tokens' and 'targets'\n", t->o->model, name);
				return -1;
			}
			if (v->dtype != IR_I32 || v->shape.rank != 2) {
				char s[64];
				fprintf(stderr, "sluice train: %s: graph input '%s' is %s%s; sluice "
					"train feeds i32[batch, seq]\n", t->o->model, name,
					ir_dtype_name(v->dtype), ir_shape_str(&v->shape, s, sizeof s));
				return -1;
			}
			*(is_tok ? &t->tokens_id : &t->targets_id) = v->id;
			t->batch = (int)v->shape.dim[0];
			t->seq = (int)v->shape.dim[1];
			continue;
		}
		if (op->kind != IR_OP_PARAM)
			continue;
		struct tparam *p = &t->p[t->n_params++];
		const struct ir_value *v = op->out[0];
		p->op = op;
		p->path = op->path ? op->path : ir_sprintf(g->arena, "param%d", v->id);
		p->value_id = v->id;
		p->rank = v->shape.rank;
		memcpy(p->shape, v->shape.dim, sizeof p->shape);
		p->n = (size_t)ir_shape_numel(&v->shape);
		p->trainable = ir_op_int(op, "trainable", 1) != 0;
		p->decay = p->rank >= 2;
		p->grad_id = p->load_id = -1;
		if (!ir_dtype_is_float(v->dtype)) {
			fprintf(stderr, "sluice train: parameter %s is %s, not a float\n", p->path,
				ir_dtype_name(v->dtype));
			return -1;
		}
		if (p->trainable) {
			char *gname = ir_sprintf(g->arena, "grad.%s", p->path);
			p->grad_id = find_output(g, gname);
			if (p->grad_id < 0) {
				fprintf(stderr, "sluice train: no gradient output '%s' for parameter %s "
					"(autodiff should make one; this is a bug in sluice)\n", gname,
					p->path);
				return -1;
			}
		} else if (ends_with(p->path, ".gate.bias")) {
			p->scope = ir_strndup(g->arena, p->path, strlen(p->path) - strlen(".gate.bias"));
			p->load_id = find_output(g, ir_sprintf(g->arena, "load.%s", p->scope));
			p->gamma = (float)ir_op_float(op, "gamma", 0.001);
			if (p->load_id < 0) {
				fprintf(stderr, "sluice train: warning: routing bias %s has no graph output "
					"'load.%s': it stays fixed\n", p->path, p->scope);
			} else {
				const struct ir_value *lo = g->values[p->load_id];
				int64_t ln = ir_shape_numel(&lo->shape);
				if (ln <= 0 || ln % (int64_t)p->n || !ir_dtype_is_float(lo->dtype)) {
					fprintf(stderr, "sluice train: load.%s has %" PRId64 " elements, not "
						"a multiple of the %zu experts of %s\n", p->scope, ln, p->n,
						p->path);
					return -1;
				}
				t->n_biases++;
			}
		}
	}
	if (t->tokens_id < 0 || t->targets_id < 0) {
		fprintf(stderr, "sluice train: %s: the graph needs inputs 'tokens' and 'targets' "
			"(i32[batch, seq])\n", t->o->model);
		return -1;
	}
	if (ir_shape_numel(&g->values[t->tokens_id]->shape) !=
	    ir_shape_numel(&g->values[t->targets_id]->shape)) {
		fprintf(stderr, "sluice train: %s: 'tokens' and 'targets' differ in shape\n",
			t->o->model);
		return -1;
	}
	/* the vocabulary: rows of the tables the tokens index, classes of the losses */
	t->vocab = 65536;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_GATHER_ROWS && source_input(op->in[1]) &&
		    op->in[0]->shape.dim[0] < t->vocab)
			t->vocab = (int)op->in[0]->shape.dim[0];
		if (op->kind == IR_OP_CROSS_ENTROPY && source_input(op->in[1])) {
			const struct ir_shape *s = &op->in[0]->shape;
			if (s->dim[s->rank - 1] < t->vocab)
				t->vocab = (int)s->dim[s->rank - 1];
		}
	}
	/* the hash that ties a checkpoint to the model: name, parameter paths and shapes */
	uint64_t h = 0xcbf29ce484222325ull;
	h = fnv1a(h, g->model ? g->model : "", strlen(g->model ? g->model : ""));
	for (int k = 0; k < t->n_params; k++) {
		const struct tparam *p = &t->p[k];
		h = fnv1a(h, p->path, strlen(p->path) + 1);
		h = fnv1a(h, &p->rank, sizeof p->rank);
		h = fnv1a(h, p->shape, sizeof p->shape[0] * (size_t)p->rank);
	}
	snprintf(t->config_hash, sizeof t->config_hash, "%016" PRIx64, h);
	return 0;
}

/* Initial values from the PARAM's attributes; each parameter draws from its own
 * stream (seed and path), so adding a parameter does not change the others. */
static void init_params(struct trainer *t)
{
	for (int k = 0; k < t->n_params; k++) {
		struct tparam *p = &t->p[k];
		p->w = rt_calloc(p->n, sizeof *p->w);
		if (p->trainable) {
			p->m = rt_calloc(p->n, sizeof *p->m);
			p->v = rt_calloc(p->n, sizeof *p->v);
		}
		const char *init = ir_op_str(p->op, "init", "normal");
		double std = ir_op_float(p->op, "std", 0.02);
		int64_t fan_in = ir_op_int(p->op, "fan_in", 0);
		struct rt_rng r;
		rt_rng_seed(&r, fnv1a(t->seed * 0x9e3779b97f4a7c15ull + 1, p->path, strlen(p->path)));
		if (!strcmp(init, "zeros"))
			continue;
		for (size_t i = 0; i < p->n; i++) {
			if (!strcmp(init, "ones")) {
				p->w[i] = 1.0f;
			} else if (!strcmp(init, "uniform")) {
				double b = ir_op_attr(p->op, "std") || fan_in <= 0 ? std
									   : 1.0 / sqrt((double)fan_in);
				p->w[i] = (float)((2.0 * rt_rng_uniform(&r) - 1.0) * b);
			} else {
				p->w[i] = (float)(std * rt_rng_normal(&r));
			}
		}
	}
}

/* --- checkpoints ------------------------------------------------------------------ */

static char *ckpt_path(const char *dir_or_file)
{
	struct stat st;
	if (ends_with(dir_or_file, ".safetensors") ||
	    (stat(dir_or_file, &st) == 0 && S_ISREG(st.st_mode)))
		return rt_strdup(dir_or_file);
	size_t n = strlen(dir_or_file) + sizeof CKPT_FILE + 2;
	char *s = rt_malloc(n);
	snprintf(s, n, "%s/%s", dir_or_file, CKPT_FILE);
	return s;
}

static int save_checkpoint(struct trainer *t)
{
	if (rt_mkdir_p(t->out_dir)) {
		fprintf(stderr, "sluice train: cannot make the checkpoint directory %s: %s\n",
			t->out_dir, strerror(errno));
		return -1;
	}
	int cap = 3 * t->n_params + 1, n = 0;
	struct rt_ckpt_tensor *ts = rt_calloc((size_t)cap, sizeof *ts);
	char **names = rt_calloc((size_t)cap, sizeof *names);
	for (int k = 0; k < t->n_params; k++) {
		const struct tparam *p = &t->p[k];
		const float *data[3] = { p->w, p->m, p->v };
		const char *prefix[3] = { "", "adamw.m.", "adamw.v." };
		for (int j = 0; j < (p->trainable ? 3 : 1); j++) {
			size_t len = strlen(prefix[j]) + strlen(p->path) + 1;
			names[n] = rt_malloc(len);
			snprintf(names[n], len, "%s%s", prefix[j], p->path);
			ts[n] = (struct rt_ckpt_tensor){ .name = names[n], .dtype = RT_CKPT_F32,
							 .rank = p->rank, .data = data[j] };
			memcpy(ts[n].shape, p->shape, sizeof p->shape[0] * (size_t)p->rank);
			n++;
		}
	}
	ts[n++] = (struct rt_ckpt_tensor){ .name = "rng.state", .dtype = RT_CKPT_U64, .rank = 1,
					   .shape = { 1 }, .data = &t->rng.s };
	char step[32], total[32], seed[32];
	snprintf(step, sizeof step, "%" PRId64, t->step);
	snprintf(total, sizeof total, "%" PRId64, t->total);
	snprintf(seed, sizeof seed, "%" PRIu64, t->seed);
	struct rt_ckpt_meta meta[] = {
		{ "format", "sluice" },
		{ "format_version", CKPT_FORMAT_VERSION },
		{ "model", t->g->model ? t->g->model : "" },
		{ "config_hash", t->config_hash },
		{ "step", step },
		{ "total_steps", total },
		{ "seed", seed },
	};
	char *path = ckpt_path(t->out_dir);
	int rc = rt_ckpt_write(path, ts, n, meta, (int)(sizeof meta / sizeof meta[0]), stderr);
	for (int k = 0; k < n; k++)
		free(names[k]);
	free(names);
	free(ts);
	free(path);
	return rc;
}

static int parse_i64(const char *s, int64_t *out)
{
	if (!s || !*s)
		return 0;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (*end || errno || v < 0)
		return 0;
	*out = v;
	return 1;
}

static int load_checkpoint(struct trainer *t, const char *where)
{
	char *path = ckpt_path(where);
	struct rt_ckpt *c = rt_ckpt_read(path, stderr);
	int rc = -1;
	if (!c)
		goto done;
	const char *fmt = rt_ckpt_meta_get(c, "format");
	const char *ver = rt_ckpt_meta_get(c, "format_version");
	const char *hash = rt_ckpt_meta_get(c, "config_hash");
	const char *model = rt_ckpt_meta_get(c, "model");
	int64_t step, total, seed;
	if (!fmt || strcmp(fmt, "sluice") || !ver) {
		fprintf(stderr, "sluice train: %s: not a sluice training checkpoint (no "
			"format/format_version metadata)\n", path);
		goto done;
	}
	if (strcmp(ver, CKPT_FORMAT_VERSION)) {
		fprintf(stderr, "sluice train: %s: checkpoint format version %s; this sluice reads "
			"version %s\n", path, ver, CKPT_FORMAT_VERSION);
		goto done;
	}
	if (!hash || strcmp(hash, t->config_hash)) {
		fprintf(stderr, "sluice train: %s: the checkpoint is of model '%s' with another "
			"configuration (config hash %s, this model %s '%s'): parameters differ\n",
			path, model ? model : "?", hash ? hash : "none", t->config_hash,
			t->g->model ? t->g->model : "");
		/* go on: the tensor checks below name the first parameter that differs */
	}
	if (!parse_i64(rt_ckpt_meta_get(c, "step"), &step) ||
	    !parse_i64(rt_ckpt_meta_get(c, "total_steps"), &total) ||
	    !parse_i64(rt_ckpt_meta_get(c, "seed"), &seed)) {
		fprintf(stderr, "sluice train: %s: step, total_steps or seed metadata missing or "
			"malformed\n", path);
		goto done;
	}
	for (int k = 0; k < t->n_params; k++) {
		struct tparam *p = &t->p[k];
		if (rt_ckpt_load(c, p->path, RT_CKPT_F32, p->rank, p->shape, p->w, stderr))
			goto done;
		if (!p->trainable)
			continue;
		char name[512];
		snprintf(name, sizeof name, "adamw.m.%s", p->path);
		if (rt_ckpt_load(c, name, RT_CKPT_F32, p->rank, p->shape, p->m, stderr))
			goto done;
		snprintf(name, sizeof name, "adamw.v.%s", p->path);
		if (rt_ckpt_load(c, name, RT_CKPT_F32, p->rank, p->shape, p->v, stderr))
			goto done;
	}
	int64_t one = 1;
	if (rt_ckpt_load(c, "rng.state", RT_CKPT_U64, 1, &one, &t->rng.s, stderr))
		goto done;
	if (hash && strcmp(hash, t->config_hash))
		goto done;
	t->step = step;
	t->seed = (uint64_t)seed;
	if (t->o->steps < 0)
		t->total = total;
	else if (t->o->steps != total)
		fprintf(stderr, "sluice train: note: the checkpoint was made for %" PRId64 " steps, "
			"now %" PRId64 ": the learning-rate schedule changes, so losses will differ "
			"from an uninterrupted run\n", total, t->o->steps);
	rc = 0;
done:
	rt_ckpt_free(c);
	free(path);
	return rc;
}

/* --- data ---------------------------------------------------------------------- */

static int load_data(struct trainer *t)
{
	char *def_train = NULL, *def_val = NULL;
	const char *train = t->o->data, *val = t->o->val_data;
	int rc = -1;
	if (!train) {
		if (train_default_data(&def_train, &def_val, stderr))
			return -1;
		train = def_train;
		if (!val)
			val = def_val;
	}
	if (rt_shard_read(train, t->vocab, &t->train, stderr))
		goto done;
	if (val) {
		if (rt_shard_read(val, t->vocab, &t->val, stderr))
			goto done;
	} else {
		/* hold out the last tenth of the training shard */
		int64_t nv = t->train.n / 10;
		if (nv >= (int64_t)t->seq + 1 && t->train.n - nv >= (int64_t)t->seq + 1) {
			t->val.n = nv;
			t->val.tok = rt_malloc(2 * (size_t)nv);
			memcpy(t->val.tok, t->train.tok + t->train.n - nv, 2 * (size_t)nv);
			t->train.n -= nv;
			fprintf(stderr, "data: %s: %" PRId64 " tokens for training, the last %" PRId64
				" held out for validation\n", train, t->train.n, nv);
		}
	}
	if (t->train.n < (int64_t)t->seq + 1) {
		fprintf(stderr, "sluice train: %s: %" PRId64 " tokens, fewer than one window of "
			"seq + 1 = %d\n", train, t->train.n, t->seq + 1);
		goto done;
	}
	if (t->val.n && t->val.n < (int64_t)t->seq + 1) {
		fprintf(stderr, "sluice train: %s: %" PRId64 " validation tokens, fewer than one "
			"window of seq + 1 = %d\n", val, t->val.n, t->seq + 1);
		goto done;
	}
	if (!t->val.n)
		fprintf(stderr, "data: %s is too small to hold out validation data: no val_loss\n",
			train);
	rc = 0;
done:
	free(def_train);
	free(def_val);
	return rc;
}

/* --- the step ------------------------------------------------------------------ */

static int run_graph(struct trainer *t, float *loss, float *lm)
{
	if (t->be->run(t->ex)) {
		fprintf(stderr, "sluice train: the %s backend failed to run the step\n",
			t->be->name);
		return -1;
	}
	float *l = t->be->tensor(t->ex, t->loss_id);
	float *m = t->be->tensor(t->ex, t->lm_id);
	RT_ASSERT(l && m);
	*loss = *l;
	*lm = *m;
	return 0;
}

static int eval_val(struct trainer *t, double *val_loss)
{
	double sum = 0.0;
	for (int k = 0; k < t->val_batches; k++) {
		rt_batch_eval(&t->val, k, t->val_batches, t->batch, t->seq, t->tokens, t->targets);
		float l, lm;
		if (run_graph(t, &l, &lm))
			return -1;
		sum += lm;
	}
	*val_loss = sum / t->val_batches;
	return 0;
}

/* Routing biases toward balance; records max/mean load per layer. */
static void balance_biases(struct trainer *t, struct rt_metrics *mx)
{
	double ratio_sum = 0.0;
	for (int k = 0; k < t->n_params; k++) {
		struct tparam *p = &t->p[k];
		if (p->load_id < 0)
			continue;
		const float *load = t->be->tensor(t->ex, p->load_id);
		RT_ASSERT(load);
		size_t e = p->n;
		size_t rows = (size_t)ir_shape_numel(&t->g->values[p->load_id]->shape) / e;
		double *per = rt_calloc(e, sizeof *per);
		double sum = 0.0, mx_load = 0.0;
		for (size_t r = 0; r < rows; r++)
			for (size_t i = 0; i < e; i++)
				per[i] += load[r * e + i];
		for (size_t i = 0; i < e; i++) {
			sum += per[i];
			if (per[i] > mx_load)
				mx_load = per[i];
		}
		double mean = sum / (double)e;
		for (size_t i = 0; i < e; i++) {
			float s = per[i] < mean ? 1.0f : per[i] > mean ? -1.0f : 0.0f;
			p->w[i] += p->gamma * s;
		}
		double ratio = mean > 0 ? mx_load / mean : 0.0;
		ratio_sum += ratio;
		if (mx)
			rt_metrics_sub_num(mx, "expert_load_max_over_mean", p->scope, ratio);
		free(per);
	}
	t->load_ratio = t->n_biases ? ratio_sum / t->n_biases : 0.0;
}

static int step_once(struct trainer *t, float *loss, float *lm, float *lr, double *gnorm)
{
	rt_batch_sample(&t->train, &t->rng, t->batch, t->seq, t->tokens, t->targets);
	if (run_graph(t, loss, lm))
		return -1;
	if (!isfinite(*loss)) {
		fprintf(stderr, "\nsluice train: the loss is %f at step %" PRId64 ": training "
			"diverged (try a lower learning rate: --set lr=...)\n", (double)*loss,
			t->step + 1);
		return -1;
	}
	int ng = 0;
	for (int k = 0; k < t->n_params; k++) {
		struct tparam *p = &t->p[k];
		if (!p->trainable)
			continue;
		t->grads[ng] = t->be->tensor(t->ex, p->grad_id);
		RT_ASSERT(t->grads[ng]);
		t->grad_n[ng++] = p->n;
	}
	*gnorm = rt_grad_norm(t->pool, t->grads, t->grad_n, ng);
	float scale = rt_clip_scale(*gnorm, t->clip);
	*lr = rt_schedule_lr(&t->sched, t->step);
	ng = 0;
	for (int k = 0; k < t->n_params; k++) {
		struct tparam *p = &t->p[k];
		if (p->trainable)
			rt_adamw_step(t->pool, &t->adamw, *lr, t->step + 1, p->w, t->grads[ng++], p->m, p->v,
				      p->n, scale, p->decay);
	}
	return 0;
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

static void print_model(struct trainer *t)
{
	int64_t n_total = 0, n_train = 0;
	for (int k = 0; k < t->n_params; k++) {
		n_total += (int64_t)t->p[k].n;
		if (t->p[k].trainable)
			n_train += (int64_t)t->p[k].n;
	}
	fprintf(stderr, "model: %s, %d parameter tensors, %.3f%s trainable parameters%s\n",
		t->g->model ? t->g->model : "?", t->n_params,
		(double)n_train / (n_train >= 1000000000 ? 1e9 : 1e6),
		n_train >= 1000000000 ? "B" : "M", n_total != n_train ? " (+ routing biases)" : "");
	struct pass_account acc;
	if (pass_account(t->g, &acc) == 0) {
		t->flops_per_token = acc.flops_per_token;
		fprintf(stderr, "model: %.2f MFLOP per token (forward + backward)\n",
			acc.flops_per_token / 1e6);
		pass_account_free(&acc);
	}
	struct pass_memplan mp;
	if (pass_memplan(t->g, 64, &mp) == 0) {
		fprintf(stderr, "arena: %.2f MiB planned over the IR's values (sluice check's figure)\n",
			(double)mp.peak / (1024.0 * 1024.0));
		t->arena_peak = mp.peak;
		pass_memplan_free(&mp);
	}
}

static void print_train(const struct trainer *t)
{
	fprintf(stderr, "train: batch %d x seq %d = %d tokens a step, %" PRId64 " steps, "
		"lr %g (warm-up %" PRId64 ", cosine to %g), wd %g, clip %g, backend %s, seed %"
		PRIu64 "\n", t->batch, t->seq, t->batch * t->seq, t->total, (double)t->sched.lr_max,
		t->sched.warmup, (double)t->sched.lr_min, (double)t->adamw.weight_decay,
		(double)t->clip, t->be->name, t->seed);
}

/* Weights, gradients and both moments are 16 bytes a parameter on the host, plus the
 * planned arena: refuse a model that cannot fit rather than die allocating it. */
static int check_memory(const struct trainer *t)
{
	double need = (double)t->arena_peak;
	for (int k = 0; k < t->n_params; k++)
		need += (double)t->p[k].n * (t->p[k].trainable ? 16.0 : 4.0);
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	double have = pages > 0 && psize > 0 ? (double)pages * (double)psize : 0.0;
	if (have > 0.0 && need > have) {
		fprintf(stderr, "sluice train: %s needs %.1f GiB for its weights, gradients, "
			"AdamW moments and activations; this machine has %.1f GiB: train a smaller "
			"configuration (--set) or on GPUs\n", t->o->model, need / 1073741824.0,
			have / 1073741824.0);
		return -1;
	}
	return 0;
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
		char *end;
		double v = strtod(o->over.v[i].value, &end);
		if (*end) {
			fprintf(stderr, "sluice train: --set %s=%s: a textual IR model takes numeric "
				"train settings only\n", o->over.v[i].name, o->over.v[i].value);
			ir_graph_free(g);
			return NULL;
		}
		ir_graph_set(g, o->over.v[i].name, v, NULL);
	}
	return g;
}

static int setup(struct trainer *t)
{
	const struct train_opts *o = t->o;
	if (o->device && strcmp(o->device, "cpu")) {
		if (!strcmp(o->device, "cuda"))
			fprintf(stderr, "sluice train: --device cuda: this sluice has no CUDA backend "
				"for training yet; use --device cpu\n");
		else
			fprintf(stderr, "sluice train: unknown device '%s' (cpu or cuda)\n",
				o->device);
		return -1;
	}
	t->be = pick_backend(o->backend);
	if (!t->be)
		return -1;
	t->g = compile_model(o);
	if (!t->g)
		return -1;
	struct ir_graph *g = t->g;
	/* settings before the passes add their outputs; the train section's names */
	t->total = o->steps >= 0 ? o->steps : (int64_t)SETTING(g, 1000, "steps");
	float lr = (float)SETTING(g, 1e-3, "lr", "optimizer.lr", "adamw.lr");
	t->sched.lr_max = lr;
	t->sched.lr_min = (float)SETTING(g, lr * 0.1, "min_lr", "lr_min");
	t->sched.warmup = (int64_t)SETTING(g, 0, "warmup");
	t->adamw.beta1 = (float)SETTING(g, 0.9, "beta1", "optimizer.beta1", "adamw.beta1");
	t->adamw.beta2 = (float)SETTING(g, 0.95, "beta2", "optimizer.beta2", "adamw.beta2");
	t->adamw.eps = (float)SETTING(g, 1e-8, "eps", "optimizer.eps", "adamw.eps");
	t->adamw.weight_decay = (float)SETTING(g, 0.1, "wd", "weight_decay", "optimizer.wd",
					       "adamw.wd");
	t->clip = (float)SETTING(g, 1.0, "clip", "grad_clip");
	t->val_batches = (int)SETTING(g, 4, "val_batches");
	t->seed = o->has_seed ? o->seed : (uint64_t)SETTING(g, 1337, "seed");
	if (t->total < 1 || t->val_batches < 1 || !(lr > 0)) {
		fprintf(stderr, "sluice train: steps, val_batches and lr must be positive\n");
		return -1;
	}
	mark_lm_loss(g);
	if (pass_pipeline_run(g, NULL, stderr))
		return -1;
	if (inspect_graph(t))
		return -1;
	print_model(t);
	if (check_memory(t))
		return -1;
	fprintf(stderr, "compile: %s backend ...", t->be->name);
	fflush(stderr);
	double t0 = rt_now();
	t->ex = t->be->compile(g, stderr);
	if (!t->ex)
		return -1;
	fprintf(stderr, " %.1f s\n", rt_now() - t0);
	if (t->be->arena_bytes)
		fprintf(stderr, "arena: %.2f MiB (%" PRId64 " bytes) allocated in one block by the "
			"%s backend, as planned over its fused kernels ('sluice check': CPU "
			"backend arena)\n",
			(double)t->be->arena_bytes(t->ex) / (1024.0 * 1024.0),
			t->be->arena_bytes(t->ex), t->be->name);
	init_params(t);
	rt_rng_seed(&t->rng, t->seed);
	if (o->resume && load_checkpoint(t, o->resume))
		return -1;
	if (t->sched.warmup >= t->total)
		t->sched.warmup = t->total / 10;
	t->sched.total = t->total;
	t->eval_every = o->eval_every > 0 ? o->eval_every : (t->total >= 10 ? t->total / 10 : t->total);
	t->ckpt_every = o->ckpt_every > 0 ? o->ckpt_every : 500;
	if (o->out)
		t->out_dir = rt_strdup(o->out);
	else if (o->resume && !ends_with(o->resume, ".safetensors"))
		t->out_dir = rt_strdup(o->resume);
	else {
		const char *m = g->model ? g->model : "model";
		t->out_dir = rt_malloc(strlen(m) + 8);
		sprintf(t->out_dir, "runs/%s", m);
	}
	if (load_data(t))
		return -1;
	size_t bt = (size_t)t->batch * (size_t)t->seq;
	t->tokens = rt_calloc(bt, sizeof *t->tokens);
	t->targets = rt_calloc(bt, sizeof *t->targets);
	t->be->bind(t->ex, t->tokens_id, t->tokens);
	t->be->bind(t->ex, t->targets_id, t->targets);
	for (int k = 0; k < t->n_params; k++)
		t->be->bind(t->ex, t->p[k].value_id, t->p[k].w);
	/* the optimizer's own threads: gradient norm and AdamW split over the cores */
	t->pool = rt_pool_new(0);
	t->grads = rt_calloc((size_t)t->n_params + 1, sizeof *t->grads);
	t->grad_n = rt_calloc((size_t)t->n_params + 1, sizeof *t->grad_n);
	print_train(t);
	if (o->resume)
		fprintf(stderr, "resume: from %s at step %" PRId64 " of %" PRId64 "\n", o->resume,
			t->step, t->total);
	return 0;
}

static void teardown(struct trainer *t)
{
	if (t->ex)
		t->be->free(t->ex);
	for (int k = 0; k < t->n_params; k++) {
		free(t->p[k].w);
		free(t->p[k].m);
		free(t->p[k].v);
	}
	free(t->p);
	free(t->tokens);
	free(t->targets);
	free(t->grads);
	free(t->grad_n);
	if (t->pool)
		rt_pool_free(t->pool);
	free(t->out_dir);
	rt_shard_free(&t->train);
	rt_shard_free(&t->val);
	if (t->g)
		ir_graph_free(t->g);
}

int train_run(const struct train_opts *o)
{
	struct trainer t = { .o = o };
	struct rt_metrics *mx = NULL;
	int rc = EXIT_INPUT;
	interrupted = 0;
	if (setup(&t))
		goto done;
	if (o->metrics && !(mx = rt_metrics_open(o->metrics, o->resume != NULL, stderr)))
		goto done;
	if (t.step >= t.total) {
		fprintf(stderr, "train: the checkpoint is at step %" PRId64 " of %" PRId64
			": nothing left to do (--steps N to train longer)\n", t.step, t.total);
		rc = EXIT_OK;
		goto done;
	}
	if (o->stop_at >= 0 && t.step >= o->stop_at) {
		fprintf(stderr, "train: the checkpoint is at step %" PRId64 ", past --stop-at %"
			PRId64 ": nothing to do\n", t.step, o->stop_at);
		rc = EXIT_OK;
		goto done;
	}
	struct sigaction sa = { .sa_handler = on_sigint }, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);
	struct rt_progress pg;
	rt_progress_init(&pg, stderr, t.total, o->quiet ? 0 : -1);
	if (o->quiet)
		pg.every = INT64_MAX;
	int64_t first = t.step;
	double t0 = rt_now(), c0 = cpu_now(), tokens = (double)t.batch * t.seq;
	int saved = 0;
	while (t.step < t.total) {
		double ts = rt_now();
		float loss, lm, lr;
		double gnorm;
		if (step_once(&t, &loss, &lm, &lr, &gnorm))
			goto restore;
		if (mx) {
			rt_metrics_begin(mx);
			rt_metrics_num(mx, "step", (double)t.step + 1);
			rt_metrics_num(mx, "loss", loss);
			if (t.lm_id != t.loss_id)
				rt_metrics_num(mx, "lm_loss", lm);
			rt_metrics_num(mx, "lr", lr);
			rt_metrics_num(mx, "grad_norm", gnorm);
		}
		balance_biases(&t, mx);
		t.step++;
		double now = rt_now(), dt = now - ts;
		double tps = tokens / dt;
		double eta = (now - t0) / (double)(t.step - first) * (double)(t.total - t.step);
		double val = NAN;
		if (t.val.n && (t.step % t.eval_every == 0 || t.step == t.total)) {
			if (eval_val(&t, &val))
				goto restore;
			char lr_s[64] = "";
			if (t.n_biases)
				snprintf(lr_s, sizeof lr_s, ", expert load max/mean %.2f", t.load_ratio);
			rt_progress_note(&pg, "step %" PRId64 ": val_loss %.4f (train %.4f%s)",
					 t.step, val, (double)lm, lr_s);
		}
		if (mx) {
			rt_metrics_num(mx, "tokens_per_s", tps);
			if (t.flops_per_token > 0)
				rt_metrics_num(mx, "gflops", tps * t.flops_per_token / 1e9);
			if (!isnan(val))
				rt_metrics_num(mx, "val_loss", val);
			rt_metrics_num(mx, "time_s", now - t0);
			rt_metrics_num(mx, "cpu_s", cpu_now() - c0);
			if (rt_metrics_end(mx))
				fprintf(stderr, "sluice train: warning: writing %s failed\n", o->metrics);
		}
		if (!o->quiet)
			rt_progress_step(&pg, t.step, loss, t.lm_id != t.loss_id ? (double)lm : NAN,
					 tokens * (double)(t.step - first) / (now - t0), eta);
		int stop = interrupted || (o->stop_at >= 0 && t.step >= o->stop_at);
		if (stop || t.step % t.ckpt_every == 0 || t.step == t.total) {
			if (save_checkpoint(&t))
				goto restore;
			saved = 1;
		}
		if (stop) {
			rt_progress_done(&pg);
			fprintf(stderr, "%s after step %" PRId64 " of %" PRId64 ": checkpoint saved in "
				"%s/%s\ncontinue with: sluice train %s --resume %s\n",
				interrupted ? "interrupted" : "stopped", t.step, t.total, t.out_dir,
				CKPT_FILE, o->model, t.out_dir);
			rc = EXIT_OK;
			goto restore;
		}
	}
	rt_progress_done(&pg);
	double el = rt_now() - t0;
	fprintf(stderr, "done: %" PRId64 " steps in %.1f s, %.0f tokens/s%s%s/%s\n",
		t.step - first, el, tokens * (double)(t.step - first) / el,
		saved ? ", checkpoint " : "", saved ? t.out_dir : "", saved ? CKPT_FILE : "");
	rc = EXIT_OK;
restore:
	sigaction(SIGINT, &old, NULL);
done:
	rt_metrics_close(mx);
	teardown(&t);
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
 * "%"; every 20th entry goes to validation, so both see every topic. */
static void split_fortunes(const char *text, size_t len, int *counter, char **tr, size_t *ntr,
			   char **va, size_t *nva)
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
	}
}

int train_default_data(char **train_path, char **val_path, FILE *log)
{
	const char *src = getenv("SLUICE_FORTUNES_DIR");
	if (!src || !*src)
		src = "/usr/share/games/fortunes";
	char *dir = cache_dir();
	size_t n = strlen(dir) + 32;
	*train_path = rt_malloc(n);
	*val_path = rt_malloc(n);
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
	size_t ntr = 0, nva = 0;
	int counter = 0;
	for (int k = 0; k < nn; k++) {
		size_t len;
		char *text = rt_read_file(names[k], &len);
		if (!text)
			continue;
		split_fortunes(text, len, &counter, &tr, &ntr, &va, &nva);
		free(text);
	}
	fprintf(log, "data: no --data given: preparing English text from Debian's fortunes "
		"(%d files in %s, %.1f MB) into %s (first use only)\n", nn, src,
		(double)(ntr + nva) / 1e6, dir);
	if (rt_mkdir_p(dir)) {
		fprintf(log, "sluice train: cannot make %s: %s\n", dir, strerror(errno));
	} else if (ntr < 2 || nva < 2) {
		fprintf(log, "sluice train: %s holds too little text\n", src);
	} else if (!train_write_text_shards((unsigned char *)tr, ntr, 0.0, *train_path, NULL, log) &&
		   !train_write_text_shards((unsigned char *)va, nva, 0.0, *val_path, NULL, log)) {
		rc = 0;
	}
	free(tr);
	free(va);
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
