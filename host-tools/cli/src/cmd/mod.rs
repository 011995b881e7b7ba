//! The subcommands of `vigil`, one file each.

#[cfg(feature = "train")]
mod adapt_eval;
mod demo;
#[cfg(feature = "train")]
mod evaluate;
mod export_head;
mod feature_head;
mod feed;
#[cfg(feature = "train")]
mod fine_tune;
mod fleet;
mod fleet_bench;
mod keys;
mod label;
#[cfg(not(feature = "train"))]
mod lean;
#[cfg(feature = "train")]
mod pretrain;
mod push;
#[cfg(feature = "train")]
mod quantize;
pub mod report;
mod reports;
mod run;
mod serve;
#[cfg(feature = "train")]
mod sim_eval;
mod simulate;
mod snapshot;
#[cfg(feature = "train")]
mod speed_eval;
mod status;
#[cfg(feature = "train")]
mod transfer_eval;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::Duration;
use vigil_client::client::Client;
use vigil_core::bearing::BearingGeometry;
use vigil_core::kinematics::Kinematics;
use vigil_core::sensor::SensorLimits;
use vigil_runtime::input::{self, InputFormat, SampleSource};
use vigil_runtime::stream::StreamOptions;
use vigil_serial::{open_port, DEFAULT_BAUD};

/// Set by a command whose standard output is data (JSON lines with `--json`): what the
/// libraries log at info level then goes to standard error, so the data stays parseable.
pub static STDOUT_IS_DATA: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks standard output as data when `json` is set (see [`STDOUT_IS_DATA`]).
pub fn stdout_is_data(json: bool) {
    if json {
        STDOUT_IS_DATA.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A progress bar for `len` steps of `what` (0: a spinner with a count), in one style for
/// every command.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len).with_message(what.to_owned());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// How to read a sensor stream (`vigil run`, `vigil serve`).
#[derive(Debug, Args)]
pub struct StreamInputArgs {
    /// Input format: csv, wav, f32le or forwarder [default: from the file extension; csv
    /// for standard input].
    #[arg(long, value_parser = parse_format)]
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
    /// Largest magnitude the sensor measures, in the input's units (g). Windows with
    /// samples beyond it, and flat, stuck, clipped or NaN windows, are reported as sensor
    /// faults (once per episode) and not scored.
    #[arg(long, default_value_t = SensorLimits::DEFAULT.range_g, value_name = "G")]
    range_g: f32,
    /// Store a health record every DURATION of stream: overall RMS in g, RMS velocity in
    /// mm/s over 10-1000 Hz, peak, kurtosis, the score's median and maximum and the class
    /// mix, for the trend in `vigil report` [default: 1m for `serve`; none for `run`].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    health_every: Option<Duration>,
    /// The machine's shaft speed in Hz, from its nameplate. Without it the speed is read
    /// from the signal (the shaft's 1x line and harmonics) and shown in the summary and
    /// health records.
    #[arg(long, value_name = "HZ", value_parser = parse_shaft_hz, allow_negative_numbers = true)]
    shaft_hz: Option<f32>,
    /// The bearing under observation: a designation (6205, 6203, NICE, ZA-2115, UER204)
    /// or N,ELEMENT,PITCH[,ANGLE_DEG] (rolling elements, element and pitch diameter in one
    /// unit, contact angle in degrees).
    #[arg(long, value_name = "BEARING", value_parser = parse_bearing)]
    bearing: Option<BearingGeometry>,
    /// Shaft speeds to look for when reading the speed from the signal, as LOW-HIGH in Hz;
    /// a narrower range (such as 20-30 for a four-pole motor on 50 Hz mains) avoids
    /// taking a bearing fault's lines or the 2x line for the shaft.
    #[arg(long, value_name = "LOW-HIGH", default_value = "2-200", value_parser = vigil_runtime::speed::parse_range)]
    shaft_range: (f32, f32),
}

/// Parses `--shaft-hz`.
pub fn parse_shaft_hz(text: &str) -> std::result::Result<f32, String> {
    let hz: f32 =
        text.trim().parse().map_err(|_| format!("`{text}` is not a shaft speed in Hz, such as 29.95"))?;
    vigil_core::kinematics::check_shaft_hz(hz).map_err(|e| e.to_string())
}

/// Parses `--bearing`.
pub fn parse_bearing(text: &str) -> std::result::Result<BearingGeometry, String> {
    BearingGeometry::parse(text).map_err(|e| format!("bearing `{text}`: {e}"))
}

impl StreamInputArgs {
    /// The `[input]` table of a config file as options.
    pub fn from_config(input: &vigil_runtime::config::InputConfig, path: &Path) -> Result<Self> {
        let format = match &input.format {
            Some(f) => Some(
                f.parse::<InputFormat>().map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(StreamInputArgs {
            format,
            rate: input.rate,
            channels: input.channels,
            hop: None,
            realtime: input.realtime,
            streamed: false,
            range_g: input.range_g.unwrap_or(SensorLimits::DEFAULT.range_g),
            shaft_hz: None,
            bearing: None,
            shaft_range: vigil_runtime::speed::DEFAULT_RANGE_HZ,
            health_every: match &input.health_every {
                Some(text) => {
                    Some(parse_duration(text).map_err(|e| {
                        anyhow::anyhow!("config {}: [input] health_every: {e}", path.display())
                    })?)
                }
                None => None,
            },
        })
    }

    /// Sets the machine's kinematics (the `[machine]` table of a config file).
    pub fn set_kinematics(&mut self, kinematics: Kinematics) {
        self.shaft_hz = kinematics.shaft_hz;
        self.bearing = kinematics.bearing;
    }

    /// The format `input` is read in: --format, else from its extension, else CSV.
    pub fn format_of(&self, input: &str) -> InputFormat {
        self.format.or_else(|| InputFormat::from_path(input)).unwrap_or(InputFormat::Csv)
    }

    /// --channels.
    pub fn channels(&self) -> Option<usize> {
        self.channels
    }

    /// Opens `input` (a file or `-`) and the options to stream it with.
    pub fn open(&self, input: &str) -> Result<(Box<dyn SampleSource>, StreamOptions)> {
        let format = self.format_of(input);
        let source = input::open(input, format, self.channels)?;
        Ok((
            source,
            StreamOptions {
                hop: self.hop,
                realtime: self.realtime,
                rate: self.rate,
                streamed: self.streamed,
                sensor: SensorLimits { range_g: self.range_g, ..SensorLimits::DEFAULT },
                commissioning: None,
                health_every: self.health_every,
                kinematics: Kinematics { shaft_hz: self.shaft_hz, bearing: self.bearing },
                speed_range: self.shaft_range,
            },
        ))
    }
}

/// Parses `500ms`, `90s`, `10m`, `1h`, `2d` or a number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let value: f64 =
        number.trim().parse().map_err(|_| format!("`{text}` is not a duration such as 90s, 10m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use ms, s, m, h or d")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("`{text}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `--format`.
fn parse_format(name: &str) -> Result<InputFormat, String> {
    name.parse().map_err(|e: vigil_runtime::RuntimeError| e.to_string())
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

/// Which sensor of a gateway that watches several a command is about.
#[derive(Debug, Args)]
pub struct SensorArg {
    /// The sensor, on a gateway that watches several (`vigil status` lists them); a
    /// device of one sensor needs none.
    #[arg(long, value_name = "NAME")]
    sensor: Option<String>,
}

impl SensorArg {
    /// Whether --sensor was given.
    pub fn given(&self) -> bool {
        self.sensor.is_some()
    }

    /// Addresses `client`'s requests to the chosen sensor; returns its name when the
    /// device has several. Without --sensor, a device of several sensors is refused
    /// with their names.
    pub fn select(&self, client: &mut Client) -> Result<Option<String>> {
        let names = client.sensors()?;
        let several = names.as_ref().filter(|n| n.len() > 1);
        match (&self.sensor, several) {
            (None, None) => Ok(None),
            (None, Some(names)) => anyhow::bail!(
                "the device watches {} sensors ({}); choose one with --sensor NAME",
                names.len(),
                names.join(", ")
            ),
            (Some(wanted), _) => {
                let Some(names) = names else {
                    anyhow::bail!(
                        "the device predates sensor addressing and has one sensor; leave out --sensor {wanted}"
                    )
                };
                let Some(index) = names.iter().position(|n| n == wanted) else {
                    anyhow::bail!("the device has no sensor {wanted}; its sensors are {}", names.join(", "))
                };
                client.set_sensor(Some(index as u8));
                Ok(Some(wanted.clone()))
            }
        }
    }
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
    #[cfg(feature = "train")]
    Bench(vigil_bench::BenchArgs),
    /// Measure µs per scored window, full window and streamed, against ONNX Runtime (in the full build only).
    #[cfg(not(feature = "train"))]
    Bench(lean::NeedsTrainer),
    /// Simulate bearing vibration (healthy or faulty, optionally run to failure).
    Simulate(simulate::SimulateArgs),
    /// Train the reference model on the simulated source domain and export it to ONNX.
    #[cfg(feature = "train")]
    Pretrain(pretrain::PretrainArgs),
    /// Train the reference model on the simulated source domain and export it to ONNX (in the full build only).
    #[cfg(not(feature = "train"))]
    Pretrain(lean::NeedsTrainer),
    /// Evaluate a model on freshly simulated held-out recordings of the source domain.
    #[cfg(feature = "train")]
    SimEval(sim_eval::SimEvalArgs),
    /// Evaluate a model on freshly simulated held-out recordings of the source domain (in the full build only).
    #[cfg(not(feature = "train"))]
    SimEval(lean::NeedsTrainer),
    /// Read the shaft speed from the signal and compare it with the truth, on simulated
    /// machines across the whole range or on a manifest's recordings.
    #[cfg(feature = "train")]
    SpeedEval(speed_eval::SpeedEvalArgs),
    /// Read the shaft speed from the signal and compare it with the truth (in the full build only).
    #[cfg(not(feature = "train"))]
    SpeedEval(lean::NeedsTrainer),
    /// Fine-tune a pretrained model on labelled recordings of one machine line.
    #[cfg(feature = "train")]
    FineTune(fine_tune::FineTuneArgs),
    /// Fine-tune a pretrained model on labelled recordings of one machine line (in the full build only).
    #[cfg(not(feature = "train"))]
    FineTune(lean::NeedsTrainer),
    /// Quantise a model to int8 for tract's integer kernels, calibrated on a dataset.
    #[cfg(feature = "train")]
    Quantize(quantize::QuantizeArgs),
    /// Quantise a model to int8 for tract's integer kernels, calibrated on a dataset (in the full build only).
    #[cfg(not(feature = "train"))]
    Quantize(lean::NeedsTrainer),
    /// Evaluate a model on a labelled dataset (accuracy, macro-F1, confusion, per
    /// condition, anomaly ROC-AUC, false and missed alarms).
    #[cfg(feature = "train")]
    Evaluate(evaluate::EvaluateArgs),
    /// Evaluate a model on a labelled dataset (accuracy, macro-F1, confusion, per
    /// condition, anomaly ROC-AUC, false and missed alarms) (in the full build only).
    #[cfg(not(feature = "train"))]
    Evaluate(lean::NeedsTrainer),
    /// Compare the envelope-spectrum classifier, the shipped model zero-shot and
    /// fine-tuned, and the DSP feature backbone on a labelled dataset.
    #[cfg(feature = "train")]
    TransferEval(transfer_eval::TransferEvalArgs),
    /// Compare the envelope-spectrum classifier, the shipped model zero-shot and
    /// fine-tuned, and the DSP feature backbone on a labelled dataset (in the full build only).
    #[cfg(not(feature = "train"))]
    TransferEval(lean::NeedsTrainer),
    /// Compare unadapted, site-adapted, label-adapted and fleet-merged heads on a
    /// simulated fleet of machines outside the pretraining range.
    #[cfg(feature = "train")]
    AdaptEval(adapt_eval::AdaptEvalArgs),
    /// Compare unadapted, site-adapted, label-adapted and fleet-merged heads on a
    /// simulated fleet of machines outside the pretraining range (in the full build only).
    #[cfg(not(feature = "train"))]
    AdaptEval(lean::NeedsTrainer),
    /// Run the pipeline and serve the device protocol on a serial port (gateway agent).
    Serve(Box<serve::ServeArgs>),
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
            #[cfg(feature = "train")]
            Command::Bench(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::Bench(a) => a.run("bench"),
            Command::Simulate(a) => a.run(),
            #[cfg(feature = "train")]
            Command::Pretrain(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::Pretrain(a) => a.run("pretrain"),
            #[cfg(feature = "train")]
            Command::SimEval(a) => a.run(),
            #[cfg(feature = "train")]
            Command::SpeedEval(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::SpeedEval(a) => a.run("speed-eval"),
            #[cfg(not(feature = "train"))]
            Command::SimEval(a) => a.run("sim-eval"),
            #[cfg(feature = "train")]
            Command::FineTune(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::FineTune(a) => a.run("fine-tune"),
            #[cfg(feature = "train")]
            Command::Quantize(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::Quantize(a) => a.run("quantize"),
            #[cfg(feature = "train")]
            Command::Evaluate(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::Evaluate(a) => a.run("evaluate"),
            #[cfg(feature = "train")]
            Command::AdaptEval(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::AdaptEval(a) => a.run("adapt-eval"),
            #[cfg(feature = "train")]
            Command::TransferEval(a) => a.run(),
            #[cfg(not(feature = "train"))]
            Command::TransferEval(a) => a.run("transfer-eval"),
            Command::Serve(a) => (*a).run(),
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

/// TLS and credentials for a broker (docs/mqtt.md).
#[derive(Debug, Args, Default)]
pub struct TlsArgs {
    /// User name on the broker; the password comes from the environment variable
    /// VIGIL_MQTT_PASSWORD, never from the command line.
    #[arg(long)]
    username: Option<String>,
    /// For mqtts://: the PEM certificate of the authority that signed the broker's.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// For a broker that asks for client certificates: this client's PEM certificate.
    #[arg(long, requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The broker at `url`, with these TLS files.
    pub fn broker(&self, url: &str) -> Result<vigil_mqtt::Broker> {
        let client = self.client_cert.as_deref().zip(self.client_key.as_deref());
        let mut broker = vigil_mqtt::Broker::parse(url)?.with_tls(self.ca_file.as_deref(), client)?;
        if let Some(user) = &self.username {
            let Ok(password) = std::env::var("VIGIL_MQTT_PASSWORD") else {
                anyhow::bail!(
                    "--username {user} needs its password in the environment variable VIGIL_MQTT_PASSWORD"
                );
            };
            broker.credentials = Some((user.clone(), password));
        }
        Ok(broker)
    }
}
