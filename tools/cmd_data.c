/* cmd_data.c - 'sluice data'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_data(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice data: not built yet\n");
	return EXIT_USAGE;
}
