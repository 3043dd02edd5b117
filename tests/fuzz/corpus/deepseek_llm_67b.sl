# DeepSeek LLM 67B: 95 layers of width 8192, 64 query heads sharing 8 key/value heads
# (grouped-query attention), SwiGLU 22016, vocab 102400 (about 67B parameters).
model deepseek_llm_67b

const vocab = 102400, dim = 8192, layers = 95, heads = 64, kv_heads = 8
const ffn_dim = 22016

block layer(x) {
  h = x + attention(rmsnorm(x, name: attn_norm), heads: heads, kv_heads: kv_heads)
  return h + swiglu(rmsnorm(h, name: ffn_norm), hidden: ffn_dim)
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  loss = cross_entropy(linear(rmsnorm(x, name: final_norm), vocab, name: head), targets)
}

train {
  batch = 1, seq = 4096, global_batch = 4608, steps = 2000
  optimizer = adamw(beta1 = 0.9, beta2 = 0.95), lr = 3.2e-4, warmup = 2000, wd = 0.1
  precision = bf16
}
