#!/usr/bin/env bash
# layouts_test.sh SLUICE - tiny_moe trained on CPU ranks (MPI) at several layouts,
# each compared with one rank training the same global batch (batch 2 x microbatches
# x dp sequences of 32 tokens a step, the same windows in the same micro-batches).
#
# The bound: every step's loss within 2e-5 relative, and the first step's gradients
# within 1e-5 of the largest element of each tensor (plus 1e-6 relative to the
# element).  Why it is right: the programs compute the same micro-batches with the
# same operations, and with pipeline stages alone (dp = 1) they sum in the same order
# too, so the losses and gradients come out bit-identical (the test prints "within 0").
# With data parallelism the gradients are summed over each rank's micro-batches and
# then across ranks, another order than one rank's, which moves a sum by an ulp or two
# (seen: 1.1e-7 of the largest gradient, 4e-8 on the loss after ten steps).  The
# bound leaves room for that to grow over ten AdamW steps (which divide by the root of
# small second moments) and nothing more: a wrong program (a missing micro-batch, a
# gradient summed twice, a stage's output sent to the wrong micro-batch) moves the
# loss by 1e-3 or more from the first step.
set -u
SLUICE=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/sluice-layouts.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
MODEL=$ROOT/models/tiny_moe.sl
STEPS=${STEPS:-10}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export SLUICE_THREADS=1
cat "$ROOT"/README.md "$ROOT"/docs/*.md "$ROOT"/tools/*.c > text.txt
"$SLUICE" data text.txt -o text.bin --val-fraction 0.1 >/dev/null 2>&1 || { echo "FAIL: sluice data"; exit 1; }

# run NAME RANKS SETTINGS...: metrics in NAME.jsonl, first-step gradients in NAME.rank*.safetensors
run() {
	local name=$1 ranks=$2
	shift 2
	SLUICE_GRAD_DUMP=$T/$name "$SLUICE" train "$MODEL" --ranks "$ranks" --data text.bin \
		--val-data text_val.bin --steps "$STEPS" --eval-every 0 --quiet \
		--set seq=32 --set batch=2 --out "$T/ck-$name" --metrics "$name.jsonl" "$@" \
		>"$name.out" 2>&1
}

# compare NAME REF: losses step by step and the gradients of step 1
compare() {
	python3 - "$1" "$2" <<'PY'
import glob, json, struct, sys
import numpy as np
name, ref = sys.argv[1], sys.argv[2]
def losses(n):
    return [json.loads(l)["loss"] for l in open(n + ".jsonl")]
def grads(n):
    out = {}
    for f in sorted(glob.glob(n + ".rank*.safetensors")):
        raw = open(f, "rb").read()
        hl = struct.unpack("<Q", raw[:8])[0]
        head = json.loads(raw[8:8 + hl])
        for k, v in head.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            t = np.frombuffer(raw[8 + hl + a:8 + hl + b], dtype=np.float32).reshape(v["shape"])
            if k in out:
                sys.exit("%s: %s written by two ranks" % (f, k))
            out[k] = t
    return out
a, b = losses(name), losses(ref)
if len(a) != len(b) or not a:
    sys.exit("%d steps against %d" % (len(a), len(b)))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
if worst > 2e-5:
    sys.exit("loss differs by %.3g relative: %s against %s" % (worst, a, b))
ga, gb = grads(name), grads(ref)
if set(ga) != set(gb):
    sys.exit("gradients of %s missing" % sorted(set(gb) ^ set(ga))[:5])
gw = 0.0
for k in gb:
    d = np.abs(ga[k] - gb[k])
    tol = 1e-5 * np.abs(gb[k]).max() + 1e-6 * np.abs(gb[k])
    if (d > tol).any():
        sys.exit("gradient %s differs by %.3g (largest %.3g)" % (k, d.max(), np.abs(gb[k]).max()))
    gw = max(gw, float(d.max() / (np.abs(gb[k]).max() + 1e-30)))
print("%d steps, loss within %.2g relative, %d gradients within %.2g of their largest" %
      (len(a), worst, len(gb), gw))
PY
}

# layout NAME RANKS PP MICROBATCHES [SETTINGS...]: against one rank with microbatches x dp
# micro-batches
layout() {
	local name=$1 ranks=$2 pp=$3 mb=$4
	shift 4
	local dp=$((ranks / pp)) refmb=$(( mb * ranks / pp ))
	local ref=ref-mb$refmb
	if [ ! -f "$ref.jsonl" ]; then
		run "$ref" 1 --set microbatches=$refmb || { fail "one rank, $refmb micro-batches: $(tail -3 $ref.out)"; return; }
	fi
	if ! run "$name" "$ranks" --set pp="$pp" --set microbatches="$mb" "$@"; then
		fail "$name ($ranks ranks, pp $pp, dp $dp, $mb micro-batches): $(tail -5 $name.out)"
		return
	fi
	local r
	if r=$(compare "$name" "$ref" 2>&1); then
		ok "$name ($ranks ranks: pp $pp x dp $dp, $mb micro-batches) against one rank: $r"
	else
		fail "$name ($ranks ranks: pp $pp x dp $dp, $mb micro-batches): $r"
	fi
}

layout pp2 2 2 4
layout pp4 4 4 4
layout dp2 2 1 2
layout pp2dp2 4 2 2
layout pp2dp2zero 4 2 2 --set zero=1

# bad layouts: refused before any rank starts
expect() {
	local pat=$1
	shift
	"$SLUICE" train "$MODEL" --data text.bin --steps 1 --quiet "$@" >bad.out 2>&1
	local rc=$?
	if [ "$rc" -ne 1 ] || ! grep -q -- "$pat" bad.out; then
		fail "$* exited $rc without '$pat': $(head -c 300 bad.out)"
	else
		ok "$* -> 1 ($pat)"
	fi
}
expect "3 ranks are not divisible by pp=2" --ranks 3 --set pp=2
expect "more stages than the model's 4 layers" --ranks 8 --set pp=8
expect "8 experts are not divisible by ep=3" --ranks 3 --set ep=3
expect "ep=4 does not divide dp=2" --ranks 2 --set ep=4
expect "not built yet" --ranks 2 --set schedule=dualpipe

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all layouts agree with one rank"
