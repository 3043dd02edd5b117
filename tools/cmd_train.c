/* cmd_train.c - 'sluice train'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_train(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice train: not built yet\n");
	return EXIT_USAGE;
}
