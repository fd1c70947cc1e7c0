// Shared by the generated kernels (ops/elementwise.rs; appended to each, before the index
// helpers): what their expressions call.

// The offset in an input whose parameters start at p[q] (a flag, 1 when the input has the
// output's shape, then its broadcast strides[6]) of the output's element i.
fn at(i: u32, q: u32) -> u32 {
    if (p[q] == 1u) { return i; }
    return strided(i, p[1], 2u, q + 1u);
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
