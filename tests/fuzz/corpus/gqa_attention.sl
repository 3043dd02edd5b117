# golden: rmsnorm and grouped-query attention (4 query heads over 2 key/value heads)
model gqa_attention
graph(x: f32[2, 8, 16], targets: i32[2, 8]) {
  h = x + attention(rmsnorm(x), heads: 4, kv_heads: 2)
  loss = cross_entropy(linear(h, 32, name: head), targets)
}
