//! The host side of Vigil's device protocol.
//!
//! * [`client::Client`] talks to one device over any byte link (a serial port from
//!   `vigil_serial`, a pty in tests): who it is, its status, chunked signed head updates
//!   that resume where they stopped, report pulls, labels, head snapshots and sample
//!   feeding, with retries on a noisy line.
//! * [`update_file::UpdateFile`] is a head update as a file (`.vup`): header, payload and
//!   an optional Ed25519 signature; keys are written as hex.
//! * [`fleet`] merges the heads many devices adapted on site into one.
//!
//! ```no_run
//! use vigil_client::client::Client;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let port = vigil_serial::open_port("/dev/ttyUSB0", vigil_serial::DEFAULT_BAUD, std::time::Duration::from_millis(20))?;
//! let mut client = Client::new(Box::new(port));
//! println!("{:?}", client.status()?);
//! # Ok(()) }
//! ```

pub mod client;
pub mod fleet;
pub mod update_file;

use vigil_core::wire::NackReason;

/// Why a conversation with a device, an update file or a merge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The device answered with a refusal.
    #[error("the device refused: {0}")]
    Refused(NackReason),
    /// No usable answer came back, or the answers did not make sense.
    #[error("{0}")]
    Link(String),
    /// Reading from or writing to the link failed.
    #[error("the link failed: {0}")]
    Io(#[from] std::io::Error),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    File {
        /// What was being done, naming the file.
        what: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An update file, key or snapshot is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Snapshots cannot be merged.
    #[error("{0}")]
    Merge(String),
    /// A message or head could not be encoded.
    #[error("encoding: {0}")]
    Encoding(#[from] postcard::Error),
    /// The core refused a head or its values.
    #[error("{0}")]
    Core(#[from] vigil_core::CoreError),
    /// An operation stopped part-way; says where, then why.
    #[error("{context}: {source}")]
    Stopped {
        /// Where it stopped, and what to do.
        context: String,
        /// Why.
        source: Box<ClientError>,
    },
}

impl ClientError {
    /// This error, preceded by where it happened.
    pub fn context(self, context: String) -> Self {
        ClientError::Stopped { context, source: Box::new(self) }
    }

    /// The device's refusal, when that is what this error is (at any depth).
    pub fn refusal(&self) -> Option<NackReason> {
        match self {
            ClientError::Refused(reason) => Some(*reason),
            ClientError::Stopped { source, .. } => source.refusal(),
            _ => None,
        }
    }

    /// An I/O error while doing `what` with a file.
    pub fn file(what: String, source: std::io::Error) -> Self {
        ClientError::File { what, source }
    }

    /// A function that turns a decoding error into [`ClientError::Invalid`] after `what`.
    pub fn invalid<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |e| ClientError::Invalid(format!("{what}: {e}"))
    }
}

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
