# expect: 6:33: top_k (9) must be at most experts (8)
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = moe(x, experts: 8, top_k: 9, hidden: 32)
}
