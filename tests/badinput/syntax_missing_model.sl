# expect: 2:1: expected 'model', found 'const'
const a = 1
