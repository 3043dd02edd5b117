# expect: 5:9: write ep = RANKS
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { experts = parallel(ranks = 64) }
