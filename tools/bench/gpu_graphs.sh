#!/usr/bin/env bash
# gpu_graphs.sh LOGDIR - on a GPU, what replaying each chunk as a CUDA graph gives
# (codegen/cuda/backend.c): every model trained STEPS steps (default 15) with the
# graphs (the default) and with SLUICE_CUDA_GRAPHS=0 (launches queued one by one),
# one after the other in the same process order; tokens/s the median of the steps after
# the fifth; and whether the two runs' losses are bit-identical (they must be).
# Logs and metrics go to LOGDIR; a markdown table is printed last.
# env: SLUICE (default build-gpu/sluice), STEPS, PRECISION (default bf16), DATA.
set -u -o pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/bench/gpu_graphs.sh LOGDIR" >&2
	exit 2
fi
cd "$(dirname "$0")/../.." || exit 1
LOG=$1
mkdir -p "$LOG" || exit 1
S=${SLUICE:-build-gpu/sluice}
STEPS=${STEPS:-15}
PREC=${PRECISION:-bf16}
export NCCL_NVLS_ENABLE=0 SLUICE_GEMM_TUNE=0
tmp=$(mktemp -d /tmp/sluice-gpu-graphs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
data=()
if [ -n "${DATA:-}" ]; then
	data=(--data "$DATA")
elif [ ! -d /usr/share/games/fortunes ]; then
	cat README.md tools/*.c codegen/*.c runtime/*.c >"$tmp/text.txt"
	"$S" data "$tmp/text.txt" -o "$tmp/text.bin" >/dev/null || exit 1
	data=(--data "$tmp/text.bin")
fi
CASES=("models/tiny_gpt.sl|--set batch=32 --set seq=256"
	"models/tiny_moe.sl|--set batch=32 --set seq=256"
	"models/gpt2_124m.sl|--set batch=16 --set seq=512")
rc=0
for c in "${CASES[@]}"; do
	model=${c%%|*} set=${c#*|} name=$(basename "${c%%|*}" .sl)
	for g in 1 0; do
		# shellcheck disable=SC2086
		if ! SLUICE_CUDA_GRAPHS=$g "$S" train "$model" "${data[@]}" --device cuda \
			--steps "$STEPS" --eval-every 0 --quiet --set precision="$PREC" $set \
			--metrics "$LOG/graphs-$name-$g.jsonl" --out "$tmp/$name-$g" \
			>"$LOG/graphs-$name-$g.log" 2>&1; then
			echo "gpu_graphs: $name, SLUICE_CUDA_GRAPHS=$g failed:" >&2
			tail -5 "$LOG/graphs-$name-$g.log" >&2
			rc=1
		fi
	done
done
python3 - "$LOG" "$PREC" "${CASES[@]}" <<'PY' || rc=1
import json, os, statistics, sys
log, prec = sys.argv[1], sys.argv[2]
print("| model (%s) | settings | graphs tokens/s | one by one tokens/s | ratio | losses |" % prec)
print("| --- | --- | --- | --- | --- | --- |")
bad = 0
for c in sys.argv[3:]:
    model, st = c.split("|")
    name = os.path.basename(model)[:-3]
    tps, loss = {}, {}
    for g in ("1", "0"):
        try:
            rows = [json.loads(l) for l in open(os.path.join(log, "graphs-%s-%s.jsonl" % (name, g)))]
        except OSError:
            rows = []
        t = [r["tokens_per_s"] for r in rows if r["step"] > 5]
        tps[g] = statistics.median(t) if t else None
        loss[g] = [r["loss"] for r in rows]
    same = loss["1"] == loss["0"] and len(loss["1"]) > 0
    bad += not same
    ratio = "%.3f" % (tps["1"] / tps["0"]) if tps["1"] and tps["0"] else "failed"
    f = lambda v: "%.0f" % v if v else "failed"
    print("| %s | %s | %s | %s | %s | %s |" % (name, st, f(tps["1"]), f(tps["0"]), ratio,
          "bit-identical" if same else "DIFFER"))
sys.exit(1 if bad else 0)
PY
exit $rc
