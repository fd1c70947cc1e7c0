//! The bounds of every number that sets how much work a run does or how the privacy gate
//! decides, shared by `bundle.json`'s validation and the command-line flags that override it:
//! a value outside them is refused, naming the field or flag and the bound, before any work.

use std::ops::RangeInclusive;

/// Solver steps (`sampler.steps`, `--steps`): 1000 DPM-Solver++ steps are already far past
/// any gain in quality.
pub const STEPS: RangeInclusive<usize> = 1..=1000;
/// Candidates per reference image and round (`sampler.candidates_per_image`, `--candidates`).
pub const CANDIDATES: RangeInclusive<usize> = 1..=1024;
/// Rounds per reference image (`sampler.max_rounds`, `--rounds`).
pub const ROUNDS: RangeInclusive<usize> = 1..=100;
/// Nearest references compared besides the source (`reid.neighbours`, `--neighbours`): at
/// least one, or the check against other people is off.
pub const NEIGHBOURS: RangeInclusive<usize> = 1..=1024;
/// Guidance weight w of the first round (`sampler.guidance`, `--guidance`): 0 is the
/// unconditional model, 1 the conditional one; beyond 20 samples saturate into noise.
pub const GUIDANCE: RangeInclusive<f32> = 0.0..=20.0;
/// Drop of w per round (`sampler.guidance_decrement`).
pub const GUIDANCE_DECREMENT: RangeInclusive<f32> = 0.0..=20.0;
/// Largest noise level (`sampler.sigma_max`).
pub const SIGMA_MAX: f64 = 1e4;
/// Largest schedule exponent (`sampler.rho`).
pub const RHO_MAX: f64 = 100.0;
/// Reference images per batch of model calls (`--batch`).
pub const BATCH: RangeInclusive<usize> = 1..=4096;
/// Parallel workers (`--jobs`).
pub const JOBS: RangeInclusive<usize> = 1..=256;
/// Threads per worker (`--threads`, 0: automatic).
pub const THREADS: RangeInclusive<usize> = 0..=1024;

/// `None` when `[lo, hi]` is a usable guidance interval (`0 ≤ lo < hi`, both finite), else
/// what is wrong.
pub fn interval_problem([lo, hi]: [f64; 2]) -> Option<String> {
    (!(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi))
        .then(|| format!("must be [lo, hi] with 0 ≤ lo < hi, is [{lo}, {hi}]"))
}

/// `None` when `value` lies in `range`, else what is wrong, naming the bound.
pub fn count_problem(value: usize, range: &RangeInclusive<usize>) -> Option<String> {
    (!range.contains(&value)).then(|| {
        format!(
            "must be between {} and {} (this tool's limit), is {value}",
            range.start(),
            range.end()
        )
    })
}

/// `None` when `value` is finite and lies in `range`, else what is wrong, naming the bound.
pub fn weight_problem(value: f32, range: &RangeInclusive<f32>) -> Option<String> {
    (!(value.is_finite() && range.contains(&value))).then(|| {
        format!(
            "must be a number between {} and {} (this tool's limit), is {value}",
            range.start(),
            range.end()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_bound_and_the_value() {
        assert_eq!(count_problem(1000, &STEPS), None);
        let p = count_problem(100_000_000, &STEPS).unwrap();
        assert!(p.contains("between 1 and 1000") && p.contains("100000000"), "{p}");
        assert!(count_problem(0, &NEIGHBOURS).unwrap().contains("between 1 and 1024"));
        assert_eq!(weight_problem(1.7, &GUIDANCE), None);
        for bad in [-1e30, f32::NAN, f32::INFINITY, 20.5] {
            let p = weight_problem(bad, &GUIDANCE).unwrap();
            assert!(p.contains("between 0 and 20"), "{p}");
        }
    }
}
