# tiny_moe8: tiny_moe (models/tiny_moe.sl) with eight layers, so that DualPipeV at pp 4
# (eight stages, a layer each) has a layer for every stage: tests/parallel/layouts_test.sh.
model tiny_moe8

const vocab = 256, dim = 128, layers = 8, heads = 4
const dense_layers = 1, dense_dim = 384
const experts = 8, shared = 1, top_k = 2, expert_dim = 128
const mtp_weight = 0.3

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x, name: attn_norm), heads: heads, q_rank: 64, kv_rank: 32,
              rope_dim: 16, head_dim: 32, v_dim: 32)
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
  batch = 8, seq = 128, steps = 2000
  optimizer = adamw, lr = 1e-3, warmup = 100, wd = 0.1, clip = 1.0
  precision = fp32
}
