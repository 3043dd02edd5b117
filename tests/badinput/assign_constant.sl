# expect: 5:3: cannot assign to 'dim'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  dim = 3
}
