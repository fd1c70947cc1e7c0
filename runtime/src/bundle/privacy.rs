//! The optional `privacy` section of `bundle.json`: what a membership-inference audit
//! (`unpersonal audit-models --record`) measured against the bundle's weights, whether each
//! model was trained with differential privacy, and the release policy derived from both
//! (`docs/bundle.md`, `docs/membership.md`).
//!
//! The section speaks of the weights whose SHA-256 it lists (`privacy.weights`). A bundle
//! whose models changed since (retrained, re-exported, a role added or removed) still loads,
//! but [`Bundle::privacy_standing`] treats it as not audited: the old record never vouches
//! for new weights.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Bundle, Role};

/// Largest ε (differential privacy) a model may have been trained with in a shareable bundle.
pub const MAX_EPSILON: f64 = 10.0;
/// Largest δ a model may have been trained with in a shareable bundle.
pub const MAX_DELTA: f64 = 1e-5;
/// Largest worst-attack membership ROC AUC of a shareable bundle.
pub const MAX_AUC: f64 = 0.55;
/// Largest worst-attack true-positive rate at 1 % false-positive rate of a shareable bundle.
pub const MAX_TPR_AT_1PCT_FPR: f64 = 0.02;
/// Fewest members, and fewest non-members, the measurement of a shareable bundle had.
pub const MIN_PER_SIDE: usize = 1000;

/// What is shown for a bundle whose weights no audit speaks of.
pub const NOT_AUDITED: &str = "weights not audited for membership inference: run unpersonal audit-models --record; keep the bundle on site";

/// The `privacy` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    /// The weights the section speaks of: each model's SHA-256 (lowercase hex) when the section
    /// was written, by role.
    pub weights: BTreeMap<Role, String>,
    /// What the membership-inference audit measured; absent: nothing was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipAudit>,
    /// What the weights may be used for, and why.
    pub model_release: ModelRelease,
}

/// The result of `unpersonal audit-models` as a bundle keeps it: aggregates only, no file
/// path and no record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipAudit {
    /// The day of the audit, UTC, as an RFC 3339 `full-date` (`2025-06-14`).
    pub date: String,
    /// The version of the runtime that measured.
    pub runtime_version: String,
    /// The training records attacked.
    pub members: RecordSet,
    /// The holdout records of the same population attacked.
    pub non_members: RecordSet,
    /// Further holdout records that only calibrated the classifier loss (0: none).
    #[serde(default)]
    pub reference: usize,
    /// Seed of the shuffles, the noise and the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples of each AUC interval.
    pub resamples: usize,
    /// The denoiser attacks' noise levels.
    pub sigmas: Vec<f32>,
    /// The SecMI attack's noise levels (none in a record made before the attack existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secmi_sigmas: Vec<f32>,
    /// Every attack that ran, in the report's order.
    pub attacks: Vec<AttackRecord>,
    /// The attack with the highest AUC.
    pub worst_auc: WorstAttack,
    /// The attack with the highest TPR at 1 % FPR.
    pub worst_tpr_at_fpr_1pct: WorstAttack,
    /// Attacks that could not run, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A set of records an audit scored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// The data set's name (`fashion-mnist/train`); `null` where the name would be a file
    /// path (a filelist's), which a bundle must not carry.
    pub name: Option<String>,
    /// Records scored.
    pub count: usize,
}

/// One attack's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    /// The attacked model.
    pub model: Role,
    /// The attack, e.g. `loss@0.1`.
    pub attack: String,
    /// ROC AUC (0.5: the attacker learns nothing).
    pub auc: f64,
    /// Its percentile-bootstrap 95 % interval `[lower, upper]`.
    pub auc_ci: [f64; 2],
    /// True-positive rate at a false-positive rate of at most 0.1 %.
    pub tpr_at_fpr_0_1pct: f64,
    /// True-positive rate at a false-positive rate of at most 1 %.
    pub tpr_at_fpr_1pct: f64,
}

/// The attack that does best on one measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorstAttack {
    /// The attacked model.
    pub model: Role,
    /// The attack.
    pub attack: String,
    /// The measure's value.
    pub value: f64,
}

/// A model's differential-privacy guarantee, as its trainer accounted it (the trainer records
/// it as `models.<role>.provenance.dp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpGuarantee {
    /// ε (positive, finite).
    pub epsilon: f64,
    /// δ (in [0, 1)).
    pub delta: f64,
    /// The privacy accountant that computed them (e.g. `rdp`, `prv`).
    pub accountant: String,
}

impl DpGuarantee {
    /// The guarantee a model's `provenance` states as `dp`: `None` when it states none (no
    /// `dp`, or `null`), an error naming the problem when `dp` is malformed or out of range.
    pub fn from_provenance(provenance: &serde_json::Value) -> Result<Option<DpGuarantee>, String> {
        match provenance.get("dp") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(dp) => {
                let guarantee: DpGuarantee = serde_json::from_value(dp.clone()).map_err(|e| {
                    format!("is not {{\"epsilon\", \"delta\", \"accountant\"}}: {e}")
                })?;
                guarantee.problem().map_or(Ok(Some(guarantee)), |(_, p)| Err(p))
            }
        }
    }

    /// The first field out of range, and why.
    fn problem(&self) -> Option<(&'static str, String)> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            Some(("epsilon", format!("must be positive and finite, is {}", self.epsilon)))
        } else if !(self.delta >= 0.0 && self.delta < 1.0) {
            Some(("delta", format!("must lie in [0, 1), is {}", self.delta)))
        } else if self.accountant.trim().is_empty() {
            Some(("accountant", "must name the privacy accountant".into()))
        } else {
            None
        }
    }
}

impl fmt::Display for DpGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ε = {}, δ = {:e} ({})", self.epsilon, self.delta, self.accountant)
    }
}

/// What a bundle's weights may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// `"site-only"`: the weights stay at the site that trained them; only gated images leave.
    SiteOnly,
    /// `"shareable"`: the weights may leave the site ([`ModelRelease::derive`] states when).
    Shareable,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::SiteOnly => "site-only",
            Policy::Shareable => "shareable",
        })
    }
}

/// The release decision for the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRelease {
    /// Each model's differential-privacy guarantee, `null` for a model not trained with DP;
    /// exactly the roles of `privacy.weights`.
    pub dp: BTreeMap<Role, Option<DpGuarantee>>,
    /// `privacy.membership.worst_auc.value`; `null` without a measurement.
    pub membership_worst_auc: Option<f64>,
    /// `privacy.membership.worst_tpr_at_fpr_1pct.value`; `null` without a measurement.
    pub membership_worst_tpr_at_1pct_fpr: Option<f64>,
    /// The policy.
    pub policy: Policy,
    /// Why, in words.
    pub reason: String,
}

impl ModelRelease {
    /// The decision the rule gives: [`Policy::Shareable`] only when every model was trained
    /// with DP at ε ≤ [`MAX_EPSILON`] and δ ≤ [`MAX_DELTA`], **and** a membership measurement
    /// of at least [`MIN_PER_SIDE`] members and non-members found the worst AUC at most
    /// [`MAX_AUC`] and the worst TPR at 1 % FPR at most [`MAX_TPR_AT_1PCT_FPR`]; otherwise
    /// [`Policy::SiteOnly`], with every unmet condition as the reason.
    pub fn derive(
        dp: BTreeMap<Role, Option<DpGuarantee>>,
        membership: Option<&MembershipAudit>,
    ) -> ModelRelease {
        let mut unmet = Vec::new();
        if dp.is_empty() {
            unmet.push("no model is described".to_string());
        }
        let not_dp: Vec<&str> =
            dp.iter().filter(|(_, g)| g.is_none()).map(|(role, _)| role.as_str()).collect();
        if !not_dp.is_empty() {
            unmet.push(format!("not DP-trained: {}", not_dp.join(", ")));
        }
        for (role, g) in dp.iter().filter_map(|(role, g)| Some((role, g.as_ref()?))) {
            if !at_most(g.epsilon, MAX_EPSILON) {
                unmet.push(format!("{role} trained at ε = {} > {MAX_EPSILON}", g.epsilon));
            }
            if !at_most(g.delta, MAX_DELTA) {
                unmet.push(format!("{role} trained at δ = {:e} > {MAX_DELTA:e}", g.delta));
            }
        }
        let Some(m) = membership else {
            unmet.push("no membership-inference measurement".into());
            return ModelRelease {
                dp,
                membership_worst_auc: None,
                membership_worst_tpr_at_1pct_fpr: None,
                policy: Policy::SiteOnly,
                reason: unmet.join("; "),
            };
        };
        let per_side = m.members.count.min(m.non_members.count);
        let (auc, tpr) = (m.worst_auc.value, m.worst_tpr_at_fpr_1pct.value);
        if per_side < MIN_PER_SIDE {
            unmet.push(format!(
                "the membership measurement had {} members and {} non-members, too few to allow sharing (at least {MIN_PER_SIDE} per side)",
                m.members.count, m.non_members.count
            ));
        }
        if !at_most(auc, MAX_AUC) {
            unmet.push(format!(
                "membership worst AUC {auc:.3} > {MAX_AUC} ({} {})",
                m.worst_auc.model, m.worst_auc.attack
            ));
        }
        if !at_most(tpr, MAX_TPR_AT_1PCT_FPR) {
            unmet.push(format!(
                "membership worst TPR@1% FPR {tpr:.4} > {MAX_TPR_AT_1PCT_FPR} ({} {})",
                m.worst_tpr_at_fpr_1pct.model, m.worst_tpr_at_fpr_1pct.attack
            ));
        }
        let (policy, reason) = if unmet.is_empty() {
            (
                Policy::Shareable,
                format!(
                    "every model DP-trained (ε ≤ {MAX_EPSILON}, δ ≤ {MAX_DELTA:e}); membership worst AUC {auc:.3} ≤ {MAX_AUC} and worst TPR@1% FPR {tpr:.4} ≤ {MAX_TPR_AT_1PCT_FPR} at {per_side} records per side"
                ),
            )
        } else {
            (Policy::SiteOnly, unmet.join("; "))
        };
        ModelRelease {
            dp,
            membership_worst_auc: Some(auc),
            membership_worst_tpr_at_1pct_fpr: Some(tpr),
            policy,
            reason,
        }
    }
}

/// Whether `value` is at most `bound`; never for NaN (the rule fails closed).
fn at_most(value: f64, bound: f64) -> bool {
    value <= bound
}

/// Where a bundle's weights stand: the policy that applies to them now.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing<'a> {
    /// The bundle has no `privacy` section.
    NotAudited,
    /// The section speaks of other weights: these roles' models differ from, were added to or
    /// removed from the ones it lists.
    Stale(Vec<Role>),
    /// The section speaks of these weights.
    Recorded(&'a Privacy),
}

impl Standing<'_> {
    /// The policy that applies: the recorded one for the weights it speaks of, else
    /// [`Policy::SiteOnly`].
    pub fn policy(&self) -> Policy {
        match self {
            Standing::Recorded(privacy) => privacy.model_release.policy,
            Standing::NotAudited | Standing::Stale(_) => Policy::SiteOnly,
        }
    }
}

impl fmt::Display for Standing<'_> {
    /// The policy line `unpersonal info` and the web page show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Standing::NotAudited => f.write_str(NOT_AUDITED),
            Standing::Stale(roles) => {
                let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                write!(
                    f,
                    "weights changed since their privacy record ({}): run unpersonal audit-models --record again; keep the bundle on site",
                    roles.join(", ")
                )
            }
            Standing::Recorded(privacy) => {
                let release = &privacy.model_release;
                write!(f, "policy: {} — {}", release.policy, release.reason)
            }
        }
    }
}

impl Bundle {
    /// Where the bundle's weights stand: not audited, audited for other weights, or recorded.
    pub fn privacy_standing(&self) -> Standing<'_> {
        let Some(privacy) = &self.privacy else {
            return Standing::NotAudited;
        };
        let changed: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|role| {
                let now = self.models.get(role).map(|m| m.sha256.to_ascii_lowercase());
                now != privacy.weights.get(role).map(|h| h.to_ascii_lowercase())
            })
            .collect();
        match changed.is_empty() {
            true => Standing::Recorded(privacy),
            false => Standing::Stale(changed),
        }
    }
}

impl Privacy {
    /// Checks the section on its own (ranges, consistency, the policy against the rule);
    /// on failure returns the offending field and the problem. Whether it speaks of the
    /// bundle's current weights is [`Bundle::privacy_standing`]'s question, not an error.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, problem: String| Err((format!("privacy.{field}"), problem));
        if self.weights.is_empty() {
            return err("weights", "must list the SHA-256 of at least one model".into());
        }
        for (role, hash) in &self.weights {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return err(
                    &format!("weights.{role}"),
                    format!("{hash:?} is not 64 hexadecimal digits"),
                );
            }
        }
        if let Some(m) = &self.membership {
            m.check(&self.weights).map_err(|(f, p)| (format!("privacy.membership.{f}"), p))?;
        }
        let release = &self.model_release;
        if !release.dp.keys().eq(self.weights.keys()) {
            let roles =
                |keys: Vec<&Role>| keys.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
            return err(
                "model_release.dp",
                format!(
                    "must name exactly the models of privacy.weights ({}), names {}",
                    roles(self.weights.keys().collect()),
                    roles(release.dp.keys().collect())
                ),
            );
        }
        for (role, g) in release.dp.iter().filter_map(|(role, g)| Some((role, g.as_ref()?))) {
            if let Some((field, problem)) = g.problem() {
                return err(&format!("model_release.dp.{role}.{field}"), problem);
            }
        }
        let recorded = self.membership.as_ref().map(|m| m.worst_auc.value);
        if release.membership_worst_auc != recorded {
            return err(
                "model_release.membership_worst_auc",
                format!(
                    "must be privacy.membership.worst_auc.value ({recorded:?}), is {:?}",
                    release.membership_worst_auc
                ),
            );
        }
        let recorded = self.membership.as_ref().map(|m| m.worst_tpr_at_fpr_1pct.value);
        if release.membership_worst_tpr_at_1pct_fpr != recorded {
            return err(
                "model_release.membership_worst_tpr_at_1pct_fpr",
                format!(
                    "must be privacy.membership.worst_tpr_at_fpr_1pct.value ({recorded:?}), is {:?}",
                    release.membership_worst_tpr_at_1pct_fpr
                ),
            );
        }
        if release.reason.trim().is_empty() {
            return err("model_release.reason", "must say why".into());
        }
        if release.policy == Policy::Shareable {
            let rule = ModelRelease::derive(release.dp.clone(), self.membership.as_ref());
            if rule.policy != Policy::Shareable {
                return err(
                    "model_release.policy",
                    format!("is shareable, but the rule allows only site-only: {}", rule.reason),
                );
            }
        }
        Ok(())
    }
}

impl MembershipAudit {
    /// Checks the measurement (fields relative to `privacy.membership`).
    fn check(&self, weights: &BTreeMap<Role, String>) -> Result<(), (String, String)> {
        let err = |field: &str, problem: String| Err((field.to_string(), problem));
        if !is_full_date(&self.date) {
            return err("date", format!("{:?} is not an RFC 3339 date (YYYY-MM-DD)", self.date));
        }
        if self.runtime_version.trim().is_empty() {
            return err("runtime_version", "must name the runtime version".into());
        }
        for (field, set) in [("members", &self.members), ("non_members", &self.non_members)] {
            if set.count == 0 {
                return err(&format!("{field}.count"), "must be at least 1".into());
            }
            if let Some(name) = &set.name
                && !is_plain_name(name)
            {
                return err(
                    &format!("{field}.name"),
                    format!(
                        "{name:?} looks like a file path; a bundle records a data set's name or null"
                    ),
                );
            }
        }
        if self.resamples == 0 {
            return err("resamples", "must be at least 1".into());
        }
        if self.sigmas.is_empty() || self.sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return err(
                "sigmas",
                format!("must be positive, finite noise levels, are {:?}", self.sigmas),
            );
        }
        if self.secmi_sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return err(
                "secmi_sigmas",
                format!("must be positive, finite noise levels, are {:?}", self.secmi_sigmas),
            );
        }
        if self.attacks.is_empty() {
            return err("attacks", "must hold at least one attack".into());
        }
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        for (i, a) in self.attacks.iter().enumerate() {
            let field = |name: &str| format!("attacks[{i}].{name}");
            if !weights.contains_key(&a.model) {
                return err(&field("model"), format!("{} is not among privacy.weights", a.model));
            }
            if a.attack.trim().is_empty() {
                return err(&field("attack"), "must name the attack".into());
            }
            if self.attacks[..i].iter().any(|b| (b.model, &b.attack) == (a.model, &a.attack)) {
                return err(&field("attack"), format!("{} {} is listed twice", a.model, a.attack));
            }
            for (name, v) in [
                ("auc", a.auc),
                ("tpr_at_fpr_0_1pct", a.tpr_at_fpr_0_1pct),
                ("tpr_at_fpr_1pct", a.tpr_at_fpr_1pct),
            ] {
                if !unit(v) {
                    return err(&field(name), format!("must lie in [0, 1], is {v}"));
                }
            }
            let [lower, upper] = a.auc_ci;
            if !(unit(lower) && unit(upper) && lower <= upper) {
                return err(
                    &field("auc_ci"),
                    format!("must be [lower, upper] within [0, 1], is [{lower}, {upper}]"),
                );
            }
        }
        let auc: fn(&AttackRecord) -> f64 = |a| a.auc;
        let tpr: fn(&AttackRecord) -> f64 = |a| a.tpr_at_fpr_1pct;
        for (field, worst, measure) in [
            ("worst_auc", &self.worst_auc, auc),
            ("worst_tpr_at_fpr_1pct", &self.worst_tpr_at_fpr_1pct, tpr),
        ] {
            let highest = self.attacks.iter().map(measure).fold(f64::NEG_INFINITY, f64::max);
            let named = self
                .attacks
                .iter()
                .find(|a| (a.model, &a.attack) == (worst.model, &worst.attack))
                .map(measure);
            // Within a rounding error: serde_json reads long decimals to within an ulp.
            let close = |v: f64| (v - highest).abs() <= 1e-12;
            if !close(worst.value) || !named.is_some_and(close) {
                return err(
                    field,
                    format!(
                        "must name an attack with the highest value ({highest}), names {} {} at {}",
                        worst.model, worst.attack, worst.value
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Whether `name` can be recorded as a data set's name: one or two `/`-separated components
/// (`fashion-mnist/train`), none empty, `.` or `..`, and no `\` or `:`. Anything else may be a
/// file path (a filelist's, say) and is not written into a bundle.
pub fn is_plain_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..")
        && !name.contains(['\\', ':'])
        && !name.chars().any(char::is_control)
}

/// The UTC calendar day of `time` as an RFC 3339 `full-date` (`YYYY-MM-DD`).
pub fn utc_date(time: SystemTime) -> String {
    let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs_f64().ceil() as i64),
    };
    let (year, month, day) = civil(seconds.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Whether `text` is an RFC 3339 `full-date`: `YYYY-MM-DD`, a real day of the calendar.
fn is_full_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r.clone()].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let number = |r: std::ops::Range<usize>| text[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const HASH: &str = "ab";

    fn hash() -> String {
        HASH.repeat(32)
    }

    /// A classifier-only bundle (its file's hash [`hash`]) as JSON.
    fn bundle_value() -> Value {
        json!({
            "schema_version": 1, "name": "b",
            "image": { "channels": 1, "height": 4, "width": 4,
                       "normalization": { "mean": 0.5, "std": 0.5 } },
            "labels": { "count": 2, "multi_label": false },
            "models": { "classifier": { "file": "c.onnx", "sha256": hash(),
                "inputs": [ { "name": "image", "shape": ["batch", 1, 4, 4] } ],
                "outputs": [ { "name": "logits", "shape": ["batch", 2] } ] } }
        })
    }

    fn attack(name: &str, auc: f64, tpr: f64) -> AttackRecord {
        AttackRecord {
            model: Role::Classifier,
            attack: name.into(),
            auc,
            auc_ci: [auc - 0.02, auc + 0.02],
            tpr_at_fpr_0_1pct: tpr / 2.0,
            tpr_at_fpr_1pct: tpr,
        }
    }

    /// A measurement of `count` per side whose worst attack has `auc` and `tpr`.
    fn membership(count: usize, auc: f64, tpr: f64) -> MembershipAudit {
        MembershipAudit {
            date: "2025-06-14".into(),
            runtime_version: "0.1.0".into(),
            members: RecordSet { name: Some("fashion-mnist/train".into()), count },
            non_members: RecordSet { name: None, count },
            reference: count,
            seed: 0,
            resamples: 1000,
            sigmas: vec![0.02, 0.1],
            secmi_sigmas: vec![0.3],
            attacks: vec![attack("loss", auc, tpr), attack("calibrated_loss", 0.5, 0.01)],
            worst_auc: WorstAttack { model: Role::Classifier, attack: "loss".into(), value: auc },
            worst_tpr_at_fpr_1pct: WorstAttack {
                model: Role::Classifier,
                attack: "loss".into(),
                value: tpr,
            },
            notes: vec![],
        }
    }

    fn dp(epsilon: f64, delta: f64) -> Option<DpGuarantee> {
        Some(DpGuarantee { epsilon, delta, accountant: "rdp".into() })
    }

    /// The section the audit writes for the test bundle's classifier.
    fn privacy(guarantee: Option<DpGuarantee>, m: Option<MembershipAudit>) -> Privacy {
        let dp = BTreeMap::from([(Role::Classifier, guarantee)]);
        Privacy {
            weights: BTreeMap::from([(Role::Classifier, hash())]),
            model_release: ModelRelease::derive(dp, m.as_ref()),
            membership: m,
        }
    }

    /// The test bundle with `privacy`, parsed (the error's text on refusal).
    fn parse(privacy: &Privacy) -> Result<Bundle, String> {
        parse_value(serde_json::to_value(privacy).unwrap())
    }

    fn parse_value(privacy: Value) -> Result<Bundle, String> {
        let mut value = bundle_value();
        value["privacy"] = privacy;
        Bundle::from_json(&value.to_string()).map_err(|e| e.to_string())
    }

    /// Refused, naming `needles`.
    fn refused(privacy: Value, needles: &[&str]) {
        let err = parse_value(privacy).unwrap_err();
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
    }

    #[test]
    fn the_shipped_bundle_has_no_section_and_serialises_as_before() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fashion-mnist/bundle.json");
        let text = std::fs::read_to_string(path).unwrap();
        let bundle = Bundle::from_json(&text).unwrap();
        assert_eq!(bundle.privacy, None);
        assert_eq!(bundle.privacy_standing(), Standing::NotAudited);
        assert_eq!(bundle.privacy_standing().to_string(), NOT_AUDITED);
        assert_eq!(bundle.privacy_standing().policy(), Policy::SiteOnly);
        let typed = serde_json::to_string_pretty(&bundle).unwrap();
        assert!(!typed.contains("privacy"), "an absent section is not written");
        assert_eq!(Bundle::from_json(&typed).unwrap(), bundle, "and reads back the same");
        let file: Value = serde_json::from_str(&text).unwrap();
        // `audit-models --record` edits the file as a JSON value: without the section the
        // rewrite is the file byte for byte.
        assert_eq!(serde_json::to_string_pretty(&file).unwrap() + "\n", text);
    }

    #[test]
    fn a_recorded_section_round_trips_with_the_documented_shape() {
        let recorded = privacy(None, Some(membership(1000, 0.51, 0.012)));
        let bundle = parse(&recorded).unwrap();
        assert_eq!(bundle.privacy.as_ref(), Some(&recorded));
        let value = serde_json::to_value(&bundle).unwrap();
        let section = &value["privacy"];
        assert_eq!(section["weights"]["classifier"], hash());
        assert_eq!(section["model_release"]["dp"], json!({ "classifier": null }));
        assert_eq!(section["model_release"]["policy"], "site-only");
        assert_eq!(section["model_release"]["membership_worst_auc"], 0.51);
        assert_eq!(section["model_release"]["membership_worst_tpr_at_1pct_fpr"], 0.012);
        assert_eq!(
            section["membership"]["members"],
            json!({ "name": "fashion-mnist/train", "count": 1000 })
        );
        assert_eq!(section["membership"]["non_members"], json!({ "name": null, "count": 1000 }));
        assert_eq!(section["membership"]["attacks"][0]["model"], "classifier");
        assert_eq!(
            section["membership"]["attacks"][0]["auc_ci"],
            json!([0.51 - 0.02, 0.51 + 0.02])
        );
        assert_eq!(section["membership"]["worst_auc"]["attack"], "loss");
        let again = Bundle::from_json(&serde_json::to_string_pretty(&bundle).unwrap()).unwrap();
        assert_eq!(again, bundle);
        assert_eq!(
            bundle.privacy_standing().to_string(),
            "policy: site-only — not DP-trained: classifier"
        );

        // A DP guarantee reads and writes as its three fields.
        let with_dp = privacy(dp(8.0, 1e-5), Some(membership(1000, 0.51, 0.012)));
        let value = serde_json::to_value(&with_dp).unwrap();
        assert_eq!(
            value["model_release"]["dp"]["classifier"],
            json!({ "epsilon": 8.0, "delta": 1e-5, "accountant": "rdp" })
        );
        assert_eq!(
            parse(&with_dp).unwrap().privacy.unwrap().model_release.policy,
            Policy::Shareable
        );
    }

    #[test]
    fn the_policy_rule_says_every_unmet_condition() {
        let derive = |g: Option<DpGuarantee>, m: Option<MembershipAudit>| {
            ModelRelease::derive(BTreeMap::from([(Role::Classifier, g)]), m.as_ref())
        };
        let good = || Some(membership(1000, 0.55, 0.02));
        let shareable = derive(dp(10.0, 1e-5), good());
        assert_eq!(shareable.policy, Policy::Shareable, "{}", shareable.reason);
        assert!(shareable.reason.contains("every model DP-trained"), "{}", shareable.reason);
        assert_eq!(shareable.membership_worst_auc, Some(0.55));
        assert_eq!(shareable.membership_worst_tpr_at_1pct_fpr, Some(0.02));

        let cases: [(Option<DpGuarantee>, Option<MembershipAudit>, &str); 7] = [
            (None, good(), "not DP-trained: classifier"),
            (dp(10.5, 1e-5), good(), "ε = 10.5 > 10"),
            (dp(8.0, 1e-4), good(), "δ = 1e-4 > 1e-5"),
            (dp(8.0, 1e-5), None, "no membership-inference measurement"),
            (
                dp(8.0, 1e-5),
                Some(membership(999, 0.5, 0.01)),
                "999 members and 999 non-members, too few",
            ),
            (
                dp(8.0, 1e-5),
                Some(membership(1000, 0.551, 0.01)),
                "worst AUC 0.551 > 0.55 (classifier loss)",
            ),
            (dp(8.0, 1e-5), Some(membership(1000, 0.5, 0.021)), "worst TPR@1% FPR 0.0210 > 0.02"),
        ];
        for (g, m, needle) in cases {
            let release = derive(g, m);
            assert_eq!(release.policy, Policy::SiteOnly, "{needle}");
            assert_eq!(release.reason.split("; ").count(), 1, "{}", release.reason);
            assert!(release.reason.contains(needle), "{needle:?} not in {:?}", release.reason);
        }
        // Every unmet condition is named, and a model without DP counts even among DP ones.
        let dp_map = BTreeMap::from([(Role::Classifier, dp(20.0, 1e-5)), (Role::Denoiser, None)]);
        let release = ModelRelease::derive(dp_map, Some(&membership(10, 0.9, 0.5)));
        assert_eq!(release.policy, Policy::SiteOnly);
        assert_eq!(release.reason.split("; ").count(), 5, "{}", release.reason);
        assert!(
            release.reason.starts_with("not DP-trained: denoiser; classifier trained at ε = 20")
        );
        let none = ModelRelease::derive(BTreeMap::new(), Some(&membership(1000, 0.5, 0.0)));
        assert_eq!(
            (none.policy, none.reason.as_str()),
            (Policy::SiteOnly, "no model is described")
        );
    }

    #[test]
    fn out_of_range_or_inconsistent_sections_are_refused() {
        let good =
            serde_json::to_value(privacy(None, Some(membership(1000, 0.51, 0.012)))).unwrap();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            edit(&mut v);
            v
        };
        parse_value(good.clone()).unwrap();
        refused(
            with(&|v| v["model_release"]["policy"] = json!("public")),
            &["unknown variant `public`", "site-only", "shareable"],
        );
        refused(
            with(&|v| v["model_release"]["policy"] = json!("shareable")),
            &["privacy.model_release.policy", "rule allows only site-only", "not DP-trained"],
        );
        refused(
            with(&|v| v["membership"]["attacks"][0]["auc"] = json!(1.2)),
            &["privacy.membership.attacks[0].auc", "[0, 1]", "1.2"],
        );
        refused(
            with(&|v| v["membership"]["attacks"][1]["tpr_at_fpr_1pct"] = json!(-0.1)),
            &["privacy.membership.attacks[1].tpr_at_fpr_1pct"],
        );
        refused(
            with(&|v| v["membership"]["attacks"][0]["auc_ci"] = json!([0.6, 0.4])),
            &["privacy.membership.attacks[0].auc_ci"],
        );
        refused(
            with(&|v| v["membership"]["attacks"][1]["attack"] = json!("loss")),
            &["privacy.membership.attacks[1].attack", "twice"],
        );
        refused(
            with(&|v| v["membership"]["attacks"][1]["model"] = json!("denoiser")),
            &["privacy.membership.attacks[1].model", "privacy.weights"],
        );
        refused(
            with(&|v| v["membership"]["worst_auc"]["value"] = json!(0.5)),
            &["privacy.membership.worst_auc", "highest"],
        );
        refused(
            with(&|v| {
                v["membership"]["worst_tpr_at_fpr_1pct"]["attack"] = json!("calibrated_loss")
            }),
            &["privacy.membership.worst_tpr_at_fpr_1pct"],
        );
        refused(
            with(&|v| v["model_release"]["membership_worst_auc"] = json!(0.4)),
            &["privacy.model_release.membership_worst_auc"],
        );
        refused(
            with(&|v| v["model_release"]["membership_worst_tpr_at_1pct_fpr"] = Value::Null),
            &["privacy.model_release.membership_worst_tpr_at_1pct_fpr"],
        );
        refused(
            with(&|v| v["membership"]["date"] = json!("2025-02-29")),
            &["privacy.membership.date"],
        );
        refused(with(&|v| v["membership"]["date"] = json!("14.06.2025")), &["RFC 3339"]);
        refused(
            with(&|v| v["membership"]["members"]["name"] = json!("/data/ward-7/filelist.txt")),
            &["privacy.membership.members.name", "file path"],
        );
        refused(
            with(&|v| v["membership"]["non_members"]["count"] = json!(0)),
            &["non_members.count"],
        );
        refused(with(&|v| v["membership"]["attacks"] = json!([])), &["privacy.membership.attacks"]);
        refused(
            with(&|v| v["membership"]["sigmas"] = json!([0.0])),
            &["privacy.membership.sigmas"],
        );
        refused(
            with(&|v| v["model_release"]["dp"] = json!({ "classifier": null, "denoiser": null })),
            &["privacy.model_release.dp", "exactly the models"],
        );
        refused(
            with(&|v| {
                v["model_release"]["dp"]["classifier"] =
                    json!({ "epsilon": -1, "delta": 0, "accountant": "rdp" })
            }),
            &["privacy.model_release.dp.classifier.epsilon", "positive"],
        );
        refused(
            with(&|v| v["model_release"]["dp"]["classifier"] = json!({ "epsilon": 1 })),
            &["missing field `delta`"],
        );
        refused(
            with(&|v| v["model_release"]["reason"] = json!(" ")),
            &["privacy.model_release.reason"],
        );
        refused(
            with(&|v| v["weights"]["classifier"] = json!("xyz")),
            &["privacy.weights.classifier"],
        );
        refused(with(&|v| v["weights"] = json!({})), &["privacy.weights"]);
        refused(
            with(&|v| v["weights"]["classifer"] = json!(hash())),
            &["unknown variant `classifer`"],
        );

        // Without a measurement the worst values are null, and the policy site-only.
        let unmeasured = privacy(dp(1.0, 1e-6), None);
        assert_eq!(unmeasured.model_release.membership_worst_auc, None);
        parse(&unmeasured).unwrap();
        refused(
            with(&|v| {
                v.as_object_mut().unwrap().remove("membership");
            }),
            &["privacy.model_release.membership_worst_auc"],
        );
    }

    #[test]
    fn a_record_of_other_weights_does_not_vouch_for_these() {
        let mut bundle = parse(&privacy(dp(8.0, 1e-6), Some(membership(2000, 0.5, 0.01)))).unwrap();
        assert_eq!(bundle.privacy_standing().policy(), Policy::Shareable);
        assert!(bundle.privacy_standing().to_string().starts_with("policy: shareable — "));
        // Upper-case hex names the same file.
        bundle.models.get_mut(&Role::Classifier).unwrap().sha256 = hash().to_uppercase();
        assert_eq!(bundle.privacy_standing().policy(), Policy::Shareable);
        // Retrained: the record speaks of other weights.
        bundle.models.get_mut(&Role::Classifier).unwrap().sha256 = "cd".repeat(32);
        assert_eq!(bundle.privacy_standing(), Standing::Stale(vec![Role::Classifier]));
        assert_eq!(bundle.privacy_standing().policy(), Policy::SiteOnly);
        let line = bundle.privacy_standing().to_string();
        assert!(
            line.starts_with("weights changed since their privacy record (classifier)"),
            "{line}"
        );
        assert!(line.ends_with("keep the bundle on site"), "{line}");
        // A model added since counts too.
        let mut added = bundle.clone();
        added.models.get_mut(&Role::Classifier).unwrap().sha256 = hash();
        let spec = added.models[&Role::Classifier].clone();
        added.models.insert(Role::Features, spec);
        assert_eq!(added.privacy_standing(), Standing::Stale(vec![Role::Features]));
    }

    #[test]
    fn dp_is_read_from_provenance() {
        assert_eq!(DpGuarantee::from_provenance(&json!({ "steps": 5 })), Ok(None));
        assert_eq!(DpGuarantee::from_provenance(&json!({ "dp": null })), Ok(None));
        assert_eq!(DpGuarantee::from_provenance(&Value::Null), Ok(None));
        let stated =
            json!({ "dp": { "epsilon": 3, "delta": 1e-6, "accountant": "prv", "noise": 1.1 } });
        assert_eq!(
            DpGuarantee::from_provenance(&stated),
            Ok(dp(3.0, 1e-6).map(|g| DpGuarantee { accountant: "prv".into(), ..g }))
        );
        let err = DpGuarantee::from_provenance(&json!({ "dp": { "epsilon": 3 } })).unwrap_err();
        assert!(err.contains("delta"), "{err}");
        let err = DpGuarantee::from_provenance(
            &json!({ "dp": { "epsilon": 3, "delta": 1.5, "accountant": "rdp" } }),
        )
        .unwrap_err();
        assert!(err.contains("[0, 1)"), "{err}");
        assert_eq!(dp(8.0, 1e-5).unwrap().to_string(), "ε = 8, δ = 1e-5 (rdp)");
    }

    #[test]
    fn dates_and_names() {
        let at = |s: u64| utc_date(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(946_684_800), "2000-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_709_164_800 + 86_399), "2024-02-29");
        assert_eq!(at(1_709_251_200), "2024-03-01");
        assert_eq!(at(4_107_542_400), "2100-03-01");
        assert_eq!(
            utc_date(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1)),
            "1969-12-31"
        );
        for good in ["2000-02-29", "2024-12-31", "1999-01-01"] {
            assert!(is_full_date(good), "{good}");
        }
        for bad in [
            "1900-02-29",
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "2024-01-01T00:00:00Z",
            "２０２４-01-01",
        ] {
            assert!(!is_full_date(bad), "{bad}");
        }
        for good in ["fashion-mnist/train", "chest-xray", ".tmp123/test"] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in
            ["/data/list.txt", "data/ward/list.txt", "../x", "./x", "a//b", "C:\\x", "", "a/"]
        {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
