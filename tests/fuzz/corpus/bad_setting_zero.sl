# expect: 5:16: 'zero' is 0 or 1, not 2
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { zero = 2 }
