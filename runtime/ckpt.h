/* ckpt.h - checkpoints in the safetensors format, readable by Hugging Face's
 * safetensors library and so by PyTorch and numpy.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON (padded with spaces
 * to a multiple of 8), then the tensors back to back.  The JSON maps each tensor name
 * to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data part) and
 * "__metadata__" to an object of strings (safetensors allows strings only).
 *
 * Writing goes to a temporary file, is synced and renamed over the target: a crash
 * leaves the old checkpoint or the new one, never half of one.  Reading checks the
 * header length against the file, the JSON, every dtype, shape and offset (in bounds,
 * size equal to shape times element size) and says what is wrong.  What a tensor
 * means (weights, moments, RNG state) is the caller's business.  Data is stored
 * little-endian, the host's order on every machine sluice runs on. */
#ifndef SLUICE_RT_CKPT_H
#define SLUICE_RT_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define RT_CKPT_MAX_RANK 8
#define RT_CKPT_MAX_HEADER (100u << 20) /* as the safetensors library */

enum rt_ckpt_dtype { RT_CKPT_F32, RT_CKPT_I32, RT_CKPT_I64, RT_CKPT_U64 };

struct rt_ckpt_tensor {
	const char *name;
	enum rt_ckpt_dtype dtype;
	int rank;
	int64_t shape[RT_CKPT_MAX_RANK];
	const void *data;          /* on read: points into the loaded file, maybe unaligned */
	size_t nbytes;             /* filled on read; computed on write */
};

struct rt_ckpt_meta {
	const char *key;
	const char *value;
};

const char *rt_ckpt_dtype_name(enum rt_ckpt_dtype t); /* "F32", ... */
size_t rt_ckpt_dtype_size(enum rt_ckpt_dtype t);

/* Write n tensors and nm metadata strings to path.  0, or -1 with a message on err. */
int rt_ckpt_write(const char *path, const struct rt_ckpt_tensor *t, int n,
		  const struct rt_ckpt_meta *meta, int nm, FILE *err);

struct rt_ckpt;

/* Load and check a safetensors file; NULL with "sluice: PATH: reason" on err. */
struct rt_ckpt *rt_ckpt_read(const char *path, FILE *err);
void rt_ckpt_free(struct rt_ckpt *c);
int rt_ckpt_count(const struct rt_ckpt *c);
const struct rt_ckpt_tensor *rt_ckpt_tensor_at(const struct rt_ckpt *c, int i);
const struct rt_ckpt_tensor *rt_ckpt_find(const struct rt_ckpt *c, const char *name);
const char *rt_ckpt_meta_get(const struct rt_ckpt *c, const char *key); /* NULL: absent */
/* Copy tensor `name` into dst after checking that it exists with this dtype and shape;
 * 0, or -1 with a message naming the tensor and both shapes. */
int rt_ckpt_load(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		 int rank, const int64_t *shape, void *dst, FILE *err);

#endif
