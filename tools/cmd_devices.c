/* cmd_devices.c - 'sluice devices': the CPU and every CUDA device, with what the
 * runtime plans by (architecture, multiprocessors, memory, L2).  Without a driver or
 * a GPU it lists the CPU, says why there is no GPU and still succeeds. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "commands.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

static void cpu_model(char *buf, size_t n)
{
	snprintf(buf, n, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5)) {
			char *v = strchr(line, ':');
			if (!v)
				continue;
			v++;
			while (*v == ' ' || *v == '\t')
				v++;
			v[strcspn(v, "\n")] = 0;
			snprintf(buf, n, "%s", v);
			break;
		}
	}
	fclose(f);
}

static double gib(size_t b) { return (double)b / (1024.0 * 1024 * 1024); }

static void usage(FILE *f)
{
	fprintf(f, "usage: sluice devices\n\n"
		   "Lists the CPU (model, cores, memory) and every CUDA device (name,\n"
		   "architecture, multiprocessors, memory, L2 cache, clock).  Without a CUDA\n"
		   "driver or GPU it lists the CPU and says why there is no GPU (exit 0).\n"
		   "$SLUICE_LIBCUDA names the driver library to open (default libcuda.so.1).\n");
}

int cmd_devices(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (args_is_help(argv[i])) {
			usage(stdout);
			return EXIT_OK;
		}
		fprintf(stderr, "sluice devices: unknown argument '%s'\n", argv[i]);
		usage(stderr);
		return EXIT_USAGE;
	}
	char model[256];
	cpu_model(model, sizeof model);
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGE_SIZE);
	printf("cpu    %s, %d logical cores, %.1f GiB memory\n", model, rt_num_cpus(),
	       pages > 0 && psize > 0 ? gib((size_t)pages * (size_t)psize) : 0.0);

	int n = rt_gpu_count();
	if (n == 0) {
		printf("gpu    none: %s\n", rt_gpu_why_none());
		return EXIT_OK;
	}
	int dv = rt_gpu_driver_version(), nv = rt_nvrtc_version();
	printf("cuda   driver %d.%d, NVRTC %d.%d, cuBLASLt %d\n", dv / 1000, dv % 1000 / 10,
	       nv / 1000, nv % 1000 / 10, rt_cublaslt_version());
	int failed = 0;
	for (int d = 0; d < n; d++) {
		struct rt_gpu_info in;
		if (rt_gpu_query(d, &in)) {
			printf("gpu %d  (could not be queried: see above)\n", d);
			failed = 1;
			continue;
		}
		printf("gpu %d  %s, sm_%d%d, %d SMs at %d MHz, %.1f GiB (%.1f free), L2 %.0f MiB, "
		       "%zu KiB shared/block, PCI %s\n",
		       d, in.name, in.cc_major, in.cc_minor, in.sm_count, in.clock_mhz,
		       gib(in.mem_total), gib(in.mem_free), (double)in.l2_bytes / 1048576.0,
		       in.smem_per_block_optin / 1024, in.pci_bus_id);
	}
	/* a device that is there but fails its queries is a broken driver, not user error */
	return failed ? EXIT_INPUT : EXIT_OK;
}
