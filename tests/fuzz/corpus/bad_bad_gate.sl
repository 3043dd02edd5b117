# expect: 6:65: unknown gate 'relu'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  y = moe(x, experts: 8, top_k: 2, hidden: 32, shared: 1, gate: relu)
}
