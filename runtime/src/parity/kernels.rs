//! One single-operator graph per kernel variant of the WebGPU backend.

use super::onnx::{Graph, int, ints, string};
use super::{Case, KERNEL_BOUND, random};
use crate::bundle::{Dim, ModelSpec, TensorSpec};

/// Every kernel of the WebGPU backend on random inputs in [−2, 2): broadcast arithmetic, unary
/// functions, products, convolutions, reductions, Softmax, the strided copies, the aliasing
/// Reshape and nearest Resize; then the fused kernels' cases ([`super::fused`]).
pub fn kernels() -> Vec<Case> {
    let mut cases = Vec::new();
    for op in ["Add", "Sub", "Mul", "Div"] {
        cases.push(case(
            format!("{op} broadcast"),
            single(op, &["a", "b"], vec![], |_| {}),
            &[("a", &[2, 3, 4, 5]), ("b", &[3, 1, 5])],
        ));
    }
    cases.push(case(
        "Add scalar constant",
        single("Add", &["a", "w"], vec![], |g| g.f32("w", &[], &[0.5])),
        &[("a", &[3, 7])],
    ));
    for op in ["Sqrt", "Log"] {
        // Positive inputs: |x| first.
        let mut g = Graph::default();
        g.node("Abs", &["x"], "ax");
        g.node(op, &["ax"], "y");
        cases.push(case(op, g, &[("x", &[4, 33])]));
    }
    for op in ["Cos", "Sin", "Neg", "Sigmoid", "Relu", "Abs"] {
        cases.push(case(op, single(op, &["x"], vec![], |_| {}), &[("x", &[5, 67])]));
    }
    cases.push(case(
        "MatMul batched broadcast",
        single("MatMul", &["a", "b"], vec![], |_| {}),
        &[("a", &[2, 3, 37, 19]), ("b", &[3, 19, 23])],
    ));
    cases.push(case(
        "MatMul weights",
        single("MatMul", &["a", "w"], vec![], |g| g.f32("w", &[40, 17], &weights(&[40, 17], 9))),
        &[("a", &[5, 40])],
    ));
    for (stride, pad, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
        let attributes = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad; 4]),
            ints("dilations", &[1, 1]),
            int("group", 1),
        ];
        let conv = single("Conv", &["x", "w", "b"], attributes, |g| {
            g.f32("w", &[8, 5, k, k], &weights(&[8, 5, k as usize, k as usize], 10));
            g.f32("b", &[8], &weights(&[8], 11));
        });
        cases.push(case(
            format!("Conv {k}×{k} stride {stride} pad {pad}"),
            conv,
            &[("x", &[2, 5, 13, 11])],
        ));
    }
    cases.push(case(
        "ReduceMean last axis",
        single("ReduceMean", &["x"], vec![ints("axes", &[2]), int("keepdims", 1)], |_| {}),
        &[("x", &[2, 8, 300])],
    ));
    cases.push(case(
        "ReduceMean two axes",
        single("ReduceMean", &["x"], vec![ints("axes", &[1, 3]), int("keepdims", 0)], |_| {}),
        &[("x", &[2, 4, 3, 5])],
    ));
    cases.push(case(
        "ReduceSum",
        single("ReduceSum", &["x", "axes"], vec![int("keepdims", 1)], |g| g.i64("axes", &[0])),
        &[("x", &[6, 10])],
    ));
    cases.push(case(
        "Softmax",
        single("Softmax", &["x"], vec![int("axis", 2)], |_| {}),
        &[("x", &[2, 49, 49])],
    ));
    cases.push(case(
        "Transpose",
        single("Transpose", &["x"], vec![ints("perm", &[0, 2, 1])], |_| {}),
        &[("x", &[2, 7, 9])],
    ));
    let slice = single("Slice", &["x", "s", "e", "a"], vec![], |g| {
        g.i64("s", &[1, 2]);
        g.i64("e", &[5, 100]);
        g.i64("a", &[1, 2]);
    });
    cases.push(case("Slice", slice, &[("x", &[2, 8, 9])]));
    cases.push(case(
        "Concat",
        single("Concat", &["a", "b"], vec![int("axis", 1)], |_| {}),
        &[("a", &[2, 3, 4]), ("b", &[2, 5, 4])],
    ));
    cases.push(case(
        "Reshape",
        single("Reshape", &["x", "s"], vec![], |g| g.i64("s", &[0, 4, -1])),
        &[("x", &[3, 8, 5])],
    ));
    let nearest = vec![
        string("mode", "nearest"),
        string("coordinate_transformation_mode", "asymmetric"),
        string("nearest_mode", "floor"),
    ];
    let resize = single("Resize", &["x", "", "scales"], nearest, |g| {
        g.f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0])
    });
    cases.push(case("Resize nearest ×2", resize, &[("x", &[2, 3, 7, 7])]));
    cases.extend(super::fused::cases());
    cases
}

/// Constant values drawn like the inputs.
pub(super) fn weights(shape: &[usize], seed: u64) -> Vec<f32> {
    random(shape, seed).into_raw_vec_and_offset().0
}

/// One node `y = op(inputs)` with attributes, after `build` added its constants.
fn single(
    op: &str,
    inputs: &[&str],
    attributes: Vec<tract_onnx::pb::AttributeProto>,
    build: impl FnOnce(&mut Graph),
) -> Graph {
    let mut g = Graph::default();
    build(&mut g);
    g.node_with(op, inputs, "y", attributes);
    g
}

/// The case of `graph` with fixed-shape float inputs (input `i` drawn with seed `i + 1`) and
/// the output `y`.
pub(super) fn case(name: impl Into<String>, graph: Graph, inputs: &[(&str, &[usize])]) -> Case {
    let name = name.into();
    let declared: Vec<(&str, Vec<Option<i64>>)> =
        inputs.iter().map(|(n, s)| (*n, s.iter().map(|&d| Some(d as i64)).collect())).collect();
    let spec = ModelSpec {
        file: format!("{name}.onnx"),
        sha256: String::new(),
        inputs: inputs
            .iter()
            .map(|(n, s)| TensorSpec {
                name: n.to_string(),
                shape: s.iter().map(|&d| Dim::Fixed(d)).collect(),
            })
            .collect(),
        outputs: Vec::new(),
        provenance: serde_json::Value::Null,
    };
    let values =
        inputs.iter().zip(1..).map(|((n, s), seed)| (n.to_string(), random(s, seed))).collect();
    Case {
        name,
        onnx: graph.encode(&declared, &[("y", Vec::new())]),
        spec,
        inputs: values,
        bound: KERNEL_BOUND,
    }
}
