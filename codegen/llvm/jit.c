/* jit.c - ORC LLJIT for kernels, with a target machine for the host CPU and its
 * features (so the O3 pipeline vectorises for AVX2/AVX-512 where the CPU has them).
 *
 * One LLJIT per cg_jit: kernels of one compiled graph go into one module, optimised
 * with LLVMRunPasses("default<O3>") against the host target machine, then handed to
 * the JIT.  Calls to the C library (tanhf, logf, ...) resolve against the process. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "llvm_impl.h"
#include "runtime/rt.h"

struct cg_jit {
	LLVMOrcLLJITRef jit;
	LLVMTargetMachineRef tm;   /* for the optimisation pipeline */
	char *triple, *cpu, *features;
	char *desc;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_failed;

static void init_llvm(void)
{
	init_failed = LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter();
}

/* Report and consume an LLVM error; returns 1 when there was one. */
static int llvm_failed(LLVMErrorRef e, const char *what, FILE *err)
{
	if (!e)
		return 0;
	char *msg = LLVMGetErrorMessage(e);
	fprintf(err, "sluice: LLVM: %s: %s\n", what, msg);
	LLVMDisposeErrorMessage(msg);
	return 1;
}

static LLVMTargetMachineRef host_tm(struct cg_jit *j, FILE *err)
{
	LLVMTargetRef target;
	char *msg = NULL;
	if (LLVMGetTargetFromTriple(j->triple, &target, &msg)) {
		fprintf(err, "sluice: LLVM: no target for %s: %s\n", j->triple, msg);
		LLVMDisposeMessage(msg);
		return NULL;
	}
	return LLVMCreateTargetMachine(target, j->triple, j->cpu, j->features,
				       LLVMCodeGenLevelAggressive, LLVMRelocDefault,
				       LLVMCodeModelJITDefault);
}

static char *dup_dispose(char *s)
{
	char *r = rt_strdup(s);
	LLVMDisposeMessage(s);
	return r;
}

struct cg_jit *cg_jit_new(FILE *err)
{
	pthread_once(&init_once, init_llvm);
	if (init_failed) {
		fprintf(err, "sluice: LLVM: cannot initialise the native target\n");
		return NULL;
	}
	struct cg_jit *j = rt_calloc(1, sizeof *j);
	j->triple = dup_dispose(LLVMGetDefaultTargetTriple());
	j->cpu = dup_dispose(LLVMGetHostCPUName());
	j->features = dup_dispose(LLVMGetHostCPUFeatures());
	j->tm = host_tm(j, err);
	LLVMTargetMachineRef jtm = j->tm ? host_tm(j, err) : NULL;
	if (!jtm) {
		cg_jit_free(j);
		return NULL;
	}
	LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
	LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
		builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(jtm));
	if (llvm_failed(LLVMOrcCreateLLJIT(&j->jit, builder), "creating the JIT", err)) {
		j->jit = NULL;
		cg_jit_free(j);
		return NULL;
	}
	LLVMOrcDefinitionGeneratorRef gen;
	if (llvm_failed(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
				&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit), NULL, NULL),
			"process symbols", err)) {
		cg_jit_free(j);
		return NULL;
	}
	LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
	size_t n = strlen(j->cpu) + 2;
	j->desc = rt_malloc(n);
	snprintf(j->desc, n, "%s", j->cpu);
	return j;
}

void cg_jit_free(struct cg_jit *j)
{
	if (!j)
		return;
	if (j->jit)
		llvm_failed(LLVMOrcDisposeLLJIT(j->jit), "disposing of the JIT", stderr);
	if (j->tm)
		LLVMDisposeTargetMachine(j->tm);
	free(j->triple);
	free(j->cpu);
	free(j->features);
	free(j->desc);
	free(j);
}

const char *cg_jit_cpu(const struct cg_jit *j)
{
	return j->desc;
}

/* Optimisation remarks ("loop not vectorized") are for kernel authors, not users:
 * errors are printed, the rest dropped unless SLUICE_LLVM_REMARKS is set. */
static void diagnostic(LLVMDiagnosticInfoRef di, void *ctx)
{
	(void)ctx;
	if (LLVMGetDiagInfoSeverity(di) != LLVMDSError && !getenv("SLUICE_LLVM_REMARKS"))
		return;
	char *msg = LLVMGetDiagInfoDescription(di);
	fprintf(stderr, "sluice: LLVM: %s\n", msg);
	LLVMDisposeMessage(msg);
}

int cg_jit_compile(struct cg_jit *j, struct kir_kernel *const *ks, int n, cg_kernel_fn *fns,
		   FILE *dump, FILE *err)
{
	LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
	LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
	LLVMContextSetDiagnosticHandler(ctx, diagnostic, NULL);
	LLVMModuleRef m = LLVMModuleCreateWithNameInContext("sluice_kernels", ctx);
	LLVMSetTarget(m, j->triple);
	LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(j->tm);
	LLVMSetModuleDataLayout(m, dl);
	LLVMDisposeTargetData(dl);

	cg_render_kernels(m, ks, n, j->cpu, j->features);

	char *msg = NULL;
	if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
		fprintf(err, "sluice: internal error: invalid LLVM IR from kernel IR: %s\n", msg);
		LLVMDisposeMessage(msg);
		LLVMDisposeModule(m);
		LLVMOrcDisposeThreadSafeContext(tsc);
		return 1;
	}
	LLVMDisposeMessage(msg);

	LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
	LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
	LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
	/* Unrolling and interleaving multiply code size (and compile time, which is paid
	 * at every start) about sevenfold for little gain on memory-bound kernels. */
	LLVMPassBuilderOptionsSetLoopInterleaving(opts, 0);
	LLVMPassBuilderOptionsSetLoopUnrolling(opts, 0);
	LLVMErrorRef e = LLVMRunPasses(m, "default<O3>", j->tm, opts);
	LLVMDisposePassBuilderOptions(opts);
	if (llvm_failed(e, "optimising kernels", err)) {
		LLVMDisposeModule(m);
		LLVMOrcDisposeThreadSafeContext(tsc);
		return 1;
	}
	if (dump) {
		char *text = LLVMPrintModuleToString(m);
		fputs(text, dump);
		LLVMDisposeMessage(text);
	}

	LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc);
	LLVMOrcDisposeThreadSafeContext(tsc); /* the module keeps the context alive */
	e = LLVMOrcLLJITAddLLVMIRModule(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), tsm);
	if (llvm_failed(e, "adding kernels to the JIT", err)) {
		LLVMOrcDisposeThreadSafeModule(tsm);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		LLVMOrcExecutorAddress addr = 0;
		if (llvm_failed(LLVMOrcLLJITLookup(j->jit, &addr, ks[i]->name), ks[i]->name, err))
			return 1;
		fns[i] = (cg_kernel_fn)(uintptr_t)addr;
	}
	return 0;
}
