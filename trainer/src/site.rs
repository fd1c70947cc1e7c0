//! A site's own data made ready for training: checked before any training starts, split by
//! patient into training, calibration and held-out sets, and written as PNG images with a
//! findings CSV (the format of `docs/data.md`) that every trainer and runtime command reads.
//!
//! The split keeps every image of one person in one set, so the re-identification model is
//! calibrated, and the release audited, on people it never saw. Patients are named in the
//! written files only by a pseudonym of this site's run (`S000001`, …, in order of first
//! appearance), never by their ID; an image without a known person gets no pseudonym and counts
//! as a person of its own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use unpersonal_runtime::identity::Identity;

/// The fewest images a calibration set may hold: one pair per image is drawn for the
/// re-identification threshold, and a false-match rate of 1 % needs at least 100 pairs to be
/// more than zero or one.
pub const MIN_CALIBRATION_IMAGES: usize = 100;

/// The fewest training images of each class (or with and without each finding).
pub const MIN_PER_LABEL: usize = 2;

/// Shares of the people put aside when no held-out data is given.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitShares {
    /// People whose images calibrate the gate and select models.
    pub calibration: f64,
    /// People whose images only the audit sees.
    pub held_out: f64,
}

impl Default for SplitShares {
    fn default() -> Self {
        SplitShares { calibration: 0.1, held_out: 0.1 }
    }
}

/// Row numbers of one data set, split by person.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Rows trained on.
    pub train: Vec<usize>,
    /// Rows that calibrate the gate and select models.
    pub calibration: Vec<usize>,
    /// Rows for the audit only (empty when held-out data was given separately).
    pub held_out: Vec<usize>,
}

/// The people of `data`: the rows of each person, in order of first appearance (an image with
/// no known person is a person of its own).
pub fn people(identities: &[Option<Identity>]) -> Vec<Vec<usize>> {
    let mut index: HashMap<Identity, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (row, identity) in identities.iter().enumerate() {
        match identity {
            Some(id) => {
                let k = *index.entry(*id).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[k].push(row);
            }
            None => groups.push(vec![row]),
        }
    }
    groups
}

/// Splits the rows of `identities` by person, seeded: whole people are drawn in a random order
/// into the held-out set until it holds `shares.held_out` of the images, then into the
/// calibration set likewise (at least [`MIN_CALIBRATION_IMAGES`] where there are enough); the
/// rest is trained on. `shares.held_out` may be 0 (held-out data given separately).
pub fn split_by_person(identities: &[Option<Identity>], shares: SplitShares, seed: u64) -> Split {
    let n = identities.len();
    let mut groups = people(identities);
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5349_5445));
    let want_held_out = (shares.held_out * n as f64).ceil() as usize;
    let want_calibration =
        ((shares.calibration * n as f64).ceil() as usize).max(MIN_CALIBRATION_IMAGES.min(n / 4));
    let mut split = Split::default();
    for rows in groups {
        let target = if split.held_out.len() < want_held_out {
            &mut split.held_out
        } else if split.calibration.len() < want_calibration {
            &mut split.calibration
        } else {
            &mut split.train
        };
        target.extend(rows);
    }
    for rows in [&mut split.train, &mut split.calibration, &mut split.held_out] {
        rows.sort_unstable();
    }
    split
}

/// Checks that `train` can train every model and `calibration` can calibrate the gate, before
/// any training starts; the error says what is missing and how much more is needed.
pub fn check(train: &Dataset, calibration: &Dataset) -> anyhow::Result<()> {
    ensure!(
        calibration.len() >= MIN_CALIBRATION_IMAGES,
        "{} images to calibrate the gate on, {MIN_CALIBRATION_IMAGES} needed: give {} more images of \
         people not trained on (--test-data), or more data to split",
        calibration.len(),
        MIN_CALIBRATION_IMAGES - calibration.len()
    );
    let k = train.num_labels;
    let mut positives = vec![0usize; k];
    for i in 0..train.len() {
        for (count, &y) in positives.iter_mut().zip(train.label(i)) {
            *count += usize::from(y > 0.5);
        }
    }
    for (j, &p) in positives.iter().enumerate() {
        let name = label_name(train, j);
        if p < MIN_PER_LABEL {
            let what = if train.multi_label { "images with the finding" } else { "images" };
            bail!(
                "{}: label {name} has {p} training {what}, at least {MIN_PER_LABEL} are needed ({} more)",
                train.name,
                MIN_PER_LABEL - p
            );
        }
        if train.multi_label && train.len() - p < MIN_PER_LABEL {
            bail!(
                "{}: every training image but {} has the finding {name}; at least {MIN_PER_LABEL} without it are needed",
                train.name,
                train.len() - p
            );
        }
    }
    Ok(())
}

/// The name of label `j`: its column or class name where the data has one, else `label_j`.
pub fn label_name(data: &Dataset, j: usize) -> String {
    data.label_names.get(j).cloned().unwrap_or_else(|| format!("label_{j}"))
}

/// Writes rows `rows` of `data` into the new directory `dir` as `images/NNNNNN.png` and
/// `findings.csv` (`path,patient_id,<one 0/1 column per label>`), patients named by
/// `pseudonyms` (indexed by row). The directory is written under a temporary name and renamed
/// when complete. Returns the CSV's path.
pub fn write_set(
    data: &Dataset,
    rows: &[usize],
    pseudonyms: &[Option<String>],
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    ensure!(!dir.exists(), "{} exists already", dir.display());
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpersonal-set-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let images = staging.path().join("images");
    std::fs::create_dir(&images)?;
    let mut csv = String::from("path,patient_id");
    for j in 0..data.num_labels {
        write!(csv, ",{}", csv_field(&label_name(data, j)))?;
    }
    csv.push('\n');
    for (k, &row) in rows.iter().enumerate() {
        let file = format!("images/{k:06}.png");
        save_png(data, row, &staging.path().join(&file))?;
        write!(csv, "{file},{}", pseudonyms[row].as_deref().unwrap_or(""))?;
        for &y in data.label(row) {
            write!(csv, ",{}", u8::from(y > 0.5))?;
        }
        csv.push('\n');
    }
    std::fs::write(staging.path().join("findings.csv"), csv)?;
    let staged = staging.keep();
    std::fs::rename(&staged, dir)
        .with_context(|| format!("cannot move {} to {}", staged.display(), dir.display()))?;
    Ok(dir.join("findings.csv"))
}

/// Pseudonyms of the people of `data` for the written sets: `S000001`, … in order of first
/// appearance; `None` for an image with no known person.
pub fn pseudonyms(data: &Dataset) -> Vec<Option<String>> {
    let mut names: HashMap<Identity, String> = HashMap::new();
    data.identities
        .iter()
        .map(|identity| {
            identity.map(|id| {
                let next = names.len() + 1;
                names.entry(id).or_insert_with(|| format!("S{next:06}")).clone()
            })
        })
        .collect()
}

/// A CSV field, quoted where it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Row `row` of `data` as an 8-bit grayscale or RGB PNG.
fn save_png(data: &Dataset, row: usize, path: &Path) -> anyhow::Result<()> {
    let (w, h) = (data.width as u32, data.height as u32);
    let chw = data.image(row);
    let result = match data.channels {
        1 => image::GrayImage::from_raw(w, h, chw.to_vec()).map(|i| i.save(path)),
        3 => {
            let plane = data.height * data.width;
            let rgb = (0..plane).flat_map(|p| [chw[p], chw[plane + p], chw[2 * plane + p]]);
            image::RgbImage::from_raw(w, h, rgb.collect()).map(|i| i.save(path))
        }
        c => bail!("cannot write images of {c} channels"),
    };
    result
        .context("image buffer of the wrong size")?
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(keys: &[Option<&str>]) -> Vec<Option<Identity>> {
        keys.iter().map(|k| k.and_then(Identity::of_patient_id)).collect()
    }

    #[test]
    fn a_person_is_never_in_two_sets() {
        let keys: Vec<String> = (0..600).map(|i| format!("P{}", i / 3)).collect();
        let mut identities = ids(&keys.iter().map(|k| Some(k.as_str())).collect::<Vec<_>>());
        identities.extend(vec![None; 100]);
        let split = split_by_person(&identities, SplitShares::default(), 7);
        let n = identities.len();
        assert_eq!(split.train.len() + split.calibration.len() + split.held_out.len(), n);
        let set_of = |row: usize| {
            [&split.train, &split.calibration, &split.held_out]
                .iter()
                .position(|s| s.binary_search(&row).is_ok())
                .unwrap()
        };
        for person in people(&identities) {
            let first = set_of(person[0]);
            assert!(person.iter().all(|&r| set_of(r) == first), "one person in two sets");
        }
        assert!((70..=75).contains(&split.held_out.len()), "{}", split.held_out.len());
        assert!((100..=105).contains(&split.calibration.len()), "{}", split.calibration.len());
        assert_eq!(split, split_by_person(&identities, SplitShares::default(), 7));
        assert_ne!(split, split_by_person(&identities, SplitShares::default(), 8));
    }

    #[test]
    fn no_held_out_share_trains_on_the_rest() {
        let identities = vec![None; 1000];
        let split =
            split_by_person(&identities, SplitShares { calibration: 0.1, held_out: 0.0 }, 0);
        assert!(split.held_out.is_empty());
        assert_eq!(split.calibration.len(), 100);
        assert_eq!(split.train.len(), 900);
    }

    #[test]
    fn pseudonyms_follow_first_appearance() {
        let data = Dataset { identities: ids(&[Some("b"), None, Some("a"), Some("b")]), ..tiny(4) };
        assert_eq!(
            pseudonyms(&data),
            [Some("S000001".into()), None, Some("S000002".into()), Some("S000001".into())]
        );
    }

    #[test]
    fn a_label_with_too_few_images_is_named_before_training() {
        let mut train = tiny(10);
        for i in 0..10 {
            train.labels[i * 2] = 1.0;
        }
        train.labels[2] = 0.0;
        train.labels[3] = 1.0;
        train.labels[18] = 0.0;
        let calibration = tiny(MIN_CALIBRATION_IMAGES);
        let e = check(&train, &calibration).unwrap_err().to_string();
        assert!(e.contains("label cough has 1 training images") && e.contains("1 more"), "{e}");
        let e = check(&train, &tiny(40)).unwrap_err().to_string();
        assert!(e.contains("60 more images"), "{e}");
    }

    #[test]
    fn written_sets_read_back_as_pngs_and_a_csv() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = tiny(3);
        data.labels = vec![1., 0., 0., 1., 1., 1.];
        data.images[5] = 200;
        let names = vec![Some("S000001".into()), None, Some("S000001".into())];
        let csv = write_set(&data, &[2, 0], &names, &dir.path().join("set")).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(
            text,
            "path,patient_id,\"fever, high\",cough\nimages/000000.png,S000001,1,1\nimages/000001.png,S000001,1,0\n"
        );
        let png = image::open(dir.path().join("set/images/000001.png")).unwrap().to_luma8();
        assert_eq!(png.as_raw()[..], data.image(0)[..]);
        assert!(write_set(&data, &[0], &names, &dir.path().join("set")).is_err());
    }

    /// `n` black 4×4 images with two labels named `fever, high` and `cough`, none set.
    fn tiny(n: usize) -> Dataset {
        Dataset {
            name: "tiny".into(),
            channels: 1,
            height: 4,
            width: 4,
            num_labels: 2,
            multi_label: true,
            images: vec![0; n * 16],
            labels: vec![0.0; n * 2],
            allows_hflip: false,
            identities: vec![None; n],
            label_names: vec!["fever, high".into(), "cough".into()],
        }
    }
}
