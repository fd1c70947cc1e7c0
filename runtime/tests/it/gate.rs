//! The privacy gate on tiny re-identification models: a copy of *any* reference is caught
//! (not only of the source), distinct images pass, and a broken model fails closed.

use ndarray::{Array2, Array4};
use unpersonal_runtime::backend::{Model, Tract};
use unpersonal_runtime::bundle::{Bundle, Role};
use unpersonal_runtime::gate::{GateError, ReferenceSet, Reid, check};

use crate::common::{C, E, H, W, bundle_json, reid_embed, reid_entries, reid_head};

fn models(scale: f32) -> Reid {
    let (embed, head) = halves(scale);
    Reid::new(embed, head, 0.5, 0.5).unwrap()
}

/// The embedding and head models, loaded through a verified bundle description.
fn halves(scale: f32) -> (Model, Model) {
    let weights: Vec<f32> =
        (0..C * H * W * E).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05).collect();
    let (embed, head) = (reid_embed(&weights), reid_head(scale, 4.0));
    let (e, h) = reid_entries(&embed, &head);
    let mut value = bundle_json(serde_json::json!({ "reid_embed": e, "reid_head": h }));
    value["reid"] = serde_json::json!({ "threshold": 0.5 });
    let bundle = Bundle::from_json(&value.to_string()).unwrap();
    bundle.verify(Role::ReidEmbed, &embed).unwrap();
    bundle.verify(Role::ReidHead, &head).unwrap();
    let embed =
        Model::load(&Tract::default(), bundle.model(Role::ReidEmbed).unwrap(), &embed).unwrap();
    let head =
        Model::load(&Tract::default(), bundle.model(Role::ReidHead).unwrap(), &head).unwrap();
    (embed, head)
}

/// `n` distinct images in model space.
fn images(n: usize, offset: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, C, H, W), |(i, _, y, x)| {
        (((i * 13 + offset + y * 5 + x * 3) % 17) as f32 / 8.0) - 1.0
    })
}

#[test]
fn a_copy_of_any_reference_is_caught_and_distinct_images_pass() {
    let mut reid = models(40.0);
    let references = images(6, 0);
    let refs = ReferenceSet::new(reid.embed(references.view()).unwrap());
    // Candidates drawn for reference 0: a copy of reference 4, a copy of reference 0, and
    // images unlike any reference.
    let mut candidates = images(4, 100);
    candidates
        .index_axis_mut(ndarray::Axis(0), 0)
        .assign(&references.index_axis(ndarray::Axis(0), 4));
    candidates
        .index_axis_mut(ndarray::Axis(0), 1)
        .assign(&references.index_axis(ndarray::Axis(0), 0));
    let embeddings = reid.embed(candidates.view()).unwrap();
    let verdicts = check(&mut reid, &refs, embeddings.view(), &[Some(0); 4], 2).unwrap();
    assert!(!verdicts[0].passed && verdicts[0].closest_reference == Some(4), "{:?}", verdicts[0]);
    assert!(!verdicts[1].passed && verdicts[1].closest_reference == Some(0), "{:?}", verdicts[1]);
    for v in &verdicts[2..] {
        assert!(v.passed && v.max_probability < 0.5 && v.compared >= 3, "{v:?}");
    }
    // Checked without a source (`unpersonal check`), a copy is still caught by its neighbours.
    let verdicts = check(&mut reid, &refs, embeddings.view(), &[None; 4], 1).unwrap();
    assert!(!verdicts[0].passed && !verdicts[1].passed && verdicts[2].passed);
}

#[test]
fn every_image_of_the_source_patient_is_compared_at_the_source_threshold() {
    use unpersonal_runtime::identity::Identity;
    // Source threshold 0.5, neighbour threshold 0.99: only a comparison judged as "the
    // source" can reject a near copy.
    let (embed, head) = halves(40.0);
    let mut reid = Reid::new(embed, head, 0.5, 0.99).unwrap();
    let references = images(6, 0);
    let embedded = reid.embed(references.view()).unwrap();
    // A slightly changed copy of reference 4, drawn for reference 0, compared with no neighbours.
    let mut candidate = references.slice(ndarray::s![4..5, .., .., ..]).to_owned();
    candidate[[0, 0, 0, 0]] += 0.05;
    let e = reid.embed(candidate.view()).unwrap();
    let strangers =
        check(&mut reid, &ReferenceSet::new(embedded.clone()), e.view(), &[Some(0)], 0).unwrap();
    assert!(strangers[0].passed && strangers[0].compared == 1, "{:?}", strangers[0]);
    // References 0 and 4 are one patient: the copy of 4 now re-identifies the source's person.
    let p = Identity::of_patient_id("P1");
    let identities = [p, None, None, None, p, Identity::of_patient_id("P2")];
    let refs = ReferenceSet::new(embedded).with_identities(&identities);
    let v = check(&mut reid, &refs, e.view(), &[Some(0)], 0).unwrap();
    let rejection = v[0].rejection.expect("rejected");
    assert!(
        !v[0].passed && v[0].compared == 2 && rejection.reference == 4 && rejection.source,
        "{:?}",
        v[0]
    );
}

#[test]
fn other_references_are_judged_by_the_neighbour_threshold_capped_at_a_copy() {
    // Reference 4 scores sigmoid(4) ≈ 0.982 against itself; a near copy of it scores less.
    let references = images(6, 0);
    let copy = references.index_axis(ndarray::Axis(0), 4).to_owned().insert_axis(ndarray::Axis(0));
    let near = copy.mapv(|v| v + 0.1);
    let verdict = |candidate: &Array4<f32>, neighbour_threshold: f32| {
        let (embed, head) = halves(40.0);
        let mut reid = Reid::new(embed, head, 0.5, neighbour_threshold).unwrap();
        let refs = ReferenceSet::new(reid.embed(references.view()).unwrap());
        let e = reid.embed(candidate.view()).unwrap();
        let source = check(&mut reid, &refs, e.view(), &[Some(4)], 2).unwrap().remove(0);
        let other = check(&mut reid, &refs, e.view(), &[Some(0)], 2).unwrap().remove(0);
        (source.passed, other.passed, other.max_probability)
    };
    let passed = |candidate: &Array4<f32>, t: f32| {
        let (source, other, _) = verdict(candidate, t);
        (source, other)
    };
    let (_, _, p_near) = verdict(&near, 0.5);
    let (_, _, p_copy) = verdict(&copy, 0.5);
    assert!(p_near > 0.6 && p_near < p_copy - 0.02, "near copy {p_near}, copy {p_copy}");
    assert_eq!(passed(&near, 0.5), (false, false));
    // Above the near copy's score, only the source's threshold still catches it …
    let between = 0.5 * (p_near + p_copy);
    assert_eq!(passed(&near, between), (false, true));
    // … but no threshold lets an exact copy of any reference through.
    assert_eq!(passed(&copy, 0.999), (false, false));
}

#[test]
fn nothing_passes_unchecked() {
    let mut reid = models(40.0);
    let refs = ReferenceSet::new(Array2::zeros((0, E)));
    let embeddings = reid.embed(images(2, 0).view()).unwrap();
    let verdicts = check(&mut reid, &refs, embeddings.view(), &[None, None], 3).unwrap();
    assert!(verdicts.iter().all(|v| !v.passed && v.compared == 0));
}

#[test]
fn thresholds_outside_zero_one_are_refused() {
    let reid = models(40.0);
    let bad = format!("{}", GateError::Threshold(1.0));
    assert!(bad.contains("strictly between 0 and 1"));
    assert_eq!(reid.threshold(), 0.5);
}
