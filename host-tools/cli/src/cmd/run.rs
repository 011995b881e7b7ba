//! `vigil run`: runs a model over a sensor stream.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use vigil_runtime::report_io::{describe, report_json};
use vigil_runtime::stream::{peak_rss_bytes, run_stream};

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
}

impl RunArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let class_names = model.metadata().class_names.clone();
        let (source, opts) = self.stream.open(&self.input)?;
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
        if json {
            let s = serde_json::json!({
                "summary": {
                    "windows": summary.windows, "alarms": summary.alarms,
                    "sensor_faults": summary.sensor_faults, "stream_seconds": summary.stream_seconds,
                    "wall_seconds": summary.wall_seconds, "realtime_factor": summary.realtime_factor(),
                    "peak_rss_bytes": peak_rss_bytes(),
                }
            });
            writeln!(out, "{s}")?;
        } else {
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
}
