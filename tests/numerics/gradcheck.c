/* gradcheck.c - finite-difference checks (float64, reference executor) of the gradient
 * autodiff builds for every differentiable primitive op, alone (with broadcasting
 * cases) and in the chains models use: rmsnorm, causal attention with rope (and the
 * ATTENTION op alone: MHA, GQA, Dqk != Dv, not causal), MoE
 * routing (sigmoid, top-k on score + bias, normalised gates, dispatch, grouped
 * matmuls, combine), cross entropy with ignored targets.  The bound and its reason
 * are in numerics.h.  Also: what gets no gradient, and the B/W split. */
#include "numerics.h"

static enum ir_opkind cur_kind; /* the op a table-driven builder makes */
static int cur_case;            /* which shape case */

#define F IR_F32

static void positive(struct tdata *d, const char *name, int64_t n, double lo, double hi)
{
	double *p = tdata_set(d, name, n, NULL);
	for (int64_t i = 0; i < n; i++)
		p[i] = lo + (hi - lo) * rnd_uniform();
}

/* --- elementwise unary ---------------------------------------------------------------- */

static void build_unary(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(3, 4));
	struct ir_value *y = ir_op1(g, cur_kind, 1, &x, F, x->shape);
	if (cur_kind == IR_OP_SCALE) {
		t_attr_f(g, y, "alpha", -1.5);
		t_attr_f(g, y, "beta", 0.25);
	}
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void test_unary(void)
{
	static const enum ir_opkind ks[] = {
		IR_OP_NEG, IR_OP_EXP, IR_OP_LOG, IR_OP_SQRT, IR_OP_RSQRT, IR_OP_RECIP,
		IR_OP_SQUARE, IR_OP_SIGMOID, IR_OP_SILU, IR_OP_TANH, IR_OP_RELU, IR_OP_SCALE,
		IR_OP_CAST,
	};
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		struct tdata d = { 0 };
		cur_kind = ks[i];
		if (ks[i] == IR_OP_LOG || ks[i] == IR_OP_SQRT || ks[i] == IR_OP_RSQRT ||
		    ks[i] == IR_OP_RECIP)
			positive(&d, "x", 12, 0.5, 2.0);
		gradcheck(ir_op_name(ks[i]), build_unary, &d, 100);
	}
}

/* --- elementwise binary, with broadcasting ---------------------------------------------- */

static const struct { struct ir_shape a, b; } bin_cases[] = {
	{ { 3, { 2, 3, 4 } }, { 3, { 2, 3, 4 } } },
	{ { 3, { 2, 3, 4 } }, { 1, { 4 } } },
	{ { 3, { 2, 1, 4 } }, { 2, { 3, 1 } } },
	{ { 2, { 3, 1 } }, { 3, { 2, 3, 4 } } },
	{ { 0, { 0 } }, { 2, { 2, 3 } } },
	{ { 2, { 2, 3 } }, { 1, { 1 } } },
};

static void build_binary(struct ir_graph *g)
{
	struct ir_value *a = t_param(g, "a", bin_cases[cur_case].a);
	struct ir_value *b = t_param(g, "b", bin_cases[cur_case].b);
	struct ir_shape s;
	REQUIRE(ir_shape_broadcast(&a->shape, &b->shape, &s));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, ir_op1(g, cur_kind, 2, VALS(a, b), F, s)));
}

static void test_binary(void)
{
	static const enum ir_opkind ks[] = { IR_OP_ADD, IR_OP_SUB, IR_OP_MUL, IR_OP_DIV };
	for (size_t i = 0; i < 4; i++)
		for (cur_case = 0; cur_case < (int)(sizeof bin_cases / sizeof bin_cases[0]);
		     cur_case++) {
			struct tdata d = { 0 };
			char what[64];
			cur_kind = ks[i];
			snprintf(what, sizeof what, "%s case %d", ir_op_name(ks[i]), cur_case);
			if (ks[i] == IR_OP_DIV) /* away from 0 */
				positive(&d, "b", ir_shape_numel(&bin_cases[cur_case].b), 0.5, 2.0);
			gradcheck(what, build_binary, &d, 100);
		}
}

/* a value used twice: x*x + x, and x feeding two branches */
static void build_reuse(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(2, 3));
	struct ir_value *y = OP(g, ADD, F, x->shape, OP(g, MUL, F, x->shape, x, x), x);
	struct ir_value *z = OP(g, TANH, F, x->shape, x);
	ir_graph_add_output(g, "loss", OP(g, ADD, F, SCALAR, t_weighted_sum(g, y),
					  t_weighted_sum(g, z)));
}

/* --- reductions and shape ops --------------------------------------------------------------- */

static void build_reduce(struct ir_graph *g)
{
	/* cur_case: axis in {0, 1, -1} x keepdim in {0, 1} */
	int axis = (int[]){ 0, 1, -1 }[cur_case % 3], keep = cur_case / 3;
	struct ir_value *x = t_param(g, "x", SH(2, 3, 4));
	struct ir_shape s = x->shape;
	int ax = axis < 0 ? axis + 3 : axis;
	if (keep) {
		s.dim[ax] = 1;
	} else {
		for (int i = ax; i < 2; i++)
			s.dim[i] = s.dim[i + 1];
		s.rank = 2;
	}
	struct ir_value *y = ir_op1(g, cur_kind, 1, &x, F, s);
	t_attr_i(g, y, "axis", axis);
	t_attr_i(g, y, "keepdim", keep);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void test_reduce(void)
{
	static const enum ir_opkind ks[] = { IR_OP_REDUCE_SUM, IR_OP_REDUCE_MEAN, IR_OP_REDUCE_MAX };
	for (int i = 0; i < 3; i++)
		for (cur_case = 0; cur_case < 6; cur_case++) {
			struct tdata d = { 0 };
			char what[64];
			cur_kind = ks[i];
			snprintf(what, sizeof what, "%s case %d", ir_op_name(ks[i]), cur_case);
			gradcheck(what, build_reduce, &d, 100);
		}
}

static void build_shape_ops(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(2, 3, 4));
	struct ir_value *y;
	switch (cur_case) {
	case 0: y = OP(g, SUM_TO, F, SH(3, 1), x); break;
	case 1: y = OP(g, SUM_TO, F, SH(4), x); break;
	case 2: y = OP(g, BROADCAST, F, SH(5, 2, 3, 4), x); break;
	case 3: y = OP(g, RESHAPE, F, SH(6, 4), x); break;
	case 4:
		y = OP(g, TRANSPOSE, F, SH(4, 2, 3), x);
		ir_op_set_ints(g, y->def, "perm", 3, DIMS(2, 0, 1));
		break;
	case 5:
		y = t_attr_i(g, OP(g, SLICE, F, SH(2, 2, 4), x), "axis", 1);
		t_attr_i(g, y, "start", 1);
		break;
	case 6:
		y = t_attr_i(g, OP(g, SLICE, F, SH(2, 3, 2), x), "axis", -1);
		t_attr_i(g, y, "start", 0);
		break;
	default: {
		struct ir_value *w = t_param(g, "w", SH(2, 2, 4));
		struct ir_value *sl = t_attr_i(g, OP(g, SLICE, F, SH(2, 1, 4), x), "axis", 1);
		t_attr_i(g, sl, "start", 2);
		y = t_attr_i(g, OP(g, CONCAT, F, SH(2, 8, 4), w, x, w, OP(g, NEG, F, SH(2, 1, 4), sl)),
			     "axis", 1);
		break;
	}
	}
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void build_broadcast_small(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(3, 1));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, BROADCAST, F, SH(2, 3, 4), x)));
}

static void test_shape_ops(void)
{
	static const char *const names[] = { "sum_to [3,1]", "sum_to [4]", "broadcast",
					     "reshape", "transpose", "slice middle",
					     "slice first", "concat" };
	for (cur_case = 0; cur_case < 8; cur_case++) {
		struct tdata d = { 0 };
		gradcheck(names[cur_case], build_shape_ops, &d, 100);
	}
	struct tdata d = { 0 };
	gradcheck("broadcast [3,1]", build_broadcast_small, &d, 100);
}

/* --- matmul ---------------------------------------------------------------------------------- */

static void build_matmul(struct ir_graph *g)
{
	/* cur_case bits: 1 trans_a, 2 trans_b, 4 batched a with a shared 2-D b,
	 * 8 batched a and b */
	int ta = cur_case & 1, tb = (cur_case >> 1) & 1, ba = (cur_case >> 2) & 1,
	    bb = (cur_case >> 3) & 1;
	int64_t M = 3, K = 4, N = 5;
	struct ir_shape as = ta ? SH(K, M) : SH(M, K), bs = tb ? SH(N, K) : SH(K, N);
	struct ir_shape os = SH(M, N);
	if (ba || bb) {
		as = ta ? SH(2, K, M) : SH(2, M, K);
		os = SH(2, M, N);
	}
	if (bb)
		bs = tb ? SH(2, N, K) : SH(2, K, N);
	struct ir_value *a = t_param(g, "a", as), *b = t_param(g, "b", bs);
	struct ir_value *y = OP(g, MATMUL, F, os, a, b);
	if (ta)
		t_attr_i(g, y, "trans_a", 1);
	if (tb)
		t_attr_i(g, y, "trans_b", 1);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void test_matmul(void)
{
	for (cur_case = 0; cur_case < 12; cur_case++) {
		struct tdata d = { 0 };
		char what[64];
		snprintf(what, sizeof what, "matmul%s%s%s%s", cur_case & 1 ? " ta" : "",
			 cur_case & 2 ? " tb" : "", cur_case & 4 ? " batch/shared" : "",
			 cur_case & 8 ? " batch/batch" : "");
		gradcheck(what, build_matmul, &d, 100);
	}
}

/* --- softmax, rope, rows, cross entropy ----------------------------------------------------- */

static void build_softmax(struct ir_graph *g)
{
	struct ir_shape s = cur_case == 0 ? SH(2, 3, 5) : cur_case == 1 ? SH(2, 4, 4) : SH(2, 2, 3, 3);
	struct ir_value *x = t_param(g, "x", s);
	struct ir_value *y = OP(g, SOFTMAX, F, s, x);
	if (cur_case)
		t_attr_i(g, y, "causal", 1);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void build_rope(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(2, 3, 2, 6));
	struct ir_value *y = t_attr_f(g, OP(g, ROPE, F, x->shape, x), "theta", 100.0);
	t_attr_i(g, y, "inverse", cur_case);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

static void build_gather(struct ir_graph *g)
{
	struct ir_value *t = t_param(g, "table", SH(5, 3));
	struct ir_value *idx = t_input(g, "idx", IR_I32, SH(2, 3));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, GATHER_ROWS, F, SH(2, 3, 3), t, idx)));
}

static void build_scatter(struct ir_graph *g)
{
	struct ir_value *dy = t_param(g, "dy", SH(2, 3, 3));
	struct ir_value *idx = t_input(g, "idx", IR_I32, SH(2, 3));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, SCATTER_ROWS, F, SH(5, 3), dy, idx)));
}

static void build_cross_entropy(struct ir_graph *g)
{
	/* logits = x W over [B,T,V] flattened to [N,V]; targets with ignored entries */
	struct ir_value *x = t_param(g, "x", SH(2, 3, 4)), *w = t_param(g, "w", SH(4, 7));
	struct ir_value *l = OP(g, MATMUL, F, SH(2, 3, 7), x, w);
	struct ir_value *t = t_input(g, "targets", IR_I32, SH(2, 3));
	struct ir_value *lf = OP(g, RESHAPE, F, SH(6, 7), l);
	struct ir_value *tf = OP(g, RESHAPE, IR_I32, SH(6), t);
	ir_graph_add_output(g, "loss", OP(g, CROSS_ENTROPY, F, SCALAR, lf, tf));
}

static void test_rows_softmax_ce(void)
{
	for (cur_case = 0; cur_case < 3; cur_case++) {
		struct tdata d = { 0 };
		gradcheck((const char *[]){ "softmax", "softmax causal", "softmax causal 4-D" }[cur_case],
			  build_softmax, &d, 100);
	}
	for (cur_case = 0; cur_case < 2; cur_case++) {
		struct tdata d = { 0 };
		gradcheck(cur_case ? "rope inverse" : "rope", build_rope, &d, 100);
	}
	struct tdata d = { 0 };
	tdata_set(&d, "idx", 6, (double[]){ 4, 0, 2, 2, 4, 1 });
	gradcheck("gather_rows", build_gather, &d, 100);
	tdata_set(&d, "idx", 6, (double[]){ 4, 0, 2, 2, 4, 1 });
	gradcheck("scatter_rows", build_scatter, &d, 100);
	tdata_set(&d, "targets", 6, (double[]){ 3, -1, 6, 0, -1, 3 });
	gradcheck("cross_entropy ignored", build_cross_entropy, &d, 100);
	tdata_set(&d, "targets", 6, (double[]){ 3, 1, 6, 0, 2, 3 });
	gradcheck("cross_entropy", build_cross_entropy, &d, 100);
}

/* --- routing --------------------------------------------------------------------------------- */

/* take_along / put_along through indices chosen by topk */
static void build_along(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(4, 6)), *v = t_param(g, "v", SH(4, 2));
	struct ir_value *idx = t_attr_i(g, OP(g, TOPK, IR_I32, SH(4, 2), x), "k", 2);
	struct ir_value *tk = OP(g, TAKE_ALONG, F, SH(4, 2), x, idx);
	struct ir_value *pa = OP(g, PUT_ALONG, F, SH(4, 6), OP(g, MUL, F, SH(4, 2), v, tk), idx);
	ir_graph_add_output(g, "loss", OP(g, ADD, F, SCALAR, t_weighted_sum(g, tk),
					  t_weighted_sum(g, pa)));
}

/* A DeepSeek-style MoE layer: sigmoid affinities, top-k on score + a bias no gradient
 * touches, gates normalised over the chosen experts, dispatch, two grouped matmuls
 * (one with trans_b), silu, combine; plus a balance term through expert_count. */
static void build_moe(struct ir_graph *g)
{
	int64_t B = 2, T = 3, N = B * T, D = 4, E = 4, k = 2, H = 5;
	struct ir_value *x = t_param(g, "x", SH(N, D));
	struct ir_value *wr = t_param(g, "router", SH(D, E));
	struct ir_value *bias = t_param(g, "bias", SH(E));
	t_attr_i(g, bias, "trainable", 0);
	struct ir_value *w1 = t_param(g, "w1", SH(E, D, H)), *w2 = t_param(g, "w2", SH(E, D, H));
	struct ir_value *s = OP(g, SIGMOID, F, SH(N, E), OP(g, MATMUL, F, SH(N, E), x, wr));
	struct ir_value *sel = t_attr_i(g, OP(g, TOPK, IR_I32, SH(N, k),
					      OP(g, ADD, F, SH(N, E), s, bias)), "k", k);
	struct ir_value *gs = OP(g, TAKE_ALONG, F, SH(N, k), s, sel);
	struct ir_value *den = t_attr_i(g, OP(g, REDUCE_SUM, F, SH(N, 1), gs), "axis", -1);
	t_attr_i(g, den, "keepdim", 1);
	struct ir_value *gates = OP(g, DIV, F, SH(N, k), gs, den);
	struct ir_op *dop = ir_op_new(g, IR_OP_MOE_DISPATCH, 2, VALS(x, sel), 3);
	dop->out[0]->shape = SH(N * k, D);
	dop->out[1]->dtype = IR_I32, dop->out[1]->shape = SH(E + 1);
	dop->out[2]->dtype = IR_I32, dop->out[2]->shape = SH(N * k);
	ir_op_set_int(g, dop, "experts", E);
	struct ir_value *xs = dop->out[0], *off = dop->out[1], *perm = dop->out[2];
	struct ir_value *h = OP(g, GROUPED_MATMUL, F, SH(N * k, H), xs, w1, off);
	struct ir_value *o = OP(g, GROUPED_MATMUL, F, SH(N * k, D), OP(g, SILU, F, SH(N * k, H), h),
				w2, off);
	t_attr_i(g, o, "trans_b", 1);
	struct ir_value *y = OP(g, MOE_COMBINE, F, SH(N, D), o, perm, gates);
	/* balance: sum_e count[b,e] * mean_t s[b,t,e] (counts carry no gradient) */
	struct ir_value *cnt = t_attr_i(g, OP(g, EXPERT_COUNT, F, SH(B, E),
					      OP(g, RESHAPE, IR_I32, SH(B, T, k), sel)), "experts", E);
	struct ir_value *ms = t_attr_i(g, OP(g, REDUCE_MEAN, F, SH(B, E),
					     OP(g, RESHAPE, F, SH(B, T, E), s)), "axis", 1);
	struct ir_value *bal = OP(g, MUL, F, SH(B, E), cnt, ms);
	ir_graph_add_output(g, "loss", OP(g, ADD, F, SCALAR, t_weighted_sum(g, y),
					  t_weighted_sum(g, bal)));
}

static void test_routing(void)
{
	struct tdata d = { 0 };
	gradcheck("take_along/put_along", build_along, &d, 100);
	double b[4] = { 0.3, -0.2, 0.1, 0.0 };
	tdata_set(&d, "bias", 4, b);
	gradcheck("moe layer", build_moe, &d, 100);
}

/* --- chains ------------------------------------------------------------------------------------ */

static struct ir_value *rmsnorm(struct ir_graph *g, struct ir_value *x, struct ir_value *w)
{
	struct ir_shape s = x->shape, s1 = s;
	s1.dim[s1.rank - 1] = 1;
	struct ir_value *ms = t_attr_i(g, OP(g, REDUCE_MEAN, F, s1, OP(g, SQUARE, F, s, x)), "axis", -1);
	t_attr_i(g, ms, "keepdim", 1);
	struct ir_value *r = OP(g, RSQRT, F, s1, t_attr_f(g, t_attr_f(g, OP(g, SCALE, F, s1, ms),
								    "alpha", 1.0), "beta", 1e-5));
	return OP(g, MUL, F, s, OP(g, MUL, F, s, x, r), w);
}

static void build_rmsnorm_chain(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(2, 3, 6));
	struct ir_value *w1 = t_param(g, "n1", SH(6)), *w2 = t_param(g, "n2", SH(6));
	struct ir_value *h = OP(g, ADD, F, x->shape, x, rmsnorm(g, x, w1));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, rmsnorm(g, rmsnorm(g, h, w2), w1)));
}

/* causal self-attention with rope: x [B,S,C] -> heads [B,S,H,Dh] -> [B,H,S,S] scores */
static void build_attention(struct ir_graph *g)
{
	int64_t B = 2, S = 4, C = 4, H = 2, Dh = 2;
	struct ir_value *x = t_param(g, "x", SH(B, S, C));
	struct ir_value *wq = t_param(g, "wq", SH(C, C)), *wk = t_param(g, "wk", SH(C, C));
	struct ir_value *wv = t_param(g, "wv", SH(C, C)), *wo = t_param(g, "wo", SH(C, C));
	struct ir_value *hd[3];
	struct ir_value *w[3] = { wq, wk, wv };
	for (int i = 0; i < 3; i++) {
		struct ir_value *p = OP(g, RESHAPE, F, SH(B, S, H, Dh), OP(g, MATMUL, F, SH(B, S, C), x, w[i]));
		if (i < 2)
			p = t_attr_f(g, OP(g, ROPE, F, p->shape, p), "theta", 10000.0);
		hd[i] = OP(g, TRANSPOSE, F, SH(B, H, S, Dh), p);
		ir_op_set_ints(g, hd[i]->def, "perm", 4, DIMS(0, 2, 1, 3));
	}
	struct ir_value *sc = t_attr_i(g, OP(g, MATMUL, F, SH(B, H, S, S), hd[0], hd[1]), "trans_b", 1);
	sc = t_attr_f(g, OP(g, SCALE, F, sc->shape, sc), "alpha", 1 / sqrt((double)Dh));
	struct ir_value *p = t_attr_i(g, OP(g, SOFTMAX, F, sc->shape, sc), "causal", 1);
	struct ir_value *o = OP(g, MATMUL, F, SH(B, H, S, Dh), p, hd[2]);
	struct ir_value *ot = OP(g, TRANSPOSE, F, SH(B, S, H, Dh), o);
	ir_op_set_ints(g, ot->def, "perm", 4, DIMS(0, 2, 1, 3));
	struct ir_value *y = OP(g, MATMUL, F, SH(B, S, C), OP(g, RESHAPE, F, SH(B, S, C), ot), wo);
	/* scaled so that |loss| stays within numerics.h's rounding-error budget */
	y = t_attr_f(g, OP(g, SCALE, F, y->shape, y), "alpha", 0.1);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, y));
}

/* The ATTENTION op alone: q, k and v are parameters; cases MHA, GQA (two query heads per
 * kv head), Dqk != Dv (as MLA's 192 and 128) with one kv head, and not causal. */
static const struct { int64_t B, S, H, Hkv, Dk, Dv; int causal; } att_cases[] = {
	{ 2, 5, 2, 2, 3, 3, 1 },
	{ 1, 6, 4, 2, 4, 2, 1 },
	{ 2, 4, 2, 1, 6, 4, 1 },
	{ 1, 4, 2, 1, 3, 2, 0 },
};

static void build_attention_op(struct ir_graph *g)
{
	int64_t B = att_cases[cur_case].B, S = att_cases[cur_case].S, H = att_cases[cur_case].H;
	int64_t Hkv = att_cases[cur_case].Hkv, Dk = att_cases[cur_case].Dk;
	int64_t Dv = att_cases[cur_case].Dv;
	struct ir_value *in[3] = { t_param(g, "q", SH(B, S, H, Dk)), t_param(g, "k", SH(B, S, Hkv, Dk)),
				   t_param(g, "v", SH(B, S, Hkv, Dv)) };
	struct ir_op *op = ir_op_new(g, IR_OP_ATTENTION, 3, in, 2);
	op->out[0]->dtype = F;
	op->out[0]->shape = SH(B, S, H, Dv);
	op->out[1]->dtype = F;
	op->out[1]->shape = SH(B, H, S);
	ir_op_set_int(g, op, "causal", att_cases[cur_case].causal);
	ir_op_set_float(g, op, "scale", 0.8);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, op->out[0]));
}

static void test_attention_op(void)
{
	for (cur_case = 0; cur_case < (int)(sizeof att_cases / sizeof att_cases[0]); cur_case++) {
		struct tdata d = { 0 };
		gradcheck((const char *[]){ "attention MHA causal", "attention GQA causal",
					    "attention Dqk != Dv causal", "attention not causal" }[cur_case],
			  build_attention_op, &d, 100);
	}
}

/* log-sum-exp written with reduce_max, as a stable softmax would be */
static void build_lse(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(3, 5));
	struct ir_value *m = t_attr_i(g, OP(g, REDUCE_MAX, F, SH(3, 1), x), "axis", 1);
	t_attr_i(g, m, "keepdim", 1);
	struct ir_value *e = OP(g, EXP, F, SH(3, 5), OP(g, SUB, F, SH(3, 5), x, m));
	struct ir_value *s = t_attr_i(g, OP(g, REDUCE_SUM, F, SH(3), e), "axis", 1);
	struct ir_value *l = OP(g, ADD, F, SH(3), OP(g, LOG, F, SH(3), s),
				OP(g, RESHAPE, F, SH(3), m));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, l));
}

static void test_chains(void)
{
	struct tdata d = { 0 };
	gradcheck("reuse", build_reuse, &d, 100);
	gradcheck("rmsnorm chain", build_rmsnorm_chain, &d, 100);
	gradcheck("attention causal rope", build_attention, &d, 100);
	gradcheck("logsumexp via reduce_max", build_lse, &d, 100);
}

/* --- what gets no gradient ------------------------------------------------------------------- */

/* loss = sum(R * x * stop_grad(x)) + 0 * frozen-free term: d/dx = R * x, not 2 R x */
static void build_stop(struct ir_graph *g)
{
	struct ir_value *x = t_param(g, "x", SH(3));
	struct ir_value *fz = t_param(g, "frozen", SH(3));
	t_attr_i(g, fz, "trainable", 0);
	t_param(g, "unused", SH(2, 2));
	struct ir_value *y = OP(g, MUL, F, SH(3), x, OP(g, STOP_GRAD, F, SH(3), x));
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, MUL, F, SH(3), y, fz)));
}

static void test_no_gradient(void)
{
	struct ir_graph *g = ir_graph_new("stop");
	build_stop(g);
	REQUIRE(pass_autodiff(g, stderr) == 0);
	CHECK(ir_verify(g, stderr) == 0);
	CHECK(ir_graph_output(g, "grad.frozen") == NULL);
	struct ir_value *gu = ir_graph_output(g, "grad.unused");
	REQUIRE(gu && ir_graph_output(g, "grad.x"));
	CHECK(gu->def->kind == IR_OP_CONST && ir_op_float(gu->def, "value", 1) == 0);
	CHECK(gu->def->phase == IR_PHASE_BWD_W);
	struct tdata d = { 0 };
	tdata_fill(&d, g, 1.0);
	struct ref_exec *e = ref_new(g);
	tdata_bind(&d, g, e);
	REQUIRE(ref_run(e, stderr) == 0);
	const double *x = tdata_get(&d, "x"), *fz = tdata_get(&d, "frozen"), *r = NULL;
	for (int i = 0; i < d.n; i++)
		if (d.name[i][0] == 'R')
			r = d.v[i];
	REQUIRE(r);
	const double *gx = ref_value(e, ir_graph_output(g, "grad.x")->id);
	for (int i = 0; i < 3; i++)
		CHECKF(fabs(gx[i] - r[i] * fz[i] * x[i]) < 1e-12, "stop_grad: grad.x[%d] = %g, "
		       "want %g", i, gx[i], r[i] * fz[i] * x[i]);
	const double *gz = ref_value(e, gu->id);
	for (int i = 0; i < 4; i++)
		CHECK(gz[i] == 0);
	ref_free(e);
	tdata_free(&d);
	ir_graph_free(g);

	/* a missing loss, an op without a gradient rule on the path (FP8 is placed after
	 * autodiff), and a second run are refused */
	FILE *devnull = fopen("/dev/null", "w");
	REQUIRE(devnull);
	g = ir_graph_new("noloss");
	t_param(g, "p", SH(2));
	CHECK(pass_autodiff(g, devnull) != 0);
	ir_graph_free(g);
	g = ir_graph_new("fp8");
	struct ir_op *q = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(t_param(g, "p", SH(2, 4))), 2);
	q->out[0]->dtype = IR_F8E4M3, q->out[0]->shape = SH(2, 4);
	q->out[1]->shape = SH(2, 1);
	ir_op_set_int(g, q, "tile_r", 1);
	ir_op_set_int(g, q, "tile_c", 4);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, DEQUANT_FP8, F, SH(2, 4), q->out[0],
							     q->out[1])));
	CHECK(ir_verify(g, stderr) == 0);
	CHECK(pass_autodiff(g, devnull) != 0);
	ir_graph_free(g);
	g = ir_graph_new("twice");
	ir_graph_add_output(g, "loss", t_weighted_sum(g, t_param(g, "p", SH(2))));
	CHECK(pass_autodiff(g, devnull) == 0);
	/* a graph that has its backward is left as is (read back from textual IR) ... */
	int n_ops = g->n_ops, n_outputs = g->n_outputs;
	CHECK(pass_autodiff(g, devnull) == 0 && g->n_ops == n_ops && g->n_outputs == n_outputs);
	/* ... but one whose backward lacks a parameter's gradient output is refused */
	CHECK(n_outputs == 2 && !strcmp(g->output_names[1], "grad.p"));
	g->n_outputs = 1;
	CHECK(pass_autodiff(g, devnull) != 0);
	g->n_outputs = n_outputs;
	ir_graph_free(g);
	fclose(devnull);
}

/* --- the B/W split ---------------------------------------------------------------------------- */

/* x is an activation (input times a scale parameter), W a weight: the op computing dW
 * is BWD_W, the one computing dx is BWD_B; the embedding's scatter is BWD_W. */
static void test_phases(void)
{
	struct ir_graph *g = ir_graph_new("phases");
	struct ir_value *tok = t_input(g, "tok", IR_I32, SH(2, 3));
	struct ir_value *emb = t_param(g, "emb", SH(7, 4));
	struct ir_value *x = OP(g, GATHER_ROWS, F, SH(2, 3, 4), emb, tok);
	struct ir_value *w = t_param(g, "w", SH(4, 5));
	struct ir_value *wt = OP(g, TRANSPOSE, F, SH(5, 4), w); /* a view of a weight */
	ir_op_set_ints(g, wt->def, "perm", 2, DIMS(1, 0));
	struct ir_value *y = t_attr_i(g, OP(g, MATMUL, F, SH(2, 3, 5), x, wt), "trans_b", 1);
	ir_graph_add_output(g, "loss", t_weighted_sum(g, OP(g, TANH, F, y->shape, y)));
	int n_fwd = g->n_ops;
	struct ir_op *mm = y->def;
	REQUIRE(pass_autodiff(g, stderr) == 0);
	CHECK(ir_verify(g, stderr) == 0);
	check_phases(g, n_fwd, "phases");
	int n_b = 0, n_w = 0, saw_dx = 0, saw_dw = 0, saw_scatter = 0;
	for (int i = n_fwd; i < g->n_ops; i++) {
		struct ir_op *op = g->ops[i];
		n_b += op->phase == IR_PHASE_BWD_B;
		n_w += op->phase == IR_PHASE_BWD_W;
		CHECK(op->stage == -1);
		if (op->kind == IR_OP_MATMUL) {
			CHECK(op->loc.line == mm->loc.line && !strcmp(op->scope, mm->scope));
			/* dx has x's shape, dW^T has wt's shape */
			if (ir_shape_eq(&op->out[0]->shape, &x->shape)) {
				saw_dx = 1;
				CHECK(op->phase == IR_PHASE_BWD_B);
			} else {
				saw_dw = 1;
				CHECK(op->phase == IR_PHASE_BWD_W);
			}
		}
		if (op->kind == IR_OP_SCATTER_ROWS) {
			saw_scatter = 1;
			CHECK(op->phase == IR_PHASE_BWD_W);
		}
	}
	CHECK(saw_dx && saw_dw && saw_scatter && n_b > 0 && n_w > 0);
	ir_graph_free(g);

	/* and the numbers of the same graph */
	struct tdata d = { 0 };
	tdata_set(&d, "tok", 6, (double[]){ 1, 6, 0, 3, 3, 5 });
	struct ir_graph *gf = ir_graph_new("phases"), *gb = ir_graph_new("phases");
	for (int k = 0; k < 2; k++) {
		struct ir_graph *h = k ? gb : gf;
		ir_graph_set_context(h, (struct ir_loc){ "phases.sl", 3, 7 }, "layers.0");
		struct ir_value *tk = t_input(h, "tok", IR_I32, SH(2, 3));
		struct ir_value *e2 = t_param(h, "emb", SH(7, 4));
		struct ir_value *x2 = OP(h, GATHER_ROWS, F, SH(2, 3, 4), e2, tk);
		struct ir_value *w2 = t_param(h, "w", SH(4, 5));
		struct ir_value *wt2 = OP(h, TRANSPOSE, F, SH(5, 4), w2);
		ir_op_set_ints(h, wt2->def, "perm", 2, DIMS(1, 0));
		struct ir_value *y2 = t_attr_i(h, OP(h, MATMUL, F, SH(2, 3, 5), x2, wt2), "trans_b", 1);
		ir_graph_add_output(h, "loss", t_weighted_sum(h, OP(h, TANH, F, y2->shape, y2)));
	}
	gradcheck_graphs("embedding + linear", gf, gb, &d, 1.0, 100);
	for (int i = 0; i < gb->n_ops; i++)
		CHECK(gb->ops[i]->loc.line == 3 && !strcmp(gb->ops[i]->scope, "layers.0"));
	ir_graph_free(gf);
	ir_graph_free(gb);
	tdata_free(&d);
}

/* --- mixed precision: bf16 weights and activations, f32 products and loss ----------------- */

static enum ir_dtype cur_dt;

static void build_mixed(struct ir_graph *g)
{
	enum ir_dtype t = cur_dt;
	struct ir_value *x = t_param(g, "x", SH(4, 8)), *w1 = t_param(g, "w1", SH(8, 6));
	struct ir_value *w2 = t_param(g, "w2", SH(6, 5));
	x->dtype = w1->dtype = w2->dtype = t;
	struct ir_value *h = OP(g, MATMUL, F, SH(4, 6), x, w1); /* bf16 x bf16 -> f32 */
	struct ir_value *s = OP(g, SILU, t, SH(4, 6), OP(g, CAST, t, SH(4, 6), h));
	struct ir_value *z = OP(g, MATMUL, t, SH(4, 5), s, w2);
	struct ir_value *tg = t_input(g, "targets", IR_I32, SH(4));
	ir_graph_add_output(g, "loss", OP(g, CROSS_ENTROPY, F, SCALAR, OP(g, CAST, F, SH(4, 5), z), tg));
}

/* The backward of a bf16 graph verifies (operands of one dtype, casts where the
 * gradient of an f32 product meets a bf16 weight), runs, and its gradients are those
 * of the f32 graph to within bf16 rounding (2^-8 relative per rounding; a few dozen
 * roundings on each path: 3% of the gradient's norm is a generous bound). */
static void test_mixed_precision(void)
{
	struct tdata d = { 0 };
	tdata_set(&d, "targets", 4, (double[]){ 1, 4, 0, 2 });
	struct ref_exec *e[2];
	struct ir_graph *gs[2];
	for (int k = 0; k < 2; k++) {
		cur_dt = k ? IR_BF16 : IR_F32;
		gs[k] = ir_graph_new("mixed");
		build_mixed(gs[k]);
		REQUIRE(pass_autodiff(gs[k], stderr) == 0);
		CHECKF(ir_verify(gs[k], stderr) == 0, "mixed precision (%s): does not verify",
		       ir_dtype_name(cur_dt));
		if (!k)
			tdata_fill(&d, gs[k], 1.0);
		e[k] = ref_new(gs[k]);
		tdata_bind(&d, gs[k], e[k]);
		REQUIRE(ref_run(e[k], stderr) == 0);
	}
	static const char *const names[] = { "grad.x", "grad.w1", "grad.w2" };
	for (int i = 0; i < 3; i++) {
		const struct ir_value *g0 = ir_graph_output(gs[0], names[i]);
		const struct ir_value *g1 = ir_graph_output(gs[1], names[i]);
		REQUIRE(g0 && g1 && g1->dtype == IR_BF16);
		const double *a = ref_value(e[0], g0->id), *b = ref_value(e[1], g1->id);
		double num = 0, den = 0;
		for (int64_t j = 0; j < ir_shape_numel(&g0->shape); j++) {
			num += (a[j] - b[j]) * (a[j] - b[j]);
			den += a[j] * a[j];
			CHECK(b[j] == ref_round(b[j], IR_BF16));
		}
		CHECKF(sqrt(num) <= 0.03 * sqrt(den), "mixed precision: %s differs by %.3g of its "
		       "norm from the f32 gradient", names[i], sqrt(num / den));
		printf("%-28s bf16 against f32: %.2e of the norm\n", names[i], sqrt(num / den));
	}
	for (int k = 0; k < 2; k++) {
		ref_free(e[k]);
		ir_graph_free(gs[k]);
	}
	tdata_free(&d);
}

/* --- golden: the backward of a linear layer with a bias, tanh and cross entropy ------------ */

/* Pinned so that a change in what autodiff emits is seen in review: the bias's
 * gradient is a SUM_TO in W, the weight's one 2-D matmul over all rows in W, nothing
 * toward the input x (an INPUT), the seed and the activation chain in B, each op with
 * the location and scope of the forward op it differentiates. */
static const char golden_linear[] =
	"model golden\n"
	"\n"
	"%0 = input {name = \"x\"} : f32[2, 3, 4] @golden.sl:1:1\n"
	"%1 = input {name = \"targets\"} : i32[6] @golden.sl:1:1\n"
	"%2 = param {init = \"normal\", std = 1.0} : f32[4, 5] scope head path head.w @golden.sl:2:5\n"
	"%3 = param {init = \"normal\", std = 1.0} : f32[5] scope head path head.b @golden.sl:2:5\n"
	"%4 = matmul %0, %2 : f32[2, 3, 5] scope head @golden.sl:2:5\n"
	"%5 = add %4, %3 : f32[2, 3, 5] scope head @golden.sl:2:5\n"
	"%6 = tanh %5 : f32[2, 3, 5] @golden.sl:3:5\n"
	"%7 = reshape %6 : f32[6, 5] @golden.sl:3:5\n"
	"%8 = cross_entropy %7, %1 : f32[] @golden.sl:3:5\n"
	"%9 = const {value = 1.0} : f32[] bwd_b @golden.sl:3:5\n"
	"%10 = cross_entropy_bwd %7, %1, %9 : f32[6, 5] bwd_b @golden.sl:3:5\n"
	"%11 = reshape %10 : f32[2, 3, 5] bwd_b @golden.sl:3:5\n"
	"%12 = square %6 : f32[2, 3, 5] bwd_b @golden.sl:3:5\n"
	"%13 = scale %12 {alpha = -1.0, beta = 1.0} : f32[2, 3, 5] bwd_b @golden.sl:3:5\n"
	"%14 = mul %11, %13 : f32[2, 3, 5] bwd_b @golden.sl:3:5\n"
	"%15 = sum_to %14 : f32[5] bwd_w scope head @golden.sl:2:5\n"
	"%16 = reshape %0 : f32[6, 4] bwd_w scope head @golden.sl:2:5\n"
	"%17 = reshape %14 : f32[6, 5] bwd_w scope head @golden.sl:2:5\n"
	"%18 = matmul %16, %17 {trans_a = 1} : f32[4, 5] bwd_w scope head @golden.sl:2:5\n"
	"\n"
	"output loss = %8\n"
	"output grad.head.w = %18\n"
	"output grad.head.b = %15\n";

static void test_golden(void)
{
	struct ir_graph *g = ir_graph_new("golden");
	ir_graph_set_context(g, (struct ir_loc){ "golden.sl", 1, 1 }, "");
	struct ir_value *x = t_input(g, "x", F, SH(2, 3, 4));
	struct ir_value *t = t_input(g, "targets", IR_I32, SH(6));
	ir_graph_set_context(g, (struct ir_loc){ "golden.sl", 2, 5 }, "head");
	struct ir_value *w = t_param(g, "head.w", SH(4, 5));
	struct ir_value *b = t_param(g, "head.b", SH(5));
	struct ir_value *y = OP(g, ADD, F, SH(2, 3, 5), OP(g, MATMUL, F, SH(2, 3, 5), x, w), b);
	ir_graph_set_context(g, (struct ir_loc){ "golden.sl", 3, 5 }, "");
	struct ir_value *l = OP(g, CROSS_ENTROPY, F, SCALAR,
				OP(g, RESHAPE, F, SH(6, 5), OP(g, TANH, F, SH(2, 3, 5), y)), t);
	ir_graph_add_output(g, "loss", l);
	REQUIRE(pass_autodiff(g, stderr) == 0);
	char *text = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&text, &n);
	REQUIRE(f);
	ir_print(g, f);
	fclose(f);
	CHECKF(!strcmp(text, golden_linear), "autodiff golden differs; got:\n%s", text);
	free(text);
	ir_graph_free(g);
}

int main(void)
{
	test_unary();
	test_binary();
	test_reduce();
	test_shape_ops();
	test_matmul();
	test_rows_softmax_ce();
	test_routing();
	test_chains();
	test_attention_op();
	test_no_gradient();
	test_phases();
	test_mixed_precision();
	test_golden();
	return CHECK_DONE();
}
