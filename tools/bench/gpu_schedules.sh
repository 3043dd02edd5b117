#!/usr/bin/env bash
# gpu_schedules.sh LOGDIR - the pipeline schedules on two GPUs: a model (MODEL,
# default gpt2_124m) trained STEPS steps (12) at pp 2 under 1f1b, zb1p, dualpipe and
# dualpipev over MB micro-batches (8) of BATCH x SEQ tokens (4 x 512), against one
# GPU training the same global batch and against dp 2; tokens/s the median of the
# steps after the third, and the losses of every two-GPU run against one GPU's (they
# must agree to rounding).  Beside each, what `sluice schedule` simulates for it with
# the paper's costs (F=1, B=2, W=1, FB=3): its bubble.  Logs and metrics go to LOGDIR;
# a markdown table is printed last, after what each schedule's traced step (the
# fourth; GPU times, runtime/exec.c) says of its ranks: step time, each rank's compute
# and waiting, and the `sluice schedule` line with the measured F, B and W.
# env: SLUICE (default build-gpu/sluice), MODEL, STEPS, MB, BATCH, SEQ, PRECISION (bf16).
set -u -o pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/bench/gpu_schedules.sh LOGDIR" >&2
	exit 2
fi
cd "$(dirname "$0")/../.." || exit 1
LOG=$1
mkdir -p "$LOG" || exit 1
S=${SLUICE:-build-gpu/sluice}
MODEL=${MODEL:-models/gpt2_124m.sl}
STEPS=${STEPS:-12} MB=${MB:-8} BATCH=${BATCH:-4} SEQ=${SEQ:-512} PREC=${PRECISION:-bf16}
export NCCL_NVLS_ENABLE=0 SLUICE_GEMM_TUNE=0
tmp=$(mktemp -d /tmp/sluice-gpu-sched.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cat README.md docs/*.md tools/*.c codegen/*.c runtime/*.c >"$tmp/text.txt"
"$S" data "$tmp/text.txt" -o "$tmp/text.bin" >/dev/null 2>&1 || exit 1
rc=0
# run NAME ARGS...
run() {
	local name=$1
	shift
	if ! timeout 300 "$S" train "$MODEL" --device cuda --data "$tmp/text.bin" --steps "$STEPS" \
		--eval-every 0 --quiet --set precision="$PREC" --set batch="$BATCH" --set seq="$SEQ" \
		"$@" --metrics "$LOG/sched-$name.jsonl" --out "$tmp/$name" >"$LOG/sched-$name.log" 2>&1; then
		echo "gpu_schedules: $name failed:" >&2
		tail -5 "$LOG/sched-$name.log" >&2
		rc=1
	fi
}
run one --set microbatches="$MB"
run dp2 --gpus 2 --set microbatches=$((MB / 2))
for s in 1f1b zb1p dualpipe dualpipev; do
	run "$s" --gpus 2 --set pp=2 --set microbatches="$MB" --set schedule=$s \
		--trace "$LOG/sched-$s.trace.json"
	"$S" schedule "$MODEL" --set pp=2 --set microbatches="$MB" --set schedule=$s \
		--costs F=1,B=2,W=1,FB=3 >"$LOG/sched-$s.sim" 2>&1 || rc=1
done
for s in 1f1b zb1p dualpipe dualpipev; do
	echo "== $s"
	grep -E "^trace:|^  rank [0-9]|^  measured" "$LOG/sched-$s.log"
done
python3 - "$LOG" "$MODEL" "$BATCH" "$SEQ" "$MB" "$PREC" <<'PY' || rc=1
import json, os, re, statistics, sys
log, model, batch, seq, mb, prec = sys.argv[1:]
def rows(n):
    p = os.path.join(log, "sched-%s.jsonl" % n)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
def tps(r):
    r = r[3:]
    if len(r) < 2:
        return None
    dt = statistics.median(b["time_s"] - a["time_s"] for a, b in zip(r, r[1:]))
    return int(batch) * int(seq) * int(mb) / dt
one = rows("one")
base = tps(one)
print("%s, %s, %s micro-batches of %s x %s tokens a step, on %s" % (
    os.path.basename(model), prec, mb, batch, seq, "two GPUs"))
print()
print("| run | tokens/s | vs one GPU | losses vs one GPU (worst relative) | simulated bubble (F=1,B=2,W=1,FB=3) |")
print("| --- | --- | --- | --- | --- |")
for n in ["one", "dp2", "1f1b", "zb1p", "dualpipe", "dualpipev"]:
    r = rows(n)
    t = tps(r)
    la = {j["step"]: j["loss"] for j in one}
    worst = max([abs(j["loss"] - la[j["step"]]) / abs(la[j["step"]]) for j in r if j["step"] in la] or [float("nan")])
    sim = ""
    p = os.path.join(log, "sched-%s.sim" % n)
    if os.path.exists(p):
        m = re.findall(r"^\s+\d+\s+\S+\s+\S+\s+([0-9.]+%)", open(p).read(), re.M)
        sim = " / ".join(m)
    print("| %s | %s | %s | %s | %s |" % (
        n, "%.0f" % t if t else "failed", "%.3f" % (t / base) if t and base else "-",
        "%.2g" % worst if r else "-", sim or "-"))
PY
exit $rc
