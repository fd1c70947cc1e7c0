//! The statistics of `unpersonal audit`: how close a released synthetic set lies to the
//! training records, how well it covers them, and what an attacker could learn, each compared
//! with records the model never saw. Pure functions of feature rows (`f32`, one row per record,
//! as [`ndarray`] views); no I/O.
//!
//! - [`intervals`]: Wilson and percentile-bootstrap intervals, percentiles, the normal CDF.
//! - [`dcr`]: distance to closest record, the DCR ratio and a one-sided Mann–Whitney test.
//! - [`manifold`]: k-NN precision and recall (Kynkäänniemi et al. 2019).
//! - [`memorisation`]: near copies of training records (Carlini et al. 2023).
//! - [`singling_out`]: predicate singling-out risk (Anonymeter, Giomi et al. 2023).
//! - [`frechet`]: the Fréchet distance between two feature sets.
//! - [`pca`]: principal components (the singling-out attack's feature space).
//! - [`auroc`]: mean AUROC of multi-label classifiers and a paired bootstrap of its difference.

pub mod auroc;
pub mod dcr;
pub mod frechet;
pub mod intervals;
pub mod manifold;
pub mod membership;
pub mod memorisation;
pub mod pca;
pub mod singling_out;

pub use auroc::{auroc, bootstrap_auroc_difference, mean_auroc};
pub use dcr::{
    Dcr, MannWhitney, closest_record_distances, dcr, dcr_of_distances, mann_whitney_less,
};
pub use frechet::{Frechet, frechet, frechet_distance};
pub use intervals::{
    Interval, Pairing, bootstrap_accuracy_difference, normal_cdf, percentile, wilson,
};
pub use manifold::{PrecisionRecall, precision_recall};
pub use memorisation::{Memorisation, MemorisationRow, memorisation};
pub use pca::Pca;
pub use singling_out::{Mode, Rate, SinglingOut, SinglingOutConfig, singling_out};

/// `n × d` rows of `shift + scale · N(0, 1)` noise from a seeded generator, for the tests.
#[cfg(test)]
pub(crate) fn gaussian(
    n: usize,
    d: usize,
    shift: f32,
    scale: f32,
    seed: u64,
) -> ndarray::Array2<f32> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    ndarray::Array2::from_shape_fn((n, d), |_| {
        let z: f32 = StandardNormal.sample(&mut rng);
        shift + scale * z
    })
}
