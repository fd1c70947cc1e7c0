//! The browser's generator, as plain Rust: a verified bundle on the tract backend (with the
//! denoising loop on WebGPU when the browser has an adapter), the reference images the user
//! picked, and the release being built, one reference image at a time so that the page can
//! show progress and stop between images. Nothing here touches the network or the page;
//! [`crate::bindings`] is the JavaScript face of it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use ndarray::{Array2, Array4, ArrayView3, Axis};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use unpersonal_runtime::backend::Tract;
use unpersonal_runtime::backend::webgpu::WebGpu;
use unpersonal_runtime::bundle::{BundleDir, Role};
use unpersonal_runtime::gate::Verdict;
use unpersonal_runtime::generate::{Generator, Overrides, SampleId, Settings, interleaved};
use unpersonal_runtime::pixels::encode_png;
use unpersonal_runtime::release::{self, Gate, References, Watch};
use unpersonal_runtime::report::{self, GateRule, Record, RunInfo};
use unpersonal_runtime::sampler::Solver;

use crate::archive;
use crate::references::{self, Reference};

/// The settings a user may change: the seed, and what changes of the bundle's sampler
/// defaults (the rest of [`Settings`] comes from the bundle), checked as the CLI's flags are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Choices {
    /// Seed of the initial noise.
    pub seed: u64,
    /// Candidates, guidance, steps, rounds (and solver, interval) the user set.
    #[serde(flatten)]
    pub overrides: Overrides,
}

/// One image shown on the page: a released image, or (only on the page, never in the
/// release) a rejected candidate with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    /// PNG bytes, base64.
    pub png: String,
    /// The highest same-person probability against the references it was compared with.
    pub score: f32,
    /// The guidance weight it was drawn with.
    pub guidance: f32,
    /// Its file in the release (released images only).
    pub file: Option<String>,
    /// Why the gate rejected it (rejected candidates only).
    pub reason: Option<String>,
}

/// What one reference image gave.
#[derive(Clone, Debug, Serialize)]
pub struct Drawn {
    /// Its position among the references.
    pub reference: usize,
    /// Candidates rejected in each round that ran.
    pub rejected_per_round: Vec<usize>,
    /// Released images, best first (empty: it released nothing).
    pub released: Vec<Shown>,
    /// Rejected candidates.
    pub rejected: Vec<Shown>,
}

/// The references as the gate and the sampler see them.
struct Prepared {
    index: References,
    conditions: Array2<f32>,
    labels: Vec<Vec<f32>>,
    labels_from: &'static str,
}

/// A bundle ready to generate, the picked references and the release so far.
pub struct Studio {
    loaded: BundleDir,
    /// What runs the models, in words (for the page and the report).
    backend: String,
    /// The GPU the denoising loop runs on, if any.
    gpu: Option<WebGpu>,
    generator: Generator,
    gate: Gate,
    references: Vec<Reference>,
    prepared: Option<Prepared>,
    records: Vec<Record>,
    images: BTreeMap<String, Vec<u8>>,
}

/// Collects what the gate rejected and forwards step progress.
struct Collect<'a> {
    on_step: &'a mut dyn FnMut(usize, usize, usize),
    rejected: Vec<(SampleId, f32, Verdict, Vec<u8>)>,
    shape: [usize; 3],
}

impl Watch for Collect<'_> {
    fn step(&mut self, round: usize, done: usize, total: usize) {
        (self.on_step)(round, done, total);
    }

    fn rejected(&mut self, id: SampleId, guidance: f32, verdict: &Verdict, pixels: ArrayView3<u8>) {
        let [c, h, w] = self.shape;
        let png = encode_png(&interleaved(pixels), c, h, w).unwrap_or_default();
        self.rejected.push((id, guidance, verdict.clone(), png));
    }
}

/// The generator of `settings` on tract, with the denoising loop on `gpu` when given.
fn load_generator(
    loaded: &BundleDir,
    gpu: Option<&WebGpu>,
    settings: Settings,
) -> Result<Generator, String> {
    let generator = match gpu {
        Some(gpu) => Generator::load_on(loaded, &Tract::default(), gpu, settings),
        None => Generator::load(loaded, &Tract::default(), settings),
    };
    generator.map_err(|e| e.to_string())
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Studio {
    /// Loads and verifies the bundle `name` whose files `read` returns (given `name/<file>`),
    /// on the tract backend, with the denoising loop on `gpu` when given.
    pub fn load(
        name: &str,
        read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
        gpu: Option<&WebGpu>,
    ) -> Result<Studio, String> {
        let loaded = BundleDir::read_with(Path::new(name), read).map_err(|e| e.to_string())?;
        let settings = Settings::from_bundle(&loaded.bundle.sampler, 0);
        let generator = load_generator(&loaded, gpu, settings)?;
        let backend = match gpu {
            Some(gpu) => format!(
                "webgpu ({}) for the denoising loop, tract (wasm) for the features and the gate",
                gpu.adapter()
            ),
            None => "tract (wasm)".to_string(),
        };
        let gate = Gate::load(&loaded, &Tract::default()).map_err(|e| e.to_string())?;
        Ok(Studio {
            loaded,
            backend,
            gpu: gpu.cloned(),
            generator,
            gate,
            references: Vec::new(),
            prepared: None,
            records: Vec::new(),
            images: BTreeMap::new(),
        })
    }

    /// What runs the models, in words.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// `[channels, height, width]` of the bundle's images.
    pub fn shape(&self) -> [usize; 3] {
        let image = &self.loaded.bundle.image;
        [image.channels, image.height, image.width]
    }

    /// What the page shows about the bundle: name, backend, image shape, labels, the sampler's
    /// defaults, the gate's thresholds and the weights' release policy line (as
    /// `unpersonal info` words it).
    pub fn info(&self) -> Value {
        let bundle = &self.loaded.bundle;
        let s = &bundle.sampler;
        let choices = |settings: Settings| Choices {
            seed: 0,
            overrides: Overrides {
                solver: Some(settings.solver),
                steps: Some(settings.steps),
                guidance: Some(settings.guidance),
                guidance_interval: settings.guidance_interval,
                candidates: Some(settings.candidates),
                rounds: Some(settings.rounds),
            },
        };
        // Each solver the bundle offers with its own defaults: the student's steps, unguided.
        let solvers: Vec<Choices> = [Solver::Heun, Solver::DpmPp2M, Solver::Distilled]
            .into_iter()
            .filter(|&solver| solver == s.solver || solver == Solver::Distilled)
            .filter_map(|solver| {
                let overrides = Overrides { solver: Some(solver), ..Overrides::default() };
                Settings::resolve(s, 0, &overrides, str::to_string).ok().map(choices)
            })
            .collect();
        json!({
            "name": bundle.name, "backend": self.backend, "shape": self.shape(), "labels": bundle.labels.count, "multi_label": bundle.labels.multi_label,
            "defaults": choices(Settings::from_bundle(s, 0)), "solvers": solvers,
            "threshold": self.gate.threshold(), "neighbour_threshold": self.gate.neighbour_threshold(), "neighbours": self.gate.neighbours(),
            "policy": bundle.privacy_standing().to_string(),
        })
    }

    /// Adds a reference image from its file's bytes; returns the notice of a conversion.
    pub fn add_reference(&mut self, name: &str, bytes: &[u8]) -> Result<Option<String>, String> {
        let (reference, notice) = references::decode_reference(name, bytes, self.shape())?;
        self.references.push(reference);
        self.prepared = None;
        Ok(notice)
    }

    /// Forgets every reference image and the release.
    pub fn clear_references(&mut self) {
        self.references.clear();
        self.prepared = None;
        self.restart();
    }

    /// Labels the references from a filelist's text.
    pub fn label_references(&mut self, list_name: &str, text: &str) -> Result<(), String> {
        references::label(&mut self.references, list_name, text, self.loaded.bundle.labels.count)?;
        self.prepared = None;
        Ok(())
    }

    /// Reference images picked so far.
    pub fn reference_count(&self) -> usize {
        self.references.len()
    }

    /// Sets the sampler choices and starts a new release.
    pub fn configure(&mut self, choices: &Choices) -> Result<(), String> {
        let settings = Settings::resolve(
            &self.loaded.bundle.sampler,
            choices.seed,
            &choices.overrides,
            str::to_string,
        )?;
        if settings.solver.roles() == self.generator.settings().solver.roles() {
            self.generator.configure(settings).map_err(|e| e.to_string())?;
        } else {
            // Another model samples (the student, or the denoiser again): load it.
            self.generator = load_generator(&self.loaded, self.gpu.as_ref(), settings)?;
        }
        self.restart();
        Ok(())
    }

    fn restart(&mut self) {
        self.records.clear();
        self.images.clear();
    }

    /// Embeds, classifies and pseudo-conditions every reference, once: the gate compares
    /// each candidate with all of them. Starts a new release.
    pub fn prepare(&mut self) -> Result<(), String> {
        if self.references.is_empty() {
            return Err("no reference images: pick some, or use the bundle's sample".into());
        }
        let [c, h, w] = self.shape();
        let flat: Vec<u8> = self.references.iter().flat_map(|r| r.pixels.iter().copied()).collect();
        let pixels = Array4::from_shape_vec((self.references.len(), c, h, w), flat)
            .map_err(|e| e.to_string())?;
        let identities: Vec<_> = self.references.iter().map(|r| r.identity).collect();
        let index =
            self.gate.index(pixels.view()).map_err(|e| e.to_string())?.with_identities(&identities);
        let mut rows = Vec::new();
        for chunk in pixels.axis_chunks_iter(Axis(0), 64) {
            rows.push(self.generator.conditions(chunk).map_err(|e| e.to_string())?);
        }
        let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
        let conditions = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
        let given: Option<Vec<Vec<f32>>> =
            self.references.iter().map(|r| r.labels.clone()).collect();
        let (labels, labels_from) = match given {
            Some(labels) => (labels, "filelist"),
            None => (
                predicted_labels(index.probabilities(), self.loaded.bundle.labels.multi_label),
                "predicted by the bundle's classifier",
            ),
        };
        self.prepared = Some(Prepared { index, conditions, labels, labels_from });
        self.restart();
        Ok(())
    }

    /// Draws and gates the images of reference `k`, reporting `on_step(round, done, total)`
    /// after each denoising step; released images join the release.
    pub async fn draw(
        &mut self,
        k: usize,
        on_step: &mut dyn FnMut(usize, usize, usize),
    ) -> Result<Drawn, String> {
        let prepared = self.prepared.as_ref().ok_or("the references are not prepared")?;
        if k >= self.references.len() {
            return Err(format!("there is no reference image {k} (of {})", self.references.len()));
        }
        let shape = self.shape();
        let mut watch = Collect { on_step, rejected: Vec::new(), shape };
        let conditions = prepared.conditions.select(Axis(0), &[k]);
        let mut results = release::release_async(
            &mut self.generator,
            &mut self.gate,
            &prepared.index,
            &[k],
            conditions.view(),
            1,
            &mut watch,
        )
        .await
        .map_err(|e| e.to_string())?;
        let (outcome, pixels) = results.pop().ok_or("the gate returned nothing")?;
        let [c, h, w] = shape;
        let mut released = Vec::new();
        let mut files = Vec::new();
        for (draw, image) in outcome.released.iter().zip(&pixels) {
            let png = encode_png(&interleaved(image.view()), c, h, w)?;
            let file = report::image_file(&png);
            released.push(Shown {
                png: base64(&png),
                score: draw.scores.as_ref().map_or(f32::NAN, |s| s.max_same_person),
                guidance: draw.guidance,
                file: Some(file.clone()),
                reason: None,
            });
            self.images.insert(file.clone(), png);
            files.push(file);
        }
        let rejected = watch.rejected.iter().map(|(_, guidance, verdict, png)| Shown {
            png: base64(png),
            score: verdict.max_probability,
            guidance: *guidance,
            file: None,
            reason: Some(self.reason(verdict)),
        });
        let drawn = Drawn {
            reference: k,
            rejected_per_round: outcome.rejected.clone(),
            released,
            rejected: rejected.collect(),
        };
        self.records.push(Record { labels: prepared.labels[k].clone(), outcome, files });
        Ok(drawn)
    }

    /// Why the gate rejected a candidate, in words.
    fn reason(&self, verdict: &Verdict) -> String {
        match verdict.rejection {
            Some(r) => format!(
                "re-identifies {} ({}): same-person probability {:.3} ≥ threshold {:.3}",
                self.references.get(r.reference).map_or("a reference image", |x| x.name.as_str()),
                if r.source {
                    "the image it was drawn for"
                } else {
                    "a neighbouring reference image"
                },
                r.probability,
                r.threshold
            ),
            None => "not checked against any reference image".into(),
        }
    }

    /// The run: bundle and model hashes, reference set size, backend, settings, gate rule.
    fn run(&self) -> RunInfo {
        let bundle = &self.loaded.bundle;
        let roles = [
            Role::Denoiser,
            Role::Guide,
            Role::Features,
            Role::Classifier,
            Role::ReidEmbed,
            Role::ReidHead,
        ];
        let used: BTreeMap<&str, &str> = roles
            .into_iter()
            .filter_map(|r| bundle.models.get(&r).map(|m| (r.as_str(), m.sha256.as_str())))
            .collect();
        let labels_from = self.prepared.as_ref().map_or("", |p| p.labels_from);
        RunInfo {
            bundle: json!({ "name": bundle.name, "models": used }),
            reference: json!({ "name": "picked in the browser", "images": self.references.len(), "sources": self.records.len(), "labels": labels_from }),
            backend: self.backend.clone(),
            settings: self.generator.settings().clone(),
            gate: Some(GateRule::new(&self.gate, 1, bundle)),
        }
    }

    /// The aggregate report of the release so far (`report.json`).
    pub fn report(&self) -> Value {
        report::report(&self.run(), self.records.iter(), self.images.len())
    }

    /// The release so far as a zip: `images/*.png`, `filelist.txt`, `report.json`. The
    /// mapping to reference images (the audit log) is never part of it.
    pub fn zip(&self) -> Result<Vec<u8>, String> {
        if self.records.is_empty() {
            return Err("nothing was generated yet".into());
        }
        let mut filelist: BTreeMap<&str, &[f32]> = BTreeMap::new();
        for record in &self.records {
            for file in &record.files {
                filelist.entry(file).or_insert(&record.labels);
            }
        }
        let mut report = serde_json::to_string_pretty(&self.report()).map_err(|e| e.to_string())?;
        report.push('\n');
        archive::zip(&self.images, &report::filelist_text(&filelist), &report)
    }
}

/// Labels from class probabilities: the most probable class (single-label) or every label
/// at or above one half (multi-label).
fn predicted_labels(probabilities: ndarray::ArrayView2<f32>, multi_label: bool) -> Vec<Vec<f32>> {
    probabilities
        .outer_iter()
        .map(|p| {
            let best = p.iter().enumerate().fold(0, |b, (i, &v)| if v > p[b] { i } else { b });
            p.iter()
                .enumerate()
                .map(|(i, &v)| f32::from(u8::from(if multi_label { v >= 0.5 } else { i == best })))
                .collect()
        })
        .collect()
}
