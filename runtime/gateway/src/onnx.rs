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

/// Reads Vigil's metadata from a decoded model.
pub fn read_metadata(proto: &ModelProto) -> Result<ModelMetadata> {
    ModelMetadata::from_props(proto.metadata_props.iter().map(|e| (e.key.as_str(), e.value.as_str())))
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

/// `proto` with each patchify convolution of the input `input` (kernel k equal to its
/// stride, no padding, no dilation, one group) written as a pointwise convolution over
/// the input's patches: Reshape to `[1, C, W/k, k]`, Transpose to `[1, C, k, W/k]`,
/// Reshape to `[1, C*k, W/k]`, then the same weights as a kernel-1 convolution. The
/// function is the same for inputs of `window` samples. tract 0.23.9 runs the strided
/// one-channel convolution as a matrix product that gathers its input as it goes (25 µs
/// for bearing-cnn-v2's first layer on this machine) and the pointwise one as a plain
/// matrix product (11 µs). Graphs with no such convolution come back unchanged.
pub fn patchify_as_pointwise(proto: &ModelProto, input: &str, channels: usize, window: usize) -> ModelProto {
    use tract_onnx::pb::{attribute_proto::AttributeType, NodeProto};
    let mut out = proto.clone();
    let Some(graph) = out.graph.as_mut() else { return out };
    let mut k = 0;
    while k < graph.node.len() {
        let node = &graph.node[k];
        let kernel = ints(node, "kernel_shape").and_then(|v| (v.len() == 1).then(|| v[0]));
        let plain = node.op_type == "Conv"
            && node.input.first().map(String::as_str) == Some(input)
            && ints(node, "strides") == kernel.map(|k| vec![k])
            && ints(node, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
            && ints(node, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1))
            && node.attribute.iter().all(|a| match a.name.as_str() {
                "group" => a.i == 1,
                "auto_pad" => a.s.is_empty() || a.s == b"NOTSET",
                _ => true,
            });
        let weight = node.input.get(1).and_then(|w| read_initializer(proto, w).ok());
        let (Some(k_size), true, Some(weight)) = (kernel.map(|v| v.max(0) as usize), plain, weight) else {
            k += 1;
            continue;
        };
        if k_size < 2 || !window.is_multiple_of(k_size) || weight.dims != [weight.dims[0], channels, k_size] {
            k += 1;
            continue;
        }
        let id = format!("{}.patches", node.name);
        let (frames, wide) = ((window / k_size) as i64, (channels * k_size) as i64);
        let shape = |name: &str, dims: &[i64]| TensorProto {
            name: name.into(),
            dims: vec![dims.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: dims.to_vec(),
            ..Default::default()
        };
        let step = |op: &str, name: String, inputs: Vec<String>, attribute| NodeProto {
            op_type: op.into(),
            name: name.clone(),
            input: inputs,
            output: vec![name],
            attribute,
            ..Default::default()
        };
        let perm = tract_onnx::pb::AttributeProto {
            name: "perm".into(),
            r#type: AttributeType::Ints as i32,
            ints: vec![0, 1, 3, 2],
            ..Default::default()
        };
        let weight_name = node.input[1].clone();
        let steps = [
            step("Reshape", format!("{id}.split"), vec![input.into(), format!("{id}.split.shape")], vec![]),
            step("Transpose", format!("{id}.transpose"), vec![format!("{id}.split")], vec![perm]),
            step(
                "Reshape",
                format!("{id}.merge"),
                vec![format!("{id}.transpose"), format!("{id}.merge.shape")],
                vec![],
            ),
        ];
        let mut conv = graph.node[k].clone();
        conv.input[0] = format!("{id}.merge");
        for a in conv.attribute.iter_mut() {
            if a.name == "kernel_shape" || a.name == "strides" {
                a.ints = vec![1];
            }
        }
        graph.node.splice(k..=k, steps.into_iter().chain([conv]));
        graph
            .initializer
            .push(shape(&format!("{id}.split.shape"), &[1, channels as i64, frames, k_size as i64]));
        graph.initializer.push(shape(&format!("{id}.merge.shape"), &[1, wide, frames]));
        for t in graph.initializer.iter_mut().filter(|t| t.name == weight_name) {
            *t = float_initializer(&weight_name, &[weight.dims[0], channels * k_size, 1], &weight.values);
        }
        k += 4;
    }
    out
}
