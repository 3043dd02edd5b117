/* ref_ops.c - every op of the reference executor on a small example computed by hand;
 * rounding to bf16/f16/f8; errors it must report; the cg_backend interface over it. */
#include "numerics.h"

#include "codegen/backend.h"

#define F IR_F32
#define I IR_I32
#define D(...) ((const double[]){ __VA_ARGS__ })

static struct ir_graph *g;
static struct tdata data;
static int n_inputs;

static struct ir_value *in(enum ir_dtype t, struct ir_shape s, const double *v)
{
	char name[16];
	snprintf(name, sizeof name, "in%d", n_inputs++);
	tdata_set(&data, name, ir_shape_numel(&s), v);
	return t_input(g, name, t, s);
}

static void begin(const char *what)
{
	g = ir_graph_new(what);
}

static void end(void)
{
	ir_graph_free(g);
	tdata_free(&data);
	g = NULL;
}

/* run the graph built so far and compare y with want (to 1e-12 relative) */
static void expect(struct ir_value *y, const double *want, const char *what)
{
	CHECKF(ir_verify(g, stderr) == 0, "%s: graph does not verify", what);
	struct ref_exec *e = ref_new(g);
	tdata_bind(&data, g, e);
	if (ref_run(e, stderr)) {
		CHECKF(0, "%s: run failed", what);
		ref_free(e);
		return;
	}
	int64_t n = ir_shape_numel(&y->shape);
	const double *d = ref_value(e, y->id);
	const int64_t *iv = ref_value_int(e, y->id);
	for (int64_t i = 0; i < n; i++) {
		double got = ir_dtype_is_float(y->dtype) ? d[i] : (double)iv[i];
		CHECKF(fabs(got - want[i]) <= 1e-12 * (1 + fabs(want[i])) ||
			       (isinf(got) && got == want[i]),
		       "%s: entry %lld is %.17g, want %.17g", what, (long long)i, got, want[i]);
	}
	ref_free(e);
}

static struct ir_value *ai(struct ir_value *v, const char *name, int64_t x)
{
	return t_attr_i(g, v, name, x);
}

static struct ir_value *af(struct ir_value *v, const char *name, double x)
{
	return t_attr_f(g, v, name, x);
}

static void test_elementwise(void)
{
	begin("elementwise");
	double e1 = exp(1.0), l3 = log(3.0);
	struct ir_value *x = in(F, SH(2), D(1, -2));
	expect(OP(g, NEG, F, SH(2), x), D(-1, 2), "neg");
	expect(OP(g, EXP, F, SH(2), in(F, SH(2), D(0, 1))), D(1, e1), "exp");
	expect(OP(g, LOG, F, SH(2), in(F, SH(2), D(1, e1))), D(0, 1), "log");
	expect(OP(g, SQRT, F, SH(2), in(F, SH(2), D(4, 9))), D(2, 3), "sqrt");
	expect(OP(g, RSQRT, F, SH(2), in(F, SH(2), D(4, 0.25))), D(0.5, 2), "rsqrt");
	expect(OP(g, RECIP, F, SH(2), in(F, SH(2), D(2, -4))), D(0.5, -0.25), "recip");
	expect(OP(g, SQUARE, F, SH(2), in(F, SH(2), D(3, -2))), D(9, 4), "square");
	struct ir_value *s = in(F, SH(2), D(0, l3));
	expect(OP(g, SIGMOID, F, SH(2), s), D(0.5, 0.75), "sigmoid");
	expect(OP(g, SILU, F, SH(2), s), D(0, 0.75 * l3), "silu");
	expect(OP(g, TANH, F, SH(2), in(F, SH(2), D(0, atanh(0.5)))), D(0, 0.5), "tanh");
	expect(OP(g, RELU, F, SH(2), x), D(1, 0), "relu");
	expect(OP(g, RELU, F, SH(2), in(F, SH(2), D(-1, 2))), D(0, 2), "relu");
	expect(af(af(OP(g, SCALE, F, SH(2), x), "alpha", 2), "beta", 1), D(3, -3), "scale");
	struct ir_value *c = in(F, SH(2), D(1.7, -1.7));
	expect(OP(g, CAST, I, SH(2), c), D(1, -1), "cast to int truncates");
	expect(OP(g, CAST, IR_BF16, SH(2), in(F, SH(2), D(1 + 0x1p-9, 3))), D(1, 3), "cast to bf16");
	expect(OP(g, STOP_GRAD, F, SH(2), c), D(1.7, -1.7), "stop_grad");
	expect(t_const(g, 2.5, F, SH(3)), D(2.5, 2.5, 2.5), "const");
	struct ir_value *a = in(F, SH(2, 3), D(1, 2, 3, 4, 5, 6));
	expect(OP(g, ADD, F, SH(2, 3), a, in(F, SH(3), D(10, 20, 30))), D(11, 22, 33, 14, 25, 36),
	       "add [2,3]+[3]");
	expect(OP(g, SUB, F, SH(2, 3), in(F, SH(2, 1), D(1, 2)), in(F, SH(3), D(1, 2, 3))),
	       D(0, -1, -2, 1, 0, -1), "sub [2,1]-[3]");
	expect(OP(g, MUL, F, SH(2), in(F, SCALAR, D(2)), in(F, SH(2), D(3, 4))), D(6, 8),
	       "mul []*[2]");
	expect(OP(g, DIV, F, SH(2, 2), in(F, SH(2, 2), D(2, 4, 9, 12)), in(F, SH(2, 1), D(2, 3))),
	       D(1, 2, 3, 4), "div [2,2]/[2,1]");
	expect(OP(g, ADD, I, SH(2), in(I, SH(2), D(1, 2)), in(I, SH(2), D(5, -7))), D(6, -5),
	       "add of ints");
	end();
}

static void test_reductions_and_shapes(void)
{
	begin("reductions");
	struct ir_value *a = in(F, SH(2, 3), D(1, 2, 3, 4, 5, 6));
	expect(ai(OP(g, REDUCE_SUM, F, SH(3), a), "axis", 0), D(5, 7, 9), "reduce_sum axis 0");
	expect(ai(ai(OP(g, REDUCE_SUM, F, SH(2, 1), a), "axis", -1), "keepdim", 1), D(6, 15),
	       "reduce_sum axis -1 keepdim");
	expect(ai(OP(g, REDUCE_MEAN, F, SH(2), a), "axis", 1), D(2, 5), "reduce_mean");
	expect(ai(OP(g, REDUCE_MAX, F, SH(3), a), "axis", 0), D(4, 5, 6), "reduce_max");
	expect(OP(g, SUM_TO, F, SH(3), a), D(5, 7, 9), "sum_to [3]");
	expect(OP(g, SUM_TO, F, SH(2, 1), a), D(6, 15), "sum_to [2,1]");
	expect(OP(g, SUM_TO, F, SCALAR, a), D(21), "sum_to []");
	expect(OP(g, RESHAPE, F, SH(3, 2), a), D(1, 2, 3, 4, 5, 6), "reshape");
	struct ir_value *t = OP(g, TRANSPOSE, F, SH(3, 2), a);
	ir_op_set_ints(g, t->def, "perm", 2, DIMS(1, 0));
	expect(t, D(1, 4, 2, 5, 3, 6), "transpose");
	struct ir_value *t3 = OP(g, TRANSPOSE, F, SH(2, 1, 2), in(F, SH(1, 2, 2), D(1, 2, 3, 4)));
	ir_op_set_ints(g, t3->def, "perm", 3, DIMS(2, 0, 1));
	expect(t3, D(1, 3, 2, 4), "transpose 3-D");
	expect(OP(g, BROADCAST, F, SH(2, 3), in(F, SH(3), D(1, 2, 3))), D(1, 2, 3, 1, 2, 3),
	       "broadcast");
	expect(OP(g, BROADCAST, F, SH(2, 2), in(F, SH(2, 1), D(1, 2))), D(1, 1, 2, 2),
	       "broadcast [2,1]");
	expect(ai(ai(OP(g, SLICE, F, SH(2, 2), a), "axis", 1), "start", 1), D(2, 3, 5, 6), "slice");
	expect(ai(OP(g, CONCAT, F, SH(2, 3), in(F, SH(2, 1), D(1, 2)), in(F, SH(2, 2), D(3, 4, 5, 6))),
		  "axis", 1),
	       D(1, 3, 4, 2, 5, 6), "concat axis 1");
	expect(ai(OP(g, CONCAT, F, SH(2, 2), in(F, SH(1, 2), D(1, 2)), in(F, SH(1, 2), D(3, 4))),
		  "axis", 0),
	       D(1, 2, 3, 4), "concat axis 0");
	end();
}

static void test_matmul_softmax_rope(void)
{
	begin("matmul");
	struct ir_value *a = in(F, SH(2, 2), D(1, 2, 3, 4)), *b = in(F, SH(2, 2), D(5, 6, 7, 8));
	expect(OP(g, MATMUL, F, SH(2, 2), a, b), D(19, 22, 43, 50), "matmul");
	expect(ai(OP(g, MATMUL, F, SH(2, 2), a, b), "trans_b", 1), D(17, 23, 39, 53), "matmul tb");
	expect(ai(OP(g, MATMUL, F, SH(2, 2), a, b), "trans_a", 1), D(26, 30, 38, 44), "matmul ta");
	expect(OP(g, MATMUL, F, SH(2, 1, 2), in(F, SH(2, 1, 2), D(1, 2, 3, 4)), b),
	       D(19, 22, 43, 50), "matmul batched, shared b");
	expect(OP(g, MATMUL, F, SH(2, 1, 1), in(F, SH(2, 1, 2), D(1, 2, 3, 4)),
		  in(F, SH(2, 2, 1), D(1, 1, 2, 0))),
	       D(3, 6), "matmul batched");
	expect(OP(g, MATMUL, F, SH(1, 3), in(F, SH(1, 2), D(1, 2)),
		  in(F, SH(2, 3), D(1, 0, 1, 0, 1, 1))),
	       D(1, 2, 3), "matmul [1,2]x[2,3]");
	struct ir_value *l = in(F, SH(2), D(0, log(3.0)));
	expect(OP(g, SOFTMAX, F, SH(2), l), D(0.25, 0.75), "softmax");
	expect(ai(OP(g, SOFTMAX, F, SH(2, 2), in(F, SH(2, 2), D(5, 7, 0, 0))), "causal", 1),
	       D(1, 0, 0.5, 0.5), "softmax causal");
	struct ir_value *x = in(F, SH(1, 2, 1, 2), D(1, 0, 1, 0));
	expect(af(OP(g, ROPE, F, x->shape, x), "theta", 10000), D(1, 0, cos(1.0), sin(1.0)), "rope");
	expect(ai(af(OP(g, ROPE, F, x->shape, x), "theta", 10000), "inverse", 1),
	       D(1, 0, cos(1.0), -sin(1.0)), "rope inverse");
	/* D = 4: pair (1, 3) turns by s * theta^(-1/2) = 0.1 at s = 1, theta = 100 */
	struct ir_value *x4 = in(F, SH(1, 2, 1, 4), D(0, 0, 0, 0, 0, 1, 0, 0));
	expect(af(OP(g, ROPE, F, x4->shape, x4), "theta", 100), D(0, 0, 0, 0, 0, cos(0.1), 0, sin(0.1)),
	       "rope D=4");
	end();
}

static void test_rows_and_loss(void)
{
	begin("rows");
	struct ir_value *tab = in(F, SH(3, 2), D(1, 2, 3, 4, 5, 6));
	expect(OP(g, GATHER_ROWS, F, SH(2, 2), tab, in(I, SH(2), D(2, 0))), D(5, 6, 1, 2),
	       "gather_rows");
	expect(OP(g, SCATTER_ROWS, F, SH(3, 2), in(F, SH(3, 2), D(1, 1, 2, 2, 3, 3)),
		  in(I, SH(3), D(1, 1, 0))),
	       D(3, 3, 3, 3, 0, 0), "scatter_rows");
	struct ir_value *lg = in(F, SH(2, 2), D(0, 0, 0, log(3.0)));
	expect(OP(g, CROSS_ENTROPY, F, SCALAR, lg, in(I, SH(2), D(0, 1))),
	       D((log(2.0) + log(4.0 / 3.0)) / 2), "cross_entropy");
	expect(OP(g, CROSS_ENTROPY, F, SCALAR, lg, in(I, SH(2), D(0, -1))), D(log(2.0)),
	       "cross_entropy with an ignored target");
	expect(OP(g, CROSS_ENTROPY, F, SCALAR, lg, in(I, SH(2), D(-1, -1))), D(0),
	       "cross_entropy, all ignored");
	expect(OP(g, CROSS_ENTROPY_BWD, F, SH(2, 2), lg, in(I, SH(2), D(0, -1)), in(F, SCALAR, D(2))),
	       D(-1, 1, 0, 0), "cross_entropy_bwd");
	end();
}

static void test_routing(void)
{
	begin("routing");
	expect(ai(OP(g, TOPK, I, SH(1, 2), in(F, SH(1, 4), D(1, 3, 2, 3))), "k", 2), D(1, 3),
	       "topk ties to the lower index");
	struct ir_value *idx = in(I, SH(1, 2), D(2, 0));
	expect(OP(g, TAKE_ALONG, F, SH(1, 2), in(F, SH(1, 3), D(10, 20, 30)), idx), D(30, 10),
	       "take_along");
	expect(OP(g, PUT_ALONG, F, SH(1, 3), in(F, SH(1, 2), D(1, 2)), idx), D(2, 0, 1), "put_along");
	expect(ai(OP(g, EXPERT_COUNT, F, SH(2, 3), in(I, SH(2, 2, 1), D(0, 2, 2, 2))), "experts", 3),
	       D(1, 0, 1, 0, 0, 2), "expert_count");

	/* dispatch: choices c = n*k + j of tokens n to experts, sorted by expert, stable */
	struct ir_op *d = ir_op_new(g, IR_OP_MOE_DISPATCH, 2,
				    VALS(in(F, SH(3, 1), D(1, 2, 3)),
					 in(I, SH(3, 2), D(1, 0, 0, 2, 1, 0))), 3);
	d->out[0]->shape = SH(6, 1);
	d->out[1]->dtype = I, d->out[1]->shape = SH(4);
	d->out[2]->dtype = I, d->out[2]->shape = SH(6);
	ai(d->out[0], "experts", 3);
	expect(d->out[0], D(1, 2, 3, 1, 3, 2), "moe_dispatch rows");
	expect(d->out[1], D(0, 3, 5, 6), "moe_dispatch offsets");
	expect(d->out[2], D(1, 2, 5, 0, 4, 3), "moe_dispatch perm");

	struct ir_value *xs = in(F, SH(3, 1), D(1, 2, 3)), *off = in(I, SH(3), D(0, 2, 3));
	expect(OP(g, GROUPED_MATMUL, F, SH(3, 2), xs, in(F, SH(2, 1, 2), D(1, 10, 2, 20)), off),
	       D(1, 10, 2, 20, 6, 60), "grouped_matmul");
	expect(ai(OP(g, GROUPED_MATMUL, F, SH(3, 2), xs, in(F, SH(2, 2, 1), D(1, 10, 2, 20)), off),
		  "trans_b", 1),
	       D(1, 10, 2, 20, 6, 60), "grouped_matmul trans_b");
	struct ir_value *dy = in(F, SH(3, 2), D(1, 1, 1, 0, 0, 1));
	expect(OP(g, GROUPED_MATMUL_WGRAD, F, SH(2, 1, 2), xs, dy, off), D(3, 1, 0, 3),
	       "grouped_matmul_wgrad");
	expect(ai(OP(g, GROUPED_MATMUL_WGRAD, F, SH(2, 2, 1), xs, dy, off), "trans_b", 1),
	       D(3, 1, 0, 3), "grouped_matmul_wgrad trans_b");

	/* combine: perm [2,0,3,1] puts choice c in row r(c): r(0)=1 r(1)=3 r(2)=0 r(3)=2 */
	struct ir_value *ys = in(F, SH(4, 1), D(1, 2, 3, 4)), *perm = in(I, SH(4), D(2, 0, 3, 1));
	struct ir_value *gates = in(F, SH(2, 2), D(0.5, 0.25, 1, 2));
	expect(OP(g, MOE_COMBINE, F, SH(2, 1), ys, perm, gates), D(2, 7), "moe_combine");
	struct ir_value *dyc = in(F, SH(2, 1), D(1, 10));
	expect(OP(g, MOE_COMBINE_BWD_DATA, F, SH(4, 1), dyc, perm, gates), D(10, 0.5, 20, 0.25),
	       "moe_combine_bwd_data");
	expect(OP(g, MOE_COMBINE_BWD_GATE, F, SH(2, 2), dyc, ys, perm), D(2, 4, 10, 30),
	       "moe_combine_bwd_gate");
	expect(ai(OP(g, MOE_UNDISPATCH, F, SH(2, 1), ys, perm), "k", 2), D(6, 4), "moe_undispatch");
	end();
}

/* the count ops against a direct reading of their definition, on random offsets and
 * counts, for every P dividing E; the regrouping on a hand example and on random
 * counts against a direct computation, and its round trip */
static void test_expert_parallel(void)
{
	begin("ep");
	struct ir_value *x = in(F, SH(6), D(10, 20, 30, 40, 50, 60));
	struct ir_value *rc = in(I, SH(2, 2), D(1, 2, 1, 1));
	/* peer-major (0,0)=10 (0,1)=20,30 (1,0)=40 (1,1)=50 -> (0,0) (1,0) (0,1) (1,1) */
	expect(OP(g, EP_REGROUP, F, SH(6), x, rc), D(10, 40, 20, 30, 50, 0), "ep_regroup");
	/* expert-major (0,0)=10 (1,0)=20 (0,1)=30,40 (1,1)=50 -> peer-major */
	expect(ai(OP(g, EP_REGROUP, F, SH(6), x, rc), "inverse", 1), D(10, 30, 40, 20, 50, 0),
	       "ep_regroup inverse");
	struct ir_value *x2 = in(F, SH(3, 2), D(1, 2, 3, 4, 5, 6));
	expect(OP(g, EP_REGROUP, F, SH(3, 2), x2, in(I, SH(2, 1), D(1, 1))), D(1, 2, 3, 4, 0, 0),
	       "ep_regroup El=1 keeps peer order");
	expect(OP(g, EP_REGROUP, F, SH(3, 2), x2, in(I, SH(1, 2), D(0, 2))), D(1, 2, 3, 4, 0, 0),
	       "ep_regroup P=1 keeps expert order");
	expect(ai(OP(g, EP_COUNTS, I, SH(2, 2), in(I, SH(5), D(0, 2, 2, 5, 9))), "ranks", 2),
	       D(2, 0, 3, 4), "ep_counts");
	expect(OP(g, EP_OFFSETS, I, SH(3), in(I, SH(3, 2), D(1, 0, 2, 5, 0, 1))), D(0, 3, 9),
	       "ep_offsets");
	end();

	enum { E = 12, C = 40, W = 3 };
	static const int ranks[] = { 1, 2, 3, 4, 6, 12 };
	for (int t = 0; t < 6; t++) {
		int P = ranks[t], El = E / P;
		char what[64];
		double off[E + 1], cnt[E], rcv[E], loc[E + 1], xv[C * W], y[C * W], back[C * W];
		off[0] = 0;
		for (int e = 0; e < E; e++)
			off[e + 1] = off[e] + (e % 5 == 2 ? 0 : (int)(rnd_uniform() * 6));
		for (int q = 0; q < E; q++) /* counts[p, j] = offsets[p*El+j+1] - offsets[p*El+j] */
			cnt[q] = off[q + 1] - off[q];
		double total = 0;
		for (int q = 0; q < E; q++) {
			rcv[q] = q % 4 == 1 ? 0 : (int)(rnd_uniform() * (C / E + 1));
			total += rcv[q];
		}
		loc[0] = 0;
		for (int e = 0; e < El; e++) {
			loc[e + 1] = loc[e];
			for (int p = 0; p < P; p++)
				loc[e + 1] += rcv[p * El + e];
		}
		for (int i = 0; i < C * W; i++)
			xv[i] = rnd_normal();
		/* y, expert-major: block (p, e) starts in x after the blocks before it
		 * peer-major, and in y after the blocks before it expert-major */
		memset(y, 0, sizeof y);
		int at = 0;
		for (int e = 0; e < El; e++)
			for (int p = 0; p < P; p++) {
				int src = 0;
				for (int q = 0; q < p * El + e; q++)
					src += (int)rcv[q];
				for (int i = 0; i < (int)rcv[p * El + e]; i++, at++)
					memcpy(y + at * W, xv + (src + i) * W, sizeof(double) * W);
			}
		memcpy(back, xv, sizeof back);
		for (int i = (int)total * W; i < C * W; i++)
			back[i] = 0;

		begin("ep random");
		struct ir_value *ov = in(I, SH(E + 1), off);
		snprintf(what, sizeof what, "ep_counts P=%d", P);
		expect(ai(OP(g, EP_COUNTS, I, SH(P, El), ov), "ranks", P), cnt, what);
		struct ir_value *r = in(I, SH(P, El), rcv);
		snprintf(what, sizeof what, "ep_offsets P=%d", P);
		expect(OP(g, EP_OFFSETS, I, SH(El + 1), r), loc, what);
		struct ir_value *xin = in(F, SH(C, W), xv);
		struct ir_value *yv = OP(g, EP_REGROUP, F, SH(C, W), xin, r);
		snprintf(what, sizeof what, "ep_regroup P=%d", P);
		expect(yv, y, what);
		snprintf(what, sizeof what, "ep_regroup round trip P=%d", P);
		expect(ai(OP(g, EP_REGROUP, F, SH(C, W), yv, r), "inverse", 1), back, what);
		snprintf(what, sizeof what, "ep_regroup inverse P=%d", P);
		expect(ai(OP(g, EP_REGROUP, F, SH(C, W), in(F, SH(C, W), y), r), "inverse", 1), back,
		       what);
		end();
	}

	/* a group of one: all_to_allv copies the sum(sc) = sum(rc) first rows, all_to_all
	 * its one block */
	begin("ep comm");
	struct ir_value *xa = in(F, SH(4, 2), D(1, 2, 3, 4, 5, 6, 7, 8));
	struct ir_value *a2a = OP(g, ALL_TO_ALLV, F, SH(5, 2), xa, in(I, SH(1, 2), D(1, 2)),
				  in(I, SH(1, 3), D(2, 0, 1)));
	ir_op_set_str(g, a2a->def, "group", "ep");
	expect(a2a, D(1, 2, 3, 4, 5, 6, 0, 0, 0, 0), "all_to_allv P=1");
	struct ir_value *ids = OP(g, ALL_TO_ALLV, I, SH(3), in(I, SH(2), D(7, 9)),
				  in(I, SH(1, 1), D(2)), in(I, SH(1, 1), D(2)));
	ir_op_set_str(g, ids->def, "group", "ep");
	expect(ids, D(7, 9, 0), "all_to_allv P=1 integer rows");
	struct ir_value *blk = OP(g, ALL_TO_ALL, F, SH(1, 3), in(F, SH(1, 3), D(4, 5, 6)));
	ir_op_set_str(g, blk->def, "group", "ep");
	expect(blk, D(4, 5, 6), "all_to_all P=1");
	end();
}

/* a graph whose run must fail with a message naming `want` */
static void expect_fail(const char *want, const char *what)
{
	CHECKF(ir_verify(g, stderr) == 0, "%s: graph does not verify", what);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	REQUIRE(err);
	struct ref_exec *e = ref_new(g);
	tdata_bind(&data, g, e);
	CHECKF(ref_run(e, err) != 0, "%s: the run did not fail", what);
	fclose(err);
	CHECKF(msg && strstr(msg, want), "%s: message: %s", what, msg ? msg : "");
	free(msg);
	ref_free(e);
	end();
}

static void test_expert_parallel_errors(void)
{
	begin("negative count");
	OP(g, EP_REGROUP, F, SH(3), in(F, SH(3), D(1, 2, 3)), in(I, SH(1, 2), D(2, -1)));
	expect_fail("is negative", "ep_regroup negative count");
	begin("too many rows");
	OP(g, EP_REGROUP, F, SH(3), in(F, SH(3), D(1, 2, 3)), in(I, SH(2, 1), D(2, 2)));
	expect_fail("total 4 rows, the buffer holds 3", "ep_regroup total past C");
	begin("a2av sums");
	ir_op_set_str(g, OP(g, ALL_TO_ALLV, F, SH(3), in(F, SH(3), D(1, 2, 3)),
			    in(I, SH(1, 1), D(2)), in(I, SH(1, 1), D(1)))->def, "group", "ep");
	expect_fail("sends 2 rows to itself but receives 1", "all_to_allv sums differ");
	begin("a2av rows");
	ir_op_set_str(g, OP(g, ALL_TO_ALLV, F, SH(4), in(F, SH(2), D(1, 2)),
			    in(I, SH(1, 1), D(3)), in(I, SH(1, 1), D(3)))->def, "group", "ep");
	expect_fail("3 rows do not fit", "all_to_allv past x");
	begin("a2av ranks");
	ir_op_set_str(g, OP(g, ALL_TO_ALLV, F, SH(3), in(F, SH(3), D(1, 2, 3)),
			    in(I, SH(2, 1), D(1, 1)), in(I, SH(2, 1), D(1, 1)))->def, "group", "ep");
	expect_fail("a group of 2 ranks needs the program executor", "all_to_allv P=2");
	begin("a2a ranks");
	ir_op_set_str(g, OP(g, ALL_TO_ALL, F, SH(2, 1), in(F, SH(2, 1), D(1, 2)))->def, "group",
		      "ep");
	expect_fail("a group of 2 ranks needs the program executor", "all_to_all P=2");
}

static void test_backward_helpers(void)
{
	begin("helpers");
	expect(OP(g, SILU_BWD, F, SH(1), in(F, SH(1), D(0)), in(F, SH(1), D(2))), D(1), "silu_bwd");
	expect(OP(g, RELU_BWD, F, SH(2), in(F, SH(2), D(-1, 1)), in(F, SH(2), D(5, 5))), D(0, 5),
	       "relu_bwd");
	expect(OP(g, SOFTMAX_BWD, F, SH(2), in(F, SH(2), D(0.25, 0.75)), in(F, SH(2), D(1, 0))),
	       D(0.1875, -0.1875), "softmax_bwd");
	expect(ai(OP(g, REDUCE_MAX_BWD, F, SH(1, 3), in(F, SH(1, 3), D(1, 3, 3)), in(F, SH(1), D(2))),
		  "axis", 1),
	       D(0, 2, 0), "reduce_max_bwd: the first maximum");
	end();
}

static void test_fp8(void)
{
	begin("fp8");
	struct ir_op *q = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(in(F, SH(2, 2), D(448, -224, 0.5, 0.3))), 2);
	q->out[0]->dtype = IR_F8E4M3, q->out[0]->shape = SH(2, 2);
	q->out[1]->shape = SH(2, 1);
	ir_op_set_int(g, q, "tile_r", 1);
	ir_op_set_int(g, q, "tile_c", 2);
	/* row 1: scale fl32(0.5/448) (f32 arithmetic, ir.h); 0.3/scale = 268.8 -> e4m3 256
	 * (steps of 32 in [256, 448]) */
	float s1 = (float)(0.5 / 448);
	expect(q->out[0], D(448, -224, 448, 256), "quant_fp8 values");
	expect(q->out[1], D(1, s1), "quant_fp8 scales");
	struct ir_value *dq = OP(g, DEQUANT_FP8, F, SH(2, 2), q->out[0], q->out[1]);
	expect(dq, D(448, -224, 448.0 * s1, 256.0 * s1), "dequant_fp8");
	end();
}

/* Hand-checked E4M3 (bias 7, 3 mantissa bits, max 448, no infinities) and E5M2 (bias
 * 15, 2 mantissa bits, max 57344) roundings: nearest, ties to even, saturating. */
static void test_fp8_table(void)
{
	static const struct { double x, e4m3, e5m2; } t[] = {
		{ 0, 0, 0 },
		{ 1, 1, 1 },
		{ 1.0625, 1, 1 },          /* e4m3: half a step (1/8) above 1: tie to even 1 */
		{ 1.1875, 1.25, 1.25 },    /* e4m3: tie between 1.125 and 1.25 -> even 1.25 */
		{ 1.125, 1.125, 1 },       /* e5m2: tie between 1 and 1.25 -> even 1 */
		{ 1.375, 1.375, 1.5 },     /* e5m2: tie between 1.25 and 1.5 -> even 1.5 */
		{ -2.9, -3, -3 },
		{ 240, 240, 256 },         /* e5m2: 240 is halfway 224..256 -> even 256 */
		{ 447, 448, 448 },
		{ 448, 448, 448 },
		{ 464, 448, 448 },         /* e4m3: past the largest: saturates */
		{ 1e6, 448, 57344 },
		{ -INFINITY, -448, -57344 },
		{ 0x1p-6, 0x1p-6, 0x1p-6 },      /* least normal e4m3 */
		{ 0x1.1p-7, 0x1p-7, 0x1p-7 },    /* e4m3 subnormal, steps of 2^-9 */
		{ 0x1.3p-7, 0x1.4p-7, 0x1.4p-7 }, /* e4m3: 4.75 x 2^-9 -> 5 x 2^-9 */
		{ 0x1p-9, 0x1p-9, 0x1p-9 },      /* least e4m3 subnormal */
		{ 0x1p-10, 0, 0x1p-10 },         /* e4m3: half the least: tie to even 0 */
		{ 0x1.0000001p-10, 0x1p-9, 0x1p-10 },
		{ 0x1p-16, 0, 0x1p-16 },         /* least e5m2 subnormal */
		{ 0x1p-17, 0, 0 },               /* e5m2: half the least: tie to even 0 */
		{ 0x1.8p-16, 0, 0x1p-15 },       /* e5m2: 1.5 least: tie to even 2 least */
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		if (ref_round(t[i].x, IR_F8E4M3) != t[i].e4m3 || ref_round(t[i].x, IR_F8E5M2) != t[i].e5m2)
			fprintf(stderr, "fp8 table row %zu: %a -> e4m3 %a (want %a), e5m2 %a (want %a)\n",
				i, t[i].x, ref_round(t[i].x, IR_F8E4M3), t[i].e4m3,
				ref_round(t[i].x, IR_F8E5M2), t[i].e5m2);
		CHECK(ref_round(t[i].x, IR_F8E4M3) == t[i].e4m3);
		CHECK(ref_round(t[i].x, IR_F8E5M2) == t[i].e5m2);
	}
	CHECK(isnan(ref_round(NAN, IR_F8E4M3)));
}

/* The value of an FP8 code (bit pattern), decoded from the format's definition; NaN for
 * the codes that mean NaN (and infinity for E5M2's infinities). */
static double fp8_decode(unsigned code, enum ir_dtype t)
{
	int mbits = t == IR_F8E4M3 ? 3 : 2, bias = t == IR_F8E4M3 ? 7 : 15;
	int sign = code >> 7 & 1, e = (int)(code >> mbits) & ((1 << (7 - mbits)) - 1);
	int m = (int)code & ((1 << mbits) - 1), emax = (1 << (7 - mbits)) - 1;
	if (t == IR_F8E4M3 && e == emax && m == (1 << mbits) - 1)
		return NAN; /* e4m3fn: S.1111.111 is NaN, no infinities */
	if (t == IR_F8E5M2 && e == emax)
		return m ? NAN : sign ? -INFINITY : INFINITY;
	double v = e ? ldexp(1.0 + m / (double)(1 << mbits), e - bias)
		     : ldexp(m / (double)(1 << mbits), 1 - bias);
	return sign ? -v : v;
}

/* Every f32 of a sweep (every exponent of the format's range and beyond, 2^12 mantissas
 * each, both signs) rounds to the nearest of the 256 codes' finite values (by brute
 * force), ties to the one with an even mantissa, saturating past the largest. */
static void test_fp8_exhaustive(enum ir_dtype t)
{
	double vals[256];
	unsigned codes[256];
	int n = 0;
	for (unsigned c = 0; c < 256; c++) {
		double v = fp8_decode(c, t);
		if (isfinite(v))
			vals[n] = v, codes[n++] = c;
	}
	double maxv = t == IR_F8E4M3 ? 448 : 57344;
	long bad = 0, tested = 0;
	for (int ex = -30; ex <= 20; ex++)
		for (int mi = 0; mi < 4096; mi++)
			for (int sg = 0; sg < 2; sg++) {
				float x = ldexpf(1.0f + mi / 4096.0f, ex) * (sg ? -1.0f : 1.0f);
				double r = ref_round(x, t);
				double best = 0, bd = INFINITY;
				unsigned bc = 0;
				for (int i = 0; i < n; i++) {
					/* a tie goes to the even code (last mantissa bit 0) */
					double d = fabs(vals[i] - x);
					if (d < bd || (d == bd && !(codes[i] & 1) && (bc & 1)))
						bd = d, best = vals[i], bc = codes[i];
				}
				if (fabs(x) > maxv)
					best = sg ? -maxv : maxv;
				tested++;
				if (r != best && bad++ < 5)
					fprintf(stderr, "%s: %a rounds to %a, nearest is %a\n",
						ir_dtype_name(t), (double)x, r, best);
			}
	CHECK(bad == 0 && tested == 51L * 4096 * 2);
}

static void test_rounding(void)
{
	CHECK(ref_round(1 + 0x1p-8, IR_BF16) == 1);            /* tie to even */
	CHECK(ref_round(1 + 3 * 0x1p-8, IR_BF16) == 1 + 0x1p-6); /* tie to even, up */
	CHECK(ref_round(1 + 0x1.8p-9, IR_BF16) == 1);
	CHECK(ref_round(1 + 0x1.8p-8, IR_BF16) == 1 + 0x1p-7);
	CHECK(ref_round(3.4e38, IR_BF16) == INFINITY);
	CHECK(ref_round(-0x1p-133, IR_BF16) == -0x1p-133);     /* bf16 subnormal */
	CHECK(ref_round(0x1p-134, IR_BF16) == 0);              /* half the least: to even 0 */
	CHECK(ref_round(65519, IR_F16) == 65504);
	CHECK(ref_round(65520, IR_F16) == INFINITY);
	CHECK(ref_round(1 + 0x1p-11, IR_F16) == 1);
	CHECK(ref_round(0x1p-24, IR_F16) == 0x1p-24);          /* least f16 subnormal */
	CHECK(ref_round(500, IR_F8E4M3) == 448);               /* saturates */
	CHECK(ref_round(-1e9, IR_F8E4M3) == -448);
	CHECK(ref_round(0x1p-9, IR_F8E4M3) == 0x1p-9);         /* least e4m3 subnormal */
	CHECK(ref_round(0x1p-10, IR_F8E4M3) == 0);
	CHECK(ref_round(0x1.8p-9, IR_F8E4M3) == 0x1p-8);
	CHECK(ref_round(1.0625, IR_F8E4M3) == 1);              /* 1 + half a step */
	CHECK(ref_round(1.125, IR_F8E5M2) == 1);               /* steps of 0.25 */
	CHECK(ref_round(1.375, IR_F8E5M2) == 1.5);
	CHECK(ref_round(1e6, IR_F8E5M2) == 57344);
	CHECK(ref_round(0.1, IR_F32) == 0.1);                  /* f32 kept exact */
	test_fp8_table();
	test_fp8_exhaustive(IR_F8E4M3);
	test_fp8_exhaustive(IR_F8E5M2);

	/* values of a bf16 graph are rounded after each op */
	begin("bf16");
	struct ir_value *a = in(IR_BF16, SH(2), D(1, 1 + 0x1p-7));
	struct ir_value *b = in(IR_BF16, SH(2), D(0x1p-9, 0x1p-8));
	expect(OP(g, ADD, IR_BF16, SH(2), a, b), D(1, 1 + 0x1p-6), "bf16 add");
	expect(OP(g, ADD, F, SH(2), OP(g, CAST, F, SH(2), a), OP(g, CAST, F, SH(2), b)),
	       D(1 + 0x1p-9, 1 + 0x1p-7 + 0x1p-8), "f32 add of bf16 values");
	end();
}

static void test_errors(void)
{
	FILE *devnull = fopen("/dev/null", "w");
	REQUIRE(devnull);
	/* an index out of range, an unbound input, a communication op */
	begin("errors");
	struct ir_value *tab = in(F, SH(3, 2), D(1, 2, 3, 4, 5, 6));
	OP(g, GATHER_ROWS, F, SH(1, 2), tab, in(I, SH(1), D(3)));
	struct ref_exec *e = ref_new(g);
	tdata_bind(&data, g, e);
	CHECK(ref_run(e, devnull) != 0);
	ref_free(e);
	end();

	begin("unbound");
	OP(g, NEG, F, SH(2), t_input(g, "x", F, SH(2)));
	e = ref_new(g);
	CHECK(ref_run(e, devnull) != 0);
	ref_free(e);
	end();

	begin("comm");
	struct ir_value *x = in(F, SH(2), D(1, 2));
	ir_op_set_str(g, OP(g, ALL_REDUCE, F, SH(2), x)->def, "group", "dp");
	e = ref_new(g);
	tdata_bind(&data, g, e);
	CHECK(ref_run(e, devnull) != 0);
	ref_free(e);
	end();
	fclose(devnull);
}

/* the cg_backend interface: f32 / i32 storage bound by the caller */
static void test_backend(void)
{
	begin("backend");
	struct ir_value *tab = t_param(g, "tab", SH(3, 2));
	struct ir_value *idx = t_input(g, "idx", I, SH(2));
	struct ir_value *y = OP(g, SCALE, F, SH(2, 2), OP(g, GATHER_ROWS, F, SH(2, 2), tab, idx));
	af(y, "alpha", 0.5);
	ir_graph_add_output(g, "y", y);
	const struct cg_backend *be = &cg_backend_ref;
	struct cg_exec *e = be->compile(g, stderr);
	REQUIRE(e);
	float t[6] = { 1, 2, 3, 4, 5, 6 };
	int32_t ix[2] = { 2, 1 };
	be->bind(e, tab->id, t);
	be->bind(e, idx->id, ix);
	REQUIRE(be->run(e) == 0);
	const float *out = be->tensor(e, y->id);
	REQUIRE(out);
	CHECK(out[0] == 2.5f && out[1] == 3 && out[2] == 1.5f && out[3] == 2);
	const int32_t *oi = be->tensor(e, idx->id);
	CHECK(oi && oi[0] == 2 && oi[1] == 1);
	t[4] = 7; /* bound memory is read again at every run */
	REQUIRE(be->run(e) == 0);
	out = be->tensor(e, y->id);
	CHECK(out[0] == 3.5f);
	be->free(e);
	end();
}

int main(void)
{
	test_elementwise();
	test_reductions_and_shapes();
	test_matmul_softmax_rope();
	test_rows_and_loss();
	test_routing();
	test_expert_parallel();
	test_expert_parallel_errors();
	test_backward_helpers();
	test_fp8();
	test_rounding();
	test_errors();
	test_backend();
	return CHECK_DONE();
}
