# expect: 5:14: 'pp' is an integer >= 1, not 2.5
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { pp = 2.5 }
