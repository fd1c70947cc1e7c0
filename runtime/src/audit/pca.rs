//! Principal components: the few dimensions of classifier features the singling-out attack
//! works on (its predicates need a handful of columns, not a 96-wide embedding).

use nalgebra::{DMatrix, SymmetricEigen};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// A projection onto the leading principal components of a fitted set.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    mean: Array1<f32>,
    /// `[d, k]`: the components, one per column, by decreasing variance.
    components: Array2<f32>,
    /// The variance each component explains.
    pub variances: Vec<f64>,
}

impl Pca {
    /// Fits the `k` leading components of the rows of `x` (`k` capped at the width). Each
    /// component's sign is fixed so that its largest loading is positive (deterministic).
    pub fn fit(x: ArrayView2<f32>, k: usize) -> Pca {
        let (n, d) = x.dim();
        assert!(n >= 2 && d >= 1, "PCA needs at least two rows");
        let mean = x.mapv(f64::from).mean_axis(Axis(0)).expect("at least one row");
        let centred = DMatrix::from_fn(n, d, |i, j| f64::from(x[[i, j]]) - mean[j]);
        let eigen = SymmetricEigen::new(centred.transpose() * &centred / (n - 1) as f64);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let k = k.min(d);
        let mut components = Array2::<f32>::zeros((d, k));
        for (c, &e) in order.iter().take(k).enumerate() {
            let v = eigen.eigenvectors.column(e);
            let largest =
                v.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap_or(1.0);
            let sign = if largest < 0.0 { -1.0 } else { 1.0 };
            for j in 0..d {
                components[[j, c]] = (sign * v[j]) as f32;
            }
        }
        let variances = order.iter().take(k).map(|&e| eigen.eigenvalues[e].max(0.0)).collect();
        Pca { mean: mean.mapv(|m| m as f32), components, variances }
    }

    /// The rows of `x` in component coordinates, `[n, k]`.
    pub fn project(&self, x: ArrayView2<f32>) -> Array2<f32> {
        (&x - &self.mean.view().insert_axis(Axis(0))).dot(&self.components)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;

    #[test]
    fn recovers_the_axis_of_largest_variance() {
        // Column 2 varies 10× more than the others: the first component is ±e₂.
        let mut x = gaussian(2000, 4, 0.0, 1.0, 3);
        x.column_mut(2).mapv_inplace(|v| 10.0 * v + 5.0);
        let pca = Pca::fit(x.view(), 2);
        assert!(pca.components[[2, 0]] > 0.999, "{:?}", pca.components);
        assert!(
            (pca.variances[0] / 100.0 - 1.0).abs() < 0.1 && pca.variances[1] < 1.3,
            "{:?}",
            pca.variances
        );
        let projected = pca.project(x.view());
        assert_eq!(projected.dim(), (2000, 2));
        let mean = projected.mean_axis(Axis(0)).unwrap();
        assert!(mean.iter().all(|m| m.abs() < 1e-3), "{mean:?}");
    }
}
