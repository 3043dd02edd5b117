/*
 * test_badinput.c - every kind of bad model input fails cleanly with a located error.
 *
 * Each .sl file in tests/badinput names its expectation on its first line:
 *     # expect: LINE:COL: fragment of the message
 * and may give --set overrides on following lines ("# set: NAME=VALUE").  The test
 * compiles each, and requires failure, "FILE:LINE:COL: error:" and the fragment on the
 * error stream.  Inputs that cannot live in a text file (NUL bytes, bad UTF-8, huge
 * lines, deep nesting, a missing file) are generated here.  Under the sanitizer build
 * the same run checks that no error path leaks or trips a sanitizer.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frontend/frontend.h"

#define DIR_BAD "tests/badinput"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	REQUIRE(b);
	*len = fread(b, 1, (size_t)n, f);
	b[*len] = 0;
	fclose(f);
	return b;
}

/* Compile; return what was written to the error stream (malloc'd), set *ok. */
static char *compile(const char *src, size_t len, const char *name, int n_over,
		     const struct sl_override *over, int *ok)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *err = open_memstream(&out, &outlen);
	REQUIRE(err);
	struct ir_graph *g = src ? sl_compile_source(src, len, name, n_over, over, err)
				 : sl_compile_file(name, n_over, over, err);
	fclose(err);
	*ok = g != NULL;
	ir_graph_free(g);
	return out;
}

static int n_cases;

static void expect_error(const char *what, const char *src, size_t len, const char *name,
			 int n_over, const struct sl_override *over, const char *where,
			 const char *fragment)
{
	int ok;
	char *out = compile(src, len, name, n_over, over, &ok);
	n_cases++;
	CHECKF(!ok, "%s: compiled but should have failed", what);
	if (where) {
		char loc[512];
		snprintf(loc, sizeof loc, "%s:%s: error:", name, where);
		CHECKF(strstr(out, loc) != NULL, "%s: no '%s' in:\n%s", what, loc, out);
	}
	CHECKF(strstr(out, fragment) != NULL, "%s: no '%s' in:\n%s", what, fragment, out);
	free(out);
}

static void run_files(void)
{
	DIR *d = opendir(DIR_BAD);
	REQUIRE(d);
	struct dirent *e;
	int nfiles = 0;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 4 || strcmp(e->d_name + n - 3, ".sl"))
			continue;
		char path[512];
		snprintf(path, sizeof path, "%s/%s", DIR_BAD, e->d_name);
		size_t len;
		char *src = slurp(path, &len);
		REQUIRE(src);
		/* "# expect: L:C: fragment" */
		char where[64] = "", frag[512] = "";
		const char *p = strstr(src, "# expect: ");
		CHECKF(p == src, "%s: the first line must be '# expect: LINE:COL: fragment'", path);
		if (p == src) {
			p += 10;
			const char *c2 = strchr(p, ':');
			c2 = c2 ? strchr(c2 + 1, ':') : NULL;
			const char *eol = strchr(p, '\n');
			if (c2 && eol && c2 < eol) {
				snprintf(where, sizeof where, "%.*s", (int)(c2 - p), p);
				snprintf(frag, sizeof frag, "%.*s", (int)(eol - c2 - 2), c2 + 2);
			}
		}
		struct sl_override over[4];
		char names[4][64];
		int nover = 0;
		for (const char *s = strstr(src, "\n# set: "); s && nover < 4; s = strstr(s + 1, "\n# set: ")) {
			const char *eq = strchr(s + 8, '='), *eol = strchr(s + 8, '\n');
			REQUIRE(eq && eol && eq < eol);
			snprintf(names[nover], sizeof names[nover], "%.*s", (int)(eq - s - 8), s + 8);
			over[nover].name = names[nover];
			over[nover].value = strndup(eq + 1, (size_t)(eol - eq - 1));
			nover++;
		}
		CHECKF(*where && *frag, "%s: malformed expectation", path);
		expect_error(path, NULL, 0, path, nover, over, where, frag);
		for (int i = 0; i < nover; i++)
			free((char *)over[i].value);
		free(src);
		nfiles++;
	}
	closedir(d);
	CHECKF(nfiles >= 30, "only %d bad-input files", nfiles);
}

static char *repeat(const char *pre, const char *unit, int n, const char *post)
{
	size_t lp = strlen(pre), lu = strlen(unit), lq = strlen(post);
	char *s = malloc(lp + lu * (size_t)n + lq + 1);
	REQUIRE(s);
	memcpy(s, pre, lp);
	for (int i = 0; i < n; i++)
		memcpy(s + lp + lu * (size_t)i, unit, lu);
	memcpy(s + lp + lu * (size_t)n, post, lq + 1);
	return s;
}

static const char good_tail[] =
	"graph(tokens: i32[2, 8], targets: i32[2, 8]) {\n"
	"  x = embed(tokens, 16, 8)\n"
	"  loss = cross_entropy(linear(x, 16, name: head), targets)\n"
	"}\n";

static void run_generated(void)
{
	/* NUL byte, with its column */
	static const char nul[] = "model m\nconst a = 1\0 + 2\n";
	expect_error("nul", nul, sizeof nul - 1, "nul.sl", 0, NULL, "2:12", "NUL byte");
	/* invalid UTF-8: a stray continuation byte, an overlong form, a truncated sequence */
	expect_error("utf8-stray", "model m # caf\xe9\n", 15, "u1.sl", 0, NULL, "1:14",
		     "invalid UTF-8 byte 0xe9");
	expect_error("utf8-overlong", "model m\n\xc0\xaf", 10, "u2.sl", 0, NULL, "2:1",
		     "invalid UTF-8 byte 0xc0");
	expect_error("utf8-truncated", "model m\n# \xe2\x82", 12, "u3.sl", 0, NULL, "2:3",
		     "invalid UTF-8");
	/* valid UTF-8 outside a comment: the column counts characters, not bytes */
	const char *uni = "model m # ünïcode is fine in comments\nconst é = 1\n";
	expect_error("unicode-name", uni, strlen(uni), "u4.sl", 0, NULL, "2:7", "unexpected character U+00E9");
	/* empty and blank files */
	expect_error("empty", "", 0, "empty.sl", 0, NULL, "1:1", "empty model file");
	expect_error("blank", "\n  # only a comment\n\n", 21, "blank.sl", 0, NULL, "4:1", "empty model file");
	/* a missing file and a directory */
	expect_error("missing", NULL, 0, "tests/badinput/no-such-file.sl", 0, NULL, NULL,
		     "cannot open the model file");
	expect_error("directory", NULL, 0, "tests/badinput", 0, NULL, NULL, "error:");

	/* very deep nesting: parentheses, unary minus, blocks, a long operator chain */
	char *s = repeat("model m\nconst a = ", "(", 100000, "1");
	expect_error("deep-parens", s, strlen(s), "deep1.sl", 0, NULL, NULL, "nesting too deep");
	free(s);
	s = repeat("model m\nconst a = ", "-", 100000, "1\n");
	expect_error("deep-unary", s, strlen(s), "deep2.sl", 0, NULL, NULL, "nesting too deep");
	free(s);
	s = repeat("model m\ngraph() {", "if true {", 100000, "");
	expect_error("deep-blocks", s, strlen(s), "deep3.sl", 0, NULL, NULL, "nesting too deep");
	free(s);
	s = repeat("model m\nconst a = 1", " + 1", 100000, "\n");
	expect_error("long-chain", s, strlen(s), "deep4.sl", 0, NULL, NULL, "too deeply nested");
	free(s);

	/* deep expressions stacked through a chain of block calls */
	{
		size_t cap = 1 << 20, n = 0;
		char *b = malloc(cap);
		REQUIRE(b);
		n += (size_t)snprintf(b + n, cap - n, "model m\n");
		for (int k = 0; k < 60; k++) {
			n += (size_t)snprintf(b + n, cap - n, "block b%d(x) { return ", k);
			for (int j = 0; j < 200; j++)
				b[n++] = '-';
			n += (size_t)snprintf(b + n, cap - n, k < 59 ? "b%d(x)" : "x", k + 1);
			n += (size_t)snprintf(b + n, cap - n, " }\n");
		}
		n += (size_t)snprintf(b + n, cap - n, "graph(t: f32[2]) { loss = sum(b0(t), axis: 0) }\n");
		expect_error("deep-calls", b, n, "deep5.sl", 0, NULL, NULL, "nested too deeply");
		free(b);
	}

	/* a very long line: valid, then with an error at its far end (window shown) */
	s = repeat("model m # ", "long comment ", 200000, "\n");
	char *t = malloc(strlen(s) + sizeof good_tail);
	REQUIRE(t);
	strcpy(t, s);
	strcat(t, good_tail);
	int ok;
	char *out = compile(t, strlen(t), "long.sl", 0, NULL, &ok);
	CHECKF(ok, "a model with a very long line fails:\n%s", out);
	free(out);
	free(t);
	free(s);
	s = repeat("model m\nconst a = 0", " + 0", 300, " + nope\ngraph() { }\n");
	expect_error("long-line-error", s, strlen(s), "long2.sl", 0, NULL, "2:1215", "unknown name 'nope'");
	out = compile(s, strlen(s), "long2.sl", 0, NULL, &ok);
	CHECKF(strlen(out) < 1000, "the long line is not cut to a window (%zu bytes)", strlen(out));
	free(out);
	free(s);
	/* huge loop counts and huge unrolling are bounded */
	static const char unroll[] =
		"model m\nblock b(x) { return x * 2.0 }\n"
		"graph(t: f32[4]) {\n  x = t\n  for i in 0..99999 { x = b(b(b(b(b(b(x)))))) }\n  loss = sum(x, axis: 0)\n}\n";
	expect_error("op-limit", unroll, sizeof unroll - 1, "ops.sl", 0, NULL, NULL, "more than 200000 ops");

	/* bad --set: a train setting given a value, a constant given a bad value, no name */
	char *m = malloc(64 + sizeof good_tail);
	REQUIRE(m);
	snprintf(m, 64 + sizeof good_tail, "model m\nconst flag = true\n%s", good_tail);
	struct sl_override o1 = { "flag", "maybe" };
	expect_error("set-bool", m, strlen(m), "set1.sl", 1, &o1, "2:7", "'flag' is a bool");
	struct sl_override o2 = { "", "1" };
	expect_error("set-empty", m, strlen(m), "set2.sl", 1, &o2, "1:1", "no constant or train setting");
	free(m);
}

static void run_good_overrides(void)
{
	/* the positive side of --set: a constant, a train setting, train.NAME where a
	 * constant has the name, and train settings that the train section does not give */
	static const char src[] =
		"model m\nconst seq = 4\n"
		"graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {\n"
		"  x = embed(tokens, 16, 8)\n"
		"  loss = cross_entropy(linear(x, 16, name: head), targets)\n"
		"}\ntrain { batch = 2, seq = 64, lr = 1e-3, optimizer = adamw(beta1 = 0.8) }\n";
	struct sl_override o[6] = { { "batch", "5" }, { "train.seq", "32" }, { "seq", "8" },
				    { "precision", "bf16" }, { "train.schedule", "zb1p" },
				    { "optimizer.beta1", "0.7" } };
	char *out = NULL;
	size_t n = 0;
	FILE *err = open_memstream(&out, &n);
	struct ir_graph *g = sl_compile_source(src, sizeof src - 1, "ok.sl", 6, o, err);
	fclose(err);
	CHECKF(g != NULL, "overrides fail:\n%s", out);
	if (g) {
		const struct ir_setting *e = ir_graph_setting(g, "precision");
		CHECK(e && e->is_str && !strcmp(e->str, "bf16"));
		e = ir_graph_setting(g, "schedule");
		CHECK(e && e->is_str && !strcmp(e->str, "zb1p"));
		CHECK(ir_graph_setting_num(g, "batch", 0) == 5);
		CHECK(ir_graph_setting_num(g, "seq", 0) == 32);
		CHECK(ir_graph_setting_num(g, "optimizer.beta1", 0) == 0.7);
		CHECK(ir_graph_setting_num(g, "lr", 0) == 1e-3);
		CHECK(g->ops[0]->kind == IR_OP_INPUT && g->ops[0]->out[0]->shape.dim[0] == 5 &&
		      g->ops[0]->out[0]->shape.dim[1] == 8);
		CHECK(sl_settings_check_graph(g, NULL) == 0);
		/* a graph's settings are checked without a location too */
		ir_graph_set(g, "pipeline", 0, "dualpipe");
		ir_graph_set(g, "ema", 1.0, NULL);
		CHECK(sl_settings_check_graph(g, NULL) == 2);
	}
	ir_graph_free(g);
	free(out);
}

int main(void)
{
	run_files();
	run_generated();
	run_good_overrides();
	printf("%d bad inputs checked\n", n_cases);
	return CHECK_DONE();
}
