#!/usr/bin/env bash
# layouts.sh - tiny_moe's step time at several layouts on CPU ranks (MPI) against one
# rank training the same global batch, and each rank's time split into compute (its
# chunks), communication (starting and finishing its ops) and waiting (for peers), as
# the executor counts them.  The global batch is the same in every row (batch x
# microbatches x dp = 8 sequences of SEQ tokens), so the rows do the same work.
# On a machine with fewer cores than ranks the ranks share the cores (SLUICE_THREADS
# is cores / ranks): the split says where a rank's time goes, the step time what the
# machine gives.
# Usage: tools/bench/layouts.sh   env: SLUICE (./build/sluice), STEPS (12), SEQ (64)
set -euo pipefail
cd "$(dirname "$0")/../.."
SLUICE=${SLUICE:-./build/sluice}
STEPS=${STEPS:-12}
SEQ=${SEQ:-64}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cat README.md docs/*.md tools/*.c runtime/*.c > "$tmp/text.txt"
"$SLUICE" data "$tmp/text.txt" -o "$tmp/text.bin" --val-fraction 0.1 >/dev/null 2>&1
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; tiny_moe, seq $SEQ, $STEPS steps"
echo
echo "| layout | ranks | s/step | vs one rank | per rank: compute / communication / waiting (s, whole run) |"
echo "| --- | --- | --- | --- | --- |"
one=""
run() {
	local label=$1 ranks=$2
	shift 2
	"$SLUICE" train models/tiny_moe.sl --ranks "$ranks" --data "$tmp/text.bin" \
		--val-data "$tmp/text_val.bin" --steps "$STEPS" --eval-every 0 --quiet \
		--set seq="$SEQ" --set batch=2 "$@" --metrics "$tmp/m.jsonl" --out "$tmp/ck" \
		>"$tmp/out" 2>&1 || { echo "| $label | $ranks | failed: $(tail -1 "$tmp/out") | | |"; return; }
	local st
	st=$(python3 - "$tmp/m.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][2:]
print("%.4f" % statistics.median(b["time_s"] - a["time_s"] for a, b in zip(rows, rows[1:])))
PY
)
	[ -z "$one" ] && one=$st
	local split
	split=$(grep -o "rank [0-9]* (stage [0-9]*): compute [0-9.]* s, communication [0-9.]* s, waiting [0-9.]* s" "$tmp/out" |
		sort -t' ' -k2 -n | sed -E 's/rank ([0-9]+) \(stage ([0-9]+)\): compute ([0-9.]+) s, communication ([0-9.]+) s, waiting ([0-9.]+) s/r\1 (s\2): \3 \/ \4 \/ \5/' |
		paste -sd ";" | sed "s/;/; /g" || true)
	echo "| $label | $ranks | $st | $(python3 -c "print('%.2fx' % ($st / $one))") | ${split:-one rank} |"
}
run "one rank, 4 micro-batches" 1 --set microbatches=4
run "pp 2" 2 --set pp=2 --set microbatches=4
run "pp 4" 4 --set pp=4 --set microbatches=4
run "dp 2" 2 --set microbatches=2
run "ep 2 (dp 2)" 2 --set ep=2 --set microbatches=2
run "ep 4 (dp 4)" 4 --set ep=4
run "pp 2 x ep 2" 4 --set pp=2 --set ep=2 --set microbatches=2
run "pp 2 x dp 2, zero 1" 4 --set pp=2 --set microbatches=2 --set zero=1
run "pp 2 x dp 4 x ep 2" 8 --set pp=2 --set ep=2
