# DeepSeek-V3 (671B parameters, 37B active per token), the published configuration:
# 61 layers of width 7168; MLA with 128 heads, query rank 1536, KV rank 512, head
# 128 + 64 (rope), value 128; layers 0-2 dense (hidden 18432), then 1 shared + 256
# routed experts of hidden 2048, top-8, sigmoid gate with an auxiliary-loss-free
# bias, at most 4 nodes per token over 8 groups; vocab 129280; one MTP module.
model deepseek_v3

const vocab = 129280, dim = 7168, layers = 61, heads = 128
const q_rank = 1536, kv_rank = 512, head_dim = 128, rope_dim = 64, v_dim = 128
const dense_layers = 3, dense_dim = 18432
const experts = 256, shared = 1, top_k = 8, expert_dim = 2048
const groups = 8, node_limit = 4, route_scale = 2.5
const gamma = 0.001, alpha = 0.0001, mtp_weight = 0.3

block layer(x, moe_layer: bool = true) {
  h = x + mla(rmsnorm(x, name: attn_norm), heads: heads, q_rank: q_rank,
              kv_rank: kv_rank, rope_dim: rope_dim, head_dim: head_dim, v_dim: v_dim)
  f = moe_layer ? moe(rmsnorm(h, name: ffn_norm), experts: experts, shared: shared,
                      top_k: top_k, hidden: expert_dim, gate: sigmoid,
                      balance: bias(gamma), alpha: alpha, scale: route_scale,
                      groups: groups, node_limit: node_limit)
                : swiglu(rmsnorm(h, name: ffn_norm), hidden: dense_dim)
  return h + f
}

graph(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  x = embed(tokens, vocab, dim)
  for i in 0..layers { x = layer(x, moe_layer: i >= dense_layers) }
  logits = linear(rmsnorm(x, name: final_norm), vocab, name: head)
  loss = cross_entropy(logits, targets)
  loss += mtp_weight * mtp(x, tokens, targets, block: layer, depth: 1)
}

# The pre-training recipe of the technical report; batch is the micro-batch.  The
# layout: 16-way pipeline under DualPipe, 64-way expert parallelism, ZeRO-1; on 2048
# GPUs (dp = 128) a step of 15360 sequences is 120 micro-batches a rank.
train {
  batch = 1, seq = 4096, global_batch = 15360, microbatches = 120, steps = 2000
  optimizer = adamw(beta1 = 0.9, beta2 = 0.95), lr = 2.2e-4, warmup = 2000, wd = 0.1
  clip = 1.0, precision = fp8
  pp = 16, schedule = dualpipe, ep = 64, zero = 1, ep_capacity = 1.25
}
