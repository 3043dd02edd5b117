# expect: 6:16: division by zero
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1 / 0 }
