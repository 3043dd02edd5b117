/* ckpt.c - safetensors writer and checked reader (see ckpt.h). */
#include "ckpt.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The JSON header of tensors t[0..n) laid out back to back, padded with spaces to a
 * multiple of 8 (safetensors' alignment); *data_bytes is the size of the data part. */
static char *header_json(const struct rt_ckpt_tensor *t, int n, const struct rt_ckpt_meta *meta,
			 int nm, size_t *hlen, size_t *data_bytes)
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
	*hlen = (jlen + 7) & ~(size_t)7;
	json = rt_realloc(json, *hlen + 1);
	memset(json + jlen, ' ', *hlen - jlen);
	json[*hlen] = 0;
	*data_bytes = off;
	return json;
}

/* Writes are cut in pieces of at most this size: a write of gigabytes at once is legal
 * but makes a failure late and a progress report impossible. */
#define WRITE_PIECE ((size_t)64 << 20)

/* One safetensors file from the tensors' own memory: the header, then each tensor's
 * bytes straight from its pointer, so a save needs no second copy of the model. */
static int write_one(const char *path, const struct rt_ckpt_tensor *t, int n,
		     const struct rt_ckpt_meta *meta, int nm, FILE *err)
{
	size_t hlen, data_bytes;
	char *json = header_json(t, n, meta, nm, &hlen, &data_bytes);
	unsigned char len8[8];
	for (int b = 0; b < 8; b++)
		len8[b] = (unsigned char)((uint64_t)hlen >> (8 * b));
	struct rt_afile f;
	int rc = rt_afile_open(&f, path);
	if (!rc)
		rc = rt_afile_write(&f, len8, 8) || rt_afile_write(&f, json, hlen) ? -1 : 0;
	free(json);
	for (int i = 0; !rc && i < n; i++) {
		size_t bytes = (size_t)numel(t[i].rank, t[i].shape) * dtype_sizes[t[i].dtype];
		const char *p = t[i].data;
		for (size_t o = 0; !rc && o < bytes; o += WRITE_PIECE)
			rc = rt_afile_write(&f, p + o, bytes - o < WRITE_PIECE ? bytes - o : WRITE_PIECE);
	}
	if (rc && f.path)
		rt_afile_abort(&f);
	else if (!rc)
		rc = rt_afile_commit(&f);
	if (rc)
		fprintf(err, "sluice: %s: cannot write the checkpoint: %s\n", path,
			strerror(errno));
	return rc;
}

int rt_ckpt_write(const char *path, const struct rt_ckpt_tensor *t, int n,
		  const struct rt_ckpt_meta *meta, int nm, FILE *err)
{
	return write_one(path, t, n, meta, nm, err);
}

/* --- sharded checkpoints: shards under fresh names, then the index --------------- */

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *s = rt_malloc(n);
	snprintf(s, n, "%s/%s", dir, name);
	return s;
}

static char *shard_name(const char *base, unsigned gen, int k, int n)
{
	char buf[64];
	snprintf(buf, sizeof buf, "-g%u-%05d-of-%05d.safetensors", gen, k + 1, n);
	size_t len = strlen(base) + strlen(buf) + 1;
	char *s = rt_malloc(len);
	snprintf(s, len, "%s%s", base, buf);
	return s;
}

/* The shard files an existing index names (its weight_map's values), or none. */
static int old_shards(const char *index, char ***names)
{
	*names = NULL;
	size_t len;
	char *text = rt_read_file(index, &len);
	if (!text)
		return 0;
	cJSON *root = cJSON_ParseWithLength(text, len);
	free(text);
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	int n = 0;
	for (const cJSON *e = cJSON_IsObject(wm) ? wm->child : NULL; e; e = e->next) {
		if (!cJSON_IsString(e) || strchr(e->valuestring, '/'))
			continue;
		int seen = 0;
		for (int i = 0; i < n && !seen; i++)
			seen = !strcmp((*names)[i], e->valuestring);
		if (!seen) {
			*names = rt_realloc(*names, sizeof **names * (size_t)(n + 1));
			(*names)[n++] = rt_strdup(e->valuestring);
		}
	}
	cJSON_Delete(root);
	return n;
}

int rt_ckpt_write_sharded(const char *dir, const char *base, const struct rt_ckpt_tensor *t,
			  int n, const struct rt_ckpt_meta *meta, int nm, size_t shard_bytes,
			  FILE *err)
{
	if (!shard_bytes)
		shard_bytes = RT_CKPT_SHARD_BYTES;
	if (rt_mkdir_p(dir)) {
		fprintf(err, "sluice: %s: cannot make the checkpoint directory: %s\n", dir,
			strerror(errno));
		return -1;
	}
	/* tensors in order, a new shard when the next one would pass shard_bytes */
	int *first = rt_calloc((size_t)n + 2, sizeof *first), n_shards = 0;
	size_t fill = 0, total = 0;
	for (int i = 0; i < n; i++) {
		size_t b = (size_t)numel(t[i].rank, t[i].shape) * dtype_sizes[t[i].dtype];
		if (i == 0 || fill + b > shard_bytes) {
			first[n_shards++] = i;
			fill = 0;
		}
		fill += b;
		total += b;
	}
	if (!n_shards)
		first[n_shards++] = 0;
	first[n_shards] = n;

	char *index = rt_malloc(strlen(dir) + strlen(base) + 32);
	sprintf(index, "%s/%s.safetensors.index.json", dir, base);
	char **old;
	int n_old = old_shards(index, &old);
	/* a generation whose names neither the committed index nor the disk holds */
	unsigned gen = 1;
	for (int clash = 1; clash; gen += clash) {
		clash = 0;
		char *probe = shard_name(base, gen, 0, n_shards);
		size_t plen = strlen(base) + 8;
		char *pre = rt_malloc(plen + 16);
		snprintf(pre, plen + 16, "%s-g%u-", base, gen);
		for (int i = 0; i < n_old && !clash; i++)
			clash = !strncmp(old[i], pre, strlen(pre));
		char *full = join(dir, probe);
		if (!clash && access(full, F_OK) == 0)
			clash = 1;
		free(full);
		free(pre);
		free(probe);
	}
	char **names = rt_calloc((size_t)n_shards, sizeof *names);
	int rc = 0, written = 0;
	for (int k = 0; k < n_shards && !rc; k++) {
		names[k] = shard_name(base, gen, k, n_shards);
		char *path = join(dir, names[k]);
		rc = write_one(path, t + first[k], first[k + 1] - first[k], meta, nm, err);
		free(path);
		written += !rc;
	}
	if (!rc) {
		cJSON *root = cJSON_CreateObject();
		cJSON *md = cJSON_AddObjectToObject(root, "metadata");
		for (int i = 0; i < nm; i++)
			cJSON_AddStringToObject(md, meta[i].key, meta[i].value);
		cJSON_AddNumberToObject(md, "total_size", (double)total);
		cJSON *wm = cJSON_AddObjectToObject(root, "weight_map");
		for (int k = 0; k < n_shards; k++)
			for (int i = first[k]; i < first[k + 1]; i++)
				cJSON_AddStringToObject(wm, t[i].name, names[k]);
		char *json = cJSON_Print(root);
		cJSON_Delete(root);
		RT_ASSERT(json);
		/* the commit point: before it the old index names the old shards */
		rc = rt_write_file_atomic(index, json, strlen(json));
		if (rc)
			fprintf(err, "sluice: %s: cannot write the checkpoint index: %s\n", index,
				strerror(errno));
		free(json);
	}
	if (rc) {
		/* the old checkpoint stays whole: only this save's shards go */
		for (int k = 0; k < written; k++) {
			char *path = join(dir, names[k]);
			unlink(path);
			free(path);
		}
	} else {
		for (int i = 0; i < n_old; i++) {
			int kept = 0;
			for (int k = 0; k < n_shards && !kept; k++)
				kept = !strcmp(old[i], names[k]);
			if (!kept) {
				char *path = join(dir, old[i]);
				unlink(path);
				free(path);
			}
		}
		if (n_old)
			rt_fsync_dir_of(index);
	}
	for (int i = 0; i < n_old; i++)
		free(old[i]);
	free(old);
	for (int k = 0; k < n_shards; k++)
		free(names[k]);
	free(names);
	free(index);
	free(first);
	return rc;
}

/* --- reading ------------------------------------------------------------------- */

struct ckfile {
	char *path;
	void *map;
	size_t len;
};

struct entry {
	struct rt_ckpt_tensor t;
	int file;               /* which of files[] holds it */
};

struct rt_ckpt {
	char *path;             /* what was opened: a file or an index */
	int n_files;
	struct ckfile *files;
	int n;
	struct entry *e;        /* sorted by name once read */
	int nm;
	struct rt_ckpt_meta *meta;
};

void rt_ckpt_free(struct rt_ckpt *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		free((char *)c->e[i].t.name);
	for (int i = 0; i < c->nm; i++) {
		free((char *)c->meta[i].key);
		free((char *)c->meta[i].value);
	}
	for (int f = 0; f < c->n_files; f++) {
		if (c->files[f].map)
			munmap(c->files[f].map, c->files[f].len);
		free(c->files[f].path);
	}
	free(c->files);
	free(c->e);
	free(c->meta);
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

static void add_meta(struct rt_ckpt *c, const char *key, const char *value)
{
	for (int i = 0; i < c->nm; i++)
		if (!strcmp(c->meta[i].key, key))
			return; /* the first (the index's) wins */
	c->meta = rt_realloc(c->meta, sizeof *c->meta * (size_t)(c->nm + 1));
	c->meta[c->nm].key = rt_strdup(key);
	c->meta[c->nm].value = rt_strdup(value);
	c->nm++;
}

/* Map one safetensors file and add its tensors to c.  The file is mapped, not read:
 * a tensor's pages come from the disk when loaded, so a rank that loads a slice reads
 * only that slice, and a reader needs no second copy of the checkpoint.  0, or -1
 * with the reason in why. */
static int add_file(struct rt_ckpt *c, const char *path, char *why, size_t nwhy)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		snprintf(why, nwhy, "cannot read the checkpoint: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(why, nwhy, "not a regular file");
		return -1;
	}
	size_t len = (size_t)st.st_size;
	void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(why, nwhy, "cannot map the checkpoint: %s", strerror(errno));
		return -1;
	}
	int fi = c->n_files++;
	c->files = rt_realloc(c->files, sizeof *c->files * (size_t)c->n_files);
	c->files[fi] = (struct ckfile){ .path = rt_strdup(path), .map = map, .len = len };
	const unsigned char *file = map;
	cJSON *root = NULL;
	uint64_t hlen = 0;
	if (len < 8) {
		snprintf(why, nwhy, "%zu bytes: too short for a safetensors file", len);
		goto fail;
	}
	for (int b = 0; b < 8; b++)
		hlen |= (uint64_t)file[b] << (8 * b);
	if (hlen < 2 || hlen > RT_CKPT_MAX_HEADER || hlen > len - 8) {
		snprintf(why, nwhy,
			 "header length %llu does not fit the file's %zu bytes (not a safetensors "
			 "file, or truncated)", (unsigned long long)hlen, len);
		goto fail;
	}
	root = cJSON_ParseWithLength((const char *)file + 8, (size_t)hlen);
	if (!cJSON_IsObject(root)) {
		snprintf(why, nwhy, "the header is not a JSON object (corrupt checkpoint)");
		goto fail;
	}
	size_t data_len = len - 8 - (size_t)hlen;
	const unsigned char *data = file + 8 + hlen;
	int count = cJSON_GetArraySize(root);
	c->e = rt_realloc(c->e, sizeof *c->e * (size_t)(c->n + count + 1));
	for (const cJSON *e = root->child; e; e = e->next) {
		if (!strcmp(e->string, "__metadata__")) {
			if (!cJSON_IsObject(e)) {
				snprintf(why, nwhy, "__metadata__ is not an object");
				goto fail;
			}
			for (const cJSON *m = e->child; m; m = m->next) {
				if (!cJSON_IsString(m)) {
					snprintf(why, nwhy,
						 "__metadata__ value of '%.64s' is not a string",
						 m->string);
					goto fail;
				}
				add_meta(c, m->string, m->valuestring);
			}
			continue;
		}
		struct rt_ckpt_tensor *t = &c->e[c->n].t;
		memset(&c->e[c->n], 0, sizeof c->e[c->n]);
		char w[200];
		if (parse_entry(e, data_len, t, w, sizeof w)) {
			snprintf(why, nwhy, "tensor '%.64s': %s", e->string, w);
			goto fail;
		}
		t->data = data + (intptr_t)t->data;
		t->name = rt_strdup(e->string);
		c->e[c->n].file = fi;
		c->n++;
	}
	cJSON_Delete(root);
	return 0;
fail:
	cJSON_Delete(root);
	return -1;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->t.name, ((const struct entry *)b)->t.name);
}

/* c->e must be sorted */
static const struct entry *find_entry(const struct rt_ckpt *c, const char *name)
{
	struct entry key = { .t = { .name = name } };
	return bsearch(&key, c->e, (size_t)c->n, sizeof *c->e, by_name);
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

/* HF's sharded layout: {"metadata": {...}, "weight_map": {tensor: shard file}}, the
 * shards beside the index.  Every shard is checked as a single file is, and every
 * tensor the map names must be in the shard it names. */
static int add_index(struct rt_ckpt *c, const char *path, char *why, size_t nwhy)
{
	size_t len;
	char *text = rt_read_file(path, &len);
	if (!text) {
		snprintf(why, nwhy, "cannot read the checkpoint index: %s", strerror(errno));
		return -1;
	}
	cJSON *root = cJSON_ParseWithLength(text, len);
	free(text);
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	const cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	int rc = -1;
	char *dir = rt_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	if (!cJSON_IsObject(wm)) {
		snprintf(why, nwhy, "not a checkpoint index (a JSON object with a \"weight_map\" "
			 "object, as Hugging Face's model.safetensors.index.json)");
		goto done;
	}
	for (const cJSON *m = cJSON_IsObject(md) ? md->child : NULL; m; m = m->next)
		if (cJSON_IsString(m))
			add_meta(c, m->string, m->valuestring); /* total_size is a number */
	for (const cJSON *e = wm->child; e; e = e->next) {
		if (!cJSON_IsString(e) || !*e->valuestring || strchr(e->valuestring, '/')) {
			snprintf(why, nwhy, "weight_map entry '%.64s' is not a file name beside the "
				 "index", e->string);
			goto done;
		}
		char *shard = slash ? join(dir, e->valuestring) : rt_strdup(e->valuestring);
		int fi = -1;
		for (int f = 0; f < c->n_files && fi < 0; f++)
			if (!strcmp(c->files[f].path, shard))
				fi = f;
		if (fi < 0) {
			char w[240];
			if (add_file(c, shard, w, sizeof w)) {
				snprintf(why, nwhy, "shard %.100s (holding '%.64s'): %.200s", e->valuestring,
					 e->string, w);
				free(shard);
				goto done;
			}
			fi = c->n_files - 1;
		}
		free(shard);
	}
	qsort(c->e, (size_t)c->n, sizeof *c->e, by_name);
	for (const cJSON *e = wm->child; e; e = e->next) {
		const struct entry *t = find_entry(c, e->string);
		char *shard = slash ? join(dir, e->valuestring) : rt_strdup(e->valuestring);
		int same = t && !strcmp(c->files[t->file].path, shard);
		free(shard);
		if (!same) {
			snprintf(why, nwhy, "the index puts tensor '%.64s' in %.120s, which does not "
				 "hold it", e->string, e->valuestring);
			goto done;
		}
	}
	rc = 0;
done:
	free(dir);
	cJSON_Delete(root);
	return rc;
}

/* A directory holds one index (a sharded checkpoint) or one .safetensors file. */
static char *pick_in_dir(const char *dir, char *why, size_t nwhy)
{
	DIR *d = opendir(dir);
	if (!d) {
		snprintf(why, nwhy, "cannot read the directory: %s", strerror(errno));
		return NULL;
	}
	char *index = NULL, *single = NULL;
	int n_index = 0, n_single = 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (ends_with(de->d_name, ".safetensors.index.json") && !n_index++)
			index = rt_strdup(de->d_name);
		else if (ends_with(de->d_name, ".safetensors") && !n_single++)
			single = rt_strdup(de->d_name);
	}
	closedir(d);
	char *pick = NULL;
	if (n_index == 1)
		pick = join(dir, index);
	else if (n_index > 1)
		snprintf(why, nwhy, "%d checkpoint indexes (*.safetensors.index.json): name one",
			 n_index);
	else if (n_single == 1)
		pick = join(dir, single);
	else if (n_single > 1)
		snprintf(why, nwhy, "%d .safetensors files and no index: name one", n_single);
	else
		snprintf(why, nwhy, "no checkpoint here (no .safetensors file or "
			 "*.safetensors.index.json)");
	free(index);
	free(single);
	return pick;
}


struct rt_ckpt *rt_ckpt_read(const char *path, FILE *err)
{
	struct rt_ckpt *c = rt_calloc(1, sizeof *c);
	char why[400] = "";
	struct stat st;
	int rc;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		c->path = pick_in_dir(path, why, sizeof why);
		if (!c->path) {
			c->path = rt_strdup(path);
			goto fail;
		}
	} else {
		c->path = rt_strdup(path);
	}
	if (ends_with(c->path, ".json"))
		rc = add_index(c, c->path, why, sizeof why);
	else
		rc = add_file(c, c->path, why, sizeof why);
	if (rc)
		goto fail;
	qsort(c->e, (size_t)c->n, sizeof *c->e, by_name);
	for (int i = 1; i < c->n; i++)
		if (!strcmp(c->e[i - 1].t.name, c->e[i].t.name)) {
			snprintf(why, sizeof why, "tensor '%.64s' is in more than one shard",
				 c->e[i].t.name);
			goto fail;
		}
	return c;
fail:
	fprintf(err, "sluice: %s: %s\n", c->path, why);
	rt_ckpt_free(c);
	return NULL;
}

int rt_ckpt_count(const struct rt_ckpt *c)
{
	return c->n;
}

const struct rt_ckpt_tensor *rt_ckpt_tensor_at(const struct rt_ckpt *c, int i)
{
	return &c->e[i].t;
}

const struct rt_ckpt_tensor *rt_ckpt_find(const struct rt_ckpt *c, const char *name)
{
	const struct entry *e = find_entry(c, name);
	return e ? &e->t : NULL;
}

const char *rt_ckpt_meta_get(const struct rt_ckpt *c, const char *key)
{
	for (int i = 0; i < c->nm; i++)
		if (!strcmp(c->meta[i].key, key))
			return c->meta[i].value;
	return NULL;
}

/* the tensor `name` with this dtype and shape, or NULL after a message */
static const struct rt_ckpt_tensor *find_checked(const struct rt_ckpt *c, const char *name,
						 enum rt_ckpt_dtype dtype, int rank,
						 const int64_t *shape, FILE *err)
{
	const struct rt_ckpt_tensor *t = rt_ckpt_find(c, name);
	if (!t) {
		fprintf(err, "sluice: %s: the checkpoint has no tensor '%s' (a checkpoint of "
			"another model?)\n", c->path, name);
		return NULL;
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
		return NULL;
	}
	return t;
}

int rt_ckpt_load(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		 int rank, const int64_t *shape, void *dst, FILE *err)
{
	const struct rt_ckpt_tensor *t = find_checked(c, name, dtype, rank, shape, err);
	if (!t)
		return -1;
	if (t->nbytes)
		memcpy(dst, t->data, t->nbytes);
	return 0;
}

int rt_ckpt_load_rows(const struct rt_ckpt *c, const char *name, enum rt_ckpt_dtype dtype,
		      int rank, const int64_t *shape, int64_t r0, int64_t r1, void *dst,
		      FILE *err)
{
	const struct rt_ckpt_tensor *t = find_checked(c, name, dtype, rank, shape, err);
	if (!t)
		return -1;
	if (rank < 1 || r0 < 0 || r1 < r0 || r1 > shape[0]) {
		fprintf(err, "sluice: %s: rows [%lld, %lld) of tensor '%s' are not within its "
			"first dimension of %lld\n", c->path, (long long)r0, (long long)r1, name,
			(long long)(rank ? shape[0] : 0));
		return -1;
	}
	size_t row = shape[0] ? t->nbytes / (size_t)shape[0] : 0;
	if (r1 > r0)
		memcpy(dst, (const char *)t->data + (size_t)r0 * row, (size_t)(r1 - r0) * row);
	return 0;
}
