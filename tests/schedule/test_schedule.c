/* test_schedule.c - the schedules' action lists and DESIGN.md's bubble and memory table.
 *
 * Conventions the table's formulas hold under (passes/simulate.c): the step runs from 0
 * to the last end over every rank; a rank's bubble is the step less its compute time; a
 * micro-batch stage is in flight from its forward to its input-grad.  Costs F = 1, B = 2
 * (the full backward), W = 1 (its weight part; input-grad B - W = 1), FB = F + B, then
 * FB = 2.5 (an overlap that gains).  With those:
 *  - 1F1B (P-1)(F+B) and ZB1P (P-1)(F+B-2W) on every rank, peak P on rank 0;
 *  - DualPipe (P/2-1)(F&B+B-3W) on every rank when F&B = F+B; when the pair gains, the
 *    formula is the largest bubble, that of the middle ranks P/2-1 and P/2 (the outer
 *    ranks run more pairs, so are busy less: they idle less too); peak P+1 on every rank;
 *  - DualPipeV on R ranks (2R stages, DESIGN.md's "P stages on P/2 ranks": P = 2R) the
 *    same with P/2 = R, its largest bubble on the last rank; peak 2R+1, parameters 1x. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "passes/passes.h"

static struct pass_sim run(const char *name, int P, int M, double fb, double transfer,
			   struct pass_schedule *s)
{
	REQUIRE(pass_schedule_build(name, P, M, s, stderr) == 0);
	CHECKF(pass_schedule_verify(s, stderr) == 0, "%s P=%d M=%d", name, P, M);
	double *f = malloc((size_t)s->stages * 3 * sizeof *f);
	REQUIRE(f);
	for (int i = 0; i < s->stages; i++)
		f[i] = 1, f[s->stages + i] = 2, f[2 * s->stages + i] = 1;
	struct pass_sched_costs c = { f, f + s->stages, f + 2 * s->stages, fb, transfer };
	struct pass_sim sim;
	REQUIRE(pass_schedule_simulate(s, &c, &sim, stderr) == 0);
	free(f);
	return sim;
}

static int close_to(double a, double b)
{
	return fabs(a - b) < 1e-9;
}

/* the table, P in {4, 8, 16} */
static void table(void)
{
	for (int P = 4; P <= 16; P *= 2)
		for (int mult = 2; mult <= 4; mult++) {
			int M = mult * P;
			struct pass_schedule s;
			struct pass_sim sim = run("1f1b", P, M, 0, 0, &s);
			for (int r = 0; r < P; r++)
				CHECKF(close_to(sim.ranks[r].bubble, (P - 1) * 3.0), "1f1b P=%d r=%d %g",
				       P, r, sim.ranks[r].bubble);
			CHECK(sim.ranks[0].peak_acts == P && close_to(sim.ranks[0].params, 1));
			CHECK(close_to(sim.step, (M + P - 1) * 3.0));
			pass_sim_free(&sim);
			pass_schedule_free(&s);

			sim = run("zb1p", P, M, 0, 0, &s);
			for (int r = 0; r < P; r++)
				CHECKF(close_to(sim.ranks[r].bubble, (P - 1) * (3.0 - 2)), "zb1p P=%d r=%d %g",
				       P, r, sim.ranks[r].bubble);
			CHECK(sim.ranks[0].peak_acts == P && close_to(sim.ranks[0].params, 1));
			pass_sim_free(&sim);
			pass_schedule_free(&s);

			for (int k = 0; k < 2; k++) {
				double fb = k ? 2.5 : 3;
				double want = (P / 2 - 1) * (fb + 2 - 3);
				sim = run("dualpipe", P, 2 * M, fb, 0, &s);
				double most = 0;
				for (int r = 0; r < P; r++) {
					most = fmax(most, sim.ranks[r].bubble);
					CHECKF(sim.ranks[r].peak_acts == P + 1, "dualpipe P=%d r=%d peak %d",
					       P, r, sim.ranks[r].peak_acts);
					CHECK(close_to(sim.ranks[r].params, 2));
					if (!k)
						CHECKF(close_to(sim.ranks[r].bubble, want), "dualpipe P=%d r=%d %g",
						       P, r, sim.ranks[r].bubble);
				}
				CHECKF(close_to(most, want) && close_to(sim.ranks[P / 2].bubble, want),
				       "dualpipe P=%d fb=%g: %g, want %g", P, fb, most, want);
				pass_sim_free(&sim);
				pass_schedule_free(&s);

				int R = P / 2;
				sim = run("dualpipev", R, 2 * M, fb, 0, &s);
				most = 0;
				for (int r = 0; r < R; r++) {
					most = fmax(most, sim.ranks[r].bubble);
					CHECKF(sim.ranks[r].peak_acts == P + 1, "dualpipev R=%d r=%d peak %d",
					       R, r, sim.ranks[r].peak_acts);
					CHECK(close_to(sim.ranks[r].params, 1));
				}
				CHECKF(close_to(most, want) && close_to(sim.ranks[R - 1].bubble, want),
				       "dualpipev R=%d fb=%g: %g, want %g", R, fb, most, want);
				pass_sim_free(&sim);
				pass_schedule_free(&s);
			}
		}
}

/* every list complete and in order over many shapes, and simulable with a transfer cost */
static void lists(void)
{
	const char *names[] = { "1f1b", "zb1p", "dualpipe", "dualpipev" };
	for (int k = 0; k < 4; k++)
		for (int P = 1; P <= 10; P++)
			for (int M = 1; M <= 3 * P + 3; M++) {
				struct pass_schedule s;
				FILE *null = fopen("/dev/null", "w");
				int bad = pass_schedule_build(names[k], P, M, &s, null);
				fclose(null);
				int want_bad = (k == 2 && (P % 2 || M < 2 * P || M % 2)) ||
					       (k == 3 && M < 2 * P);
				CHECKF(bad == want_bad, "%s P=%d M=%d: %d", names[k], P, M, bad);
				if (bad)
					continue;
				CHECKF(pass_schedule_verify(&s, stderr) == 0, "%s P=%d M=%d", names[k], P, M);
				pass_schedule_free(&s);
				struct pass_sim sim = run(names[k], P, M, 0, 0.25, &s);
				/* every event's dependencies ended before it started: F after F of the
				 * stage before (and its send), B after its F */
				for (int e = 0; e < sim.n_events; e++)
					CHECK(sim.events[e].start >= 0 && sim.events[e].end >= sim.events[e].start &&
					      sim.events[e].end <= sim.step + 1e-9);
				pass_sim_free(&sim);
				pass_schedule_free(&s);
			}
}

/* a list that waits on itself is reported, not run */
static void cycle(void)
{
	struct pass_schedule s;
	REQUIRE(pass_schedule_build("1f1b", 2, 2, &s, stderr) == 0);
	/* rank 1: swap its first two actions (F0 and BW0: the backward before its forward) */
	struct pass_act t = s.acts[1][0];
	s.acts[1][0] = s.acts[1][1];
	s.acts[1][1] = t;
	FILE *null = fopen("/dev/null", "w");
	REQUIRE(null);
	CHECK(pass_schedule_verify(&s, null) != 0);
	fclose(null);
	double f[2] = { 1, 1 }, b[2] = { 2, 2 }, w[2] = { 1, 1 };
	struct pass_sched_costs c = { f, b, w, 0, 0 };
	struct pass_sim sim;
	char buf[4096] = { 0 };
	FILE *m = fmemopen(buf, sizeof buf - 1, "w");
	CHECK(pass_schedule_simulate(&s, &c, &sim, m) != 0);
	fclose(m);
	CHECKF(strstr(buf, "cannot proceed") && strstr(buf, "rank 1"), "%s", buf);
	pass_schedule_free(&s);
}

int main(void)
{
	table();
	lists();
	cycle();
	return CHECK_DONE();
}
