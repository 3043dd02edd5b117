# expect: 6:30: argument 'heads' of attention is given twice
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = attention(x, heads: 2, heads: 4)
}
