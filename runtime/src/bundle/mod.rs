//! Model bundles: `bundle.json` (schema version 1, documented in `docs/bundle.md`) and the
//! ONNX files it describes.
//!
//! Reading a bundle is pure: [`Bundle::from_json`] parses and validates the description, and
//! [`Bundle::verify`] checks one model's bytes (SHA-256, and the ONNX graph's declared inputs
//! and outputs). [`BundleDir::load`] is the file-system edge that does both for a directory.

mod dir;
mod error;
mod interface;
pub mod limits;
pub mod privacy;
mod roles;
mod unique;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use dir::BundleDir;
pub use error::BundleError;
pub use privacy::{Policy, Privacy};
pub use roles::Role;

/// The `bundle.json` schema version this runtime reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The file name of a bundle's description inside its directory.
pub const BUNDLE_JSON: &str = "bundle.json";

/// A parsed and validated `bundle.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// Schema version; only [`SCHEMA_VERSION`] is accepted.
    pub schema_version: u32,
    /// Bundle name (empty in the file means: the directory name).
    #[serde(default)]
    pub name: String,
    /// Size and pixel normalisation of every model's images.
    pub image: ImageSpec,
    /// The labels each image carries.
    pub labels: LabelSpec,
    /// One model per role.
    pub models: BTreeMap<Role, ModelSpec>,
    /// Constants of the EDM formulation the denoiser was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edm: Option<EdmSpec>,
    /// Sampler and selection defaults (every field has a default when absent).
    #[serde(default)]
    pub sampler: SamplerSpec,
    /// The re-identification decision rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reid: Option<ReidSpec>,
    /// What a membership-inference audit measured and what the weights may be used for
    /// ([`privacy`]); absent: the weights were never audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
}

/// Image size (NCHW) and the pixel normalisation every model input and image output uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Channels (1 grayscale, 3 RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// How pixels become model values.
    pub normalization: Normalization,
    /// How images of other sizes are brought to this one (the training data was); absent: an
    /// image must have this size already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeSpec>,
}

/// A size rule: how an image of any size becomes `size` × `size` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeSpec {
    /// The rule.
    pub rule: ResizeRule,
    /// The square side it brings images to; equal to `image.width` and `image.height`.
    pub size: usize,
}

/// The size rules a bundle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeRule {
    /// `"shorter-side-triangle-center-crop"`: the shorter side scaled to the size with a
    /// triangle filter, then the centre cut out ([`crate::pixels::fit_square`] where the
    /// `image` feature is on; docs/bundle.md states it in full).
    #[serde(rename = "shorter-side-triangle-center-crop")]
    ShorterSideTriangleCenterCrop,
}

/// `x = (pixel / 255 − mean) / std`, and back by the inverse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Subtracted after scaling pixels to [0, 1].
    pub mean: f32,
    /// Divides after subtracting the mean; never zero.
    pub std: f32,
    /// The formula in words, for readers of the file.
    #[serde(default)]
    pub formula: String,
}

impl Normalization {
    /// The model value of a pixel (0–255).
    pub fn normalize(&self, pixel: u8) -> f32 {
        (f32::from(pixel) / 255.0 - self.mean) / self.std
    }

    /// The pixel of a model value: `round(clamp((x·std + mean)·255, 0, 255))`.
    pub fn to_pixel(&self, x: f32) -> u8 {
        // The clamp makes the cast exact; a NaN becomes 0 (samplers reject NaN before this).
        ((x * self.std + self.mean) * 255.0).clamp(0.0, 255.0).round() as u8
    }
}

/// The labels of an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelSpec {
    /// Labels per image (classes, or multi-hot findings).
    pub count: usize,
    /// `false`: exactly one label per image; `true`: independent labels.
    pub multi_label: bool,
}

/// One model of the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// ONNX file name inside the bundle directory.
    pub file: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Every graph input, by name, with its shape.
    pub inputs: Vec<TensorSpec>,
    /// Every graph output, by name, with its shape.
    pub outputs: Vec<TensorSpec>,
    /// How the model was made (free-form).
    #[serde(default)]
    pub provenance: serde_json::Value,
}

impl ModelSpec {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|t| t.name == name)
    }
}

/// A named float32 tensor of a model's interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Extents, outermost first.
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// The shape with the batch axis set to `batch`.
    pub fn concrete(&self, batch: usize) -> Vec<usize> {
        self.shape.iter().map(|d| d.resolve(batch)).collect()
    }
}

/// One axis of a [`TensorSpec`]: the symbolic batch axis (`"batch"` in JSON) or a fixed extent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub enum Dim {
    /// The batch axis; any extent, the same for every tensor of one call.
    Batch,
    /// A fixed extent.
    Fixed(usize),
}

impl Dim {
    /// The extent of this axis in a call with `batch` rows.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::Batch => batch,
            Dim::Fixed(n) => n,
        }
    }
}

impl TryFrom<serde_json::Value> for Dim {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        match &value {
            serde_json::Value::String(s) if s == "batch" => Ok(Dim::Batch),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Dim::Fixed)
                .ok_or_else(|| format!("shape entry {value} is not a non-negative integer")),
            _ => {
                Err(format!("shape entry {value} is neither \"batch\" nor a non-negative integer"))
            }
        }
    }
}

impl From<Dim> for serde_json::Value {
    fn from(dim: Dim) -> Self {
        match dim {
            Dim::Batch => "batch".into(),
            Dim::Fixed(n) => n.into(),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("batch"),
            Dim::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// Writes a shape as `[batch, 1, 28, 28]`.
pub fn shape_string(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// Constants of the EDM formulation (Karras et al. 2022) the denoiser was trained with. The
/// preconditioning lives inside the denoiser graph; these are recorded for readers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdmSpec {
    /// Standard deviation of the (normalised) training data, σ_data.
    pub sigma_data: f32,
}

/// How the sampler integrates the probability-flow ODE through the noise levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Solver {
    /// EDM's second-order Heun method: 2N − 1 guided evaluations for N steps.
    #[default]
    #[serde(rename = "heun")]
    Heun,
    /// DPM-Solver++(2M): second-order multistep in log σ, reusing the previous step's
    /// denoised image; N guided evaluations for N steps.
    #[serde(rename = "dpmpp-2m")]
    DpmPp2M,
    /// The bundle's distilled `student` model, unguided (it learnt the guided teacher's
    /// trajectories), with first-order steps `x' = (σ'/σ)·x + (1 − σ'/σ)·D(x; σ)`; N
    /// evaluations for N steps (`sampler.distilled` gives N).
    #[serde(rename = "distilled")]
    Distilled,
}

impl Solver {
    /// Guided denoiser evaluations per image for `steps` steps.
    pub fn evaluations(self, steps: usize) -> usize {
        match self {
            Solver::Heun => (2 * steps).saturating_sub(1),
            Solver::DpmPp2M | Solver::Distilled => steps,
        }
    }

    /// The bundle's models this solver samples with: the denoiser (and its guide, where
    /// the bundle has a separate one), or the student alone.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Solver::Heun | Solver::DpmPp2M => &[Role::Denoiser, Role::Guide],
            Solver::Distilled => &[Role::Student],
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Solver::Heun => "heun",
            Solver::DpmPp2M => "dpmpp-2m",
            Solver::Distilled => "distilled",
        })
    }
}

impl FromStr for Solver {
    type Err = String;

    fn from_str(s: &str) -> Result<Solver, String> {
        match s {
            "heun" => Ok(Solver::Heun),
            "dpmpp-2m" => Ok(Solver::DpmPp2M),
            "distilled" => Ok(Solver::Distilled),
            _ => Err(format!("unknown solver `{s}` (known: heun, dpmpp-2m, distilled)")),
        }
    }
}

/// Sampler and selection defaults; every field falls back to its documented default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerSpec {
    /// The ODE solver. Default `heun`.
    pub solver: Solver,
    /// Steps N (Heun: 2N − 1 denoiser evaluations, DPM-Solver++(2M): N). Default 18.
    pub steps: usize,
    /// Smallest nonzero noise level σ_min. Default 0.002.
    pub sigma_min: f64,
    /// Largest noise level σ_max. Default 80.
    pub sigma_max: f64,
    /// Karras schedule exponent ρ. Default 7.
    pub rho: f64,
    /// Guidance weight w in `D_u + w·(D_c − D_u)`. Default 1.3.
    pub guidance: f32,
    /// Noise levels `[lo, hi]` at which guidance applies (`lo < σ ≤ hi`; elsewhere w = 1).
    /// Default: absent, all noise levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_interval: Option<[f64; 2]>,
    /// Candidates drawn per real image and round. Default 32.
    pub candidates_per_image: usize,
    /// How much the guidance weight drops after a round in which every candidate was
    /// rejected. Default 0.1.
    pub guidance_decrement: f32,
    /// Rounds per real image before giving up on it (releasing nothing). Default 3.
    pub max_rounds: usize,
    /// How the `student` model samples (the `distilled` solver). Present exactly when the
    /// bundle has a student.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distilled: Option<DistilledSpec>,
}

/// The few-step sampler a student was distilled for: `steps` first-order steps through the
/// Karras noise levels of `sampler.sigma_min`, `sigma_max` and `rho`, unguided (the student
/// learnt the teacher's guided trajectories at exactly these levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistilledSpec {
    /// Steps N: N student evaluations per image.
    pub steps: usize,
}

impl Default for SamplerSpec {
    fn default() -> Self {
        SamplerSpec {
            solver: Solver::Heun,
            steps: 18,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            guidance: 1.3,
            guidance_interval: None,
            candidates_per_image: 32,
            guidance_decrement: 0.1,
            max_rounds: 3,
            distilled: None,
        }
    }
}

/// The re-identification decision rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReidSpec {
    /// A candidate shows the same person as the reference image it was drawn for when
    /// `sigmoid(logit) ≥ threshold` (0 < threshold < 1).
    pub threshold: f32,
    /// The same for any other reference image; absent: `threshold`. Calibrated on people the
    /// model never saw against their nearest references, where resemblance is the rule.
    #[serde(default)]
    pub neighbour_threshold: Option<f32>,
    /// How the threshold was chosen (free-form: validation set, target rates, …).
    #[serde(default)]
    pub calibration: serde_json::Value,
    /// Besides its source, a candidate is compared with this many nearest references to it
    /// and to its source, by embedding. Default 8.
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
}

fn default_neighbours() -> usize {
    8
}

impl ReidSpec {
    /// The threshold against references other than a candidate's source.
    pub fn neighbour_threshold(&self) -> f32 {
        self.neighbour_threshold.unwrap_or(self.threshold)
    }
}

impl Bundle {
    /// Parses and validates the text of a `bundle.json`; errors name `bundle.json` as the file.
    pub fn from_json(text: &str) -> Result<Bundle, BundleError> {
        Bundle::from_json_at(text, BUNDLE_JSON)
    }

    /// Like [`Bundle::from_json`], with errors naming `origin` (a path) as the file.
    pub fn from_json_at(text: &str, origin: &str) -> Result<Bundle, BundleError> {
        // Check the version first, so a future schema is refused as such and not as whatever
        // field it renamed.
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| BundleError::Json { file: origin.into(), error })?;
        // serde_json keeps the last of two equal keys; a bundle saying two things is refused.
        serde_json::from_str::<unique::UniqueKeys>(text)
            .map_err(|error| BundleError::Json { file: origin.into(), error })?;
        let version = value.get("schema_version").ok_or_else(|| BundleError::Invalid {
            file: origin.into(),
            field: "schema_version".into(),
            problem: "is missing".into(),
        })?;
        if version.as_u64() != Some(u64::from(SCHEMA_VERSION)) {
            return Err(BundleError::SchemaVersion {
                file: origin.into(),
                found: version.to_string(),
            });
        }
        let bundle: Bundle = serde_json::from_value(value)
            .map_err(|error| BundleError::Json { file: origin.into(), error })?;
        bundle.validate(origin)?;
        Ok(bundle)
    }

    /// The description of the model playing `role`.
    pub fn model(&self, role: Role) -> Result<&ModelSpec, BundleError> {
        self.models.get(&role).ok_or_else(|| BundleError::MissingRole {
            role,
            present: self.models.keys().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Checks that `onnx` is the file `role`'s entry describes: its SHA-256, that it parses as
    /// an ONNX model, and that the graph declares exactly the entry's inputs and outputs with
    /// the same shapes (float32, `batch` as a symbolic axis).
    pub fn verify(&self, role: Role, onnx: &[u8]) -> Result<(), BundleError> {
        self.verify_hash(role, onnx)?;
        interface::check(role, self.model(role)?, onnx)
    }

    /// Checks that `onnx` has the SHA-256 `role`'s entry records.
    pub fn verify_hash(&self, role: Role, onnx: &[u8]) -> Result<(), BundleError> {
        let spec = self.model(role)?;
        let actual = sha256_hex(onnx);
        if !actual.eq_ignore_ascii_case(&spec.sha256) {
            return Err(BundleError::Hash {
                file: spec.file.clone(),
                role,
                expected: spec.sha256.clone(),
                actual,
                size: onnx.len(),
            });
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), BundleError> {
        let invalid = |field: &str, problem: String| BundleError::Invalid {
            file: origin.into(),
            field: field.into(),
            problem,
        };
        let image = &self.image;
        for (field, value) in [
            ("image.channels", image.channels),
            ("image.height", image.height),
            ("image.width", image.width),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if let Some(resize) = &image.resize
            && (resize.size, resize.size) != (image.width, image.height)
        {
            return Err(invalid(
                "image.resize.size",
                format!(
                    "must equal image.width and image.height ({}×{}), is {}",
                    image.width, image.height, resize.size
                ),
            ));
        }
        let norm = &image.normalization;
        if !norm.mean.is_finite() {
            return Err(invalid(
                "image.normalization.mean",
                format!("must be a finite number, is {}", norm.mean),
            ));
        }
        if !norm.std.is_finite() || norm.std == 0.0 {
            return Err(invalid(
                "image.normalization.std",
                format!("must be finite and nonzero, is {}", norm.std),
            ));
        }
        if self.labels.count == 0 {
            return Err(invalid("labels.count", "must be at least 1".into()));
        }
        if let Some(edm) = &self.edm
            && !(edm.sigma_data.is_finite() && edm.sigma_data > 0.0)
        {
            return Err(invalid(
                "edm.sigma_data",
                format!("must be positive, is {}", edm.sigma_data),
            ));
        }
        self.validate_sampler(origin)?;
        if let Some(reid) = &self.reid {
            for (field, threshold) in [
                ("reid.threshold", Some(reid.threshold)),
                ("reid.neighbour_threshold", reid.neighbour_threshold),
            ] {
                if let Some(t) = threshold
                    && !(t > 0.0 && t < 1.0)
                {
                    return Err(invalid(
                        field,
                        format!("must lie strictly between 0 and 1, is {t}"),
                    ));
                }
            }
            if let Some(p) = limits::count_problem(reid.neighbours, &limits::NEIGHBOURS) {
                return Err(invalid(
                    "reid.neighbours",
                    format!("{p}: with no neighbours the check against other people is off"),
                ));
            }
        }
        for (role, spec) in &self.models {
            let field = |name: &str| format!("models.{role}.{name}");
            if spec.file.is_empty()
                || spec.file.contains(['/', '\\'])
                || spec.file == "."
                || spec.file == ".."
            {
                return Err(invalid(
                    &field("file"),
                    format!("{:?} is not a plain file name inside the bundle directory", spec.file),
                ));
            }
            if spec.sha256.len() != 64 || !spec.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &field("sha256"),
                    format!("{:?} is not 64 hexadecimal digits", spec.sha256),
                ));
            }
        }
        if let Some(privacy) = &self.privacy {
            privacy.check().map_err(|(field, problem)| invalid(&field, problem))?;
        }
        roles::check_interfaces(self).map_err(|(field, problem)| invalid(&field, problem))
    }

    fn validate_sampler(&self, origin: &str) -> Result<(), BundleError> {
        let s = &self.sampler;
        let problem = if let Some(p) = limits::count_problem(s.steps, &limits::STEPS) {
            Some(("sampler.steps", p))
        } else if !(s.sigma_min.is_finite() && s.sigma_min > 0.0) {
            Some(("sampler.sigma_min", format!("must be positive, is {}", s.sigma_min)))
        } else if !(s.sigma_max.is_finite()
            && s.sigma_max > s.sigma_min
            && s.sigma_max <= limits::SIGMA_MAX)
        {
            Some((
                "sampler.sigma_max",
                format!(
                    "must be above sigma_min ({}) and at most {} (this tool's limit), is {}",
                    s.sigma_min,
                    limits::SIGMA_MAX,
                    s.sigma_max
                ),
            ))
        } else if !(s.rho.is_finite() && s.rho > 0.0 && s.rho <= limits::RHO_MAX) {
            Some((
                "sampler.rho",
                format!("must be positive and at most {}, is {}", limits::RHO_MAX, s.rho),
            ))
        } else if let Some(p) = limits::weight_problem(s.guidance, &limits::GUIDANCE) {
            Some(("sampler.guidance", p))
        } else if let Some(problem) = s.guidance_interval.and_then(limits::interval_problem) {
            Some(("sampler.guidance_interval", problem))
        } else if let Some(p) = limits::count_problem(s.candidates_per_image, &limits::CANDIDATES) {
            Some(("sampler.candidates_per_image", p))
        } else if let Some(p) =
            limits::weight_problem(s.guidance_decrement, &limits::GUIDANCE_DECREMENT)
        {
            Some(("sampler.guidance_decrement", p))
        } else if let Some(p) = limits::count_problem(s.max_rounds, &limits::ROUNDS) {
            Some(("sampler.max_rounds", p))
        } else if let Some(p) =
            s.distilled.and_then(|d| limits::count_problem(d.steps, &limits::STEPS))
        {
            Some(("sampler.distilled.steps", p))
        } else {
            let student = self.models.contains_key(&Role::Student);
            match (student, s.distilled.is_some()) {
                (true, false) => Some((
                    "sampler.distilled",
                    "is missing; `models.student` needs it (its steps)".to_string(),
                )),
                (false, true) => Some((
                    "sampler.distilled",
                    "is set but the bundle has no `models.student`".to_string(),
                )),
                _ if s.solver == Solver::Distilled && !student => Some((
                    "sampler.solver",
                    "is `distilled` but the bundle has no `models.student`".to_string(),
                )),
                _ => None,
            }
        };
        match problem {
            Some((field, problem)) => {
                Err(BundleError::Invalid { file: origin.into(), field: field.into(), problem })
            }
            None => Ok(()),
        }
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classifier-only bundle whose `image` section is `image`.
    fn with_image(image: &str) -> String {
        format!(
            r#"{{ "schema_version": 1, "name": "b", "image": {image},
                 "labels": {{ "count": 2, "multi_label": false }},
                 "models": {{ "classifier": {{ "file": "c.onnx", "sha256": "{}",
                   "inputs": [ {{ "name": "image", "shape": ["batch", 1, 32, 32] }} ],
                   "outputs": [ {{ "name": "logits", "shape": ["batch", 2] }} ] }} }} }}"#,
            "0".repeat(64)
        )
    }

    const NORMALIZATION: &str = r#""normalization": { "mean": 0.5, "std": 0.5 }"#;

    #[test]
    fn the_size_rule_is_read_checked_and_left_out_when_absent() {
        let plain = format!(r#"{{ "channels": 1, "height": 32, "width": 32, {NORMALIZATION} }}"#);
        let bundle = Bundle::from_json(&with_image(&plain)).unwrap();
        assert_eq!(bundle.image.resize, None);
        let json = serde_json::to_string(&bundle.image).unwrap();
        assert!(!json.contains("resize"), "an absent rule is not written: {json}");

        let ruled = format!(
            r#"{{ "channels": 1, "height": 32, "width": 32, {NORMALIZATION},
                 "resize": {{ "rule": "shorter-side-triangle-center-crop", "size": 32 }} }}"#
        );
        let bundle = Bundle::from_json(&with_image(&ruled)).unwrap();
        let rule = ResizeSpec { rule: ResizeRule::ShorterSideTriangleCenterCrop, size: 32 };
        assert_eq!(bundle.image.resize, Some(rule));
        let json = serde_json::to_string(&bundle.image.resize).unwrap();
        assert_eq!(json, r#"{"rule":"shorter-side-triangle-center-crop","size":32}"#);

        let other_size = ruled.replace(r#""size": 32"#, r#""size": 28"#);
        let err = Bundle::from_json(&with_image(&other_size)).unwrap_err().to_string();
        assert!(err.contains("image.resize.size") && err.contains("32×32"), "{err}");
        let other_rule = ruled.replace("triangle", "lanczos");
        let err = Bundle::from_json(&with_image(&other_rule)).unwrap_err().to_string();
        assert!(err.contains("shorter-side-lanczos-center-crop"), "{err}");
    }
}
