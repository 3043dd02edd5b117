# expect: 4:36: unknown dtype 'i33'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i33[2, 16]) {
}
