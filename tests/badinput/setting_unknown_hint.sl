# expect: 5:20: did you mean 'steps'?
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1e-3, stpes = 10 }
