# expect: 6:10: shape mismatch in cross_entropy: logits f32[2, 16, 256] and targets i32[2, 8]
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 8]) {
  x = embed(tokens, vocab, dim)
  loss = cross_entropy(linear(x, vocab), targets)
}
