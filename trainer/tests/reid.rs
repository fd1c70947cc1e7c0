//! The re-identification model: its two exported halves compute the training graph's logits
//! (on ONNX Runtime and tract), and its training pairs are balanced, reproducible and correct.

use unpersonal_runtime::identity::Identity;
use unpersonal_trainer::data::strong::Strong;
use unpersonal_trainer::data::{Batch, Dataset, Normalization};
use unpersonal_trainer::engine::{self, HostTensor, SessionConfig, TrainingEngine};
use unpersonal_trainer::eval::argmax;
use unpersonal_trainer::export::{self, Weights};
use unpersonal_trainer::models::{ReidConfig, ReidHead};
use unpersonal_trainer::pairs::{PairFeed, Positives, pixel_neighbours};
use unpersonal_trainer::step::{self, AdamW};
use unpersonal_trainer::train::Feed;

fn small() -> ReidConfig {
    ReidConfig {
        channels: 1,
        height: 8,
        width: 8,
        widths: [8, 8, 16],
        descriptor: 4,
        embedding: 6,
        groups: 4,
    }
}

/// 12 distinct 8×8 images in 3 classes.
fn data() -> Dataset {
    let n = 12;
    let mut labels = vec![0f32; n * 3];
    for i in 0..n {
        labels[i * 3 + i % 3] = 1.0;
    }
    Dataset {
        name: "toy".into(),
        channels: 1,
        height: 8,
        width: 8,
        num_labels: 3,
        multi_label: false,
        images: (0..n * 64).map(|p| ((p * 37 + p / 64 * 11) % 256) as u8).collect(),
        labels,
        allows_hflip: false,
        identities: vec![None; n],
        label_names: Vec::new(),
    }
}

/// 6 patients with 3 "studies" each — a smooth base image of the patient as it is, brightened,
/// and shifted right by a pixel — followed by 2 images of nobody known: 20 distinct 8×8 images,
/// a patient's studies of one class (of 3) and each other's nearest images.
fn patients() -> Dataset {
    let (patients, studies, n) = (6, 3, 20);
    let mut labels = vec![0f32; n * 3];
    let mut images = Vec::with_capacity(n * 64);
    let mut identities = Vec::with_capacity(n);
    for row in 0..n {
        let known = row < patients * studies;
        let (person, study) = if known { (row / studies, row % studies) } else { (row, 0) };
        labels[row * 3 + person % 3] = 1.0;
        let p = person as f64;
        for y in 0..8 {
            for x in 0..8usize {
                let x = if study == 2 { x.saturating_sub(1) } else { x };
                let phase = 0.7 * x as f64 + (0.5 + 0.3 * p) * y as f64 + 1.3 * p;
                let base = (110.0 + 70.0 * phase.sin()) as u8;
                images.push(if study == 1 { base + 12 } else { base });
            }
        }
        identities.push(if known {
            Identity::of_patient_id(&format!("patient-{person}"))
        } else {
            None
        });
    }
    Dataset {
        name: "patients".into(),
        channels: 1,
        height: 8,
        width: 8,
        num_labels: 3,
        multi_label: false,
        images,
        labels,
        allows_hflip: false,
        identities,
        label_names: Vec::new(),
    }
}

fn tensor(shape: &[usize], data: Vec<f32>) -> HostTensor {
    HostTensor { shape: shape.to_vec(), data }
}

#[test]
fn exported_halves_compute_the_training_graphs_logits() {
    let env = engine::environment(None).expect("ONNX Runtime must be available");
    let model = small();
    let step_graph = step::build(&model, 3, &AdamW::default());
    let mut state = step::initial_state(&step_graph.params, 3);
    for (name, t) in state.iter_mut() {
        if !name.contains(".adam_") {
            t.data.iter_mut().enumerate().for_each(|(i, v)| *v += 0.05 * ((i as f32) * 0.7).sin());
        }
    }
    let a = tensor(&[3, 1, 8, 8], (0..192).map(|i| ((i as f32) * 0.3).sin()).collect());
    let b = tensor(&[3, 1, 8, 8], (0..192).map(|i| ((i as f32) * 0.11).cos()).collect());
    let same = [1.0, 0.0, 1.0];
    let mut trainer =
        TrainingEngine::new(env, &step_graph, &state, &SessionConfig::cpu(1)).unwrap();
    let expected = trainer
        .step(&[&a.data, &b.data, &same], 1, 0.0, 0.5)
        .unwrap()
        .metrics
        .remove("logit")
        .unwrap();

    let embed = export::onnx_bytes(&model, &state, Weights::Raw, vec![]).unwrap();
    let head = export::onnx_bytes(&ReidHead(&model), &state, Weights::Raw, vec![]).unwrap();
    let session = SessionConfig::cpu(1);
    let run = |onnx: &[u8], inputs: &[(&str, &HostTensor)], output: &str| {
        let mut s = engine::session(env, onnx, &session).unwrap();
        engine::run(&mut s, inputs).unwrap().remove(output).unwrap()
    };
    let ea = run(&embed, &[("image", &a)], "embedding");
    let eb = run(&embed, &[("image", &b)], "embedding");
    assert_eq!(ea.shape, vec![3, 6]);
    assert!(ea.data.iter().all(|&v| v > 0.0 && v < 1.0), "embeddings are sigmoid features");
    let composed = run(&head, &[("a", &ea), ("b", &eb)], "logit");
    assert_eq!(composed.shape, vec![3, 1]);
    let diff = export::scaled_diff(&expected.data, &composed.data);
    assert!(
        diff <= 1e-5,
        "training graph {:?} vs exported halves {:?}",
        expected.data,
        composed.data
    );
    assert!(export::parity(env, &embed, &[("image", &a)]).unwrap() <= 1e-4);
    assert!(export::parity(env, &head, &[("a", &ea), ("b", &eb)]).unwrap() <= 1e-4);
    // The head is symmetric in its two inputs.
    let swapped = run(&head, &[("a", &eb), ("b", &ea)], "logit");
    assert!(export::scaled_diff(&composed.data, &swapped.data) <= 1e-6);
}

fn normalized(d: &Dataset, i: usize) -> Vec<f32> {
    d.image(i).iter().map(|&p| Normalization::SYMMETRIC.apply(p)).collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

#[test]
fn pairs_are_balanced_reproducible_and_correct() {
    let d = data();
    let norm = Normalization::SYMMETRIC;
    let none = Strong::NONE;
    let batch = Batch { images: vec![], labels: vec![], indices: (0..12).collect(), n: 12 };
    // Without augmentation a positive pair is the same image twice and a negative is not.
    let plain = PairFeed::new(&d, none, norm, 5).feed(&batch, 1);
    let [a, b, same] = &plain[..] else { panic!("three inputs") };
    assert_eq!(same.iter().filter(|&&s| s == 1.0).count(), 6);
    let mut same_class_negatives = 0;
    for i in 0..12 {
        let (ra, rb) = (&a[i * 64..(i + 1) * 64], &b[i * 64..(i + 1) * 64]);
        assert!(close(ra, &normalized(&d, i)), "row {i}: `a` is the anchor image");
        if same[i] == 1.0 {
            assert_eq!(ra, rb, "row {i}: a positive pair shows one image");
        } else {
            assert_ne!(ra, rb, "row {i}: a negative pair shows two images");
            let partner = (0..12).find(|&j| close(rb, &normalized(&d, j))).unwrap();
            same_class_negatives += usize::from(argmax(d.label(partner)) == argmax(d.label(i)));
        }
    }
    assert!(same_class_negatives > 0, "some negatives are hard (same class)");

    let strong = PairFeed::new(&d, Strong::default(), norm, 5);
    assert_eq!(strong.feed(&batch, 1), strong.feed(&batch, 1));
    assert_ne!(strong.feed(&batch, 1)[0], strong.feed(&batch, 2)[0]);
    let out = strong.feed(&batch, 1);
    assert_ne!(
        &out[0][..64],
        &out[1][..64],
        "the two views of a positive are augmented independently"
    );
}

#[test]
fn neighbour_negatives_are_look_alikes_and_skip_duplicates() {
    let mut d = data();
    // Image 5 becomes a copy of image 0: a duplicate, never a neighbour.
    let copy = d.image(0).to_vec();
    d.images[5 * 64..6 * 64].copy_from_slice(&copy);
    let norm = Normalization::SYMMETRIC;
    let table = pixel_neighbours(&d, norm, 2, 1e-3);
    assert_eq!(table.len(), 12);
    for (i, near) in table.iter().enumerate() {
        assert_eq!(near.len(), 2);
        assert!(!near.contains(&(i as u32)), "an image is not its own neighbour");
        // The nearest listed is the nearest non-duplicate by brute force.
        let dist = |j: usize| {
            normalized(&d, i)
                .iter()
                .zip(normalized(&d, j))
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let best = (0..12)
            .filter(|&j| j != i && dist(j) >= 1e-3)
            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
            .unwrap();
        assert_eq!(near[0] as usize, best, "image {i}");
    }
    assert!(!table[0].contains(&5) && !table[5].contains(&0), "duplicates are skipped");

    // A third of the negatives come from the table.
    let none = Strong::NONE;
    let feed = PairFeed::new(&d, none, norm, 5).neighbour_negatives(table.clone());
    let batch = Batch { images: vec![], labels: vec![], indices: (0..12).collect(), n: 12 };
    let (mut negatives, mut from_table) = (0, 0);
    for step in 0..40 {
        let out = feed.feed(&batch, step);
        for i in (1..12).step_by(2) {
            let rb = &out[1][i * 64..(i + 1) * 64];
            let partner = (0..12).find(|&j| close(rb, &normalized(&d, j))).unwrap();
            negatives += 1;
            from_table += usize::from(table[i].contains(&(partner as u32)));
        }
    }
    let share = from_table as f64 / negatives as f64;
    assert!(share > 0.3 && share < 0.7, "{from_table} of {negatives} negatives were look-alikes");
}

/// What `feed` drew over `steps` batches of all images of `d` (rotated, so every image is an
/// anchor of positives and of negatives): per pair, the anchor, the partner and whether it is
/// positive, the partner found as the image it equals (the feed must not augment).
fn drawn(d: &Dataset, feed: &PairFeed, steps: u64) -> Vec<(usize, usize, bool)> {
    let n = d.len();
    let mut pairs = Vec::new();
    for step in 0..steps {
        let indices: Vec<usize> = (0..n).map(|i| (i + step as usize) % n).collect();
        let out =
            feed.feed(&Batch { images: vec![], labels: vec![], indices: indices.clone(), n }, step);
        assert_eq!(out[2].iter().filter(|&&s| s == 1.0).count(), n / 2, "half positive");
        for (i, &anchor) in indices.iter().enumerate() {
            let (ra, rb) = (&out[0][i * 64..(i + 1) * 64], &out[1][i * 64..(i + 1) * 64]);
            assert!(close(ra, &normalized(d, anchor)), "row {i}: `a` is the anchor image");
            let partner = (0..n).find(|&j| close(rb, &normalized(d, j))).expect("an image");
            pairs.push((anchor, partner, out[2][i] == 1.0));
        }
    }
    pairs
}

fn same_patient(d: &Dataset, i: usize, j: usize) -> bool {
    d.identity(i).is_some() && d.identity(i) == d.identity(j)
}

#[test]
fn patient_positives_link_two_images_and_negatives_never_share_a_patient() {
    let d = patients();
    let norm = Normalization::SYMMETRIC;
    for i in 0..d.len() {
        for j in 0..i {
            assert!(!close(&normalized(&d, i), &normalized(&d, j)), "images {i} and {j} differ");
        }
    }
    let feed = PairFeed::new(&d, Strong::NONE, norm, 5);
    assert!(feed.has_patients());
    let pairs = drawn(&d, &feed, 40);
    let (mut with_studies, mut other_study, mut hard) = (0, 0, 0);
    for &(anchor, partner, positive) in &pairs {
        if positive {
            assert!(partner == anchor || same_patient(&d, anchor, partner), "{anchor}–{partner}");
            if d.identity(anchor).is_some() {
                with_studies += 1;
                other_study += usize::from(partner != anchor);
            } else {
                assert_eq!(partner, anchor, "an image of nobody known has no other image");
            }
        } else {
            assert!(partner != anchor && !same_patient(&d, anchor, partner), "{anchor}–{partner}");
            hard += usize::from(argmax(d.label(partner)) == argmax(d.label(anchor)));
        }
    }
    let share = other_study as f64 / with_studies as f64;
    assert!(share > 0.35 && share < 0.65, "{other_study} of {with_studies} positives of patients");
    assert!(hard > 0, "some negatives are of the same class (another patient)");

    // Near-copy calibration: one image twice; patient calibration: always two images.
    let same_image = PairFeed::new(&d, Strong::NONE, norm, 5).positives(Positives::SameImage);
    assert!(drawn(&d, &same_image, 10).iter().all(|&(a, p, positive)| !positive || a == p));
    let studies = PairFeed::new(&d, Strong::NONE, norm, 5).positives(Positives::SamePatient);
    for (a, p, positive) in drawn(&d, &studies, 10) {
        if positive {
            let expected =
                if d.identity(a).is_some() { a != p && same_patient(&d, a, p) } else { a == p };
            assert!(expected, "{a}–{p}");
        } else {
            assert!(a != p && !same_patient(&d, a, p), "{a}–{p}");
        }
    }

    // Strongly augmented, the feed stays balanced and reproducible, anchors plain or not.
    let strong = PairFeed::new(&d, Strong::default(), norm, 5);
    let batch = Batch { images: vec![], labels: vec![], indices: (0..20).collect(), n: 20 };
    assert_eq!(strong.feed(&batch, 3), strong.feed(&batch, 3));
    let plain = PairFeed::new(&d, Strong::default(), norm, 5).plain_anchor().feed(&batch, 3);
    for i in 0..20 {
        assert!(close(&plain[0][i * 64..(i + 1) * 64], &normalized(&d, i)));
    }
}

#[test]
fn look_alike_negatives_skip_the_patients_own_images() {
    let d = patients();
    let norm = Normalization::SYMMETRIC;
    // A patient's studies are each other's nearest images: without identities they head the
    // look-alike lists, with them they never appear there.
    let mut anonymous = d.clone();
    anonymous.identities = vec![None; d.len()];
    let blind = pixel_neighbours(&anonymous, norm, 3, 1e-3);
    let siblings_listed =
        (0..18).filter(|&i| blind[i].iter().any(|&j| same_patient(&d, i, j as usize))).count();
    assert_eq!(siblings_listed, 18, "a patient's studies are each other's look-alikes");
    let table = pixel_neighbours(&d, norm, 3, 1e-3);
    for (i, near) in table.iter().enumerate() {
        assert_eq!(near.len(), 3, "image {i}");
        assert!(near.iter().all(|&j| j as usize != i && !same_patient(&d, i, j as usize)));
    }

    // A table that lists every other image: the patient's own are dropped from it.
    let everyone: Vec<Vec<u32>> = (0..20).map(|i| (0..20).filter(|&j| j != i).collect()).collect();
    let feed = PairFeed::new(&d, Strong::NONE, norm, 5).neighbour_negatives(everyone);
    let pairs = drawn(&d, &feed, 40);
    assert!(pairs.iter().any(|&(a, p, positive)| positive && a != p), "patient positives");
    for (a, p, positive) in pairs {
        if !positive {
            assert!(a != p && !same_patient(&d, a, p), "negative {a}–{p}");
        }
    }
    let feed = PairFeed::new(&d, Strong::NONE, norm, 5).neighbour_negatives(table.clone());
    let negatives: Vec<_> = drawn(&d, &feed, 40).into_iter().filter(|p| !p.2).collect();
    let from_table = negatives.iter().filter(|&&(a, p, _)| table[a].contains(&(p as u32))).count();
    assert!(negatives.iter().all(|&(a, p, _)| a != p && !same_patient(&d, a, p)));
    assert!(from_table * 5 > negatives.len(), "{from_table} of {} from the table", negatives.len());
}
