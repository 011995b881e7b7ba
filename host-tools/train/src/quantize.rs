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
//! A spectral backbone keeps most of its weights in matrices after the convolutions (its
//! dense embedding layer and its transform). Those are stored as int8 with one scale per
//! column and read back in f32 when tract loads the file (`store_matrices_int8`): the
//! file shrinks, the arithmetic there stays f32.
//!
//! Activation ranges come from running the f32 graph (candle) on calibration windows:
//! the maximum (`minmax`) or the 99.99th percentile (`percentile`) of each activation.
//!
//! One u8 scale serves all channels of an activation, so a channel whose values stay
//! small gets few of its 256 steps. Before quantising, [`equalise`] rescales each
//! quantised activation channel by channel, and the next convolution's weights inversely
//! (ReLU commutes with a positive scale, so the f32 model computes the same function):
//! per channel, the activation range and the largest weight that reads it become equal
//! (cross-layer equalisation, as in Nagel et al., "Data-Free Quantization", 2019, here
//! with ranges measured on the calibration windows).

use super::graph::{dense_weight, GraphModel, Trainable};
use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::onnx::{float_initializer, read_initializer, replace_initializer};

/// How activation ranges are taken from the calibration windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RangeMethod {
    /// The largest value seen.
    Minmax,
    /// The 99.99th percentile of the values seen (ignores rare outliers).
    Percentile,
    /// The range whose 8-bit grid reproduces the values seen with the least squared
    /// error: clips rare peaks when that buys finer steps for the bulk of the values.
    Mse,
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

/// The largest absolute value of `values`, its `q` quantile, or the range of least
/// squared 8-bit error.
fn range_of(mut values: Vec<f32>, method: RangeMethod) -> f32 {
    values.iter_mut().for_each(|v| *v = v.abs());
    let top = match method {
        RangeMethod::Minmax => values.iter().copied().fold(0.0f32, f32::max),
        RangeMethod::Percentile => vigil_headfit::quantile(values, 0.9999),
        RangeMethod::Mse => least_error_range(&values),
    };
    top.max(1e-6)
}

/// Of 100 ranges from 1% to 100% of the largest magnitude in `values`, the one whose
/// 255-step grid (with clipping above it) gives the least squared error.
fn least_error_range(values: &[f32]) -> f32 {
    let top = values.iter().copied().fold(0.0f32, f32::max);
    // A spread subset keeps the search fast on millions of activations.
    let step = values.len().div_ceil(200_000).max(1);
    let sample: Vec<f32> = values.iter().step_by(step).copied().collect();
    let error = |range: f32| {
        let scale = range / 255.0;
        sample.iter().map(|&v| (v - ((v / scale).round().min(255.0) * scale)).powi(2) as f64).sum::<f64>()
    };
    (1..=100).map(|k| top * k as f32 / 100.0).min_by(|a, b| error(*a).total_cmp(&error(*b))).unwrap_or(top)
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

/// How [`quantize`] works.
#[derive(Debug, Clone, Copy)]
pub struct QuantizeOptions {
    /// How activation ranges are taken.
    pub method: RangeMethod,
    /// Leading Conv + Relu pairs kept in f32.
    pub float_convs: usize,
    /// Equalise channel ranges across consecutive convolutions first ([`equalise`]).
    pub equalise: bool,
    /// Round weights with error compensation ([`round_row`]) rather than each to
    /// its nearest step.
    pub compensate: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self { method: RangeMethod::Mse, float_convs: 1, equalise: true, compensate: true }
    }
}

/// Whether `op` rectifies: Relu or Abs, whose outputs are never negative and which commute
/// with a positive scale (what equalisation and a u8 range from 0 rely on).
fn rectifies(op: &str) -> bool {
    op == "Relu" || op == "Abs"
}

/// The leading Conv + rectifier pairs of `proto`'s graph, as (conv, rectifier) node
/// indices, each reading the previous pair's output.
fn conv_relu_chain(nodes: &[NodeProto]) -> Vec<(usize, usize)> {
    let mut chain: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i + 1 < nodes.len() && nodes[i].op_type == "Conv" && rectifies(&nodes[i + 1].op_type) {
        let follows = chain.last().is_none_or(|&(_, r)| nodes[i].input.first() == nodes[r].output.first());
        if !follows || nodes[i + 1].input.first() != nodes[i].output.first() || nodes[i].input.len() != 3 {
            break;
        }
        chain.push((i, i + 1));
        i += 2;
    }
    chain
}

/// The f32 graph of `proto` up to the embedding, nothing trainable: what calibration runs.
fn frozen_graph(proto: &ModelProto, meta: &ModelMetadata) -> Result<GraphModel> {
    GraphModel::new(
        proto,
        &meta.input_name,
        &meta.embedding_node,
        (&meta.head_weight, &meta.head_bias),
        Trainable::Last(0),
        None,
    )
}

/// The names of the rectifiers' outputs: the activations a quantised graph carries in u8.
fn rectified_outputs(graph_model: &GraphModel) -> Vec<String> {
    graph_model
        .nodes()
        .iter()
        .filter(|n| rectifies(&n.op_type))
        .filter_map(|n| n.output.first().cloned())
        .collect()
}

/// Per-channel range (by `method`) of every rectifier output of the leading chain, on
/// `calibration`.
fn channel_ranges(
    graph_model: &GraphModel,
    calibration: &Tensor,
    method: RangeMethod,
) -> Result<HashMap<String, Vec<f32>>> {
    let rectified = rectified_outputs(graph_model);
    let mut values: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
    let n = calibration.dims()[0];
    for start in (0..n).step_by(32) {
        let batch = calibration.narrow(0, start, 32.min(n - start))?;
        for (name, t) in graph_model.activations(&batch)? {
            if !rectified.contains(&name) {
                continue;
            }
            let per_channel = t.transpose(0, 1)?.flatten_from(1)?.to_vec2::<f32>()?;
            let slot = values.entry(name).or_insert_with(|| vec![Vec::new(); per_channel.len()]);
            for (all, new) in slot.iter_mut().zip(per_channel) {
                all.extend(new);
            }
        }
    }
    Ok(values
        .into_iter()
        .map(|(name, channels)| (name, channels.into_iter().map(|v| range_of(v, method)).collect()))
        .collect())
}

/// Cross-layer equalisation of the activations [`quantize`] will quantise: the output of
/// pair `float_convs - 1` (or 0) up to the second-last pair of the leading Conv + Relu
/// chain. For channel c of an activation with range a_c, read by weights whose largest
/// magnitude is w_c, the producing convolution's row c and bias are divided by
/// s_c = sqrt(a_c / w_c) and the reading weights multiplied by it. Returns the rescaled
/// model (the same function in f32) and how many activations were equalised.
pub fn equalise(
    proto: &ModelProto,
    meta: &ModelMetadata,
    calibration: &Tensor,
    method: RangeMethod,
    float_convs: usize,
) -> Result<(ModelProto, usize)> {
    let graph_model = frozen_graph(proto, meta)?;
    let ranges = channel_ranges(&graph_model, calibration, method)?;
    let nodes = &proto.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?.node;
    let chain = conv_relu_chain(nodes);
    let mut out = proto.clone();
    let mut equalised = 0;
    for pair in chain.windows(2).skip(float_convs.saturating_sub(1)) {
        let ((conv, relu), (next, _)) = (pair[0], pair[1]);
        let Some(a) = ranges.get(&nodes[relu].output[0]) else { continue };
        let (w_name, b_name, next_name) =
            (&nodes[conv].input[1], &nodes[conv].input[2], &nodes[next].input[1]);
        let (mut w, mut b, mut w_next) = (
            read_initializer(&out, w_name)?,
            read_initializer(&out, b_name)?,
            read_initializer(&out, next_name)?,
        );
        let channels = w.dims[0];
        if a.len() != channels || w_next.dims.get(1) != Some(&channels) {
            bail!("{} and {} do not agree on {channels} channels", nodes[conv].name, nodes[next].name);
        }
        let kernel = w_next.dims[2..].iter().product::<usize>();
        let reads = |w_next: &[f32], c: usize| {
            w_next
                .chunks_exact(channels * kernel)
                .flat_map(|row| &row[c * kernel..(c + 1) * kernel])
                .fold(0.0f32, |m, v| m.max(v.abs()))
        };
        for c in 0..channels {
            let w_c = reads(&w_next.values, c);
            // A channel that never fires, or is never read, keeps its scale.
            if a[c] <= 1e-6 || w_c <= 1e-12 {
                continue;
            }
            let s = (a[c] / w_c).sqrt();
            let per = w.values.len() / channels;
            w.values[c * per..(c + 1) * per].iter_mut().for_each(|v| *v /= s);
            b.values[c] /= s;
            for row in w_next.values.chunks_exact_mut(channels * kernel) {
                row[c * kernel..(c + 1) * kernel].iter_mut().for_each(|v| *v *= s);
            }
        }
        replace_initializer(&mut out, w_name, &w.values)?;
        replace_initializer(&mut out, b_name, &b.values)?;
        replace_initializer(&mut out, next_name, &w_next.values)?;
        equalised += 1;
    }
    Ok((out, equalised))
}

/// One convolution's input geometry, for gathering its patches.
struct Patches {
    channels: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
}

impl Patches {
    fn of(conv: &NodeProto, w_dims: &[usize]) -> Self {
        // The first value of an integer-list attribute, `default` when it is absent.
        let first = |name: &str, default: i64| {
            vigil_runtime::onnx::ints(conv, name).and_then(|v| v.first().copied()).unwrap_or(default).max(0)
                as usize
        };
        Self {
            channels: w_dims.get(1).copied().unwrap_or(1),
            kernel: w_dims.get(2).copied().unwrap_or(1),
            stride: first("strides", 1),
            dilation: first("dilations", 1),
            pad: first("pads", 0),
        }
    }

    /// Adds x xᵀ of every patch of `input` (`[channels][time]`) to `moment` (upper
    /// triangle, row-major, channels × kernel squared).
    fn accumulate(&self, input: &[Vec<f32>], moment: &mut [f64]) {
        let d = self.channels * self.kernel;
        let time = input.first().map_or(0, Vec::len);
        let span = (self.kernel - 1) * self.dilation + 1;
        let outputs = (time + 2 * self.pad).saturating_sub(span) / self.stride + 1;
        let mut x = vec![0.0f64; d];
        for t in 0..outputs {
            for (c, channel) in input.iter().enumerate() {
                for k in 0..self.kernel {
                    let at = (t * self.stride + k * self.dilation).checked_sub(self.pad);
                    x[c * self.kernel + k] = at.and_then(|i| channel.get(i)).map_or(0.0, |&v| f64::from(v));
                }
            }
            for i in 0..d {
                if x[i] == 0.0 {
                    continue;
                }
                let (xi, row) = (x[i], &mut moment[i * d..(i + 1) * d]);
                for j in i..d {
                    row[j] += xi * x[j];
                }
            }
        }
    }
}

/// The second moment of each quantised convolution's input patches (the Hessian of the
/// layer's squared output error in its weights), gathered batch by batch in the same
/// pass over the calibration windows that takes the activation ranges.
struct Moments<'a> {
    convs: Vec<(&'a NodeProto, Patches)>,
    sums: Vec<Vec<f64>>,
}

impl<'a> Moments<'a> {
    fn new(proto: &ModelProto, convs: &[&'a NodeProto]) -> Result<Self> {
        let convs = convs
            .iter()
            .map(|conv| Ok((*conv, Patches::of(conv, &read_initializer(proto, &conv.input[1])?.dims))))
            .collect::<Result<Vec<_>>>()?;
        let sums = convs.iter().map(|(_, p)| vec![0.0; (p.channels * p.kernel).pow(2)]).collect();
        Ok(Moments { convs, sums })
    }

    /// Adds the patches of one calibration batch, given the graph's activations on it.
    fn add(&mut self, input_name: &str, batch: &Tensor, activations: &HashMap<String, Tensor>) -> Result<()> {
        for ((conv, patches), sum) in self.convs.iter().zip(&mut self.sums) {
            let name = &conv.input[0];
            let x = if name == input_name {
                batch
            } else {
                activations.get(name).ok_or_else(|| anyhow!("{name} was not computed"))?
            };
            for window in x.to_vec3::<f32>()? {
                patches.accumulate(&window, sum);
            }
        }
        Ok(())
    }

    /// GPTQ's factor for each convolution, by name; a layer whose input statistics are
    /// singular even when damped rounds to nearest.
    fn factors(self) -> HashMap<String, Vec<f64>> {
        self.convs
            .iter()
            .zip(self.sums)
            .filter_map(|((conv, p), m)| {
                inverse_upper_factor(&m, p.channels * p.kernel).map(|u| (conv.name.clone(), u))
            })
            .collect()
    }
}

/// Cholesky factor L (lower, row-major) of the symmetric positive definite `a` (d × d,
/// upper triangle read).
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - sum;
                if v <= 0.0 {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[j * d + i] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// The upper factor U of H⁻¹ = Uᵀ U, with H the damped `moment` (upper triangle): what
/// GPTQ needs to spread each weight's rounding error over the weights not yet rounded.
fn inverse_upper_factor(moment: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut h = moment.to_vec();
    let mean_diagonal = (0..d).map(|i| h[i * d + i]).sum::<f64>() / d as f64;
    let damp = 0.01 * mean_diagonal.max(1e-12);
    for i in 0..d {
        h[i * d + i] += damp;
    }
    let l = cholesky(&h, d)?;
    // L⁻¹ by forward substitution, then H⁻¹ = L⁻ᵀ L⁻¹.
    let mut l_inv = vec![0.0; d * d];
    for col in 0..d {
        for i in col..d {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let sum: f64 = (col..i).map(|k| l[i * d + k] * l_inv[k * d + col]).sum();
            l_inv[i * d + col] = (rhs - sum) / l[i * d + i];
        }
    }
    let mut h_inv = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            let v: f64 = (j..d).map(|k| l_inv[k * d + i] * l_inv[k * d + j]).sum();
            h_inv[i * d + j] = v;
            h_inv[j * d + i] = v;
        }
    }
    // H⁻¹ = L₂ L₂ᵀ; U = L₂ᵀ.
    let l2 = cholesky(&h_inv, d)?;
    let mut u = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            u[j * d + i] = l2[i * d + j];
        }
    }
    Some(u)
}

/// Rounds `row` to int8 steps of `scale`, one weight at a time. With the input
/// statistics `u`, each rounding error is moved onto the weights still to be rounded
/// (GPTQ, Frantar et al., 2022), so the layer's output, not each weight, stays close;
/// without, each weight goes to its nearest step.
fn round_row(row: &[f32], scale: f32, u: Option<&[f64]>) -> Vec<i8> {
    let d = row.len();
    let mut w: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
    let s = f64::from(scale);
    let mut q = Vec::with_capacity(d);
    for j in 0..d {
        let level = (w[j] / s).round().clamp(-127.0, 127.0);
        q.push(level as i8);
        if let Some(u) = u {
            let err = (w[j] - level * s) / u[j * d + j];
            for k in j + 1..d {
                w[k] -= err * u[j * d + k];
            }
        }
    }
    q
}

/// What [`quantize`] made.
#[derive(Debug)]
pub struct Quantized {
    /// The int8 model.
    pub proto: ModelProto,
    /// Convolutions quantised.
    pub convs: usize,
    /// Constant matrices of matrix products (not the head) stored as int8.
    pub matrices: usize,
    /// Scale of the quantised input and of each quantised activation.
    pub scales: Vec<(String, f32)>,
    /// Activations equalised before quantising.
    pub equalised: usize,
}

/// Quantises the Conv + Relu chain at the start of `proto`'s graph, with ranges from
/// `calibration` (normalised windows, `[n, channels, window]`).
pub fn quantize(
    proto: &ModelProto,
    meta: &ModelMetadata,
    calibration: &Tensor,
    options: QuantizeOptions,
) -> Result<Quantized> {
    let QuantizeOptions { method, float_convs, .. } = options;
    let (equalised_proto, equalised) = match options.equalise {
        true => equalise(proto, meta, calibration, method, float_convs)?,
        false => (proto.clone(), 0),
    };
    let proto = &equalised_proto;
    let graph_model = frozen_graph(proto, meta)?;
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let nodes = &graph.node;
    let quantised: Vec<&NodeProto> =
        conv_relu_chain(nodes).into_iter().skip(float_convs).map(|(conv, _)| &nodes[conv]).collect();
    let mut moments = match options.compensate {
        true => Some(Moments::new(proto, &quantised)?),
        false => None,
    };
    let mut ranges: HashMap<String, Vec<f32>> = HashMap::new();
    let rectified = rectified_outputs(&graph_model);
    // The inputs of the dense layers, whose calibration means centre them (see
    // `store_matrices_int8`).
    let dense_inputs: Vec<String> = nodes
        .iter()
        .filter(|n| dense_weight(n, &meta.head_weight).is_some())
        .filter_map(|n| n.input.first().cloned())
        .collect();
    let mut input_sums: HashMap<String, Vec<f64>> = HashMap::new();
    let n = calibration.dims()[0];
    for start in (0..n).step_by(32) {
        let batch = calibration.narrow(0, start, 32.min(n - start))?;
        let activations = graph_model.activations(&batch)?;
        for (name, t) in &activations {
            // Only what feeds a quantised tensor: the outputs of the rectifiers.
            if rectified.contains(name) {
                ranges.entry(name.clone()).or_default().extend(t.flatten_all()?.to_vec1::<f32>()?);
            }
            if dense_inputs.contains(name) {
                let sum = t.sum(0)?.flatten_all()?.to_vec1::<f32>()?;
                let acc = input_sums.entry(name.clone()).or_insert_with(|| vec![0.0; sum.len()]);
                acc.iter_mut().zip(sum).for_each(|(a, s)| *a += f64::from(s));
            }
        }
        if float_convs == 0 {
            ranges.entry(meta.input_name.clone()).or_default().extend(batch.flatten_all()?.to_vec1::<f32>()?);
        }
        if let Some(m) = moments.as_mut() {
            m.add(&meta.input_name, &batch, &activations)?;
        }
    }
    let compensation = moments.map(Moments::factors).unwrap_or_default();
    let mut new_nodes = Vec::new();
    let mut initializers: Vec<TensorProto> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut scales = Vec::new();
    // The first `float_convs` Conv + rectifier pairs stay in f32: the raw signal is
    // impulsive (a few large impacts over a small background) and 8 bits of it lose the
    // background.
    let mut i = 2 * float_convs;
    let pair_node = |k: usize, n: &NodeProto| {
        if k.is_multiple_of(2) {
            n.op_type == "Conv"
        } else {
            rectifies(&n.op_type)
        }
    };
    if nodes.len() < i || nodes[..i].iter().enumerate().any(|(k, n)| !pair_node(k, n)) {
        bail!("the graph does not start with {float_convs} Conv + Relu (or Abs) pairs");
    }
    if let (Some(conv), Some(next)) = (nodes.get(i), nodes.get(i + 1)) {
        if conv.op_type == "Conv" && next.op_type == "Abs" {
            bail!(
                "{} is followed by Abs, which an int8 QLinearConv cannot compute (it clamps, as \
                 Relu does); keep it in f32 with --float-convs {}",
                conv.name,
                float_convs + 1
            );
        }
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
    // Signed input: u8 around 128; a rectifier's output: u8 from 0.
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
        let u = compensation.get(&conv.name).map(Vec::as_slice);
        for row in w.values.chunks_exact(per) {
            let s = row.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12) / 127.0;
            w_scales.push(s);
            w_q.extend(round_row(row, s, u).into_iter().map(|v| v as u8));
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
    let input_means: HashMap<String, Vec<f32>> = input_sums
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|s| (s / n.max(1) as f64) as f32).collect()))
        .collect();
    let matrices = store_matrices_int8(&mut out, meta, &input_means)?;
    Ok(Quantized { proto: out, convs, matrices, scales, equalised })
}

/// Stores the constant matrices of the backbone's matrix products as int8: a dense
/// layer's Gemm weight (not the head's) and a MatMul's right-hand side, as in a spectral
/// backbone's embedding and transform. One scale per column: a dense weight's columns
/// are its inputs, and folding batch normalisation into it scales some of them by
/// hundreds, so one scale per matrix or per row would leave the others a few steps.
/// Those inputs barely vary about a large mean, which the folded bias cancels; so a dense
/// layer's input is first centred on its mean over the calibration windows (`means`, by
/// input name), the bias taking the difference in f32, and the weights' rounding then
/// multiplies only the input's variation. The graph reads each matrix back as `Cast` to
/// f32 times its scales, under the matrix's own name; tract folds that constant at load
/// and runs the products in f32, so the file loses three quarters of those bytes and the
/// arithmetic stays f32. Returns how many matrices were stored so.
fn store_matrices_int8(
    proto: &mut ModelProto,
    meta: &ModelMetadata,
    means: &HashMap<String, Vec<f32>>,
) -> Result<usize> {
    use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto};
    let graph = proto.graph.as_ref().ok_or_else(|| anyhow!("the model has no graph"))?;
    let is_constant = |w: &str| graph.initializer.iter().any(|t| t.name == w);
    let matrices: Vec<String> = graph
        .node
        .iter()
        .filter_map(|n| match n.op_type.as_str() {
            "Gemm" => dense_weight(n, &meta.head_weight).cloned(),
            "MatMul" => n.input.get(1).cloned(),
            _ => None,
        })
        .filter(|w| is_constant(w))
        .collect();
    for name in &matrices {
        let w = read_initializer(proto, name)?;
        let [rows, cols] = w.dims[..] else {
            bail!("matrix {name} has shape {:?}; expected two dimensions", w.dims);
        };
        let mut q = vec![0u8; rows * cols];
        let mut column_scales = Vec::with_capacity(cols);
        for c in 0..cols {
            let column: Vec<f32> = (0..rows).map(|r| w.values[r * cols + c]).collect();
            let scale = column.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12) / 127.0;
            column_scales.push(scale);
            for (r, v) in round_row(&column, scale, None).into_iter().enumerate() {
                q[r * cols + c] = v as u8;
            }
        }
        let to_float = NodeProto {
            attribute: vec![AttributeProto {
                name: "to".into(),
                r#type: AttributeType::Int as i32,
                i: DataType::Float as i64,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (stored, scales, read) = (format!("{name}.q"), format!("{name}.qscale"), format!("{name}_f"));
        let cast = node("Cast", &format!("{name}_cast"), &[&stored], &read, &to_float);
        let scaled = node("Mul", &format!("{name}_scaled"), &[&read, &scales], name, &NodeProto::default());
        let reader = proto
            .graph
            .as_ref()
            .and_then(|g| g.node.iter().position(|n| n.input.iter().any(|i| i == name)))
            .ok_or_else(|| anyhow!("no node reads {name}"))?;
        let mut inserted = vec![cast, scaled];
        let gemm = proto.graph.as_ref().map(|g| g.node[reader].clone()).filter(|n| n.op_type == "Gemm");
        if let Some(mean) = gemm.as_ref().and_then(|n| means.get(&n.input[0])).filter(|m| m.len() == cols) {
            let (input, bias) = match gemm.as_ref().map(|n| &n.input[..]) {
                Some([input, _, bias, ..]) => (input.clone(), bias.clone()),
                _ => bail!("dense layer reading {name} has no bias"),
            };
            // W x + b = W (x - m) + (b + W m).
            let mut b = read_initializer(proto, &bias)?.values;
            for (r, out) in b.iter_mut().enumerate() {
                *out += w.values[r * cols..(r + 1) * cols].iter().zip(mean).map(|(w, m)| w * m).sum::<f32>();
            }
            replace_initializer(proto, &bias, &b)?;
            let centred = format!("{input}_centred");
            let centre = format!("{name}.centre");
            inserted.push(node("Sub", &centred, &[&input, &centre], &centred, &NodeProto::default()));
            let g = proto.graph.as_mut().ok_or_else(|| anyhow!("the model has no graph"))?;
            g.initializer.push(float_initializer(&centre, &[1, cols], mean));
            g.node[reader].input[0] = centred;
        }
        let g = proto.graph.as_mut().ok_or_else(|| anyhow!("the model has no graph"))?;
        g.initializer.retain(|t| &t.name != name);
        g.initializer.push(raw_tensor(&stored, &w.dims, DataType::Int8, q));
        g.initializer.push(float_initializer(&scales, &[1, cols], &column_scales));
        g.node.splice(reader..reader, inserted);
    }
    Ok(matrices.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::path::Path;

    /// Rows of `d` inputs driven by 3 shared sources plus a little noise, as the outputs
    /// of similar filters are: strongly correlated columns.
    fn correlated_inputs(rows: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mixing: Vec<[f64; 3]> =
            (0..d).map(|_| std::array::from_fn(|_| rng.gen_range(-1.0..1.0))).collect();
        (0..rows)
            .map(|_| {
                let z: [f64; 3] = std::array::from_fn(|_| rng.gen_range(-1.0..1.0));
                mixing
                    .iter()
                    .map(|m| {
                        m.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>() + 0.02 * rng.gen_range(-1.0..1.0)
                    })
                    .collect()
            })
            .collect()
    }

    fn moment_of(xs: &[Vec<f64>], d: usize) -> Vec<f64> {
        let mut m = vec![0.0; d * d];
        for x in xs {
            for i in 0..d {
                for j in i..d {
                    m[i * d + j] += x[i] * x[j];
                }
            }
        }
        m
    }

    #[test]
    fn the_inverse_factor_reconstructs_the_damped_inverse() {
        let d = 6;
        let m = moment_of(&correlated_inputs(200, d, 1), d);
        let u = inverse_upper_factor(&m, d).expect("positive definite");
        let damp = 0.01 * (0..d).map(|i| m[i * d + i]).sum::<f64>() / d as f64;
        // (Uᵀ U) H = I, with H the damped, symmetrised moment.
        let h = |i: usize, j: usize| m[i.min(j) * d + i.max(j)] + if i == j { damp } else { 0.0 };
        for i in 0..d {
            for j in 0..d {
                let inv_ik = |k: usize| (0..d).map(|r| u[r * d + i] * u[r * d + k]).sum::<f64>();
                let v: f64 = (0..d).map(|k| inv_ik(k) * h(k, j)).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-9, "({i},{j}) = {v}");
            }
        }
        assert!(cholesky(&[-1.0], 1).is_none());
    }

    #[test]
    fn compensated_rounding_reproduces_the_layer_output_better_than_nearest_rounding() {
        let d = 12;
        let xs = correlated_inputs(500, d, 2);
        let u = inverse_upper_factor(&moment_of(&xs, d), d).expect("positive definite");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let output_error = |row: &[f32], scale: f32, q: &[i8]| {
            xs.iter()
                .map(|x| {
                    let exact: f64 = x.iter().zip(row).map(|(a, w)| a * f64::from(*w)).sum();
                    let approx: f64 =
                        x.iter().zip(q).map(|(a, q)| a * f64::from(*q) * f64::from(scale)).sum();
                    (exact - approx).powi(2)
                })
                .sum::<f64>()
        };
        let (mut e_near, mut e_comp) = (0.0, 0.0);
        for _ in 0..40 {
            let row: Vec<f32> = (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let scale = row.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            let nearest = round_row(&row, scale, None);
            e_near += output_error(&row, scale, &nearest);
            e_comp += output_error(&row, scale, &round_row(&row, scale, Some(&u)));
        }
        assert!(e_comp < 0.5 * e_near, "compensated {e_comp}, nearest {e_near}");
    }

    /// The spectral model's dense layer and transform hold most of its weights: stored as
    /// int8, the file falls to at most 30% of the f32 file, tract loads it, and the int8
    /// model gives the f32 model's class on simulated bearing windows.
    #[test]
    fn a_spectral_models_matrices_are_stored_as_int8() {
        use crate::dataset::{simulate_windows, SimulatedSplit};
        use vigil_runtime::model::VigilModel;
        use vigil_sim::SourceDomain;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v3.onnx");
        let bytes = std::fs::read(&path).expect("the shipped spectral model");
        let proto = vigil_runtime::onnx::decode_model(&bytes, &path).expect("decodes");
        let meta = vigil_runtime::onnx::read_metadata(&proto).expect("metadata");
        let split = SimulatedSplit { recordings: 16, windows_per_recording: 3, seed: 9 };
        let (mut set, _) = simulate_windows(
            &SourceDomain::default(),
            split,
            meta.sample_rate_hz,
            1,
            meta.window,
            &mut || {},
            false,
        );
        set.normalise(&meta.normalisation);
        let x = Tensor::from_vec(set.samples.clone(), (set.len(), 1, meta.window), &candle_core::Device::Cpu)
            .expect("tensor");
        let q = quantize(&proto, &meta, &x, QuantizeOptions::default()).expect("quantises");
        assert_eq!(
            (q.convs, q.matrices),
            (1, 4),
            "conv2; the dense layer, the two spectral matrices and the column of ones"
        );
        let written = vigil_runtime::onnx::encode_model(&q.proto);
        assert!(
            written.len() * 10 <= bytes.len() * 3,
            "int8 file {} bytes against f32 {} bytes",
            written.len(),
            bytes.len()
        );
        let f32_model = VigilModel::from_bytes(&bytes, &path).expect("f32 loads");
        let int8_model =
            VigilModel::from_bytes(&written, Path::new("<int8>")).expect("tract loads the int8 file");
        let (mut a, mut b) = (f32_model.full_model().expect("f32"), int8_model.full_model().expect("int8"));
        let agree = (0..set.len())
            .filter(|&i| {
                let w = set.window(i);
                vigil_core::head::argmax(&a.run(w).expect("f32 runs"))
                    == vigil_core::head::argmax(&b.run(w).expect("int8 runs"))
            })
            .count();
        assert!(agree * 100 >= set.len() * 95, "the same class on {agree} of {} windows", set.len());
    }

    #[test]
    fn equalising_keeps_the_function_and_evens_the_channel_ranges() {
        let bytes = include_bytes!("../../../models/bearing-cnn-v1.onnx");
        let proto = vigil_runtime::onnx::decode_model(bytes, Path::new("bearing-cnn-v1")).expect("decodes");
        let meta = vigil_runtime::onnx::read_metadata(&proto).expect("metadata");
        let x = Tensor::randn(0f32, 1.0, (8, 1, meta.window), &candle_core::Device::Cpu).expect("tensor");
        let (equalised, count) = equalise(&proto, &meta, &x, RangeMethod::Minmax, 1).expect("equalises");
        assert_eq!(count, 6);
        let run = |p: &ModelProto| {
            let g = frozen_graph(p, &meta).expect("graph");
            let acts = g.activations(&x).expect("runs");
            let ranges = channel_ranges(&g, &x, RangeMethod::Minmax).expect("ranges");
            (acts[&meta.embedding_node].flatten_all().unwrap().to_vec1::<f32>().unwrap(), ranges)
        };
        let ((before, ranges_before), (after, ranges_after)) = (run(&proto), run(&equalised));
        let top = before.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() <= 1e-4 * top, "embedding {a} became {b}");
        }
        // The spread of channel ranges (largest over median) of conv3's input narrows.
        let spread = |r: &HashMap<String, Vec<f32>>| {
            let mut v = r["relu2"].clone();
            v.sort_by(f32::total_cmp);
            v[v.len() - 1] / v[v.len() / 2]
        };
        assert!(
            spread(&ranges_after) < spread(&ranges_before),
            "{} -> {}",
            spread(&ranges_before),
            spread(&ranges_after)
        );
    }
}
