/* pool.c - worker threads over a shared chunk counter.
 *
 * A run publishes (fn, ctx, n, grain) and bumps a generation number under the mutex;
 * workers wake, take chunks by atomically incrementing `next`, and the last one to
 * finish a chunk signals the caller, which also takes chunks.  Chunks are claimed
 * dynamically so uneven chunk costs balance themselves. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "rt.h"

struct rt_pool {
	int n_threads;
	pthread_t *threads;
	pthread_mutex_t mu;
	pthread_cond_t wake, done;
	uint64_t generation;
	int stop;
	/* the current run */
	rt_pool_fn fn;
	void *ctx;
	int64_t n, grain, n_chunks;
	atomic_llong next;
	atomic_llong finished;
	int active;       /* workers inside take_chunks */
};

static void take_chunks(struct rt_pool *p)
{
	for (;;) {
		long long c = atomic_fetch_add(&p->next, 1);
		if (c >= p->n_chunks)
			return;
		int64_t lo = (int64_t)c * p->grain;
		int64_t hi = lo + p->grain < p->n ? lo + p->grain : p->n;
		p->fn(p->ctx, lo, hi);
		if (atomic_fetch_add(&p->finished, 1) + 1 == p->n_chunks) {
			pthread_mutex_lock(&p->mu);
			pthread_cond_broadcast(&p->done);
			pthread_mutex_unlock(&p->mu);
		}
	}
}

static void *worker(void *arg)
{
	struct rt_pool *p = arg;
	uint64_t seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->generation == seen)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->stop)
			break;
		seen = p->generation;
		p->active++;
		pthread_mutex_unlock(&p->mu);
		take_chunks(p);
		pthread_mutex_lock(&p->mu);
		if (--p->active == 0)
			pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct rt_pool *rt_pool_new(int n_threads)
{
	if (n_threads <= 0) {
		const char *env = getenv("SLUICE_THREADS");
		n_threads = env ? atoi(env) : 0;
		if (n_threads <= 0)
			n_threads = rt_num_cpus();
	}
	struct rt_pool *p = rt_calloc(1, sizeof *p);
	p->n_threads = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	p->threads = rt_calloc((size_t)n_threads, sizeof *p->threads);
	for (int i = 1; i < n_threads; i++)
		if (pthread_create(&p->threads[i], NULL, worker, p))
			RT_BUG("pthread_create failed");
	return p;
}

void rt_pool_free(struct rt_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

int rt_pool_threads(const struct rt_pool *p)
{
	return p->n_threads;
}

void rt_pool_run(struct rt_pool *p, int64_t n, int64_t grain, rt_pool_fn fn, void *ctx)
{
	if (n <= 0)
		return;
	if (grain <= 0)
		grain = (n + p->n_threads - 1) / p->n_threads;
	if (p->n_threads == 1 || grain >= n) {
		for (int64_t lo = 0; lo < n; lo += grain)
			fn(ctx, lo, lo + grain < n ? lo + grain : n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	/* a worker still inside take_chunks (woken for an earlier run it found finished)
	 * reads the run's fields without the lock: wait until none is */
	while (p->active > 0)
		pthread_cond_wait(&p->done, &p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->n = n;
	p->grain = grain;
	p->n_chunks = (n + grain - 1) / grain;
	atomic_store(&p->next, 0);
	atomic_store(&p->finished, 0);
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	take_chunks(p);
	pthread_mutex_lock(&p->mu);
	while (atomic_load(&p->finished) < p->n_chunks || p->active > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

/* --- memory faulted in by the pool ------------------------------------------------ */

#define HUGE_PAGE ((size_t)2 << 20)

/* One byte written in each page: the fault gives a page the kernel has zeroed (a huge
 * page where it can), so the memory is written once, by the kernel. */
static void touch_range(void *ctx, int64_t lo, int64_t hi)
{
	volatile char *m = ctx;
	for (int64_t i = lo; i < hi; i += 4096)
		m[i] = 0;
}

void *rt_pool_alloc_zeroed(struct rt_pool *p, size_t n)
{
	/* calloc: large blocks come straight from mmap, zero and not yet faulted in,
	 * and calloc knows not to clear them again (it clears what it reuses) */
	char *m = rt_calloc(n ? n : 1, 1);
	if (n < HUGE_PAGE)
		return m;
	/* Huge pages where the kernel gives them on request (transparent_hugepage =
	 * madvise, as on Debian and Ubuntu): a 512th of the faults; advice only, on the
	 * whole huge pages inside the block. */
	uintptr_t a = ((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	uintptr_t z = ((uintptr_t)m + n) & ~(uintptr_t)(HUGE_PAGE - 1);
	if (z > a)
		madvise((void *)a, z - a, MADV_HUGEPAGE);
	/* from the block's first page boundary (the one before is calloc's, faulted) */
	uintptr_t first = ((uintptr_t)m + 4095) & ~(uintptr_t)4095;
	int64_t len = (int64_t)((uintptr_t)m + n - first);
	if (len > 0)
		rt_pool_run(p, len, (int64_t)HUGE_PAGE * 8, touch_range, (void *)first);
	return m;
}
