// Sum or mean over the flagged axes of x. p: count (outputs), rank, reduced count, mean (0/1),
// dims[6] of x, strides[6] of x, flags[6] (1 = reduced).
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    let rank = p[1];
    var rem = i;
    var base = 0u;
    for (var k = 0u; k < rank; k++) {
        let d = rank - 1u - k;
        if (p[16u + d] == 0u) {
            let c = rem % p[4u + d];
            rem = rem / p[4u + d];
            base += c * p[10u + d];
        }
    }
    var acc = 0.0;
    for (var r = 0u; r < p[2]; r++) {
        var rr = r;
        var off = base;
        for (var k = 0u; k < rank; k++) {
            let d = rank - 1u - k;
            if (p[16u + d] == 1u) {
                let c = rr % p[4u + d];
                rr = rr / p[4u + d];
                off += c * p[10u + d];
            }
        }
        acc += x[off];
    }
    if (p[3] == 1u) { acc = acc / f32(p[2]); }
    y[i] = acc;
}
