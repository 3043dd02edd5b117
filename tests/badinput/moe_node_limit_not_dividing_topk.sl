# expect: 4:71: node_limit (3) must divide top_k (4)
model m
graph(x: f32[4, 16], targets: i32[4]) {
  y = moe(x, experts: 16, top_k: 4, hidden: 8, groups: 4, node_limit: 3)
  loss = cross_entropy(y, targets)
}
