# expect: 5:3: 'return' is for blocks, not the graph
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  return 1
}
