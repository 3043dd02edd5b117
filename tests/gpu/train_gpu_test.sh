#!/usr/bin/env bash
# train_gpu_test.sh SLUICE [1|2] - 'sluice train --device cuda' against the CPU.
#
# 1 (one GPU): tiny_gpt (two of its layers, batch 4 x seq 64: the CPU side is the
# reference executor where sluice is built without LLVM), 20 steps, on the CPU and on
# the GPU from the same seed and data: the losses step by step; a checkpoint saved on
# the GPU resumed on the CPU and one saved on the CPU resumed on the GPU (each against
# the uninterrupted run of the device it finishes on); a resume on the GPU against its
# uninterrupted run, bit for bit; the chunks replayed as CUDA graphs against their
# launches one by one (SLUICE_CUDA_GRAPHS=0), bit for bit.
# 2 (two GPUs): the same model at dp 2, at pp 2 (1f1b) and, for tiny_moe, at ep 2
# (--gpus 2) against one GPU training the same global batch (two micro-batches of 4
# sequences a step), ep 2 in fp32, bf16 and fp8; and pp 2 under zb1p, dualpipev and
# dualpipe over four micro-batches against one GPU training those.  Each run may take
# RUN_LIMIT seconds (600): a schedule that deadlocks fails rather than hangs.
# Each check runs for tiny_gpt, tiny_moe (two of its layers: one dense, one MoE) and
# tests/gpu/mlp_lm.sl (tiny_gpt without attention), or the model files in $MODELS; a
# model the CUDA backend has no kernel for yet is said and left out.
#
# Bounds.  Both devices train in fp32, but they add in other orders: the CPU backend
# (or the reference executor, float64 inside each op) and the GPU kernels (fp32
# reductions over other tiles); the optimizer rounds alike on both (test_gpu_optim).
# The first step's loss comes from the same weights and tokens: relative 1e-5 (seen on
# an H200 against the reference executor: 0 for all three models).  Later steps drift
# by rounding, amplified by AdamW (which divides by the root of small second moments)
# and, in tiny_moe, by routing near a tie: 1e-4 relative over 20 steps (seen: 6.1e-8
# tiny_gpt, 9.1e-8 tiny_moe, 1.2e-7 mlp_lm), far below what a wrong gradient does (it
# moves the loss by 1e-3 or more within a few steps).  Resume on one device is exact:
# the same kernels on the same inputs, so cuBLASLt's algorithms must not be chosen by
# timing, which may pick another one in another process (SLUICE_GEMM_TUNE=0 below).
# Without a GPU, or without the CUDA backend in this build, exit 77 (skipped).
set -u
SLUICE=$(realpath "$1")
MODE=${2:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/sluice-gpu-train.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
export NCCL_NVLS_ENABLE=0 SLUICE_GEMM_TUNE=0
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
skip() { echo "skipped: $*"; exit 77; }

"$SLUICE" devices >devices.txt 2>&1
ngpu=$(grep -c '^gpu [0-9]' devices.txt)
[ "$ngpu" -ge "$MODE" ] || skip "$MODE GPU(s) needed, $ngpu here"
cat "$ROOT"/README.md "$ROOT"/docs/*.md "$ROOT"/tools/*.c > text.txt
"$SLUICE" data text.txt -o text.bin --val-fraction 0.1 >/dev/null 2>&1 || { echo "FAIL: sluice data"; exit 1; }
STEPS=${STEPS:-20}

# run NAME DEVICE ARGS...: metrics in NAME.jsonl, output in NAME.out
run() {
	local name=$1 dev=$2
	shift 2
	timeout "${RUN_LIMIT:-600}" "$SLUICE" train "$MODEL" --device "$dev" --data text.bin --val-data text_val.bin \
		--steps "$STEPS" --eval-every 0 --quiet --set seq=64 --set batch=4 --set layers=2 \
		--set warmup=2 --out "$PWD/ck-$name" --metrics "$name.jsonl" "$@" >"$name.out" 2>&1
	local rc=$?
	[ $rc -eq 0 ] || { echo "== $name failed ($rc):"; tail -n 20 "$name.out"; }
	return $rc
}

# compare A B FIRST_BOUND BOUND [FROM]: losses of the steps both have (from step FROM)
compare() {
	python3 - "$@" <<'PY'
import json, sys
a, b, first, bound = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
frm = int(sys.argv[5]) if len(sys.argv) > 5 else 1
def losses(n):
    return {int(j["step"]): j["loss"] for j in map(json.loads, open(n + ".jsonl"))}
la, lb = losses(a), losses(b)
steps = sorted(s for s in la if s in lb and s >= frm)
if not steps:
    sys.exit("%s and %s share no step" % (a, b))
worst, bad = 0.0, []
for s in steps:
    r = abs(la[s] - lb[s]) / max(abs(la[s]), abs(lb[s]))
    worst = max(worst, r)
    if r > (first if s == steps[0] else bound):
        bad.append("step %d: %.9g against %.9g (relative %.3g)" % (s, la[s], lb[s], r))
r1 = abs(la[steps[0]] - lb[steps[0]]) / abs(lb[steps[0]])
print("%s against %s, steps %d-%d: step %d relative %.3g, worst %.3g%s" % (
    a, b, steps[0], steps[-1], steps[0], r1, worst, "" if not bad else "; " + "; ".join(bad)))
sys.exit(1 if bad else 0)
PY
}

one_gpu() {
	run cpu cpu || fail "cpu run"
	run gpu cuda || fail "gpu run"
	grep -E '^(device|train|done)' gpu.out
	compare gpu cpu 1e-5 1e-4 || fail "GPU losses against the CPU's"
	# the chunks replayed as CUDA graphs (the default) against their launches queued one
	# by one: the same kernels with the same arguments in the same order, bit for bit
	SLUICE_CUDA_GRAPHS=0 run gpu_nograph cuda || fail "gpu run without CUDA graphs"
	compare gpu gpu_nograph 0 0 || fail "CUDA graph replay differs from direct launches"
	grep -q "could not be captured" gpu.out && fail "a chunk was not captured: $(grep -m1 captured gpu.out)"
	# resume on the GPU: bit for bit
	run gpu_half cuda --stop-at $((STEPS / 2)) || fail "gpu, first half"
	run gpu_rest cuda --resume "$PWD/ck-gpu_half" || fail "gpu, resumed"
	compare gpu_rest gpu 0 0 || fail "GPU resume is not exact"
	# across devices: saved on one, resumed on the other
	run cpu_half cpu --stop-at $((STEPS / 2)) || fail "cpu, first half"
	run gpu_from_cpu cuda --resume "$PWD/ck-cpu_half" || fail "gpu resumed from a CPU checkpoint"
	run cpu_from_gpu cpu --resume "$PWD/ck-gpu_half" || fail "cpu resumed from a GPU checkpoint"
	compare gpu_from_cpu gpu 1e-4 1e-4 || fail "GPU resumed from the CPU's checkpoint"
	compare cpu_from_gpu cpu 1e-4 1e-4 || fail "CPU resumed from the GPU's checkpoint"
	# the first resumed step runs on the weights the other device saved
	compare gpu_from_cpu cpu 1e-5 1e-4 $((STEPS / 2 + 1)) || fail "GPU resumed, against the CPU run"
	# the weights' moving average, kept on the host from the GPU's copies
	run cpu_ema cpu --steps 5 --set ema=0.75 || fail "cpu, ema"
	run gpu_ema cuda --steps 5 --set ema=0.75 || fail "gpu, ema"
	ema_close ck-gpu_ema ck-cpu_ema || fail "the GPU's moving average against the CPU's"
	# bf16 (passes/bf16.c): the GPU stores bf16 values in 16 bits, the CPU rounds them in
	# f32 buffers at the same points, so the two differ only where another order of f32
	# sums puts a value on the other side of a bf16 rounding (2^-8 relative, in a few
	# elements): step 1 within 1e-3 relative, later steps 1e-2 (AdamW amplifies, as
	# for fp32); and bf16 must not train as fp32 does (the pass acted)
	run cpu_bf16 cpu --set precision=bf16 || fail "cpu, bf16"
	run gpu_bf16 cuda --set precision=bf16 || fail "gpu, bf16"
	compare gpu_bf16 cpu_bf16 1e-3 1e-2 || fail "bf16 on the GPU against bf16 on the CPU"
	compare gpu_bf16 gpu 0 0 >/dev/null && fail "bf16 on the GPU gives fp32's losses"
	# fp8 (passes/fp8.c): the GPU keeps E4M3 in bytes, rounded by the hardware's
	# conversion, the CPU in f32 buffers rounded by the reference's rule, which agree
	# bit for bit (test_cuda_ops); the products' operands are the same values, summed
	# in another order, so the runs differ as bf16's do, and where a sum lands next to
	# a rounding point of E4M3 (one element's operand moves by 2^-4 relative, a product
	# over K terms by a fraction of that): the bf16 bounds.  The AdamW moments are bf16
	# on both (rt_adamw_step_bf16m's rounding); a resume on the GPU is exact; fp8 must
	# not train as bf16 does (the pass acted)
	run cpu_fp8 cpu --set precision=fp8 || fail "cpu, fp8"
	run gpu_fp8 cuda --set precision=fp8 || fail "gpu, fp8"
	compare gpu_fp8 cpu_fp8 1e-3 1e-2 || fail "fp8 on the GPU against fp8 on the CPU"
	compare gpu_fp8 gpu_bf16 0 0 >/dev/null && fail "fp8 on the GPU gives bf16's losses"
	run gpu_fp8_half cuda --set precision=fp8 --stop-at $((STEPS / 2)) || fail "gpu, fp8, first half"
	run gpu_fp8_rest cuda --set precision=fp8 --resume "$PWD/ck-gpu_fp8_half" ||
		fail "gpu, fp8, resumed"
	compare gpu_fp8_rest gpu_fp8 0 0 || fail "an fp8 resume on the GPU is not exact"
}

# ema_close A B: every ema.NAME tensor of A's checkpoint against B's.  The two runs'
# weights differ by rounding, amplified by AdamW (an element whose gradient is near 0
# moves by up to lr a step either way), and an average of weights differs by no more
# than the weights it averages: so each tensor's worst difference must be within 1e-4
# of its largest element, or within twice the worst difference of the final weights
# themselves (NAME without "ema."), which must be within 1e-2 of it (else the runs are
# not the same training).  A stale or missed update moves it by whole steps of AdamW.
ema_close() {
	python3 - "$1/checkpoint.safetensors" "$2/checkpoint.safetensors" <<'PY'
import json, struct, sys
from array import array
def read(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v.get("dtype") == "F32":
            out[k] = array("f", raw[8 + n + a:8 + n + b])
    return out
A, B = read(sys.argv[1]), read(sys.argv[2])
names = sorted(k for k in A if k.startswith("ema."))
if not names or names != sorted(k for k in B if k.startswith("ema.")):
    sys.exit("ema tensors differ in name")
worst = worst_w = 0.0
bad = []
for k in names:
    w = k[len("ema."):]
    scale = max(max(abs(x) for x in B[k]), 1e-30)
    d = max(abs(x - y) for x, y in zip(A[k], B[k]))
    dw = max(abs(x - y) for x, y in zip(A[w], B[w])) if w in A and w in B else 0.0
    worst, worst_w = max(worst, d / scale), max(worst_w, dw / scale)
    if dw > 1e-2 * scale or (d > 1e-4 * scale and d > 2 * dw):
        bad.append("%s: %.3g (its weights %.3g)" % (k, d / scale, dw / scale))
print("ema: %d tensors, worst difference %.3g of the largest element (weights: %.3g)"
      % (len(names), worst, worst_w))
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
}

two_gpus() {
	run one cuda --set microbatches=2 || fail "one GPU"
	run dp2 cuda --gpus 2 || fail "dp 2"
	run pp2 cuda --gpus 2 --set pp=2 --set microbatches=2 || fail "pp 2"
	grep -E '^(device|layout|done|rank)' dp2.out pp2.out
	compare dp2 one 1e-5 1e-4 || fail "dp 2 against one GPU"
	compare pp2 one 1e-5 1e-4 || fail "pp 2 against one GPU"
	if [ "$m" = tiny_moe ]; then
		run ep2 cuda --gpus 2 --set ep=2 || fail "ep 2"
		compare ep2 one 1e-5 1e-4 || fail "ep 2 against one GPU"
		# bf16 and fp8 rows exchanged at their width (2 bytes; 1 and the f32 scales):
		# against one GPU at that precision, the bounds of bf16 against the CPU above
		# (the gradients of the two ranks' experts are summed in another order)
		local pr
		for pr in bf16 fp8; do
			run one_$pr cuda --set microbatches=2 --set precision=$pr || fail "one GPU, $pr"
			run ep2_$pr cuda --gpus 2 --set ep=2 --set precision=$pr || fail "ep 2, $pr"
			compare ep2_$pr one_$pr 1e-3 1e-2 || fail "ep 2 $pr against one GPU"
		done
		grep -h "all-to-all sent" ep2.out ep2_bf16.out ep2_fp8.out
	fi
	# the pipeline schedules over four micro-batches (dualpipe needs 2 pp of them) and
	# four layers (dualpipev cuts 2 pp stages)
	run one4 cuda --set microbatches=4 --set layers=4 || fail "one GPU, 4 micro-batches"
	local s
	for s in zb1p dualpipev; do
		run "$s" cuda --gpus 2 --set pp=2 --set microbatches=4 --set layers=4 \
			--set schedule=$s ||
			fail "pp 2, $s"
		compare "$s" one4 1e-5 1e-4 || fail "pp 2 $s against one GPU"
	done
	# dualpipe sends both ways between the two GPUs: each communicator on a stream of
	# its own (runtime/exec.c); on one stream its first step never finished
	run dualpipe cuda --gpus 2 --set pp=2 --set microbatches=4 --set layers=4 \
		--set schedule=dualpipe || fail "pp 2, dualpipe"
	compare dualpipe one4 1e-5 1e-4 || fail "pp 2 dualpipe against one GPU"
	grep -h "^done" zb1p.out dualpipev.out dualpipe.out
	ls ./*.jsonl
}

ran=0
for MODEL in ${MODELS:-$ROOT/models/tiny_gpt.sl $ROOT/models/tiny_moe.sl $HERE/mlp_lm.sl}; do
	m=$(basename "$MODEL" .sl)
	run probe cuda --steps 1
	if grep -q "no CUDA backend" probe.out; then
		skip "this sluice has no CUDA backend"
	fi
	if grep -q "has no kernel for" probe.out; then
		echo "== $m: left out: $(grep -o 'the CUDA backend has no kernel for.*' probe.out | head -1)"
		continue
	fi
	echo "== $m"
	ran=$((ran + 1))
	mkdir -p "$m" && cd "$m" && cp ../text.bin ../text_val.bin .
	if [ "$MODE" = 1 ]; then one_gpu; else two_gpus; fi
	cd "$T"
done
[ $ran -gt 0 ] || skip "the CUDA backend compiles none of the models yet"
if [ $fails -ne 0 ]; then
	echo "$fails check(s) failed"
	exit 1
fi
echo "all GPU training checks passed"
