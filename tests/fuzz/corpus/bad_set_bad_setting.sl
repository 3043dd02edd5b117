# expect: 6:9: --set lr=fast: 'lr' is a number, 'fast' is not
# set: lr=fast
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1e-3 }
