/* args.c - option parsing shared by the subcommands. */
#include "args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int args_take_set(int argc, char **argv, int *i, struct args_overrides *o, const char *cmd)
{
	const char *spec;
	if (!strcmp(argv[*i], "--set")) {
		if (*i + 1 >= argc) {
			fprintf(stderr, "sluice %s: --set needs NAME=VALUE\n", cmd);
			return -1;
		}
		spec = argv[++*i];
	} else if (!strncmp(argv[*i], "--set=", 6)) {
		spec = argv[*i] + 6;
	} else {
		return 0;
	}
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || !eq[1]) {
		fprintf(stderr, "sluice %s: --set takes NAME=VALUE, got '%s'\n", cmd, spec);
		return -1;
	}
	if (o->n == o->cap) {
		o->cap = o->cap ? 2 * o->cap : 8;
		struct sl_override *v = realloc(o->v, sizeof *v * (size_t)o->cap);
		if (!v) {
			fprintf(stderr, "sluice: out of memory\n");
			abort();
		}
		o->v = v;
	}
	/* the name is copied; the value points into argv, which outlives the command */
	size_t n = (size_t)(eq - spec);
	char *name = malloc(n + 1);
	if (!name) {
		fprintf(stderr, "sluice: out of memory\n");
		abort();
	}
	memcpy(name, spec, n);
	name[n] = 0;
	o->v[o->n].name = name;
	o->v[o->n].value = eq + 1;
	o->n++;
	++*i;
	return 1;
}

void args_overrides_free(struct args_overrides *o)
{
	for (int k = 0; k < o->n; k++)
		free((char *)o->v[k].name);
	free(o->v);
	o->v = NULL;
	o->n = o->cap = 0;
}

int args_take_value(int argc, char **argv, int *i, const char *name, const char **value,
		    const char *cmd)
{
	size_t n = strlen(name);
	if (strncmp(argv[*i], name, n))
		return 0;
	if (argv[*i][n] == '=') {
		*value = argv[*i] + n + 1;
		++*i;
		return 1;
	}
	if (argv[*i][n])
		return 0;
	if (*i + 1 >= argc) {
		fprintf(stderr, "sluice %s: %s needs a value\n", cmd, name);
		return -1;
	}
	*value = argv[*i + 1];
	*i += 2;
	return 1;
}

int args_is_help(const char *arg)
{
	return !strcmp(arg, "--help") || !strcmp(arg, "-h");
}
