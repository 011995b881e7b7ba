//! The patchify convolution in Rust, ahead of tract.
//!
//! A backbone's first convolution, when its kernel equals its stride (no padding, no
//! dilation, one group), maps each run of `k` input samples to one frame on its own: a
//! matrix product with only `C * k` terms per output. tract 0.23.9 runs it at 11-17 µs
//! for bearing-cnn-v2's window (0.2 M multiply-adds, about 11 G/s) in every form it was
//! given; the same product as one `ndarray` matrix product (matrixmultiply's kernels,
//! which pick FMA at run time) takes about 7 µs, and one streamed hop's share 1.2 µs
//! instead of 3.5 (`vigil bench --profile`, docs/performance.md). So the runtime splits
//! such a convolution (with the ReLU or |x| that follows it) off the graph, runs it here
//! and gives tract the rest, whose input is then the layer's frames. Such a layer needs
//! no context from earlier samples, so a pulsed rest streams as the whole graph does.

use crate::error::{Result, RuntimeError};
use crate::onnx::{ints, read_initializer};
use tract_onnx::pb::{type_proto, ModelProto, NodeProto, TypeProto, ValueInfoProto};
use tract_onnx::prelude::tract_ndarray::{linalg::general_mat_mul, s, Array2, ArrayView2, ArrayViewMut2};

/// What follows the convolution, applied here too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rectifier {
    None,
    Relu,
    Abs,
}

/// The first layer of a backbone, run in Rust: weights `[out, C * k]`, a bias per output
/// channel, and the rectifier that followed it in the graph.
#[derive(Debug, Clone)]
pub struct Patchify {
    channels: usize,
    kernel: usize,
    weights: Array2<f32>,
    bias: Vec<f32>,
    rectifier: Rectifier,
    /// The graph's node names this layer replaces, for profiles.
    names: String,
}

impl Patchify {
    /// Splits the patchify convolution reading the graph input `input` (`channels`
    /// channels) off `proto`: returns it and the graph that follows, whose one input is
    /// the layer's output (`[1, out, frames]`). None when the graph does not start with
    /// such a convolution, when anything else reads its input, or when `keep` (a node
    /// output the caller will select) is the layer itself.
    pub fn split(
        proto: &ModelProto,
        input: &str,
        channels: usize,
        keep: &str,
    ) -> Option<(Patchify, ModelProto)> {
        let graph = proto.graph.as_ref()?;
        let readers = |name: &str| graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).count();
        let conv_at = graph.node.iter().position(|n| n.input.first().map(String::as_str) == Some(input))?;
        let conv = &graph.node[conv_at];
        let kernel = patchify_kernel(conv)?;
        if readers(input) != 1 || conv.output.len() != 1 {
            return None;
        }
        let weight = read_initializer(proto, conv.input.get(1)?).ok()?;
        let out_channels = weight.dims.first().copied()?;
        if weight.dims != [out_channels, channels, kernel] {
            return None;
        }
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(name) => read_initializer(proto, name).ok().filter(|b| b.dims == [out_channels])?.values,
            None => vec![0.0; out_channels],
        };
        let conv_out = &conv.output[0];
        let next = graph.node.iter().position(|n| n.input.first() == Some(conv_out));
        let rectifier_at = next.filter(|&i| {
            let n = &graph.node[i];
            matches!(n.op_type.as_str(), "Relu" | "Abs") && n.input.len() == 1 && readers(conv_out) == 1
        });
        let (rectifier, output, removed) = match rectifier_at {
            Some(i) => {
                let r = if graph.node[i].op_type == "Relu" { Rectifier::Relu } else { Rectifier::Abs };
                (r, graph.node[i].output.first()?.clone(), vec![conv_at, i])
            }
            None => (Rectifier::None, conv_out.clone(), vec![conv_at]),
        };
        if output == keep
            || conv_out == keep
            || graph.output.iter().any(|o| o.name == output || o.name == *conv_out)
        {
            return None;
        }
        let names = removed.iter().map(|&i| graph.node[i].name.as_str()).collect::<Vec<_>>().join(" + ");
        let mut rest = proto.clone();
        let g = rest.graph.as_mut()?;
        let mut at = 0;
        g.node.retain(|_| {
            at += 1;
            !removed.contains(&(at - 1))
        });
        let still_read =
            |name: &str, nodes: &[NodeProto]| nodes.iter().any(|n| n.input.iter().any(|i| i == name));
        let params: Vec<String> = conv.input.iter().skip(1).cloned().collect();
        let nodes = g.node.clone();
        g.initializer.retain(|t| !params.contains(&t.name) || still_read(&t.name, &nodes));
        g.input.retain(|i| !params.contains(&i.name) || still_read(&i.name, &nodes));
        let slot = g.input.iter().position(|i| i.name == input)?;
        // The original input's element type, without its shape (the caller sets the fact).
        let value = g.input[slot].r#type.as_ref().and_then(|t| t.value.clone()).map(|v| match v {
            type_proto::Value::TensorType(t) => {
                type_proto::Value::TensorType(type_proto::Tensor { shape: None, ..t })
            }
        });
        g.input[slot] = ValueInfoProto {
            name: output,
            r#type: Some(TypeProto { value, ..Default::default() }),
            ..Default::default()
        };
        let weights = Array2::from_shape_vec((out_channels, channels * kernel), weight.values).ok()?;
        Some((Patchify { channels, kernel, weights, bias, rectifier, names }, rest))
    }

    /// Input samples per output frame.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weights.nrows()
    }

    /// The graph's names of the nodes this layer replaces.
    pub fn names(&self) -> &str {
        &self.names
    }

    /// Runs the layer on `input` (`channels` channels of the same whole number of
    /// kernels, channel-major) into `out` (`[frames, out]`, time-major). Returns the
    /// number of frames; an input that is not such a block is refused.
    pub fn run(&self, input: &[f32], out: &mut Vec<f32>) -> Result<usize> {
        let (c, k) = (self.channels, self.kernel);
        let len = input.len() / c.max(1);
        if c == 0 || len * c != input.len() || !len.is_multiple_of(k) {
            return Err(RuntimeError::StreamMismatch(format!(
                "{} input values are not whole {k}-sample patches of each of {c} channels",
                input.len()
            )));
        }
        let frames = len / k;
        out.clear();
        for _ in 0..frames {
            out.extend_from_slice(&self.bias);
        }
        let shape_error = |e: tract_onnx::prelude::tract_ndarray::ShapeError| {
            RuntimeError::StreamMismatch(format!("patchify layer: {e}"))
        };
        let mut y = ArrayViewMut2::from_shape((frames, self.out_channels()), out.as_mut_slice())
            .map_err(shape_error)?;
        for ch in 0..c {
            // Channel `ch`'s samples as `[frames, k]` times its weights read as `[k, out]`.
            let x =
                ArrayView2::from_shape((frames, k), &input[ch * len..(ch + 1) * len]).map_err(shape_error)?;
            let w = self.weights.slice(s![.., ch * k..(ch + 1) * k]);
            general_mat_mul(1.0, &x, &w.t(), 1.0, &mut y);
        }
        match self.rectifier {
            Rectifier::None => {}
            Rectifier::Relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
            Rectifier::Abs => out.iter_mut().for_each(|v| *v = v.abs()),
        }
        Ok(frames)
    }
}

/// The kernel of `node` when it is a one-dimensional convolution whose kernel equals its
/// stride (at least 2), with no padding, no dilation and one group.
fn patchify_kernel(node: &NodeProto) -> Option<usize> {
    let kernel = match ints(node, "kernel_shape")?.as_slice() {
        &[k] if k >= 2 => k,
        _ => return None,
    };
    let plain = node.op_type == "Conv"
        && ints(node, "strides") == Some(vec![kernel])
        && ints(node, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
        && ints(node, "dilations").is_none_or(|d| d.iter().all(|&v| v == 1))
        && node.attribute.iter().all(|a| match a.name.as_str() {
            "group" => a.i == 1,
            "auto_pad" => a.s.is_empty() || a.s == b"NOTSET",
            _ => true,
        });
    plain.then_some(kernel as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{float_initializer, ints_attribute as ints_attr, node};
    use tract_onnx::pb::GraphProto;

    /// `x` (`channels` channels) -> Conv(k, stride `stride`, pads `pad`) -> `rectifier` ->
    /// a k3 convolution `next`.
    fn graph(
        channels: usize,
        k: usize,
        stride: usize,
        pad: usize,
        rectifier: &str,
    ) -> (ModelProto, Vec<f32>, Vec<f32>) {
        let out = 5;
        let w: Vec<f32> = (0..out * channels * k).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let b: Vec<f32> = (0..out).map(|i| i as f32 * 0.3 - 0.6).collect();
        let w2 = vec![0.1f32; 4 * out * 3];
        let mut nodes = vec![node(
            "Conv",
            "conv1",
            &["x", "w1", "b1"],
            vec![
                ints_attr("kernel_shape", &[k as i64]),
                ints_attr("strides", &[stride as i64]),
                ints_attr("pads", &[pad as i64, pad as i64]),
            ],
        )];
        let mut into_next = "conv1";
        if !rectifier.is_empty() {
            nodes.push(node(rectifier, "act1", &["conv1"], vec![]));
            into_next = "act1";
        }
        nodes.push(node("Conv", "next", &[into_next, "w2"], vec![ints_attr("kernel_shape", &[3])]));
        let value = |name: &str| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let g = GraphProto {
            node: nodes,
            input: vec![value("x")],
            output: vec![value("next")],
            initializer: vec![
                float_initializer("w1", &[out, channels, k], &w),
                float_initializer("b1", &[out], &b),
                float_initializer("w2", &[4, out, 3], &w2),
            ],
            ..Default::default()
        };
        (ModelProto { graph: Some(g), ..Default::default() }, w, b)
    }

    /// The layer computed sample by sample, time-major.
    fn by_hand(x: &[f32], channels: usize, k: usize, w: &[f32], b: &[f32], rect: fn(f32) -> f32) -> Vec<f32> {
        let len = x.len() / channels;
        let mut y = Vec::new();
        for t in 0..len / k {
            for (o, &bias) in b.iter().enumerate() {
                let mut acc = bias;
                for c in 0..channels {
                    for j in 0..k {
                        acc += w[(o * channels + c) * k + j] * x[c * len + t * k + j];
                    }
                }
                y.push(rect(acc));
            }
        }
        y
    }

    #[test]
    fn the_split_layer_computes_the_convolution_and_its_rectifier() {
        for (channels, rectifier, rect) in
            [(1, "Relu", (|v: f32| v.max(0.0)) as fn(f32) -> f32), (3, "Abs", f32::abs), (2, "", |v| v)]
        {
            let (proto, w, b) = graph(channels, 4, 4, 0, rectifier);
            let (front, rest) = Patchify::split(&proto, "x", channels, "next").expect("splits");
            let g = rest.graph.as_ref().expect("graph");
            assert_eq!(g.node.len(), 1, "only `next` is left");
            let input = if rectifier.is_empty() { "conv1" } else { "act1" };
            assert_eq!(g.input[0].name, input);
            assert!(g.initializer.iter().all(|t| t.name == "w2"), "the layer's weights leave the graph");
            let x: Vec<f32> = (0..channels * 24).map(|i| ((i * 13 % 17) as f32 - 8.0) / 3.0).collect();
            let mut y = Vec::new();
            assert_eq!(front.run(&x, &mut y).ok(), Some(6));
            let expected = by_hand(&x, channels, 4, &w, &b, rect);
            assert_eq!(y.len(), expected.len());
            for (a, e) in y.iter().zip(&expected) {
                assert!((a - e).abs() <= 1e-5 * e.abs().max(1.0), "{a} against {e}");
            }
            assert!(front.run(&x[..channels * 24 - 1], &mut y).is_err(), "a partial patch is refused");
        }
    }

    #[test]
    fn only_a_plain_patchify_layer_is_split() {
        let (padded, _, _) = graph(1, 4, 4, 1, "Relu");
        assert!(Patchify::split(&padded, "x", 1, "next").is_none(), "padded");
        let (overlapping, _, _) = graph(1, 4, 2, 0, "Relu");
        assert!(Patchify::split(&overlapping, "x", 1, "next").is_none(), "stride below the kernel");
        let (plain, _, _) = graph(1, 4, 4, 0, "Relu");
        assert!(Patchify::split(&plain, "x", 2, "next").is_none(), "channel count of another model");
        assert!(Patchify::split(&plain, "x", 1, "act1").is_none(), "the caller wants the layer's own output");
        let mut shared = plain.clone();
        if let Some(g) = shared.graph.as_mut() {
            g.node.push(node("Relu", "also", &["x"], vec![]));
        }
        assert!(Patchify::split(&shared, "x", 1, "next").is_none(), "the input feeds another node too");
    }
}
