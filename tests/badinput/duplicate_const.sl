# expect: 4:7: constant 'dim' is defined twice
model m
const vocab = 256, dim = 64, heads = 4
const dim = 3
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
