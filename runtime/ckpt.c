/* ckpt.c - safetensors writer and checked reader (see ckpt.h). */
#include "ckpt.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static const char *const dtype_names[] = { "F32", "I32", "I64", "U64" };
static const size_t dtype_sizes[] = { 4, 4, 8, 8 };

const char *rt_ckpt_dtype_name(enum rt_ckpt_dtype t)
{
	return dtype_names[t];
}

size_t rt_ckpt_dtype_size(enum rt_ckpt_dtype t)
{
	return dtype_sizes[t];
}

/* elements of a shape, or -1 when it overflows or has a negative dimension */
static int64_t numel(int rank, const int64_t *shape)
{
	int64_t n = 1;
	for (int i = 0; i < rank; i++) {
		if (shape[i] < 0 || (shape[i] && n > INT64_MAX / shape[i]))
			return -1;
		n *= shape[i];
	}
	return n;
}

static void shape_str(int rank, const int64_t *shape, char *buf, size_t n)
{
	size_t k = (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < rank && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
}

int rt_ckpt_write(const char *path, const struct rt_ckpt_tensor *t, int n,
		  const struct rt_ckpt_meta *meta, int nm, FILE *err)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
	for (int i = 0; i < nm; i++)
		cJSON_AddStringToObject(md, meta[i].key, meta[i].value);
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		int64_t ne = numel(t[i].rank, t[i].shape);
		RT_ASSERT(ne >= 0 && t[i].rank <= RT_CKPT_MAX_RANK);
		size_t bytes = (size_t)ne * dtype_sizes[t[i].dtype];
		cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
		cJSON_AddStringToObject(e, "dtype", dtype_names[t[i].dtype]);
		cJSON *sh = cJSON_AddArrayToObject(e, "shape");
		for (int d = 0; d < t[i].rank; d++)
			cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
		cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
		cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
		cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
		off += bytes;
	}
	char *json = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	RT_ASSERT(json);
	size_t jlen = strlen(json);
	size_t hlen = (jlen + 7) & ~(size_t)7;
	size_t total = 8 + hlen + off;
	unsigned char *buf = rt_malloc(total);
	for (int b = 0; b < 8; b++)
		buf[b] = (unsigned char)((uint64_t)hlen >> (8 * b));
	memcpy(buf + 8, json, jlen);
	memset(buf + 8 + jlen, ' ', hlen - jlen);
	free(json);
	unsigned char *p = buf + 8 + hlen;
	for (int i = 0; i < n; i++) {
		size_t bytes = (size_t)numel(t[i].rank, t[i].shape) * dtype_sizes[t[i].dtype];
		if (bytes)
			memcpy(p, t[i].data, bytes);
		p += bytes;
	}
	int rc = rt_write_file_atomic(path, buf, total);
	if (rc)
		fprintf(err, "sluice: %s: cannot write the checkpoint: %s\n", path,
			strerror(errno));
	free(buf);
	return rc;
}

struct rt_ckpt {
	char *path;
	unsigned char *file;
	size_t len;
	int n;
	struct rt_ckpt_tensor *t;
	int nm;
	struct rt_ckpt_meta *meta;
};

void rt_ckpt_free(struct rt_ckpt *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		free((char *)c->t[i].name);
	for (int i = 0; i < c->nm; i++) {
		free((char *)c->meta[i].key);
		free((char *)c->meta[i].value);
	}
	free(c->t);
	free(c->meta);
	free(c->file);
	free(c->path);
	free(c);
}

/* a JSON number that is a non-negative integer no larger than max */
static int json_uint(const cJSON *j, int64_t max, int64_t *out)
{
	if (!cJSON_IsNumber(j))
		return 0;
	double d = j->valuedouble;
	if (!(d >= 0.0) || d > (double)max || d != floor(d))
		return 0;
	*out = (int64_t)d;
	return 1;
}

/* Checks one tensor entry; on error fills why and returns -1. */
static int parse_entry(const cJSON *e, size_t data_len, struct rt_ckpt_tensor *t, char *why,
		       size_t nwhy)
{
	if (!cJSON_IsObject(e)) {
		snprintf(why, nwhy, "entry is not an object");
		return -1;
	}
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of)) {
		snprintf(why, nwhy, "entry lacks dtype, shape or data_offsets");
		return -1;
	}
	int k;
	for (k = 0; k < 4; k++)
		if (!strcmp(dt->valuestring, dtype_names[k]))
			break;
	if (k == 4) {
		snprintf(why, nwhy, "dtype '%.32s' is not one sluice reads (F32, I32, I64, U64)",
			 dt->valuestring);
		return -1;
	}
	t->dtype = (enum rt_ckpt_dtype)k;
	int rank = cJSON_GetArraySize(sh);
	if (rank > RT_CKPT_MAX_RANK) {
		snprintf(why, nwhy, "rank %d is more than %d", rank, RT_CKPT_MAX_RANK);
		return -1;
	}
	t->rank = rank;
	for (int d = 0; d < rank; d++)
		if (!json_uint(cJSON_GetArrayItem(sh, d), INT64_MAX / 2, &t->shape[d])) {
			snprintf(why, nwhy, "shape has a dimension that is not a non-negative integer");
			return -1;
		}
	int64_t b, e2;
	if (cJSON_GetArraySize(of) != 2 ||
	    !json_uint(cJSON_GetArrayItem(of, 0), (int64_t)data_len, &b) ||
	    !json_uint(cJSON_GetArrayItem(of, 1), (int64_t)data_len, &e2) || b > e2) {
		snprintf(why, nwhy,
			 "data_offsets are not [begin, end] within the %zu bytes of data "
			 "(truncated file?)", data_len);
		return -1;
	}
	int64_t ne = numel(rank, t->shape);
	if (ne < 0 || ne > INT64_MAX / 8 ||
	    (uint64_t)ne * dtype_sizes[k] != (uint64_t)(e2 - b)) {
		char s[128];
		shape_str(rank, t->shape, s, sizeof s);
		snprintf(why, nwhy, "%lld bytes of data do not hold a %s tensor of shape %s",
			 (long long)(e2 - b), dtype_names[k], s);
		return -1;
	}
	t->nbytes = (size_t)(e2 - b);
	t->data = (const void *)(intptr_t)b; /* made a pointer by the caller */
	return 0;
}

struct rt_ckpt *rt_ckpt_read(const char *path, FILE *err)
{
	size_t len;
	unsigned char *file = (unsigned char *)rt_read_file(path, &len);
	if (!file) {
		fprintf(err, "sluice: %s: cannot read the checkpoint: %s\n", path,
			strerror(errno));
		return NULL;
	}
	struct rt_ckpt *c = rt_calloc(1, sizeof *c);
	c->path = rt_strdup(path);
	c->file = file;
	c->len = len;
	char why[320] = "";
	cJSON *root = NULL;
	uint64_t hlen = 0;
	if (len < 8) {
		snprintf(why, sizeof why, "%zu bytes: too short for a safetensors file", len);
		goto fail;
	}
	for (int b = 0; b < 8; b++)
		hlen |= (uint64_t)file[b] << (8 * b);
	if (hlen < 2 || hlen > RT_CKPT_MAX_HEADER || hlen > len - 8) {
		snprintf(why, sizeof why,
			 "header length %llu does not fit the file's %zu bytes (not a safetensors "
			 "file, or truncated)", (unsigned long long)hlen, len);
		goto fail;
	}
	root = cJSON_ParseWithLength((const char *)file + 8, (size_t)hlen);
	if (!cJSON_IsObject(root)) {
		snprintf(why, sizeof why, "the header is not a JSON object (corrupt checkpoint)");
		goto fail;
	}
	size_t data_len = len - 8 - (size_t)hlen;
	const unsigned char *data = file + 8 + hlen;
	int count = cJSON_GetArraySize(root);
	c->t = rt_calloc((size_t)count, sizeof *c->t);
	for (const cJSON *e = root->child; e; e = e->next) {
		if (!strcmp(e->string, "__metadata__")) {
			if (!cJSON_IsObject(e)) {
				snprintf(why, sizeof why, "__metadata__ is not an object");
				goto fail;
			}
			c->meta = rt_calloc((size_t)cJSON_GetArraySize(e) + 1, sizeof *c->meta);
			for (const cJSON *m = e->child; m; m = m->next) {
				if (!cJSON_IsString(m)) {
					snprintf(why, sizeof why,
						 "__metadata__ value of '%.64s' is not a string",
						 m->string);
					goto fail;
				}
				c->meta[c->nm].key = rt_strdup(m->string);
				c->meta[c->nm].value = rt_strdup(m->valuestring);
				c->nm++;
			}
			continue;
		}
		struct rt_ckpt_tensor *t = &c->t[c->n];
		char w[200];
		if (parse_entry(e, data_len, t, w, sizeof w)) {
			snprintf(why, sizeof why, "tensor '%.64s': %s", e->string, w);
			goto fail;
		}
		t->data = data + (intptr_t)t->data;
		t->name = rt_strdup(e->string);
		c->n++;
	}
	cJSON_Delete(root);
	return c;
fail:
	fprintf(err, "sluice: %s: %s\n", path, why);
	cJSON_Delete(root);
	rt_ckpt_free(c);
	return NULL;
}

int rt_ckpt_count(const struct rt_ckpt *c)
{
	return c->n;
}

const struct rt_ckpt_tensor *rt_ckpt_tensor_at(const struct rt_ckpt *c, int i)
{
	return &c->t[i];
}

const struct rt_ckpt_tensor *rt_ckpt_find(const struct rt_ckpt *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->t[i].name, name))
			return &c->t[i];
	return NULL;
}

const char *rt_ckpt_meta_get(const struct rt_ckpt *c, const char *key)
{
	for (int i = 0; i < c->nm; i++)
		if (!strcmp(c->meta[i].key, key))
			return c->meta[i].value;
	return NULL;
}

int rt_ckpt_load(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		 int rank, const int64_t *shape, void *dst, FILE *err)
{
	const struct rt_ckpt_tensor *t = rt_ckpt_find(c, name);
	if (!t) {
		fprintf(err, "sluice: %s: the checkpoint has no tensor '%s' (a checkpoint of "
			"another model?)\n", c->path, name);
		return -1;
	}
	int same = t->dtype == dtype && t->rank == rank;
	for (int d = 0; same && d < rank; d++)
		same = t->shape[d] == shape[d];
	if (!same) {
		char a[128], b[128];
		shape_str(t->rank, t->shape, a, sizeof a);
		shape_str(rank, shape, b, sizeof b);
		fprintf(err, "sluice: %s: tensor '%s' is %s %s in the checkpoint but the model "
			"has %s %s\n", c->path, name, dtype_names[t->dtype], a, dtype_names[dtype], b);
		return -1;
	}
	if (t->nbytes)
		memcpy(dst, t->data, t->nbytes);
	return 0;
}
