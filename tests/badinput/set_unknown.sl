# expect: 3:1: --set layerz: the model has no constant or train setting named 'layerz'
# set: layerz=3
model m
const vocab = 256, dim = 64, heads = 4
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
