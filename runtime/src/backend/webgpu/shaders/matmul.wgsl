// y[b] = a[b] · w[b] for a batch of [M, K] × [K, N] products, 16×16 tiles through workgroup
// memory. p: M, N, K, batch rank, out batch dims[4], a batch strides[4], w batch strides[4].
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

var<workgroup> ta: array<f32, 256>;
var<workgroup> tw: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let m = p[0];
    let n = p[1];
    let kk = p[2];
    let row = wg.y * 16u + l.y;
    let col = wg.x * 16u + l.x;
    var rem = wg.z;
    var a0 = 0u;
    var w0 = 0u;
    for (var k = 0u; k < p[3]; k++) {
        let d = p[3] - 1u - k;
        let c = rem % p[4u + d];
        rem = rem / p[4u + d];
        a0 += c * p[8u + d];
        w0 += c * p[12u + d];
    }
    var acc = 0.0;
    for (var t = 0u; t < kk; t += 16u) {
        let ka = t + l.x;
        var va = 0.0;
        if (row < m && ka < kk) { va = a[a0 + row * kk + ka]; }
        ta[l.y * 16u + l.x] = va;
        let kw = t + l.y;
        var vw = 0.0;
        if (kw < kk && col < n) { vw = w[w0 + kw * n + col]; }
        tw[l.y * 16u + l.x] = vw;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) { acc += ta[l.y * 16u + k] * tw[k * 16u + l.x]; }
        workgroupBarrier();
    }
    if (row < m && col < n) { y[wg.z * m * n + row * n + col] = acc; }
}
