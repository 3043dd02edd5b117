#!/usr/bin/env bash
# check_time.sh [SLUICE] [RUNS] - wall time of 'sluice check --json MODEL' for every
# model in models/, the median of RUNS runs each (default 11), on an otherwise idle
# machine.  The target: DeepSeek-V3 (671B parameters, 6,635 forward ops) well under a
# second.
set -eu -o pipefail
cd "$(dirname "$0")/../.."
S=${1:-build/sluice}
RUNS=${2:-11}
printf '%-28s %10s %10s\n' model "median s" "best s"
for m in models/*.sl; do
	ts=()
	for _ in $(seq "$RUNS"); do
		t0=$(date +%s%N)
		"$S" check --json "$m" >/dev/null
		t1=$(date +%s%N)
		ts+=("$(((t1 - t0) / 1000))")
	done
	sorted=$(printf '%s\n' "${ts[@]}" | sort -n)
	med=$(echo "$sorted" | sed -n "$(((RUNS + 1) / 2))p")
	best=$(echo "$sorted" | head -1)
	awk -v m="$m" -v a="$med" -v b="$best" 'BEGIN { printf "%-28s %10.3f %10.3f\n", m, a / 1e6, b / 1e6 }'
done
