//! `vigil simulate`: writes simulated bearing vibration with a labels file.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Output formats of `vigil simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimFormat {
    /// CSV with a `# sample_rate_hz=` comment and a header line.
    Csv,
    /// 32-bit float WAV.
    Wav,
    /// Raw little-endian f32, interleaved.
    F32le,
}

/// Simulate a machine's bearing vibration, healthy or with a fault that starts at
/// `--onset` and grows by `--growth` per second (run to failure).
///
/// Writes the signal and, beside it, `<output>.labels.json` with the machine, the fault,
/// its onset and the bearing's fault frequencies.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Output file.
    #[arg(short, long)]
    out: PathBuf,
    /// Output format [default: from the extension, else csv].
    #[arg(long, value_enum)]
    format: Option<SimFormat>,
    /// Seconds of signal.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Sample rate in Hz.
    #[arg(long, default_value_t = 16_000.0)]
    rate: f64,
    /// Accelerometer channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Fault kind.
    #[arg(long, value_enum, default_value_t = FaultKind::Normal)]
    fault: FaultKind,
    /// Fault severity at onset, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    severity: f64,
    /// Time the fault appears, in seconds.
    #[arg(long, default_value_t = 0.0)]
    onset: f64,
    /// Severity added per second after onset.
    #[arg(long, default_value_t = 0.0)]
    growth: f64,
    /// Shaft speed in Hz [default: the reference machine's, 29.95].
    #[arg(long)]
    shaft_hz: Option<f64>,
    /// Load fraction 0-1 [default: 0.7].
    #[arg(long)]
    load: Option<f64>,
    /// Sensor gain multiplier [default: 1].
    #[arg(long)]
    gain: Option<f64>,
    /// Broadband noise RMS in g [default: 0.08].
    #[arg(long)]
    noise: Option<f64>,
    /// Random seed (same seed, same signal).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl SimulateArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        if !(self.seconds > 0.0 && self.rate > 0.0 && self.channels > 0) {
            bail!("--seconds, --rate and --channels must be positive");
        }
        if !(0.0..=1.0).contains(&self.severity) {
            bail!("--severity must lie between 0 and 1, not {}", self.severity);
        }
        let mut machine = MachineConfig::reference(self.rate, self.channels);
        machine.shaft_hz = self.shaft_hz.unwrap_or(machine.shaft_hz);
        machine.load = self.load.unwrap_or(machine.load);
        machine.sensor_gain = self.gain.unwrap_or(machine.sensor_gain);
        machine.noise_rms = self.noise.unwrap_or(machine.noise_rms);
        let fault = FaultConfig {
            kind: self.fault,
            severity: self.severity,
            onset_s: self.onset,
            growth_per_s: self.growth,
        };
        let format = self.format.unwrap_or_else(|| match self.out.extension().and_then(|e| e.to_str()) {
            Some("wav") => SimFormat::Wav,
            Some("f32") | Some("f32le") | Some("raw") => SimFormat::F32le,
            _ => SimFormat::Csv,
        });
        let mut sim = Simulator::new(machine.clone(), fault, self.seed);
        write_signal(&mut sim, self.seconds, format, &self.out)?;
        let labels = labels_path(&self.out);
        let orders = machine.bearing.fault_orders().at_shaft_hz(machine.shaft_hz as f32);
        let doc = serde_json::json!({
            "signal": self.out.file_name().map(|n| n.to_string_lossy().to_string()),
            "sample_rate_hz": self.rate,
            "channels": self.channels,
            "seconds": self.seconds,
            "seed": self.seed,
            "label": if self.fault == FaultKind::Normal { "normal" } else { self.fault.name() },
            "fault": fault,
            "machine": machine,
            "fault_frequencies_hz": orders,
        });
        std::fs::write(&labels, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", labels.display()))?;
        eprintln!("wrote {} and {}", self.out.display(), labels.display());
        Ok(())
    }
}

/// `signal.csv` -> `signal.labels.json`.
pub fn labels_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    out.with_file_name(format!("{stem}.labels.json"))
}

/// Writes `seconds` of the simulator's signal to `out`.
pub fn write_signal(sim: &mut Simulator, seconds: f64, format: SimFormat, out: &Path) -> Result<()> {
    let m = sim.machine().clone();
    let frames = (seconds * m.sample_rate_hz).round() as usize;
    let ctx = || format!("writing {}", out.display());
    let chunk_frames = 16_384;
    let mut buf = vec![0.0f32; chunk_frames * m.channels];
    match format {
        SimFormat::Wav => {
            let spec = hound::WavSpec {
                channels: m.channels as u16,
                sample_rate: m.sample_rate_hz.round() as u32,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            };
            let mut w = hound::WavWriter::create(out, spec).with_context(ctx)?;
            let mut left = frames;
            while left > 0 {
                let n = left.min(chunk_frames);
                sim.fill(&mut buf[..n * m.channels]);
                for &v in &buf[..n * m.channels] {
                    w.write_sample(v).with_context(ctx)?;
                }
                left -= n;
            }
            w.finalize().with_context(ctx)?;
        }
        SimFormat::Csv | SimFormat::F32le => {
            let file = std::fs::File::create(out).with_context(ctx)?;
            let mut w = BufWriter::new(file);
            if format == SimFormat::Csv {
                writeln!(w, "# sample_rate_hz={}", m.sample_rate_hz).with_context(ctx)?;
                let header: Vec<String> = (0..m.channels).map(|c| format!("accel_{c}")).collect();
                writeln!(w, "{}", header.join(",")).with_context(ctx)?;
            }
            let mut left = frames;
            while left > 0 {
                let n = left.min(chunk_frames);
                sim.fill(&mut buf[..n * m.channels]);
                for frame in buf[..n * m.channels].chunks_exact(m.channels) {
                    if format == SimFormat::Csv {
                        let cells: Vec<String> = frame.iter().map(|v| format!("{v:.6}")).collect();
                        writeln!(w, "{}", cells.join(",")).with_context(ctx)?;
                    } else {
                        for v in frame {
                            w.write_all(&v.to_le_bytes()).with_context(ctx)?;
                        }
                    }
                }
                left -= n;
            }
            w.flush().with_context(ctx)?;
        }
    }
    Ok(())
}
