# expect: 5:27: name the arguments of a setting
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { optimizer = adamw(3e-4) }
