# expect: 4:13: integer 99999999999999999999 does not fit in 64 bits
model m
const vocab = 256, dim = 64, heads = 4
const big = 99999999999999999999
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
