#!/usr/bin/env python3
"""torch_check.py - one training step of a sluice model recomputed in plain PyTorch.

The model family of models/tiny_gpt.sl and models/gpt2_124m.sl (embedding; layers of
pre-norm attention with NeoX rotary embeddings and a SwiGLU feed-forward, RMSNorm with
eps 1e-6; a final RMSNorm and an untied output head; mean cross-entropy), written here
from its definition in float64, with the weights read from a sluice checkpoint, the
step's tokens from SLUICE_GRAD_DUMP's batch file.  Its loss and gradients are compared
with the ones sluice computed for that step (the metrics line and SLUICE_GRAD_DUMP's
gradients): the loss within --loss-tol relative, every gradient tensor within
--grad-tol of its largest element (max |sluice - torch| / max |torch|).

Usage: torch_check.py CKPT GRADS BATCH LOSS --heads H [--loss-tol T] [--grad-tol T]
Exit 0 when both hold, 1 otherwise; prints one line per check.
"""
import argparse
import json
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "U64": np.uint64}


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
    return out


def rms(x, w, eps=1e-6):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta=10000.0):
    # x [B, S, H, D]: pairs (i, i + D/2) rotated by s * theta^(-2i/D)
    B, S, H, D = x.shape
    half = D // 2
    i = torch.arange(half, dtype=x.dtype, device=x.device)
    s = torch.arange(S, dtype=x.dtype, device=x.device)
    ang = s[:, None] * theta ** (-2.0 * i / D)[None, :]
    c, sn = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * sn, x1 * sn + x2 * c], dim=-1)


def attention(x, p, pre, heads):
    B, S, D = x.shape
    q = (x @ p[pre + "wq"]).view(B, S, heads, -1)
    k = (x @ p[pre + "wk"]).view(B, S, heads, -1)
    v = (x @ p[pre + "wv"]).view(B, S, heads, -1)
    hd = q.shape[-1]
    q, k = rope(q), rope(k)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, hd]
    s = (q @ k.transpose(-1, -2)) / hd ** 0.5
    mask = torch.ones(S, S, dtype=torch.bool, device=x.device).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v
    return o.transpose(1, 2).reshape(B, S, -1) @ p[pre + "wo"]


def forward(p, tokens, targets, heads, layers):
    x = p["embed.weight"][tokens]
    for l in range(layers):
        pre = "layers.%d." % l
        x = x + attention(rms(x, p[pre + "attn_norm.weight"]), p, pre + "attn.", heads)
        h = rms(x, p[pre + "ffn_norm.weight"])
        f = pre + "ffn."
        x = x + (torch.nn.functional.silu(h @ p[f + "w1"]) * (h @ p[f + "w3"])) @ p[f + "w2"]
    logits = rms(x, p["final_norm.weight"]) @ p["head.weight"]
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("grads")
    ap.add_argument("batch")
    ap.add_argument("loss", type=float)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--loss-tol", type=float, default=1e-5)
    ap.add_argument("--grad-tol", type=float, default=1e-4)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ck = read_safetensors(a.ckpt)
    names = [k for k in ck if ck[k].dtype == np.float32 and not k.startswith(("adamw.", "ema."))]
    p = {k: torch.tensor(ck[k], dtype=torch.float64, device=dev, requires_grad=True) for k in names}
    layers = 1 + max(int(k.split(".")[1]) for k in names if k.startswith("layers."))
    bt = read_safetensors(a.batch)
    tokens = torch.tensor(bt["tokens"].astype(np.int64), device=dev)
    targets = torch.tensor(bt["targets"].astype(np.int64), device=dev)
    loss = forward(p, tokens, targets, a.heads, layers)
    loss.backward()
    ok = True
    rel = abs(a.loss - loss.item()) / abs(loss.item())
    good = rel <= a.loss_tol
    ok &= good
    print("%s: loss sluice %.7f torch %.7f (float64): %.2g relative (bound %g)" % (
        "ok" if good else "FAIL", a.loss, loss.item(), rel, a.loss_tol))
    g = read_safetensors(a.grads)
    missing = sorted(set(names) ^ set(g))
    if missing:
        print("FAIL: gradients missing on one side: %s" % missing[:5])
        ok = False
    worst, wname = 0.0, ""
    for k in sorted(set(names) & set(g)):
        ref = p[k].grad.cpu().numpy()
        d = np.abs(g[k].astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)
        if d > worst:
            worst, wname = d, k
    good = worst <= a.grad_tol
    ok &= good
    print("%s: %d gradients, worst %.2g of its largest element (%s; bound %g)" % (
        "ok" if good else "FAIL", len(g), worst, wname, a.grad_tol))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
