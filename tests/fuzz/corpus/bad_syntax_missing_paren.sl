# expect: 7:1: expected ')' to close the call of 'cross_entropy', found '}'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  loss = cross_entropy(linear(rmsnorm(x, vocab), targets)
}
