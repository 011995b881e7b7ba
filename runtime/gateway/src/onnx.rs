//! Reading and writing the parts of an ONNX file that Vigil owns: `metadata_props` and
//! float initializers. The graph itself is left to tract (loading) and to the exporter.

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use prost::Message;
use std::path::Path;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, StringStringEntryProto, TensorProto};

/// Decodes ONNX protobuf bytes; `path` only names the file in errors.
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    if bytes.is_empty() {
        return Err(RuntimeError::NotOnnx { path: path.into(), reason: "the file is empty".into() });
    }
    let proto = ModelProto::decode(bytes)
        .map_err(|e| RuntimeError::NotOnnx { path: path.into(), reason: e.to_string() })?;
    if proto.graph.is_none() {
        return Err(RuntimeError::NotOnnx { path: path.into(), reason: "it holds no graph".into() });
    }
    Ok(proto)
}

/// Encodes a model to ONNX protobuf bytes.
pub fn encode_model(proto: &ModelProto) -> Vec<u8> {
    proto.encode_to_vec()
}

/// Reads Vigil's metadata from a decoded model and checks that every node it names is in
/// the graph: the input, the embedding and logits outputs, the head's initializers.
pub fn read_metadata(proto: &ModelProto) -> Result<ModelMetadata> {
    let meta =
        ModelMetadata::from_props(proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())))?;
    let Some(graph) = &proto.graph else {
        return Err(RuntimeError::Metadata { key: "graph".into(), problem: "the model has no graph".into() });
    };
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let outputs = || graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str));
    let initializers = || graph.initializer.iter().map(|t| t.name.as_str());
    let missing = |key: &str, name: &str, what: &str, known: Vec<&str>| {
        let mut listed = known.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        if known.len() > 8 {
            listed.push_str(", ...");
        }
        RuntimeError::Metadata {
            key: format!("vigil.{key}"),
            problem: format!("names `{name}`, which is not {what} of the graph (it has: {listed})"),
        }
    };
    if !inputs.contains(&meta.input_name.as_str()) {
        return Err(missing("input_name", &meta.input_name, "an input", inputs));
    }
    for (key, name) in [("embedding_node", &meta.embedding_node), ("logits_node", &meta.logits_node)] {
        if !outputs().any(|o| o == name) {
            return Err(missing(key, name, "a node output", outputs().collect()));
        }
    }
    for (key, name) in [("head_weight", &meta.head_weight), ("head_bias", &meta.head_bias)] {
        if !initializers().any(|i| i == name) {
            return Err(missing(key, name, "an initializer", initializers().collect()));
        }
    }
    Ok(meta)
}

/// Replaces Vigil's metadata in a model, keeping any other `metadata_props`.
pub fn write_metadata(proto: &mut ModelProto, meta: &ModelMetadata) {
    proto.metadata_props.retain(|e| !e.key.starts_with("vigil."));
    proto
        .metadata_props
        .extend(meta.to_props().into_iter().map(|(key, value)| StringStringEntryProto { key, value }));
}

/// A float initializer: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

/// Reads the float initializer `name`.
pub fn read_initializer(proto: &ModelProto, name: &str) -> Result<FloatTensor> {
    let bad = |problem: &str| RuntimeError::Initializer { name: name.into(), problem: problem.into() };
    let tensor = proto
        .graph
        .as_ref()
        .and_then(|g| g.initializer.iter().find(|t| t.name == name))
        .ok_or_else(|| bad("not found in the graph"))?;
    if tensor.data_type != DataType::Float as i32 {
        return Err(bad("is not a float tensor"));
    }
    let dims: Vec<usize> = tensor.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = dims.iter().product();
    let values: Vec<f32> = if !tensor.raw_data.is_empty() {
        tensor.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    } else {
        tensor.float_data.clone()
    };
    if values.len() != count {
        return Err(bad(&format!("holds {} values for dims {:?}", values.len(), dims)));
    }
    Ok(FloatTensor { dims, values })
}

/// Builds a float initializer stored as little-endian raw data.
pub fn float_initializer(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Replaces the values of an existing float initializer, keeping its shape.
pub fn replace_initializer(proto: &mut ModelProto, name: &str, values: &[f32]) -> Result<()> {
    let old = read_initializer(proto, name)?;
    if old.values.len() != values.len() {
        return Err(RuntimeError::Initializer {
            name: name.into(),
            problem: format!(
                "new values have {} entries, the graph expects {}",
                values.len(),
                old.values.len()
            ),
        });
    }
    let graph = proto.graph.as_mut().ok_or_else(|| RuntimeError::Initializer {
        name: name.into(),
        problem: "model has no graph".into(),
    })?;
    for t in graph.initializer.iter_mut().filter(|t| t.name == name) {
        *t = float_initializer(name, &old.dims, values);
    }
    Ok(())
}

/// Replaces the float initializer `name` by `values` of shape `dims` (a head resized for
/// another set of classes).
pub fn resize_initializer(proto: &mut ModelProto, name: &str, dims: &[usize], values: &[f32]) -> Result<()> {
    read_initializer(proto, name)?;
    if dims.iter().product::<usize>() != values.len() {
        return Err(RuntimeError::Initializer {
            name: name.into(),
            problem: format!("{} values do not fill shape {dims:?}", values.len()),
        });
    }
    if let Some(graph) = proto.graph.as_mut() {
        for t in graph.initializer.iter_mut().filter(|t| t.name == name) {
            *t = float_initializer(name, dims, values);
        }
    }
    Ok(())
}

/// Sets the last dimension of the graph output `name` (the logits of a resized head).
pub fn set_output_width(proto: &mut ModelProto, name: &str, width: usize) {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    let outputs = proto.graph.iter_mut().flat_map(|g| g.output.iter_mut()).filter(|o| o.name == name);
    for output in outputs {
        if let Some(type_proto::Value::TensorType(t)) = output.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(last) = t.shape.as_mut().and_then(|s| s.dim.last_mut()) {
                last.value = Some(Value::DimValue(width as i64));
            }
        }
    }
}

/// The integer-list attribute `name` of `node` (`kernel_shape`, `strides`, `pads`, ...).
pub fn ints(node: &tract_onnx::pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    use tract_onnx::pb::attribute_proto::AttributeType;
    node.attribute
        .iter()
        .find(|a| a.name == name && a.r#type == AttributeType::Ints as i32)
        .map(|a| a.ints.clone())
}

/// The integer-list attribute `name` with `values` (`kernel_shape`, `strides`, `pads`, ...).
pub fn ints_attribute(name: &str, values: &[i64]) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A node of operator `op` whose one output is named as the node.
pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    attribute: Vec<tract_onnx::pb::AttributeProto>,
) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.into()],
        attribute,
        ..Default::default()
    }
}
