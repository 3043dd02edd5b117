# expect: 6:3: more than 100000 loop iterations
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = 0
  for i in 0..1000000000 { x = x + 1 }
}
