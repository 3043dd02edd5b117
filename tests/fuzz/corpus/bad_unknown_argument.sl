# expect: 6:34: attention has no argument 'head'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = attention(x, heads: heads, head: 2)
}
