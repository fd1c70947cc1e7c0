// Strided copy over an iteration shape: y[y0 + Σ c_k·ys_k] = x[x0 + Σ c_k·xs_k].
// p: count, rank, x0, y0, dims[6], xs[6], ys[6]. Transpose, Slice and Concat are such copies.
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    y[p[3] + strided(i, p[1], 4u, 16u)] = x[p[2] + strided(i, p[1], 4u, 10u)];
}
