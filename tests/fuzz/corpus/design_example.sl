model tiny_moe
const vocab = 256, dim = 256, layers = 6, heads = 8, seq = 256
const experts = 16, shared = 1, top_k = 4, expert_dim = 256

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x), heads: heads, q_rank: 96, kv_rank: 64, rope_dim: 16)
  f = moe_layer ? moe(rmsnorm(h), experts: experts, shared: shared, top_k: top_k,
                      hidden: expert_dim, gate: sigmoid, balance: bias(0.001))
                : swiglu(rmsnorm(h), hidden: 4 * dim)
  return h + f
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x, moe_layer: i >= 1) }
  loss = cross_entropy(linear(rmsnorm(x), vocab, name: head), targets)
  loss += 0.3 * mtp(x, tokens, targets, depth: 1)
}

train { batch: 16, steps: 2000, optimizer: adamw(lr: 3e-4, wd: 0.1), warmup: 100,
        precision: bf16, pp: 4, schedule: dualpipe, ep: 4 }
