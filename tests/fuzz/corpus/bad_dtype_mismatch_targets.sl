# expect: 6:42: dtype mismatch: cross_entropy takes integer targets
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: f32[2, 16]) {
  x = embed(tokens, vocab, dim)
  loss = cross_entropy(linear(x, vocab), targets)
}
