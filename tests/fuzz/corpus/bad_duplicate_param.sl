# expect: 6:9: 'w' is defined twice
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  param w: f32[4, 4]
  param w: f32[4, 4]
}
