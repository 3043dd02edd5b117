/* rdzv_test.c - the rendezvous and the fault channel, with several processes on
 * loopback.  Each scenario forks its ranks (the parent is no rank), collects their exit
 * status, exit time and stderr, and checks them.  'rdzv_test NAME' runs one scenario,
 * no argument runs them all.  Ports are ephemeral: the parent listens on port 0 and
 * hands the socket to rank 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "runtime/comm.h"
#include "runtime/rt.h"

#define MAXR 8

struct job {
	int world;
	int lfd, port;
	unsigned char blob[128];
	pid_t pid[MAXR];
	int status[MAXR];
	double ended[MAXR]; /* seconds after start */
	char err[MAXR][4096];
	char path[MAXR][64];
	double start;
};

/* what a rank does after a successful rendezvous */
typedef void (*rank_fn)(struct rt_rdzv *z, int rank);

struct scenario {
	int world;
	uint64_t hash[MAXR];
	double delay[MAXR]; /* before the rendezvous */
	int absent;         /* this rank never starts (-1: none) */
	double rdzv_timeout, op_timeout, hb_timeout;
	int frozen; /* this rank stops itself: killed once the others have ended (-1: none) */
	rank_fn after;
};

static int poll_rank = -1;
static double poll_after;

static int slow_abort; /* the abort hook takes half a second, as ncclCommAbort can */

static void hook_abort(void *ctx)
{
	(void)ctx;
	fprintf(stderr, "abort hook called\n");
	if (slow_abort)
		usleep(500 * 1000);
}

static int hook_poll(void *ctx, char *msg, size_t n)
{
	int rank = *(int *)ctx;
	if (rank == poll_rank && rt_now() > poll_after) {
		snprintf(msg, n, "NCCL error: remote process exited or there was a network error "
				 "(simulated)");
		return 1;
	}
	return 0;
}

static void run_rank(struct job *j, const struct scenario *s, int rank)
{
	int fd = open(j->path[rank], O_WRONLY | O_TRUNC);
	dup2(fd, 2);
	close(fd);
	if (s->delay[rank] > 0)
		usleep((useconds_t)(s->delay[rank] * 1e6));
	if (rank != 0)
		close(j->lfd);
	static int my_rank;
	my_rank = rank;
	struct rt_rdzv_config cfg = {
		.rank = rank,
		.world = s->world,
		.addr = "127.0.0.1",
		.port = j->port,
		.listen_fd = rank == 0 ? j->lfd : -1,
		.hash = s->hash[rank],
		.timeout_s = s->rdzv_timeout > 0 ? s->rdzv_timeout : 10,
		.op_timeout_s = s->op_timeout,
		.heartbeat_timeout_s = s->hb_timeout,
		.hooks = { hook_abort, hook_poll, &my_rank },
	};
	unsigned char blob[128];
	if (rank == 0)
		memcpy(blob, j->blob, sizeof blob);
	else
		memset(blob, 0, sizeof blob);
	char err[4096];
	struct rt_rdzv *z = rt_rdzv_open(&cfg, blob, sizeof blob, err, sizeof err);
	if (!z) {
		fprintf(stderr, "sluice: rank %d: %s\n", rank, err);
		exit(1);
	}
	if (memcmp(blob, j->blob, sizeof blob)) {
		fprintf(stderr, "rank %d: wrong blob\n", rank);
		exit(3);
	}
	s->after(z, rank);
	rt_rdzv_close(z);
	exit(0);
}

/* Runs the scenario; waits at most 'limit' seconds, then kills what is left. */
static void run(struct job *j, const struct scenario *s, double limit)
{
	memset(j, 0, sizeof *j);
	j->world = s->world;
	for (size_t i = 0; i < sizeof j->blob; i++)
		j->blob[i] = (unsigned char)(rand() & 0xff);
	j->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { 0 };
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof sa;
	REQUIRE(j->lfd >= 0 && !bind(j->lfd, (struct sockaddr *)&sa, sizeof sa));
	REQUIRE(!listen(j->lfd, 64) && !getsockname(j->lfd, (struct sockaddr *)&sa, &len));
	j->port = ntohs(sa.sin_port);
	j->start = rt_now();
	fflush(NULL);
	for (int r = 0; r < s->world; r++) {
		snprintf(j->path[r], sizeof j->path[r], "/tmp/sluice-rdzv-%d-%d.err", (int)getpid(), r);
		int fd = open(j->path[r], O_WRONLY | O_CREAT | O_TRUNC, 0600);
		REQUIRE(fd >= 0);
		close(fd);
		if (r == s->absent) {
			j->pid[r] = 0;
			continue;
		}
		j->pid[r] = fork();
		REQUIRE(j->pid[r] >= 0);
		if (j->pid[r] == 0)
			run_rank(j, s, r);
	}
	close(j->lfd);
	int alive = s->world - (s->absent >= 0);
	while (alive) {
		int ws;
		pid_t w = waitpid(-1, &ws, WNOHANG);
		if (w <= 0 && alive == 1 && s->frozen >= 0 && j->pid[s->frozen] > 0) {
			kill(j->pid[s->frozen], SIGKILL);
			continue;
		}
		if (w <= 0) {
			if (rt_now() - j->start > limit) {
				for (int r = 0; r < s->world; r++)
					if (j->pid[r] > 0) {
						kill(j->pid[r], SIGKILL);
						waitpid(j->pid[r], &ws, 0);
						j->status[r] = -1; /* still running: a failure */
						j->ended[r] = limit;
						j->pid[r] = 0;
					}
				break;
			}
			usleep(10 * 1000);
			continue;
		}
		for (int r = 0; r < s->world; r++)
			if (j->pid[r] == w) {
				j->pid[r] = 0;
				j->ended[r] = rt_now() - j->start;
				j->status[r] = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
				alive--;
			}
	}
	for (int r = 0; r < s->world; r++) {
		char *e = rt_read_file(j->path[r], NULL);
		snprintf(j->err[r], sizeof j->err[r], "%s", e ? e : "");
		free(e);
		unlink(j->path[r]);
	}
}

static void show(const struct job *j)
{
	for (int r = 0; r < j->world; r++)
		fprintf(stderr, "  rank %d: status %d at %.2f s: %s", r, j->status[r], j->ended[r],
			j->err[r][0] ? j->err[r] : "(nothing)\n");
}

static struct scenario base(int world, rank_fn after)
{
	struct scenario s = { .world = world, .absent = -1, .frozen = -1, .after = after };
	for (int r = 0; r < world; r++)
		s.hash[r] = rt_hash64("same program", 12, RT_HASH64_INIT);
	return s;
}

/* ---- what ranks do ---- */

static void idle_briefly(struct rt_rdzv *z, int rank)
{
	(void)z;
	usleep((useconds_t)(rank == 1 ? 1500 : 100) * 1000); /* one rank later: no false fault */
}

static void wait_forever(struct rt_rdzv *z, int rank)
{
	(void)z;
	(void)rank;
	sleep(30);
}

static int victim;

static void victim_dies(struct rt_rdzv *z, int rank)
{
	(void)z;
	if (rank == victim) {
		usleep(300 * 1000);
		raise(SIGKILL);
	}
	sleep(30);
}

/* The others run operations back to back: once the process is being ended, none may
 * return (what it computed is not to be trusted while the communicators are aborted). */
static void victim_dies_mid_ops(struct rt_rdzv *z, int rank)
{
	if (rank == victim) {
		usleep(300 * 1000);
		raise(SIGKILL);
	}
	for (double end = rt_now() + 30; rt_now() < end;) {
		rt_rdzv_op_begin(z, "all_to_all");
		usleep(1000);
		rt_rdzv_op_end(z);
		if (rt_rdzv_dying())
			fprintf(stderr, "an operation returned while the process was being ended\n");
	}
}

static void victim_fails(struct rt_rdzv *z, int rank)
{
	if (rank == victim) {
		usleep(300 * 1000);
		rt_rdzv_fail(z, "NCCL error: unhandled cuda error (simulated)");
	}
	sleep(30);
}

static void victim_hangs(struct rt_rdzv *z, int rank)
{
	if (rank != victim)
		rt_rdzv_op_begin(z, "all_to_all");
	sleep(30); /* the others wait inside an operation; the victim stays outside */
}

static void victim_freezes(struct rt_rdzv *z, int rank)
{
	(void)z;
	if (rank == victim) {
		usleep(200 * 1000);
		raise(SIGSTOP);
	}
	sleep(30);
}

/* ---- scenarios ---- */

static int others_named(const struct job *j, int who, const char *needle, double within)
{
	int ok = 1;
	char want[64];
	snprintf(want, sizeof want, "rank %d", who);
	for (int r = 0; r < j->world; r++) {
		if (r == who)
			continue;
		if (j->status[r] == 0 || j->status[r] == -1 || !strstr(j->err[r], want) ||
		    !strstr(j->err[r], needle) || j->ended[r] > within) {
			fprintf(stderr, "rank %d did not stop properly naming %s (%s)\n", r, want,
				needle);
			ok = 0;
		}
	}
	if (!ok)
		show(j);
	return ok;
}

static void test_ok(void)
{
	struct job j;
	struct scenario s = base(4, idle_briefly);
	s.delay[3] = 0.3; /* a late rank is fine */
	run(&j, &s, 10);
	for (int r = 0; r < 4; r++)
		CHECKF(j.status[r] == 0, "rank %d status %d: %s", r, j.status[r], j.err[r]);
	/* the single-rank case needs no network */
	struct rt_rdzv_config cfg = { .rank = 0, .world = 1, .addr = "127.0.0.1", .port = 1,
				      .listen_fd = -1 };
	char err[256];
	struct rt_rdzv *z = rt_rdzv_open(&cfg, j.blob, 16, err, sizeof err);
	CHECK(z != NULL);
	rt_rdzv_close(z);
}

static void test_mismatch(void)
{
	struct job j;
	struct scenario s = base(3, wait_forever);
	s.hash[1] = rt_hash64("another program", 15, RT_HASH64_INIT);
	run(&j, &s, 10);
	for (int r = 0; r < 3; r++) {
		CHECKF(j.status[r] == 1, "rank %d status %d", r, j.status[r]);
		CHECKF(strstr(j.err[r], "rank 1 differs from rank 0") != NULL, "rank %d said: %s", r,
		       j.err[r]);
	}
	s = base(4, wait_forever);
	s.hash[2] = s.hash[3] = 7;
	run(&j, &s, 10);
	for (int r = 0; r < 4; r++)
		CHECKF(j.status[r] == 1 && strstr(j.err[r], "ranks 2,3 differ from rank 0"),
		       "rank %d status %d said: %s", r, j.status[r], j.err[r]);
}

static void test_timeout(void)
{
	struct job j;
	struct scenario s = base(3, wait_forever);
	s.absent = 2;
	s.rdzv_timeout = 1;
	run(&j, &s, 10);
	for (int r = 0; r < 2; r++)
		CHECKF(j.status[r] == 1 && strstr(j.err[r], "rank 2 never reached rank 0"),
		       "rank %d status %d said: %s", r, j.status[r], j.err[r]);
}

static void test_killed(void)
{
	struct job j;
	struct scenario s = base(3, victim_dies);
	victim = 2;
	run(&j, &s, 20);
	CHECK(j.status[2] == 128 + SIGKILL);
	CHECK(others_named(&j, 2, "died", j.ended[2] + 10));
	for (int r = 0; r < 2; r++)
		CHECKF(strstr(j.err[r], "abort hook called") != NULL, "rank %d: %s", r, j.err[r]);
	victim = 0; /* rank 0, the hub, dies */
	run(&j, &s, 20);
	CHECK(j.status[0] == 128 + SIGKILL);
	CHECK(others_named(&j, 0, "died", j.ended[0] + 10));
}

static void test_dying(void)
{
	struct job j;
	struct scenario s = base(3, victim_dies_mid_ops);
	victim = 1;
	slow_abort = 1;
	run(&j, &s, 20);
	slow_abort = 0;
	CHECK(j.status[1] == 128 + SIGKILL);
	CHECK(others_named(&j, 1, "died", j.ended[1] + 10));
	for (int r = 0; r < 3; r += 2) {
		CHECKF(strstr(j.err[r], "abort hook called") != NULL, "rank %d: %s", r, j.err[r]);
		CHECKF(!strstr(j.err[r], "returned while the process was being ended"),
		       "rank %d went on after the fault: %s", r, j.err[r]);
	}
}

static void test_fail(void)
{
	struct job j;
	struct scenario s = base(3, victim_fails);
	victim = 1;
	run(&j, &s, 20);
	CHECK(others_named(&j, 1, "unhandled cuda error", j.ended[1] + 10));
	CHECK(j.status[1] == 1);
}

static void test_hang(void)
{
	struct job j;
	struct scenario s = base(3, victim_hangs);
	s.op_timeout = 1;
	victim = 1;
	run(&j, &s, 20);
	CHECK(others_named(&j, 1, "did not join a communication operation", 10));
	CHECKF(j.status[1] == 1 && strstr(j.err[1], "rank 1 failed"), "rank 1: %s", j.err[1]);
}

static void test_poll_error(void)
{
	struct job j;
	struct scenario s = base(3, wait_forever);
	poll_rank = 2;
	poll_after = rt_now() + 0.5;
	run(&j, &s, 20);
	poll_rank = -1;
	CHECK(others_named(&j, 2, "NCCL error", 10));
}

static void test_frozen(void)
{
	struct job j;
	struct scenario s = base(3, victim_freezes);
	s.hb_timeout = 2;
	victim = 1;
	s.frozen = 1;
	run(&j, &s, 12); /* the frozen rank itself is killed at the end */
	for (int r = 0; r < 3; r += 2)
		CHECKF(j.status[r] == 1 && strstr(j.err[r], "rank 1 failed: it stopped responding") &&
			       j.ended[r] < 8,
		       "rank %d status %d at %.1f s: %s", r, j.status[r], j.ended[r], j.err[r]);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "ok", test_ok },	     { "mismatch", test_mismatch },
		{ "timeout", test_timeout }, { "killed", test_killed },
		{ "fail", test_fail },	     { "hang", test_hang },
		{ "poll_error", test_poll_error }, { "frozen", test_frozen },
		{ "dying", test_dying },
	};
	srand((unsigned)getpid());
	int ran = 0;
	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
		if (argc < 2 || !strcmp(argv[1], tests[i].name)) {
			tests[i].fn();
			ran++;
		}
	if (!ran) {
		fprintf(stderr, "no scenario '%s'\n", argv[1]);
		return 2;
	}
	return CHECK_DONE();
}
