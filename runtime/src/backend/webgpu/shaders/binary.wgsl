// y = a ∘ b with NumPy broadcasting. p: count, rank, op (0 add, 1 sub, 2 mul, 3 div),
// dims[6] of y, strides[6] of a, strides[6] of b (0 on broadcast axes).
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = flat(g, n);
    if (i >= p[0]) { return; }
    let x = a[strided(i, p[1], 3u, 9u)];
    let z = b[strided(i, p[1], 3u, 15u)];
    switch p[2] {
        case 0u: { y[i] = x + z; }
        case 1u: { y[i] = x - z; }
        case 2u: { y[i] = x * z; }
        default: { y[i] = x / z; }
    }
}
