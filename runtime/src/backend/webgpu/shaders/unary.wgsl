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
        case 2u: { y[i] = circular(v, 1); }
        case 3u: { y[i] = circular(v, 0); }
        case 4u: { y[i] = -v; }
        case 5u: { y[i] = 1.0 / (1.0 + exp(-v)); }
        case 6u: { y[i] = max(v, 0.0); }
        default: { y[i] = abs(v); }
    }
}

// sin(v) (shift 0) or cos(v) (shift 1) within a few ulp for |v| up to about 10^4, whatever the
// device's builtins do (WGSL allows them 2^-11; SwiftShader's are off by 1.9e-4 on [-2, 2]):
// the quadrant q, v − q·π/2 with π/2 in three parts (each product exact), and Cephes'
// single-precision minimax polynomials on [−π/4, π/4].
fn circular(v: f32, shift: i32) -> f32 {
    let q = round(v * 0.636619772367581343);
    let r = ((v - q * 1.5703125) - q * 4.837512969970703125e-4) - q * 7.54978995489188216e-8;
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    switch (i32(q) + shift) & 3 {
        case 0: { return s; }
        case 1: { return c; }
        case 2: { return -s; }
        default: { return -c; }
    }
}
