# expect: 5:21: 'precision' is fp32, bf16 or fp8, not 'fp16'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { precision = fp16 }
