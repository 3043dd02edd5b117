#!/usr/bin/env bash
# torch_check.sh SLUICE [DEVICE] - sluice's training step against PyTorch: a model is
# trained one step (weights after it in a checkpoint), then resumed for one more step
# with SLUICE_GRAD_DUMP; tests/gpu/torch_check.py builds the same model in plain
# PyTorch (float64) from that checkpoint and computes the loss and gradients of the
# dumped batch, which must match sluice's:
#   fp32: loss within 1e-5 relative, every gradient within 1e-4 of its largest element.
#         sluice sums in f32 (24 bits): over these sizes the differences are a few ulps
#         (seen on the CPU: 1.3e-8 and 2e-6); a wrong op (a rotation's sign, a norm's
#         eps, a mask) moves them by 1e-2 or more.
#   bf16: loss within 1e-3, gradients within 5e-2.  bf16 keeps 8 significant bits (2^-9
#         relative a rounding) and a weight's gradient goes through a dozen roundings
#         of activations and gradients above it (seen with the CPU's exact emulation:
#         8.9e-6 and 1.4e-2).
# Cases: tiny_gpt fp32 and bf16, gpt2_124m fp32 (vocabulary 50304, width 768).
# DEVICE: cuda (default; skips with 77 without a GPU) or cpu.  Skips with 77 without
# PyTorch (PYTHON, default python3, must import torch and numpy).
set -u
SLUICE=$(realpath "$1")
DEV=${2:-cuda}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
	echo "torch_check: skipped: $PY cannot import torch and numpy"
	exit 77
fi
if [ "$DEV" = cuda ] && ! "$SLUICE" devices 2>/dev/null | grep -q "^gpu [0-9]"; then
	echo "torch_check: skipped: no GPU"
	exit 77
fi
T=$(mktemp -d /tmp/sluice-torch.XXXXXX)
trap 'rm -rf "$T"' EXIT
cat "$ROOT"/README.md "$ROOT"/docs/*.md "$ROOT"/tools/*.c >"$T/text.txt"
"$SLUICE" data "$T/text.txt" -o "$T/text.bin" >/dev/null 2>&1 || { echo "FAIL: sluice data"; exit 1; }
fails=0
# case NAME MODEL HEADS PRECISION LOSS_TOL GRAD_TOL SETTINGS...
case_() {
	local name=$1 model=$2 heads=$3 prec=$4 lt=$5 gt=$6
	shift 6
	local run=("$SLUICE" train "$ROOT/models/$model.sl" --device "$DEV" --data "$T/text.bin"
		--quiet --eval-every 0 --set precision="$prec" "$@")
	if ! "${run[@]}" --steps 1 --out "$T/$name-a" >"$T/$name-a.out" 2>&1 ||
		! SLUICE_GRAD_DUMP=$T/$name "${run[@]}" --steps 2 --resume "$T/$name-a" \
			--out "$T/$name-b" --metrics "$T/$name.jsonl" >"$T/$name-b.out" 2>&1; then
		echo "FAIL: $name: sluice train: $(tail -3 "$T/$name-a.out" "$T/$name-b.out")"
		fails=$((fails + 1))
		return
	fi
	local loss
	loss=$("$PY" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["loss"])' \
		"$T/$name.jsonl")
	echo "== $name ($model, $prec, $DEV)"
	"$PY" "$ROOT/tests/gpu/torch_check.py" "$T/$name-a/checkpoint.safetensors" \
		"$T/$name.rank0.safetensors" "$T/$name.batch.safetensors" "$loss" --heads "$heads" \
		--loss-tol "$lt" --grad-tol "$gt" || fails=$((fails + 1))
}
case_ tiny_gpt-fp32 tiny_gpt 6 fp32 1e-5 1e-4 --set batch=4 --set seq=128
case_ tiny_gpt-bf16 tiny_gpt 6 bf16 1e-3 5e-2 --set batch=4 --set seq=128
case_ gpt2_124m-fp32 gpt2_124m 12 fp32 1e-5 1e-4 --set batch=2 --set seq=256
if [ "$fails" -ne 0 ]; then
	echo "torch_check: $fails failed"
	exit 1
fi
echo "torch_check: sluice's step equals PyTorch's in every case"
