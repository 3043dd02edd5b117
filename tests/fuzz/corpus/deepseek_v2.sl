# DeepSeek-V2 (236B parameters, 21B active): 60 layers of width 5120; MLA with 128
# heads, query rank 1536, KV rank 512, head 128 + 64 (rope), value 128; layer 0 dense
# (hidden 12288), then 2 shared + 160 routed experts of hidden 1536, top-6, softmax
# gate, each token sent to at most 3 devices (of 8 groups); vocab 102400.
model deepseek_v2

const vocab = 102400, dim = 5120, layers = 60, heads = 128
const q_rank = 1536, kv_rank = 512, head_dim = 128, rope_dim = 64, v_dim = 128
const dense_layers = 1, dense_dim = 12288
const experts = 160, shared = 2, top_k = 6, expert_dim = 1536
const groups = 8, device_limit = 3, route_scale = 16.0

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x, name: attn_norm), heads: heads, q_rank: q_rank,
              kv_rank: kv_rank, rope_dim: rope_dim, head_dim: head_dim, v_dim: v_dim)
  f = moe_layer ? moe(rmsnorm(h, name: ffn_norm), experts: experts, shared: shared,
                      top_k: top_k, hidden: expert_dim, gate: softmax, balance: none,
                      alpha: 0.003, scale: route_scale, groups: groups,
                      node_limit: device_limit)
                : swiglu(rmsnorm(h, name: ffn_norm), hidden: dense_dim)
  return h + f
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x, moe_layer: i >= dense_layers) }
  loss = cross_entropy(linear(rmsnorm(x, name: final_norm), vocab, name: head), targets)
}

train {
  batch = 1, seq = 4096, global_batch = 9216, steps = 2000
  optimizer = adamw(beta1 = 0.9, beta2 = 0.95), lr = 2.4e-4, warmup = 2000, wd = 0.1
  precision = bf16
}
