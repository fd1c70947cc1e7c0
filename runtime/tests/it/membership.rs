//! The membership-inference audit against known answers: the shipped bundle's attacks learn
//! nothing about records no model saw (two halves of the Fashion-MNIST test split), and a
//! denoiser that memorised its training set gives its members away.

use std::path::Path;

use ndarray::{Array2, Array4, ArrayView4, Axis};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use unpersonal_runtime::audit::membership::{Attacks, Config, Scores, auc_interval_at, evaluate};
use unpersonal_runtime::backend::Tract;
use unpersonal_runtime::bundle::BundleDir;
use unpersonal_runtime::bundle::privacy::{NOT_AUDITED, Policy, Standing};
use unpersonal_runtime::data::{Dataset, Split};
use unpersonal_runtime::parity::onnx::{Graph, int};

use crate::cli::unpersonal;
use crate::common::{
    Body, C, D, H, W, bundle_json, denoiser_entry, features, features_entry, write_bundle,
};

/// Scores `rows` of `data` (pixels and labels) with `attacks`.
fn score(attacks: &mut Attacks, data: &Dataset, rows: &[usize]) -> Scores {
    let pixels = data.batch(rows);
    let labels: Vec<f32> = rows.iter().flat_map(|&i| data.label(i).iter().copied()).collect();
    let labels = Array2::from_shape_vec((rows.len(), data.num_labels), labels).unwrap();
    attacks.score(pixels.view(), labels.view(), &mut |_| {}).unwrap()
}

/// The shipped bundle's attacks on two disjoint sets of Fashion-MNIST test records (and a
/// third as the classifier's calibration reference): neither was trained on, so every attack
/// must be at chance. With 19 attacks judged together, 95 % intervals would miss 0.5 now and
/// then by chance alone (about 0.95 of them on average); the test asks every
/// Bonferroni-corrected interval (confidence 1 − 0.05/19) to contain 0.5, and at most 3 of the
/// plain 95 % intervals (the report's) to miss it.
#[test]
fn the_shipped_models_learn_nothing_about_records_they_never_saw() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bundle = BundleDir::load(&root.join("models/fashion-mnist")).unwrap();
    let data = Dataset::load(Path::new("/usr/share/datasets/fashion-mnist"), Split::Test)
        .expect("the Fashion-MNIST test split (scripts/setup.sh installs it)");
    let (n, r) = (300, 100);
    let mut attacks = Attacks::load(&bundle, &Tract::default(), Config::default()).unwrap();
    let fake_members = score(&mut attacks, &data, &(0..n).collect::<Vec<_>>());
    let non_members = score(&mut attacks, &data, &(n..2 * n).collect::<Vec<_>>());
    let reference = score(&mut attacks, &data, &(2 * n..2 * n + r).collect::<Vec<_>>());
    let report = evaluate(&fake_members, &non_members, Some(&reference), 1000, 0).unwrap();
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    let count: usize = report.models.iter().map(|m| m.attacks.len()).sum();
    assert_eq!(count, 2 * (6 + 1) + 2 + 2 + 1, "denoiser 16, classifier 2, re-id 1");
    let confidence = 1.0 - 0.05 / count as f64;
    let mut missed = Vec::new();
    for model in &report.models {
        for a in &model.attacks {
            let (m, q) = if a.attack == "calibrated_loss" {
                (
                    fake_members.calibrated_loss(&reference).unwrap(),
                    non_members.calibrated_loss(&reference).unwrap(),
                )
            } else {
                (
                    fake_members.get(&model.model, &a.attack).unwrap().to_vec(),
                    non_members.get(&model.model, &a.attack).unwrap().to_vec(),
                )
            };
            let wide = auc_interval_at(&m, &q, 1000, 0, confidence).unwrap();
            println!(
                "{} {}: AUC {:.3} 95 % {:?}, {confidence:.4}: [{:.3}, {:.3}]",
                model.model, a.attack, a.auc, a.auc_ci, wide.lower, wide.upper
            );
            assert_eq!(wide.estimate, a.auc);
            assert!(
                wide.contains(0.5),
                "{} {}: AUC {} with {confidence} interval {wide:?} on records neither side trained on",
                model.model,
                a.attack,
                a.auc
            );
            if !(a.auc_ci[0] <= 0.5 && 0.5 <= a.auc_ci[1]) {
                missed.push(format!("{} {}", model.model, a.attack));
            }
            assert!(a.roc.len() <= 200 && a.roc.len() >= 2);
        }
    }
    assert!(missed.len() <= 3, "95 % intervals without 0.5: {missed:?}");
}

/// A denoiser that memorised `members` (`[k, C·H·W]`, normalised): it pulls its input towards
/// the member nearest to it, `m = argmax_m (x·m − ‖m‖²/2)`, returning `m + (x − m)·σ/1000`.
/// A member is returned unchanged at every level (its own ODE trajectory never leaves it);
/// any other input moves with σ, so a round trip of DDIM steps does not come back to it.
fn nearest_member_denoiser(members: &Array2<f32>) -> Vec<u8> {
    let k = members.nrows();
    let pixels = (C * H * W) as i64;
    let mut g = Graph::default();
    g.f32("members", &[k as i64, pixels], members.as_slice().unwrap());
    g.f32("members_t", &[pixels, k as i64], members.t().as_standard_layout().as_slice().unwrap());
    let half_norms: Vec<f32> =
        members.outer_iter().map(|m| -0.5 * m.iter().map(|v| v * v).sum::<f32>()).collect();
    g.f32("bias", &[k as i64], &half_norms);
    g.i64("image_shape", &[-1, C as i64, H as i64, W as i64]);
    g.node_with("Flatten", &["x"], "flat", vec![int("axis", 1)]);
    g.node("MatMul", &["flat", "members_t"], "dots");
    g.node("Add", &["dots", "bias"], "closeness");
    g.node_with("ArgMax", &["closeness"], "nearest", vec![int("axis", 1), int("keepdims", 0)]);
    g.node_with("Gather", &["members", "nearest"], "picked", vec![int("axis", 0)]);
    g.node("Reshape", &["picked", "image_shape"], "nearest_image");
    g.f32("rate", &[1], &[0.001]);
    g.i64("row_shape", &[-1, 1, 1, 1]);
    g.node("Mul", &["sigma", "rate"], "pull");
    g.node("Reshape", &["pull", "row_shape"], "pull_rows");
    g.node("Sub", &["x", "nearest_image"], "offset");
    g.node("Mul", &["offset", "pull_rows"], "kept");
    g.node("Add", &["nearest_image", "kept"], "denoised");
    let image = vec![None, Some(C as i64), Some(H as i64), Some(W as i64)];
    g.encode(
        &[
            ("x", image.clone()),
            ("sigma", vec![None]),
            ("condition", vec![None, Some(D as i64)]),
            ("condition_mask", vec![None]),
        ],
        &[("denoised", image)],
    )
}

/// Writes into `dir` a bundle whose denoiser memorised the first `k` of `2k` random images
/// (with a features model; no classifier, no re-identification model), and returns the
/// images: members first, then non-members.
fn memorising_bundle(dir: &Path, k: usize) -> Array4<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let pixels = Array4::<u8>::from_shape_fn((2 * k, C, H, W), |_| rng.random());
    let members = pixels.slice(ndarray::s![..k, .., .., ..]);
    let normalised = members.mapv(|p| (f32::from(p) / 255.0 - 0.5) / 0.5);
    let stored = normalised.into_shape_with_order((k, C * H * W)).unwrap();
    let den = nearest_member_denoiser(&stored);
    let feat = features(&(0..C * H * W * D).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<_>>());
    let value = bundle_json(json!({
        "denoiser": denoiser_entry("denoiser.onnx", &den),
        "features": features_entry("features.onnx", &feat),
    }));
    std::fs::write(dir.join("bundle.json"), value.to_string()).unwrap();
    std::fs::write(dir.join("denoiser.onnx"), den).unwrap();
    std::fs::write(dir.join("features.onnx"), feat).unwrap();
    pixels
}

#[test]
fn a_denoiser_that_memorised_its_members_gives_them_away() {
    let k = 32;
    let dir = tempfile::tempdir().unwrap();
    let pixels = memorising_bundle(dir.path(), k);
    let (members, non_members) = pixels.view().split_at(Axis(0), k);
    let bundle = BundleDir::load(dir.path()).unwrap();
    let mut attacks = Attacks::load(&bundle, &Tract::default(), Config::default()).unwrap();
    let labels = Array2::from_shape_fn((k, 10), |(_, j)| if j == 0 { 1.0 } else { 0.0 });
    let m = attacks.score(members, labels.view(), &mut |_| {}).unwrap();
    let n = attacks.score(non_members, labels.view(), &mut |_| {}).unwrap();
    let report = evaluate(&m, &n, None, 500, 1).unwrap();
    let denoiser = &report.models[0];
    assert_eq!(denoiser.model, "denoiser");
    let auc = |attack: &str| denoiser.attacks.iter().find(|a| a.attack == attack).unwrap();
    for attack in ["loss@0.02", "loss@0.1", "loss_sum", "secmi@0.3", "secmi@1"] {
        let a = auc(attack);
        println!("{attack}: AUC {} {:?}, TPR@1% {}", a.auc, a.auc_ci, a.tpr_at_fpr_1pct);
        assert!(a.auc >= 0.95, "{attack}: AUC {} on a memorised set", a.auc);
    }
    // A member is reconstructed exactly at low noise, a non-member never is.
    assert_eq!(auc("loss@0.02").auc, 1.0);
    // A member's DDIM inversion never leaves it (the denoiser returns it at every level), so
    // its round trip is exact; a non-member's does not come back (its offset from its nearest
    // member changes by a factor (1.2 − 0.0002σ)·(5/6 + 0.0002σ) ≈ 1 + 0.00007σ).
    assert_eq!(auc("secmi@0.3").auc, 1.0);
    assert_eq!(auc("loss@0.02").tpr_at_fpr_1pct, 1.0);
    // The denoiser ignores its condition: conditioning on a record's own features tells
    // nothing, and the calibrated attack is at chance exactly.
    assert_eq!(auc("calibrated_sum").auc, 0.5);
    assert_eq!(report.worst_auc.as_ref().unwrap().value, 1.0);
    assert!(report.notes.iter().any(|n| n.contains("no classifier")), "{:?}", report.notes);
}

/// Writes `pixels` (`[n, 1, H, W]`) as the IDX split `prefix` (`train`, `t10k`) of `dir`, every
/// label class 0.
fn write_idx(dir: &Path, prefix: &str, pixels: ArrayView4<u8>) {
    let n = pixels.len_of(Axis(0)) as u32;
    let header = |magic: u32, dims: &[u32]| -> Vec<u8> {
        std::iter::once(magic).chain(dims.iter().copied()).flat_map(u32::to_be_bytes).collect()
    };
    let mut images = header(0x0803, &[n, H as u32, W as u32]);
    images.extend(pixels.iter());
    let mut labels = header(0x0801, &[n]);
    labels.extend(std::iter::repeat_n(0u8, n as usize));
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

/// `unpersonal audit-models --record` writes what it measured, each model's DP guarantee and
/// the policy they give into the audited bundle (everything else unchanged, the bundle still
/// loading), and `unpersonal info` shows it; without `--record` the bundle is left alone.
#[test]
fn audit_models_records_the_policy_in_the_bundle_and_info_shows_it() {
    let k = 32;
    let root = tempfile::tempdir().unwrap();
    let (dir, data) = (root.path().join("bundle"), root.path().join("data"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let pixels = memorising_bundle(&dir, k);
    let json_path = dir.join("bundle.json");
    // The features model states a DP guarantee in its provenance; the denoiser states none.
    let mut value: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    value["models"]["features"]["provenance"]["dp"] =
        json!({ "epsilon": 4, "delta": 1e-6, "accountant": "rdp" });
    std::fs::write(&json_path, value.to_string()).unwrap();
    let (members, non_members) = pixels.view().split_at(Axis(0), k);
    write_idx(&data, "train", members);
    write_idx(&data, "t10k", non_members);
    let (bundle, data) = (dir.to_str().unwrap(), data.to_str().unwrap());
    let audit = |extra: &[&str]| {
        let mut args = vec!["audit-models", "--bundle", bundle, "--members", data];
        args.extend(["--non-members", data, "--resamples", "200"]);
        args.extend(extra);
        let out = unpersonal(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };

    let before = std::fs::read(&json_path).unwrap();
    let report: Value = serde_json::from_str(&audit(&["--json"])).unwrap();
    assert_eq!(report["worst_auc"]["value"], 1.0);
    assert!(report.get("privacy").is_none());
    assert_eq!(std::fs::read(&json_path).unwrap(), before, "without --record nothing changes");

    let text = audit(&["--record"]);
    assert!(text.contains("recorded in") && text.contains("policy: site-only"), "{text}");
    let after: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let mut rest = after.clone();
    let privacy = rest.as_object_mut().unwrap().remove("privacy").expect("a privacy section");
    assert_eq!(rest, value, "every other field, the models' hashes with them, is unchanged");
    let m = &privacy["membership"];
    assert_eq!(m["members"], json!({ "name": "data/train", "count": k }));
    assert_eq!(m["non_members"], json!({ "name": "data/test", "count": k }));
    assert_eq!(
        m["attacks"].as_array().unwrap().len(),
        16,
        "denoiser: 6 levels twice, 2 sums, 2 SecMI"
    );
    let secmi: Vec<f64> =
        m["secmi_sigmas"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(secmi.len() == 2 && (secmi[0] - 0.3).abs() < 1e-6 && secmi[1] == 1.0, "{secmi:?}");
    assert_eq!(m["worst_auc"]["model"], "denoiser");
    assert_eq!(m["worst_auc"]["value"], 1.0);
    assert_eq!(m["runtime_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["date"].as_str().unwrap().len(), 10);
    assert!(m["notes"].to_string().contains("no classifier"), "{}", m["notes"]);
    for role in ["denoiser", "features"] {
        assert_eq!(privacy["weights"][role], value["models"][role]["sha256"]);
    }
    let release = &privacy["model_release"];
    assert_eq!(
        release["dp"],
        json!({ "denoiser": null, "features": { "epsilon": 4.0, "delta": 1e-6, "accountant": "rdp" } })
    );
    assert_eq!(release["membership_worst_auc"], 1.0);
    assert_eq!(release["policy"], "site-only");
    let reason = release["reason"].as_str().unwrap();
    for needle in [
        "not DP-trained: denoiser",
        "32 members and 32 non-members, too few to allow sharing (at least 1000 per side)",
        "worst AUC 1.000 > 0.55",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
    }

    let loaded = BundleDir::load(&dir).expect("the recorded bundle loads");
    assert_eq!(loaded.bundle.privacy_standing().policy(), Policy::SiteOnly);
    assert!(matches!(loaded.bundle.privacy_standing(), Standing::Recorded(_)));
    let out = unpersonal(&["info", "--bundle", bundle]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "privacy membership audit ",
        "worst AUC 1.000 (denoiser ",
        "32 (data/train) members vs 32 (data/test) non-members",
        "DP: features ε = 4, δ = 1e-6 (rdp); denoiser not DP-trained",
        &format!("policy: site-only — {reason}"),
    ] {
        assert!(text.contains(needle), "info lacks {needle:?}:\n{text}");
    }
    let out = unpersonal(&["info", "--bundle", bundle, "--json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["release"]["policy"], "site-only");
    assert_eq!(info["privacy"]["model_release"], *release);

    // A bundle never audited says so.
    let plain = tempfile::tempdir().unwrap();
    write_bundle(plain.path(), Body::Scale(0.5));
    let out = unpersonal(&["info", "--bundle", plain.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("privacy {NOT_AUDITED}")), "{text}");
    assert!(NOT_AUDITED.ends_with("run unpersonal audit-models --record; keep the bundle on site"));
}
