#!/usr/bin/env bash
# ema_cost.sh MODEL.sl [ROUNDS] - what the moving average of the weights (ema) costs a
# training step: the model trained STEPS steps (default 8) without and with
# `--set ema=0.999`, in turn, ROUNDS times (default 2); per run the median step time of
# the steps after the second (the first steps compile and fault memory in), then the
# median over the rounds for each side and their ratio.  The EMA is folded in host
# memory while the next step runs (runtime/engine.c), so it should cost a step nothing
# but the CPU time it takes beside the step.
# env: SLUICE (default ./build/sluice), DEVICE (cpu), STEPS (8), SET (more --set ...).
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/bench/ema_cost.sh MODEL.sl [ROUNDS]" >&2
	exit 2
fi
model=$1
rounds=${2:-2}
SLUICE=${SLUICE:-./build/sluice}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-8}
[ -f "$model" ] || { echo "ema_cost: no model file '$model'" >&2; exit 2; }
case $rounds in '' | *[!0-9]* | 0) echo "ema_cost: ROUNDS must be a positive integer" >&2; exit 2 ;; esac
case $STEPS in '' | *[!0-9]* | [0-3]) echo "ema_cost: STEPS must be 4 or more" >&2; exit 2 ;; esac
tmp=$(mktemp -d /tmp/sluice-ema.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
	for side in off on; do
		ema=()
		[ $side = off ] || ema=(--set ema=0.999)
		# shellcheck disable=SC2086
		"$SLUICE" train "$model" --device "$DEVICE" --steps "$STEPS" --eval-every 0 --quiet \
			"${ema[@]}" ${SET:-} --metrics "$tmp/$side-$r.jsonl" --out "$tmp/ck-$side-$r" \
			>"$tmp/$side-$r.log" 2>&1 || { tail -5 "$tmp/$side-$r.log" >&2; exit 1; }
		rm -rf "$tmp/ck-$side-$r"
	done
done
python3 - "$tmp" "$rounds" "$model" <<'PY'
import json, os, statistics, sys
tmp, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def step_times(path):
    rows = [json.loads(l) for l in open(path)]
    t = [b["time_s"] - a["time_s"] for a, b in zip(rows, rows[1:]) if b["step"] > 2]
    return statistics.median(t)
med = {}
print("| round | no ema, s/step | ema 0.999, s/step |")
print("| --- | --- | --- |")
for r in range(1, rounds + 1):
    a = step_times(os.path.join(tmp, "off-%d.jsonl" % r))
    b = step_times(os.path.join(tmp, "on-%d.jsonl" % r))
    med.setdefault("off", []).append(a)
    med.setdefault("on", []).append(b)
    print("| %d | %.4f | %.4f |" % (r, a, b))
off, on = statistics.median(med["off"]), statistics.median(med["on"])
print("\n%s: median step %.4f s without ema, %.4f s with: %+.1f%%" % (
    os.path.basename(model), off, on, 100 * (on - off) / off))
PY
