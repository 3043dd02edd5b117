/* cmd_bench.c - 'sluice bench'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_bench(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice bench: not built yet\n");
	return EXIT_USAGE;
}
