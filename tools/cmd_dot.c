/* cmd_dot.c - 'sluice dot'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_dot(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice dot: not built yet\n");
	return EXIT_USAGE;
}
