/* cmd_check.c - 'sluice check'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_check(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice check: not built yet\n");
	return EXIT_USAGE;
}
