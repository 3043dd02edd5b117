# expect: 4:24: integer overflow
model m
const vocab = 256, dim = 64, heads = 4
const big = 4294967296 * 4294967296
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
