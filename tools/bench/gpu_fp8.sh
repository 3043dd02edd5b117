#!/usr/bin/env bash
# gpu_fp8.sh LOGDIR - on a GPU, FP8 (precision fp8, passes/fp8.c) against BF16 with
# 'sluice train --device cuda':
#   - throughput: each model trained STEPS steps (default 20) in bf16 and then in fp8,
#     tokens/s the median of the steps after the fifth (the first steps compile, tune
#     cuBLASLt and warm up), and what 'sluice check' reports (check-*.txt: the GPU
#     backend's memory among it);
#   - the loss gap: tools/bench/fp8_gap.sh on tiny_moe, GAP_STEPS steps (default 300),
#     fp8 against bf16 and, for the scale of what rounding alone does, fp32 against
#     bf16, for each seed of SEEDS (default 1 2 3).
# Logs and metrics go to LOGDIR; a markdown table is printed last.
# The text: DATA (a shard made by 'sluice data'), else the default data where Debian's
# fortunes are installed, else a shard made here from the repository's own text.
# env: SLUICE (default build-gpu/sluice), STEPS, GAP_STEPS, SEEDS, DATA, MODELS_1B.
set -u -o pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/bench/gpu_fp8.sh LOGDIR" >&2
	exit 2
fi
cd "$(dirname "$0")/../.." || exit 1
LOG=$1
mkdir -p "$LOG" || exit 1
S=${SLUICE:-build-gpu/sluice}
STEPS=${STEPS:-20}
export NCCL_NVLS_ENABLE=0
tmp=$(mktemp -d /tmp/sluice-gpu-fp8.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
rc=0
data=()
if [ -n "${DATA:-}" ]; then
	data=(--data "$DATA")
elif [ ! -d /usr/share/games/fortunes ]; then
	cat README.md docs/*.md tools/*.c codegen/*.c runtime/*.c >"$tmp/text.txt"
	"$S" data "$tmp/text.txt" -o "$tmp/text.bin" >/dev/null || exit 1
	data=(--data "$tmp/text.bin")
fi
# model|settings: tiny_moe at a GPU-sized batch; gpt2_124m, whose linear layers (width
# 768 and 2048, K in 128-blocks) run as cuBLASLt's block-scaled FP8 GEMM in fp8; the
# 1B MoE (models/moe_1b.sl) at its own batch, 8 x 1024 (MODELS_1B=0 leaves it out)
CASES=("models/tiny_moe.sl|--set batch=32 --set seq=256"
	"models/gpt2_124m.sl|--set batch=16 --set seq=512")
[ "${MODELS_1B:-1}" = 0 ] || CASES+=("models/moe_1b.sl|--set batch=8 --set seq=1024")
for c in "${CASES[@]}"; do
	model=${c%%|*} set=${c#*|} name=$(basename "${c%%|*}" .sl)
	for prec in bf16 fp8; do
		# shellcheck disable=SC2086
		"$S" check "$model" --set precision=$prec $set >"$LOG/check-$name-$prec.txt" 2>&1
		# shellcheck disable=SC2086
		if ! "$S" train "$model" "${data[@]}" --device cuda --steps "$STEPS" --eval-every 0 --quiet \
			--set precision=$prec $set --metrics "$LOG/speed-$name-$prec.jsonl" \
			--out "$tmp/$name-$prec" >"$LOG/speed-$name-$prec.log" 2>&1; then
			echo "gpu_fp8: $name $prec failed:" >&2
			tail -5 "$LOG/speed-$name-$prec.log" >&2
			rc=1
		fi
	done
done
python3 - "$LOG" "${CASES[@]}" <<'PY'
import json, os, statistics, sys
log = sys.argv[1]
print("| model | settings | bf16 tokens/s | fp8 tokens/s | fp8 / bf16 | bf16 loss (last) | fp8 loss (last) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for c in sys.argv[2:]:
    model, st = c.split("|")
    name = os.path.basename(model)[:-3]
    row = {}
    for p in ("bf16", "fp8"):
        f = os.path.join(log, "speed-%s-%s.jsonl" % (name, p))
        try:
            rows = [json.loads(l) for l in open(f)]
        except OSError:
            rows = []
        tps = [r["tokens_per_s"] for r in rows if r["step"] > 5]
        row[p] = (statistics.median(tps) if tps else None, rows[-1]["loss"] if rows else None)
    fmt = lambda v, f: f % v if v is not None else "failed"
    ratio = row["fp8"][0] / row["bf16"][0] if row["fp8"][0] and row["bf16"][0] else None
    print("| %s | %s | %s | %s | %s | %s | %s |" % (name, st, fmt(row["bf16"][0], "%.0f"),
          fmt(row["fp8"][0], "%.0f"), fmt(ratio, "%.3f"), fmt(row["bf16"][1], "%.4f"),
          fmt(row["fp8"][1], "%.4f")))
PY
# the loss gap, fp8 against bf16, and for scale fp32 against bf16 (two runs that differ
# only in rounding), over SEEDS
echo
echo "| seed | runs | mean gap, last 20% of steps | largest smoothed gap | largest single-step gap |"
echo "| --- | --- | --- | --- | --- |"
for seed in ${SEEDS:-1 2 3}; do
	for pair in "bf16 fp8" "bf16 fp32"; do
		# shellcheck disable=SC2086
		set -- $pair
		o="$LOG/gap-$seed-$1-$2"
		if SLUICE=$S DEVICE=cuda STEPS=${GAP_STEPS:-300} SEED=$seed BASE=$1 TEST=$2 OUT="$o" \
			SET="${data[*]}" bash tools/bench/fp8_gap.sh models/tiny_moe.sl >"$o.md" 2>&1; then
			mean=$(grep -m1 '^| mean gap' "$o.md" | cut -d'|' -f3)
			big=$(grep -m1 '^| largest smoothed' "$o.md" | cut -d'|' -f3)
			one=$(grep -m1 '^| largest single' "$o.md" | cut -d'|' -f3)
			echo "| $seed | $2 against $1 |$mean|$big|$one|"
		else
			echo "| $seed | $2 against $1 | failed: $o.md | | |"
			rc=1
		fi
		rm -rf "${o:?}/$1" "${o:?}/$2" # the checkpoints
	done
done
exit $rc
