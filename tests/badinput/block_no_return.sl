# expect: 6:7: block 'f' returns no value
model m
const vocab = 256, dim = 64, heads = 4
block f(x) { y = x }
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  y = f(embed(tokens, vocab, dim))
}
