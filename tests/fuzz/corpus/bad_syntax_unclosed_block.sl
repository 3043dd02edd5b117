# expect: 8:1: unexpected end of file
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  loss = cross_entropy(linear(x, vocab), targets)

