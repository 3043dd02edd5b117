/* engine.c - the training engine (see engine.h).
 *
 * One step: sample the global batch and put this rank's micro-batches in their
 * slots; run the program (forward and backward of every micro-batch, gradients summed
 * over micro-batches and over the ranks that hold the same parameter); scale the
 * gradients to the mean over the global batch; clip the global gradient norm (every
 * parameter counted once, by its owner rank); AdamW at the scheduled learning rate;
 * then move each MoE routing bias toward balance (DeepSeek-V3's auxiliary-loss-free
 * balancing: b_i += gamma * sign(mean load - load_i), the loads summed over the
 * micro-batches and the data-parallel ranks, so every rank moves its biases alike).
 *
 * Resume is exact: a checkpoint holds the weights, both AdamW moments, the routing
 * biases, the step and the state of the sampling PRNG (the data position), so on the
 * CPU every later loss equals, bit for bit, the loss of a run that was never stopped
 * (on the same layout).  The learning-rate schedule depends on the total step count,
 * which the checkpoint also keeps.
 *
 * Where the buffers live: the program's device (runtime/device.h), the host's memory
 * or a GPU's.  The engine reaches them only through the device: parameters are
 * initialised on the host and uploaded, a step's tokens go in through the device's
 * input (pinned memory and the copy stream on a GPU), the losses, expert loads and
 * gradient norm come back as a few bytes, the optimizer runs where the weights are
 * (one launch over every tensor on a GPU), checkpoints download and resume uploads
 * (the same file whatever the device).  The moving average of the weights (ema) lives
 * in host memory: a copy of the weights is taken after each step (on a GPU by the
 * copy stream into pinned memory) and folded in while the next step runs.
 *
 * Simplifications, on purpose: validation runs the training step (forward and
 * backward) on fixed held-out windows and reads only its loss; ZeRO-1's sharded
 * optimizer runs on host devices only (CPU ranks over MPI). */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt.h"
#include "data.h"
#include "device.h"
#include "metrics.h"
#include "pool.h"
#include "progress.h"
#include "rt.h"

#define CKPT_FORMAT_VERSION "1"

struct eparam {
	struct rt_param *r;
	float *w, *g;           /* in the program's buffers */
	void *m, *v;            /* AdamW moments, trainable only (ZeRO-1: of the shard):
				 * floats, or bf16 (rt_train_config.bf16_moments) */
	size_t n;               /* elements this rank holds */
	/* ZeRO-1: the shard of the elements this rank steps; its group's communicator */
	size_t off, len, chunk;
	float *gs;              /* the shard of the summed gradient */
	struct rt_comm *zc;
	float *ema;             /* the weights' moving average (ema > 0), host memory */
	float *wh;              /* ema: the weights as of the last step, host memory */
};

struct engine {
	struct rt_program *p;
	struct rt_exec *x;
	const struct rt_train_config *c;
	struct rt_device *dev;  /* where the program's buffers live */
	struct rt_dev_optim *opt; /* AdamW over every trainable tensor this rank steps */
	int ema_pending;        /* a snapshot of the weights waits to be folded in */
	struct eparam *ps;
	int n_biases;
	int gbatch;             /* sequences of a global batch */
	int32_t *gtok, *gtgt;   /* one global batch */
	struct rt_shard train, val;
	struct rt_rng rng;
	uint64_t seed;
	int64_t step, first_step, total, eval_every, ckpt_every;
	struct rt_schedule sched;
	double load_ratio;
	struct rt_pool *pool;
	float *scratch;         /* ZeRO-1: a padded gradient or weight, all shards */
	int lead;               /* rank 0: prints, writes metrics */
	int has_val;
	/* expert parallelism: the receive buffers' size in even shares (0: worst case);
	 * exchanges that overflowed and steps run again, this step and in all */
	double ep_capacity;
	int64_t ep_overflows, ep_reruns, ep_overflows_all, ep_reruns_all;
	int64_t exec_steps; /* the program's steps run: training, validation, runs again */
};

static volatile sig_atomic_t interrupted;

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
	signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends the process at once */
}

static void on_sigusr1(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int catching;
static struct sigaction old_int, old_usr1;

static void catch_interrupts(void)
{
	if (catching)
		return;
	interrupted = 0;
	struct sigaction sa = { .sa_handler = on_sigint };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	/* SIGUSR1: a stop that mpirun passes on to the ranks (kill -USR1 of mpirun); the
	 * launcher of '--ranks N' makes SLUICE_STOP_FILE instead (runtime/launch.c) */
	struct sigaction su = { .sa_handler = on_sigusr1 };
	sigemptyset(&su.sa_mask);
	sigaction(SIGUSR1, &su, &old_usr1);
	catching = 1;
}

static void release_interrupts(void)
{
	if (catching != 1)
		return;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGUSR1, &old_usr1, NULL);
	catching = 0;
}

int rt_train_interrupted(void)
{
	return interrupted;
}

/* Ctrl-C at the launcher of a job of CPU ranks: the file it names is there */
static int stop_file_made(void)
{
	const char *f = getenv("SLUICE_STOP_FILE");
	struct stat st;
	if (f && *f && !stat(f, &st)) {
		interrupted = 1;
		return 1;
	}
	return 0;
}

void rt_train_catch_interrupts(void)
{
	catch_interrupts();
	catching = 2; /* for the rest of the process: rt_train leaves them */
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static void ema_fold(struct engine *e);

/* The whole of the program's sums: 0 on every rank but those that hold the value. */
static void sum_world(struct engine *e, double *v, int n)
{
	rt_exec_sum(e->x, e->p->loss_group, v, n);
}

/* --- parameters ------------------------------------------------------------------ */

/* Initial values: each parameter draws from its own stream (seed and path) in blocks
 * of the global tensor (runtime/data.c's parallel initialisers), so a rank holding some
 * rows gets the values those rows have on one rank, the thread count changes nothing,
 * and adding a parameter does not change the others. */
static int init_params(struct engine *e)
{
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		const struct rt_param *r = q->r;
		int64_t row = r->numel / (r->shape[0] ? r->shape[0] : 1);
		int64_t first = r->row0 * row, n = (int64_t)q->n;
		uint64_t seed = rt_hash64(r->path, strlen(r->path), e->seed * 0x9e3779b97f4a7c15ull + 1);
		double bound = r->std_given || r->fan_in <= 0 ? r->std : 1.0 / sqrt((double)r->fan_in);
		float *w = rt_device_stage(e->dev, q->w, q->n * sizeof *w);
		switch (r->init) {
		case RT_INIT_ZEROS: rt_fill_const(e->pool, w, n, 0.0f); break;
		case RT_INIT_ONES: rt_fill_const(e->pool, w, n, 1.0f); break;
		case RT_INIT_UNIFORM: rt_fill_uniform_at(e->pool, w, first, n, bound, seed); break;
		case RT_INIT_NORMAL: rt_fill_normal_at(e->pool, w, first, n, r->std, seed); break;
		}
		if (q->ema)
			memcpy(q->ema, w, q->n * sizeof *w);
		if (rt_device_put(e->dev, q->w, w, q->n * sizeof *w))
			return -1;
	}
	return 0;
}

/* --- checkpoints ------------------------------------------------------------------ */

static char *ckpt_path(const char *dir_or_file)
{
	struct stat st;
	if (ends_with(dir_or_file, ".safetensors") ||
	    (stat(dir_or_file, &st) == 0 && S_ISREG(st.st_mode)))
		return rt_strdup(dir_or_file);
	size_t n = strlen(dir_or_file) + sizeof RT_CKPT_FILE + 2;
	char *s = rt_malloc(n);
	snprintf(s, n, "%s/%s", dir_or_file, RT_CKPT_FILE);
	return s;
}

/* A piece of a checkpoint tensor that this rank holds: rows [row0, row0 + rows) of
 * the global tensor `name`. */
struct piece {
	const char *name;
	int rank;
	int64_t shape[RT_MAX_RANK];
	int64_t row0, rows;
	const float *data;
};

#define PIECE_INTS (5 + RT_MAX_RANK)

/* This rank's pieces: the weights, and AdamW's moments, of the parameters it owns
 * (ZeRO-1's moments gathered from the group first: every member takes part), in host
 * memory (tmp[4k + j] holds what had to be gathered or downloaded). */
static int my_pieces(struct engine *e, struct piece *out, char **names, float **tmp)
{
	int n = 0;
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		const struct rt_param *r = q->r;
		const float *m = q->m, *v = q->v;
		size_t es = e->c->bf16_moments ? 2 : 4;
		if (r->trainable && r->zero) {
			size_t P = (size_t)rt_comm_size(q->zc);
			for (int j = 0; j < 2; j++) {
				tmp[4 * k + j] = rt_calloc(P * q->chunk, sizeof **tmp);
				rt_comm_all_gather(q->zc, (uint64_t)(uintptr_t)(j ? q->v : q->m),
						   (uint64_t)(uintptr_t)tmp[4 * k + j], q->chunk,
						   es == 2 ? RT_COMM_BF16 : RT_COMM_F32, NULL);
				rt_comm_sync(q->zc, NULL);
				if (es == 2) /* widened in place, from the end */
					for (size_t i = P * q->chunk; i-- > 0;)
						tmp[4 * k + j][i] = rt_bf16_to_f32(
							((const uint16_t *)tmp[4 * k + j])[i]);
			}
			m = tmp[4 * k];
			v = tmp[4 * k + 1];
		} else if (r->trainable && r->owner) {
			void *c1, *c2;
			m = rt_device_view(e->dev, q->m, q->n * es, &c1);
			v = rt_device_view(e->dev, q->v, q->n * es, &c2);
			tmp[4 * k] = c1;
			tmp[4 * k + 1] = c2;
			if (es == 2 && m && v) {
				/* the checkpoint keeps f32: the bf16 values widened, exactly */
				const void *src[2] = { m, v };
				for (int j = 0; j < 2; j++) {
					float *wide = rt_malloc(q->n * sizeof *wide + 1);
					for (size_t i = 0; i < q->n; i++)
						wide[i] = rt_bf16_to_f32(((const uint16_t *)src[j])[i]);
					free(tmp[4 * k + j]);
					tmp[4 * k + j] = wide;
				}
				m = tmp[4 * k];
				v = tmp[4 * k + 1];
			}
		}
		if (!r->owner)
			continue;
		void *c3;
		const float *w = rt_device_view(e->dev, q->w, q->n * sizeof *w, &c3);
		tmp[4 * k + 2] = c3;
		if (!w || (r->trainable && (!m || !v)))
			return -1;
		const float *data[4] = { w, m, v, q->ema };
		const char *prefix[4] = { "", "adamw.m.", "adamw.v.", "ema." };
		for (int j = 0; j < 4; j++) {
			if (!data[j])
				continue;
			size_t len = strlen(prefix[j]) + strlen(r->path) + 1;
			names[n] = rt_malloc(len);
			snprintf(names[n], len, "%s%s", prefix[j], r->path);
			out[n] = (struct piece){ .name = names[n], .rank = r->rank, .row0 = r->row0,
						 .rows = r->rows, .data = data[j] };
			memcpy(out[n].shape, r->shape, sizeof r->shape[0] * (size_t)r->rank);
			n++;
		}
	}
	return n;
}

static int64_t piece_numel(const struct piece *pc)
{
	int64_t n = pc->rows;
	for (int i = 1; i < pc->rank; i++)
		n *= pc->shape[i];
	return pc->rank ? n : 1;
}

/* Rank 0 gathers every rank's pieces into whole tensors; the others send theirs. */
static int gather_pieces(struct engine *e, struct piece *mine, int n_mine,
			 struct rt_ckpt_tensor **tensors, float ***bufs, char ***tnames)
{
	int g = e->p->loss_group;
	int world = e->p->world, nt = 0, cap = 0;
	struct rt_ckpt_tensor *ts = NULL;
	float **data = NULL;
	char **tn = NULL;
	if (e->p->rank != 0) {
		/* header, names, data */
		int64_t hdr[3] = { n_mine, 0, 0 };
		int64_t *meta = rt_calloc((size_t)n_mine * PIECE_INTS + 1, sizeof *meta);
		for (int i = 0; i < n_mine; i++) {
			int64_t *m = meta + (size_t)i * PIECE_INTS;
			m[0] = hdr[1];
			m[1] = mine[i].rank;
			m[2] = mine[i].row0;
			m[3] = mine[i].rows;
			m[4] = hdr[2];
			memcpy(m + 5, mine[i].shape, sizeof mine[i].shape);
			hdr[1] += (int64_t)strlen(mine[i].name) + 1;
			hdr[2] += piece_numel(&mine[i]);
		}
		char *nb = rt_malloc((size_t)hdr[1] + 1);
		float *db = rt_malloc(sizeof *db * (size_t)(hdr[2] + 1));
		for (int i = 0; i < n_mine; i++) {
			const int64_t *m = meta + (size_t)i * PIECE_INTS;
			strcpy(nb + m[0], mine[i].name);
			memcpy(db + m[4], mine[i].data, sizeof *db * (size_t)piece_numel(&mine[i]));
		}
		rt_exec_send_host(e->x, g, hdr, sizeof hdr, 0);
		if (n_mine) {
			rt_exec_send_host(e->x, g, meta, sizeof *meta * (size_t)n_mine * PIECE_INTS, 0);
			rt_exec_send_host(e->x, g, nb, (size_t)hdr[1], 0);
			rt_exec_send_host(e->x, g, db, sizeof *db * (size_t)hdr[2], 0);
		}
		free(meta);
		free(nb);
		free(db);
		return 0;
	}
	for (int src = 0; src < world; src++) {
		struct piece *pcs = mine;
		int np = n_mine;
		int64_t *meta = NULL;
		char *nb = NULL;
		float *db = NULL;
		if (src) {
			int64_t hdr[3];
			rt_exec_recv_host(e->x, g, hdr, sizeof hdr, src);
			np = (int)hdr[0];
			pcs = rt_calloc((size_t)np + 1, sizeof *pcs);
			meta = rt_calloc((size_t)np * PIECE_INTS + 1, sizeof *meta);
			nb = rt_malloc((size_t)hdr[1] + 1);
			db = rt_malloc(sizeof *db * (size_t)(hdr[2] + 1));
			if (np) {
				rt_exec_recv_host(e->x, g, meta, sizeof *meta * (size_t)np * PIECE_INTS,
						  src);
				rt_exec_recv_host(e->x, g, nb, (size_t)hdr[1], src);
				rt_exec_recv_host(e->x, g, db, sizeof *db * (size_t)hdr[2], src);
			}
			for (int i = 0; i < np; i++) {
				const int64_t *m = meta + (size_t)i * PIECE_INTS;
				pcs[i] = (struct piece){ .name = nb + m[0], .rank = (int)m[1],
							 .row0 = m[2], .rows = m[3], .data = db + m[4] };
				memcpy(pcs[i].shape, m + 5, sizeof pcs[i].shape);
			}
		}
		for (int i = 0; i < np; i++) {
			const struct piece *pc = &pcs[i];
			int t = 0;
			while (t < nt && strcmp(tn[t], pc->name))
				t++;
			if (t == nt) {
				if (nt == cap) {
					cap = cap ? 2 * cap : 64;
					ts = rt_realloc(ts, sizeof *ts * (size_t)cap);
					data = rt_realloc(data, sizeof *data * (size_t)cap);
					tn = rt_realloc(tn, sizeof *tn * (size_t)cap);
				}
				int64_t numel = 1;
				for (int d = 0; d < pc->rank; d++)
					numel *= pc->shape[d];
				tn[nt] = rt_strdup(pc->name);
				data[nt] = rt_calloc((size_t)numel + 1, sizeof **data);
				ts[nt] = (struct rt_ckpt_tensor){ .name = tn[nt], .dtype = RT_CKPT_F32,
								  .rank = pc->rank, .data = data[nt] };
				memcpy(ts[nt].shape, pc->shape, sizeof pc->shape);
				nt++;
			}
			int64_t row = piece_numel(pc) / (pc->rank ? pc->rows : 1);
			memcpy(data[t] + pc->row0 * row, pc->data,
			       sizeof **data * (size_t)piece_numel(pc));
		}
		if (src) {
			free(pcs);
			free(meta);
			free(nb);
			free(db);
		}
	}
	*tensors = ts;
	*bufs = data;
	*tnames = tn;
	return nt;
}

static int save_checkpoint(struct engine *e)
{
	ema_fold(e);
	const struct rt_train_config *c = e->c;
	struct rt_program *p = e->p;
	int np = p->n_params, rc = 0;
	struct piece *mine = rt_calloc(4 * (size_t)np + 1, sizeof *mine);
	char **names = rt_calloc(4 * (size_t)np + 1, sizeof *names);
	float **tmp = rt_calloc(4 * (size_t)np + 1, sizeof *tmp);
	int n_mine = my_pieces(e, mine, names, tmp);
	if (n_mine < 0) {
		/* the device failed a copy: say so on every rank, as a failed write */
		n_mine = 0;
		rc = -1;
	}
	struct rt_ckpt_tensor *ts = NULL;
	float **bufs = NULL;
	char **tn = NULL;
	int n = 0;
	if (p->world == 1) {
		/* one rank: every tensor straight from where it lives */
		ts = rt_calloc((size_t)n_mine + 2, sizeof *ts);
		for (int i = 0; i < n_mine; i++) {
			ts[i] = (struct rt_ckpt_tensor){ .name = mine[i].name, .dtype = RT_CKPT_F32,
							 .rank = mine[i].rank, .data = mine[i].data };
			memcpy(ts[i].shape, mine[i].shape, sizeof mine[i].shape);
		}
		n = n_mine;
	} else {
		n = gather_pieces(e, mine, n_mine, &ts, &bufs, &tn);
		if (p->rank == 0)
			ts = rt_realloc(ts, sizeof *ts * (size_t)(n + 2));
	}
	if (p->rank == 0) {
		ts[n++] = (struct rt_ckpt_tensor){ .name = "rng.state", .dtype = RT_CKPT_U64,
						   .rank = 1, .shape = { 1 }, .data = &e->rng.s };
		char step[32], total[32], seed[32], gb[32], seq[32], lr[96], layout[96];
		snprintf(step, sizeof step, "%" PRId64, e->step);
		snprintf(total, sizeof total, "%" PRId64, e->total);
		snprintf(seed, sizeof seed, "%" PRIu64, e->seed);
		snprintf(gb, sizeof gb, "%d", e->gbatch);
		snprintf(seq, sizeof seq, "%d", p->seq);
		snprintf(lr, sizeof lr, "%g %g %" PRId64, (double)c->sched.lr_max,
			 (double)c->sched.lr_min, c->sched.warmup);
		snprintf(layout, sizeof layout, "pp %d dp %d ep %d microbatches %d",
			 p->layout.pp, p->layout.dp, p->layout.ep, p->microbatches);
		struct rt_ckpt_meta meta[] = {
			{ "format", "sluice" },
			{ "format_version", CKPT_FORMAT_VERSION },
			{ "model", c->model_name ? c->model_name : "" },
			{ "config_hash", c->config_hash },
			{ "step", step },
			{ "total_steps", total },
			{ "seed", seed },
			{ "global_batch", gb },
			{ "seq", seq },
			{ "lr_schedule", lr },
			{ "layout", layout },
		};
		char *path = ckpt_path(c->out_dir);
		if (rt_mkdir_p(c->out_dir)) {
			fprintf(stderr, "sluice train: cannot make the checkpoint directory %s: %s\n",
				c->out_dir, strerror(errno));
			rc = -1;
		} else {
			rc = rt_ckpt_write(path, ts, n, meta, (int)(sizeof meta / sizeof meta[0]),
					   stderr);
		}
		free(path);
	}
	if (p->world > 1) {
		/* every rank learns whether the save held, and none goes on before it did */
		double v = rc ? 1 : 0;
		sum_world(e, &v, 1);
		rc = v > 0 ? -1 : 0;
	}
	for (int i = 0; i < n_mine; i++)
		free(names[i]);
	for (int i = 0; i < 4 * np; i++)
		free(tmp[i]);
	if (bufs) {
		for (int i = 0; i < n - 1; i++) {
			free(bufs[i]);
			free(tn[i]);
		}
	}
	free(bufs);
	free(tn);
	free(ts);
	free(names);
	free(tmp);
	free(mine);
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

/* What a resume changes against the run that saved: said, not refused.  Another layout
 * with the same global batch trains the same model (within rounding). */
static void resume_notes(struct engine *e, const struct rt_ckpt *ck)
{
	const struct rt_program *p = e->p;
	const char *gb = rt_ckpt_meta_get(ck, "global_batch");
	const char *seq = rt_ckpt_meta_get(ck, "seq");
	const char *lr = rt_ckpt_meta_get(ck, "lr_schedule");
	const char *layout = rt_ckpt_meta_get(ck, "layout");
	int gbatch = p->batch * p->microbatches * p->layout.dp;
	char now[96];
	if (gb && atoi(gb) != gbatch)
		fprintf(stderr, "resume: note: the global batch changes from %s to %d sequences a "
			"step: the data and the gradients differ from an uninterrupted run\n", gb,
			gbatch);
	if (seq && atoi(seq) != p->seq)
		fprintf(stderr, "resume: note: seq changes from %s to %d: the data differ from an "
			"uninterrupted run\n", seq, p->seq);
	snprintf(now, sizeof now, "%g %g %" PRId64, (double)e->c->sched.lr_max,
		 (double)e->c->sched.lr_min, e->c->sched.warmup);
	if (lr && strcmp(lr, now))
		fprintf(stderr, "resume: note: the learning-rate schedule (lr, min_lr, warmup) "
			"changes from %s to %s\n", lr, now);
	snprintf(now, sizeof now, "pp %d dp %d ep %d microbatches %d", p->layout.pp,
		 p->layout.dp, p->layout.ep, p->microbatches);
	if (layout && strcmp(layout, now))
		fprintf(stderr, "resume: saved at %s, now %s%s\n", layout, now,
			gb && atoi(gb) == gbatch ? ": the same global batch, the same training "
			"(within rounding)" : "");
}

static int load_checkpoint(struct engine *e, const char *where)
{
	const struct rt_train_config *c = e->c;
	char *path = ckpt_path(where);
	struct rt_ckpt *ck = rt_ckpt_read(path, stderr);
	int rc = -1;
	if (!ck)
		goto done;
	const char *fmt = rt_ckpt_meta_get(ck, "format");
	const char *ver = rt_ckpt_meta_get(ck, "format_version");
	const char *hash = rt_ckpt_meta_get(ck, "config_hash");
	const char *model = rt_ckpt_meta_get(ck, "model");
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
	if (!hash || strcmp(hash, c->config_hash)) {
		fprintf(stderr, "sluice train: %s: the checkpoint is of model '%s' with another "
			"configuration (config hash %s, this model %s '%s'): parameters differ\n",
			path, model ? model : "?", hash ? hash : "none", c->config_hash,
			c->model_name ? c->model_name : "");
		/* go on: the tensor checks below name the first parameter that differs */
	}
	if (!parse_i64(rt_ckpt_meta_get(ck, "step"), &step) ||
	    !parse_i64(rt_ckpt_meta_get(ck, "total_steps"), &total) ||
	    !parse_i64(rt_ckpt_meta_get(ck, "seed"), &seed)) {
		fprintf(stderr, "sluice train: %s: step, total_steps or seed metadata missing or "
			"malformed\n", path);
		goto done;
	}
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		const struct rt_param *r = q->r;
		/* this rank's rows of the global tensors, whatever layout saved them */
		int64_t r0 = r->row0, r1 = r->row0 + r->rows;
		size_t bytes = q->n * sizeof(float);
		float *w = rt_device_stage(e->dev, q->w, bytes);
		int bad = rt_ckpt_load_rows(ck, r->path, RT_CKPT_F32, r->rank, r->shape, r0, r1, w,
					    stderr);
		if (q->ema && !bad) {
			char name[512];
			snprintf(name, sizeof name, "ema.%s", r->path);
			if (rt_ckpt_find(ck, name)) {
				bad = rt_ckpt_load_rows(ck, name, RT_CKPT_F32, r->rank, r->shape, r0,
							r1, q->ema, stderr);
			} else {
				if (e->lead && k == 0)
					fprintf(stderr, "resume: note: the checkpoint has no moving "
						"average of the weights: it starts from them\n");
				memcpy(q->ema, w, bytes);
			}
		}
		if (rt_device_put(e->dev, q->w, w, bytes) || bad)
			goto done;
		if (!r->trainable)
			continue;
		for (int j = 0; j < 2; j++) {
			char name[512];
			snprintf(name, sizeof name, "adamw.%c.%s", j ? 'v' : 'm', r->path);
			void *dst = j ? q->v : q->m;
			if (e->c->bf16_moments) {
				/* read as f32, kept as bf16 (exact for moments saved from bf16) */
				float *whole = rt_calloc(q->n + 1, sizeof *whole);
				bad = rt_ckpt_load_rows(ck, name, RT_CKPT_F32, r->rank, r->shape, r0,
							r1, whole, stderr);
				size_t first = r->zero ? q->off : 0, len = r->zero ? q->len : q->n;
				size_t cnt = r->zero ? q->chunk : q->n;
				uint16_t *h = rt_device_stage(e->dev, dst, cnt * 2);
				memset(h, 0, cnt * 2);
				for (size_t i = 0; i < len; i++)
					h[i] = rt_f32_to_bf16(whole[first + i]);
				free(whole);
				if (rt_device_put(e->dev, dst, h, cnt * 2) || bad)
					goto done;
				continue;
			}
			if (!r->zero) {
				float *h = rt_device_stage(e->dev, dst, bytes);
				bad = rt_ckpt_load_rows(ck, name, RT_CKPT_F32, r->rank, r->shape, r0,
							r1, h, stderr);
				if (rt_device_put(e->dev, dst, h, bytes) || bad)
					goto done;
				continue;
			}
			/* ZeRO-1: this rank's shard of the elements */
			float *whole = rt_calloc(q->n + 1, sizeof *whole);
			bad = rt_ckpt_load_rows(ck, name, RT_CKPT_F32, r->rank, r->shape, r0, r1,
						    whole, stderr);
			if (!bad)
				memcpy(dst, whole + q->off, q->len * sizeof *whole);
			free(whole);
			if (bad)
				goto done;
		}
	}
	int64_t one = 1;
	if (rt_ckpt_load(ck, "rng.state", RT_CKPT_U64, 1, &one, &e->rng.s, stderr))
		goto done;
	if (hash && strcmp(hash, c->config_hash))
		goto done;
	e->step = step;
	e->seed = (uint64_t)seed;
	if (e->lead)
		resume_notes(e, ck);
	if (!c->steps_given)
		e->total = total;
	else if (c->steps != total && e->lead)
		fprintf(stderr, "sluice train: note: the checkpoint was made for %" PRId64 " steps, "
			"now %" PRId64 ": the learning-rate schedule changes, so losses will differ "
			"from an uninterrupted run\n", total, c->steps);
	rc = 0;
done:
	rt_ckpt_free(ck);
	free(path);
	return rc;
}

/* --- data ---------------------------------------------------------------------- */

static int load_data(struct engine *e)
{
	const struct rt_train_config *c = e->c;
	int seq = e->p->seq;
	FILE *log = e->lead ? stderr : NULL;
	if (rt_shard_read(c->data, e->p->vocab, &e->train, stderr))
		return -1;
	if (c->val_data) {
		if (rt_shard_read(c->val_data, e->p->vocab, &e->val, stderr))
			return -1;
	} else {
		/* hold out the last tenth of the training shard */
		int64_t nv = e->train.n / 10;
		if (nv >= (int64_t)seq + 1 && e->train.n - nv >= (int64_t)seq + 1) {
			e->val.n = nv;
			e->val.tok = rt_malloc(2 * (size_t)nv);
			memcpy(e->val.tok, e->train.tok + e->train.n - nv, 2 * (size_t)nv);
			e->train.n -= nv;
			if (log)
				fprintf(log, "data: %s: %" PRId64 " tokens for training, the last %"
					PRId64 " held out for validation\n", c->data, e->train.n, nv);
		}
	}
	if (e->train.n < (int64_t)seq + 1) {
		fprintf(stderr, "sluice train: %s: %" PRId64 " tokens, fewer than one window of "
			"seq + 1 = %d\n", c->data, e->train.n, seq + 1);
		return -1;
	}
	if (e->val.n && e->val.n < (int64_t)seq + 1) {
		fprintf(stderr, "sluice train: %s: %" PRId64 " validation tokens, fewer than one "
			"window of seq + 1 = %d\n", c->val_data, e->val.n, seq + 1);
		return -1;
	}
	if (!e->val.n && log)
		fprintf(log, "data: %s is too small to hold out validation data: no val_loss\n",
			c->data);
	e->has_val = e->val.n > 0;
	return 0;
}

/* This rank's micro-batches of the global batch in gtok/gtgt: micro-batch m of
 * data-parallel rank d holds sequences (d*M + m)*batch ... + batch. */
static void place_batch(struct engine *e)
{
	struct rt_program *p = e->p;
	int M = p->microbatches, dpi = p->rank % p->layout.dp;
	size_t mb = (size_t)p->batch * (size_t)p->seq;
	for (int m = 0; m < M; m++) {
		size_t at = (size_t)(dpi * M + m) * mb;
		if (p->tokens >= 0)
			e->dev->ops->input(e->dev, rt_buf_slot(p, p->tokens, m), e->gtok + at,
					   mb * sizeof *e->gtok);
		if (p->targets >= 0)
			e->dev->ops->input(e->dev, rt_buf_slot(p, p->targets, m), e->gtgt + at,
					   mb * sizeof *e->gtgt);
	}
}

/* The optimizer's table: every trainable tensor this rank steps, in parameter order
 * (the gradient norm adds them in that order). */
static struct rt_dev_optim *new_optimizer(struct engine *e)
{
	struct rt_program *p = e->p;
	struct rt_dev_tensor *tt = rt_calloc((size_t)p->n_params + 1, sizeof *tt);
	int nt = 0;
	for (int k = 0; k < p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		if (!q->r->trainable)
			continue;
		if (q->r->zero) /* each element is in exactly one member's shard: counted once */
			tt[nt++] = (struct rt_dev_tensor){ q->w + q->off, q->gs, q->m, q->v, q->len,
							   q->r->decay, 1, e->c->bf16_moments };
		else
			tt[nt++] = (struct rt_dev_tensor){ q->w, q->g, q->m, q->v, q->n, q->r->decay,
							   q->r->owner || p->world == 1,
							   e->c->bf16_moments };
	}
	struct rt_dev_optim *o = e->dev->ops->optim_new(e->dev, tt, nt);
	free(tt);
	return o;
}

/* After an expert-parallel overflow: the program and executor rebuilt with receive
 * buffers twice as large (up to the worst case), the weights copied into them, the
 * batch placed again.  Every rank does it at once. */
static int grow_capacity(struct engine *e, int64_t need, int64_t cap)
{
	const struct rt_train_config *c = e->c;
	if (!c->rebuild || e->ep_capacity <= 0) {
		fprintf(stderr, "sluice train: rank %d: an expert-parallel receive buffer "
			"overflowed and cannot grow\n", e->p->rank);
		return -1;
	}
	double f = 2.0 * e->ep_capacity;
	/* a buffer of fewer even shares than need on some rank of this group: at least
	 * what it needed, where this rank saw it */
	if (cap > 0 && (double)need / (double)cap * e->ep_capacity > f)
		f = ceil((double)need / (double)cap * e->ep_capacity);
	if (e->lead && need > 0)
		fprintf(stderr, "\nep: a routing sent %" PRId64 " rows to a rank whose receive "
			"buffer holds %" PRId64 " (ep_capacity %g): the step runs again on "
			"buffers of ep_capacity %g\n", need, cap, e->ep_capacity, f);
	else if (e->lead)
		fprintf(stderr, "\nep: a routing overflowed a receive buffer of another group "
			"(ep_capacity %g): the step runs again on buffers of ep_capacity %g\n",
			e->ep_capacity, f);
	if (!e->dev->host) {
		/* the weights would be copied device to device: not built */
		fprintf(stderr, "sluice train: rank %d: an expert-parallel receive buffer "
			"overflowed; growing it is built for CPU ranks only (set ep_capacity = "
			"worst)\n", e->p->rank);
		return -1;
	}
	struct rt_program *np = e->p;
	struct rt_exec *nx = e->x;
	if (c->rebuild(c->rebuild_ctx, f, &np, &nx))
		return -1;
	RT_ASSERT(np->n_params == e->p->n_params);
	for (int k = 0; k < np->n_params; k++) {
		struct eparam *q = &e->ps[k];
		const struct rt_param *r = &np->params[k];
		RT_ASSERT(!strcmp(r->path, q->r->path) &&
			  (size_t)np->bufs[r->buf].numel == q->n);
		float *w = np->bufs[r->buf].data;
		memcpy(w, q->w, q->n * sizeof *w);
		q->r = &np->params[k];
		q->w = w;
		if (r->trainable)
			q->g = np->bufs[r->grad].data;
		if (r->zero)
			q->zc = rt_exec_group(nx, r->reduce_group);
		if (q->ema)
			q->wh = w; /* on the host: the weights themselves */
	}
	c->retire(c->rebuild_ctx, e->p, e->x);
	e->p = np;
	e->x = nx;
	e->dev->ops->optim_free(e->dev, e->opt);
	e->opt = new_optimizer(e);
	if (!e->opt)
		return -1;
	e->ep_capacity = f;
	place_batch(e);
	return 0;
}

/* Run the step; the objective and its next-token part, averaged over the global
 * batch, on every rank.  A step whose expert routing overflowed a receive buffer
 * anywhere runs again, on larger ones. */
static int run_step(struct engine *e, double *loss, double *lm)
{
	char err[256];
	for (int again = 0;; again++) {
		struct rt_exec_stats s0, s1;
		rt_exec_stats(e->x, &s0);
		if (rt_exec_step(e->x, err, sizeof err)) {
			fprintf(stderr, "sluice train: rank %d: %s\n", e->p->rank, err);
			return -1;
		}
		e->exec_steps++;
		rt_exec_stats(e->x, &s1);
		struct rt_program *p = e->p;
		/* the host's work on the last step's weights, while this one runs */
		if (!again)
			ema_fold(e);
		double v[3] = { 0, 0, (double)(s1.ep_overflows - s0.ep_overflows) };
		if (p->loss >= 0) {
			float l[2];
			if (e->dev->ops->download(e->dev, &l[0], p->bufs[p->loss].data, sizeof l[0]) ||
			    e->dev->ops->download(e->dev, &l[1], p->bufs[p->lm_loss].data,
						  sizeof l[1]))
				return -1;
			v[0] = l[0];
			v[1] = l[1];
		}
		double n = (double)p->microbatches * p->layout.dp;
		if (p->world > 1)
			sum_world(e, v, 3);
		*loss = v[0] / n;
		*lm = v[1] / n;
		if (v[2] == 0)
			return 0;
		/* every rank of a group counted each of its overflows */
		int64_t events = (int64_t)(v[2] / (p->layout.ep > 1 ? p->layout.ep : 1));
		e->ep_overflows += events;
		e->ep_reruns++;
		e->ep_overflows_all += events;
		e->ep_reruns_all++;
		if (grow_capacity(e, s1.ep_need_rows, s1.ep_cap_rows))
			return -1;
	}
}

static int eval_val(struct engine *e, double *val_loss)
{
	double sum = 0.0;
	for (int k = 0; k < e->c->val_batches; k++) {
		rt_batch_eval(&e->val, k, e->c->val_batches, e->gbatch, e->p->seq, e->gtok, e->gtgt);
		place_batch(e);
		double l, lm;
		if (run_step(e, &l, &lm))
			return -1;
		sum += lm;
	}
	*val_loss = sum / e->c->val_batches;
	return 0;
}

/* Routing biases toward balance; records max/mean load per layer. */
static void balance_biases(struct engine *e, struct rt_metrics *mx)
{
	double ratio_sum = 0.0;
	int n = 0;
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		const struct rt_param *r = q->r;
		if (r->load < 0)
			continue;
		struct rt_buffer *lb = &e->p->bufs[r->load];
		rt_exec_sum_buf(e->x, r->load_group, r->load);
		void *copy;
		const float *load = rt_device_view(e->dev, lb->data, (size_t)lb->bytes, &copy);
		float *bias = rt_device_stage(e->dev, q->w, q->n * sizeof *bias);
		if (!load || (bias != q->w && e->dev->ops->download(e->dev, bias, q->w,
								      q->n * sizeof *bias)))
			RT_BUG("the expert loads or routing biases cannot be read from the device");
		size_t ne = q->n;
		size_t rows = (size_t)lb->numel / ne;
		double *per = rt_calloc(ne, sizeof *per);
		double sum = 0.0, mx_load = 0.0;
		for (size_t i = 0; i < rows; i++)
			for (size_t j = 0; j < ne; j++)
				per[j] += load[i * ne + j];
		for (size_t j = 0; j < ne; j++) {
			sum += per[j];
			if (per[j] > mx_load)
				mx_load = per[j];
		}
		double mean = sum / (double)ne;
		for (size_t j = 0; j < ne; j++) {
			float s = per[j] < mean ? 1.0f : per[j] > mean ? -1.0f : 0.0f;
			bias[j] += r->gamma * s;
		}
		if (rt_device_put(e->dev, q->w, bias, q->n * sizeof *bias))
			RT_BUG("the routing biases cannot be written to the device");
		free(copy);
		double ratio = mean > 0 ? mx_load / mean : 0.0;
		ratio_sum += ratio;
		n++;
		if (mx)
			rt_metrics_sub_num(mx, "expert_load_max_over_mean", r->scope, ratio);
		free(per);
	}
	double v[2] = { ratio_sum, (double)n };
	if (e->p->world > 1) {
		/* every stage's layers, counted once: by the first data-parallel rank */
		if (e->p->rank % e->p->layout.dp)
			v[0] = v[1] = 0;
		sum_world(e, v, 2);
	}
	e->load_ratio = v[1] > 0 ? v[0] / v[1] : 0.0;
}

/* The weights' exponential moving average, after every step (DeepSeek-V3 keeps one to
 * judge the model early): ema = d * ema + (1 - d) * w, in host memory, split over the
 * pool.  After a step the device is asked for a copy of the weights (ema_snapshot: on
 * a GPU the copy stream takes it into pinned memory, on the host it is the weights
 * themselves); the next step folds it in once that step is queued (ema_fold), so on a
 * GPU the host's work overlaps the step, as DeepSeek-V3 does.  Checkpoints and the
 * end of training fold first. */
struct ema_job {
	float *ema;
	const float *w;
	float d;
};

static void ema_range(void *ctx, int64_t lo, int64_t hi)
{
	const struct ema_job *j = ctx;
	for (int64_t i = lo; i < hi; i++)
		j->ema[i] = j->d * j->ema[i] + (1.0f - j->d) * j->w[i];
}

static void ema_snapshot(struct engine *e)
{
	if (!(e->c->ema > 0))
		return;
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		e->dev->ops->snapshot(e->dev, q->wh, q->w, q->n * sizeof *q->wh);
	}
	e->ema_pending = 1;
}

static void ema_fold(struct engine *e)
{
	if (!e->ema_pending)
		return;
	e->dev->ops->snapshot_wait(e->dev);
	for (int k = 0; k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		struct ema_job j = { q->ema, q->wh, e->c->ema };
		rt_pool_run(e->pool, (int64_t)q->n, 1 << 16, ema_range, &j);
	}
	e->ema_pending = 0;
}

/* SLUICE_GRAD_DUMP=PREFIX: the gradients of the first step (the mean over the global
 * batch, before clipping) that this rank owns, by global name (a slice of rows as
 * NAME#ROW0), to PREFIX.rankR.safetensors; the tests compare layouts with them.  The
 * lead also writes that step's global batch (tokens and targets, i32 [batch, seq]) to
 * PREFIX.batch.safetensors, so that another implementation can compute the same step
 * (tests/gpu/torch_check.py). */
static void dump_grads(struct engine *e)
{
	const char *prefix = getenv("SLUICE_GRAD_DUMP");
	if (!prefix || !*prefix)
		return;
	struct rt_ckpt_tensor *ts = rt_calloc((size_t)e->p->n_params + 1, sizeof *ts);
	float **whole = rt_calloc((size_t)e->p->n_params + 1, sizeof *whole);
	int n = 0;
	for (int k = 0; k < e->p->n_params; k++) {
		const struct eparam *q = &e->ps[k];
		const float *g = NULL;
		if (q->r->trainable && q->r->zero) {
			/* the summed gradient is in shards: gather it (every member calls) */
			size_t P = (size_t)rt_comm_size(q->zc);
			whole[k] = rt_calloc(P * q->chunk, sizeof *whole[k]);
			rt_comm_all_gather(q->zc, (uint64_t)(uintptr_t)q->gs,
					   (uint64_t)(uintptr_t)whole[k], q->chunk, RT_COMM_F32, NULL);
			rt_comm_sync(q->zc, NULL);
			g = whole[k];
		}
		if (!q->r->trainable || !q->r->owner)
			continue;
		if (!g) {
			void *copy;
			g = rt_device_view(e->dev, q->g, q->n * sizeof *g, &copy);
			whole[k] = copy;
			if (!g)
				RT_BUG("the gradients cannot be read from the device");
		}
		/* a slice of rows is named PATH#ROW0 */
		char *nm = rt_malloc(strlen(q->r->path) + 32);
		if (q->r->rows != q->r->shape[0])
			sprintf(nm, "%s#%" PRId64, q->r->path, q->r->row0);
		else
			strcpy(nm, q->r->path);
		ts[n] = (struct rt_ckpt_tensor){ .name = nm, .dtype = RT_CKPT_F32,
						 .rank = q->r->rank, .data = g };
		memcpy(ts[n].shape, q->r->shape, sizeof ts[n].shape[0] * (size_t)q->r->rank);
		ts[n].shape[0] = q->r->rows;
		n++;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s.rank%d.safetensors", prefix, e->p->rank);
	if (rt_ckpt_write(path, ts, n, NULL, 0, stderr))
		fprintf(stderr, "sluice train: warning: SLUICE_GRAD_DUMP: %s not written\n", path);
	if (e->lead) {
		struct rt_ckpt_tensor bt[2] = {
			{ .name = "tokens", .dtype = RT_CKPT_I32, .rank = 2, .data = e->gtok },
			{ .name = "targets", .dtype = RT_CKPT_I32, .rank = 2, .data = e->gtgt },
		};
		for (int k = 0; k < 2; k++) {
			bt[k].shape[0] = e->gbatch;
			bt[k].shape[1] = e->p->seq;
		}
		snprintf(path, sizeof path, "%s.batch.safetensors", prefix);
		if (rt_ckpt_write(path, bt, 2, NULL, 0, stderr))
			fprintf(stderr, "sluice train: warning: SLUICE_GRAD_DUMP: %s not written\n",
				path);
	}
	for (int k = 0; k < e->p->n_params; k++)
		free(whole[k]);
	for (int k = 0; k < n; k++)
		free((char *)ts[k].name);
	free(whole);
	free(ts);
}

static int step_once(struct engine *e, double *loss, double *lm, float *lr, double *gnorm)
{
	rt_batch_sample(&e->train, &e->rng, e->gbatch, e->p->seq, e->gtok, e->gtgt);
	place_batch(e);
	if (run_step(e, loss, lm))
		return -1;
	if (!isfinite(*loss)) {
		if (e->lead)
			fprintf(stderr, "\nsluice train: the loss is %f at step %" PRId64 ": training "
				"diverged (try a lower learning rate: --set lr=...)\n", *loss,
				e->step + 1);
		return -1;
	}
	struct rt_program *p = e->p;
	/* ZeRO-1: this rank's shard of each gradient's sum over its group (host) */
	for (int k = 0; k < p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		if (!q->r->trainable || !q->r->zero)
			continue;
		size_t P = (size_t)rt_comm_size(q->zc);
		memcpy(e->scratch, q->g, q->n * sizeof *q->g);
		memset(e->scratch + q->n, 0, (P * q->chunk - q->n) * sizeof *e->scratch);
		uint64_t a = (uint64_t)(uintptr_t)e->scratch;
		rt_comm_reduce_scatter_sum(q->zc, a, (uint64_t)(uintptr_t)q->gs, q->chunk,
					   RT_COMM_F32, NULL);
		rt_comm_sync(q->zc, NULL);
	}
	/* from the sum over micro-batches and ranks to the mean over the global batch */
	float mean = 1.0f / (float)(p->microbatches * p->layout.dp);
	if (mean != 1.0f)
		e->dev->ops->scale_grads(e->dev, e->opt, mean);
	if (e->step == e->first_step)
		dump_grads(e);
	*gnorm = e->dev->ops->grad_norm(e->dev, e->opt);
	if (p->world > 1) {
		double sq = *gnorm * *gnorm;
		sum_world(e, &sq, 1);
		*gnorm = sqrt(sq);
	}
	float scale = rt_clip_scale(*gnorm, e->c->clip);
	*lr = rt_schedule_lr(&e->sched, e->step);
	e->dev->ops->adamw(e->dev, e->opt, &e->c->adamw, *lr, e->step + 1, scale);
	/* ZeRO-1: every member's stepped shard, back into the whole weights */
	for (int k = 0; k < p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		if (!q->r->trainable || !q->r->zero)
			continue;
		memset(q->gs, 0, q->chunk * sizeof *q->gs);
		memcpy(q->gs, q->w + q->off, q->len * sizeof *q->gs);
		rt_comm_all_gather(q->zc, (uint64_t)(uintptr_t)q->gs, (uint64_t)(uintptr_t)e->scratch,
				   q->chunk, RT_COMM_F32, NULL);
		rt_comm_sync(q->zc, NULL);
		memcpy(q->w, e->scratch, q->n * sizeof *q->w);
	}
	return 0;
}

/* --- one step's timeline (--trace) ----------------------------------------------- */

/* per action, gathered: kind, micro-batch, start, end (ms from the step's start), and
 * its name in TRACE_NAME doubles of 5 characters each */
#define TRACE_NAME 8
#define TRACE_K (4 + TRACE_NAME)
enum { TR_CHUNK = 0, TR_COMM = 16, TR_WAIT = 32 }; /* + the chunk's or op's kind */

static void pack_name(double *d, const char *s)
{
	for (int k = 0; k < TRACE_NAME; k++) {
		uint64_t v = 0;
		for (int c = 0; c < 5; c++) {
			unsigned char ch = *s ? (unsigned char)*s++ : 0;
			v = v << 8 | ch;
		}
		d[k] = (double)v;
	}
}

static void unpack_name(const double *d, char *s)
{
	for (int k = 0; k < TRACE_NAME; k++) {
		uint64_t v = (uint64_t)d[k];
		for (int c = 4; c >= 0; c--)
			s[k * 5 + (4 - c)] = (char)(v >> (8 * c) & 0xff);
	}
	s[TRACE_NAME * 5] = 0;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++)
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s >= 32)
			fputc(*s, f);
	fputc('"', f);
}

/* Every rank's actions of the traced step (t: rt_exec_trace's times, base: the step's
 * start after a barrier), gathered to the lead, which writes them as a Chrome/Perfetto
 * trace (a process per rank; compute and communication threads) and says the step's
 * time, each rank's share of compute, and the costs per stage and micro-batch that
 * `sluice schedule --costs` simulates.  0, or -1 when the file cannot be written. */
static int trace_write(struct engine *e, const double *t, double base, int64_t step)
{
	struct rt_program *p = e->p;
	int W = p->world, me = p->rank, n = p->n_actions;
	double *head = rt_calloc((size_t)W * 3 + 1, sizeof *head);
	int top = 0;
	for (int c = 0; c < p->n_chunks; c++)
		top = p->chunks[c].stage > top ? p->chunks[c].stage : top;
	head[3 * me] = n;
	head[3 * me + 1] = p->stage;
	head[3 * me + 2] = top;
	sum_world(e, head, 3 * W);
	int maxn = 0, stages = 1;
	for (int r = 0; r < W; r++) {
		maxn = (int)head[3 * r] > maxn ? (int)head[3 * r] : maxn;
		stages = (int)head[3 * r + 2] + 1 > stages ? (int)head[3 * r + 2] + 1 : stages;
	}
	size_t per = (size_t)maxn * TRACE_K;
	double *all = rt_calloc((size_t)W * per + 1, sizeof *all);
	for (int i = 0; i < n; i++) {
		const struct rt_action *a = &p->actions[i];
		double *d = all + (size_t)me * per + (size_t)i * TRACE_K;
		char name[64];
		if (a->kind == RT_ACT_CHUNK) {
			d[0] = TR_CHUNK + p->chunks[a->index].kind;
			snprintf(name, sizeof name, "%s", p->chunks[a->index].name);
		} else if (a->kind == RT_ACT_COMM) {
			const struct rt_comm_op *o = &p->comms[a->index];
			d[0] = TR_COMM + o->kind;
			snprintf(name, sizeof name, "%s %s", rt_cop_kind_name(o->kind),
				 p->bufs[o->buf].name);
		} else {
			d[0] = TR_WAIT;
			snprintf(name, sizeof name, "wait %s", p->groups[a->index].name);
		}
		d[1] = a->mb;
		d[2] = (t[2 * i] - base) * 1e3;
		d[3] = (t[2 * i + 1] - base) * 1e3;
		if (d[2] < 0)
			d[2] = 0;
		if (d[3] < d[2])
			d[3] = d[2];
		pack_name(d + 4, name);
	}
	sum_world(e, all, (int)((size_t)W * per));
	int rc = 0;
	if (e->lead) {
		char tmp[4096];
		snprintf(tmp, sizeof tmp, "%s.tmp", e->c->trace);
		FILE *f = fopen(tmp, "w");
		double kind_ms[3] = { 0, 0, 0 }, step_ms = 0;
		int have[3] = { 0, 0, 0 };
		if (!f) {
			fprintf(stderr, "sluice train: --trace %s: %s\n", e->c->trace, strerror(errno));
			rc = -1;
		} else {
			fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
			int first = 1;
			for (int r = 0; r < W; r++) {
				fprintf(f, "%s{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, "
					"\"args\": {\"name\": \"rank %d (stage %d)\"}},\n"
					"{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, "
					"\"args\": {\"name\": \"compute\"}},\n{\"name\": \"thread_name\", "
					"\"ph\": \"M\", \"pid\": %d, \"tid\": 1, \"args\": {\"name\": "
					"\"communication\"}}", first ? "" : ",\n", r, r, (int)head[3 * r + 1],
					r, r);
				first = 0;
				for (int i = 0; i < (int)head[3 * r]; i++) {
					const double *d = all + (size_t)r * per + (size_t)i * TRACE_K;
					char name[TRACE_NAME * 5 + 1];
					unpack_name(d + 4, name);
					int chunk = d[0] < TR_COMM, k = (int)d[0] - TR_CHUNK;
					fprintf(f, ",\n{\"name\": ");
					json_str(f, name);
					fprintf(f, ", \"ph\": \"X\", \"pid\": %d, \"tid\": %d, \"ts\": %.3f, "
						"\"dur\": %.3f, \"args\": {\"mb\": %d}}", r, chunk ? 0 : 1,
						d[2] * 1e3, (d[3] - d[2]) * 1e3, (int)d[1]);
					step_ms = d[3] > step_ms ? d[3] : step_ms;
					if (!chunk)
						continue;
					int slot = k == RT_CHUNK_FWD ? 0 : k == RT_CHUNK_BWD_W ? 2
						 : k == RT_CHUNK_BWD || k == RT_CHUNK_BWD_B ? 1 : -1;
					if (slot >= 0) {
						kind_ms[slot] += d[3] - d[2];
						have[slot] = 1;
					}
				}
			}
			fprintf(f, "\n]}\n");
			if (fclose(f) || rename(tmp, e->c->trace)) {
				fprintf(stderr, "sluice train: --trace %s: %s\n", e->c->trace,
					strerror(errno));
				remove(tmp);
				rc = -1;
			}
		}
		if (!rc) {
			fprintf(stderr, "trace: step %" PRId64 " of %d rank%s in %s (Perfetto or "
				"chrome://tracing): %.2f ms\n", step, W, W == 1 ? "" : "s",
				e->c->trace, step_ms);
			for (int r = 0; r < W; r++) {
				double busy = 0, waits = 0;
				for (int i = 0; i < (int)head[3 * r]; i++) {
					const double *d = all + (size_t)r * per + (size_t)i * TRACE_K;
					if (d[0] < TR_COMM)
						busy += d[3] - d[2];
					else if (d[0] >= TR_WAIT)
						waits += d[3] - d[2];
				}
				fprintf(stderr, "  rank %d: compute %.2f ms (%.0f%% of the step), waiting "
					"%.2f ms\n", r, busy, step_ms > 0 ? 100 * busy / step_ms : 0,
					waits);
			}
			/* a stage's F, its full backward B (input- and weight-grad) and W per
			 * micro-batch, averaged over the stages and the dp replicas (each runs
			 * every stage of its micro-batches): what the simulator takes */
			double units = (double)stages * p->microbatches * p->layout.dp;
			if (have[0] && have[1] && W > 1)
				fprintf(stderr, "  measured per stage and micro-batch: F %.3f ms, B %.3f "
					"ms, W %.3f ms; simulated: sluice schedule %s --set pp=%d --set "
					"microbatches=%d --set schedule=%s --costs F=%.3f,B=%.3f,W=%.3f\n",
					kind_ms[0] / units, (kind_ms[1] + kind_ms[2]) / units,
					kind_ms[2] / units, e->c->model, p->layout.pp, p->microbatches,
					p->schedule, kind_ms[0] / units,
					(kind_ms[1] + kind_ms[2]) / units, kind_ms[2] / units);
		}
	}
	free(head);
	free(all);
	return rc;
}

/* --- the loop ------------------------------------------------------------------- */

static int setup(struct engine *e)
{
	const struct rt_train_config *c = e->c;
	struct rt_program *p = e->p;
	e->lead = p->rank == 0;
	e->ep_capacity = c->ep_capacity;
	e->total = c->steps;
	e->seed = c->seed;
	e->dev = p->dev;
	e->pool = e->dev->pool;
	e->ps = rt_calloc((size_t)p->n_params + 1, sizeof *e->ps);
	size_t scratch = 0;
	for (int k = 0; k < p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		q->r = &p->params[k];
		q->w = p->bufs[q->r->buf].data;
		q->n = (size_t)p->bufs[q->r->buf].numel;
		size_t states = q->n;
		if (q->r->zero) {
			/* the sharded optimizer works on host memory (see the top) */
			RT_ASSERT(e->dev->host);
			q->zc = rt_exec_group(e->x, q->r->reduce_group);
			RT_ASSERT(q->zc);
			size_t P = (size_t)rt_comm_size(q->zc), me = (size_t)rt_comm_rank(q->zc);
			q->chunk = (q->n + P - 1) / P;
			q->off = me * q->chunk < q->n ? me * q->chunk : q->n;
			q->len = q->n - q->off < q->chunk ? q->n - q->off : q->chunk;
			q->gs = rt_calloc(q->chunk, sizeof *q->gs);
			if (P * q->chunk > scratch)
				scratch = P * q->chunk;
			states = q->chunk;
		}
		if (q->r->trainable) {
			q->g = p->bufs[q->r->grad].data;
			size_t es = c->bf16_moments ? sizeof(uint16_t) : sizeof(float);
			q->m = e->dev->ops->alloc(e->dev, states * es);
			q->v = e->dev->ops->alloc(e->dev, states * es);
			if (!q->m || !q->v)
				return -1;
		}
		if (c->ema > 0) {
			q->ema = rt_pool_alloc_zeroed(e->pool, q->n * sizeof *q->ema);
			/* on the host the weights themselves; else pinned memory */
			q->wh = e->dev->host ? q->w
					     : e->dev->ops->host_alloc(e->dev, q->n * sizeof *q->wh);
			if (!q->wh)
				return -1;
		}
		if (q->r->load >= 0)
			e->n_biases++;
	}
	if (scratch)
		e->scratch = rt_calloc(scratch, sizeof *e->scratch);
	e->opt = new_optimizer(e);
	rt_timing("engine: AdamW moments allocated");
	if (!e->opt || init_params(e))
		return -1;
	rt_timing("engine: parameters initialised");
	rt_rng_seed(&e->rng, e->seed);
	if (c->resume && load_checkpoint(e, c->resume))
		return -1;
	e->first_step = e->step;
	e->sched = c->sched;
	if (e->sched.warmup >= e->total)
		e->sched.warmup = e->total / 10;
	e->sched.total = e->total;
	e->eval_every = c->eval_every >= 0 ? c->eval_every
			: (e->total >= 10 ? e->total / 10 : e->total);
	e->ckpt_every = c->ckpt_every > 0 ? c->ckpt_every : 500;
	if (load_data(e))
		return -1;
	rt_timing("engine: data loaded");
	e->gbatch = p->batch * p->microbatches * p->layout.dp;
	size_t bt = (size_t)e->gbatch * (size_t)p->seq;
	e->gtok = rt_calloc(bt, sizeof *e->gtok);
	e->gtgt = rt_calloc(bt, sizeof *e->gtgt);
	if (e->lead) {
		fprintf(stderr, "train: batch %d x seq %d", p->batch, p->seq);
		if (p->microbatches > 1 || p->layout.dp > 1)
			fprintf(stderr, " x %d micro-batch%s x dp %d", p->microbatches,
				p->microbatches == 1 ? "" : "es", p->layout.dp);
		fprintf(stderr, " = %d tokens a step, %" PRId64 " steps, lr %g (warm-up %" PRId64
			", cosine to %g), wd %g, clip %g, backend %s, seed %" PRIu64 "\n",
			e->gbatch * p->seq, e->total, (double)e->sched.lr_max, e->sched.warmup,
			(double)e->sched.lr_min, (double)c->adamw.weight_decay, (double)c->clip,
			c->backend ? c->backend : "?", e->seed);
		if (c->ema > 0)
			fprintf(stderr, "ema: a moving average of the weights, decay %g, in host "
				"memory, saved in checkpoints as ema.NAME\n", (double)c->ema);
		if (p->world > 1)
			fprintf(stderr, "layout: %d ranks = pp %d x dp %d (ep %d inside dp), schedule "
				"%s%s\n", p->world, p->layout.pp, p->layout.dp, p->layout.ep,
				p->schedule, c->zero_note ? ", AdamW states sharded (zero 1)" : "");
		if (c->resume)
			fprintf(stderr, "resume: from %s at step %" PRId64 " of %" PRId64 "\n",
				c->resume, e->step, e->total);
	}
	return 0;
}

static void teardown(struct engine *e)
{
	struct rt_device *d = e->dev;
	for (int k = 0; e->ps && k < e->p->n_params; k++) {
		struct eparam *q = &e->ps[k];
		if (q->m)
			d->ops->free(d, q->m);
		if (q->v)
			d->ops->free(d, q->v);
		if (q->wh && q->wh != q->w)
			d->ops->host_free(d, q->wh);
		free(q->gs);
		free(q->ema);
	}
	if (e->opt)
		d->ops->optim_free(d, e->opt);
	free(e->scratch);
	free(e->ps);
	free(e->gtok);
	free(e->gtgt);
	rt_shard_free(&e->train);
	rt_shard_free(&e->val);
}

/* every rank stops together: 1 when any rank saw Ctrl-C */
static int agree_stop(struct engine *e, int mine)
{
	if (e->p->world == 1)
		return mine;
	double v = mine;
	sum_world(e, &v, 1);
	return v > 0;
}

int rt_train(struct rt_program *p, struct rt_exec *x, const struct rt_train_config *c)
{
	struct engine e = { .p = p, .x = x, .c = c };
	struct rt_metrics *mx = NULL;
	int rc = 1;
	/* from here on if the command did not already (a Ctrl-C during the set-up stops
	 * the training after its first step) */
	catch_interrupts();
	if (setup(&e))
		goto done;
	if (c->metrics && e.lead && !(mx = rt_metrics_open(c->metrics, c->resume != NULL, stderr)))
		goto done;
	if (e.step >= e.total) {
		if (e.lead)
			fprintf(stderr, "train: the checkpoint is at step %" PRId64 " of %" PRId64
				": nothing left to do (--steps N to train longer)\n", e.step, e.total);
		rc = 0;
		goto done;
	}
	if (c->stop_at >= 0 && e.step >= c->stop_at) {
		if (e.lead)
			fprintf(stderr, "train: the checkpoint is at step %" PRId64 ", past --stop-at %"
				PRId64 ": nothing to do\n", e.step, c->stop_at);
		rc = 0;
		goto done;
	}
	struct rt_progress pg;
	int quiet = c->quiet || !e.lead;
	rt_progress_init(&pg, stderr, e.total, quiet ? 0 : -1);
	if (quiet)
		pg.every = INT64_MAX;
	int64_t first = e.step;
	rt_timing("engine: step 1 begins");
	double t0 = rt_now(), c0 = cpu_now(), tokens = (double)e.gbatch * p->seq;
	int saved = 0;
	/* --trace: the step asked for, else the third of the run (past the first steps'
	 * one-time costs), or its last */
	int64_t trace_at = c->trace_step > 0 ? c->trace_step : first + 3;
	if (c->trace && c->trace_step > 0 && (trace_at <= first || trace_at > e.total)) {
		if (e.lead)
			fprintf(stderr, "sluice train: --trace-step %" PRId64 ": this run trains "
				"steps %" PRId64 " to %" PRId64 "\n", trace_at, first + 1, e.total);
		goto done;
	}
	if (trace_at > e.total)
		trace_at = e.total;
	double *trace_t = NULL, trace_base = 0;
	while (e.step < e.total) {
		double ts = rt_now();
		double loss, lm, gnorm;
		float lr;
		e.ep_overflows = e.ep_reruns = 0;
		if (c->trace && e.step + 1 == trace_at) {
			double sync = 0;
			sum_world(&e, &sync, 1); /* every rank starts the step together */
			trace_t = rt_calloc((size_t)e.p->n_actions * 2 + 1, sizeof *trace_t);
			rt_exec_trace(e.x, trace_t);
			trace_base = rt_now();
		}
		struct rt_exec *traced = e.x;
		int failed = step_once(&e, &loss, &lm, &lr, &gnorm);
		if (trace_t) {
			rt_exec_trace(traced, NULL);
			if (!failed && e.x != traced) {
				/* run again on a program rebuilt for an expert overflow: the next */
				if (e.lead)
					fprintf(stderr, "trace: step %" PRId64 " ran again with larger "
						"expert buffers; the trace is of the next step\n", e.step + 1);
				trace_at++;
			} else if (!failed) {
				failed = trace_write(&e, trace_t, trace_base, e.step + 1);
			}
			free(trace_t);
			trace_t = NULL;
		}
		if (failed)
			goto done;
		p = e.p; /* rebuilt after an expert-parallel overflow */
		x = e.x;
		if (e.step - first < 3) {
			char what[64];
			snprintf(what, sizeof what, "engine: step %" PRId64 " done", e.step + 1);
			rt_timing(what);
		}
		if (mx) {
			rt_metrics_begin(mx);
			rt_metrics_num(mx, "step", (double)e.step + 1);
			rt_metrics_num(mx, "loss", loss);
			if (p->lm_loss != p->loss)
				rt_metrics_num(mx, "lm_loss", lm);
			rt_metrics_num(mx, "lr", lr);
			rt_metrics_num(mx, "grad_norm", gnorm);
		}
		balance_biases(&e, mx);
		ema_snapshot(&e);
		e.step++;
		double now = rt_now(), dt = now - ts;
		double tps = tokens / dt;
		double eta = (now - t0) / (double)(e.step - first) * (double)(e.total - e.step);
		double val = NAN;
		if (e.has_val && e.eval_every > 0 &&
		    (e.step % e.eval_every == 0 || e.step == e.total)) {
			if (eval_val(&e, &val))
				goto done;
			p = e.p;
			x = e.x;
			char lr_s[64] = "";
			if (e.n_biases || p->world > 1)
				if (e.load_ratio > 0)
					snprintf(lr_s, sizeof lr_s, ", expert load max/mean %.2f",
						 e.load_ratio);
			if (e.lead)
				rt_progress_note(&pg, "step %" PRId64 ": val_loss %.4f (train %.4f%s)",
						 e.step, val, lm, lr_s);
		}
		if (mx) {
			rt_metrics_num(mx, "tokens_per_s", tps);
			if (c->flops_per_token > 0)
				rt_metrics_num(mx, "gflops", tps * c->flops_per_token / 1e9);
			if (!isnan(val))
				rt_metrics_num(mx, "val_loss", val);
			rt_metrics_num(mx, "time_s", now - t0);
			rt_metrics_num(mx, "cpu_s", cpu_now() - c0);
			if (p->layout.ep > 1) {
				/* count exchanges that overflowed (each a layer and micro-batch of
				 * one group, training or validation), steps run again, and the
				 * receive buffers in even shares (0: the worst case) */
				rt_metrics_num(mx, "ep_overflows", (double)e.ep_overflows);
				rt_metrics_num(mx, "ep_reruns", (double)e.ep_reruns);
				rt_metrics_num(mx, "ep_capacity", e.ep_capacity);
			}
			if (rt_metrics_end(mx))
				fprintf(stderr, "sluice train: warning: writing %s failed\n", c->metrics);
		}
		if (!quiet)
			rt_progress_step(&pg, e.step, (float)loss, p->lm_loss != p->loss ? lm : NAN,
					 tokens * (double)(e.step - first) / (now - t0), eta);
		int at_stop = c->stop_at >= 0 && e.step >= c->stop_at;
		int stop = agree_stop(&e, interrupted || stop_file_made() || at_stop);
		if (stop && !at_stop)
			interrupted = 1; /* another rank saw it */
		if (stop || e.step % e.ckpt_every == 0 || e.step == e.total) {
			if (save_checkpoint(&e))
				goto done;
			saved = 1;
		}
		if (stop) {
			if (!quiet)
				rt_progress_done(&pg);
			if (e.lead)
				fprintf(stderr, "%s after step %" PRId64 " of %" PRId64 ": checkpoint "
					"saved in %s/%s\ncontinue with: sluice train %s --resume %s\n",
					interrupted ? "interrupted" : "stopped", e.step, e.total,
					c->out_dir, RT_CKPT_FILE, c->model, c->out_dir);
			rc = 0;
			goto done;
		}
	}
	if (!quiet)
		rt_progress_done(&pg);
	double el = rt_now() - t0;
	if (e.lead)
		fprintf(stderr, "done: %" PRId64 " steps in %.1f s, %.0f tokens/s%s%s/%s\n",
			e.step - first, el, tokens * (double)(e.step - first) / el,
			saved ? ", checkpoint " : "", saved ? c->out_dir : "", saved ? RT_CKPT_FILE : "");
	if (e.lead && e.ep_reruns_all)
		fprintf(stderr, "ep: %" PRId64 " count exchange%s overflowed a receive buffer; %"
			PRId64 " step%s run again, now on buffers of ep_capacity %g\n",
			e.ep_overflows_all, e.ep_overflows_all == 1 ? "" : "s", e.ep_reruns_all,
			e.ep_reruns_all == 1 ? "" : "s", e.ep_capacity);
	if (p->world > 1) {
		struct rt_exec_stats st;
		rt_exec_stats(x, &st);
		fprintf(stderr, "rank %d (stage %d): compute %.2f s, communication %.2f s, "
			"waiting %.2f s", p->rank, p->stage, st.compute_s, st.comm_s, st.wait_s);
		/* what 'sluice check' predicts as "all-to-all" a micro-batch (every step the
		 * program ran: validation runs it too) */
		int64_t mbs = e.exec_steps * p->microbatches;
		if (st.a2a_bytes && mbs > 0)
			fprintf(stderr, ", all-to-all sent %.3f MiB a micro-batch",
				(double)st.a2a_bytes / mbs / 1048576.0);
		fputc('\n', stderr);
	}
	rc = 0;
done:
	release_interrupts();
	rt_metrics_close(mx);
	teardown(&e);
	return rc;
}
