# expect: 5:17: 'steps' is an integer >= 1, not 'fast'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { steps = fast }
