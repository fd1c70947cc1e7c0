//! The Fréchet distance between Gaussians fitted to two feature sets (FID when the features
//! come from an Inception network), with the numerics of the trainer's `metrics` module:
//! moments in `f64`, `tr((Σ_a^{½} Σ_b Σ_a^{½})^{½})` from symmetric eigen-decompositions.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use ndarray::{ArrayView2, Axis};
use serde::Serialize;

/// The Fréchet distance and its two terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Frechet {
    /// `‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2(Σ_a^{½} Σ_b Σ_a^{½})^{½})`.
    pub distance: f64,
    /// The mean term `‖μ_a − μ_b‖²`.
    pub mean_term: f64,
    /// The covariance term (the rest).
    pub covariance_term: f64,
}

/// Mean and covariance (divided by n − 1) of the rows of `x`.
fn moments(x: ArrayView2<f32>) -> (DVector<f64>, DMatrix<f64>) {
    let (n, d) = x.dim();
    let mean = x.mapv(f64::from).mean_axis(Axis(0)).expect("at least one row");
    let centred = DMatrix::from_fn(n, d, |i, j| f64::from(x[[i, j]]) - mean[j]);
    let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
    (DVector::from_iterator(d, mean.iter().copied()), cov)
}

/// Square root of a symmetric positive semi-definite matrix (negative eigenvalues, which
/// only rounding makes, count as zero).
fn sqrt_psd(m: DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(m);
    let roots = eigen.eigenvalues.map(|v| v.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians fitted to the rows of `a` and of `b` (same width).
pub fn frechet(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Frechet {
    assert_eq!(a.ncols(), b.ncols(), "feature sets of different widths");
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    let root_a = sqrt_psd(cov_a.clone());
    let middle = &root_a * &cov_b * &root_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let cross: f64 =
        SymmetricEigen::new(middle).eigenvalues.iter().map(|v| v.max(0.0).sqrt()).sum();
    let mean_term = (mu_a - mu_b).norm_squared();
    let covariance_term = cov_a.trace() + cov_b.trace() - 2.0 * cross;
    Frechet { distance: mean_term + covariance_term, mean_term, covariance_term }
}

/// [`frechet`]'s distance alone.
pub fn frechet_distance(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    frechet(a, b).distance
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;
    use ndarray::{Array1, array};

    #[test]
    fn identical_sets_are_at_distance_zero() {
        let x = gaussian(500, 6, 0.0, 1.0, 1);
        let f = frechet(x.view(), x.view());
        assert!(f.distance.abs() < 1e-9, "{f:?}");
        assert_eq!(f.mean_term, 0.0);
    }

    #[test]
    fn a_shift_adds_its_squared_norm() {
        // Same rows shifted by s: equal covariances, so the distance is ‖s‖² = 1 + 4 + 0.25.
        let x = gaussian(500, 3, 0.0, 1.0, 2);
        let shift = Array1::from(vec![1.0f32, -2.0, 0.5]);
        let f = frechet(x.view(), (&x + &shift).view());
        assert!((f.distance - 5.25).abs() < 1e-4, "{f:?}");
        assert!(f.covariance_term.abs() < 1e-4, "{f:?}");
    }

    #[test]
    fn closed_form_for_small_sets() {
        // a = rows (±1, 0): Σ_a = diag(2, 0). b = rows ±(2, 1): Σ_b = ((8, 4), (4, 2)).
        // Σ_a^{½} Σ_b Σ_a^{½} = diag(16, 0), so the distance is 2 + 10 − 2·4 = 4.
        let a = array![[1.0f32, 0.0], [-1.0, 0.0]];
        let b = array![[2.0f32, 1.0], [-2.0, -1.0]];
        let f = frechet(a.view(), b.view());
        assert!((f.covariance_term - 4.0).abs() < 1e-9, "{f:?}");
        assert!(f.mean_term.abs() < 1e-12);
        // Scaling a set by 2: ‖μ − 2μ‖² + tr(Σ + 4Σ − 2·(2Σ)) = ‖μ‖² + tr Σ.
        let x = gaussian(2000, 4, 0.0, 1.0, 3);
        let scaled = frechet(x.view(), x.mapv(|v| 2.0 * v).view());
        let (mu, cov) = moments(x.view());
        let expected = mu.norm_squared() + cov.trace();
        assert!((scaled.distance - expected).abs() < 1e-6, "{scaled:?} vs {expected}");
        assert_eq!(frechet_distance(x.view(), x.mapv(|v| 2.0 * v).view()), scaled.distance);
    }
}
