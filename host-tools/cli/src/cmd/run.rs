//! `vigil run`: runs a model over a sensor stream.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use vigil_runtime::report_io::{describe, report_json};
use vigil_runtime::sensors::run_sensors;
use vigil_runtime::stream::{
    peak_rss_bytes, run_stream, BaselineFile, CommissionFrom, Commissioning, StreamOptions,
};

/// Run a model over a sensor stream (file or standard input), printing alarms as they
/// happen and a summary at the end.
///
/// Windows that are not a measurement (NaN or infinite samples, a flat or stuck signal,
/// clipping, samples beyond --range-g) are skipped and reported as sensor faults, once per
/// episode with the reason; the run goes on.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Input file, or `-` for standard input.
    #[arg(long, short)]
    input: String,
    #[command(flatten)]
    stream: super::StreamInputArgs,
    /// Folder of the durable report store (created if missing).
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Print events and the summary as JSON lines.
    #[arg(long)]
    json: bool,
    /// Also print every window's anomaly score and class probabilities (JSON lines).
    #[arg(long)]
    trace: bool,
    /// Score each channel of a multi-channel input as a sensor of its own with the
    /// single-channel model: each with its own alarms, commissioning and, with --reports
    /// DIR, its own store in DIR/NAME. A CSV header names the sensors (`pump-de,motor`);
    /// otherwise they are `ch0`, `ch1`, ... The sensors are spread over the machine's cores.
    #[arg(long, conflicts_with = "trace")]
    sensor_per_channel: bool,
    /// Learn this machine's normal state from the first part of the stream (such as 30s
    /// or 10m), alarms disarmed meanwhile, then arm them with a threshold calibrated to
    /// --false-alarms-per-day: the commissioning of `vigil serve --commission`. The
    /// machine must be healthy while it runs.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION", conflicts_with = "baseline")]
    commission: Option<std::time::Duration>,
    /// Learn this machine's normal state from healthy recordings first (every window of
    /// them; repeat the option for several), then score the input armed. They are read
    /// with the input's --format and --channels; their rate from the file, else
    /// --baseline-rate.
    #[arg(long, value_name = "FILE")]
    baseline: Vec<String>,
    /// Sample rate of the --baseline recordings when the files do not say [default: --rate].
    #[arg(long, value_name = "HZ")]
    baseline_rate: Option<f64>,
    /// False alarms per day the commissioned threshold aims at (with --commission or
    /// --baseline).
    #[arg(long, default_value_t = 1.0, value_name = "N")]
    false_alarms_per_day: f32,
}

impl RunArgs {
    /// The commissioning the options ask for, if any.
    fn commissioning(&self, opts: &StreamOptions) -> Result<Option<Commissioning>> {
        if !(self.false_alarms_per_day.is_finite() && self.false_alarms_per_day > 0.0) {
            anyhow::bail!("--false-alarms-per-day must be a positive number, such as 1");
        }
        let from = match (&self.commission, self.baseline.is_empty()) {
            (Some(d), _) => CommissionFrom::Stream(*d),
            (None, false) => CommissionFrom::Baseline(
                self.baseline
                    .iter()
                    .map(|path| {
                        let format = self.stream.format_of(path);
                        let rate = self.baseline_rate.or(opts.rate);
                        BaselineFile { path: path.clone(), format, channels: self.stream.channels(), rate }
                    })
                    .collect(),
            ),
            (None, true) => return Ok(None),
        };
        Ok(Some(Commissioning { from, false_alarms_per_day: self.false_alarms_per_day }))
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        super::stdout_is_data(self.json);
        if self.sensor_per_channel {
            return self.run_sensors();
        }
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let class_names = model.metadata().class_names.clone();
        let (source, mut opts) = self.stream.open(&self.input)?;
        opts.commissioning = self.commissioning(&opts)?;
        let json = self.json;
        let trace = self.trace;
        let out = std::cell::RefCell::new(std::io::stdout().lock());
        let on_report = |_: &_, report: &_| {
            let mut out = out.borrow_mut();
            if json {
                writeln!(out, "{}", report_json(report, &class_names))?;
            } else {
                writeln!(out, "{}", describe(report, &class_names))?;
            }
            out.flush().context("writing to standard output")
        };
        let on_window = |o: &vigil_runtime::scorer::WindowOutcome| {
            if let (true, Some(s)) = (trace, &o.scored) {
                let line = serde_json::json!({
                    "window": o.index, "end_time_s": o.end_time_s, "score": s.anomaly,
                    "class_index": s.class_index, "probabilities": s.probabilities,
                });
                writeln!(out.borrow_mut(), "{line}")?;
            }
            Ok(())
        };
        let summary =
            run_stream::<anyhow::Error>(model, source, &opts, self.reports.as_deref(), on_report, on_window)?;
        let mut out = out.into_inner();
        if let (false, Some(c)) = (json, &summary.commissioned) {
            writeln!(
                out,
                "commissioned on {} healthy windows ({:.1} s): threshold {:.2} (the model's: {:.2}), \
                 calibrated to {} false alarm(s) per day",
                c.windows, c.seconds, c.threshold, c.model_threshold, self.false_alarms_per_day
            )?;
        }
        if json {
            let s = serde_json::json!({
                "summary": {
                    "windows": summary.windows, "alarms": summary.alarms,
                    "sensor_faults": summary.sensor_faults, "stream_seconds": summary.stream_seconds,
                    "wall_seconds": summary.wall_seconds, "realtime_factor": summary.realtime_factor(),
                    "peak_rss_bytes": peak_rss_bytes(),
                    "shaft_hz": summary.shaft.map(|s| s.hz),
                    "shaft_hz_confidence": summary.shaft.and_then(|s| s.confidence),
                    "commissioned": summary.commissioned.map(|c| serde_json::json!({
                        "windows": c.windows, "seconds": c.seconds, "threshold": c.threshold,
                        "model_threshold": c.model_threshold,
                        "false_alarms_per_day": self.false_alarms_per_day,
                    })),
                }
            });
            writeln!(out, "{s}")?;
        } else {
            writeln!(out, "{}", describe_shaft(summary.shaft))?;
            writeln!(
                out,
                "summary: {} windows scored over {:.1} s of signal, {} alarm(s), {} window(s) skipped as sensor faults; \
                 {:.2} s wall time, {:.0}x real time{}",
                summary.windows,
                summary.stream_seconds,
                summary.alarms,
                summary.sensor_faults,
                summary.wall_seconds,
                summary.realtime_factor(),
                peak_rss_bytes()
                    .map(|b| format!(", peak memory {:.1} MiB", b as f64 / 1048576.0))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }

    /// `--sensor-per-channel`: every channel a sensor of its own.
    fn run_sensors(self) -> Result<()> {
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let class_names = model.metadata().class_names.clone();
        let (source, mut opts) = self.stream.open(&self.input)?;
        opts.commissioning = self.commissioning(&opts)?;
        let json = self.json;
        let mut out = std::io::stdout().lock();
        let summaries = run_sensors::<anyhow::Error>(
            model,
            source,
            &opts,
            self.reports.as_deref(),
            |name, _, report| {
                if json {
                    let mut line = report_json(report, &class_names);
                    line["sensor"] = name.into();
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(out, "[{name}] {}", describe(report, &class_names))?;
                }
                out.flush().context("writing to standard output")
            },
        )?;
        let mut out = std::io::stdout().lock();
        let wall = summaries.first().map_or(0.0, |(_, s)| s.wall_seconds);
        let stream = summaries.first().map_or(0.0, |(_, s)| s.stream_seconds);
        for (name, s) in &summaries {
            if json {
                let line = serde_json::json!({ "summary": {
                    "sensor": name, "windows": s.windows, "alarms": s.alarms,
                    "sensor_faults": s.sensor_faults, "stream_seconds": s.stream_seconds,
                    "commissioned_threshold": s.commissioned.as_ref().map(|c| c.threshold),
                }});
                writeln!(out, "{line}")?;
            } else {
                let commissioned = s.commissioned.as_ref().map_or(String::new(), |c| {
                    format!("; commissioned on {} windows, threshold {:.2}", c.windows, c.threshold)
                });
                writeln!(
                    out,
                    "summary {name}: {} windows scored, {} alarm(s), {} window(s) skipped as sensor faults{commissioned}",
                    s.windows, s.alarms, s.sensor_faults
                )?;
            }
        }
        if !json {
            writeln!(
                out,
                "{} sensors over {stream:.1} s of signal in {wall:.2} s wall time ({:.0}x real time for all of them){}",
                summaries.len(),
                stream / wall.max(1e-9),
                peak_rss_bytes()
                    .map(|b| format!(", peak memory {:.1} MiB", b as f64 / 1048576.0))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// The summary's line on the shaft speed.
fn describe_shaft(shaft: Option<vigil_runtime::pipeline::ShaftSpeed>) -> String {
    match shaft {
        Some(s) => match s.confidence {
            None => format!("shaft speed: {:.2} Hz ({:.0} rpm), as given", s.hz, 60.0 * s.hz),
            Some(c) => format!(
                "shaft speed: {:.2} Hz ({:.0} rpm) read from the signal's last seconds, confidence {c:.2}{}",
                s.hz,
                60.0 * s.hz,
                if c < 0.2 { " (low: give --shaft-hz, or narrow --shaft-range)" } else { "" }
            ),
        },
        None => "shaft speed: not read from the signal (no shaft line stands out); give --shaft-hz".into(),
    }
}
