# tiny_gpt: a small byte-level GPT (pre-norm, rotary attention, SwiGLU) that trains
# on a laptop CPU in minutes.
model tiny_gpt

const vocab = 256, dim = 192, layers = 4, heads = 6
const ffn_dim = 512

block layer(x) {
  h = x + attention(rmsnorm(x, name: attn_norm), heads: heads)
  return h + swiglu(rmsnorm(h, name: ffn_norm), hidden: ffn_dim)
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
}

train {
  batch = 8, seq = 128, steps = 2000
  optimizer = adamw, lr = 1e-3, warmup = 100, wd = 0.1, clip = 1.0
  precision = fp32
}
