# expect: 5:13: dtype mismatch: embed takes an integer tensor, got f32[2, 16]
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: f32[2, 16]) {
  x = embed(tokens, vocab, dim)
}
