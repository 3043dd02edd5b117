# mlp_lm: tiny_gpt without attention (each position sees its own token only): the
# embedding, norms, SwiGLU blocks, output head and loss of a GPT, for the GPU training
# tests on a backend that has no attention kernel.
model mlp_lm

const vocab = 256, dim = 192, layers = 2
const ffn_dim = 512

block layer(x) {
  return x + swiglu(rmsnorm(x, name: ffn_norm), hidden: ffn_dim)
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
}

train {
  batch = 4, seq = 64, steps = 200
  optimizer = adamw, lr = 1e-3, warmup = 10, wd = 0.1, clip = 1.0
  precision = fp32
}
