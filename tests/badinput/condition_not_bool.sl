# expect: 6:6: expected a bool, got an integer
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  if dim { x = x }
}
