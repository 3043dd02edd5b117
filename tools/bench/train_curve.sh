#!/usr/bin/env bash
# train_curve.sh - the validation-loss curve of a model over a fixed wall-clock budget
# on the CPU (default 10 minutes), on the default data (English text from Debian's
# fortunes, byte-level: loss in nats per byte).  A short probe measures the time per
# step; the run then gets as many steps as fit (the cosine schedule needs the total in
# advance), with about 20 validation points.  The load average is printed at the end:
# on a shared machine the wall clock buys fewer steps.
# On a machine shared with other work the probe undercounts what the CPU can do; STEPS
# then fixes the step count instead (e.g. the steps that fit in SECONDS on an idle
# machine of the same kind, from train_speed.sh's tokens per CPU-second).
# Usage: tools/bench/train_curve.sh MODEL.sl [SECONDS]
#   env: SLUICE (default ./build/sluice), BACKEND (llvm), OUT (runs/curve-MODEL),
#        SET ("--set a=b ..." passed to both runs), STEPS (skip the probe)
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-./build/sluice}
BACKEND=${BACKEND:-llvm}
model=$1
secs=${2:-600}
name=$(basename "$model" .sl)
out=${OUT:-runs/curve-$name}
mkdir -p "$out"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if [ -n "${STEPS:-}" ]; then
	steps=$STEPS
	every=$((STEPS / 20 > 0 ? STEPS / 20 : 1))
else
# shellcheck disable=SC2086
"$SLUICE" train "$model" --backend "$BACKEND" --steps 8 --quiet --eval-every 1000000 \
	--metrics "$probe/m.jsonl" --out "$probe/ck" ${SET:-} 2>"$probe/log"
read -r steps every < <(python3 - "$probe/m.jsonl" "$secs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][2:]
dt = statistics.median(r["time_s"] - p["time_s"] for p, r in zip(rows, rows[1:]))
# validation: 4 batches at each of ~20 points costs ~80 steps' time
steps = max(20, int(float(sys.argv[2]) / dt) - 80)
print(steps, max(1, steps // 20))
PY
)
fi
echo "$name: $steps steps${STEPS:+ (fixed)}, budget $secs s, validation every $every steps"
# shellcheck disable=SC2086
"$SLUICE" train "$model" --backend "$BACKEND" --steps "$steps" --eval-every "$every" \
	--metrics "$out/metrics.jsonl" --out "$out" ${SET:-} 2>&1 | tee "$out/log.txt" |
	grep -E "val_loss|done|model:|train:" || true
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| step | time (s) | CPU (s) | train loss | val loss (nats/byte) |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    if "val_loss" in r:
        tl = r.get("lm_loss", r["loss"])  # the next-token part, as val_loss
        print(f"| {r['step']} | {r['time_s']:.0f} | {r['cpu_s']:.0f} | {tl:.3f} | "
              f"{r['val_loss']:.3f} |")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
