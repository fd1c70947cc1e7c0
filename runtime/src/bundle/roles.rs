//! The roles a model can play in a bundle, and the interface each role must declare.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Bundle, Dim, TensorSpec, shape_string};

/// What a model is for. In `bundle.json` a role is the snake_case key under `models`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Conditional denoiser `D(x; σ, c)`; with `condition_mask` 0 also the unconditional one.
    Denoiser,
    /// Separate unconditional denoiser for guidance (same interface as the denoiser).
    Guide,
    /// The denoiser distilled into a few-step sampler (same interface as the denoiser, run
    /// unguided with mask 1 by the `distilled` solver; `sampler.distilled` says how).
    Student,
    /// Pseudo-condition extractor: image → L2-normalised features.
    Features,
    /// Classifier: image → logits (and features).
    Classifier,
    /// Re-identification embedding: image → embedding.
    ReidEmbed,
    /// Re-identification head: two embeddings → "same person" logit.
    ReidHead,
}

impl Role {
    /// Every role, in the order `bundle.json` lists them.
    pub const ALL: [Role; 7] = [
        Role::Denoiser,
        Role::Guide,
        Role::Student,
        Role::Features,
        Role::Classifier,
        Role::ReidEmbed,
        Role::ReidHead,
    ];

    /// The role's key in `bundle.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Denoiser => "denoiser",
            Role::Guide => "guide",
            Role::Student => "student",
            Role::Features => "features",
            Role::Classifier => "classifier",
            Role::ReidEmbed => "reid_embed",
            Role::ReidHead => "reid_head",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An expected axis: the batch axis, a known extent, or an extent named by a variable that
/// must take the same value wherever it appears in the bundle.
#[derive(Clone, Copy)]
enum Want {
    Batch,
    Is(usize),
    Var(&'static str),
}

/// An expected tensor.
struct Expect {
    name: &'static str,
    shape: Vec<Want>,
}

/// Required inputs (exactly these) and outputs (at least these) of `role`.
fn interface(role: Role, bundle: &Bundle) -> (Vec<Expect>, Vec<Expect>) {
    use Want::{Batch, Is, Var};
    let img = &bundle.image;
    let image = || vec![Batch, Is(img.channels), Is(img.height), Is(img.width)];
    let t = |name, shape| Expect { name, shape };
    match role {
        Role::Denoiser | Role::Guide | Role::Student => (
            vec![
                t("x", image()),
                t("sigma", vec![Batch]),
                t("condition", vec![Batch, Var("the condition size D")]),
                t("condition_mask", vec![Batch]),
            ],
            vec![t("denoised", image())],
        ),
        Role::Features => (
            vec![t("image", image())],
            vec![t("features", vec![Batch, Var("the condition size D")])],
        ),
        Role::Classifier => {
            (vec![t("image", image())], vec![t("logits", vec![Batch, Is(bundle.labels.count)])])
        }
        Role::ReidEmbed => (
            vec![t("image", image())],
            vec![t("embedding", vec![Batch, Var("the re-id embedding size E")])],
        ),
        Role::ReidHead => (
            vec![
                t("a", vec![Batch, Var("the re-id embedding size E")]),
                t("b", vec![Batch, Var("the re-id embedding size E")]),
            ],
            vec![t("logit", vec![Batch, Is(1)])],
        ),
    }
}

/// Checks every model entry against its role's interface and the roles against each other;
/// on failure returns the offending field and the problem.
pub(super) fn check_interfaces(bundle: &Bundle) -> Result<(), (String, String)> {
    let mut vars: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
    for (&role, spec) in &bundle.models {
        unique_names(role, "inputs", &spec.inputs)?;
        unique_names(role, "outputs", &spec.outputs)?;
        let (inputs, outputs) = interface(role, bundle);
        if let Some(extra) = spec.inputs.iter().find(|t| !inputs.iter().any(|e| e.name == t.name)) {
            let wanted: Vec<&str> = inputs.iter().map(|e| e.name).collect();
            return Err((
                format!("models.{role}.inputs"),
                format!(
                    "has an input `{}` the {role} role does not feed (its inputs are {})",
                    extra.name,
                    wanted.join(", ")
                ),
            ));
        }
        for (kind, expected, declared) in
            [("inputs", &inputs, &spec.inputs), ("outputs", &outputs, &spec.outputs)]
        {
            for e in expected.iter() {
                let Some(t) = declared.iter().find(|t| t.name == e.name) else {
                    return Err((
                        format!("models.{role}.{kind}"),
                        format!("lacks `{}`, which the {role} role needs", e.name),
                    ));
                };
                let field = format!("models.{role}.{kind}.{}.shape", e.name);
                match_shape(e, t, &mut vars, &field)?;
            }
        }
    }
    let has = |r: Role| bundle.models.contains_key(&r);
    let needs = [
        (Role::Guide, Role::Denoiser),
        (Role::Student, Role::Denoiser),
        (Role::ReidHead, Role::ReidEmbed),
        (Role::ReidEmbed, Role::ReidHead),
    ];
    for (role, other) in needs {
        if has(role) && !has(other) {
            return Err((
                "models".into(),
                format!("has `{role}` but not `{other}`, which it works with"),
            ));
        }
    }
    if has(Role::ReidHead) && bundle.reid.is_none() {
        return Err((
            "reid".into(),
            "is missing; `models.reid_head` needs `reid.threshold`".into(),
        ));
    }
    Ok(())
}

fn unique_names(role: Role, kind: &str, tensors: &[TensorSpec]) -> Result<(), (String, String)> {
    for (i, t) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|u| u.name == t.name) {
            return Err((format!("models.{role}.{kind}"), format!("names `{}` twice", t.name)));
        }
    }
    Ok(())
}

fn match_shape(
    expect: &Expect,
    actual: &TensorSpec,
    vars: &mut BTreeMap<&'static str, (usize, String)>,
    field: &str,
) -> Result<(), (String, String)> {
    let wanted: Vec<String> = expect
        .shape
        .iter()
        .map(|w| match w {
            Want::Batch => "batch".to_string(),
            Want::Is(n) => n.to_string(),
            Want::Var(_) => "n".to_string(),
        })
        .collect();
    let mismatch = || {
        (
            field.to_string(),
            format!("is {}, expected [{}]", shape_string(&actual.shape), wanted.join(", ")),
        )
    };
    if actual.shape.len() != expect.shape.len() {
        return Err(mismatch());
    }
    for (want, &dim) in expect.shape.iter().zip(&actual.shape) {
        match (*want, dim) {
            (Want::Batch, Dim::Batch) => {}
            (Want::Is(n), Dim::Fixed(m)) if n == m => {}
            (Want::Var(var), Dim::Fixed(m)) if m > 0 => match vars.get(var) {
                Some((n, first)) if *n != m => {
                    return Err((
                        field.to_string(),
                        format!("gives {var} as {m}, but {first} gives it as {n}"),
                    ));
                }
                Some(_) => {}
                None => {
                    vars.insert(var, (m, field.to_string()));
                }
            },
            _ => return Err(mismatch()),
        }
    }
    Ok(())
}
