/* test_models.c - 'sluice check --json' on the models of models/ against the counts of
 * their published configurations (tests/check/expected.py prints the same arithmetic
 * term by term) and against DeepSeek's own figures, within the tolerances the project
 * promises.  Usage: test_models SLUICE_BINARY (run from the source tree). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "check.h"

struct config {
	const char *file;
	int64_t L, d, heads, vocab, dense_layers, dense_ff, moe_ff, n_shared, n_routed, topk;
	int64_t q_rank, kv_rank, nope, rope, vdim, mla, kv_heads, mtp;
	/* DeepSeek's figures, and how far from them the count may be */
	double pub_total, tol_total, pub_active, tol_active;
};

/* The rules of passes/account.c: trainable parameters (no routing biases), MTP apart
 * without the embedding and head it shares, active = everything but the routed
 * experts not chosen and the embedding rows not read. */
static void expected(const struct config *c, double *total, double *active, double *mtp)
{
	double d = (double)c->d, h = (double)c->heads, attn;
	if (c->mla) {
		double q = c->q_rank ? d * c->q_rank + c->q_rank +
					       (double)c->q_rank * h * (c->nope + c->rope)
				     : d * h * (c->nope + c->rope);
		attn = q + d * (c->kv_rank + c->rope) + c->kv_rank +
		       (double)c->kv_rank * h * (c->nope + c->vdim) + h * c->vdim * d;
	} else {
		double hd = d / h, kvh = c->kv_heads ? (double)c->kv_heads : h;
		attn = d * h * hd + 2 * d * kvh * hd + h * hd * d;
	}
	double expert = 3 * d * c->moe_ff;
	double dense = attn + 2 * d + 3 * d * c->dense_ff;
	double moe = attn + 2 * d + c->n_routed * d + (c->n_shared + c->n_routed) * expert;
	double moe_act = attn + 2 * d + c->n_routed * d + (c->n_shared + c->topk) * expert;
	double nd = (double)c->dense_layers, nm = (double)(c->L - c->dense_layers);
	*total = nd * dense + nm * moe + 2 * (double)c->vocab * d + d;
	*active = nd * dense + nm * moe_act + (double)c->vocab * d + 2 * d;
	*mtp = c->mtp * (2 * d + 2 * d * d + moe + d);
}

static const struct config models[] = {
	{ .file = "models/deepseek_v3.sl", .L = 61, .d = 7168, .heads = 128, .vocab = 129280,
	  .dense_layers = 3, .dense_ff = 18432, .moe_ff = 2048, .n_shared = 1, .n_routed = 256,
	  .topk = 8, .q_rank = 1536, .kv_rank = 512, .nope = 128, .rope = 64, .vdim = 128,
	  .mla = 1, .mtp = 1,
	  .pub_total = 671.0e9, .tol_total = 0.005, .pub_active = 37e9, .tol_active = 0.03 },
	{ .file = "models/deepseek_v2.sl", .L = 60, .d = 5120, .heads = 128, .vocab = 102400,
	  .dense_layers = 1, .dense_ff = 12288, .moe_ff = 1536, .n_shared = 2, .n_routed = 160,
	  .topk = 6, .q_rank = 1536, .kv_rank = 512, .nope = 128, .rope = 64, .vdim = 128,
	  .mla = 1,
	  .pub_total = 236e9, .tol_total = 0.01, .pub_active = 21e9, .tol_active = 0.03 },
	{ .file = "models/deepseek_v2_lite.sl", .L = 27, .d = 2048, .heads = 16,
	  .vocab = 102400, .dense_layers = 1, .dense_ff = 10944, .moe_ff = 1408, .n_shared = 2,
	  .n_routed = 64, .topk = 6, .kv_rank = 512, .nope = 128, .rope = 64, .vdim = 128,
	  .mla = 1,
	  .pub_total = 15.7e9, .tol_total = 0.01, .pub_active = 2.4e9, .tol_active = 0.03 },
	{ .file = "models/deepseek_llm_7b.sl", .L = 30, .d = 4096, .heads = 32,
	  .vocab = 102400, .dense_layers = 30, .dense_ff = 11008,
	  .pub_total = 6.9e9, .tol_total = 0.01 },
	{ .file = "models/deepseek_llm_67b.sl", .L = 95, .d = 8192, .heads = 64,
	  .vocab = 102400, .dense_layers = 95, .dense_ff = 22016, .kv_heads = 8,
	  .pub_total = 67e9, .tol_total = 0.01 },
};

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	CHECKF(cJSON_IsNumber(v), "key %s missing", key);
	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int near(double got, double want, double tol)
{
	return fabs(got - want) <= tol * want;
}

static cJSON *run_check(const char *sluice, const char *file, double *seconds)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s' check --json '%s'", sluice, file);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	FILE *p = popen(cmd, "r");
	REQUIRE(p);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	REQUIRE(buf);
	size_t k;
	while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
		n += k;
		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			REQUIRE(buf);
		}
	}
	buf[n] = 0;
	int st = pclose(p);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	*seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	CHECKF(st == 0, "%s exited with status %d", cmd, st);
	cJSON *o = cJSON_Parse(buf);
	CHECKF(o != NULL, "%s: not JSON: %.200s", cmd, buf);
	free(buf);
	return o;
}

static void check_model(const char *sluice, const struct config *c)
{
	double secs;
	cJSON *o = run_check(sluice, c->file, &secs);
	if (!o)
		return;
	double total, active, mtp;
	expected(c, &total, &active, &mtp);
	double got_total = num(o, "params_total"), got_active = num(o, "params_active");
	double got_mtp = num(o, "params_mtp"), flops = num(o, "flops_per_token");
	printf("%-28s total %.4gB (config %.4gB)  active %.4gB (config %.4gB)  mtp %.4gB "
	       "(config %.4gB)  %.1f TFLOP/token  %.3f s\n",
	       c->file, got_total / 1e9, total / 1e9, got_active / 1e9, active / 1e9,
	       got_mtp / 1e9, mtp / 1e9, flops / 1e12, secs);
	/* the published figures, with the promised tolerances */
	CHECKF(near(got_total, c->pub_total, c->tol_total), "%s: %.4gB parameters, DeepSeek "
	       "reports %.4gB", c->file, got_total / 1e9, c->pub_total / 1e9);
	if (c->pub_active > 0)
		CHECKF(near(got_active, c->pub_active, c->tol_active), "%s: %.4gB active, "
		       "DeepSeek reports %.4gB", c->file, got_active / 1e9, c->pub_active / 1e9);
	/* the configuration's exact count: a missing or extra matrix shows here */
	CHECKF(near(got_total, total, 1e-4), "%s: %.0f parameters, the config gives %.0f",
	       c->file, got_total, total);
	CHECKF(near(got_active, active, 1e-4), "%s: %.0f active, the config gives %.0f",
	       c->file, got_active, active);
	CHECKF(c->mtp ? near(got_mtp, mtp, 1e-3) : got_mtp == 0,
	       "%s: MTP %.0f, the config gives %.0f", c->file, got_mtp, mtp);
	/* 6 FLOPs per active weight of a matrix product, plus attention's products, plus
	 * the MTP module: at least the first, and not more than twice it */
	double low = 6 * (active - (double)c->d);
	CHECKF(flops >= low * 0.999 && flops <= 2 * low, "%s: %.4g FLOPs/token, %.4g from the "
	       "weights alone", c->file, flops, low);
	CHECK(num(o, "activation_bytes") > 0);
	const cJSON *peak = cJSON_GetObjectItemCaseSensitive(o, "planned_peak_bytes");
	CHECKF(cJSON_IsNumber(peak) && peak->valuedouble > 0, "%s: no planned peak", c->file);
	const cJSON *layers = cJSON_GetObjectItemCaseSensitive(o, "layers");
	CHECK(cJSON_IsArray(layers) && cJSON_GetArraySize(layers) >= c->L);
	/* the table adds up to the totals */
	double sum = 0;
	const cJSON *l;
	cJSON_ArrayForEach(l, layers)
		sum += num(l, "params");
	CHECKF(near(sum, got_total + got_mtp, 1e-9), "%s: the layers hold %.0f", c->file, sum);
	/* how long it took is printed, not checked: the target (well under a second for
	 * DeepSeek-V3) is measured by tools/bench/check_time.sh, not by a timed test */
	cJSON_Delete(o);
}

/* Runs "SLUICE check ARGS STDERR", returns its exit status and its stdout (malloc'd);
 * stderr is "2>/dev/null" or "2>&1". */
static int run_cli_to(const char *sluice, const char *args, const char *stderr_to, char **out)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s' check %s %s", sluice, args, stderr_to);
	FILE *p = popen(cmd, "r");
	REQUIRE(p);
	size_t cap = 1 << 16, n = 0, k;
	char *buf = malloc(cap);
	REQUIRE(buf);
	while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
		n += k;
		if (n + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			REQUIRE(buf);
		}
	}
	buf[n] = 0;
	int st = pclose(p);
	*out = buf;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_cli(const char *sluice, const char *args, char **out)
{
	return run_cli_to(sluice, args, "2>/dev/null", out);
}

/* The table of pipeline stages: it adds up to the model, in JSON and in text; the
 * impossible layouts exit 1 with their message and nothing else. */
static void test_stages(const char *sluice)
{
	char *o;
	CHECK(run_cli(sluice, "--json models/tiny_moe.sl --set pp=2", &o) == 0);
	cJSON *j = cJSON_Parse(o);
	CHECKF(j != NULL, "not JSON: %.200s", o);
	free(o);
	if (j) {
		const cJSON *stages = cJSON_GetObjectItemCaseSensitive(j, "stages"), *st;
		CHECK(cJSON_IsArray(stages) && cJSON_GetArraySize(stages) == 2);
		double params = 0, layers = 0;
		cJSON_ArrayForEach(st, stages) {
			CHECK(num(st, "first_layer") == layers);
			layers += num(st, "n_layers");
			params += num(st, "params");
			double parts = num(st, "mem_params") + num(st, "mem_grads") +
				       num(st, "mem_optim") + num(st, "mem_acts") +
				       num(st, "mem_comm");
			CHECKF(fabs(parts - num(st, "mem_total")) <= 4, "total %.0f, parts %.0f",
			       num(st, "mem_total"), parts);
		}
		CHECK(layers == 4);
		/* expert parameters counted once: the stages hold the whole model */
		CHECKF(params == num(j, "params_total") + num(j, "params_mtp"),
		       "the stages hold %.0f parameters, the model %.0f", params,
		       num(j, "params_total") + num(j, "params_mtp"));
		const cJSON *lo = cJSON_GetObjectItemCaseSensitive(j, "layout");
		CHECK(lo && num(lo, "pp") == 2 && num(lo, "dp") == 1 && num(lo, "balance") >= 1);
		cJSON_Delete(j);
	}
	CHECK(run_cli(sluice, "models/tiny_moe.sl --set pp=2 --set ep=2 --ranks 8", &o) == 0);
	CHECKF(strstr(o, "pipeline stages: 8 ranks = pp 2 x dp 4, ep 2") &&
	       strstr(o, "balance") && strstr(o, "0-"), "the stages read:\n%s", o);
	free(o);
	/* no layout asked for, no table */
	CHECK(run_cli(sluice, "--json models/tiny_moe.sl", &o) == 0);
	CHECK(!strstr(o, "\"stages\""));
	free(o);
	/* DeepSeek's own layout */
	CHECK(run_cli(sluice, "--json models/deepseek_v3.sl --set pp=16 --set ep=64 --ranks 2048 "
		      "--set microbatches=32 --set zero=1", &o) == 0);
	j = cJSON_Parse(o);
	free(o);
	CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "stages")) == 16);
	cJSON_Delete(j);

	static const struct {
		const char *args, *msg;
	} bad[] = {
		{ "models/tiny_moe.sl --set ep=3 --ranks 6", "8 experts are not divisible by ep=3" },
		{ "models/tiny_moe.sl --set ep=4 --ranks 2", "ep=4 does not divide dp=2" },
		{ "models/tiny_moe.sl --set pp=5", "pp=5 is more stages than the model's 4 layers" },
		/* dualpipev's 2 pp stages, as train cuts them */
		{ "models/tiny_moe.sl --set pp=4 --set schedule=dualpipev --set microbatches=8",
		  "dualpipev at pp=4 cuts 8 stages, more than the model's 4 layers" },
		{ "models/tiny_moe.sl --set pp=3 --ranks 4", "4 ranks are not divisible by pp=3" },
		{ "models/tiny_gpt.sl --set ep=2", "ep=2 but the model has no experts" },
		{ "models/tiny_moe.sl --set pp=0", "'pp' is an integer >= 1" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = run_cli_to(sluice, bad[i].args, "2>&1", &o);
		CHECKF(rc == 1 && strstr(o, bad[i].msg) && !strstr(o, "parameters"),
		       "%s: exit %d, output:\n%s", bad[i].args, rc, o);
		free(o);
	}
	CHECK(run_cli(sluice, "models/tiny_moe.sl --ranks x", &o) == 2);
	free(o);
}

/* The command as a person meets it: the report, the table, the exit statuses. */
static void test_cli(const char *sluice)
{
	char *o;
	CHECK(run_cli(sluice, "models/deepseek_v3.sl", &o) == 0);
	CHECKF(strstr(o, "671.0B") && strstr(o, "MTP module") && strstr(o, "11.6B") &&
	       strstr(o, "planned arena peak"), "the report reads:\n%s", o);
	free(o);
	CHECK(run_cli(sluice, "--verbose models/deepseek_v3.sl", &o) == 0);
	CHECKF(strstr(o, "layers.60") && strstr(o, "embed") && strstr(o, "head") &&
	       strstr(o, "mtp"), "the table reads:\n%s", o);
	free(o);
	CHECK(run_cli(sluice, "--help", &o) == 0 && strstr(o, "usage: sluice check"));
	free(o);
	CHECK(run_cli(sluice, "", &o) == 2);
	free(o);
	CHECK(run_cli(sluice, "--frobnicate models/tiny_gpt.sl", &o) == 2);
	free(o);
	CHECK(run_cli(sluice, "models/tiny_gpt.sl models/tiny_moe.sl", &o) == 2);
	free(o);
	CHECK(run_cli(sluice, "models/tiny_gpt.sl --set", &o) == 2);
	free(o);
	CHECK(run_cli(sluice, "models/no_such_model.sl", &o) == 1);
	free(o);
	CHECK(run_cli(sluice, "models/tiny_gpt.sl --set no_such_constant=1", &o) == 1);
	free(o);
	/* --set reaches the figures: twice the batch, twice the tokens and activations */
	char *a, *b;
	CHECK(run_cli(sluice, "--json models/tiny_gpt.sl --set batch=2", &a) == 0);
	CHECK(run_cli(sluice, "--json models/tiny_gpt.sl --set batch=4", &b) == 0);
	cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
	REQUIRE(ja && jb);
	CHECK(num(jb, "tokens_per_micro_batch") == 2 * num(ja, "tokens_per_micro_batch"));
	CHECK(num(jb, "activation_bytes") == 2 * num(ja, "activation_bytes"));
	CHECK(num(jb, "params_total") == num(ja, "params_total"));
	cJSON_Delete(ja);
	cJSON_Delete(jb);
	free(a);
	free(b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_models SLUICE_BINARY\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
		FILE *f = fopen(models[i].file, "r");
		if (!f) {
			/* the zoo beyond V3 is optional; V3 is not */
			CHECKF(i != 0, "%s is missing", models[i].file);
			printf("%-28s not in models/: skipped\n", models[i].file);
			continue;
		}
		fclose(f);
		check_model(argv[1], &models[i]);
	}
	test_cli(argv[1]);
	test_stages(argv[1]);
	return CHECK_DONE();
}
