//! How a backbone's last feature frames become the embedding: the global pooling the
//! runtime runs in Rust after cutting the graph at its frames ([`FrameCut::find`]), for
//! whole windows ([`crate::plan`]) and for streams ([`crate::streaming`]).

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use tract_onnx::pb::ModelProto;

/// How the backbone's last feature frames become the embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over time of each channel.
    Mean,
    /// The mean over time of each channel, then the maximum over time of each channel
    /// (twice the dimension): the maximum keeps an intermittent impact that the mean
    /// dilutes.
    MeanMax,
}

impl Pooling {
    /// Values of the embedding pooled from frames of `channels` values.
    pub fn width(self, channels: usize) -> usize {
        match self {
            Pooling::Mean => channels,
            Pooling::MeanMax => 2 * channels,
        }
    }
}

/// Where the graph's frames end and its pooling begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameCut {
    /// The node whose output is the last feature frames, `[1, channels, frames]`.
    pub frames_node: String,
    /// The pooling between those frames and the embedding node.
    pub pooling: Pooling,
}

impl FrameCut {
    /// Finds the pooling that feeds the embedding node: `Flatten(GlobalAveragePool(x))`
    /// or `Flatten(Concat(GlobalAveragePool(x), GlobalMaxPool(x)))`.
    pub fn find(proto: &ModelProto, meta: &ModelMetadata) -> Result<FrameCut> {
        let graph = proto.graph.as_ref().ok_or_else(|| not_streamable("the model has no graph"))?;
        let producer = |output: &str| graph.node.iter().find(|n| n.output.iter().any(|o| o == output));
        let flatten = producer(&meta.embedding_node)
            .filter(|n| n.op_type == "Flatten")
            .ok_or_else(|| not_streamable("the embedding node is not a Flatten of a global pooling"))?;
        let pool = flatten
            .input
            .first()
            .and_then(|i| producer(i))
            .ok_or_else(|| not_streamable("the Flatten has no input node"))?;
        let input_of = |name: &str, op: &str| {
            producer(name).filter(|n| n.op_type == op).and_then(|n| n.input.first().cloned())
        };
        let cut = match pool.op_type.as_str() {
            "GlobalAveragePool" => pool.input.first().map(|x| (x.clone(), Pooling::Mean)),
            "Concat" if pool.input.len() == 2 => {
                match (
                    input_of(&pool.input[0], "GlobalAveragePool"),
                    input_of(&pool.input[1], "GlobalMaxPool"),
                ) {
                    (Some(a), Some(b)) if a == b => Some((a, Pooling::MeanMax)),
                    _ => None,
                }
            }
            _ => None,
        };
        let (frames, pooling) = cut.ok_or_else(|| {
            not_streamable("the embedding is neither mean nor mean-and-max pooling of one tensor")
        })?;
        let frames_node =
            producer(&frames).map(|n| n.name.clone()).filter(|n| !n.is_empty()).unwrap_or(frames);
        Ok(FrameCut { frames_node, pooling })
    }
}

pub(crate) fn not_streamable(why: &str) -> RuntimeError {
    RuntimeError::StreamMismatch(format!(
        "the model cannot be streamed: {why}; score full windows instead (leave out the streaming option)"
    ))
}

/// Pools frames laid out channel-major (`[channels, frames]`): the mean over time of
/// each channel, then (mean and max) the maximum over time of each.
pub(crate) fn pool(values: &[f32], channels: usize, pooling: Pooling) -> Vec<f32> {
    let frames = values.len() / channels.max(1);
    let rows = || values.chunks_exact(frames.max(1)).take(channels);
    let mut out: Vec<f32> = rows().map(vigil_core::dsp::mean).collect();
    if pooling == Pooling::MeanMax {
        out.extend(rows().map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max)));
    }
    out
}
