//! `unpersonal audit-models`: membership inference against a bundle's models. Training
//! records (members) and holdout records of the same population (non-members), equal numbers
//! of each, are scored by the attacks of [`unpersonal_runtime::audit::membership`]; the report
//! gives each attack's ROC AUC with a bootstrap interval and its TPR at 0.1 % and 1 % FPR.
//! Nothing written names a file or a record: only counts and aggregate scores.
//!
//! With `--record`, the measurement and the release policy derived from it (and from each
//! model's differential-privacy guarantee, `models.<role>.provenance.dp`) are written into the
//! audited bundle's `bundle.json` as its `privacy` section
//! ([`unpersonal_runtime::bundle::privacy`]).

mod html;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use unpersonal_runtime::atomic::write_atomically;
use unpersonal_runtime::audit::membership::{
    Attacks, Config, DEFAULT_BATCH, DEFAULT_SECMI_SIGMAS, DEFAULT_SIGMAS, MembershipReport, Scores,
    Worst, evaluate,
};
use unpersonal_runtime::bundle::limits::count_problem;
use unpersonal_runtime::bundle::privacy::{
    self, AttackRecord, DpGuarantee, MembershipAudit, ModelRelease, RecordSet, WorstAttack,
};
use unpersonal_runtime::bundle::{BUNDLE_JSON, Bundle, BundleDir, Privacy, Role};
use unpersonal_runtime::data::{Dataset, Split};
use unpersonal_runtime::files::{MAX_FILE_BYTES, read_regular};

use super::reference::{self, Reference};
use super::{BackendArgs, Output, outdir};

/// Arguments of `unpersonal audit-models`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle whose models are attacked.
    #[arg(long, value_name = "DIR", default_value = "models/fashion-mnist")]
    pub bundle: PathBuf,
    /// The records the models were trained on: a filelist, a folder holding one, or an IDX
    /// directory (its training split).
    #[arg(long, value_name = "DATA")]
    pub members: PathBuf,
    /// Records of the same population no model saw: a filelist, a folder holding one, or an
    /// IDX directory (its test split). Images also among --members are left out. Those beyond
    /// the first --count (after the shuffle), up to --count more, calibrate the classifier loss
    /// per class and are never scored as non-members.
    #[arg(long, value_name = "DATA")]
    pub non_members: PathBuf,
    /// Records per side, the first N of each set after a seeded shuffle (fewer when a set is
    /// smaller: both sides then take the smaller count).
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub count: usize,
    /// The denoiser attacks' noise levels, comma-separated.
    #[arg(long, value_name = "S,S,…", value_delimiter = ',', default_values_t = DEFAULT_SIGMAS)]
    pub sigmas: Vec<f32>,
    /// The SecMI attack's noise levels, comma-separated (DDIM inversion to each level, one
    /// step up and one back; docs/membership.md).
    #[arg(
        long,
        value_name = "S,S,…",
        value_delimiter = ',',
        default_values_t = DEFAULT_SECMI_SIGMAS
    )]
    pub secmi_sigmas: Vec<f32>,
    /// Bootstrap resamples of each AUC interval.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the shuffles, the per-record noise and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the full report goes (JSON, written atomically); never inside the data folders.
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Also a self-contained HTML page of the report: per model, ROC curves on log–log axes
    /// and the table (aggregates only; written atomically, never inside the data folders).
    #[arg(long, value_name = "FILE.html")]
    pub html: Option<PathBuf>,
    /// Also record the measurement, each model's DP guarantee (from its provenance) and the
    /// release policy they give (site-only or shareable) in the bundle's bundle.json, as its
    /// `privacy` section (written atomically; the models are not touched).
    #[arg(long)]
    pub record: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// An image set loaded into memory, the folders nothing may be written inside, and the name a
/// bundle may record for it: an IDX directory's `name/split`, never a filelist's path.
fn load(
    path: &Path,
    split: Split,
    loaded: &BundleDir,
) -> anyhow::Result<(Dataset, Vec<PathBuf>, Option<String>)> {
    let opened = reference::open_split(path, split, loaded)?;
    let folders = opened.folders(path);
    let (data, name) = match opened {
        Reference::Idx(data) => {
            let name = Some(data.name.clone()).filter(|n| privacy::is_plain_name(n));
            (data, name)
        }
        Reference::Filelist(_) => (reference::load_split(path, split, loaded)?, None),
    };
    Ok((data, folders, name))
}

/// The indices of `data` in a seeded random order.
fn shuffled(data: &Dataset, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    order
}

/// Runs the attacks and prints (and writes) the report.
pub fn run(args: &Args, out: &Output) -> anyhow::Result<()> {
    let started = Instant::now();
    for (flag, value, range) in
        [("--count", args.count, 1..=1_000_000), ("--resamples", args.resamples, 1..=100_000)]
    {
        if let Some(problem) = count_problem(value, &range) {
            bail!("{flag} {problem}");
        }
    }
    let config = Config {
        sigmas: args.sigmas.clone(),
        secmi_sigmas: args.secmi_sigmas.clone(),
        seed: args.seed,
        batch: DEFAULT_BATCH,
    };
    config.validate().context("--sigmas, --secmi-sigmas")?;
    args.backend.validate()?;
    let loaded = BundleDir::load(&args.bundle)
        .with_context(|| format!("cannot use the bundle in {}", args.bundle.display()))?;
    let (members, member_folders, members_name) = load(&args.members, Split::Train, &loaded)?;
    let (non_members, non_member_folders, non_members_name) =
        load(&args.non_members, Split::Test, &loaded)?;
    // Read before the long run, so a malformed statement stops it at once.
    let dp = if args.record { Some(dp_guarantees(&loaded)?) } else { None };
    for (flag, file) in [("--out", &args.out), ("--html", &args.html)] {
        if let Some(file) = file {
            for folder in member_folders.iter().chain(&non_member_folders) {
                outdir::check_apart(flag, file, "the data folder", folder)?;
            }
        }
    }

    // Non-members must not be training records: drop any pixel-identical to one.
    let seen: HashSet<_> = (0..members.len()).map(|i| Sha256::digest(members.image(i))).collect();
    let order = shuffled(&non_members, args.seed ^ 0x6e6f_6e2d_6d65_6d62);
    let fresh: Vec<usize> = order
        .into_iter()
        .filter(|&i| !seen.contains(&Sha256::digest(non_members.image(i))))
        .collect();
    let shared = non_members.len() - fresh.len();
    if shared * 100 > non_members.len() {
        bail!(
            "{shared} of the {} --non-members images are also among --members: the non-members must be records of the same population that no model saw",
            non_members.len()
        );
    }
    if shared > 0 {
        eprintln!(
            "WARNING: {shared} --non-members images are also among --members; they are left out"
        );
    }
    let count = args.count.min(members.len()).min(fresh.len());
    if count < 2 {
        bail!(
            "--members holds {} and --non-members {} usable images; the audit needs at least 2 of each",
            members.len(),
            fresh.len()
        );
    }
    if count < args.count {
        eprintln!("WARNING: only {count} records per side (of --count {})", args.count);
    }
    let member_rows: Vec<usize> =
        shuffled(&members, args.seed ^ 0x6d65_6d62_6572_7321).into_iter().take(count).collect();
    let non_member_rows = &fresh[..count];
    let reference_rows = &fresh[count..(2 * count).min(fresh.len())];

    let backend = args.backend.single_backend()?;
    let mut attacks = Attacks::load(&loaded, backend.as_ref(), config)?;
    let total = 2 * count + reference_rows.len();
    let bar = out.progress(total, 0, "records");
    let mut score = |data: &Dataset, rows: &[usize]| -> anyhow::Result<Scores> {
        let pixels = data.batch(rows);
        let labels: Vec<f32> = rows.iter().flat_map(|&i| data.label(i).iter().copied()).collect();
        let labels = ArrayView2::from_shape((rows.len(), data.num_labels), &labels)?;
        let mut last = 0;
        Ok(attacks.score(pixels.view(), labels, &mut |done| {
            bar.inc((done - last) as u64);
            last = done;
        })?)
    };
    let member_scores = score(&members, &member_rows)?;
    let non_member_scores = score(&non_members, non_member_rows)?;
    let reference_scores = match reference_rows.is_empty() {
        true => None,
        false => Some(score(&non_members, reference_rows)?),
    };
    bar.finish_and_clear();
    let report = evaluate(
        &member_scores,
        &non_member_scores,
        reference_scores.as_ref(),
        args.resamples,
        args.seed,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let mut value = serde_json::to_value(&report)?;
    value["backend"] = backend.name().into();
    value["seconds"] = seconds.into();
    if let Some(file) = &args.out {
        outdir::write_atomically(file, &outdir::json_bytes(&value)?)?;
    }
    if let Some(file) = &args.html {
        outdir::write_atomically(file, html::render(&report, backend.name(), seconds).as_bytes())?;
    }
    let recorded = match dp {
        Some(dp) => {
            let names = [members_name, non_members_name];
            let privacy = privacy_section(&loaded, &report, names, dp)?;
            write_privacy(&loaded, &privacy)?;
            value["privacy"] = serde_json::to_value(&privacy)?;
            Some(privacy)
        }
        None => None,
    };
    out.json(&value)?;
    out.text(&summary(&report));
    out.text(&format!(
        "{count} members vs {count} non-members ({} reference) on {} in {seconds:.0} s{}",
        report.reference,
        backend.name(),
        args.out.as_ref().map_or(String::new(), |f| format!(" → {}", f.display()))
    ));
    if let Some(privacy) = recorded {
        let release = &privacy.model_release;
        out.text(&format!(
            "recorded in {}: policy: {} — {}",
            loaded.dir.join(BUNDLE_JSON).display(),
            release.policy,
            release.reason
        ));
    }
    Ok(())
}

/// Each model's differential-privacy guarantee as its provenance states it (`dp`), `None`
/// for a model trained without.
fn dp_guarantees(loaded: &BundleDir) -> anyhow::Result<BTreeMap<Role, Option<DpGuarantee>>> {
    loaded
        .bundle
        .models
        .iter()
        .map(|(&role, spec)| {
            DpGuarantee::from_provenance(&spec.provenance)
                .map(|guarantee| (role, guarantee))
                .map_err(|problem| {
                    anyhow::anyhow!(
                        "{}: `models.{role}.provenance.dp` {problem}",
                        loaded.dir.join(BUNDLE_JSON).display()
                    )
                })
        })
        .collect()
}

/// The `privacy` section of this audit: the measurement (data sets by `names`, members
/// first, where they have one a bundle may carry), today's date, this runtime's version,
/// the weights' hashes, `dp`, and the policy the rule derives.
fn privacy_section(
    loaded: &BundleDir,
    report: &MembershipReport,
    names: [Option<String>; 2],
    dp: BTreeMap<Role, Option<DpGuarantee>>,
) -> anyhow::Result<Privacy> {
    let role = |model: &str| {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == model)
            .with_context(|| format!("the audit attacked `{model}`, which is no bundle role"))
    };
    let worst = |w: &Option<Worst>| {
        let w = w.as_ref().context("no attack could run against this bundle: nothing to record")?;
        anyhow::Ok(WorstAttack { model: role(&w.model)?, attack: w.attack.clone(), value: w.value })
    };
    let mut attacks = Vec::new();
    for model in &report.models {
        for a in &model.attacks {
            attacks.push(AttackRecord {
                model: role(&model.model)?,
                attack: a.attack.clone(),
                auc: a.auc,
                auc_ci: a.auc_ci,
                tpr_at_fpr_0_1pct: a.tpr_at_fpr_0_1pct,
                tpr_at_fpr_1pct: a.tpr_at_fpr_1pct,
            });
        }
    }
    let [members_name, non_members_name] = names;
    let membership = MembershipAudit {
        date: privacy::utc_date(SystemTime::now()),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        members: RecordSet { name: members_name, count: report.members },
        non_members: RecordSet { name: non_members_name, count: report.non_members },
        reference: report.reference,
        seed: report.seed,
        resamples: report.resamples,
        sigmas: report.sigmas.clone(),
        secmi_sigmas: report.secmi_sigmas.clone(),
        attacks,
        worst_auc: worst(&report.worst_auc)?,
        worst_tpr_at_fpr_1pct: worst(&report.worst_tpr_at_fpr_1pct)?,
        notes: report.notes.clone(),
    };
    Ok(Privacy {
        weights: loaded.bundle.models.iter().map(|(&r, m)| (r, m.sha256.to_lowercase())).collect(),
        model_release: ModelRelease::derive(dp, Some(&membership)),
        membership: Some(membership),
    })
}

/// Sets `privacy` in the bundle's `bundle.json`, replacing any earlier one, atomically. The
/// file is edited as a JSON value, so every other field keeps its value (the file comes back
/// as pretty JSON with sorted keys, as the trainer writes it). Refused when `bundle.json` or a
/// model file changed since the bundle was loaded (the audit attacked other weights), or when
/// the runtime would not read the result.
fn write_privacy(loaded: &BundleDir, privacy: &Privacy) -> anyhow::Result<()> {
    let path = loaded.dir.join(BUNDLE_JSON);
    let origin = path.display().to_string();
    let bytes = read_regular(&path, MAX_FILE_BYTES)
        .with_context(|| format!("cannot read {origin} again to record the audit"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{origin} is not UTF-8 text"))?;
    let on_disk = Bundle::from_json_at(&text, &origin)?;
    ensure!(
        on_disk.models == loaded.bundle.models,
        "{origin} changed during the audit: its models are no longer the ones attacked; nothing recorded, run the audit again"
    );
    loaded.recheck().context("a model file changed during the audit; nothing recorded")?;
    let mut value: serde_json::Value = serde_json::from_str(&text)?;
    let object =
        value.as_object_mut().with_context(|| format!("{origin} does not hold a JSON object"))?;
    object.insert("privacy".into(), serde_json::to_value(privacy)?);
    let bytes = outdir::json_bytes(&value)?;
    let written = Bundle::from_json_at(std::str::from_utf8(&bytes)?, &origin)
        .context("the recorded bundle.json would not be readable; nothing written")?;
    ensure!(written.models == on_disk.models, "recording would change {origin}'s models");
    write_atomically(&path, &bytes)?;
    Ok(())
}

/// The text table: one row per attack.
pub fn summary(report: &MembershipReport) -> String {
    let mut text = format!(
        "{:<12} {:<18} {:>6}  {:<15} {:>9} {:>9}\n",
        "model", "attack", "AUC", "95 % CI", "TPR@0.1%", "TPR@1%"
    );
    for model in &report.models {
        for a in &model.attacks {
            text.push_str(&format!(
                "{:<12} {:<18} {:>6.3}  [{:.3}, {:.3}] {:>9.4} {:>9.4}\n",
                model.model,
                a.attack,
                a.auc,
                a.auc_ci[0],
                a.auc_ci[1],
                a.tpr_at_fpr_0_1pct,
                a.tpr_at_fpr_1pct
            ));
        }
    }
    if let Some(w) = &report.worst_auc {
        text.push_str(&format!("worst AUC: {:.3} ({} {})\n", w.value, w.model, w.attack));
    }
    if let Some(w) = &report.worst_tpr_at_fpr_1pct {
        text.push_str(&format!("worst TPR@1% FPR: {:.4} ({} {})\n", w.value, w.model, w.attack));
    }
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    text.trim_end().to_string()
}
