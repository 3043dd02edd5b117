# expect: 6:15: loop bounds must be integers, got a float
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  for i in 0..2.5 { x = x }
}
