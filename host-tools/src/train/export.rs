//! Writes the trained CNN as an ONNX graph with Vigil's metadata.

use super::cnn::{BackboneSpec, NamedWeight, Pooling};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as DimValue,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::onnx::{float_initializer, write_metadata};

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![name.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[DimValue]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension { value: Some(d.clone()), ..Default::default() })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds the ONNX model: `signal [N, C, W] -> conv/relu ... -> GlobalAveragePool ->
/// Flatten (embedding) -> Gemm (logits)`.
pub fn build_model(spec: &BackboneSpec, weights: &[NamedWeight], meta: &ModelMetadata) -> ModelProto {
    let mut nodes = Vec::new();
    let mut prev = meta.input_name.clone();
    for (i, c) in spec.convs.iter().enumerate() {
        let conv = format!("conv{}", i + 1);
        let (w, b) = (format!("{conv}.weight"), format!("{conv}.bias"));
        nodes.push(node(
            "Conv",
            &conv,
            &[&prev, &w, &b],
            vec![
                ints("kernel_shape", &[c.kernel as i64]),
                ints("strides", &[c.stride as i64]),
                ints("dilations", &[c.dilation as i64]),
                ints("pads", &[c.padding as i64, c.padding as i64]),
            ],
        ));
        let relu = format!("relu{}", i + 1);
        nodes.push(node("Relu", &relu, &[&conv], vec![]));
        prev = relu;
    }
    match spec.pooling {
        Pooling::Mean => nodes.push(node("GlobalAveragePool", "pool", &[&prev], vec![])),
        Pooling::MeanMax => {
            nodes.push(node("GlobalAveragePool", "pool_mean", &[&prev], vec![]));
            nodes.push(node("GlobalMaxPool", "pool_max", &[&prev], vec![]));
            nodes.push(node("Concat", "pool", &["pool_mean", "pool_max"], vec![int("axis", 1)]));
        }
    }
    nodes.push(node("Flatten", &meta.embedding_node, &["pool"], vec![int("axis", 1)]));
    nodes.push(node(
        "Gemm",
        &meta.logits_node,
        &[&meta.embedding_node, &meta.head_weight, &meta.head_bias],
        vec![int("transB", 1)],
    ));
    let batch = DimValue::DimParam("batch".into());
    let graph = GraphProto {
        name: "vigil-backbone".into(),
        node: nodes,
        initializer: weights.iter().map(|(n, d, v)| float_initializer(n, d, v)).collect(),
        input: vec![value_info(
            &meta.input_name,
            &[
                batch.clone(),
                DimValue::DimValue(meta.channels as i64),
                DimValue::DimValue(meta.window as i64),
            ],
        )],
        output: vec![value_info(
            &meta.logits_node,
            &[batch, DimValue::DimValue(meta.class_names.len() as i64)],
        )],
        ..Default::default()
    };
    let mut model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "vigil".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    write_metadata(&mut model, meta);
    model
}
