/* bench_comm.c - 'sluice bench comm': all-to-all and send/recv bandwidth and latency
 * through NCCL, one process per GPU, and the ways of an all-to-all whose per-peer
 * counts change every call (MoE dispatch): counts already on the host (the bound),
 * counts exchanged through the GPU with a host sync, worst-case fixed blocks, and one
 * kernel over NCCL's symmetric windows (nccl_sym.c).
 *
 * Timing: each row runs 3 warm-up calls, then REPS times a burst of ITERS back-to-back
 * calls between two events on the communication stream; the row gives the median
 * burst's time per call.  tools/bench/torch_comm.py times torch.distributed the same
 * way, with the same sizes, iterations and byte counts. */
#ifdef SLUICE_HAVE_NCCL
#include <nccl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/comm.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

#define ROW_ELEMS 7168 /* one token of DeepSeek-V3's hidden state, bf16 */
#define ROW_BYTES (2 * ROW_ELEMS)
#define NSETS 16       /* count matrices cycled through by the variable rows */
#define MAX_SIZES 16

struct bench {
	struct rt_comm *c;
	struct rt_gpu *g;
	int rank, n;
	size_t size; /* bytes of one row's send buffer */
	rt_dptr sbuf, rbuf, d_counts, d_rcounts;
	/* variable counts: rows[set][src][dst] */
	size_t *rows;
	size_t *sc, *so, *rc, *ro, *got;
	size_t cap; /* elements per peer block in the worst case */
	struct rt_comm_sym *sym; /* the symmetric-memory kernel, NULL when refused */
	int kill_rank, hang_rank, calls;
	FILE *csv;
};

static size_t *rows_at(struct bench *b, int set, int src)
{
	return b->rows + ((size_t)set * (size_t)b->n + (size_t)src) * (size_t)b->n;
}

/* Fault demonstration: a rank that dies or hangs in the middle of the all-to-alls. */
static void maybe_fault(struct bench *b)
{
	if (++b->calls != 20)
		return;
	if (b->rank == b->kill_rank) {
		fprintf(stderr, "sluice bench comm: rank %d: killing myself mid all-to-all (--kill-rank)\n",
			b->rank);
		raise(SIGKILL);
	}
	if (b->rank == b->hang_rank) {
		fprintf(stderr, "sluice bench comm: rank %d: hanging outside communication (--hang-rank)\n",
			b->rank);
		for (;;)
			pause();
	}
}

static void op_a2a(struct bench *b, int i)
{
	(void)i;
	maybe_fault(b);
	rt_comm_all_to_all(b->c, b->sbuf, b->rbuf, b->size / (size_t)b->n, RT_COMM_U8, NULL);
}

static void op_a2a_p2p(struct bench *b, int i)
{
	(void)i;
	size_t blk = b->size / (size_t)b->n;
	for (int p = 0; p < b->n; p++) {
		b->sc[p] = b->rc[p] = blk;
		b->so[p] = b->ro[p] = (size_t)p * blk;
	}
	rt_comm_all_to_allv(b->c, b->sbuf, b->sc, b->so, b->rbuf, b->rc, b->ro, RT_COMM_U8, NULL);
}

static void op_sendrecv(struct bench *b, int i)
{
	(void)i;
	rt_comm_sendrecv(b->c, b->sbuf, b->size, (b->rank + 1) % b->n, b->rbuf, b->size,
			 (b->rank + b->n - 1) % b->n, RT_COMM_U8, NULL);
}

static void op_a2av_host(struct bench *b, int i)
{
	int set = i % NSETS;
	size_t s = 0, r = 0;
	for (int p = 0; p < b->n; p++) {
		b->sc[p] = rows_at(b, set, b->rank)[p] * ROW_ELEMS;
		b->rc[p] = rows_at(b, set, p)[b->rank] * ROW_ELEMS;
		b->so[p] = s;
		b->ro[p] = r;
		s += b->sc[p];
		r += b->rc[p];
	}
	rt_comm_all_to_allv(b->c, b->sbuf, b->sc, b->so, b->rbuf, b->rc, b->ro, RT_COMM_BF16, NULL);
}

static void op_a2av_exchange(struct bench *b, int i)
{
	int set = i % NSETS;
	rt_comm_all_to_allv_dev(b->c, b->sbuf, b->d_counts + (size_t)set * (size_t)b->n * 8, b->rbuf,
				(size_t)b->n * b->cap, b->got, RT_COMM_BF16, NULL);
	for (int p = 0; p < b->n; p++)
		if (b->got[p] != rows_at(b, set, p)[b->rank] * ROW_ELEMS)
			rt_comm_fail(b->c, "bench: count exchange gave %zu elements from rank %d, "
					   "expected %zu",
				     b->got[p], p, rows_at(b, set, p)[b->rank] * ROW_ELEMS);
}

static void op_a2av_sym(struct bench *b, int i)
{
	int set = i % NSETS;
	rt_comm_sym_all_to_allv(b->sym, b->sbuf, b->d_counts + (size_t)set * (size_t)b->n * 8,
				b->d_rcounts, RT_COMM_BF16, NULL);
}

static void op_a2av_fixed(struct bench *b, int i)
{
	int set = i % NSETS;
	rt_comm_all_to_all_fixed(b->c, b->sbuf, b->d_counts + (size_t)set * (size_t)b->n * 8, b->rbuf,
				 b->d_rcounts, b->cap, RT_COMM_BF16, NULL);
}

/* a 64-bit LCG (Knuth's MMIX constants), easy to repeat in Python */
static unsigned next_rand(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (unsigned)(*s >> 33);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Iterations per burst: enough calls that a burst lasts well over a millisecond. */
static int iters_for(size_t size)
{
	size_t k = ((size_t)512 << 20) / (size ? size : 1);
	return k < 10 ? 10 : k > 200 ? 200 : (int)k;
}

/* Seconds per call, the median of reps bursts. */
static double time_op(struct bench *b, void (*fn)(struct bench *, int), int iters, int reps)
{
	struct rt_gpu_event *e0 = rt_gpu_event_new(b->g), *e1 = rt_gpu_event_new(b->g);
	if (!e0 || !e1)
		rt_comm_fail(b->c, "bench: cannot create events");
	int call = 0;
	for (int i = 0; i < 3; i++)
		fn(b, call++);
	rt_comm_sync(b->c, NULL);
	double t[64];
	if (reps > 64)
		reps = 64;
	for (int r = 0; r < reps; r++) {
		rt_gpu_event_record(e0, RT_STREAM_COMM);
		for (int i = 0; i < iters; i++)
			fn(b, call++);
		rt_gpu_event_record(e1, RT_STREAM_COMM);
		rt_rdzv_op_begin(rt_comm_rdzv(b->c), "a timed burst of communication");
		double ms = rt_gpu_event_ms(e0, e1);
		rt_rdzv_op_end(rt_comm_rdzv(b->c));
		if (ms < 0)
			rt_comm_fail(b->c, "bench: timing events failed");
		t[r] = ms * 1e-3 / iters;
	}
	rt_gpu_event_free(e0);
	rt_gpu_event_free(e1);
	qsort(t, (size_t)reps, sizeof t[0], cmp_double);
	return t[reps / 2];
}

static void row(struct bench *b, const char *op, double secs, double bytes_out)
{
	if (b->rank)
		return;
	char sz[32];
	if (b->size >= (1u << 20))
		snprintf(sz, sizeof sz, "%zu MiB", b->size >> 20);
	else
		snprintf(sz, sizeof sz, "%zu KiB", b->size >> 10);
	double gbps = bytes_out / secs / 1e9;
	printf("%-28s %9s %12.1f %10.1f\n", op, sz, secs * 1e6, gbps);
	fflush(stdout);
	if (b->csv)
		fprintf(b->csv, "sluice,%s,%zu,%.3f,%.2f\n", op, b->size, secs * 1e6, gbps);
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	double v = strtod(s, &end);
	size_t mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = (size_t)1 << 10, end++;
	else if (*end == 'M' || *end == 'm')
		mul = (size_t)1 << 20, end++;
	else if (*end == 'G' || *end == 'g')
		mul = (size_t)1 << 30, end++;
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v <= 0)
		return -1;
	*out = (size_t)(v * (double)mul);
	return *out ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice bench comm [--gpus N] [--sizes 1M,8M,64M,256M] [--reps R] [--iters K]\n"
		"                         [--min-ctas N] [--max-ctas N] [--csv FILE]\n"
		"                         [--kill-rank R | --hang-rank R]\n\n"
		"All-to-all and send/recv through NCCL between N GPUs of this node (one process\n"
		"each, started by sluice itself), or between the ranks that torchrun, srun or\n"
		"mpirun started (then without --gpus).  Rows:\n"
		"  all_to_all            ncclAlltoAll, SIZE bytes out of each GPU's send buffer\n"
		"  all_to_all (p2p)      the same as grouped ncclSend/ncclRecv\n"
		"  send/recv             a ring: each rank sends SIZE to the next, receives SIZE\n"
		"  a2av host counts      per-peer counts that change every call, known on the host\n"
		"  a2av count exchange   counts on the GPU: exchanged, copied to the host, synced\n"
		"  a2av worst case       fixed blocks of SIZE to every peer, counts alongside\n"
		"  a2av symmetric kernel counts on the GPU, one kernel storing the rows into the\n"
		"                        other GPUs' symmetric windows (no host sync)\n"
		"The variable rows move SIZE bytes per rank in rows of %d bf16, split among the\n"
		"peers at random, differently every call.\n\n"
		"GB/s is bytes leaving each GPU for other GPUs per second: SIZE*(N-1)/N for an\n"
		"all-to-all, SIZE for send/recv (each way), the useful bytes for the variable\n"
		"rows.  Time is the median over R bursts of K back-to-back calls (K by size).\n"
		"--min-ctas/--max-ctas bound the SMs NCCL uses (also SLUICE_COMM_MIN_CTAS/MAX_CTAS).\n"
		"--kill-rank R kills rank R in the middle of the all-to-alls, --hang-rank R stops it\n"
		"outside communication (the others stop after SLUICE_COMM_TIMEOUT seconds): every\n"
		"other rank must stop, naming it.\n",
		ROW_ELEMS);
}

static void bench_size(struct bench *b, int reps, int iters_opt)
{
	struct rt_gpu *g = b->g;
	size_t n = (size_t)b->n, size = b->size;
	int iters = iters_opt > 0 ? iters_opt : iters_for(size);
	size_t mark = rt_gpu_arena_mark(g);
	/* even all-to-all and send/recv: SIZE bytes each way */
	b->sbuf = rt_gpu_alloc(g, size, 4096);
	b->rbuf = rt_gpu_alloc(g, size, 4096);
	if (!b->sbuf || !b->rbuf)
		rt_comm_fail(b->c, "bench: out of arena memory");
	rt_gpu_memset(g, b->sbuf, 0x5a, size, RT_STREAM_COMM);
	double blk_out = (double)(size / n) * (double)(n - 1);
	row(b, "all_to_all", time_op(b, op_a2a, iters, reps), blk_out);
	row(b, "all_to_all (p2p)", time_op(b, op_a2a_p2p, iters, reps), blk_out);
	row(b, "send/recv", time_op(b, op_sendrecv, iters, reps), (double)size);
	rt_gpu_arena_reset(g, mark);

	/* variable counts: SIZE bytes of rows per rank, split at random, per call */
	size_t total = size / ROW_BYTES;
	if (total < n || n > 256)
		return; /* too small to split in rows, or more peers than the weights below hold */
	/* the same generator as tools/bench/torch_comm.py: both sides move the same rows */
	uint64_t seed = size;
	double useful = 0;
	for (int set = 0; set < NSETS; set++)
		for (size_t src = 0; src < n; src++) {
			size_t *r = rows_at(b, set, (int)src), left = total;
			double w[256], sum = 0;
			for (size_t p = 0; p < n; p++)
				sum += w[p] = 0.25 + (double)(next_rand(&seed) % 1000) / 1000.0;
			for (size_t p = 0; p < n; p++) {
				r[p] = p + 1 == n ? left : (size_t)((double)total * w[p] / sum);
				if (r[p] > left)
					r[p] = left;
				left -= r[p];
				if ((int)src == b->rank && (int)p != b->rank)
					useful += (double)(r[p] * ROW_BYTES) / NSETS;
			}
		}
	b->cap = total * ROW_ELEMS;
	b->sbuf = rt_gpu_alloc(g, n * b->cap * 2, 4096);
	b->rbuf = rt_gpu_alloc(g, n * b->cap * 2, 4096);
	b->d_counts = rt_gpu_alloc(g, (size_t)NSETS * n * 8, 256);
	b->d_rcounts = rt_gpu_alloc(g, n * 8, 256);
	if (!b->sbuf || !b->rbuf || !b->d_counts || !b->d_rcounts)
		rt_comm_fail(b->c, "bench: out of arena memory");
	rt_gpu_memset(g, b->sbuf, 0x3c, n * b->cap * 2, RT_STREAM_COMM);
	int64_t *h = rt_malloc((size_t)NSETS * n * sizeof *h);
	for (int set = 0; set < NSETS; set++)
		for (size_t p = 0; p < n; p++)
			h[(size_t)set * n + p] = (int64_t)(rows_at(b, set, b->rank)[p] * ROW_ELEMS);
	rt_gpu_copy_to_device(g, b->d_counts, h, (size_t)NSETS * n * sizeof *h, RT_STREAM_COMM);
	rt_comm_sync(b->c, NULL);
	free(h);
	row(b, "a2av host counts", time_op(b, op_a2av_host, iters, reps), useful);
	row(b, "a2av count exchange", time_op(b, op_a2av_exchange, iters, reps), useful);
	row(b, "a2av worst case", time_op(b, op_a2av_fixed, iters, reps), useful);
	if (b->sym) {
		row(b, "a2av symmetric kernel", time_op(b, op_a2av_sym, iters, reps), useful);
		/* one more call, checked: the counts that arrived and no overflow */
		op_a2av_sym(b, 0);
		int64_t got[256];
		rt_gpu_copy_to_host(g, got, b->d_rcounts, n * sizeof got[0], RT_STREAM_COMM);
		if (rt_comm_sym_overflowed(b->sym, NULL))
			rt_comm_fail(b->c, "bench: the symmetric all-to-all found too little room");
		for (size_t p = 0; p < n; p++)
			if (got[p] != (int64_t)(rows_at(b, 0, (int)p)[b->rank] * ROW_ELEMS))
				rt_comm_fail(b->c, "bench: the symmetric all-to-all gave %lld elements "
						   "from rank %zu, expected %zu", (long long)got[p], p,
					     rows_at(b, 0, (int)p)[b->rank] * ROW_ELEMS);
	}
	rt_gpu_arena_reset(g, mark);
}

int rt_bench_comm(int argc, char **argv)
{
	int gpus = 0, reps = 7, iters = 0, min_ctas = 0, max_ctas = 0, kill_rank = -1, hang_rank = -1;
	size_t sizes[MAX_SIZES] = { 1 << 20, 8 << 20, 64 << 20, 256 << 20 };
	int nsizes = 4;
	const char *csv = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int *num = !strcmp(a, "--gpus")	       ? &gpus
			   : !strcmp(a, "--reps")      ? &reps
			   : !strcmp(a, "--iters")     ? &iters
			   : !strcmp(a, "--min-ctas")  ? &min_ctas
			   : !strcmp(a, "--max-ctas")  ? &max_ctas
			   : !strcmp(a, "--kill-rank") ? &kill_rank
			   : !strcmp(a, "--hang-rank") ? &hang_rank
						       : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (num) {
			char *end;
			if (!v || (*num = (int)strtol(v, &end, 10), *end) || *num < 0) {
				fprintf(stderr, "sluice bench comm: %s needs a whole number\n", a);
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--csv") && v) {
			csv = v;
			i++;
		} else if (!strcmp(a, "--sizes") && v) {
			char *list = rt_strdup(v), *save = NULL;
			nsizes = 0;
			for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (nsizes == MAX_SIZES || parse_size(t, &sizes[nsizes])) {
					fprintf(stderr, "sluice bench comm: bad size '%s' (e.g. 1M, 64M, 1G; "
							"at most %d sizes)\n", t, MAX_SIZES);
					free(list);
					return 2;
				}
				nsizes++;
			}
			free(list);
			i++;
		} else {
			fprintf(stderr, "sluice bench comm: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (reps < 1)
		reps = 1;
	if (gpus == 0 && !getenv("RANK") && !getenv("OMPI_COMM_WORLD_RANK") && !getenv("SLURM_PROCID"))
		gpus = rt_gpu_count();
	if (gpus == 0) {
		fprintf(stderr, "sluice bench comm: no GPU: %s\n", rt_gpu_why_none());
		return 1;
	}
	int have = rt_gpu_count();
	if (gpus > have && !getenv("SLUICE_LAUNCHED")) {
		fprintf(stderr, "sluice bench comm: --gpus %d, but this machine has %d GPU%s%s%s\n", gpus,
			have, have == 1 ? "" : "s", have ? "" : ": ", have ? "" : rt_gpu_why_none());
		return 1;
	}
	int st = rt_launch(gpus);
	if (st != RT_LAUNCH_RANK)
		return st;

	size_t max_size = 0;
	for (int i = 0; i < nsizes; i++)
		max_size = sizes[i] > max_size ? sizes[i] : max_size;
	/* what every rank must agree on: the options */
	size_t plen = 0;
	for (int i = 0; i < argc; i++)
		plen += strlen(argv[i]) + 1;
	char *program = rt_malloc(plen + 1), *p = program;
	for (int i = 0; i < argc; i++)
		p += sprintf(p, "%s ", argv[i]);
	struct rt_rank_env env;
	char err[4096];
	if (rt_rank_env_read(&env, err, sizeof err)) {
		fprintf(stderr, "sluice bench comm: %s\n", err);
		free(program);
		return 1;
	}
	size_t n = (size_t)env.world;
	struct rt_comm_opts o = {
		.min_ctas = min_ctas,
		.max_ctas = max_ctas,
		.program = program,
		.program_len = plen,
		/* the variable rows: send and receive buffers of N blocks of the largest size */
		.arena_bytes = 2 * n * (max_size + ROW_BYTES) + (size_t)NSETS * n * 8 + (1 << 20),
	};
	struct rt_comm *c = rt_comm_init(&o, err, sizeof err);
	free(program);
	if (!c) {
		fprintf(stderr, "sluice bench comm: rank %d: %s\n", env.rank, err);
		return 1;
	}
	struct bench b = { .c = c, .g = rt_comm_gpu(c), .rank = rt_comm_rank(c), .n = rt_comm_size(c),
			   .kill_rank = kill_rank, .hang_rank = hang_rank };
	b.rows = rt_calloc((size_t)NSETS * n * n, sizeof *b.rows);
	b.sc = rt_calloc(5 * n, sizeof *b.sc);
	b.so = b.sc + n;
	b.rc = b.so + n;
	b.ro = b.rc + n;
	b.got = b.ro + n;
	if (b.rank == 0) {
		const struct rt_gpu_info *gi = rt_gpu_info(b.g);
		int v = 0;
		ncclGetVersion(&v);
		const char *nvls = getenv("NCCL_NVLS_ENABLE");
		printf("sluice bench comm: %d ranks, %s, NCCL %d.%d.%d, NCCL_NVLS_ENABLE=%s, SM bound "
		       "%d..%d CTAs (0: NCCL's choice)\n",
		       b.n, gi->name, v / 10000, v / 100 % 100, v % 100, nvls ? nvls : "(unset)",
		       min_ctas, max_ctas);
		printf("GB/s: bytes leaving each GPU for the others per second (all-to-all SIZE*(N-1)/N, "
		       "send/recv SIZE each way);\ntime: median over %d bursts of back-to-back calls, "
		       "per call\n\n", reps);
		printf("%-28s %9s %12s %10s\n", "operation", "size", "time (us)", "GB/s");
		if (csv && !(b.csv = fopen(csv, "w")))
			fprintf(stderr, "sluice bench comm: cannot write %s\n", csv);
	}
	/* room for the most a rank can receive: every rank's whole buffer */
	b.sym = rt_comm_sym_new(c, n * (max_size + ROW_BYTES), 0, err, sizeof err);
	if (!b.sym && b.rank == 0)
		printf("(no 'a2av symmetric kernel' rows: %s)\n", err);
	for (int i = 0; i < nsizes; i++) {
		b.size = sizes[i] / n * n;
		bench_size(&b, reps, iters);
	}
	rt_comm_sym_free(b.sym);
	if (b.csv)
		fclose(b.csv);
	free(b.rows);
	free(b.sc);
	rt_comm_free(c);
	return 0;
}
#else
typedef int rt_bench_comm_unused; /* without NCCL: runtime/comm_none.c */
#endif
