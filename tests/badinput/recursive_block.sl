# expect: 5:21: block 'a' calls itself (recursion is not allowed)
model m
const vocab = 256, dim = 64, heads = 4
block a(x) { return b(x) }
block b(x) { return a(x) }
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = a(embed(tokens, vocab, dim))
}
