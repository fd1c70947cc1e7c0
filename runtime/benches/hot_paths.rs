//! Criterion benchmarks of generation's hot paths on the shipped bundle (tract, one core):
//! one guided denoiser evaluation and one step of each solver for a batch of candidates, and
//! the gate's exact nearest-neighbour search over reference embeddings.
//!
//! `cargo bench -p unpersonal-runtime --bench hot_paths`

use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use unpersonal_runtime::backend::{Model, Tract};
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::neighbours::nearest;
use unpersonal_runtime::sampler::{self, Denoiser, Guidance, Solver, noise_batch};

/// Candidates per batch: a reference image's 4 candidates for 4 reference images.
const BATCH: usize = 16;

fn shipped() -> BundleDir {
    BundleDir::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist"))
        .expect("the shipped bundle verifies")
}

fn normal(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.sample(StandardNormal))
}

fn sampler_step(c: &mut Criterion) {
    let bundle = shipped();
    let load = |role| {
        Model::load(
            &Tract::default(),
            bundle.bundle.model(role).unwrap(),
            bundle.onnx(role).unwrap(),
        )
        .unwrap()
    };
    let mut denoiser = Denoiser::new(load(Role::Denoiser), None).unwrap();
    let noise = noise_batch(0, &(0..BATCH as u64).collect::<Vec<_>>(), denoiser.image_shape());
    let condition = normal(BATCH, denoiser.condition_size(), 1);
    let mut group = c.benchmark_group("sampler");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("guided_evaluation", BATCH), |b| {
        b.iter(|| denoiser.denoise(noise.view(), 1.0, condition.view(), 1.4).unwrap());
    });
    // Two steps, σ 1 → 0.6 → 0 (Heun: 3 guided evaluations, DPM-Solver++(2M): 2), with the
    // solvers' arithmetic around the calls.
    let sigmas = [1.0, 0.6, 0.0];
    for solver in [Solver::Heun, Solver::DpmPp2M] {
        group.bench_function(BenchmarkId::new(format!("{solver}_two_steps"), BATCH), |b| {
            b.iter(|| {
                sampler::sample(
                    &mut denoiser,
                    &sigmas,
                    solver,
                    Guidance::everywhere(1.4),
                    condition.view(),
                    noise.view(),
                )
                .unwrap()
            });
        });
    }
    group.finish();
}

fn gate_search(c: &mut Criterion) {
    let bundle = shipped();
    let embedding =
        bundle.bundle.model(Role::ReidEmbed).unwrap().output("embedding").unwrap().concrete(1)[1];
    let queries = normal(256, embedding, 2);
    let mut group = c.benchmark_group("gate_nearest_8");
    group.sample_size(10);
    for references in [10_000, 100_000] {
        let reference = normal(references, embedding, 3);
        group.bench_function(BenchmarkId::new("256_queries", references), |b| {
            b.iter(|| nearest(queries.view(), reference.view(), 8))
        });
    }
    group.finish();
}

criterion_group!(benches, sampler_step, gate_search);
criterion_main!(benches);
