#!/usr/bin/env bash
# gpu_vs_torch.sh LOGDIR - gpt2_124m (models/gpt2_124m.sl; MODEL=moe: models/moe_bench.sl)
# on one GPU, bf16, batch BATCH x SEQ (16 x 1024; moe 8 x 1024): `sluice train`
# against the same model in PyTorch eager and
# under torch.compile (tools/bench/torch_train.py), side by side on the same GPU;
# tokens/s (median of the steps after the warm-up), MFU from sluice's count of FLOPs
# a token (the same for both), memory; then sluice's step again under
# SLUICE_CUDA_PROFILE=1 (the heaviest kernels and library calls).  Logs go to LOGDIR, a
# table is printed last.  env: SLUICE (build-gpu/sluice), MODEL (dense or moe), BATCH,
# SEQ, STEPS (12), SKIP_COMPILE=1 (no torch.compile row).
set -u -o pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
	echo "usage: tools/bench/gpu_vs_torch.sh LOGDIR" >&2
	exit 2
fi
cd "$(dirname "$0")/../.." || exit 1
LOG=$1
mkdir -p "$LOG" || exit 1
S=${SLUICE:-build-gpu/sluice}
MODEL=${MODEL:-dense}
case "$MODEL" in
dense) SL=models/gpt2_124m.sl B=${BATCH:-16} ;;
moe) SL=models/moe_bench.sl B=${BATCH:-8} ;;
*) echo "gpu_vs_torch: MODEL is dense or moe, not $MODEL" >&2; exit 2 ;;
esac
T=${SEQ:-1024} STEPS=${STEPS:-12}
export SLUICE_GEMM_TUNE=${SLUICE_GEMM_TUNE:-0}
tmp=$(mktemp -d /tmp/sluice-vs-torch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cat README.md docs/*.md tools/*.c codegen/*.c runtime/*.c >"$tmp/text.txt"
"$S" data "$tmp/text.txt" -o "$tmp/text.bin" >/dev/null 2>&1 || exit 1
rc=0
sl=(train "$SL" --device cuda --data "$tmp/text.bin" --eval-every 0 --quiet
	--set precision=bf16 --set batch="$B" --set seq="$T")
timeout 300 "$S" "${sl[@]}" --steps "$STEPS" --metrics "$LOG/sluice.jsonl" --out "$tmp/ck" \
	>"$LOG/sluice.log" 2>&1 || { echo "gpu_vs_torch: sluice train failed" >&2; rc=1; }
timeout 300 python3 tools/bench/torch_train.py --model "$MODEL" --batch "$B" --seq "$T" >"$LOG/torch-eager.log" 2>&1 ||
	{ echo "gpu_vs_torch: torch eager failed" >&2; rc=1; }
if [ "${SKIP_COMPILE:-0}" != 1 ]; then
	timeout 400 python3 tools/bench/torch_train.py --model "$MODEL" --compile --batch "$B" --seq "$T" \
		>"$LOG/torch-compile.log" 2>&1 || { echo "gpu_vs_torch: torch.compile failed" >&2; rc=1; }
fi
SLUICE_CUDA_PROFILE=1 timeout 300 "$S" "${sl[@]}" --steps "${PROFILE_STEPS:-4}" --out "$tmp/ck2" \
	>"$LOG/sluice-profile.log" 2>&1 || { echo "gpu_vs_torch: the profile run failed" >&2; rc=1; }
python3 - "$LOG" "$B" "$T" "$SL" <<'PY' || rc=1
import json, os, re, statistics, sys
log, B, T, sl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), os.path.basename(sys.argv[4])
text = open(os.path.join(log, "sluice.log")).read()
m = re.search(r"model: ([0-9.]+) MFLOP per token", text)
fpt = float(m.group(1)) * 1e6 if m else float("nan")
rows = [json.loads(l) for l in open(os.path.join(log, "sluice.jsonl"))]
t = [r["time_s"] for r in rows][3:]
dt = statistics.median(b - a for a, b in zip(t, t[1:])) if len(t) > 2 else float("nan")
mem = re.search(r"arena: ([0-9.]+) MiB", text)
print("%s, bf16, batch %d x seq %d, one GPU; MFU at 989 TFLOP/s and %.0f MFLOP a token (sluice's count)" % (sl, B, T, fpt / 1e6))
print()
print("| run | tokens/s | vs torch.compile | step ms | MFU | memory |")
print("| --- | --- | --- | --- | --- | --- |")
res = [("sluice", B * T / dt, dt * 1e3, "arena %s MiB planned" % mem.group(1) if mem else "-")]
for n in ("eager", "compile"):
    p = os.path.join(log, "torch-%s.log" % n)
    s = open(p).read() if os.path.exists(p) else ""
    m = re.search(r"([0-9.]+) tokens/s, step ([0-9.]+) ms, peak memory ([0-9.]+) MiB", s)
    if m:
        res.append(("torch " + n, float(m.group(1)), float(m.group(2)), "peak %s MiB" % m.group(3)))
comp = [r[1] for r in res if r[0] == "torch compile"]
for name, tok, ms, mm in res:
    print("| %s | %.0f | %s | %.1f | %.1f%% | %s |" % (
        name, tok, "%.2f" % (tok / comp[0]) if comp else "-", ms, 100 * tok * fpt / 989e12, mm))
PY
echo
sed -n "/^profile/,\$p" "$LOG/sluice-profile.log" | head -60
exit $rc
