#!/usr/bin/env bash
# recompute_test.sh SLUICE - the train setting recompute through the sluice command, on
# tiny_moe (MLA, a dense layer, MoE layers, an MTP module) on the CPU backend:
#  - every schedule (1f1b, zb1p, dualpipe, dualpipev on 2 pipeline ranks), one rank, expert
#    parallelism (ep 2) and precision fp8, each with recompute = layers and with
#    recompute = norm, swiglu, mla_up, train to the same losses as without recompute, bit
#    for bit, and give the same first-step gradients bit for bit: a copy of a forward op
#    computes the same op on the same inputs, so the bound is 0 (a copy that read a wrong
#    input, or a stage that lost a recomputed value, shows at once);
#  - sluice check counts fewer saved activations with it, and ir --after recompute
#    shows the copies;
#  - a word that is not a choice is refused with the choices.
set -u
SLUICE=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/sluice-recompute-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
MODEL=$ROOT/models/tiny_moe.sl
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export SLUICE_THREADS=1

cat "$ROOT"/README.md "$ROOT"/docs/*.md > text.txt
"$SLUICE" data text.txt -o text.bin --val-fraction 0.1 >/dev/null 2>&1 || fail "sluice data"

# run NAME RANKS SETTINGS...: 3 steps, metrics in NAME.jsonl, step 1's gradients in NAME.rank*
run() {
	local name=$1 ranks=$2
	shift 2
	SLUICE_GRAD_DUMP=$T/$name "$SLUICE" train "$MODEL" --ranks "$ranks" --data text.bin \
		--steps 3 --eval-every 0 --quiet --set seq=32 --set batch=2 --out "$T/ck-$name" \
		--metrics "$name.jsonl" "$@" >"$name.out" 2>&1 ||
		{ fail "$name: $(tail -3 "$name.out")"; return 1; }
}

# same NAME REF: the losses and the dumped gradients bit for bit
same() {
	local name=$1 ref=$2 f
	if ! cmp -s <(python3 -c "import json,sys; [print(json.loads(l)['loss']) for l in open(sys.argv[1])]" "$name.jsonl") \
		<(python3 -c "import json,sys; [print(json.loads(l)['loss']) for l in open(sys.argv[1])]" "$ref.jsonl"); then
		fail "$name: losses differ from $ref: $(paste -d' ' "$name.jsonl" "$ref.jsonl" | head -c 300)"
		return
	fi
	local n=0
	for f in "$ref".rank*.safetensors; do
		[ -f "$f" ] || { fail "$ref: no gradients dumped"; return; }
		cmp -s "$f" "${f/#$ref/$name}" || { fail "$name: gradients in ${f/#$ref/$name} differ from $f"; return; }
		n=$((n + 1))
	done
	ok "$name: 3 losses and the gradients of $n rank(s) bit-identical to $ref"
}

ALL="norm,swiglu,mla_up"
# one rank
run one 1 && run one-layers 1 --set recompute=layers && run one-parts 1 --set recompute=$ALL &&
	{ same one-layers one; same one-parts one; }
# every schedule on two pipeline ranks (the sanitizer build, there for memory errors:
# zb1p, which splits the backward, and dualpipev, which holds two stages a rank)
SCHEDULES="1f1b zb1p dualpipe dualpipev"
[ "${RECOMPUTE_QUICK:-0}" = 1 ] && SCHEDULES="zb1p dualpipev"
for s in $SCHEDULES; do
	mb=4
	run "$s" 2 --set pp=2 --set microbatches=$mb --set schedule=$s || continue
	run "$s-layers" 2 --set pp=2 --set microbatches=$mb --set schedule=$s --set recompute=layers &&
		same "$s-layers" "$s"
	run "$s-parts" 2 --set pp=2 --set microbatches=$mb --set schedule=$s --set recompute=$ALL &&
		same "$s-parts" "$s"
done
# expert parallelism: the exchanges stay in the forward, the experts' ops are recomputed
run ep 2 --set ep=2 && run ep-layers 2 --set ep=2 --set recompute=layers,swiglu &&
	same ep-layers ep
# precision fp8: the FP8 copies of recomputed values are recomputed too
run fp8 1 --set precision=fp8 && run fp8-parts 1 --set precision=fp8 --set recompute=$ALL &&
	same fp8-parts fp8

# sluice check: fewer activations saved, and the copies in the IR
"$SLUICE" check "$MODEL" --json >none.json 2>check.err &&
	"$SLUICE" check "$MODEL" --set recompute=layers --json >layers.json 2>>check.err &&
	python3 - none.json layers.json <<'PY' || fail "sluice check with recompute (above; $(head -c 300 check.err))"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
before, after = a["activation_bytes"], b["activation_bytes_recompute"]
assert "activation_bytes_recompute" not in a, "recompute reported without the setting"
assert after < before / 4, f"recompute = layers saves too little: {after} of {before} bytes"
print(f"ok: sluice check: activations {before / 2**20:.2f} MiB, {after / 2**20:.2f} MiB "
      f"with recompute = layers")
PY
n=$("$SLUICE" ir "$MODEL" --set recompute=swiglu --after recompute 2>/dev/null |
	grep -c "silu .*recompute = 1.* bwd_b")
# the dense layer's, and the shared and the routed experts' of 3 MoE layers and the MTP
# module's layer
[ "$n" = 9 ] && ok "ir --after recompute: the 9 SwiGLU silu ops copied into bwd_b" ||
	fail "ir --after recompute shows $n silu copies, not 9"

# a word that is not a choice
"$SLUICE" train "$MODEL" --data text.bin --steps 1 --set recompute=norm,attention >bad.out 2>&1
rc=$?
if [ "$rc" -eq 1 ] && grep -q "'recompute' is a list of norm, swiglu, mla_up or layers (or none), not 'attention'" bad.out; then
	ok "recompute=norm,attention refused"
else
	fail "recompute=norm,attention: status $rc: $(head -c 300 bad.out)"
fi

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "recompute gives the same training everywhere"
