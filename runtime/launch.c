/* launch.c - which rank this process is (from the environment that sluice's own
 * launcher, torchrun, Open MPI or Slurm sets; precedence in comm.h), the one-node
 * launcher behind '--gpus N', and the mpirun launcher behind '--ranks N'. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "comm_impl.h"
#include "engine.h"
#include "rt.h"

#include <limits.h>
#include <sched.h>
#include <sys/stat.h>
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

/* A whole non-negative decimal number, or -1. */
static long env_num(const char *name, int *present)
{
	const char *s = getenv(name);
	*present = s && *s;
	if (!*present)
		return -1;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0 || v > 1000000000L)
		return -2;
	return v;
}

static int take(const char *name, long *out, int required, char *err, size_t errlen,
		const char *src)
{
	int present;
	long v = env_num(name, &present);
	if (!present) {
		if (required) {
			snprintf(err, errlen, "%s is set but %s is not", src, name);
			return -1;
		}
		*out = -1;
		return 0;
	}
	if (v < 0) {
		snprintf(err, errlen, "%s='%s' is not a whole number", name, getenv(name));
		return -1;
	}
	*out = v;
	return 0;
}

int rt_rank_env_read(struct rt_rank_env *e, char *err, size_t errlen)
{
	memset(e, 0, sizeof *e);
	e->world = 1;
	e->listen_fd = -1;
	e->source = "none";
	long rank = 0, world = 1, local = -1, lworld = -1, nnodes = -1;
	const char *addr = getenv("MASTER_ADDR");
	int p;
	if (getenv("RANK") || getenv("WORLD_SIZE")) {
		e->source = getenv("SLUICE_LAUNCHED") ? "sluice launcher" : "RANK/WORLD_SIZE";
		if (take("RANK", &rank, 1, err, errlen, "WORLD_SIZE") ||
		    take("WORLD_SIZE", &world, 1, err, errlen, "RANK") ||
		    take("LOCAL_RANK", &local, 0, err, errlen, "") ||
		    take("LOCAL_WORLD_SIZE", &lworld, 0, err, errlen, ""))
			return -1;
	} else if (getenv("OMPI_COMM_WORLD_RANK")) {
		e->source = "Open MPI";
		if (take("OMPI_COMM_WORLD_RANK", &rank, 1, err, errlen, "") ||
		    take("OMPI_COMM_WORLD_SIZE", &world, 1, err, errlen, "OMPI_COMM_WORLD_RANK") ||
		    take("OMPI_COMM_WORLD_LOCAL_RANK", &local, 0, err, errlen, "") ||
		    take("OMPI_COMM_WORLD_LOCAL_SIZE", &lworld, 0, err, errlen, ""))
			return -1;
	} else if (getenv("SLURM_PROCID")) {
		e->source = "Slurm";
		if (take("SLURM_PROCID", &rank, 1, err, errlen, "") ||
		    take("SLURM_NTASKS", &world, 1, err, errlen, "SLURM_PROCID") ||
		    take("SLURM_LOCALID", &local, 0, err, errlen, "") ||
		    take("SLURM_NNODES", &nnodes, 0, err, errlen, ""))
			return -1;
		if (!addr || !*addr)
			addr = getenv("SLURM_LAUNCH_NODE_IPADDR");
		if (nnodes == 1)
			lworld = world;
	}
	if (world < 1) {
		snprintf(err, errlen, "the world size (%s) must be at least 1", e->source);
		return -1;
	}
	if (rank >= world) {
		snprintf(err, errlen, "rank %ld is not below the world size %ld (%s)", rank, world,
			 e->source);
		return -1;
	}
	if (local < 0)
		local = lworld == world || world == 1 ? rank : 0;
	if (lworld > 0 && local >= lworld) {
		snprintf(err, errlen, "local rank %ld is not below the local world size %ld (%s)", local,
			 lworld, e->source);
		return -1;
	}
	e->rank = (int)rank;
	e->world = (int)world;
	e->local_rank = (int)local;
	e->local_world = lworld > 0 ? (int)lworld : 0;
	if (!addr || !*addr) {
		if (world > 1 && (nnodes > 1 || (lworld > 0 && lworld < world))) {
			snprintf(err, errlen,
				 "%d ranks (%s) on several nodes, and no rank-0 address: set MASTER_ADDR "
				 "to rank 0's host",
				 e->world, e->source);
			return -1;
		}
		addr = "127.0.0.1";
	}
	if (strlen(addr) >= sizeof e->master_addr) {
		snprintf(err, errlen, "MASTER_ADDR is too long");
		return -1;
	}
	strcpy(e->master_addr, addr);
	long port;
	if (take("MASTER_PORT", &port, 0, err, errlen, ""))
		return -1;
	if (port == -1)
		port = 29500;
	if (port < 1 || port > 65535) {
		snprintf(err, errlen, "MASTER_PORT=%ld is not a TCP port (1..65535)", port);
		return -1;
	}
	e->master_port = (int)port;
	long fd = env_num("SLUICE_RDZV_FD", &p);
	if (p && fd >= 0 && e->rank == 0 && getenv("SLUICE_LAUNCHED"))
		e->listen_fd = (int)fd;
	return 0;
}

/* ---- the parallel layout --------------------------------------------------------------- */

int rt_layout_check(const struct rt_layout *l, int world, char *err, size_t errlen)
{
	if (l->pp < 1 || l->dp < 1 || l->ep < 1) {
		snprintf(err, errlen, "pipeline (%d), data (%d) and expert (%d) parallel sizes must be at "
			 "least 1", l->pp, l->dp, l->ep);
		return -1;
	}
	if ((long)l->pp * l->dp != world) {
		snprintf(err, errlen, "%d pipeline stages of %d data-parallel ranks make %d ranks, but the "
			 "job has %d", l->pp, l->dp, l->pp * l->dp, world);
		return -1;
	}
	if (l->dp % l->ep) {
		snprintf(err, errlen, "expert parallelism %d does not divide the %d data-parallel ranks "
			 "of a stage", l->ep, l->dp);
		return -1;
	}
	return 0;
}

void rt_layout_group(const struct rt_layout *l, int rank, enum rt_group g, int *color, int *key)
{
	int stage = rank / l->dp, d = rank % l->dp;
	int egroup = d / l->ep, e = d % l->ep;
	switch (g) {
	case RT_GROUP_PP:
		*color = d;
		*key = stage;
		return;
	case RT_GROUP_DP:
		*color = stage;
		*key = d;
		return;
	case RT_GROUP_EP:
		*color = stage * (l->dp / l->ep) + egroup;
		*key = e;
		return;
	case RT_GROUP_EDP:
		*color = stage * l->ep + e;
		*key = egroup;
		return;
	case RT_GROUPS:
		break;
	}
	RT_BUG("bad group kind %d", (int)g);
}

const char *rt_group_name(enum rt_group g)
{
	static const char *names[] = { "pipeline", "data-parallel", "expert-parallel",
				       "expert-data-parallel" };
	return (unsigned)g < RT_GROUPS ? names[g] : "?";
}

/* ---- the launcher ------------------------------------------------------------------ */

static int in_a_job(void)
{
	return getenv("SLUICE_LAUNCHED") || getenv("RANK") || getenv("WORLD_SIZE") ||
	       getenv("OMPI_COMM_WORLD_RANK") || getenv("SLURM_PROCID");
}

/* This process's argv, from /proc/self/cmdline: a NULL-terminated array. */
static char **own_argv(char **blob)
{
	size_t n;
	char *s = rt_read_file("/proc/self/cmdline", &n);
	if (!s)
		return NULL;
	int k = 0;
	for (size_t i = 0; i < n; i++)
		k += !s[i];
	char **v = rt_calloc((size_t)k + 1, sizeof *v);
	int j = 0;
	for (size_t i = 0; i < n && j < k; i += strlen(s + i) + 1)
		v[j++] = s + i;
	*blob = s;
	return v;
}

static volatile sig_atomic_t forward_sig;

static void on_signal(int sig)
{
	forward_sig = sig;
}

static void set_env_int(const char *name, long v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%ld", v);
	setenv(name, buf, 1);
}

int rt_launch(int nranks)
{
	if (nranks <= 1 || in_a_job())
		return RT_LAUNCH_RANK;
	/* the rendezvous socket, made here so that no other job can take its port */
	int port = 0, p;
	long want = env_num("MASTER_PORT", &p);
	if (p && (want < 1 || want > 65535)) {
		fprintf(stderr, "sluice: MASTER_PORT='%s' is not a TCP port\n", getenv("MASTER_PORT"));
		return 1;
	}
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { 0 };
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(p ? (uint16_t)want : 0);
	int one = 1;
	if (lfd >= 0)
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	socklen_t len = sizeof sa;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1024) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len)) {
		fprintf(stderr, "sluice: launcher: cannot listen on 127.0.0.1:%ld: %s\n", p ? want : 0,
			strerror(errno));
		if (lfd >= 0)
			close(lfd);
		return 1;
	}
	port = ntohs(sa.sin_port);
	char *blob = NULL;
	char **argv = own_argv(&blob);
	if (!argv) {
		fprintf(stderr, "sluice: launcher: cannot read /proc/self/cmdline: %s\n", strerror(errno));
		close(lfd);
		return 1;
	}
	fflush(NULL);
	pid_t *pid = rt_calloc((size_t)nranks, sizeof *pid);
	struct sigaction sa_new = { 0 }, sa_int, sa_term;
	sa_new.sa_handler = on_signal;
	sigaction(SIGINT, &sa_new, &sa_int);
	sigaction(SIGTERM, &sa_new, &sa_term);
	int status = 0, alive = 0;
	double failed_at = 0;
	for (int r = 0; r < nranks; r++) {
		pid[r] = fork();
		if (pid[r] < 0) {
			fprintf(stderr, "sluice: launcher: fork: %s\n", strerror(errno));
			status = 1;
			failed_at = rt_now();
			break;
		}
		if (pid[r] == 0) {
			sigaction(SIGINT, &sa_int, NULL);
			sigaction(SIGTERM, &sa_term, NULL);
			set_env_int("RANK", r);
			set_env_int("WORLD_SIZE", nranks);
			set_env_int("LOCAL_RANK", r);
			set_env_int("LOCAL_WORLD_SIZE", nranks);
			setenv("MASTER_ADDR", "127.0.0.1", 1);
			set_env_int("MASTER_PORT", port);
			setenv("SLUICE_LAUNCHED", "1", 1);
			if (r == 0)
				set_env_int("SLUICE_RDZV_FD", lfd);
			else
				close(lfd);
			execv("/proc/self/exe", argv);
			fprintf(stderr, "sluice: launcher: cannot run %s: %s\n", argv[0], strerror(errno));
			_exit(127);
		}
		alive++;
	}
	close(lfd);
	/* wait; after the first failure give the others 15 s, then kill them */
	int killed = 0;
	while (alive) {
		int ws;
		pid_t w = waitpid(-1, &ws, WNOHANG);
		if (w < 0 && errno != EINTR)
			break;
		if (w <= 0) {
			if (forward_sig) {
				for (int r = 0; r < nranks; r++)
					if (pid[r] > 0)
						kill(pid[r], forward_sig);
				forward_sig = 0;
				if (!failed_at)
					failed_at = rt_now();
			}
			if (failed_at && !killed && rt_now() - failed_at > 15) {
				for (int r = 0; r < nranks; r++)
					if (pid[r] > 0) {
						fprintf(stderr, "sluice: launcher: rank %d still running 15 s "
								"after a failure: killing it\n", r);
						kill(pid[r], SIGKILL);
					}
				killed = 1;
			}
			usleep(20 * 1000);
			continue;
		}
		int r = 0;
		while (r < nranks && pid[r] != w)
			r++;
		if (r == nranks)
			continue;
		pid[r] = 0;
		alive--;
		/* Ranks stopped by another's failure exit 1, and several ranks can end between
		 * two polls: the job's status is the first failure other than 1, else 1. */
		int code = 0;
		if (WIFEXITED(ws) && WEXITSTATUS(ws)) {
			code = WEXITSTATUS(ws);
			fprintf(stderr, "sluice: launcher: rank %d exited with status %d\n", r, code);
		} else if (WIFSIGNALED(ws)) {
			code = 1;
			fprintf(stderr, "sluice: launcher: rank %d was killed by signal %d (%s)\n", r,
				WTERMSIG(ws), strsignal(WTERMSIG(ws)));
		}
		if (code) {
			if (!status || (status == 1 && code != 1))
				status = code;
			if (!failed_at)
				failed_at = rt_now();
		}
	}
	sigaction(SIGINT, &sa_int, NULL);
	sigaction(SIGTERM, &sa_term, NULL);
	free(pid);
	free(argv);
	free(blob);
	return status;
}

/* ---- CPU ranks through mpirun ---------------------------------------------------------- */

int rt_launch_check(int nranks, char *err, size_t errlen)
{
	struct rt_rank_env e;
	if (rt_rank_env_read(&e, err, errlen))
		return -1;
	if (nranks > 0 && e.world != nranks) {
		snprintf(err, errlen, "this process is rank %d of %d (%s), but %d rank%s %s asked for",
			 e.rank, e.world, e.source, nranks, nranks == 1 ? "" : "s",
			 nranks == 1 ? "was" : "were");
		return -1;
	}
	return 0;
}

#ifdef SLUICE_HAVE_MPI
/* The path of an executable NAME on PATH into buf, or -1. */
static int find_on_path(const char *name, char *buf, size_t n)
{
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t k = strcspn(p, ":");
		if (k && (size_t)snprintf(buf, n, "%.*s/%s", (int)k, p, name) < n) {
			struct stat st;
			if (!stat(buf, &st) && S_ISREG(st.st_mode) && !access(buf, X_OK))
				return 0;
		}
		p += k;
		if (*p)
			p++;
	}
	return -1;
}

#endif

int rt_launch_mpi(int nranks, char *err, size_t errlen)
{
	if (errlen)
		err[0] = 0;
	if (nranks <= 1 || in_a_job())
		return RT_LAUNCH_RANK;
#ifndef SLUICE_HAVE_MPI
	snprintf(err, errlen, "%s", rt_comm_no_mpi);
	return 1;
#else
	char mpirun[PATH_MAX], exe[PATH_MAX];
	if (find_on_path("mpirun", mpirun, sizeof mpirun)) {
		snprintf(err, errlen, "--ranks %d needs Open MPI's mpirun, which is not on PATH "
			 "(Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev)", nranks);
		return 1;
	}
	/* the executable itself: mpirun's children would read /proc/self/exe as mpirun */
	ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (k <= 0) {
		snprintf(err, errlen, "cannot read /proc/self/exe: %s", strerror(errno));
		return 1;
	}
	exe[k] = 0;
	char *blob = NULL;
	char **own = own_argv(&blob);
	if (!own || !own[0]) {
		snprintf(err, errlen, "cannot read /proc/self/cmdline: %s", strerror(errno));
		free(own);
		free(blob);
		return 1;
	}
	int nown = 0;
	while (own[nown])
		nown++;
	char np[16];
	snprintf(np, sizeof np, "%d", nranks);
	const char **argv = rt_calloc((size_t)nown + 16, sizeof *argv);
	int a = 0;
	argv[a++] = mpirun;
	if (geteuid() == 0)
		argv[a++] = "--allow-run-as-root";
	argv[a++] = "--oversubscribe";
	argv[a++] = "--bind-to";
	argv[a++] = "none";
	/* mpirun runs in a process group of its own (below), away from the terminal: it
	 * must not read it */
	argv[a++] = "--stdin";
	argv[a++] = "none";
	argv[a++] = "-x";
	argv[a++] = "SLUICE_THREADS";
	argv[a++] = "-x";
	argv[a++] = "SLUICE_STOP_FILE";
	argv[a++] = "-np";
	argv[a++] = np;
	argv[a++] = exe;
	for (int i = 1; i < nown; i++)
		argv[a++] = own[i];
	argv[a] = NULL;
	/* What the ranks inherit: a fair share of the cores each, unless told; Open MPI
	 * spinning less while it waits (more ranks than cores is the usual case here);
	 * no single-copy shared memory, which containers often forbid (ptrace). */
	int had_threads = getenv("SLUICE_THREADS") != NULL;
	if (!had_threads) {
		int share = rt_num_cpus() / nranks;
		set_env_int("SLUICE_THREADS", share > 1 ? share : 1);
	}
	/* Ctrl-C reaches the ranks as a file they look for at the end of every step
	 * (runtime/engine.c): a signal passed on by mpirun is lost when it comes before
	 * mpirun started them, and kills one that has not yet set its handler */
	const char *tmp = getenv("TMPDIR");
	char stop_dir[PATH_MAX], stop_file[PATH_MAX + 8];
	snprintf(stop_dir, sizeof stop_dir, "%s/sluice-job.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(stop_dir)) {
		snprintf(err, errlen, "cannot make a directory in %s: %s", tmp && *tmp ? tmp : "/tmp",
			 strerror(errno));
		if (!had_threads)
			unsetenv("SLUICE_THREADS");
		free(argv);
		free(own);
		free(blob);
		return 1;
	}
	snprintf(stop_file, sizeof stop_file, "%s/stop", stop_dir);
	setenv("SLUICE_STOP_FILE", stop_file, 1);
	setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
	setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
	fflush(NULL);
	struct sigaction sa_new = { 0 }, sa_int, sa_term;
	sa_new.sa_handler = on_signal;
	sigaction(SIGINT, &sa_new, &sa_int);
	sigaction(SIGTERM, &sa_new, &sa_term);
	/* a Ctrl-C that came before: while the command read the model */
	if (rt_train_interrupted())
		forward_sig = SIGINT;
	int status = 1;
	pid_t pid = fork();
	if (pid == 0) {
		sigaction(SIGINT, &sa_int, NULL);
		sigaction(SIGTERM, &sa_term, NULL);
		/* Ctrl-C at the terminal reaches this process alone; mpirun would end the
		 * ranks on a SIGINT of its own, where they should stop at a step's end */
		setpgid(0, 0);
		execv(mpirun, (char **)argv);
		fprintf(stderr, "sluice: cannot run %s: %s\n", mpirun, strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
	} else {
		/* A first Ctrl-C makes the stop file, which the training engine takes as
		 * Ctrl-C (stop after the step, with a checkpoint); a second one, or SIGTERM,
		 * goes to mpirun as it is, which ends the job. */
		int interrupts = 0;
		for (;;) {
			int ws;
			pid_t w = waitpid(pid, &ws, 0);
			if (w == pid) {
				if (WIFEXITED(ws))
					status = WEXITSTATUS(ws);
				else
					snprintf(err, errlen, "mpirun was killed by signal %d (%s)",
						 WTERMSIG(ws), strsignal(WTERMSIG(ws)));
				break;
			}
			if (w < 0 && errno != EINTR) {
				snprintf(err, errlen, "waitpid: %s", strerror(errno));
				break;
			}
			if (forward_sig) {
				if (forward_sig == SIGINT && !interrupts++) {
					int fd = open(stop_file, O_WRONLY | O_CREAT, 0600);
					if (fd >= 0)
						close(fd);
					else
						kill(pid, SIGUSR1); /* passed on by mpirun */
				} else {
					kill(pid, forward_sig);
				}
				forward_sig = 0;
			}
		}
		if (status && !err[0])
			snprintf(err, errlen, "the job of %d ranks (mpirun) ended with status %d",
				 nranks, status);
	}
	sigaction(SIGINT, &sa_int, NULL);
	sigaction(SIGTERM, &sa_term, NULL);
	unlink(stop_file);
	rmdir(stop_dir);
	unsetenv("SLUICE_STOP_FILE");
	if (!had_threads)
		unsetenv("SLUICE_THREADS");
	free(argv);
	free(own);
	free(blob);
	return status;
#endif
}
