//! The ONNX Runtime peer of `vigil bench`: the same model, the same windows, the same
//! Rust head and scoring, with ONNX Runtime (loaded from `ORT_DYLIB_PATH`, one thread)
//! computing the backbone.
//!
//! * full window: the graph up to the embedding node, on each normalised window;
//! * chunked: the graph up to the last feature frames, on the newest hop plus the context
//!   its frames need, with the frames pooled in Rust over the window, the same shortcut
//!   the tract streamer takes (exact for a backbone whose streamer is exact).

use super::{median_seconds, RowResult};
use anyhow::{bail, Context, Result};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use std::collections::HashSet;
use std::path::Path;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::ModelProto;
use vigil_core::head::{argmax, softmax_in_place};
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::model::VigilModel;
use vigil_runtime::streaming::{window_scale, FramePool, StreamingEmbedder};
use vigil_runtime::windower::Window;
use vigil_train::export::value_info;

/// `proto` cut to compute `output` (a tensor name) from `batch` inputs of `len` samples:
/// the nodes it does not need are dropped.
fn cut(proto: &ModelProto, output: &str, batch: usize, channels: usize, len: usize) -> Result<ModelProto> {
    let mut proto = proto.clone();
    let graph = proto.graph.as_mut().context("the model has no graph")?;
    let mut needed: HashSet<String> = HashSet::from([output.to_string()]);
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(node.input.iter().cloned());
        }
    }
    let mut k = keep.iter();
    graph.node.retain(|_| *k.next().unwrap_or(&false));
    graph.initializer.retain(|t| needed.contains(&t.name));
    let input = graph.input.first().map(|i| i.name.clone()).context("the model has no input")?;
    let dims = [batch, channels, len].map(|d| DimValue::DimValue(d as i64));
    graph.input = vec![value_info(&input, &dims)];
    graph.output = vec![value_info(output, &[])];
    graph.value_info.clear();
    Ok(proto)
}

/// Where the graph's tensor of `node`'s output is (a node name, or already a tensor).
fn output_of(proto: &ModelProto, node: &str) -> String {
    proto
        .graph
        .as_ref()
        .and_then(|g| g.node.iter().find(|n| n.name == node))
        .and_then(|n| n.output.first().cloned())
        .unwrap_or_else(|| node.to_string())
}

struct Runner {
    session: Session,
    input: String,
    channels: usize,
    batch: usize,
}

impl Runner {
    /// A session of `proto` ([`cut`] for `batch` inputs), on one thread.
    fn new(proto: &ModelProto, batch: usize, channels: usize) -> Result<Self> {
        let env = environment()?;
        let bytes = vigil_runtime::onnx::encode_model(proto);
        let session = Session::builder(env)
            .map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?
            .with_intra_threads(1)
            .map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?
            .with_inter_threads(1)
            .map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?
            .commit_from_memory(&bytes)
            .map_err(|e| anyhow::anyhow!("ONNX Runtime cannot load the graph: {e}"))?;
        let input =
            session.inputs().first().map(|i| i.name().to_string()).context("the graph has no input")?;
        Ok(Runner { session, input, channels, batch })
    }

    /// Runs `input`: `batch` inputs one after the other, channel-major.
    fn run(&mut self, input: &[f32]) -> Result<Vec<f32>> {
        let shape = [self.batch, self.channels, input.len() / (self.channels * self.batch)];
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| anyhow::anyhow!("ONNX Runtime: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| anyhow::anyhow!("ONNX Runtime run: {e}"))?;
        let (_, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow::anyhow!("ONNX Runtime output: {e}"))?;
        Ok(values.to_vec())
    }
}

/// ONNX Runtime's environment, from the library `ORT_DYLIB_PATH` names.
fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: std::sync::OnceLock<std::result::Result<ort::environment::Environment, String>> =
        std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        let Some(path) = std::env::var_os("ORT_DYLIB_PATH") else {
            return Err("ORT_DYLIB_PATH is not set; point it at libonnxruntime.so.1.* of a pip-installed \
                        onnxruntime (scripts/bench does)"
                .into());
        };
        ort::init_from(Path::new(&path))
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", Path::new(&path).display()))?
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))
    });
    env.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Times ONNX Runtime over `windows` (from a stream at `hop`), full window or chunked.
pub fn time_rows(
    path: &Path,
    model: &VigilModel,
    windows: &[Window],
    hop: usize,
    passes: usize,
    chunked: bool,
) -> Result<RowResult> {
    let meta = model.metadata().clone();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let proto = vigil_runtime::onnx::decode_model(&bytes, path)?;
    let (channels, window) = (meta.channels, meta.window);
    let mut note = String::new();
    let seconds;
    let (mut classes, mut scores) = (Vec::new(), Vec::new());
    let mut normalised = Vec::with_capacity(channels * window);
    if chunked {
        // The same layout the tract streamer found, for the same pooling.
        let streamer = StreamingEmbedder::new(model, hop)?;
        let layout = streamer.layout().clone();
        if !streamer.exact() {
            note = "approximate, as the tract streamer".into();
        }
        if !window.is_multiple_of(hop) {
            bail!("chunked scoring needs a hop that divides the window");
        }
        let frames_out = output_of(&proto, &layout.cut.frames_node);
        let chunk_len = hop + layout.receptive_field - layout.stride;
        let per_chunk = hop / layout.stride;
        if chunk_len > window || per_chunk > layout.frames_per_window {
            bail!("a chunk of {chunk_len} samples does not fit in the window");
        }
        let mut whole = Runner::new(&cut(&proto, &frames_out, 1, channels, window)?, 1, channels)?;
        let mut chunk = Runner::new(&cut(&proto, &frames_out, 1, channels, chunk_len)?, 1, channels)?;
        // The newest frames of a window: its last `per_chunk` frames, which start
        // `(frames_per_window - per_chunk) * stride` samples into it (unpadded frames
        // need not reach the window's end).
        let chunk_start = (layout.frames_per_window - per_chunk) * layout.stride;
        let mut pool = FramePool::new(layout.channels, layout.frames_per_window, layout.cut.pooling);
        let mut tail = Vec::with_capacity(channels * chunk_len);
        let raw = streamer.scales_pooled_frames();
        let mut embed = |i: usize, w: &Window| -> Result<Vec<f32>> {
            if i == 0 {
                pool.clear();
            }
            // A homogeneous backbone runs the raw stream and scales the pooled frames;
            // otherwise the window is normalised whole, as the tract streamer normalises
            // its newest hop by the window it completes.
            normalised.clear();
            normalised.extend_from_slice(&w.samples);
            if !raw {
                meta.normalise(&mut normalised);
            }
            let (frames, n) = if i == 0 {
                (whole.run(&normalised)?, layout.frames_per_window)
            } else {
                tail.clear();
                for c in 0..channels {
                    tail.extend_from_slice(
                        &normalised[c * window + chunk_start..c * window + chunk_start + chunk_len],
                    );
                }
                (chunk.run(&tail)?, per_chunk)
            };
            for t in 0..n {
                pool.push(&frames, n, t);
            }
            let scale = if raw { window_scale(&meta, &w.samples[..window]) } else { 1.0 };
            pool.embedding(scale).context("a window did not fill the frames")
        };
        seconds = time_passes(windows, passes, model, &mut embed, &mut classes, &mut scores)?;
    } else {
        let mut full = embedding_runner(&proto, &meta, 1)?;
        let mut embed = |_: usize, w: &Window| -> Result<Vec<f32>> {
            normalised.clear();
            normalised.extend_from_slice(&w.samples);
            meta.normalise(&mut normalised);
            full.run(&normalised)
        };
        seconds = time_passes(windows, passes, model, &mut embed, &mut classes, &mut scores)?;
    }
    Ok(RowResult::timed(seconds, windows.len(), classes, scores, note))
}

/// One unmeasured pass, then the median of `passes` timed passes of embedding and
/// scoring every window in order; keeps the last pass's classes and scores.
fn time_passes(
    windows: &[Window],
    passes: usize,
    model: &VigilModel,
    embed: &mut dyn FnMut(usize, &Window) -> Result<Vec<f32>>,
    classes: &mut Vec<usize>,
    scores: &mut Vec<f32>,
) -> Result<f64> {
    let mut pass = || -> Result<()> {
        classes.clear();
        scores.clear();
        for (i, w) in windows.iter().enumerate() {
            // The head and the anomaly score, as the gateway's scorer computes them.
            let embedding = embed(i, w)?;
            let mut p = vec![0.0; model.metadata().class_names.len()];
            model.head().logits(&embedding, &mut p)?;
            softmax_in_place(&mut p);
            classes.push(argmax(&p).unwrap_or(0));
            scores.push(model.prototype().score(&embedding)?);
        }
        Ok(())
    };
    pass()?;
    median_seconds(passes, pass)
}

/// A session of the graph up to the embedding node, for `batch` windows at once.
fn embedding_runner(proto: &ModelProto, meta: &ModelMetadata, batch: usize) -> Result<Runner> {
    let embedding_out = output_of(proto, &meta.embedding_node);
    Runner::new(&cut(proto, &embedding_out, batch, meta.channels, meta.window)?, batch, meta.channels)
}

/// ONNX Runtime computing the embeddings of `batch` normalised windows in one call (the
/// graph up to the embedding node, one thread), for `vigil bench --sensors`.
pub fn batch_embedder(
    path: &Path,
    model: &VigilModel,
    batch: usize,
) -> Result<impl FnMut(&[f32]) -> Result<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let proto = vigil_runtime::onnx::decode_model(&bytes, path)?;
    let mut runner = embedding_runner(&proto, model.metadata(), batch)?;
    Ok(move |windows: &[f32]| runner.run(windows))
}
