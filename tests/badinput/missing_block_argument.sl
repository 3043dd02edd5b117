# expect: 6:7: missing argument 'n' of block 'f'
model m
const vocab = 256, dim = 64, heads = 4
block f(x, n: int) { return x }
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  y = f(embed(tokens, vocab, dim))
}
