#!/usr/bin/env bash
# setup.sh - install what sluice needs (Debian/Ubuntu) and build it in ./build.
# Usage: bash tools/setup.sh [--sanitize]   (the sanitizer build goes to ./build-asan)
# Environment: SLUICE_CMAKE_ARGS, more CMake options.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs="build-essential cmake ninja-build pkg-config llvm-14-dev libgraphviz-dev graphviz
      libcjson-dev fortunes python3 python3-numpy libopenmpi-dev openmpi-bin"
missing=""
for p in $pkgs; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	echo "setup: installing$missing"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

dir=build
flags=()
if [ "${1:-}" = "--sanitize" ]; then
	dir=build-asan
	flags=(-DSLUICE_SANITIZE=ON)
fi
# SLUICE_CMAKE_ARGS: more CMake options, e.g. -DSLUICE_WERROR=ON (CI uses it)
# shellcheck disable=SC2086
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${flags[@]}" \
	${SLUICE_CMAKE_ARGS:-} >/dev/null
cmake --build "$dir"
echo "setup: built $dir/sluice"
