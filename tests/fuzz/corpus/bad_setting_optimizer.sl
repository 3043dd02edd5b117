# expect: 5:21: 'optimizer' is only adamw, not 'sgd'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { optimizer = sgd }
