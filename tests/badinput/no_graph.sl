# expect: 6:1: the model has no graph
model m
const vocab = 256, dim = 64, heads = 4
const x = 1

