/* rt.h - the runtime's base: checked allocation, errors, timing, files written safely.
 * The runtime knows nothing of the language or the IR; it runs compiled programs. */
#ifndef SLUICE_RT_H
#define SLUICE_RT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void *rt_malloc(size_t n);            /* aborts with a message when out of memory */
void *rt_calloc(size_t n, size_t size);
void *rt_realloc(void *p, size_t n);
char *rt_strdup(const char *s);
/* An internal error: a bug in sluice, not in the user's input. */
_Noreturn void rt_bug(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define RT_BUG(...) rt_bug(__FILE__, __LINE__, __VA_ARGS__)
#define RT_ASSERT(c) ((c) ? (void)0 : RT_BUG("assertion failed: %s", #c))

double rt_now(void);                  /* monotonic seconds */
int rt_num_cpus(void);
/* Start-up timing: with SLUICE_TIMING set (to anything but 0), prints
 * "timing: WHAT  T s since exec (+D s), cpu C s" on stderr, T measured from the process's
 * start as the kernel recorded it, D since the previous mark; else nothing. */
void rt_timing(const char *what);

/* Write a whole file safely: to PATH.tmp.PID, fsync, rename over PATH, fsync the
 * directory.  Returns 0, or -1 with errno set and nothing left behind. */
int rt_write_file_atomic(const char *path, const void *data, size_t n);
/* The same, written piece by piece: open makes PATH.tmp.PID, write appends, commit
 * fsyncs, renames over PATH and fsyncs the directory; abort (or a failed write's
 * caller) closes and removes the temp file.  Each returns 0, or -1 with errno set;
 * a failed commit has already removed the temp file. */
struct rt_afile {
	int fd;
	char *path, *tmp;
};
int rt_afile_open(struct rt_afile *f, const char *path);
int rt_afile_write(struct rt_afile *f, const void *data, size_t n);
int rt_afile_commit(struct rt_afile *f);
void rt_afile_abort(struct rt_afile *f);
/* fsync the folder holding PATH (after a rename or an unlink in it). */
int rt_fsync_dir_of(const char *path);
/* mkdir -p: make DIR and its missing parents.  0, or -1 with errno set. */
int rt_mkdir_p(const char *dir);
/* Make the missing folders above the file PATH.  0, or -1 with errno set. */
int rt_mkdir_parents(const char *path);
/* Read a whole file; returns malloc'd bytes (NUL-terminated) or NULL with errno set. */
char *rt_read_file(const char *path, size_t *len);

#endif
