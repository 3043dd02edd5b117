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
# (seen: 1.2e-7 of the largest gradient, 4e-8 on the loss after ten steps); with expert
# parallelism an expert's rows reach it from every rank of the group and its weight
# gradient sums them in that order, not in token order (seen: 5.6e-7).  The
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
# LAYOUTS_QUICK: 0 every layout, 10 steps; 1 fewer layouts, 4 steps; 2 (the sanitizer
# build, for memory errors) one layout of each kind of work: pipeline stages, ZeRO-1,
# expert parallelism with the F&B overlap, DualPipe with experts, the capacity re-run,
# one change of layout, a killed rank, Ctrl-C, mpirun by hand and the refusals
QUICK=${LAYOUTS_QUICK:-0}
STEPS=${STEPS:-10}
[ "$QUICK" -ge 1 ] && STEPS=4
HALF=$((STEPS / 2))
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
    out, slices = {}, {}
    for f in sorted(glob.glob(n + ".rank*.safetensors")):
        raw = open(f, "rb").read()
        hl = struct.unpack("<Q", raw[:8])[0]
        head = json.loads(raw[8:8 + hl])
        for k, v in head.items():
            if k == "__metadata__":
                continue
            a, b = v["data_offsets"]
            t = np.frombuffer(raw[8 + hl + a:8 + hl + b], dtype=np.float32).reshape(v["shape"])
            if "#" in k:  # a slice of rows: NAME#ROW0
                name, row0 = k.split("#")
                if (name, int(row0)) in slices:
                    sys.exit("%s: %s written by two ranks" % (f, k))
                slices[(name, int(row0))] = t
                continue
            if k in out:
                sys.exit("%s: %s written by two ranks" % (f, k))
            out[k] = t
    for name in sorted(set(n for n, _ in slices)):
        parts = sorted((r, t) for (n, r), t in slices.items() if n == name)
        row = 0
        for r, t in parts:
            if r != row:
                sys.exit("%s: rows %d.. missing" % (name, row))
            row += t.shape[0]
        out[name] = np.concatenate([t for _, t in parts])
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
	local ref=ref-$(basename "$MODEL" .sl)-mb$refmb
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
[ "$QUICK" -ge 1 ] || layout pp4 4 4 4
[ "$QUICK" -ge 2 ] || layout dp2 2 1 2
[ "$QUICK" -ge 1 ] || layout pp2dp2 4 2 2
layout pp2dp2zero 4 2 2 --set zero=1
[ "$QUICK" -ge 2 ] || layout ep2 2 1 1 --set ep=2
# one stage, ep 2, 2 micro-batches: the forward of micro-batch 1 runs beside the
# backward of micro-batch 0, each one's exchanges under the other's computation
layout ep2fb 2 1 2 --set ep=2
[ "$QUICK" -ge 1 ] || layout ep4 4 1 1 --set ep=4
[ "$QUICK" -ge 2 ] || layout pp2ep2 4 2 2 --set ep=2
# zb1p: each stage's backward split into input-grad and weight-grad chunks, the
# weight-grads deferred into the bubbles; the same sums in the same order as 1f1b
layout pp2zb1p 2 2 4 --set schedule=zb1p
[ "$QUICK" -ge 1 ] || layout pp4zb1p 4 4 8 --set schedule=zb1p
[ "$QUICK" -ge 2 ] || layout pp2ep2zb1p 4 2 2 --set ep=2 --set schedule=zb1p
# dualpipev: 2 pp stages, rank r holding stages r and 2pp-1-r (the last rank passes
# stage pp-1's output to stage pp in its own memory); dualpipe: half the micro-batches
# enter at each end, each stage held by two ranks whose gradients are summed (an
# order other than one rank's: within the bound, not bit-identical)
[ "$QUICK" -ge 2 ] || layout pp2dualpipev 2 2 4 --set schedule=dualpipev
[ "$QUICK" -ge 1 ] || layout pp2dp2dualpipev 4 2 4 --set schedule=dualpipev
[ "$QUICK" -ge 1 ] || layout pp2ep2dualpipev 4 2 4 --set ep=2 --set schedule=dualpipev
[ "$QUICK" -ge 2 ] || layout pp2dualpipe 2 2 4 --set schedule=dualpipe
[ "$QUICK" -ge 1 ] || layout pp4dualpipe 4 4 8 --set schedule=dualpipe
layout pp2ep2dualpipe 4 2 4 --set ep=2 --set schedule=dualpipe
# DeepSeek-V3's kind of layout one size up: pp 4 x dp 2 with ep 2 on 8 ranks, DualPipe
# over tiny_moe's 4 layers and DualPipeV's 8 stages over an 8-layer tiny_moe
[ "$QUICK" -ge 1 ] || layout pp4ep2dualpipe 8 4 8 --set ep=2 --set schedule=dualpipe
[ "$QUICK" -ge 1 ] || MODEL=$HERE/tiny_moe8.sl layout pp4ep2dualpipev 8 4 8 --set ep=2 \
	--set schedule=dualpipev
[ "$QUICK" -ge 1 ] || layout pp2dp4ep2 8 2 1 --set ep=2

# expert-parallel receive buffers below the worst case: ep_capacity = 1 (the rows of an
# even routing) overflows on the first step of tiny_moe, whose router starts uneven;
# every rank sees it, the step runs again on larger buffers and the metrics count it.
# Against buffers sized for the worst case (no overflow possible), the losses, the
# first step's gradients and the final weights are bit-identical: a rerun computes the
# same rows with the same kernels, only the buffers' unused tail is longer.
capacity() {
	local name=$1 ranks=$2
	shift 2
	if ! run "$name-worst" "$ranks" "$@" --set ep_capacity=worst ||
		! run "$name" "$ranks" "$@" --set ep_capacity=1; then
		fail "$name: $(tail -3 $name-worst.out $name.out)"
		return
	fi
	local r
	if r=$(python3 - "$name" "$name-worst" <<'PY'
import glob, json, sys
a, b = ([json.loads(l) for l in open(n + ".jsonl")] for n in sys.argv[1:3])
la, lb = [d["loss"] for d in a], [d["loss"] for d in b]
if la != lb:
    sys.exit("losses %s against %s at the worst case" % (la, lb))
over, reruns = sum(d["ep_overflows"] for d in a), sum(d["ep_reruns"] for d in a)
if not over or not reruns or any(d["ep_overflows"] or d["ep_reruns"] for d in b):
    sys.exit("overflows %d, reruns %d (worst case: %d)" % (over, reruns,
             sum(d["ep_overflows"] for d in b)))
for f in sorted(glob.glob(sys.argv[1] + ".rank*.safetensors")):
    if open(f, "rb").read() != open(f.replace(sys.argv[1], sys.argv[2], 1), "rb").read():
        sys.exit("first-step gradients differ: " + f)
print("%d steps bit-identical to worst-case buffers; %d overflows, %d reruns, "
      "capacity %g at the end" % (len(la), over, reruns, a[-1]["ep_capacity"]))
PY
	) && cmp -s "$T/ck-$name/checkpoint.safetensors" "$T/ck-$name-worst/checkpoint.safetensors" &&
		grep -q "^ep: a routing sent" "$name.out"; then
		ok "$name: $r"
	else
		fail "$name: ${r:-the checkpoints differ, or no note: $(grep '^ep' $name.out)}"
	fi
}
capacity ep2-capacity 2 --set ep=2
[ "$QUICK" -ge 1 ] || capacity pp2dp2ep2zero-capacity 4 --set pp=2 --set microbatches=2 --set ep=2 --set zero=1

# a checkpoint moved between layouts: saved half-way (step 5) by 4 ranks (pp 2 x dp 2, ZeRO-1),
# resumed on one rank, and saved by one rank, resumed on 2 stages: the later steps
# give the losses of the uninterrupted one-rank run, within the bound above
resume_check() {
	local name=$1 ref=$2
	python3 - "$name" "$ref" "$HALF" <<'PY'
import json, sys
name, ref, half = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = [json.loads(l)["loss"] for l in open(name + ".jsonl")]
b = [json.loads(l)["loss"] for l in open(ref + ".jsonl")][half:]
if len(a) != len(b) or not a:
    sys.exit("%d steps after the resume, %d expected" % (len(a), len(b)))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
if worst > 2e-5:
    sys.exit("resumed losses differ by %.3g relative: %s against %s" % (worst, a, b))
print("steps %d-%d within %.2g relative of the uninterrupted run" % (half + 1, half + len(a), worst))
PY
}
moved() {
	local name=$1 save_ranks=$2 resume_ranks=$3
	shift 3
	local save=() resume=() r
	while [ "$1" != "--" ]; do save+=("$1"); shift; done
	shift
	resume=("$@")
	rm -rf "$T/ck-$name"
	if ! run "$name-a" "$save_ranks" "${save[@]}" --stop-at "$HALF" --out "$T/ck-$name"; then
		fail "$name: the save run: $(tail -3 $name-a.out)"; return
	fi
	if ! run "$name" "$resume_ranks" "${resume[@]}" --resume "$T/ck-$name" --out "$T/ck-$name"; then
		fail "$name: the resumed run: $(tail -3 $name.out)"; return
	fi
	if r=$(resume_check "$name" ref-tiny_moe-mb4 2>&1); then
		ok "$name: $r"
	else
		fail "$name: $r"
	fi
}
moved move-4to1 4 1 --set pp=2 --set microbatches=2 --set zero=1 -- --set microbatches=4
[ "$QUICK" -ge 2 ] || moved move-1to2 1 2 --set microbatches=4 -- --set pp=2 --set microbatches=4
[ "$QUICK" -ge 2 ] || moved move-ep 4 1 --set pp=2 --set ep=2 --set microbatches=2 -- --set microbatches=4
# DualPipe's two copies of each stage are one global tensor in the checkpoint
[ "$QUICK" -ge 2 ] || moved move-dualpipe 2 1 --set pp=2 --set microbatches=4 --set schedule=dualpipe -- --set microbatches=4
grep -q "saved at pp 2 dp 2 ep 1 microbatches 2, now pp 1 dp 1 ep 1 microbatches 4: the same global batch" \
	move-4to1.out && ok "the resume says the layout changed and the training did not" ||
	fail "the resume did not say what changed: $(grep resume move-4to1.out)"

# bounded JOB SECONDS: waits for the background job, its status in $rc; one still
# running after SECONDS is a failure of its own (what is left of it is listed, then
# killed) rather than a test that hangs with two ranks spinning
bounded() {
	local job=$1 limit=$2 t=0
	while kill -0 "$job" 2>/dev/null && [ "$t" -lt $((limit * 5)) ]; do
		sleep 0.2
		t=$((t + 1))
	done
	if kill -0 "$job" 2>/dev/null; then
		echo "still running after $limit s:"
		ps -eo pid,ppid,stat,etime,args | grep -v grep | grep "sluice\|mpirun" | cut -c1-200
		pkill -9 -P "$job" 2>/dev/null
		for pid in $(pgrep -f "$T/ck-"); do kill -9 "$pid" 2>/dev/null; done
		kill -9 "$job" 2>/dev/null
		wait "$job"
		rc=124
		return 1
	fi
	wait "$job"
	rc=$?
	return 0
}

# a rank that dies: every rank ends within seconds, the last checkpoint intact
rm -rf "$T/ck-kill"
"$SLUICE" train "$MODEL" --ranks 2 --data text.bin --steps 100000 --eval-every 0 --quiet \
	--set seq=32 --set batch=2 --set pp=2 --ckpt-every 2 --out "$T/ck-kill" >kill.out 2>&1 &
job=$!
victim=""
for _ in $(seq 900); do # the sanitizer build compiles slowly: up to 3 minutes
	sleep 0.2
	[ -f "$T/ck-kill/checkpoint.safetensors" ] || continue
	for pid in $(pgrep -f "ck-kill"); do
		if tr '\0' '\n' </proc/$pid/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
			victim=$pid
		fi
	done
	[ -n "$victim" ] && break
done
if [ -z "$victim" ]; then
	fail "no rank 1 to kill: $(tail -3 kill.out)"
	kill $job 2>/dev/null
else
	kill -9 "$victim"
	t0=$(date +%s)
	bounded $job 60
	dt=$(( $(date +%s) - t0 ))
	if [ "$rc" -eq 0 ] || [ "$dt" -gt 15 ]; then
		fail "after rank 1 was killed the job exited $rc in $dt s: $(tail -3 kill.out)"
	elif ! grep -q "rank 1" kill.out; then
		fail "the job did not name rank 1: $(tail -5 kill.out)"
	elif ! "$SLUICE" train "$MODEL" --data text.bin --steps 1 --eval-every 0 --quiet \
		--set seq=32 --set batch=2 --resume "$T/ck-kill" --out "$T/ck-kill2" >kill2.out 2>&1 &&
		! grep -q "nothing left to do\|past --stop-at" kill2.out; then
		fail "the last checkpoint does not load: $(tail -3 kill2.out)"
	else
		ok "rank 1 killed: the job ended in $dt s with status $rc naming it, the checkpoint loads"
	fi
fi

# Ctrl-C (SIGINT to the launcher): every rank stops after the same step with a
# checkpoint, and the job exits 0.  It comes as soon as mpirun runs, while the ranks
# start and compile: one that mpirun would pass on then is lost or kills a rank.
rm -rf "$T/ck-int"
"$SLUICE" train "$MODEL" --ranks 2 --data text.bin --steps 100000 --eval-every 0 --quiet \
	--set seq=32 --set batch=2 --set pp=2 --out "$T/ck-int" >int.out 2>&1 &
job=$!
for _ in $(seq 900); do
	sleep 0.02
	pgrep -P $job mpirun >/dev/null && break
done
kill -INT $job
bounded $job 120
if [ "$rc" -ne 0 ] || ! grep -q "^interrupted after step" int.out ||
	[ ! -s "$T/ck-int/checkpoint.safetensors" ]; then
	fail "Ctrl-C of a job of 2 ranks: status $rc: $(tail -3 int.out)"
else
	ok "Ctrl-C of a job of 2 ranks: $(grep -o 'interrupted after step [0-9]*' int.out), checkpoint saved, status 0"
fi

# mpirun started by hand makes the same job as --ranks
rm -f byhand.rank*.safetensors
if SLUICE_GRAD_DUMP=$T/byhand mpirun --oversubscribe --bind-to none -np 2 "$SLUICE" train "$MODEL" \
	--data text.bin --val-data text_val.bin --steps "$STEPS" --eval-every 0 --quiet \
	--set seq=32 --set batch=2 --set pp=2 --set microbatches=4 --out "$T/ck-byhand" \
	--metrics byhand.jsonl >byhand.out 2>&1 && r=$(compare byhand ref-tiny_moe-mb4 2>&1); then
	ok "mpirun -np 2 by hand, pp 2: $r"
else
	fail "mpirun -np 2 by hand: ${r:-$(tail -3 byhand.out)}"
fi

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
expect "needs an even pp" --ranks 3 --set pp=3 --set schedule=dualpipe
expect "needs at least 2 x pp = 4" --ranks 2 --set pp=2 --set microbatches=2 --set schedule=dualpipev

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all layouts agree with one rank"
