#!/usr/bin/env bash
# comm-check.sh LOGDIR - on a machine with 2 or more GPUs: build sluice (CUDA and NCCL,
# no LLVM or Graphviz), run the communication tests (CPU ones and the GPU ones: every
# operation checked element by element, a rank killed / hung / failing in NCCL), then
# 'sluice bench comm' and tools/bench/torch_comm.py (torch.distributed on NCCL) on the
# same GPUs, twice each, alternating; the fault demonstration on the benchmark (a rank
# killed mid all-to-all); a run with the SMs bounded.  Logs go to LOGDIR; a table comes
# last.  Variables: COMM_GPUS (2), COMM_SIZES (1M,8M,64M,256M), BUILD_DIR.
# NVLink multicast stays off: NCCL_NVLS_ENABLE is set to 0 only when it is unset.
set -u
LOG=${1:?usage: tools/bench/comm-check.sh LOGDIR}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
N=${COMM_GPUS:-2}
SIZES=${COMM_SIZES:-1M,8M,64M,256M}
B=${BUILD_DIR:-build-comm-check}
JOBS=$(nproc 2>/dev/null || echo 4)
note() { echo "== $*" | tee -a "$LOG/summary.txt"; }
: >"$LOG/summary.txt"

# cJSON: the system's, else CJSON_ROOT (include/cjson/cJSON.h, lib/libcjson.so)
if [ -z "${CJSON_ROOT:-}" ] && [ ! -f /usr/include/cjson/cJSON.h ] && [ -d .comm-deps ]; then
	CJSON_ROOT=$PWD/.comm-deps
fi
[ -n "${CJSON_ROOT:-}" ] && export LD_LIBRARY_PATH=$CJSON_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# NCCL: the toolkit's, else the one PyTorch's wheels bring (nvidia-nccl-*)
NCCL_ARGS=()
if [ ! -f /usr/local/cuda/include/nccl.h ] && [ ! -f /usr/include/nccl.h ]; then
	nd=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null ||
		python3 -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null)
	if [ -n "$nd" ] && [ -f "$nd/include/nccl.h" ]; then
		lib=$(ls "$nd"/lib/libnccl.so* | head -1)
		NCCL_ARGS=(-DNCCL_INCLUDE_DIR="$nd/include" -DNCCL_LIBRARY="$lib")
		export LD_LIBRARY_PATH=$nd/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	fi
fi
if ! cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLUICE_WITH_LLVM=OFF \
	-DSLUICE_WITH_GRAPHVIZ=OFF \
	${CJSON_ROOT:+-DCJSON_INCLUDE_DIR=$CJSON_ROOT/include -DCJSON_LIBRARY=$CJSON_ROOT/lib/libcjson.so} \
	"${NCCL_ARGS[@]}" \
	>"$LOG/cmake.log" 2>&1; then
	tail -20 "$LOG/cmake.log"
	note "configure failed (log: cmake.log)"
	exit 1
fi
grep -E "CUDA toolkit|NCCL" "$LOG/cmake.log" | tee -a "$LOG/summary.txt"
if ! cmake --build "$B" -j"$JOBS" --target sluice comm_rdzv comm_launch comm_gpu \
	>"$LOG/build.log" 2>&1; then
	grep -E "error|FAILED" "$LOG/build.log" | head -20
	note "build failed (log: build.log)"
	exit 1
fi
nvidia-smi -L >"$LOG/gpus.txt" 2>&1
nvidia-smi topo -m >>"$LOG/gpus.txt" 2>&1
note "$(nvidia-smi -L | grep -c ^GPU) GPUs; NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"

# tests: the CPU ones and the GPU ones (ops on 2 GPUs, then the three faults)
ctest --test-dir "$B" -R '^comm_' --output-on-failure -j4 >"$LOG/ctest.log" 2>&1
note "ctest comm_*: $(grep -E 'tests passed|tests failed' "$LOG/ctest.log")"
grep -E "fault '|every result right|FAILED|check failed|SKIP" "$LOG/ctest.log" | head -20 | tee -a "$LOG/summary.txt"

# benchmarks, alternating
for round in 1 2; do
	"$B/sluice" bench comm --gpus "$N" --sizes "$SIZES" --csv "$LOG/sluice-$round.csv" \
		>"$LOG/bench-sluice-$round.log" 2>&1 || note "sluice bench comm round $round failed"
	PYTHONUNBUFFERED=1 python3 tools/bench/torch_comm.py --gpus "$N" --sizes "$SIZES" \
		--csv "$LOG/torch-$round.csv" >"$LOG/bench-torch-$round.log" 2>&1 ||
		note "torch_comm.py round $round failed"
done
head -3 "$LOG/bench-sluice-1.log" | tee -a "$LOG/summary.txt"
head -1 "$LOG/bench-torch-1.log" | tee -a "$LOG/summary.txt"

# the SM bound: all-to-all at the largest size with at most 4 CTAs
"$B/sluice" bench comm --gpus "$N" --sizes "${SIZES##*,}" --max-ctas 4 --csv "$LOG/sluice-ctas4.csv" \
	>"$LOG/bench-sluice-ctas4.log" 2>&1 || note "sluice bench comm --max-ctas 4 failed"
note "with --max-ctas 4: $(grep -E '^all_to_all ' "$LOG/bench-sluice-ctas4.log" | head -1)"

# a rank killed in the middle of the benchmark's all-to-alls
start=$(date +%s%N)
"$B/sluice" bench comm --gpus "$N" --sizes 64M --kill-rank 1 >"$LOG/fault-kill.log" 2>&1
st=$?
end=$(date +%s%N)
note "bench with rank 1 killed: exit $st after $(((end - start) / 1000000)) ms (start-up included)"
grep -E "^sluice" "$LOG/fault-kill.log" | tee -a "$LOG/summary.txt"

# rank 0 (the rendezvous hub) killed from outside with kill -9 in the middle of a run
"$B/sluice" bench comm --gpus "$N" --sizes 256M --reps 500 >"$LOG/fault-kill0.log" 2>&1 &
launcher=$!
for _ in $(seq 300); do
	grep -q "MiB" "$LOG/fault-kill0.log" && break
	sleep 0.1
done
rank0=$(pgrep -P "$launcher" | sort -n | head -1)
t0=$(date +%s%N)
kill -9 "$rank0"
wait "$launcher"
st=$?
t1=$(date +%s%N)
note "rank 0 killed with kill -9 mid-benchmark: job exit $st, every rank gone $(((t1 - t0) / 1000000)) ms after the kill"
grep -E "^sluice" "$LOG/fault-kill0.log" | tee -a "$LOG/summary.txt"

# the table: best of the two rounds for each side (max GB/s)
python3 - "$LOG" <<'PY' | tee "$LOG/table.txt"
import csv, glob, sys
log = sys.argv[1]
best = {}
order = []
for path in sorted(glob.glob(f"{log}/sluice-[12].csv") + glob.glob(f"{log}/torch-[12].csv")):
    for impl, op, size, us, gbps in csv.reader(open(path)):
        key = (op, int(size))
        if key not in order:
            order.append(key)
        cur = best.setdefault(key, {}).get(impl)
        if cur is None or float(gbps) > cur[1]:
            best[key][impl] = (float(us), float(gbps))
print("GB/s: bytes leaving each GPU for the others per second; best of 2 rounds each")
print(f"{'operation':<22}{'size':>9}{'sluice us':>11}{'torch us':>10}{'sluice GB/s':>13}{'torch GB/s':>12}{'ratio':>7}")
for op, size in order:
    s = best[(op, size)].get("sluice")
    t = best[(op, size)].get("torch")
    fmt = lambda v, i, w: f"{v[i]:>{w}.1f}" if v else f"{'-':>{w}}"
    ratio = f"{s[1] / t[1]:7.2f}" if s and t and t[1] > 0 else f"{'-':>7}"
    print(f"{op:<22}{size >> 20:>5} MiB{fmt(s,0,11)}{fmt(t,0,10)}{fmt(s,1,13)}{fmt(t,1,12)}{ratio}")
PY
cat "$LOG/summary.txt" >/dev/null
