//! Singling-out risk by predicates, after Anonymeter (Giomi et al., PETS 2023; reference code
//! `statice/anonymeter`, `evaluators/singling_out_evaluator.py` and `stats/confidence.py`).
//!
//! The attacker sees only the released records and writes predicates that isolate exactly one
//! of them. A predicate that also isolates exactly one training record singles that person out.
//! Predicates isolate records of any set by chance, so the same predicates are tried on a
//! control set (records of the same population the model never saw, as many as the training
//! set): the risk is the attack's success in excess of the control's,
//! `(attack − control) / (1 − control)`. A naive attacker's success (random predicates) is
//! reported as a baseline the real attack should beat.
//!
//! Records are rows of a few numeric columns (e.g. classifier features reduced to a few
//! dimensions, possibly quantised); equality predicates only make sense for quantised columns.

use std::collections::HashSet;

use ndarray::{ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::intervals::{Interval, wilson};

/// How predicates are built from released records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One column: `col ≤ min`, `col ≥ max` and `col == v` for values held by a single record.
    Univariate,
    /// Conjunctions over [`SinglingOutConfig::columns`] random columns of a released record
    /// `r`: `col ≥ r[col]` where `r[col]` is above the column's median, else `col ≤ r[col]`.
    Multivariate,
}

/// Parameters of [`singling_out`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinglingOutConfig {
    /// How attack predicates are built.
    pub mode: Mode,
    /// Columns per multivariate predicate (capped at the number of columns).
    pub columns: usize,
    /// The most attack predicates to build.
    pub n_attacks: usize,
    /// The most candidate predicates to try in multivariate mode.
    pub max_attempts: usize,
    /// Normal quantile of the confidence intervals (1.96 for 95 %).
    pub z: f64,
    /// Seed of the ChaCha8 generator behind every random choice.
    pub seed: u64,
}

impl Default for SinglingOutConfig {
    /// Anonymeter's defaults (500 attacks, 3 columns, 95 %), with at most 100 000 attempts.
    fn default() -> Self {
        SinglingOutConfig {
            mode: Mode::Multivariate,
            columns: 3,
            n_attacks: 500,
            max_attempts: 100_000,
            z: 1.96,
            seed: 0,
        }
    }
}

/// A success rate as Anonymeter reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Predicates that succeeded.
    pub successes: usize,
    /// Predicates tried.
    pub trials: usize,
    /// The centre of the Wilson interval, `(k + z²/2) / (n + z²)` (Anonymeter's estimate;
    /// `successes / trials` is the plain share).
    pub value: f64,
    /// Half the Wilson interval's width.
    pub error: f64,
    /// The Wilson interval, `value ± error`.
    pub ci: Interval,
}

impl Rate {
    /// The rate of `successes` out of `trials` at normal quantile `z`.
    pub fn new(successes: usize, trials: usize, z: f64) -> Rate {
        let ci = wilson(successes, trials, z);
        Rate {
            successes,
            trials,
            value: 0.5 * (ci.lower + ci.upper),
            error: 0.5 * (ci.upper - ci.lower),
            ci,
        }
    }
}

/// The result of [`singling_out`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinglingOut {
    /// How the attack predicates were built.
    pub mode: Mode,
    /// Attack predicates built (each isolates one released record); the trials of every rate.
    pub n_predicates: usize,
    /// Share of attack predicates isolating exactly one training record.
    pub attack: Rate,
    /// Share of attack predicates isolating exactly one control record.
    pub control: Rate,
    /// Share of random predicates isolating exactly one training record.
    pub baseline: Rate,
    /// `(attack − control) / (1 − control)` with its propagated error, clipped to [0, 1].
    pub risk: Interval,
}

/// A condition on one column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Le,
    Ge,
    Eq,
}

/// A conjunction of conditions `(column, op, value)`, sorted by column.
#[derive(Debug, Clone, PartialEq)]
struct Predicate(Vec<(usize, Op, f32)>);

impl Predicate {
    fn matches(&self, row: ArrayView1<f32>) -> bool {
        self.0.iter().all(|&(c, op, v)| match op {
            Op::Le => row[c] <= v,
            Op::Ge => row[c] >= v,
            Op::Eq => row[c] == v,
        })
    }

    /// Whether exactly one row of `data` matches.
    fn isolates(&self, data: ArrayView2<f32>) -> bool {
        data.rows().into_iter().filter(|r| self.matches(r.view())).take(2).count() == 1
    }

    fn key(&self) -> Vec<(usize, u8, u32)> {
        self.0.iter().map(|&(c, op, v)| (c, op as u8, v.to_bits())).collect()
    }
}

/// Keeps distinct predicates that isolate one released record, up to `n`.
#[derive(Default)]
struct Unique {
    seen: HashSet<Vec<(usize, u8, u32)>>,
    kept: Vec<Predicate>,
}

impl Unique {
    fn offer(&mut self, p: Predicate, released: ArrayView2<f32>) {
        if p.isolates(released) && self.seen.insert(p.key()) {
            self.kept.push(p);
        }
    }
}

/// Anonymeter's univariate predicates: per column the two tails and every value held by a
/// single record, shuffled, kept if they isolate one released record.
fn univariate_predicates(
    released: ArrayView2<f32>,
    n: usize,
    rng: &mut impl Rng,
) -> Vec<Predicate> {
    let mut candidates = Vec::new();
    for (c, column) in released.axis_iter(Axis(1)).enumerate() {
        let mut values = column.to_vec();
        values.sort_by(f32::total_cmp);
        candidates.push(Predicate(vec![(c, Op::Le, values[0])]));
        candidates.push(Predicate(vec![(c, Op::Ge, values[values.len() - 1])]));
        for (i, &v) in values.iter().enumerate() {
            let unique =
                (i == 0 || values[i - 1] != v) && (i + 1 == values.len() || values[i + 1] != v);
            if unique {
                candidates.push(Predicate(vec![(c, Op::Eq, v)]));
            }
        }
    }
    candidates.shuffle(rng);
    let mut unique = Unique::default();
    for p in candidates {
        if unique.kept.len() == n {
            break;
        }
        unique.offer(p, released);
    }
    unique.kept
}

/// Median of each column (mean of the two middle values for an even count).
fn medians(x: ArrayView2<f32>) -> Vec<f32> {
    x.axis_iter(Axis(1))
        .map(|column| {
            let mut v = column.to_vec();
            v.sort_by(f32::total_cmp);
            let m = v.len() / 2;
            if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) }
        })
        .collect()
}

/// Anonymeter's multivariate predicates: a random released record, `columns` random columns,
/// each bounded by the record's value towards the column's nearer tail.
fn multivariate_predicates(
    released: ArrayView2<f32>,
    n: usize,
    columns: usize,
    max_attempts: usize,
    rng: &mut impl Rng,
) -> Vec<Predicate> {
    let medians = medians(released);
    let columns = columns.min(released.ncols());
    let mut unique = Unique::default();
    for _ in 0..max_attempts {
        if unique.kept.len() == n {
            break;
        }
        let record = released.row(rng.random_range(0..released.nrows()));
        let mut chosen = rand::seq::index::sample(rng, released.ncols(), columns).into_vec();
        chosen.sort_unstable();
        let conditions = chosen
            .into_iter()
            .map(|c| (c, if record[c] > medians[c] { Op::Ge } else { Op::Le }, record[c]))
            .collect();
        unique.offer(Predicate(conditions), released);
    }
    unique.kept
}

/// The naive attacker's predicates: `columns` random columns, each bounded (≤ or ≥ at random)
/// by a value drawn uniformly from the column's released range.
fn random_predicates(
    released: ArrayView2<f32>,
    n: usize,
    columns: usize,
    rng: &mut impl Rng,
) -> Vec<Predicate> {
    let ranges: Vec<(f32, f32)> = released
        .axis_iter(Axis(1))
        .map(|c| {
            c.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
        })
        .collect();
    let columns = columns.min(released.ncols());
    (0..n)
        .map(|_| {
            let mut chosen = rand::seq::index::sample(rng, released.ncols(), columns).into_vec();
            chosen.sort_unstable();
            Predicate(
                chosen
                    .into_iter()
                    .map(|c| {
                        let (lo, hi) = ranges[c];
                        let value = if hi > lo { rng.random_range(lo..=hi) } else { lo };
                        (c, if rng.random::<bool>() { Op::Le } else { Op::Ge }, value)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The residual risk `(attack − control) / (1 − control)` of Anonymeter's `residual_success`,
/// with the rates' errors propagated to first order, clipped to [0, 1] as its `bind_value`.
pub fn residual_risk(attack: &Rate, control: &Rate) -> Interval {
    let residual = (attack.value - control.value) / (1.0 - control.value);
    let d_attack = 1.0 / (1.0 - control.value).abs();
    let d_control = (attack.value - 1.0) / (1.0 - control.value).powi(2);
    let error = ((attack.error * d_attack).powi(2) + (control.error * d_control).powi(2)).sqrt();
    let clip = |v: f64| v.clamp(0.0, 1.0);
    Interval {
        estimate: clip(residual),
        lower: clip(residual - error),
        upper: clip(residual + error),
    }
}

/// The singling-out risk of releasing `released`, for the records of `train` the model was
/// trained on, against `control` records it never saw (as many as `train`; rows of the same
/// numeric columns, all finite). Deterministic for a given `config.seed`.
pub fn singling_out(
    released: ArrayView2<f32>,
    train: ArrayView2<f32>,
    control: ArrayView2<f32>,
    config: &SinglingOutConfig,
) -> SinglingOut {
    assert!(released.nrows() > 0 && released.ncols() > 0, "no released records");
    assert!(
        released.ncols() == train.ncols() && train.ncols() == control.ncols(),
        "record sets with different columns"
    );
    assert_eq!(
        control.nrows(),
        train.nrows(),
        "the control set must be as large as the training set (subsample the larger)"
    );
    assert!(
        [released, train, control].iter().all(|x| x.iter().all(|v| v.is_finite())),
        "records must be finite"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    let (predicates, columns) = match config.mode {
        Mode::Univariate => (univariate_predicates(released, config.n_attacks, &mut rng), 1),
        Mode::Multivariate => (
            multivariate_predicates(
                released,
                config.n_attacks,
                config.columns,
                config.max_attempts,
                &mut rng,
            ),
            config.columns,
        ),
    };
    let n = predicates.len();
    let successes =
        |data: ArrayView2<f32>, ps: &[Predicate]| ps.iter().filter(|p| p.isolates(data)).count();
    let baseline = random_predicates(released, n, columns, &mut rng);
    let attack = Rate::new(successes(train, &predicates), n, config.z);
    let control = Rate::new(successes(control, &predicates), n, config.z);
    SinglingOut {
        mode: config.mode,
        n_predicates: n,
        risk: residual_risk(&attack, &control),
        attack,
        control,
        baseline: Rate::new(successes(train, &baseline), n, config.z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::gaussian;
    use ndarray::array;

    fn config(mode: Mode) -> SinglingOutConfig {
        SinglingOutConfig { mode, max_attempts: 20_000, seed: 5, ..SinglingOutConfig::default() }
    }

    #[test]
    fn rates_and_risk_follow_anonymeter() {
        // Values from Anonymeter's formulas: 80/100 → 0.788902 ± 0.077733, 20/100 → 0.211098.
        let attack = Rate::new(80, 100, 1.96);
        let control = Rate::new(20, 100, 1.96);
        assert!(
            (attack.value - 0.788_901_557_757).abs() < 1e-9
                && (attack.error - 0.077_732_519_684).abs() < 1e-9,
            "{attack:?}"
        );
        let risk = residual_risk(&attack, &control);
        assert!((risk.estimate - 0.732_414_722_512).abs() < 1e-9, "{risk:?}");
        assert!(
            (risk.lower - 0.630_415_546_012).abs() < 1e-9
                && (risk.upper - 0.834_413_899_013).abs() < 1e-9,
            "{risk:?}"
        );
        // Clipped: control above attack gives 0, a perfect attack an upper bound of 1.
        assert_eq!(residual_risk(&control, &attack).estimate, 0.0);
        assert_eq!(residual_risk(&Rate::new(100, 100, 1.96), &Rate::new(0, 100, 1.96)).upper, 1.0);
    }

    #[test]
    fn hand_built_univariate_case() {
        // Released 1, 2, 2, 5 gives `≤ 1`, `≥ 5`, `== 1`, `== 5` (2 is not unique).
        // Training 1, 5, 5, 7: `≤ 1` and `== 1` isolate; control 0, 3, 5, 8: `≤ 1` and `== 5`.
        let released = array![[1.0f32], [2.0], [2.0], [5.0]];
        let train = array![[1.0f32], [5.0], [5.0], [7.0]];
        let control = array![[0.0f32], [3.0], [5.0], [8.0]];
        let r =
            singling_out(released.view(), train.view(), control.view(), &config(Mode::Univariate));
        assert_eq!((r.n_predicates, r.attack.successes, r.control.successes), (4, 2, 2));
        assert_eq!(r.risk.estimate, 0.0);
        assert!(r.risk.upper > 0.3, "{r:?}");
    }

    #[test]
    fn predicates_isolate_one_released_record() {
        let released = gaussian(200, 5, 0.0, 1.0, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let uni = univariate_predicates(released.view(), 100, &mut rng);
        let multi = multivariate_predicates(released.view(), 100, 3, 20_000, &mut rng);
        assert_eq!((uni.len(), multi.len()), (100, 100));
        assert!(uni.iter().chain(&multi).all(|p| p.isolates(released.view())));
        assert!(multi.iter().all(|p| p.0.len() == 3 && p.0.windows(2).all(|w| w[0].0 < w[1].0)));
        let keys: HashSet<_> = multi.iter().map(Predicate::key).collect();
        assert_eq!(keys.len(), 100);
    }

    #[test]
    fn a_copy_of_the_training_set_is_singled_out() {
        let train = gaussian(400, 5, 0.0, 1.0, 1);
        let control = gaussian(400, 5, 0.0, 1.0, 2);
        for mode in [Mode::Univariate, Mode::Multivariate] {
            let r = singling_out(train.view(), train.view(), control.view(), &config(mode));
            assert!(r.n_predicates >= 300, "{r:?}");
            assert_eq!(r.attack.successes, r.n_predicates, "{r:?}");
            assert!(r.control.successes < r.n_predicates / 2, "{r:?}");
            assert!(r.risk.estimate > 0.8 && r.risk.lower > 0.7, "{mode:?}: {r:?}");
            assert!(r.baseline.value < r.attack.value, "{r:?}");
        }
    }

    #[test]
    fn a_fresh_sample_carries_no_excess_risk() {
        let train = gaussian(400, 5, 0.0, 1.0, 1);
        let control = gaussian(400, 5, 0.0, 1.0, 2);
        let released = gaussian(400, 5, 0.0, 1.0, 3);
        for mode in [Mode::Univariate, Mode::Multivariate] {
            let r = singling_out(released.view(), train.view(), control.view(), &config(mode));
            assert!(r.n_predicates >= 300, "{r:?}");
            assert!(r.risk.contains(0.0) && r.risk.estimate < 0.1, "{mode:?}: {r:?}");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (train, control, released) = (
            gaussian(300, 4, 0.0, 1.0, 1),
            gaussian(300, 4, 0.0, 1.0, 2),
            gaussian(300, 4, 0.0, 1.0, 3),
        );
        let run = |seed| {
            singling_out(
                released.view(),
                train.view(),
                control.view(),
                &SinglingOutConfig { seed, ..config(Mode::Multivariate) },
            )
        };
        assert_eq!(run(7), run(7));
        let (a, b) = (run(7), run(8));
        assert!(a.baseline != b.baseline || a.attack != b.attack || a.control != b.control);
    }
}
