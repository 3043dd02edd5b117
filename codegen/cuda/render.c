/* render.c - kernel IR to CUDA C, compiled at run time by NVRTC (runtime/cuda/nvrtc.c).
 *
 * What is rendered: every kernel of a plan (codegen/lower.c, planned for
 * cg_target_cuda) becomes one `extern "C" __global__` function named as the kernel,
 * its buffers its parameters in order (__restrict__, const when only read: the
 * buffers of a kernel never overlap).  That covers the fused elementwise chains, the
 * norms (a mean square and its rsqrt, then the scaling), softmax and its backward,
 * cross entropy (the row log-sum-exp) and its backward, and the gathers, routing and
 * MoE permutation kernels.  The launch shape comes from the kernel (kir.h):
 *   - a point per thread: p = blockIdx.x * T + threadIdx.x, grid ceil(extent / T),
 *     blocks of T threads (CG_CUDA_THREADS unless the kernel says), p past the extent
 *     returns;
 *   - a point per block (rows): p = blockIdx.x, grid = extent.  Spread loops stride
 *     by T from threadIdx.x; a spread reduction is each thread's strided partial,
 *     reduced across each warp with __shfl_xor_sync, the warps' results through a
 *     __shared__ array of 32, and once more across a warp, so every thread holds the
 *     total (sl_block_reduce below); stores outside spread loops are thread 0's.
 * Arithmetic is in the kernel IR's types: f32 accumulates in f32, the f64 sums of
 * cross entropy's mean in double.  bf16 and f16 buffers hold the 16 bits of the
 * format (sl_bf16, sl_f16: unsigned short, laid out as __nv_bfloat16 and __half):
 * loads widen to f32 exactly, stores round to nearest even with the hardware's cvt.rn
 * (PTX, sm_80 and later).  The conversions are written out rather than taken from
 * <cuda_bf16.h>, which NVRTC does not find without the toolkit's include path and
 * which costs compile time.  Indices are 64-bit
 * (long long) as in the kernel IR.  exp, log and the rest are CUDA's accurate expf,
 * logf, ... (not the __expf intrinsics); unlike the LLVM renderer's expf, expf of a
 * very negative argument gives 0, not e^-87.  Reductions are hoisted into statements
 * ahead of the statement that uses them, in the order the expression reads them.
 *
 * What is left to the GPU backend: the library steps of a plan (MATMUL through
 * cuBLASLt, the grouped GEMMs and their weight gradient, attention and its backward
 * as hand-written kernels), listed by cg_cuda_render_plan but not generated;
 * placing the buffers in the device arena, building the modules (rt_module_build),
 * launching the kernels in the steps' order, and the communication ops.  Not done
 * here on purpose: vectorised (128-bit) loads, 32-bit index arithmetic where the
 * extents allow it, and tiling a row through shared memory; the kernel IR can say all
 * of them (shared arrays, barriers), the lowering does not ask for them yet. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "runtime/rt.h"

const struct cg_target cg_target_cuda = {
	.name = "the CUDA backend", .half_storage = 1, .block_threads = 256, .fp8_storage = 1,
};

/* --- a growing string ------------------------------------------------------------ */

struct str {
	char *s;
	size_t n, cap;
};

static void sput(struct str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sput(struct str *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	RT_ASSERT(len >= 0);
	if (b->n + (size_t)len + 1 > b->cap) {
		b->cap = (b->n + (size_t)len + 1) * 2;
		b->s = rt_realloc(b->s, b->cap);
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, (size_t)len + 1, fmt, ap);
	va_end(ap);
	b->n += (size_t)len;
}

/* --- kernels --------------------------------------------------------------------- */

struct cw {
	struct str *out;           /* the kernel's body */
	const struct kir_kernel *k;
	int block;                 /* a block kernel */
	int threads;
	int depth;
	int in_spread;             /* inside a spread loop or reduction */
	int n_tmp;
	int red_f32, red_f64;      /* the kernel needs the shared arrays of a reduction */
	int *half;                 /* the unit converts bf16 ([0]) / f16 ([1]) / f8 ([2]) */
	int uses_p;
};

static const char *ctype(enum kir_type t)
{
	switch (t) {
	case KIR_F32: return "float";
	case KIR_F64: return "double";
	case KIR_I32: return "int";
	case KIR_I64: return "long long";
	case KIR_BOOL: return "bool";
	case KIR_BF16: return "sl_bf16";
	case KIR_F16: return "sl_f16";
	case KIR_F8E4M3: case KIR_F8E5M2: return "sl_f8";
	}
	RT_BUG("kir: bad type %d", (int)t);
}

/* which prelude a storage type needs: 0 bf16, 1 f16, 2 f8 */
static int half_index(enum kir_type t)
{
	return t == KIR_BF16 ? 0 : t == KIR_F16 ? 1 : 2;
}

static int is_narrow(enum kir_type t)
{
	return t == KIR_BF16 || t == KIR_F16 || t == KIR_F8E4M3 || t == KIR_F8E5M2;
}

static void indent(struct cw *w)
{
	for (int i = 0; i < w->depth; i++)
		sput(w->out, "\t");
}

static void var_name(struct cw *w, struct str *b, int v)
{
	if (v == 0)
		sput(b, "p"), w->uses_p = 1;
	else
		sput(b, "%s%d", w->k->vars[v].name, v);
}

static void fconst(struct str *b, enum kir_type t, double v)
{
	int f32 = t == KIR_F32;
	if (isnan(v)) {
		sput(b, f32 ? "__int_as_float(0x7fc00000)" : "__longlong_as_double(0x7ff8000000000000LL)");
		return;
	}
	if (isinf(v)) {
		if (f32)
			sput(b, "__int_as_float(%s)", v < 0 ? "0xff800000" : "0x7f800000");
		else
			sput(b, "__longlong_as_double(%s)", v < 0 ? "0xfff0000000000000LL" : "0x7ff0000000000000LL");
		return;
	}
	char num[40];
	snprintf(num, sizeof num, f32 ? "%.9g" : "%.17g", f32 ? (double)(float)v : v);
	int plain = !strpbrk(num, ".e");
	sput(b, "%s%s%s", num, plain ? ".0" : "", f32 ? "f" : "");
}

static const char *math_fn(enum kir_op op)
{
	switch (op) {
	case KIR_EXP: return "exp";
	case KIR_LOG: return "log";
	case KIR_SQRT: return "sqrt";
	case KIR_TANH: return "tanh";
	case KIR_SIN: return "sin";
	case KIR_COS: return "cos";
	case KIR_POW: return "pow";
	case KIR_REM: return "fmod";
	default: return NULL;
	}
}

static void expr(struct cw *w, struct str *b, const struct kir_expr *e);

/* a load from storage of type t, as its value */
static void load(struct cw *w, struct str *b, enum kir_type t, const char *name,
		 const struct kir_expr *idx)
{
	const char *widen = t == KIR_BF16 ? "sl_bf16_to_f32(" : t == KIR_F16 ? "sl_f16_to_f32("
			    : t == KIR_F8E4M3 ? "sl_e4m3_to_f32(" : t == KIR_F8E5M2 ? "sl_e5m2_to_f32(" : "";
	if (*widen)
		w->half[half_index(t)] = 1;
	sput(b, "%s%s[", widen, name);
	expr(w, b, idx);
	sput(b, "]%s", *widen ? ")" : "");
}

/* a reduction: statements ahead of the current one; the expression is its result */
static void reduce(struct cw *w, struct str *b, const struct kir_expr *e)
{
	int spread = e->spread;
	if (spread && (!w->block || w->in_spread))
		RT_BUG("cuda: kernel %s: a spread reduction %s", w->k->name,
		       w->block ? "inside a spread loop" : "in a point-per-thread kernel");
	int t = w->n_tmp++, mx = e->red == KIR_RED_MAX;
	struct str ident = { 0 }, lo = { 0 }, hi = { 0 }, v = { 0 }, idx = { 0 };
	fconst(&ident, e->type, mx ? -INFINITY : 0.0);
	expr(w, &lo, e->a);
	expr(w, &hi, e->b);
	var_name(w, &idx, e->var);
	indent(w);
	sput(w->out, "%s sl_r%d = %s;\n", ctype(e->type), t, ident.s);
	indent(w);
	if (spread)
		sput(w->out, "for (long long %s = %s%s; %s < %s; %s += %d) {\n", idx.s,
		     strcmp(lo.s, "0") ? lo.s : "", strcmp(lo.s, "0") ? " + threadIdx.x" : "threadIdx.x",
		     idx.s, hi.s, idx.s, w->threads);
	else
		sput(w->out, "for (long long %s = %s; %s < %s; %s++) {\n", idx.s, lo.s, idx.s, hi.s,
		     idx.s);
	w->depth++;
	int was = w->in_spread;
	w->in_spread |= spread;
	expr(w, &v, e->c);
	w->in_spread = was;
	indent(w);
	if (mx)
		sput(w->out, "sl_r%d = sl_max<%s>(%s, sl_r%d);\n", t, ctype(e->type), v.s, t);
	else
		sput(w->out, "sl_r%d += %s;\n", t, v.s);
	w->depth--;
	indent(w);
	sput(w->out, "}\n");
	if (spread) {
		int f32 = e->type == KIR_F32;
		*(f32 ? &w->red_f32 : &w->red_f64) = 1;
		indent(w);
		sput(w->out, "sl_r%d = sl_block_reduce<%s, %s>(sl_r%d, sl_red_%s, %s);\n", t,
		     ctype(e->type), mx ? "true" : "false", t, f32 ? "f32" : "f64", ident.s);
	}
	sput(b, "sl_r%d", t);
	free(ident.s);
	free(lo.s);
	free(hi.s);
	free(v.s);
	free(idx.s);
}

static void expr(struct cw *w, struct str *b, const struct kir_expr *e)
{
	int fl = kir_type_is_float(e->type);
	switch (e->op) {
	case KIR_CONST:
		if (fl)
			fconst(b, e->type, e->f);
		else if (e->type == KIR_BOOL)
			sput(b, e->i ? "true" : "false");
		else if (e->type == KIR_I64 && (e->i > INT32_MAX || e->i < INT32_MIN))
			sput(b, "%lldLL", (long long)e->i);
		else
			sput(b, "%lld", (long long)e->i);
		return;
	case KIR_VAR:
		var_name(w, b, e->var);
		return;
	case KIR_LOAD:
		load(w, b, w->k->bufs[e->buf].type, w->k->bufs[e->buf].name, e->a);
		return;
	case KIR_SLOAD:
		load(w, b, w->k->shared[e->buf].type, w->k->shared[e->buf].name, e->a);
		return;
	case KIR_CVT:
		if (e->type == KIR_BOOL) {
			sput(b, "(");
			expr(w, b, e->a);
			sput(b, " != 0)");
		} else {
			sput(b, "(%s)", ctype(e->type));
			expr(w, b, e->a);
		}
		return;
	case KIR_SELECT:
		sput(b, "(");
		expr(w, b, e->a);
		sput(b, " ? ");
		expr(w, b, e->b);
		sput(b, " : ");
		expr(w, b, e->c);
		sput(b, ")");
		return;
	case KIR_REDUCE:
		reduce(w, b, e);
		return;
	case KIR_NEG:
		sput(b, "(-");
		expr(w, b, e->a);
		sput(b, ")");
		return;
	case KIR_NOT:
		sput(b, "(!");
		expr(w, b, e->a);
		sput(b, ")");
		return;
	case KIR_ABS:
		sput(b, "%s(", fl ? (e->type == KIR_F32 ? "fabsf" : "fabs")
				   : e->type == KIR_I64 ? "llabs" : "abs");
		expr(w, b, e->a);
		sput(b, ")");
		return;
	case KIR_RBF16:
		w->half[0] = 1;
		sput(b, "sl_bf16_to_f32(sl_f32_to_bf16(");
		expr(w, b, e->a);
		sput(b, "))");
		return;
	case KIR_RF16:
		w->half[1] = 1;
		sput(b, "sl_f16_to_f32(sl_f32_to_f16(");
		expr(w, b, e->a);
		sput(b, "))");
		return;
	case KIR_RF8E4M3:
	case KIR_RF8E5M2: {
		const char *f = e->op == KIR_RF8E4M3 ? "e4m3" : "e5m2";
		w->half[2] = 1;
		sput(b, "sl_%s_to_f32(sl_f32_to_%s(", f, f);
		expr(w, b, e->a);
		sput(b, "))");
		return;
	}
	case KIR_MAX:
	case KIR_MIN:
		sput(b, "sl_%s<%s>(", e->op == KIR_MAX ? "max" : "min", ctype(e->type));
		expr(w, b, e->a);
		sput(b, ", ");
		expr(w, b, e->b);
		sput(b, ")");
		return;
	default:
		break;
	}
	const char *fn = math_fn(e->op);
	if (fn && (e->op != KIR_REM || fl)) {
		sput(b, "%s%s(", fn, e->type == KIR_F32 ? "f" : "");
		expr(w, b, e->a);
		if (e->b) {
			sput(b, ", ");
			expr(w, b, e->b);
		}
		sput(b, ")");
		return;
	}
	static const char *const infix[] = {
		[KIR_ADD] = "+", [KIR_SUB] = "-", [KIR_MUL] = "*", [KIR_DIV] = "/", [KIR_REM] = "%",
		[KIR_LT] = "<", [KIR_LE] = "<=", [KIR_EQ] = "==", [KIR_NE] = "!=",
		[KIR_AND] = "&&", [KIR_OR] = "||",
	};
	if (e->op >= KIR_ADD && e->op <= KIR_OR && infix[e->op]) {
		sput(b, "(");
		expr(w, b, e->a);
		sput(b, " %s ", infix[e->op]);
		expr(w, b, e->b);
		sput(b, ")");
		return;
	}
	RT_BUG("cuda: kernel %s: op %d", w->k->name, (int)e->op);
}

/* `name[idx] = val` or `+=`, converting to the storage type */
static void store(struct cw *w, enum kir_type t, const char *name, const struct kir_stmt *s,
		  int add)
{
	struct str idx = { 0 }, val = { 0 };
	expr(w, &idx, s->idx);
	expr(w, &val, s->val);
	indent(w);
	if (w->block && !w->in_spread)
		sput(w->out, "if (threadIdx.x == 0)\n"), w->depth++, indent(w), w->depth--;
	if (is_narrow(t)) {
		const char *nar = t == KIR_BF16 ? "sl_f32_to_bf16" : t == KIR_F16 ? "sl_f32_to_f16"
				  : t == KIR_F8E4M3 ? "sl_f32_to_e4m3" : "sl_f32_to_e5m2";
		const char *wid = t == KIR_BF16 ? "sl_bf16_to_f32" : t == KIR_F16 ? "sl_f16_to_f32"
				  : t == KIR_F8E4M3 ? "sl_e4m3_to_f32" : "sl_e5m2_to_f32";
		w->half[half_index(t)] = 1;
		if (add)
			sput(w->out, "%s[%s] = %s(%s(%s[%s]) + %s);\n", name, idx.s, nar, wid, name,
			     idx.s, val.s);
		else
			sput(w->out, "%s[%s] = %s(%s);\n", name, idx.s, nar, val.s);
	} else {
		sput(w->out, "%s[%s] %s= %s;\n", name, idx.s, add ? "+" : "", val.s);
	}
	free(idx.s);
	free(val.s);
}

static void block(struct cw *w, const struct kir_block *bl)
{
	for (const struct kir_stmt *s = bl->head; s; s = s->next) {
		switch (s->kind) {
		case KIR_S_LOOP: {
			if (s->spread && (!w->block || w->in_spread))
				RT_BUG("cuda: kernel %s: a spread loop %s", w->k->name,
				       w->block ? "inside a spread loop" : "in a point-per-thread kernel");
			struct str lo = { 0 }, hi = { 0 }, v = { 0 };
			expr(w, &lo, s->lo);
			expr(w, &hi, s->hi);
			var_name(w, &v, s->var);
			indent(w);
			if (s->spread)
				sput(w->out, "for (long long %s = %s%s; %s < %s; %s += %d) {\n", v.s,
				     strcmp(lo.s, "0") ? lo.s : "",
				     strcmp(lo.s, "0") ? " + threadIdx.x" : "threadIdx.x", v.s, hi.s, v.s,
				     w->threads);
			else
				sput(w->out, "for (long long %s = %s; %s < %s; %s++) {\n", v.s, lo.s, v.s,
				     hi.s, v.s);
			free(lo.s);
			free(hi.s);
			free(v.s);
			int was = w->in_spread;
			w->in_spread |= s->spread;
			w->depth++;
			block(w, &s->body);
			w->depth--;
			w->in_spread = was;
			indent(w);
			sput(w->out, "}\n");
			break;
		}
		case KIR_S_STORE:
		case KIR_S_STORE_ADD:
			store(w, w->k->bufs[s->buf].type, w->k->bufs[s->buf].name, s,
			      s->kind == KIR_S_STORE_ADD);
			break;
		case KIR_S_SSTORE:
			store(w, w->k->shared[s->buf].type, w->k->shared[s->buf].name, s, 0);
			break;
		case KIR_S_SET: {
			struct str v = { 0 };
			expr(w, &v, s->val);
			indent(w);
			var_name(w, w->out, s->var);
			sput(w->out, " = %s;\n", v.s);
			free(v.s);
			break;
		}
		case KIR_S_IF: {
			struct str c = { 0 };
			expr(w, &c, s->lo);
			indent(w);
			sput(w->out, "if (%s) {\n", c.s);
			free(c.s);
			w->depth++;
			block(w, &s->body);
			w->depth--;
			if (s->other.head) {
				indent(w);
				sput(w->out, "} else {\n");
				w->depth++;
				block(w, &s->other);
				w->depth--;
			}
			indent(w);
			sput(w->out, "}\n");
			break;
		}
		case KIR_S_BARRIER:
			if (w->in_spread)
				RT_BUG("cuda: kernel %s: a barrier inside a spread loop", w->k->name);
			indent(w);
			sput(w->out, "__syncthreads();\n");
			break;
		}
	}
}

void cg_cuda_launch(const struct kir_kernel *k, unsigned grid[3], unsigned block[3])
{
	int64_t t = k->launch.threads ? k->launch.threads : CG_CUDA_THREADS;
	int64_t g = k->launch.map == KIR_MAP_BLOCK ? k->extent : (k->extent + t - 1) / t;
	grid[0] = (unsigned)(g > 0 ? g : 1);
	grid[1] = grid[2] = 1;
	block[0] = (unsigned)t;
	block[1] = block[2] = 1;
}

static void render_kernel(const struct kir_kernel *k, struct str *out, int *half)
{
	struct str body = { 0 };
	struct cw w = { .out = &body, .k = k, .block = k->launch.map == KIR_MAP_BLOCK, .depth = 1,
			.half = half };
	w.threads = k->launch.threads ? k->launch.threads : CG_CUDA_THREADS;
	for (int i = 1; i < k->n_vars; i++)
		if (!k->vars[i].is_index) {
			indent(&w);
			sput(&body, "%s ", ctype(k->vars[i].type));
			var_name(&w, &body, i);
			sput(&body, ";\n");
		}
	block(&w, &k->body);

	sput(out, "extern \"C\" __global__ void __launch_bounds__(%d) %s(", w.threads, k->name);
	for (int i = 0; i < k->n_bufs; i++) {
		enum kir_type t = k->bufs[i].type;
		if (is_narrow(t))
			half[half_index(t)] = 1;
		sput(out, "%s%s%s *__restrict__ %s", i ? ", " : "", k->bufs[i].written ? "" : "const ",
		     ctype(t), k->bufs[i].name);
	}
	sput(out, ")\n{\n");
	if (!w.block)
		sput(out, "\tconst long long p = (long long)blockIdx.x * %d + threadIdx.x;\n"
			  "\tif (p >= %lldLL)\n\t\treturn;\n", w.threads, (long long)k->extent);
	else if (w.uses_p)
		sput(out, "\tconst long long p = blockIdx.x;\n");
	for (int i = 0; i < k->n_shared; i++) {
		enum kir_type t = k->shared[i].type;
		if (is_narrow(t))
			half[half_index(t)] = 1;
		sput(out, "\t__shared__ %s %s[%lld];\n", ctype(t), k->shared[i].name,
		     (long long)k->shared[i].count);
	}
	if (w.red_f32)
		sput(out, "\t__shared__ float sl_red_f32[32];\n");
	if (w.red_f64)
		sput(out, "\t__shared__ double sl_red_f64[32];\n");
	if (body.n)
		sput(out, "%s", body.s);
	sput(out, "}\n");
	free(body.s);
}

static const char prelude[] =
	"template <typename T> __device__ __forceinline__ T sl_max(T a, T b) { return a > b ? a : b; }\n"
	"template <typename T> __device__ __forceinline__ T sl_min(T a, T b) { return a < b ? a : b; }\n"
	"\n"
	"/* A sum or max over a block of whole warps: across each warp by shuffles, the\n"
	" * warps' results through sh[32], then across a warp again; every thread gets the\n"
	" * same total.  The barrier ahead lets sh be reused by consecutive reductions. */\n"
	"template <typename T, bool MAX> __device__ __forceinline__ T sl_warp_reduce(T v)\n"
	"{\n"
	"\tfor (int o = 16; o > 0; o >>= 1) {\n"
	"\t\tT u = __shfl_xor_sync(0xffffffffu, v, o);\n"
	"\t\tv = MAX ? (u > v ? u : v) : v + u;\n"
	"\t}\n"
	"\treturn v;\n"
	"}\n"
	"\n"
	"template <typename T, bool MAX> __device__ T sl_block_reduce(T v, T *sh, T ident)\n"
	"{\n"
	"\tunsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;\n"
	"\tv = sl_warp_reduce<T, MAX>(v);\n"
	"\t__syncthreads();\n"
	"\tif (lane == 0)\n"
	"\t\tsh[warp] = v;\n"
	"\t__syncthreads();\n"
	"\tv = lane < (blockDim.x >> 5) ? sh[lane] : ident;\n"
	"\treturn sl_warp_reduce<T, MAX>(v);\n"
	"}\n";

static const char prelude_bf16[] =
	"\n"
	"typedef unsigned short sl_bf16; /* the upper half of an f32 */\n"
	"__device__ __forceinline__ float sl_bf16_to_f32(sl_bf16 h) { return __uint_as_float((unsigned)h << 16); }\n"
	"__device__ __forceinline__ sl_bf16 sl_f32_to_bf16(float f)\n"
	"{\n"
	"\tsl_bf16 h;\n"
	"\tasm(\"cvt.rn.bf16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n"
	"\treturn h;\n"
	"}\n";

static const char prelude_f16[] =
	"\n"
	"typedef unsigned short sl_f16; /* IEEE binary16 */\n"
	"__device__ __forceinline__ float sl_f16_to_f32(sl_f16 h)\n"
	"{\n"
	"\tfloat f;\n"
	"\tasm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h));\n"
	"\treturn f;\n"
	"}\n"
	"__device__ __forceinline__ sl_f16 sl_f32_to_f16(float f)\n"
	"{\n"
	"\tsl_f16 h;\n"
	"\tasm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h) : \"f\"(f));\n"
	"\treturn h;\n"
	"}\n";

/* E4M3 and E5M2 in a byte.  The narrowing is the hardware's (sm_89 and later):
 * nearest, ties to even, subnormals kept, saturating to the largest finite value
 * (infinities too), NaN kept, as the reference executor rounds.  The widening goes
 * through f16, which holds every value of both formats exactly. */
static const char prelude_f8[] =
	"\n"
	"typedef unsigned char sl_f8;\n"
	"__device__ __forceinline__ float sl_f8x_to_f32(unsigned short h2)\n"
	"{\n"
	"\tunsigned short h = h2 & 0xffff; /* the low f16 of the pair */\n"
	"\tfloat f;\n"
	"\tasm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h));\n"
	"\treturn f;\n"
	"}\n"
	"__device__ __forceinline__ float sl_e4m3_to_f32(sl_f8 q)\n"
	"{\n"
	"\tunsigned h2;\n"
	"\tasm(\"cvt.rn.f16x2.e4m3x2 %0, %1;\" : \"=r\"(h2) : \"h\"((unsigned short)q));\n"
	"\treturn sl_f8x_to_f32((unsigned short)h2);\n"
	"}\n"
	"__device__ __forceinline__ float sl_e5m2_to_f32(sl_f8 q)\n"
	"{\n"
	"\tunsigned h2;\n"
	"\tasm(\"cvt.rn.f16x2.e5m2x2 %0, %1;\" : \"=r\"(h2) : \"h\"((unsigned short)q));\n"
	"\treturn sl_f8x_to_f32((unsigned short)h2);\n"
	"}\n"
	"__device__ __forceinline__ sl_f8 sl_f32_to_e4m3(float f)\n"
	"{\n"
	"\tunsigned short q2;\n"
	"\tasm(\"cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\" : \"=h\"(q2) : \"f\"(0.0f), \"f\"(f));\n"
	"\treturn (sl_f8)(q2 & 0xff);\n"
	"}\n"
	"__device__ __forceinline__ sl_f8 sl_f32_to_e5m2(float f)\n"
	"{\n"
	"\tunsigned short q2;\n"
	"\tasm(\"cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;\" : \"=h\"(q2) : \"f\"(0.0f), \"f\"(f));\n"
	"\treturn (sl_f8)(q2 & 0xff);\n"
	"}\n";

static void render_unit(struct kir_kernel *const *ks, int n, const char *steps, FILE *out)
{
	struct str body = { 0 };
	int half[3] = { 0, 0, 0 };
	for (int i = 0; i < n; i++) {
		sput(&body, "\n");
		render_kernel(ks[i], &body, half);
	}
	fprintf(out, "/* generated by sluice from kernel IR: %d kernel%s */\n", n, n == 1 ? "" : "s");
	fprintf(out, "\n%s", prelude);
	if (half[0])
		fputs(prelude_bf16, out);
	if (half[1])
		fputs(prelude_f16, out);
	if (half[2])
		fputs(prelude_f8, out);
	if (steps)
		fputs(steps, out);
	if (body.n)
		fputs(body.s, out);
	free(body.s);
}

void cg_cuda_render(struct kir_kernel *const *ks, int n, FILE *out)
{
	render_unit(ks, n, NULL, out);
}

const char *cg_cuda_library(enum cg_step_kind kind)
{
	switch (kind) {
	case CG_STEP_KERNEL: return "a kernel rendered here";
	case CG_STEP_MATMUL: return "cuBLASLt matmul";
	case CG_STEP_GROUPED: return "grouped GEMM over the expert offsets in device memory";
	case CG_STEP_WGRAD: return "grouped GEMM, weight gradient per expert";
	case CG_STEP_ATTENTION: return "flash attention forward";
	case CG_STEP_ATTENTION_BWD: return "flash attention backward";
	}
	return "?";
}

void cg_cuda_render_plan(const struct cg_plan *p, FILE *out)
{
	struct str steps = { 0 };
	int lib = 0;
	for (int i = 0; i < p->n_steps; i++) {
		const struct cg_step *s = &p->steps[i];
		if (s->kind == CG_STEP_KERNEL)
			continue;
		if (!lib++)
			sput(&steps, "\n/* Library steps, supplied by the GPU backend, not generated:\n");
		sput(&steps, " *   step %d: %s (op %d) -> %s\n", i, ir_op_name(s->op->kind), s->op->id,
		     cg_cuda_library(s->kind));
	}
	if (lib)
		sput(&steps, " */\n");
	render_unit(p->ks, p->n_ks, steps.s, out);
	free(steps.s);
}
