/* numerics.h - helpers of the numerics tests: building small graphs, data by name, and
 * the finite-difference gradient check against the reference executor.
 *
 * The gradient check (gradcheck_graphs) in float64:
 *   central difference  fd = (L(p + h) - L(p - h)) / 2h,  h = 1e-6,
 * compared with the gradient autodiff computes, entry by entry:
 *   |fd - ad| <= 1e-7 + 1e-6 * max(|fd|, |ad|).
 * Why that bound: the truncation error of the central difference is h^2/6 |L'''|,
 * about 1e-12 for the O(1..100) third derivatives of these small losses; the rounding
 * error is about eps |L| / h = 2.2e-16 * |L| / 1e-6 = 2e-10 |L|, i.e. below 1e-8 for
 * the losses here (|L| < 50).  So a correct gradient is off by about 1e-8 at most,
 * a tenth of the bound, while a wrong rule (a missing factor, a wrong transpose, a
 * broadcast dim not summed) is off by O(|ad|), far above it.  The graphs are f32 (no
 * rounding in the reference executor), so L is computed in double throughout.
 * Piecewise ops (relu, reduce_max, topk and the routing built on it) are checked on
 * random data whose choices are separated by far more than h, so that a perturbation
 * never changes a choice; for topk (and all it decides: dispatch order, offsets) the
 * check makes sure of it, comparing every integer value of each perturbed run with
 * the unperturbed one. */
#ifndef SLUICE_TEST_NUMERICS_H
#define SLUICE_TEST_NUMERICS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "codegen/ref.h"
#include "ir/ir.h"
#include "passes/passes.h"

/* --- random numbers: xorshift64*, fixed seed ---------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static __attribute__((unused)) double rnd_uniform(void) /* [0, 1) */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

static __attribute__((unused)) double rnd_normal(void)
{
	double u = rnd_uniform(), v = rnd_uniform();
	return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* --- building graphs ------------------------------------------------------------------ */

#define VALS(...) ((struct ir_value *[]){ __VA_ARGS__ })
#define NVALS(...) ((int)(sizeof(VALS(__VA_ARGS__)) / sizeof(struct ir_value *)))
/* OP(g, KIND, dtype, shape, inputs...) */
#define OP(g, k, t, s, ...) ir_op1(g, IR_OP_##k, NVALS(__VA_ARGS__), VALS(__VA_ARGS__), t, s)
#define OP0(g, k, t, s) ir_op1(g, IR_OP_##k, 0, NULL, t, s)
#define DIMS(...) ((int64_t[]){ __VA_ARGS__ })
#define SH(...) ir_shape_make((int)(sizeof(DIMS(__VA_ARGS__)) / sizeof(int64_t)), DIMS(__VA_ARGS__))
#define SCALAR ir_shape_of(0)

static __attribute__((unused)) struct ir_value *t_param(struct ir_graph *g, const char *path, struct ir_shape s)
{
	struct ir_value *v = OP0(g, PARAM, IR_F32, s);
	v->def->path = ir_strdup(g->arena, path);
	ir_op_set_str(g, v->def, "init", "normal");
	ir_op_set_float(g, v->def, "std", 1.0);
	return v;
}

static __attribute__((unused)) struct ir_value *t_input(struct ir_graph *g, const char *name, enum ir_dtype t,
				struct ir_shape s)
{
	struct ir_value *v = OP0(g, INPUT, t, s);
	ir_op_set_str(g, v->def, "name", name);
	return v;
}

static __attribute__((unused)) struct ir_value *t_const(struct ir_graph *g, double c, enum ir_dtype t, struct ir_shape s)
{
	struct ir_value *v = OP0(g, CONST, t, s);
	ir_op_set_float(g, v->def, "value", c);
	return v;
}

static __attribute__((unused)) struct ir_value *t_attr_i(struct ir_graph *g, struct ir_value *v, const char *name,
				 int64_t x)
{
	ir_op_set_int(g, v->def, name, x);
	return v;
}

static __attribute__((unused)) struct ir_value *t_attr_f(struct ir_graph *g, struct ir_value *v, const char *name,
				 double x)
{
	ir_op_set_float(g, v->def, name, x);
	return v;
}

/* sum over all entries of y * R, R a random input of y's shape: a scalar loss whose
 * gradient with respect to y is R, so that every entry of y is checked. */
static __attribute__((unused)) struct ir_value *t_weighted_sum(struct ir_graph *g, struct ir_value *y)
{
	char name[32];
	snprintf(name, sizeof name, "R%d", y->id);
	struct ir_value *r = t_input(g, name, IR_F32, y->shape);
	struct ir_value *m = OP(g, MUL, IR_F32, y->shape, y, r);
	struct ir_value *f = OP(g, RESHAPE, IR_F32, SH(ir_shape_numel(&y->shape)), m);
	return t_attr_i(g, OP(g, REDUCE_SUM, IR_F32, SCALAR, f), "axis", 0);
}

/* --- data by name: INPUT name attr or PARAM path ------------------------------------------ */

#define TDATA_MAX 256
struct tdata {
	int n;
	char *name[TDATA_MAX];
	double *v[TDATA_MAX];
	int64_t len[TDATA_MAX];
};

static __attribute__((unused)) int tdata_find(const struct tdata *d, const char *name)
{
	for (int i = 0; i < d->n; i++)
		if (!strcmp(d->name[i], name))
			return i;
	return -1;
}

static __attribute__((unused)) double *tdata_get(const struct tdata *d, const char *name)
{
	int i = tdata_find(d, name);
	return i < 0 ? NULL : d->v[i];
}

static __attribute__((unused)) double *tdata_set(struct tdata *d, const char *name, int64_t len, const double *v)
{
	int i = tdata_find(d, name);
	if (i < 0) {
		REQUIRE(d->n < TDATA_MAX);
		i = d->n++;
		d->name[i] = strdup(name);
	} else {
		free(d->v[i]);
	}
	d->len[i] = len;
	d->v[i] = malloc(sizeof(double) * (size_t)(len ? len : 1));
	REQUIRE(d->v[i]);
	if (v)
		memcpy(d->v[i], v, sizeof(double) * (size_t)len);
	return d->v[i];
}

static __attribute__((unused)) void tdata_free(struct tdata *d)
{
	for (int i = 0; i < d->n; i++) {
		free(d->name[i]);
		free(d->v[i]);
	}
	d->n = 0;
}

static __attribute__((unused)) const char *source_name(const struct ir_op *op)
{
	if (op->kind == IR_OP_INPUT)
		return ir_op_str(op, "name", NULL);
	if (op->kind == IR_OP_PARAM)
		return op->path;
	return NULL;
}

/* Data for every source of g not given yet: normal(0, scale) for floats; integer inputs
 * must be given. */
static __attribute__((unused)) void tdata_fill(struct tdata *d, const struct ir_graph *g, double scale)
{
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		const char *name = source_name(op);
		if (!name || tdata_find(d, name) >= 0)
			continue;
		const struct ir_value *v = op->out[0];
		if (!ir_dtype_is_float(v->dtype)) {
			fprintf(stderr, "no data for integer input '%s'\n", name);
			exit(1);
		}
		int64_t n = ir_shape_numel(&v->shape);
		double *p = tdata_set(d, name, n, NULL);
		for (int64_t k = 0; k < n; k++)
			p[k] = scale * rnd_normal();
	}
}

static __attribute__((unused)) void tdata_bind(const struct tdata *d, const struct ir_graph *g, struct ref_exec *e)
{
	for (int i = 0; i < g->n_ops; i++) {
		const char *name = source_name(g->ops[i]);
		if (!name)
			continue;
		int k = tdata_find(d, name);
		REQUIRE(k >= 0);
		REQUIRE(d->len[k] == ir_shape_numel(&g->ops[i]->out[0]->shape));
		ref_bind(e, g->ops[i]->out[0]->id, d->v[k]);
	}
}

static __attribute__((unused)) int param_value_id(const struct ir_graph *g, const char *path)
{
	for (int i = 0; i < g->n_ops; i++)
		if (g->ops[i]->kind == IR_OP_PARAM && g->ops[i]->path &&
		    !strcmp(g->ops[i]->path, path))
			return g->ops[i]->out[0]->id;
	return -1;
}

/* --- phases: every backward op is B or W, and no B op reads a W result ---------------- */

static __attribute__((unused)) void check_phases(const struct ir_graph *g, int n_fwd, const char *what)
{
	for (int i = n_fwd; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		CHECKF(op->phase == IR_PHASE_BWD_B || op->phase == IR_PHASE_BWD_W,
		       "%s: backward op %d (%s) in phase %s", what, op->id, ir_op_name(op->kind),
		       ir_phase_name(op->phase));
		if (op->phase != IR_PHASE_BWD_B)
			continue;
		for (int j = 0; j < op->n_in; j++)
			CHECKF(op->in[j]->def->phase != IR_PHASE_BWD_W,
			       "%s: B op %d (%s) reads the result of W op %d (%s)", what, op->id,
			       ir_op_name(op->kind), op->in[j]->def->id,
			       ir_op_name(op->in[j]->def->kind));
	}
}

/* --- the gradient check ------------------------------------------------------------------- */

/* The discrete choices of a run (every integer value an op computes: topk's picks,
 * dispatch's order): a perturbation of h must leave them as they were, or the finite
 * difference would straddle a kink. */
struct choices {
	int n;
	int ids[TDATA_MAX];
	int64_t *v[TDATA_MAX];
};

static __attribute__((unused)) void choices_take(struct choices *c, const struct ir_graph *g,
						 struct ref_exec *e)
{
	c->n = 0;
	for (int i = 0; i < g->n_ops; i++) {
		const struct ir_op *op = g->ops[i];
		if (op->kind == IR_OP_INPUT)
			continue;
		for (int j = 0; j < op->n_out && c->n < TDATA_MAX; j++) {
			const struct ir_value *v = op->out[j];
			if (ir_dtype_is_float(v->dtype))
				continue;
			size_t bytes = sizeof(int64_t) * (size_t)ir_shape_numel(&v->shape);
			c->ids[c->n] = v->id;
			c->v[c->n] = malloc(bytes ? bytes : 1);
			REQUIRE(c->v[c->n]);
			memcpy(c->v[c->n], ref_value_int(e, v->id), bytes);
			c->n++;
		}
	}
}

static __attribute__((unused)) int choices_same(const struct choices *c, const struct ir_graph *g,
						struct ref_exec *e)
{
	for (int k = 0; k < c->n; k++) {
		size_t bytes = sizeof(int64_t) * (size_t)ir_shape_numel(&g->values[c->ids[k]]->shape);
		if (memcmp(c->v[k], ref_value_int(e, c->ids[k]), bytes))
			return 0;
	}
	return 1;
}

static __attribute__((unused)) void choices_free(struct choices *c)
{
	for (int k = 0; k < c->n; k++)
		free(c->v[k]);
	c->n = 0;
}

#define GC_H 1e-6
#define GC_ATOL 1e-7
#define GC_RTOL 1e-6

static __attribute__((unused)) double run_loss(struct ref_exec *e, const struct ir_graph *g)
{
	REQUIRE(ref_run(e, stderr) == 0);
	return ref_value(e, ir_graph_output(g, "loss")->id)[0];
}

/* gf and gb: two copies of one forward graph with an output "loss".  gb is
 * differentiated; the loss of gf is differentiated numerically.  Checks up to
 * max_per_param entries of every trainable parameter (all when it has fewer).
 * Returns the number of entries checked. */
static __attribute__((unused)) int gradcheck_graphs(const char *what, struct ir_graph *gf, struct ir_graph *gb,
			    struct tdata *d, double scale, int max_per_param)
{
	REQUIRE(ir_graph_output(gf, "loss"));
	CHECKF(ir_verify(gf, stderr) == 0, "%s: forward graph does not verify", what);
	int n_fwd = gb->n_ops;
	if (pass_autodiff(gb, stderr)) {
		CHECKF(0, "%s: autodiff failed", what);
		return 0;
	}
	CHECKF(ir_verify(gb, stderr) == 0, "%s: differentiated graph does not verify", what);
	check_phases(gb, n_fwd, what);
	tdata_fill(d, gf, scale);

	struct ref_exec *ef = ref_new(gf), *eb = ref_new(gb);
	tdata_bind(d, gf, ef);
	tdata_bind(d, gb, eb);
	if (ref_run(eb, stderr)) {
		CHECKF(0, "%s: running the differentiated graph failed", what);
		ref_free(ef);
		ref_free(eb);
		return 0;
	}
	double l0 = run_loss(ef, gf);
	struct choices ch;
	choices_take(&ch, gf, ef);
	double lb = ref_value(eb, ir_graph_output(gb, "loss")->id)[0];
	CHECKF(l0 == lb, "%s: loss %.17g of the forward graph, %.17g after autodiff", what, l0, lb);

	int checked = 0, n_grads = 0, significant = 0;
	double worst = 0;
	for (int o = 0; o < gb->n_outputs; o++) {
		const char *oname = gb->output_names[o];
		if (strncmp(oname, "grad.", 5))
			continue;
		n_grads++;
		const char *path = oname + 5;
		int pid = param_value_id(gf, path);
		double *p = tdata_get(d, path);
		REQUIRE(pid >= 0 && p);
		const struct ir_value *gv = gb->outputs[o];
		REQUIRE(ir_shape_eq(&gv->shape, &gf->values[pid]->shape));
		const double *ad = ref_value(eb, gv->id);
		REQUIRE(ad);
		int64_t n = ir_shape_numel(&gv->shape);
		int m = n <= max_per_param ? (int)n : max_per_param;
		for (int t = 0; t < m; t++) {
			int64_t i = n <= max_per_param ? t : (int64_t)(rnd_uniform() * (double)n);
			double orig = p[i];
			p[i] = orig + GC_H;
			ref_bind(ef, pid, p);
			double lp = run_loss(ef, gf);
			int same = choices_same(&ch, gf, ef);
			p[i] = orig - GC_H;
			ref_bind(ef, pid, p);
			double lm = run_loss(ef, gf);
			same &= choices_same(&ch, gf, ef);
			CHECKF(same, "%s: perturbing %s[%lld] by %g changes a discrete choice (topk): "
			       "pick other data", what, path, (long long)i, GC_H);
			p[i] = orig;
			ref_bind(ef, pid, p);
			double fd = (lp - lm) / (2 * GC_H), err = fabs(fd - ad[i]);
			double tol = GC_ATOL + GC_RTOL * fmax(fabs(fd), fabs(ad[i]));
			CHECKF(err <= tol, "%s: d loss / d %s[%lld]: autodiff %.10g, finite "
			       "difference %.10g (error %.3g > %.3g)", what, path, (long long)i,
			       ad[i], fd, err, tol);
			worst = fmax(worst, err / tol);
			significant += fabs(ad[i]) > 100 * tol;
			checked++;
		}
	}
	/* every trainable parameter has its gradient output */
	int n_trainable = 0;
	for (int i = 0; i < gf->n_ops; i++)
		n_trainable += gf->ops[i]->kind == IR_OP_PARAM &&
			       ir_op_int(gf->ops[i], "trainable", 1) != 0;
	CHECKF(n_grads == n_trainable, "%s: %d grad outputs for %d trainable parameters", what,
	       n_grads, n_trainable);
	/* significant: entries whose gradient is over 100 times the bound, i.e. where a
	 * wrong rule could not hide inside the tolerance */
	printf("%-28s %4d entries checked (%d significant), loss %.6f, worst error %.2f of "
	       "the bound\n", what, checked, significant, l0, worst);
	choices_free(&ch);
	ref_free(ef);
	ref_free(eb);
	return checked;
}

/* Build the forward graph twice with build() and check it. */
static __attribute__((unused)) int gradcheck(const char *what, void (*build)(struct ir_graph *g), struct tdata *d,
		     int max_per_param)
{
	struct ir_graph *gf = ir_graph_new(what), *gb = ir_graph_new(what);
	build(gf);
	build(gb);
	int n = gradcheck_graphs(what, gf, gb, d, 1.0, max_per_param);
	ir_graph_free(gf);
	ir_graph_free(gb);
	tdata_free(d);
	return n;
}

#endif
