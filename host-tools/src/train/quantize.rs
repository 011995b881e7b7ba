//! Static int8 post-training quantisation of a Vigil model, in ONNX's QOperator form that
//! tract executes with integer kernels: the normalised input is quantised once
//! (QuantizeLinear, u8), every Conv + Relu pair becomes one QLinearConv (u8 activations,
//! int8 weights with one scale per output channel, int32 bias; the ReLU is the clamp of
//! the u8 output at zero point 0), and the last activation is dequantised
//! (DequantizeLinear) under the name the pooling already reads, so pooling, the embedding
//! and the head stay in f32 and the runtime's cut at the embedding node is unchanged.
//!
//! QDQ (QuantizeLinear/DequantizeLinear around float convolutions) is not used: tract keeps
//! those pairs and computes the convolution in f32, slower than the plain f32 model.
//!
//! Activation ranges come from running the f32 graph (candle) on calibration windows:
//! the maximum (`minmax`) or the 99.99th percentile (`percentile`) of each activation.

use super::graph::{GraphModel, Trainable};
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::onnx::{float_initializer, read_initializer};

/// How activation ranges are taken from the calibration windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeMethod {
    /// The largest value seen.
    Minmax,
    /// The 99.99th percentile of the values seen (ignores rare outliers).
    Percentile,
}

fn raw_tensor(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attrs: &NodeProto) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs.attribute.clone(),
        ..Default::default()
    }
}

/// The largest absolute value of `values`, or its `q` quantile.
fn range_of(mut values: Vec<f32>, method: RangeMethod) -> f32 {
    values.iter_mut().for_each(|v| *v = v.abs());
    let top = match method {
        RangeMethod::Minmax => values.iter().copied().fold(0.0f32, f32::max),
        RangeMethod::Percentile => super::quantile(values, 0.9999),
    };
    top.max(1e-6)
}

/// At most `max` of `windows`, spread evenly, normalised as the runtime does, as a
/// `[n, channels, window]` tensor for [`quantize`].
pub fn calibration_tensor(
    meta: &ModelMetadata,
    windows: &[vigil_runtime::windower::Window],
    max: usize,
) -> Result<Tensor> {
    let step = windows.len().div_ceil(max.max(1)).max(1);
    let picked = super::fine_tune::normalised(meta, windows.iter().step_by(step));
    let labels = vec![0; picked.len()];
    Ok(super::graph::batch_tensors(&picked, &labels, meta.channels)?.0)
}

/// What [`quantize`] made.
#[derive(Debug)]
pub struct Quantized {
    /// The int8 model.
    pub proto: ModelProto,
    /// Convolutions quantised.
    pub convs: usize,
    /// Scale of the quantised input and of each quantised activation.
    pub scales: Vec<(String, f32)>,
}

/// Quantises the Conv + Relu chain at the start of `proto`'s graph, with ranges from
/// `calibration` (normalised windows, `[n, channels, window]`).
pub fn quantize(
    proto: &ModelProto,
    meta: &ModelMetadata,
    calibration: &Tensor,
    method: RangeMethod,
    float_convs: usize,
) -> Result<Quantized> {
    let graph_model = GraphModel::new(
        proto,
        &meta.input_name,
        &meta.embedding_node,
        (&meta.head_weight, &meta.head_bias),
        Trainable::Last(0),
        None,
    )?;
    let mut ranges: HashMap<String, Vec<f32>> = HashMap::new();
    let n = calibration.dims()[0];
    for start in (0..n).step_by(32) {
        let batch = calibration.narrow(0, start, 32.min(n - start))?;
        for (name, t) in graph_model.activations(&batch)? {
            // Only what feeds a quantised tensor: the outputs of the Relu nodes.
            if graph_model.nodes().iter().any(|n| n.op_type == "Relu" && n.output.first() == Some(&name)) {
                ranges.entry(name).or_default().extend(t.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        if float_convs == 0 {
            ranges.entry(meta.input_name.clone()).or_default().extend(batch.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut new_nodes = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut scales = Vec::new();
    let nodes = &graph.node;
    // The first `float_convs` Conv + Relu pairs stay in f32: the raw signal is impulsive
    // (a few large impacts over a small background) and 8 bits of it lose the background.
    let mut i = 2 * float_convs;
    if nodes.len() < i || nodes[..i].iter().enumerate().any(|(k, n)| n.op_type != ["Conv", "Relu"][k % 2]) {
        bail!("the graph does not start with {float_convs} Conv + Relu pairs");
    }
    new_nodes.extend(nodes[..i].iter().cloned());
    let (entry, signed) = match i {
        0 => (meta.input_name.clone(), true),
        _ => (nodes[i - 1].output[0].clone(), false),
    };
    let entry_range = if signed {
        range_of(ranges.remove(&meta.input_name).unwrap_or_default(), method)
    } else {
        range_of(ranges.remove(&entry).unwrap_or_default(), method)
    };
    // Signed input: u8 around 128; a ReLU output: u8 from 0.
    let (input_scale, input_zero) =
        if signed { (entry_range / 127.0, 128u8) } else { (entry_range / 255.0, 0u8) };
    scales.push((entry.clone(), input_scale));
    let q_input = format!("{entry}_q");
    initializers.push(float_initializer("entry_q.scale", &[], &[input_scale]));
    initializers.push(raw_tensor("entry_q.zero", &[], DataType::Uint8, vec![input_zero]));
    new_nodes.push(node(
        "QuantizeLinear",
        "entry_q",
        &[&entry, "entry_q.scale", "entry_q.zero"],
        &q_input,
        &NodeProto::default(),
    ));
    let (mut prev, mut prev_scale, mut prev_zero) =
        (q_input, "entry_q.scale".to_owned(), "entry_q.zero".to_owned());
    let mut prev_scale_value = input_scale;
    let mut convs = 0;
    while i + 1 < nodes.len() && nodes[i].op_type == "Conv" && nodes[i + 1].op_type == "Relu" {
        let (conv, relu) = (&nodes[i], &nodes[i + 1]);
        if relu.input.first() != conv.output.first() || conv.input.len() != 3 {
            bail!(
                "node {} is not a Conv with bias followed by its Relu; the graph cannot be quantised",
                conv.name
            );
        }
        let w = read_initializer(proto, &conv.input[1])?;
        let b = read_initializer(proto, &conv.input[2])?;
        let out_ch = w.dims[0];
        let per = w.values.len() / out_ch.max(1);
        let mut w_q = Vec::with_capacity(w.values.len());
        let mut w_scales = Vec::with_capacity(out_ch);
        for row in w.values.chunks_exact(per) {
            let s = row.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12) / 127.0;
            w_scales.push(s);
            w_q.extend(row.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8 as u8));
        }
        let bias: Vec<u8> = b
            .values
            .iter()
            .zip(&w_scales)
            .flat_map(|(bv, ws)| ((bv / (prev_scale_value * ws)).round() as i32).to_le_bytes())
            .collect();
        let y_range = range_of(ranges.remove(relu.output[0].as_str()).unwrap_or_default(), method);
        let y_scale = y_range / 255.0;
        let c = &conv.name;
        initializers.push(raw_tensor(&format!("{c}.wq"), &w.dims, DataType::Int8, w_q));
        initializers.push(float_initializer(&format!("{c}.wscale"), &[out_ch], &w_scales));
        initializers.push(raw_tensor(&format!("{c}.wzero"), &[out_ch], DataType::Int8, vec![0; out_ch]));
        initializers.push(raw_tensor(&format!("{c}.bq"), &[out_ch], DataType::Int32, bias));
        initializers.push(float_initializer(&format!("{c}.yscale"), &[], &[y_scale]));
        initializers.push(raw_tensor(&format!("{c}.yzero"), &[], DataType::Uint8, vec![0]));
        let out = format!("{c}_q");
        let inputs = [
            prev.as_str(),
            prev_scale.as_str(),
            prev_zero.as_str(),
            &format!("{c}.wq"),
            &format!("{c}.wscale"),
            &format!("{c}.wzero"),
            &format!("{c}.yscale"),
            &format!("{c}.yzero"),
            &format!("{c}.bq"),
        ];
        new_nodes.push(node("QLinearConv", &out, &inputs, &out, conv));
        dropped.extend(conv.input[1..].iter().cloned());
        scales.push((relu.output[0].clone(), y_scale));
        (prev, prev_scale, prev_zero) = (out, format!("{c}.yscale"), format!("{c}.yzero"));
        prev_scale_value = y_scale;
        convs += 1;
        i += 2;
    }
    if convs == 0 {
        bail!("no Conv + Relu pair after the first {float_convs}; nothing to quantise");
    }
    // Back to f32 under the name the rest of the graph reads.
    let last_relu = nodes[i - 1].output[0].clone();
    new_nodes.push(node(
        "DequantizeLinear",
        &format!("{last_relu}_dq"),
        &[&prev, &prev_scale, &prev_zero],
        &last_relu,
        &NodeProto::default(),
    ));
    new_nodes.extend(nodes[i..].iter().cloned());
    let mut out = proto.clone();
    let g = out.graph.as_mut().ok_or_else(|| anyhow!("the model has no graph"))?;
    g.node = new_nodes;
    g.initializer.retain(|t| !dropped.contains(&t.name));
    g.initializer.extend(initializers);
    // Opset 13 has QLinearConv and per-axis DequantizeLinear.
    Ok(Quantized { proto: out, convs, scales })
}
