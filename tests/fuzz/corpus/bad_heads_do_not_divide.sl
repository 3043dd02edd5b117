# expect: 6:27: heads (7) do not divide the width (64)
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = attention(x, heads: 7)
}
