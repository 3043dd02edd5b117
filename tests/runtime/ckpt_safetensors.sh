#!/usr/bin/env bash
# ckpt_safetensors.sh TEST_CKPT - a sharded checkpoint written by sluice, read as any
# user would: Hugging Face's safetensors library (numpy flavour) opens every shard the
# index names and finds each tensor where the index says.  Skips (77) without numpy
# and safetensors (CI installs them with pip).
set -euo pipefail
python3 -c 'import numpy, safetensors' 2>/dev/null || { echo "numpy/safetensors missing: skipped"; exit 77; }
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$1" --write-sharded "$d/ckpt"
python3 - "$d/ckpt" <<'PY'
import json, os, sys
import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
d = sys.argv[1]
index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
wm = index["weight_map"]
assert index["metadata"]["step"] == "7" and index["metadata"]["total_size"] == 4428, index
shards = sorted(set(wm.values()))
assert len(shards) == 3, shards
t = {}
for s in shards:
    part = load_file(os.path.join(d, s))
    for k in part:
        assert wm[k] == s, (k, s)
    t.update(part)
    with safe_open(os.path.join(d, s), framework="np") as f:
        assert f.metadata()["model"] == "tiny"
assert set(t) == set(wm), (set(t), set(wm))
assert t["layers.0.w"].dtype == np.float32 and t["layers.0.w"].shape == (2, 3)
assert t["layers.0.w"].tolist() == [[1, 2, 3], [4, 5, 6.5]]
assert t["idx"].dtype == np.int32 and t["idx"].tolist() == [-1, 0, 7]
assert t["rng"].dtype == np.uint64 and int(t["rng"][0]) == 0x0123456789abcdef
assert np.array_equal(t["big"], np.arange(1000, dtype=np.float32) * 0.5 + 7)
ex = t["moe.experts.w1"]
assert ex.shape == (8, 4, 3)
assert np.array_equal(ex, (100 * np.arange(8)[:, None] + np.arange(12)[None, :] + 7)
                      .astype(np.float32).reshape(8, 4, 3))
# a slice read the way an expert-parallel rank would
with safe_open(os.path.join(d, wm["moe.experts.w1"]), framework="np") as f:
    assert np.array_equal(f.get_slice("moe.experts.w1")[2:5], ex[2:5])
print(f"safetensors read {len(t)} tensors from {len(shards)} shards through the index")
PY
