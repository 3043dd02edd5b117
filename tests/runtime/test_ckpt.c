/* test_ckpt.c - safetensors round trip; truncated, malformed and mismatched
 * checkpoints are refused with a reason and never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/ckpt.h"
#include "runtime/rt.h"

static char dir[64];

static const char *path_in(const char *name)
{
	static char buf[128];
	snprintf(buf, sizeof buf, "%s/%s", dir, name);
	return buf;
}

static float w[6] = { 1, 2, 3, 4, 5, 6.5f };
static int32_t ix[3] = { -1, 0, 7 };
static uint64_t rng = 0x0123456789abcdefull;

static void write_good(const char *p)
{
	struct rt_ckpt_tensor t[3] = {
		{ .name = "layers.0.w", .dtype = RT_CKPT_F32, .rank = 2, .shape = { 2, 3 }, .data = w },
		{ .name = "idx", .dtype = RT_CKPT_I32, .rank = 1, .shape = { 3 }, .data = ix },
		{ .name = "rng", .dtype = RT_CKPT_U64, .rank = 1, .shape = { 1 }, .data = &rng },
	};
	struct rt_ckpt_meta m[2] = { { "step", "42" }, { "model", "tiny" } };
	REQUIRE(rt_ckpt_write(p, t, 3, m, 2, stderr) == 0);
}

static void test_round_trip(void)
{
	write_good(path_in("good.safetensors"));
	struct rt_ckpt *c = rt_ckpt_read(path_in("good.safetensors"), stderr);
	REQUIRE(c);
	CHECK(rt_ckpt_count(c) == 3);
	CHECK(!strcmp(rt_ckpt_meta_get(c, "step"), "42"));
	CHECK(!strcmp(rt_ckpt_meta_get(c, "model"), "tiny"));
	CHECK(rt_ckpt_meta_get(c, "nope") == NULL);
	float w2[6];
	int64_t shape[2] = { 2, 3 };
	CHECK(rt_ckpt_load(c, "layers.0.w", RT_CKPT_F32, 2, shape, w2, stderr) == 0);
	CHECK(!memcmp(w, w2, sizeof w));
	int32_t ix2[3];
	int64_t s3 = 3, s1 = 1;
	CHECK(rt_ckpt_load(c, "idx", RT_CKPT_I32, 1, &s3, ix2, stderr) == 0);
	CHECK(!memcmp(ix, ix2, sizeof ix));
	uint64_t r2;
	CHECK(rt_ckpt_load(c, "rng", RT_CKPT_U64, 1, &s1, &r2, stderr) == 0);
	CHECK(r2 == rng);

	/* mismatches: wrong shape, wrong dtype, missing tensor */
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	int64_t bad[2] = { 3, 2 };
	CHECK(rt_ckpt_load(c, "layers.0.w", RT_CKPT_F32, 2, bad, w2, err) == -1);
	CHECK(rt_ckpt_load(c, "idx", RT_CKPT_F32, 1, &s3, w2, err) == -1);
	CHECK(rt_ckpt_load(c, "missing", RT_CKPT_F32, 1, &s3, w2, err) == -1);
	fclose(err);
	CHECKF(strstr(msg, "'layers.0.w' is F32 [2, 3] in the checkpoint but the model has "
			   "F32 [3, 2]") != NULL, "%s", msg);
	CHECKF(strstr(msg, "'idx' is I32 [3] in the checkpoint but the model has F32 [3]"), "%s", msg);
	CHECKF(strstr(msg, "no tensor 'missing'"), "%s", msg);
	free(msg);
	rt_ckpt_free(c);

	/* the header is padded to 8 bytes, so data is aligned as safetensors asks */
	size_t len;
	unsigned char *raw = (unsigned char *)rt_read_file(path_in("good.safetensors"), &len);
	REQUIRE(raw);
	uint64_t hlen;
	memcpy(&hlen, raw, 8);
	CHECK(hlen % 8 == 0 && raw[8] == '{');
	CHECK(len == 8 + hlen + sizeof w + sizeof ix + sizeof rng);
	free(raw);
}

static void expect_bad(const char *name, const void *bytes, size_t n, const char *want)
{
	const char *p = path_in(name);
	REQUIRE(rt_write_file_atomic(p, bytes, n) == 0);
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	struct rt_ckpt *c = rt_ckpt_read(p, err);
	fclose(err);
	CHECKF(c == NULL, "%s was accepted", name);
	rt_ckpt_free(c);
	CHECKF(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", name, msg, want);
	free(msg);
	unlink(p);
}

/* a file with the given JSON header and `data` bytes of zeros after it */
static void expect_bad_json(const char *name, const char *json, size_t data, const char *want)
{
	size_t j = strlen(json);
	unsigned char *b = rt_calloc(8 + j + data, 1);
	uint64_t h = j;
	memcpy(b, &h, 8);
	memcpy(b + 8, json, j);
	expect_bad(name, b, 8 + j + data, want);
	free(b);
}

static void test_corrupt(void)
{
	size_t len;
	unsigned char *good = (unsigned char *)rt_read_file(path_in("good.safetensors"), &len);
	REQUIRE(good);
	/* every truncation of a good file is refused */
	for (size_t cut = 0; cut < len; cut++) {
		char *msg = NULL;
		size_t mlen = 0;
		FILE *err = open_memstream(&msg, &mlen);
		REQUIRE(rt_write_file_atomic(path_in("cut.safetensors"), good, cut) == 0);
		struct rt_ckpt *c = rt_ckpt_read(path_in("cut.safetensors"), err);
		fclose(err);
		CHECKF(c == NULL && mlen > 0, "cut at %zu accepted", cut);
		rt_ckpt_free(c);
		free(msg);
	}
	unlink(path_in("cut.safetensors"));
	/* a header length beyond the file, and an absurd one */
	unsigned char *b = rt_malloc(len);
	memcpy(b, good, len);
	uint64_t h = len;
	memcpy(b, &h, 8);
	expect_bad("hlen.safetensors", b, len, "header length");
	h = UINT64_MAX;
	memcpy(b, &h, 8);
	expect_bad("hlen2.safetensors", b, len, "header length");
	/* bytes flipped inside the JSON */
	memcpy(b, good, len);
	b[8] = '[';
	expect_bad("json.safetensors", b, len, "not a JSON object");
	free(b);
	free(good);

	expect_bad_json("dtype.st", "{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}",
			4, "dtype 'F99'");
	expect_bad_json("shape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}",
			4, "do not hold a F32 tensor of shape [2]");
	expect_bad_json("negdim.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
			4, "not a non-negative integer");
	expect_bad_json("off.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
			4, "data_offsets");
	expect_bad_json("off2.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
			4, "data_offsets");
	expect_bad_json("huge.st",
			"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387903,4611686018427387903],"
			"\"data_offsets\":[0,4]}}", 4, "do not hold");
	expect_bad_json("missing.st", "{\"a\":{\"dtype\":\"F32\"}}", 0, "lacks");
	expect_bad_json("meta.st", "{\"__metadata__\":{\"step\":3}}", 0, "not a string");
	expect_bad_json("entry.st", "{\"a\":5}", 0, "not an object");
	expect_bad_json("text.st", "hello world", 0, "not a JSON object");
	expect_bad("tiny.st", "abc", 3, "too short");
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_ckpt_read(path_in("nothing.safetensors"), err) == NULL);
	fclose(err);
	CHECK(strstr(msg, "cannot read") != NULL);
	free(msg);
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/sluice-test-ckpt-XXXXXX");
	REQUIRE(mkdtemp(dir));
	test_round_trip();
	test_corrupt();
	unlink(path_in("good.safetensors"));
	rmdir(dir);
	return CHECK_DONE();
}
