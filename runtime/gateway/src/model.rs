//! A Vigil model loaded for inference: the tract backbone, the head's weights for the Rust
//! head, and the metadata that says how to feed it.
//!
//! The backbone is cut where its global pooling begins when the graph has the pattern
//! [`FrameCut::find`] knows, and the pooling runs in Rust: tract 0.23.9 spends about
//! 38 µs on the `Reduce<Max>` of a GlobalMaxPool over 96 x 10 values (a fifth of
//! bearing-cnn-v2's window), where the same pooling in Rust takes about a microsecond.
//! Other graphs are cut at the embedding node.

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use crate::onnx;
use crate::streaming::{pool, FrameCut, Pooling};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use vigil_core::head::{HeadRef, PrototypeRef};
use vigil_core::update::{fixed, quantise_rows, HeadUpdate, HeadWeights};

type Plan = Arc<TypedRunnableModel>;

/// A loaded model.
#[derive(Debug, Clone)]
pub struct VigilModel {
    meta: ModelMetadata,
    hash: [u8; 32],
    path: PathBuf,
    proto: ModelProto,
    embedder: Plan,
    /// The pooling the runtime does after `embedder`, when it is cut at the frames.
    pooling: Option<Pooling>,
    head_weights: Vec<f32>,
    head_bias: Vec<f32>,
    dim: usize,
}

impl VigilModel {
    /// Loads and checks an ONNX model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|source| RuntimeError::ModelIo { path: path.into(), source })?;
        Self::from_bytes(&bytes, path)
    }

    /// Loads a model from bytes; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let proto = onnx::decode_model(bytes, path)?;
        let meta = onnx::read_metadata(&proto)?;
        let weight = onnx::read_initializer(&proto, &meta.head_weight)?;
        let bias = onnx::read_initializer(&proto, &meta.head_bias)?;
        let classes = meta.class_names.len();
        if weight.dims.len() != 2 || weight.dims[0] != classes {
            return Err(RuntimeError::Initializer {
                name: meta.head_weight.clone(),
                problem: format!("has dims {:?}; expected [{classes}, D] for {classes} classes", weight.dims),
            });
        }
        let dim = weight.dims[1];
        HeadRef::new(&weight.values, &bias.values, dim, classes)?;
        if meta.prototype_mean.len() != dim {
            return Err(RuntimeError::Metadata {
                key: "vigil.prototype.mean".into(),
                problem: format!("has {} values; the embedding has {dim}", meta.prototype_mean.len()),
            });
        }
        let (embedder, pooling) = backbone_plan(&proto, &meta, dim)?;
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        Ok(VigilModel {
            meta,
            hash,
            path: path.into(),
            proto,
            embedder,
            pooling,
            head_weights: weight.values,
            head_bias: bias.values,
            dim,
        })
    }

    /// The decoded ONNX graph.
    pub(crate) fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    /// SHA-256 of the model file.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Embedding dimension.
    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    /// The head as shipped in the model.
    pub fn head(&self) -> HeadRef<'_> {
        // Checked in `from_bytes`, so this cannot fail.
        HeadRef::new(&self.head_weights, &self.head_bias, self.dim, self.meta.class_names.len())
            .unwrap_or_else(|_| unreachable!("head shape checked at load"))
    }

    /// The normal-state prototype as shipped in the model.
    pub fn prototype(&self) -> PrototypeRef<'_> {
        PrototypeRef::new(&self.meta.prototype_mean, &self.meta.prototype_var)
            .unwrap_or_else(|_| unreachable!("prototype checked at load"))
    }

    /// The running head, prototype and alarm policy as a head update for this model.
    /// `int8` quantises the weights (one scale per class row).
    pub fn head_update(&self, version: u32, int8: bool) -> Result<HeadUpdate> {
        let too_big = |what: &str| RuntimeError::Metadata {
            key: "vigil.head".into(),
            problem: format!("{what} exceeds what a head update carries (256 inputs, 8 classes)"),
        };
        let weights = if int8 {
            quantise_rows(&self.head_weights, self.dim)?
        } else {
            HeadWeights::F32(fixed(&self.head_weights).map_err(|_| too_big("the head"))?)
        };
        Ok(HeadUpdate {
            model_hash: self.hash,
            version,
            inputs: u16::try_from(self.dim).map_err(|_| too_big("the embedding"))?,
            classes: self.meta.class_names.len() as u8,
            weights,
            bias: fixed(&self.head_bias).map_err(|_| too_big("the bias"))?,
            prototype_mean: fixed(&self.meta.prototype_mean).map_err(|_| too_big("the prototype"))?,
            prototype_var: fixed(&self.meta.prototype_var).map_err(|_| too_big("the prototype"))?,
            alarm: self.meta.alarm,
        })
    }

    /// Replaces the alarm policy (threshold, k-of-n, hysteresis).
    pub fn set_alarm_policy(&mut self, policy: vigil_core::alarm::AlarmPolicy) -> Result<()> {
        policy.validate()?;
        self.meta.alarm = policy;
        Ok(())
    }

    /// Replaces the head, prototype and alarm policy by those of `update`, after checking
    /// that it was made for this model.
    pub fn apply_head(&mut self, update: &HeadUpdate) -> Result<()> {
        let mismatch = |problem: String| RuntimeError::Metadata { key: "head update".into(), problem };
        if update.model_hash != self.hash {
            return Err(mismatch(format!("was made for another model than {}", self.path.display())));
        }
        if usize::from(update.inputs) != self.dim
            || usize::from(update.classes) != self.meta.class_names.len()
        {
            return Err(mismatch(format!(
                "is {} inputs x {} classes; the model's head is {} x {}",
                update.inputs,
                update.classes,
                self.dim,
                self.meta.class_names.len()
            )));
        }
        update.validate()?;
        let mut weights = vec![0.0; self.dim * self.meta.class_names.len()];
        update.weights_into(&mut weights)?;
        self.head_weights = weights;
        self.head_bias = update.bias.to_vec();
        self.meta.prototype_mean = update.prototype_mean.to_vec();
        self.meta.prototype_var = update.prototype_var.to_vec();
        self.meta.alarm = update.alarm;
        self.meta.head_version = update.version;
        Ok(())
    }

    /// A runner of the backbone: the embedding of one window (the graph up to its pooling
    /// in tract and the pooling in Rust, or the graph up to the embedding node).
    pub fn embedder(&self) -> Result<Embedder> {
        Embedder::new(self.embedder.clone(), &self.meta, self.dim, self.pooling)
    }

    /// A runner of the whole graph up to its logits, for parity checks against the
    /// tract embedding plus Rust head.
    pub fn full_model(&self) -> Result<Embedder> {
        let plan = build_plan(&self.proto, &self.meta, &self.meta.logits_node)?;
        Embedder::new(plan, &self.meta, self.meta.class_names.len(), None)
    }
}

/// The backbone cut at its frames with the pooling the runtime then does, when the graph
/// pools the way [`FrameCut::find`] knows into `dim` values; otherwise cut at the
/// embedding node.
fn backbone_plan(proto: &ModelProto, meta: &ModelMetadata, dim: usize) -> Result<(Plan, Option<Pooling>)> {
    if let Ok(cut) = FrameCut::find(proto, meta) {
        let plan = build_plan(proto, meta, &cut.frames_node)?;
        let channels = match plan.model().output_fact(0)?.shape.as_concrete() {
            Some(&[1, channels, frames]) if frames > 0 => channels,
            _ => 0,
        };
        if cut.pooling.width(channels) == dim {
            return Ok((plan, Some(cut.pooling)));
        }
    }
    Ok((build_plan(proto, meta, &meta.embedding_node)?, None))
}

/// The plan of one window up to `output`, with the first convolution in the form tract
/// runs fastest ([`onnx::patchify_as_pointwise`]).
fn build_plan(proto: &ModelProto, meta: &ModelMetadata, output: &str) -> Result<Plan> {
    let lowered = onnx::patchify_as_pointwise(proto, &meta.input_name, meta.channels, meta.window);
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(&lowered)?
        .with_input_fact(0, f32::fact([1, meta.channels, meta.window]).into())?;
    model.select_outputs_by_name([output])?;
    optimise(model.into_typed()?)
}

/// tract's knob choosing, per convolution, between copying the patches out (im2col)
/// and reading them in place as the matrix product packs them (lazy im2col).
const LAZY_IM2COL_KNOB: &str = "TRACT_LAZY_IM2COL_MIN_KERNEL";

/// Optimises `model` into a plan, with the k3 convolutions reading their patches in
/// place: tract copies them out for kernels under 6 taps by default, and on Vigil's
/// backbones reading in place measured 5% faster on a whole window and 11% faster on a
/// streamed hop (`vigil bench --profile`, bearing-cnn-v2, docs/performance.md). The
/// environment variable of the same name, when set, decides instead.
pub(crate) fn optimise(model: TypedModel) -> Result<Plan> {
    let run = || -> Result<Plan> { Ok(model.into_optimized()?.into_runnable()?) };
    if std::env::var_os(LAZY_IM2COL_KNOB).is_some() {
        return run();
    }
    tract_onnx::tract_core::knobs::KnobScope::new([(LAZY_IM2COL_KNOB, "3")])?.enter(run)
}

/// Runs one plan window after window, reusing its state.
#[derive(Debug)]
pub struct Embedder {
    state: TypedSimpleState,
    channels: usize,
    window: usize,
    out_len: usize,
    pooling: Option<Pooling>,
}

impl Embedder {
    fn new(plan: Plan, meta: &ModelMetadata, out_len: usize, pooling: Option<Pooling>) -> Result<Self> {
        Ok(Embedder { state: plan.spawn()?, channels: meta.channels, window: meta.window, out_len, pooling })
    }

    /// The time of each node of the backbone's plan on `window` (normalised, as for
    /// [`Embedder::run`]), averaged over `runs` runs.
    pub fn profile(&mut self, window: &[f32], runs: usize) -> Result<Vec<crate::profile::NodeTime>> {
        self.run(window)?;
        let shape = [1, self.channels, self.window];
        crate::profile::profile_state(&mut self.state, runs, || Ok(Tensor::from_shape(&shape, window)?))
    }

    /// Runs one normalised window (`channels * window` values, channel-major).
    pub fn run(&mut self, window: &[f32]) -> Result<Vec<f32>> {
        let expected = self.channels * self.window;
        if window.len() != expected {
            return Err(RuntimeError::StreamMismatch(format!(
                "window has {} values, the model takes {} channels x {} samples",
                window.len(),
                self.channels,
                self.window
            )));
        }
        let input = Tensor::from_shape(&[1, self.channels, self.window], window)?;
        let out = self.state.run(tvec!(input.into()))?;
        let view = out[0].to_plain_array_view::<f32>()?;
        let values = match (self.pooling, view.as_slice(), view.shape()) {
            (Some(pooling), Some(frames), &[1, channels, _]) => pool(frames, channels, pooling),
            _ => view.iter().copied().collect::<Vec<f32>>(),
        };
        if values.len() != self.out_len {
            return Err(RuntimeError::StreamMismatch(format!(
                "the graph output has {} values, expected {}",
                values.len(),
                self.out_len
            )));
        }
        Ok(values)
    }
}
