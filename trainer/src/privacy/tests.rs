//! Agreement with Opacus 1.6 (`opacus/accountants/analysis/rdp.py`, run on NumPy/SciPy) and
//! with a 60-digit mpmath evaluation of the same series. The literals come from the scratch
//! crate's `reference.py`; the contract asserted against Opacus is 1e-6 relative, against
//! mpmath 1e-9.

use super::*;

fn rel(a: f64, b: f64) -> f64 {
    if a == b { 0.0 } else { (a - b).abs() / a.abs().max(b.abs()) }
}

/// Contract: agreement with Opacus.
const OPACUS_TOL: f64 = 1e-6;
/// Accuracy: agreement with the 60-digit evaluation.
const MPMATH_TOL: f64 = 1e-9;

struct EpsCase {
    name: &'static str,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    /// Opacus's `get_privacy_spent(orders=DEFAULT_ALPHAS, rdp=compute_rdp(...), delta)`.
    opacus_eps: f64,
    opacus_order: f64,
    /// The same ε at that order in 60-digit arithmetic.
    mpmath_eps: f64,
}

const EPS_CASES: [EpsCase; 6] = [
    // Abadi et al. 2016's MNIST setting (lot 256 of 60 000, σ = 1.1, 60 epochs). Their moments
    // accountant gave ε ≈ 2.9 at these settings; Balle et al.'s conversion is tighter.
    EpsCase {
        name: "abadi_mnist",
        q: 256.0 / 60000.0,
        sigma: 1.1,
        steps: 14062,
        delta: 1e-5,
        opacus_eps: 2.5965558689607486,
        opacus_order: 8.1,
        mpmath_eps: 2.5965558689627697,
    },
    EpsCase {
        name: "q001_s1_t1000",
        q: 0.01,
        sigma: 1.0,
        steps: 1000,
        delta: 1e-5,
        opacus_eps: 2.1013652716430564,
        opacus_order: 7.8,
        mpmath_eps: 2.1013652716431968,
    },
    EpsCase {
        name: "full_batch_s5_t10",
        q: 1.0,
        sigma: 5.0,
        steps: 10,
        delta: 1e-5,
        opacus_eps: 2.8136532471298397,
        opacus_order: 7.9,
        mpmath_eps: 2.8136532471298397,
    },
    EpsCase {
        name: "q01_s07_t100",
        q: 0.1,
        sigma: 0.7,
        steps: 100,
        delta: 1e-5,
        opacus_eps: 16.419708820201084,
        opacus_order: 2.1,
        mpmath_eps: 16.419708820197886,
    },
    // The optimum is a fractional order close to 1, where only the erfc series applies.
    EpsCase {
        name: "frac_dominant",
        q: 0.2,
        sigma: 0.6,
        steps: 1000,
        delta: 1e-5,
        opacus_eps: 192.6337739323592,
        opacus_order: 1.2,
        mpmath_eps: 192.63377393227142,
    },
    // The optimum is the largest order (Opacus warns); RDP per step is ~1e-8.
    EpsCase {
        name: "tiny_q_big_sigma",
        q: 1e-4,
        sigma: 4.0,
        steps: 100000,
        delta: 1e-6,
        opacus_eps: 0.14203811270491393,
        opacus_order: 63.0,
        mpmath_eps: 0.14203811270378838,
    },
];

#[test]
fn epsilon_matches_opacus_and_mpmath() {
    for c in &EPS_CASES {
        let spent = privacy_spent(c.q, c.sigma, c.steps, c.delta).unwrap();
        assert_eq!(spent.order, c.opacus_order, "{}: order", c.name);
        let (to_opacus, to_mp) =
            (rel(spent.epsilon, c.opacus_eps), rel(spent.epsilon, c.mpmath_eps));
        assert!(to_opacus < OPACUS_TOL, "{}: {} vs Opacus {}", c.name, spent.epsilon, c.opacus_eps);
        assert!(to_mp < MPMATH_TOL, "{}: {} vs mpmath {}", c.name, spent.epsilon, c.mpmath_eps);
    }
}

/// `(q, σ, α, Opacus _compute_rdp, mpmath)`.
const RDP_CASES: [(f64, f64, f64, f64, f64); 13] = [
    (0.01, 1.0, 1.5, 0.00012725374351154145, 0.00012725374349716577),
    (0.01, 1.0, 2.0, 0.00017181342207453428, 0.00017181342207454794),
    (0.01, 1.0, 32.0, 11.246275937048072, 11.246275937048068),
    (0.1, 0.7, 1.1, 0.022889266284363947, 0.022889266284142697),
    (0.1, 0.7, 2.5, 0.1191441256386982, 0.1191441256387169),
    (0.1, 0.7, 7.3, 4.780932006561874, 4.780932006561872),
    (0.3, 2.0, 10.9, 0.30576931669859786, 0.30576931669859736),
    (0.3, 2.0, 63.0, 6.651608719384147, 6.651608719384147),
    (0.2, 0.6, 1.3, 0.16060237081122306, 0.16060237081120057),
    (0.5, 0.3, 1.7, 7.763843348905493, 7.763843348905452),
    (256.0 / 60000.0, 1.1, 4.6, 5.492960034348467e-05, 5.492960034411088e-05),
    (1e-4, 4.0, 40.0, 1.290212175073667e-08, 1.2902121739425644e-08),
    (0.999, 1.5, 3.3, 0.7324146031930429, 0.7324146031930434),
];

#[test]
fn one_step_rdp_matches_opacus_and_mpmath() {
    for (q, sigma, order, opacus, mp) in RDP_CASES {
        let got = rdp_sampled_gaussian(q, sigma, order).unwrap();
        assert!(
            rel(got, opacus) < OPACUS_TOL,
            "q={q} σ={sigma} α={order}: {got} vs Opacus {opacus}"
        );
        assert!(rel(got, mp) < MPMATH_TOL, "q={q} σ={sigma} α={order}: {got} vs mpmath {mp}");
    }
}

#[test]
fn phases_match_opacus_accountant() {
    // Opacus: RDPAccountant with history [(1.0, 0.01, 500), (1.3, 0.02, 300), (0.9, 0.01, 200)].
    let acc = Accountant::from_phases(&[
        Phase { sample_rate: 0.01, noise_multiplier: 1.0, steps: 500 },
        Phase { sample_rate: 0.02, noise_multiplier: 1.3, steps: 300 },
        Phase { sample_rate: 0.01, noise_multiplier: 0.9, steps: 200 },
    ])
    .unwrap();
    let spent = acc.privacy_spent(1e-5).unwrap();
    assert_eq!(spent.order, 6.7);
    assert!(rel(spent.epsilon, 2.4770080788808353) < OPACUS_TOL, "{}", spent.epsilon);
}

#[test]
fn noise_for_epsilon_matches_bisection_over_opacus() {
    // (target ε, δ, q, steps, σ from a 1e-12 bisection over Opacus's ε).
    let cases = [
        (3.0, 1e-5, 256.0 / 60000.0, 14062, 1.0139998821548684),
        (1.0, 1e-5, 0.01, 1000, 1.5131221626073854),
        (8.0, 1e-5, 0.1, 100, 0.9934277299978647),
    ];
    for (target, delta, q, steps, want) in cases {
        let sigma = noise_for_epsilon(target, delta, q, steps).unwrap();
        // The search's own tolerance is 1e-7; the arithmetic agrees to ~1e-12.
        assert!(rel(sigma, want) < 2e-7, "target {target}: σ = {sigma}, Opacus {want}");
        assert!(privacy_spent(q, sigma, steps, delta).unwrap().epsilon <= target);
    }
}

#[test]
fn steps_for_epsilon_matches_search_over_opacus() {
    // (target ε, δ, q, σ, largest T with Opacus's ε(T) ≤ target).
    let cases = [
        (2.0, 1e-5, 256.0 / 60000.0, 1.1, 8642),
        (1.0, 1e-5, 0.01, 1.0, 4),
        (5.0, 1e-5, 1.0, 5.0, 27),
    ];
    for (target, delta, q, sigma, want) in cases {
        assert_eq!(steps_for_epsilon(target, delta, q, sigma), Ok(want), "target {target}");
    }
}

#[test]
fn default_orders_stay_finite_and_epsilon_falls_with_noise() {
    // Over a grid of settings every order's RDP is finite and non-negative, and ε decreases
    // as σ grows: what noise_for_epsilon's bisection relies on.
    for q in [1e-5, 1e-3, 0.05, 0.5, 0.99] {
        let mut last = f64::INFINITY;
        for sigma in [0.4, 0.8, 1.6, 3.2, 12.8] {
            let rdp = rdp_sampled_gaussian_orders(q, sigma, &DEFAULT_ORDERS).unwrap();
            assert!(rdp.iter().all(|r| r.is_finite() && *r >= 0.0), "q={q} σ={sigma}: {rdp:?}");
            let eps = privacy_spent(q, sigma, 1000, 1e-5).unwrap().epsilon;
            assert!(eps <= last, "q={q}: ε not decreasing in σ at {sigma}");
            last = eps;
        }
    }
}
