//! The fusion pass, run once on a parsed [`Graph`] so that fewer kernels run:
//!
//! 1. every element-wise node reads each input once, and rank-0 constants move into its
//!    parameters;
//! 2. decomposed group normalisations (`[Reshape] → ReduceMean → Sub → Mul(d, d) → ReduceMean
//!    → Add(eps) → Sqrt → Div → [Reshape]`, the means over the same trailing axes, keeping
//!    them) become one [`GroupNorm`] op;
//! 3. maximal regions of element-wise nodes become one [`Elementwise`] op each (one generated
//!    kernel);
//! 4. a group norm takes the element-wise region reading it (affine, scale-shift, SiLU) into
//!    its own write.
//!
//! A node disappears into another only when every value that disappears with it is read by
//! the fused nodes alone and is not a graph output, and no kernel binds more than
//! [`MAX_BINDINGS`] buffers. Shapes are checked at [`PROBE_BATCH`] rows (and again when a
//! batch size is laid out).

use std::any::Any;
use std::collections::HashMap;

use super::graph::{Constant, Graph, Node};
use super::ops::{Elementwise, Expr, GroupNorm, Op, Reduce, Reshape};

/// Storage buffers one kernel may bind, its output and parameters included (WebGPU's default
/// limit per shader stage).
const MAX_BINDINGS: usize = 8;

/// The batch size at which fusion checks shapes.
const PROBE_BATCH: usize = 2;

/// Rewrites `graph` with fused ops where the patterns above match; leaves the rest alone.
pub(crate) fn fuse(graph: &mut Graph) {
    simplify(graph);
    let probe: Option<HashMap<String, Vec<usize>>> = graph
        .shapes(PROBE_BATCH)
        .ok()
        .map(|shapes| shapes.into_iter().map(|(name, shape)| (name.to_string(), shape)).collect());
    if let Some(shapes) = &probe {
        rewrite(graph, |users, slots| group_norms(users, slots, shapes));
    }
    rewrite(graph, regions);
    if let Some(shapes) = &probe {
        rewrite(graph, |users, slots| epilogues(users, slots, shapes));
    }
}

/// Runs `pass` over the graph's nodes as slots (a fused node takes the slot of the last node
/// it replaces, the others are emptied), then drops the empty slots.
fn rewrite(graph: &mut Graph, pass: impl FnOnce(&Users, &mut [Option<Node>])) {
    let users = Users::of(graph);
    let mut slots: Vec<Option<Node>> = graph.nodes.drain(..).map(Some).collect();
    pass(&users, &mut slots);
    graph.nodes = slots.into_iter().flatten().collect();
}

/// Who reads each value, and who computes it.
struct Users {
    /// Per value, the nodes reading it (each once).
    readers: HashMap<String, Vec<usize>>,
    producer: HashMap<String, usize>,
    outputs: Vec<String>,
}

impl Users {
    fn of(graph: &Graph) -> Users {
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        let mut producer = HashMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for name in &node.inputs {
                let list = readers.entry(name.clone()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
            producer.insert(node.output.clone(), i);
        }
        Users { readers, producer, outputs: graph.outputs.clone() }
    }

    /// Whether `value` is read only by `nodes` and is not a graph output.
    fn private(&self, value: &str, nodes: &[usize]) -> bool {
        !self.outputs.iter().any(|o| o == value)
            && self.readers.get(value).is_some_and(|r| r.iter().all(|i| nodes.contains(i)))
    }

    /// The one node reading `value`, when it is not a graph output.
    fn only_reader(&self, value: &str) -> Option<usize> {
        match self.readers.get(value)?.as_slice() {
            [i] if self.private(value, &[*i]) => Some(*i),
            _ => None,
        }
    }
}

/// The op of `node` as a `T`.
fn op<T: Op>(node: &Node) -> Option<&T> {
    (node.op.as_ref() as &dyn Any).downcast_ref::<T>()
}

/// The node in slot `i` when it is an element-wise one.
fn elementwise(slots: &[Option<Node>], i: usize) -> Option<(&Node, &Expr)> {
    let node = slots[i].as_ref()?;
    Some((node, &op::<Elementwise>(node)?.expr))
}

/// The value of a rank-0 float constant.
fn scalar(constants: &HashMap<String, Constant>, name: &str) -> Option<f32> {
    match constants.get(name)? {
        Constant { dims, floats: Some(values), .. } if dims.is_empty() && values.len() == 1 => {
            Some(values[0])
        }
        _ => None,
    }
}

/// Step 1: each element-wise node's inputs distinct, rank-0 constants in its parameters.
fn simplify(graph: &mut Graph) {
    for node in &mut graph.nodes {
        let Some(op) = (node.op.as_mut() as &mut dyn Any).downcast_mut::<Elementwise>() else {
            continue;
        };
        let mut inputs: Vec<String> = Vec::new();
        let map: Vec<usize> = node.inputs.iter().map(|name| index(&mut inputs, name, 0)).collect();
        let mut expr = op.expr.rewire(&map, inputs.len());
        for k in (0..inputs.len()).rev() {
            if let Some(value) = scalar(&graph.constants, &inputs[k]) {
                expr = expr.with_scalar(k, value);
                inputs.remove(k);
            }
        }
        op.expr = expr;
        node.inputs = inputs;
    }
}

/// The index of `name` in `names` (searched from `from`), appended when absent.
fn index(names: &mut Vec<String>, name: &str, from: usize) -> usize {
    names[from..].iter().position(|n| n == name).map(|p| p + from).unwrap_or_else(|| {
        names.push(name.to_string());
        names.len() - 1
    })
}

/// `consumer` (an expression and its inputs' names) with its input `k` computed by `producer`
/// (likewise): one expression over the producer's inputs, then the consumer's others (shared
/// where the same value is an input of both, except the producer's first `distinct`).
/// `None` when the kernel would bind more than [`MAX_BINDINGS`] buffers.
fn merge(
    producer: (&Expr, &[String]),
    consumer: (&Expr, &[String]),
    k: usize,
    distinct: usize,
) -> Option<(Expr, Vec<String>)> {
    let mut inputs = producer.1.to_vec();
    let map: Vec<usize> = consumer
        .1
        .iter()
        .enumerate()
        .map(|(i, name)| if i == k { 0 } else { index(&mut inputs, name, distinct) })
        .collect();
    (inputs.len() + 2 <= MAX_BINDINGS)
        .then(|| (producer.0.then(consumer.0, k, &map, inputs.len()), inputs))
}

/// Whether `expr` is the ONNX operator `template` on inputs numbered `inputs`.
fn is(expr: &Expr, template: &str, inputs: &[usize]) -> bool {
    let Some(mut want) = Expr::of(template) else { return false };
    let count = inputs.iter().max().map_or(0, |m| m + 1);
    want = want.rewire(inputs, count);
    expr.inputs == want.inputs && expr.steps == want.steps
}

/// Step 2: decomposed group normalisations to [`GroupNorm`] ops.
fn group_norms(users: &Users, slots: &mut [Option<Node>], shapes: &HashMap<String, Vec<usize>>) {
    for start in 0..slots.len() {
        if let Some((members, node)) = group_norm(users, slots, shapes, start) {
            let last = *members.iter().max().expect("a pattern has nodes");
            for i in members {
                slots[i] = None;
            }
            slots[last] = Some(node);
        }
    }
}

/// The group normalisation whose first mean is the node in slot `r1`: the slots it replaces
/// and the fused node.
fn group_norm(
    users: &Users,
    slots: &[Option<Node>],
    shapes: &HashMap<String, Vec<usize>>,
    r1: usize,
) -> Option<(Vec<usize>, Node)> {
    let node = |i: usize| slots[i].as_ref();
    let mean = op::<Reduce>(node(r1)?)?;
    let u = &node(r1)?.inputs[0];
    let axes = mean.trailing_mean(shapes.get(u)?.len())?;
    // Sub(u, mean) → d, read by Mul(d, d) and Div(d, ·) only.
    let sub = users.only_reader(&node(r1)?.output)?;
    let (centred, expr) = elementwise(slots, sub)?;
    let d = &centred.output;
    if !is(expr, "Sub", &[0, 1]) || centred.inputs != [u.clone(), node(r1)?.output.clone()] {
        return None;
    }
    let readers = users.readers.get(d)?;
    let square = *readers
        .iter()
        .find(|&&i| elementwise(slots, i).is_some_and(|(_, e)| is(e, "Mul", &[0, 0])))?;
    let div = *readers.iter().find(|&&i| i != square)?;
    // mean(d²) + eps, its square root, d over it.
    let r2 = users.only_reader(&node(square)?.output)?;
    if op::<Reduce>(node(r2)?)?.trailing_mean(shapes.get(d)?.len()) != Some(axes) {
        return None;
    }
    let add = users.only_reader(&node(r2)?.output)?;
    let (_, expr) = elementwise(slots, add)?;
    let plus_eps = |a| {
        Expr::of("Add")
            .is_some_and(|e| expr.steps == e.with_scalar(a, 0.0).steps && expr.inputs == 1)
    };
    if !(plus_eps(0) || plus_eps(1)) {
        return None;
    }
    let eps = expr.scalars[0];
    let sqrt = users.only_reader(&node(add)?.output)?;
    if !is(elementwise(slots, sqrt)?.1, "Sqrt", &[0])
        || users.only_reader(&node(sqrt)?.output)? != div
    {
        return None;
    }
    let (quotient, expr) = elementwise(slots, div)?;
    if !is(expr, "Div", &[0, 1])
        || quotient.inputs != [d.clone(), node(sqrt)?.output.clone()]
        || !users.private(d, &[square, div])
    {
        return None;
    }
    if [d, &quotient.output].iter().any(|v| shapes.get(*v) != shapes.get(u))
        || shapes.get(&node(add)?.output) != shapes.get(&node(r2)?.output)
    {
        return None;
    }
    let mut members = vec![r1, sub, square, r2, add, sqrt, div];
    // The Reshapes into rows and back, where nothing else reads their values.
    let split = users
        .producer
        .get(u)
        .filter(|&&i| users.private(u, &[r1, sub]) && node(i).and_then(op::<Reshape>).is_some())
        .copied();
    let x = split.map_or(u, |i| &slots[i].as_ref().expect("checked").inputs[0]).clone();
    members.extend(split);
    let restore =
        users.only_reader(&quotient.output).filter(|&i| node(i).and_then(op::<Reshape>).is_some());
    members.extend(restore);
    let last = restore.unwrap_or(div);
    let op = GroupNorm {
        split: split.and_then(|i| node(i).and_then(op::<Reshape>)).cloned(),
        mean: mean.clone(),
        eps,
        restore: restore.and_then(|i| node(i).and_then(op::<Reshape>)).cloned(),
        epilogue: Expr::identity(),
    };
    let fused = Node {
        name: format!("group norm {}", node(r1)?.name),
        op: Box::new(op),
        inputs: vec![x],
        output: node(last)?.output.clone(),
    };
    Some((members, fused))
}

/// Step 3: each maximal region of element-wise nodes, grown from its last node towards its
/// inputs, to one [`Elementwise`] op.
fn regions(users: &Users, slots: &mut [Option<Node>]) {
    for root in (0..slots.len()).rev() {
        let Some((node, expr)) = elementwise(slots, root) else { continue };
        let (mut expr, mut inputs, mut members) = (expr.clone(), node.inputs.clone(), vec![root]);
        loop {
            let next = inputs.iter().enumerate().find_map(|(k, name)| {
                let p = *users.producer.get(name)?;
                let (producer, own) = elementwise(slots, p)?;
                if !users.private(name, &members) {
                    return None;
                }
                Some((p, merge((own, &producer.inputs), (&expr, &inputs), k, 0)?))
            });
            let Some((p, (merged, merged_inputs))) = next else { break };
            (expr, inputs) = (merged, merged_inputs);
            members.push(p);
        }
        if members.len() > 1 {
            let node = slots[root].take().expect("the root");
            for &i in &members[1..] {
                slots[i] = None;
            }
            slots[root] = Some(Node { op: Box::new(Elementwise { expr }), inputs, ..node });
        }
    }
}

/// Step 4: each group norm with the element-wise op that alone reads its values, when that
/// op's result has their shape.
fn epilogues(users: &Users, slots: &mut [Option<Node>], shapes: &HashMap<String, Vec<usize>>) {
    for i in 0..slots.len() {
        let Some(norm) = slots[i].as_ref().and_then(op::<GroupNorm>) else { continue };
        let node = slots[i].as_ref().expect("checked");
        let Some(reader) = users.only_reader(&node.output) else { continue };
        let Some((consumer, expr)) = elementwise(slots, reader) else { continue };
        if shapes.get(&consumer.output) != shapes.get(&node.output) {
            continue;
        }
        let k = consumer.inputs.iter().position(|n| *n == node.output).expect("a reader");
        let Some((epilogue, inputs)) =
            merge((&norm.epilogue, &node.inputs), (expr, &consumer.inputs), k, 1)
        else {
            continue;
        };
        let fused = GroupNorm { epilogue, ..norm.clone() };
        let consumer = slots[reader].take().expect("checked");
        let node = slots[i].take().expect("checked");
        slots[reader] =
            Some(Node { op: Box::new(fused), inputs, output: consumer.output, name: node.name });
    }
}

#[cfg(all(test, feature = "parity"))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::backend::webgpu::{WebGpu, WebGpuError};
    use crate::bundle::BundleDir;
    use crate::parity;

    /// The parity case `name`'s graph, parsed, with `outputs` added, fused.
    fn fused_with(name: &str, outputs: &[&str]) -> Graph {
        let case = parity::kernels().into_iter().find(|c| c.name == name).expect("a parity case");
        let mut graph = Graph::parse(&case.onnx, &case.spec).unwrap();
        graph.outputs.extend(outputs.iter().map(|o| o.to_string()));
        fuse(&mut graph);
        graph
    }

    /// The parity case `name`'s graph, parsed and fused.
    fn fused(name: &str) -> Graph {
        fused_with(name, &[])
    }

    /// Group norms and nodes.
    fn count(graph: &Graph) -> (usize, usize) {
        (graph.nodes.iter().filter(|n| op::<GroupNorm>(n).is_some()).count(), graph.nodes.len())
    }

    #[test]
    fn group_norms_take_the_element_wise_ops_after_them() {
        assert_eq!(count(&fused("fused: GroupNorm, affine, SiLU")), (1, 1));
        // The condition's Reshape and its two Slices stay.
        assert_eq!(count(&fused("fused: GroupNorm, scale-shift, SiLU")), (1, 4));
        assert_eq!(count(&fused("fused: LayerNorm, eps + variance")), (1, 1));
    }

    #[test]
    fn near_misses_are_left_to_the_element_wise_pass() {
        // Sub, Mul(d, d) and Div + Sqrt + Add stay apart: d is read by three nodes.
        assert_eq!(count(&fused("not fused: GroupNorm, centred values read twice")), (0, 9));
        // Sub, Mul and Div + Sqrt + Add: a mean over axis 1 of three.
        assert_eq!(count(&fused("not fused: a norm over a middle axis")), (0, 5));
    }

    #[test]
    fn regions_bind_at_most_eight_buffers() {
        let graph = fused("fused: element-wise chain of nine inputs");
        assert!(graph.nodes.len() <= 3, "{} kernels for 20 nodes", graph.nodes.len());
        assert!(graph.nodes.iter().all(|n| n.inputs.len() + 2 <= MAX_BINDINGS));
    }

    #[test]
    fn a_graph_output_is_never_fused_away() {
        let with_output = |value| count(&fused_with("fused: GroupNorm, affine, SiLU", &[value]));
        // The variance: no group norm; its affine and SiLU still fuse.
        assert_eq!(with_output("n_var").0, 0);
        // The sigmoid: the group norm takes its affine only.
        assert_eq!(with_output("y_sigmoid"), (1, 3));
    }

    #[test]
    fn an_element_wise_node_short_of_inputs_is_refused() {
        let neg = parity::kernels().into_iter().find(|c| c.name == "Neg").expect("the case");
        let mut g = parity::onnx::Graph::default();
        g.node("Add", &["x"], "y");
        let onnx = g.encode(&[("x", vec![Some(5), Some(67)])], &[("y", Vec::new())]);
        let error = Graph::parse(&onnx, &neg.spec).expect_err("Add of one input");
        assert!(matches!(error, WebGpuError::Node { .. }), "{error:?}");
        let error = error.to_string();
        assert!(error.contains("needs 2 inputs"), "{error}");
    }

    #[test]
    fn the_shipped_models_run_fewer_kernels() {
        let bundle =
            BundleDir::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist"))
                .unwrap();
        let gpu =
            WebGpu::new().expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
        for case in parity::models(&bundle) {
            // Two rows: one guided evaluation of one image for the denoiser.
            let mut fused = gpu.session(&case.onnx, &case.spec).unwrap();
            let after = fused.plan(2).unwrap().dispatches().len();
            let mut plain = gpu.upload(Graph::parse(&case.onnx, &case.spec).unwrap()).unwrap();
            let before = plain.plan(2).unwrap().dispatches().len();
            let norms = count(&fused.graph).0;
            println!(
                "{}: {before} dispatches per call unfused, {after} fused ({norms} group norms)",
                case.name
            );
            match case.name.as_str() {
                "denoiser.onnx" => assert!(
                    norms == 27 && after * 2 < before,
                    "{norms} group norms, {after} of {before}"
                ),
                "classifier.onnx" | "reid_embed.onnx" => assert!(
                    norms == 7 && after * 2 < before,
                    "{norms} group norms, {after} of {before}"
                ),
                _ => assert!(after < before),
            }
        }
        let kernels = gpu.gpu.kernels();
        println!("{kernels} distinct kernels");
        assert!(kernels <= 40, "{kernels} kernels");
    }
}
