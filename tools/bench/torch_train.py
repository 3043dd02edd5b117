#!/usr/bin/env python3
"""torch_train.py - models/gpt2_124m.sl (or, with --model moe, models/moe_bench.sl)
trained in PyTorch on one GPU, for tokens/s beside `sluice train`
(tools/bench/gpu_vs_torch.sh).

The same model as the .sl file (and tests/gpu/torch_check.py, which checks sluice's
loss and gradients against it): 12 layers of width 768, 12 heads with NeoX rotary
embeddings, SwiGLU hidden 2048, RMSNorm (eps 1e-6), untied head, vocabulary 50304,
mean cross-entropy; PyTorch's fast path: bf16 autocast over fp32 weights,
scaled_dot_product_attention (causal), fused AdamW (lr 6e-4, wd 0.1, betas 0.9/0.95
as sluice's defaults), gradient clipping at 1.0.  Random tokens (the speed does not
depend on them).  Prints tokens/s (median of the steps after the warm-up) and the
peak memory.
The MoE model: 8 layers of width 1024, 16 heads, each feed-forward 64 routed experts
of hidden 512 (top-6 of sigmoid scores plus a routing bias, gates normalised over the
chosen) beside one shared expert; the routed experts' products through
torch._grouped_mm over the tokens sorted by expert (bf16), as the issue asks.
Usage: torch_train.py [--model dense|moe] [--compile] [--batch 16] [--seq 1024]
                      [--steps 20] [--warmup 5]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

VOCAB, DIM, LAYERS, HEADS, FFN = 50304, 768, 12, 12, 2048
EXPERTS, TOPK, EXPERT_DIM = 64, 6, 512


class RMSNorm(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * self.weight


def rope_tables(seq, hd, device):
    i = torch.arange(hd // 2, device=device, dtype=torch.float32)
    ang = torch.arange(seq, device=device, dtype=torch.float32)[:, None] * 10000.0 ** (-2.0 * i / hd)
    return torch.cos(ang), torch.sin(ang)


def rope(x, cos, sin):  # x [B, H, S, D]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


class SwiGLU(torch.nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w13 = torch.nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = torch.nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        a, b = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * b)


class MoE(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.router = torch.nn.Linear(dim, EXPERTS, bias=False)
        self.register_buffer("bias", torch.zeros(EXPERTS))
        self.w13 = torch.nn.Parameter(torch.randn(EXPERTS, dim, 2 * EXPERT_DIM) * 0.02)
        self.w2 = torch.nn.Parameter(torch.randn(EXPERTS, EXPERT_DIM, dim) * 0.02)
        self.shared = SwiGLU(dim, EXPERT_DIM)

    def forward(self, x):
        B, S, D = x.shape
        x2 = x.reshape(-1, D)
        scores = torch.sigmoid(F.linear(x2.float(), self.router.weight.float()))
        chosen = torch.topk(scores + self.bias, TOPK, dim=-1).indices
        gates = scores.gather(1, chosen)
        gates = gates / gates.sum(-1, keepdim=True)
        flat = chosen.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token = order // TOPK
        offs = torch.cumsum(torch.bincount(flat, minlength=EXPERTS), 0).to(torch.int32)
        xs = x2[token].to(torch.bfloat16)
        h = torch._grouped_mm(xs, self.w13.to(torch.bfloat16), offs=offs)
        a, b = h.chunk(2, dim=-1)
        y = torch._grouped_mm((F.silu(a) * b).contiguous(), self.w2.to(torch.bfloat16), offs=offs)
        y = y * gates.reshape(-1)[order].unsqueeze(-1).to(y.dtype)
        out = torch.zeros_like(x2, dtype=y.dtype).index_add_(0, token, y)
        return (out + self.shared(x2)).view(B, S, D)


class Layer(torch.nn.Module):
    def __init__(self, dim, heads, moe):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.attn_norm, self.ffn_norm = RMSNorm(dim), RMSNorm(dim)
        self.wqkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.wo = torch.nn.Linear(dim, dim, bias=False)
        self.ffn = MoE(dim) if moe else SwiGLU(dim, FFN)

    def forward(self, x, cos, sin):
        B, S, _ = x.shape
        q, k, v = self.wqkv(self.attn_norm(x)).view(B, S, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(o.transpose(1, 2).reshape(B, S, self.dim))
        return x + self.ffn(self.ffn_norm(x))


class Model(torch.nn.Module):
    def __init__(self, moe):
        super().__init__()
        dim, layers, heads = (1024, 8, 16) if moe else (DIM, LAYERS, HEADS)
        self.embed = torch.nn.Embedding(VOCAB, dim)
        self.layers = torch.nn.ModuleList(Layer(dim, heads, moe) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = torch.nn.Linear(dim, VOCAB, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, tokens, targets, cos, sin):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, VOCAB).float(), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["dense", "moe"], default="dense")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    moe = a.model == "moe"
    model = Model(moe).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95),
                            fused=True)
    cos, sin = rope_tables(a.seq, 64, dev)  # head dim 64 in both models
    fwd = torch.compile(model) if a.compile else model
    tokens = torch.randint(0, VOCAB, (a.batch, a.seq), device=dev)
    targets = torch.randint(0, VOCAB, (a.batch, a.seq), device=dev)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(tokens, targets, cos, sin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times[a.warmup:])
    tok = a.batch * a.seq / dt
    # no MFU here: 6 x parameters overcounts a MoE (experts not chosen); gpu_vs_torch.sh
    # computes it for both sides from sluice's count of FLOPs a token
    print("torch %s %s: %d parameters, batch %d x seq %d: %.0f tokens/s, step %.1f ms, "
          "peak memory %.0f MiB" % (
              a.model, "compile" if a.compile else "eager", nparams, a.batch, a.seq, tok, dt * 1e3,
              torch.cuda.max_memory_allocated() / 2**20))


if __name__ == "__main__":
    main()
