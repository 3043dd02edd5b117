# expect: 6:40: kv_heads (3) must divide heads (4)
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = attention(x, heads: 4, kv_heads: 3)
}
