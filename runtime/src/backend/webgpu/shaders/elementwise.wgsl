// A generated element-wise kernel (ops/elementwise.rs): y[i] = f(x0, x1, …) over y's elements,
// each input read through its broadcast strides. p: count, rank, dims[6] of y, 0, then per
// input a flag and strides[6] (see `at`), then the expression's scalar constants.
BINDINGS
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
BODY}
