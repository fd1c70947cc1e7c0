//! `unpersonal info`: verify a bundle and describe it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use unpersonal_runtime::bundle::privacy::Standing;
use unpersonal_runtime::bundle::{BundleDir, ModelSpec, Role, TensorSpec, shape_string};

use super::Output;

/// Arguments of `unpersonal info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle directory (holding bundle.json and the ONNX files it names).
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist", value_parser = super::bundle_dir)]
    pub bundle: PathBuf,
}

/// Loads and verifies the bundle, then prints it as text or JSON.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let mut value = serde_json::to_value(&loaded.bundle)?;
    value["directory"] = json!(args.bundle.display().to_string());
    for &role in loaded.bundle.models.keys() {
        let bytes = loaded.onnx(role)?;
        value["models"][role.as_str()]["bytes"] = json!(bytes.len());
        value["models"][role.as_str()]["verified"] = json!(true);
    }
    let standing = loaded.bundle.privacy_standing();
    value["release"] = json!({ "policy": standing.policy(), "summary": standing.to_string() });
    out.json(&value)?;
    out.text(&describe(&loaded)?);
    Ok(())
}

fn describe(loaded: &BundleDir) -> anyhow::Result<String> {
    let b = &loaded.bundle;
    let mut s = String::new();
    let image = &b.image;
    let norm = &image.normalization;
    writeln!(
        s,
        "bundle {} ({}), schema version {}",
        b.name,
        loaded.dir.display(),
        b.schema_version
    )?;
    writeln!(
        s,
        "image   {}×{}×{} (channels × height × width); x = (pixel/255 − {}) / {}",
        image.channels, image.height, image.width, norm.mean, norm.std
    )?;
    let kind = if b.labels.multi_label {
        "independent labels (multi-hot)"
    } else {
        "classes, one per image"
    };
    writeln!(s, "labels  {} {kind}", b.labels.count)?;
    if let Some(edm) = &b.edm {
        writeln!(s, "edm     sigma_data {}", edm.sigma_data)?;
    }
    let p = &b.sampler;
    let guided =
        p.guidance_interval.map_or_else(String::new, |[lo, hi]| format!(" at {lo} < sigma ≤ {hi}"));
    writeln!(
        s,
        "sampler {} {} steps, sigma {}…{}, rho {}, guidance {}{guided}; {} candidates per image, guidance −{} per round, at most {} rounds",
        p.solver,
        p.steps,
        p.sigma_max,
        p.sigma_min,
        p.rho,
        p.guidance,
        p.candidates_per_image,
        p.guidance_decrement,
        p.max_rounds
    )?;
    if let Some(reid) = &b.reid {
        writeln!(
            s,
            "reid    same person when sigmoid(logit) ≥ {} against a candidate's source, ≥ {} against any of the {} nearest other references",
            reid.threshold,
            reid.neighbour_threshold(),
            reid.neighbours
        )?;
    }
    privacy(&mut s, &b.privacy_standing())?;
    writeln!(s, "models")?;
    for &role in Role::ALL.iter().filter(|r| b.models.contains_key(r)) {
        let spec = b.model(role)?;
        let bytes = loaded.onnx(role)?;
        model(&mut s, role, spec, bytes.len())?;
    }
    Ok(s.trim_end().to_string())
}

/// The privacy lines: what the membership audit measured, each model's DP guarantee, and
/// the policy line (or why no record applies to these weights).
fn privacy(s: &mut String, standing: &Standing) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    if let Standing::Recorded(p) = standing {
        if let Some(m) = &p.membership {
            let set = |count: usize, name: &Option<String>| match name {
                Some(name) => format!("{count} ({name})"),
                None => count.to_string(),
            };
            lines.push(format!(
                "membership audit {} (runtime {}): worst AUC {:.3} ({} {}), worst TPR@1% FPR {:.4} ({} {}); {} members vs {} non-members",
                m.date,
                m.runtime_version,
                m.worst_auc.value,
                m.worst_auc.model,
                m.worst_auc.attack,
                m.worst_tpr_at_fpr_1pct.value,
                m.worst_tpr_at_fpr_1pct.model,
                m.worst_tpr_at_fpr_1pct.attack,
                set(m.members.count, &m.members.name),
                set(m.non_members.count, &m.non_members.name),
            ));
        }
        let dp = &p.model_release.dp;
        let mut parts: Vec<String> =
            dp.iter().filter_map(|(role, g)| Some(format!("{role} {}", g.as_ref()?))).collect();
        let without: Vec<&str> =
            dp.iter().filter(|(_, g)| g.is_none()).map(|(role, _)| role.as_str()).collect();
        if !without.is_empty() {
            parts.push(format!("{} not DP-trained", without.join(", ")));
        }
        lines.push(format!("DP: {}", parts.join("; ")));
    }
    lines.push(standing.to_string());
    for (i, line) in lines.iter().enumerate() {
        writeln!(s, "{}{line}", if i == 0 { "privacy " } else { "        " })?;
    }
    Ok(())
}

fn model(s: &mut String, role: Role, spec: &ModelSpec, size: usize) -> anyhow::Result<()> {
    writeln!(s, "  {role}: {} ({size} bytes), sha256 {} verified", spec.file, spec.sha256)?;
    let width = spec.inputs.iter().chain(&spec.outputs).map(|t| t.name.len()).max().unwrap_or(0);
    let tensor = |s: &mut String, kind: &str, t: &TensorSpec| {
        writeln!(s, "    {kind} {:width$}  {}", t.name, shape_string(&t.shape))
    };
    for t in &spec.inputs {
        tensor(s, "in ", t)?;
    }
    for t in &spec.outputs {
        tensor(s, "out", t)?;
    }
    if !spec.provenance.is_null() {
        let text = serde_json::to_string_pretty(&spec.provenance)?;
        writeln!(s, "    provenance {}", text.replace('\n', "\n    "))?;
    }
    Ok(())
}
