# expect: 4:34: top_k (6) must be at most the experts of node_limit groups (2 x 2)
model m
graph(x: f32[4, 16], targets: i32[4]) {
  y = moe(x, experts: 16, top_k: 6, hidden: 8, groups: 8, node_limit: 2)
  loss = cross_entropy(y, targets)
}
