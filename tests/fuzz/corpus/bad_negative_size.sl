# expect: 6:17: argument 'out' of linear must be at least 1, got -4
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = linear(x, -4)
}
