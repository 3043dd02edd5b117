/* sample.c - a small op-level graph that uses most ops of ops.def: an embedding, one
 * attention step with rope and a causal softmax, a 4-expert MoE with sigmoid routing,
 * FP8 quantisation, a cross-entropy loss and a send.  Valid by construction; the
 * golden file tests/ir/golden/sample.ir is its printed form.  ep_sample_graph() is the
 * expert-parallel exchange of a MoE layer's rows as the expert_parallel pass makes it
 * (tests/ir/golden/ep_sample.ir). */
#include "irtest.h"

struct ir_graph *sample_graph(void)
{
	struct ir_graph *g = ir_graph_new("sample");
	ir_graph_set(g, "batch", 2, NULL);
	ir_graph_set(g, "lr", 3e-4, NULL);
	ir_graph_set(g, "optimizer", 0, "adamw");
	ir_graph_set(g, "clip", 1.0 / 3.0, NULL);

	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 3, 1 }, "");
	struct ir_value *tok = OP0(g, IR_OP_INPUT, IR_I32, S(2, 2, 8));
	ir_op_set_str(g, tok->def, "name", "tokens");
	struct ir_value *tgt = OP0(g, IR_OP_INPUT, IR_I32, S(2, 2, 8));
	ir_op_set_str(g, tgt->def, "name", "targets");

	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 4, 7 }, "embed");
	struct ir_value *emb = OP0(g, IR_OP_PARAM, IR_F32, S(2, 32, 16));
	emb->def->path = "embed.w";
	ir_op_set_str(g, emb->def, "init", "normal");
	ir_op_set_float(g, emb->def, "std", 0.02);
	struct ir_value *x = OP(g, IR_OP_GATHER_ROWS, IR_F32, S(3, 2, 8, 16), emb, tok);
	x->name = "x";

	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 6, 9 }, "layers.0.attn");
	struct ir_value *wq = OP0(g, IR_OP_PARAM, IR_F32, S(2, 16, 16));
	wq->def->path = "layers.0.attn.wq";
	ir_op_set_str(g, wq->def, "init", "normal");
	ir_op_set_float(g, wq->def, "std", 0.25);
	ir_op_set_int(g, wq->def, "fan_in", 16);
	struct ir_value *q = OP(g, IR_OP_MATMUL, IR_F32, S(3, 2, 8, 16), x, wq);
	struct ir_value *q4 = OP(g, IR_OP_RESHAPE, IR_F32, S(4, 2, 8, 2, 8), q);
	struct ir_value *r = OP(g, IR_OP_ROPE, IR_F32, S(4, 2, 8, 2, 8), q4);
	ir_op_set_float(g, r->def, "theta", 10000);
	struct ir_value *t = OP(g, IR_OP_TRANSPOSE, IR_F32, S(4, 2, 2, 8, 8), r);
	ir_op_set_ints(g, t->def, "perm", 4, (const int64_t[]){ 0, 2, 1, 3 });
	struct ir_value *s = OP(g, IR_OP_MATMUL, IR_F32, S(4, 2, 2, 8, 8), t, t);
	ir_op_set_int(g, s->def, "trans_b", 1);
	struct ir_value *sc = OP(g, IR_OP_SCALE, IR_F32, S(4, 2, 2, 8, 8), s);
	ir_op_set_float(g, sc->def, "alpha", 0.35355339059327379);
	ir_op_set_float(g, sc->def, "beta", 0);
	struct ir_value *p = OP(g, IR_OP_SOFTMAX, IR_F32, S(4, 2, 2, 8, 8), sc);
	ir_op_set_int(g, p->def, "causal", 1);
	struct ir_value *o = OP(g, IR_OP_MATMUL, IR_F32, S(4, 2, 2, 8, 8), p, t);
	struct ir_value *ot = OP(g, IR_OP_TRANSPOSE, IR_F32, S(4, 2, 8, 2, 8), o);
	ir_op_set_ints(g, ot->def, "perm", 4, (const int64_t[]){ 0, 2, 1, 3 });
	struct ir_value *o3 = OP(g, IR_OP_RESHAPE, IR_F32, S(3, 2, 8, 16), ot);
	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 6, 5 }, "layers.0");
	struct ir_value *h = OP(g, IR_OP_ADD, IR_F32, S(3, 2, 8, 16), x, o3);
	h->name = "h";

	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 7, 9 }, "layers.0.moe");
	struct ir_value *h2 = OP(g, IR_OP_RESHAPE, IR_F32, S(2, 16, 16), h);
	struct ir_value *wr = OP0(g, IR_OP_PARAM, IR_F32, S(2, 16, 4));
	wr->def->path = "layers.0.moe.router";
	ir_op_set_str(g, wr->def, "init", "zeros");
	struct ir_value *lg = OP(g, IR_OP_MATMUL, IR_F32, S(2, 16, 4), h2, wr);
	struct ir_value *aff = OP(g, IR_OP_SIGMOID, IR_F32, S(2, 16, 4), lg);
	struct ir_value *idx = OP(g, IR_OP_TOPK, IR_I32, S(2, 16, 2), aff);
	ir_op_set_int(g, idx->def, "k", 2);
	struct ir_value *gt = OP(g, IR_OP_TAKE_ALONG, IR_F32, S(2, 16, 2), aff, idx);
	struct ir_value *gs = OP(g, IR_OP_REDUCE_SUM, IR_F32, S(2, 16, 1), gt);
	ir_op_set_int(g, gs->def, "axis", -1);
	ir_op_set_int(g, gs->def, "keepdim", 1);
	struct ir_value *gn = OP(g, IR_OP_DIV, IR_F32, S(2, 16, 2), gt, gs);
	struct ir_value *idx3 = OP(g, IR_OP_RESHAPE, IR_I32, S(3, 2, 8, 2), idx);
	struct ir_value *cnt = OP(g, IR_OP_EXPERT_COUNT, IR_F32, S(2, 2, 4), idx3);
	ir_op_set_int(g, cnt->def, "experts", 4);
	struct ir_op *d = ir_op_new(g, IR_OP_MOE_DISPATCH, 2, VALS(h2, idx), 3);
	ir_op_set_int(g, d, "experts", 4);
	d->out[0]->shape = S(2, 32, 16);
	d->out[1]->dtype = IR_I32;
	d->out[1]->shape = S(1, 5);
	d->out[2]->dtype = IR_I32;
	d->out[2]->shape = S(1, 32);
	struct ir_value *w1 = OP0(g, IR_OP_PARAM, IR_F32, S(3, 4, 16, 8));
	w1->def->path = "layers.0.moe.experts.w1";
	ir_op_set_str(g, w1->def, "init", "uniform");
	struct ir_value *e1 = OP(g, IR_OP_GROUPED_MATMUL, IR_F32, S(2, 32, 8), d->out[0], w1,
				 d->out[1]);
	struct ir_value *e2 = OP(g, IR_OP_SILU, IR_F32, S(2, 32, 8), e1);
	struct ir_value *w2 = OP0(g, IR_OP_PARAM, IR_F32, S(3, 4, 16, 8));
	w2->def->path = "layers.0.moe.experts.w2";
	ir_op_set_str(g, w2->def, "init", "ones");
	struct ir_value *e3 = OP(g, IR_OP_GROUPED_MATMUL, IR_F32, S(2, 32, 16), e2, w2, d->out[1]);
	ir_op_set_int(g, e3->def, "trans_b", 1);
	struct ir_value *y = OP(g, IR_OP_MOE_COMBINE, IR_F32, S(2, 16, 16), e3, d->out[2], gn);

	ir_graph_set_context(g, (struct ir_loc){ "sample.sl", 9, 3 }, "head");
	struct ir_value *z = OP(g, IR_OP_ADD, IR_F32, S(2, 16, 16), h2, y);
	struct ir_op *qf = ir_op_new(g, IR_OP_QUANT_FP8, 1, VALS(z), 2);
	ir_op_set_int(g, qf, "tile_r", 1);
	ir_op_set_int(g, qf, "tile_c", 128);
	qf->out[0]->dtype = IR_F8E4M3;
	qf->out[0]->shape = S(2, 16, 16);
	qf->out[1]->shape = S(2, 16, 1);
	struct ir_value *dq = OP(g, IR_OP_DEQUANT_FP8, IR_F32, S(2, 16, 16), qf->out[0], qf->out[1]);
	struct ir_value *wo = OP0(g, IR_OP_PARAM, IR_BF16, S(2, 16, 32));
	wo->def->path = "head.w";
	ir_op_set_str(g, wo->def, "init", "normal");
	ir_op_set_float(g, wo->def, "std", 1e-3);
	struct ir_value *dqb = OP(g, IR_OP_CAST, IR_BF16, S(2, 16, 16), dq);
	struct ir_value *lo = OP(g, IR_OP_MATMUL, IR_F32, S(2, 16, 32), dqb, wo);
	struct ir_value *tf = OP(g, IR_OP_RESHAPE, IR_I32, S(1, 16), tgt);
	struct ir_value *loss = OP(g, IR_OP_CROSS_ENTROPY, IR_F32, S(0), lo, tf);
	loss->name = "loss";
	struct ir_value *c = OP0(g, IR_OP_CONST, IR_F32, S(0));
	ir_op_set_float(g, c->def, "value", -0.5);
	struct ir_value *bal = OP(g, IR_OP_REDUCE_MEAN, IR_F32, S(1, 2), cnt);
	ir_op_set_int(g, bal->def, "axis", 1);
	struct ir_value *bl = OP(g, IR_OP_REDUCE_MAX, IR_F32, S(0), bal);
	ir_op_set_int(g, bl->def, "axis", 0);
	struct ir_value *tot = OP(g, IR_OP_ADD, IR_F32, S(0), loss, OP(g, IR_OP_MUL, IR_F32, S(0), c, bl));

	/* a weight-gradient-phase op on stage 1 and a send, as later passes make them */
	struct ir_value *gw = OP(g, IR_OP_SCALE, IR_F32, S(2, 16, 4), wr);
	ir_op_set_float(g, gw->def, "alpha", 2);
	gw->def->phase = IR_PHASE_BWD_W;
	gw->def->stage = 1;
	struct ir_op *snd = ir_op_new(g, IR_OP_SEND, 1, VALS(gw), 0);
	ir_op_set_int(g, snd, "peer", 1);
	ir_op_set_int(g, snd, "tag", 7);
	snd->phase = IR_PHASE_BWD_W;
	snd->stage = 1;
	ir_graph_add_output(g, "loss", tot);
	ir_graph_add_output(g, "grad.layers.0.moe.router", gw);
	return g;
}

/* 2 EP ranks, 4 experts (2 per rank), 6 routed rows, a receive buffer of 8 rows: counts
 * from the dispatch offsets, the exchange of counts and rows, the regrouping by local
 * expert and its inverse, and the way back. */
struct ir_graph *ep_sample_graph(void)
{
	struct ir_graph *g = ir_graph_new("ep_sample");
	ir_graph_set_context(g, (struct ir_loc){ "ep.sl", 1, 1 }, "layers.1.moe");
	struct ir_value *xs = OP0(g, IR_OP_INPUT, IR_F32, S(2, 6, 4));
	ir_op_set_str(g, xs->def, "name", "xs");
	struct ir_value *off = OP0(g, IR_OP_INPUT, IR_I32, S(1, 5));
	ir_op_set_str(g, off->def, "name", "offsets");
	struct ir_value *sc = OP(g, IR_OP_EP_COUNTS, IR_I32, S(2, 2, 2), off);
	ir_op_set_int(g, sc->def, "ranks", 2);
	struct ir_value *rc = OP(g, IR_OP_ALL_TO_ALL, IR_I32, S(2, 2, 2), sc);
	ir_op_set_str(g, rc->def, "group", "ep");
	struct ir_value *xr = OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 8, 4), xs, sc, rc);
	ir_op_set_str(g, xr->def, "group", "ep");
	struct ir_value *lo = OP(g, IR_OP_EP_OFFSETS, IR_I32, S(1, 3), rc);
	struct ir_value *xe = OP(g, IR_OP_EP_REGROUP, IR_F32, S(2, 8, 4), xr, rc);
	ir_op_set_int(g, xe->def, "inverse", 0);
	struct ir_value *ye = OP(g, IR_OP_SQUARE, IR_F32, S(2, 8, 4), xe);
	struct ir_value *yp = OP(g, IR_OP_EP_REGROUP, IR_F32, S(2, 8, 4), ye, rc);
	ir_op_set_int(g, yp->def, "inverse", 1);
	struct ir_value *ys = OP(g, IR_OP_ALL_TO_ALLV, IR_F32, S(2, 6, 4), yp, rc, sc);
	ir_op_set_str(g, ys->def, "group", "ep");
	ir_graph_add_output(g, "ys", ys);
	ir_graph_add_output(g, "local_offsets", lo);
	return g;
}
