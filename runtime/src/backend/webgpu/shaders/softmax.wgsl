// Softmax along one axis of x seen as [outer, len, inner]. p: rows (outer·inner), len, inner.
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let r = flat(g, n);
    if (r >= p[0]) { return; }
    let len = p[1];
    let inner = p[2];
    let base = (r / inner) * len * inner + r % inner;
    var top = x[base];
    for (var j = 1u; j < len; j++) { top = max(top, x[base + j * inner]); }
    var sum = 0.0;
    for (var j = 0u; j < len; j++) { sum += exp(x[base + j * inner] - top); }
    for (var j = 0u; j < len; j++) { y[base + j * inner] = exp(x[base + j * inner] - top) / sum; }
}
