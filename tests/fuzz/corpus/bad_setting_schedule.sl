# expect: 5:20: 'schedule' is 1f1b, zb1p, dualpipe or dualpipev, not 'gpipe'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { schedule = gpipe }
