/*
 * fuzz_frontend.c - libFuzzer target over the whole frontend: lexer, parser,
 * evaluation and lowering (and the IR verifier at its end).  Any input must give a
 * graph or a diagnostic: no crash, no hang, no leak, no sanitizer report.  A failure
 * must also be reported the way users see it, "fuzz.sl:LINE:COL: error: ...", and
 * never as an internal error: otherwise the target aborts, so libFuzzer keeps the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int located(const char *msg)
{
	const char *p = msg;
	if (strncmp(p, "fuzz.sl:", 8))
		return 0;
	p += 8;
	if (*p < '1' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p++ != ':' || *p < '1' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9')
		p++;
	/* a located message that is not an internal error */
	return !strncmp(p, ": error: ", 9) && strncmp(p + 9, "internal error", 14);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	if (!err)
		return 0;
	/* one --set in some inputs, so that override handling is fuzzed too */
	struct sl_override o = { "dim", "32" };
	int n_over = size > 0 && data[0] == '#' ? 1 : 0;
	struct ir_graph *g = sl_compile_source((const char *)data, size, "fuzz.sl", n_over, &o, err);
	fclose(err);
	if (!g && !located(msg)) {
		fprintf(stderr, "bad diagnostic:\n%s\n", msg);
		abort();
	}
	ir_graph_free(g);
	free(msg);
	return 0;
}
