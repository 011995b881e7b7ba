//! `vigil reports pull`: copies a device's stored reports.

use crate::stream::report_json;
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

/// Work with a device's stored anomaly reports.
#[derive(Debug, Args)]
pub struct ReportsArgs {
    #[command(subcommand)]
    command: ReportsCommand,
}

#[derive(Debug, Subcommand)]
enum ReportsCommand {
    /// Pull stored reports over the serial port, each exactly once and in order.
    Pull(PullArgs),
}

/// Output format of pulled reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

#[derive(Debug, Args)]
struct PullArgs {
    #[command(flatten)]
    port: super::PortArgs,
    /// First report sequence number to pull.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Output file [default: standard output].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Output format [default: from the extension of --output, else jsonl].
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    /// Reports asked per request (smaller is more robust on a noisy line).
    #[arg(long, default_value_t = 16)]
    batch: u16,
}

impl ReportsArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self.command {
            ReportsCommand::Pull(a) => a.run(),
        }
    }
}

impl PullArgs {
    fn run(self) -> Result<()> {
        let format = self.format.unwrap_or(match self.output.as_ref().and_then(|p| p.extension()) {
            Some(e) if e == "csv" => ReportFormat::Csv,
            _ => ReportFormat::Jsonl,
        });
        let mut client = self.port.connect()?;
        let classes = client.info()?.class_names;
        let mut out: Box<dyn Write> = match &self.output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        if format == ReportFormat::Csv {
            writeln!(out, "{}", CSV_HEADER)?;
        }
        let mut count = 0u64;
        let mut failed = None;
        let next = client.pull_reports(self.since, self.batch, |r| {
            count += 1;
            let line = match format {
                ReportFormat::Jsonl => report_json(&r, &classes).to_string(),
                ReportFormat::Csv => csv_line(&r, &classes),
            };
            if failed.is_none() {
                failed = writeln!(out, "{line}").err();
            }
        })?;
        if let Some(e) = failed {
            return Err(e).context("cannot write the reports");
        }
        out.flush()?;
        eprintln!("pulled {count} report(s); next sequence {next} (retries: {})", client.stats.retries);
        Ok(())
    }
}

const CSV_HEADER: &str =
    "sequence,kind,stream_time_s,score,threshold,class,probabilities,head_version,top_bands";

fn csv_line(r: &vigil_core::report::AnomalyReport, classes: &[String]) -> String {
    let class = classes.get(usize::from(r.class_index)).map_or("?", String::as_str);
    let probs: Vec<String> = r.probabilities.iter().map(|p| format!("{p:.4}")).collect();
    let bands: Vec<String> = r
        .top_bands
        .iter()
        .map(|b| format!("{:.0}-{:.0}Hz:{:+.1}dB", b.low_hz, b.high_hz, b.excess_db))
        .collect();
    format!(
        "{},{:?},{:.3},{:.3},{:.3},{class},{},{},{}",
        r.sequence,
        r.kind,
        r.stream_time_s,
        r.score,
        r.threshold,
        probs.join(";"),
        r.head_version,
        bands.join(";")
    )
}
