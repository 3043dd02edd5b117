/* cmd_ir.c - 'sluice ir'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_ir(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice ir: not built yet\n");
	return EXIT_USAGE;
}
