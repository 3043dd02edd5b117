#!/usr/bin/env bash
# gemm-probe.sh SLUICE LOGDIR [M N K DTYPE] - one GEMM shape, timed ROUNDS times (default
# 5) in turn by sluice with cuBLASLt's workspace at 32 MiB (its default), by sluice with
# 1 MiB (what PyTorch passes) and by PyTorch; then each side's kernel under Nsight
# Compute (launch statistics and duration; clocks left alone).  Default shape: the MoE
# down-projection in fp8 with block scales, M=4096 N=7168 K=2048.  Prints each run's
# TFLOP/s and the median per side last.
set -u -o pipefail
S=${1:?usage: gemm-probe.sh SLUICE LOGDIR [M N K DTYPE]}
LOG=${2:?usage: gemm-probe.sh SLUICE LOGDIR [M N K DTYPE]}
M=${3:-4096} N=${4:-7168} K=${5:-2048} DT=${6:-fp8-block}
ROUNDS=${ROUNDS:-5}
mkdir -p "$LOG"
cd "$(dirname "$0")/../.."
shape=(--m "$M" --n "$N" --k "$K" --dtype "$DT")
: >"$LOG/probe.txt"
for r in $(seq "$ROUNDS"); do
	"$S" bench gemm "${shape[@]}" | awk -v t="sluice-32M" '$1 != "dtype" && NF > 8 && $4 ~ /^[0-9]+$/ {print t, $7, $0}' >>"$LOG/probe.txt"
	SLUICE_GEMM_WORKSPACE=1048576 "$S" bench gemm "${shape[@]}" | awk -v t="sluice-1M" '$1 != "dtype" && NF > 8 && $4 ~ /^[0-9]+$/ {print t, $7, $0}' >>"$LOG/probe.txt"
	python3 tools/bench/torch_gemm.py "${shape[@]}" | awk -v t="torch" '$1 != "dtype" && NF > 8 && $4 ~ /^[0-9]+$/ {print t, $7, $0}' >>"$LOG/probe.txt"
done
if command -v ncu >/dev/null; then
	ncu --clock-control none -k regex:"nvjet|gemm|xmma|cutlass|sm90" --launch-skip 25 --launch-count 2 --section LaunchStats \
		--section SpeedOfLight "$S" bench gemm "${shape[@]}" --samples 1 --batch 2 --warmup 30 \
		>"$LOG/ncu-sluice.txt" 2>&1
	ncu --clock-control none -k regex:"nvjet|gemm|xmma|cutlass|sm90" --launch-skip 25 --launch-count 2 --section LaunchStats \
		--section SpeedOfLight python3 tools/bench/torch_gemm.py "${shape[@]}" --samples 1 \
		--batch 2 --warmup 30 >"$LOG/ncu-torch.txt" 2>&1
fi
cat "$LOG/probe.txt"
echo "median TFLOP/s per side:"
awk '{v[$1] = v[$1] " " $2} END {for (k in v) print k, v[k]}' "$LOG/probe.txt" |
	while read -r side vals; do
		echo "$side $(echo "$vals" | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ($vals)"
	done
for f in ncu-sluice ncu-torch; do
	[ -f "$LOG/$f.txt" ] || continue
	echo "== $f"
	grep -E "^  [a-zA-Z_].*\(|Duration|Grid Size|Block Size|Cluster Size|Registers Per|Shared Memory Config|Memory Throughput|Compute \(SM\)|DRAM Throughput" "$LOG/$f.txt" | head -40
done
