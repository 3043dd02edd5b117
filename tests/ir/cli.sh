#!/usr/bin/env bash
# cli.sh SLUICE - 'sluice ir' and 'sluice dot' as a user runs them: exit codes, the
# round trip through files, --after, --set on textual IR, and the pictures.
set -u
sluice=${1:?usage: cli.sh SLUICE}
tmp=$(mktemp -d)
# in a sanitizer build, Graphviz's own leaks are not ours (see the file)
export LSAN_OPTIONS="suppressions=$(pwd)/tests/ir/lsan-graphviz.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

trap 'rm -rf "$tmp"' EXIT
fail=0
expect() { # expect CODE CMD...: run, compare the exit status
	local want=$1
	shift
	"$@" >"$tmp/out" 2>"$tmp/err"
	local got=$?
	if [ "$got" != "$want" ]; then
		echo "FAIL: exit $got, want $want: $*" >&2
		sed 's/^/  | /' "$tmp/err" >&2
		fail=1
	fi
}
has() { # has FILE TEXT
	grep -qF -- "$2" "$1" || { echo "FAIL: '$2' not in $1:" >&2; sed 's/^/  | /' "$1" | head -20 >&2; fail=1; }
}

expect 0 "$sluice" ir --help
has "$tmp/out" "--after PASS"
expect 0 "$sluice" dot --help
expect 2 "$sluice" ir
expect 2 "$sluice" ir models/tiny_gpt.sl --bogus
expect 2 "$sluice" ir models/tiny_gpt.sl --after nonsense
has "$tmp/err" "unknown pass 'nonsense'; the passes, in order: verify bf16 autodiff"
# precision bf16: the pass casts a product's operands (weights from their f32 PARAM)
expect 0 "$sluice" ir models/tiny_gpt.sl --after bf16 --set precision=bf16 --set layers=1
has "$tmp/out" "= cast %11 : bf16[192, 192] scope layers.0.attn"
has "$tmp/out" "%22, %23 = attention %20, %21, %19 {causal = 1, scale = 0.17677669529663687} : bf16[8, 128, 6, 32], f32[8, 6, 128]"
expect 1 "$sluice" ir "$tmp/missing.sl"
expect 1 "$sluice" ir "$tmp/missing.ir"

# the round trip through files, forward and after autodiff
expect 0 "$sluice" ir models/tiny_gpt.sl --after verify -o "$tmp/a.ir"
expect 0 "$sluice" ir "$tmp/a.ir" --after verify
cmp -s "$tmp/a.ir" "$tmp/out" || { echo "FAIL: ir round trip through a file" >&2; fail=1; }
expect 0 "$sluice" ir models/tiny_gpt.sl
cp "$tmp/out" "$tmp/b.ir"
has "$tmp/b.ir" " bwd_w "
expect 0 "$sluice" ir "$tmp/b.ir" --after verify
cmp -s "$tmp/b.ir" "$tmp/out" || { echo "FAIL: ir round trip after autodiff" >&2; fail=1; }
# precision fp8: the fp8 pass quantises the products; its output reads back as it is,
# and the pass leaves a graph quantised already as it is
expect 0 "$sluice" ir models/tiny_moe.sl --after fp8 --set precision=fp8 -o "$tmp/f8.ir"
has "$tmp/f8.ir" "= scaled_matmul "
has "$tmp/f8.ir" "= scaled_grouped_matmul_wgrad "
has "$tmp/f8.ir" "{tile_r = 128, tile_c = 128} : f8e4m3["
expect 0 "$sluice" ir "$tmp/f8.ir" --after fp8
cmp -s "$tmp/f8.ir" "$tmp/out" || { echo "FAIL: ir round trip after fp8" >&2; fail=1; }
# the chunk pass labels every op's part; its output reads back, and running it again
# changes nothing
expect 0 "$sluice" ir models/tiny_moe.sl --after chunk --set ep=2 -o "$tmp/ch.ir"
grep -qE '= grouped_matmul_wgrad .*part = "mlp"' "$tmp/ch.ir" &&
	grep -qE '= all_to_allv .*part = "combine"' "$tmp/ch.ir" ||
	{ echo "FAIL: the chunk pass's parts are not in $tmp/ch.ir" >&2; fail=1; }
expect 0 "$sluice" ir "$tmp/ch.ir"
cmp -s "$tmp/ch.ir" "$tmp/out" || { echo "FAIL: ir round trip after chunk" >&2; fail=1; }
expect 0 "$sluice" ir models/tiny_moe.sl --after fp8
grep -q "scaled_matmul" "$tmp/out" && { echo "FAIL: fp8 pass ran at precision fp32" >&2; fail=1; }
# sluice check by precision: under fp8 most GEMM FLOPs are E4M3 (not the head's nor the
# routers'), and the activations saved after the pass are fewer (FP8 copies)
expect 0 "$sluice" check models/tiny_moe.sl --set precision=fp8
has "$tmp/out" "GEMM FLOPs/token    fp8 "
has "$tmp/out" "AdamW moments       bf16 "
expect 0 "$sluice" check --json models/tiny_moe.sl --set precision=fp8
python3 - "$tmp/out" <<'PY' || { echo "FAIL: sluice check --json by precision" >&2; fail=1; }
import json, sys
o = json.load(open(sys.argv[1]))
assert o["precision"] == "fp8"
assert 0.5 * o["flops_per_token"] < o["flops_fp8_per_token"] < o["flops_per_token"], o
assert 0 < o["activation_bytes_fp8"] < o["activation_bytes"], o
assert 0 < o["params_fp8"] < o["params_total"] + o["params_mtp"], o
PY
# the expert-parallel all-to-alls a rank sends a micro-batch, by precision (ep 2): bf16
# rows half of fp32's; fp8's dispatched rows one byte an element with their scales
# (a float per 128), the combine's in bf16: below bf16's, above a quarter of fp32's
for p in fp32 bf16 fp8; do
	expect 0 "$sluice" check --json models/tiny_moe.sl --set ep=2 --set precision=$p
	cp "$tmp/out" "$tmp/a2a-$p.json"
done
python3 - "$tmp"/a2a-fp32.json "$tmp"/a2a-bf16.json "$tmp"/a2a-fp8.json <<'PY' ||
import json, sys
f32, b16, f8 = (json.load(open(p)) for p in sys.argv[1:])
a, b, c = (o["all_to_all_bytes"] for o in (f32, b16, f8))
assert a > 0 and b == a / 2 and a / 4 < c < b, (a, b, c)
e, s = f8["all_to_all_bytes_e4m3"], f8["all_to_all_bytes_scales"]
assert e > 0 and abs(s - e * 4 / 128) < 1e-6 * e, (e, s)
assert f32["all_to_all_bytes_e4m3"] == 0
PY
	{ echo "FAIL: sluice check's all-to-all bytes by precision" >&2; fail=1; }
expect 0 "$sluice" check models/tiny_moe.sl --set ep=2 --set precision=fp8
has "$tmp/out" "all-to-all (ep 2)"
expect 0 "$sluice" check models/tiny_moe.sl
has "$tmp/out" "GEMM FLOPs/token    f32 "
# autodiff leaves a graph already differentiated as is: 'sluice ir' reads back its own
# output at every stage, and 'sluice check' takes it
cp "$tmp/b.ir" "$tmp/c.ir"
expect 0 "$sluice" ir "$tmp/c.ir"
cmp -s "$tmp/b.ir" "$tmp/out" || { echo "FAIL: ir of the differentiated graph differs" >&2; fail=1; }
expect 0 "$sluice" check "$tmp/c.ir"
has "$tmp/out" "parameters"
expect 0 "$sluice" check "$tmp/a.ir"
# ... but a backward without all its gradient outputs is refused
grep -v '^output grad\.' "$tmp/b.ir" >"$tmp/partial.ir"
expect 1 "$sluice" ir "$tmp/partial.ir"
has "$tmp/err" "a partial backward"
# a graph's train settings are checked as a model's are
sed 's/^train lr = .*/train lr = -1/' "$tmp/a.ir" >"$tmp/badset.ir"
if grep -q '^train lr = -1' "$tmp/badset.ir"; then
	expect 1 "$sluice" ir "$tmp/badset.ir"
	has "$tmp/err" "'lr' is a number > 0, not -1"
fi

# --set on textual IR changes train settings only
setting=$(sed -n 's/^train \([A-Za-z_.]*\) = [0-9].*/\1/p' "$tmp/a.ir" | head -1)
if [ -n "$setting" ]; then
	expect 0 "$sluice" ir "$tmp/a.ir" --after verify --set "$setting=12345"
	has "$tmp/out" "train $setting = 12345"
fi
expect 1 "$sluice" ir "$tmp/a.ir" --set no_such_setting=1
has "$tmp/err" "textual IR has no train setting 'no_such_setting'"

# a malformed IR file: FILE:LINE:COL
printf 'model m\n%%0 = input : f32[4\n' >"$tmp/bad.ir"
expect 1 "$sluice" ir "$tmp/bad.ir"
has "$tmp/err" "bad.ir:2:19: error: expected"
# an IR file that parses but does not verify
printf 'model m\n%%0 = input {name = "a"} : f32[4]\n%%1 = exp %%0 : f32[5] @m.sl:3:4\n' >"$tmp/inv.ir"
expect 1 "$sluice" ir "$tmp/inv.ir"
has "$tmp/err" "m.sl:3:4: error: exp %1: output f32[5] must have the input's shape and dtype f32[4]"

# pictures
expect 0 "$sluice" dot models/tiny_gpt.sl -o "$tmp/g.dot"
has "$tmp/g.dot" "digraph"
expect 2 "$sluice" dot models/tiny_gpt.sl
expect 2 "$sluice" dot models/tiny_gpt.sl -o "$tmp/g.jpeg2000"
expect 0 "$sluice" dot models/deepseek_v3.sl --after verify -o "$tmp/v3.dot"
has "$tmp/v3.dot" " (x"
expect 0 "$sluice" dot models/tiny_gpt.sl --after verify -o "$tmp/g.svg"
if [ -f "$tmp/g.svg" ]; then
	has "$tmp/g.svg" "<svg"
else
	has "$tmp/err" "dot -Tsvg"
	has "$tmp/g.dot" "digraph"
fi
[ -z "$(ls "$tmp" | grep '\.tmp\.')" ] || { echo "FAIL: temporary files left" >&2; fail=1; }
exit $fail
