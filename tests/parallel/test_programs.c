/* test_programs.c - per-rank programs of tiny_moe at several layouts: they pass the
 * cross-rank verifier, and each way of breaking them (a receive of the wrong shape,
 * a missing receive, a send to the wrong micro-batch, collectives in another order)
 * is caught; the structure a layout implies is there (sends only between
 * neighbouring stages' chunks, SAVED slots never shared by two micro-batches at
 * once and no more than 1F1B's micro-batches in flight, gradient sums over dp); the
 * other schedules (zb1p, dualpipev, dualpipe) build programs that verify.  The
 * packing of f32-held values to their dtype's width for the wire (rt_pack, rt_unpack)
 * keeps every value of the dtype as it is and rounds others as the reference does. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "codegen/backend.h"
#include "codegen/program.h"
#include "codegen/ref.h"
#include "frontend/frontend.h"
#include "passes/passes.h"

#define MAXR 16

static struct ir_graph *model(void)
{
	struct ir_graph *g = sl_compile_file("models/tiny_moe.sl", 0, NULL, stderr);
	REQUIRE(g);
	REQUIRE(pass_pipeline_run(g, NULL, stderr) == 0);
	return g;
}

static int build_sched(struct ir_graph *g, int pp, int dp, int ep, int mb, const char *sched,
		       struct rt_program **progs)
{
	struct pass_schedule ps;
	REQUIRE(pass_schedule_build(sched, pp, mb, &ps, stderr) == 0);
	struct cg_layout l = { .pp = pp, .dp = dp, .ep = ep, .microbatches = mb,
			       .schedule = sched, .stages = ps.stages };
	pass_schedule_free(&ps);
	REQUIRE(cg_assign_stages(g, &l, stderr) == 0);
	for (int r = 0; r < pp * dp; r++) {
		progs[r] = cg_program_build(g, &l, r, NULL, stderr);
		REQUIRE(progs[r]);
	}
	return pp * dp;
}

static int build_ep(struct ir_graph *g, int pp, int dp, int ep, int mb,
		    struct rt_program **progs)
{
	return build_sched(g, pp, dp, ep, mb, "1f1b", progs);
}

static int build(struct ir_graph *g, int pp, int dp, int mb, struct rt_program **progs)
{
	return build_ep(g, pp, dp, 1, mb, progs);
}

/* Plays p's actions and follows what each slot of each SAVED or COMM buffer holds: a
 * chunk writes (buffer, micro-batch) into its slot, a receive or an exchange does so once started,
 * and a chunk that reads or a send that starts must find its own micro-batch there;
 * nothing may overwrite a slot whose send has not been waited for.  The number of
 * faults, each said on stderr. */
static int check_slots(const struct rt_program *p)
{
	int nb = p->n_bufs, faults = 0, maxs = 1;
	for (int b = 0; b < nb; b++)
		maxs = p->bufs[b].slots > maxs ? p->bufs[b].slots : maxs;
	int *owner = calloc((size_t)nb * (size_t)maxs, sizeof *owner);
	int *pending = calloc((size_t)nb * (size_t)maxs, sizeof *pending); /* group + 1 */
	REQUIRE(owner && pending);
	for (int i = 0; i < nb * maxs; i++)
		owner[i] = -1;
	for (int a = 0; a < p->n_actions; a++) {
		const struct rt_action *ac = &p->actions[a];
		int reads[4096], writes[4096], nr = 0, nw = 0, send_group = -1;
		if (ac->kind == RT_ACT_WAIT) {
			for (int i = 0; i < nb * maxs; i++)
				if (pending[i] == ac->index + 1)
					pending[i] = 0;
			continue;
		}
		if (ac->kind == RT_ACT_CHUNK) {
			const struct rt_chunk *c = &p->chunks[ac->index];
			REQUIRE(c->n_in <= 4096 && c->n_out <= 4096);
			for (int k = 0; k < c->n_in; k++)
				reads[nr++] = c->in[k];
			for (int k = 0; k < c->n_out; k++)
				writes[nw++] = c->out[k];
		} else {
			const struct rt_comm_op *op = &p->comms[ac->index];
			if (op->kind == RT_COP_RECV) {
				writes[nw++] = op->buf;
			} else if (op->kind == RT_COP_SEND) {
				reads[nr++] = op->buf;
				send_group = op->group;
			} else if (op->kind != RT_COP_ALL_REDUCE) {
				/* an exchange: reads its rows (and counts) until its wait,
				 * writes its receive buffer */
				reads[nr++] = op->buf;
				if (op->scounts >= 0)
					reads[nr++] = op->scounts;
				if (op->rcounts >= 0)
					reads[nr++] = op->rcounts;
				writes[nw++] = op->out;
				send_group = op->group;
			}
		}
		for (int k = 0; k < nr; k++) {
			const struct rt_buffer *b = &p->bufs[reads[k]];
			if (b->role != RT_BUF_SAVED && b->role != RT_BUF_COMM)
				continue;
			int at = reads[k] * maxs + ac->mb % b->slots;
			if (owner[at] != ac->mb) {
				fprintf(stderr, "rank %d action %d: %s slot %d holds micro-batch %d, "
					"not %d\n", p->rank, a, b->name, ac->mb % b->slots, owner[at],
					ac->mb);
				faults++;
			}
			if (send_group >= 0)
				pending[at] = send_group + 1;
		}
		for (int k = 0; k < nw; k++) {
			const struct rt_buffer *b = &p->bufs[writes[k]];
			if (b->role != RT_BUF_SAVED && b->role != RT_BUF_COMM)
				continue;
			int at = writes[k] * maxs + ac->mb % b->slots;
			if (pending[at]) {
				fprintf(stderr, "rank %d action %d: %s slot %d overwritten while its "
					"send is in flight\n", p->rank, a, b->name, ac->mb % b->slots);
				faults++;
			}
			owner[at] = ac->mb;
		}
	}
	free(owner);
	free(pending);
	return faults;
}

static void free_all(struct rt_program **progs, int n)
{
	for (int r = 0; r < n; r++)
		rt_program_free(progs[r]);
}

/* the index of the first action of kind COMM whose op is of kind k */
static int first_comm(const struct rt_program *p, enum rt_cop_kind k)
{
	for (int a = 0; a < p->n_actions; a++)
		if (p->actions[a].kind == RT_ACT_COMM && p->comms[p->actions[a].index].kind == k)
			return a;
	return -1;
}

/* Does the exchange started by action a have a chunk of another micro-batch between
 * its start and the wait on its group (is it in flight while that one computes)? */
static int under_other(const struct rt_program *p, int a)
{
	const struct rt_action *ac = &p->actions[a];
	int g = p->comms[ac->index].group;
	for (int j = a + 1; j < p->n_actions; j++) {
		const struct rt_action *x = &p->actions[j];
		if (x->kind == RT_ACT_WAIT && x->index == g)
			return 0;
		if (x->kind == RT_ACT_CHUNK && x->mb != ac->mb)
			return 1;
	}
	return 0;
}

/* An overlapped pair on rank p: the forward of stage sf for micro-batch mf beside the
 * backward of stage sb for mb.  Its chunks run in DeepSeek-V3's order (DESIGN.md,
 * "DualPipe"), MLP(B) MLP(W) MLP(F) ATTN(B) ATTN(W) ATTN(F) over and over, each chunk
 * the next one of that cycle (W skipped only where the backward has no W chunks), the
 * dispatch's own chunks between its exchanges aside; every W chunk of the backward
 * runs inside the pair, from its first chunk to its last; and each exchange of rows
 * started in the pair is in flight while the other micro-batch computes.  The number
 * of faults, each said on stderr; *mlp_b counts the MLP(B) chunks, the cycles seen. */
static int pair_faults(const struct rt_program *p, int sf, int mf, int sb, int mb, int *mlp_b)
{
	int faults = 0, first = -1, last = -1, prev = -1, w_all = 0, w_in = 0, len = 0;
	char seq[1024] = "";
	*mlp_b = 0;
	REQUIRE(mf != mb); /* the exchanges are told apart by their micro-batch */
	for (int a = 0; a < p->n_actions; a++) {
		const struct rt_action *ac = &p->actions[a];
		if (ac->kind != RT_ACT_CHUNK)
			continue;
		const struct rt_chunk *c = &p->chunks[ac->index];
		int f = c->kind == RT_CHUNK_FWD && c->stage == sf && ac->mb == mf;
		int b = c->kind != RT_CHUNK_FWD && c->stage == sb && ac->mb == mb;
		w_all += b && c->kind == RT_CHUNK_BWD_W;
		if (f || (b && c->kind != RT_CHUNK_BWD_W)) {
			first = first < 0 ? a : first;
			last = a;
		}
	}
	REQUIRE(first >= 0);
	for (int a = first; a <= last; a++) {
		const struct rt_action *ac = &p->actions[a];
		if (ac->kind == RT_ACT_COMM && p->comms[ac->index].kind == RT_COP_ALL_TO_ALLV) {
			if (!under_other(p, a)) {
				fprintf(stderr, "rank %d action %d: the exchange of micro-batch %d "
					"hides under no chunk of the other\n", p->rank, a, ac->mb);
				faults++;
			}
		}
		if (ac->kind != RT_ACT_CHUNK)
			continue;
		const struct rt_chunk *c = &p->chunks[ac->index];
		int f = c->kind == RT_CHUNK_FWD && c->stage == sf && ac->mb == mf;
		int b = c->kind != RT_CHUNK_FWD && c->stage == sb && ac->mb == mb;
		int w = b && c->kind == RT_CHUNK_BWD_W;
		if (!f && !b) {
			fprintf(stderr, "rank %d action %d: %s mb %d inside the pair\n", p->rank, a,
				c->name, ac->mb);
			faults++;
			continue;
		}
		w_in += w;
		const char *part = strrchr(c->name, '.') + 1;
		int mlp = !strcmp(part, "mlp");
		if (!mlp && strncmp(part, "attn", 4))
			continue; /* a dispatch's own ops, between its two exchanges */
		int pos = (mlp ? 0 : 3) + (f ? 2 : w ? 1 : 0);
		static const char *const name[6] = { "MLP(B)", "MLP(W)", "MLP(F)",
						     "ATTN(B)", "ATTN(W)", "ATTN(F)" };
		if (len < (int)sizeof seq - 16)
			len += snprintf(seq + len, sizeof seq - (size_t)len, " %s", name[pos]);
		*mlp_b += pos == 0;
		int d = (pos - prev + 6) % 6;
		if (prev >= 0 && d != 1 && !(!w_all && d == 2 && prev % 3 == 0)) {
			fprintf(stderr, "rank %d action %d: %s after %s\n", p->rank, a, name[pos],
				name[prev]);
			faults++;
		}
		prev = pos;
	}
	if (w_in != w_all) {
		fprintf(stderr, "rank %d: %d of the %d W chunks of micro-batch %d inside its "
			"pair\n", p->rank, w_in, w_all, mb);
		faults++;
	}
	if (faults)
		fprintf(stderr, "rank %d pair F%d/%d B%d/%d:%s\n", p->rank, mf, sf, mb, sb, seq);
	return faults;
}

/* Every encoding of each narrow dtype (NaNs aside) unpacks to a value that packs back
 * to it; and f32 values in between pack to what the reference's rounding gives. */
static void test_pack(void)
{
	const struct { enum rt_dtype rt; enum ir_dtype ir; int bits; } ts[] = {
		{ RT_DT_BF16, IR_BF16, 16 }, { RT_DT_F16, IR_F16, 16 },
		{ RT_DT_F8E4M3, IR_F8E4M3, 8 }, { RT_DT_F8E5M2, IR_F8E5M2, 8 },
	};
	for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
		enum rt_dtype t = ts[k].rt;
		uint32_t codes = 1u << ts[k].bits;
		int bad = 0, values = 0;
		for (uint32_t c = 0; c < codes; c++) {
			uint16_t in16 = (uint16_t)c, out16 = 0;
			uint8_t in8 = (uint8_t)c, out8 = 0;
			float f;
			rt_unpack(t, &f, ts[k].bits == 16 ? (void *)&in16 : (void *)&in8, 1);
			if (isnan(f) || (isinf(f) && t != RT_DT_F16 && t != RT_DT_BF16))
				continue;
			rt_pack(t, ts[k].bits == 16 ? (void *)&out16 : (void *)&out8, &f, 1);
			values++;
			bad += ts[k].bits == 16 ? out16 != in16 : out8 != in8;
		}
		CHECKF(bad == 0, "%s: %d of %d encodings do not come back", rt_dtype_name(t), bad,
		       values);
		CHECKF(values > (int)codes * 9 / 10, "%s: %d values", rt_dtype_name(t), values);
		/* values between the grid's points, and past the largest (f8 saturates) */
		uint32_t x = 12345u;
		for (int i = 0; i < 20000; i++) {
			x = x * 1664525u + 1013904223u;
			float f = ldexpf((float)(x >> 8) / (float)(1u << 24), (int)(x % 40u) - 24);
			if (x & 1u)
				f = -f;
			if (i % 1000 == 0)
				f = f < 0 ? -1e6f : 1e6f;
			uint16_t q16 = 0;
			uint8_t q8 = 0;
			float back;
			rt_pack(t, ts[k].bits == 16 ? (void *)&q16 : (void *)&q8, &f, 1);
			rt_unpack(t, &back, ts[k].bits == 16 ? (void *)&q16 : (void *)&q8, 1);
			double want = ref_round((double)f, ts[k].ir);
			if (t == RT_DT_F16 && fabs(want) > 65504.0)
				want = copysign(INFINITY, want);
			if (!(back == (float)want)) {
				CHECKF(0, "%s: %.9g packs to %.9g, the reference rounds to %.9g",
				       rt_dtype_name(t), f, back, want);
				break;
			}
		}
	}
}

int main(void)
{
	test_pack();
	struct rt_program *progs[MAXR];
	FILE *quiet = fopen("/dev/null", "w");
	REQUIRE(quiet);
	int layouts[][3] = { { 2, 1, 4 }, { 4, 1, 4 }, { 2, 2, 2 }, { 1, 4, 1 }, { 4, 2, 8 } };
	for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++) {
		struct ir_graph *g = model();
		int pp = layouts[k][0], dp = layouts[k][1], mb = layouts[k][2];
		int n = build(g, pp, dp, mb, progs);
		CHECKF(rt_program_verify(progs, n, stderr) == 0, "pp %d dp %d", pp, dp);
		for (int r = 0; r < n; r++) {
			const struct rt_program *p = progs[r];
			int s = r / dp, sends = 0, recvs = 0, reduces = 0;
			for (int i = 0; i < p->n_comms; i++) {
				sends += p->comms[i].kind == RT_COP_SEND;
				recvs += p->comms[i].kind == RT_COP_RECV;
				reduces += p->comms[i].kind == RT_COP_ALL_REDUCE;
			}
			/* chunks: one step with one stage; a forward and a backward otherwise */
			CHECK(p->n_chunks == (pp == 1 ? 1 : 2));
			CHECK(pp == 1 ? sends == 0 && recvs == 0 : sends > 0 && recvs > 0);
			CHECK(dp == 1 || reduces > 0);
			/* SAVED buffers hold at most the micro-batches 1F1B keeps in flight on
			 * the stage (fewer when a value dies sooner: one sent on, say), and
			 * no slot is taken by two micro-batches at once */
			int want = pp - s < mb ? pp - s : mb;
			for (int b = 0; b < p->n_bufs; b++)
				if (p->bufs[b].role == RT_BUF_SAVED)
					CHECKF(p->bufs[b].slots >= 1 && p->bufs[b].slots <= want,
					       "rank %d %s: %d slots, want 1..%d", r, p->bufs[b].name,
					       p->bufs[b].slots, want);
			CHECKF(check_slots(p) == 0, "pp %d dp %d rank %d", pp, dp, r);
			/* every micro-batch's forward and backward run once */
			int runs = 0;
			for (int a = 0; a < p->n_actions; a++)
				runs += p->actions[a].kind == RT_ACT_CHUNK;
			CHECK(runs == (pp == 1 ? mb : 2 * mb));
		}
		free_all(progs, n);
		ir_graph_free(g);
	}

	/* the other schedules: zb1p's split backward (bwd_b and bwd_w chunks), dualpipev's
	 * two stages a rank, dualpipe's two directions; every program verifies and keeps
	 * its slots apart */
	struct { int pp, dp, ep, mb; const char *sched; int chunks; } others[] = {
		{ 2, 1, 1, 4, "zb1p", 3 }, { 4, 1, 1, 8, "zb1p", 3 }, { 2, 2, 1, 2, "zb1p", 3 },
		{ 2, 1, 1, 4, "dualpipev", 6 }, { 2, 2, 1, 4, "dualpipev", 6 },
		{ 2, 1, 1, 4, "dualpipe", 6 }, { 4, 1, 1, 8, "dualpipe", 6 },
		{ 2, 2, 2, 4, "zb1p", 0 }, { 2, 2, 2, 4, "dualpipev", 0 },
	};
	for (size_t k = 0; k < sizeof others / sizeof others[0]; k++) {
		struct ir_graph *g = model();
		int n = build_sched(g, others[k].pp, others[k].dp, others[k].ep, others[k].mb,
				    others[k].sched, progs);
		CHECKF(rt_program_verify(progs, n, stderr) == 0, "%s pp %d dp %d ep %d",
		       others[k].sched, others[k].pp, others[k].dp, others[k].ep);
		for (int r = 0; r < n; r++) {
			const struct rt_program *p = progs[r];
			CHECKF(!others[k].chunks || p->n_chunks == others[k].chunks,
			       "%s rank %d: %d chunks", others[k].sched, r, p->n_chunks);
			CHECKF(check_slots(p) == 0, "%s rank %d", others[k].sched, r);
			int b_chunks = 0, w_chunks = 0;
			for (int c = 0; c < p->n_chunks; c++) {
				b_chunks += p->chunks[c].kind == RT_CHUNK_BWD_B;
				w_chunks += p->chunks[c].kind == RT_CHUNK_BWD_W;
			}
			CHECKF(b_chunks > 0 && b_chunks == w_chunks, "%s rank %d: %d B, %d W",
			       others[k].sched, r, b_chunks, w_chunks);
			/* the head's part of the shared embedding's gradient is summed where
			 * it is made (codegen/program.c, find_partials): no weight-gradient
			 * values travel between stages, and every rank's embedding gradient
			 * is written by one of its chunks */
			for (int i = 0; i < p->n_comms; i++) {
				const char *gn = p->groups[p->comms[i].group].name;
				CHECKF(strncmp(gn, "ppw", 3), "%s rank %d: %s on %s", others[k].sched, r,
				       rt_cop_kind_name(p->comms[i].kind), gn);
			}
			int emb = -1, held = 0;
			for (int b = 0; b < p->n_bufs; b++) {
				emb = !strcmp(p->bufs[b].name, "grad.embed.weight") ? b : emb;
				held |= !strcmp(p->bufs[b].name, "embed.weight");
			}
			int written = 0;
			for (int c = 0; c < p->n_chunks && emb >= 0; c++)
				for (int o = 0; o < p->chunks[c].n_out; o++)
					written |= p->chunks[c].out[o] == emb;
			CHECKF(!held || (emb >= 0 && written), "%s rank %d: grad.embed.weight %s",
			       others[k].sched, r, emb < 0 ? "missing" : "written by no chunk");
		}
		free_all(progs, n);
		ir_graph_free(g);
	}

	/* expert parallelism: the all-to-alls of every MoE layer, the same on every rank of
	 * an ep group, between the chunks; expert weights sliced by rows */
	int ep_layouts[][4] = { { 1, 2, 2, 1 }, { 1, 4, 4, 1 }, { 2, 2, 2, 2 }, { 2, 4, 2, 1 } };
	for (size_t k = 0; k < sizeof ep_layouts / sizeof ep_layouts[0]; k++) {
		struct ir_graph *g = sl_compile_file("models/tiny_moe.sl", 0, NULL, stderr);
		REQUIRE(g);
		int pp = ep_layouts[k][0], dp = ep_layouts[k][1], ep = ep_layouts[k][2];
		ir_graph_set(g, "ep", ep, NULL);
		REQUIRE(pass_pipeline_run(g, NULL, stderr) == 0);
		/* the chunk pass's parts, from the ops: the grouped matmuls are the MLP, the
		 * exchanges toward the experts dispatch, back combine */
		for (int i = 0; i < g->n_ops; i++) {
			const struct ir_op *op = g->ops[i];
			const char *pt = ir_op_str(op, "part", "");
			if (op->kind == IR_OP_INPUT || op->kind == IR_OP_PARAM ||
			    op->kind == IR_OP_CONST)
				continue;
			CHECKF(*pt, "op %d (%s) has no part", i, ir_op_name(op->kind));
			if (op->kind == IR_OP_GROUPED_MATMUL || op->kind == IR_OP_GROUPED_MATMUL_WGRAD)
				CHECKF(!strcmp(pt, "mlp"), "%s: part %s", ir_op_name(op->kind), pt);
			if (op->kind == IR_OP_MOE_DISPATCH || op->kind == IR_OP_ALL_TO_ALL)
				CHECKF(!strcmp(pt, "dispatch"), "%s: part %s", ir_op_name(op->kind), pt);
			if (op->kind == IR_OP_MOE_COMBINE || op->kind == IR_OP_MOE_UNDISPATCH)
				CHECKF(!strcmp(pt, "combine"), "%s: part %s", ir_op_name(op->kind), pt);
			if (op->kind == IR_OP_MATMUL)
				CHECKF(!strcmp(pt, "attn"), "%s: part %s", ir_op_name(op->kind), pt);
			if (op->kind == IR_OP_ALL_TO_ALLV) /* one each way, forward and backward */
				CHECKF(!strcmp(pt, "dispatch") || !strcmp(pt, "combine"), "all_to_allv: %s", pt);
		}
#ifdef SLUICE_HAVE_CUDA
		/* the GPU arena train opens before the programs exist is sized over this
		 * graph, whose exchanges span ep ranks: planned as buffers, not refused (a
		 * refusal left a 1 GiB arena that moe_1b outgrew) */
		int64_t gpu = 0;
		CHECKF(cg_cuda_arena_plan(g, &gpu, stderr) == 0 && gpu > 0,
		       "ep %d: GPU arena plan %lld", ep, (long long)gpu);
#endif
		int n = build_ep(g, pp, dp, ep, ep_layouts[k][3], progs);
		CHECKF(rt_program_verify(progs, n, stderr) == 0, "pp %d dp %d ep %d", pp, dp, ep);
		/* the chunks between the exchanges are named by their parts */
		int mlp_chunks = 0;
		for (int c = 0; c < progs[0]->n_chunks; c++)
			mlp_chunks += strstr(progs[0]->chunks[c].name, ".mlp") != NULL;
		CHECKF(mlp_chunks > 0, "pp %d ep %d: no chunk named mlp", pp, ep);
		for (int r = 0; r < n; r++) {
			const struct rt_program *p = progs[r];
			int a2a = 0, sliced = 0;
			for (int i = 0; i < p->n_comms; i++)
				a2a += p->comms[i].kind == RT_COP_ALL_TO_ALLV;
			for (int i = 0; i < p->n_params; i++)
				if (p->params[i].rows != p->params[i].shape[0]) {
					sliced++;
					CHECK(p->params[i].rows * ep == p->params[i].shape[0]);
					CHECK(p->params[i].row0 == (r % dp) % ep * p->params[i].rows);
				}
			/* every MoE layer on the rank: two exchanges forward, two backward */
			CHECKF(a2a > 0 && a2a % 4 == 0, "rank %d: %d all_to_allv", r, a2a);
			CHECKF(sliced > 0 && sliced % 3 == 0, "rank %d: %d sliced", r, sliced);
		}
		free_all(progs, n);
		ir_graph_free(g);
	}

	/* one stage with ep 2 and 3 micro-batches: F0, then F1 beside B0 and F2 beside B1,
	 * then B2; in a pair each exchange is in flight while the other micro-batch
	 * computes (a chunk of it between the exchange's start and its wait), the slots
	 * hold what each chunk reads, and the ranks' programs pass the verifier */
	{
		struct ir_graph *gf = sl_compile_file("models/tiny_moe.sl", 0, NULL, stderr);
		REQUIRE(gf);
		ir_graph_set(gf, "ep", 2, NULL);
		REQUIRE(pass_pipeline_run(gf, NULL, stderr) == 0);
		int nf = build_ep(gf, 1, 2, 2, 3, progs);
		REQUIRE(nf == 2);
		CHECK(rt_program_verify(progs, nf, stderr) == 0);
		for (int r = 0; r < nf; r++) {
			const struct rt_program *p = progs[r];
			CHECKF(check_slots(p) == 0, "fb rank %d", r);
			int comms = 0, covered = 0, fwd_after_bwd = 0, seen_bwd = 0;
			for (int i = 0; i < p->n_actions; i++) {
				const struct rt_action *a = &p->actions[i];
				if (a->kind == RT_ACT_CHUNK) {
					enum rt_chunk_kind k = p->chunks[a->index].kind;
					seen_bwd |= k == RT_CHUNK_BWD;
					fwd_after_bwd += seen_bwd && k == RT_CHUNK_FWD;
					continue;
				}
				if (a->kind != RT_ACT_COMM ||
				    p->comms[a->index].kind == RT_COP_ALL_REDUCE)
					continue;
				comms++;
				covered += under_other(p, i);
			}
			CHECKF(fwd_after_bwd > 0, "rank %d: no forward chunk after a backward one", r);
			CHECKF(comms > 0 && 3 * covered >= comms,
			       "rank %d: %d of %d exchanges under another micro-batch's chunks", r,
			       covered, comms);
		}
		free_all(progs, nf);
		ir_graph_free(gf);
	}

	/* DeepSeek-V3's order inside an overlapped pair: DualPipe with pp 2 and ep 2 (each
	 * FB action of the schedule a pair, its W inside), and one stage with ep 2 (F(m)
	 * beside B(m-1), weight-grads inside the backward's chunks); the programs verify,
	 * keep their slots apart, and each pair passes pair_faults over two MoE layers at
	 * least */
	{
		struct ir_graph *gp = sl_compile_file("models/tiny_moe.sl", 0, NULL, stderr);
		REQUIRE(gp);
		ir_graph_set(gp, "ep", 2, NULL);
		REQUIRE(pass_pipeline_run(gp, NULL, stderr) == 0);
		/* two MoE layers a stage, as the partition pass cuts it: layers 0-2 (the
		 * first dense), then layer 3 and the MTP module's */
		struct pass_schedule ps;
		REQUIRE(pass_schedule_build("dualpipe", 2, 4, &ps, stderr) == 0);
		REQUIRE(cg_count_layers(gp) == 4);
		int split[4] = { 0, 0, 0, 1 };
		struct cg_layout lp = { .pp = 2, .dp = 2, .ep = 2, .microbatches = 4,
					.schedule = "dualpipe", .stages = ps.stages,
					.layer_stage = split, .n_layers = 4 };
		REQUIRE(cg_assign_stages(gp, &lp, stderr) == 0);
		int np = 4;
		for (int r = 0; r < np; r++)
			REQUIRE((progs[r] = cg_program_build(gp, &lp, r, NULL, stderr)));
		CHECK(rt_program_verify(progs, np, stderr) == 0);
		int pairs = 0;
		for (int r = 0; r < np; r++) {
			CHECKF(check_slots(progs[r]) == 0, "dualpipe ep 2 rank %d", r);
			const struct pass_act *acts = ps.acts[r / 2];
			for (int i = 0; i < ps.n_acts[r / 2]; i++) {
				if (acts[i].kind != PASS_ACT_FB)
					continue;
				int mlp_b = 0;
				CHECKF(pair_faults(progs[r], acts[i].stage, acts[i].mb, acts[i].stage2,
						   acts[i].mb2, &mlp_b) == 0,
				       "dualpipe ep 2 rank %d: pair F%d B%d", r, acts[i].mb, acts[i].mb2);
				CHECKF(mlp_b >= 2, "rank %d: %d MLP(B) in a pair", r, mlp_b);
				pairs++;
			}
		}
		CHECKF(pairs > 0, "dualpipe ep 2: no FB pair");
		pass_schedule_free(&ps);
		free_all(progs, np);
		/* dualpipev's pairs too, whose stages hold one MoE layer or none (the
		 * order is not checked: a dense stage's backward has no parts to meet) */
		np = build_sched(gp, 2, 2, 2, 4, "dualpipev", progs);
		CHECK(rt_program_verify(progs, np, stderr) == 0);
		for (int r = 0; r < np; r++)
			CHECKF(check_slots(progs[r]) == 0, "dualpipev ep 2 rank %d", r);
		free_all(progs, np);
		np = build_ep(gp, 1, 2, 2, 3, progs);
		CHECK(rt_program_verify(progs, np, stderr) == 0);
		for (int r = 0; r < np; r++)
			for (int m = 1; m < 3; m++) {
				int mlp_b = 0;
				CHECKF(pair_faults(progs[r], 0, m, 0, m - 1, &mlp_b) == 0,
				       "one stage ep 2 rank %d: pair F%d B%d", r, m, m - 1);
				CHECKF(mlp_b >= 2, "rank %d: %d MLP(B) in a pair", r, mlp_b);
			}
		free_all(progs, np);
		ir_graph_free(gp);
	}

	/* broken on purpose: each must be caught */
	struct ir_graph *g = model();
	int n = build(g, 2, 1, 4, progs);
	REQUIRE(rt_program_verify(progs, n, quiet) == 0);
	/* a receive of another shape, then of another dtype */
	int a = first_comm(progs[1], RT_COP_RECV);
	REQUIRE(a >= 0);
	struct rt_buffer *rb = &progs[1]->bufs[progs[1]->comms[progs[1]->actions[a].index].buf];
	rb->rank++;
	rb->shape[rb->rank - 1] = 2;
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	{
		/* drawn: the two ranks at the send and the receive, an arrow saying what */
		FILE *md = tmpfile();
		REQUIRE(md);
		CHECK(rt_program_verify_dot(progs, n, quiet, md) > 0);
		rewind(md);
		char ml[512];
		int head = 0, ranks = 0, arrow = 0, closed = 0;
		while (fgets(ml, sizeof ml, md)) {
			head |= strstr(ml, "digraph mismatch") != NULL;
			ranks += strstr(ml, "  r0 [label=\"rank 0") != NULL ||
				 strstr(ml, "  r1 [label=\"rank 1") != NULL;
			arrow |= strstr(ml, "r0 -> r1 [label=\"sent and received shapes or dtypes "
					"differ\"]") != NULL;
			closed |= !strcmp(ml, "}\n");
		}
		CHECKF(head && ranks == 2 && arrow && closed,
		       "the mismatch drawn: graph %d, %d ranks, arrow %d, closed %d", head, ranks,
		       arrow, closed);
		fclose(md);
	}
	rb->rank--;
	enum rt_dtype dt = rb->dtype;
	rb->dtype = dt == RT_DT_F32 ? RT_DT_I32 : RT_DT_F32;
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	rb->dtype = dt;
	REQUIRE(rt_program_verify(progs, n, quiet) == 0);
	/* a missing receive: the action becomes a wait */
	struct rt_action saved = progs[1]->actions[a];
	progs[1]->actions[a] = (struct rt_action){ RT_ACT_WAIT, 1, 0 };
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	progs[1]->actions[a] = saved;
	/* a send for another micro-batch */
	int s0 = first_comm(progs[0], RT_COP_SEND);
	REQUIRE(s0 >= 0);
	progs[0]->actions[s0].mb++;
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	progs[0]->actions[s0].mb--;
	REQUIRE(rt_program_verify(progs, n, quiet) == 0);
	/* a cycle of waits: stage 0 waits for its first gradient before sending its first
	 * activation, while stage 1 waits for that activation; the pairs still match, so
	 * only playing the actions finds it */
	int r0 = first_comm(progs[0], RT_COP_RECV);
	REQUIRE(r0 > 0);
	struct rt_program *p0 = progs[0];
	struct rt_action recv = p0->actions[r0];
	int gpp = p0->comms[recv.index].group;
	struct rt_action *na = calloc((size_t)p0->n_actions + 1, sizeof *na);
	REQUIRE(na);
	int k = 0;
	na[k++] = recv;
	na[k++] = (struct rt_action){ RT_ACT_WAIT, gpp, recv.mb };
	for (int i = 0; i < p0->n_actions; i++)
		if (i != r0)
			na[k++] = p0->actions[i];
	free(p0->actions);
	p0->actions = na;
	p0->n_actions = k;
	FILE *msg = tmpfile();
	REQUIRE(msg);
	CHECK(rt_program_verify(progs, n, msg) > 0);
	rewind(msg);
	char line[512];
	int said = 0;
	while (fgets(line, sizeof line, msg)) {
		said |= strstr(line, "cannot finish") != NULL;
		fputs(line, stderr); /* shown in the test's log */
	}
	CHECKF(said, "the cycle of waits is not what was reported");
	fclose(msg);
	/* and drawn: both ranks, each with an arrow to the other */
	FILE *dot = tmpfile();
	REQUIRE(dot);
	FILE *null = fopen("/dev/null", "w");
	REQUIRE(null);
	CHECK(rt_program_verify_dot(progs, n, null, dot) > 0);
	fclose(null);
	rewind(dot);
	int arrows = 0, nodes = 0, closed = 0;
	while (fgets(line, sizeof line, dot)) {
		arrows += strstr(line, "r0 -> r1") != NULL || strstr(line, "r1 -> r0") != NULL;
		nodes += strstr(line, "  r0 [label=\"rank 0") != NULL ||
			 strstr(line, "  r1 [label=\"rank 1") != NULL;
		closed |= !strcmp(line, "}\n");
	}
	CHECKF(arrows == 2 && nodes == 2 && closed, "the cycle drawn: %d arrows, %d ranks",
	       arrows, nodes);
	fclose(dot);
	free_all(progs, n);
	ir_graph_free(g);

	/* collectives in another order on one rank of the communicator */
	g = model();
	n = build(g, 1, 2, 1, progs);
	REQUIRE(rt_program_verify(progs, n, quiet) == 0);
	int x = -1, y = -1;
	for (int i = 0; i < progs[1]->n_actions; i++)
		if (progs[1]->actions[i].kind == RT_ACT_COMM &&
		    progs[1]->comms[progs[1]->actions[i].index].kind == RT_COP_ALL_REDUCE) {
			int64_t ne = progs[1]->bufs[progs[1]->comms[progs[1]->actions[i].index].buf].numel;
			if (x < 0)
				x = i;
			else if (progs[1]->bufs[progs[1]->comms[progs[1]->actions[x].index].buf].numel != ne) {
				y = i;
				break;
			}
		}
	REQUIRE(x >= 0 && y >= 0);
	struct rt_action t = progs[1]->actions[x];
	progs[1]->actions[x] = progs[1]->actions[y];
	progs[1]->actions[y] = t;
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	progs[1]->actions[y] = progs[1]->actions[x];
	progs[1]->actions[x] = t;
	REQUIRE(rt_program_verify(progs, n, quiet) == 0);
	/* a collective of another kind, of the same size, where the other rank sums: the
	 * counts of collectives agree, the kinds do not */
	struct rt_comm_op *cx = &progs[1]->comms[progs[1]->actions[x].index];
	cx->kind = RT_COP_ALL_TO_ALL;
	CHECK(rt_program_verify(progs, n, quiet) > 0);
	cx->kind = RT_COP_ALL_REDUCE;
	free_all(progs, n);
	ir_graph_free(g);
	fclose(quiet);
	return CHECK_DONE();
}
