/* render.c - kernel IR to LLVM IR through the LLVM C API.
 *
 * Every variable of a kernel becomes an alloca in the entry block; O3's SROA/mem2reg
 * turns them into SSA registers, so loops come out in the canonical form the loop
 * vectoriser wants.  Loops are emitted as header (test), body, latch (increment, back
 * edge).  A reduction loop carries llvm.loop.vectorize.enable: that is what allows the
 * vectoriser to reorder a floating-point sum (KIR leaves the order of a reduction to
 * the renderer), which it otherwise keeps strict.
 *
 * exp of f32 is expanded inline (Cephes' expf: range reduction by ln 2 and a degree-6
 * polynomial, about 1 ulp) rather than calling expf, so that loops containing it
 * vectorise; arguments are clamped to [-87, 88], so results below e^-87 (denormals and
 * zero) come out as e^-87 ~ 1.6e-38.  Other transcendental functions call the C
 * library through LLVM's intrinsics or by name.
 *
 * A block kernel (kir.h) runs as one thread per point: spread loops and reductions are
 * plain ones, barriers nothing, shared arrays arrays on the stack.  bf16 buffers are
 * arrays of i16 (the upper half of an f32), f16 ones arrays of half. */
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>

#include "llvm_impl.h"
#include "runtime/rt.h"

struct rd {
	LLVMContextRef c;
	LLVMModuleRef m;
	LLVMBuilderRef b;
	LLVMValueRef fn;
	const struct kir_kernel *k;
	LLVMValueRef *bufs;   /* typed pointers */
	LLVMValueRef *slots;  /* one alloca per variable */
	LLVMValueRef *shared; /* one alloca per shared array */
	unsigned md_loop;
};

static LLVMTypeRef ty(struct rd *r, enum kir_type t)
{
	switch (t) {
	case KIR_F32: return LLVMFloatTypeInContext(r->c);
	case KIR_F64: return LLVMDoubleTypeInContext(r->c);
	case KIR_I32: return LLVMInt32TypeInContext(r->c);
	case KIR_I64: return LLVMInt64TypeInContext(r->c);
	case KIR_BOOL: return LLVMInt1TypeInContext(r->c);
	case KIR_BF16: return LLVMInt16TypeInContext(r->c);
	case KIR_F16: return LLVMHalfTypeInContext(r->c);
	case KIR_F8E4M3: case KIR_F8E5M2: break; /* the CPU target stores f8 in f32 */
	}
	RT_BUG("kir: bad type %d", (int)t);
}

/* A declaration of an intrinsic or libm function of one or two operands of type t. */
static LLVMValueRef callee(struct rd *r, const char *name, LLVMTypeRef t, int nargs,
			   LLVMTypeRef *fty)
{
	LLVMTypeRef params[2] = { t, t };
	*fty = LLVMFunctionType(t, params, (unsigned)nargs, 0);
	LLVMValueRef f = LLVMGetNamedFunction(r->m, name);
	if (!f)
		f = LLVMAddFunction(r->m, name, *fty);
	return f;
}

static LLVMValueRef call1(struct rd *r, const char *base, LLVMValueRef a, int f32)
{
	char name[64];
	LLVMTypeRef fty;
	if (!strncmp(base, "llvm.", 5))
		snprintf(name, sizeof name, "%s.%s", base, f32 ? "f32" : "f64");
	else
		snprintf(name, sizeof name, "%s%s", base, f32 ? "f" : "");
	LLVMValueRef f = callee(r, name, LLVMTypeOf(a), 1, &fty);
	return LLVMBuildCall2(r->b, fty, f, &a, 1, "");
}

static LLVMValueRef call2(struct rd *r, const char *base, LLVMValueRef a, LLVMValueRef b,
			  int f32)
{
	char name[64];
	LLVMTypeRef fty;
	snprintf(name, sizeof name, "%s.%s", base, f32 ? "f32" : "f64");
	LLVMValueRef f = callee(r, name, LLVMTypeOf(a), 2, &fty);
	LLVMValueRef args[2] = { a, b };
	return LLVMBuildCall2(r->b, fty, f, args, 2, "");
}

static LLVMValueRef fconst(struct rd *r, double v)
{
	return LLVMConstReal(LLVMFloatTypeInContext(r->c), v);
}

/* Cephes expf, written out in IR so that it vectorises. */
static LLVMValueRef exp_f32(struct rd *r, LLVMValueRef x)
{
	LLVMBuilderRef b = r->b;
	LLVMValueRef lo = fconst(r, -87.0), hi = fconst(r, 88.0);
	x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, lo, ""), lo, x, "");
	x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, hi, ""), hi, x, "");
	LLVMValueRef n = LLVMBuildFAdd(b, LLVMBuildFMul(b, x, fconst(r, 1.44269504088896341), ""),
				       fconst(r, 0.5), "");
	n = call1(r, "llvm.floor", n, 1);
	LLVMValueRef t = LLVMBuildFSub(b, x, LLVMBuildFMul(b, n, fconst(r, 0.693359375), ""), "");
	t = LLVMBuildFSub(b, t, LLVMBuildFMul(b, n, fconst(r, -2.12194440e-4), ""), "");
	static const double c[] = { 1.9875691500E-4, 1.3981999507E-3, 8.3334519073E-3,
				    4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1 };
	LLVMValueRef p = fconst(r, c[0]);
	for (int i = 1; i < 6; i++)
		p = LLVMBuildFAdd(b, LLVMBuildFMul(b, p, t, ""), fconst(r, c[i]), "");
	LLVMValueRef t2 = LLVMBuildFMul(b, t, t, "");
	p = LLVMBuildFAdd(b, LLVMBuildFAdd(b, LLVMBuildFMul(b, p, t2, ""), t, ""),
			  fconst(r, 1.0), "");
	LLVMTypeRef i32 = LLVMInt32TypeInContext(r->c);
	LLVMValueRef e = LLVMBuildFPToSI(b, n, i32, "");
	e = LLVMBuildShl(b, LLVMBuildAdd(b, e, LLVMConstInt(i32, 127, 0), ""),
			 LLVMConstInt(i32, 23, 0), "");
	LLVMValueRef scale = LLVMBuildBitCast(b, e, LLVMFloatTypeInContext(r->c), "");
	return LLVMBuildFMul(b, p, scale, "");
}

static LLVMValueRef expr(struct rd *r, const struct kir_expr *e);

/* f32 rounded to the nearest bf16 (ties to even), as the bits of an f32; NaNs pass */
static LLVMValueRef round_bf16_bits(struct rd *r, LLVMValueRef a)
{
	LLVMBuilderRef b = r->b;
	LLVMTypeRef i32 = LLVMInt32TypeInContext(r->c);
	LLVMValueRef bits = LLVMBuildBitCast(b, a, i32, "");
	LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, bits, LLVMConstInt(i32, 16, 0), ""),
					LLVMConstInt(i32, 1, 0), "");
	LLVMValueRef rnd = LLVMBuildAdd(b, bits, LLVMBuildAdd(b, odd, LLVMConstInt(i32, 0x7fff, 0), ""), "");
	rnd = LLVMBuildAnd(b, rnd, LLVMConstInt(i32, 0xffff0000u, 0), "");
	return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealUNO, a, a, ""), bits, rnd, "");
}

/* f32 a rounded to the nearest value of a float format with prec bits of precision, least
 * normal exponent emin and largest value maxv (ties to even, subnormals kept, saturating
 * past maxv, NaN kept), as the reference's round_format: with lead the exponent of a's
 * leading bit (at least emin) and u = 2^(lead - prec + 1) the format's spacing there,
 * rint(a / u) * u, where the division and the product are exact (u is a power of two). */
static LLVMValueRef round_f8(struct rd *r, LLVMValueRef a, int prec, int emin, double maxv)
{
	LLVMBuilderRef b = r->b;
	LLVMTypeRef i32 = LLVMInt32TypeInContext(r->c), f32 = LLVMFloatTypeInContext(r->c);
	LLVMValueRef bits = LLVMBuildBitCast(b, a, i32, "");
	LLVMValueRef ex = LLVMBuildLShr(b, LLVMBuildAnd(b, bits, LLVMConstInt(i32, 0x7fffffff, 0), ""),
					LLVMConstInt(i32, 23, 0), "");
	ex = LLVMBuildSub(b, ex, LLVMConstInt(i32, 127, 0), "");
	LLVMValueRef lo = LLVMConstInt(i32, (unsigned long long)(long long)emin, 1);
	LLVMValueRef lead = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, ex, lo, ""), lo, ex, "");
	LLVMValueRef ue = LLVMBuildSub(b, lead, LLVMConstInt(i32, (unsigned)(prec - 1), 0), "");
	LLVMValueRef u = LLVMBuildBitCast(
		b, LLVMBuildShl(b, LLVMBuildAdd(b, ue, LLVMConstInt(i32, 127, 0), ""),
				LLVMConstInt(i32, 23, 0), ""), f32, "");
	LLVMValueRef inv = LLVMBuildBitCast(
		b, LLVMBuildShl(b, LLVMBuildSub(b, LLVMConstInt(i32, 127, 0), ue, ""),
				LLVMConstInt(i32, 23, 0), ""), f32, "");
	LLVMValueRef q = LLVMBuildFMul(b, call1(r, "llvm.rint", LLVMBuildFMul(b, a, inv, ""), 1), u, "");
	LLVMValueRef big = LLVMBuildFCmp(b, LLVMRealOGT, call1(r, "llvm.fabs", q, 1),
					 LLVMConstReal(f32, maxv), "");
	LLVMValueRef sat = call2(r, "llvm.copysign", LLVMConstReal(f32, maxv), a, 1);
	return LLVMBuildSelect(b, big, sat, q, "");
}

/* An element of storage type t at p, as a value (bf16 and f16 widen to f32). */
static LLVMValueRef load_elem(struct rd *r, enum kir_type t, LLVMValueRef p)
{
	LLVMBuilderRef b = r->b;
	LLVMValueRef v = LLVMBuildLoad2(b, ty(r, t), p, "");
	LLVMTypeRef f32 = LLVMFloatTypeInContext(r->c), i32 = LLVMInt32TypeInContext(r->c);
	if (t == KIR_BF16) {
		v = LLVMBuildShl(b, LLVMBuildZExt(b, v, i32, ""), LLVMConstInt(i32, 16, 0), "");
		return LLVMBuildBitCast(b, v, f32, "");
	}
	if (t == KIR_F16)
		return LLVMBuildFPExt(b, v, f32, "");
	return v;
}

static void store_elem(struct rd *r, enum kir_type t, LLVMValueRef p, LLVMValueRef v)
{
	LLVMBuilderRef b = r->b;
	if (t == KIR_BF16) {
		LLVMTypeRef i32 = LLVMInt32TypeInContext(r->c);
		v = LLVMBuildLShr(b, round_bf16_bits(r, v), LLVMConstInt(i32, 16, 0), "");
		v = LLVMBuildTrunc(b, v, ty(r, t), "");
	} else if (t == KIR_F16) {
		v = LLVMBuildFPTrunc(b, v, ty(r, t), "");
	}
	LLVMBuildStore(b, v, p);
}

/* llvm.loop metadata with llvm.loop.vectorize.enable = true on the back edge br. */
static void mark_vectorize(struct rd *r, LLVMValueRef br)
{
	LLVMMetadataRef tmp = LLVMTemporaryMDNode(r->c, NULL, 0);
	LLVMMetadataRef kv[2] = {
		LLVMMDStringInContext2(r->c, "llvm.loop.vectorize.enable", 26),
		LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(r->c), 1, 0)),
	};
	LLVMMetadataRef ops[2] = { tmp, LLVMMDNodeInContext2(r->c, kv, 2) };
	LLVMMetadataRef loop = LLVMMDNodeInContext2(r->c, ops, 2);
	LLVMMetadataReplaceAllUsesWith(tmp, loop);
	LLVMSetMetadata(br, r->md_loop, LLVMMetadataAsValue(r->c, loop));
}

/* Loop skeleton: var in [lo, hi).  Returns the latch block to finish with loop_end. */
struct loop {
	LLVMBasicBlockRef head, body, exit;
	LLVMValueRef hi;
	int var;
};

static struct loop loop_begin(struct rd *r, int var, LLVMValueRef lo, LLVMValueRef hi)
{
	struct loop l = { 0 };
	l.var = var;
	l.hi = hi;
	l.head = LLVMAppendBasicBlockInContext(r->c, r->fn, "head");
	l.body = LLVMAppendBasicBlockInContext(r->c, r->fn, "body");
	l.exit = LLVMAppendBasicBlockInContext(r->c, r->fn, "exit");
	LLVMBuildStore(r->b, lo, r->slots[var]);
	LLVMBuildBr(r->b, l.head);
	LLVMPositionBuilderAtEnd(r->b, l.head);
	LLVMTypeRef i64 = LLVMInt64TypeInContext(r->c);
	LLVMValueRef i = LLVMBuildLoad2(r->b, i64, r->slots[var], "");
	LLVMBuildCondBr(r->b, LLVMBuildICmp(r->b, LLVMIntSLT, i, hi, ""), l.body, l.exit);
	LLVMPositionBuilderAtEnd(r->b, l.body);
	return l;
}

static void loop_end(struct rd *r, struct loop *l, int vectorize)
{
	LLVMTypeRef i64 = LLVMInt64TypeInContext(r->c);
	LLVMValueRef i = LLVMBuildLoad2(r->b, i64, r->slots[l->var], "");
	LLVMBuildStore(r->b, LLVMBuildAdd(r->b, i, LLVMConstInt(i64, 1, 0), ""),
		       r->slots[l->var]);
	LLVMValueRef br = LLVMBuildBr(r->b, l->head);
	if (vectorize)
		mark_vectorize(r, br);
	LLVMPositionBuilderAtEnd(r->b, l->exit);
}

static LLVMValueRef reduce(struct rd *r, const struct kir_expr *e)
{
	LLVMTypeRef t = ty(r, e->type);
	LLVMValueRef lo = expr(r, e->a), hi = expr(r, e->b);
	/* the accumulator lives in an alloca of the entry block like any variable */
	LLVMBasicBlockRef cur = LLVMGetInsertBlock(r->b);
	LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(r->fn);
	LLVMPositionBuilder(r->b, entry, LLVMGetFirstInstruction(entry));
	LLVMValueRef acc = LLVMBuildAlloca(r->b, t, "acc");
	LLVMPositionBuilderAtEnd(r->b, cur);
	LLVMBuildStore(r->b, LLVMConstReal(t, e->red == KIR_RED_SUM ? 0.0 : -1.0 / 0.0), acc);
	struct loop l = loop_begin(r, e->var, lo, hi);
	LLVMValueRef v = expr(r, e->c);
	LLVMValueRef a = LLVMBuildLoad2(r->b, t, acc, "");
	if (e->red == KIR_RED_SUM)
		a = LLVMBuildFAdd(r->b, a, v, "");
	else
		a = LLVMBuildSelect(r->b, LLVMBuildFCmp(r->b, LLVMRealOGT, v, a, ""), v, a, "");
	LLVMBuildStore(r->b, a, acc);
	/* a max stays unvectorised: without no-NaN flags LLVM cannot reorder it */
	loop_end(r, &l, e->red == KIR_RED_SUM);
	return LLVMBuildLoad2(r->b, t, acc, "");
}

static LLVMValueRef convert(struct rd *r, LLVMValueRef v, enum kir_type from,
			    enum kir_type to)
{
	LLVMBuilderRef b = r->b;
	LLVMTypeRef t = ty(r, to);
	int ff = kir_type_is_float(from), ft = kir_type_is_float(to);
	if (to == KIR_BOOL)
		return ff ? LLVMBuildFCmp(b, LLVMRealUNE, v, LLVMConstReal(ty(r, from), 0), "")
			  : LLVMBuildICmp(b, LLVMIntNE, v, LLVMConstInt(ty(r, from), 0, 0), "");
	if (from == KIR_BOOL)
		return ft ? LLVMBuildUIToFP(b, v, t, "") : LLVMBuildZExt(b, v, t, "");
	if (ff && ft)
		return to == KIR_F64 ? LLVMBuildFPExt(b, v, t, "") : LLVMBuildFPTrunc(b, v, t, "");
	if (ff)
		return LLVMBuildFPToSI(b, v, t, "");
	if (ft)
		return LLVMBuildSIToFP(b, v, t, "");
	return to == KIR_I64 ? LLVMBuildSExt(b, v, t, "") : LLVMBuildTrunc(b, v, t, "");
}

static LLVMValueRef expr(struct rd *r, const struct kir_expr *e)
{
	LLVMBuilderRef b = r->b;
	int fl = kir_type_is_float(e->type);
	int f32 = e->type == KIR_F32;
	switch (e->op) {
	case KIR_CONST:
		return fl ? LLVMConstReal(ty(r, e->type), e->f)
			  : LLVMConstInt(ty(r, e->type), (unsigned long long)e->i, 1);
	case KIR_VAR:
		return LLVMBuildLoad2(b, ty(r, e->type), r->slots[e->var], "");
	case KIR_LOAD:
	case KIR_SLOAD: {
		int sh = e->op == KIR_SLOAD;
		enum kir_type t = sh ? r->k->shared[e->buf].type : r->k->bufs[e->buf].type;
		LLVMValueRef idx = expr(r, e->a);
		LLVMValueRef p = LLVMBuildGEP2(b, ty(r, t), sh ? r->shared[e->buf] : r->bufs[e->buf],
					       &idx, 1, "");
		return load_elem(r, t, p);
	}
	case KIR_CVT:
		return convert(r, expr(r, e->a), e->a->type, e->type);
	case KIR_SELECT: {
		LLVMValueRef c = expr(r, e->a), x = expr(r, e->b), y = expr(r, e->c);
		return LLVMBuildSelect(b, c, x, y, "");
	}
	case KIR_REDUCE:
		return reduce(r, e);
	default:
		break;
	}
	if (e->op < KIR_ADD) {
		LLVMValueRef a = expr(r, e->a);
		switch (e->op) {
		case KIR_NEG: return fl ? LLVMBuildFNeg(b, a, "") : LLVMBuildNeg(b, a, "");
		case KIR_EXP: return f32 ? exp_f32(r, a) : call1(r, "llvm.exp", a, 0);
		case KIR_LOG: return call1(r, "llvm.log", a, f32);
		case KIR_SQRT: return call1(r, "llvm.sqrt", a, f32);
		case KIR_SIN: return call1(r, "llvm.sin", a, f32);
		case KIR_COS: return call1(r, "llvm.cos", a, f32);
		case KIR_TANH: return call1(r, "tanh", a, f32);
		case KIR_ABS:
			if (fl)
				return call1(r, "llvm.fabs", a, f32);
			return LLVMBuildSelect(
				b, LLVMBuildICmp(b, LLVMIntSLT, a, LLVMConstInt(ty(r, e->type), 0, 0), ""),
				LLVMBuildNeg(b, a, ""), a, "");
		case KIR_NOT: return LLVMBuildNot(b, a, "");
		case KIR_RBF16:
			/* round to nearest even on the upper 16 bits; NaNs pass unchanged */
			return LLVMBuildBitCast(b, round_bf16_bits(r, a), LLVMTypeOf(a), "");
		case KIR_RF8E4M3: return round_f8(r, a, 4, -6, 448.0);
		case KIR_RF8E5M2: return round_f8(r, a, 3, -14, 57344.0);
		case KIR_RF16: {
			LLVMValueRef h = LLVMBuildFPTrunc(b, a, LLVMHalfTypeInContext(r->c), "");
			return LLVMBuildFPExt(b, h, LLVMTypeOf(a), "");
		}
		default: RT_BUG("kir: bad unary op %d", (int)e->op);
		}
	}
	LLVMValueRef a = expr(r, e->a), c = expr(r, e->b);
	int af = kir_type_is_float(e->a->type);
	switch (e->op) {
	case KIR_ADD: return fl ? LLVMBuildFAdd(b, a, c, "") : LLVMBuildAdd(b, a, c, "");
	case KIR_SUB: return fl ? LLVMBuildFSub(b, a, c, "") : LLVMBuildSub(b, a, c, "");
	case KIR_MUL: return fl ? LLVMBuildFMul(b, a, c, "") : LLVMBuildMul(b, a, c, "");
	case KIR_DIV: return fl ? LLVMBuildFDiv(b, a, c, "") : LLVMBuildSDiv(b, a, c, "");
	case KIR_REM: return fl ? LLVMBuildFRem(b, a, c, "") : LLVMBuildSRem(b, a, c, "");
	case KIR_POW: return call2(r, "llvm.pow", a, c, f32);
	case KIR_MAX:
	case KIR_MIN: {
		int mx = e->op == KIR_MAX;
		LLVMValueRef gt = fl ? LLVMBuildFCmp(b, mx ? LLVMRealOGT : LLVMRealOLT, a, c, "")
				     : LLVMBuildICmp(b, mx ? LLVMIntSGT : LLVMIntSLT, a, c, "");
		return LLVMBuildSelect(b, gt, a, c, "");
	}
	case KIR_LT: return af ? LLVMBuildFCmp(b, LLVMRealOLT, a, c, "") : LLVMBuildICmp(b, LLVMIntSLT, a, c, "");
	case KIR_LE: return af ? LLVMBuildFCmp(b, LLVMRealOLE, a, c, "") : LLVMBuildICmp(b, LLVMIntSLE, a, c, "");
	case KIR_EQ: return af ? LLVMBuildFCmp(b, LLVMRealOEQ, a, c, "") : LLVMBuildICmp(b, LLVMIntEQ, a, c, "");
	case KIR_NE: return af ? LLVMBuildFCmp(b, LLVMRealUNE, a, c, "") : LLVMBuildICmp(b, LLVMIntNE, a, c, "");
	case KIR_AND: return LLVMBuildAnd(b, a, c, "");
	case KIR_OR: return LLVMBuildOr(b, a, c, "");
	default: RT_BUG("kir: bad binary op %d", (int)e->op);
	}
}

static void block(struct rd *r, const struct kir_block *bl)
{
	LLVMBuilderRef b = r->b;
	for (const struct kir_stmt *s = bl->head; s; s = s->next) {
		switch (s->kind) {
		case KIR_S_LOOP: {
			LLVMValueRef lo = expr(r, s->lo), hi = expr(r, s->hi);
			struct loop l = loop_begin(r, s->var, lo, hi);
			block(r, &s->body);
			loop_end(r, &l, 0);
			break;
		}
		case KIR_S_STORE:
		case KIR_S_STORE_ADD: {
			enum kir_type t = r->k->bufs[s->buf].type;
			LLVMValueRef idx = expr(r, s->idx);
			LLVMValueRef v = expr(r, s->val);
			LLVMValueRef p = LLVMBuildGEP2(b, ty(r, t), r->bufs[s->buf], &idx, 1, "");
			if (s->kind == KIR_S_STORE_ADD) {
				LLVMValueRef old = load_elem(r, t, p);
				v = kir_type_is_float(kir_value_type(t)) ? LLVMBuildFAdd(b, old, v, "")
									 : LLVMBuildAdd(b, old, v, "");
			}
			store_elem(r, t, p, v);
			break;
		}
		case KIR_S_SSTORE: {
			enum kir_type t = r->k->shared[s->buf].type;
			LLVMValueRef idx = expr(r, s->idx);
			LLVMValueRef v = expr(r, s->val);
			store_elem(r, t, LLVMBuildGEP2(b, ty(r, t), r->shared[s->buf], &idx, 1, ""), v);
			break;
		}
		case KIR_S_BARRIER: /* one thread per block */
			break;
		case KIR_S_SET:
			LLVMBuildStore(b, expr(r, s->val), r->slots[s->var]);
			break;
		case KIR_S_IF: {
			LLVMValueRef c = expr(r, s->lo);
			LLVMBasicBlockRef th = LLVMAppendBasicBlockInContext(r->c, r->fn, "then");
			LLVMBasicBlockRef el = LLVMAppendBasicBlockInContext(r->c, r->fn, "else");
			LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(r->c, r->fn, "join");
			LLVMBuildCondBr(b, c, th, el);
			LLVMPositionBuilderAtEnd(b, th);
			block(r, &s->body);
			LLVMBuildBr(b, join);
			LLVMPositionBuilderAtEnd(b, el);
			block(r, &s->other);
			LLVMBuildBr(b, join);
			LLVMPositionBuilderAtEnd(b, join);
			break;
		}
		}
	}
}

static void add_fn_attr(struct rd *r, LLVMValueRef fn, const char *name)
{
	unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
	LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(r->c, kind, 0));
}

/* Two functions per kernel: the body takes every buffer as a typed noalias pointer (a
 * kernel's buffers never overlap: memplan gives a step's outputs memory apart from its
 * inputs, and a buffer appears once in a kernel's list), and the entry point
 * name(bufs, lo, hi) loads the pointers and calls it.  The body is inlined, and LLVM
 * turns noalias into alias scopes, so loops need no run-time overlap checks to
 * vectorise. */
static void render_one(struct rd *r, const struct kir_kernel *k, const char *cpu,
		       const char *features)
{
	LLVMTypeRef i8p = LLVMPointerType(LLVMInt8TypeInContext(r->c), 0);
	LLVMTypeRef i64 = LLVMInt64TypeInContext(r->c);
	LLVMTypeRef voidt = LLVMVoidTypeInContext(r->c);
	unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
	r->k = k;

	/* the body */
	int np = k->n_bufs + 2;
	LLVMTypeRef *bp = rt_calloc((size_t)np, sizeof *bp);
	for (int i = 0; i < k->n_bufs; i++)
		bp[i] = LLVMPointerType(ty(r, k->bufs[i].type), 0);
	bp[k->n_bufs] = bp[k->n_bufs + 1] = i64;
	LLVMTypeRef bty = LLVMFunctionType(voidt, bp, (unsigned)np, 0);
	char name[256];
	snprintf(name, sizeof name, "%s.body", k->name);
	LLVMValueRef body = LLVMAddFunction(r->m, name, bty);
	LLVMSetLinkage(body, LLVMInternalLinkage);
	LLVMAddTargetDependentFunctionAttr(body, "target-cpu", cpu);
	LLVMAddTargetDependentFunctionAttr(body, "target-features", features);
	add_fn_attr(r, body, "nounwind");
	add_fn_attr(r, body, "alwaysinline");
	for (int i = 0; i < k->n_bufs; i++)
		LLVMAddAttributeAtIndex(body, (unsigned)i + 1, LLVMCreateEnumAttribute(r->c, noalias, 0));
	r->fn = body;
	LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(r->c, body, "entry");
	LLVMPositionBuilderAtEnd(r->b, entry);
	r->bufs = rt_calloc((size_t)k->n_bufs + 1, sizeof *r->bufs);
	r->slots = rt_calloc((size_t)k->n_vars + 1, sizeof *r->slots);
	for (int v = 0; v < k->n_vars; v++)
		r->slots[v] = LLVMBuildAlloca(r->b, ty(r, k->vars[v].type), k->vars[v].name);
	r->shared = rt_calloc((size_t)k->n_shared + 1, sizeof *r->shared);
	for (int i = 0; i < k->n_shared; i++)
		r->shared[i] = LLVMBuildArrayAlloca(r->b, ty(r, k->shared[i].type),
						    LLVMConstInt(i64, (unsigned long long)k->shared[i].count, 0),
						    k->shared[i].name);
	for (int i = 0; i < k->n_bufs; i++)
		r->bufs[i] = LLVMGetParam(body, (unsigned)i);
	struct loop l = loop_begin(r, 0, LLVMGetParam(body, (unsigned)k->n_bufs),
				   LLVMGetParam(body, (unsigned)k->n_bufs + 1));
	block(r, &k->body);
	loop_end(r, &l, 0);
	LLVMBuildRetVoid(r->b);

	/* the entry point */
	LLVMTypeRef params[3] = { LLVMPointerType(i8p, 0), i64, i64 };
	LLVMValueRef fn = LLVMAddFunction(r->m, k->name, LLVMFunctionType(voidt, params, 3, 0));
	LLVMAddTargetDependentFunctionAttr(fn, "target-cpu", cpu);
	LLVMAddTargetDependentFunctionAttr(fn, "target-features", features);
	add_fn_attr(r, fn, "nounwind");
	LLVMPositionBuilderAtEnd(r->b, LLVMAppendBasicBlockInContext(r->c, fn, "entry"));
	LLVMValueRef *args = rt_calloc((size_t)np, sizeof *args);
	LLVMValueRef bufs = LLVMGetParam(fn, 0);
	for (int i = 0; i < k->n_bufs; i++) {
		LLVMValueRef idx = LLVMConstInt(i64, (unsigned long long)i, 0);
		LLVMValueRef p = LLVMBuildGEP2(r->b, i8p, bufs, &idx, 1, "");
		p = LLVMBuildLoad2(r->b, i8p, p, k->bufs[i].name);
		args[i] = LLVMBuildBitCast(r->b, p, bp[i], "");
	}
	args[k->n_bufs] = LLVMGetParam(fn, 1);
	args[k->n_bufs + 1] = LLVMGetParam(fn, 2);
	LLVMBuildCall2(r->b, bty, body, args, (unsigned)np, "");
	LLVMBuildRetVoid(r->b);
	free(args);
	free(bp);
	free(r->bufs);
	free(r->slots);
	free(r->shared);
}

void cg_render_kernels(LLVMModuleRef m, struct kir_kernel *const *ks, int n,
		       const char *cpu, const char *features)
{
	struct rd r = { 0 };
	r.m = m;
	r.c = LLVMGetModuleContext(m);
	r.b = LLVMCreateBuilderInContext(r.c);
	r.md_loop = LLVMGetMDKindIDInContext(r.c, "llvm.loop", 9);
	for (int i = 0; i < n; i++)
		render_one(&r, ks[i], cpu, features);
	LLVMDisposeBuilder(r.b);
}
