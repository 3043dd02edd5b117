# expect: 3:7: expected a constant's name, found 'for'
model m
const for = 1
graph() { }
