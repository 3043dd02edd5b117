/*
 * schedule.c - pipeline schedules as per-rank action lists.
 *
 * Takes a schedule's name, the ranks of the pipeline and the micro-batches of a step;
 * gives every rank the ordered list of what its compute stream runs (F, B, W, BW, FB:
 * see passes.h).  The lists depend on nothing else: costs enter only in the simulator
 * (simulate.c), which runs them.  Leaves alone the chunks inside an action (attention,
 * dispatch, MLP, combine) and the communication between ranks: both come later, from
 * the program builder.
 *
 * The schedules:
 *  - 1f1b: rank r runs P-1-r forwards, then one forward and one full backward in turn,
 *    then the backwards left (Megatron-LM's order).
 *  - zb1p: ZB-H1 of "Zero Bubble Pipeline Parallelism" (Qi et al., 2024): 1f1b's order of
 *    forwards and input-grads, each backward split into B and W.  Rank r keeps r weight-
 *    grads waiting in the steady state (the later stages hold theirs back, so that the
 *    input-grads pass down the pipeline without waiting behind a W), then runs one W
 *    after each B of the cool-down and the rest at the end.  Peak in flight stays 1f1b's.
 *  - dualpipe, dualpipev: DeepSeek's reference (github.com/deepseek-ai/DualPipe,
 *    dualpipe/dualpipe.py and dualpipev.py, DualPipe.step), its eight steps transcribed
 *    one to one: nF0, nF0F1, nB1W1F1, the overlapped nF0B1F1B0, nB1F1B0, nB1B0 (the
 *    second half zero-bubble), nWB0, nW.  A backward that the reference runs with zero-
 *    bubble on becomes B, its W queued; one it runs with it off is BW; an overlapped
 *    forward-backward pair is FB, its backward full.  W pops the oldest queued.
 *
 * Phases (the reference's): dualpipe's phase 0 is direction 0 (down, stage r) on ranks
 * 0..P/2-1 and direction 1 (up, stage P-1-r) on the others, phase 1 the other one;
 * dualpipev's phase 0 is stage r, phase 1 stage 2P-1-r.  Micro-batches of one direction run every stage in
 * the order of their number, forward and backward alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

const char *pass_act_name(enum pass_act_kind k)
{
	switch (k) {
	case PASS_ACT_F: return "F";
	case PASS_ACT_B: return "B";
	case PASS_ACT_W: return "W";
	case PASS_ACT_BW: return "BW";
	case PASS_ACT_FB: return "FB";
	case PASS_ACT_SEND_F: return "sendF";
	case PASS_ACT_SEND_B: return "sendB";
	}
	return "?";
}

int pass_schedule_rank(const struct pass_schedule *s, int mb, int stage)
{
	switch (s->kind) {
	case PASS_SCHED_DUALPIPE:
		return mb < s->microbatches / 2 ? stage : s->ranks - 1 - stage;
	case PASS_SCHED_DUALPIPEV:
		return stage < s->ranks ? stage : 2 * s->ranks - 1 - stage;
	default:
		return stage;
	}
}

/* --- building one rank's list ---------------------------------------------------------- */

struct list {
	struct pass_act *a;
	int n, cap;
	int *wq, wq_head, wq_n; /* queued weight-grads, as indices into a */
};

static void push(struct list *l, enum pass_act_kind k, int mb, int stage, int mb2, int stage2)
{
	if (l->n == l->cap) {
		fprintf(stderr, "internal error: schedule list overflow\n");
		abort();
	}
	l->a[l->n++] = (struct pass_act){ k, mb, stage, mb2, stage2 };
}

/* a backward of (mb, stage): B with its W queued (zero-bubble) or BW */
static void backward(struct list *l, int mb, int stage, int zb)
{
	if (zb) {
		l->wq[l->wq_n++] = l->n;
		push(l, PASS_ACT_B, mb, stage, -1, -1);
	} else {
		push(l, PASS_ACT_BW, mb, stage, -1, -1);
	}
}

static void weight(struct list *l)
{
	if (l->wq_head == l->wq_n) {
		fprintf(stderr, "internal error: schedule: W with none queued\n");
		abort();
	}
	const struct pass_act *b = &l->a[l->wq[l->wq_head++]];
	push(l, PASS_ACT_W, b->mb, b->stage, -1, -1);
}

static void one_f_one_b(struct list *l, int P, int M, int r, int zb)
{
	int warm = P - 1 - r < M ? P - 1 - r : M, f = 0, b = 0;
	int keep = zb ? r : 0; /* weight-grads held back in the steady state */
	for (; f < warm; f++)
		push(l, PASS_ACT_F, f, r, -1, -1);
	for (; f < M; f++) {
		push(l, PASS_ACT_F, f, r, -1, -1);
		backward(l, b++, r, zb);
		if (zb && l->wq_n - l->wq_head > keep)
			weight(l);
	}
	for (; b < M; b++) {
		backward(l, b, r, zb);
		if (zb)
			weight(l);
	}
	while (l->wq_head < l->wq_n)
		weight(l);
}

/* DeepSeek's DualPipe and DualPipeV, rank r */
struct dual {
	struct list *l;
	int v, P, M, r, second;
	int fc[2], bc[2]; /* next forward, backward micro-batch per direction */
};

static int dual_stage(const struct dual *d, int dir)
{
	if (d->v)
		return dir == 0 ? d->r : 2 * d->P - 1 - d->r;
	return dir == 0 ? d->r : d->P - 1 - d->r;
}

static int dual_mb(const struct dual *d, int dir, int k)
{
	return d->v || dir == 0 ? k : d->M / 2 + k;
}

static void dual_f(struct dual *d, int phase)
{
	int dir = phase ^ d->second;
	push(d->l, PASS_ACT_F, dual_mb(d, dir, d->fc[dir]++), dual_stage(d, dir), -1, -1);
}

static void dual_b(struct dual *d, int phase, int zb)
{
	int dir = phase ^ d->second;
	backward(d->l, dual_mb(d, dir, d->bc[dir]++), dual_stage(d, dir), zb);
}

static void dual_fb(struct dual *d, int phase0, int phase1)
{
	int d0 = phase0 ^ d->second, d1 = phase1 ^ d->second;
	int mf = dual_mb(d, d0, d->fc[d0]++), mb = dual_mb(d, d1, d->bc[d1]++);
	push(d->l, PASS_ACT_FB, mf, dual_stage(d, d0), mb, dual_stage(d, d1));
}

static void dualpipe(struct list *l, int P, int M, int r, int v)
{
	/* the reference's names: num_half_ranks, half_rank, half_num_chunks; DualPipeV's
	 * steps read the same with its ranks, rank and chunks in their place */
	struct dual d = { .l = l, .v = v, .P = P, .M = M, .r = r };
	int nh = v ? P : P / 2, hr = v ? r : (r < P - 1 - r ? r : P - 1 - r);
	int chunks = v ? M : M / 2;
	int middle = v ? r == P - 1 : (r == P / 2 - 1 || r == P / 2);
	d.second = !v && r >= P / 2;

	for (int i = 0; i < (nh - hr - 1) * 2; i++) /* 1: nF0 */
		dual_f(&d, 0);
	for (int i = 0; i < hr + 1; i++) { /* 2: nF0F1 */
		dual_f(&d, 0);
		dual_f(&d, 1);
	}
	for (int i = 0; i < nh - hr - 1; i++) { /* 3: nB1W1F1, zero-bubble */
		dual_b(&d, 1, 1);
		weight(l);
		dual_f(&d, 1);
	}
	for (int i = 0; i < chunks - 2 * nh + hr + 1; i++) { /* 4: nF0B1F1B0 */
		if (i == 0 && middle) {
			/* the reference does not overlap these two: a smaller bubble */
			dual_f(&d, 0);
			dual_b(&d, 1, 0);
		} else {
			dual_fb(&d, 0, 1);
		}
		dual_fb(&d, 1, 0);
	}
	for (int i = 0; i < nh - hr - 1; i++) { /* 5: nB1F1B0 */
		dual_b(&d, 1, 0);
		dual_fb(&d, 1, 0);
	}
	int zb = 0, n6 = hr + 1;
	for (int i = 0; i < n6; i++) { /* 6: nB1B0, the second half zero-bubble */
		if (i == n6 / 2 && hr % 2 == 1)
			zb = 1;
		dual_b(&d, 1, zb);
		if (i == n6 / 2 && hr % 2 == 0)
			zb = 1;
		dual_b(&d, 0, zb);
	}
	for (int i = 0; i < nh - hr - 1; i++) { /* 7: nWB0 */
		weight(l);
		dual_b(&d, 0, 1);
	}
	for (int i = 0; i < hr + 1; i++) /* 8: nW */
		weight(l);
	if (l->wq_head != l->wq_n) {
		fprintf(stderr, "internal error: dualpipe rank %d: weight-grads left\n", r);
		abort();
	}
}

/* --- the schedules ----------------------------------------------------------------------- */

static const char *const names[] = { "1f1b", "zb1p", "dualpipe", "dualpipev", NULL };

int pass_schedule_build(const char *name, int P, int M, struct pass_schedule *out, FILE *err)
{
	memset(out, 0, sizeof *out);
	int k = 0;
	while (names[k] && strcmp(names[k], name))
		k++;
	if (!names[k]) {
		fprintf(err, "error: schedule '%s': the schedules are", name);
		for (int i = 0; names[i]; i++)
			fprintf(err, " %s", names[i]);
		fputc('\n', err);
		return 1;
	}
	if (P < 1 || M < 1 || P > 4096 || M > 1 << 20) {
		fprintf(err, "error: schedule %s: %d ranks and %d micro-batches: at least one of "
			"each (at most 4096 ranks, 2^20 micro-batches)\n", name, P, M);
		return 1;
	}
	enum pass_sched_kind kind = (enum pass_sched_kind)k;
	if (kind == PASS_SCHED_DUALPIPE && P % 2) {
		fprintf(err, "error: schedule dualpipe: pp %d is odd; DualPipe pairs rank r with "
			"rank pp-1-r and needs an even pp (dualpipev takes any)\n", P);
		return 1;
	}
	if (kind == PASS_SCHED_DUALPIPE && (M < 2 * P || M % 2)) {
		fprintf(err, "error: schedule dualpipe: %d micro-batches; it needs an even number, "
			"at least 2 x pp = %d (half enter at each end)\n", M, 2 * P);
		return 1;
	}
	if (kind == PASS_SCHED_DUALPIPEV && M < 2 * P) {
		fprintf(err, "error: schedule dualpipev: %d micro-batches; it needs at least "
			"2 x pp = %d\n", M, 2 * P);
		return 1;
	}
	out->kind = kind;
	out->ranks = P;
	out->microbatches = M;
	out->stages = kind == PASS_SCHED_DUALPIPEV ? 2 * P : P;
	out->param_copies = kind == PASS_SCHED_DUALPIPE ? 2 : 1;
	out->n_acts = calloc((size_t)P, sizeof *out->n_acts);
	out->acts = calloc((size_t)P, sizeof *out->acts);
	int cap = 6 * M + 1;
	int *wq = malloc((size_t)cap * sizeof *wq);
	if (!out->n_acts || !out->acts || !wq)
		abort();
	for (int r = 0; r < P; r++) {
		struct list l = { .a = malloc((size_t)cap * sizeof *l.a), .cap = cap, .wq = wq };
		if (!l.a)
			abort();
		if (kind == PASS_SCHED_1F1B || kind == PASS_SCHED_ZB1P)
			one_f_one_b(&l, P, M, r, kind == PASS_SCHED_ZB1P);
		else
			dualpipe(&l, P, M, r, kind == PASS_SCHED_DUALPIPEV);
		out->acts[r] = l.a;
		out->n_acts[r] = l.n;
	}
	free(wq);
	return 0;
}

void pass_schedule_free(struct pass_schedule *s)
{
	for (int r = 0; s->acts && r < s->ranks; r++)
		free(s->acts[r]);
	free(s->acts);
	free(s->n_acts);
	memset(s, 0, sizeof *s);
}

/* --- checking a schedule ------------------------------------------------------------------ */

/* per (mb, stage): the list positions of its F, B and W on its rank, -1 while unseen */
int pass_schedule_verify(const struct pass_schedule *s, FILE *err)
{
	int M = s->microbatches, S = s->stages;
	size_t n = (size_t)M * (size_t)S;
	int *pos = malloc(3 * n * sizeof *pos);
	if (!pos)
		abort();
	for (size_t i = 0; i < 3 * n; i++)
		pos[i] = -1;
	int bad = 0;
	for (int r = 0; r < s->ranks && !bad; r++)
		for (int i = 0; i < s->n_acts[r] && !bad; i++) {
			const struct pass_act *a = &s->acts[r][i];
			/* the parts this action runs: (part, mb, stage) */
			int parts[3][3], np = 0;
			switch (a->kind) {
			case PASS_ACT_F: parts[np][0] = 0, parts[np][1] = a->mb, parts[np++][2] = a->stage; break;
			case PASS_ACT_B: parts[np][0] = 1, parts[np][1] = a->mb, parts[np++][2] = a->stage; break;
			case PASS_ACT_W: parts[np][0] = 2, parts[np][1] = a->mb, parts[np++][2] = a->stage; break;
			case PASS_ACT_FB:
				parts[np][0] = 0, parts[np][1] = a->mb, parts[np++][2] = a->stage;
				parts[np][0] = 1, parts[np][1] = a->mb2, parts[np++][2] = a->stage2;
				parts[np][0] = 2, parts[np][1] = a->mb2, parts[np++][2] = a->stage2;
				break;
			case PASS_ACT_BW:
				parts[np][0] = 1, parts[np][1] = a->mb, parts[np++][2] = a->stage;
				parts[np][0] = 2, parts[np][1] = a->mb, parts[np++][2] = a->stage;
				break;
			default:
				fprintf(err, "rank %d action %d: %s is no schedule action\n", r, i,
					pass_act_name(a->kind));
				bad = 1;
			}
			for (int k = 0; k < np && !bad; k++) {
				int part = parts[k][0], m = parts[k][1], st = parts[k][2];
				static const char *const pn[] = { "forward", "input-grad", "weight-grad" };
				if (m < 0 || m >= M || st < 0 || st >= S) {
					fprintf(err, "rank %d action %d: micro-batch %d stage %d out of range\n",
						r, i, m, st);
					bad = 1;
				} else if (pass_schedule_rank(s, m, st) != r) {
					fprintf(err, "rank %d action %d: stage %d of micro-batch %d runs on "
						"rank %d\n", r, i, st, m, pass_schedule_rank(s, m, st));
					bad = 1;
				} else if (pos[(size_t)part * n + (size_t)m * (size_t)S + (size_t)st] >= 0) {
					fprintf(err, "rank %d action %d: the %s of micro-batch %d stage %d "
						"runs twice\n", r, i, pn[part], m, st);
					bad = 1;
				} else if (part > 0 &&
					   pos[(size_t)(part - 1) * n + (size_t)m * (size_t)S + (size_t)st] < 0) {
					fprintf(err, "rank %d action %d: the %s of micro-batch %d stage %d "
						"before its %s\n", r, i, pn[part], m, st, pn[part - 1]);
					bad = 1;
				} else {
					pos[(size_t)part * n + (size_t)m * (size_t)S + (size_t)st] = i;
				}
			}
		}
	for (size_t i = 0; i < 3 * n && !bad; i++)
		if (pos[i] < 0) {
			int part = (int)(i / n), m = (int)(i % n) / S, st = (int)(i % n) % S;
			fprintf(err, "rank %d never runs the %s of micro-batch %d stage %d\n",
				pass_schedule_rank(s, m, st), part == 0 ? "forward" :
				part == 1 ? "input-grad" : "weight-grad", m, st);
			bad = 1;
		}
	free(pos);
	return bad;
}
