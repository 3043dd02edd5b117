/* test_partition.c - the partition pass's dynamic programming against brute force over
 * every split: on random cost vectors (hundreds of cases, with and without a memory
 * limit) and on the cost vectors of tiny_moe and tiny_gpt at pp = 2 .. layers.  Then
 * the plan of those models: stage parameters sum to the model's, op->stage after the
 * pass pipeline is in range for every op and forward values flow down the pipeline. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "check.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

static unsigned long long rng = 88172645463325252ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

/* A stage's time and memory, from the definition in passes.h, written again here */
static double stage_time(const struct pass_unit_costs *c, int first, int n, int s, int pp)
{
	double t = 0;
	for (int k = first; k < first + n; k++)
		t += c->time[k + 1];
	if (s == 0)
		t += c->time[0];
	if (s == pp - 1)
		t += c->time[c->n_layers + 1];
	return t;
}

static double unit_fixed(const struct pass_unit_costs *c, int u, int s)
{
	return c->mem_params[u] + c->mem_grads[u] + c->mem_optim[u] +
	       (s > 0 ? c->mem_copied[u] : 0);
}

static double stage_mem(const struct pass_unit_costs *c, int first, int n, int s, int pp,
			const int *inflight)
{
	double fixed = 0, act = 0, ep = 0;
	int units[64], nu = 0;
	if (s == 0)
		units[nu++] = 0;
	for (int k = first; k < first + n; k++)
		units[nu++] = k + 1;
	if (s == pp - 1)
		units[nu++] = c->n_layers + 1;
	for (int i = 0; i < nu; i++) {
		fixed += unit_fixed(c, units[i], s);
		act += c->mem_act[units[i]];
		ep = fmax(ep, c->mem_ep[units[i]]);
	}
	double cross = (first > 0 ? c->mem_cross[first] : 0) +
		       (first + n < c->n_layers ? c->mem_cross[first + n] : 0);
	return fixed + act * inflight[s] + ep + cross;
}

/* Every split of L layers into pp non-empty runs: the smallest largest stage time of
 * those within the limit (DBL_MAX when none). */
static double brute(const struct pass_unit_costs *c, int pp, const int *inflight,
		    double limit)
{
	int L = c->n_layers, cut[64];
	double best = DBL_MAX;
	for (int s = 0; s < pp; s++)
		cut[s] = s; /* first layer of stage s */
	cut[pp] = L;
	for (;;) {
		double worst = 0;
		int fits = 1;
		for (int s = 0; s < pp; s++) {
			int n = cut[s + 1] - cut[s];
			if (limit > 0 && stage_mem(c, cut[s], n, s, pp, inflight) > limit)
				fits = 0;
			worst = fmax(worst, stage_time(c, cut[s], n, s, pp));
		}
		if (fits && worst < best)
			best = worst;
		/* next combination of the cuts 1..pp-1 */
		int s = pp - 1;
		while (s >= 1 && cut[s] == L - (pp - s))
			s--;
		if (s < 1)
			break;
		cut[s]++;
		for (int t = s + 1; t < pp; t++)
			cut[t] = cut[t - 1] + 1;
	}
	return best;
}

static int n_compared;

/* The DP's split: valid, within the limit, and as good as brute force. */
static void compare(const struct pass_unit_costs *c, int pp, const int *inflight,
		    double limit, const char *what)
{
	int L = c->n_layers, stage[64];
	double want = brute(c, pp, inflight, limit);
	FILE *null = fopen("/dev/null", "w");
	int rc = pass_partition_split(c, pp, inflight, limit, stage, null);
	fclose(null);
	n_compared++;
	CHECKF((rc == 0) == (want < DBL_MAX), "%s: L %d pp %d limit %g: split rc %d, brute "
	       "force %s", what, L, pp, limit, rc, want < DBL_MAX ? "fits" : "does not fit");
	if (rc)
		return;
	double worst = 0;
	for (int s = 0, first = 0; s < pp; s++) {
		int n = 0;
		while (first + n < L && stage[first + n] == s)
			n++;
		CHECKF(n >= 1, "%s: stage %d of %d is empty", what, s, pp);
		double mem = stage_mem(c, first, n, s, pp, inflight);
		CHECKF(limit <= 0 || mem <= limit, "%s: stage %d needs %g > limit %g", what, s,
		       mem, limit);
		double dm = pass_partition_stage_mem(c, first, n, s, pp, inflight, NULL);
		CHECKF(fabs(dm - mem) <= 1e-9 * fmax(1, mem), "%s: stage memory %g, here %g",
		       what, dm, mem);
		worst = fmax(worst, stage_time(c, first, n, s, pp));
		first += n;
		if (s == pp - 1)
			CHECKF(first == L, "%s: the stages hold %d of %d layers", what, first, L);
	}
	CHECKF(fabs(worst - want) <= 1e-12 * fmax(1, want),
	       "%s: L %d pp %d: largest stage %.17g, brute force %.17g", what, L, pp, worst,
	       want);
}

static void alloc_costs(struct pass_unit_costs *c, int L)
{
	memset(c, 0, sizeof *c);
	c->n_layers = L;
	size_t u = (size_t)L + 2;
	c->time = calloc(u, sizeof *c->time);
	c->flops_per_token = calloc(u, sizeof *c->flops_per_token);
	c->params = calloc(u, sizeof *c->params);
	c->params_expert = calloc(u, sizeof *c->params_expert);
	c->params_copied = calloc(u, sizeof *c->params_copied);
	c->mem_params = calloc(u, sizeof *c->mem_params);
	c->mem_grads = calloc(u, sizeof *c->mem_grads);
	c->mem_optim = calloc(u, sizeof *c->mem_optim);
	c->mem_copied = calloc(u, sizeof *c->mem_copied);
	c->mem_act = calloc(u, sizeof *c->mem_act);
	c->mem_ep = calloc(u, sizeof *c->mem_ep);
	c->mem_cross = calloc((size_t)L + 1, sizeof *c->mem_cross);
	REQUIRE(c->time && c->mem_cross && c->mem_ep && c->mem_act && c->mem_copied);
}

static void test_random(void)
{
	for (int t = 0; t < 600; t++) {
		int L = 1 + (int)(uniform() * 10), pp = 1 + (int)(uniform() * L);
		struct pass_unit_costs c;
		alloc_costs(&c, L);
		/* small integers make ties, which the two must agree on too */
		int ints = t % 3 == 0;
		for (int u = 0; u < L + 2; u++) {
			c.time[u] = ints ? (double)(int)(uniform() * 4) : uniform();
			c.mem_params[u] = uniform() * 10;
			c.mem_grads[u] = uniform() * 10;
			c.mem_optim[u] = uniform() * 20;
			c.mem_copied[u] = u == L + 1 ? uniform() * 5 : 0;
			c.mem_act[u] = uniform() * 8;
			c.mem_ep[u] = uniform() < 0.5 ? uniform() * 6 : 0;
		}
		for (int b = 1; b < L; b++)
			c.mem_cross[b] = uniform() * 3;
		struct pass_layout l = { .pp = pp, .dp = 1, .ep = 1,
					 .microbatches = 1 + (int)(uniform() * 2 * pp),
					 .schedule = t % 5 ? "1f1b" : "gpipe" };
		int inflight[64];
		pass_layout_inflight(&l, inflight);
		compare(&c, pp, inflight, 0, "random");
		/* limits from tight (nothing fits) to loose: up to the whole model on one
		 * stage, more than any stage holds */
		double whole = stage_mem(&c, 0, L, 0, 1, inflight);
		for (int k = 0; k < 3; k++)
			compare(&c, pp, inflight, whole * uniform() + 1e-9, "random limited");
		pass_unit_costs_free(&c);
	}
}

static int64_t sum_params(const struct pass_partition *p)
{
	int64_t n = 0;
	for (int s = 0; s < p->pp; s++)
		n += p->stages[s].params;
	return n;
}

static void test_model(const char *path)
{
	struct ir_graph *g = sl_compile_file(path, 0, NULL, stderr);
	REQUIRE(g != NULL);
	struct pass_account a;
	REQUIRE(pass_account(g, &a) == 0);
	struct pass_layout l = { .pp = 1, .dp = 2, .ep = 1, .microbatches = 4,
				 .schedule = "1f1b" };
	struct pass_rates r = { 0, 0 };
	struct pass_unit_costs c;
	REQUIRE(pass_partition_costs(g, &l, &r, &c, stderr) == 0);
	int L = c.n_layers;
	CHECKF(L >= 2, "%s: %d layers", path, L);
	double flops = 0;
	for (int u = 0; u < L + 2; u++)
		flops += c.flops_per_token[u];
	CHECKF(fabs(flops - a.flops_per_token) <= 1e-9 * a.flops_per_token,
	       "%s: units' FLOPs %g, the model's %g", path, flops, a.flops_per_token);
	for (int pp = 1; pp <= L; pp++) {
		int inflight[64];
		l.pp = pp;
		pass_layout_inflight(&l, inflight);
		compare(&c, pp, inflight, 0, path);
		/* a limit between the best split's largest stage and the sum */
		double total = pass_partition_stage_mem(&c, 0, L, 0, 1, inflight, NULL);
		compare(&c, pp, inflight, total * 0.4, path);
		compare(&c, pp, inflight, total * 0.7, path);

		struct pass_partition p;
		REQUIRE(pass_partition_plan(g, &l, &r, &p, stderr) == 0);
		CHECKF(sum_params(&p) == a.params_total + a.params_mtp,
		       "%s pp %d: stages hold %lld parameters, the model %lld", path, pp,
		       (long long)sum_params(&p), (long long)(a.params_total + a.params_mtp));
		CHECK(p.balance >= 1 - 1e-12);
		pass_partition_free(&p);
	}
	pass_unit_costs_free(&c);

	/* more stages than layers: refused */
	l.pp = L + 1;
	struct pass_partition p;
	FILE *null = fopen("/dev/null", "w");
	CHECK(pass_partition_plan(g, &l, &r, &p, null) != 0);
	fclose(null);

	/* op->stage on the whole training step */
	l.pp = L < 3 ? L : 3;
	REQUIRE(pass_partition_plan(g, &l, &r, &p, stderr) == 0);
	REQUIRE(pass_pipeline_run(g, "autodiff", stderr) == 0);
	/* planned after autodiff, the same stages and figures */
	struct pass_partition q;
	REQUIRE(pass_partition_plan(g, &l, &r, &q, stderr) == 0);
	for (int s = 0; s < l.pp; s++)
		CHECKF(q.stages[s].n_layers == p.stages[s].n_layers &&
		       q.stages[s].params == p.stages[s].params &&
		       q.stages[s].mem_total == p.stages[s].mem_total,
		       "%s: stage %d after autodiff: %d layers, %lld bytes; before: %d, %lld",
		       path, s, q.stages[s].n_layers, (long long)q.stages[s].mem_total,
		       p.stages[s].n_layers, (long long)p.stages[s].mem_total);
	pass_partition_free(&q);
	CHECK(pass_partition_assign(g, &p, stderr) == 0);
	int seen[64] = { 0 };
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		CHECKF(op->stage >= 0 && op->stage < l.pp, "%s: op %%%d on stage %d", path,
		       op->id, op->stage);
		if (op->stage >= 0 && op->stage < l.pp)
			seen[op->stage] |= 1 << (op->phase != IR_PHASE_FWD);
		if (op->phase == IR_PHASE_FWD)
			for (int j = 0; j < op->n_in; j++)
				CHECK(op->in[j]->def->stage <= op->stage);
	}
	for (int s = 0; s < l.pp; s++)
		CHECKF(seen[s] == 3, "%s: stage %d has %s", path, s,
		       seen[s] & 1 ? "no backward ops" : "no forward ops");
	pass_partition_free(&p);
	pass_account_free(&a);
	ir_graph_free(g);
}

int main(void)
{
	test_random();
	test_model("models/tiny_moe.sl");
	test_model("models/tiny_gpt.sl");
	printf("%d splits compared with brute force\n", n_compared);
	return CHECK_DONE();
}
