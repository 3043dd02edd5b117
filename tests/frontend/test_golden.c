/*
 * test_golden.c - the IR the frontend emits for small models, pinned as text.
 *
 * For each tests/frontend/golden/NAME.sl the printed IR must equal NAME.ir, so that a
 * change in the lowering shows up in review as a diff of those files.  To accept a
 * deliberate change, run with SLUICE_UPDATE_GOLDEN=1 and review the diff.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frontend/frontend.h"

#define GOLDEN "tests/frontend/golden"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *b = NULL;
	size_t cap = 0;
	*len = 0;
	for (;;) {
		if (*len + 4096 > cap) {
			cap = 2 * cap + 4096;
			b = realloc(b, cap);
			REQUIRE(b);
		}
		size_t n = fread(b + *len, 1, cap - *len, f);
		*len += n;
		if (!n)
			break;
	}
	fclose(f);
	return b;
}

int main(void)
{
	int update = getenv("SLUICE_UPDATE_GOLDEN") != NULL, n = 0;
	DIR *d = opendir(GOLDEN);
	REQUIRE(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 4 || strcmp(e->d_name + l - 3, ".sl"))
			continue;
		char sl[512], ir[512];
		snprintf(sl, sizeof sl, "%s/%s", GOLDEN, e->d_name);
		snprintf(ir, sizeof ir, "%s/%.*s.ir", GOLDEN, (int)(l - 3), e->d_name);
		struct ir_graph *g = sl_compile_file(sl, 0, NULL, stderr);
		CHECKF(g != NULL, "%s does not compile", sl);
		if (!g)
			continue;
		char *text = NULL;
		size_t tl = 0;
		FILE *m = open_memstream(&text, &tl);
		ir_print(g, m);
		fclose(m);
		ir_graph_free(g);
		if (update) {
			FILE *o = fopen(ir, "wb");
			REQUIRE(o);
			fwrite(text, 1, tl, o);
			fclose(o);
			printf("updated %s\n", ir);
		} else {
			size_t wl = 0;
			char *want = slurp(ir, &wl);
			CHECKF(want != NULL, "%s is missing (SLUICE_UPDATE_GOLDEN=1 writes it)", ir);
			if (want && (wl != tl || memcmp(want, text, tl))) {
				size_t i = 0, line = 1;
				while (i < wl && i < tl && want[i] == text[i])
					line += want[i++] == '\n';
				CHECKF(0, "%s differs from %s from line %zu", sl, ir, line);
			}
			free(want);
		}
		free(text);
		n++;
	}
	closedir(d);
	CHECKF(n >= 2, "only %d golden models", n);
	return CHECK_DONE();
}
