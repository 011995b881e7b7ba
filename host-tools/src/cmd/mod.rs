//! The subcommands of `vigil`, one file each.

mod adapt_eval;
mod bench;
mod demo;
mod evaluate;
mod export_head;
mod feature_head;
mod feed;
mod fine_tune;
mod fleet;
mod keys;
mod label;
mod pretrain;
mod push;
mod quantize;
pub mod report;
mod reports;
mod run;
mod serve;
mod sim_eval;
mod simulate;
mod snapshot;
mod status;
mod transfer_eval;

use crate::client::Client;
use crate::input::{self, InputFormat, SampleSource};
use crate::stream::StreamOptions;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_runtime::model::VigilModel;
use vigil_runtime::serial::{open_port, DEFAULT_BAUD};

/// The shipped reference model, built into the binary so `vigil demo` and `vigil run`
/// work from any folder: the spectral bearing-cnn-v3, the most accurate of the three.
pub const REFERENCE_MODEL: &[u8] = include_bytes!("../../../models/bearing-cnn-v3.onnx");

/// The name the built-in reference model goes by in messages and reports.
const REFERENCE_MODEL_NAME: &str = "models/bearing-cnn-v3.onnx (built in)";

/// The streamable variant (`models/bearing-cnn-v2.md`), built in for `vigil bench`.
pub const STREAMABLE_MODEL: &[u8] = include_bytes!("../../../models/bearing-cnn-v2.onnx");

/// Loads `path`, or the built-in reference model when `None`.
pub fn load_model(path: Option<&Path>) -> Result<VigilModel> {
    match path {
        Some(p) => VigilModel::load(p).with_context(|| format!("cannot load model {}", p.display())),
        None => Ok(VigilModel::from_bytes(REFERENCE_MODEL, Path::new(REFERENCE_MODEL_NAME))?),
    }
}

/// Loads `path` (or the built-in reference model) once as a runnable model and as its
/// ONNX graph, for the commands that write a changed copy of it; also returns the file's
/// size in bytes.
pub fn load_model_and_proto(path: Option<&Path>) -> Result<(VigilModel, tract_onnx::pb::ModelProto, usize)> {
    let (bytes, name) = match path {
        Some(p) => {
            (std::fs::read(p).with_context(|| format!("cannot load model {}", p.display()))?, p.to_path_buf())
        }
        None => (REFERENCE_MODEL.to_vec(), PathBuf::from(REFERENCE_MODEL_NAME)),
    };
    let model = VigilModel::from_bytes(&bytes, &name)
        .with_context(|| format!("cannot load model {}", name.display()))?;
    let proto = vigil_runtime::onnx::decode_model(&bytes, &name)?;
    Ok((model, proto, bytes.len()))
}

/// How to read a sensor stream (`vigil run`, `vigil serve`).
#[derive(Debug, Args)]
pub struct StreamInputArgs {
    /// Input format [default: from the file extension; csv for standard input].
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    /// Sample rate of the input in Hz (overrides what the file says).
    #[arg(long)]
    rate: Option<f64>,
    /// Channels in the input (needed for f32le).
    #[arg(long)]
    channels: Option<usize>,
    /// Hop between windows, in samples at the model's rate [default: the model's].
    #[arg(long)]
    hop: Option<usize>,
    /// Pace the input at its sample rate, like a live sensor.
    #[arg(long)]
    realtime: bool,
    /// Stream the backbone: only each window's newest hop runs through it, the rest of
    /// the window's frames are kept from earlier windows. Same scores for the shipped
    /// model (its frames never see past a window's edge), several times less work per
    /// window at short hops.
    #[arg(long)]
    streamed: bool,
}

impl StreamInputArgs {
    /// The `[input]` table of a config file as options.
    pub fn from_config(input: &crate::gateway_config::InputConfig, path: &Path) -> Result<Self> {
        let format = match &input.format {
            Some(f) => Some(<InputFormat as clap::ValueEnum>::from_str(f, true).map_err(|_| {
                anyhow::anyhow!(
                    "config {}: input format `{f}` is not csv, wav, f32le or forwarder",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(StreamInputArgs {
            format,
            rate: input.rate,
            channels: input.channels,
            hop: None,
            realtime: input.realtime,
            streamed: false,
        })
    }

    /// Opens `input` (a file or `-`) and the options to stream it with.
    pub fn open(&self, input: &str) -> Result<(Box<dyn SampleSource>, StreamOptions)> {
        let format = self.format.or_else(|| InputFormat::from_path(input)).unwrap_or(InputFormat::Csv);
        let source = input::open(input, format, self.channels)?;
        Ok((
            source,
            StreamOptions {
                hop: self.hop,
                realtime: self.realtime,
                rate: self.rate,
                streamed: self.streamed,
            },
        ))
    }
}

/// The serial port to a device (host commands).
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Serial port of the device, such as /dev/ttyUSB0.
    #[arg(long, short)]
    port: String,
    /// Baud rate.
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    baud: u32,
    /// Milliseconds to wait for an answer before retrying.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Retries of a request whose answer was lost or corrupted.
    #[arg(long, default_value_t = 8)]
    retries: u32,
}

impl PortArgs {
    /// Opens the port and wraps it in a protocol client.
    pub fn connect(&self) -> Result<Client> {
        let port = open_port(&self.port, self.baud, Duration::from_millis(20))?;
        let mut client = Client::new(Box::new(port));
        client.timeout = Duration::from_millis(self.timeout_ms);
        client.retries = self.retries;
        Ok(client)
    }

    /// The port's path.
    pub fn name(&self) -> &str {
        &self.port
    }

    /// The baud rate.
    pub fn baud_rate(&self) -> u32 {
        self.baud
    }

    /// Seconds `bytes` take on the line at this baud rate (8N1: 10 bits per byte).
    pub fn line_seconds(&self, bytes: u64) -> f64 {
        bytes as f64 * 10.0 / f64::from(self.baud)
    }
}

/// Vigil: predictive-maintenance inference at the edge.
///
/// Simulate bearing vibration, pretrain the reference model, and run a model over a
/// sensor stream to detect and classify developing faults; serve devices over serial
/// lines, push signed head updates, pull and label reports, and turn them into the
/// technician's HTML report. Start with `vigil demo`.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a machine healthy, then developing a fault, and watch the shipped model
    /// catch it (no hardware, no download).
    Demo(demo::DemoArgs),
    /// Run a model over a sensor stream and print alarms as they happen.
    Run(run::RunArgs),
    /// Measure µs per scored window, full window and streamed, against ONNX Runtime.
    Bench(bench::BenchArgs),
    /// Simulate bearing vibration (healthy or faulty, optionally run to failure).
    Simulate(simulate::SimulateArgs),
    /// Train the reference model on the simulated source domain and export it to ONNX.
    Pretrain(pretrain::PretrainArgs),
    /// Evaluate a model on freshly simulated held-out recordings of the source domain.
    SimEval(sim_eval::SimEvalArgs),
    /// Fine-tune a pretrained model on labelled recordings of one machine line.
    FineTune(fine_tune::FineTuneArgs),
    /// Quantise a model to int8 for tract's integer kernels, calibrated on a dataset.
    Quantize(quantize::QuantizeArgs),
    /// Evaluate a model on a labelled dataset (accuracy, macro-F1, confusion, per
    /// condition, anomaly ROC-AUC, false and missed alarms).
    Evaluate(evaluate::EvaluateArgs),
    /// Compare the envelope-spectrum classifier, the shipped model zero-shot and
    /// fine-tuned, and the DSP feature backbone on a labelled dataset.
    TransferEval(transfer_eval::TransferEvalArgs),
    /// Compare unadapted, site-adapted, label-adapted and fleet-merged heads on a
    /// simulated fleet of machines outside the pretraining range.
    AdaptEval(adapt_eval::AdaptEvalArgs),
    /// Run the pipeline and serve the device protocol on a serial port (gateway agent).
    Serve(serve::ServeArgs),
    /// Ask a device who it is and what it is doing.
    Status(status::StatusArgs),
    /// Push a signed head update to a device.
    Push(push::PushArgs),
    /// Make the technician's HTML report (and CSV/JSON) from pulled reports.
    Report(report::ReportArgs),
    /// Pull a device's stored anomaly reports.
    Reports(reports::ReportsArgs),
    /// Label a device's report with the class a technician found.
    Label(label::LabelArgs),
    /// Copy the head a device runs into a .vup file.
    Snapshot(snapshot::SnapshotArgs),
    /// Merge the heads that many devices adapted into one signed update.
    Fleet(fleet::FleetArgs),
    /// Write a model's head as an unsigned head update (.vup).
    ExportHead(export_head::ExportHeadArgs),
    /// Train a head over DSP features for microcontroller nodes, as an unsigned head update.
    FeatureHead(feature_head::FeatureHeadArgs),
    /// Stream a recorded signal into a device that has no sensor of its own.
    Feed(feed::FeedArgs),
    /// Make an Ed25519 key pair for signing updates.
    Keygen(keys::KeygenArgs),
    /// Sign a head update with a secret key.
    Sign(keys::SignArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Demo(a) => a.run(),
            Command::Run(a) => a.run(),
            Command::Bench(a) => a.run(),
            Command::Simulate(a) => a.run(),
            Command::Pretrain(a) => a.run(),
            Command::SimEval(a) => a.run(),
            Command::FineTune(a) => a.run(),
            Command::Quantize(a) => a.run(),
            Command::Evaluate(a) => a.run(),
            Command::AdaptEval(a) => a.run(),
            Command::TransferEval(a) => a.run(),
            Command::Serve(a) => a.run(),
            Command::Status(a) => a.run(),
            Command::Push(a) => a.run(),
            Command::Report(a) => a.run(),
            Command::Reports(a) => a.run(),
            Command::Label(a) => a.run(),
            Command::Snapshot(a) => a.run(),
            Command::Fleet(a) => a.run(),
            Command::ExportHead(a) => a.run(),
            Command::FeatureHead(a) => a.run(),
            Command::Feed(a) => a.run(),
            Command::Keygen(a) => a.run(),
            Command::Sign(a) => a.run(),
        }
    }
}
