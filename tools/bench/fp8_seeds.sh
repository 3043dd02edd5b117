#!/usr/bin/env bash
# fp8_seeds.sh - the FP8 loss gap over several seeds: the model trained once per seed
# and precision (PRECS, the first the baseline), same steps and data, and for each run
# the mean training loss over its last 20% of steps.  One run's gap cannot judge
# DeepSeek-V3's 0.25%: a small model's trajectory turns any rounding difference into a
# loss difference of that order (two bf16 runs of one seed whose GEMMs differ only by
# cuBLASLt's choice of algorithm end 0.2% apart), so the gap is read as the mean over
# seeds of the per-seed (paired: same initial weights, same batches) relative
# differences, with its standard error, beside the spread of the runs themselves.
# Prints a markdown table per run and the summary; writes OUT/runs.csv.
# cuBLASLt's algorithms are the heuristic's first, untimed (SLUICE_GEMM_TUNE=0), so a
# rerun gives the same losses.
# Usage: tools/bench/fp8_seeds.sh MODEL.sl
#   env: SLUICE (./build/sluice), DEVICE (cpu|cuda, default cpu), STEPS (2000),
#        SEEDS ("1 2 3 4 5"), PRECS ("bf16 fp8"), OUT (runs/fp8seeds-MODEL),
#        SET ("--set a=b ..." for every run, e.g. --data FILE)
set -euo pipefail
usage="usage: tools/bench/fp8_seeds.sh MODEL.sl
  env: SLUICE, DEVICE (cpu|cuda), STEPS (2000), SEEDS (\"1 2 3 4 5\"),
       PRECS (\"bf16 fp8\", the first the baseline), OUT, SET"
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "$usage" >&2
	exit 2
fi
model=$1
SLUICE=${SLUICE:-./build/sluice}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-2000}
SEEDS=${SEEDS:-1 2 3 4 5}
PRECS=${PRECS:-bf16 fp8}
name=$(basename "$model" .sl)
out=${OUT:-runs/fp8seeds-$name}
[ -f "$model" ] || { echo "fp8_seeds: no model file '$model'" >&2; exit 2; }
[ -x "$SLUICE" ] || { echo "fp8_seeds: SLUICE='$SLUICE' is not an executable" >&2; exit 2; }
case $DEVICE in cpu | cuda) ;; *) echo "fp8_seeds: DEVICE must be cpu or cuda" >&2; exit 2 ;; esac
case $STEPS in '' | *[!0-9]* | 0) echo "fp8_seeds: STEPS must be a positive integer" >&2; exit 2 ;; esac
for s in $SEEDS; do
	case $s in *[!0-9]*) echo "fp8_seeds: SEEDS are non-negative integers, not '$s'" >&2; exit 2 ;; esac
done
n_prec=0
for p in $PRECS; do
	case $p in fp32 | bf16 | fp8) n_prec=$((n_prec + 1)) ;;
	*) echo "fp8_seeds: PRECS are fp32, bf16 or fp8, not '$p'" >&2; exit 2 ;;
	esac
done
[ "$n_prec" -ge 2 ] || { echo "fp8_seeds: PRECS needs two precisions or more" >&2; exit 2; }
[ -n "${SEEDS// /}" ] || { echo "fp8_seeds: SEEDS is empty" >&2; exit 2; }
export SLUICE_GEMM_TUNE=0
mkdir -p "$out"

echo "$name: $STEPS steps on $DEVICE, seeds $SEEDS, precisions $PRECS${SET:+, $SET}"
for seed in $SEEDS; do
	for prec in $PRECS; do
		run=$out/$prec-$seed
		rm -f "$run.jsonl"
		# shellcheck disable=SC2086
		"$SLUICE" train "$model" --device "$DEVICE" --steps "$STEPS" --seed "$seed" \
			--eval-every 0 --quiet --set precision=$prec ${SET:-} \
			--metrics "$run.jsonl" --out "$run" 2>"$run.log" || {
			echo "fp8_seeds: the $prec run of seed $seed failed; the end of $run.log:" >&2
			tail -5 "$run.log" >&2
			exit 1
		}
		rm -f "$run"/*.safetensors
		echo "seed $seed $prec: $(grep -E '^done:' "$run.log" | sed 's/, checkpoint.*//')"
	done
done

python3 - "$out" "$STEPS" "$PRECS" "$SEEDS" <<'PY'
import json, math, os, sys
out, steps, precs, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
tail = max(1, steps // 5)
def tail_mean(prec, seed):
    rows = [json.loads(l) for l in open(os.path.join(out, f"{prec}-{seed}.jsonl"))]
    loss = {r["step"]: r["loss"] for r in rows}
    if sorted(loss) != list(range(1, steps + 1)):
        sys.exit(f"fp8_seeds: {prec}-{seed} did not log steps 1..{steps}")
    return sum(loss[s] for s in range(steps - tail + 1, steps + 1)) / tail
def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    v = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(v / len(xs))
L = {p: [tail_mean(p, s) for s in seeds] for p in precs}
with open(os.path.join(out, "runs.csv"), "w") as f:
    f.write("seed," + ",".join(f"loss_{p}" for p in precs) + "\n")
    for i, s in enumerate(seeds):
        f.write(s + "," + ",".join(f"{L[p][i]:.7g}" for p in precs) + "\n")
base = precs[0]
print(f"\nmean training loss over steps {steps - tail + 1}-{steps}, per seed:\n")
print("| seed | " + " | ".join(precs) + " | " +
      " | ".join(f"{p} gap" for p in precs[1:]) + " |")
print("| --- " * (2 * len(precs)) + "|")
for i, s in enumerate(seeds):
    gaps = [100 * (L[p][i] - L[base][i]) / L[base][i] for p in precs[1:]]
    print(f"| {s} | " + " | ".join(f"{L[p][i]:.4f}" for p in precs) + " | " +
          " | ".join(f"{g:+.3f}%" for g in gaps) + " |")
print("\n| figure | value |")
print("| --- | --- |")
for p in precs:
    m, se = mean_se(L[p])
    sd = se * math.sqrt(len(seeds))
    print(f"| {p}: mean over seeds (s.e.), spread between seeds (s.d.) | "
          f"{m:.4f} ({se:.4f}), {100 * sd / m:.3f}% |")
for p in precs[1:]:
    g = [(L[p][i] - L[base][i]) / L[base][i] for i in range(len(seeds))]
    m, se = mean_se(g)
    verdict = ("under" if abs(m) + 2 * se < 0.0025 else
               "over" if abs(m) - 2 * se > 0.0025 else "not separable from")
    print(f"| {p} against {base}: paired gap, mean over seeds (s.e.) | "
          f"{100 * m:+.3f}% ({100 * se:.3f}%): {verdict} 0.25% at two s.e. |")
print(f"written: {os.path.join(out, 'runs.csv')}")
PY
