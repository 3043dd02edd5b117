/* program.c - building, placing and printing a compiled program (see program.h). */
#include "program.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "pool.h"
#include "rt.h"

size_t rt_dtype_size(enum rt_dtype t)
{
	static const size_t sz[] = { 4, 4, 8, 2, 2, 1, 1 };
	return (unsigned)t < sizeof sz / sizeof sz[0] ? sz[t] : 0;
}

const char *rt_dtype_name(enum rt_dtype t)
{
	static const char *const names[] = { "f32", "i32", "i64", "bf16", "f16", "f8e4m3",
					     "f8e5m2" };
	return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

int rt_dtype_is_float(enum rt_dtype t)
{
	return t != RT_DT_I32 && t != RT_DT_I64;
}

/* The narrow float formats: exponent and mantissa bits, bias, largest finite
 * magnitude, and whether that format saturates (the f8 formats, as the IR's rounding
 * does) rather than overflowing to infinity (f16).  e4m3 has no infinity: its one NaN
 * a sign, all ones. */
struct small_fmt {
	int ebits, mbits, bias;
	double maxv;
	int saturate, has_inf;
};

static const struct small_fmt *small_fmt(enum rt_dtype t)
{
	static const struct small_fmt f16 = { 5, 10, 15, 65504.0, 0, 1 };
	static const struct small_fmt e4m3 = { 4, 3, 7, 448.0, 1, 0 };
	static const struct small_fmt e5m2 = { 5, 2, 15, 57344.0, 1, 1 };
	return t == RT_DT_F16 ? &f16 : t == RT_DT_F8E4M3 ? &e4m3 : t == RT_DT_F8E5M2 ? &e5m2 : NULL;
}

static unsigned encode_small(const struct small_fmt *fm, float f)
{
	unsigned sign = signbit(f) ? 1u << (fm->ebits + fm->mbits) : 0u;
	unsigned all = (1u << fm->ebits) - 1u, top = all << fm->mbits;
	if (isnan(f))
		return sign | top | ((1u << fm->mbits) - 1u);
	double a = fabs((double)f);
	if (fm->saturate && a > fm->maxv)
		a = fm->maxv;
	int emin = 1 - fm->bias, e;
	if (a == 0.0)
		return sign;
	if (a < ldexp(1.0, emin))
		e = emin;
	else {
		frexp(a, &e);
		e -= 1;
	}
	double q = ldexp(1.0, e - fm->mbits);
	double r = nearbyint(a / q) * q; /* exact: a power of two apart */
	if (r > fm->maxv) /* f16 only: a saturating format's a is at most its largest */
		return sign | top; /* infinity */
	if (r < ldexp(1.0, emin))
		return sign | (unsigned)(r / ldexp(1.0, emin - fm->mbits));
	frexp(r, &e);
	e -= 1;
	unsigned mant = (unsigned)((r / ldexp(1.0, e) - 1.0) * ldexp(1.0, fm->mbits));
	return sign | ((unsigned)(e + fm->bias) << fm->mbits) | mant;
}

static float decode_small(const struct small_fmt *fm, unsigned u)
{
	unsigned all = (1u << fm->ebits) - 1u, mmask = (1u << fm->mbits) - 1u;
	unsigned ex = (u >> fm->mbits) & all, mant = u & mmask;
	double s = (u >> (fm->ebits + fm->mbits)) & 1u ? -1.0 : 1.0, v;
	if (ex == all && (fm->has_inf || mant == mmask))
		v = fm->has_inf && !mant ? INFINITY : NAN;
	else if (!ex)
		v = ldexp((double)mant, 1 - fm->bias - fm->mbits);
	else
		v = ldexp(1.0 + ldexp((double)mant, -fm->mbits), (int)ex - fm->bias);
	return (float)(s * v);
}

void rt_pack(enum rt_dtype t, void *dst, const float *src, size_t n)
{
	if (t == RT_DT_BF16) {
		uint16_t *d = dst;
		for (size_t i = 0; i < n; i++) {
			uint32_t u;
			memcpy(&u, &src[i], sizeof u);
			d[i] = isnan(src[i]) ? (uint16_t)((u >> 16) | 0x40u)
					     : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
		}
		return;
	}
	const struct small_fmt *fm = small_fmt(t);
	RT_ASSERT(fm);
	if (t == RT_DT_F16) {
		uint16_t *d = dst;
		for (size_t i = 0; i < n; i++)
			d[i] = (uint16_t)encode_small(fm, src[i]);
		return;
	}
	uint8_t *d = dst;
	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)encode_small(fm, src[i]);
}

void rt_unpack(enum rt_dtype t, float *dst, const void *src, size_t n)
{
	if (t == RT_DT_BF16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++) {
			uint32_t u = (uint32_t)s[i] << 16;
			memcpy(&dst[i], &u, sizeof u);
		}
		return;
	}
	const struct small_fmt *fm = small_fmt(t);
	RT_ASSERT(fm);
	if (t == RT_DT_F16) {
		const uint16_t *s = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = decode_small(fm, s[i]);
		return;
	}
	const uint8_t *s = src;
	for (size_t i = 0; i < n; i++)
		dst[i] = decode_small(fm, s[i]);
}

const char *rt_buf_role_name(enum rt_buf_role r)
{
	static const char *const names[] = { "input", "param", "grad", "saved", "comm", "output" };
	return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

const char *rt_chunk_kind_name(enum rt_chunk_kind k)
{
	static const char *const names[] = { "fwd", "bwd", "fwd+bwd", "bwd_b", "bwd_w" };
	return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

static int rt_chunk_is_bwd(enum rt_chunk_kind k)
{
	return k == RT_CHUNK_BWD || k == RT_CHUNK_BWD_B || k == RT_CHUNK_BWD_W;
}

const char *rt_cop_kind_name(enum rt_cop_kind k)
{
	static const char *const names[] = { "send", "recv", "all_reduce", "all_to_all",
					     "all_to_allv" };
	return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

struct rt_program *rt_program_new(int rank, int world)
{
	struct rt_program *p = rt_calloc(1, sizeof *p);
	p->rank = rank;
	p->world = world;
	p->layout = (struct rt_layout){ 1, 1, 1 };
	p->microbatches = 1;
	p->schedule = "1f1b";
	p->tokens = p->targets = p->loss = p->lm_loss = p->loss_group = -1;
	return p;
}

/* Names live in chunks of one growing list of blocks, so pointers stay valid. */
struct str_block {
	struct str_block *next;
	char data[];
};

const char *rt_program_strdup(struct rt_program *p, const char *s)
{
	size_t n = strlen(s) + 1;
	struct str_block *b = rt_malloc(sizeof *b + n);
	memcpy(b->data, s, n);
	b->next = (struct str_block *)p->strings;
	p->strings = (char *)b;
	return b->data;
}

#define GROW(arr, n) ((arr) = rt_realloc((arr), sizeof *(arr) * (size_t)((n) + 1)))

int rt_program_add_buffer(struct rt_program *p, const struct rt_buffer *b)
{
	GROW(p->bufs, p->n_bufs);
	struct rt_buffer *d = &p->bufs[p->n_bufs];
	*d = *b;
	d->name = rt_program_strdup(p, b->name);
	d->numel = 1;
	for (int i = 0; i < d->rank; i++)
		d->numel *= d->shape[i];
	if (!rt_dtype_is_float(d->dtype) || d->dtype == RT_DT_F32)
		d->stored = d->dtype;
	RT_ASSERT(d->stored == RT_DT_F32 || d->stored == d->dtype);
	d->bytes = d->numel * (int64_t)rt_dtype_size(d->stored);
	if (d->slots < 1)
		d->slots = 1;
	d->offset = -1;
	d->data = NULL;
	return p->n_bufs++;
}

int rt_program_add_chunk(struct rt_program *p, const struct rt_chunk *c)
{
	GROW(p->chunks, p->n_chunks);
	struct rt_chunk *d = &p->chunks[p->n_chunks];
	*d = *c;
	d->name = rt_program_strdup(p, c->name);
	d->in = rt_malloc(sizeof *d->in * (size_t)(c->n_in + 1));
	d->out = rt_malloc(sizeof *d->out * (size_t)(c->n_out + 1));
	memcpy(d->in, c->in, sizeof *d->in * (size_t)c->n_in);
	memcpy(d->out, c->out, sizeof *d->out * (size_t)c->n_out);
	return p->n_chunks++;
}

int rt_program_add_comm(struct rt_program *p, const struct rt_comm_op *op)
{
	GROW(p->comms, p->n_comms);
	p->comms[p->n_comms] = *op;
	return p->n_comms++;
}

int rt_program_add_action(struct rt_program *p, enum rt_act_kind kind, int index, int mb)
{
	GROW(p->actions, p->n_actions);
	p->actions[p->n_actions] = (struct rt_action){ kind, index, mb };
	return p->n_actions++;
}

int rt_program_add_param(struct rt_program *p, const struct rt_param *prm)
{
	GROW(p->params, p->n_params);
	struct rt_param *d = &p->params[p->n_params];
	*d = *prm;
	d->path = rt_program_strdup(p, prm->path);
	d->scope = prm->scope ? rt_program_strdup(p, prm->scope) : NULL;
	return p->n_params++;
}

int rt_program_add_group(struct rt_program *p, const char *name, int color, int key)
{
	GROW(p->groups, p->n_groups);
	p->groups[p->n_groups] = (struct rt_group_def){ rt_program_strdup(p, name), color, key };
	return p->n_groups++;
}

/* The fixed place of buffer b when one chunk action writes it once a step; else NULL. */
static void *in_place(const struct rt_program *p, int b)
{
	const struct rt_buffer *buf = &p->bufs[b];
	if ((buf->role != RT_BUF_GRAD && buf->role != RT_BUF_OUTPUT) || buf->slots != 1 ||
	    p->microbatches != 1)
		return NULL;
	void *where = NULL;
	int writes = 0;
	for (int a = 0; a < p->n_actions; a++) {
		if (p->actions[a].kind != RT_ACT_CHUNK)
			continue;
		const struct rt_chunk *c = &p->chunks[p->actions[a].index];
		for (int k = 0; k < c->n_out; k++) {
			if (c->out[k] != b)
				continue;
			writes++;
			where = c->impl && c->impl->output ? c->impl->output(c->code, k) : NULL;
		}
	}
	return writes == 1 ? where : NULL;
}

int rt_program_alloc(struct rt_program *p, struct rt_device *dev, char *err, size_t errlen)
{
	int64_t off = 0;
	p->aliased_bytes = 0;
	for (int i = 0; i < p->n_bufs; i++) {
		struct rt_buffer *b = &p->bufs[i];
		b->data = in_place(p, i);
		if (b->data) {
			b->offset = -1;
			p->aliased_bytes += b->bytes;
			continue;
		}
		b->offset = off;
		off += ((b->bytes * b->slots) + 63) / 64 * 64;
	}
	p->arena_bytes = off;
	if (p->arena)
		p->dev->ops->free(p->dev, p->arena);
	p->arena = NULL;
	p->dev = dev;
	if (off) {
		p->arena = dev->ops->alloc(dev, (size_t)off);
		if (!p->arena) {
			snprintf(err, errlen, "cannot allocate the program's arena of %.1f MiB (%s)",
				 (double)off / 1048576.0, dev->name);
			return -1;
		}
	}
	for (int i = 0; i < p->n_bufs; i++)
		if (p->bufs[i].offset >= 0)
			p->bufs[i].data = (char *)p->arena + p->bufs[i].offset;
	return 0;
}

void rt_program_free(struct rt_program *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n_chunks; i++) {
		struct rt_chunk *c = &p->chunks[i];
		if (c->impl && c->code)
			c->impl->free(c->code);
		free(c->in);
		free(c->out);
	}
	free(p->bufs);
	free(p->chunks);
	free(p->comms);
	free(p->actions);
	free(p->params);
	free(p->groups);
	if (p->arena)
		p->dev->ops->free(p->dev, p->arena);
	for (struct str_block *b = (struct str_block *)p->strings; b;) {
		struct str_block *n = b->next;
		free(b);
		b = n;
	}
	free(p);
}

static void print_shape(const int64_t *shape, int rank, FILE *out)
{
	fputc('[', out);
	for (int i = 0; i < rank; i++)
		fprintf(out, "%s%" PRId64, i ? ", " : "", shape[i]);
	fputc(']', out);
}

void rt_program_print(const struct rt_program *p, FILE *out)
{
	fprintf(out, "program rank %d of %d: stage %d, pp %d dp %d ep %d, %d micro-batch%s, "
		"schedule %s\n", p->rank, p->world, p->stage, p->layout.pp, p->layout.dp,
		p->layout.ep, p->microbatches, p->microbatches == 1 ? "" : "es", p->schedule);
	fprintf(out, "groups:\n");
	for (int i = 0; i < p->n_groups; i++)
		fprintf(out, "  g%d %s color %d key %d\n", i, p->groups[i].name, p->groups[i].color,
			p->groups[i].key);
	fprintf(out, "buffers:\n");
	for (int i = 0; i < p->n_bufs; i++) {
		const struct rt_buffer *b = &p->bufs[i];
		fprintf(out, "  b%d %s %s %s", i, b->name, rt_buf_role_name(b->role),
			rt_dtype_name(b->dtype));
		if (b->stored != b->dtype)
			fprintf(out, " (held in %s)", rt_dtype_name(b->stored));
		print_shape(b->shape, b->rank, out);
		if (b->slots > 1)
			fprintf(out, " x%d slots", b->slots);
		fputc('\n', out);
	}
	fprintf(out, "chunks:\n");
	for (int i = 0; i < p->n_chunks; i++) {
		const struct rt_chunk *c = &p->chunks[i];
		fprintf(out, "  c%d %s (%s, stage %d) in", i, c->name, rt_chunk_kind_name(c->kind),
			c->stage);
		for (int k = 0; k < c->n_in; k++)
			fprintf(out, " b%d", c->in[k]);
		fprintf(out, " out");
		for (int k = 0; k < c->n_out; k++)
			fprintf(out, " b%d", c->out[k]);
		fputc('\n', out);
	}
	fprintf(out, "comm ops:\n");
	for (int i = 0; i < p->n_comms; i++) {
		const struct rt_comm_op *o = &p->comms[i];
		fprintf(out, "  k%d %s b%d group g%d", i, rt_cop_kind_name(o->kind), o->buf, o->group);
		if (o->kind == RT_COP_SEND || o->kind == RT_COP_RECV)
			fprintf(out, " peer %d tag %d", o->peer, o->tag);
		if (o->kind == RT_COP_ALL_TO_ALL || o->kind == RT_COP_ALL_TO_ALLV)
			fprintf(out, " into b%d", o->out);
		if (o->kind == RT_COP_ALL_TO_ALLV)
			fprintf(out, " counts b%d b%d", o->scounts, o->rcounts);
		fputc('\n', out);
	}
	fprintf(out, "actions:\n");
	for (int i = 0; i < p->n_actions; i++) {
		const struct rt_action *a = &p->actions[i];
		if (a->kind == RT_ACT_CHUNK)
			fprintf(out, "  run %s mb %d\n", p->chunks[a->index].name, a->mb);
		else if (a->kind == RT_ACT_COMM)
			fprintf(out, "  start k%d (%s b%d) mb %d\n", a->index,
				rt_cop_kind_name(p->comms[a->index].kind), p->comms[a->index].buf, a->mb);
		else
			fprintf(out, "  wait g%d\n", a->index);
	}
	fprintf(out, "parameters:\n");
	for (int i = 0; i < p->n_params; i++) {
		const struct rt_param *r = &p->params[i];
		fprintf(out, "  %s ", r->path);
		print_shape(r->shape, r->rank, out);
		if (r->rows != r->shape[0])
			fprintf(out, " rows %" PRId64 "..%" PRId64, r->row0, r->row0 + r->rows);
		fprintf(out, "%s%s", r->trainable ? "" : " fixed", r->owner ? " owner" : "");
		if (r->reduce_group >= 0)
			fprintf(out, " grad-sum g%d", r->reduce_group);
		fputc('\n', out);
	}
}

/* ---- verification across ranks ------------------------------------------------ */

/* world ranks of the communicator of group g that `rank` belongs to, ordered by key */
static int group_members(struct rt_program *const *progs, int n, int g, int rank, int *out)
{
	int color = progs[rank]->groups[g].color, m = 0;
	if (color < 0)
		return 0;
	for (int r = 0; r < n; r++)
		if (progs[r]->groups[g].color == color)
			out[m++] = r;
	for (int a = 1; a < m; a++)
		for (int b = a; b > 0 && progs[out[b - 1]]->groups[g].key >
					 progs[out[b]]->groups[g].key; b--) {
			int t = out[b];
			out[b] = out[b - 1];
			out[b - 1] = t;
		}
	return m;
}

static int same_shape(const struct rt_buffer *a, const struct rt_buffer *b)
{
	if (a->dtype != b->dtype || a->rank != b->rank)
		return 0;
	for (int i = 0; i < a->rank; i++)
		if (a->shape[i] != b->shape[i])
			return 0;
	return 1;
}

static int is_collective(enum rt_cop_kind k)
{
	return k == RT_COP_ALL_REDUCE || k == RT_COP_ALL_TO_ALL || k == RT_COP_ALL_TO_ALLV;
}

/* Every rank runs its actions in order, as the executor does, under the strictest
 * rules a communication library may apply: a send completes only once its receive is
 * posted, a collective only once every member of the communicator has reached it, a
 * WAIT only once every operation this rank started on that group has its partner.
 * The job must finish; if at some point no rank can move, the ranks and what each
 * waits for form a cycle of waits, which is said (and drawn on dot, when given).  0, or
 * the number of blocked ranks. */
static int check_progress(struct rt_program *const *progs, int n, FILE *err, FILE *dot)
{
	int ng = progs[0]->n_groups;
	size_t nn = (size_t)n * (size_t)n;
	/* sent[g][r][q]: sends rank r started to world rank q on group g; recvd likewise */
	int *sent = rt_calloc((size_t)ng * nn + 1, sizeof *sent);
	int *recvd = rt_calloc((size_t)ng * nn + 1, sizeof *recvd);
	int *coll = rt_calloc((size_t)ng * (size_t)n + 1, sizeof *coll); /* collectives reached */
	int *pc = rt_calloc((size_t)n + 1, sizeof *pc);
	int *mem = rt_calloc((size_t)n + 1, sizeof *mem);
	unsigned char *arrived = rt_calloc((size_t)n + 1, 1); /* at a collective, counted */
#define AT(arr, g, r, q) (arr)[((size_t)(g) * (size_t)n + (size_t)(r)) * (size_t)n + (size_t)(q)]
	for (int moved = 1; moved;) {
		moved = 0;
		for (int r = 0; r < n; r++) {
			const struct rt_program *p = progs[r];
			while (pc[r] < p->n_actions) {
				const struct rt_action *a = &p->actions[pc[r]];
				if (a->kind == RT_ACT_CHUNK) {
					pc[r]++;
					moved = 1;
					continue;
				}
				if (a->kind == RT_ACT_COMM) {
					const struct rt_comm_op *o = &p->comms[a->index];
					int g = o->group;
					if (!is_collective(o->kind)) {
						int m = group_members(progs, n, g, r, mem);
						int q = o->peer < m ? mem[o->peer] : -1;
						if (q < 0)
							break; /* a peer outside the group: said by the pairing */
						if (o->kind == RT_COP_SEND)
							AT(sent, g, r, q)++;
						else
							AT(recvd, g, r, q)++;
						pc[r]++;
						moved = 1;
						continue;
					}
					if (!arrived[r]) {
						coll[(size_t)g * (size_t)n + (size_t)r]++;
						arrived[r] = 1;
					}
					int k = coll[(size_t)g * (size_t)n + (size_t)r];
					int m = group_members(progs, n, g, r, mem), all = 1;
					for (int i = 0; i < m && all; i++)
						all = coll[(size_t)g * (size_t)n + (size_t)mem[i]] >= k;
					if (!all)
						break;
					arrived[r] = 0;
					pc[r]++;
					moved = 1;
					continue;
				}
				/* WAIT on a group: every send and receive started there has its partner */
				int g = a->index, ok = 1;
				for (int q = 0; q < n && ok; q++)
					ok = AT(sent, g, r, q) <= AT(recvd, g, q, r) &&
					     AT(recvd, g, r, q) <= AT(sent, g, q, r);
				if (!ok)
					break;
				pc[r]++;
				moved = 1;
			}
		}
	}
	int stuck = 0;
	for (int r = 0; r < n; r++) {
		const struct rt_program *p = progs[r];
		if (pc[r] >= p->n_actions)
			continue;
		if (!stuck++) {
			fprintf(err, "error: the programs cannot finish: no rank can move; a cycle of "
				"waits among these:\n");
			if (dot)
				fprintf(dot, "digraph waits {\n  label=\"the programs cannot finish: "
					"each rank waits for the ranks its arrows point at\";\n"
					"  node [shape=box, style=\"rounded,filled\", fontname="
					"\"Helvetica\", fontsize=10, fillcolor=\"#fbeaea\"];\n"
					"  edge [fontname=\"Helvetica\", fontsize=9, color=\"#bb3333\"];\n");
		}
		const struct rt_action *a = &p->actions[pc[r]];
		if (dot) {
			/* the rank, where it stopped, and the chunk it ran last */
			int last = pc[r] - 1;
			while (last >= 0 && p->actions[last].kind != RT_ACT_CHUNK)
				last--;
			const char *grp = p->groups[a->kind == RT_ACT_WAIT ? a->index
						    : p->comms[a->index].group].name;
			fprintf(dot, "  r%d [label=\"rank %d (stage %d)\\naction %d: %s %s\\nafter "
				"%s, micro-batch %d\"];\n", r, r, p->stage, pc[r],
				a->kind == RT_ACT_WAIT ? "wait on"
						       : rt_cop_kind_name(p->comms[a->index].kind),
				grp, last >= 0 ? p->chunks[p->actions[last].index].name : "nothing",
				last >= 0 ? p->actions[last].mb : 0);
		}
		if (a->kind == RT_ACT_WAIT) {
			int g = a->index;
			fprintf(err, "  rank %d, action %d: waits on group %s for", r, pc[r],
				p->groups[g].name);
			for (int q = 0; q < n; q++) {
				int rq = AT(sent, g, r, q) > AT(recvd, g, q, r);
				int sq = AT(recvd, g, r, q) > AT(sent, g, q, r);
				if (rq)
					fprintf(err, " rank %d to receive", q);
				if (sq)
					fprintf(err, " rank %d to send", q);
				if (dot && (rq || sq))
					fprintf(dot, "  r%d -> r%d [label=\"%s%s%s on %s\"];\n", r, q,
						rq ? "to receive" : "", rq && sq ? ", " : "",
						sq ? "to send" : "", p->groups[g].name);
			}
			fputc('\n', err);
		} else {
			const struct rt_comm_op *o = &p->comms[a->index];
			fprintf(err, "  rank %d, action %d: in %s over group %s, waiting for its other "
				"members\n", r, pc[r], rt_cop_kind_name(o->kind), p->groups[o->group].name);
			int k = coll[(size_t)o->group * (size_t)n + (size_t)r];
			int m = group_members(progs, n, o->group, r, mem);
			for (int i = 0; dot && i < m; i++)
				if (coll[(size_t)o->group * (size_t)n + (size_t)mem[i]] < k)
					fprintf(dot, "  r%d -> r%d [label=\"to reach %s on %s\"];\n", r,
						mem[i], rt_cop_kind_name(o->kind),
						p->groups[o->group].name);
		}
	}
	if (dot && stuck)
		fputs("}\n", dot);
#undef AT
	free(sent);
	free(recvd);
	free(coll);
	free(pc);
	free(mem);
	free(arrived);
	return stuck;
}

/* The first pairing that fails, drawn: the two ranks at the actions that do not pair
 * (ia, ib: -1 where the rank has none left), an arrow from the one to the other saying
 * what differs.  Once per verification (*drawn). */
static void dot_mismatch(FILE *dot, int *drawn, const char *group,
			 const struct rt_program *p, int r, int ia,
			 const struct rt_program *pq, int q, int ib, const char *what)
{
	if (!dot || (*drawn)++)
		return;
	fprintf(dot, "digraph mismatch {\n  label=\"the programs do not pair on group %s: %s\";\n"
		"  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", "
		"fontsize=10, fillcolor=\"#fbeaea\"];\n  edge [fontname=\"Helvetica\", "
		"fontsize=9, color=\"#bb3333\"];\n", group, what);
	const struct rt_program *pr[2] = { p, pq };
	int rank[2] = { r, q }, at[2] = { ia, ib };
	for (int k = 0; k < 2; k++) {
		const struct rt_program *x = pr[k];
		fprintf(dot, "  r%d [label=\"rank %d (stage %d)\\n", rank[k], rank[k], x->stage);
		if (at[k] < 0 || at[k] >= x->n_actions) {
			fprintf(dot, "nothing more on %s\"];\n", group);
			continue;
		}
		const struct rt_action *a = &x->actions[at[k]];
		const struct rt_comm_op *o = &x->comms[a->index];
		const struct rt_buffer *b = &x->bufs[o->buf];
		char shape[96] = "";
		for (int d = 0, w = 0; d < b->rank && w < (int)sizeof shape - 24; d++)
			w += snprintf(shape + w, sizeof shape - (size_t)w, "%s%lld", d ? ", " : "",
				      (long long)b->shape[d]);
		fprintf(dot, "action %d: %s %s\\n%s [%s], micro-batch %d\"];\n", at[k],
			rt_cop_kind_name(o->kind), b->name, rt_dtype_name(b->dtype), shape, a->mb);
	}
	fprintf(dot, "  r%d -> r%d [label=\"%s\"];\n}\n", r, q, what);
}

int rt_program_verify(struct rt_program *const *progs, int n, FILE *err)
{
	return rt_program_verify_dot(progs, n, err, NULL);
}

int rt_program_verify_dot(struct rt_program *const *progs, int n, FILE *err, FILE *dot)
{
	int bad = 0, drawn = 0;
	int *mem = rt_calloc((size_t)n + 1, sizeof *mem);
	for (int r = 0; r < n && bad < 10; r++) {
		const struct rt_program *p = progs[r];
		if (p->n_groups != progs[0]->n_groups) {
			fprintf(err, "error: rank %d has %d groups, rank 0 %d\n", r, p->n_groups,
				progs[0]->n_groups);
			bad++;
			continue;
		}
		for (int g = 0; g < p->n_groups; g++) {
			int m = group_members(progs, n, g, r, mem);
			if (!m)
				continue;
			/* every send to a peer, in order, against the peer's receives from r */
			for (int qi = 0; qi < m; qi++) {
				int q = mem[qi];
				const struct rt_program *pq = progs[q];
				int rkey = p->groups[g].key, qkey = pq->groups[g].key;
				int ia = 0, ib = 0;
				for (;;) {
					while (ia < p->n_actions &&
					       !(p->actions[ia].kind == RT_ACT_COMM &&
						 p->comms[p->actions[ia].index].kind == RT_COP_SEND &&
						 p->comms[p->actions[ia].index].group == g &&
						 p->comms[p->actions[ia].index].peer == qkey))
						ia++;
					while (ib < pq->n_actions &&
					       !(pq->actions[ib].kind == RT_ACT_COMM &&
						 pq->comms[pq->actions[ib].index].kind == RT_COP_RECV &&
						 pq->comms[pq->actions[ib].index].group == g &&
						 pq->comms[pq->actions[ib].index].peer == rkey))
						ib++;
					if (ia == p->n_actions && ib == pq->n_actions)
						break;
					if (ia == p->n_actions || ib == pq->n_actions) {
						fprintf(err, "error: group %s: rank %d sends %s to rank %d "
							"than that rank receives from it\n",
							p->groups[g].name, r, ia == p->n_actions ? "less"
								: "more", q);
						dot_mismatch(dot, &drawn, p->groups[g].name, p, r,
							     ia < p->n_actions ? ia : -1, pq, q,
							     ib < pq->n_actions ? ib : -1,
							     ia == p->n_actions ? "a receive with no send"
										: "a send with no receive");
						bad++;
						break;
					}
					const struct rt_comm_op *s = &p->comms[p->actions[ia].index];
					const struct rt_comm_op *v = &pq->comms[pq->actions[ib].index];
					const struct rt_buffer *sb = &p->bufs[s->buf], *vb = &pq->bufs[v->buf];
					if (!same_shape(sb, vb) ||
					    p->actions[ia].mb != pq->actions[ib].mb) {
						fprintf(err, "error: group %s: rank %d sends %s (micro-batch "
							"%d) where rank %d receives %s (micro-batch %d): "
							"shapes, dtypes or order differ\n", p->groups[g].name,
							r, sb->name, p->actions[ia].mb, q, vb->name,
							pq->actions[ib].mb);
						dot_mismatch(dot, &drawn, p->groups[g].name, p, r, ia,
							     pq, q, ib, !same_shape(sb, vb)
							     ? "sent and received shapes or dtypes differ"
							     : "sent and received micro-batches differ");
						bad++;
						break;
					}
					ia++;
					ib++;
				}
			}
			/* the collectives of the communicator: the same on every member */
			int q = mem[0];
			if (q == r)
				continue;
			const struct rt_program *pq = progs[q];
			int ia = 0, ib = 0;
			for (;;) {
				while (ia < p->n_actions &&
				       !(p->actions[ia].kind == RT_ACT_COMM &&
					 is_collective(p->comms[p->actions[ia].index].kind) &&
					 p->comms[p->actions[ia].index].group == g))
					ia++;
				while (ib < pq->n_actions &&
				       !(pq->actions[ib].kind == RT_ACT_COMM &&
					 is_collective(pq->comms[pq->actions[ib].index].kind) &&
					 pq->comms[pq->actions[ib].index].group == g))
					ib++;
				if (ia == p->n_actions && ib == pq->n_actions)
					break;
				const struct rt_comm_op *so = ia < p->n_actions
					? &p->comms[p->actions[ia].index] : NULL;
				const struct rt_comm_op *vo = ib < pq->n_actions
					? &pq->comms[pq->actions[ib].index] : NULL;
				const struct rt_buffer *sb = so ? &p->bufs[so->buf] : NULL;
				const struct rt_buffer *vb = vo ? &pq->bufs[vo->buf] : NULL;
				/* the same kind, of the same size (an all-to-allv's rows are counted
				 * at run time: its dtype alone) */
				if (!sb || !vb || so->kind != vo->kind || sb->dtype != vb->dtype ||
				    (so->kind != RT_COP_ALL_TO_ALLV && sb->numel != vb->numel)) {
					fprintf(err, "error: group %s: rank %d's collective %s %s does not "
						"match rank %d's %s %s\n", p->groups[g].name, r,
						so ? rt_cop_kind_name(so->kind) : "",
						sb ? sb->name : "(none)", q,
						vo ? rt_cop_kind_name(vo->kind) : "",
						vb ? vb->name : "(none)");
					dot_mismatch(dot, &drawn, p->groups[g].name, p, r, so ? ia : -1,
						     pq, q, vo ? ib : -1,
						     !sb || !vb ? "a collective one rank does not issue"
						     : so->kind != vo->kind ? "collectives of other kinds"
									    : "collectives of other sizes");
					bad++;
					break;
				}
				ia++;
				ib++;
			}
		}
	}
	free(mem);
	if (!bad)
		bad = check_progress(progs, n, err, dot);
	return bad;
}

/* ---- pictures ------------------------------------------------------------------ */

/* the chunk of p that writes buffer b (-1: none) or, reading, the first that reads it */
static int chunk_touching(const struct rt_program *p, int b, int writes)
{
	for (int a = 0; a < p->n_actions; a++) {
		if (p->actions[a].kind != RT_ACT_CHUNK)
			continue;
		const struct rt_chunk *c = &p->chunks[p->actions[a].index];
		const int *list = writes ? c->out : c->in;
		int n = writes ? c->n_out : c->n_in;
		for (int k = 0; k < n; k++)
			if (list[k] == b)
				return p->actions[a].index;
	}
	return -1;
}

static void dot_bytes(double b, char *s, size_t n)
{
	if (b >= 1 << 20)
		snprintf(s, n, "%.1f MiB", b / 1048576.0);
	else
		snprintf(s, n, "%.1f KiB", b / 1024.0);
}

void rt_programs_dot(struct rt_program *const *progs, int n, const char *title, FILE *out)
{
	fprintf(out, "digraph stages {\n  rankdir=LR;\n  compound=true;\n"
		"  label=\"%s\";\n  labelloc=t;\n  fontname=\"Helvetica\";\n"
		"  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", "
		"fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", "
		"fontsize=9];\n", title ? title : "stages");
	for (int r = 0; r < n; r++) {
		const struct rt_program *p = progs[r];
		int64_t pbytes = 0;
		int np = 0;
		for (int k = 0; k < p->n_params; k++) {
			pbytes += p->bufs[p->params[k].buf].bytes;
			np++;
		}
		char pb[32];
		dot_bytes((double)pbytes, pb, sizeof pb);
		fprintf(out, "  subgraph cluster_r%d {\n    label=\"rank %d: stage %d, dp %d\";\n"
			"    style=rounded;\n    color=\"#7a8ba8\";\n", r, r, p->stage,
			r % p->layout.dp);
		fprintf(out, "    r%d_params [label=\"%d parameters\\n%s\", shape=folder, "
			"fillcolor=\"#f6f1e4\"];\n", r, np, pb);
		int prev = -1;
		for (int c = 0; c < p->n_chunks; c++) {
			const struct rt_chunk *ch = &p->chunks[c];
			fprintf(out, "    r%d_c%d [label=\"%s\\n%d in, %d out\", fillcolor=\"%s\"];\n",
				r, c, ch->name, ch->n_in, ch->n_out,
				rt_chunk_is_bwd(ch->kind) ? "#fbeaea" : "#eef3fb");
			if (prev >= 0)
				fprintf(out, "    r%d_c%d -> r%d_c%d [style=dotted, arrowhead=none];\n",
					r, prev, r, c);
			prev = c;
		}
		for (int k = 0; k < p->n_comms; k++) {
			const struct rt_comm_op *o = &p->comms[k];
			if (o->kind != RT_COP_ALL_TO_ALL && o->kind != RT_COP_ALL_TO_ALLV)
				continue;
			fprintf(out, "    r%d_k%d [label=\"%s %s\\n%s\", shape=ellipse, "
				"fillcolor=\"#fde9d2\"];\n", r, k, rt_cop_kind_name(o->kind),
				p->groups[o->group].name, p->bufs[o->buf].name);
		}
		fprintf(out, "  }\n");
	}
	/* sends: one edge per pair of chunks, with what crosses it per micro-batch */
	for (int r = 0; r < n; r++) {
		const struct rt_program *p = progs[r];
		int dp = p->layout.dp;
		int *seen = rt_calloc((size_t)p->n_comms + 1, sizeof *seen);
		for (int k = 0; k < p->n_comms; k++) {
			const struct rt_comm_op *o = &p->comms[k];
			if (o->kind != RT_COP_SEND || seen[k])
				continue;
			int q = o->peer * dp + r % dp;
			if (q >= n)
				continue;
			const struct rt_program *pq = progs[q];
			int from = chunk_touching(p, o->buf, 1);
			/* the receive of the same value on q */
			int to = -1;
			for (int j = 0; j < pq->n_comms && to < 0; j++)
				if (pq->comms[j].kind == RT_COP_RECV && pq->comms[j].tag == o->tag)
					to = chunk_touching(pq, pq->comms[j].buf, 0);
			int count = 0;
			double bytes = 0;
			for (int j = k; j < p->n_comms; j++) {
				const struct rt_comm_op *o2 = &p->comms[j];
				if (o2->kind != RT_COP_SEND || o2->peer != o->peer ||
				    chunk_touching(p, o2->buf, 1) != from)
					continue;
				seen[j] = 1;
				count++;
				bytes += (double)p->bufs[o2->buf].bytes;
			}
			char bs[32];
			dot_bytes(bytes, bs, sizeof bs);
			fprintf(out, "  r%d_c%d -> r%d_c%d [label=\"%d tensor%s, %s\", color=\"%s\"];\n",
				r, from < 0 ? 0 : from, q, to < 0 ? 0 : to, count, count == 1 ? "" : "s",
				bs, rt_chunk_is_bwd(p->chunks[from < 0 ? 0 : from].kind) ? "#bb3333" : "#223366");
		}
		free(seen);
	}
	/* gradient sums: the ranks of each group, chained */
	for (int g = 0; n && g < progs[0]->n_groups; g++) {
		for (int r = 0; r < n; r++) {
			const struct rt_program *p = progs[r];
			int reduces = 0;
			for (int k = 0; k < p->n_comms; k++)
				if (p->comms[k].kind == RT_COP_ALL_REDUCE && p->comms[k].group == g)
					reduces++;
			if (!reduces || p->groups[g].color < 0)
				continue;
			/* the next member of the same communicator */
			for (int q = r + 1; q < n; q++)
				if (progs[q]->groups[g].color == p->groups[g].color) {
					fprintf(out, "  r%d_params -> r%d_params [dir=both, style=dashed, "
						"color=\"#8a6d1f\", label=\"%s: %d sum%s\"];\n", r, q,
						p->groups[g].name, reduces, reduces == 1 ? "" : "s");
					break;
				}
		}
	}
	fprintf(out, "}\n");
}
