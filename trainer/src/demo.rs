//! A synthetic "hospital site" made from Fashion-MNIST: patients with several studies each,
//! multi-label findings and a findings CSV (the format of `docs/data.md`), so that the own-data
//! path can be tried and tested without patient data (`unpersonal-train demo-site`,
//! `docs/demo-site.md`).
//!
//! Every patient is one base image of the source, taken in a seeded random order (so classes
//! are mixed), never the same pixels twice. A patient has a seeded number of studies in
//! `[min_studies, max_studies]`; each study is the base image under acquisition-like changes,
//! all drawn uniformly and independently per study:
//!
//! - a shift of up to ±[`MAX_SHIFT`] source pixels along each axis, a rotation of up to
//!   ±[`MAX_ANGLE_DEGREES`]° and a zoom of up to ±[`MAX_ZOOM`] about the image's centre,
//!   sampled bilinearly (black outside the base image) onto a `size × size` grid that covers
//!   the whole base image: `size` 28 keeps Fashion-MNIST's resolution, a larger one scales it up;
//! - with `v` the intensity in [0, 1]: `gain · (0.5 + contrast · (v^gamma − 0.5))`, each of
//!   gain (brightness), contrast and gamma in `1 ± `[`MAX_PHOTOMETRIC`];
//! - Gaussian noise of σ in [`NOISE_SIGMA`] grey levels; then rounded and clipped to 0–255.
//!
//! A study's findings are those of its base image's class ([`FINDINGS`]): overlapping groups of
//! classes, so an image has no, one or two findings. Everything is a function of the source and
//! the seed: the same seed writes the same bytes.
//!
//! The site is written as `images/<patient_id>_<study>.png` (8-bit grayscale), `findings.csv`
//! (`path,patient_id,` then one 0/1 column per finding, one row per study, rows shuffled) and
//! `README.txt`, first into a temporary sibling directory that is renamed into place at the end.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::data::batch::mix;
use crate::data::{Dataset, IDX_CLASSES};
use crate::eval::argmax;
use unpersonal_runtime::atomic::PARTIAL;
use unpersonal_runtime::pixels::encode_png;

/// A finding of the demo site: a group of Fashion-MNIST classes. An image has the finding when
/// its base image's class is in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The CSV column.
    pub name: &'static str,
    /// Fashion-MNIST classes (0–9) with this finding.
    pub classes: &'static [usize],
}

/// The findings, in CSV column order. T-shirt/top (0) has none (the site's "no finding");
/// Pullover (2), Coat (4) and Ankle boot (9) have two; every other class has one.
pub const FINDINGS: [Finding; 5] = [
    // Pullover, Coat, Shirt.
    Finding { name: "upper_body", classes: &[2, 4, 6] },
    // Sandal, Sneaker, Ankle boot.
    Finding { name: "footwear", classes: &[5, 7, 9] },
    // Trouser, Dress.
    Finding { name: "long", classes: &[1, 3] },
    // Pullover, Coat, Ankle boot.
    Finding { name: "warm", classes: &[2, 4, 9] },
    // Bag.
    Finding { name: "accessory", classes: &[8] },
];

/// The findings of a Fashion-MNIST class, in [`FINDINGS`] order.
pub fn findings_of(class: usize) -> [bool; FINDINGS.len()] {
    FINDINGS.map(|f| f.classes.contains(&class))
}

/// The header of `findings.csv`.
pub fn csv_header() -> String {
    let names: Vec<&str> = FINDINGS.iter().map(|f| f.name).collect();
    format!("path,patient_id,{}", names.join(","))
}

/// Largest shift of a study, in source pixels along each axis.
pub const MAX_SHIFT: f64 = 2.0;
/// Largest rotation of a study, in degrees either way.
pub const MAX_ANGLE_DEGREES: f64 = 5.0;
/// Largest relative zoom of a study, either way (0.05: 95 %–105 %).
pub const MAX_ZOOM: f64 = 0.05;
/// Largest relative change of gain, contrast and gamma, either way.
pub const MAX_PHOTOMETRIC: f64 = 0.15;
/// Range of a study's noise σ, in grey levels.
pub const NOISE_SIGMA: std::ops::RangeInclusive<f64> = 2.0..=4.0;

/// First line of a site's `README.txt`: how a previous demo site is recognised (and replaced).
const README_MARKER: &str =
    "Unpersonal demo site: synthetic images made from Fashion-MNIST, not patient data.";

/// Seed stream of the demo site, distinct from the trainer's other streams.
const DEMO_STREAM: u64 = 22;

/// Patient IDs are `P` and six digits, drawn without repetition from this many.
const ID_SPACE: usize = 1_000_000;

/// How a demo site is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteOptions {
    /// Patients, each one base image.
    pub patients: usize,
    /// Fewest studies (images) per patient, at least 1.
    pub min_studies: usize,
    /// Most studies per patient.
    pub max_studies: usize,
    /// Side of the written square images: the source's (28) keeps its resolution, a larger
    /// one scales every image up (a site whose images need resizing).
    pub size: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions { patients: 2000, min_studies: 2, max_studies: 5, size: 28, seed: 0 }
    }
}

impl SiteOptions {
    /// Refuses options that cannot make a site.
    fn check(&self) -> anyhow::Result<()> {
        ensure!(self.patients > 0, "a demo site needs at least one patient");
        ensure!(
            (1..=self.max_studies).contains(&self.min_studies) && self.max_studies <= 99,
            "studies per patient must satisfy 1 ≤ min ({}) ≤ max ({}) ≤ 99",
            self.min_studies,
            self.max_studies
        );
        ensure!((8..=1024).contains(&self.size), "image size {} is not in 8–1024", self.size);
        Ok(())
    }
}

/// What [`write_site`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SiteSummary {
    /// The site's directory.
    pub out: PathBuf,
    /// The source data set, e.g. `fashion-mnist/train`.
    pub source: String,
    /// Patients (distinct base images).
    pub patients: usize,
    /// Images (studies), one CSV row each.
    pub images: usize,
    /// Side of the images.
    pub size: usize,
    /// The seed.
    pub seed: u64,
    /// Fraction of images with each finding.
    pub prevalence: BTreeMap<String, f64>,
    /// Whether a previous demo site in `out` was replaced.
    pub replaced: bool,
}

/// One patient: a base image and how many studies show it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Patient {
    /// `P` and six digits.
    id: String,
    /// Row of the base image in the source.
    base: usize,
    /// The base image's class.
    class: usize,
    /// Number of studies.
    studies: usize,
}

/// The acquisition-like changes of one study.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Acquisition {
    /// Shift (x, y) in source pixels.
    shift: [f64; 2],
    /// Rotation in radians.
    angle: f64,
    /// Scale factor about the centre.
    zoom: f64,
    /// Multiplies the intensity last (brightness).
    gain: f64,
    /// Scales the intensity about mid-grey.
    contrast: f64,
    /// Exponent of the intensity in [0, 1].
    gamma: f64,
    /// σ of the Gaussian noise, in grey levels.
    noise: f64,
}

impl Acquisition {
    /// Draws every change uniformly from its range.
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let mut within = |r: f64| rng.random_range(-r..=r);
        Acquisition {
            shift: [within(MAX_SHIFT), within(MAX_SHIFT)],
            angle: within(MAX_ANGLE_DEGREES).to_radians(),
            zoom: 1.0 + within(MAX_ZOOM),
            gain: 1.0 + within(MAX_PHOTOMETRIC),
            contrast: 1.0 + within(MAX_PHOTOMETRIC),
            gamma: 1.0 + within(MAX_PHOTOMETRIC),
            noise: rng.random_range(NOISE_SIGMA),
        }
    }
}

/// The pixel of `image` (`height × width`) at (`x`, `y`), bilinearly interpolated, black
/// outside the image.
fn bilinear(image: &[u8], height: usize, width: usize, x: f64, y: f64) -> f64 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |dx: f64, dy: f64| {
        let (xi, yi) = (x0 + dx, y0 + dy);
        if xi >= 0.0 && yi >= 0.0 && xi < width as f64 && yi < height as f64 {
            f64::from(image[yi as usize * width + xi as usize])
        } else {
            0.0
        }
    };
    let top = at(0.0, 0.0) * (1.0 - fx) + at(1.0, 0.0) * fx;
    let bottom = at(0.0, 1.0) * (1.0 - fx) + at(1.0, 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// One study of `base` (`height × width`, one channel) as `size × size` pixels.
fn render(
    base: &[u8],
    height: usize,
    width: usize,
    size: usize,
    a: &Acquisition,
    rng: &mut ChaCha8Rng,
) -> Vec<u8> {
    let (step_x, step_y) = (width as f64 / size as f64, height as f64 / size as f64);
    let (cx, cy) = ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0);
    let (sin, cos) = a.angle.sin_cos();
    let noise = Normal::new(0.0, a.noise).expect("a finite, positive σ");
    let mut pixels = Vec::with_capacity(size * size);
    for row in 0..size {
        for col in 0..size {
            // The output pixel's centre in source pixels, relative to the centre, then the
            // forward change (zoom, rotate, shift) undone.
            let px = (col as f64 + 0.5) * step_x - 0.5 - cx - a.shift[0];
            let py = (row as f64 + 0.5) * step_y - 0.5 - cy - a.shift[1];
            let x = (cos * px + sin * py) / a.zoom + cx;
            let y = (cos * py - sin * px) / a.zoom + cy;
            let v = bilinear(base, height, width, x, y) / 255.0;
            let v = a.gain * (0.5 + a.contrast * (v.powf(a.gamma) - 0.5));
            let grey = (v * 255.0 + noise.sample(rng)).round().clamp(0.0, 255.0);
            pixels.push(grey as u8);
        }
    }
    pixels
}

/// A seed from a string, for [`mix`].
fn string_seed(s: &str) -> u64 {
    s.bytes().fold(0, |h, b| mix(h, DEMO_STREAM, u64::from(b), 0))
}

/// The site's patients: distinct base images in a seeded order, their IDs and study counts.
///
/// IDs are drawn with the source's name mixed into the seed, so that a train and a test site
/// of one seed get different IDs (they may still share one by chance; IDs name patients within
/// one site).
fn plan(source: &Dataset, options: &SiteOptions) -> anyhow::Result<Vec<Patient>> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(options.seed, DEMO_STREAM, 0, 0));
    let mut order: Vec<usize> = (0..source.len()).collect();
    order.shuffle(&mut rng);
    let mut seen = HashSet::new();
    let bases: Vec<usize> = order
        .into_iter()
        .filter(|&i| seen.insert(source.image(i)))
        .take(options.patients)
        .collect();
    ensure!(
        bases.len() == options.patients,
        "{} holds {} distinct images, fewer than the {} patients asked for",
        source.name,
        seen.len(),
        options.patients
    );
    ensure!(options.patients <= ID_SPACE, "at most {ID_SPACE} patients");
    let mut id_rng =
        ChaCha8Rng::seed_from_u64(mix(options.seed, DEMO_STREAM, 1, string_seed(&source.name)));
    let ids = rand::seq::index::sample(&mut id_rng, ID_SPACE, options.patients);
    Ok(bases
        .into_iter()
        .zip(ids)
        .map(|(base, id)| Patient {
            id: format!("P{id:06}"),
            base,
            class: argmax(source.label(base)),
            studies: rng.random_range(options.min_studies..=options.max_studies),
        })
        .collect())
}

/// What lies at the site's directory before writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    /// Nothing, or an empty directory (replaced by the rename).
    Nothing,
    /// A previous demo site.
    DemoSite,
}

/// Whether `dir` holds a demo site and nothing else: `README.txt` starting with the marker,
/// `findings.csv`, and `images/` of PNG files.
fn is_demo_site(dir: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let fits = match entry.file_name().to_str() {
            Some("README.txt" | "findings.csv") => kind.is_file(),
            Some("images") => kind.is_dir(),
            _ => false,
        };
        if !fits {
            return Ok(false);
        }
    }
    let readme = match std::fs::read_to_string(dir.join("README.txt")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if readme.lines().next() != Some(README_MARKER) {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir.join("images"))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() || entry.path().extension().is_none_or(|e| e != "png") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What lies at `out`; refuses anything but nothing, an empty directory or a demo site.
fn existing(out: &Path) -> anyhow::Result<Existing> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", out.display())),
    };
    ensure!(meta.is_dir(), "{} exists and is not a directory", out.display());
    let read = |e| anyhow::Error::new(e).context(format!("cannot read {}", out.display()));
    if std::fs::read_dir(out).map_err(read)?.next().is_none() {
        Ok(Existing::Nothing)
    } else if is_demo_site(out).map_err(read)? {
        Ok(Existing::DemoSite)
    } else {
        bail!(
            "{} is not empty and not a demo site: refusing to overwrite it (pass a new or empty directory)",
            out.display()
        )
    }
}

/// The three lines of `README.txt`.
fn readme(source: &Dataset, options: &SiteOptions) -> String {
    format!(
        "{README_MARKER}\n\
         Each patient is one image of {}; each of its {}–{} studies is that image shifted (±{MAX_SHIFT} px), \
         rotated (±{MAX_ANGLE_DEGREES}°) and zoomed (±{zoom} %), with gain, contrast and gamma changed (±{photo} %) \
         and Gaussian noise (σ {}–{} grey levels) added, as {size}×{size} 8-bit PNG.\n\
         findings.csv holds one row per study; its findings are groups of Fashion-MNIST classes \
         (docs/demo-site.md). Written by `unpersonal-train demo-site` with seed {}.\n",
        source.name,
        options.min_studies,
        options.max_studies,
        NOISE_SIGMA.start(),
        NOISE_SIGMA.end(),
        options.seed,
        zoom = MAX_ZOOM * 100.0,
        photo = MAX_PHOTOMETRIC * 100.0,
        size = options.size,
    )
}

/// Writes the site's files into `dir` (an empty directory); returns the number of images.
fn write_files(
    source: &Dataset,
    patients: &[Patient],
    options: &SiteOptions,
    dir: &Path,
) -> anyhow::Result<usize> {
    let images = dir.join("images");
    std::fs::create_dir(&images).with_context(|| format!("cannot create {}", images.display()))?;
    let mut rows = Vec::new();
    for (p, patient) in patients.iter().enumerate() {
        let base = source.image(patient.base);
        for study in 1..=patient.studies {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(
                options.seed,
                DEMO_STREAM,
                2 + p as u64,
                study as u64,
            ));
            let acquisition = Acquisition::draw(&mut rng);
            let pixels =
                render(base, source.height, source.width, options.size, &acquisition, &mut rng);
            let png =
                encode_png(&pixels, 1, options.size, options.size).map_err(anyhow::Error::msg)?;
            let name = format!("{}_{study}.png", patient.id);
            let path = images.join(&name);
            std::fs::write(&path, png)
                .with_context(|| format!("cannot write {}", path.display()))?;
            rows.push((format!("images/{name}"), p));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix(options.seed, DEMO_STREAM, 1, 0));
    rows.shuffle(&mut rng);
    let mut csv = csv_header() + "\n";
    for (path, p) in &rows {
        let patient = &patients[*p];
        write!(csv, "{path},{}", patient.id).expect("writing to a String");
        for has in findings_of(patient.class) {
            write!(csv, ",{}", u8::from(has)).expect("writing to a String");
        }
        csv.push('\n');
    }
    for (name, text) in [("findings.csv", csv), ("README.txt", readme(source, options))] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(rows.len())
}

/// Fraction of images with each finding; refuses a site where a finding is never or always
/// present (nothing to learn or test about it).
fn prevalence(patients: &[Patient]) -> anyhow::Result<BTreeMap<String, f64>> {
    let images: usize = patients.iter().map(|p| p.studies).sum();
    let mut positives = [0usize; FINDINGS.len()];
    for patient in patients {
        for (count, has) in positives.iter_mut().zip(findings_of(patient.class)) {
            *count += usize::from(has) * patient.studies;
        }
    }
    FINDINGS
        .iter()
        .zip(positives)
        .map(|(finding, count)| {
            ensure!(
                0 < count && count < images,
                "finding `{}` is {} of the {images} images: ask for more patients",
                finding.name,
                if count == 0 { "in none" } else { "in all" }
            );
            Ok((finding.name.to_owned(), count as f64 / images as f64))
        })
        .collect()
}

/// Writes a demo site made from `source` (one-channel images with Fashion-MNIST's ten one-hot
/// classes) into `out`, as the module documentation describes.
///
/// `out` must not exist, be empty, or hold a previous demo site (which is replaced); anything
/// else is refused. The site is written into a temporary sibling (`.partial-demo-site-…`) and
/// renamed into place at the end, so that a killed run leaves at most that sibling behind,
/// never a half-written `out`.
pub fn write_site(
    source: &Dataset,
    out: &Path,
    options: &SiteOptions,
) -> anyhow::Result<SiteSummary> {
    options.check()?;
    ensure!(
        source.channels == 1 && source.num_labels == IDX_CLASSES && !source.multi_label,
        "{}: a demo site is made from one-channel images with {IDX_CLASSES} one-hot classes \
         (Fashion-MNIST)",
        source.name
    );
    let existing = existing(out)?;
    let patients = plan(source, options)?;
    let prevalence = prevalence(&patients)?;

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let temporary = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!("{PARTIAL}demo-site-{what}"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a temporary directory in {}", parent.display()))
    };
    let staged = temporary("")?;
    let images = write_files(source, &patients, options, staged.path())?;

    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
    };
    match existing {
        Existing::Nothing => moved(staged.path(), out)?,
        Existing::DemoSite => {
            // The old site goes into an empty temporary directory (removed when dropped),
            // the new one takes its place; on failure the old one is put back.
            let old = temporary("old-")?;
            moved(out, old.path())?;
            if let Err(e) = moved(staged.path(), out) {
                let _ = std::fs::rename(old.path(), out);
                return Err(e);
            }
        }
    }
    // Moved: nothing left to clean up.
    let _ = staged.keep();
    Ok(SiteSummary {
        out: out.to_path_buf(),
        source: source.name.clone(),
        patients: patients.len(),
        images,
        size: options.size,
        seed: options.seed,
        prevalence,
        replaced: existing == Existing::DemoSite,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` distinct random 28×28 images of class `i % 10`, and a copy of image 0 at the end.
    fn tiny_source(n: usize) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut images: Vec<u8> = (0..n * 784).map(|_| rng.random()).collect();
        images.extend_from_within(..784);
        let mut labels = vec![0f32; (n + 1) * IDX_CLASSES];
        for (i, row) in labels.chunks_exact_mut(IDX_CLASSES).enumerate() {
            row[i % n % IDX_CLASSES] = 1.0;
        }
        Dataset {
            name: "tiny/train".into(),
            channels: 1,
            height: 28,
            width: 28,
            num_labels: IDX_CLASSES,
            multi_label: false,
            images,
            labels,
            allows_hflip: true,
            identities: vec![None; n + 1],
            label_names: Vec::new(),
        }
    }

    fn options(patients: usize, seed: u64) -> SiteOptions {
        SiteOptions { patients, seed, ..SiteOptions::default() }
    }

    /// Every file under `dir` (relative path, bytes), sorted.
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    all.push((
                        path.strip_prefix(dir).unwrap().to_path_buf(),
                        std::fs::read(&path).unwrap(),
                    ));
                }
            }
        }
        all.sort();
        all
    }

    /// The CSV's data rows, split at commas.
    fn rows(dir: &Path) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(dir.join("findings.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("path,patient_id,upper_body,footwear,long,warm,accessory"));
        lines.map(|l| l.split(',').map(str::to_owned).collect()).collect()
    }

    #[test]
    fn patients_get_the_asked_number_of_distinct_studies() {
        let source = tiny_source(60);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("site");
        let summary = write_site(&source, &out, &options(40, 1)).unwrap();
        assert_eq!(summary.patients, 40);
        let rows = rows(&out);
        assert_eq!(rows.len(), summary.images);
        let mut per_patient = BTreeMap::<&str, usize>::new();
        for row in &rows {
            assert!(row[0].starts_with(&format!("images/{}_", row[1])), "{row:?}");
            *per_patient.entry(&row[1]).or_default() += 1;
            let image = image::open(out.join(&row[0])).unwrap();
            assert_eq!((image.width(), image.height()), (28, 28));
            assert!(matches!(image, image::DynamicImage::ImageLuma8(_)));
        }
        assert_eq!(per_patient.len(), 40);
        assert!(per_patient.values().all(|n| (2..=5).contains(n)), "{per_patient:?}");
        assert!(per_patient.keys().all(|id| id.len() == 7 && id.starts_with('P')));
        // Rows are shuffled, not grouped by patient.
        let runs = rows.windows(2).filter(|w| w[0][1] != w[1][1]).count() + 1;
        assert!(runs > 40 * 2, "{runs} runs of one patient");
        // Every file is in the CSV, and the README is there.
        assert_eq!(files(&out).len(), rows.len() + 2);
        let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
        assert!(readme.starts_with(README_MARKER) && readme.contains("tiny/train"), "{readme}");
        // Two studies of one patient differ.
        let first = &rows[0];
        let studies: Vec<_> = rows.iter().filter(|r| r[1] == first[1]).collect();
        let pixels =
            |r: &Vec<String>| image::open(out.join(&r[0])).unwrap().into_luma8().into_raw();
        assert_ne!(pixels(studies[0]), pixels(studies[1]));
    }

    #[test]
    fn the_same_seed_writes_the_same_bytes() {
        let source = tiny_source(30);
        let tmp = tempfile::tempdir().unwrap();
        let site = |name: &str, seed: u64| {
            let out = tmp.path().join(name);
            write_site(&source, &out, &options(20, seed)).unwrap();
            files(&out)
        };
        let a = site("a", 3);
        assert_eq!(a, site("b", 3));
        assert_ne!(a, site("c", 4));
    }

    #[test]
    fn findings_are_the_base_class_groups() {
        let source = tiny_source(50);
        let opts = options(30, 5);
        let patients = plan(&source, &opts).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let summary = write_site(&source, tmp.path(), &opts).unwrap();
        let mut seen = [false; 3];
        for row in rows(tmp.path()) {
            let patient = patients.iter().find(|p| p.id == row[1]).unwrap();
            let class = argmax(source.label(patient.base));
            let expected: Vec<String> =
                findings_of(class).iter().map(|&f| u8::from(f).to_string()).collect();
            assert_eq!(row[2..], expected[..], "class {class}");
            seen[expected.iter().filter(|v| *v == "1").count()] = true;
        }
        assert_eq!(seen, [true; 3], "images with 0, 1 and 2 findings");
        assert_eq!(summary.prevalence.len(), FINDINGS.len());
        assert!(summary.prevalence.values().all(|&p| 0.0 < p && p < 1.0));
        // The groups as documented.
        assert_eq!(findings_of(0), [false; 5]);
        assert_eq!(findings_of(4), [true, false, false, true, false]);
        assert_eq!(findings_of(9), [false, true, false, true, false]);
        assert_eq!(findings_of(8), [false, false, false, false, true]);
        // A finding never (or always) present is refused: here every image is a bag.
        let mut bags = source.clone();
        for row in bags.labels.chunks_exact_mut(IDX_CLASSES) {
            row.fill(0.0);
            row[8] = 1.0;
        }
        let err = write_site(&bags, &tmp.path().join("bags"), &opts).unwrap_err().to_string();
        assert!(err.contains("finding `upper_body` is in none"), "{err}");
    }

    #[test]
    fn no_two_patients_share_a_base_image() {
        // 20 distinct images and a copy of the first: 21 rows, 20 possible patients.
        let source = tiny_source(20);
        let patients = plan(&source, &options(20, 9)).unwrap();
        let bases: HashSet<&[u8]> = patients.iter().map(|p| source.image(p.base)).collect();
        assert_eq!(bases.len(), 20);
        let ids: HashSet<&str> = patients.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), 20);
        // Classes are mixed: the first ten patients are not the first ten rows.
        assert_ne!(
            patients.iter().take(10).map(|p| p.base).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        let err = plan(&source, &options(21, 9)).unwrap_err().to_string();
        assert!(err.contains("20 distinct images"), "{err}");
    }

    #[test]
    fn a_foreign_directory_is_refused_and_a_demo_site_replaced() {
        let source = tiny_source(30);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("data");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = write_site(&source, &out, &options(20, 1)).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
        // A file is refused too.
        let err = write_site(&source, &out.join("notes.txt"), &options(20, 1)).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");

        // An empty directory is filled; a demo site is replaced, even by a smaller one.
        let site = tmp.path().join("site");
        std::fs::create_dir(&site).unwrap();
        assert!(!write_site(&source, &site, &options(20, 1)).unwrap().replaced);
        let summary = write_site(&source, &site, &options(10, 2)).unwrap();
        assert!(summary.replaced);
        assert_eq!(files(&site).len(), summary.images + 2);
        // A demo site with a file of the user's is no longer a demo site.
        std::fs::write(site.join("mine.csv"), "x").unwrap();
        assert!(write_site(&source, &site, &options(10, 2)).is_err());
        // Nothing but the two directories (and no temporary leftovers) remains.
        let mut left: Vec<_> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["data", "site"]);
    }

    #[test]
    fn the_site_loads_as_a_findings_csv() {
        let source = tiny_source(40);
        let tmp = tempfile::tempdir().unwrap();
        let summary = write_site(&source, tmp.path(), &options(25, 4)).unwrap();
        let csv = tmp.path().join("findings.csv");
        let site = Dataset::load(&csv, crate::data::Split::Train).unwrap();
        assert_eq!((site.len(), site.num_labels, site.height), (summary.images, 5, 28));
        assert!(site.multi_label);
        assert_eq!(site.label_names, FINDINGS.map(|f| f.name));
        let people: HashSet<_> = site.identities.iter().map(|id| id.unwrap()).collect();
        assert_eq!(people.len(), 25);
    }

    #[test]
    fn a_larger_size_scales_the_images() {
        let source = tiny_source(30);
        let tmp = tempfile::tempdir().unwrap();
        let summary =
            write_site(&source, tmp.path(), &SiteOptions { size: 36, ..options(20, 1) }).unwrap();
        assert_eq!(summary.size, 36);
        let row = &rows(tmp.path())[0];
        let image = image::open(tmp.path().join(&row[0])).unwrap();
        assert_eq!((image.width(), image.height()), (36, 36));
    }

    #[test]
    fn a_study_stays_close_to_its_base_image() {
        // A smooth blob, shifted and rotated slightly: most pixels stay within a few levels.
        let base: Vec<u8> = (0..784)
            .map(|i| {
                let (x, y) = ((i % 28) as f64 - 13.5, (i / 28) as f64 - 13.5);
                (255.0 * (-(x * x + y * y) / 60.0).exp()) as u8
            })
            .collect();
        let plain = Acquisition {
            shift: [0.0; 2],
            angle: 0.0,
            zoom: 1.0,
            gain: 1.0,
            contrast: 1.0,
            gamma: 1.0,
            noise: 1e-9,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(render(&base, 28, 28, 28, &plain, &mut rng), base);
        let shifted = Acquisition { shift: [1.0, 0.0], ..plain };
        let moved = render(&base, 28, 28, 28, &shifted, &mut rng);
        assert_eq!(moved[14 * 28 + 15], base[14 * 28 + 14]);
        for _ in 0..20 {
            let a = Acquisition::draw(&mut rng);
            assert!(
                a.shift.iter().all(|s| s.abs() <= MAX_SHIFT) && (a.zoom - 1.0).abs() <= MAX_ZOOM
            );
            assert!(NOISE_SIGMA.contains(&a.noise));
            let study = render(&base, 28, 28, 28, &a, &mut rng);
            let mean_diff =
                study.iter().zip(&base).map(|(&s, &b)| f64::from(s.abs_diff(b))).sum::<f64>()
                    / 784.0;
            assert!(mean_diff < 30.0, "{a:?}: mean difference {mean_diff}");
        }
    }

    #[test]
    fn fashion_mnist_makes_a_balanced_site() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.is_dir() {
            println!("note: {} is absent; test skipped", dir.display());
            return;
        }
        let source = Dataset::load(dir, crate::data::Split::Test).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let summary = write_site(&source, tmp.path(), &options(300, 0)).unwrap();
        for (name, expected) in [
            ("upper_body", 0.3),
            ("footwear", 0.3),
            ("long", 0.2),
            ("warm", 0.3),
            ("accessory", 0.1),
        ] {
            let p = summary.prevalence[name];
            assert!((p - expected).abs() < 0.08, "{name}: {p}");
        }
    }
}
