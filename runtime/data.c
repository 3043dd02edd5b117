/* data.c - shards, the byte tokenizer, the PRNG and batch sampling (see data.h). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "rt.h"

void rt_rng_seed(struct rt_rng *r, uint64_t seed)
{
	r->s = seed;
}

uint64_t rt_rng_next(struct rt_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t rt_rng_below(struct rt_rng *r, uint64_t n)
{
	/* reject the top partial range so every value is equally likely */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = rt_rng_next(r);
	while (x >= limit);
	return x % n;
}

double rt_rng_uniform(struct rt_rng *r)
{
	return (double)(rt_rng_next(r) >> 11) * 0x1.0p-53;
}

double rt_rng_normal(struct rt_rng *r)
{
	/* Box-Muller without a cached second value: the state stays one word */
	double u1 = 1.0 - rt_rng_uniform(r); /* (0, 1] */
	double u2 = rt_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* --- initial values, drawn in parallel ---------------------------------------- */

struct fill {
	float *w;
	int64_t first;          /* w[i] is element first + i of the tensor */
	double a;               /* std, bound or value */
	uint64_t seed;
	int kind;               /* 0 normal, 1 uniform, 2 constant */
};

/* Normal draws by Marsaglia and Tsang's ziggurat (128 layers, the constants of
 * Doornik's ZIGNOR): one 64-bit draw gives a layer i (its low 7 bits) and a uniform u
 * in [-1, 1) (the other 57); u X[i] is a normal whenever |u| < X[i+1] / X[i], about
 * 99% of draws.  The rest take the slow path: the wedge's test with two exponentials
 * and a further uniform, or the tail beyond R by logs, then a fresh draw if rejected.
 * Half the CPU of the polar method it replaces (9.4 ns a normal in the engine, of
 * which the log, a divide and a square root per pair): the initialiser was the largest
 * part of the start-up (1.5 of 2.7 CPU-seconds for gpt2_124m's 162M weights). */
enum { ZIG_LAYERS = 128 };
#define ZIG_R 3.442619855899
#define ZIG_V 9.91256303526217e-3

static double zig_x[ZIG_LAYERS + 1], zig_ratio[ZIG_LAYERS];
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

static void zig_tables(void)
{
	double f = exp(-0.5 * ZIG_R * ZIG_R);
	zig_x[0] = ZIG_V / f;
	zig_x[1] = ZIG_R;
	zig_x[ZIG_LAYERS] = 0.0;
	for (int i = 2; i < ZIG_LAYERS; i++) {
		zig_x[i] = sqrt(-2.0 * log(ZIG_V / zig_x[i - 1] + f));
		f = exp(-0.5 * zig_x[i] * zig_x[i]);
	}
	for (int i = 0; i < ZIG_LAYERS; i++)
		zig_ratio[i] = zig_x[i + 1] / zig_x[i];
}

/* layer and uniform of one draw */
static inline int zig_split(uint64_t b, double *u)
{
	*u = (double)(int64_t)(b & ~(uint64_t)(ZIG_LAYERS - 1)) * 0x1.0p-63;
	return (int)(b & (ZIG_LAYERS - 1));
}

/* the slow path of a draw (u, i) that missed its layer's rectangle */
static double zig_slow(struct rt_rng *r, double u, int i)
{
	for (;;) {
		if (fabs(u) < zig_ratio[i])
			return u * zig_x[i];
		if (i == 0) { /* the tail beyond R */
			double x, y;
			do {
				x = log(1.0 - rt_rng_uniform(r)) / ZIG_R;
				y = log(1.0 - rt_rng_uniform(r));
			} while (-2.0 * y < x * x);
			return u < 0 ? x - ZIG_R : ZIG_R - x;
		}
		double x = u * zig_x[i], x2 = x * x;
		double f0 = exp(-0.5 * (zig_x[i] * zig_x[i] - x2));
		double f1 = exp(-0.5 * (zig_x[i + 1] * zig_x[i + 1] - x2));
		if (f1 + rt_rng_uniform(r) * (f0 - f1) < 1.0)
			return x;
		i = zig_split(rt_rng_next(r), &u);
	}
}

/* One block [b, e) of a tensor, always drawn whole and in order: first every element's
 * draw (the fast path, without a branch), then the misses' slow paths in element
 * order from the same stream; elements before lo are thrown away (a block cut by a
 * slice), w[i - first] receives element i. */
static void normal_block(struct rt_rng *r, float *w, int64_t first, int64_t b, int64_t e,
			 int64_t lo, double std)
{
	double v[RT_FILL_BLOCK], u[RT_FILL_BLOCK];
	unsigned char layer[RT_FILL_BLOCK], miss[RT_FILL_BLOCK];
	int n = (int)(e - b);
	for (int k = 0; k < n; k++) {
		double uk;
		int i = zig_split(rt_rng_next(r), &uk);
		v[k] = uk * zig_x[i];
		u[k] = uk;
		layer[k] = (unsigned char)i;
		miss[k] = !(fabs(uk) < zig_ratio[i]);
	}
	for (int k = 0; k < n; k++)
		if (miss[k])
			v[k] = zig_slow(r, u[k], layer[k]);
	for (int64_t i = b > lo ? b : lo; i < e; i++)
		w[i - first] = (float)(std * v[i - b]);
}

/* Block k of every fill draws from its own stream, seeded from (seed, k): the values
 * depend on the seed and the position in the tensor only, never on the threads or on
 * which slice of the tensor is filled (a block cut by the slice is drawn from its
 * start and the values before the slice thrown away). */
static void fill_blocks(void *ctx, int64_t lo, int64_t hi)
{
	const struct fill *f = ctx;
	lo += f->first;
	hi += f->first;
	float *w = f->w;
	for (int64_t b = lo - lo % RT_FILL_BLOCK; b < hi; b += RT_FILL_BLOCK) {
		int64_t e = b + RT_FILL_BLOCK < hi ? b + RT_FILL_BLOCK : hi;
		struct rt_rng r;
		rt_rng_seed(&r, f->seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(b / RT_FILL_BLOCK + 1)));
		rt_rng_next(&r);
		if (f->kind == 2) {
			for (int64_t i = b > lo ? b : lo; i < e; i++)
				w[i - f->first] = (float)f->a;
		} else if (f->kind == 1) {
			for (int64_t i = b; i < e; i++) {
				float v = (float)((2.0 * rt_rng_uniform(&r) - 1.0) * f->a);
				if (i >= lo)
					w[i - f->first] = v;
			}
		} else {
			normal_block(&r, w, f->first, b, e, lo, f->a);
		}
	}
}

static void fill(struct rt_pool *p, float *w, int64_t first, int64_t n, struct fill f)
{
	pthread_once(&zig_once, zig_tables);
	f.w = w;
	f.first = first;
	/* chunks are whole blocks, so a block is never split between threads (but at the
	 * ends of a slice) */
	rt_pool_run(p, n, RT_FILL_BLOCK * 16, fill_blocks, &f);
}

void rt_fill_normal(struct rt_pool *p, float *w, int64_t n, double std, uint64_t seed)
{
	fill(p, w, 0, n, (struct fill){ .a = std, .seed = seed, .kind = 0 });
}

void rt_fill_uniform(struct rt_pool *p, float *w, int64_t n, double bound, uint64_t seed)
{
	fill(p, w, 0, n, (struct fill){ .a = bound, .seed = seed, .kind = 1 });
}

void rt_fill_const(struct rt_pool *p, float *w, int64_t n, float value)
{
	fill(p, w, 0, n, (struct fill){ .a = value, .kind = 2 });
}

void rt_fill_normal_at(struct rt_pool *p, float *w, int64_t first, int64_t n, double std,
		       uint64_t seed)
{
	fill(p, w, first, n, (struct fill){ .a = std, .seed = seed, .kind = 0 });
}

void rt_fill_uniform_at(struct rt_pool *p, float *w, int64_t first, int64_t n, double bound,
			uint64_t seed)
{
	fill(p, w, first, n, (struct fill){ .a = bound, .seed = seed, .kind = 1 });
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

int rt_shard_write(const char *path, const uint16_t *tok, int64_t n, FILE *err)
{
	if (n < 0 || n > INT32_MAX) {
		fprintf(err, "sluice: %s: %lld tokens do not fit in one shard (at most %d)\n",
			path, (long long)n, INT32_MAX);
		return -1;
	}
	size_t hdr = RT_SHARD_HEADER_INTS * 4;
	size_t size = hdr + 2 * (size_t)n;
	unsigned char *buf = rt_calloc(size, 1);
	put_le32(buf, RT_SHARD_MAGIC);
	put_le32(buf + 4, RT_SHARD_VERSION);
	put_le32(buf + 8, (uint32_t)n);
	for (int64_t i = 0; i < n; i++) {
		buf[hdr + 2 * (size_t)i] = (unsigned char)tok[i];
		buf[hdr + 2 * (size_t)i + 1] = (unsigned char)(tok[i] >> 8);
	}
	int rc = rt_mkdir_parents(path);
	if (!rc)
		rc = rt_write_file_atomic(path, buf, size);
	if (rc)
		fprintf(err, "sluice: %s: cannot write: %s\n", path, strerror(errno));
	free(buf);
	return rc;
}

int rt_shard_read(const char *path, int vocab, struct rt_shard *out, FILE *err)
{
	out->tok = NULL;
	out->n = 0;
	size_t len;
	unsigned char *buf = (unsigned char *)rt_read_file(path, &len);
	if (!buf) {
		fprintf(err, "sluice: %s: cannot read: %s\n", path, strerror(errno));
		return -1;
	}
	size_t hdr = RT_SHARD_HEADER_INTS * 4;
	const char *why = NULL;
	char whybuf[256];
	uint32_t magic = len >= 4 ? get_le32(buf) : 0;
	if (len < hdr) {
		snprintf(whybuf, sizeof whybuf,
			 "too short for a token shard (%zu bytes; the header alone is %zu)", len,
			 hdr);
		why = whybuf;
	} else if (magic != RT_SHARD_MAGIC) {
		snprintf(whybuf, sizeof whybuf,
			 "not a token shard (magic %u, expected %d: llm.c's format, as 'sluice data' "
			 "writes)", magic, RT_SHARD_MAGIC);
		why = whybuf;
	} else if (get_le32(buf + 4) != RT_SHARD_VERSION) {
		snprintf(whybuf, sizeof whybuf,
			 "shard version %u, this sluice reads version %d (uint16 tokens)",
			 get_le32(buf + 4), RT_SHARD_VERSION);
		why = whybuf;
	} else {
		uint32_t n = get_le32(buf + 8);
		size_t want = hdr + 2 * (size_t)n;
		if (n > INT32_MAX) {
			snprintf(whybuf, sizeof whybuf, "token count %u in the header is negative", n);
			why = whybuf;
		} else if (len != want) {
			snprintf(whybuf, sizeof whybuf,
				 "the header says %u tokens (%zu bytes) but the file has %zu bytes%s",
				 n, want, len, len < want ? ": truncated" : "");
			why = whybuf;
		} else if (n == 0) {
			why = "the shard holds no tokens";
		} else {
			out->tok = rt_malloc(2 * (size_t)n);
			for (uint32_t i = 0; i < n; i++) {
				uint16_t t = (uint16_t)(buf[hdr + 2 * (size_t)i] |
							buf[hdr + 2 * (size_t)i + 1] << 8);
				if (vocab > 0 && t >= vocab) {
					snprintf(whybuf, sizeof whybuf,
						 "token %u at position %u is outside the model's "
						 "vocabulary of %d (%s)", t, i, vocab,
						 t >= RT_FIM_BEGIN && t <= RT_FIM_END
							 ? "a FIM sentinel: the shard was made with "
							   "'sluice data --fim'; the model needs vocab >= 259"
							 : "was the shard made with another tokenizer, "
							   "e.g. GPT-2's?");
					why = whybuf;
					break;
				}
				out->tok[i] = t;
			}
			out->n = n;
		}
	}
	free(buf);
	if (why) {
		fprintf(err, "sluice: %s: %s\n", path, why);
		rt_shard_free(out);
		return -1;
	}
	return 0;
}

void rt_shard_free(struct rt_shard *s)
{
	free(s->tok);
	s->tok = NULL;
	s->n = 0;
}

void rt_tokenize_bytes(const unsigned char *text, size_t n, uint16_t *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = text[i];
}

size_t rt_fim_document(const uint16_t *doc, size_t n, double rate, uint64_t seed,
		       uint64_t index, uint16_t *out)
{
	struct rt_rng r;
	rt_rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ull * (index + 1)));
	rt_rng_next(&r);
	/* one draw decides, whatever n, so the rate holds over documents of any size */
	int fim = rt_rng_uniform(&r) < rate && n > 0;
	if (!fim) {
		memcpy(out, doc, n * sizeof *doc);
		return n;
	}
	size_t i = (size_t)rt_rng_below(&r, (uint64_t)n + 1);
	size_t j = (size_t)rt_rng_below(&r, (uint64_t)n + 1);
	if (i > j) {
		size_t x = i;
		i = j;
		j = x;
	}
	/* prefix [0, i), middle [i, j), suffix [j, n) */
	uint16_t *o = out;
	*o++ = RT_FIM_BEGIN;
	memcpy(o, doc, i * sizeof *doc);
	o += i;
	*o++ = RT_FIM_HOLE;
	memcpy(o, doc + j, (n - j) * sizeof *doc);
	o += n - j;
	*o++ = RT_FIM_END;
	memcpy(o, doc + i, (j - i) * sizeof *doc);
	return n + 3;
}

int rt_fim_check(int vocab, double rate, FILE *err)
{
	if (!(rate >= 0.0 && rate <= 1.0)) {
		fprintf(err, "sluice: fim is a rate in [0, 1] (DeepSeek-V3: 0.1), got %g\n", rate);
		return -1;
	}
	if (rate > 0.0 && vocab < RT_FIM_VOCAB) {
		fprintf(err, "sluice: fim %g needs a vocabulary of at least %d (the 256 bytes and "
			"the sentinels <|fim_begin|> %d, <|fim_hole|> %d, <|fim_end|> %d); the "
			"model's vocab is %d: set vocab = %d or more, or fim = 0\n", rate,
			RT_FIM_VOCAB, RT_FIM_BEGIN, RT_FIM_HOLE, RT_FIM_END, vocab, RT_FIM_VOCAB);
		return -1;
	}
	return 0;
}

static void copy_window(const struct rt_shard *t, int64_t start, int seq, int32_t *tokens,
			int32_t *targets)
{
	for (int j = 0; j < seq; j++) {
		tokens[j] = t->tok[start + j];
		targets[j] = t->tok[start + j + 1];
	}
}

void rt_batch_sample(const struct rt_shard *t, struct rt_rng *r, int batch, int seq,
		     int32_t *tokens, int32_t *targets)
{
	RT_ASSERT(t->n >= (int64_t)seq + 1);
	uint64_t starts = (uint64_t)(t->n - seq); /* windows of seq+1 tokens */
	for (int b = 0; b < batch; b++) {
		int64_t s = (int64_t)rt_rng_below(r, starts);
		copy_window(t, s, seq, tokens + (size_t)b * seq, targets + (size_t)b * seq);
	}
}

void rt_batch_eval(const struct rt_shard *t, int k, int n_batches, int batch, int seq,
		   int32_t *tokens, int32_t *targets)
{
	RT_ASSERT(t->n >= (int64_t)seq + 1 && k >= 0 && k < n_batches);
	int64_t windows = (int64_t)n_batches * batch;
	int64_t span = t->n - seq - 1; /* last valid start */
	for (int b = 0; b < batch; b++) {
		int64_t w = (int64_t)k * batch + b;
		int64_t s = windows > 1 ? span * w / (windows - 1) : 0;
		copy_window(t, s, seq, tokens + (size_t)b * seq, targets + (size_t)b * seq);
	}
}
