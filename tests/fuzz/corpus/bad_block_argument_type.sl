# expect: 6:41: argument 'moe' of block 'f' is declared bool, got an integer
model m
const vocab = 256, dim = 64, heads = 4
block f(x, moe: bool) { return x }
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  y = f(embed(tokens, vocab, dim), moe: 1)
}
