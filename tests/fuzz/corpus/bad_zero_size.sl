# expect: 4:40: a dimension must be positive, got 0
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[0, 16]) {
}
