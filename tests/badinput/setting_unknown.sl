# expect: 5:20: unknown train setting 'stpes'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1e-3, stpes = 10 }
