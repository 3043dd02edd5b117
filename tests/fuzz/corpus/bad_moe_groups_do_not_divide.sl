# expect: 4:56: groups (6) must divide experts (16)
model m
graph(x: f32[4, 16], targets: i32[4]) {
  y = moe(x, experts: 16, top_k: 4, hidden: 8, groups: 6, node_limit: 2)
  loss = cross_entropy(y, targets)
}
