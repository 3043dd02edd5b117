/*
 * partition.c - pipeline stages: which layers each of the pp stages holds, what one
 * rank of each stage costs, and op->stage for every op of the graph.
 *
 * Takes a graph from the frontend, before or after autodiff, and a layout (pp, dp, ep,
 * micro-batches, ZeRO, schedule).  pass_partition_plan() reads the graph and changes
 * nothing; pass_partition_assign() writes op->stage and nothing else.
 *
 * Units.  The layers are the ops whose scope starts "layers.N", N numbered in their
 * order.  The part before the first layer (the embedding) is pinned to stage 0 and the
 * part after the last one (final norm, output head, loss, MTP module) to stage pp-1;
 * a stage is a contiguous, non-empty run of layers.  An op of no layer belongs with
 * the layer before it in the op list (forward ops) or the layer after it (backward
 * ops, which run in reverse); before every layer it is the embedding's, after every
 * layer the head's.  INPUT, PARAM and CONST ops go with their lowest consumer.
 *
 * Cost model, per unit (every figure from passes/account.c's counting):
 *  - compute: training FLOPs of one micro-batch (forward + backward, matrix products)
 *    divided by a rate, the caller's measured or stated FLOP/s; PASS_DEFAULT_FLOPS
 *    when none is given.  The rate scales every unit alike, so it changes the seconds
 *    reported, never the split.
 *  - memory of one rank: parameters (their dtype: the f32 master copy) and gradients
 *    of the same size, the experts' divided by ep; AdamW's two moments, f32, or bf16
 *    under precision fp8 (DeepSeek-V3's recipe), divided by dp under zero=1 (an
 *    expert's moments over the dp/ep ranks that hold it: numel / dp again);
 *    activations saved for the backward times the micro-batches the schedule keeps in
 *    flight (1F1B and ZB1P: stage s of P keeps min(P - s, M); GPipe all M;
 *    DualPipe and DualPipeV: a rank holds two stages and P + 1 micro-batches of
 *    stage-sized activations between them (DESIGN.md's table), counted here as
 *    ceil((P + 1) / 2) on every stage: the table is per stage, and a DualPipe rank's
 *    memory is the sum of its two rows, r and P-1-r, parameters twice included);
 *    communication buffers: the values that cross each stage boundary, one micro-batch
 *    of them and their gradients, on both sides; with ep > 1, the receive buffers of
 *    EP dispatch and combine (rows of the routed activation times ep_capacity),
 *    one set per stage, sized for its largest MoE layer, since one rank's all-to-alls
 *    run one after another on its communication stream.
 *  - A parameter owned by the embedding and read after it (the embedding table that
 *    the MTP module or a tied head reads) is a copy on the last stage: its weights and
 *    gradient count there (the gradient is summed into the owner's, which steps), its
 *    optimizer state does not.
 *
 * Objective: the smallest largest-stage compute time, among the splits whose every
 * stage fits the memory limit when one is given.  Compute is a slope (the slowest
 * stage sets the step time) and memory a cliff (a stage over the limit does not run),
 * so memory is a constraint, not a term to trade against time.  Without a limit the
 * memory is reported, not optimised.  Ties go to the split whose stage boundaries come
 * first.  Dynamic programming over (stage, last layer), O(pp L^2): exact for the model
 * (tests/check/test_partition.c holds it to brute force).
 *
 * Simplifications, on purpose: parameters shared between two layers (no model in
 * models/ has them) are counted in the first only; the low-precision copies of the
 * weights that bf16 and fp8 products read are transient and not counted; DualPipe's
 * two stages a rank are modelled by their activations only: the split is still one
 * contiguous run of layers per stage, not chosen for the pairs.
 */
#include "passes.h"

#include <ctype.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);
	if (!p) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	return p;
}

/* "layers.12.moe" -> 12; -1 for a scope of no layer */
static int layer_number(const char *scope)
{
	if (!scope || strncmp(scope, "layers.", 7) || !isdigit((unsigned char)scope[7]))
		return -1;
	const char *p = scope + 7;
	long n = 0;
	while (isdigit((unsigned char)*p) && n < 1000000)
		n = n * 10 + (*p++ - '0');
	return (*p == '.' || !*p) && n < 1000000 ? (int)n : -1;
}

static int is_leaf(enum ir_opkind k)
{
	return k == IR_OP_INPUT || k == IR_OP_PARAM || k == IR_OP_CONST;
}

static int is_view(enum ir_opkind k)
{
	return k == IR_OP_CAST || k == IR_OP_RESHAPE || k == IR_OP_TRANSPOSE ||
	       k == IR_OP_BROADCAST || k == IR_OP_SLICE || k == IR_OP_SCALE ||
	       k == IR_OP_NEG || k == IR_OP_STOP_GRAD || k == IR_OP_QUANT_FP8 ||
	       k == IR_OP_DEQUANT_FP8;
}

static int64_t value_bytes(const struct ir_value *v)
{
	int64_t n = ir_shape_numel(&v->shape);
	return n < 0 ? 0 : n * (int64_t)ir_dtype_size(v->dtype);
}

/* --- units ------------------------------------------------------------------------- */

/* The unit of every op, by op index: 0 before the layers, 1..L the layers, L+1 after.
 * *n_layers gets L; 0 when the graph has no "layers.N" scope. */
struct unitmap {
	int n_layers;
	int *unit;       /* [n_ops] */
	int *index;      /* op id -> op index */
};

static void unitmap_free(struct unitmap *m)
{
	free(m->unit);
	free(m->index);
}

static int op_index(const struct unitmap *m, const struct ir_op *op)
{
	return m->index[op->id];
}

static void units_find(const struct ir_graph *g, struct unitmap *m)
{
	int n = g->n_ops;
	m->unit = xcalloc((size_t)n, sizeof *m->unit);
	m->index = xcalloc((size_t)g->next_op_id, sizeof *m->index);
	for (int i = 0; i < n; i++)
		m->index[g->ops[i]->id] = i;

	/* layer numbers, in order: the distinct N of "layers.N" */
	int max = -1;
	for (int i = 0; i < n; i++) {
		int k = layer_number(g->ops[i]->scope);
		if (k > max)
			max = k;
	}
	int *rank = xcalloc((size_t)max + 2, sizeof *rank);
	for (int i = 0; i < n; i++) {
		int k = layer_number(g->ops[i]->scope);
		if (k >= 0)
			rank[k] = 1;
	}
	int L = 0;
	for (int k = 0; k <= max; k++)
		rank[k] = rank[k] ? ++L : 0; /* unit of layer k */
	m->n_layers = L;

	/* ops of a layer; the others by their neighbours (forward: the layer before;
	 * backward: the layer after, the backward running in reverse) */
	for (int i = 0; i < n; i++) {
		int k = layer_number(g->ops[i]->scope);
		m->unit[i] = k >= 0 ? rank[k] : -1;
	}
	int last = -1;
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		if (m->unit[i] >= 0)
			last = m->unit[i];
		else if (!is_leaf(op->kind))
			m->unit[i] = last < 0 ? 0 : last;
	}
	/* forward ops after the last layer are the head's */
	for (int i = n - 1; i >= 0; i--) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD || is_leaf(op->kind))
			continue;
		if (layer_number(op->scope) >= 0)
			break;
		m->unit[i] = L + 1;
	}
	int next = -1;
	for (int i = n - 1; i >= 0; i--) {
		const struct ir_op *op = g->ops[i];
		if (op->phase == IR_PHASE_FWD)
			continue;
		if (m->unit[i] >= 0)
			next = m->unit[i];
		else if (!is_leaf(op->kind))
			m->unit[i] = next < 0 ? 0 : next;
	}
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase == IR_PHASE_FWD || is_leaf(op->kind))
			continue;
		if (layer_number(op->scope) >= 0)
			break;
		m->unit[i] = L + 1;
	}
	/* INPUT, PARAM, CONST: the lowest unit among their consumers */
	for (int i = 0; i < n; i++)
		if (is_leaf(g->ops[i]->kind))
			m->unit[i] = INT32_MAX;
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if (is_leaf(op->kind))
			continue;
		for (int j = 0; j < op->n_in; j++) {
			const struct ir_op *d = op->in[j]->def;
			if (d && is_leaf(d->kind) && m->unit[i] < m->unit[op_index(m, d)])
				m->unit[op_index(m, d)] = m->unit[i];
		}
	}
	for (int i = 0; i < n; i++)
		if (m->unit[i] == INT32_MAX)
			m->unit[i] = 0;
	free(rank);
}

/* --- layout ------------------------------------------------------------------------ */

static const char *const schedules[] = { "1f1b", "zb1p", "gpipe", "dualpipe", "dualpipev",
					  NULL };

static int known_schedule(const char *s)
{
	for (int i = 0; schedules[i]; i++)
		if (!strcmp(s, schedules[i]))
			return 1;
	return 0;
}

/* A whole number setting in [lo, hi]; dflt when absent.  -1 after a message. */
static int int_setting(const struct ir_graph *g, const char *name, int dflt, int lo, int hi,
		       int *out, FILE *err)
{
	const struct ir_setting *s = ir_graph_setting(g, name);
	if (!s) {
		*out = dflt;
		return 0;
	}
	if (s->is_str || s->num != (double)(long long)s->num || s->num < lo || s->num > hi) {
		if (err) {
			fprintf(err, "error: layout: %s must be a whole number from %d to %d, got ",
				name, lo, hi);
			if (s->is_str)
				fprintf(err, "'%s'\n", s->str ? s->str : "");
			else
				fprintf(err, "%g\n", s->num);
		}
		return -1;
	}
	*out = (int)s->num;
	return 0;
}

int pass_layout_read(const struct ir_graph *g, int ranks, struct pass_layout *l, FILE *err)
{
	memset(l, 0, sizeof *l);
	enum { BIG = 1 << 20 };
	if (int_setting(g, "pp", 1, 1, BIG, &l->pp, err) ||
	    int_setting(g, "ep", 1, 1, BIG, &l->ep, err) ||
	    int_setting(g, "microbatches", 1, 1, BIG, &l->microbatches, err) ||
	    int_setting(g, "zero", 0, 0, 1, &l->zero, err))
		return -1;
	const struct ir_setting *s = ir_graph_setting(g, "schedule");
	l->schedule = s && s->is_str && s->str ? s->str : "1f1b";
	if (s && !s->is_str) {
		if (err)
			fprintf(err, "error: layout: schedule is a name (%s), not a number\n",
				"1f1b, zb1p, dualpipe, ...");
		return -1;
	}
	if (ranks < 0) {
		if (err)
			fprintf(err, "error: layout: %d ranks\n", ranks);
		return -1;
	}
	if (!ranks) {
		if ((long long)l->pp * l->ep > BIG) {
			if (err)
				fprintf(err, "error: layout: pp x ep = %lld ranks is too many\n",
					(long long)l->pp * l->ep);
			return -1;
		}
		ranks = l->pp * l->ep;
	}
	l->dp = ranks % l->pp ? 0 : ranks / l->pp;
	return 0;
}

/* The PARAM op a value is a view of, or NULL. */
static const struct ir_op *param_of(const struct ir_value *v)
{
	while (v->def && (is_view(v->def->kind) || v->def->kind == IR_OP_QUANT_FP8) &&
	       v->def->n_in >= 1)
		v = v->def->in[0];
	return v->def && v->def->kind == IR_OP_PARAM ? v->def : NULL;
}

/* The experts of the model's MoE layers (the first dimension of a grouped matmul's
 * weights, or the global one when expert_parallel has sliced them); 0 when it has
 * none. */
static int64_t count_experts(const struct ir_graph *g, int64_t *mismatch)
{
	int64_t e = 0;
	*mismatch = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if ((op->kind != IR_OP_GROUPED_MATMUL && op->kind != IR_OP_SCALED_GROUPED_MATMUL) ||
		    op->phase != IR_PHASE_FWD)
			continue;
		int64_t n = op->in[1]->shape.rank ? op->in[1]->shape.dim[0] : 1;
		const struct ir_op *w = param_of(op->in[1]);
		if (w)
			n = ir_op_int(w, "ep_global_rows", n);
		if (e && n != e)
			*mismatch = n;
		if (!e)
			e = n;
	}
	return e;
}

int pass_layout_check(const struct ir_graph *g, const struct pass_layout *l, int ranks,
		      FILE *err)
{
	int bad = 0;
	if (ranks <= 0)
		ranks = l->pp * l->ep;
	if (l->pp < 1 || l->ep < 1 || l->microbatches < 1 || (l->zero != 0 && l->zero != 1)) {
		if (err)
			fprintf(err, "error: layout: pp, ep and microbatches are at least 1 and "
				     "zero is 0 or 1 (got pp=%d ep=%d microbatches=%d zero=%d)\n",
				l->pp, l->ep, l->microbatches, l->zero);
		return 1;
	}
	if (ranks % l->pp) {
		if (err)
			fprintf(err, "error: layout: %d ranks are not divisible by pp=%d "
				     "(ranks = pp x dp)\n", ranks, l->pp);
		bad++;
	} else if ((ranks / l->pp) % l->ep) {
		if (err)
			fprintf(err, "error: layout: ep=%d does not divide dp=%d (= %d ranks / "
				     "pp=%d): the expert-parallel group lies inside the "
				     "data-parallel one\n", l->ep, ranks / l->pp, ranks, l->pp);
		bad++;
	}
	int64_t odd, e = count_experts(g, &odd);
	if (l->ep > 1 && !e) {
		if (err)
			fprintf(err, "error: layout: ep=%d but the model has no experts\n", l->ep);
		bad++;
	} else if (e && (e % l->ep || (odd && odd % l->ep))) {
		if (err)
			fprintf(err, "error: layout: %lld experts are not divisible by ep=%d\n",
				(long long)(e % l->ep ? e : odd), l->ep);
		bad++;
	}
	struct unitmap m;
	units_find(g, &m);
	if (!m.n_layers && l->pp > 1) {
		if (err)
			fprintf(err, "error: layout: pp=%d but the model has no layers (scopes "
				     "'layers.N') to cut into stages\n", l->pp);
		bad++;
	} else if (l->pp > m.n_layers && m.n_layers) {
		/* dualpipev cuts 2 x pp stages: this layout's pp counts them */
		if (err && l->schedule && !strcmp(l->schedule, "dualpipev") && l->pp % 2 == 0)
			fprintf(err, "error: layout: dualpipev at pp=%d cuts %d stages, more than "
				     "the model's %d layers\n", l->pp / 2, l->pp, m.n_layers);
		else if (err)
			fprintf(err, "error: layout: pp=%d is more stages than the model's %d "
				     "layers\n", l->pp, m.n_layers);
		bad++;
	}
	unitmap_free(&m);
	if (!known_schedule(l->schedule ? l->schedule : "1f1b")) {
		if (err) {
			fprintf(err, "error: layout: schedule '%s': the stage model knows",
				l->schedule);
			for (int i = 0; schedules[i]; i++)
				fprintf(err, " %s", schedules[i]);
			fputc('\n', err);
		}
		bad++;
	}
	return bad ? 1 : 0;
}

void pass_layout_inflight(const struct pass_layout *l, int *inflight)
{
	int gpipe = l->schedule && !strcmp(l->schedule, "gpipe");
	int dual = l->schedule && !strncmp(l->schedule, "dualpipe", 8);
	for (int s = 0; s < l->pp; s++) {
		int k = gpipe ? l->microbatches : dual ? (l->pp + 2) / 2 : l->pp - s;
		inflight[s] = k < l->microbatches ? k : l->microbatches;
	}
}

/* --- the cost model as vectors ---------------------------------------------------- */

static void costs_alloc(struct pass_unit_costs *c, int L)
{
	size_t u = (size_t)L + 2;
	memset(c, 0, sizeof *c);
	c->n_layers = L;
	c->time = xcalloc(u, sizeof *c->time);
	c->flops_per_token = xcalloc(u, sizeof *c->flops_per_token);
	c->params = xcalloc(u, sizeof *c->params);
	c->params_expert = xcalloc(u, sizeof *c->params_expert);
	c->params_copied = xcalloc(u, sizeof *c->params_copied);
	c->mem_params = xcalloc(u, sizeof *c->mem_params);
	c->mem_grads = xcalloc(u, sizeof *c->mem_grads);
	c->mem_optim = xcalloc(u, sizeof *c->mem_optim);
	c->mem_copied = xcalloc(u, sizeof *c->mem_copied);
	c->mem_act = xcalloc(u, sizeof *c->mem_act);
	c->mem_ep = xcalloc(u, sizeof *c->mem_ep);
	c->mem_cross = xcalloc((size_t)L + 1, sizeof *c->mem_cross);
}

void pass_unit_costs_free(struct pass_unit_costs *c)
{
	free(c->time);
	free(c->flops_per_token);
	free(c->params);
	free(c->params_expert);
	free(c->params_copied);
	free(c->mem_params);
	free(c->mem_grads);
	free(c->mem_optim);
	free(c->mem_copied);
	free(c->mem_act);
	free(c->mem_ep);
	free(c->mem_cross);
	memset(c, 0, sizeof *c);
}

static int64_t tokens_of(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		const char *name = op->kind == IR_OP_INPUT ? ir_op_str(op, "name", NULL) : NULL;
		if (name && !strcmp(name, "tokens"))
			return ir_shape_numel(&op->out[0]->shape);
	}
	return 1;
}

int pass_partition_costs(const struct ir_graph *g, const struct pass_layout *l,
			 const struct pass_rates *r, struct pass_unit_costs *c, FILE *err)
{
	struct unitmap m;
	units_find(g, &m);
	int L = m.n_layers, nv = g->n_values, n = g->n_ops;
	if (!L) {
		if (err)
			fprintf(err, "error: partition: the model has no layers (scopes "
				     "'layers.N')\n");
		unitmap_free(&m);
		return 1;
	}
	double *flops = xcalloc((size_t)nv, sizeof *flops);
	int64_t *act = xcalloc((size_t)nv, sizeof *act);
	if (pass_account_values(g, flops, act)) {
		if (err)
			fprintf(err, "error: partition: the model's counts pass 2^63\n");
		free(flops);
		free(act);
		unitmap_free(&m);
		return 1;
	}
	costs_alloc(c, L);
	double rate = r && r->flops_per_s > 0 ? r->flops_per_s : PASS_DEFAULT_FLOPS;
	double tokens = (double)tokens_of(g);
	const struct ir_setting *prec = ir_graph_setting(g, "precision");
	double moment = prec && prec->is_str && prec->str && !strcmp(prec->str, "fp8") ? 2 : 4;
	int ep = l->ep > 0 ? l->ep : 1, dp = l->dp > 0 ? l->dp : 1;

	unsigned char *expert = xcalloc((size_t)nv, 1);
	int *seen = xcalloc((size_t)L + 2, sizeof *seen); /* copy units, stamped by param */
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if ((op->kind == IR_OP_GROUPED_MATMUL || op->kind == IR_OP_SCALED_GROUPED_MATMUL) &&
		    op->phase == IR_PHASE_FWD) {
			/* after the fp8 pass the weight is the E4M3 copy of the parameter */
			const struct ir_op *p = param_of(op->in[1]);
			if (p)
				expert[p->out[0]->id] = 1;
		}
	}
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		int u = m.unit[i];
		for (int j = 0; j < op->n_out; j++) {
			c->flops_per_token[u] += flops[op->out[j]->id];
			c->mem_act[u] += (double)act[op->out[j]->id];
		}
		if (op->kind != IR_OP_PARAM || ir_op_int(op, "trainable", 1) == 0)
			continue;
		const struct ir_value *v = op->out[0];
		int64_t numel = ir_shape_numel(&v->shape);
		double size = (double)ir_dtype_size(v->dtype);
		if (expert[v->id]) {
			c->params_expert[u] += numel;
			c->mem_params[u] += (double)numel * size / ep;
			c->mem_grads[u] += (double)numel * size / ep;
			c->mem_optim[u] += (double)numel * 2 * moment / (l->zero ? dp : ep);
		} else {
			c->mem_params[u] += (double)numel * size;
			c->mem_grads[u] += (double)numel * size;
			c->mem_optim[u] += (double)numel * 2 * moment / (l->zero ? dp : 1);
		}
		c->params[u] += numel;
	}
	/* copies: parameters of the embedding's unit read (through views) by later ops */
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD || is_view(op->kind) || is_leaf(op->kind) ||
		    !m.unit[i])
			continue;
		for (int j = 0; j < op->n_in; j++) {
			const struct ir_op *p = param_of(op->in[j]);
			if (!p || m.unit[op_index(&m, p)] || ir_op_int(p, "trainable", 1) == 0 ||
			    seen[m.unit[i]] == p->id + 1)
				continue;
			seen[m.unit[i]] = p->id + 1;
			int64_t numel = ir_shape_numel(&p->out[0]->shape);
			double bytes = (double)numel * (double)ir_dtype_size(p->out[0]->dtype);
			int ex = expert[p->out[0]->id];
			c->params_copied[m.unit[i]] += numel;
			c->mem_copied[m.unit[i]] += 2 * bytes / (ex ? ep : 1);
		}
	}
	/* stage boundaries: forward values from unit d read up to unit hi cross the
	 * boundaries b (between layer b-1, unit b, and layer b, unit b+1) with d <= b < hi;
	 * float ones come back as gradients */
	int *hi = xcalloc((size_t)nv, sizeof *hi);
	for (int i = 0; i < n; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		for (int j = 0; j < op->n_in; j++)
			if (m.unit[i] > hi[op->in[j]->id])
				hi[op->in[j]->id] = m.unit[i];
	}
	for (int v = 0; v < nv; v++) {
		const struct ir_value *val = g->values[v];
		if (!val->def || is_leaf(val->def->kind) || val->def->phase != IR_PHASE_FWD)
			continue;
		int d = m.unit[op_index(&m, val->def)];
		double b = (double)value_bytes(val) * (ir_dtype_is_float(val->dtype) ? 2 : 1);
		for (int k = d > 1 ? d : 1; k < hi[v] && k < L; k++)
			c->mem_cross[k] += b;
	}
	/* EP: the receive buffers of dispatch (the routed rows) and combine (the experts'
	 * outputs, in the dtype the combine reads) */
	if (ep > 1)
		for (int i = 0; i < n; i++) {
			const struct ir_op *op = g->ops[i];
			if (op->kind != IR_OP_MOE_COMBINE || op->phase != IR_PHASE_FWD)
				continue;
			const struct ir_value *ys = op->in[0];
			const struct ir_op *disp = op->in[1]->def;
			double b = (double)value_bytes(ys);
			if (disp && disp->kind == IR_OP_MOE_DISPATCH)
				b += (double)value_bytes(disp->out[0]);
			/* the capacity; the worst case is ep times the even share (at
			 * most: fewer when top_k exceeds the experts of a rank) */
			double f = pass_ep_capacity(g);
			b *= f > 0 && f < ep ? f : ep;
			if (b > c->mem_ep[m.unit[i]])
				c->mem_ep[m.unit[i]] = b;
		}
	for (int u = 0; u < L + 2; u++)
		c->time[u] = c->flops_per_token[u] * tokens / rate;
	free(hi);
	free(expert);
	free(seen);
	free(flops);
	free(act);
	unitmap_free(&m);
	return 0;
}

/* --- the split ----------------------------------------------------------------------- */

/* Units of the stage s holding layers [first, first + n): its layers, the embedding's
 * unit on stage 0, the head's on the last. */
static void stage_units(const struct pass_unit_costs *c, int first, int n, int s, int pp,
			int *lo, int *hi)
{
	*lo = s == 0 ? 0 : first + 1;
	*hi = s == pp - 1 ? c->n_layers + 1 : first + n;
}

double pass_partition_stage_time(const struct pass_unit_costs *c, int first, int n, int s,
				 int pp)
{
	int lo, hi;
	stage_units(c, first, n, s, pp, &lo, &hi);
	double t = 0;
	for (int u = lo; u <= hi; u++)
		t += c->time[u];
	return t;
}

double pass_partition_stage_mem(const struct pass_unit_costs *c, int first, int n, int s,
				int pp, const int *inflight, double *comm)
{
	int lo, hi, L = c->n_layers;
	stage_units(c, first, n, s, pp, &lo, &hi);
	double fixed = 0, acts = 0, ep = 0, cross = 0;
	for (int u = lo; u <= hi; u++) {
		fixed += c->mem_params[u] + c->mem_grads[u] + c->mem_optim[u];
		if (s > 0)
			fixed += c->mem_copied[u];
		acts += c->mem_act[u];
		if (c->mem_ep[u] > ep)
			ep = c->mem_ep[u];
	}
	if (first > 0)
		cross += c->mem_cross[first];
	if (first + n < L)
		cross += c->mem_cross[first + n];
	if (comm)
		*comm = ep + cross;
	return fixed + acts * inflight[s] + ep + cross;
}

/* The DP.  best[s][j]: the smallest largest stage time of stages 0..s holding layers
 * [0, j), every stage within the limit (DBL_MAX: no such split); cut[s][j] the first
 * layer of stage s in that split.  With by_mem the stage "time" is its memory and
 * there is no limit: the smallest largest-stage memory, for the message when nothing
 * fits. */
static double split_dp(const struct pass_unit_costs *c, int pp, const int *inflight,
		       double limit, int by_mem, int *layer_stage)
{
	int L = c->n_layers;
	double *best = xcalloc((size_t)pp * (size_t)(L + 1), sizeof *best);
	int *cut = xcalloc((size_t)pp * (size_t)(L + 1), sizeof *cut);
#define BEST(s, j) best[(size_t)(s) * (size_t)(L + 1) + (size_t)(j)]
#define CUT(s, j) cut[(size_t)(s) * (size_t)(L + 1) + (size_t)(j)]
	for (int s = 0; s < pp; s++)
		for (int j = 0; j <= L; j++) {
			BEST(s, j) = DBL_MAX;
			/* stage s holds [i, j): i >= s layers before it, and j leaves one layer to
			 * each later stage; the last stage ends at L */
			if (j < s + 1 || j > L - (pp - 1 - s) || (s == pp - 1 && j != L))
				continue;
			for (int i = s == 0 ? 0 : s; i < j && (s > 0 || i == 0); i++) {
				double before = s ? BEST(s - 1, i) : 0;
				if (before == DBL_MAX)
					continue;
				double mem = pass_partition_stage_mem(c, i, j - i, s, pp, inflight,
								      NULL);
				double cost;
				if (by_mem) {
					cost = mem;
				} else {
					if (limit > 0 && mem > limit)
						continue;
					cost = pass_partition_stage_time(c, i, j - i, s, pp);
				}
				double v = before > cost ? before : cost;
				if (v < BEST(s, j)) {
					BEST(s, j) = v;
					CUT(s, j) = i;
				}
			}
		}
	double r = BEST(pp - 1, L);
	if (r != DBL_MAX && layer_stage)
		for (int s = pp - 1, j = L; s >= 0; s--) {
			int i = CUT(s, j);
			for (int k = i; k < j; k++)
				layer_stage[k] = s;
			j = i;
		}
#undef BEST
#undef CUT
	free(best);
	free(cut);
	return r;
}

int pass_partition_split(const struct pass_unit_costs *c, int pp, const int *inflight,
			 double mem_limit, int *layer_stage, FILE *err)
{
	if (pp < 1 || pp > c->n_layers) {
		if (err)
			fprintf(err, "error: partition: %d stages for %d layers (a stage holds "
				     "at least one layer)\n", pp, c->n_layers);
		return 1;
	}
	if (split_dp(c, pp, inflight, mem_limit, 0, layer_stage) < DBL_MAX)
		return 0;
	if (err)
		fprintf(err, "error: partition: no split of %d layers into %d stages fits "
			     "%.4g GiB a rank; the best split needs %.4g GiB on its largest "
			     "stage\n", c->n_layers, pp, mem_limit / (1 << 30),
			split_dp(c, pp, inflight, 0, 1, NULL) / (1 << 30));
	return 1;
}

/* --- the plan ---------------------------------------------------------------------- */

int pass_partition_plan(const struct ir_graph *g, const struct pass_layout *l,
			const struct pass_rates *r, struct pass_partition *out, FILE *err)
{
	memset(out, 0, sizeof *out);
	if (l->dp < 1) {
		if (err)
			fprintf(err, "error: layout: dp=%d (at least 1)\n", l->dp);
		return 1;
	}
	if (pass_layout_check(g, l, l->pp * l->dp, err))
		return 1;
	struct pass_unit_costs c;
	if (pass_partition_costs(g, l, r, &c, err))
		return 1;
	int pp = l->pp, L = c.n_layers;
	int *inflight = xcalloc((size_t)pp, sizeof *inflight);
	pass_layout_inflight(l, inflight);
	out->pp = pp;
	out->n_layers = L;
	out->layer_stage = xcalloc((size_t)L, sizeof *out->layer_stage);
	out->stages = xcalloc((size_t)pp, sizeof *out->stages);
	if (pass_partition_split(&c, pp, inflight, r ? r->mem_limit : 0, out->layer_stage,
				 err)) {
		free(inflight);
		pass_unit_costs_free(&c);
		pass_partition_free(out);
		return 1;
	}
	double sum = 0, max = 0;
	for (int s = 0, first = 0; s < pp; s++) {
		struct pass_stage_stats *st = &out->stages[s];
		int n = 0;
		while (first + n < L && out->layer_stage[first + n] == s)
			n++;
		st->first_layer = first;
		st->n_layers = n;
		st->inflight = inflight[s];
		int lo, hi;
		stage_units(&c, first, n, s, pp, &lo, &hi);
		double mp = 0, mg = 0, mo = 0, ma = 0, comm;
		int64_t expert = 0;
		for (int u = lo; u <= hi; u++) {
			st->params += c.params[u];
			expert += c.params_expert[u];
			st->flops_per_token += c.flops_per_token[u];
			mp += c.mem_params[u];
			mg += c.mem_grads[u];
			mo += c.mem_optim[u];
			ma += c.mem_act[u];
			if (s > 0) {
				st->params_copied += c.params_copied[u];
				mp += c.mem_copied[u] / 2;
				mg += c.mem_copied[u] / 2;
			}
		}
		double total = pass_partition_stage_mem(&c, first, n, s, pp, inflight, &comm);
		st->params_per_rank = st->params - expert + expert / (l->ep > 0 ? l->ep : 1) +
				      (s > 0 ? st->params_copied : 0);
		st->mem_params = (int64_t)mp;
		st->mem_grads = (int64_t)mg;
		st->mem_optim = (int64_t)mo;
		st->mem_acts = (int64_t)(ma * inflight[s]);
		st->mem_comm = (int64_t)comm;
		st->mem_total = (int64_t)total;
		st->compute_s = pass_partition_stage_time(&c, first, n, s, pp);
		sum += st->compute_s;
		if (st->compute_s > max)
			max = st->compute_s;
		first += n;
	}
	out->balance = sum > 0 ? max / (sum / pp) : 1;
	free(inflight);
	pass_unit_costs_free(&c);
	return 0;
}

void pass_partition_free(struct pass_partition *p)
{
	free(p->layer_stage);
	free(p->stages);
	p->layer_stage = NULL;
	p->stages = NULL;
}

/* --- op->stage ------------------------------------------------------------------------ */

int pass_partition_assign(struct ir_graph *g, const struct pass_partition *p, FILE *err)
{
	struct unitmap m;
	units_find(g, &m);
	if (m.n_layers != p->n_layers) {
		if (err)
			fprintf(err, "error: partition: the plan has %d layers, the graph %d\n",
				p->n_layers, m.n_layers);
		unitmap_free(&m);
		return 1;
	}
	int rc = 0, L = m.n_layers;
	for (int i = 0; i < g->n_ops; i++) {
		int u = m.unit[i];
		int s = u == 0 ? 0 : u == L + 1 ? p->pp - 1 : p->layer_stage[u - 1];
		g->ops[i]->stage = s;
		if (s < 0 || s >= p->pp) {
			if (err)
				fprintf(err, "error: internal: partition: op %%%d (%s, scope '%s') "
					     "gets stage %d of %d\n", g->ops[i]->id,
					ir_op_name(g->ops[i]->kind), g->ops[i]->scope, s, p->pp);
			rc = 1;
		}
	}
	/* INPUT, PARAM, CONST took their lowest consumer's unit, so their lowest
	 * consumer's stage; what remains to check is that forward values flow down */
	for (int i = 0; i < g->n_ops && !rc; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->phase != IR_PHASE_FWD)
			continue;
		for (int j = 0; j < op->n_in; j++) {
			const struct ir_op *d = op->in[j]->def;
			if (d && d->stage > op->stage) {
				if (err)
					fprintf(err, "error: internal: partition: op %%%d (%s, "
						     "scope '%s') on stage %d reads %%%d from stage "
						     "%d: a forward value flows back up the "
						     "pipeline\n", op->id, ir_op_name(op->kind),
						op->scope, op->stage, op->in[j]->id, d->stage);
				rc = 1;
				break;
			}
		}
	}
	unitmap_free(&m);
	return rc;
}
