/* sluice.c - the sluice command: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "check", cmd_check, "parameters, FLOPs and memory of a model" },
	{ "ir", cmd_ir, "print the IR of a model (or of a textual IR file)" },
	{ "dot", cmd_dot, "draw the graph of a model (SVG, PNG or DOT)" },
	{ "schedule", cmd_schedule, "simulate a pipeline schedule: bubble, memory per rank" },
	{ "train", cmd_train, "train a model on the CPU or a GPU" },
	{ "data", cmd_data, "turn text into token shards" },
	{ "devices", cmd_devices, "list the CPU and the CUDA devices" },
	{ "bench", cmd_bench, "micro-benchmarks: gemm, comm, nvrtc" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: sluice COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'sluice COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "sluice: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
