/* launch_test.c - the rank environment (sluice's launcher, torchrun, Open MPI, Slurm and
 * their precedence) and the one-node launcher: this program launches copies of itself,
 * which check what they were given, meet through the rendezvous, and fail on request
 * (a non-zero exit, or a rank killed while the others wait). */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/comm.h"
#include "runtime/rt.h"

static const char *vars[] = {
	"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
	"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
	"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
	"SLURM_NNODES", "SLURM_LAUNCH_NODE_IPADDR", "SLUICE_LAUNCHED", "SLUICE_RDZV_FD",
};

static void clear_env(void)
{
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		unsetenv(vars[i]);
}

/* "NAME=VALUE NAME=VALUE ..." */
static void set_env(const char *spec)
{
	clear_env();
	char *s = rt_strdup(spec), *save = NULL;
	for (char *t = strtok_r(s, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(t, '=');
		*eq = 0;
		setenv(t, eq + 1, 1);
	}
	free(s);
}

static void expect(const char *spec, int rank, int world, int local, const char *addr, int port,
		   const char *source)
{
	struct rt_rank_env e;
	char err[512];
	set_env(spec);
	int rc = rt_rank_env_read(&e, err, sizeof err);
	CHECKF(rc == 0, "%s: %s", spec, err);
	if (rc)
		return;
	CHECKF(e.rank == rank && e.world == world && e.local_rank == local, "%s: rank %d/%d local %d",
	       spec, e.rank, e.world, e.local_rank);
	CHECKF(!strcmp(e.master_addr, addr) && e.master_port == port, "%s: %s:%d", spec,
	       e.master_addr, e.master_port);
	CHECKF(!strcmp(e.source, source), "%s: source %s", spec, e.source);
}

static void expect_error(const char *spec, const char *needle)
{
	struct rt_rank_env e;
	char err[512] = "";
	set_env(spec);
	int rc = rt_rank_env_read(&e, err, sizeof err);
	CHECKF(rc == -1 && strstr(err, needle), "%s: rc %d, '%s' lacks '%s'", spec, rc, err, needle);
}

static void test_env(void)
{
	expect("", 0, 1, 0, "127.0.0.1", 29500, "none");
	/* torchrun */
	expect("RANK=3 WORLD_SIZE=8 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=node0 MASTER_PORT=1234",
	       3, 8, 1, "node0", 1234, "RANK/WORLD_SIZE");
	expect("RANK=1 WORLD_SIZE=2", 1, 2, 0, "127.0.0.1", 29500, "RANK/WORLD_SIZE");
	/* Open MPI */
	expect("OMPI_COMM_WORLD_RANK=5 OMPI_COMM_WORLD_SIZE=16 OMPI_COMM_WORLD_LOCAL_RANK=5 "
	       "OMPI_COMM_WORLD_LOCAL_SIZE=8 MASTER_ADDR=10.0.0.1",
	       5, 16, 5, "10.0.0.1", 29500, "Open MPI");
	expect("OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=1 "
	       "OMPI_COMM_WORLD_LOCAL_SIZE=4",
	       1, 4, 1, "127.0.0.1", 29500, "Open MPI");
	/* Slurm: the launch node's address unless MASTER_ADDR says otherwise */
	expect("SLURM_PROCID=9 SLURM_NTASKS=16 SLURM_LOCALID=1 SLURM_NNODES=2 "
	       "SLURM_LAUNCH_NODE_IPADDR=10.1.2.3",
	       9, 16, 1, "10.1.2.3", 29500, "Slurm");
	expect("SLURM_PROCID=9 SLURM_NTASKS=16 SLURM_LOCALID=1 SLURM_NNODES=2 "
	       "SLURM_LAUNCH_NODE_IPADDR=10.1.2.3 MASTER_ADDR=head MASTER_PORT=4000",
	       9, 16, 1, "head", 4000, "Slurm");
	expect("SLURM_PROCID=2 SLURM_NTASKS=4 SLURM_LOCALID=2 SLURM_NNODES=1", 2, 4, 2, "127.0.0.1",
	       29500, "Slurm");
	/* precedence: RANK over Open MPI over Slurm */
	expect("RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 "
	       "OMPI_COMM_WORLD_SIZE=1 SLURM_PROCID=0 SLURM_NTASKS=1",
	       1, 2, 1, "127.0.0.1", 29500, "RANK/WORLD_SIZE");
	expect("OMPI_COMM_WORLD_RANK=3 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=3 "
	       "OMPI_COMM_WORLD_LOCAL_SIZE=4 SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_NNODES=1",
	       3, 4, 3, "127.0.0.1", 29500, "Open MPI");
	/* errors */
	expect_error("RANK=2 WORLD_SIZE=2", "rank 2 is not below the world size 2");
	expect_error("RANK=1", "WORLD_SIZE");
	expect_error("RANK=x WORLD_SIZE=2", "RANK='x' is not a whole number");
	expect_error("RANK=0 WORLD_SIZE=2 MASTER_PORT=99999", "MASTER_PORT=99999");
	expect_error("RANK=0 WORLD_SIZE=2 MASTER_PORT=http", "MASTER_PORT='http'");
	expect_error("SLURM_PROCID=9 SLURM_NTASKS=16 SLURM_NNODES=2", "set MASTER_ADDR");
	expect_error("OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=0", "at least 1");
	expect_error("RANK=0 WORLD_SIZE=4 LOCAL_RANK=3 LOCAL_WORLD_SIZE=2", "local rank 3");
	clear_env();
}

/* ---- the parallel layout ---- */

static void check_layout(int pp, int dp, int ep)
{
	struct rt_layout l = { pp, dp, ep };
	int world = pp * dp;
	char err[256];
	CHECKF(rt_layout_check(&l, world, err, sizeof err) == 0, "%d x %d / %d: %s", pp, dp, ep, err);
	int want[RT_GROUPS] = { pp, dp, ep, dp / ep };
	for (int g = 0; g < RT_GROUPS; g++) {
		/* every group: the right size, keys 0..size-1 once each */
		int *color = rt_malloc(sizeof(int) * (size_t)world), *key = rt_malloc(sizeof(int) * (size_t)world);
		for (int r = 0; r < world; r++)
			rt_layout_group(&l, r, (enum rt_group)g, &color[r], &key[r]);
		for (int r = 0; r < world; r++) {
			int size = 0;
			for (int q = 0; q < world; q++)
				if (color[q] == color[r]) {
					size++;
					CHECKF(q == r || key[q] != key[r], "%s group: ranks %d and %d share key %d",
					       rt_group_name((enum rt_group)g), q, r, key[q]);
				}
			CHECKF(size == want[g], "%d x %d / %d: rank %d's %s group has %d ranks, not %d", pp,
			       dp, ep, r, rt_group_name((enum rt_group)g), size, want[g]);
			CHECK(key[r] >= 0 && key[r] < want[g]);
		}
		free(color);
		free(key);
	}
	/* expert groups are neighbours; a stage's dp ranks are neighbours */
	for (int r = 0; r < world; r++) {
		int c, k, c0, k0;
		rt_layout_group(&l, r, RT_GROUP_EP, &c, &k);
		rt_layout_group(&l, r - k, RT_GROUP_EP, &c0, &k0);
		CHECK(c == c0 && k0 == 0);
		rt_layout_group(&l, r, RT_GROUP_PP, &c, &k);
		CHECK(k == r / dp);
	}
}

static void test_layout(void)
{
	check_layout(1, 1, 1);
	check_layout(1, 2, 2);
	check_layout(2, 1, 1);
	check_layout(4, 8, 4);
	check_layout(16, 4, 2);
	check_layout(3, 6, 3);
	struct rt_layout l = { 2, 4, 3 };
	char err[256];
	CHECK(rt_layout_check(&l, 8, err, sizeof err) == -1 && strstr(err, "does not divide"));
	l.ep = 2;
	CHECK(rt_layout_check(&l, 16, err, sizeof err) == -1 && strstr(err, "but the job has 16"));
	l.pp = 0;
	CHECK(rt_layout_check(&l, 0, err, sizeof err) == -1 && strstr(err, "at least 1"));
}

/* ---- as a launched rank ---- */

static int as_rank(void)
{
	struct rt_rank_env e;
	char err[512];
	if (rt_rank_env_read(&e, err, sizeof err)) {
		fprintf(stderr, "rank: %s\n", err);
		return 5;
	}
	const char *mode = getenv("LAUNCH_TEST_MODE");
	int bad = 0;
	bad |= strcmp(e.source, "sluice launcher") != 0;
	bad |= e.world != 3 || e.local_rank != e.rank || e.local_world != 3;
	bad |= strcmp(e.master_addr, "127.0.0.1") != 0;
	bad |= (e.rank == 0) != (e.listen_fd >= 0);
	bad |= e.rank == 0 && fcntl(e.listen_fd, F_GETFD) < 0;
	/* the environment passes through untouched */
	bad |= !getenv("NCCL_NVLS_ENABLE") || strcmp(getenv("NCCL_NVLS_ENABLE"), "0") != 0;
	if (bad) {
		fprintf(stderr, "rank %d: wrong environment (source %s, world %d, local %d/%d, %s)\n",
			e.rank, e.source, e.world, e.local_rank, e.local_world, e.master_addr);
		return 5;
	}
	/* launching again from inside a rank does nothing */
	if (rt_launch(3) != RT_LAUNCH_RANK)
		return 6;
	struct rt_rdzv_config cfg = { .rank = e.rank, .world = e.world, .addr = e.master_addr,
				      .port = e.master_port, .listen_fd = e.listen_fd,
				      .hash = 42, .timeout_s = 10 };
	char blob[8] = "id";
	struct rt_rdzv *z = rt_rdzv_open(&cfg, blob, sizeof blob, err, sizeof err);
	if (!z) {
		fprintf(stderr, "sluice: rank %d: %s\n", e.rank, err);
		return 1;
	}
	if (!strcmp(mode, "fail") && e.rank == 1)
		return 7; /* exits without a goodbye: the others are told it died */
	if (!strcmp(mode, "kill") && e.rank == 2) {
		usleep(200 * 1000);
		raise(SIGKILL);
	}
	if (strcmp(mode, "ok"))
		sleep(30); /* only the fault channel ends this */
	rt_rdzv_close(z);
	return 0;
}

/* Runs the launcher with stderr captured into *out. */
static int launch(const char *mode, char *out, size_t n)
{
	setenv("LAUNCH_TEST_MODE", mode, 1);
	char path[64];
	snprintf(path, sizeof path, "/tmp/sluice-launch-%d.err", (int)getpid());
	fflush(stderr);
	int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	close(fd);
	double t = rt_now();
	int rc = rt_launch(3);
	t = rt_now() - t;
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char *s = rt_read_file(path, NULL);
	snprintf(out, n, "%s", s ? s : "");
	free(s);
	unlink(path);
	fprintf(stderr, "launch %s: status %d after %.1f s\n", mode, rc, t);
	CHECKF(t < 12, "mode %s took %.1f s", mode, t);
	return rc;
}

static void test_launch(void)
{
	char out[8192];
	setenv("NCCL_NVLS_ENABLE", "0", 1);
	CHECK(rt_launch(1) == RT_LAUNCH_RANK);
	int rc = launch("ok", out, sizeof out);
	CHECKF(rc == 0, "status %d: %s", rc, out);
	rc = launch("fail", out, sizeof out);
	CHECKF(rc == 7 && strstr(out, "launcher: rank 1 exited with status 7") &&
		       strstr(out, "rank 1 failed: its process died"),
	       "status %d: %s", rc, out);
	rc = launch("kill", out, sizeof out);
	CHECKF(rc != 0 && strstr(out, "launcher: rank 2 was killed by signal 9") &&
		       strstr(out, "sluice: rank 0: rank 2 failed") &&
		       strstr(out, "sluice: rank 1: rank 2 failed"),
	       "status %d: %s", rc, out);
	/* inside a job (torchrun set RANK), --gpus is no launcher */
	setenv("RANK", "0", 1);
	CHECK(rt_launch(4) == RT_LAUNCH_RANK);
	unsetenv("RANK");
}

int main(void)
{
	if (getenv("SLUICE_LAUNCHED"))
		return as_rank();
	test_env();
	test_layout();
	test_launch();
	return CHECK_DONE();
}
