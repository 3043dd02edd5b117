/* cpu_peak.c - the machine's peak f32 FLOP/s, measured: a tight loop of independent
 * fused multiply-adds on full-width vectors (16 chains, more than latency x pipes on
 * current x86 cores), on 1 thread and on every core at once.  FLOPs counted as 2 per
 * lane per FMA.  Prints "peak_1t GFLOPS" and "peak_all GFLOPS" lines. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define CHAINS 16 /* must match CH() below */
#if defined(__x86_64__)
#define TARGET __attribute__((target("avx512f,fma")))
#define VL 16
#else
#define TARGET
#define VL 4
#endif
typedef float vf __attribute__((vector_size(VL * 4)));

static long iters = 20000000;
static double sink[256];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* sixteen named accumulators, so that they live in registers whatever the optimiser
 * does with arrays */
#define CH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define DECL(i) vf a##i = (vf){ 0 } + (float)i;
#define STEP(i) a##i = a##i * b + c;
#define SUM(i) t += a##i;
TARGET static double fma_loop(long n)
{
	vf b = (vf){ 0 } + 0.999999f, c = (vf){ 0 } + 1e-7f;
	CH(DECL)
	for (long k = 0; k < n; k++) {
		CH(STEP)
	}
	vf t = (vf){ 0 };
	CH(SUM)
	double s = 0;
	for (int l = 0; l < VL; l++)
		s += t[l];
	return s;
}

static void *worker(void *arg)
{
	long id = (long)arg;
	sink[id & 255] = fma_loop(iters);
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__x86_64__)
	if (!__builtin_cpu_supports("avx512f")) {
		fprintf(stderr, "cpu_peak: this build measures AVX-512 FMAs; the CPU lacks them\n");
		return 1;
	}
#endif
	double flops_per_thread = (double)iters * CHAINS * VL * 2;
	double best1 = 0, bestn = 0;
	for (int rep = 0; rep < 3; rep++) {
		double t0 = now();
		sink[0] = fma_loop(iters);
		double t1 = now();
		if (flops_per_thread / (t1 - t0) > best1)
			best1 = flops_per_thread / (t1 - t0);
		pthread_t th[256];
		t0 = now();
		for (long i = 0; i < threads; i++)
			pthread_create(&th[i], NULL, worker, (void *)i);
		for (int i = 0; i < threads; i++)
			pthread_join(th[i], NULL);
		t1 = now();
		if (threads * flops_per_thread / (t1 - t0) > bestn)
			bestn = threads * flops_per_thread / (t1 - t0);
	}
	printf("peak_1t %.1f GFLOPS\n", best1 / 1e9);
	printf("peak_all %.1f GFLOPS (%d threads)\n", bestn / 1e9, threads);
	return sink[0] == 12345.0;
}
