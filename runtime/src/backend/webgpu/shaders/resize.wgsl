// Nearest-neighbour resize of a rank-4 tensor, asymmetric coordinates, floor rounding:
// y[c] = x[min(floor(c_k / scale_k), in_k − 1)]. p: count, in dims[4], out dims[4], scales[4] (f32 bits).
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    var rem = i;
    var ix = 0u;
    var stride = 1u;
    for (var k = 0u; k < 4u; k++) {
        let d = 3u - k;
        let c = rem % p[5u + d];
        rem = rem / p[5u + d];
        let s = min(u32(floor(f32(c) / bitcast<f32>(p[9u + d]))), p[1u + d] - 1u);
        ix += s * stride;
        stride *= p[1u + d];
    }
    y[i] = x[ix];
}
