// 2-D convolution (NCHW, one group) as an implicit matrix product W [Cout, Cin·KH·KW] ×
// im2col(x) [Cin·KH·KW, N·OH·OW], 16×16 tiles through workgroup memory, plus the bias.
// p: Cout, N·OH·OW, K, Cin, H, W, OH, OW, KH, KW, stride h, stride w, pad top, pad left,
// dilation h, dilation w, has bias.
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

var<workgroup> tw: array<f32, 256>;
var<workgroup> tx: array<f32, 256>;

fn im2col(k: u32, col: u32) -> f32 {
    let ohw = p[6] * p[7];
    let n = col / ohw;
    let oy = (col % ohw) / p[7];
    let ox = col % p[7];
    let khw = p[8] * p[9];
    let ci = k / khw;
    let ky = (k % khw) / p[9];
    let kx = k % p[9];
    let iy = i32(oy * p[10] + ky * p[14]) - i32(p[12]);
    let ix = i32(ox * p[11] + kx * p[15]) - i32(p[13]);
    if (iy < 0 || ix < 0 || iy >= i32(p[4]) || ix >= i32(p[5])) { return 0.0; }
    return x[((n * p[3] + ci) * p[4] + u32(iy)) * p[5] + u32(ix)];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let cout = p[0];
    let cols = p[1];
    let kk = p[2];
    let row = wg.y * 16u + l.y;
    let col = wg.x * 16u + l.x;
    var acc = 0.0;
    for (var t = 0u; t < kk; t += 16u) {
        let kw = t + l.x;
        var vw = 0.0;
        if (row < cout && kw < kk) { vw = w[row * kk + kw]; }
        tw[l.y * 16u + l.x] = vw;
        let kx = t + l.y;
        var vx = 0.0;
        if (kx < kk && col < cols) { vx = im2col(kx, col); }
        tx[l.y * 16u + l.x] = vx;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) { acc += tw[l.y * 16u + k] * tx[k * 16u + l.x]; }
        workgroupBarrier();
    }
    if (row < cout && col < cols) {
        if (p[16] == 1u) { acc += bias[row]; }
        let ohw = p[6] * p[7];
        y[((col / ohw) * cout + row) * ohw + col % ohw] = acc;
    }
}
