/* test_data.c - shards round trip, corrupt shards are refused with a reason, the
 * PRNG and batch sampling are reproducible from their state. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/data.h"
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

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/sluice-test-data-XXXXXX");
	REQUIRE(mkdtemp(dir));
	test_round_trip();
	test_corrupt();
	test_sampling();
	rmdir(dir);
	return CHECK_DONE();
}
