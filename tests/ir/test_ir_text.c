/* test_ir_text.c - the textual IR: the golden print of the op-level sample graph, the
 * exact round trip (print, parse, print), attribute values that are hard to print
 * exactly, ids with gaps, parse errors with their line and column, and a few thousand
 * mutations of the sample text, none of which may crash the parser. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "golden.h"
#include "irtest.h"

static struct ir_graph *parse_str(const char *text, char **errs)
{
	struct sink s;
	struct ir_graph *g = ir_parse(text, strlen(text), "t.ir", sink_open(&s));
	char *e = sink_take(&s);
	if (errs)
		*errs = e;
	else
		free(e);
	return g;
}

/* print -> parse -> print is identical, and the parsed graph verifies as the original */
static void check_round_trip(const struct ir_graph *g, const char *what)
{
	char *a = ir_print_str(g), *errs;
	struct ir_graph *h = parse_str(a, &errs);
	CHECKF(h, "%s: the printed IR does not parse:\n%s", what, errs);
	if (h) {
		char *b = ir_print_str(h);
		CHECKF(!strcmp(a, b), "%s: print/parse/print differs:\n--- first\n%s--- second\n%s",
		       what, a, b);
		CHECK(ir_verify(h, NULL) == ir_verify(g, NULL));
		CHECK(h->n_ops == g->n_ops && h->n_values == g->n_values);
		free(b);
		ir_graph_free(h);
	}
	free(errs);
	free(a);
}

static void test_sample_golden(void)
{
	struct ir_graph *g = sample_graph();
	char *text = ir_print_str(g);
	CHECK(golden_compare("tests/ir/golden/sample.ir", text));
	check_round_trip(g, "sample");
	/* the parsed graph keeps what the printer shows */
	struct ir_graph *h = parse_str(text, NULL);
	REQUIRE(h);
	CHECK(!strcmp(h->model, "sample"));
	CHECK(ir_graph_setting_num(h, "lr", 0) == 3e-4);
	CHECK(ir_graph_setting_num(h, "clip", 0) == 1.0 / 3.0);
	CHECK(!strcmp(ir_graph_setting(h, "optimizer")->str, "adamw"));
	struct ir_value *loss = ir_graph_output(h, "loss");
	REQUIRE(loss);
	CHECK(loss->def->kind == IR_OP_ADD);
	for (int i = 0; i < g->n_ops; i++) {
		struct ir_op *a = g->ops[i], *b = h->ops[i];
		CHECK(a->kind == b->kind && a->phase == b->phase && a->stage == b->stage);
		CHECK(!strcmp(a->scope, b->scope) && a->loc.line == b->loc.line &&
		      a->loc.col == b->loc.col && !strcmp(a->loc.file, b->loc.file));
		CHECK((!a->path && !b->path) || (a->path && b->path && !strcmp(a->path, b->path)));
		CHECK(a->n_attr == b->n_attr);
		for (int k = 0; k < a->n_out; k++)
			CHECK(a->out[k]->id == b->out[k]->id && a->out[k]->dtype == b->out[k]->dtype &&
			      ir_shape_eq(&a->out[k]->shape, &b->out[k]->shape));
	}
	CHECK(ir_op_float(h->ops[2], "std", 0) == 0.02);
	free(text);
	ir_graph_free(h);
	ir_graph_free(g);
}

static void test_ep_golden(void)
{
	struct ir_graph *g = ep_sample_graph();
	char *text = ir_print_str(g);
	CHECK(golden_compare("tests/ir/golden/ep_sample.ir", text));
	check_round_trip(g, "ep_sample");
	free(text);
	ir_graph_free(g);
}

static void test_hard_values(void)
{
	struct ir_graph *g = ir_graph_new("odd model name");
	ir_graph_set(g, "big", 1e300, NULL);
	ir_graph_set(g, "tiny", 5e-324, NULL);
	ir_graph_set(g, "neg", -0.0, NULL);
	ir_graph_set(g, "third", 1.0 / 3.0, NULL);
	ir_graph_set(g, "huge.int", 123456789012345678.0, NULL);
	ir_graph_set(g, "quote", 0, "a \"q\" \\ \n\t\x01 \xc3\xa9");
	ir_graph_set(g, "empty", 0, "");
	ir_graph_set_context(g, (struct ir_loc){ "dir with space/m 1.sl", 12, 9 }, "weird scope");
	struct ir_value *c = OP0(g, IR_OP_CONST, IR_F32, S(2, 0, 3));
	double vals[] = { 1.0, -0.0, 0.1, 1e-7, 1e21, 6.02214076e23, INFINITY, -INFINITY, NAN,
			  2.2250738585072014e-308, 4.9406564584124654e-324, 1.7976931348623157e308 };
	char name[16];
	for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
		snprintf(name, sizeof name, "f%zu", i);
		ir_op_set_float(g, c->def, name, vals[i]);
	}
	ir_op_set_float(g, c->def, "value", 2);
	ir_op_set_int(g, c->def, "imin", INT64_MIN);
	ir_op_set_int(g, c->def, "imax", INT64_MAX);
	ir_op_set_ints(g, c->def, "none", 0, NULL);
	ir_op_set_ints(g, c->def, "some", 3, (const int64_t[]){ -1, 0, INT64_MAX });
	ir_op_set_str(g, c->def, "s", "");
	c->name = "needs quoting!";
	ir_graph_set_context(g, (struct ir_loc){ "7.sl", 1, 1 }, "");
	struct ir_value *d = OP(g, IR_OP_NEG, IR_F32, S(2, 0, 3), c);
	d->def->stage = 3;
	d->def->phase = IR_PHASE_OPT;
	d->def->path = "a path";
	ir_graph_set_context(g, (struct ir_loc){ NULL, 5, 2 }, "");
	struct ir_value *e = OP(g, IR_OP_NEG, IR_F32, S(2, 0, 3), d);
	ir_graph_set_context(g, (struct ir_loc){ NULL, 0, 0 }, "");
	struct ir_value *f = OP(g, IR_OP_NEG, IR_F32, S(2, 0, 3), e);
	ir_graph_add_output(g, "out put", f);
	check_round_trip(g, "hard values");

	ir_graph_free(g);
}

static void test_float_values_exact(void)
{
	double vals[] = { 0.1, 1.0 / 3.0, 3e-4, -2.5e-10, 5e-324, 1.7976931348623157e308, 100.0 };
	for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
		struct ir_graph *g = ir_graph_new("f");
		struct ir_value *c = OP0(g, IR_OP_CONST, IR_F32, S(0));
		ir_op_set_float(g, c->def, "value", vals[i]);
		char *t = ir_print_str(g);
		struct ir_graph *h = parse_str(t, NULL);
		REQUIRE(h);
		const struct ir_attr *a = ir_op_attr(h->ops[0], "value");
		CHECKF(a && a->kind == IR_ATTR_FLOAT && a->f == vals[i], "%.17g in %s", vals[i], t);
		free(t);
		ir_graph_free(h);
		ir_graph_free(g);
	}
	/* the shortest exact form is the one printed */
	struct ir_graph *g = ir_graph_new("f");
	struct ir_value *c = OP0(g, IR_OP_CONST, IR_F32, S(0));
	ir_op_set_float(g, c->def, "value", 0.1);
	ir_op_set_float(g, c->def, "one", 1);
	char *t = ir_print_str(g);
	CHECKF(strstr(t, "{value = 0.1, one = 1.0}"), "%s", t);
	free(t);
	ir_graph_free(g);
}

static void test_sparse_ids(void)
{
	struct ir_graph *g = ir_graph_new("sparse");
	struct ir_value *a = OP0(g, IR_OP_INPUT, IR_F32, S(1, 4));
	ir_op_set_str(g, a->def, "name", "a");
	struct ir_value *b = OP(g, IR_OP_EXP, IR_F32, S(1, 4), a);
	struct ir_value *c = OP(g, IR_OP_NEG, IR_F32, S(1, 4), a);
	(void)b;
	g->ops[1] = g->ops[2]; /* drop the exp: ids 0 and 2 remain */
	g->n_ops = 2;
	ir_graph_add_output(g, "y", c);
	CHECK(ir_verify(g, stderr) == 0);
	check_round_trip(g, "sparse ids");
	char *t = ir_print_str(g);
	struct ir_graph *h = parse_str(t, NULL);
	REQUIRE(h);
	CHECK(h->n_values == 3 && h->values[2] == ir_graph_output(h, "y") && !h->values[1]->def);
	CHECK(ir_verify(h, stderr) == 0);
	free(t);
	ir_graph_free(h);
	ir_graph_free(g);
}

/* --- errors ---------------------------------------------------------------------- */

static const struct {
	const char *text;
	const char *want; /* prefix "t.ir:LINE:COL: error: " + substring */
} bad[] = {
	{ "%0 = inptu : f32[4]\n", "t.ir:1:6: error: unknown op 'inptu'" },
	{ "model m\n%0 = input {name = \"a\"} : f32[4\n", "t.ir:2:32: error: expected ',' or ']' in the shape, found end of line" },
	{ "%0 = neg %1 : f32[4]\n", "t.ir:1:10: error: value %1 is used before it is defined" },
	{ "%0 = input {name = \"a\"} : f32[4]\n%0 = neg %0 : f32[4]\n",
	  "t.ir:2:1: error: value %0 is defined twice" },
	{ "%0 = input {name = \"a\"} : q32[4]\n", "t.ir:1:27: error: unknown dtype 'q32'" },
	{ "%0 = input {name = \"a\"} : f32[-4]\n", "t.ir:1:31: error: negative dimension -4" },
	{ "%0 = input {name = \"a\"} : f32[1,1,1,1,1,1,1,1,1]\n",
	  "t.ir:1:47: error: too many dimensions" },
	{ "%0 = input {name = \"a} : f32[4]\n", "t.ir:1:20: error: unterminated string" },
	{ "%0 = input {name = \"a\\q\"} : f32[4]\n", "t.ir:1:22: error: unknown escape" },
	{ "%0 = input {name = \"a\", name = \"b\"} : f32[4]\n",
	  "t.ir:1:25: error: attribute 'name' given twice" },
	{ "%0 = input {name = \"a\"}\n", "t.ir:1:24: error: expected ':' and the output type" },
	{ "%0 = add %0 : f32[4]\n", "t.ir:1:10: error: value %0 is used before" },
	{ "%0 = input {name = \"a\"} : f32[4]\n%1 = add %0 : f32[4]\n",
	  "t.ir:2:6: error: add takes 2 inputs, 1 given" },
	{ "%0, %1 = input {name = \"a\"} : f32[4], f32[4]\n", "t.ir:1:10: error: input has 1 output, 2 given" },
	{ "%0 = input {name = 12x} : f32[4]\n", "t.ir:1:20: error: malformed number" },
	{ "%0 = input {name = 99999999999999999999} : f32[4]\n", "t.ir:1:20: error: integer out of range" },
	{ "%0 = input : f32[4] stage\n", "t.ir:1:26: error: expected a stage number" },
	{ "%0 = input : f32[4] bwd_b fwd\n", "t.ir:1:27: error: phase given twice" },
	{ "%0 = input : f32[4] banana\n", "t.ir:1:21: error: unexpected 'banana'" },
	{ "%0 = input : f32[4] @m.sl:1\n", "t.ir:1:28: error: expected ':' between the line" },
	{ "%0 = input : f32[4] @ m.sl:1:2\n", "t.ir:1:22: error: expected a location" },
	{ "model a\nmodel b\n", "t.ir:2:1: error: the model name is given twice" },
	{ "train x = 1\ntrain x = 2\n", "t.ir:2:7: error: setting 'x' given twice" },
	{ "train x = y\n", "t.ir:1:11: error: expected a number or a \"string\"" },
	{ "output loss = %3\n", "t.ir:1:15: error: value %3 is used before" },
	{ "%0 = input : f32[4]\noutput a = %0\noutput a = %0\n", "t.ir:3:8: error: output 'a' given twice" },
	{ "%0 = input : f32[4] junk junk\n", "t.ir:1:21: error: unexpected 'junk'" },
	{ "\n\n   %0 = input : f32[4] }\n", "t.ir:3:24: error: expected a phase" },
	{ "%99999999 = input : f32[4]\n", "t.ir:1:1: error: value id too large" },
	{ "%9999999 = input : f32[4]\n", "t.ir:1:1: error: value ids are too sparse" },
	{ "%0 = input : f32[4] ;\n", "t.ir:1:21: error: unexpected character ';'" },
	{ "%0 = input : f32[4] \xff\n", "t.ir:1:21: error: unexpected byte 0xff" },
	{ "%0 = input {name = \"\\x0\"} : f32[4]\n", "t.ir:1:21: error: \\x in a string needs two hex digits" },
	{ "%\n", "t.ir:1:1: error: expected a value id after '%'" },
	{ "%0 %1 = neg\n", "t.ir:1:4: error: expected ',' or '=' after the outputs" },
	{ "%0 = input {name = [1, x]} : f32[4]\n", "t.ir:1:24: error: expected an integer in the list" },
	{ "%0 = input {name = 1e} : f32[4]\n", "t.ir:1:20: error: malformed number: exponent without digits" },
	{ "%0 = input : f32[4] scope\n", "t.ir:1:26: error: expected a scope" },
	{ "send\n", "t.ir:1:1: error: send takes 1 input, 0 given" },
	{ "%0 = concat : f32[4]\n", "t.ir:1:6: error: concat takes at least one input" },
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *errs;
		struct ir_graph *g = parse_str(bad[i].text, &errs);
		CHECKF(!g, "case %zu parsed but should not: %s", i, bad[i].text);
		const char *colon = strstr(bad[i].want, "error: ");
		size_t plen = (size_t)(colon - bad[i].want) + 7;
		CHECKF(!strncmp(errs, bad[i].want, plen) && strstr(errs, colon + 7),
		       "case %zu: want '%s', got:\n%s", i, bad[i].want, errs);
		/* the source line and a caret follow */
		CHECKF(strstr(errs, "\n  ") && strchr(errs, '^'), "case %zu: no caret:\n%s", i, errs);
		free(errs);
		ir_graph_free(g);
	}
	/* NUL bytes and an empty input */
	const char nul[] = "model m\n%0 = input\0 : f32[4]\n";
	struct sink s;
	struct ir_graph *g = ir_parse(nul, sizeof nul - 1, "t.ir", sink_open(&s));
	char *e = sink_take(&s);
	CHECKF(!g && strstr(e, "t.ir:2:11: error: NUL byte"), "%s", e);
	free(e);
	g = ir_parse("", 0, "t.ir", NULL);
	CHECK(g && g->n_ops == 0);
	ir_graph_free(g);
	g = ir_parse(NULL, 0, NULL, NULL);
	CHECK(g && g->n_ops == 0);
	ir_graph_free(g);
}

/* --- mutations --------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? (uint32_t)(rng % n) : 0;
}

static void test_mutations(void)
{
	struct ir_graph *g0 = sample_graph();
	char *base = ir_print_str(g0);
	ir_graph_free(g0);
	size_t blen = strlen(base);
	static const char *const frags[] = { "%", "%0", "%999", "{", "}", "[", "]", ",", ":", "=",
					     "@", "\"", "\\", "\n", "-", "1e", "nan", "inf", "f32",
					     "[1, 2]", "matmul", "stage", "scope", "#", "\0", "\xff",
					     "9223372036854775808", "-9223372036854775808", "0x1" };
	int parsed = 0, rejected = 0;
	/* SLUICE_IR_MUTATIONS=N runs more, for a longer search outside ctest */
	const char *env = getenv("SLUICE_IR_MUTATIONS");
	int iterations = env && atoi(env) > 0 ? atoi(env) : 3000;
	for (int it = 0; it < iterations; it++) {
		size_t cap = blen + 64;
		char *m = malloc(cap);
		memcpy(m, base, blen);
		size_t n = blen;
		int edits = 1 + (int)rnd(4);
		for (int e = 0; e < edits && n > 0; e++) {
			size_t at = rnd((uint32_t)n);
			switch (rnd(5)) {
			case 0: /* flip a byte */
				m[at] = (char)rnd(256);
				break;
			case 1: /* delete a run */
			{
				size_t k = 1 + rnd(16);
				if (at + k > n)
					k = n - at;
				memmove(m + at, m + at + k, n - at - k);
				n -= k;
				break;
			}
			case 2: /* insert a fragment */
			{
				const char *f = frags[rnd(sizeof frags / sizeof frags[0])];
				size_t k = *f ? strlen(f) : 1;
				if (n + k < cap) {
					memmove(m + at + k, m + at, n - at);
					memcpy(m + at, f, k);
					n += k;
				}
				break;
			}
			case 3: /* truncate */
				n = at;
				break;
			default: /* duplicate a line */
			{
				size_t ls = at, le = at;
				while (ls > 0 && m[ls - 1] != '\n')
					ls--;
				while (le < n && m[le] != '\n')
					le++;
				size_t k = le - ls + (le < n);
				char *nm = malloc(n + k + 64);
				memcpy(nm, m, le + (le < n));
				memcpy(nm + le + (le < n), m + ls, k);
				memcpy(nm + le + (le < n) + k, m + le + (le < n), n - le - (le < n));
				free(m);
				m = nm;
				n += k;
				cap = n + 64;
			}
			}
		}
		struct sink s;
		struct ir_graph *g = ir_parse(m, n, "mut.ir", sink_open(&s));
		char *errs = sink_take(&s);
		if (g) {
			parsed++;
			ir_verify(g, NULL); /* must not crash on whatever parsed */
			char *a = ir_print_str(g);
			struct ir_graph *h = parse_str(a, NULL);
			CHECKF(h, "iteration %d: printed form of a parsed mutation does not parse", it);
			if (h) {
				char *b = ir_print_str(h);
				CHECKF(!strcmp(a, b), "iteration %d: round trip differs", it);
				free(b);
				ir_graph_free(h);
			}
			free(a);
			ir_graph_free(g);
		} else {
			rejected++;
			int line, col;
			CHECKF(sscanf(errs, "mut.ir:%d:%d: error: ", &line, &col) == 2 && line >= 1 &&
				       col >= 1 && strchr(errs, '^'),
			       "iteration %d: bad diagnostic:\n%s", it, errs);
		}
		free(errs);
		free(m);
	}
	CHECKF(parsed > iterations / 60 && rejected > iterations / 3, "parsed %d, rejected %d",
	       parsed, rejected);
	free(base);
}

int main(void)
{
	test_sample_golden();
	test_ep_golden();
	test_hard_values();
	test_float_values_exact();
	test_sparse_ids();
	test_errors();
	test_mutations();
	return CHECK_DONE();
}
