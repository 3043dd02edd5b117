# expect: 5:7: unknown function 'embedd'
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embedd(tokens, vocab, dim)
}
