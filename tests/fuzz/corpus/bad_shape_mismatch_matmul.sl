# expect: 7:7: shape mismatch in matmul: [2, 16, 64] and [32, 32]
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  param w: f32[32, 32]
  y = matmul(x, w)
}
