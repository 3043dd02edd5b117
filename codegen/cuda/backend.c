/* backend.c - cg_backend_cuda: the GPU backend.  compile() plans the graph for
 * cg_target_cuda (lower.c: 16-bit storage for bf16 and f16 values, rows over blocks),
 * renders its distinct kernels into one CUDA C module (render.c) and builds it through
 * NVRTC and the disk cache (rt_module_build), and places every buffer the plan
 * touches in device memory: INPUT and PARAM values are the caller's (bound as device
 * addresses), graph outputs (the loss, the gradients "grad.P") get blocks of their own
 * so they can be read after run, and all other values and scratch buffers share one
 * block laid out by the plan (codegen/plan.c, as the LLVM backend lays its arena out).
 * All of it, and cuBLASLt's workspace, comes from the GPU's arena (rt_gpu_alloc) set
 * by cg_cuda_use_gpu; freeing the executor gives it back when nothing was taken from
 * the arena after it (the arena is a stack), else it stays taken until the GPU closes.
 *
 * run() queues the steps in order on the GPU's compute stream and returns: kernels by
 * rt_kernel_launch, matmuls through cuBLASLt (rt_gemm_run).  The first product of a
 * shape times cuBLASLt's candidates (runtime/cuda/gemm.c), which waits for the GPU
 * once.
 *
 * A MATMUL is one cuBLASLt call where its layout allows, planned at compile time:
 * each operand's matrix must have one contiguous dimension (a TRANSPOSE read in place,
 * plan->view_of, may leave neither: such a graph is refused); batch dimensions that
 * step evenly through all three of A, B and Y merge into one strided batch; a
 * right operand shared by the whole batch, with A's rows stacked evenly, folds the
 * batch into M (a linear layer over [batch, seq, dim]); what is left (a broadcast
 * operand inside the batch, uneven steps) is a loop of calls on the host.
 *
 * The other library steps, the grouped GEMMs of MoE layers (GROUPED_MATMUL and its
 * weight gradient) and attention (ATTENTION, ATTENTION_BWD), are the hand-written
 * kernels of lib.h, loaded once per executor that needs them; the expert offsets stay
 * in device memory.  They take f32 or bf16 storage; a graph asking another is refused
 * at compile time. */
#include <stdlib.h>
#include <string.h>

#include "codegen/backend.h"

#ifdef SLUICE_HAVE_CUDA
#include "cuda_impl.h"
#include "lib.h"
#include "runtime/gpu.h"
#include "runtime/rt.h"

/* A MATMUL step as cuBLASLt calls: args with addresses relative to the operands'
 * buffers (in elements, added at run), and the batch dimensions left to a host loop. */
struct mm {
	struct rt_gemm_args args;
	int a, b, d;                        /* buffers */
	int sa, sb;                         /* block-scaled fp8: the scale buffers, else -1 */
	int n_loop;
	int64_t loop_n[IR_MAX_RANK];        /* outer first */
	int64_t loop_a[IR_MAX_RANK], loop_b[IR_MAX_RANK], loop_d[IR_MAX_RANK]; /* strides */
};

static void profile_end(struct cg_exec *e);

/* bound-pointer sets a chunk keeps a CUDA graph for: one per micro-batch slot the
 * executor binds it to, a few in practice; beyond these the steps run directly */
#define MAX_REPLAYS 16

struct cg_exec {
	const struct ir_graph *g;
	struct cg_plan plan;
	struct rt_gpu *gpu;
	struct rt_module *mod;
	struct rt_kernel **fns;     /* per kernel of the plan */
	unsigned (*grid)[3], (*block)[3];
	struct mm *mm;              /* per step (MATMUL steps only) */
	struct cg_cuda_attn *attn;  /* per step (attention steps only) */
	struct cg_cuda_grouped *grouped; /* per step (grouped GEMM steps only) */
	struct cg_cuda_lib *lib;    /* the library kernels, when a step needs them */
	struct rt_gemm *gemm;
	rt_dptr *ptr;               /* per buffer */
	unsigned char *outside;     /* per buffer: bound by the caller or allocated alone */
	int64_t arena_bytes;
	size_t mark, top;           /* the GPU arena before and after compile took from it */
	rt_dptr *args;
	void **argp;
	int max_args;
	/* SLUICE_CUDA_PROFILE=1: each step's GPU time over every run, said at free */
	struct rt_gpu_event **pev;  /* 2 per step */
	double *prof_ms;
	int prof_runs, prof_seen;
	/* CUDA graphs of the steps, one per set of bound pointers seen (run_steps) */
	struct replay {
		rt_dptr *ptr;               /* e->ptr when captured */
		struct rt_gpu_graph *graph; /* NULL until captured */
		int runs;                   /* -1: capture failed, run directly */
	} replay[MAX_REPLAYS];
	int n_replays;
};

static struct rt_gpu *the_gpu;

void cg_cuda_use_gpu(struct rt_gpu *g)
{
	the_gpu = g;
}

static size_t type_size(enum kir_type t)
{
	return t == KIR_I64 || t == KIR_F64 ? 8 : t == KIR_BF16 || t == KIR_F16 ? 2
	       : t == KIR_F8E4M3 || t == KIR_F8E5M2 ? 1 : 4;
}

static int64_t round256(int64_t n)
{
	return (n + 255) / 256 * 256;
}

static int is_source(const struct ir_graph *g, int b)
{
	const struct ir_op *d = b < g->n_values ? g->values[b]->def : NULL;
	return d && (d->kind == IR_OP_INPUT || d->kind == IR_OP_PARAM);
}

/* bytes of buffer b when it is allocated alone */
static int64_t alone_bytes(const struct cg_plan *p, int b)
{
	return (p->buf_numel[b] ? p->buf_numel[b] : 1) * (int64_t)type_size(p->buf_type[b]);
}

/* everything compile takes from the GPU's arena, given the plan's layout */
static int64_t device_bytes(const struct cg_plan *p, const int64_t *off, int64_t arena)
{
	int64_t total = round256(arena) + CG_CUDA_GEMM_WORKSPACE;
	for (int b = 0; b < p->n_bufs; b++)
		if (off[b] == -1 && !is_source(p->g, b))
			total += round256(alone_bytes(p, b));
	return total;
}

/* --- matmuls ------------------------------------------------------------------------- */

/* The matrix with element (r, c) at r*rs + c*cs as cuBLASLt takes it: (r, c) at
 * r*ld + c (trans 0) or c*ld + r (trans 1).  -1 when neither dimension is contiguous. */
static int mat_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *trans, int64_t *ld)
{
	if (cs == 1 || cols == 1) {
		*trans = 0;
		*ld = rows == 1 || rs < cols ? cols : rs;
		return 0;
	}
	if (rs == 1 || rows == 1) {
		*trans = 1;
		*ld = cs < rows ? rows : cs;
		return 0;
	}
	return -1;
}

/* The element strides of a MATMUL operand and its buffer: row-major, or, for a
 * TRANSPOSE that the plan reads in place (plan->view_of), its input's strides
 * permuted (as the LLVM backend's operand()). */
static int operand(const struct cg_plan *p, const struct ir_value *x, int64_t *st)
{
	const struct ir_value *src = x;
	const struct ir_attr *perm = NULL;
	if (p->view_of[x->id] >= 0) {
		src = p->g->values[p->view_of[x->id]];
		perm = ir_op_attr(x->def, "perm");
	}
	int64_t sst[IR_MAX_RANK], acc = 1;
	for (int d = src->shape.rank - 1; d >= 0; d--) {
		sst[d] = acc;
		acc *= src->shape.dim[d];
	}
	for (int d = 0; d < x->shape.rank; d++)
		st[d] = perm ? sst[perm->ints[d]] : sst[d];
	return p->alias[src->id];
}

static int gemm_mode(enum kir_type a, enum kir_type b, enum kir_type y, enum rt_gemm_mode *m)
{
	if (a != b)
		return -1;
	if (a == KIR_F32 && y == KIR_F32)
		*m = RT_GEMM_F32;
	else if (a == KIR_BF16 && y == KIR_BF16)
		*m = RT_GEMM_BF16;
	else if (a == KIR_BF16 && y == KIR_F32)
		*m = RT_GEMM_BF16_F32OUT;
	else if (a == KIR_F16 && y == KIR_F16)
		*m = RT_GEMM_F16;
	else
		return -1;
	return 0;
}

static void op_error(const struct ir_op *op, FILE *err)
{
	if (op->loc.file)
		fprintf(err, "%s:%d:%d: ", op->loc.file, op->loc.line, op->loc.col);
	fprintf(err, "error: ");
}

static void contiguous(const struct ir_shape *s, int64_t *st)
{
	int64_t acc = 1;
	for (int d = s->rank - 1; d >= 0; d--) {
		st[d] = acc;
		acc *= s->dim[d];
	}
}

/* A scaled product that cg_fp8_gemm_form gives to cuBLASLt's block-scaled FP8 GEMM:
 * x (or dy) as stored, W transposed (CG_FP8_FWD) or as stored, the scales relaid by
 * the kernels ahead of the step (their scratch buffers, in the order lower.c makes
 * them); or a weight gradient, both operands transposed by those kernels, the scales
 * read as they are. */
static int plan_fp8(const struct cg_plan *p, const struct cg_step *st, enum cg_fp8_form form,
		    struct mm *mm)
{
	const struct ir_op *op = st->op;
	const struct ir_value *A = op->in[0], *Y = op->out[0];
	int64_t K = A->shape.dim[A->shape.rank - 1], N = Y->shape.dim[Y->shape.rank - 1];
	int sc = op->n_in + op->n_out;
	struct rt_gemm_args *g = &mm->args;
	mm->n_loop = 0;
	mm->d = p->alias[Y->id];
	if (form == CG_FP8_WGRAD) { /* dW [K, N] = (x^T [K, M]) (dy^T [N, M])^T */
		g->mode = RT_GEMM_FP8_VEC;
		g->m = (int)K;
		g->n = (int)N;
		g->k = (int)A->shape.dim[0];
		mm->a = st->bufs[sc];
		mm->b = st->bufs[sc + 1];
		mm->sa = p->alias[op->in[2]->id];
		mm->sb = p->alias[op->in[3]->id];
		return 0;
	}
	g->mode = p->buf_type[mm->d] == KIR_F32 ? RT_GEMM_FP8_BLOCK_F32 : RT_GEMM_FP8_BLOCK;
	g->m = (int)(ir_shape_numel(&Y->shape) / N);
	g->n = (int)N;
	g->k = (int)K;
	mm->a = p->alias[A->id];
	if (form == CG_FP8_FWD) {
		mm->b = st->bufs[sc];
		sc++;
	} else {
		mm->b = p->alias[op->in[1]->id];
	}
	mm->sa = st->bufs[sc];
	mm->sb = st->bufs[sc + 1];
	return 0;
}

/* Plan one MATMUL as cuBLASLt calls; 0, or -1 with a message. */
static int plan_matmul(const struct cg_plan *p, const struct cg_step *st, struct mm *mm, FILE *err)
{
	const struct ir_op *op = st->op;
	const struct ir_value *A = op->in[0], *B = op->in[1], *Y = op->out[0];
	int ta = (int)ir_op_int(op, "trans_a", 0), tb = (int)ir_op_int(op, "trans_b", 0);
	const struct ir_shape *ys = &Y->shape, *as = &A->shape, *bs = &B->shape;
	int r = ys->rank, ra = as->rank, rb = bs->rank;
	int64_t M = ys->dim[r - 2], N = ys->dim[r - 1];
	int64_t K = ta ? as->dim[ra - 2] : as->dim[ra - 1];
	int64_t sa[IR_MAX_RANK], sb[IR_MAX_RANK];
	mm->a = operand(p, A, sa);
	mm->b = operand(p, B, sb);
	mm->d = p->alias[Y->id];
	mm->sa = mm->sb = -1;
	struct rt_gemm_args *g = &mm->args;
	memset(g, 0, sizeof *g);
	if (op->kind == IR_OP_SCALED_MATMUL) {
		enum cg_fp8_form form = cg_fp8_gemm_form(p, op);
		if (form != CG_FP8_DEQUANT)
			return plan_fp8(p, st, form, mm);
		/* the dequantised operands, contiguous in their shapes, and the f32 result */
		int sc = op->n_in + op->n_out;
		mm->a = st->bufs[sc];
		mm->b = st->bufs[sc + 1];
		if (st->n_bufs > sc + 2)
			mm->d = st->bufs[sc + 2];
		contiguous(&A->shape, sa);
		contiguous(&B->shape, sb);
	}
	if (gemm_mode(p->buf_type[mm->a], p->buf_type[mm->b], p->buf_type[mm->d], &g->mode)) {
		op_error(op, err);
		fprintf(err, "the CUDA backend has no matmul of %s by %s into %s\n",
			kir_type_name(p->buf_type[mm->a]), kir_type_name(p->buf_type[mm->b]),
			kir_type_name(p->buf_type[mm->d]));
		return -1;
	}
	if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
		op_error(op, err);
		fprintf(err, "matmul of %lld x %lld x %lld: a dimension past 2^31\n",
			(long long)M, (long long)N, (long long)K);
		return -1;
	}
	/* A's (m, k) and B's (k, n) strides, then as cuBLASLt takes them */
	int64_t rsa = ta ? sa[ra - 1] : sa[ra - 2], csa = ta ? sa[ra - 2] : sa[ra - 1];
	int64_t rsb = tb ? sb[rb - 1] : sb[rb - 2], csb = tb ? sb[rb - 2] : sb[rb - 1];
	if (mat_layout(M, K, rsa, csa, &g->trans_a, &g->lda) ||
	    mat_layout(N, K, csb, rsb, &g->trans_b, &g->ldb)) {
		op_error(op, err);
		fprintf(err, "the CUDA backend reads a transposed matmul operand in place only "
			"when one of its two matrix dimensions is contiguous (op %d)\n", op->id);
		return -1;
	}
	g->m = (int)M;
	g->n = (int)N;
	g->k = (int)K;
	g->ldd = N;

	/* batch dimensions: sizes and the steps of A, B and Y (0: broadcast), size-1
	 * dimensions dropped, neighbours that step evenly merged */
	int64_t bn[IR_MAX_RANK], ba[IR_MAX_RANK], bb[IR_MAX_RANK], bd[IR_MAX_RANK];
	int nb = 0;
	int64_t yst = M * N;
	for (int d = r - 3; d >= 0; d--) { /* inner first */
		int da = d - (r - ra), db = d - (r - rb);
		int64_t n = ys->dim[d];
		int64_t a = da >= 0 && as->dim[da] != 1 ? sa[da] : 0;
		int64_t b = db >= 0 && bs->dim[db] != 1 ? sb[db] : 0;
		int64_t y = yst;
		yst *= n;
		if (n == 1)
			continue;
		if (nb && ba[nb - 1] * bn[nb - 1] == a && bb[nb - 1] * bn[nb - 1] == b &&
		    bd[nb - 1] * bn[nb - 1] == y) {
			bn[nb - 1] *= n;
			continue;
		}
		bn[nb] = n, ba[nb] = a, bb[nb] = b, bd[nb] = y;
		nb++;
	}
	int first = 0; /* bn[0] is the innermost */
	if (nb && bb[0] == 0 && !g->trans_a && ba[0] == M * g->lda && bd[0] == M * N &&
	    M * bn[0] <= INT32_MAX) {
		g->m = (int)(M * bn[0]); /* B shared: the batch is more rows of A */
		first = 1;
	} else if (nb && ba[0] && bb[0] && bn[0] <= INT32_MAX) {
		g->batch = (int)bn[0];
		g->stride_a = ba[0];
		g->stride_b = bb[0];
		g->stride_d = bd[0];
		first = 1;
	}
	mm->n_loop = 0;
	for (int i = nb - 1; i >= first; i--) { /* outer first */
		mm->loop_n[mm->n_loop] = bn[i];
		mm->loop_a[mm->n_loop] = ba[i];
		mm->loop_b[mm->n_loop] = bb[i];
		mm->loop_d[mm->n_loop] = bd[i];
		mm->n_loop++;
	}
	return 0;
}

static int run_matmul(struct cg_exec *e, const struct mm *mm)
{
	struct rt_gemm_args g = mm->args;
	size_t ei = rt_gemm_in_bytes(g.mode), eo = rt_gemm_out_bytes(g.mode);
	int64_t total = 1;
	for (int i = 0; i < mm->n_loop; i++)
		total *= mm->loop_n[i];
	for (int64_t t = 0; t < total; t++) {
		int64_t rem = t, oa = 0, ob = 0, od = 0;
		for (int i = mm->n_loop - 1; i >= 0; i--) {
			int64_t ix = rem % mm->loop_n[i];
			rem /= mm->loop_n[i];
			oa += ix * mm->loop_a[i];
			ob += ix * mm->loop_b[i];
			od += ix * mm->loop_d[i];
		}
		g.a = e->ptr[mm->a] + (rt_dptr)oa * ei;
		g.b = e->ptr[mm->b] + (rt_dptr)ob * ei;
		g.d = e->ptr[mm->d] + (rt_dptr)od * eo;
		if (mm->sa >= 0) {
			g.a_scale = e->ptr[mm->sa];
			g.b_scale = e->ptr[mm->sb];
		}
		if (rt_gemm_run(e->gemm, &g, RT_STREAM_COMPUTE))
			return -1;
	}
	return 0;
}

/* --- compile ----------------------------------------------------------------------- */

static int lib_dtype(enum kir_type t, enum cg_cuda_dtype *d)
{
	if (t != KIR_F32 && t != KIR_BF16)
		return -1;
	*d = t == KIR_F32 ? CG_CUDA_F32 : CG_CUDA_BF16;
	return 0;
}

/* A grouped step's x, w (dy for the weight gradient), offsets and output: the op's own,
 * or for a scaled one its operands dequantised into f32 scratch and its f32 result
 * (the output itself, or the scratch that a kernel after the step rounds into it). */
static void grouped_bufs(const struct cg_plan *p, const struct cg_step *st, int b[4])
{
	const struct ir_op *op = st->op;
	enum cg_fp8_form form = cg_fp8_gemm_form(p, op);
	if (form == CG_FP8_GROUPED || form == CG_FP8_GROUPED_WGRAD) {
		/* bf16 copies, the output itself */
		int sc = op->n_in + op->n_out;
		b[0] = st->bufs[sc];
		b[1] = st->bufs[sc + 1];
		b[2] = st->bufs[2];
		b[3] = st->bufs[op->n_in];
		return;
	}
	if (op->kind == IR_OP_SCALED_GROUPED_MATMUL ||
	    op->kind == IR_OP_SCALED_GROUPED_MATMUL_WGRAD) {
		int sc = op->n_in + op->n_out;
		b[0] = st->bufs[sc];
		b[1] = st->bufs[sc + 1];
		b[2] = st->bufs[2];
		b[3] = st->n_bufs > sc + 2 ? st->bufs[sc + 2] : st->bufs[op->n_in];
		return;
	}
	for (int i = 0; i < 4; i++)
		b[i] = st->bufs[i];
}

/* Plan an attention or grouped-GEMM step for lib.h; 0, or -1 with a message. */
static int plan_lib(const struct cg_plan *p, const struct cg_step *st, struct cg_cuda_attn *at,
		    struct cg_cuda_grouped *gr, FILE *err)
{
	const struct ir_op *op = st->op;
	enum kir_type t = p->buf_type[st->bufs[0]];
	int n_data = st->kind == CG_STEP_ATTENTION ? 4 : st->kind == CG_STEP_ATTENTION_BWD ? 9 : 0;
	int bad = 0;
	for (int i = 0; i < n_data; i++) /* every tensor but lse (and the scratch): one type */
		bad |= i != 4 && p->buf_type[st->bufs[i]] != t;
	if (st->kind == CG_STEP_ATTENTION || st->kind == CG_STEP_ATTENTION_BWD) {
		const struct ir_shape *q = &op->in[0]->shape, *k = &op->in[1]->shape;
		*at = (struct cg_cuda_attn){
			.B = q->dim[0], .S = q->dim[1], .H = q->dim[2], .Hkv = k->dim[2],
			.Dk = q->dim[3], .Dv = op->in[2]->shape.dim[3],
			.scale = ir_op_float(op, "scale", 1), .causal = (int)ir_op_int(op, "causal", 1),
		};
		bad |= lib_dtype(t, &at->dtype);
		if (!bad && st->kind == CG_STEP_ATTENTION_BWD &&
		    cg_cuda_attention_bwd_scratch(at) > p->buf_numel[st->bufs[9]] * 4) {
			op_error(op, err);
			fprintf(err, "attention's backward wants %lld bytes of scratch, the plan has %lld\n",
				(long long)cg_cuda_attention_bwd_scratch(at),
				(long long)p->buf_numel[st->bufs[9]] * 4);
			return -1;
		}
	} else {
		const struct ir_value *xs = op->in[0];
		int gb[4];
		grouped_bufs(p, st, gb);
		t = p->buf_type[gb[0]];
		enum cg_fp8_form form = cg_fp8_gemm_form(p, op);
		int fp8 = form == CG_FP8_GROUPED || form == CG_FP8_GROUPED_WGRAD;
		*gr = (struct cg_cuda_grouped){
			.R = xs->shape.dim[0], .K = xs->shape.dim[1],
			.N = st->kind == CG_STEP_GROUPED ? op->out[0]->shape.dim[1] : op->in[1]->shape.dim[1],
			.E = st->kind == CG_STEP_GROUPED ? op->in[1]->shape.dim[0] : op->out[0]->shape.dim[0],
			.trans_b = (int)ir_op_int(op, "trans_b", 0),
			.offsets_i64 = p->buf_type[gb[2]] == KIR_I64,
			.fp8 = fp8, .y_f32 = p->buf_type[gb[3]] == KIR_F32,
		};
		bad |= lib_dtype(t, &gr->dtype) || p->buf_type[gb[1]] != t ||
		       (!fp8 && p->buf_type[gb[3]] != t) || (fp8 && !cg_cuda_grouped_fp8_ok(gr));
	}
	if (bad) {
		op_error(op, err);
		fprintf(err, "the CUDA backend's %s kernels take f32 or bf16 tensors of one type "
			"(op %d, %s)\n", cg_cuda_library(st->kind), op->id, ir_op_name(op->kind));
		return -1;
	}
	return 0;
}

static int run_lib(struct cg_exec *e, int s, const struct cg_step *st)
{
	rt_dptr b[10] = { 0 };
	for (int i = 0; i < st->n_bufs && i < 10; i++)
		b[i] = e->ptr[st->bufs[i]];
	enum rt_stream_kind c = RT_STREAM_COMPUTE;
	switch (st->kind) {
	case CG_STEP_ATTENTION:
		return cg_cuda_attention_fwd(e->lib, &e->attn[s], b[0], b[1], b[2], b[3], b[4], c);
	case CG_STEP_ATTENTION_BWD:
		return cg_cuda_attention_bwd(e->lib, &e->attn[s], b[0], b[1], b[2], b[3], b[4], b[5],
					     b[6], b[7], b[8], b[9], c);
	case CG_STEP_GROUPED:
	case CG_STEP_WGRAD: {
		int gb[4];
		grouped_bufs(&e->plan, st, gb);
		rt_dptr x = e->ptr[gb[0]], w = e->ptr[gb[1]], o = e->ptr[gb[2]], y = e->ptr[gb[3]];
		const struct cg_cuda_grouped *g = &e->grouped[s];
		if (g->fp8 && st->kind == CG_STEP_WGRAD)
			return cg_cuda_wgrad_fp8(e->lib, g, x, w, o, e->ptr[st->bufs[3]],
						 e->ptr[st->bufs[4]], y, g->y_f32, c);
		if (g->fp8)
			return cg_cuda_grouped_fp8(e->lib, g, x, w, o, e->ptr[st->bufs[3]],
						   e->ptr[st->bufs[4]], y, g->y_f32, c);
		return st->kind == CG_STEP_GROUPED ? cg_cuda_grouped(e->lib, &e->grouped[s], x, w, o, y, c)
						   : cg_cuda_wgrad(e->lib, &e->grouped[s], x, w, o, y, c);
	}
	default:
		RT_BUG("not a library step");
	}
}

static void cuda_free(struct cg_exec *e)
{
	if (!e)
		return;
	if (e->gpu) {
		rt_gpu_sync(e->gpu, RT_STREAM_COMPUTE); /* nothing queued may outlive its memory */
		if (e->pev)
			profile_end(e);
		if (e->top && rt_gpu_arena_mark(e->gpu) == e->top)
			rt_gpu_arena_reset(e->gpu, e->mark);
	}
	/* the graphs launch the modules' kernels: gone before the modules are */
	for (int i = 0; i < e->n_replays; i++) {
		rt_gpu_graph_free(e->replay[i].graph);
		free(e->replay[i].ptr);
	}
	rt_gemm_free(e->gemm);
	cg_cuda_lib_free(e->lib);
	rt_module_free(e->mod);
	free(e->fns);
	free(e->grid);
	free(e->block);
	free(e->mm);
	free(e->attn);
	free(e->grouped);
	free(e->ptr);
	free(e->outside);
	free(e->args);
	free(e->argp);
	cg_plan_free(&e->plan);
	free(e);
}

/* Render the distinct kernels into one module, build it, find every kernel. */
static int build_kernels(struct cg_exec *e, FILE *err)
{
	const struct cg_plan *p = &e->plan;
	int n = p->n_ks;
	e->fns = rt_calloc((size_t)n + 1, sizeof *e->fns);
	e->grid = rt_calloc((size_t)n + 1, sizeof *e->grid);
	e->block = rt_calloc((size_t)n + 1, sizeof *e->block);
	if (!n)
		return 0;
	int *uniq = rt_calloc((size_t)n, sizeof *uniq);
	struct kir_kernel **ks = rt_calloc((size_t)n, sizeof *ks);
	int n_uniq = cg_plan_distinct_kernels(p, uniq, ks);
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		RT_BUG("open_memstream failed");
	cg_cuda_render(ks, n_uniq, f);
	fclose(f);
	const char *dump = getenv("SLUICE_CUDA_DUMP");
	if (dump && *dump) {
		FILE *d = fopen(dump, "w");
		if (d) {
			fputs(text, d);
			fclose(d);
		}
	}
	static const char *const opts[] = { "--std=c++17" };
	struct rt_module_src src = { "sluice_plan.cu", text, opts, 1 };
	int rc = rt_module_build(e->gpu, &src, 1, &e->mod, NULL);
	if (rc)
		fprintf(err, "sluice: the CUDA backend: NVRTC did not build the graph's %d kernels\n",
			n_uniq);
	for (int i = 0; i < n && !rc; i++) {
		e->fns[i] = rt_module_kernel(e->mod, ks[uniq[i]]->name);
		if (!e->fns[i]) {
			fprintf(err, "sluice: the CUDA backend: kernel %s not in its module\n",
				ks[uniq[i]]->name);
			rc = -1;
		}
		cg_cuda_launch(p->ks[i], e->grid[i], e->block[i]);
	}
	free(text);
	free(ks);
	free(uniq);
	return rc;
}

/* Lay the buffers out and take them from the GPU's arena; 0 on success. */
static int place_buffers(struct cg_exec *e, FILE *err)
{
	const struct cg_plan *p = &e->plan;
	int64_t *off = rt_calloc((size_t)p->n_bufs + 1, sizeof *off);
	int rc = cg_plan_layout(p, off, &e->arena_bytes, err);
	if (rc)
		goto done;
	e->mark = rt_gpu_arena_mark(e->gpu);
	rt_dptr arena = 0;
	if (e->arena_bytes) {
		arena = rt_gpu_alloc(e->gpu, (size_t)e->arena_bytes, 256);
		rc = !arena || rt_gpu_memset(e->gpu, arena, 0, (size_t)e->arena_bytes,
					     RT_STREAM_COMPUTE);
	}
	for (int b = 0; b < p->n_bufs && !rc; b++) {
		if (off[b] == -2)
			continue;
		if (off[b] >= 0) {
			e->ptr[b] = arena + (rt_dptr)off[b];
			continue;
		}
		e->outside[b] = 1;
		if (is_source(e->g, b))
			continue;
		size_t n = (size_t)alone_bytes(p, b);
		e->ptr[b] = rt_gpu_alloc(e->gpu, n, 256);
		rc = !e->ptr[b] || rt_gpu_memset(e->gpu, e->ptr[b], 0, n, RT_STREAM_COMPUTE);
	}
	if (!rc) {
		e->gemm = rt_gemm_new(e->gpu, CG_CUDA_GEMM_WORKSPACE);
		rc = !e->gemm;
	}
	e->top = rt_gpu_arena_mark(e->gpu);
	if (rc)
		fprintf(err, "sluice: the CUDA backend: the graph's %lld bytes do not fit in the "
			"GPU's arena (%zu of %zu bytes free)\n",
			(long long)device_bytes(p, off, e->arena_bytes),
			rt_gpu_arena_size(e->gpu) - e->mark, rt_gpu_arena_size(e->gpu));
done:
	free(off);
	return rc;
}

static struct cg_exec *cuda_compile(const struct ir_graph *g, FILE *err)
{
	if (!the_gpu) {
		fprintf(err, "sluice: the CUDA backend has no GPU (cg_cuda_use_gpu)\n");
		return NULL;
	}
	struct cg_exec *e = rt_calloc(1, sizeof *e);
	e->g = g;
	if (cg_plan_graph(&e->plan, g, &cg_target_cuda, "k", err)) {
		cuda_free(e);
		return NULL;
	}
	const struct cg_plan *p = &e->plan;
	e->mm = rt_calloc((size_t)p->n_steps + 1, sizeof *e->mm);
	e->attn = rt_calloc((size_t)p->n_steps + 1, sizeof *e->attn);
	e->grouped = rt_calloc((size_t)p->n_steps + 1, sizeof *e->grouped);
	int n_lib = 0;
	for (int s = 0; s < p->n_steps; s++) {
		const struct cg_step *st = &p->steps[s];
		int bad = 0;
		if (st->kind == CG_STEP_MATMUL)
			bad = plan_matmul(p, st, &e->mm[s], err);
		else if (st->kind != CG_STEP_KERNEL) {
			bad = plan_lib(p, st, &e->attn[s], &e->grouped[s], err);
			n_lib++;
		}
		if (bad) {
			cuda_free(e);
			return NULL;
		}
		if (st->n_bufs > e->max_args)
			e->max_args = st->n_bufs;
	}
	e->gpu = the_gpu;
	int nb = p->n_bufs;
	e->ptr = rt_calloc((size_t)nb + 1, sizeof *e->ptr);
	e->outside = rt_calloc((size_t)nb + 1, 1);
	e->args = rt_calloc((size_t)e->max_args + 1, sizeof *e->args);
	e->argp = rt_calloc((size_t)e->max_args + 1, sizeof *e->argp);
	for (int i = 0; i < e->max_args; i++)
		e->argp[i] = &e->args[i];
	if (rt_gpu_bind(e->gpu) || build_kernels(e, err) || place_buffers(e, err)) {
		cuda_free(e);
		return NULL;
	}
	if (n_lib && !(e->lib = cg_cuda_lib_load(e->gpu))) {
		fprintf(err, "sluice: the CUDA backend: its library kernels did not load\n");
		cuda_free(e);
		return NULL;
	}
	return e;
}

int cg_cuda_arena_plan(const struct ir_graph *g, int64_t *bytes, FILE *err)
{
	struct cg_plan plan;
	memset(&plan, 0, sizeof plan);
	int rc = cg_plan_graph_sizing(&plan, g, &cg_target_cuda, "k", err);
	if (!rc) {
		int64_t *off = rt_calloc((size_t)plan.n_bufs + 1, sizeof *off), arena = 0;
		rc = cg_plan_layout(&plan, off, &arena, err);
		if (!rc)
			*bytes = device_bytes(&plan, off, arena);
		free(off);
	}
	cg_plan_free(&plan);
	return rc;
}

/* --- run ----------------------------------------------------------------------------- */

static void cuda_bind(struct cg_exec *e, int value_id, void *data)
{
	RT_ASSERT(value_id >= 0 && value_id < e->g->n_values);
	e->ptr[value_id] = (rt_dptr)(uintptr_t)data;
	e->outside[value_id] = 1;
}

static void *cuda_tensor(struct cg_exec *e, int value_id)
{
	if (value_id < 0 || value_id >= e->g->n_values || !e->outside[value_id])
		return NULL;
	return (void *)(uintptr_t)e->ptr[value_id];
}

/* queue the steps on the compute stream */
static int run_steps(struct cg_exec *e)
{
	const struct cg_plan *p = &e->plan;
	for (int s = 0; s < p->n_steps; s++) {
		const struct cg_step *st = &p->steps[s];
		int rc = 0;
		if (e->pev)
			rt_gpu_event_record(e->pev[2 * s], RT_STREAM_COMPUTE);
		if (st->kind == CG_STEP_KERNEL) {
			for (int i = 0; i < st->n_bufs; i++)
				e->args[i] = e->ptr[st->bufs[i]];
			rc = rt_kernel_launch(e->gpu, e->fns[st->kernel], e->grid[st->kernel],
					      e->block[st->kernel], 0, RT_STREAM_COMPUTE, e->argp);
		} else if (st->kind == CG_STEP_MATMUL) {
			rc = run_matmul(e, &e->mm[s]);
		} else {
			rc = run_lib(e, s, st);
		}
		if (rc) {
			fprintf(stderr, "sluice: the CUDA backend: step %d (op %d, %s) failed\n", s,
				st->op->id, ir_op_name(st->op->kind));
			return 1;
		}
		if (e->pev)
			rt_gpu_event_record(e->pev[2 * s + 1], RT_STREAM_COMPUTE);
	}
	/* the first run is left out: it times cuBLASLt's candidates for each new shape */
	for (int s = 0; e->pev && e->prof_seen && s < p->n_steps; s++) {
		double ms = rt_gpu_event_ms(e->pev[2 * s], e->pev[2 * s + 1]);
		e->prof_ms[s] += ms > 0 ? ms : 0;
	}
	e->prof_runs += e->pev && e->prof_seen;
	e->prof_seen |= e->pev != NULL;
	return 0;
}

/* SLUICE_CUDA_PROFILE=1: every run's steps timed one by one (each run waits for the
 * GPU, and runs without a CUDA graph), the heaviest said when the executor goes; the
 * first run is not counted. */
static int profile_on(void)
{
	static int on = -1;
	if (on < 0) {
		const char *v = getenv("SLUICE_CUDA_PROFILE");
		on = v && strcmp(v, "0");
	}
	return on;
}

static int profile_begin(struct cg_exec *e)
{
	int n = e->plan.n_steps;
	e->pev = rt_calloc(2 * (size_t)n + 1, sizeof *e->pev);
	e->prof_ms = rt_calloc((size_t)n + 1, sizeof *e->prof_ms);
	for (int i = 0; i < 2 * n; i++)
		if (!(e->pev[i] = rt_gpu_event_new(e->gpu)))
			return -1;
	return 0;
}

static void profile_end(struct cg_exec *e)
{
	const struct cg_plan *p = &e->plan;
	enum { TOP = 20 };
	int n = p->n_steps, order[TOP], m = 0;
	double total = 0;
	for (int s = 0; s < n; s++) { /* the TOP heaviest, heaviest first */
		total += e->prof_ms[s];
		if (m == TOP && e->prof_ms[s] <= e->prof_ms[order[TOP - 1]])
			continue;
		int at = m < TOP ? m++ : TOP - 1;
		for (; at > 0 && e->prof_ms[order[at - 1]] < e->prof_ms[s]; at--)
			order[at] = order[at - 1];
		order[at] = s;
	}
	if (e->prof_runs > 0 && total > 0) {
		fprintf(stderr, "profile: %d steps, %d runs, %.3f ms a run; the heaviest:\n", n,
			e->prof_runs, total / e->prof_runs);
		for (int k = 0; k < m; k++) {
			const struct cg_step *st = &p->steps[order[k]];
			const struct ir_value *y = st->op->n_out ? st->op->out[0] : NULL;
			char what[160];
			int w = snprintf(what, sizeof what, "%s", st->kind == CG_STEP_KERNEL
				 ? p->ks[st->kernel]->name : ir_op_name(st->op->kind));
			for (int i = 0; st->kind != CG_STEP_KERNEL && i < st->op->n_in && w < 120; i++)
				w += snprintf(what + w, sizeof what - (size_t)w, "%s%s", i ? ", " : " (",
					      ir_dtype_name(st->op->in[i]->dtype));
			for (int d = 0; y && st->kind != CG_STEP_KERNEL && d < y->shape.rank && w < 140;
			     d++)
				w += snprintf(what + w, sizeof what - (size_t)w, "%s%lld", d ? "x" : ") -> ",
					      (long long)y->shape.dim[d]);
			fprintf(stderr, "  %8.3f ms  %5.1f%%  step %d (op %d): %s\n",
				e->prof_ms[order[k]] / e->prof_runs, 100 * e->prof_ms[order[k]] / total,
				order[k], st->op->id, what);
		}
		/* by kind: the op each kernel or library call is rooted at */
		double kind_ms[IR_OP_COUNT] = { 0 };
		int kind_n[IR_OP_COUNT] = { 0 };
		for (int s = 0; s < n; s++) {
			kind_ms[p->steps[s].op->kind] += e->prof_ms[s];
			kind_n[p->steps[s].op->kind]++;
		}
		fprintf(stderr, "profile: by kind of op, a run:\n");
		for (int k = 0; k < TOP; k++) {
			int best = -1;
			for (int o = 0; o < IR_OP_COUNT; o++)
				if (kind_n[o] && (best < 0 || kind_ms[o] > kind_ms[best]))
					best = o;
			if (best < 0)
				break;
			fprintf(stderr, "  %8.3f ms  %5.1f%%  %s (%d)\n", kind_ms[best] / e->prof_runs,
				100 * kind_ms[best] / total, ir_op_name(best), kind_n[best]);
			kind_n[best] = 0;
		}
	}
	for (int i = 0; i < 2 * n; i++)
		rt_gpu_event_free(e->pev[i]);
	free(e->pev);
	free(e->prof_ms);
	e->pev = NULL;
}

/* SLUICE_CUDA_GRAPHS=0 turns the graphs off (every run queues its launches) */
static int graphs_on(void)
{
	static int on = -1;
	if (on < 0) {
		const char *v = getenv("SLUICE_CUDA_GRAPHS");
		on = !v || strcmp(v, "0");
	}
	return on;
}

/* The chunk's steps as a CUDA graph: the first run with a set of bound pointers queues
 * them (and warms up the library GEMMs' choices), the second captures them, and every
 * later run with the same pointers replays the graph, one launch instead of one per
 * step.  The replay runs the same kernels with the same arguments in the same order, so
 * it computes the same bits. */
static int cuda_run(struct cg_exec *e)
{
	const struct cg_plan *p = &e->plan;
	for (int s = 0; s < p->n_steps; s++) {
		const struct cg_step *st = &p->steps[s];
		for (int i = 0; i < st->n_bufs; i++) {
			int b = st->bufs[i];
			if (!e->ptr[b] && p->buf_numel[b]) {
				fprintf(stderr, "sluice: the CUDA backend: value %%%d is read by op %d "
					"(%s) but was never bound\n", b, st->op->id,
					ir_op_name(st->op->kind));
				return 1;
			}
		}
	}
	if (profile_on()) {
		if (!e->pev && profile_begin(e))
			return 1;
		return run_steps(e);
	}
	if (!graphs_on())
		return run_steps(e);
	size_t bytes = sizeof *e->ptr * (size_t)e->g->n_values;
	struct replay *r = NULL;
	for (int i = 0; i < e->n_replays && !r; i++)
		if (!memcmp(e->replay[i].ptr, e->ptr, bytes))
			r = &e->replay[i];
	if (!r && e->n_replays < MAX_REPLAYS) {
		r = &e->replay[e->n_replays++];
		r->ptr = rt_malloc(bytes);
		memcpy(r->ptr, e->ptr, bytes);
	}
	if (!r || r->runs < 0 || r->runs++ == 0)
		return run_steps(e);
	if (!r->graph) {
		if (rt_gpu_capture_begin(e->gpu, RT_STREAM_COMPUTE)) {
			r->runs = -1;
			return run_steps(e);
		}
		int rc = run_steps(e);
		r->graph = rt_gpu_capture_end(e->gpu, RT_STREAM_COMPUTE, !rc);
		if (!r->graph) {
			fprintf(stderr, "sluice: the CUDA backend: a chunk's launches could not be "
				"captured as a CUDA graph; they run one by one\n");
			r->runs = -1;
			return run_steps(e);
		}
	}
	return rt_gpu_graph_launch(e->gpu, r->graph, RT_STREAM_COMPUTE);
}

static int64_t cuda_arena_bytes(const struct cg_exec *e)
{
	return e->arena_bytes;
}

const struct cg_backend cg_backend_cuda = {
	.name = "cuda",
	.compile = cuda_compile,
	.bind = cuda_bind,
	.run = cuda_run,
	.tensor = cuda_tensor,
	.free = cuda_free,
	.arena_bytes = cuda_arena_bytes,
	.narrow = 1,
};
#endif
