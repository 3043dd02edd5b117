/* routing.c - node-limited routing (moe groups: G, node_limit: M) on the reference
 * executor, against a direct C computation of DESIGN.md's rule on the same inputs:
 * the experts fall in G equal groups, a group scores the sum of its top_k / M highest
 * biased affinities s + b, a token keeps its M best groups, and top-k is chosen among
 * their experts only.  Every token's chosen experts must lie in its M best groups and
 * equal the top-k among them, in order (largest first, ties to the lower index); the
 * inputs are drawn so that the limit changes the choice of some tokens.  Then the
 * gradient of the whole layer is checked against finite differences (numerics.h). */
#include "numerics.h"

#include "frontend/frontend.h"

enum { N_TOK = 24, DIM = 8, E = 16, K = 4, G = 4, M = 2 };

static int cmp_desc(const double *v, int a, int b)
{
	return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/* the k largest of v[0..n) (indices, largest first, ties to the lower index), among
 * those with allowed[i] */
static void top(const double *v, int n, const int *allowed, int k, int *out)
{
	for (int j = 0; j < k; j++) {
		int best = -1;
		for (int i = 0; i < n; i++) {
			int taken = 0;
			for (int q = 0; q < j; q++)
				taken |= out[q] == i;
			if (taken || (allowed && !allowed[i]))
				continue;
			if (best < 0 || cmp_desc(v, i, best))
				best = i;
		}
		out[j] = best;
	}
}

static const struct ir_op *final_topk(const struct ir_graph *g)
{
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == IR_OP_TOPK && ir_op_int(g->ops[i], "groups", 0) == G)
			return g->ops[i];
	return NULL;
}

static void check_gate(const char *gate_args, int sig)
{
	char src[1024];
	snprintf(src, sizeof src,
		 "model routing\n"
		 "graph(x: f32[%d, %d], targets: i32[%d]) {\n"
		 "  y = moe(x, experts: %d, top_k: %d, hidden: 4, %s, groups: %d, node_limit: %d)\n"
		 "  loss = cross_entropy(linear(y, 8, name: head), targets)\n"
		 "}\n",
		 N_TOK, DIM, N_TOK, E, K, gate_args, G, M);
	struct ir_graph *g = sl_compile_source(src, strlen(src), "routing.sl", 0, NULL, stderr);
	REQUIRE(g);
	struct tdata d = { 0 };
	double *tg = tdata_set(&d, "targets", N_TOK, NULL);
	for (int i = 0; i < N_TOK; i++)
		tg[i] = i % 8;
	tdata_fill(&d, g, 1.0);
	struct ref_exec *e = ref_new(g);
	tdata_bind(&d, g, e);
	REQUIRE(ref_run(e, stderr) == 0);
	const struct ir_op *tk = final_topk(g);
	REQUIRE(tk && ir_op_int(tk, "k", 0) == K);
	const int64_t *idx = ref_value_int(e, tk->out[0]->id);
	REQUIRE(idx);

	const double *x = tdata_get(&d, "x"), *w = tdata_get(&d, "moe.gate.weight");
	const double *b = sig ? tdata_get(&d, "moe.gate.bias") : NULL;
	REQUIRE(x && w && (b || !sig));
	int limited = 0;
	for (int n = 0; n < N_TOK; n++) {
		double s[E], mx = -INFINITY, sum = 0;
		for (int j = 0; j < E; j++) {
			double u = 0;
			for (int c = 0; c < DIM; c++)
				u += x[n * DIM + c] * w[c * E + j];
			s[j] = u;
			mx = fmax(mx, u);
		}
		for (int j = 0; j < E; j++) {
			if (sig) {
				s[j] = 1 / (1 + exp(-s[j])) + b[j];
			} else {
				s[j] = exp(s[j] - mx);
				sum += s[j];
			}
		}
		for (int j = 0; !sig && j < E; j++)
			s[j] /= sum;
		/* group scores: the sum of each group's K / M best */
		double score[G];
		for (int q = 0; q < G; q++) {
			int best[K / M];
			top(s + q * (E / G), E / G, NULL, K / M, best);
			score[q] = 0;
			for (int t = 0; t < K / M; t++)
				score[q] += s[q * (E / G) + best[t]];
		}
		int keep[M], allowed[E] = { 0 }, want[K], free_choice[K];
		top(score, G, NULL, M, keep);
		for (int t = 0; t < M; t++)
			for (int j = 0; j < E / G; j++)
				allowed[keep[t] * (E / G) + j] = 1;
		top(s, E, allowed, K, want);
		top(s, E, NULL, K, free_choice);
		for (int t = 0; t < K; t++) {
			int c = (int)idx[n * K + t];
			CHECKF(c >= 0 && c < E && allowed[c],
			       "%s: token %d chose expert %d outside its %d best groups", gate_args,
			       n, c, M);
			CHECKF(c == want[t], "%s: token %d choice %d is expert %d, the rule says %d",
			       gate_args, n, t, c, want[t]);
			limited |= free_choice[t] != want[t];
		}
	}
	CHECKF(limited, "%s: the node limit changed no token's choice: the test is too easy",
	       gate_args);
	ref_free(e);

	/* the backward through the limited routing, by finite differences */
	struct ir_graph *gf = sl_compile_source(src, strlen(src), "routing.sl", 0, NULL, stderr);
	REQUIRE(gf);
	struct tdata d2 = { 0 };
	double *tg2 = tdata_set(&d2, "targets", N_TOK, NULL);
	for (int i = 0; i < N_TOK; i++)
		tg2[i] = i % 8;
	CHECK(gradcheck_graphs("routing.sl", gf, g, &d2, 0.5, 4) > 0);
	tdata_free(&d2);
	tdata_free(&d);
	ir_graph_free(gf);
	ir_graph_free(g);
}

int main(void)
{
	check_gate("gate: sigmoid, balance: bias(0.001)", 1);
	check_gate("gate: softmax, balance: none", 0);
	return CHECK_DONE();
}
