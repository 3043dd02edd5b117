/* args.h - option parsing shared by the subcommands.
 *
 * args_take_set() recognises "--set NAME=VALUE" and "--set=NAME=VALUE" at argv[*i],
 * appends it to the override list and advances *i; returns 1 when it took the
 * option, 0 when argv[*i] is something else, -1 (message printed) when malformed. */
#ifndef SLUICE_ARGS_H
#define SLUICE_ARGS_H

#include "frontend/frontend.h"

struct args_overrides {
	int n, cap;
	struct sl_override *v;
};

int args_take_set(int argc, char **argv, int *i, struct args_overrides *o, const char *cmd);
void args_overrides_free(struct args_overrides *o);
/* "--name VALUE" or "--name=VALUE" at argv[*i]: sets *value, advances *i, returns 1;
 * 0 when argv[*i] is another option; -1 (message printed) when the value is missing. */
int args_take_value(int argc, char **argv, int *i, const char *name, const char **value,
		    const char *cmd);
int args_is_help(const char *arg);

#endif
