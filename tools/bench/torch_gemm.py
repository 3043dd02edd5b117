#!/usr/bin/env python3
"""torch_gemm.py - the GEMMs of 'sluice bench gemm', done by PyTorch, timed the same way.

D[M,N] = A[M,K] . B[N,K]^T, bf16 out:
  bf16       torch.mm(a, b.t(), out=d)
  fp8        torch._scaled_mm(a8, b8.t(), scale_a, scale_b, out_dtype=bf16), one scale
             per tensor, use_fast_accum=False (as sluice: fp32 accumulation)
  fp8-block  torch._scaled_mm with DeepSeek-V3 scales: 1x128 on A (shape (M, K/128),
             outer-dim-major), 128x128 on B; needs sm_90 and a torch that has it
Timing as sluice: CUDA events around B back-to-back products, median of S samples,
warm-up for at least W products and T ms first (the clock settles under the power
limit), inputs rotating through enough sets to exceed 3x L2,
random data (uniform [-1, 1) for bf16; random E4M3 codes, NaN excluded, for fp8;
scales uniform in [0.5, 1.5]/448).  Prints the same table as sluice.
"""
import argparse
import math
import sys
import time

import torch

SHAPES = [
    (4096, 4096, 4096, "square"),
    (8192, 8192, 8192, "square"),
    (4096, 2048, 7168, "moe-up"),
    (4096, 7168, 2048, "moe-down"),
]


def sets_for(per_set, l2):
    r = math.ceil(3 * l2 / per_set)
    return max(2, min(16, r))


def rand_fp8(rows, cols, dev):
    x = torch.randint(0, 256, (rows, cols), dtype=torch.uint8, device=dev)
    x = torch.where((x & 0x7F) == 0x7F, x ^ 1, x)
    return x.view(torch.float8_e4m3fn)


def rand_scale(shape, dev):
    return (torch.rand(shape, device=dev) + 0.5) / 448


def make_set(mode, m, n, k, dev):
    if mode == "bf16":
        a = (torch.rand(m, k, device=dev) * 2 - 1).to(torch.bfloat16)
        b = (torch.rand(n, k, device=dev) * 2 - 1).to(torch.bfloat16)
        return a, b, None, None
    a, b = rand_fp8(m, k, dev), rand_fp8(n, k, dev)
    if mode == "fp8":
        return a, b, rand_scale((), dev), rand_scale((), dev)
    # 1x128 on A: (M, K/128) with M fastest; 128x128 on B as torch wants it for b.t()
    sa = rand_scale((k // 128, m), dev).t()
    sb = rand_scale((math.ceil(n / 128), k // 128), dev).t()
    return a, b, sa, sb


def product(mode, s, d):
    a, b, sa, sb = s
    if mode == "bf16":
        return torch.mm(a, b.t(), out=d)
    return torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                            use_fast_accum=False, out=d)


def bench(mode, m, n, k, what, args, l2, dev):
    esz = 2 if mode == "bf16" else 1
    per = (m * k + n * k) * esz
    nsets = sets_for(per, l2)
    sets = [make_set(mode, m, n, k, dev) for _ in range(nsets)]
    d = torch.empty(m, n, dtype=torch.bfloat16, device=dev)
    at = 0
    # warm-up as sluice: at least W products and WARMUP_MS of them (the clock settles)
    warm_start = time.perf_counter()
    while True:
        for _ in range(args.warmup):
            product(mode, sets[at % nsets], d)
            at += 1
        torch.cuda.synchronize()
        if (time.perf_counter() - warm_start) * 1e3 >= args.warmup_ms:
            break
    t0 = torch.cuda.Event(enable_timing=True)
    t1 = torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(args.samples):
        t0.record()
        for _ in range(args.batch):
            product(mode, sets[at % nsets], d)
            at += 1
        t1.record()
        t1.synchronize()
        ms.append(t0.elapsed_time(t1) / args.batch)
    ms.sort()
    med = ms[len(ms) // 2]
    tflops = 2.0 * m * n * k / (med * 1e-3) / 1e12
    print(f"{mode:<9} {what:<8} {m:6d} {n:6d} {k:6d} {med:10.4f} {tflops:9.1f} {ms[0]:10.4f} "
          f"{nsets:4d}  torch {torch.__version__}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int)
    p.add_argument("--n", type=int)
    p.add_argument("--k", type=int)
    p.add_argument("--dtype", default="all", choices=["bf16", "fp8", "fp8-block", "all"])
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--warmup-ms", type=int, default=1000)
    p.add_argument("--device", type=int, default=0)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("torch_gemm.py: skipped: torch sees no CUDA device", file=sys.stderr)
        return 1
    dev = torch.device("cuda", args.device)
    torch.cuda.set_device(dev)
    props = torch.cuda.get_device_properties(dev)
    l2 = props.L2_cache_size
    shapes = SHAPES
    if args.m or args.n or args.k:
        if not (args.m and args.n and args.k):
            p.error("give all of --m, --n and --k")
        shapes = [(args.m, args.n, args.k, "custom")]
    modes = ["bf16", "fp8", "fp8-block"] if args.dtype == "all" else [args.dtype]
    print(f"torch_gemm.py: {props.name} ({props.multi_processor_count} SMs, "
          f"L2 {l2 >> 20} MiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"median of {args.samples} samples of {args.batch} back-to-back products after "
          f"{args.warmup_ms} ms of warm-up; bf16 out\n")
    print(f"{'dtype':<9} {'shape':<8} {'M':>6} {'N':>6} {'K':>6} {'ms':>10} {'TFLOP/s':>9} "
          f"{'best ms':>10} {'sets':>4}  library")
    torch.manual_seed(0)
    rc = 0
    for m, n, k, what in shapes:
        for mode in modes:
            try:
                bench(mode, m, n, k, what, args, l2, dev)
            except Exception as e:  # an unsupported recipe in this torch: say so, go on
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"{mode:<9} {what:<8} {m:6d} {n:6d} {k:6d} {'-':>10} {'-':>9} {'-':>10} "
                      f"{'-':>4}  unsupported: {msg[:100]}", flush=True)
                rc = 1
            torch.cuda.empty_cache()
    return rc


if __name__ == "__main__":
    sys.exit(main())
