//! Parameter initialisers, seeded per parameter so that values do not depend on the order in
//! which a network creates its parameters.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use sha2::{Digest, Sha256};

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros (biases, the last layer of a residual branch).
    Zeros,
    /// All ones (normalisation gains).
    Ones,
    /// He/Kaiming normal: N(0, gain²/fan_in).
    Kaiming {
        /// Number of inputs feeding one output unit.
        fan_in: usize,
        /// Gain: √2 for ReLU-like activations, 1 for linear outputs.
        gain: f32,
    },
    /// N(0, std²).
    Normal {
        /// Standard deviation.
        std: f32,
    },
}

impl Init {
    /// The initial values of a parameter called `name` with `len` elements, for run `seed`.
    pub fn values(&self, name: &str, len: usize, seed: u64) -> Vec<f32> {
        let std = match *self {
            Init::Zeros => return vec![0.0; len],
            Init::Ones => return vec![1.0; len],
            Init::Kaiming { fan_in, gain } => gain / (fan_in.max(1) as f32).sqrt(),
            Init::Normal { std } => std,
        };
        let mut rng = ChaCha8Rng::from_seed(param_seed(name, seed));
        (0..len)
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut rng);
                std * z
            })
            .collect()
    }
}

/// A 32-byte RNG seed derived from the run seed and the parameter's name.
fn param_seed(name: &str, seed: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_has_the_requested_spread_and_is_reproducible() {
        let init = Init::Kaiming { fan_in: 50, gain: 2f32.sqrt() };
        let a = init.values("conv.weight", 20_000, 7);
        assert_eq!(a, init.values("conv.weight", 20_000, 7));
        assert_ne!(a, init.values("conv.weight", 20_000, 8));
        assert_ne!(a, init.values("other.weight", 20_000, 7));
        let var = a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32;
        assert!((var - 2.0 / 50.0).abs() < 0.002, "variance {var}");
    }
}
