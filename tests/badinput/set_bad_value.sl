# expect: 4:20: --set dim=abc: 'dim' is an integer, 'abc' is not
# set: dim=abc
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
