# golden: multi-head latent attention and a DeepSeekMoE layer
model mla_moe
const dim = 16
graph(tokens: i32[2, 8], targets: i32[2, 8]) {
  x = embed(tokens, 32, dim)
  x = x + mla(x, heads: 2, q_rank: 8, kv_rank: 8, rope_dim: 4, head_dim: 4, v_dim: 4)
  x = x + moe(x, experts: 4, top_k: 2, hidden: 8, shared: 1, balance: bias(0.01), alpha: 0.001)
  loss = cross_entropy(linear(x, 32, name: head), targets)
}
train { batch = 2, lr = 1e-3, precision = fp32 }
