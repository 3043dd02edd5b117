#!/usr/bin/env bash
# train_peak.sh - the CPU's measured fp32 peak, the yardstick for training GFLOP/s.
# How: a C kernel of 12 independent fused multiply-add chains on the widest vectors the
# compiler targets for this CPU (-O3 -march=native), one thread per core, long enough
# to run at the sustained clock; FLOPs counted as 2 per lane per FMA.
# Usage: tools/bench/train_peak.sh   -> prints "peak_gflops N threads T"
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/peak.c" <<'C'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
typedef float v16 __attribute__((vector_size(64)));
#define CHAINS 12
static long iters = 200000000 / CHAINS;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static void *run(void *arg)
{
	v16 acc[CHAINS], a, b;
	for (int i = 0; i < 16; i++) { a[i] = 0.999999f; b[i] = 1e-7f; }
	for (int c = 0; c < CHAINS; c++) acc[c] = a * (float)c;
	for (long i = 0; i < iters; i++)
		for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * a + b;
	float s = 0;
	for (int c = 0; c < CHAINS; c++) s += acc[c][0];
	*(float *)arg = s;
	return NULL;
}
int main(void)
{
	int n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[256];
	float out[256];
	double t0 = now();
	for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, run, &out[i]);
	for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
	double dt = now() - t0;
	double flops = 2.0 * 16 * CHAINS * (double)iters * n;
	printf("peak_gflops %.1f threads %d (check %g)\n", flops / dt / 1e9, n, out[0]);
	return 0;
}
C
gcc -O3 -march=native -ffp-contract=fast -pthread -o "$tmp/peak" "$tmp/peak.c"
"$tmp/peak"
