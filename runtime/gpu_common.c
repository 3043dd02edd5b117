/* gpu_common.c - the parts of the GPU layer that need no CUDA: the kernel cache on
 * disk (SHA-256 keys, atomic entries) and the checks of matrix-product arguments.
 * Built in every configuration, so that CI tests them on machines without a GPU.
 *
 * A cache entry is one file named by its key:
 *   "SLKC" | u32 format version | u64 payload length | 64-char key | SHA-256 of the
 *   payload | payload
 * and is read back only when every field agrees, so a damaged or foreign file is a
 * miss, never a wrong kernel. */
#include "gpu.h"
#include "rt.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- SHA-256 (FIPS 180-4) ---------------------------------------------------- */

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	unsigned char buf[64];
	size_t n;
};

static uint32_t ror(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }

static void sha_block(struct sha256 *s, const unsigned char *p)
{
	uint32_t w[64], v[8];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	memcpy(v, s->h, sizeof v);
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
			      ((v[4] & v[5]) ^ (~v[4] & v[6])) + sha_k[i] + w[i];
		uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
			      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
		memmove(v + 1, v, 7 * sizeof v[0]);
		v[4] += t1;
		v[0] = t1 + t2;
	}
	for (int i = 0; i < 8; i++)
		s->h[i] += v[i];
}

static void sha_init(struct sha256 *s)
{
	static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(s->h, h0, sizeof h0);
	s->len = 0;
	s->n = 0;
}

static void sha_update(struct sha256 *s, const void *data, size_t len)
{
	const unsigned char *p = data;
	s->len += len;
	while (len) {
		size_t k = 64 - s->n < len ? 64 - s->n : len;
		memcpy(s->buf + s->n, p, k);
		s->n += k;
		p += k;
		len -= k;
		if (s->n == 64) {
			sha_block(s, s->buf);
			s->n = 0;
		}
	}
}

static void sha_final(struct sha256 *s, unsigned char out[32])
{
	uint64_t bits = s->len * 8;
	unsigned char pad = 0x80, zero = 0, lenb[8];
	sha_update(s, &pad, 1);
	while (s->n != 56)
		sha_update(s, &zero, 1);
	for (int i = 0; i < 8; i++)
		lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
	sha_update(s, lenb, 8);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
}

void rt_sha256(const void *data, size_t len, unsigned char out[32])
{
	struct sha256 s;
	sha_init(&s);
	sha_update(&s, data, len);
	sha_final(&s, out);
}

/* --- cache keys ------------------------------------------------------------------- */

/* Each field goes in with its length first, so no two different inputs hash the
 * same bytes ("ab","c" and "a","bc" differ). */
static void sha_field(struct sha256 *s, const char *tag, const void *data, size_t len)
{
	unsigned char n[8]; /* little-endian whatever the machine: keys are portable */
	for (int i = 0; i < 8; i++)
		n[i] = (unsigned char)((uint64_t)len >> (8 * i));
	sha_update(s, tag, strlen(tag) + 1);
	sha_update(s, n, sizeof n);
	sha_update(s, data, len);
}

void rt_kcache_key(char key[RT_KCACHE_KEY_LEN + 1], const char *source,
		   const char *const *options, int n_options, int nvrtc_version,
		   const char *arch)
{
	struct sha256 s;
	unsigned char h[32];
	char ver[32];
	sha_init(&s);
	sha_field(&s, "sluice-kcache-v1", "", 0);
	snprintf(ver, sizeof ver, "%d", nvrtc_version);
	sha_field(&s, "nvrtc", ver, strlen(ver));
	sha_field(&s, "arch", arch, strlen(arch));
	for (int i = 0; i < n_options; i++)
		sha_field(&s, "opt", options[i], strlen(options[i]));
	sha_field(&s, "src", source, strlen(source));
	sha_final(&s, h);
	for (int i = 0; i < 32; i++)
		snprintf(key + 2 * i, 3, "%02x", h[i]);
}

/* --- the cache directory --------------------------------------------------------- */

static int mkdir_p(const char *path)
{
	char *p = rt_strdup(path);
	for (char *q = p + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = 0;
		if (mkdir(p, 0755) && errno != EEXIST) {
			free(p);
			return -1;
		}
		*q = '/';
	}
	int r = mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
	free(p);
	return r;
}

static char kcache_dir_buf[PATH_MAX];

const char *rt_kcache_dir(void)
{
	const char *env = getenv("SLUICE_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	if (env && *env)
		snprintf(kcache_dir_buf, sizeof kcache_dir_buf, "%s", env);
	else if (xdg && *xdg)
		snprintf(kcache_dir_buf, sizeof kcache_dir_buf, "%s/sluice/kernels", xdg);
	else if (home && *home)
		snprintf(kcache_dir_buf, sizeof kcache_dir_buf, "%s/.cache/sluice/kernels", home);
	else {
		fprintf(stderr, "sluice: no kernel cache: neither SLUICE_CACHE_DIR nor HOME is set\n");
		return NULL;
	}
	if (mkdir_p(kcache_dir_buf)) {
		fprintf(stderr, "sluice: cannot create the kernel cache %s: %s\n",
			kcache_dir_buf, strerror(errno));
		return NULL;
	}
	return kcache_dir_buf;
}

/* --- entries ------------------------------------------------------------------------ */

#define KC_MAGIC "SLKC"
#define KC_VERSION 1u
#define KC_HEADER (4 + 4 + 8 + RT_KCACHE_KEY_LEN + 32)

static int entry_path(char *buf, size_t n, const char *key)
{
	const char *dir = rt_kcache_dir();
	if (!dir || strlen(key) != RT_KCACHE_KEY_LEN)
		return -1;
	return snprintf(buf, n, "%s/%s.cubin", dir, key) < (int)n ? 0 : -1;
}

void *rt_kcache_load(const char *key, size_t *len)
{
	char path[PATH_MAX];
	if (entry_path(path, sizeof path, key))
		return NULL;
	size_t n;
	unsigned char *f = (unsigned char *)rt_read_file(path, &n);
	if (!f)
		return NULL;
	uint32_t ver;
	uint64_t plen;
	unsigned char h[32];
	if (n < KC_HEADER || memcmp(f, KC_MAGIC, 4))
		goto bad;
	memcpy(&ver, f + 4, 4);
	memcpy(&plen, f + 8, 8);
	if (ver != KC_VERSION || plen != n - KC_HEADER ||
	    memcmp(f + 16, key, RT_KCACHE_KEY_LEN))
		goto bad;
	rt_sha256(f + KC_HEADER, (size_t)plen, h);
	if (memcmp(h, f + 16 + RT_KCACHE_KEY_LEN, 32))
		goto bad;
	void *out = rt_malloc((size_t)plen ? (size_t)plen : 1);
	memcpy(out, f + KC_HEADER, (size_t)plen);
	free(f);
	*len = (size_t)plen;
	return out;
bad:
	free(f);
	return NULL;
}

int rt_kcache_store(const char *key, const void *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX + 16];
	if (entry_path(path, sizeof path, key))
		return -1;
	/* a temp name unique across processes and threads: mkstemp */
	snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return -1;
	unsigned char hdr[KC_HEADER];
	uint32_t ver = KC_VERSION;
	uint64_t plen = len;
	memcpy(hdr, KC_MAGIC, 4);
	memcpy(hdr + 4, &ver, 4);
	memcpy(hdr + 8, &plen, 8);
	memcpy(hdr + 16, key, RT_KCACHE_KEY_LEN);
	rt_sha256(data, len, hdr + 16 + RT_KCACHE_KEY_LEN);
	FILE *f = fdopen(fd, "wb");
	if (!f) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	int bad = fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr ||
		  fwrite(data, 1, len, f) != len || fflush(f) || fsync(fileno(f));
	if (fclose(f))
		bad = 1;
	/* mkstemp makes the file 0600; other users of a shared cache may read it */
	if (!bad && chmod(tmp, 0644))
		bad = 1;
	if (bad || rename(tmp, path)) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* --- matrix-product arguments ------------------------------------------------------ */

const char *rt_gemm_mode_name(enum rt_gemm_mode m)
{
	switch (m) {
	case RT_GEMM_BF16: return "bf16";
	case RT_GEMM_FP8: return "fp8";
	case RT_GEMM_FP8_BLOCK: return "fp8-block";
	case RT_GEMM_F32: return "f32";
	case RT_GEMM_F16: return "f16";
	case RT_GEMM_BF16_F32OUT: return "bf16-f32out";
	case RT_GEMM_FP8_VEC: return "fp8-vec";
	case RT_GEMM_FP8_BLOCK_F32: return "fp8-block-f32out";
	}
	return "?";
}

size_t rt_gemm_in_bytes(enum rt_gemm_mode m)
{
	return m == RT_GEMM_F32 ? 4
	       : m == RT_GEMM_FP8 || m == RT_GEMM_FP8_BLOCK || m == RT_GEMM_FP8_VEC ||
		 m == RT_GEMM_FP8_BLOCK_F32 ? 1 : 2;
}

size_t rt_gemm_out_bytes(enum rt_gemm_mode m)
{
	return m == RT_GEMM_F32 || m == RT_GEMM_BF16_F32OUT || m == RT_GEMM_FP8_VEC ||
	       m == RT_GEMM_FP8_BLOCK_F32 ? 4 : 2;
}

int rt_gemm_block_scale_stride(int k)
{
	return (k / 128 + 3) / 4 * 4;
}

const char *rt_gemm_check_args(const struct rt_gemm_args *a)
{
	if (a->m <= 0 || a->n <= 0 || a->k <= 0)
		return "M, N and K must be positive";
	if ((unsigned)a->mode > RT_GEMM_FP8_BLOCK_F32)
		return "unknown GEMM mode";
	if (!a->a || !a->b || !a->d)
		return "A, B and D must be device addresses";
	int block = a->mode == RT_GEMM_FP8_BLOCK || a->mode == RT_GEMM_FP8_VEC ||
		    a->mode == RT_GEMM_FP8_BLOCK_F32;
	int fp8 = a->mode == RT_GEMM_FP8 || block;
	int packed = !a->trans_a && !a->trans_b && !a->lda && !a->ldb && !a->ldd && a->batch <= 1;
	if (fp8) {
		if (!packed)
			return "fp8 GEMMs take the packed TN form only";
		/* cuBLASLt's fp8 kernels want 16-byte aligned rows: K a multiple of 16 */
		if (a->k % 16 || a->n % 16)
			return "fp8 GEMMs need K and N to be multiples of 16";
		if (block && a->k % 128)
			return "block-scaled fp8 needs K to be a multiple of 128";
		if (!a->a_scale || !a->b_scale)
			return "fp8 GEMMs need a_scale and b_scale";
		if (a->a % 16 || a->b % 16 || a->d % 16)
			return "A, B and D must be 16-byte aligned";
		return NULL;
	}
	size_t ei = rt_gemm_in_bytes(a->mode), eo = rt_gemm_out_bytes(a->mode);
	if (a->a % ei || a->b % ei || a->d % eo)
		return "A, B and D must be aligned to their element";
	/* leading dimensions: at least a row (a column when transposed) */
	int64_t m = a->m, n = a->n, k = a->k;
	if ((a->lda && a->lda < (a->trans_a ? m : k)) || (a->ldb && a->ldb < (a->trans_b ? n : k)) ||
	    (a->ldd && a->ldd < n))
		return "a leading dimension is shorter than its rows";
	if (a->batch < 0 || (a->batch > 1 && (!a->stride_a || !a->stride_b || !a->stride_d)))
		return "a batch needs non-zero strides";
	return NULL;
}
