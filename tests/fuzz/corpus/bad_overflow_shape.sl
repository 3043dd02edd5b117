# expect: 5:7: a tensor of shape [256, 4611686018427387904] has more than 2^48 elements
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, 4611686018427387904)
}
