//! The library behind the `vigil` command line: the bearing simulator, training and ONNX
//! export of the reference model, sample-stream readers and the subcommands.
//!
//! The binary is a thin shell over [`cmd`]; tests and benches use the same modules.

pub mod adapt_eval;
pub mod client;
pub mod cmd;
pub mod dataset;
pub mod fleet;
pub mod gateway_config;
pub mod hex;
pub mod input;
pub mod report_html;
pub mod report_io;
pub mod sim;
pub mod stream;
pub mod train;
pub mod transfer_eval;
pub mod update_file;
