//! Compares the inputs and outputs an ONNX graph declares with a bundle's model entry.

use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType, tensor_shape_proto::dimension::Value};

use super::{BundleError, Dim, ModelSpec, Role, TensorSpec, shape_string};

/// A declared axis: fixed, symbolic (named or not), as ONNX allows.
enum Declared {
    Fixed(i64),
    Symbolic(String),
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Declared::Fixed(n) => write!(f, "{n}"),
            Declared::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Declared::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Decodes `onnx` and checks that its graph declares exactly `spec`'s inputs and outputs.
pub(super) fn check(role: Role, spec: &ModelSpec, onnx: &[u8]) -> Result<(), BundleError> {
    let fail = |problem: String| BundleError::Interface { file: spec.file.clone(), role, problem };
    let model = pb::ModelProto::decode(onnx).map_err(|e| BundleError::NotOnnx {
        file: spec.file.clone(),
        role,
        reason: e.to_string(),
    })?;
    let graph = model.graph.as_ref().ok_or_else(|| BundleError::NotOnnx {
        file: spec.file.clone(),
        role,
        reason: "the model holds no graph".into(),
    })?;
    // Before IR version 4 initialisers were also listed as inputs; they are not fed.
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .collect();
    compare("input", &inputs, &spec.inputs).map_err(fail)?;
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    compare("output", &outputs, &spec.outputs).map_err(fail)
}

fn compare(
    kind: &str,
    declared: &[&pb::ValueInfoProto],
    expected: &[TensorSpec],
) -> Result<(), String> {
    let names = |v: &mut dyn Iterator<Item = &str>| v.collect::<Vec<_>>().join(", ");
    for info in declared {
        if !expected.iter().any(|t| t.name == info.name) {
            return Err(format!(
                "the graph has an {kind} `{}` that bundle.json does not list (bundle.json lists: {})",
                info.name,
                names(&mut expected.iter().map(|t| t.name.as_str()))
            ));
        }
    }
    for t in expected {
        let Some(info) = declared.iter().find(|i| i.name == t.name) else {
            return Err(format!(
                "bundle.json lists an {kind} `{}` that the graph does not have (the graph has: {})",
                t.name,
                names(&mut declared.iter().map(|i| i.name.as_str()))
            ));
        };
        let (elem_type, dims) = tensor_type(info)
            .ok_or_else(|| format!("{kind} `{}` is not a tensor with a shape", t.name))?;
        if elem_type != DataType::Float as i32 {
            let name = DataType::try_from(elem_type)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or(elem_type.to_string());
            return Err(format!(
                "{kind} `{}` has element type {name}; bundles hold float32 tensors only",
                t.name
            ));
        }
        let agrees = dims.len() == t.shape.len()
            && dims.iter().zip(&t.shape).all(|(d, s)| match (d, s) {
                (Declared::Symbolic(_), Dim::Batch) => true,
                (Declared::Fixed(n), Dim::Fixed(m)) => usize::try_from(*n).ok() == Some(*m),
                _ => false,
            });
        if !agrees {
            let shown: Vec<String> = dims.iter().map(ToString::to_string).collect();
            return Err(format!(
                "{kind} `{}`: the graph declares shape [{}], bundle.json says {}",
                t.name,
                shown.join(", "),
                shape_string(&t.shape)
            ));
        }
    }
    Ok(())
}

fn tensor_type(info: &pb::ValueInfoProto) -> Option<(i32, Vec<Declared>)> {
    let Some(pb::type_proto::Value::TensorType(tensor)) = info.r#type.as_ref()?.value.as_ref()
    else {
        return None;
    };
    let dims = tensor
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(n)) => Declared::Fixed(*n),
            Some(Value::DimParam(p)) => Declared::Symbolic(p.clone()),
            None => Declared::Symbolic(String::new()),
        })
        .collect();
    Some((tensor.elem_type, dims))
}
