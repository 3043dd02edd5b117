/* rt.c - the runtime's base helpers. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Noreturn void oom(size_t n)
{
	fprintf(stderr, "sluice: out of memory (asked for %zu bytes)\n", n);
	abort();
}

void *rt_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *rt_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom(n * size);
	return p;
}

void *rt_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *rt_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(rt_malloc(n), s, n);
}

void rt_bug(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "sluice: internal error at %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (this is a bug in sluice)\n");
	abort();
}

double rt_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The process's start on CLOCK_BOOTTIME (field 22 of /proc/self/stat, in clock
 * ticks since boot), so that the time before main (loading the shared libraries)
 * counts; rt_now's origin where that cannot be read. */
static double exec_time(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1.0;
	buf[n] = 0;
	const char *p = strrchr(buf, ')'); /* past the command name, which may hold spaces */
	unsigned long long start = 0;
	for (int field = 2; p && *p; p++)
		if (*p == ' ' && ++field == 22) {
			start = strtoull(p + 1, NULL, 10);
			break;
		}
	long hz = sysconf(_SC_CLK_TCK);
	return start && hz > 0 ? (double)start / (double)hz : -1.0;
}

void rt_timing(const char *what)
{
	static int on = -1;
	static double origin, last;
	if (on < 0) {
		const char *env = getenv("SLUICE_TIMING");
		on = env && *env && strcmp(env, "0");
		if (on) {
			struct timespec ts;
			clock_gettime(CLOCK_BOOTTIME, &ts);
			double boot_now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
			double start = exec_time();
			origin = rt_now() - (start >= 0.0 ? boot_now - start : 0.0);
			last = origin;
		}
	}
	if (!on)
		return;
	double now = rt_now();
	struct timespec cpu;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
	fprintf(stderr, "timing: %-36s %7.3f s since exec (+%.3f s), cpu %.3f s\n", what,
		now - origin, now - last, (double)cpu.tv_sec + 1e-9 * (double)cpu.tv_nsec);
	last = now;
}

/* The cores this process may use: those of its affinity mask, fewer where a cgroup
 * (v2) quota allows less CPU time than that (a container of 2 cores on a large host). */
int rt_num_cpus(void)
{
	cpu_set_t set;
	long n = 0;
	if (!sched_getaffinity(0, sizeof set, &set))
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
	if (f) {
		long long quota, period;
		if (fscanf(f, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0) {
			long q = (long)((quota + period - 1) / period);
			if (q < n)
				n = q;
		}
		fclose(f);
	}
	return n > 0 ? (int)n : 1;
}

static int write_all(int fd, const void *data, size_t n)
{
	const char *p = data;
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

int rt_fsync_dir_of(const char *path)
{
	char *dir = rt_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = 0;
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY);
	int rc = -1;
	if (dfd >= 0) {
		rc = fsync(dfd);
		close(dfd);
	}
	free(dir);
	return rc;
}

int rt_afile_open(struct rt_afile *f, const char *path)
{
	size_t len = strlen(path) + 32;
	f->path = rt_strdup(path);
	f->tmp = rt_malloc(len);
	snprintf(f->tmp, len, "%s.tmp.%ld", path, (long)getpid());
	f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (f->fd < 0) {
		int e = errno;
		free(f->path);
		free(f->tmp);
		f->path = f->tmp = NULL;
		errno = e;
		return -1;
	}
	return 0;
}

int rt_afile_write(struct rt_afile *f, const void *data, size_t n)
{
	return write_all(f->fd, data, n);
}

void rt_afile_abort(struct rt_afile *f)
{
	int e = errno;
	if (f->fd >= 0)
		close(f->fd);
	if (f->tmp)
		unlink(f->tmp);
	free(f->tmp);
	free(f->path);
	f->fd = -1;
	f->tmp = f->path = NULL;
	errno = e;
}

int rt_afile_commit(struct rt_afile *f)
{
	if (fsync(f->fd)) {
		rt_afile_abort(f);
		return -1;
	}
	int fd = f->fd;
	f->fd = -1;
	if (close(fd) || rename(f->tmp, f->path)) {
		rt_afile_abort(f);
		return -1;
	}
	/* make the rename itself durable */
	rt_fsync_dir_of(f->path);
	free(f->tmp);
	free(f->path);
	f->tmp = f->path = NULL;
	return 0;
}

int rt_write_file_atomic(const char *path, const void *data, size_t n)
{
	struct rt_afile f;
	if (rt_afile_open(&f, path))
		return -1;
	if (rt_afile_write(&f, data, n)) {
		rt_afile_abort(&f);
		return -1;
	}
	return rt_afile_commit(&f);
}

int rt_mkdir_p(const char *dir)
{
	char *s = rt_strdup(dir);
	int rc = 0;
	for (char *c = s + 1; *c && !rc; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(s, 0777) && errno != EEXIST)
			rc = -1;
		*c = '/';
	}
	if (!rc && mkdir(s, 0777) && errno != EEXIST)
		rc = -1;
	int e = errno;
	free(s);
	errno = e;
	return rc;
}

int rt_mkdir_parents(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash || slash == path)
		return 0;
	char *dir = rt_strdup(path);
	dir[slash - path] = 0;
	int rc = rt_mkdir_p(dir);
	int e = errno;
	free(dir);
	errno = e;
	return rc;
}

char *rt_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = rt_malloc(cap + 1);
	for (;;) {
		size_t k = fread(buf + n, 1, cap - n, f);
		n += k;
		if (n < cap) {
			if (ferror(f)) {
				int e = errno;
				fclose(f);
				free(buf);
				errno = e ? e : EIO;
				return NULL;
			}
			break;
		}
		cap *= 2;
		buf = rt_realloc(buf, cap + 1);
	}
	fclose(f);
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}
