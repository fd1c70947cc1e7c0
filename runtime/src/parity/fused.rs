//! Graphs the WebGPU backend fuses (`backend/webgpu/fuse.rs`), as its exporters write them:
//! decomposed group normalisations with their affine, scale-shift and SiLU, a layer norm, a
//! long element-wise chain, and near misses that must stay unfused (a centred value read
//! twice, a mean over a middle axis).

use super::Case;
use super::kernels::{case, weights};
use super::onnx::{Graph, int, ints};

/// The cases, named `fused: …` (near misses: `not fused: …`).
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut g = Graph::default();
    normalise(
        &mut g,
        "x",
        "n",
        Norm { split: Some(&[0, 4, -1]), restore: Some(&[0, 12, 5, 7]), ..Norm::default() },
    );
    affine(&mut g, "n", "a", 12);
    silu(&mut g, "a", "y");
    cases.push(case("fused: GroupNorm, affine, SiLU", g, &[("x", &[2, 12, 5, 7])]));

    let mut g = Graph::default();
    g.i64("e_shape", &[0, 16, 1, 1]);
    g.node_with("Reshape", &["e", "e_shape"], "e4", Vec::new());
    for (name, start, end) in [("scale", 0, 8), ("shift", 8, 16)] {
        g.i64(&format!("{name}_s"), &[start]);
        g.i64(&format!("{name}_e"), &[end]);
        g.i64(&format!("{name}_a"), &[1]);
        g.node(
            "Slice",
            &["e4", &format!("{name}_s"), &format!("{name}_e"), &format!("{name}_a")],
            name,
        );
    }
    g.f32("one", &[], &[1.0]);
    g.node("Add", &["scale", "one"], "scale1");
    normalise(
        &mut g,
        "x",
        "n",
        Norm { split: Some(&[0, 2, -1]), restore: Some(&[0, 8, 6, 6]), ..Norm::default() },
    );
    affine(&mut g, "n", "a", 8);
    g.node("Mul", &["a", "scale1"], "scaled");
    g.node("Add", &["scaled", "shift"], "shifted");
    silu(&mut g, "shifted", "y");
    cases.push(case(
        "fused: GroupNorm, scale-shift, SiLU",
        g,
        &[("x", &[2, 8, 6, 6]), ("e", &[2, 16])],
    ));

    let mut g = Graph::default();
    normalise(&mut g, "x", "y", Norm { axes: &[-1], eps_first: true, ..Norm::default() });
    cases.push(case("fused: LayerNorm, eps + variance", g, &[("x", &[3, 5, 40])]));

    let mut g = Graph::default();
    normalise(
        &mut g,
        "x",
        "n",
        Norm { split: Some(&[0, 4, -1]), restore: Some(&[0, 12, 5, 7]), ..Norm::default() },
    );
    g.i64("back", &[0, 12, 5, 7]);
    g.node("Reshape", &["n_d", "back"], "centred");
    g.node("Add", &["n", "centred"], "y");
    cases.push(case(
        "not fused: GroupNorm, centred values read twice",
        g,
        &[("x", &[2, 12, 5, 7])],
    ));

    let mut g = Graph::default();
    normalise(&mut g, "x", "y", Norm { axes: &[1], ..Norm::default() });
    cases.push(case("not fused: a norm over a middle axis", g, &[("x", &[2, 6, 9])]));

    cases.push(case(
        "fused: element-wise chain of nine inputs",
        chain(),
        &[
            ("a", &[2, 3, 4, 5]),
            ("b", &[3, 1, 5]),
            ("c", &[5]),
            ("d", &[2, 3, 4, 5]),
            ("e", &[4, 1]),
            ("f", &[1, 3, 1, 1]),
            ("g", &[2, 1, 1, 1]),
            ("h", &[2, 3, 4, 5]),
            ("k", &[1]),
        ],
    ));
    cases
}

/// How [`normalise`] writes a norm.
#[derive(Default, Clone, Copy)]
struct Norm<'a> {
    /// Reshape targets into rows and back.
    split: Option<&'a [i64]>,
    restore: Option<&'a [i64]>,
    /// The means' axes (default: the last of three).
    axes: &'a [i64],
    /// `Add(eps, variance)` rather than `Add(variance, eps)`.
    eps_first: bool,
}

/// `out = (u − mean(u)) / sqrt(mean((u − mean(u))²) + 1e-5)` over `norm.axes` with `u` the
/// rows of `x`, decomposed; the centred values are `{out}_d`.
fn normalise(g: &mut Graph, x: &str, out: &str, norm: Norm) {
    let v = |s: &str| format!("{out}_{s}");
    let rows = match norm.split {
        Some(target) => {
            g.i64(&v("split"), target);
            g.node("Reshape", &[x, &v("split")], &v("rows"));
            v("rows")
        }
        None => x.to_string(),
    };
    let axes = if norm.axes.is_empty() { &[2][..] } else { norm.axes };
    let mean = || vec![ints("axes", axes), int("keepdims", 1)];
    g.node_with("ReduceMean", &[&rows], &v("mean"), mean());
    g.node("Sub", &[&rows, &v("mean")], &v("d"));
    g.node("Mul", &[&v("d"), &v("d")], &v("d2"));
    g.node_with("ReduceMean", &[&v("d2")], &v("var"), mean());
    g.f32(&v("eps"), &[], &[1e-5]);
    let sum = if norm.eps_first { [v("eps"), v("var")] } else { [v("var"), v("eps")] };
    g.node("Add", &[&sum[0], &sum[1]], &v("var_eps"));
    g.node("Sqrt", &[&v("var_eps")], &v("std"));
    let quotient = if norm.restore.is_some() { v("q") } else { out.to_string() };
    g.node("Div", &[&v("d"), &v("std")], &quotient);
    if let Some(target) = norm.restore {
        g.i64(&v("restore"), target);
        g.node("Reshape", &[&quotient, &v("restore")], out);
    }
}

/// `out = x · gain + bias` with per-channel constants of `channels`.
fn affine(g: &mut Graph, x: &str, out: &str, channels: usize) {
    let shape = [1, channels as i64, 1, 1];
    g.f32(&format!("{out}_gain"), &shape, &weights(&[1, channels, 1, 1], 12));
    g.f32(&format!("{out}_bias"), &shape, &weights(&[1, channels, 1, 1], 13));
    g.node("Mul", &[x, &format!("{out}_gain")], &format!("{out}_scaled"));
    g.node("Add", &[&format!("{out}_scaled"), &format!("{out}_bias")], out);
}

/// `out = x · sigmoid(x)`.
fn silu(g: &mut Graph, x: &str, out: &str) {
    g.node("Sigmoid", &[x], &format!("{out}_sigmoid"));
    g.node("Mul", &[x, &format!("{out}_sigmoid")], out);
}

/// Every element-wise operator with broadcasting and rank-0 constants, over nine inputs (more
/// than one kernel binds).
fn chain() -> Graph {
    let mut g = Graph::default();
    g.f32("half", &[], &[0.5]);
    g.f32("two", &[], &[2.0]);
    for (op, inputs, out) in [
        ("Add", &["a", "b"][..], "t0"),
        ("Mul", &["t0", "c"], "t1"),
        ("Sub", &["t1", "d"], "t2"),
        ("Abs", &["e"], "t3"),
        ("Add", &["t3", "half"], "t4"),
        ("Div", &["t2", "t4"], "t5"),
        ("Sigmoid", &["t5"], "t6"),
        ("Abs", &["f"], "t7"),
        ("Sqrt", &["t7"], "t8"),
        ("Add", &["t8", "two"], "t9"),
        ("Log", &["t9"], "t10"),
        ("Mul", &["t6", "t10"], "t11"),
        ("Cos", &["g"], "t12"),
        ("Sin", &["h"], "t13"),
        ("Mul", &["t12", "t13"], "t14"),
        ("Neg", &["t14"], "t15"),
        ("Relu", &["k"], "t16"),
        ("Sub", &["t15", "t16"], "t17"),
        ("Add", &["t11", "t17"], "t18"),
        ("Mul", &["t18", "t18"], "y"),
    ] {
        g.node(op, inputs, out);
    }
    g
}
