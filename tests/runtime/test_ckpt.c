/* test_ckpt.c - safetensors round trip; truncated, malformed and mismatched
 * checkpoints are refused with a reason and never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
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

/* --- sharded checkpoints ------------------------------------------------------- */

#define NE 8 /* experts of the sliced tensor */
static float experts[NE][4][3];
static float big[1000];

/* five tensors over shards of at most 1 KiB: big (4000 bytes) gets one of its own */
static int write_sharded(const char *d, int step)
{
	for (int e = 0; e < NE; e++)
		for (int i = 0; i < 12; i++)
			experts[e][i / 3][i % 3] = (float)(100 * e + i + step);
	for (int i = 0; i < 1000; i++)
		big[i] = (float)i * 0.5f + (float)step;
	struct rt_ckpt_tensor t[5] = {
		{ .name = "layers.0.w", .dtype = RT_CKPT_F32, .rank = 2, .shape = { 2, 3 }, .data = w },
		{ .name = "big", .dtype = RT_CKPT_F32, .rank = 1, .shape = { 1000 }, .data = big },
		{ .name = "idx", .dtype = RT_CKPT_I32, .rank = 1, .shape = { 3 }, .data = ix },
		{ .name = "moe.experts.w1", .dtype = RT_CKPT_F32, .rank = 3, .shape = { NE, 4, 3 },
		  .data = experts },
		{ .name = "rng", .dtype = RT_CKPT_U64, .rank = 1, .shape = { 1 }, .data = &rng },
	};
	char st[16];
	snprintf(st, sizeof st, "%d", step);
	struct rt_ckpt_meta m[2] = { { "step", st }, { "model", "tiny" } };
	return rt_ckpt_write_sharded(d, "model", t, 5, m, 2, 1024, stderr);
}

static int count_files(const char *d, const char *suffix)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "test $(ls %s | grep -c '%s$') -eq 0", d, suffix);
	int n = 0;
	for (n = 0; n < 100; n++) {
		snprintf(cmd, sizeof cmd, "test $(ls %s | grep -c -- '%s$') -eq %d", d, suffix, n);
		if (system(cmd) == 0)
			return n;
	}
	return -1;
}

static void check_sharded(const char *where, int step)
{
	struct rt_ckpt *c = rt_ckpt_read(where, stderr);
	REQUIRE(c);
	CHECK(rt_ckpt_count(c) == 5);
	char st[16];
	snprintf(st, sizeof st, "%d", step);
	CHECK(!strcmp(rt_ckpt_meta_get(c, "step"), st));
	CHECK(rt_ckpt_meta_get(c, "total_size") == NULL); /* a number in the index */
	float w2[6], b2[1000], ex[NE][4][3];
	int64_t s23[2] = { 2, 3 }, s1000 = 1000, sex[3] = { NE, 4, 3 }, s3 = 3, s1 = 1;
	CHECK(rt_ckpt_load(c, "layers.0.w", RT_CKPT_F32, 2, s23, w2, stderr) == 0);
	CHECK(!memcmp(w, w2, sizeof w));
	CHECK(rt_ckpt_load(c, "big", RT_CKPT_F32, 1, &s1000, b2, stderr) == 0);
	CHECK(!memcmp(big, b2, sizeof big));
	CHECK(rt_ckpt_load(c, "moe.experts.w1", RT_CKPT_F32, 3, sex, ex, stderr) == 0);
	CHECK(!memcmp(experts, ex, sizeof ex));
	int32_t ix2[3];
	uint64_t r2;
	CHECK(rt_ckpt_load(c, "idx", RT_CKPT_I32, 1, &s3, ix2, stderr) == 0);
	CHECK(rt_ckpt_load(c, "rng", RT_CKPT_U64, 1, &s1, &r2, stderr) == 0 && r2 == rng);
	/* experts [2, 5) of 8, as an EP rank holding three of them reads them */
	float part[3][4][3];
	CHECK(rt_ckpt_load_rows(c, "moe.experts.w1", RT_CKPT_F32, 3, sex, 2, 5, part, stderr) == 0);
	CHECK(!memcmp(part, experts[2], sizeof part));
	CHECK(rt_ckpt_load_rows(c, "moe.experts.w1", RT_CKPT_F32, 3, sex, 8, 8, part, stderr) == 0);
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_ckpt_load_rows(c, "moe.experts.w1", RT_CKPT_F32, 3, sex, 6, 9, part, err) == -1);
	fclose(err);
	CHECKF(strstr(msg, "rows [6, 9)") && strstr(msg, "first dimension of 8"), "%s", msg);
	free(msg);
	rt_ckpt_free(c);
}

static char *read_all(const char *p)
{
	size_t n;
	return rt_read_file(p, &n);
}

static void expect_read_fails(const char *where, const char *want)
{
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	struct rt_ckpt *c = rt_ckpt_read(where, err);
	fclose(err);
	CHECKF(c == NULL, "%s was accepted", where);
	rt_ckpt_free(c);
	CHECKF(strstr(msg, want) != NULL, "message '%s' lacks '%s'", msg, want);
	free(msg);
}

static void test_sharded(void)
{
	char d[128], index[160], cmd[300];
	snprintf(d, sizeof d, "%s/sharded", dir);
	snprintf(index, sizeof index, "%s/model.safetensors.index.json", d);
	REQUIRE(write_sharded(d, 1) == 0);
	CHECK(count_files(d, ".safetensors") == 3);
	CHECK(count_files(d, "tmp.[0-9]*") == 0);
	check_sharded(d, 1);     /* the directory */
	check_sharded(index, 1); /* the index */
	char *ix1 = read_all(index);
	REQUIRE(ix1);
	CHECK(strstr(ix1, "\"weight_map\"") && strstr(ix1, "\"total_size\":\t4428") &&
	      strstr(ix1, "model-g1-00002-of-00003.safetensors"));
	/* a second save: new names, the index renamed last, the old shards gone */
	REQUIRE(write_sharded(d, 2) == 0);
	CHECK(count_files(d, ".safetensors") == 3);
	CHECK(count_files(d, "-g1-0000[123]-of-00003.safetensors") == 0);
	check_sharded(d, 2);
	/* a third save that fails part-way leaves the second whole and no new file */
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 2000; /* the shard holding "big" cannot be written */
	REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	struct rt_ckpt_tensor t = { .name = "big", .dtype = RT_CKPT_F32, .rank = 1,
				    .shape = { 1000 }, .data = big };
	CHECK(rt_ckpt_write_sharded(d, "model", &t, 1, NULL, 0, 1024, err) == -1);
	CHECK(rt_ckpt_write(path_in("sharded/model-g2-00002-of-00003.safetensors"), &t, 1, NULL,
			    0, err) == -1);
	fclose(err);
	REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
	CHECKF(strstr(msg, "cannot write the checkpoint"), "%s", msg);
	free(msg);
	CHECK(count_files(d, ".safetensors") == 3);
	CHECK(count_files(d, "tmp.[0-9]*") == 0);
	check_sharded(d, 2);

	/* a missing shard, a corrupt one, a truncated one, a tensor in the wrong shard */
	char s1[200], s2[200], s3[200], save[200];
	snprintf(s1, sizeof s1, "%s/model-g2-00001-of-00003.safetensors", d);
	snprintf(s2, sizeof s2, "%s/model-g2-00002-of-00003.safetensors", d);
	snprintf(s3, sizeof s3, "%s/model-g2-00003-of-00003.safetensors", d);
	snprintf(save, sizeof save, "%s/saved", dir);
	size_t n2;
	char *good2 = rt_read_file(s2, &n2);
	REQUIRE(good2);
	REQUIRE(rename(s3, save) == 0);
	expect_read_fails(d, "model-g2-00003-of-00003.safetensors (holding ");
	expect_read_fails(d, "No such file");
	REQUIRE(rename(save, s3) == 0);
	REQUIRE(rt_write_file_atomic(s2, good2, n2 - 100) == 0);
	expect_read_fails(index, "data_offsets are not [begin, end] within");
	expect_read_fails(index, "model-g2-00002-of-00003.safetensors");
	char *bad = rt_malloc(n2);
	memcpy(bad, good2, n2);
	bad[8] = '[';
	REQUIRE(rt_write_file_atomic(s2, bad, n2) == 0);
	expect_read_fails(index, "not a JSON object");
	REQUIRE(rt_write_file_atomic(s2, good2, 4) == 0);
	expect_read_fails(index, "too short");
	REQUIRE(rt_write_file_atomic(s2, good2, n2) == 0);
	check_sharded(d, 2);
	/* an index that puts a tensor in a shard not holding it, or names a path */
	char *ix2 = read_all(index);
	REQUIRE(ix2);
	char *p = strstr(ix2, "\"big\":\t\"model-g2-00002");
	REQUIRE(p);
	p[strlen("\"big\":\t\"model-g2-0000")] = '1';
	REQUIRE(rt_write_file_atomic(index, ix2, strlen(ix2)) == 0);
	expect_read_fails(index, "puts tensor 'big' in model-g2-00001-of-00003.safetensors, which "
			  "does not hold it");
	const char *evil = "{\"weight_map\": {\"a\": \"../x.safetensors\"}}";
	REQUIRE(rt_write_file_atomic(index, evil, strlen(evil)) == 0);
	expect_read_fails(index, "not a file name beside the index");
	REQUIRE(rt_write_file_atomic(index, "[1]", 3) == 0);
	expect_read_fails(index, "not a checkpoint index");
	expect_read_fails(d, "not a checkpoint index");
	/* a directory with no checkpoint */
	snprintf(cmd, sizeof cmd, "%s/empty", dir);
	REQUIRE(rt_mkdir_p(cmd) == 0);
	expect_read_fails(cmd, "no checkpoint here");
	rmdir(cmd);
	free(bad);
	free(good2);
	free(ix1);
	free(ix2);
	snprintf(cmd, sizeof cmd, "rm -rf %s", d);
	CHECK(system(cmd) == 0);
}

/* A single-file save that fails (the file-size limit) leaves the old file and no temp. */
static void test_write_failure(void)
{
	const char *p = path_in("good.safetensors");
	write_good(p);
	size_t n0;
	char *before = rt_read_file(p, &n0);
	REQUIRE(before);
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 1000;
	REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	struct rt_ckpt_tensor t = { .name = "big", .dtype = RT_CKPT_F32, .rank = 1,
				    .shape = { 1000 }, .data = big };
	char *msg = NULL;
	size_t mlen = 0;
	FILE *err = open_memstream(&msg, &mlen);
	CHECK(rt_ckpt_write(p, &t, 1, NULL, 0, err) == -1);
	fclose(err);
	REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
	CHECKF(strstr(msg, "cannot write the checkpoint: File too large"), "%s", msg);
	free(msg);
	size_t n1;
	char *after = rt_read_file(p, &n1);
	CHECK(after && n1 == n0 && !memcmp(before, after, n0));
	CHECK(count_files(dir, "tmp.[0-9]*") == 0);
	free(before);
	free(after);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--write-sharded")) {
		/* for ckpt_safetensors.sh: a sharded checkpoint for Python to read */
		return write_sharded(argv[2], 7) ? 1 : 0;
	}
	snprintf(dir, sizeof dir, "/tmp/sluice-test-ckpt-XXXXXX");
	REQUIRE(mkdtemp(dir));
	test_round_trip();
	test_corrupt();
	test_write_failure();
	test_sharded();
	unlink(path_in("good.safetensors"));
	rmdir(dir);
	return CHECK_DONE();
}
