# expect: 7:9: shape mismatch in '+': [2, 16, 64] and [2, 16, 32]
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = linear(x, 32)
  z = x + y
}
