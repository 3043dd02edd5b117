/* golden.h - compare text with a golden file under tests/ir/golden/, or rewrite the
 * file when SLUICE_REGEN_GOLDEN=1 (tests/ir/regen-golden.sh does that). */
#ifndef SLUICE_TEST_GOLDEN_H
#define SLUICE_TEST_GOLDEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	size_t k;
	while (buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += k;
		if (cap - n - 1 == 0) {
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				buf = NULL;
			}
			buf = nb;
		}
	}
	fclose(f);
	if (buf)
		buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

/* 1 when text matches the golden file (or the file was regenerated) */
static inline int golden_compare(const char *path, const char *text)
{
	const char *regen = getenv("SLUICE_REGEN_GOLDEN");
	if (regen && !strcmp(regen, "1")) {
		FILE *f = fopen(path, "wb");
		if (!f || fputs(text, f) < 0 || fclose(f)) {
			fprintf(stderr, "cannot write %s\n", path);
			return 0;
		}
		fprintf(stderr, "wrote %s\n", path);
		return 1;
	}
	char *want = read_file(path, NULL);
	if (!want) {
		fprintf(stderr, "%s: missing golden file (tests/ir/regen-golden.sh makes it)\n", path);
		return 0;
	}
	int ok = !strcmp(want, text);
	if (!ok) {
		/* show the first differing line */
		const char *a = want, *b = text;
		int line = 1;
		while (*a && *a == *b) {
			if (*a == '\n')
				line++;
			a++, b++;
		}
		fprintf(stderr, "%s:%d: printed IR differs from the golden file\n", path, line);
		fprintf(stderr, "  golden:  %.*s\n", (int)strcspn(a, "\n"), a);
		fprintf(stderr, "  printed: %.*s\n", (int)strcspn(b, "\n"), b);
		fprintf(stderr, "  (if the change is intended: tests/ir/regen-golden.sh BUILD_DIR)\n");
	}
	free(want);
	return ok;
}

#endif
