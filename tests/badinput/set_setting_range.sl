# expect: 6:9: --set fim=1.5: 'fim' is a number in [0, 1], not 1.5
# set: fim=1.5
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { fim = 0.5 }
