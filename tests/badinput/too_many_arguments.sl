# expect: 5:39: embed takes at most 5 arguments
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim, a, 1, 2)
}
