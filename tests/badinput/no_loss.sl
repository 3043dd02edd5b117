# expect: 4:1: the graph does not define 'loss'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
}
