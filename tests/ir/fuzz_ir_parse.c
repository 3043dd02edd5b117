/* fuzz_ir_parse.c - libFuzzer target over the textual IR: any bytes must parse or be
 * refused with a diagnostic (never crash, hang or leak); what parses must verify
 * without crashing and print, parse and print back to the same text.
 * Built with -DSLUICE_FUZZ=ON and clang; run:
 *   build-fuzz/tests/ir/fuzz_ir_parse -max_total_time=60 -max_len=4096 CORPUS tests/ir/golden */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static char *print_str(const struct ir_graph *g, size_t *n)
{
	char *s = NULL;
	FILE *f = open_memstream(&s, n);
	if (!f)
		abort();
	ir_print(g, f);
	fclose(f);
	return s;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	FILE *sink = fopen("/dev/null", "w");
	struct ir_graph *g = ir_parse((const char *)data, size, "fuzz.ir", sink);
	if (g) {
		ir_verify(g, sink);
		size_t na, nb;
		char *a = print_str(g, &na);
		struct ir_graph *h = ir_parse(a, na, "printed.ir", stderr);
		if (!h)
			abort(); /* the printer wrote what the parser refuses */
		char *b = print_str(h, &nb);
		if (na != nb || memcmp(a, b, na))
			abort(); /* print, parse, print is not exact */
		free(a);
		free(b);
		ir_graph_free(h);
		ir_graph_free(g);
	}
	if (sink)
		fclose(sink);
	return 0;
}
