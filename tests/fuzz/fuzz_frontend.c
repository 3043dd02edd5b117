/*
 * fuzz_frontend.c - libFuzzer target over the whole frontend: lexer, parser,
 * evaluation and lowering (and the IR verifier at its end).  Any input must give a
 * graph or a diagnostic: no crash, no hang, no leak, no sanitizer report.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend/frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *sink;
	if (!sink)
		sink = fopen("/dev/null", "w");
	/* one --set in some inputs, so that override handling is fuzzed too */
	struct sl_override o = { "dim", "32" };
	int n_over = size > 0 && data[0] == '#' ? 1 : 0;
	struct ir_graph *g = sl_compile_source((const char *)data, size, "fuzz.sl", n_over, &o,
					       sink ? sink : stderr);
	ir_graph_free(g);
	return 0;
}
