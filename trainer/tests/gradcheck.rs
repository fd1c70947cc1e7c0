//! Every operation's gradient rule against central finite differences, run on ONNX Runtime.
//!
//! Each case builds `loss = Σ op(params) ⊙ R` for a fixed random `R`, differentiates it with
//! the trainer's autodiff, and compares every analytic gradient element with
//! `(loss(p + ε) − loss(p − ε)) / 2ε`.

use std::collections::BTreeMap;

use unpersonal_trainer::autodiff::gradients;
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig};
use unpersonal_trainer::graph::{Graph, Init, Op, OpIo, TensorId, numel};
use unpersonal_trainer::onnx::{Emitter, ExportOptions, Params, to_bytes};
use unpersonal_trainer::ops::{AveragePool, Conv, UnaryKind, Upsample};

const EPS: f32 = 1e-2;

/// Moves values away from zero so kinks (ReLU, |x|) are not within ε.
fn away_from_zero(values: Vec<f32>) -> Vec<f32> {
    values.into_iter().map(|v| v + 0.2f32.copysign(v)).collect()
}

/// Differentiates `build`'s output and compares with finite differences; returns the worst
/// relative error. `positive` lists parameters that must stay positive (log, sqrt, pow).
fn check(name: &str, build: impl Fn(&mut Graph) -> TensorId, positive: &[&str]) -> f32 {
    let mut g = Graph::new();
    let out = build(&mut g);
    let shape = g.shape(out).to_vec();
    let r_values = Init::Normal { std: 1.0 }.values("R", numel(&shape), 99);
    let r = g.constant(&shape, r_values);
    let weighted = g.mul(out, r);
    let axes: Vec<usize> = (0..shape.len()).collect();
    let loss = if axes.is_empty() { weighted } else { g.reduce_sum(weighted, &axes, false) };
    let params = g.params();
    let grads = gradients(&mut g, loss, &params);
    g.output("loss", loss);
    for (i, &grad) in grads.iter().enumerate() {
        g.output(&format!("grad{i}"), grad);
    }

    let mut values: BTreeMap<String, HostTensor> = BTreeMap::new();
    for &p in &params {
        let t = g.tensor(p);
        let mut v = away_from_zero(Init::Normal { std: 1.0 }.values(&t.name, numel(&t.shape), 5));
        if positive.contains(&t.name.as_str()) {
            v.iter_mut().for_each(|x| *x = x.abs() + 0.5);
        }
        values.insert(t.name.clone(), HostTensor { shape: t.shape.clone(), data: v });
    }

    let bytes = to_bytes(
        &g,
        &ExportOptions { params: Params::Inputs, symbolic_batch: false, metadata: vec![] },
    )
    .unwrap();
    let env =
        engine::environment(None).expect("ONNX Runtime must be available for the gradient checks");
    let mut session = engine::session(env, &bytes, &SessionConfig::cpu(1))
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let mut eval = |values: &BTreeMap<String, HostTensor>| {
        let inputs: Vec<(&str, &HostTensor)> =
            values.iter().map(|(k, v)| (k.as_str(), v)).collect();
        engine::run(&mut session, &inputs).unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };

    let analytic = eval(&values);
    let mut worst = 0f32;
    for (i, &p) in params.iter().enumerate() {
        let pname = g.tensor(p).name.clone();
        let grad = &analytic[&format!("grad{i}")].data;
        for (j, &analytic_j) in grad.iter().enumerate() {
            let original = values[&pname].data[j];
            values.get_mut(&pname).unwrap().data[j] = original + EPS;
            let plus = eval(&values)["loss"].data[0];
            values.get_mut(&pname).unwrap().data[j] = original - EPS;
            let minus = eval(&values)["loss"].data[0];
            values.get_mut(&pname).unwrap().data[j] = original;
            let numeric = (plus - minus) / (2.0 * EPS);
            let err = (numeric - analytic_j).abs() / (1.0 + numeric.abs().max(analytic_j.abs()));
            assert!(
                err < 2e-2,
                "{name}: ∂loss/∂{pname}[{j}]: analytic {analytic_j} vs numeric {numeric} (error {err})"
            );
            worst = worst.max(err);
        }
    }
    eprintln!("{name}: worst relative error {worst:.2e}");
    worst
}

fn p(g: &mut Graph, name: &str, shape: &[usize]) -> TensorId {
    g.param(name, shape, Init::Zeros)
}

#[test]
fn binary_ops_with_broadcasting() {
    check(
        "add",
        |g| {
            let a = p(g, "a", &[2, 3, 4]);
            let b = p(g, "b", &[3, 1]);
            g.add(a, b)
        },
        &[],
    );
    check(
        "sub",
        |g| {
            let a = p(g, "a", &[4]);
            let b = p(g, "b", &[2, 3, 4]);
            g.sub(a, b)
        },
        &[],
    );
    check(
        "mul",
        |g| {
            let a = p(g, "a", &[2, 1, 4]);
            let b = p(g, "b", &[1, 3, 1]);
            g.mul(a, b)
        },
        &[],
    );
    check(
        "div",
        |g| {
            let a = p(g, "a", &[2, 3]);
            let b = p(g, "b", &[3]);
            g.div(a, b)
        },
        &["b"],
    );
    check(
        "pow",
        |g| {
            let a = p(g, "a", &[2, 3]);
            let b = p(g, "b", &[1, 3]);
            g.pow(a, b)
        },
        &["a"],
    );
    check(
        "same operand twice",
        |g| {
            let a = p(g, "a", &[5]);
            let s = g.mul(a, a);
            g.add(s, a)
        },
        &[],
    );
}

#[test]
fn unary_ops() {
    for kind in [
        UnaryKind::Neg,
        UnaryKind::Sigmoid,
        UnaryKind::Relu,
        UnaryKind::Tanh,
        UnaryKind::Exp,
        UnaryKind::Sin,
        UnaryKind::Cos,
        UnaryKind::Abs,
        UnaryKind::Softplus,
    ] {
        check(
            &format!("{kind:?}"),
            |g| {
                let x = p(g, "x", &[3, 4]);
                g.unary(kind, x)
            },
            &[],
        );
    }
    for kind in [UnaryKind::Log, UnaryKind::Sqrt] {
        check(
            &format!("{kind:?}"),
            |g| {
                let x = p(g, "x", &[3, 4]);
                g.unary(kind, x)
            },
            &["x"],
        );
    }
    check(
        "silu",
        |g| {
            let x = p(g, "x", &[6]);
            g.silu(x)
        },
        &[],
    );
}

#[test]
fn reductions_and_softmax() {
    check(
        "reduce_sum keep",
        |g| {
            let x = p(g, "x", &[2, 3, 4]);
            g.reduce_sum(x, &[0, 2], true)
        },
        &[],
    );
    check(
        "reduce_sum drop",
        |g| {
            let x = p(g, "x", &[2, 3, 4]);
            g.reduce_sum(x, &[1], false)
        },
        &[],
    );
    check(
        "reduce_mean",
        |g| {
            let x = p(g, "x", &[2, 3, 4]);
            g.reduce_mean(x, &[1, 2], false)
        },
        &[],
    );
    check(
        "softmax",
        |g| {
            let x = p(g, "x", &[3, 5]);
            g.softmax(x, 1)
        },
        &[],
    );
    check(
        "log_softmax",
        |g| {
            let x = p(g, "x", &[3, 5]);
            g.log_softmax(x, 1)
        },
        &[],
    );
    check(
        "softmax axis 0",
        |g| {
            let x = p(g, "x", &[4, 2]);
            g.softmax(x, 0)
        },
        &[],
    );
}

#[test]
fn shape_ops() {
    check(
        "reshape",
        |g| {
            let x = p(g, "x", &[2, 6]);
            let y = g.reshape(x, &[3, 4]);
            let w = p(g, "w", &[4]);
            g.mul(y, w)
        },
        &[],
    );
    check(
        "transpose",
        |g| {
            let x = p(g, "x", &[2, 3, 4]);
            let y = g.transpose(x, &[2, 0, 1]);
            let w = p(g, "w", &[3]);
            g.mul(y, w)
        },
        &[],
    );
    check(
        "expand",
        |g| {
            let x = p(g, "x", &[3, 1]);
            g.expand(x, &[2, 3, 4])
        },
        &[],
    );
    check(
        "concat",
        |g| {
            let a = p(g, "a", &[2, 3]);
            let b = p(g, "b", &[2, 2]);
            let c = g.concat(&[a, b, a], 1);
            g.mul(c, c)
        },
        &[],
    );
    check(
        "slice",
        |g| {
            let x = p(g, "x", &[3, 5]);
            g.slice(x, 1, 1, 4)
        },
        &[],
    );
}

#[test]
fn matmul() {
    check(
        "matmul 2d",
        |g| {
            let a = p(g, "a", &[3, 4]);
            let b = p(g, "b", &[4, 2]);
            g.matmul(a, b)
        },
        &[],
    );
    check(
        "matmul batched",
        |g| {
            let a = p(g, "a", &[2, 3, 4]);
            let b = p(g, "b", &[2, 4, 5]);
            g.matmul(a, b)
        },
        &[],
    );
    check(
        "matmul shared weight",
        |g| {
            let a = p(g, "a", &[2, 3, 4]);
            let b = p(g, "b", &[4, 2]);
            g.matmul(a, b)
        },
        &[],
    );
}

#[test]
fn convolutions() {
    let cases = [
        ([2, 3, 6, 6], 4, 3, Conv { stride: 1, pad: 1, dilation: 1, groups: 1 }, true),
        ([2, 2, 6, 5], 3, 3, Conv { stride: 1, pad: 0, dilation: 1, groups: 1 }, false),
        ([2, 3, 4, 4], 2, 1, Conv { stride: 1, pad: 0, dilation: 1, groups: 1 }, true),
        ([2, 2, 7, 7], 3, 3, Conv { stride: 2, pad: 1, dilation: 1, groups: 1 }, false),
        ([1, 4, 6, 5], 6, 3, Conv { stride: 2, pad: 0, dilation: 1, groups: 2 }, true),
        ([2, 4, 5, 5], 4, 1, Conv { stride: 1, pad: 0, dilation: 1, groups: 4 }, false),
        ([1, 2, 8, 8], 2, 4, Conv { stride: 3, pad: 2, dilation: 1, groups: 1 }, true),
        ([2, 3, 5, 5], 2, 1, Conv { stride: 2, pad: 0, dilation: 1, groups: 1 }, false),
        ([1, 2, 6, 7], 3, 1, Conv { stride: 2, pad: 1, dilation: 1, groups: 1 }, true),
    ];
    for (xs, out, k, conv, bias) in cases {
        check(
            &format!("{conv:?} on {xs:?}"),
            |g| {
                let x = p(g, "x", &xs);
                let w = p(g, "w", &[out, xs[1] / conv.groups, k, k]);
                let mut operands = vec![x, w];
                if bias {
                    operands.push(p(g, "b", &[out]));
                }
                g.apply(conv, &operands)
            },
            &[],
        );
    }
}

#[test]
fn pooling_and_resize() {
    check(
        "avgpool 2",
        |g| {
            let x = p(g, "x", &[2, 3, 4, 4]);
            g.apply(AveragePool { kernel: 2, stride: 2 }, &[x])
        },
        &[],
    );
    check(
        "avgpool 3/2 uneven",
        |g| {
            let x = p(g, "x", &[1, 2, 6, 7]);
            g.apply(AveragePool { kernel: 3, stride: 2 }, &[x])
        },
        &[],
    );
    check(
        "upsample 2",
        |g| {
            let x = p(g, "x", &[1, 2, 3, 3]);
            g.apply(Upsample { factor: 2 }, &[x])
        },
        &[],
    );
}

#[test]
fn layers() {
    use unpersonal_trainer::nn;
    check(
        "group norm",
        |g| {
            let x = p(g, "x", &[2, 4, 3, 3]);
            nn::group_norm(g, "gn", x, 2, Init::Ones)
        },
        &[],
    );
    check(
        "l2 normalize",
        |g| {
            let x = p(g, "x", &[3, 5]);
            nn::l2_normalize(g, x)
        },
        &[],
    );
    check(
        "cross entropy",
        |g| {
            let x = p(g, "x", &[3, 4]);
            let t = g.constant(&[3, 4], vec![1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.]);
            nn::cross_entropy(g, x, t)
        },
        &[],
    );
    check(
        "binary cross entropy",
        |g| {
            let x = p(g, "x", &[3, 4]);
            let t = g.constant(&[3, 4], vec![1., 0., 1., 0., 0., 0., 0., 0., 1., 1., 1., 1.]);
            nn::binary_cross_entropy(g, x, t)
        },
        &[],
    );
}

/// Sin with a wrong gradient rule (sin instead of cos): the check must reject it.
#[derive(Debug)]
struct BrokenSin;

impl Op for BrokenSin {
    fn name(&self) -> &'static str {
        "Sin"
    }
    fn infer(&self, inputs: &[&[usize]]) -> Vec<usize> {
        inputs[0].to_vec()
    }
    fn emit(&self, e: &mut Emitter, io: &OpIo) {
        e.node("Sin", &[&io.inputs[0]], io.output, vec![]);
    }
    fn vjp(
        &self,
        g: &mut Graph,
        _: &[TensorId],
        y: TensorId,
        grad: TensorId,
    ) -> Vec<Option<TensorId>> {
        vec![Some(g.mul(grad, y))]
    }
}

#[test]
fn a_broken_rule_is_detected() {
    let result = std::panic::catch_unwind(|| {
        check(
            "broken sin",
            |g| {
                let x = p(g, "x", &[4]);
                g.apply(BrokenSin, &[x])
            },
            &[],
        )
    });
    let message = result.expect_err("a wrong gradient rule passed the finite-difference check");
    let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("analytic"), "unexpected failure: {text}");
}
