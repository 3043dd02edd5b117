# expect: 5:29: unknown train setting 'schedule.stages'
model m
graph(tokens: i32[2, 16], targets: i32[2, 16]) {
}
train { schedule = dualpipe(stages = 4) }
