# expect: 4:7: a tensor of shape [1000000, 1000000000] has more than 2^48 elements
model m
graph(tokens: i32[2, 16]) {
  x = embed(tokens, 1000000, 1000000000)
}
