//! Reverse-mode automatic differentiation over a [`Graph`].
//!
//! Walks the graph backwards from a scalar loss, asks each operation for its vector–Jacobian
//! product ([`crate::graph::Op::vjp`]) and sums the contributions of every use of a tensor.
//! The gradient nodes are ordinary graph operations, so they lower to standard ONNX.

use std::collections::HashMap;

use crate::graph::{Graph, Source, TensorId, numel};

/// Appends to `g` the gradient of `loss` with respect to each tensor of `wrt`, in order.
///
/// `loss` must have one element. A tensor of `wrt` that the loss does not depend on gets a
/// zero gradient.
pub fn gradients(g: &mut Graph, loss: TensorId, wrt: &[TensorId]) -> Vec<TensorId> {
    assert_eq!(numel(g.shape(loss)), 1, "the loss must be a scalar, got shape {:?}", g.shape(loss));
    let requires = g.depends_on(|id| wrt.contains(&id));
    let needed = g.ancestors(&[loss]);

    let mut grads: HashMap<TensorId, TensorId> = HashMap::new();
    let loss_shape = g.shape(loss).to_vec();
    let seed = g.constant(&loss_shape, vec![1.0]);
    grads.insert(loss, seed);

    for index in (0..=loss.0).rev() {
        let id = TensorId(index);
        if !needed[index] || !requires[index] {
            continue;
        }
        let Some(&grad) = grads.get(&id) else { continue };
        let Source::Op { op, inputs } = g.tensor(id).source.clone() else { continue };
        let input_grads = op.vjp(g, &inputs, id, grad);
        assert_eq!(
            input_grads.len(),
            inputs.len(),
            "{} returned the wrong number of gradients",
            op.name()
        );
        for (&input, input_grad) in inputs.iter().zip(input_grads) {
            let Some(input_grad) = input_grad else { continue };
            if !requires[input.0] {
                continue;
            }
            assert_eq!(
                g.shape(input_grad),
                g.shape(input),
                "{} produced a gradient of shape {:?} for an operand of shape {:?}",
                op.name(),
                g.shape(input_grad),
                g.shape(input)
            );
            let total = match grads.get(&input) {
                Some(&previous) => g.add(previous, input_grad),
                None => input_grad,
            };
            grads.insert(input, total);
        }
    }

    wrt.iter()
        .map(|&w| match grads.get(&w) {
            Some(&grad) => grad,
            None => {
                let shape = g.shape(w).to_vec();
                g.constant(&shape, vec![0.0; numel(&shape)])
            }
        })
        .collect()
}
