#!/usr/bin/env python3
"""torch_attention.py - PyTorch's scaled_dot_product_attention on the shapes that
tests/cuda/test_cuda_lib.c times, timed the same way: one warm-up call, then CUDA events
around 5 back-to-back calls, the mean printed.  bf16, causal, layout [B,S,H,D] as
sluice's (transposed to torch's [B,H,S,D] outside the timed region), whichever SDPA
backend torch picks (flash on an H200).  FLOPs as the test counts them: causal halves
the S x S scores; forward q k^T and p v, backward s, dp, dv, dk and dq recomputed or
computed once each (5 products).
"""
import torch
import torch.nn.functional as F

SHAPES = [(4, 2048, 16, 128, 128), (4, 2048, 16, 192, 128)]
REPS = 5


def timed(fn):
    fn()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(REPS):
        fn()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / REPS


def main():
    dev = "cuda"
    for b, s, h, dk, dv in SHAPES:
        q = torch.randn(b, s, h, dk, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        k = torch.randn(b, s, h, dk, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        v = torch.randn(b, s, h, dv, device=dev, dtype=torch.bfloat16).transpose(1, 2)
        q, k, v = (x.contiguous().requires_grad_() for x in (q, k, v))
        half = 2.0 * b * h * s * s * 0.5
        flops, flops_bwd = half * (dk + dv), half * (3 * dk + 2 * dv)
        name = f"B={b} S={s} H={h} Dk={dk} Dv={dv} causal"
        try:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        except RuntimeError as e:
            print(f"torch sdpa {name}: not run ({str(e).splitlines()[0]})")
            continue
        do = torch.randn_like(o)
        ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        print(f"torch sdpa fwd bf16 {name}: {ms:8.3f} ms {flops / ms / 1e9:7.2f} TFLOP/s")
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        ms = timed(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
        print(f"torch sdpa bwd bf16 {name}: {ms:8.3f} ms {flops_bwd / ms / 1e9:7.2f} TFLOP/s")


if __name__ == "__main__":
    main()
