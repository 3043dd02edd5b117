/*
 * compile.c - the frontend's entry points: read, lex, parse, lower, verify.
 *
 * The straight line of the frontend; the first error anywhere longjmps back here, and
 * this one place frees what the compilation made.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/fe.h"
#include "ir/ir.h"

/* Runs the phases; returns 0 or 1 (error reported).  Kept apart from setjmp's caller
 * so that no local of the caller changes between setjmp and longjmp. */
static int run(struct fe *f)
{
	if (setjmp(f->jb))
		return 1;
	fe_lex(f);
	fe_parse(f);
	f->g = ir_graph_new(f->prog.model);
	f->gfile = ir_strdup(f->g->arena, f->file);
	f->extra_tail = &f->extra_outputs;
	fe_lower(f);
	if (ir_verify(f->g, NULL)) {
		fprintf(f->err, "%s: internal error: the lowered graph fails verification:\n", f->file);
		ir_verify(f->g, f->err);
		return 1;
	}
	return 0;
}

struct ir_graph *sl_compile_source(const char *src, size_t len, const char *filename,
				   int n_over, const struct sl_override *over, FILE *err)
{
	struct fe *f = calloc(1, sizeof *f);
	if (!f) {
		fprintf(err ? err : stderr, "sluice: out of memory\n");
		return NULL;
	}
	f->a = ir_arena_new();
	f->err = err ? err : stderr;
	f->file = filename ? filename : "<input>";
	f->src = src ? src : "";
	f->len = src ? len : 0;
	f->n_over = n_over > 0 && over ? n_over : 0;
	f->over = over;
	f->over_used = ir_alloc(f->a, (size_t)f->n_over + 1);
	int bad = run(f);
	struct ir_graph *g = f->g;
	if (bad) {
		ir_graph_free(g);
		g = NULL;
	}
	ir_arena_free(f->a);
	free(f);
	return g;
}

struct ir_graph *sl_compile_file(const char *path, int n_over, const struct sl_override *over,
				 FILE *err)
{
	if (!err)
		err = stderr;
	FILE *in = fopen(path, "rb");
	if (!in) {
		fprintf(err, "%s: error: cannot open the model file: %s\n", path, strerror(errno));
		return NULL;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf) {
			fprintf(err, "%s: error: out of memory reading the file\n", path);
			fclose(in);
			return NULL;
		}
		len += fread(buf + len, 1, cap - len, in);
		if (len < cap)
			break;
		if (cap > ((size_t)1 << 30)) {
			fprintf(err, "%s: error: the model file is larger than 1 GiB\n", path);
			free(buf);
			fclose(in);
			return NULL;
		}
		cap *= 2;
		char *nb = realloc(buf, cap);
		if (!nb)
			free(buf);
		buf = nb;
	}
	int rerr = ferror(in);
	fclose(in);
	if (rerr) {
		fprintf(err, "%s: error: cannot read the model file (is it a directory?)\n", path);
		free(buf);
		return NULL;
	}
	struct ir_graph *g = sl_compile_source(buf, len, path, n_over, over, err);
	free(buf);
	return g;
}
