#!/usr/bin/env bash
# engine_speed.sh - single-rank CPU training speed of this tree against another commit
# (default: c15164e, the last one before the compiled program and the runtime's
# training engine), side by side on this machine: the other commit is built in a
# temporary worktree, then the two binaries train each model in turn, ROUNDS times,
# interleaved (old, new, old, new ...) so that both see the same machine load.  Per
# run: the median step time over the steps after the first three (JIT and caches
# warm), from the metrics' time_s, and the median CPU seconds a step (all threads).
# Usage: tools/bench/engine_speed.sh [OLD [NEW]]   (NEW: a commit built the same way;
#   default this tree's build/sluice)   env: ROUNDS (5), STEPS (25), MODELS
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-c15164e}
newc=${2:-}
ROUNDS=${ROUNDS:-5}
STEPS=${STEPS:-25}
MODELS=${MODELS:-"models/tiny_gpt.sl models/tiny_moe.sl"}
tmp=$(mktemp -d)
trap 'for w in old new; do git worktree remove --force "$tmp/$w" >/dev/null 2>&1 || true; done; rm -rf "$tmp"' EXIT
build_at() { # build_at DIR COMMIT
	git worktree add -q --detach "$1" "$2"
	cmake -S "$1" -B "$1/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DSLUICE_WITH_CUDA=OFF >/dev/null
	cmake --build "$1/build" --target sluice >/dev/null
}
build_at "$tmp/old" "$base"
newbin=build/sluice
if [ -n "$newc" ]; then
	build_at "$tmp/new" "$newc"
	newbin=$tmp/new/build/sluice
fi
[ -x "$newbin" ] || { echo "build this tree first (bash tools/setup.sh)"; exit 1; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $ROUNDS rounds of $STEPS steps"
echo "old: $base ($(git log -1 --format=%s "$base" | cut -c1-60))"
echo "new: ${newc:-$(git rev-parse --short HEAD)} ($(git log -1 --format=%s ${newc:-HEAD} | cut -c1-60))"
echo
echo "| model | old s/step | new s/step | new/old time | old CPU-s/step | new CPU-s/step | new/old CPU |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for m in $MODELS; do
	name=$(basename "$m" .sl)
	for r in $(seq "$ROUNDS"); do
		for v in old new; do
			bin=$newbin
			[ "$v" = old ] && bin=$tmp/old/build/sluice
			"$bin" train "$m" --steps "$STEPS" --quiet --eval-every 1000000 \
				--metrics "$tmp/$name-$v-$r.jsonl" --out "$tmp/ck-$v" 2>"$tmp/$name-$v.log" ||
				{ echo "$v failed on $m: $(tail -2 "$tmp/$name-$v.log")"; exit 1; }
		done
	done
	python3 - "$tmp" "$name" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def per_run(v, key):
    out = []
    for r in range(1, rounds + 1):
        rows = [json.loads(l) for l in open(f"{tmp}/{name}-{v}-{r}.jsonl")][3:]
        out.append(statistics.median(b[key] - a[key] for a, b in zip(rows, rows[1:])))
    return statistics.median(out)
ot, nt = per_run("old", "time_s"), per_run("new", "time_s")
oc, nc = per_run("old", "cpu_s"), per_run("new", "cpu_s")
print(f"| {name} | {ot:.4f} | {nt:.4f} | {nt / ot:.3f} | {oc:.4f} | {nc:.4f} | {nc / oc:.3f} |")
PY
done
