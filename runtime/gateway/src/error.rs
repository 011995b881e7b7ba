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
    /// A model's metadata, head or graph was refused.
    // `why` is part of the message, not a separate `source`, so that a report of the
    // whole error chain says it once.
    #[error("cannot load model {path}: {why}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// Why.
        why: Box<RuntimeError>,
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
    /// A sample stream could not be opened or read, or does not make sense.
    #[error("{0}")]
    Input(String),
    /// A gateway config file is malformed; the message names the file, key and line.
    #[error("{0}")]
    Config(String),
    /// A file of reports (JSON lines) is malformed; the message names the file and line.
    #[error("{0}")]
    Reports(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A serial port could not be opened or used.
    #[error(transparent)]
    Port(#[from] vigil_serial::PortError),
    /// A report could not be encoded or decoded.
    #[error("report encoding: {0}")]
    Encoding(#[from] postcard::Error),
}

impl RuntimeError {
    /// An I/O error while doing `what` (which names the file).
    pub fn io(what: String, source: std::io::Error) -> Self {
        RuntimeError::Io { what, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
