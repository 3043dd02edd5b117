/* program.c - a rank's compiled program from the IR (see codegen/program.h).
 *
 * Takes: a graph after autodiff whose ops carry their pipeline stage, the layout, a
 * rank and a backend.  Gives: the runtime's program for that rank.
 *
 * Chunks.  With one stage the whole step is one chunk (forward and backward), so a
 * single-rank run compiles exactly the graph it always did.  With pp ranks, the model
 * has the schedule's stages (pp; 2 pp for dualpipev) and each stage has up to three
 * units: its forward (phase FWD), its backward, and, when the schedule defers weight
 * gradients (zb1p, DualPipe's zero-bubble halves), the backward split by autodiff's
 * phases into input-grads (BWD_B) and weight-grads (BWD_W).  A rank builds the units
 * of the stages it runs.  Inputs, parameters and constants are copied into every chunk
 * that reads them; every other value crossing a chunk boundary becomes a buffer:
 *   - made and read on the same rank (forward to backward, or between two stages that
 *     the rank holds): SAVED, with as many micro-batch slots as the action list keeps
 *     it live (size_slots);
 *   - made on one rank, read on another: sent right after the unit that makes it,
 *     received before the first unit that reads it.  Everything a unit sends one
 *     stage travels as one bundle per micro-batch, in value order, so sends and
 *     receives pair up in the same order on both sides without tags (NCCL has none);
 *     the peer is the rank that runs the other stage for that micro-batch (DualPipe
 *     runs a stage on two ranks, by the micro-batch's direction).
 * Graph outputs become GRAD ("grad.P", summed over micro-batches) or OUTPUT buffers
 * (the losses, expert loads).
 *
 * Gradients.  A parameter read by stages on several ranks (an embedding shared with the
 * MTP module; any parameter under DualPipe, whose stages run on two ranks) is held by
 * all of them; each holder keeps a GRAD buffer, the ranks running the stage that makes
 * "grad.P" fill it and the others contribute zeros to one sum over every rank holding
 * it, so all copies take the same AdamW step.  Where grad.P's last sum adds a part
 * made on another stage (the output head's part of an embedding it shares), that stage
 * sums its part into its own copy instead of sending it every micro-batch, and the sum
 * over the holders adds the parts (find_partials).  A parameter of one rank sums its
 * gradient over that stage's data-parallel ranks.
 *
 * Schedule.  The action lists of passes/schedule.c, one per pipeline rank: each of its
 * F, B, W, BW (B then W) and FB (F, then the backward) actions runs the units of its
 * stage for its micro-batch, with the receives of the bundles that unit is the first to
 * read before it and its sends after it.
 *
 * Communication inside a stage (expert parallelism's all-to-alls, placed by
 * passes/expert_parallel.c) cuts the stage's forward and backward into more chunks:
 * see "Items" below.
 *
 * With exchanges to hide (ep > 1), an FB action's forward and backward (and its W,
 * when split) run interleaved in DeepSeek-V3's order of parts: see emit_pair.
 *
 * Left alone on purpose: without exchanges an FB action runs its forward, then its
 * backward; the sends of a pair go after all of it; recomputation is not composed
 * with the schedules. */
#include "program.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"
#include "runtime/rt.h"

/* ---- stages ------------------------------------------------------------------ */

static int layer_of(const char *scope)
{
	if (!scope || strncmp(scope, "layers.", 7))
		return -1;
	char *end;
	long n = strtol(scope + 7, &end, 10);
	if (end == scope + 7 || (*end && *end != '.') || n < 0 || n > 1000000)
		return -1;
	return (int)n;
}

int cg_count_layers(const struct ir_graph *g)
{
	int n = 0;
	for (int i = 0; i < g->n_ops; i++) {
		int l = layer_of(g->ops[i]->scope);
		if (l + 1 > n)
			n = l + 1;
	}
	return n;
}

static int is_source(const struct ir_op *op)
{
	return op->kind == IR_OP_INPUT || op->kind == IR_OP_PARAM || op->kind == IR_OP_CONST;
}

static int is_fwd(const struct ir_op *op)
{
	return op->phase == IR_PHASE_FWD;
}

int cg_assign_stages(struct ir_graph *g, const struct cg_layout *l, FILE *err)
{
	int pp = l->stages ? l->stages : l->pp, nl = cg_count_layers(g);
	if (pp > 1 && nl < pp) {
		fprintf(err, "error: %d pipeline stages need at least %d layers; the model has %d\n",
			pp, pp, nl);
		return -1;
	}
	if (l->layer_stage && l->n_layers != nl) {
		fprintf(err, "error: internal: the partition covers %d layers, the graph has %d\n",
			l->n_layers, nl);
		return -1;
	}
	int *stage_of = rt_calloc((size_t)g->n_values + 1, sizeof *stage_of);
	for (int i = 0; i < g->n_values; i++)
		stage_of[i] = -1;
	/* layer ops, and forward/backward ops that follow their inputs */
	for (int i = 0; i < g->n_ops; i++) {
		struct ir_op *op = g->ops[i];
		op->stage = -1;
		if (is_source(op))
			continue;
		int lay = layer_of(op->scope);
		if (lay >= 0) {
			op->stage = pp == 1 ? 0 : l->layer_stage ? l->layer_stage[lay]
								 : (int)((int64_t)lay * pp / nl);
		} else {
			int s = -1;
			for (int k = 0; k < op->n_in; k++) {
				int is = stage_of[op->in[k]->id];
				if (is < 0)
					continue;
				if (s < 0 || (is_fwd(op) ? is > s : is < s))
					s = is;
			}
			op->stage = s;
		}
		for (int k = 0; k < op->n_out; k++)
			stage_of[op->out[k]->id] = op->stage;
	}
	/* ops fed only by sources (and sources): where they are first needed */
	for (int i = g->n_ops - 1; i >= 0; i--) {
		struct ir_op *op = g->ops[i];
		if (op->stage >= 0)
			continue;
		int s = -1;
		for (int j = i + 1; j < g->n_ops; j++) {
			const struct ir_op *u = g->ops[j];
			for (int k = 0; k < u->n_in; k++)
				for (int o = 0; o < op->n_out; o++)
					if (u->in[k] == op->out[o] && u->stage >= 0 &&
					    (s < 0 || u->stage < s))
						s = u->stage;
		}
		op->stage = s < 0 ? 0 : s;
		for (int k = 0; k < op->n_out; k++)
			stage_of[op->out[k]->id] = op->stage;
	}
	/* a forward value may only flow down the stages, a backward one only up */
	int rc = 0;
	for (int i = 0; i < g->n_ops && !rc; i++) {
		const struct ir_op *op = g->ops[i];
		if (is_source(op))
			continue;
		for (int k = 0; k < op->n_in; k++) {
			const struct ir_op *d = op->in[k]->def;
			if (!d || is_source(d) || d->stage == op->stage)
				continue;
			/* forward values go to later stages, backward ones to earlier
			 * backwards: so everything one stage sends another comes from one
			 * chunk of it */
			int ok = is_fwd(d) ? d->stage < op->stage
					   : (!is_fwd(op) && d->stage > op->stage);
			if (!ok) {
				fprintf(err, "error: the stage split sends %%%d (%s, stage %d, %s) to "
					"%s (stage %d, %s), against the order a pipeline runs in\n",
					op->in[k]->id, ir_op_name(d->kind), d->stage,
					ir_phase_name(d->phase), ir_op_name(op->kind), op->stage,
					ir_phase_name(op->phase));
				rc = -1;
				break;
			}
		}
	}
	free(stage_of);
	return rc;
}

/* ---- chunk code: a backend's executor behind struct rt_chunk_impl ------------- */

struct chunk_code {
	const struct cg_backend *be;
	struct ir_graph *g;       /* the chunk's own graph */
	struct cg_exec *ex;
	int n_in, n_out;
	int *in_ids, *out_ids;    /* value ids in g */
};

static int chunk_run(void *code, void *const *in, void **out)
{
	struct chunk_code *c = code;
	for (int i = 0; i < c->n_in; i++)
		c->be->bind(c->ex, c->in_ids[i], in[i]);
	if (c->be->run(c->ex))
		return -1;
	for (int i = 0; i < c->n_out; i++) {
		out[i] = c->be->tensor(c->ex, c->out_ids[i]);
		if (!out[i])
			return -1;
	}
	return 0;
}

static void chunk_free(void *code)
{
	struct chunk_code *c = code;
	if (c->ex)
		c->be->free(c->ex);
	if (c->g)
		ir_graph_free(c->g);
	free(c->in_ids);
	free(c->out_ids);
	free(c);
}

static int64_t chunk_arena(const void *code)
{
	const struct chunk_code *c = code;
	return c->be->arena_bytes && c->ex ? c->be->arena_bytes(c->ex) : 0;
}

/* an output's storage, when the backend fixed it at compile time (the LLVM backend
 * does; the reference allocates on run, and says NULL then) */
static void *chunk_output(void *code, int i)
{
	struct chunk_code *c = code;
	return c->be == &cg_backend_ref ? NULL : c->be->tensor(c->ex, c->out_ids[i]);
}

static const struct rt_chunk_impl chunk_impl = { "cg", chunk_run, chunk_free, chunk_arena,
						 chunk_output };

/* ---- the builder ------------------------------------------------------------- */

/* Items.  The ops of one "unit" (a stage's forward, or its backward; with one stage
 * the whole step) run as a sequence of chunks cut by the communication ops inside it
 * (expert parallelism's all-to-alls): an op's segment is the number of communication
 * ops on the longest path to it within its unit, chunk (unit, seg) holds the compute
 * ops of segment seg, and the communication ops of segment seg run after it.  A W
 * unit has no communication; when overlapped pairs run it beside its B unit
 * (w_in_pair), its ops take the segments of the B unit instead, counted through the
 * B ops they read, so W chunk seg reads nothing that B chunk seg has not made. */
#define SEG_MAX (1 << 16)

/* A stage's units: its forward, its backward (all of it, or its input-grad part when
 * the schedule splits it) and its weight-grad part (empty unless split). */
enum { UNIT_F, UNIT_B, UNIT_W, UNITS_PER_STAGE };

/* What a chunk counts as in an overlapped pair (key_parts): attention's side of a
 * layer, the experts' side, or neither (the few ops of a dispatch between its counts'
 * exchange and its rows', which go with the exchanges). */
enum { PART_ATTN, PART_MLP, PART_GLUE };

struct builder {
	const struct ir_graph *g;
	const struct cg_layout *l;
	struct rt_program *p;
	int rank, pr, dpi, pp, M; /* pr: this rank's place in the pipeline, rank / dp */
	int S;                    /* the model's stages: pp, or 2 pp (dualpipev) */
	const struct cg_backend *be;
	const struct pass_schedule *sched; /* NULL with one stage */
	uint64_t mine;            /* the stages this rank runs (for some micro-batch) */
	uint64_t *stage_ranks;    /* per stage: the pipeline ranks that run it */
	int split;                /* the schedule runs input- and weight-grads apart */
	int fb;                   /* one stage with expert parallelism: the forward of a
				     micro-batch beside the backward of the one before */
	int overlap;              /* an FB pair's units run interleaved (expert
				     parallelism: exchanges to hide), else one after the
				     other */
	int w_in_pair;            /* FB pairs overlap and the backward is split: each
				     stage's W unit is cut where its B unit is, so that a
				     pair runs each part's W right after its B */
	int whole;                /* one stage, each micro-batch's step one unit */
	int segmented;            /* communication inside a stage cuts its units */
	int *unit_of_op;          /* per op: stage*3 + part (0 with one stage); -1 sources */
	int *seg_of_op;           /* per op: its segment within the unit */
	int *unit_of_val;         /* per value: the unit of its op, -1 sources */
	int *buf_of_val;          /* per value: this rank's buffer, -1 none */
	int *obuf_of_val;         /* per value: the OUTPUT or GRAD buffer of a graph output
				     that other chunks read too (then buf_of_val is SAVED) */
	int *out_name;            /* per value: index in g->outputs, -1 none */
	int *partial_of;          /* per value: the gradient output it is another stage's
				     part of (see "Gradients" above), -1 none */
	int *gbuf_of_val;         /* per gradient output: its GRAD buffer here, -1 none */
	int g_world, g_pp, g_dp, g_ep, g_edp; /* group indices */
	int dual;                 /* values pass both ways between two ranks (two stages a
				     rank, DualPipe's two directions) */
	int need_w;               /* weight-grad values pass between stages */
	int chan[UNITS_PER_STAGE][2]; /* per (part that makes the values, toward a lower
				     rank): the group they travel on */
	int *use_start, *use_op; /* the ops reading value v: use_op[use_start[v] .. [v+1]) */
};

static int is_comm(const struct ir_op *op)
{
	return op->kind == IR_OP_ALL_TO_ALL || op->kind == IR_OP_ALL_TO_ALLV;
}

static int unit_stage(const struct builder *b, int unit)
{
	return b->whole ? 0 : unit / UNITS_PER_STAGE;
}

static int runs(const struct builder *b, int stage)
{
	return (int)(b->mine >> stage & 1);
}

static int unit_of(const struct builder *b, const struct ir_op *op)
{
	if (b->whole)
		return 0;
	int part = is_fwd(op) ? UNIT_F : b->split && op->phase == IR_PHASE_BWD_W ? UNIT_W
										 : UNIT_B;
	return op->stage * UNITS_PER_STAGE + part;
}

static enum rt_dtype rt_dtype_of(enum ir_dtype t)
{
	switch (t) {
	case IR_I32: return RT_DT_I32;
	case IR_I64: return RT_DT_I64;
	case IR_BF16: return RT_DT_BF16;
	case IR_F16: return RT_DT_F16;
	case IR_F8E4M3: return RT_DT_F8E4M3;
	case IR_F8E5M2: return RT_DT_F8E5M2;
	default: return RT_DT_F32;
	}
}

static int add_value_buffer(struct builder *b, const struct ir_value *v, const char *name,
			    enum rt_buf_role role, int slots, int param)
{
	enum rt_dtype t = rt_dtype_of(v->dtype);
	enum rt_dtype held = b->be && b->be->narrow ? t : RT_DT_F32;
	struct rt_buffer rb = { .name = name, .dtype = t, .stored = held, .role = role,
				.rank = v->shape.rank, .slots = slots, .param = param };
	memcpy(rb.shape, v->shape.dim, sizeof rb.shape[0] * (size_t)v->shape.rank);
	return rt_program_add_buffer(b->p, &rb);
}

/* does an op of unit u read value v? */
static int unit_reads(const struct builder *b, int u, const struct ir_value *v)
{
	for (int k = b->use_start[v->id]; k < b->use_start[v->id + 1]; k++)
		if (b->unit_of_op[b->use_op[k]] == u)
			return 1;
	return 0;
}

/* who reads each value, once for the whole build */
static void index_uses(struct builder *b)
{
	const struct ir_graph *g = b->g;
	int nv = g->n_values, total = 0;
	b->use_start = rt_calloc((size_t)nv + 2, sizeof *b->use_start);
	for (int i = 0; i < g->n_ops; i++)
		for (int k = 0; k < g->ops[i]->n_in; k++) {
			b->use_start[g->ops[i]->in[k]->id + 1]++;
			total++;
		}
	for (int v = 0; v < nv; v++)
		b->use_start[v + 1] += b->use_start[v];
	b->use_op = rt_calloc((size_t)total + 1, sizeof *b->use_op);
	int *fill = rt_calloc((size_t)nv + 1, sizeof *fill);
	for (int i = 0; i < g->n_ops; i++)
		for (int k = 0; k < g->ops[i]->n_in; k++) {
			int v = g->ops[i]->in[k]->id;
			b->use_op[b->use_start[v] + fill[v]++] = i;
		}
	free(fill);
}

static void copy_attrs(struct ir_graph *dst, struct ir_op *to, const struct ir_op *from)
{
	for (int a = 0; a < from->n_attr; a++) {
		const struct ir_attr *at = &from->attr[a];
		switch (at->kind) {
		case IR_ATTR_INT: ir_op_set_int(dst, to, at->name, at->i); break;
		case IR_ATTR_FLOAT: ir_op_set_float(dst, to, at->name, at->f); break;
		case IR_ATTR_STR: ir_op_set_str(dst, to, at->name, at->s); break;
		case IR_ATTR_INTS: ir_op_set_ints(dst, to, at->name, at->n, at->ints); break;
		}
	}
}

/* A gradient output's GRAD buffer on this rank, made the first time it is asked for:
 * by the chunk that makes the output, by one that makes a part of it (find_partials),
 * or for the parameter table (a holder that makes neither adds zeros to the sum). */
static int grad_buffer(struct builder *b, const struct ir_value *gv)
{
	if (b->gbuf_of_val[gv->id] < 0) {
		const char *name = b->g->output_names[b->out_name[gv->id]];
		b->gbuf_of_val[gv->id] = add_value_buffer(b, gv, name, RT_BUF_GRAD, 1, -1);
	}
	return b->gbuf_of_val[gv->id];
}

/* A parameter's gradient whose last sum adds a part made on another stage (an
 * embedding shared with the output head: the head's part made on the last stage,
 * added to the first stage's): instead of that part travelling to the adding stage
 * every micro-batch, the stage that makes it sums it over the micro-batches into its
 * own copy of the gradient, the adding stage adds zeros in its place, and the sum over
 * the parameter's holders after the step adds the two (see "Gradients" above).  The
 * same total in another order of the sums; no stage's weight-gradient chunk waits for
 * another's (zb1p defers those).  Only a part read by that sum alone, of its shape. */
static void find_partials(struct builder *b)
{
	const struct ir_graph *g = b->g;
	for (int i = 0; i < g->n_outputs && !b->whole; i++) {
		const struct ir_value *gv = g->outputs[i];
		if (!gv || strncmp(g->output_names[i], "grad.", 5) || !gv->def ||
		    gv->def->kind != IR_OP_ADD || gv->def->n_in != 2 || b->unit_of_val[gv->id] < 0)
			continue;
		int s = unit_stage(b, b->unit_of_val[gv->id]);
		for (int k = 0; k < 2; k++) {
			const struct ir_value *v = gv->def->in[k], *w = gv->def->in[1 - k];
			int u = b->unit_of_val[v->id], uw = b->unit_of_val[w->id];
			if (u < 0 || unit_stage(b, u) == s || uw < 0 || unit_stage(b, uw) != s ||
			    v->dtype != gv->dtype || !ir_shape_eq(&v->shape, &gv->shape) ||
			    b->use_start[v->id + 1] - b->use_start[v->id] != 1 ||
			    b->out_name[v->id] >= 0)
				continue;
			b->partial_of[v->id] = gv->id;
		}
	}
}

/* The parts of chunk `key` (passes/chunk.c) when communication cuts the units: the
 * compute ones (attn, mlp, in that order) when it has any, for the ops of a dispatch
 * or a combine that are not communication run in the chunks beside it; else the
 * dispatch or combine it serves.  Their number; *part says which the chunk counts as
 * in an overlapped pair (emit_pair): PART_MLP for the experts' side alone, PART_GLUE
 * for none of the compute ones, else PART_ATTN (so too when nothing cuts the units). */
static int key_parts(const struct builder *b, int key, const char *parts[4], int *part)
{
	const struct ir_graph *g = b->g;
	int n_parts = 0, compute = 0;
	for (int i = 0; b->segmented && i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (b->unit_of_op[i] < 0 || is_comm(op) ||
		    b->unit_of_op[i] * SEG_MAX + b->seg_of_op[i] != key)
			continue;
		const char *pt = ir_op_str(op, "part", NULL);
		int seen = !pt;
		for (int k = 0; k < n_parts && !seen; k++)
			seen = !strcmp(parts[k], pt);
		if (!seen && n_parts < 4)
			parts[n_parts++] = pt;
		compute |= !seen && (!strcmp(pt, "attn") || !strcmp(pt, "mlp"));
	}
	for (int k = 0; compute && k < n_parts;)
		if (strcmp(parts[k], "attn") && strcmp(parts[k], "mlp"))
			parts[k] = parts[--n_parts];
		else
			k++;
	if (n_parts == 2 && !strcmp(parts[0], "mlp")) { /* attn+mlp, in that order */
		parts[0] = parts[1];
		parts[1] = "mlp";
	}
	if (part)
		*part = n_parts && !compute ? PART_GLUE
			: n_parts == 1 && !strcmp(parts[0], "mlp") ? PART_MLP : PART_ATTN;
	return n_parts;
}

/* The compute ops of chunk `key` as a graph of their own, compiled by be; adds the
 * chunk to the program and returns its index (-1 on failure, -2 when it has no ops).
 * Buffers of every value it reads or writes across its boundary must exist. */
static int build_chunk(struct builder *b, int key, const struct cg_backend *be, FILE *err)
{
	const struct ir_graph *g = b->g;
	struct ir_graph *cg = ir_graph_new(g->model ? g->model : "chunk");
	for (int i = 0; i < g->n_settings; i++)
		ir_graph_set(cg, g->settings[i].name, g->settings[i].num,
			     g->settings[i].is_str ? g->settings[i].str : NULL);
	struct ir_value **map = rt_calloc((size_t)g->n_values + 1, sizeof *map);
	int n_in = 0, n_out = 0, n_ops = 0;
	int *in_bufs = rt_calloc((size_t)g->n_values + 1, sizeof *in_bufs);
	int *in_ids = rt_calloc((size_t)g->n_values + 1, sizeof *in_ids);
	int *out_bufs = rt_calloc((size_t)g->n_values + 1, sizeof *out_bufs);
	int *out_ids = rt_calloc((size_t)g->n_values + 1, sizeof *out_ids);
	struct ir_value **ins = NULL;
	int cap_ins = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (b->unit_of_op[i] < 0 || is_comm(op) ||
		    b->unit_of_op[i] * SEG_MAX + b->seg_of_op[i] != key)
			continue;
		n_ops++;
		if (op->n_in > cap_ins) {
			cap_ins = op->n_in;
			ins = rt_realloc(ins, sizeof *ins * (size_t)cap_ins);
		}
		for (int k = 0; k < op->n_in; k++) {
			const struct ir_value *v = op->in[k];
			if (b->partial_of[v->id] == op->out[0]->id) {
				/* another stage's part of this gradient: it sums that itself */
				ir_graph_set_context(cg, op->loc, op->scope);
				ins[k] = ir_op1(cg, IR_OP_CONST, 0, NULL, v->dtype, v->shape);
				ir_op_set_float(cg, ins[k]->def, "value", 0.0);
				continue;
			}
			if (!map[v->id]) {
				/* from outside the chunk: a copied source, or a buffer's input */
				const struct ir_op *d = v->def;
				ir_graph_set_context(cg, d->loc, d->scope);
				if (d->kind == IR_OP_CONST) {
					map[v->id] = ir_op1(cg, IR_OP_CONST, 0, NULL, v->dtype, v->shape);
					copy_attrs(cg, map[v->id]->def, d);
				} else {
					RT_ASSERT(b->buf_of_val[v->id] >= 0);
					enum ir_opkind k2 = d->kind == IR_OP_PARAM ? IR_OP_PARAM
										   : IR_OP_INPUT;
					map[v->id] = ir_op1(cg, k2, 0, NULL, v->dtype, v->shape);
					struct ir_op *nd = map[v->id]->def;
					if (d->kind == IR_OP_INPUT || d->kind == IR_OP_PARAM) {
						copy_attrs(cg, nd, d);
						nd->path = d->path ? ir_strdup(cg->arena, d->path) : NULL;
					} else {
						ir_op_set_str(cg, nd, "name",
							      ir_sprintf(cg->arena, "v%d", v->id));
					}
					nd->phase = d->phase;
					in_bufs[n_in] = b->buf_of_val[v->id];
					in_ids[n_in++] = map[v->id]->id;
				}
				map[v->id]->name = v->name ? ir_strdup(cg->arena, v->name) : NULL;
			}
			ins[k] = map[v->id];
		}
		ir_graph_set_context(cg, op->loc, op->scope);
		struct ir_op *no = ir_op_new(cg, op->kind, op->n_in, ins, op->n_out);
		copy_attrs(cg, no, op);
		no->phase = op->phase;
		no->stage = op->stage;
		no->path = op->path ? ir_strdup(cg->arena, op->path) : NULL;
		for (int o = 0; o < op->n_out; o++) {
			const struct ir_value *v = op->out[o];
			no->out[o]->dtype = v->dtype;
			no->out[o]->shape = v->shape;
			no->out[o]->name = v->name ? ir_strdup(cg->arena, v->name) : NULL;
			map[v->id] = no->out[o];
			if (b->obuf_of_val[v->id] >= 0) {
				ir_graph_add_output(cg, g->output_names[b->out_name[v->id]], no->out[o]);
				out_bufs[n_out] = b->obuf_of_val[v->id];
				out_ids[n_out++] = no->out[o]->id;
			}
			if (b->buf_of_val[v->id] >= 0) {
				const char *nm = b->out_name[v->id] >= 0 && b->obuf_of_val[v->id] < 0
							 ? g->output_names[b->out_name[v->id]]
							 : ir_sprintf(cg->arena, "v%d", v->id);
				ir_graph_add_output(cg, nm, no->out[o]);
				out_bufs[n_out] = b->buf_of_val[v->id];
				out_ids[n_out++] = no->out[o]->id;
			}
		}
	}
	free(ins);
	free(map);
	int unit = key / SEG_MAX, seg = key % SEG_MAX;
	int stage = unit_stage(b, unit);
	int part = unit % UNITS_PER_STAGE;
	enum rt_chunk_kind kind = b->whole ? RT_CHUNK_FWD_BWD
				  : part == UNIT_F ? RT_CHUNK_FWD
				  : part == UNIT_W ? RT_CHUNK_BWD_W
				  : b->split ? RT_CHUNK_BWD_B : RT_CHUNK_BWD;
	char name[96];
	int len;
	if (b->whole)
		len = snprintf(name, sizeof name, seg ? "step.%d" : "step", seg);
	else
		len = snprintf(name, sizeof name, seg ? "stage%d.%s.%d" : "stage%d.%s", stage,
			       rt_chunk_kind_name(kind), seg);
	const char *parts[4];
	int n_parts = key_parts(b, key, parts, NULL);
	for (int k = 0; k < n_parts && len > 0 && len < 80; k++)
		len += snprintf(name + len, sizeof name - (size_t)len, "%s%s", k ? "+" : ".",
				parts[k]);
	struct rt_chunk ch = { .name = name, .stage = stage, .kind = kind, .n_in = n_in,
			       .n_out = n_out, .in = in_bufs, .out = out_bufs };
	int rc = -1;
	if (!n_ops) {
		rc = -2;
	} else if (ir_verify(cg, err)) {
		fprintf(err, "error: internal: chunk %s does not verify\n", name);
	} else if (be) {
		struct chunk_code *cc = rt_calloc(1, sizeof *cc);
		cc->be = be;
		cc->g = cg;
		cc->n_in = n_in;
		cc->n_out = n_out;
		cc->in_ids = in_ids;
		cc->out_ids = out_ids;
		in_ids = out_ids = NULL;
		cg = NULL;
		cc->ex = be->compile(cc->g, err);
		if (!cc->ex) {
			chunk_free(cc);
		} else {
			ch.impl = &chunk_impl;
			ch.code = cc;
			rc = rt_program_add_chunk(b->p, &ch);
		}
	} else {
		rc = rt_program_add_chunk(b->p, &ch);
	}
	if (cg)
		ir_graph_free(cg);
	free(in_bufs);
	free(out_bufs);
	free(in_ids);
	free(out_ids);
	return rc;
}

/* vocabulary: rows of the tables the tokens index, classes of the losses */
static int find_vocab(const struct ir_graph *g)
{
	int vocab = 65536;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		const struct ir_value *ix = op->kind == IR_OP_GATHER_ROWS ? op->in[1]
					    : op->kind == IR_OP_CROSS_ENTROPY ? op->in[1] : NULL;
		if (!ix)
			continue;
		/* only when the index comes from a graph input through one-input ops */
		const struct ir_value *v = ix;
		for (int hops = 0; v->def && v->def->kind != IR_OP_INPUT && v->def->n_in >= 1 &&
				   hops < 64; hops++)
			v = v->def->in[0];
		if (!v->def || v->def->kind != IR_OP_INPUT)
			continue;
		const struct ir_shape *s = &op->in[0]->shape;
		int64_t n = op->kind == IR_OP_GATHER_ROWS ? s->dim[0] : s->dim[s->rank - 1];
		if (n < vocab)
			vocab = (int)n;
	}
	return vocab;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* The parameter table; holders[param op index] = bitmask of the pipeline ranks that
 * run a stage reading it (several: a parameter shared by stages, or a stage held by two
 * ranks as DualPipe does; its gradient is summed over them all). */
static int add_params(struct builder *b, const uint64_t *holders, FILE *err)
{
	const struct ir_graph *g = b->g;
	struct rt_program *p = b->p;
	/* groups for the sums over several stages: one per distinct set, in set order */
	uint64_t sets[64];
	int n_sets = 0;
	for (int i = 0; i < g->n_ops; i++) {
		uint64_t h = holders[i];
		if (g->ops[i]->kind != IR_OP_PARAM || !h || !(h & (h - 1)))
			continue;
		int k = 0;
		while (k < n_sets && sets[k] != h)
			k++;
		if (k == n_sets) {
			if (n_sets == 64) {
				fprintf(err, "error: too many sets of stages sharing parameters\n");
				return -1;
			}
			sets[n_sets++] = h;
		}
	}
	for (int a = 1; a < n_sets; a++)
		for (int c = a; c > 0 && sets[c - 1] > sets[c]; c--) {
			uint64_t t = sets[c];
			sets[c] = sets[c - 1];
			sets[c - 1] = t;
		}
	int set_group[64];
	for (int k = 0; k < n_sets; k++) {
		char name[96];
		int len = snprintf(name, sizeof name, "grad{");
		for (int s = 0, first = 1; s < b->pp && len < 80; s++)
			if (sets[k] >> s & 1) {
				len += snprintf(name + len, sizeof name - (size_t)len, "%s%d",
						first ? "" : ",", s);
				first = 0;
			}
		snprintf(name + len, sizeof name - (size_t)len, "}");
		int in = (int)(sets[k] >> b->pr & 1);
		set_group[k] = rt_program_add_group(p, name, in ? 0 : -1, b->rank);
	}
	/* expert weights held by several pipeline ranks (DualPipe's two copies of a
	 * stage): summed over those ranks among the ones holding the same rows */
	int set_egroup[64];
	for (int k = 0; k < n_sets; k++) {
		set_egroup[k] = -1;
		int experts = 0;
		for (int i = 0; i < g->n_ops && !experts; i++)
			experts = g->ops[i]->kind == IR_OP_PARAM && holders[i] == sets[k] &&
				  ir_op_int(g->ops[i], "ep_global_rows", 0);
		if (!experts || b->l->ep == 1)
			continue;
		const char *gname = p->groups[set_group[k]].name;
		char name[112];
		snprintf(name, sizeof name, "%s.experts", gname);
		int in = (int)(sets[k] >> b->pr & 1);
		set_egroup[k] = rt_program_add_group(p, name, in ? b->dpi % b->l->ep : -1, b->rank);
	}
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind != IR_OP_PARAM || !(holders[i] >> b->pr & 1))
			continue;
		const struct ir_value *v = op->out[0];
		if (!ir_dtype_is_float(v->dtype)) {
			fprintf(err, "error: parameter %s is %s, not a float\n",
				op->path ? op->path : "?", ir_dtype_name(v->dtype));
			return -1;
		}
		struct rt_param r = { .path = op->path ? op->path
						       : ir_sprintf(g->arena, "param%d", v->id),
				      .rank = v->shape.rank, .grad = -1, .load = -1,
				      .load_group = -1, .reduce_group = -1 };
		memcpy(r.shape, v->shape.dim, sizeof r.shape[0] * (size_t)v->shape.rank);
		r.numel = ir_shape_numel(&v->shape);
		r.row0 = 0;
		r.rows = v->shape.rank ? v->shape.dim[0] : 1;
		const char *init = ir_op_str(op, "init", "normal");
		r.init = !strcmp(init, "zeros") ? RT_INIT_ZEROS : !strcmp(init, "ones") ? RT_INIT_ONES
			 : !strcmp(init, "uniform") ? RT_INIT_UNIFORM : RT_INIT_NORMAL;
		r.std = ir_op_float(op, "std", 0.02);
		r.std_given = ir_op_attr(op, "std") != NULL;
		r.fan_in = ir_op_int(op, "fan_in", 0);
		r.trainable = ir_op_int(op, "trainable", 1) != 0;
		r.decay = v->shape.rank >= 2;
		int lowest = __builtin_ctzll(holders[i]);
		r.owner = b->pr == lowest && b->dpi == 0;
		r.buf = b->buf_of_val[v->id];
		RT_ASSERT(r.buf >= 0);
		int multi = (holders[i] & (holders[i] - 1)) != 0;
		int64_t ep_rows = ir_op_int(op, "ep_global_rows", 0);
		if (ep_rows) {
			/* experts sharded over the EP group (passes/expert_parallel.c): this
			 * rank holds rows [row0, row0 + rows) of the global tensor; the ranks
			 * holding the same rows are its edp group */
			int ep = b->l->ep;
			if (v->shape.rank < 1 || v->shape.dim[0] * ep != ep_rows) {
				fprintf(err, "error: internal: expert parameter %s of %" PRId64 " rows "
					"over ep %d\n", r.path, ep_rows, ep);
				return -1;
			}
			r.rows = v->shape.dim[0];
			r.row0 = (int64_t)(b->dpi % ep) * r.rows;
			r.shape[0] = ep_rows;
			r.numel = r.numel / r.rows * ep_rows;
			r.owner = b->pr == lowest && b->dpi / ep == 0;
			if (multi) {
				int k = 0;
				while (sets[k] != holders[i])
					k++;
				r.reduce_group = set_egroup[k];
				RT_ASSERT(r.reduce_group >= 0);
			} else if (b->l->dp / ep > 1) {
				r.reduce_group = b->g_edp;
			}
		} else if (multi) {
			int k = 0;
			while (sets[k] != holders[i])
				k++;
			r.reduce_group = set_group[k];
		} else if (b->l->dp > 1) {
			r.reduce_group = b->g_dp;
		}
		/* ZeRO-1: the engine reduce-scatters the gradient over the group, steps its
		 * shard and all-gathers the weights; no all-reduce in the step */
		r.zero = b->l->zero && r.trainable && r.reduce_group >= 0;
		if (r.trainable) {
			const char *gname = ir_sprintf(g->arena, "grad.%s", r.path);
			struct ir_value *gv = ir_graph_output(g, gname);
			if (!gv) {
				fprintf(err, "error: no gradient output '%s' for parameter %s "
					"(autodiff makes one: a bug in sluice)\n", gname, r.path);
				return -1;
			}
			/* made on another stage: this copy adds zeros, or its stages' part */
			r.grad = grad_buffer(b, gv);
			p->bufs[r.grad].param = p->n_params;
		} else if (ends_with(r.path, ".gate.bias")) {
			r.scope = ir_strndup(g->arena, r.path, strlen(r.path) - strlen(".gate.bias"));
			r.gamma = (float)ir_op_float(op, "gamma", 0.001);
			struct ir_value *lv = ir_graph_output(g, ir_sprintf(g->arena, "load.%s",
									  r.scope));
			if (lv) {
				int64_t ln = ir_shape_numel(&lv->shape);
				if (ln <= 0 || ln % r.numel || !ir_dtype_is_float(lv->dtype)) {
					fprintf(err, "error: load.%s has %" PRId64 " elements, not a "
						"multiple of the %" PRId64 " experts of %s\n", r.scope,
						ln, r.numel, r.path);
					return -1;
				}
				r.load = b->obuf_of_val[lv->id] >= 0 ? b->obuf_of_val[lv->id]
								     : b->buf_of_val[lv->id];
				if (r.load < 0) {
					fprintf(err, "error: load.%s is made on another stage than its "
						"routing bias\n", r.scope);
					return -1;
				}
				/* summed where the bias's copies are, as its gradient would be */
				r.load_group = multi ? r.reduce_group : b->g_dp;
			}
		}
		p->bufs[r.buf].param = p->n_params;
		rt_program_add_param(p, &r);
	}
	return 0;
}

/* The units this rank runs, in order, with their micro-batches: every micro-batch's
 * whole step with one stage (with expert parallelism and several micro-batches, each
 * forward but the first paired with the backward before it), else the schedule's
 * action list for this stage (a full backward BW runs the B unit, which holds all of
 * it unless the schedule splits it, then the W unit; an FB runs its forward, its
 * backward, then its W).  pair[k], at the first unit of a pair, counts the units that
 * run interleaved (emit_pair) when there are exchanges to hide (ep > 1): the forward,
 * the backward and, when split, the backward's W; else they run one after the other. */
static int schedule_units(const struct builder *b, const struct pass_schedule *sched,
			  int *units, int *mbs, unsigned char *pair)
{
	int k = 0;
	if (b->whole) {
		for (int m = 0; m < b->M; m++) {
			units[k] = 0;
			mbs[k++] = m;
		}
		return k;
	}
	if (b->fb) {
		/* F0, then F(m) with B(m-1) (a pair: pair[] marks its first), then the last B */
		for (int m = 0; m <= b->M; m++) {
			if (m < b->M) {
				pair[k] = m > 0 ? 2 : 0;
				units[k] = UNIT_F, mbs[k++] = m;
			}
			if (m > 0)
				units[k] = UNIT_B, mbs[k++] = m - 1;
		}
		return k;
	}
	for (int i = 0; i < sched->n_acts[b->pr]; i++) {
		const struct pass_act *a = &sched->acts[b->pr][i];
		int base = a->stage * UNITS_PER_STAGE, base2 = a->stage2 * UNITS_PER_STAGE;
		switch (a->kind) {
		case PASS_ACT_F: units[k] = base + UNIT_F, mbs[k++] = a->mb; break;
		case PASS_ACT_B: units[k] = base + UNIT_B, mbs[k++] = a->mb; break;
		case PASS_ACT_W: units[k] = base + UNIT_W, mbs[k++] = a->mb; break;
		case PASS_ACT_BW:
			units[k] = base + UNIT_B, mbs[k++] = a->mb;
			if (b->split)
				units[k] = base + UNIT_W, mbs[k++] = a->mb;
			break;
		case PASS_ACT_FB:
			/* the forward beside the backward, its W inside the pair */
			pair[k] = b->overlap ? (b->split ? 3 : 2) : 0;
			units[k] = base + UNIT_F, mbs[k++] = a->mb;
			units[k] = base2 + UNIT_B, mbs[k++] = a->mb2;
			if (b->split)
				units[k] = base2 + UNIT_W, mbs[k++] = a->mb2;
			break;
		default:
			RT_BUG("schedule action %s in a rank's list", pass_act_name(a->kind));
		}
	}
	return k;
}

/* Slots, from the action list: a micro-batch uses a buffer from the first action that
 * touches it to the last (a started send or receive until its group's next WAIT), and
 * a SAVED or COMM buffer gets the fewest slots such that no two micro-batches sharing
 * a slot (m % slots) use it at once. */
static void size_slots(struct rt_program *p, int M)
{
	size_t nb = (size_t)p->n_bufs, nm = (size_t)M;
	int *lo = rt_malloc(sizeof *lo * nb * nm + 1), *hi = rt_malloc(sizeof *hi * nb * nm + 1);
	int *end = rt_malloc(sizeof *end * (size_t)p->n_actions + 1);
	int *next_wait = rt_malloc(sizeof *next_wait * (size_t)p->n_groups + 1);
	for (size_t i = 0; i < nb * nm; i++)
		lo[i] = hi[i] = -1;
	for (int g = 0; g < p->n_groups; g++)
		next_wait[g] = p->n_actions - 1;
	for (int i = p->n_actions - 1; i >= 0; i--) {
		const struct rt_action *a = &p->actions[i];
		end[i] = i;
		if (a->kind == RT_ACT_WAIT)
			next_wait[a->index] = i;
		else if (a->kind == RT_ACT_COMM)
			end[i] = next_wait[p->comms[a->index].group];
	}
	for (int i = 0; i < p->n_actions; i++) {
		const struct rt_action *a = &p->actions[i];
		int touched[4], n = 0;
		const int *list = touched;
		if (a->kind == RT_ACT_CHUNK) {
			const struct rt_chunk *c = &p->chunks[a->index];
			for (int k = 0; k < c->n_in + c->n_out; k++) {
				int bf = k < c->n_in ? c->in[k] : c->out[k - c->n_in];
				size_t at = (size_t)bf * nm + (size_t)a->mb;
				if (lo[at] < 0)
					lo[at] = i;
				hi[at] = i;
			}
			continue;
		}
		if (a->kind != RT_ACT_COMM)
			continue;
		const struct rt_comm_op *op = &p->comms[a->index];
		touched[n++] = op->buf;
		if (op->out >= 0)
			touched[n++] = op->out;
		if (op->scounts >= 0)
			touched[n++] = op->scounts;
		if (op->rcounts >= 0)
			touched[n++] = op->rcounts;
		for (int k = 0; k < n; k++) {
			size_t at = (size_t)list[k] * nm + (size_t)(a->mb % M);
			if (lo[at] < 0)
				lo[at] = i;
			if (end[i] > hi[at])
				hi[at] = end[i];
		}
	}
	for (size_t bf = 0; bf < nb; bf++) {
		struct rt_buffer *rb = &p->bufs[bf];
		if (rb->role != RT_BUF_SAVED && rb->role != RT_BUF_COMM)
			continue;
		const int *l0 = lo + bf * nm, *h0 = hi + bf * nm;
		int k = 1;
		for (; k < M; k++) {
			int clash = 0;
			for (int m1 = 0; m1 < M && !clash; m1++)
				for (int m2 = m1 + k; m2 < M && !clash && l0[m1] >= 0; m2 += k)
					clash = l0[m2] >= 0 && l0[m2] <= h0[m1] && l0[m1] <= h0[m2];
			if (!clash)
				break;
		}
		rb->slots = k;
	}
	free(lo);
	free(hi);
	free(end);
	free(next_wait);
}

static int group_of_attr(const struct builder *b, const struct ir_op *op, FILE *err)
{
	const char *gname = ir_op_str(op, "group", "");
	if (!strcmp(gname, "ep"))
		return b->g_ep;
	if (!strcmp(gname, "dp"))
		return b->g_dp;
	fprintf(err, "error: %s over group '%s': the program knows ep and dp\n",
		ir_op_name(op->kind), gname);
	return -1;
}

/* The items of a unit in order: a chunk (chunk >= 0; part, key_parts') or a comm op
 * (comm), and the segment it belongs to. */
struct item {
	int chunk, comm, seg, part;
};

/* The sends (or receives) of a bundle of n values made by unit su, to (from) pipeline
 * rank peer: made once, on first use; returns the first of the n comm ops. */
static int bundle_comms(struct builder *b, const int *vals, int n, int su, int peer, int send,
			int *first)
{
	if (*first >= 0)
		return *first;
	int part = su % UNITS_PER_STAGE;
	int grp = b->chan[part][send ? peer < b->pr : peer > b->pr];
	RT_ASSERT(grp >= 0);
	*first = b->p->n_comms;
	for (int k = 0; k < n; k++) {
		RT_ASSERT(b->buf_of_val[vals[k]] >= 0);
		struct rt_comm_op op = { send ? RT_COP_SEND : RT_COP_RECV, b->buf_of_val[vals[k]],
					 grp, peer, vals[k], -1, -1, -1 };
		rt_program_add_comm(b->p, &op);
	}
	return *first;
}

/* An overlapped pair.  DeepSeek-V3 (its figure 4) runs the forward of one micro-batch
 * beside the backward of another, their compute in the order
 *   MLP(B) MLP(W) MLP(F) ATTN(B) ATTN(W) ATTN(F), MLP(B) ...
 * and their exchanges between, DISPATCH(F) DISPATCH(B) COMBINE(F) COMBINE(B): each
 * unit's exchange is in flight while the other unit computes.  Here a unit runs in
 * steps (pair_step): its compute up to its next exchange, then that exchange started;
 * the steps are taken in that order of parts (pair_order), by the part of each step's
 * first compute chunk (key_parts); a step with no compute chunk takes its unit's next
 * turn, whatever its part.  Which layer a chunk belongs to does not matter: the
 * forward and the backward meet where their parts fall, as in DeepSeek's figure,
 * whose blocks do not line up.
 * With the backward split, its W unit is cut where its B unit is (see "Items"), and
 * each W chunk runs right after the B chunk of its segment, before B's exchange: the
 * exchange waited for (the other unit's) has MLP(B) and MLP(W) to hide under. */
struct lane {
	const struct item *it, *w; /* the unit's items; the W unit's beside a backward */
	int n, at, nw, wat;        /* how many, and the next to run */
	int m, pend;               /* micro-batch; the group of its exchange in flight */
};

static const struct { int lane, part; } pair_order[4] = {
	{ 0, PART_MLP }, { 1, PART_MLP }, { 0, PART_ATTN }, { 1, PART_ATTN } };

/* the part of the lane's next step: its first compute chunk's, PART_GLUE if none
 * comes before its exchange */
static int step_part(const struct lane *l)
{
	for (int k = l->at; k < l->n && l->it[k].chunk >= 0; k++)
		if (l->it[k].part != PART_GLUE)
			return l->it[k].part;
	return PART_GLUE;
}

/* does the exchange just started feed only glue chunks before the next one (a
 * dispatch's counts, read by the ops that place its rows)? */
static int glue_next(const struct lane *l)
{
	for (int k = l->at; k < l->n; k++)
		if (l->it[k].chunk < 0)
			return 1;
		else if (l->it[k].part != PART_GLUE)
			return 0;
	return 0;
}

/* the W chunks of segments up to seg */
static void pair_w(struct rt_program *p, struct lane *l, int seg)
{
	for (; l->wat < l->nw && l->w[l->wat].seg <= seg; l->wat++)
		rt_program_add_action(p, RT_ACT_CHUNK, l->w[l->wat].chunk, l->m);
}

/* One step of lane k: its own exchange waited for (if the other lane's did not), its
 * chunks, the other lane's exchange waited for (a WAIT is on a whole group: one
 * exchange in flight at a time), its own started.  A dispatch's counts are waited for
 * at once: the rows' exchange, which they size, is what the other lane's compute
 * hides. */
static void pair_step(struct rt_program *p, struct lane *ln, int k)
{
	struct lane *me = &ln[k], *other = &ln[1 - k];
	if (me->pend >= 0) {
		rt_program_add_action(p, RT_ACT_WAIT, me->pend, me->m);
		me->pend = -1;
	}
	while (me->at < me->n) {
		const struct item *x = &me->it[me->at++];
		if (x->chunk >= 0) {
			rt_program_add_action(p, RT_ACT_CHUNK, x->chunk, me->m);
			continue;
		}
		pair_w(p, me, x->seg);
		if (other->pend >= 0) {
			rt_program_add_action(p, RT_ACT_WAIT, other->pend, other->m);
			other->pend = -1;
		}
		rt_program_add_action(p, RT_ACT_COMM, x->comm, me->m);
		me->pend = p->comms[x->comm].group;
		if (!glue_next(me))
			break;
		rt_program_add_action(p, RT_ACT_WAIT, me->pend, me->m);
		me->pend = -1;
	}
	if (me->at == me->n)
		pair_w(p, me, SEG_MAX);
}

/* The pair of forward unit uf (micro-batch mf) and backward unit ub (mb), with ub's
 * weight-grads uw (-1: none apart). */
static void emit_pair(struct rt_program *p, const struct item *items, int per_unit,
		      const int *n_items, int uf, int mf, int ub, int mb, int uw)
{
	struct lane ln[2] = {
		{ items + (size_t)ub * (size_t)per_unit, NULL, n_items[ub], 0, 0, 0, mb, -1 },
		{ items + (size_t)uf * (size_t)per_unit, NULL, n_items[uf], 0, 0, 0, mf, -1 },
	};
	if (uw >= 0) {
		ln[0].w = items + (size_t)uw * (size_t)per_unit;
		ln[0].nw = n_items[uw];
	}
	int next = 0;
	while (ln[0].at < ln[0].n || ln[1].at < ln[1].n) {
		/* the first turn from `next` on whose lane's step is of its part: every
		 * step is of one of the parts, so one of the four is */
		for (int t = 0; t < 4; t++) {
			int q = (next + t) % 4, k = pair_order[q].lane;
			if (ln[k].at >= ln[k].n)
				continue;
			int part = step_part(&ln[k]);
			if (part != PART_GLUE && part != pair_order[q].part)
				continue;
			pair_step(p, ln, k);
			next = (q + 1) % 4;
			break;
		}
	}
	pair_w(p, &ln[0], SEG_MAX);
	for (int k = 0; k < 2; k++)
		if (ln[k].pend >= 0)
			rt_program_add_action(p, RT_ACT_WAIT, ln[k].pend, ln[k].m);
}

struct rt_program *cg_program_build(const struct ir_graph *g, const struct cg_layout *l,
				    int rank, const struct cg_backend *be, FILE *err)
{
	int world = l->pp * l->dp;
	if (rank < 0 || rank >= world || l->pp < 1 || l->dp < 1 || l->microbatches < 1 ||
	    l->ep < 1 || l->dp % l->ep) {
		fprintf(err, "error: internal: rank %d of a %d x %d layout (ep %d)\n", rank, l->pp,
			l->dp, l->ep);
		return NULL;
	}
	if (l->pp > 64) {
		fprintf(err, "error: at most 64 pipeline stages, got %d\n", l->pp);
		return NULL;
	}
	struct builder b = { .g = g, .l = l, .be = be, .rank = rank, .pr = rank / l->dp,
			     .dpi = rank % l->dp, .pp = l->pp, .M = l->microbatches, .S = 1,
			     .mine = 1 };
	/* the schedule's action lists (passes/schedule.c), one per pipeline rank, and
	 * where each stage of each micro-batch runs */
	const char *sched_name = l->schedule ? l->schedule : "1f1b";
	struct pass_schedule sched = { 0 };
	uint64_t stage_ranks[64] = { 1 }; /* one stage: rank 0 of the pipeline */
	if (l->pp > 1) {
		if (pass_schedule_build(sched_name, l->pp, l->microbatches, &sched, err))
			return NULL;
		int want = l->stages ? l->stages : l->pp;
		if (sched.stages != want || sched.stages > 64) {
			fprintf(err, "error: internal: schedule %s has %d stages, the graph %d\n",
				sched_name, sched.stages, want);
			pass_schedule_free(&sched);
			return NULL;
		}
		b.S = sched.stages;
		b.sched = &sched;
		b.mine = 0;
		for (int m = 0; m < b.M; m++)
			for (int s = 0; s < b.S; s++) {
				int r = pass_schedule_rank(&sched, m, s);
				stage_ranks[s] |= 1ull << r;
				if (r == b.pr)
					b.mine |= 1ull << s;
			}
		for (int r = 0; r < sched.ranks; r++)
			for (int i = 0; i < sched.n_acts[r]; i++)
				if (sched.acts[r][i].kind == PASS_ACT_B ||
				    sched.acts[r][i].kind == PASS_ACT_W)
					b.split = 1;
	}
	b.stage_ranks = stage_ranks;
	struct rt_program *p = b.p = rt_program_new(rank, world);
	p->layout = (struct rt_layout){ l->pp, l->dp, l->ep };
	p->stage = __builtin_ctzll(b.mine);
	p->microbatches = l->microbatches;
	p->schedule = rt_program_strdup(p, sched_name);
	int ep = l->ep, edp = l->dp / l->ep;
	b.g_world = rt_program_add_group(p, "world", 0, rank);
	b.g_pp = rt_program_add_group(p, "pp", b.dpi, b.pr);
	b.g_dp = rt_program_add_group(p, "dp", b.pr, b.dpi);
	b.g_ep = rt_program_add_group(p, "ep", b.pr * edp + b.dpi / ep, b.dpi % ep);
	b.g_edp = rt_program_add_group(p, "edp", b.pr * ep + b.dpi % ep, b.dpi / ep);
	b.dual = b.S != b.pp || (sched.ranks && sched.param_copies > 1);
	b.fb = l->pp == 1 && l->ep > 1 && l->microbatches > 1;
	b.whole = l->pp == 1 && !b.fb;
	b.overlap = l->ep > 1;
	for (int r = 0; b.split && b.overlap && r < sched.ranks; r++)
		for (int i = 0; i < sched.n_acts[r]; i++)
			b.w_in_pair |= sched.acts[r][i].kind == PASS_ACT_FB;
	p->loss_group = b.g_world;

	int nv = g->n_values, nu = b.whole ? 1 : UNITS_PER_STAGE * b.S;
	index_uses(&b);
	b.unit_of_op = rt_calloc((size_t)g->n_ops + 1, sizeof *b.unit_of_op);
	b.seg_of_op = rt_calloc((size_t)g->n_ops + 1, sizeof *b.seg_of_op);
	b.unit_of_val = rt_calloc((size_t)nv + 1, sizeof *b.unit_of_val);
	b.buf_of_val = rt_calloc((size_t)nv + 1, sizeof *b.buf_of_val);
	b.obuf_of_val = rt_calloc((size_t)nv + 1, sizeof *b.obuf_of_val);
	b.out_name = rt_calloc((size_t)nv + 1, sizeof *b.out_name);
	b.partial_of = rt_calloc((size_t)nv + 1, sizeof *b.partial_of);
	b.gbuf_of_val = rt_calloc((size_t)nv + 1, sizeof *b.gbuf_of_val);
	uint64_t *holders = rt_calloc((size_t)g->n_ops + 1, sizeof *holders);
	int *param_op = rt_calloc((size_t)nv + 1, sizeof *param_op);
	int *seg_of_val = rt_calloc((size_t)nv + 1, sizeof *seg_of_val);
	unsigned char *from_comm = rt_calloc((size_t)nv + 1, 1);
	/* per (source unit, destination stage): the unit of the destination that first
	 * reads what the source sends */
	int n_bundles = nu * b.S;
	int *first_reader = rt_calloc((size_t)n_bundles + 1, sizeof *first_reader);
	int *units = NULL, *mbs = NULL;
	unsigned char *pair = NULL;
	struct item *items = NULL;
	int n_sched = 0, ok = 0, max_seg = 0;
	for (int i = 0; i < nv; i++)
		b.unit_of_val[i] = b.buf_of_val[i] = b.obuf_of_val[i] =
			b.out_name[i] = param_op[i] = b.partial_of[i] = b.gbuf_of_val[i] = -1;
	for (int i = 0; i < n_bundles; i++)
		first_reader[i] = -1;
	for (int i = 0; i < g->n_outputs; i++)
		if (g->outputs[i])
			b.out_name[g->outputs[i]->id] = i;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		b.unit_of_op[i] = -1;
		if (op->kind == IR_OP_PARAM)
			param_op[op->out[0]->id] = i;
		if (is_source(op))
			continue;
		if (op->stage < 0 || op->stage >= b.S) {
			fprintf(err, "error: internal: op %%%d (%s) has no stage\n",
				op->n_out ? op->out[0]->id : -1, ir_op_name(op->kind));
			goto done;
		}
		/* a weight-grad op that a pair runs beside the input-grads: in the segment
		 * of the latest input-grad chunk it reads, so that it can run right after
		 * that chunk */
		int u = unit_of(&b, op), seg = 0;
		int follow = b.w_in_pair && u % UNITS_PER_STAGE == UNIT_W ? u - UNIT_W + UNIT_B
									  : -1;
		for (int k = 0; k < op->n_in; k++) {
			int vid = op->in[k]->id, vu = b.unit_of_val[vid];
			if ((vu == u || (vu >= 0 && vu == follow)) &&
			    seg_of_val[vid] + from_comm[vid] > seg)
				seg = seg_of_val[vid] + from_comm[vid];
		}
		if (seg >= SEG_MAX - 1) {
			fprintf(err, "error: too many communication ops in one stage\n");
			goto done;
		}
		if (seg > max_seg)
			max_seg = seg;
		b.unit_of_op[i] = u;
		b.seg_of_op[i] = seg;
		for (int k = 0; k < op->n_out; k++) {
			int vid = op->out[k]->id;
			b.unit_of_val[vid] = u;
			seg_of_val[vid] = seg;
			from_comm[vid] = (unsigned char)is_comm(op);
		}
	}
	find_partials(&b);
	/* who reads what */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		int u = b.unit_of_op[i];
		if (u < 0)
			continue;
		int s = unit_stage(&b, u);
		for (int k = 0; k < op->n_in; k++) {
			const struct ir_value *v = op->in[k];
			if (param_op[v->id] >= 0)
				holders[param_op[v->id]] |= stage_ranks[s];
			int src = b.unit_of_val[v->id];
			if (src < 0 || unit_stage(&b, src) == s || b.partial_of[v->id] >= 0)
				continue;
			int *fr = &first_reader[src * b.S + s];
			if (*fr < 0 || u < *fr) /* F, B, W run in this order on a stage */
				*fr = u;
			if (src % UNITS_PER_STAGE == UNIT_W)
				b.need_w = 1;
		}
	}
	/* weight-grad values sent between stages (a parameter shared by stages) travel on
	 * a communicator of their own: their order between two ranks differs from that
	 * of the input-grads, and sends carry no tags */
	/* Channels.  Sends carry no tags and a WAIT waits for every operation this rank
	 * started on the group, so each group carries one stream of values per pair of
	 * ranks, in micro-batch order, one way.  1f1b and zb1p send forwards down the
	 * ranks and input-grads up them, both on pp; weight-grad values (a parameter
	 * shared by stages, its gradient summed in the graph) come in another order and
	 * go on ppw.  With two stages a rank each kind goes both ways: one group per
	 * kind and way. */
	static const char *const chan_name[UNITS_PER_STAGE][2] = {
		{ "pp", "pp.up" }, { "ppb", "ppb.up" }, { "ppw", "ppw.up" } };
	for (int part = 0; part < UNITS_PER_STAGE; part++)
		for (int up = 0; up < 2; up++) {
			b.chan[part][up] = -1;
			if (part == UNIT_W && !b.need_w)
				continue;
			if ((!b.dual && part != UNIT_W) || (part == UNIT_F && !up))
				b.chan[part][up] = b.g_pp;
			else if (!b.dual && up)
				b.chan[part][up] = b.chan[part][0];
			else
				b.chan[part][up] = rt_program_add_group(p, chan_name[part][up],
									 b.dpi, b.pr);
		}

	/* buffers: sources read here, values crossing this rank's item boundaries */
	int M = b.M;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		int u = b.unit_of_op[i];
		if (u >= 0 && !runs(&b, unit_stage(&b, u)))
			continue;
		if (u < 0) {
			if (op->kind == IR_OP_CONST)
				continue;
			if (op->kind == IR_OP_PARAM && !(holders[i] >> b.pr & 1))
				continue;
			if (op->kind == IR_OP_INPUT) {
				int used = 0;
				for (int c = 0; c < nu && !used; c++)
					used = runs(&b, unit_stage(&b, c)) &&
					       unit_reads(&b, c, op->out[0]);
				if (!used)
					continue;
			}
			const char *nm = op->kind == IR_OP_PARAM ? (op->path ? op->path : "param")
								   : ir_op_str(op, "name", "input");
			int bi = add_value_buffer(&b, op->out[0], nm,
						  op->kind == IR_OP_PARAM ? RT_BUF_PARAM : RT_BUF_INPUT,
						  op->kind == IR_OP_PARAM ? 1 : M, -1);
			b.buf_of_val[op->out[0]->id] = bi;
			if (op->kind == IR_OP_INPUT) {
				const char *in = ir_op_str(op, "name", "");
				if (!strcmp(in, "tokens"))
					p->tokens = bi;
				else if (!strcmp(in, "targets"))
					p->targets = bi;
				else {
					fprintf(err, "error: graph input '%s': training feeds only "
						"'tokens' and 'targets'\n", in);
					goto done;
				}
			}
			continue;
		}
		/* values made by this rank's ops */
		int key = u * SEG_MAX + b.seg_of_op[i];
		for (int o = 0; o < op->n_out; o++) {
			const struct ir_value *v = op->out[o];
			if (b.partial_of[v->id] >= 0) { /* summed here, into the gradient */
				b.buf_of_val[v->id] = grad_buffer(&b, g->values[b.partial_of[v->id]]);
				continue;
			}
			int outside = is_comm(op);
			for (int k = b.use_start[v->id]; k < b.use_start[v->id + 1] && !outside; k++) {
				int j = b.use_op[k];
				if (b.unit_of_op[j] < 0)
					continue;
				int wkey = b.unit_of_op[j] * SEG_MAX + b.seg_of_op[j];
				if (wkey != key || is_comm(g->ops[j]))
					outside = 1;
			}
			int on = b.out_name[v->id];
			if (on >= 0) {
				const char *nm = g->output_names[on];
				enum rt_buf_role role = !strncmp(nm, "grad.", 5) ? RT_BUF_GRAD
										: RT_BUF_OUTPUT;
				if (!ir_dtype_is_float(v->dtype)) {
					fprintf(err, "error: graph output '%s' is not a float\n", nm);
					goto done;
				}
				int bi = role == RT_BUF_GRAD ? grad_buffer(&b, v)
							     : add_value_buffer(&b, v, nm, role, 1, -1);
				if (!strcmp(nm, "loss"))
					p->loss = bi;
				else if (!strcmp(nm, "lm_loss"))
					p->lm_loss = bi;
				if (!outside) {
					b.buf_of_val[v->id] = bi;
					continue;
				}
				/* read by other chunks too: those read a SAVED copy */
				b.obuf_of_val[v->id] = bi;
				char sn[32];
				snprintf(sn, sizeof sn, "v%d", v->id);
				b.buf_of_val[v->id] = add_value_buffer(&b, v, sn, RT_BUF_SAVED,
								       1, -1);
			} else if (outside) {
				char nm[32];
				snprintf(nm, sizeof nm, "v%d", v->id);
				b.buf_of_val[v->id] = add_value_buffer(&b, v, nm, RT_BUF_SAVED,
								       1, -1);
			}
		}
	}
	/* values received from other stages */
	for (int i = 0; i < nv; i++) {
		int src = b.unit_of_val[i];
		if (src < 0 || runs(&b, unit_stage(&b, src)) || b.buf_of_val[i] >= 0 ||
		    b.partial_of[i] >= 0)
			continue;
		int reads = 0;
		for (int c = 0; c < nu && !reads; c++)
			reads = runs(&b, unit_stage(&b, c)) && unit_reads(&b, c, g->values[i]);
		if (!reads)
			continue;
		char nm[32];
		snprintf(nm, sizeof nm, "v%d", i);
		b.buf_of_val[i] = add_value_buffer(&b, g->values[i], nm, RT_BUF_COMM,
						   1, -1);
	}
	if (add_params(&b, holders, err))
		goto done;
	if (p->loss < 0 && p->lm_loss >= 0)
		p->loss = p->lm_loss;
	if (p->lm_loss < 0)
		p->lm_loss = p->loss;

	/* the micro-batch shape */
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT && op->out[0]->shape.rank == 2) {
			p->batch = (int)op->out[0]->shape.dim[0];
			p->seq = (int)op->out[0]->shape.dim[1];
		}
	}
	p->vocab = find_vocab(g);

	/* this rank's items: per unit, chunk seg 0, its comm ops, chunk seg 1, ... */
	int per_unit = 2 * (max_seg + 1) + g->n_ops;
	b.segmented = max_seg > 0;
	items = rt_calloc((size_t)(nu * per_unit) + 1, sizeof *items);
	int *n_items = rt_calloc((size_t)nu + 1, sizeof *n_items);
	for (int u = 0; u < nu; u++) {
		if (!runs(&b, unit_stage(&b, u)))
			continue;
		struct item *it = items + (size_t)u * (size_t)per_unit;
		for (int seg = 0; seg <= max_seg; seg++) {
			int ci = build_chunk(&b, u * SEG_MAX + seg, be, err);
			if (ci == -1) {
				free(n_items);
				goto done;
			}
			if (ci >= 0) {
				int part;
				const char *parts[4];
				key_parts(&b, u * SEG_MAX + seg, parts, &part);
				it[n_items[u]++] = (struct item){ ci, -1, seg, part };
			}
			for (int i = 0; i < g->n_ops; i++) {
				const struct ir_op *op = g->ops[i];
				if (b.unit_of_op[i] != u || b.seg_of_op[i] != seg || !is_comm(op))
					continue;
				int grp = group_of_attr(&b, op, err);
				if (grp < 0) {
					free(n_items);
					goto done;
				}
				struct rt_comm_op co = { .group = grp, .buf = b.buf_of_val[op->in[0]->id],
							 .out = b.buf_of_val[op->out[0]->id],
							 .scounts = -1, .rcounts = -1 };
				if (op->kind == IR_OP_ALL_TO_ALL) {
					co.kind = RT_COP_ALL_TO_ALL;
				} else {
					co.kind = RT_COP_ALL_TO_ALLV;
					co.scounts = b.buf_of_val[op->in[1]->id];
					co.rcounts = b.buf_of_val[op->in[2]->id];
				}
				RT_ASSERT(co.buf >= 0 && co.out >= 0);
				it[n_items[u]++] = (struct item){ -1, rt_program_add_comm(p, &co), seg,
								  PART_GLUE };
			}
		}
	}

	/* sends and receives between ranks: one bundle per (unit that makes the values,
	 * stage that reads them), its values in value order, so both sides list it alike;
	 * a bundle whose two stages run on the same rank (for a micro-batch) passes
	 * nothing: the reader reads the maker's buffer */
	int *bundle_n = rt_calloc((size_t)n_bundles + 1, sizeof *bundle_n);
	int **bundle_vals = rt_calloc((size_t)n_bundles + 1, sizeof *bundle_vals);
	int *bundle_ops = rt_malloc(sizeof *bundle_ops * (size_t)n_bundles * (size_t)l->pp * 2 + 1);
	for (int i = 0; i < n_bundles * l->pp * 2; i++)
		bundle_ops[i] = -1;
	for (int bi = 0; bi < n_bundles; bi++) {
		int su = bi / b.S, src = unit_stage(&b, su), dst = bi % b.S;
		if (src == dst || (!runs(&b, src) && !runs(&b, dst)))
			continue;
		for (int i = 0; i < nv; i++) {
			if (b.unit_of_val[i] != su || b.buf_of_val[i] < 0 || b.partial_of[i] >= 0)
				continue;
			int reads = 0;
			for (int c = 0; c < UNITS_PER_STAGE && !reads; c++)
				reads = unit_reads(&b, dst * UNITS_PER_STAGE + c, g->values[i]);
			if (!reads)
				continue;
			if (!bundle_vals[bi])
				bundle_vals[bi] = rt_calloc((size_t)nv + 1, sizeof **bundle_vals);
			bundle_vals[bi][bundle_n[bi]++] = i;
		}
	}

	/* actions: each unit the schedule runs, for its micro-batch, with the receives of
	 * the bundles it is the first to read before it and its sends after it */
	int cap = l->pp == 1 ? 2 * M : 0;
	for (int r = 0; l->pp > 1 && r < sched.ranks; r++)
		cap = cap > 3 * sched.n_acts[r] ? cap : 3 * sched.n_acts[r];
	units = rt_calloc((size_t)cap + 1, sizeof *units);
	mbs = rt_calloc((size_t)cap + 1, sizeof *mbs);
	pair = rt_calloc((size_t)cap + 1, 1);
	n_sched = schedule_units(&b, &sched, units, mbs, pair);
	for (int a = 0; a < n_sched; a++) {
		/* one unit, or an overlapped pair (the forward, the backward, its W): what
		 * they receive before, their items (interleaved for a pair), what they send
		 * after */
		int nun = pair[a] ? pair[a] : 1;
		RT_ASSERT(a + nun <= n_sched);
		for (int q = 0; q < nun; q++) {
			int u = units[a + q], m = mbs[a + q], s = unit_stage(&b, u);
			RT_ASSERT(runs(&b, s));
			int wait[2 * UNITS_PER_STAGE], n_wait = 0;
			for (int su = 0; su < nu; su++) {
				int bi = su * b.S + s, ss = unit_stage(&b, su);
				if (ss == s || !bundle_n[bi] || first_reader[bi] != u)
					continue;
				int peer = pass_schedule_rank(&sched, m, ss);
				if (peer == b.pr)
					continue;
				int first = bundle_comms(&b, bundle_vals[bi], bundle_n[bi], su, peer,
							 0, &bundle_ops[(bi * l->pp + peer) * 2]);
				for (int k = 0; k < bundle_n[bi]; k++)
					rt_program_add_action(p, RT_ACT_COMM, first + k, m);
				int grp = p->comms[first].group;
				int seen = 0;
				for (int k = 0; k < n_wait; k++)
					seen |= wait[k] == grp;
				if (!seen)
					wait[n_wait++] = grp;
			}
			for (int k = 0; k < n_wait; k++)
				rt_program_add_action(p, RT_ACT_WAIT, wait[k], m);
		}
		if (nun > 1) {
			RT_ASSERT(nun == 2 || (units[a + 2] == units[a + 1] - UNIT_B + UNIT_W &&
					       mbs[a + 2] == mbs[a + 1]));
			emit_pair(p, items, per_unit, n_items, units[a], mbs[a], units[a + 1],
				  mbs[a + 1], nun == 3 ? units[a + 2] : -1);
		} else {
			const struct item *it = items + (size_t)units[a] * (size_t)per_unit;
			for (int k = 0; k < n_items[units[a]]; k++) {
				if (it[k].chunk >= 0) {
					rt_program_add_action(p, RT_ACT_CHUNK, it[k].chunk, mbs[a]);
				} else {
					rt_program_add_action(p, RT_ACT_COMM, it[k].comm, mbs[a]);
					rt_program_add_action(p, RT_ACT_WAIT,
							      p->comms[it[k].comm].group, mbs[a]);
				}
			}
		}
		for (int q = 0; q < nun; q++) {
			int u = units[a + q], m = mbs[a + q], s = unit_stage(&b, u);
			for (int ds = 0; ds < b.S; ds++) {
				int bi = u * b.S + ds;
				if (ds == s || !bundle_n[bi])
					continue;
				int peer = pass_schedule_rank(&sched, m, ds);
				if (peer == b.pr)
					continue;
				int first = bundle_comms(&b, bundle_vals[bi], bundle_n[bi], u, peer, 1,
							 &bundle_ops[(bi * l->pp + peer) * 2 + 1]);
				for (int k = 0; k < bundle_n[bi]; k++)
					rt_program_add_action(p, RT_ACT_COMM, first + k, m);
			}
		}
		a += nun - 1;
	}
	/* every send done before the step ends */
	for (int part = 0; l->pp > 1 && part < UNITS_PER_STAGE; part++)
		for (int up = 0; up < 2; up++) {
			int grp = b.chan[part][up], seen = grp < 0;
			for (int q = 0; q < part * 2 + up && !seen; q++)
				seen = b.chan[q / 2][q % 2] == grp;
			if (!seen)
				rt_program_add_action(p, RT_ACT_WAIT, grp, 0);
		}
	for (int bi = 0; bi < n_bundles; bi++)
		free(bundle_vals[bi]);
	free(bundle_vals);
	free(bundle_n);
	free(bundle_ops);
	/* gradients summed over their groups */
	for (int k = 0; k < p->n_params; k++) {
		const struct rt_param *r = &p->params[k];
		if (r->grad < 0 || r->reduce_group < 0 || r->zero)
			continue;
		struct rt_comm_op op = { RT_COP_ALL_REDUCE, r->grad, r->reduce_group, 0, 0, -1, -1, -1 };
		rt_program_add_action(p, RT_ACT_COMM, rt_program_add_comm(p, &op), 0);
		rt_program_add_action(p, RT_ACT_WAIT, r->reduce_group, 0);
	}
	free(n_items);
	size_slots(p, M);
	ok = 1;
done:
	free(b.unit_of_op);
	free(b.seg_of_op);
	free(b.use_start);
	free(b.use_op);
	free(b.unit_of_val);
	free(b.buf_of_val);
	free(b.obuf_of_val);
	free(b.partial_of);
	free(b.gbuf_of_val);
	free(b.out_name);
	free(holders);
	free(param_op);
	free(seg_of_val);
	free(from_comm);
	free(first_reader);
	free(units);
	free(mbs);
	free(pair);
	free(items);
	pass_schedule_free(&sched);
	if (!ok) {
		rt_program_free(p);
		return NULL;
	}
	return p;
}
