// y = f(x). p: count, op (0 sqrt, 1 log, 2 cos, 3 sin, 4 neg, 5 sigmoid, 6 relu, 7 abs).
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    let v = x[i];
    switch p[1] {
        case 0u: { y[i] = sqrt(v); }
        case 1u: { y[i] = log(v); }
        case 2u: { y[i] = cos(v); }
        case 3u: { y[i] = sin(v); }
        case 4u: { y[i] = -v; }
        case 5u: { y[i] = 1.0 / (1.0 + exp(-v)); }
        case 6u: { y[i] = max(v, 0.0); }
        default: { y[i] = abs(v); }
    }
}
