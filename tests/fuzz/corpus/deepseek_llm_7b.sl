# DeepSeek LLM 7B: 30 layers of width 4096, 32-head attention, SwiGLU 11008,
# vocab 102400 (about 6.9B parameters).
model deepseek_llm_7b

const vocab = 102400, dim = 4096, layers = 30, heads = 32, ffn_dim = 11008

block layer(x) {
  h = x + attention(rmsnorm(x, name: attn_norm), heads: heads)
  return h + swiglu(rmsnorm(h, name: ffn_norm), hidden: ffn_dim)
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  loss = cross_entropy(linear(rmsnorm(x, name: final_norm), vocab, name: head), targets)
}

train {
  batch = 1, seq = 4096, global_batch = 2304, steps = 2000
  optimizer = adamw(beta1 = 0.9, beta2 = 0.95), lr = 4.2e-4, warmup = 2000, wd = 0.1
  precision = bf16
}
