# expect: 6:3: 'loss' must be an f32 scalar tensor, got f32[2, 16, 64]
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  loss = x
}
