#!/usr/bin/env bash
# regen-golden.sh BUILD_DIR - rewrite tests/ir/golden/*.ir from the current printer and
# frontend.  Review the diff (git diff tests/ir/golden) before committing.
set -euo pipefail
build=${1:?usage: tests/ir/regen-golden.sh BUILD_DIR}
build=$(cd "$build" && pwd)
cd "$(dirname "$0")/../.."
SLUICE_REGEN_GOLDEN=1 "$build/tests/ir/test_ir_text"
SLUICE_REGEN_GOLDEN=1 "$build/tests/ir/test_ir_models"
