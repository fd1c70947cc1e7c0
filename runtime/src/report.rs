//! What a release says about itself, shared by every front end (the CLI's release directory,
//! the browser's zip): the run description (`run.json`), the audit record of each reference
//! image, the aggregate report (`report.json`, counts only) and the filelist. No I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bundle::{Bundle, sha256_hex};
use crate::generate::Settings;
use crate::release::{Gate, Outcome};

/// What decides the images of a run, besides the code: stored as `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The bundle's name and the SHA-256 of each model used, by role.
    pub bundle: Value,
    /// The reference set's name and size.
    pub reference: Value,
    /// The backend (`tract`, `ort`); backends agree to about 1e-3, not bit for bit.
    pub backend: String,
    /// Sampler settings.
    pub settings: Settings,
    /// The gate's rule, or `None` for an unfiltered research run.
    pub gate: Option<GateRule>,
}

/// The decision rule of the privacy gate in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRule {
    /// Same-person probability against its source at or above which a candidate is rejected.
    pub threshold: f32,
    /// The same against any other reference.
    pub neighbour_threshold: f32,
    /// Nearest references compared besides the source.
    pub neighbours: usize,
    /// Images released at most per reference image.
    pub keep: usize,
    /// How the bundle's thresholds were calibrated and what they catch (the bundle's
    /// `reid.calibration`), so the report carries the numbers its reader must weigh.
    pub calibration: Value,
}

impl GateRule {
    /// The rule of `gate`, releasing at most `keep` images per reference image, with the
    /// calibration recorded in `bundle`.
    pub fn new(gate: &Gate, keep: usize, bundle: &Bundle) -> GateRule {
        GateRule {
            threshold: gate.threshold(),
            neighbour_threshold: gate.neighbour_threshold(),
            neighbours: gate.neighbours(),
            keep,
            calibration: bundle.reid.as_ref().map_or(Value::Null, |r| r.calibration.clone()),
        }
    }
}

/// The audit record of one reference image: its outcome, its labels and the files of its
/// released images (in the order of `outcome.released`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What the gate did.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The reference image's labels, carried by its released images.
    pub labels: Vec<f32>,
    /// Paths of the released images, relative to the release directory.
    pub files: Vec<String>,
}

/// What `generate --unfiltered-research-only` says about the privacy gate.
const UNFILTERED: &str = "NOT APPLIED (--unfiltered-research-only): these are unfiltered candidates. No \
     re-identification check ran, so nothing here is known to be unlinkable to a real person; do not release them.";

/// The aggregate report: counts only, nothing about any single reference image.
pub fn report<'a>(
    run: &RunInfo,
    records: impl Iterator<Item = &'a Record>,
    images: usize,
) -> Value {
    let records: Vec<&Record> = records.collect();
    let released = records.iter().filter(|r| !r.outcome.released.is_empty()).count();
    let mut rounds_needed: BTreeMap<String, usize> = BTreeMap::new();
    let mut guidance: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_round: Vec<(usize, usize)> = Vec::new();
    for r in &records {
        if !r.outcome.released.is_empty() {
            *rounds_needed.entry(r.outcome.rejected.len().to_string()).or_default() += 1;
        }
        for d in &r.outcome.released {
            *guidance.entry(format!("{:.2}", d.guidance)).or_default() += 1;
        }
        for (t, &rejected) in r.outcome.rejected.iter().enumerate() {
            if per_round.len() <= t {
                per_round.push((0, 0));
            }
            per_round[t].0 += 1;
            per_round[t].1 += rejected;
        }
    }
    // Per label: how many reference images carry it and how many of those released nothing —
    // a gate that withholds one class more than another skews the release.
    let labels = records.first().map_or(0, |r| r.labels.len());
    let withheld_by_label: Vec<Value> = (0..labels)
        .map(|l| {
            let carrying: Vec<&&Record> = records.iter().filter(|r| r.labels[l] >= 0.5).collect();
            let withheld = carrying.iter().filter(|r| r.outcome.released.is_empty()).count();
            json!({ "label": l, "reference_images": carrying.len(), "withheld": withheld,
                    "rate": withheld as f64 / carrying.len().max(1) as f64 })
        })
        .collect();
    let candidates = run.settings.candidates;
    let rounds: Vec<Value> = per_round
        .iter()
        .enumerate()
        .map(|(t, &(refs, rejected))| {
            let guidance = (f64::from(run.settings.guidance_in_round(t)) * 1000.0).round() / 1000.0;
            json!({ "round": t + 1, "guidance": guidance, "reference_images": refs,
                    "candidates": refs * candidates, "rejected": rejected,
                    "rejection_rate": rejected as f64 / (refs * candidates).max(1) as f64 })
        })
        .collect();
    let gate = match &run.gate {
        Some(rule) => json!({
            "applied": true,
            "status": "every released image passed the re-identification check against its source reference image and \
                       the nearest reference images by embedding; references all of whose candidates failed released nothing",
            "threshold": rule.threshold, "neighbour_threshold": rule.neighbour_threshold, "neighbours": rule.neighbours,
            "calibration": rule.calibration, "released_per_reference_at_most": rule.keep,
        }),
        None => json!({ "applied": false, "status": UNFILTERED }),
    };
    json!({
        "privacy_gate": gate,
        "reference_images": records.len(),
        "released_images": images,
        "reference_images_released": released,
        "reference_images_withheld": records.len() - released,
        "withheld_by_label": withheld_by_label,
        "rounds_needed": rounds_needed,
        "rounds": rounds,
        "guidance_of_released_images": guidance,
        "filelist": "filelist.txt",
        "run": run,
    })
}

/// The name of a released image inside the release: `images/<first 16 hex digits of the
/// SHA-256 of its PNG bytes>.png`, which says nothing about the reference image it was drawn for.
pub fn image_file(png: &[u8]) -> String {
    format!("images/{}.png", &sha256_hex(png)[..16])
}

/// The filelist of a release: one line per image, `path l0 l1 …`, in path order.
pub fn filelist_text(images: &BTreeMap<&str, &[f32]>) -> String {
    let mut text = String::new();
    for (file, labels) in images {
        text.push_str(file);
        for l in labels.iter() {
            text.push_str(if *l >= 0.5 { " 1" } else { " 0" });
        }
        text.push('\n');
    }
    text
}
