# expect: 6:27: argument 'heads' of attention must be an integer, got a float
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = attention(x, heads: 2.5)
}
