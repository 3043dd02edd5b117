# expect: 4:13: division by zero
model m
const vocab = 256, dim = 64, heads = 4
const z = 1 / (dim - 64)
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
