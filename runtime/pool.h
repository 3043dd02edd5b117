/* pool.h - a fixed set of worker threads that run a range of work split in chunks.
 *
 * rt_pool_run(p, n, grain, fn, ctx) calls fn(ctx, lo, hi) over disjoint chunks that
 * cover [0, n), each at most `grain` long (0: n split evenly over the threads), on the
 * workers and the calling thread, and returns when all chunks are done.  One run at a
 * time per pool: the pool is not reentrant (fn must not call rt_pool_run on the same
 * pool).  A pool of one thread runs everything on the caller. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stddef.h>
#include <stdint.h>

struct rt_pool;

typedef void (*rt_pool_fn)(void *ctx, int64_t lo, int64_t hi);

/* n_threads <= 0: one per online CPU (or SLUICE_THREADS from the environment). */
struct rt_pool *rt_pool_new(int n_threads);
void rt_pool_free(struct rt_pool *p);
int rt_pool_threads(const struct rt_pool *p);
void rt_pool_run(struct rt_pool *p, int64_t n, int64_t grain, rt_pool_fn fn, void *ctx);

/* n zeroed bytes (free with free()) whose pages are already faulted in, by the pool's
 * threads, on huge pages where the kernel allows: large arrays (weights, AdamW
 * moments, gradients, the arena) then cost nothing at their first touch in the first
 * step, and the faults are taken in parallel.  Small sizes are a plain calloc. */
void *rt_pool_alloc_zeroed(struct rt_pool *p, size_t n);

#endif
