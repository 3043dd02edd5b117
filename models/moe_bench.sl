# moe_bench: the MoE model of the GPU benchmark against PyTorch
# (tools/bench/gpu_vs_torch.sh, MODEL=moe): 8 layers of width 1024, 16 heads with
# rotary attention, each feed-forward a DeepSeekMoE layer (64 routed experts of hidden
# 512, top-6, one shared expert, sigmoid gates with the auxiliary-loss-free bias),
# RMSNorm, an untied head over GPT-2's vocabulary padded to 50304.
# tools/bench/torch_train.py --model moe builds the same model in PyTorch.
model moe_bench

const vocab = 50304, dim = 1024, layers = 8, heads = 16
const experts = 64, shared = 1, top_k = 6, expert_dim = 512

block layer(x) {
  h = x + attention(rmsnorm(x, name: attn_norm), heads: heads)
  return h + moe(rmsnorm(h, name: ffn_norm), experts: experts, shared: shared,
                 top_k: top_k, hidden: expert_dim, gate: sigmoid, balance: bias(0.001))
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
}

train {
  batch = 8, seq = 1024, steps = 1000
  optimizer = adamw, lr = 3e-4, warmup = 100, wd = 0.1, clip = 1.0
  precision = bf16
}
