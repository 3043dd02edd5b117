/* test_pool.c - the thread pool (runtime/pool.c): every index of [0, n) is visited
 * exactly once, chunks respect the grain, for many sizes and thread counts and many
 * runs in a row on one pool (the generation handshake between runs). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runtime/pool.h"

struct ctx {
	atomic_int *hits;
	int64_t grain;
	atomic_int bad_chunk;
};

static void visit(void *p, int64_t lo, int64_t hi)
{
	struct ctx *c = p;
	if (hi <= lo || (c->grain > 0 && hi - lo > c->grain))
		atomic_fetch_add(&c->bad_chunk, 1);
	for (int64_t i = lo; i < hi; i++)
		atomic_fetch_add(&c->hits[i], 1);
}

/* Many short runs in a row, each with its job on the caller's stack and a chunk count
 * that changes from run to run: a worker woken for one run must never take chunks of
 * the next with the previous run's counters (the symptom was a chunk run twice and a
 * caller returning while a worker still used its stack). */
static void stress(int n_threads, int runs)
{
	struct rt_pool *pool = rt_pool_new(n_threads);
	int bad = 0;
	for (int r = 0; r < runs && !bad; r++) {
		int64_t n = 1 + r % 5;
		atomic_int hits[5];
		for (int i = 0; i < 5; i++)
			atomic_init(&hits[i], 0);
		struct ctx c = { hits, 1, 0 };
		rt_pool_run(pool, n, 1, visit, &c);
		for (int64_t i = 0; i < n; i++)
			bad |= atomic_load(&hits[i]) != 1;
		bad |= atomic_load(&c.bad_chunk) != 0;
		CHECKF(!bad, "threads %d: run %d visited an index twice or not at all", n_threads, r);
	}
	rt_pool_free(pool);
}

int main(void)
{
	stress(2, 200000);
	stress(3, 100000);
	static const int threads[] = { 1, 2, 3, 8 };
	static const int64_t sizes[] = { 0, 1, 2, 7, 64, 1000, 4097 };
	static const int64_t grains[] = { 0, 1, 3, 100, 5000 };
	for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
		struct rt_pool *pool = rt_pool_new(threads[t]);
		CHECK(rt_pool_threads(pool) == threads[t]);
		for (int rep = 0; rep < 20; rep++)
			for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
				for (size_t g = 0; g < sizeof grains / sizeof *grains; g++) {
					int64_t n = sizes[s];
					struct ctx c = { calloc((size_t)n + 1, sizeof(atomic_int)), grains[g], 0 };
					rt_pool_run(pool, n, grains[g], visit, &c);
					int ok = 1;
					for (int64_t i = 0; i < n; i++)
						ok &= atomic_load(&c.hits[i]) == 1;
					CHECKF(ok && !atomic_load(&c.bad_chunk),
					       "threads %d n %lld grain %lld", threads[t], (long long)n,
					       (long long)grains[g]);
					free(c.hits);
				}
		rt_pool_free(pool);
	}
	return CHECK_DONE();
}
