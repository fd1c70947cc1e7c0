//! Where tract's time goes: one ONNX graph, planned for one batch size, run repeatedly, with
//! the time of every operator summed by operator kind (or by node with `--nodes`).
//!
//! ```text
//! cargo run --release -p unpersonal-runtime --example tract_profile -- \
//!     models/fashion-mnist/denoiser.onnx 8 [REPEATS] [--nodes] [--dump]
//! ```
//!
//! Every input's symbolic axes are set to the batch size and filled with 0.3. tract's knobs
//! apply as usual (e.g. `TRACT_LAZY_IM2COL_MIN_KERNEL`).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};
use tract_onnx::tract_hir::infer::Factoid;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tract_profile MODEL.onnx BATCH [REPEATS] [--nodes] [--dump]";
    let path = args.get(1).context(usage)?;
    let batch: usize = args.get(2).context(usage)?.parse()?;
    let repeats: usize = match args.get(3).filter(|a| !a.starts_with("--")) {
        Some(n) => n.parse()?,
        None => 10,
    };
    let flag = |name: &str| args.iter().any(|a| a == name);

    let start = Instant::now();
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let mut shapes = Vec::new();
    for i in 0..model.input_outlets()?.len() {
        let shape: Vec<usize> = model
            .input_fact(i)?
            .shape
            .dims()
            .map(|d| d.concretize().and_then(|d| d.to_i64().ok()).map_or(batch, |d| d as usize))
            .collect();
        model = model.with_input_fact(i, f32::fact(&shape).into())?;
        shapes.push(shape);
    }
    let parsed = Instant::now();
    let typed = model.into_optimized()?;
    eprintln!("parsed in {:?}, optimised in {:?}", parsed - start, parsed.elapsed());
    if flag("--dump") {
        for id in typed.eval_order()? {
            let node = typed.node(id);
            eprintln!("{} {} {:?}", node.op().name(), node.name, typed.node_output_facts(id)?);
        }
    }
    let plan = typed.into_runnable()?;
    let inputs: TVec<TValue> = shapes
        .iter()
        .map(|s| Tensor::from(tract_ndarray::ArrayD::<f32>::from_elem(s.clone(), 0.3)).into())
        .collect();
    let mut state = SimpleState::new(&plan)?;
    state.run(inputs.clone())?; // warm-up

    let by_node = flag("--nodes");
    let mut times: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let start = Instant::now();
    for _ in 0..repeats {
        state.run_plan_with_eval(inputs.clone(), |ctx, op_state, node, input| {
            let t = Instant::now();
            let result = eval(ctx, op_state, node, input);
            let key = if by_node {
                format!("{} {}", node.op().name(), node.name)
            } else {
                node.op().name().to_string()
            };
            let entry = times.entry(key).or_default();
            entry.0 += t.elapsed().as_secs_f64();
            entry.1 += 1;
            result
        })?;
    }
    let per_call = start.elapsed().as_secs_f64() / repeats as f64;
    let mut rows: Vec<_> = times.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "batch {batch}: {:.2} ms per call, {:.1} rows/s",
        per_call * 1e3,
        batch as f64 / per_call
    );
    for (name, (seconds, count)) in rows {
        let ms = seconds * 1e3 / repeats as f64;
        let share = 100.0 * seconds / repeats as f64 / per_call;
        println!("{ms:>9.3} ms {share:>5.1} % {:>4}× {name}", count / repeats);
    }
    Ok(())
}
