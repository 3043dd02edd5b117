# expect: 5:9: 'pipeline' is not a train setting
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { pipeline = dualpipe(stages = 4) }
