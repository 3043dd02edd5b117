#!/usr/bin/env python3
"""gemm_table.py SLUICE_LOG... -- TORCH_LOG...: one table of sluice against PyTorch.

Reads the tables 'sluice bench gemm' and tools/bench/torch_gemm.py print (each may
have run several times, interleaved), takes each row's TFLOP/s as the median over runs,
and prints sluice, torch, their ratio and the spread between a side's runs (the
noise: a ratio within it says nothing)."""
import re
import statistics
import sys

ROW = re.compile(r"^(bf16|fp8|fp8-block)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)")


def read(paths):
    runs = {}
    order = []
    for p in paths:
        try:
            lines = open(p).read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = ROW.match(line)
            if not m:
                continue
            key = (m.group(1), m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5)))
            if key not in runs:
                order.append(key)
            runs.setdefault(key, []).append(float(m.group(7)))
    return runs, order


def spread(v):
    return (max(v) - min(v)) / (sum(v) / len(v)) * 100 if len(v) > 1 else 0.0


def main():
    if "--" not in sys.argv:
        print(__doc__, file=sys.stderr)
        return 2
    cut = sys.argv.index("--")
    sl, so = read(sys.argv[1:cut])
    th, to = read(sys.argv[cut + 1:])
    print(f"{'dtype':<9} {'shape':<8} {'M':>5} {'N':>5} {'K':>5} {'sluice':>8} {'torch':>8} "
          f"{'ratio':>6} {'spread s/t':>11}   (TFLOP/s, median over runs)")
    worst = None
    for key in so + [k for k in to if k not in sl]:
        s, t = sl.get(key), th.get(key)
        sm = statistics.median(s) if s else None
        tm = statistics.median(t) if t else None
        ratio = sm / tm if sm and tm else None
        if ratio is not None:
            worst = ratio if worst is None else min(worst, ratio)
        f = lambda x: f"{x:8.1f}" if x is not None else f"{'-':>8}"
        sp = f"{spread(s) if s else 0:4.1f}%/{spread(t) if t else 0:4.1f}%"
        print(f"{key[0]:<9} {key[1]:<8} {key[2]:5d} {key[3]:5d} {key[4]:5d} {f(sm)} {f(tm)} "
              f"{(f'{ratio:6.3f}' if ratio else '     -')} {sp:>11}")
    if worst is not None:
        print(f"worst sluice/torch ratio: {worst:.3f} (goal: >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
