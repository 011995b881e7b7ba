//! A Vigil model loaded for inference: the tract backbone, the head's weights for the Rust
//! head, and the metadata that says how to feed it.
//!
//! The backbone is cut where its global pooling begins when the graph has the pattern
//! [`crate::pooling::FrameCut::find`] knows, and the pooling runs in Rust: tract 0.23.9 spends about
//! 38 µs on the `Reduce<Max>` of a GlobalMaxPool over 96 x 10 values (a fifth of
//! bearing-cnn-v2's window), where the same pooling in Rust takes about a microsecond.
//! Other graphs are cut at the embedding node. A first patchify layer runs in Rust ahead
//! of tract, and tract gets the rest channels-last ([`crate::patchify`],
//! [`crate::plan`]).

use crate::error::{Result, RuntimeError};
use crate::metadata::ModelMetadata;
use crate::onnx;
use crate::plan::{backbone_plan, build_plan, Embedder, Staged};
use crate::pooling::Pooling;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tract_onnx::pb::ModelProto;
use vigil_core::head::{HeadRef, PrototypeRef};
use vigil_core::update::{HeadParts, HeadUpdate};
use vigil_core::wire::NackReason;

/// A loaded model.
#[derive(Debug, Clone)]
pub struct VigilModel {
    meta: ModelMetadata,
    hash: [u8; 32],
    path: PathBuf,
    /// Shared by the clones: one gateway runs a model per sensor, and the graph with its
    /// weights is the largest part of it.
    proto: std::sync::Arc<ModelProto>,
    embedder: Staged,
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
        for (name, values) in [(&meta.head_weight, &weight.values), (&meta.head_bias, &bias.values)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(RuntimeError::Initializer {
                    name: name.clone(),
                    problem: format!("value {i} is {}; a head needs finite weights", values[i]),
                });
            }
        }
        if meta.prototype_mean.len() != dim {
            return Err(RuntimeError::Metadata {
                key: "vigil.prototype.mean".into(),
                problem: format!("has {} values; the embedding has {dim}", meta.prototype_mean.len()),
            });
        }
        let (embedder, pooling) = backbone_plan(&proto, &meta, dim, 1)?;
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        Ok(VigilModel {
            meta,
            hash,
            path: path.into(),
            proto: std::sync::Arc::new(proto),
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
            .unwrap_or_else(|_| HeadRef::empty())
    }

    /// The normal-state prototype as shipped in the model.
    pub fn prototype(&self) -> PrototypeRef<'_> {
        // Checked at load (ModelMetadata::validate: equal lengths, finite, var >= 0); an
        // empty prototype scores every window 0 rather than panic should that change.
        PrototypeRef::new(&self.meta.prototype_mean, &self.meta.prototype_var)
            .unwrap_or_else(|_| PrototypeRef::empty())
    }

    /// The running head, prototype and alarm policy as a head update for this model.
    /// `int8` quantises the weights (one scale per class row).
    pub fn head_update(&self, version: u32, int8: bool) -> Result<HeadUpdate> {
        Ok(HeadUpdate::from_parts(HeadParts {
            model_hash: self.hash,
            version,
            weights: &self.head_weights,
            bias: &self.head_bias,
            prototype_mean: &self.meta.prototype_mean,
            prototype_var: &self.meta.prototype_var,
            alarm: self.meta.alarm,
            int8,
        })?)
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
        if let Err(reason) = update.fits(&self.hash, self.dim, Some(self.meta.class_names.len())) {
            if reason == NackReason::OtherModel {
                return Err(mismatch(format!("was made for another model than {}", self.path.display())));
            }
            // A value the core refuses says which; otherwise the shape is what differs.
            update.validate()?;
            return Err(mismatch(format!(
                "is {} inputs x {} classes; the model's head is {} x {}",
                update.inputs,
                update.classes,
                self.dim,
                self.meta.class_names.len()
            )));
        }
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
        Embedder::new(&self.embedder, &self.meta, self.dim, self.pooling, 1)
    }

    /// A runner of the backbone that embeds `batch` windows in one call of tract (windows
    /// of several sensors scored together; `vigil bench --sensors` measures what it gains).
    pub fn batch_embedder(&self, batch: usize) -> Result<Embedder> {
        if batch == 0 {
            return Err(RuntimeError::StreamMismatch("a batch holds at least one window".into()));
        }
        if batch == 1 {
            return self.embedder();
        }
        let (staged, pooling) = backbone_plan(&self.proto, &self.meta, self.dim, batch)?;
        Embedder::new(&staged, &self.meta, self.dim, pooling, batch)
    }

    /// A runner of the whole graph up to its logits, for parity checks against the
    /// tract embedding plus Rust head.
    pub fn full_model(&self) -> Result<Embedder> {
        let staged = build_plan(&self.proto, &self.meta, &self.meta.logits_node, 1)?;
        Embedder::new(&staged, &self.meta, self.meta.class_names.len(), None, 1)
    }
}
