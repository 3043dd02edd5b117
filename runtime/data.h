/* data.h - token data for training: llm.c's shard format, a byte-level tokenizer,
 * and seeded batch sampling.
 *
 * A shard is a file of 256 little-endian int32 (magic 20240520, version 1, the token
 * count, the rest zero) followed by that many uint16 tokens.  llm.c's scripts write
 * the same files (with GPT-2 tokens); sluice's byte-level tokenizer writes a token per
 * byte (vocabulary 256).  Reading checks everything: a bad magic, a wrong version, a
 * file shorter or longer than its count says, or a token outside the model's
 * vocabulary is an error with the reason, never a crash.
 *
 * Batches are windows of seq+1 consecutive tokens at random offsets (inputs are the
 * first seq, targets the last seq), drawn with sluice's own PRNG, whose whole state is
 * one uint64: saving it in a checkpoint restores the data position exactly. */
#ifndef SLUICE_RT_DATA_H
#define SLUICE_RT_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RT_SHARD_MAGIC 20240520
#define RT_SHARD_VERSION 1
#define RT_SHARD_HEADER_INTS 256

/* --- the PRNG: splitmix64, one word of state ---------------------------------- */
struct rt_rng {
	uint64_t s;
};

void rt_rng_seed(struct rt_rng *r, uint64_t seed);
uint64_t rt_rng_next(struct rt_rng *r);
uint64_t rt_rng_below(struct rt_rng *r, uint64_t n);   /* uniform in [0, n), n > 0 */
double rt_rng_uniform(struct rt_rng *r);                /* uniform in [0, 1) */
double rt_rng_normal(struct rt_rng *r);                 /* standard normal */

/* --- initial values ------------------------------------------------------------------
 * Parameter initialisers that run on a pool's threads and give the same values
 * whatever its size: element i belongs to block i / RT_FILL_BLOCK, and each block
 * draws from its own stream seeded from (seed, block index).  Normal draws are
 * Marsaglia and Tsang's ziggurat, a block drawn whole.  The caller picks seed per tensor
 * (e.g. a hash of the run's seed and the parameter's path), so adding a tensor leaves
 * the others. */
#define RT_FILL_BLOCK 4096
struct rt_pool;
void rt_fill_normal(struct rt_pool *p, float *w, int64_t n, double std, uint64_t seed);
void rt_fill_uniform(struct rt_pool *p, float *w, int64_t n, double bound, uint64_t seed);
void rt_fill_const(struct rt_pool *p, float *w, int64_t n, float value);
/* A slice: w[i] gets element first + i of the tensor the call without _at fills. */
void rt_fill_normal_at(struct rt_pool *p, float *w, int64_t first, int64_t n, double std,
		       uint64_t seed);
void rt_fill_uniform_at(struct rt_pool *p, float *w, int64_t first, int64_t n, double bound,
			uint64_t seed);

/* --- shards --------------------------------------------------------------------- */
struct rt_shard {
	uint16_t *tok;
	int64_t n;
};

/* Write n tokens as a shard (temp file, fsync, rename).  0, or -1 with a message. */
int rt_shard_write(const char *path, const uint16_t *tok, int64_t n, FILE *err);
/* Read and check a shard; every token must be < vocab (vocab <= 0: no check).
 * 0, or -1 with "sluice: PATH: reason" on err. */
int rt_shard_read(const char *path, int vocab, struct rt_shard *out, FILE *err);
void rt_shard_free(struct rt_shard *s);

/* The byte-level tokenizer: one token per byte of text, vocabulary 256. */
#define RT_BYTE_VOCAB 256
void rt_tokenize_bytes(const unsigned char *text, size_t n, uint16_t *out);

/* --- Fill-In-the-Middle --------------------------------------------------------------
 * DeepSeek-V3 (after Bavarian et al., 2022) trains 10% of documents in FIM form,
 * prefix-suffix-middle: a document cut at two uniform random points into prefix P,
 * middle M and suffix S becomes
 *     <|fim_begin|> P <|fim_hole|> S <|fim_end|> M
 * so that next-token prediction learns to fill a hole from both sides.  The three
 * sentinels extend the byte vocabulary: 256, 257, 258; a model trained on such data
 * needs vocab >= 259.  There is no end-of-document token today: documents (the files
 * given to 'sluice data', the fortunes of the default data) are concatenated, the
 * fortunes with a blank line between them.
 *
 * FIM is applied per document when shards are made, not when batches are sampled:
 * DeepSeek applies it at the document level in data preparation, and a shard keeps
 * no document boundaries, so a sampled window could not be cut at a document's ends.
 * A document's fate depends on (seed, its index) only: the same data and seed give
 * the same shard, and documents can be transformed in any order. */
#define RT_FIM_BEGIN 256
#define RT_FIM_HOLE 257
#define RT_FIM_END 258
#define RT_FIM_VOCAB 259 /* the smallest vocabulary that holds the sentinels */

/* Document `index` (n tokens) into out, which holds n + 3: with probability rate (in
 * [0, 1]) in PSM form, else unchanged.  An empty document stays empty.  Returns the
 * tokens written: n or n + 3. */
size_t rt_fim_document(const uint16_t *doc, size_t n, double rate, uint64_t seed,
		       uint64_t index, uint16_t *out);
/* 0 when a model of this vocabulary can train on FIM data at this rate; -1 with a
 * message when rate is outside [0, 1] or rate > 0 and vocab < RT_FIM_VOCAB.  The
 * training setting `fim` goes through here before any data is made. */
int rt_fim_check(int vocab, double rate, FILE *err);

/* --- batches -------------------------------------------------------------------- */
/* Fill tokens and targets (int32, batch x seq, row-major) with `batch` random windows
 * of t's tokens; the shard must hold at least seq + 1 tokens. */
void rt_batch_sample(const struct rt_shard *t, struct rt_rng *r, int batch, int seq,
		     int32_t *tokens, int32_t *targets);
/* The k-th batch of a fixed, evenly spread sweep over a validation shard: the same
 * windows every time, no PRNG.  k < n_batches. */
void rt_batch_eval(const struct rt_shard *t, int k, int n_batches, int batch, int seq,
		   int32_t *tokens, int32_t *targets);

#endif
