# expect: 6:1: --set precision=fp4: 'precision' is fp32, bf16 or fp8, not 'fp4'
# set: precision=fp4
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { lr = 1e-3 }
