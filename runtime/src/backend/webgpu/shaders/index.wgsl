
// Shared by the one-dimensional kernels (appended to each; `p` is the kernel's parameters).

// The invocation's flat index in a grid of 64-wide workgroups folded into two axes.
fn flat(g: vec3<u32>, n: vec3<u32>) -> u32 {
    return g.x + g.y * n.x * 64u;
}

// Σ c_k·p[strides + k] for the coordinates c of element i in the shape p[dims .. dims + rank].
fn strided(i: u32, rank: u32, dims: u32, strides: u32) -> u32 {
    var rem = i;
    var offset = 0u;
    for (var k = 0u; k < rank; k++) {
        let d = rank - 1u - k;
        offset += (rem % p[dims + d]) * p[strides + d];
        rem = rem / p[dims + d];
    }
    return offset;
}
