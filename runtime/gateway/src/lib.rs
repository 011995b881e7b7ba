//! Vigil's gateway runtime: runs a model over live sensor streams on a Linux gateway.
//!
//! * [`model::VigilModel`] loads an ONNX model with its Vigil metadata and runs the
//!   backbone in tract, cut where its global pooling begins (the pooling runs in Rust)
//!   or at the embedding node; the head runs in Rust (`vigil_core::head`), exactly as on
//!   a microcontroller. A first patchify convolution runs in Rust ahead of tract
//!   ([`patchify`]). [`profile`] times tract's plans node by node.
//! * [`windower::Windower`] cuts an interleaved multi-channel stream into windows at the
//!   model's rate, resampling when the stream's rate differs.
//! * [`scorer::WindowScorer`] normalises, embeds, classifies, scores against the
//!   normal-state prototype and applies the alarm policy, producing reports.
//! * [`store::ReportStore`] keeps reports durably in an append-only, CRC-checked file.
//! * [`input`] reads sample streams (CSV, WAV, f32le, data-forwarder lines) and [`stream`]
//!   drives one through windowing, scoring and the store; [`report_io`] writes and reads
//!   reports as JSON lines and CSV.
//! * [`agent::GatewayDevice`] and [`slots::FileSlots`] serve the wire protocol of
//!   `vigil_core::wire` on a serial port (`vigil_serial`): status, signed head updates
//!   into A/B slots, report pulls and labels; [`config`] reads the gateway's `vigil.toml`
//!   and [`gateway`] assembles the agent that `vigil serve` runs.
//! * [`builtin`] holds the default model, built into the binary, and the loader every
//!   command uses.
//!
//! ```no_run
//! use vigil_runtime::{model::VigilModel, scorer::WindowScorer, windower::Windower};
//! # fn main() -> Result<(), vigil_runtime::RuntimeError> {
//! let model = VigilModel::load("models/bearing-cnn-v1.onnx")?;
//! let meta = model.metadata().clone();
//! let mut windower = Windower::new(1, 48_828.0, meta.sample_rate_hz, meta.window, meta.hop)?;
//! let mut scorer = WindowScorer::new(model, 0)?;
//! let samples = vec![0.0f32; 100_000];
//! let mut windows = Vec::new();
//! windower.push(&samples, |w| windows.push(w));
//! for w in &windows {
//!     let outcome = scorer.score(w)?;
//!     if let Some(report) = outcome.report {
//!         println!("{:?} at {:.2} s", report.kind, report.stream_time_s);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod adaptation;
pub mod agent;
pub mod builtin;
pub mod config;
mod error;
pub mod gateway;
pub mod health;
pub mod input;
pub mod metadata;
pub mod model;
pub mod onnx;
pub mod patchify;
pub mod pipeline;
pub mod plan;
pub mod pooling;
pub mod profile;
pub mod report_io;
pub mod scorer;
pub mod sensors;
pub mod slots;
pub mod speed;
pub mod store;
pub mod stream;
pub mod streaming;
pub mod windower;

pub use error::{Result, RuntimeError};
