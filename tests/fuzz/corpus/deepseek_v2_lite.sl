# DeepSeek-V2-Lite (15.7B parameters, 2.4B active): 27 layers of width 2048; MLA with
# 16 heads and no query compression, KV rank 512, head 128 + 64 (rope), value 128;
# layer 0 dense (hidden 10944), then 2 shared + 64 routed experts of hidden 1408,
# top-6, softmax gate (gates not renormalised); vocab 102400.
model deepseek_v2_lite

const vocab = 102400, dim = 2048, layers = 27, heads = 16
const kv_rank = 512, head_dim = 128, rope_dim = 64, v_dim = 128
const dense_layers = 1, dense_dim = 10944
const experts = 64, shared = 2, top_k = 6, expert_dim = 1408

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x, name: attn_norm), heads: heads, kv_rank: kv_rank,
              rope_dim: rope_dim, head_dim: head_dim, v_dim: v_dim)
  f = moe_layer ? moe(rmsnorm(h, name: ffn_norm), experts: experts, shared: shared,
                      top_k: top_k, hidden: expert_dim, gate: softmax, balance: none,
                      alpha: 0.001)
                : swiglu(rmsnorm(h, name: ffn_norm), hidden: dense_dim)
  return h + f
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x, moe_layer: i >= dense_layers) }
  loss = cross_entropy(linear(rmsnorm(x, name: final_norm), vocab, name: head), targets)
}

train {
  batch = 1, seq = 4096, global_batch = 4608, steps = 2000
  optimizer = adamw(beta1 = 0.9, beta2 = 0.95), lr = 4.2e-4, warmup = 2000, wd = 0.1
  precision = bf16
}
