# moe_1b: a DeepSeek-V3-style MoE of about 1B parameters (900.6M, 983.5M with its MTP
# module; 174M active a token), the benchmark model of precision fp8 against bf16 on
# one GPU (tools/bench/gpu_fp8.sh): MLA, a dense first layer, then DeepSeekMoE layers
# (one shared and 32 routed experts, top-4, sigmoid gates with the auxiliary-loss-free
# bias) and one multi-token-prediction module.
# Every width is a multiple of 128, so that each linear and expert product takes the
# FP8 recipe's whole 128-blocks.  The vocabulary is the byte-level tokenizer's (256):
# 'sluice data' shards train it as they are.
model moe_1b

const vocab = 256, dim = 1024, layers = 12, heads = 8
const dense_layers = 1, dense_dim = 2816
const experts = 32, shared = 1, top_k = 4, expert_dim = 768
const mtp_weight = 0.3

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x, name: attn_norm), heads: heads, q_rank: 384, kv_rank: 256,
              rope_dim: 64, head_dim: 128, v_dim: 128)
  f = moe_layer ? moe(rmsnorm(h, name: ffn_norm), experts: experts, shared: shared,
                      top_k: top_k, hidden: expert_dim, gate: sigmoid,
                      balance: bias(0.001), alpha: 0.0001)
                : swiglu(rmsnorm(h, name: ffn_norm), hidden: dense_dim)
  return h + f
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x, moe_layer: i >= dense_layers) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
  loss += mtp_weight * mtp(x, tokens, targets, block: layer, depth: 1)
}

train {
  batch = 8, seq = 1024, steps = 2000
  optimizer = adamw, lr = 3e-4, warmup = 100, wd = 0.1, clip = 1.0
  precision = bf16
}
