#!/usr/bin/env bash
# cpu_bench.sh - the CPU backend's benchmarks: measured peak FLOP/s, GEMM GFLOP/s, and
# a training step of tiny_gpt and tiny_moe on the LLVM backend against the reference
# executor.  Builds the benchmark programs against an existing build directory.
# Usage: tools/bench/cpu_bench.sh [BUILD_DIR]   (default: build; needs LLVM found)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
[ -f "$build/libsluice_compiler.a" ] || { echo "cpu_bench: build $build first" >&2; exit 1; }
grep -q '^SLUICE_HAVE_LLVM' "$build/CMakeCache.txt" 2>/dev/null || true
cjson=$(sed -n 's/^CJSON_LIBRARY:FILEPATH=//p' "$build/CMakeCache.txt")
cjson_inc=$(sed -n 's/^CJSON_INCLUDE_DIR:PATH=//p' "$build/CMakeCache.txt")
llvm_lib=$(llvm-config-14 --libdir 2>/dev/null || echo /usr/lib/llvm-14/lib)
llvm_inc=$(llvm-config-14 --includedir 2>/dev/null || echo /usr/lib/llvm-14/include)
out=$build/bench
mkdir -p "$out"
cflags=(-O2 -std=gnu11 -DSLUICE_HAVE_LLVM=1 -I. -I"$cjson_inc" -isystem "$llvm_inc")
libs=("$build/libsluice_compiler.a" "$build/libsluice_runtime.a" -L"$llvm_lib" -lLLVM
      "$cjson" -lm -lpthread -ldl -Wl,-rpath,"$llvm_lib":"$(dirname "$cjson")")
cc "${cflags[@]}" tools/bench/cpu_peak.c -o "$out/cpu_peak" -lpthread
cc "${cflags[@]}" tools/bench/cpu_gemm.c -o "$out/cpu_gemm" "${libs[@]}"
cc "${cflags[@]}" tools/bench/cpu_step.c -o "$out/cpu_step" "${libs[@]}"

echo "== machine"
lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Flags' | sed 's/Flags:.*\(avx512f\).*/Flags: ... avx512f .../'
echo "== peak (tight FMA loop)"
"$out/cpu_peak"
echo "== GEMM"
"$out/cpu_gemm"
echo "== training step: tiny_gpt"
"$out/cpu_step" models/tiny_gpt.sl --steps 10 --ref-steps 1
echo "== training step: tiny_moe"
"$out/cpu_step" models/tiny_moe.sl --steps 10 --ref-steps 1
