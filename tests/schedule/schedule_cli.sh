#!/bin/bash
# schedule_cli.sh SLUICE - 'sluice schedule': the table, JSON that parses and lists every
# action once, a Chrome trace that parses, a DOT picture, and bad input refused (exit 1);
# and a training step's measured trace against the program it ran.
set -u
sluice=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
no() { echo "schedule_cli: $*" >&2; fail=1; }
m=models/tiny_moe.sl

# the README's command, and DESIGN.md's figure: DualPipe pp 8, bubble (8/2-1)(3+2-3) = 6
out=$("$sluice" schedule $m --set pp=8 --set schedule=dualpipe --set microbatches=16 \
	--costs F=1,B=2,W=1,FB=3) || no "dualpipe table failed"
echo "$out" | grep -qE '^ +3 +48 +6 ' || no "dualpipe rank 3: want busy 48, bubble 6: $out"
echo "$out" | grep -qE ' 9 +2x$' || no "dualpipe: want peak 9 and 2x parameters: $out"
"$sluice" schedule $m --set pp=4 --set schedule=1f1b --set microbatches=8 \
	--costs F=1,B=2,W=1 | grep -qE '^ +0 +24 +9 ' || no "1f1b: want bubble 9"
"$sluice" schedule $m --set pp=4 --set schedule=zb1p --set microbatches=8 \
	--costs F=1,B=2,W=1 | grep -qE '^ +0 +24 +3 ' || no "zb1p: want bubble 3"
# costs from the model
"$sluice" schedule $m --set pp=2 --set schedule=zb1p --set microbatches=4 | grep -q 'ms$' ||
	no "costs from the model: no step in ms"

for s in 1f1b zb1p dualpipe dualpipev; do
	"$sluice" schedule $m --set pp=4 --set schedule=$s --set microbatches=8 \
		--costs F=1,B=2,W=1,T=0.1 --json -o "$tmp/$s.json" --trace "$tmp/$s.trace.json" \
		--dot "$tmp/$s.dot" || { no "$s: json/trace/dot failed"; continue; }
	python3 - "$tmp/$s.json" "$tmp/$s.trace.json" "$s" <<'PY' || no "$s: bad JSON"
import json, sys
j = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2])); name = sys.argv[3]
P, M, S = j["pp"], j["microbatches"], j["stages"]
parts = {}
for r in j["ranks"]:
    last = 0
    for a in r["actions"]:
        assert a["end"] >= a["start"] >= 0 and a["end"] <= j["step"] + 1e-9
        if a["stream"] != "compute":
            continue
        assert a["start"] >= last - 1e-9, "compute stream overlaps"
        last = a["end"]
        k = a["kind"]
        got = {"F": ["F"], "B": ["B"], "W": ["W"], "BW": ["B", "W"], "FB": ["F"]}[k]
        for p in got:
            parts.setdefault((p, a["mb"], a["stage"]), []).append((r["rank"], a["start"], a["end"]))
        if k == "FB":
            for p in ("B", "W"):
                parts.setdefault((p, a["mb2"], a["stage2"]), []).append((r["rank"], a["start"], a["end"]))
for p in "FBW":
    for m in range(M):
        for s in range(S):
            assert len(parts.get((p, m, s), [])) == 1, (p, m, s, parts.get((p, m, s)))
# dependencies: forward of stage s+1 after that of s, backward of s after that of s+1
for m in range(M):
    for s in range(S - 1):
        assert parts[("F", m, s + 1)][0][1] >= parts[("F", m, s)][0][2] - 1e-9
        assert parts[("B", m, s)][0][1] >= parts[("B", m, s + 1)][0][2] - 1e-9
    for s in range(S):
        assert parts[("W", m, s)][0][2] >= parts[("B", m, s)][0][2] - 1e-9
ev = t["traceEvents"]
assert any(e.get("ph") == "X" and e["tid"] == 1 for e in ev), "no comm events"
assert {e["pid"] for e in ev} == set(range(P))
PY
	grep -q '^digraph schedule' "$tmp/$s.dot" || no "$s: no DOT"
done

# measured, not only simulated: 'sluice train --trace' on four CPU ranks (pp 2 x dp 2,
# zb1p) writes the third step's timeline of every rank: every action of each rank's
# program once, in its order, on the rank's own clock from a common start; and the
# costs it measured, which 'sluice schedule --costs' simulates (its command line is
# printed): F the forward chunks' time over the stages, micro-batches and replicas
if command -v mpirun >/dev/null; then
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
	cat README.md docs/*.md >"$tmp/text.txt"
	"$sluice" data "$tmp/text.txt" -o "$tmp/text.bin" >/dev/null 2>&1 || no "sluice data"
	set_=(--set pp=2 --set microbatches=4 --set schedule=zb1p --set seq=32 --set batch=2)
	if "$sluice" train $m --ranks 4 "${set_[@]}" --data "$tmp/text.bin" --steps 4 \
		--eval-every 0 --quiet --trace "$tmp/step.json" --out "$tmp/ck" >"$tmp/train.out" 2>&1; then
		for r in 0 1 2 3; do
			"$sluice" ir $m "${set_[@]}" --ranks 4 --rank $r >"$tmp/prog$r.txt" 2>/dev/null ||
				no "ir --rank $r failed"
		done
		python3 - "$tmp/step.json" "$tmp/train.out" "$tmp"/prog[0-3].txt <<'PY' || no "the measured trace (above)"
import json, re, sys
t = json.load(open(sys.argv[1]))["traceEvents"]
fwd = 0.0
for r in range(4):
    acts, fwd_names = [], set()
    sec = False
    for line in open(sys.argv[3 + r]):
        if line.startswith("actions:"):
            sec = True
            continue
        if sec and line.startswith("  "):
            w = line.split()
            if w[0] == "run":
                acts.append((w[1], int(w[3])))
            elif w[0] == "start":
                acts.append((w[2].lstrip("(") + " " + w[3].rstrip(")"), int(w[5])))
            elif w[0] == "wait":
                acts.append(("wait " + w[1], None))
        elif sec:
            break
        c = re.match(r"  c\d+ (\S+) \(fwd,", line)
        if c:
            fwd_names.add(c.group(1))
    ev = [e for e in t if e["ph"] == "X" and e["pid"] == r]
    assert len(ev) == len(acts), f"rank {r}: {len(ev)} events, {len(acts)} actions"
    last = 0.0
    for e, (name, mb) in zip(ev, acts):
        assert e["dur"] >= 0 and e["ts"] >= last - 1e-3, (r, e)
        last = e["ts"] + e["dur"]
        if not name.startswith(("wait", "send", "recv", "all_")):
            assert e["name"] == name and e["args"]["mb"] == mb, (r, e, name, mb)
            assert e["tid"] == 0, e
    chunks = [e for e in ev if e["tid"] == 0]
    assert chunks and all(e["dur"] > 0 for e in chunks), f"rank {r}: untimed chunks"
    fwd += sum(e["dur"] for e in chunks if e["name"] in fwd_names) / 1e3
# F per stage and micro-batch: the forward chunks of 2 stages x 4 micro-batches x dp 2
F = float(re.search(r"measured per stage and micro-batch: F ([0-9.]+) ms", open(sys.argv[2]).read()).group(1))
want = fwd / (2 * 4 * 2)
assert abs(F - want) <= 0.002 + 0.01 * want, f"F {F} ms printed, {want:.4f} ms in the trace"
print("ok: measured trace: every action of the four ranks once, in order, timed; F %.3f ms" % F)
PY
		cmd=$(grep -o "simulated: sluice schedule .*" "$tmp/train.out" | sed 's/^simulated: sluice //')
		grep -q "^trace: step 3 of 4 ranks" "$tmp/train.out" || no "no trace line: $(cat "$tmp/train.out")"
		[ -n "$cmd" ] && "$sluice" $cmd | grep -q "^step " || no "the printed simulation: '$cmd'"
	else
		no "train --trace failed: $(tail -3 "$tmp/train.out")"
	fi
	"$sluice" train $m --steps 2 --trace-step 5 --trace "$tmp/x.json" --data "$tmp/text.bin" \
		--set seq=32 --set batch=2 >"$tmp/ts.out" 2>&1 && no "--trace-step past the run accepted"
	grep -q "trace-step 5: this run trains steps 1 to 2" "$tmp/ts.out" ||
		no "--trace-step 5: $(tail -2 "$tmp/ts.out")"
fi

bad() {
	"$sluice" schedule $m "$@" --costs F=1,B=2,W=1 >/dev/null 2>"$tmp/err"
	rc=$?
	[ $rc -eq 1 ] || no "want exit 1 for $*: $rc"
	grep -q . "$tmp/err" || no "no message for $*"
}
bad --set pp=3 --set schedule=dualpipe --set microbatches=12
bad --set pp=4 --set schedule=dualpipe --set microbatches=6
bad --set pp=4 --set schedule=dualpipe --set microbatches=9
bad --set pp=4 --set schedule=dualpipev --set microbatches=7
bad --set schedule=nosuch
"$sluice" schedule $m --costs F=1,B=2 >/dev/null 2>&1; [ $? -eq 2 ] || no "bad --costs: want 2"
exit $fail
