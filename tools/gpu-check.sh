#!/usr/bin/env bash
# gpu-check.sh LOGDIR - on a GPU machine: build sluice (CUDA, no LLVM, no Graphviz),
# run the GPU tests, run the benchmarks beside PyTorch, write every log to LOGDIR and
# print a short table last.  Runs tools/bench/comm-check.sh LOGDIR too when present.
#
# cJSON: taken from the system, else from .deps/ (Debian's libcjson1 and
# libcjson-dev unpacked there; CMakeLists.txt looks in it).  NVLink multicast stays
# off: NCCL_NVLS_ENABLE=0 (never use it on shared machines).
#
# Environment: BUILD_DIR (default build-gpu), JOBS (default: all CPUs),
# GEMM_ROUNDS (rounds of every GEMM row timed by sluice and PyTorch in turn, default 3), SKIP_COMM=1 (do not
# run tools/bench/comm-check.sh), SKIP_BENCH=1 (build and test only: no GEMM or NVRTC benchmarks),
# FP8=1 (run tools/bench/gpu_fp8.sh: fp8 against bf16, throughput and the loss gap),
# SCHEDULES=1 (run tools/bench/gpu_schedules.sh on two GPUs: the pipeline schedules,
# traced, against one GPU and dp 2), VS_TORCH=1 (tools/bench/gpu_vs_torch.sh: gpt2_124m
# against PyTorch eager and torch.compile), DUALPIPE_EP=4 or 8 (tools/bench/
# gpu_dualpipe_ep.sh on that many GPUs: DualPipe with expert parallelism).
set -u -o pipefail
if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
	echo "usage: tools/gpu-check.sh LOGDIR" >&2
	exit 2
fi
cd "$(dirname "$0")/.."
mkdir -p "$1" || exit 1
LOG=$(cd "$1" && pwd)
BUILD=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
ROUNDS=${GEMM_ROUNDS:-3}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
# a fresh kernel cache, so that compile times and cache hits mean what they say
export SLUICE_CACHE_DIR=${SLUICE_CACHE_DIR:-$(mktemp -d /tmp/sluice-gpu-check-cache.XXXXXX)}
if [ -d .deps/usr/lib/x86_64-linux-gnu ]; then
	export LD_LIBRARY_PATH=$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

status=()
step() { # step NAME LOGFILE COMMAND... : run, log, remember the outcome
	local name=$1 file=$2
	shift 2
	local t0=$SECONDS
	"$@" >"$LOG/$file" 2>&1
	local rc=$?
	status+=("$(printf '%-28s %-6s %4ds  %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo "rc=$rc")" $((SECONDS - t0)) "$file")")
	return $rc
}

{
	echo "== date"; date -u
	echo "== nvidia-smi"; nvidia-smi
	echo "== nvcc"; nvcc --version
	echo "== libraries"; ls /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 2>/dev/null | grep -E 'nccl|cjson|cublasLt|nvrtc' | sort -u
	echo "== cjson header"; ls /usr/include/cjson 2>&1
	echo "== torch"; python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count())'
	echo "== cpu"; nproc; grep -m1 'model name' /proc/cpuinfo
	echo "== env"; env | grep -E '^(NCCL|TORCH_SYMM|NVSHMEM)_' | sort
} >"$LOG/machine.txt" 2>&1

build() {
	cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DSLUICE_WITH_LLVM=OFF -DSLUICE_WITH_GRAPHVIZ=OFF &&
		cmake --build "$BUILD" -j "$JOBS"
}
if ! step "build (cmake, ninja)" build-gpu.log build; then
	# another part of the tree may not build: still build what the GPU checks need
	step "build GPU targets only" build-gpu-targets.log cmake --build "$BUILD" -j "$JOBS" -k 0 \
		--target sluice test_kcache test_gpu_runtime test_gpu_gemm test_cuda_nvrtc \
		test_cuda_ops test_cuda_models
fi
S=$BUILD/sluice

step "sluice devices" devices.txt "$S" devices
step "GPU tests (ctest)" tests-gpu.log ctest --test-dir "$BUILD" --output-on-failure \
	-R '^(test_kcache|test_gpu_.*|test_cuda_.*|devices_.*|bench_bad_args)$'

if [ "${SKIP_BENCH:-0}" != 1 ]; then
# GEMMs: every row timed by sluice and by PyTorch in turn, each in its own process,
# the order swapped from row to row and round to round.  (Timing a whole table in one
# process and then the other's whole table put each side's later rows on a GPU warmed
# by a long burst of products, differently for the two sides: the last rows, the fp8
# MoE-down ones, came out a few percent apart with the identical cuBLASLt kernel,
# which Nsight Compute times alike, 107.4 against 109.0 us.)
GEMM_ROWS=("4096 4096 4096 square" "8192 8192 8192 square" "4096 2048 7168 moe-up"
	"4096 7168 2048 moe-down")
gemm_one() { # SIDE ROUND DTYPE M N K NAME: one row, appended to the side's round log
	local side=$1 r=$2 dt=$3 out
	local shape=(--m "$4" --n "$5" --k "$6" --dtype "$dt")
	if [ "$side" = sluice ]; then
		out=$("$S" bench gemm "${shape[@]}" 2>&1)
	else
		out=$(python3 tools/bench/torch_gemm.py "${shape[@]}" 2>&1)
	fi
	local rc=$?
	echo "$out" | sed "s/ custom / $7 /" >>"$LOG/gemm_${side}_$r.txt"
	return $rc
}
gemm_round() { # R
	local r=$1 i=0 row dt rc=0
	: >"$LOG/gemm_sluice_$r.txt"
	: >"$LOG/gemm_torch_$r.txt"
	for row in "${GEMM_ROWS[@]}"; do
		# shellcheck disable=SC2086
		set -- $row
		for dt in bf16 fp8 fp8-block; do
			if (((r + i) % 2)); then
				gemm_one sluice "$r" "$dt" "$@" || rc=1
				gemm_one torch "$r" "$dt" "$@" || rc=1
			else
				gemm_one torch "$r" "$dt" "$@" || rc=1
				gemm_one sluice "$r" "$dt" "$@" || rc=1
			fi
			i=$((i + 1))
		done
	done
	return $rc
}
sl_logs=() th_logs=()
for r in $(seq 1 "$ROUNDS"); do
	step "GEMM round $r (both sides)" "gemm_round_$r.log" gemm_round "$r"
	sl_logs+=("$LOG/gemm_sluice_$r.txt")
	th_logs+=("$LOG/gemm_torch_$r.txt")
done
python3 tools/bench/gemm_table.py "${sl_logs[@]}" -- "${th_logs[@]}" >"$LOG/gemm_table.txt" 2>&1
# for the record: cuBLASLt's first heuristic choice, untimed (SLUICE_GEMM_TUNE=0), row
# by row like the rounds; and the whole table in one process, as the rounds used to run
untuned() {
	local row
	: >"$LOG/gemm_sluice_untuned.txt"
	for row in "${GEMM_ROWS[@]}"; do
		# shellcheck disable=SC2086
		set -- $row
		for dt in bf16 fp8 fp8-block; do
			SLUICE_GEMM_TUNE=0 gemm_one sluice untuned "$dt" "$@" || return 1
		done
	done
}
step "sluice bench gemm (untuned)" gemm_untuned.log untuned
step "sluice bench gemm (one process)" gemm_sluice_burst.txt "$S" bench gemm
python3 tools/bench/gemm_table.py "$LOG/gemm_sluice_burst.txt" -- "${th_logs[@]}" \
	>"$LOG/gemm_table_burst.txt" 2>&1
python3 tools/bench/gemm_table.py "$LOG/gemm_sluice_untuned.txt" -- "${th_logs[@]}" \
	>"$LOG/gemm_table_untuned.txt" 2>&1

step "sluice bench nvrtc" nvrtc.txt "$S" bench nvrtc
fi

if [ "${FP8:-0}" = 1 ]; then
	step "tools/bench/gpu_fp8.sh" gpu_fp8.log env SLUICE="$S" bash tools/bench/gpu_fp8.sh "$LOG/fp8"
fi

if [ "${SCHEDULES:-0}" = 1 ]; then
	step "tools/bench/gpu_schedules.sh" gpu_schedules.log env SLUICE="$S" \
		bash tools/bench/gpu_schedules.sh "$LOG/schedules"
fi

if [ "${VS_TORCH:-0}" = 1 ]; then
	step "tools/bench/gpu_vs_torch.sh" gpu_vs_torch.log env SLUICE="$S" \
		bash tools/bench/gpu_vs_torch.sh "$LOG/vs_torch"
fi

if [ -n "${DUALPIPE_EP:-}" ]; then
	step "tools/bench/gpu_dualpipe_ep.sh" gpu_dualpipe_ep.log env SLUICE="$S" GPUS="$DUALPIPE_EP" \
		bash tools/bench/gpu_dualpipe_ep.sh "$LOG/dualpipe_ep"
fi

if [ -f tools/bench/comm-check.sh ] && [ "${SKIP_COMM:-0}" != 1 ]; then
	step "tools/bench/comm-check.sh" comm-check.log bash tools/bench/comm-check.sh "$LOG"
fi
rm -rf "$SLUICE_CACHE_DIR"

echo
echo "== GPU check: logs in $LOG"
printf '%s\n' "${status[@]}"
echo
echo "== tests"
grep -E 'tests passed|tests failed|\(Failed\)|\(Skipped\)|Not Run' "$LOG/tests-gpu.log" | head -20
echo
echo "== devices"
cat "$LOG/devices.txt"
echo
if [ "${SKIP_BENCH:-0}" != 1 ]; then
	echo "== GEMM, sluice (cuBLASLt) against PyTorch"
	cat "$LOG/gemm_table.txt"
	echo "untuned (heuristic's first choice): $(tail -n 1 "$LOG/gemm_table_untuned.txt")"
	echo "whole table in one process: $(tail -n 1 "$LOG/gemm_table_burst.txt")"
	echo
	echo "== NVRTC"
	tail -n 6 "$LOG/nvrtc.txt"
fi
if [ "${FP8:-0}" = 1 ]; then
	echo "== FP8 against BF16 (tools/bench/gpu_fp8.sh)"
	grep -E '^\|' "$LOG/gpu_fp8.log" | head -40
	echo
fi
if [ "${SCHEDULES:-0}" = 1 ]; then
	echo "== pipeline schedules on two GPUs (tools/bench/gpu_schedules.sh)"
	grep -E '^\||^trace|^  (rank|measured)' "$LOG/gpu_schedules.log" | head -40
	echo
fi
if [ "${VS_TORCH:-0}" = 1 ]; then
	echo "== gpt2_124m against PyTorch (tools/bench/gpu_vs_torch.sh)"
	grep -E '^\|' "$LOG/gpu_vs_torch.log" | head -8
	echo
fi
if [ -n "${DUALPIPE_EP:-}" ]; then
	echo "== DualPipe with expert parallelism (tools/bench/gpu_dualpipe_ep.sh)"
	grep -E '^\|' "$LOG/gpu_dualpipe_ep.log" | head -12
	echo
fi
ok=1
for s in "${status[@]}"; do
	case "$s" in *" rc="*) ok=0 ;; esac
done
[ $ok -eq 1 ]
