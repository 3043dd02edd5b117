# expect: 6:1: --set microbatches=two: 'microbatches' is an integer, 'two' is not
# set: microbatches=two
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1e-3 }
