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

int main(void)
{
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
