/* cmd_devices.c - 'sluice devices'.  Not yet built: replaced by the real command. */
#include <stdio.h>

#include "commands.h"

int cmd_devices(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "sluice devices: not built yet\n");
	return EXIT_USAGE;
}
