//! The models built into the runtime, so `vigil run`, `vigil demo` and `vigil serve` work
//! from any folder without a model file, and the one loader every command uses.

use crate::error::{Result, RuntimeError};
use crate::model::VigilModel;
use std::path::{Path, PathBuf};

/// The default model: the spectral bearing-cnn-v3 (`models/bearing-cnn-v3.md`), the most
/// accurate of the shipped models.
pub const REFERENCE_MODEL: &[u8] = include_bytes!("../../../models/bearing-cnn-v3.onnx");

/// The name the built-in default model goes by in messages and reports.
pub const REFERENCE_MODEL_NAME: &str = "models/bearing-cnn-v3.onnx (built in)";

/// The streamable variant (`models/bearing-cnn-v2.md`), built in for `vigil bench`.
pub const STREAMABLE_MODEL: &[u8] = include_bytes!("../../../models/bearing-cnn-v2.onnx");

/// Loads `path`, or the built-in default model when `None`; errors name the file.
pub fn load_model(path: Option<&Path>) -> Result<VigilModel> {
    match path {
        Some(p) => VigilModel::load(p).map_err(|e| cannot_load(p, e)),
        None => VigilModel::from_bytes(REFERENCE_MODEL, Path::new(REFERENCE_MODEL_NAME))
            .map_err(|e| cannot_load(Path::new(REFERENCE_MODEL_NAME), e)),
    }
}

/// Loads `path` (or the built-in default model) once as a runnable model and as its
/// ONNX graph, for the commands that write a changed copy of it; also returns the file's
/// size in bytes.
pub fn load_model_and_proto(path: Option<&Path>) -> Result<(VigilModel, tract_onnx::pb::ModelProto, usize)> {
    let (bytes, name) = match path {
        Some(p) => (
            std::fs::read(p).map_err(|e| RuntimeError::ModelIo { path: p.into(), source: e })?,
            p.to_path_buf(),
        ),
        None => (REFERENCE_MODEL.to_vec(), PathBuf::from(REFERENCE_MODEL_NAME)),
    };
    let model = VigilModel::from_bytes(&bytes, &name).map_err(|e| cannot_load(&name, e))?;
    let proto = model.proto().clone();
    Ok((model, proto, bytes.len()))
}

/// Names the model file in an error that does not already.
fn cannot_load(path: &Path, e: RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::ModelIo { .. } | RuntimeError::NotOnnx { .. } => e,
        other => RuntimeError::Model { path: path.to_path_buf(), why: Box::new(other) },
    }
}
