// A generated group normalisation (ops/group_norm.rs): every row of K consecutive elements of
// x0 (one group of one batch row) is centred on its mean and divided by sqrt(variance + eps),
// both reduced in workgroup memory, then the rest of the expression runs on that value (v0)
// before it is written. One workgroup per row. p: as the element-wise kernels', K in p[8];
// eps after the expression's scalars.
BINDINGS
var<workgroup> partial: array<f32, 64>;

// The sum of v over the workgroup's invocations (all of them call it).
fn total(v: f32, l: u32) -> f32 {
    partial[l] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (l < s) { partial[l] += partial[l + s]; }
        workgroupBarrier();
    }
    let t = partial[0];
    workgroupBarrier();
    return t;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let k = p[8];
    let base = (w.x + w.y * n.x) * k;
    if (base >= p[0]) { return; }
    var sum = 0.0;
    for (var j = l; j < k; j += 64u) { sum += x0[base + j]; }
    let mean = total(sum, l) / f32(k);
    var squares = 0.0;
    for (var j = l; j < k; j += 64u) {
        let d = x0[base + j] - mean;
        squares += d * d;
    }
    let scale = sqrt(total(squares, l) / f32(k) + EPS);
    for (var j = l; j < k; j += 64u) {
        let i = base + j;
BODY    }
}
