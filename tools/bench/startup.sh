#!/usr/bin/env bash
# startup.sh - time to the first step, first and steady step times, and the final
# checkpoint's save, of 'sluice train' on a model (default: models/gpt2_124m.sl).
#
#   tools/bench/startup.sh [SLUICE] [MODEL] [RUNS] [STEPS]
#
# Each run trains STEPS steps (no validation, one checkpoint at the end) and stamps
# every line sluice prints on stderr with the time since the process started:
#   start-up   = the first "step 1" line minus the first "step 1" line's own step time,
#                i.e. from exec to the moment step 1 begins (compile, initialisation,
#                data, allocation);
#   first      = step 1's time; steady = median of steps 3..STEPS;
#   to steady  = start-up + first - steady: when the run reaches its steady pace (the
#                figure to compare: a first step slower than the others is start-up);
#   cpu1       = CPU seconds the process used up to step 1's line (start-up and step 1,
#                all threads; read from /proc as the line arrives): on a shared machine
#                the wall times stretch with the neighbours' load, this far less;
#   save       = from the last step's line to the "done" line (the final checkpoint);
#   max RSS    = GNU time's maximum resident set size.
# Prints one row per run and the medians.  The machine is shared: read the medians.
set -euo pipefail
SLUICE=${1:-./build/sluice}
MODEL=${2:-models/gpt2_124m.sl}
RUNS=${3:-5}
STEPS=${4:-6}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
python3 - "$SLUICE" "$MODEL" "$RUNS" "$STEPS" "$OUT" <<'PY'
import json, os, re, statistics, subprocess, sys, time
sluice, model, runs, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = []
for r in range(runs):
    metrics = os.path.join(out, f"m{r}.jsonl")
    cmd = ["/usr/bin/time", "-f", "maxrss_kb %M", sluice, "train", model, "--steps", str(steps),
           "--eval-every", str(10 * steps), "--out", os.path.join(out, f"run{r}"),
           "--metrics", metrics]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    stamps, cpu1 = [], None
    tick = os.sysconf("SC_CLK_TCK")
    for line in p.stderr:
        stamps.append((time.monotonic() - t0, line.rstrip()))
        if cpu1 is None and re.match(r"step 1/", line):
            # the child of GNU time: sluice itself
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            f = open(f"/proc/{kids[0]}/stat").read().rsplit(")", 1)[1].split()
            cpu1 = (int(f[11]) + int(f[12])) / tick  # utime + stime
    if p.wait():
        sys.exit("\n".join(l for _, l in stamps[-5:]))
    m = [json.loads(l) for l in open(metrics)]
    # the metrics' time_s is seconds since the loop began, stamped at each step's end
    step_t = [m[0]["time_s"]] + [m[i]["time_s"] - m[i - 1]["time_s"] for i in range(1, len(m))]
    s1 = next(t for t, l in stamps if re.match(r"step 1/", l))
    last = [t for t, l in stamps if re.match(rf"step {steps}/", l)][0]
    done = next(t for t, l in stamps if l.startswith("done:"))
    rss = int(next(l for _, l in stamps if l.startswith("maxrss_kb")).split()[1])
    steady = statistics.median(step_t[2:])
    row = dict(startup=s1 - step_t[0], first=step_t[0], steady=steady,
               to_steady=s1 - steady, cpu1=cpu1, save=done - last, total=stamps[-1][0],
               rss_gib=rss / 2**20)
    rows.append(row)
    print(" ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
print("median: " + " ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in rows[0]))
PY
