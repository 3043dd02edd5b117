/* gpu_comm_test.c - every NCCL operation of runtime/comm.h checked element by element
 * on 2 GPUs (or all of this node's), then the faults: a rank killed in the middle of
 * the all-to-alls, a rank that hangs outside communication, a rank that hits an NCCL
 * error; each time every other rank must stop within 10 s naming it.  The program
 * launches its own ranks (rt_launch).  Without NCCL or with fewer than 2 GPUs it
 * says so and exits 77 (ctest: skipped). */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/comm.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

#ifdef SLUICE_HAVE_NCCL
static struct rt_comm *c;
static struct rt_gpu *g;
static int rank, n;

static rt_dptr dev(size_t bytes)
{
	rt_dptr d = rt_gpu_alloc(g, bytes ? bytes : 1, 4096);
	REQUIRE(d);
	/* poison: a result element nothing wrote shows up */
	REQUIRE(!rt_gpu_memset(g, d, 0xa5, bytes ? bytes : 1, RT_STREAM_COMM));
	return d;
}

static void up(rt_dptr d, const void *h, size_t bytes)
{
	REQUIRE(!rt_gpu_copy_to_device(g, d, h, bytes, RT_STREAM_COMM));
}

static void down(void *h, rt_dptr d, size_t bytes)
{
	REQUIRE(!rt_gpu_copy_to_host(g, h, d, bytes, RT_STREAM_COMM));
	rt_comm_sync(c, NULL);
}

/* bf16 of a small whole number (exact) and back */
static uint16_t bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return (uint16_t)(u >> 16);
}

static float unbf16(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static int bad_first; /* report only the first wrong element of each check */
#define EXPECT_EQ(what, i, got, want)                                                        \
	do {                                                                                 \
		if ((got) != (want)) {                                                       \
			if (!bad_first++)                                                    \
				fprintf(stderr, "rank %d: %s: element %zu is %.17g, expected %.17g\n", \
					rank, what, (size_t)(i), (double)(got), (double)(want)); \
			check_failures++;                                                    \
		}                                                                            \
	} while (0)

static void test_all_reduce(void)
{
	size_t count = (1 << 20) + 3, mark = rt_gpu_arena_mark(g);
	float *x = rt_malloc(count * 4);
	uint16_t *y = rt_malloc(count * 2);
	for (size_t i = 0; i < count; i++) {
		x[i] = (float)(i % 97) + 1000.0f * (float)rank;
		y[i] = bf16((float)(i % 7 + (size_t)rank));
	}
	rt_dptr s = dev(count * 4), r = dev(count * 4), sb = dev(count * 2), rb = dev(count * 2);
	up(s, x, count * 4);
	up(sb, y, count * 2);
	rt_comm_all_reduce_sum(c, s, r, count, RT_COMM_F32, NULL);
	rt_comm_all_reduce_sum(c, sb, rb, count, RT_COMM_BF16, NULL);
	down(x, r, count * 4);
	down(y, rb, count * 2);
	bad_first = 0;
	for (size_t i = 0; i < count; i++) {
		EXPECT_EQ("all-reduce f32", i, x[i], (float)(n * (int)(i % 97)) + 1000.0f * (float)(n * (n - 1) / 2));
		EXPECT_EQ("all-reduce bf16", i, unbf16(y[i]), (float)(n * (int)(i % 7) + n * (n - 1) / 2));
	}
	free(x);
	free(y);
	rt_gpu_arena_reset(g, mark);
}

static void test_reduce_scatter_all_gather(void)
{
	size_t count = 4099, mark = rt_gpu_arena_mark(g);
	float *x = rt_malloc((size_t)n * count * 4);
	int32_t *k = rt_malloc((size_t)n * count * 4);
	for (size_t j = 0; j < (size_t)n * count; j++)
		x[j] = (float)(j % 1013) + (float)rank;
	rt_dptr s = dev((size_t)n * count * 4), r = dev(count * 4);
	up(s, x, (size_t)n * count * 4);
	rt_comm_reduce_scatter_sum(c, s, r, count, RT_COMM_F32, NULL);
	down(x, r, count * 4);
	bad_first = 0;
	for (size_t i = 0; i < count; i++)
		EXPECT_EQ("reduce-scatter", i, x[i],
			  (float)(n * (int)(((size_t)rank * count + i) % 1013) + n * (n - 1) / 2));
	for (size_t i = 0; i < count; i++)
		k[i] = rank * 100000 + (int32_t)i;
	rt_dptr gs = dev(count * 4), gr = dev((size_t)n * count * 4);
	up(gs, k, count * 4);
	rt_comm_all_gather(c, gs, gr, count, RT_COMM_I32, NULL);
	down(k, gr, (size_t)n * count * 4);
	bad_first = 0;
	for (size_t j = 0; j < (size_t)n * count; j++)
		EXPECT_EQ("all-gather", j, k[j], (int32_t)(j / count) * 100000 + (int32_t)(j % count));
	free(x);
	free(k);
	rt_gpu_arena_reset(g, mark);
}

static void test_send_recv(void)
{
	size_t count = (1 << 20) + 1, mark = rt_gpu_arena_mark(g);
	int32_t *x = rt_malloc(count * 4);
	int next = (rank + 1) % n, prev = (rank + n - 1) % n;
	for (size_t i = 0; i < count; i++)
		x[i] = rank * 3000000 + (int32_t)i;
	rt_dptr s = dev(count * 4), r = dev(count * 4), r2 = dev(count * 4);
	up(s, x, count * 4);
	rt_comm_sendrecv(c, s, count, next, r, count, prev, RT_COMM_I32, NULL);
	down(x, r, count * 4);
	bad_first = 0;
	for (size_t i = 0; i < count; i++)
		EXPECT_EQ("send/recv ring", i, x[i], prev * 3000000 + (int32_t)i);
	/* a plain send from rank 0 to rank 1 */
	if (rank == 0)
		rt_comm_send(c, s, count, RT_COMM_I32, 1, NULL);
	else if (rank == 1)
		rt_comm_recv(c, r2, count, RT_COMM_I32, 0, NULL);
	if (rank == 1) {
		down(x, r2, count * 4);
		bad_first = 0;
		for (size_t i = 0; i < count; i++)
			EXPECT_EQ("send then recv", i, x[i], (int32_t)i);
	}
	rt_comm_sync(c, NULL);
	free(x);
	rt_gpu_arena_reset(g, mark);
}

static int32_t a2a_val(int src, int dst, size_t i)
{
	return src * 10000000 + dst * 100000 + (int32_t)i;
}

static void test_all_to_all(void)
{
	size_t count = 3001, mark = rt_gpu_arena_mark(g), all = (size_t)n * count;
	int32_t *x = rt_malloc(all * 4);
	for (int p = 0; p < n; p++)
		for (size_t i = 0; i < count; i++)
			x[(size_t)p * count + i] = a2a_val(rank, p, i);
	rt_dptr s = dev(all * 4), r = dev(all * 4), r2 = dev(all * 4);
	up(s, x, all * 4);
	rt_comm_all_to_all(c, s, r, count, RT_COMM_I32, NULL);
	size_t *cnt = rt_malloc(2 * (size_t)n * sizeof *cnt), *off = cnt + n;
	for (int p = 0; p < n; p++) {
		cnt[p] = count;
		off[p] = (size_t)p * count;
	}
	rt_comm_all_to_allv(c, s, cnt, off, r2, cnt, off, RT_COMM_I32, NULL);
	for (int pass = 0; pass < 2; pass++) {
		down(x, pass ? r2 : r, all * 4);
		bad_first = 0;
		for (int p = 0; p < n; p++)
			for (size_t i = 0; i < count; i++)
				EXPECT_EQ(pass ? "all-to-all (grouped p2p)" : "all-to-all", (size_t)p * count + i,
					  x[(size_t)p * count + i], a2a_val(p, rank, i));
	}
	free(x);
	free(cnt);
	rt_gpu_arena_reset(g, mark);
}

/* counts that change every call, zeros included */
static size_t vcount(int src, int dst, int call)
{
	if ((src + dst + call) % 4 == 0)
		return 0;
	return (size_t)((src * 7 + dst * 13 + call * 5) % 50) * 37 + 1;
}

static void test_all_to_allv(void)
{
	size_t mark = rt_gpu_arena_mark(g), cap = 50 * 37 + 1, room = (size_t)n * cap;
	int32_t *x = rt_malloc(room * 4), *y = rt_malloc(room * 4);
	size_t *sc = rt_malloc(5 * (size_t)n * sizeof *sc), *so = sc + n, *rc = so + n, *ro = rc + n,
	       *got = ro + n;
	int64_t *dc = rt_malloc((size_t)n * 8), *drc = rt_malloc((size_t)n * 8);
	rt_dptr s = dev(room * 4), r = dev(room * 4), d_sc = dev((size_t)n * 8);
	rt_dptr fs = dev(room * 4), fr = dev(room * 4), d_rc = dev((size_t)n * 8);
	/* the symmetric-memory kernel: room for exactly the worst case */
	char err[512];
	struct rt_comm_sym *sym = rt_comm_sym_new(c, room * 4, 0, err, sizeof err);
	CHECKF(sym != NULL, "rt_comm_sym_new: %s", err);
	for (int call = 0; call < 4; call++) {
		size_t st = 0, rt = 0;
		for (int p = 0; p < n; p++) {
			sc[p] = vcount(rank, p, call);
			rc[p] = vcount(p, rank, call);
			so[p] = st;
			ro[p] = rt;
			for (size_t i = 0; i < sc[p]; i++)
				x[st + i] = a2a_val(rank, p, i) + call;
			st += sc[p];
			rt += rc[p];
			dc[p] = (int64_t)sc[p];
		}
		up(s, x, st * 4);
		up(d_sc, dc, (size_t)n * 8);
		/* counts on the host */
		REQUIRE(!rt_gpu_memset(g, r, 0xa5, room * 4, RT_STREAM_COMM));
		rt_comm_all_to_allv(c, s, sc, so, r, rc, ro, RT_COMM_I32, NULL);
		down(y, r, room * 4);
		bad_first = 0;
		for (int p = 0; p < n; p++)
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-allv (host counts)", ro[p] + i, y[ro[p] + i],
					  a2a_val(p, rank, i) + call);
		for (size_t i = rt; i < room; i++)
			EXPECT_EQ("all-to-allv: past the received data", i, (uint32_t)y[i], 0xa5a5a5a5u);
		/* counts on the device, exchanged */
		REQUIRE(!rt_gpu_memset(g, r, 0xa5, room * 4, RT_STREAM_COMM));
		rt_comm_all_to_allv_dev(c, s, d_sc, r, room, got, RT_COMM_I32, NULL);
		down(y, r, room * 4);
		bad_first = 0;
		for (int p = 0; p < n; p++) {
			EXPECT_EQ("count exchange", p, got[p], rc[p]);
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-allv (count exchange)", ro[p] + i, y[ro[p] + i],
					  a2a_val(p, rank, i) + call);
		}
		/* counts on the device, one kernel over symmetric memory */
		if (sym) {
			int64_t *src = rt_malloc((size_t)n * 8);
			for (int p = 0; p < n; p++)
				src[p] = -7;
			up(d_rc, src, (size_t)n * 8);
			rt_comm_sym_all_to_allv(sym, s, d_sc, d_rc, RT_COMM_I32, NULL);
			down(drc, d_rc, (size_t)n * 8);
			down(y, rt_comm_sym_rbuf(sym), rt * 4);
			bad_first = 0;
			for (int p = 0; p < n; p++) {
				EXPECT_EQ("symmetric: counts", p, drc[p], (int64_t)rc[p]);
				for (size_t i = 0; i < rc[p]; i++)
					EXPECT_EQ("all-to-allv (symmetric kernel)", ro[p] + i, y[ro[p] + i],
						  a2a_val(p, rank, i) + call);
			}
			CHECKF(!rt_comm_sym_overflowed(sym, NULL), "symmetric: overflow reported");
			free(src);
		}
		/* worst case: blocks of cap, counts beside */
		for (int p = 0; p < n; p++)
			for (size_t i = 0; i < cap; i++)
				x[(size_t)p * cap + i] = i < sc[p] ? a2a_val(rank, p, i) + call : -1;
		up(fs, x, room * 4);
		rt_comm_all_to_all_fixed(c, fs, d_sc, fr, d_rc, cap, RT_COMM_I32, NULL);
		down(y, fr, room * 4);
		down(drc, d_rc, (size_t)n * 8);
		bad_first = 0;
		for (int p = 0; p < n; p++) {
			EXPECT_EQ("worst case: counts", p, drc[p], (int64_t)rc[p]);
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-all (worst case)", (size_t)p * cap + i,
					  y[(size_t)p * cap + i], a2a_val(p, rank, i) + call);
		}
	}
	rt_comm_sym_free(sym);
	/* too little room: nothing moves, every count reads -1, the overflow is reported */
	struct rt_comm_sym *small = rt_comm_sym_new(c, 16, 4, err, sizeof err);
	CHECKF(small != NULL, "rt_comm_sym_new (small): %s", err);
	if (small) {
		for (int p = 0; p < n; p++)
			dc[p] = 100;
		up(d_sc, dc, (size_t)n * 8);
		rt_comm_sym_all_to_allv(small, s, d_sc, d_rc, RT_COMM_I32, NULL);
		down(drc, d_rc, (size_t)n * 8);
		bad_first = 0;
		for (int p = 0; p < n; p++)
			EXPECT_EQ("symmetric, no room: counts", p, drc[p], (int64_t)-1);
		CHECKF(rt_comm_sym_overflowed(small, NULL), "symmetric: overflow not reported");
		rt_comm_sym_free(small);
	}
	free(x);
	free(y);
	free(sc);
	free(dc);
	free(drc);
	rt_gpu_arena_reset(g, mark);
}

static void test_split(void)
{
	size_t mark = rt_gpu_arena_mark(g);
	int32_t v[64], out[64];
	rt_dptr s = dev(4), r = dev(64 * 4);
	v[0] = 100 + rank;
	up(s, v, 4);
	/* every rank, in reverse order */
	struct rt_comm *rev = rt_comm_split(c, 0, n - 1 - rank);
	REQUIRE(rev);
	CHECK(rt_comm_size(rev) == n && rt_comm_rank(rev) == n - 1 - rank);
	rt_comm_all_gather(rev, s, r, 1, RT_COMM_I32, NULL);
	down(out, r, (size_t)n * 4);
	for (int q = 0; q < n && q < 64; q++)
		EXPECT_EQ("split (reversed) all-gather", q, out[q], 100 + (n - 1 - q));
	/* pairs by parity, and the last rank joins none */
	int color = rank == n - 1 ? -1 : rank % 2;
	struct rt_comm *par = rt_comm_split(c, color, rank);
	CHECK((par == NULL) == (color < 0));
	if (par) {
		int members = 0, sum = 0;
		for (int q = 0; q < n - 1; q++)
			if (q % 2 == color) {
				members++;
				sum += 100 + q;
			}
		CHECK(rt_comm_size(par) == members);
		rt_comm_all_reduce_sum(par, s, r, 1, RT_COMM_I32, NULL);
		down(out, r, 4);
		EXPECT_EQ("split (parity) all-reduce", 0, out[0], sum);
		rt_comm_free(par);
	}
	rt_comm_free(rev);
	rt_gpu_arena_reset(g, mark);
}

/* the pipeline, data-, expert- and expert-data-parallel groups of a few layouts */
static void test_groups(void)
{
	struct rt_layout layouts[] = { { n, 1, 1 }, { 1, n, n }, { 1, n, 1 } };
	size_t mark = rt_gpu_arena_mark(g);
	int32_t v = 1 << rank, out;
	rt_dptr s = dev(4), r = dev(4);
	up(s, &v, 4);
	for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
		const struct rt_layout *l = &layouts[i];
		char err[256];
		REQUIRE(rt_layout_check(l, n, err, sizeof err) == 0);
		struct rt_comm *grp[RT_GROUPS];
		rt_comm_groups(c, l, grp);
		for (int k = 0; k < RT_GROUPS; k++) {
			/* the sum of 1 << member over the group says who is in it */
			int color, key, want = 0, size = 0;
			rt_layout_group(l, rank, (enum rt_group)k, &color, &key);
			for (int q = 0; q < n; q++) {
				int cq, kq;
				rt_layout_group(l, q, (enum rt_group)k, &cq, &kq);
				if (cq == color) {
					want |= 1 << q;
					size++;
				}
			}
			CHECKF(rt_comm_size(grp[k]) == size && rt_comm_rank(grp[k]) == key,
			       "layout %zu, %s group: rank %d of %d", i, rt_group_name((enum rt_group)k),
			       rt_comm_rank(grp[k]), rt_comm_size(grp[k]));
			rt_comm_all_reduce_sum(grp[k], s, r, 1, RT_COMM_I32, NULL);
			down(&out, r, 4);
			EXPECT_EQ(rt_group_name((enum rt_group)k), i, out, want);
		}
		for (int k = RT_GROUPS - 1; k >= 0; k--)
			rt_comm_free(grp[k]);
	}
	rt_gpu_arena_reset(g, mark);
}

static int as_rank(const char *mode)
{
	char err[4096];
	struct rt_comm_opts o = { .program = mode, .program_len = strlen(mode),
				  .arena_bytes = (size_t)256 << 20, .max_ctas = 16 };
	c = rt_comm_init(&o, err, sizeof err);
	if (!c) {
		fprintf(stderr, "sluice: %s\n", err);
		return 1;
	}
	g = rt_comm_gpu(c);
	rank = rt_comm_rank(c);
	n = rt_comm_size(c);
	if (!strcmp(mode, "ops")) {
		test_all_reduce();
		test_reduce_scatter_all_gather();
		test_send_recv();
		test_all_to_all();
		test_all_to_allv();
		test_split();
		test_groups();
		fprintf(stderr, "rank %d: %s\n", rank, check_failures ? "FAILED" : "every result right");
		rt_comm_free(c);
		return CHECK_DONE();
	}
	/* the faults: rank 1 is the one that fails */
	size_t count = (size_t)16 << 20, mark = rt_gpu_arena_mark(g);
	rt_dptr s = dev(count), r = dev(count);
	double t0 = rt_now();
	for (int it = 0; rt_now() - t0 < 60; it++) {
		if (it == 10 && rank == 1) {
			char path[256];
			snprintf(path, sizeof path, "%s", getenv("COMM_GPU_STAMP"));
			FILE *f = fopen(path, "w");
			if (f) {
				fprintf(f, "%.6f\n", rt_now());
				fclose(f);
			}
			if (!strcmp(mode, "kill"))
				raise(SIGKILL);
			if (!strcmp(mode, "hang"))
				sleep(60);
			if (!strcmp(mode, "error"))
				rt_comm_send(c, s, count, RT_COMM_U8, n + 5, NULL); /* no such peer */
		}
		rt_comm_all_to_all(c, s, r, count / (size_t)n, RT_COMM_U8, NULL);
		rt_comm_sync(c, NULL);
	}
	rt_gpu_arena_reset(g, mark);
	fprintf(stderr, "rank %d: still running after 60 s\n", rank);
	return 0;
}

/* Launches a fault mode; the ranks' stderr is captured and checked. */
static void fault(const char *mode, const char *needle)
{
	char path[64], stamp[64];
	snprintf(path, sizeof path, "/tmp/sluice-commgpu-%d.err", (int)getpid());
	snprintf(stamp, sizeof stamp, "/tmp/sluice-commgpu-%d.stamp", (int)getpid());
	unlink(stamp);
	setenv("COMM_GPU_MODE", mode, 1);
	setenv("COMM_GPU_STAMP", stamp, 1);
	fflush(stderr);
	int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	int st = rt_launch(2);
	double end = rt_now();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char *out = rt_read_file(path, NULL), *t = rt_read_file(stamp, NULL);
	double failed = t ? atof(t) : 0;
	fprintf(stderr, "--- fault '%s': launcher status %d, every rank ended %.1f s after rank 1 "
			"failed; their stderr:\n%s", mode, st, failed ? end - failed : -1, out ? out : "");
	CHECKF(st != 0, "fault %s: the job exited 0", mode);
	CHECKF(failed > 0 && end - failed < 10, "fault %s: ranks ended %.1f s after the failure",
	       mode, end - failed);
	CHECKF(out && strstr(out, "sluice: rank 0: rank 1 failed") && strstr(out, needle),
	       "fault %s: rank 0 did not name rank 1 with '%s'", mode, needle);
	free(out);
	free(t);
	unlink(path);
	unlink(stamp);
}
#endif

int main(int argc, char **argv)
{
#ifndef SLUICE_HAVE_NCCL
	(void)argc;
	(void)argv;
	(void)check_failures;
	printf("SKIP: comm_gpu: sluice was built without NCCL\n");
	return 77;
#else
	if (getenv("SLUICE_LAUNCHED"))
		return as_rank(getenv("COMM_GPU_MODE"));
	int ngpu = rt_gpu_count();
	if (ngpu < 2) {
		printf("SKIP: comm_gpu needs 2 GPUs, this machine has %d%s%s\n", ngpu,
		       ngpu ? "" : ": ", ngpu ? "" : rt_gpu_why_none());
		return 77;
	}
	const char *only = argc > 1 ? argv[1] : NULL;
	if (!only || !strcmp(only, "ops")) {
		setenv("COMM_GPU_MODE", "ops", 1);
		int st = rt_launch(2);
		CHECKF(st == 0, "operations on 2 GPUs: status %d", st);
	}
	if (!only || !strcmp(only, "faults")) {
		fault("kill", "killed by signal 9");
		setenv("SLUICE_COMM_TIMEOUT", "3", 1);
		fault("hang", "rank 1 did not join a communication operation");
		unsetenv("SLUICE_COMM_TIMEOUT");
		fault("error", "NCCL");
	}
	return CHECK_DONE();
#endif
}
