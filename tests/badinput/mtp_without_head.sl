# expect: 7:10: mtp needs the model's embedding and output head
model m
const vocab = 256, dim = 64, heads = 4
block l(x) { return x }
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
  x = embed(tokens, vocab, dim)
  loss = mtp(x, tokens, targets, block: l)
}
