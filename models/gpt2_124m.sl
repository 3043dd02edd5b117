# gpt2_124m: a model of GPT-2 small's shape (12 layers, width 768, 12 heads, GPT-2's
# vocabulary padded to 50304 as llm.c does), written in tiny_gpt's style: pre-norm,
# rotary attention and a SwiGLU feed-forward whose hidden width 2048 holds as many
# weights as GPT-2's 3072-wide GELU MLP.  The output head is not tied to the
# embedding, so it has about 163M parameters where GPT-2 has 124M.  Used to measure
# start-up time and checkpoint memory at a realistic size (tools/bench/startup.sh);
# seq 64 and batch 4 keep a CPU step short.
model gpt2_124m

const vocab = 50304, dim = 768, layers = 12, heads = 12
const ffn_dim = 2048

block layer(x) {
  h = x + attention(rmsnorm(x, name: attn_norm), heads: heads)
  return h + swiglu(rmsnorm(h, name: ffn_norm), hidden: ffn_dim)
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
}

train {
  batch = 4, seq = 64, steps = 1000
  optimizer = adamw, lr = 6e-4, warmup = 100, wd = 0.1, clip = 1.0
  precision = fp32
}
