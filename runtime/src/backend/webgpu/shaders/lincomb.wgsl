// y[i] = bias + Σ_k w_k·x_k[i + o_k] over `count` elements with `terms` (0–3) terms: the
// sampler's arithmetic on the GPU. p: count, terms, o0, o1, o2, then the bits of the float32
// values w0, w1, w2, bias. Unused inputs are bound but never read.
@group(0) @binding(0) var<storage, read> x0: array<f32>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> x2: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    var v = bitcast<f32>(p[8]);
    if (p[1] > 0u) { v += bitcast<f32>(p[5]) * x0[i + p[2]]; }
    if (p[1] > 1u) { v += bitcast<f32>(p[6]) * x1[i + p[3]]; }
    if (p[1] > 2u) { v += bitcast<f32>(p[7]) * x2[i + p[4]]; }
    y[i] = v;
}
