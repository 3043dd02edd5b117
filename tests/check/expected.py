#!/usr/bin/env python3
"""Parameter counts of the DeepSeek models from their published configurations
(Hugging Face config.json), by the rules of passes/account.c: trainable parameters,
routing biases not counted, MTP apart without the embedding and head it shares,
active = shared + top-k routed experts + one embedding row.  tests/check/test_models.c
carries the same arithmetic; this script shows it term by term."""


def count(L, d, heads, vocab, dense_layers, dense_ff, moe_ff=0, n_shared=0, n_routed=0,
          topk=0, q_rank=0, kv_rank=0, nope=0, rope=0, vdim=0, mla=True, kv_heads=None,
          mtp=0):
    if mla:
        q = d * q_rank + q_rank + q_rank * heads * (nope + rope) if q_rank \
            else d * heads * (nope + rope)
        attn = q + d * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + vdim) \
            + heads * vdim * d
    else:
        hd = d // heads
        attn = d * heads * hd + 2 * d * (kv_heads or heads) * hd + heads * hd * d
    expert = 3 * d * moe_ff
    dense_layer = attn + 2 * d + 3 * d * dense_ff
    moe_layer = attn + 2 * d + n_routed * d + (n_shared + n_routed) * expert
    moe_active = attn + 2 * d + n_routed * d + (n_shared + topk) * expert
    total = dense_layers * dense_layer + (L - dense_layers) * moe_layer + 2 * vocab * d + d
    active = dense_layers * dense_layer + (L - dense_layers) * moe_active + vocab * d + 2 * d
    mtp_p = mtp * (2 * d + 2 * d * d + moe_layer + d)
    return total, active, mtp_p


for name, cfg in [
    ("deepseek_v3", dict(L=61, d=7168, heads=128, vocab=129280, dense_layers=3,
                         dense_ff=18432, moe_ff=2048, n_shared=1, n_routed=256, topk=8,
                         q_rank=1536, kv_rank=512, nope=128, rope=64, vdim=128, mtp=1)),
    ("deepseek_v2", dict(L=60, d=5120, heads=128, vocab=102400, dense_layers=1,
                         dense_ff=12288, moe_ff=1536, n_shared=2, n_routed=160, topk=6,
                         q_rank=1536, kv_rank=512, nope=128, rope=64, vdim=128)),
    ("deepseek_v2_lite", dict(L=27, d=2048, heads=16, vocab=102400, dense_layers=1,
                              dense_ff=10944, moe_ff=1408, n_shared=2, n_routed=64,
                              topk=6, q_rank=0, kv_rank=512, nope=128, rope=64,
                              vdim=128)),
    ("deepseek_llm_7b", dict(L=30, d=4096, heads=32, vocab=102400, dense_layers=30,
                             dense_ff=11008, mla=False)),
    ("deepseek_llm_67b", dict(L=95, d=8192, heads=64, vocab=102400, dense_layers=95,
                              dense_ff=22016, mla=False, kv_heads=8)),
]:
    t, a, m = count(**cfg)
    print(f"{name:18s} total {t:>15,d} ({t / 1e9:7.2f}B)  active {a:>14,d} "
          f"({a / 1e9:6.2f}B)  mtp {m:>14,d}")
