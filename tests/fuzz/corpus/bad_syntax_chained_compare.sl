# expect: 4:18: comparisons cannot be chained
model m
const vocab = 256, dim = 64, heads = 4
const ok = 1 < 2 < 3
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
