/* irtest.h - helpers shared by the IR tests: shapes from ints, a one-output op in one
 * call, capturing a FILE stream into a string. */
#ifndef SLUICE_TEST_IRTEST_H
#define SLUICE_TEST_IRTEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ir/ir.h"

/* S(2, 16, 256) is the shape [16, 256] */
static inline struct ir_shape S(int rank, ...)
{
	struct ir_shape s = { .rank = rank };
	va_list ap;
	va_start(ap, rank);
	for (int i = 0; i < rank && i < IR_MAX_RANK; i++)
		s.dim[i] = va_arg(ap, int);
	va_end(ap);
	return s;
}

#define VALS(...) ((struct ir_value *[]){ __VA_ARGS__ })
#define NVALS(...) ((int)(sizeof VALS(__VA_ARGS__) / sizeof(struct ir_value *)))
/* OP(g, IR_OP_ADD, IR_F32, S(1, 4), a, b) */
#define OP(g, kind, dt, shape, ...) ir_op1((g), (kind), NVALS(__VA_ARGS__), VALS(__VA_ARGS__), (dt), (shape))
#define OP0(g, kind, dt, shape) ir_op1((g), (kind), 0, NULL, (dt), (shape))

/* a string sink: open, write, then take the text (malloc'd) */
struct sink {
	char *buf;
	size_t len;
	FILE *f;
};

static inline FILE *sink_open(struct sink *s)
{
	s->buf = NULL;
	s->len = 0;
	s->f = open_memstream(&s->buf, &s->len);
	if (!s->f) {
		perror("open_memstream");
		exit(1);
	}
	return s->f;
}

static inline char *sink_take(struct sink *s)
{
	fclose(s->f);
	return s->buf;
}

static inline char *ir_print_str(const struct ir_graph *g)
{
	struct sink s;
	ir_print(g, sink_open(&s));
	return sink_take(&s);
}

/* the hand-built op-level graph of sample.c: small, valid, and using most ops */
struct ir_graph *sample_graph(void);
struct ir_graph *ep_sample_graph(void);

#endif
