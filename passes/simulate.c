/*
 * simulate.c - a schedule's step, simulated from per-stage costs.
 *
 * Takes a schedule (schedule.c) and costs; gives every action's start and end on its
 * rank's compute stream, every send between ranks on the sender's communication stream,
 * and per rank its busy time, bubble, peak activations in flight and parameters held.
 * Leaves alone what the costs do not say: the communication inside a chunk (an
 * overlapped pair hides it, which is what its cost fb is for), memory beyond counting
 * micro-batches, and the optimizer step after the last action.
 *
 * Conventions, chosen so that the bubble formulas of DESIGN.md's table hold:
 *  - the step runs from 0, when every rank starts, to the last end over every rank: a
 *    step is over when all ranks are; a rank's bubble is the step less its busy time,
 *    its idle compute time at the start, between its actions and at the end alike;
 *  - a backward sends its input gradient when its input-grad part ends: B at its end,
 *    BW and FB (which run W inside) at theirs; a forward when it ends;
 *  - an activation is in flight from its forward's start to its input-grad's end: W
 *    reads the layer inputs and output gradients too, but DESIGN.md's table (and the
 *    papers) count micro-batches, and a deferred W's are the smaller set.
 *
 * Deadlock-free by construction: an action starts only after the actions it needs have
 * ended, and the loop stops when no rank can move: a cycle of waits is reported with
 * each rank's blocked action.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

struct sim {
	const struct pass_schedule *s;
	const struct pass_sched_costs *c;
	/* per (mb, stage), -1 while unknown: f_end, b_end its own rank's end of the forward
	 * and of the input-grad; f_at, b_at when the output is at the next rank */
	double *f_end, *b_end, *f_at, *b_at;
	double *comm_free;
	struct pass_sim_event **sends;
	int *n_sends;
};

static size_t key(const struct sim *m, int mb, int stage)
{
	return (size_t)mb * (size_t)m->s->stages + (size_t)stage;
}

/* when the inputs of (mb, stage)'s forward / backward are on its rank; -1: not yet */
static double forward_ready(const struct sim *m, int mb, int stage)
{
	return stage == 0 ? 0 : m->f_at[key(m, mb, stage - 1)];
}

static double backward_ready(const struct sim *m, int mb, int stage)
{
	double own = m->f_end[key(m, mb, stage)];
	if (own < 0)
		return -1;
	if (stage == m->s->stages - 1)
		return own;
	return m->b_at[key(m, mb, stage + 1)];
}

/* the output of (mb, stage), ready at t on rank r, towards stage `to` */
static double send(struct sim *m, int r, enum pass_act_kind k, int mb, int stage, int to,
		   double t)
{
	int peer = pass_schedule_rank(m->s, mb, to);
	if (peer == r)
		return t;
	double start = t > m->comm_free[r] ? t : m->comm_free[r];
	double end = start + m->c->transfer;
	m->comm_free[r] = end;
	m->sends[r][m->n_sends[r]++] = (struct pass_sim_event){
		{ k, mb, stage, -1, -1 }, r, 1, start, end };
	return end;
}

static void forward_done(struct sim *m, int r, int mb, int stage, double t)
{
	m->f_end[key(m, mb, stage)] = t;
	if (stage + 1 < m->s->stages)
		m->f_at[key(m, mb, stage)] = send(m, r, PASS_ACT_SEND_F, mb, stage, stage + 1, t);
}

static void backward_done(struct sim *m, int r, int mb, int stage, double t)
{
	m->b_end[key(m, mb, stage)] = t;
	if (stage > 0)
		m->b_at[key(m, mb, stage)] = send(m, r, PASS_ACT_SEND_B, mb, stage, stage - 1, t);
}

static double max2(double a, double b)
{
	return a > b ? a : b;
}

int pass_schedule_simulate(const struct pass_schedule *s, const struct pass_sched_costs *c,
			   struct pass_sim *out, FILE *err)
{
	memset(out, 0, sizeof *out);
	int P = s->ranks;
	size_t n = (size_t)s->microbatches * (size_t)s->stages;
	struct sim m = { .s = s, .c = c };
	m.f_end = malloc(4 * n * sizeof *m.f_end);
	m.comm_free = calloc((size_t)P, sizeof *m.comm_free);
	m.sends = calloc((size_t)P, sizeof *m.sends);
	m.n_sends = calloc((size_t)P, sizeof *m.n_sends);
	double *t = calloc((size_t)P, sizeof *t);
	int *next = calloc((size_t)P, sizeof *next), *live = calloc((size_t)P, sizeof *live);
	struct pass_sim_event **ev = calloc((size_t)P, sizeof *ev);
	out->ranks = calloc((size_t)P, sizeof *out->ranks);
	if (!m.f_end || !m.comm_free || !m.sends || !m.n_sends || !t || !next || !live || !ev ||
	    !out->ranks)
		abort();
	m.b_end = m.f_end + n;
	m.f_at = m.b_end + n;
	m.b_at = m.f_at + n;
	for (size_t i = 0; i < 4 * n; i++)
		m.f_end[i] = -1;
	for (int r = 0; r < P; r++) {
		/* at most two sends per action part */
		m.sends[r] = malloc((size_t)(2 * s->n_acts[r] + 1) * sizeof **m.sends);
		ev[r] = malloc((size_t)(s->n_acts[r] + 1) * sizeof **ev);
		if (!m.sends[r] || !ev[r])
			abort();
	}

	for (int moved = 1; moved;) {
		moved = 0;
		for (int r = 0; r < P; r++)
			for (; next[r] < s->n_acts[r]; next[r]++) {
				const struct pass_act *a = &s->acts[r][next[r]];
				double ready, cost;
				switch (a->kind) {
				case PASS_ACT_F:
					ready = forward_ready(&m, a->mb, a->stage);
					cost = c->f[a->stage];
					break;
				case PASS_ACT_B:
					ready = backward_ready(&m, a->mb, a->stage);
					cost = c->b[a->stage] - c->w[a->stage];
					break;
				case PASS_ACT_BW:
					ready = backward_ready(&m, a->mb, a->stage);
					cost = c->b[a->stage];
					break;
				case PASS_ACT_W:
					ready = m.b_end[key(&m, a->mb, a->stage)];
					cost = c->w[a->stage];
					break;
				case PASS_ACT_FB: {
					double rf = forward_ready(&m, a->mb, a->stage);
					double rb = backward_ready(&m, a->mb2, a->stage2);
					ready = rf < 0 || rb < 0 ? -1 : max2(rf, rb);
					cost = c->fb > 0 ? c->fb : c->f[a->stage] + c->b[a->stage2];
					break;
				}
				default:
					ready = -1, cost = 0;
				}
				if (ready < 0)
					break;
				double start = max2(t[r], ready), end = start + cost;
				t[r] = end;
				ev[r][next[r]] = (struct pass_sim_event){ *a, r, 0, start, end };
				struct pass_sim_rank *pr = &out->ranks[r];
				pr->busy += cost;
				if (a->kind == PASS_ACT_F || a->kind == PASS_ACT_FB) {
					if (++live[r] > pr->peak_acts)
						pr->peak_acts = live[r];
					forward_done(&m, r, a->mb, a->stage, end);
				}
				if (a->kind == PASS_ACT_B || a->kind == PASS_ACT_BW) {
					live[r]--;
					backward_done(&m, r, a->mb, a->stage, end);
				}
				if (a->kind == PASS_ACT_FB) {
					live[r]--;
					backward_done(&m, r, a->mb2, a->stage2, end);
				}
				moved = 1;
			}
	}

	int stuck = 0;
	for (int r = 0; r < P; r++)
		if (next[r] < s->n_acts[r]) {
			const struct pass_act *a = &s->acts[r][next[r]];
			if (!stuck++)
				fprintf(err, "error: the schedule cannot proceed: the ranks wait on each "
					"other\n");
			fprintf(err, "  rank %d, action %d: %s micro-batch %d stage %d", r, next[r],
				pass_act_name(a->kind), a->mb, a->stage);
			if (a->kind == PASS_ACT_FB)
				fprintf(err, " + backward micro-batch %d stage %d", a->mb2, a->stage2);
			fputc('\n', err);
		}

	if (!stuck) {
		int total = 0;
		for (int r = 0; r < P; r++)
			total += s->n_acts[r] + m.n_sends[r];
		out->events = malloc((size_t)(total + 1) * sizeof *out->events);
		if (!out->events)
			abort();
		for (int r = 0; r < P; r++) {
			struct pass_sim_rank *pr = &out->ranks[r];
			memcpy(out->events + out->n_events, ev[r],
			       (size_t)s->n_acts[r] * sizeof *ev[r]);
			out->n_events += s->n_acts[r];
			memcpy(out->events + out->n_events, m.sends[r],
			       (size_t)m.n_sends[r] * sizeof *m.sends[r]);
			out->n_events += m.n_sends[r];
			pr->end = max2(t[r], m.comm_free[r]);
			out->step = max2(out->step, pr->end);
			/* parameters: the stages a rank holds, each model / stages */
			int held = 0;
			for (int st = 0; st < s->stages; st++)
				for (int mb = 0; mb < s->microbatches; mb++)
					if (pass_schedule_rank(s, mb, st) == r) {
						held++;
						break;
					}
			pr->params = (double)held * P / s->stages;
		}
		for (int r = 0; r < P; r++)
			out->ranks[r].bubble = out->step - out->ranks[r].busy;
	} else {
		free(out->ranks);
		out->ranks = NULL;
	}
	for (int r = 0; r < P; r++) {
		free(m.sends[r]);
		free(ev[r]);
	}
	free(m.f_end);
	free(m.comm_free);
	free(m.sends);
	free(m.n_sends);
	free(t);
	free(next);
	free(live);
	free(ev);
	return stuck != 0;
}

void pass_sim_free(struct pass_sim *sim)
{
	free(sim->ranks);
	free(sim->events);
	memset(sim, 0, sizeof *sim);
}
