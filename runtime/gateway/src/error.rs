//! Errors of the gateway runtime.

use std::path::PathBuf;

/// Why the gateway runtime refused a model, a stream or a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The model file could not be read.
    #[error("cannot read model {path}: {source}")]
    ModelIo {
        /// The model file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid ONNX protobuf.
    #[error("{path} is not a valid ONNX model ({reason}); is the file truncated or of another format?")]
    NotOnnx {
        /// The model file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A Vigil metadata key is missing or malformed.
    #[error("model metadata `{key}`: {problem}")]
    Metadata {
        /// The `metadata_props` key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An initializer the head needs is missing or malformed.
    #[error("model initializer `{name}`: {problem}")]
    Initializer {
        /// The initializer name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// tract could not load or run the graph.
    #[error("tract: {0:#}")]
    Tract(#[from] tract_onnx::prelude::TractError),
    /// A stream that does not fit the model.
    #[error("{0}")]
    StreamMismatch(String),
    /// Maths in the core refused its input.
    #[error("{0}")]
    Core(#[from] vigil_core::CoreError),
    /// A report store operation failed.
    #[error("report store {path}: {source}")]
    StoreIo {
        /// The store file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A serial port could not be opened or used.
    #[error("serial port {port} {problem}")]
    Port {
        /// The port's path.
        port: String,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// A report could not be encoded or decoded.
    #[error("report encoding: {0}")]
    Encoding(#[from] postcard::Error),
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
