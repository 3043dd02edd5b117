/* mpi_comm_test.c - the MPI backend of runtime/comm.h on CPU ranks.
 *
 *   mpirun -np N comm_mpi ops   every operation checked element by element (ctest runs
 *                               it on 2, 3 and 4 ranks, mpirun started by hand);
 *   comm_mpi kill               3 ranks started by rt_launch_mpi; rank 1 is SIGKILLed
 *                               in the middle of the all-reduces: the job must end
 *                               within 10 s, rank 0 naming rank 1;
 *   comm_mpi hang               3 ranks; rank 1 never joins an all-reduce: with
 *                               SLUICE_COMM_TIMEOUT=2 the job ends within 10 s, naming it;
 *   comm_mpi error              3 ranks; rank 1 sends to a rank that does not exist: the
 *                               MPI error, named, ends the job;
 *   comm_mpi launch             rt_launch_mpi with 2 ranks: each sees its rank, the
 *                               world size and its share of the threads; a failing rank's
 *                               status comes back.
 * Built without MPI it says so and exits 77 (ctest: skipped). */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/comm.h"
#include "runtime/rt.h"

#ifdef SLUICE_HAVE_MPI
#define H(p) ((uint64_t)(uintptr_t)(p))

static struct rt_comm *c;
static int rank, n;

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

/* a buffer of poison: an element nothing wrote shows up */
static void *poisoned(size_t bytes)
{
	void *p = rt_malloc(bytes ? bytes : 1);
	memset(p, 0xa5, bytes ? bytes : 1);
	return p;
}

static int32_t val(int src, int dst, size_t i)
{
	return src * 10000000 + dst * 100000 + (int32_t)(i % 100000);
}

/* Sends and receives to both neighbours, posted in opposite orders on even and odd
 * ranks, complete at one sync: none may block another.  Big enough for MPI's
 * rendezvous protocol, where a blocking send would wait for its receive. */
static void test_send_recv(void)
{
	size_t count = (size_t)1 << 18;
	int next = (rank + 1) % n, prev = (rank + n - 1) % n;
	int32_t *to_next = rt_malloc(count * 4), *to_prev = rt_malloc(count * 4);
	int32_t *from_prev = poisoned(count * 4), *from_next = poisoned(count * 4);
	for (size_t i = 0; i < count; i++) {
		to_next[i] = val(rank, next, i);
		to_prev[i] = val(rank, prev, i) + 1;
	}
	for (int pass = 0; pass < 2; pass++) {
		if (pass == rank % 2) {
			rt_comm_send(c, H(to_next), count, RT_COMM_I32, next, NULL);
			rt_comm_send(c, H(to_prev), count, RT_COMM_I32, prev, NULL);
		} else {
			/* with 2 ranks next == prev: messages from one peer arrive in order */
			rt_comm_recv(c, H(from_prev), count, RT_COMM_I32, prev, NULL);
			rt_comm_recv(c, H(from_next), count, RT_COMM_I32, next, NULL);
		}
	}
	rt_comm_sync(c, NULL);
	bad_first = 0;
	for (size_t i = 0; i < count; i++) {
		EXPECT_EQ("recv from prev", i, from_prev[i], val(prev, rank, i));
		EXPECT_EQ("recv from next", i, from_next[i], val(next, rank, i) + 1);
	}
	/* sendrecv around the ring, the other way */
	memset(from_next, 0xa5, count * 4);
	rt_comm_sendrecv(c, H(to_prev), count, prev, H(from_next), count, next, RT_COMM_I32, NULL);
	rt_comm_sync(c, NULL);
	bad_first = 0;
	for (size_t i = 0; i < count; i++)
		EXPECT_EQ("sendrecv", i, from_next[i], val(next, rank, i) + 1);
	/* a plain send from rank 0 to the last rank, of bytes */
	char *b = poisoned(1001);
	if (rank == 0) {
		for (int i = 0; i < 1001; i++)
			b[i] = (char)(i * 7);
		rt_comm_send(c, H(b), 1001, RT_COMM_U8, n - 1, NULL);
	} else if (rank == n - 1) {
		rt_comm_recv(c, H(b), 1001, RT_COMM_U8, 0, NULL);
	}
	rt_comm_sync(c, NULL);
	bad_first = 0;
	if (rank == n - 1)
		for (int i = 0; i < 1001; i++)
			EXPECT_EQ("send u8", i, b[i], (char)(i * 7));
	free(b);
	free(to_next);
	free(to_prev);
	free(from_prev);
	free(from_next);
}

static void test_all_reduce(void)
{
	size_t count = 100003;
	float *x = rt_malloc(count * 4), *y = poisoned(count * 4);
	int64_t *k = rt_malloc(count * 8), *m = poisoned(count * 8);
	for (size_t i = 0; i < count; i++) {
		x[i] = (float)(i % 97) + 1000.0f * (float)rank;
		k[i] = ((int64_t)1 << 40) * rank + (int64_t)i;
	}
	rt_comm_all_reduce_sum(c, H(x), H(y), count, RT_COMM_F32, NULL);
	rt_comm_all_reduce_sum(c, H(k), H(m), count, RT_COMM_I64, NULL);
	bad_first = 0;
	for (size_t i = 0; i < count; i++) {
		EXPECT_EQ("all-reduce f32", i, y[i],
			  (float)(n * (int)(i % 97)) + 1000.0f * (float)(n * (n - 1) / 2));
		EXPECT_EQ("all-reduce i64", i, m[i],
			  ((int64_t)1 << 40) * (n * (n - 1) / 2) + (int64_t)n * (int64_t)i);
	}
	/* in place, as NCCL allows */
	rt_comm_all_reduce_sum(c, H(x), H(x), count, RT_COMM_F32, NULL);
	bad_first = 0;
	for (size_t i = 0; i < count; i++)
		EXPECT_EQ("all-reduce f32 in place", i, x[i], y[i]);
	int32_t v = rank + 1, s = 0;
	rt_comm_all_reduce_sum(c, H(&v), H(&s), 1, RT_COMM_I32, NULL);
	EXPECT_EQ("all-reduce i32", 0, s, n * (n + 1) / 2);
	free(x);
	free(y);
	free(k);
	free(m);
}

static void test_reduce_scatter_all_gather(void)
{
	size_t count = 4099, all = (size_t)n * count;
	float *x = rt_malloc(all * 4), *r = poisoned(count * 4);
	for (size_t j = 0; j < all; j++)
		x[j] = (float)(j % 1013) + (float)rank;
	rt_comm_reduce_scatter_sum(c, H(x), H(r), count, RT_COMM_F32, NULL);
	bad_first = 0;
	for (size_t i = 0; i < count; i++)
		EXPECT_EQ("reduce-scatter", i, r[i],
			  (float)(n * (int)(((size_t)rank * count + i) % 1013) + n * (n - 1) / 2));
	int32_t *k = rt_malloc(count * 4), *g = poisoned(all * 4);
	for (size_t i = 0; i < count; i++)
		k[i] = rank * 100000 + (int32_t)i;
	rt_comm_all_gather(c, H(k), H(g), count, RT_COMM_I32, NULL);
	bad_first = 0;
	for (size_t j = 0; j < all; j++)
		EXPECT_EQ("all-gather", j, g[j], (int32_t)(j / count) * 100000 + (int32_t)(j % count));
	/* bf16 moves as bytes; in place (this rank's block already in its slot) */
	uint16_t *h = poisoned(all * 2);
	for (size_t i = 0; i < count; i++)
		h[(size_t)rank * count + i] = (uint16_t)(rank * 1000 + (int)(i % 1000));
	rt_comm_all_gather(c, H(h + (size_t)rank * count), H(h), count, RT_COMM_BF16, NULL);
	bad_first = 0;
	for (size_t j = 0; j < all; j++)
		EXPECT_EQ("all-gather bf16 in place", j, h[j],
			  (uint16_t)((int)(j / count) * 1000 + (int)(j % count % 1000)));
	free(x);
	free(r);
	free(k);
	free(g);
	free(h);
}

static void test_all_to_all(void)
{
	size_t count = 3001, all = (size_t)n * count;
	int32_t *x = rt_malloc(all * 4), *y = poisoned(all * 4);
	for (int p = 0; p < n; p++)
		for (size_t i = 0; i < count; i++)
			x[(size_t)p * count + i] = val(rank, p, i);
	rt_comm_all_to_all(c, H(x), H(y), count, RT_COMM_I32, NULL);
	bad_first = 0;
	for (int p = 0; p < n; p++)
		for (size_t i = 0; i < count; i++)
			EXPECT_EQ("all-to-all", (size_t)p * count + i, y[(size_t)p * count + i],
				  val(p, rank, i));
	free(x);
	free(y);
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
	size_t cap = 50 * 37 + 1, room = (size_t)n * cap;
	int32_t *x = rt_malloc(room * 4), *y = rt_malloc(room * 4);
	size_t *sc = rt_malloc(5 * (size_t)n * sizeof *sc), *so = sc + n, *rc = so + n, *ro = rc + n,
	       *got = ro + n;
	int64_t *dc = rt_malloc((size_t)n * 8), *drc = rt_malloc((size_t)n * 8);
	for (int call = 0; call < 4; call++) {
		size_t st = 0, rt = 0;
		for (int p = 0; p < n; p++) {
			sc[p] = vcount(rank, p, call);
			rc[p] = vcount(p, rank, call);
			so[p] = st;
			ro[p] = rt;
			for (size_t i = 0; i < sc[p]; i++)
				x[st + i] = val(rank, p, i) + call;
			st += sc[p];
			rt += rc[p];
			dc[p] = (int64_t)sc[p];
		}
		/* counts on the host */
		memset(y, 0xa5, room * 4);
		rt_comm_all_to_allv(c, H(x), sc, so, H(y), rc, ro, RT_COMM_I32, NULL);
		bad_first = 0;
		for (int p = 0; p < n; p++)
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-allv", ro[p] + i, y[ro[p] + i], val(p, rank, i) + call);
		for (size_t i = rt; i < room; i++)
			EXPECT_EQ("all-to-allv: past the received data", i, (uint32_t)y[i], 0xa5a5a5a5u);
		/* counts exchanged */
		memset(y, 0xa5, room * 4);
		rt_comm_all_to_allv_dev(c, H(x), H(dc), H(y), room, got, RT_COMM_I32, NULL);
		bad_first = 0;
		for (int p = 0; p < n; p++) {
			EXPECT_EQ("count exchange", p, got[p], rc[p]);
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-allv (count exchange)", ro[p] + i, y[ro[p] + i],
					  val(p, rank, i) + call);
		}
		for (size_t i = rt; i < room; i++)
			EXPECT_EQ("all-to-allv (count exchange): past the data", i, (uint32_t)y[i],
				  0xa5a5a5a5u);
		/* worst case: blocks of cap, counts beside */
		for (int p = 0; p < n; p++)
			for (size_t i = 0; i < cap; i++)
				x[(size_t)p * cap + i] = i < sc[p] ? val(rank, p, i) + call : -1;
		memset(drc, 0xa5, (size_t)n * 8);
		rt_comm_all_to_all_fixed(c, H(x), H(dc), H(y), H(drc), cap, RT_COMM_I32, NULL);
		bad_first = 0;
		for (int p = 0; p < n; p++) {
			EXPECT_EQ("worst case: counts", p, drc[p], (int64_t)rc[p]);
			for (size_t i = 0; i < rc[p]; i++)
				EXPECT_EQ("all-to-all (worst case)", (size_t)p * cap + i,
					  y[(size_t)p * cap + i], val(p, rank, i) + call);
		}
	}
	free(x);
	free(y);
	free(sc);
	free(dc);
	free(drc);
}

static void test_split(void)
{
	int32_t v = 100 + rank, out[64];
	struct rt_comm *rev = rt_comm_split(c, 0, n - 1 - rank);
	REQUIRE(rev);
	CHECK(rt_comm_size(rev) == n && rt_comm_rank(rev) == n - 1 - rank);
	CHECK(rt_comm_kind(rev) == RT_COMM_MPI && rt_comm_gpu(rev) == NULL);
	rt_comm_all_gather(rev, H(&v), H(out), 1, RT_COMM_I32, NULL);
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
		rt_comm_all_reduce_sum(par, H(&v), H(out), 1, RT_COMM_I32, NULL);
		EXPECT_EQ("split (parity) all-reduce", 0, out[0], sum);
		rt_comm_free(par);
	}
	rt_comm_free(rev);
}

/* the pipeline, data-, expert- and expert-data-parallel groups of a few layouts, and a
 * sum inside each: the sum of 1 << member says who is in it */
static void test_groups(void)
{
	struct rt_layout layouts[] = { { 2, 2, 2 }, { n, 1, 1 }, { 1, n, n }, { 1, n, 1 } };
	int32_t v = 1 << rank, out;
	for (size_t i = n == 4 ? 0 : 1; i < sizeof layouts / sizeof layouts[0]; i++) {
		const struct rt_layout *l = &layouts[i];
		char err[256];
		REQUIRE(rt_layout_check(l, n, err, sizeof err) == 0);
		struct rt_comm *grp[RT_GROUPS];
		rt_comm_groups(c, l, grp);
		for (int k = 0; k < RT_GROUPS; k++) {
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
			       "layout %d x %d / %d, %s group: rank %d of %d", l->pp, l->dp, l->ep,
			       rt_group_name((enum rt_group)k), rt_comm_rank(grp[k]), rt_comm_size(grp[k]));
			out = -1;
			rt_comm_all_reduce_sum(grp[k], H(&v), H(&out), 1, RT_COMM_I32, NULL);
			EXPECT_EQ(rt_group_name((enum rt_group)k), i, out, want);
		}
		for (int k = RT_GROUPS - 1; k >= 0; k--)
			rt_comm_free(grp[k]);
	}
}

static int init(const char *program)
{
	char err[4096];
	struct rt_comm_opts o = { .kind = RT_COMM_MPI, .program = program,
				  .program_len = strlen(program) };
	c = rt_comm_init(&o, err, sizeof err);
	if (!c) {
		fprintf(stderr, "sluice: %s\n", err);
		return -1;
	}
	rank = rt_comm_rank(c);
	n = rt_comm_size(c);
	return 0;
}

static int ops(void)
{
	if (init("ops"))
		return 1;
	CHECK(rt_comm_gpu(c) == NULL && rt_comm_kind(c) == RT_COMM_MPI);
	char err[512];
	CHECK(rt_comm_sym_new(c, 1024, 0, err, sizeof err) == NULL && err[0]);
	double t = rt_now();
	test_send_recv();
	test_all_reduce();
	test_reduce_scatter_all_gather();
	test_all_to_all();
	test_all_to_allv();
	test_split();
	test_groups();
	rt_comm_barrier(c, NULL);
	fprintf(stderr, "rank %d of %d: %s (%.2f s)\n", rank, n,
		check_failures ? "FAILED" : "every result right", rt_now() - t);
	rt_comm_free(c);
	return CHECK_DONE();
}

/* The faults: rank 1 fails in the middle of a run of all-reduces. */
static int fault_rank(const char *mode)
{
	if (init(mode))
		return 1;
	size_t count = 1 << 16;
	float *x = rt_calloc(count, 4), *y = rt_calloc(count, 4);
	double t0 = rt_now();
	for (int it = 0; rt_now() - t0 < 60; it++) {
		if (it == 20 && rank == 1) {
			FILE *f = fopen(getenv("COMM_MPI_STAMP"), "w");
			if (f) {
				fprintf(f, "%.6f\n", rt_now());
				fclose(f);
			}
			if (!strcmp(mode, "kill"))
				raise(SIGKILL);
			if (!strcmp(mode, "error"))
				rt_comm_send(c, H(x), count, RT_COMM_F32, n + 5, NULL); /* no such peer */
			sleep(60);
		}
		rt_comm_all_reduce_sum(c, H(x), H(y), count, RT_COMM_F32, NULL);
	}
	fprintf(stderr, "rank %d: still running after 60 s\n", rank);
	return 0;
}

static int launched_rank(const char *mode)
{
	struct rt_rank_env e;
	char err[512];
	if (rt_rank_env_read(&e, err, sizeof err)) {
		fprintf(stderr, "rank: %s\n", err);
		return 5;
	}
	int bad = strcmp(e.source, "Open MPI") != 0 || e.world != 2;
	const char *threads = getenv("SLUICE_THREADS");
	char want[16];
	int share = rt_num_cpus() / 2;
	snprintf(want, sizeof want, "%d", share > 1 ? share : 1);
	bad |= !threads || strcmp(threads, want) != 0;
	bad |= rt_launch_mpi(2, err, sizeof err) != RT_LAUNCH_RANK;
	bad |= rt_launch_check(2, err, sizeof err) != 0;
	bad |= rt_launch_check(3, err, sizeof err) != -1 || !strstr(err, "3 ranks were asked for");
	if (bad) {
		fprintf(stderr, "rank %d: wrong environment (source %s, world %d, SLUICE_THREADS %s, "
				"wanted %s; %s)\n", e.rank, e.source, e.world, threads ? threads : "unset",
			want, err);
		return 5;
	}
	if (!strcmp(mode, "launch-fail"))
		return e.rank == 1 ? 3 : 0;
	if (init(mode))
		return 1;
	int32_t v = rank, all[2] = { -1, -1 };
	rt_comm_all_gather(c, H(&v), H(all), 1, RT_COMM_I32, NULL);
	char path[512];
	snprintf(path, sizeof path, "%s.%d", getenv("COMM_MPI_STAMP"), rank);
	FILE *f = fopen(path, "w");
	if (f) {
		fprintf(f, "rank %d of %d saw %d,%d\n", rank, n, all[0], all[1]);
		fclose(f);
	}
	rt_comm_free(c);
	return 0;
}

/* Runs this program's MODE on N ranks through rt_launch_mpi, stderr into *out. */
static int launch(int nranks, double *end, char **out, char *err, size_t errlen)
{
	char path[64];
	snprintf(path, sizeof path, "/tmp/sluice-commmpi-%d.err", (int)getpid());
	fflush(stderr);
	int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	int st = rt_launch_mpi(nranks, err, errlen);
	*end = rt_now();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	*out = rt_read_file(path, NULL);
	unlink(path);
	return st;
}

static void fault(const char *mode, const char *needle)
{
	char stamp[64], err[512];
	snprintf(stamp, sizeof stamp, "/tmp/sluice-commmpi-%d.stamp", (int)getpid());
	unlink(stamp);
	setenv("COMM_MPI_STAMP", stamp, 1);
	double end;
	char *out;
	int st = launch(3, &end, &out, err, sizeof err);
	char *t = rt_read_file(stamp, NULL);
	double failed = t ? atof(t) : 0;
	fprintf(stderr, "--- fault '%s': status %d (%s), every rank ended %.1f s after rank 1 "
			"failed; the job's stderr:\n%s", mode, st, err, failed ? end - failed : -1,
		out ? out : "");
	CHECKF(st != 0 && st != RT_LAUNCH_RANK, "fault %s: the job exited %d", mode, st);
	CHECKF(failed > 0 && end - failed < 10, "fault %s: ranks ended %.1f s after the failure",
	       mode, end - failed);
	CHECKF(out && strstr(out, "sluice: rank 0: rank 1 failed") && strstr(out, needle),
	       "fault %s: rank 0 did not name rank 1 with '%s'", mode, needle);
	free(out);
	free(t);
	unlink(stamp);
}

static void test_launch(void)
{
	char stamp[64], err[512], path[96];
	snprintf(stamp, sizeof stamp, "/tmp/sluice-commmpi-%d.launch", (int)getpid());
	setenv("COMM_MPI_STAMP", stamp, 1);
	unsetenv("SLUICE_THREADS");
	CHECK(rt_launch_mpi(1, err, sizeof err) == RT_LAUNCH_RANK);
	double end, t0 = rt_now();
	char *out;
	int st = launch(2, &end, &out, err, sizeof err);
	fprintf(stderr, "launch: status %d after %.1f s (%s)\n%s", st, end - t0, err,
		out ? out : "");
	CHECKF(st == 0, "launch: status %d: %s", st, err);
	for (int r = 0; r < 2; r++) {
		snprintf(path, sizeof path, "%s.%d", stamp, r);
		char *s = rt_read_file(path, NULL), want[64];
		snprintf(want, sizeof want, "rank %d of 2 saw 0,1\n", r);
		CHECKF(s && !strcmp(s, want), "launch: rank %d wrote '%s'", r, s ? s : "(nothing)");
		free(s);
		unlink(path);
	}
	CHECK(getenv("SLUICE_THREADS") == NULL); /* the launcher's own environment is left alone */
	free(out);
	/* a rank's failing status is the job's */
	setenv("COMM_MPI_MODE", "launch-fail", 1);
	st = launch(2, &end, &out, err, sizeof err);
	CHECKF(st == 3 && strstr(err, "status 3"), "launch-fail: status %d (%s): %s", st, err,
	       out ? out : "");
	free(out);
	unsetenv("COMM_MPI_MODE");
}
#endif

int main(int argc, char **argv)
{
#ifndef SLUICE_HAVE_MPI
	(void)argc;
	(void)argv;
	(void)check_failures;
	printf("SKIP: comm_mpi: sluice was built without MPI\n");
	return 77;
#else
	const char *mode = argc > 1 ? argv[1] : "ops";
	if (getenv("OMPI_COMM_WORLD_RANK")) {
		if (getenv("COMM_MPI_MODE"))
			mode = getenv("COMM_MPI_MODE");
		if (!strcmp(mode, "ops"))
			return ops();
		if (!strcmp(mode, "kill") || !strcmp(mode, "hang") || !strcmp(mode, "error"))
			return fault_rank(mode);
		return launched_rank(mode);
	}
	if (!strcmp(mode, "kill"))
		fault("kill", "its process died");
	else if (!strcmp(mode, "hang")) {
		setenv("SLUICE_COMM_TIMEOUT", "2", 1);
		fault("hang", "rank 1 did not join a communication operation");
	} else if (!strcmp(mode, "error"))
		fault("error", "MPI_Isend failed");
	else if (!strcmp(mode, "launch"))
		test_launch();
	else {
		fprintf(stderr, "usage: mpirun -np N comm_mpi ops | comm_mpi kill|hang|error|launch\n");
		return 2;
	}
	return CHECK_DONE();
#endif
}
