/* test_kcache.c - the kernel cache without a GPU: SHA-256 against its published test
 * vectors, cache keys that are stable (a pinned value) and change with every input,
 * entries that round-trip, damaged entries read as misses, the default directory,
 * and atomic writes: several processes writing two versions of one entry while
 * others read it never expose a partial entry, and leave no temp file behind. */
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

#include <string.h>

static void hex(const unsigned char *h, char *out)
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void test_sha(void)
{
	unsigned char h[32];
	char s[65];
	rt_sha256("abc", 3, h);
	hex(h, s);
	CHECK(!strcmp(s, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	rt_sha256("", 0, h);
	hex(h, s);
	CHECK(!strcmp(s, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	rt_sha256(two, strlen(two), h);
	hex(h, s);
	CHECK(!strcmp(s, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

static void test_keys(void)
{
	const char *opts[] = { "--use_fast_math", "-DX=1" };
	char k[RT_KCACHE_KEY_LEN + 1], k2[RT_KCACHE_KEY_LEN + 1];
	rt_kcache_key(k, "__global__ void f() {}", opts, 2, 13000, "sm_90");
	CHECK(strlen(k) == RT_KCACHE_KEY_LEN);
	/* pinned: a change here invalidates every cache on every machine; do it only on
	 * purpose (and then bump "sluice-kcache-v1" in gpu_common.c) */
	printf("key: %s\n", k);
	CHECK(!strcmp(k, "eb1a521fe5e2caad6cd1cbbce683bb4197dff43ae5eeb814ea477867708d4263"));
	rt_kcache_key(k2, "__global__ void f() {}", opts, 2, 13000, "sm_90");
	CHECK(!strcmp(k, k2));
	rt_kcache_key(k2, "__global__ void f() { }", opts, 2, 13000, "sm_90");
	CHECK(strcmp(k, k2));
	rt_kcache_key(k2, "__global__ void f() {}", opts, 1, 13000, "sm_90");
	CHECK(strcmp(k, k2));
	rt_kcache_key(k2, "__global__ void f() {}", opts, 2, 13010, "sm_90");
	CHECK(strcmp(k, k2));
	rt_kcache_key(k2, "__global__ void f() {}", opts, 2, 13000, "sm_100");
	CHECK(strcmp(k, k2));
	/* fields are delimited: moving text between two options changes the key */
	const char *o1[] = { "ab", "c" }, *o2[] = { "a", "bc" };
	rt_kcache_key(k, "x", o1, 2, 1, "sm_90");
	rt_kcache_key(k2, "x", o2, 2, 1, "sm_90");
	CHECK(strcmp(k, k2));
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

enum { PAYLOAD = 64 * 1024, WRITERS = 6, READERS = 2 };

static void payload(unsigned char *p, int version)
{
	for (size_t i = 0; i < PAYLOAD; i++)
		p[i] = (unsigned char)(i * 131 + (size_t)version * 17 + i / 4096);
}

static void test_entries(const char *dir)
{
	char key[RT_KCACHE_KEY_LEN + 1];
	rt_kcache_key(key, "entry", NULL, 0, 1, "sm_90");
	size_t n;
	CHECK(rt_kcache_load(key, &n) == NULL); /* absent */
	unsigned char *v0 = rt_malloc(PAYLOAD), *v1 = rt_malloc(PAYLOAD);
	payload(v0, 0);
	payload(v1, 1);
	CHECK(rt_kcache_store(key, v0, PAYLOAD) == 0);
	unsigned char *got = rt_kcache_load(key, &n);
	CHECK(got && n == PAYLOAD && !memcmp(got, v0, PAYLOAD));
	free(got);
	CHECK(count_files(dir) == 1);

	/* a damaged entry is a miss */
	char path[4096];
	snprintf(path, sizeof path, "%s/%s.cubin", dir, key);
	size_t flen;
	char *raw = rt_read_file(path, &flen);
	REQUIRE(raw);
	raw[flen - 10] ^= 1;
	CHECK(rt_write_file_atomic(path, raw, flen) == 0);
	CHECK(rt_kcache_load(key, &n) == NULL);
	CHECK(rt_write_file_atomic(path, raw, flen / 2) == 0); /* truncated */
	CHECK(rt_kcache_load(key, &n) == NULL);
	free(raw);

	/* writers store v0 or v1 over and over; readers must see one of them whole */
	pid_t pids[WRITERS + READERS];
	for (int w = 0; w < WRITERS + READERS; w++) {
		pids[w] = fork();
		REQUIRE(pids[w] >= 0);
		if (pids[w])
			continue;
		int bad = 0;
		if (w < WRITERS) {
			for (int i = 0; i < 30; i++)
				bad |= rt_kcache_store(key, (w + i) & 1 ? v1 : v0, PAYLOAD) != 0;
		} else {
			for (int i = 0; i < 150; i++) {
				unsigned char *p = rt_kcache_load(key, &n);
				if (p && (n != PAYLOAD ||
					  (memcmp(p, v0, PAYLOAD) && memcmp(p, v1, PAYLOAD))))
					bad = 1;
				free(p);
			}
		}
		_exit(bad);
	}
	for (int w = 0; w < WRITERS + READERS; w++) {
		int st;
		REQUIRE(waitpid(pids[w], &st, 0) == pids[w]);
		CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s %d saw a bad entry",
		       w < WRITERS ? "writer" : "reader", w);
	}
	got = rt_kcache_load(key, &n);
	CHECK(got && n == PAYLOAD && (!memcmp(got, v0, PAYLOAD) || !memcmp(got, v1, PAYLOAD)));
	free(got);
	CHECKF(count_files(dir) == 1, "%zu files in the cache: temp files left behind",
	       count_files(dir));
	free(v0);
	free(v1);
}

int main(void)
{
	test_sha();
	test_keys();
	char dir[] = "/tmp/sluice-kcache-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	setenv("SLUICE_CACHE_DIR", dir, 1);
	CHECK(!strcmp(rt_kcache_dir(), dir));
	test_entries(dir);

	/* the default place: $HOME/.cache/sluice/kernels, made when missing */
	unsetenv("SLUICE_CACHE_DIR");
	unsetenv("XDG_CACHE_HOME");
	setenv("HOME", dir, 1);
	char want[256];
	snprintf(want, sizeof want, "%s/.cache/sluice/kernels", dir);
	const char *d = rt_kcache_dir();
	CHECK(d && !strcmp(d, want));

	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
	return CHECK_DONE();
}
