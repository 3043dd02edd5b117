#!/usr/bin/env bash
# train_speed.sh - training throughput on the CPU: tokens/s and achieved GFLOP/s of
# 'sluice train' for each model, against the CPU's measured fp32 peak (train_peak.sh).
# GFLOP/s = tokens/s x training FLOPs per token (forward + backward, as 'sluice check'
# counts them).  The median over the steps after the first three (warm-up: JIT, caches)
# is reported; the validation passes are not timed.  On a shared machine the wall
# clock counts other people's work too, so tokens per CPU-second (all threads of the
# process) is given beside it, with the load average during the run.
# Usage: tools/bench/train_speed.sh [MODEL.sl...]
#   env: SLUICE (default ./build/sluice), STEPS (20), BACKEND (llvm), SET ("--set a=b ...")
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-./build/sluice}
STEPS=${STEPS:-20}
BACKEND=${BACKEND:-llvm}
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(models/tiny_gpt.sl models/tiny_moe.sl)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
peak=$(tools/bench/train_peak.sh | awk '{print $2}')
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; measured fp32 peak $peak GFLOP/s"
echo
echo "| model | backend | tokens/step | tokens/s | GFLOP/s | % of peak | s/step | tokens/CPU-s | load avg |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for m in "${models[@]}"; do
	name=$(basename "$m" .sl)
	# shellcheck disable=SC2086
	"$SLUICE" train "$m" --backend "$BACKEND" --steps "$STEPS" --quiet --eval-every 1000000 \
		--metrics "$tmp/$name.jsonl" --out "$tmp/$name" ${SET:-} 2>"$tmp/$name.log" || {
		echo "| $name | $BACKEND | failed: $(tail -1 "$tmp/$name.log") | | | | | | |"
		continue
	}
	load=$(cut -d' ' -f1 /proc/loadavg)
	python3 - "$tmp/$name.jsonl" "$tmp/$name.log" "$name" "$BACKEND" "$peak" "$load" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][2:]
cpu = statistics.median(b["cpu_s"] - a["cpu_s"] for a, b in zip(rows, rows[1:]))
rows = rows[1:]
log = open(sys.argv[2]).read()
m = re.search(r"batch (\d+) x seq (\d+) = (\d+) tokens", log)
tps = statistics.median(r["tokens_per_s"] for r in rows)
gf = statistics.median(r.get("gflops", 0) for r in rows)
peak = float(sys.argv[5])
tok = int(m.group(3)) if m else 0
print(f"| {sys.argv[3]} | {sys.argv[4]} | {m.group(1)}x{m.group(2)} | {tps:.0f} | {gf:.2f} | "
      f"{100 * gf / peak:.1f}% | {tok / tps:.3f} | {tok / cpu:.0f} | {sys.argv[6]} |")
PY
done
