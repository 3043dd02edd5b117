# expect: 5:15: 'ema' is a number in [0, 1), not 1
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { ema = 1 }
