/* comm_none.c - the communication backends this build lacks: without NCCL,
 * rt_comm_init for GPU ranks, the symmetric all-to-all and 'sluice bench comm' say
 * so and fail; without MPI, rt_comm_init for CPU ranks does.  The ranks, the
 * launchers and the rendezvous (rendezvous.c, launch.c) work without either. */
#include "comm_impl.h"
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SLUICE_HAVE_NCCL
static const char no_nccl[] =
	"sluice was built without NCCL, so it cannot communicate between GPUs (CMake did not "
	"find nccl.h and libnccl, or SLUICE_WITH_CUDA/SLUICE_WITH_NCCL was OFF; see the "
	"configuration summary of the build)";

struct rt_comm *rt_comm_nccl_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	(void)o;
	snprintf(err, errlen, "%s", no_nccl);
	return NULL;
}

/* No symmetric communicator can be made, so the others are never called with one. */
struct rt_comm_sym *rt_comm_sym_new(struct rt_comm *c, size_t rcap_bytes, int ctas, char *err,
				    size_t errlen)
{
	snprintf(err, errlen, "%s", no_nccl);
	return NULL;
}
uint64_t rt_comm_sym_rbuf(const struct rt_comm_sym *s) { RT_BUG("no symmetric all-to-all"); }
void rt_comm_sym_all_to_allv(struct rt_comm_sym *s, uint64_t sbuf, uint64_t d_scounts,
			     uint64_t d_rcounts, enum rt_comm_dtype t, void *stream)
{
	RT_BUG("no symmetric all-to-all");
}
int rt_comm_sym_overflowed(struct rt_comm_sym *s, void *stream) { RT_BUG("no symmetric all-to-all"); }
void rt_comm_sym_free(struct rt_comm_sym *s) { (void)s; }

int rt_bench_comm(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: sluice bench comm --gpus N [--sizes 1M,8M,64M,256M]\n\n%s.\n",
			       no_nccl);
			return 0;
		}
	fprintf(stderr, "sluice bench comm: %s\n", no_nccl);
	return 1;
}
#endif

#ifndef SLUICE_HAVE_MPI
const char rt_comm_no_mpi[] =
	"sluice was built without MPI, so it cannot run CPU ranks (CMake did not find Open MPI, "
	"or SLUICE_WITH_MPI was OFF; install the Debian packages libopenmpi-dev and openmpi-bin "
	"and build again)";

struct rt_comm *rt_comm_mpi_init(const struct rt_comm_opts *o, char *err, size_t errlen)
{
	(void)o;
	snprintf(err, errlen, "%s", rt_comm_no_mpi);
	return NULL;
}
#endif
typedef int rt_comm_none_unused; /* a build with both backends needs nothing above */
