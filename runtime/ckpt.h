/* ckpt.h - checkpoints in the safetensors format, readable by Hugging Face's
 * safetensors library and so by PyTorch and numpy.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON (padded with spaces
 * to a multiple of 8), then the tensors back to back.  The JSON maps each tensor name
 * to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data part) and
 * "__metadata__" to an object of strings (safetensors allows strings only).
 *
 * Writing streams the header and then each tensor's bytes from where the tensor lives
 * (no copy of the model is made, so a save adds almost nothing to the process's
 * memory) to a temporary file, which is synced and renamed over the target: a crash or
 * a failed write leaves the old checkpoint or the new one, never half of one, and no
 * temporary file.
 *
 * Sharded checkpoints follow Hugging Face's convention: shard files, each a complete
 * safetensors file, and an index NAME.safetensors.index.json holding
 * {"metadata": {...}, "weight_map": {tensor: shard file}}, which transformers'
 * from_pretrained and safetensors' own loaders read.  The index is the commit point:
 * a save writes its shards under names no committed index uses, renames the index
 * over the old one last, then removes the old index's shards.
 *
 * Reading maps the files (a tensor's pages come from the disk when it is loaded) and
 * accepts one .safetensors file, an index, or a directory holding either.  It checks the
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
#define RT_CKPT_SHARD_BYTES ((size_t)2 << 30) /* default shard size: 2 GiB */

enum rt_ckpt_dtype { RT_CKPT_F32, RT_CKPT_I32, RT_CKPT_I64, RT_CKPT_U64 };

struct rt_ckpt_tensor {
	const char *name;
	enum rt_ckpt_dtype dtype;
	int rank;
	int64_t shape[RT_CKPT_MAX_RANK];
	const void *data;          /* on read: points into the mapped file, maybe unaligned */
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

/* Write the tensors as shards of at most shard_bytes each (0: RT_CKPT_SHARD_BYTES; a
 * tensor larger than that gets a shard of its own) in DIR, named
 * BASE-gG-00001-of-0000N.safetensors, then DIR/BASE.safetensors.index.json, whose
 * metadata holds meta and "total_size" (bytes of tensor data, as HF writes).  Each
 * shard carries meta too.  G is a generation the committed index does not use, so the
 * old checkpoint stays whole until the index is renamed; its shards are removed
 * after.  0, or -1 with a message, the old checkpoint intact and this save's shards
 * removed. */
int rt_ckpt_write_sharded(const char *dir, const char *base, const struct rt_ckpt_tensor *t,
			  int n, const struct rt_ckpt_meta *meta, int nm, size_t shard_bytes,
			  FILE *err);

struct rt_ckpt;

/* Open and check a checkpoint: a .safetensors file, an index (*.json), or a directory
 * holding one index or else one .safetensors file.  With an index every shard is
 * checked, and each tensor the map names must be in the shard it names; metadata
 * comes from the index (string values), then from the shards.  NULL with
 * "sluice: PATH: reason" on err. */
struct rt_ckpt *rt_ckpt_read(const char *path, FILE *err);
void rt_ckpt_free(struct rt_ckpt *c);
int rt_ckpt_count(const struct rt_ckpt *c);
const struct rt_ckpt_tensor *rt_ckpt_tensor_at(const struct rt_ckpt *c, int i);
const struct rt_ckpt_tensor *rt_ckpt_find(const struct rt_ckpt *c, const char *name);
const char *rt_ckpt_meta_get(const struct rt_ckpt *c, const char *key); /* NULL: absent */
/* Copy tensor `name`, from whichever shard holds it, into dst after checking that it
 * exists with this dtype and shape; 0, or -1 with a message naming the tensor and both
 * shapes. */
int rt_ckpt_load(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		 int rank, const int64_t *shape, void *dst, FILE *err);
/* Copy rows [r0, r1) of the first dimension of tensor `name` (whose whole dtype and
 * shape are checked as rt_ckpt_load does) into dst: what a rank holding a slice needs,
 * e.g. its experts of an expert-parallel weight [E, ...].  Only those rows' pages are
 * read from the disk.  0, or -1 with a message. */
int rt_ckpt_load_rows(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		      int rank, const int64_t *shape, int64_t r0, int64_t r1, void *dst,
		      FILE *err);

#endif
