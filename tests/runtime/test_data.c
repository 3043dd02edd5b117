/* test_data.c - shards round trip, corrupt shards are refused with a reason, the
 * PRNG and batch sampling are reproducible from their state. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/data.h"
#include "runtime/pool.h"
#include "runtime/rt.h"

static char dir[64];

static const char *path_in(const char *name)
{
	static char buf[128];
	snprintf(buf, sizeof buf, "%s/%s", dir, name);
	return buf;
}

/* Write raw bytes and check that reading fails with a message containing `want`. */
static void expect_bad(const char *name, const void *bytes, size_t n, int vocab,
		       const char *want)
{
	const char *p = path_in(name);
	REQUIRE(rt_write_file_atomic(p, bytes, n) == 0);
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	struct rt_shard s;
	int rc = rt_shard_read(p, vocab, &s, err);
	fclose(err);
	CHECKF(rc == -1, "%s was accepted", name);
	CHECKF(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", name, msg, want);
	CHECK(s.tok == NULL && s.n == 0);
	free(msg);
	unlink(p);
}

static void header(unsigned char *b, int32_t magic, int32_t version, int32_t n)
{
	memset(b, 0, 1024);
	memcpy(b, &magic, 4);
	memcpy(b + 4, &version, 4);
	memcpy(b + 8, &n, 4);
}

static void test_round_trip(void)
{
	const char *text = "Hello, shard! \xff\x01";
	size_t n = strlen(text);
	uint16_t tok[32];
	rt_tokenize_bytes((const unsigned char *)text, n, tok);
	CHECK(tok[0] == 'H' && tok[n - 2] == 0xff && tok[n - 1] == 1);
	REQUIRE(rt_shard_write(path_in("a.bin"), tok, (int64_t)n, stderr) == 0);
	struct rt_shard s;
	REQUIRE(rt_shard_read(path_in("a.bin"), 256, &s, stderr) == 0);
	CHECK(s.n == (int64_t)n);
	CHECK(memcmp(s.tok, tok, n * 2) == 0);
	rt_shard_free(&s);
	/* the file is exactly llm.c's layout */
	size_t len;
	unsigned char *raw = (unsigned char *)rt_read_file(path_in("a.bin"), &len);
	REQUIRE(raw);
	int32_t h[3];
	memcpy(h, raw, sizeof h);
	CHECK(len == 1024 + 2 * n && h[0] == 20240520 && h[1] == 1 && h[2] == (int32_t)n);
	CHECK(raw[1024] == 'H' && raw[1025] == 0);
	free(raw);
	unlink(path_in("a.bin"));

	/* GPT-2 tokens (llm.c's shards) read with a large vocabulary, refused with 256 */
	uint16_t gpt[4] = { 50256, 15496, 11, 995 };
	REQUIRE(rt_shard_write(path_in("g.bin"), gpt, 4, stderr) == 0);
	REQUIRE(rt_shard_read(path_in("g.bin"), 50257, &s, stderr) == 0);
	CHECK(s.n == 4 && s.tok[0] == 50256);
	rt_shard_free(&s);
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_shard_read(path_in("g.bin"), 256, &s, err) == -1);
	fclose(err);
	CHECKF(strstr(msg, "token 50256 at position 0 is outside") != NULL, "%s", msg);
	free(msg);
	unlink(path_in("g.bin"));
}

static void test_corrupt(void)
{
	unsigned char b[1024 + 16] = { 0 };
	expect_bad("empty.bin", b, 0, 256, "too short");
	header(b, 20240520, 1, 4);
	expect_bad("short.bin", b, 100, 256, "too short");
	header(b, 12345, 1, 4);
	expect_bad("magic.bin", b, 1024 + 8, 256, "not a token shard");
	header(b, 20240520, 2, 4);
	expect_bad("version.bin", b, 1024 + 8, 256, "version 2");
	header(b, 20240520, 1, 8);
	expect_bad("trunc.bin", b, 1024 + 8, 256, "truncated");
	header(b, 20240520, 1, 2);
	expect_bad("long.bin", b, 1024 + 8, 256, "the header says 2 tokens");
	header(b, 20240520, 1, -5);
	expect_bad("neg.bin", b, 1024 + 8, 256, "negative");
	header(b, 20240520, 1, 0);
	expect_bad("zero.bin", b, 1024, 256, "no tokens");
	header(b, 20240520, 1, 4);
	memset(b + 1024, 0, 8);
	b[1024 + 5] = 1; /* token 2 = 256 */
	expect_bad("range.bin", b, 1024 + 8, 256, "token 256 at position 2");
	struct rt_shard s;
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_shard_read(path_in("missing.bin"), 256, &s, err) == -1);
	fclose(err);
	CHECK(strstr(msg, "cannot read") != NULL);
	free(msg);
}

static void test_sampling(void)
{
	struct rt_rng r, r2;
	rt_rng_seed(&r, 42);
	r2 = r;
	for (int i = 0; i < 100; i++) {
		uint64_t x = rt_rng_below(&r, 7);
		CHECK(x < 7 && x == rt_rng_below(&r2, 7));
	}
	double sum = 0, sq = 0;
	for (int i = 0; i < 20000; i++) {
		double z = rt_rng_normal(&r);
		sum += z;
		sq += z * z;
	}
	CHECKF(fabs(sum / 20000) < 0.03 && fabs(sq / 20000 - 1) < 0.05, "mean %g var %g",
	       sum / 20000, sq / 20000);

	uint16_t tok[100];
	for (int i = 0; i < 100; i++)
		tok[i] = (uint16_t)i;
	struct rt_shard s = { tok, 100 };
	int32_t x[4 * 8], y[4 * 8], x2[4 * 8], y2[4 * 8];
	rt_rng_seed(&r, 7);
	struct rt_rng saved = r;
	rt_batch_sample(&s, &r, 4, 8, x, y);
	for (int i = 0; i < 32; i++)
		CHECK(y[i] == x[i] + 1 && x[i] >= 0 && y[i] < 100);
	for (int b = 0; b < 4; b++)
		for (int j = 1; j < 8; j++)
			CHECK(x[b * 8 + j] == x[b * 8 + j - 1] + 1);
	/* the saved state replays the same batch: the data position is the PRNG state */
	rt_batch_sample(&s, &saved, 4, 8, x2, y2);
	CHECK(!memcmp(x, x2, sizeof x) && !memcmp(y, y2, sizeof y));
	/* evaluation windows are fixed and span the shard */
	rt_batch_eval(&s, 0, 2, 4, 8, x, y);
	CHECK(x[0] == 0 && y[0] == 1);
	rt_batch_eval(&s, 1, 2, 4, 8, x, y);
	CHECK(x[3 * 8] == 91 && y[3 * 8 + 7] == 99);
	/* a shard of exactly seq + 1 tokens has one window */
	struct rt_shard one = { tok, 9 };
	rt_batch_sample(&one, &r, 2, 8, x, y);
	CHECK(x[0] == 0 && x[8] == 0 && y[15] == 8);
}

/* --- Fill-In-the-Middle -------------------------------------------------------- */

/* out must be BEGIN P HOLE S END M with P M S == doc: a permutation of the document's
 * tokens plus exactly three sentinels, in PSM order */
static int is_psm(const uint16_t *doc, size_t n, const uint16_t *out, size_t m)
{
	if (m != n + 3 || out[0] != RT_FIM_BEGIN)
		return 0;
	size_t hole = 0, end = 0;
	for (size_t i = 1; i < m; i++) {
		if (out[i] == RT_FIM_HOLE && !hole)
			hole = i;
		else if (out[i] == RT_FIM_END && !end)
			end = i;
		else if (out[i] >= RT_FIM_BEGIN)
			return 0; /* a sentinel twice */
	}
	if (!hole || !end || hole > end)
		return 0;
	size_t np = hole - 1, ns = end - hole - 1, nm = m - end - 1;
	return !memcmp(doc, out + 1, np * 2) && !memcmp(doc + np, out + end + 1, nm * 2) &&
	       !memcmp(doc + np + nm, out + hole + 1, ns * 2);
}

static void test_fim(void)
{
	enum { DOCS = 20000, MAXN = 64 };
	uint16_t doc[MAXN], out[MAXN + 3], again[MAXN + 3];
	int n_fim = 0, bad = 0, ident = 1, empty_mid = 0, whole_mid = 0;
	for (int k = 0; k < DOCS; k++) {
		size_t n = (size_t)(k % MAXN) + 1;
		for (size_t i = 0; i < n; i++)
			doc[i] = (uint16_t)((k * 7 + (int)i * 13) & 255);
		size_t m = rt_fim_document(doc, n, 0.1, 42, (uint64_t)k, out);
		if (m == n) {
			bad += memcmp(doc, out, n * 2) != 0;
		} else {
			n_fim++;
			bad += !is_psm(doc, n, out, m);
			size_t hole = 1;
			while (out[hole] != RT_FIM_HOLE)
				hole++;
			empty_mid += out[m - 1] == RT_FIM_END;
			whole_mid += hole == 1 && out[hole + 1] == RT_FIM_END;
		}
		/* deterministic from (seed, index) */
		size_t m2 = rt_fim_document(doc, n, 0.1, 42, (uint64_t)k, again);
		bad += m2 != m || memcmp(out, again, m * 2) != 0;
		/* rate 0 is the identity */
		m2 = rt_fim_document(doc, n, 0.0, 42, (uint64_t)k, again);
		ident &= m2 == n && !memcmp(doc, again, n * 2);
	}
	/* Binomial(20000, 0.1): mean 2000, sd sqrt(20000 * 0.1 * 0.9) = 42.4; the bound is
	 * 5 sd (212), which a fair coin passes but with probability 1 - 6e-7 (and the draws
	 * are fixed by the seed, so the test is not flaky) */
	CHECKF(n_fim >= 2000 - 212 && n_fim <= 2000 + 212, "%d of %d documents in FIM form",
	       n_fim, DOCS);
	CHECKF(bad == 0, "%d documents not unchanged nor in PSM form", bad);
	CHECK(ident);
	CHECK(empty_mid > 0 && whole_mid > 0); /* cut points reach both ends */
	/* rate 1: every non-empty document; an empty one stays empty */
	CHECK(rt_fim_document(doc, 5, 1.0, 1, 3, out) == 8 && is_psm(doc, 5, out, 8));
	CHECK(rt_fim_document(doc, 0, 1.0, 1, 3, out) == 0);
	/* another seed, other choices */
	int differ = 0;
	for (int k = 0; k < 200; k++)
		differ += rt_fim_document(doc, 10, 0.5, 1, (uint64_t)k, out) !=
			  rt_fim_document(doc, 10, 0.5, 2, (uint64_t)k, again);
	CHECK(differ > 0);
	/* the vocabulary check */
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_fim_check(256, 0.1, err) == -1);
	CHECK(rt_fim_check(300, 1.5, err) == -1);
	CHECK(rt_fim_check(256, 0.0, err) == 0);
	CHECK(rt_fim_check(259, 0.1, err) == 0);
	fclose(err);
	CHECKF(strstr(msg, "fim 0.1 needs a vocabulary of at least 259") &&
	       strstr(msg, "the model's vocab is 256"), "%s", msg);
	CHECKF(strstr(msg, "rate in [0, 1]"), "%s", msg);
	free(msg);
	/* a FIM shard read by a model of vocabulary 256 says why */
	uint16_t tok[8];
	size_t m = rt_fim_document(doc, 5, 1.0, 1, 0, tok);
	REQUIRE(rt_shard_write(path_in("fim.bin"), tok, (int64_t)m, stderr) == 0);
	struct rt_shard sh;
	msg = NULL;
	err = open_memstream(&msg, &mlen);
	CHECK(rt_shard_read(path_in("fim.bin"), 256, &sh, err) == -1);
	fclose(err);
	CHECKF(strstr(msg, "a FIM sentinel") && strstr(msg, "vocab >= 259"), "%s", msg);
	free(msg);
	CHECK(rt_shard_read(path_in("fim.bin"), 259, &sh, stderr) == 0 && sh.n == (int64_t)m);
	rt_shard_free(&sh);
	unlink(path_in("fim.bin"));
}

/* --- parallel initialisers: the same values whatever the threads ----------------- */

static void test_fill(void)
{
	enum { N = 3 * RT_FILL_BLOCK * 16 + 777 };
	float *a = rt_malloc(N * sizeof *a), *b = rt_malloc(N * sizeof *b);
	struct rt_pool *p1 = rt_pool_new(1), *p3 = rt_pool_new(3);
	rt_fill_normal(p1, a, N, 0.02, 99);
	rt_fill_normal(p3, b, N, 0.02, 99);
	CHECK(!memcmp(a, b, N * sizeof *a));
	double s = 0, s2 = 0;
	for (int i = 0; i < N; i++) {
		s += a[i];
		s2 += (double)a[i] * a[i];
	}
	double mean = s / N, sd = sqrt(s2 / N - mean * mean);
	/* mean within 5 standard errors (0.02 / sqrt(N)), sd within 1% */
	CHECKF(fabs(mean) < 5 * 0.02 / sqrt((double)N) && fabs(sd - 0.02) < 2e-4,
	       "mean %g sd %g", mean, sd);
	/* the ziggurat's slow paths: the share beyond 2 and beyond 3.5 standard deviations
	 * (the wedges, and the tail past R = 3.44 drawn apart), each within 5 binomial
	 * standard errors of the normal's 4.550% and 0.04653% */
	static const double at[2] = { 2.0, 3.5 }, share[2] = { 4.5500264e-2, 4.6525816e-4 };
	for (int t = 0; t < 2; t++) {
		int64_t out = 0;
		for (int i = 0; i < N; i++)
			out += fabs(a[i]) > at[t] * 0.02;
		double want = share[t] * N, se = sqrt(want * (1 - share[t]));
		CHECKF(fabs((double)out - want) < 5 * se, "%lld beyond %g sd, %g expected",
		       (long long)out, at[t], want);
	}
	rt_fill_normal(p3, b, N, 0.02, 100);
	CHECK(memcmp(a, b, N * sizeof *a) != 0);
	rt_fill_uniform(p1, a, N, 0.5, 7);
	rt_fill_uniform(p3, b, N, 0.5, 7);
	CHECK(!memcmp(a, b, N * sizeof *a));
	int in = 1;
	for (int i = 0; i < N; i++)
		in &= a[i] >= -0.5f && a[i] < 0.5f;
	CHECK(in);
	rt_fill_const(p3, a, N, 1.0f);
	CHECK(a[0] == 1.0f && a[N - 1] == 1.0f);
	float *z = rt_pool_alloc_zeroed(p3, (size_t)N * 4 * 20);
	int zero = 1;
	for (size_t i = 0; i < (size_t)N * 20; i += 997)
		zero &= z[i] == 0.0f;
	CHECK(zero);
	free(z);
	rt_pool_free(p1);
	rt_pool_free(p3);
	free(a);
	free(b);
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/sluice-test-data-XXXXXX");
	REQUIRE(mkdtemp(dir));
	test_round_trip();
	test_corrupt();
	test_sampling();
	test_fim();
	test_fill();
	rmdir(dir);
	return CHECK_DONE();
}
