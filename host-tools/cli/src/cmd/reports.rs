//! `vigil reports pull`: copies a device's stored reports.

use crate::report_html::ReportContext;
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use vigil_runtime::report_io::{csv_header, csv_line, csv_sourced_line, report_json, ReportSource};

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
    /// The sensor whose reports to pull, on a gateway that watches several (each has its
    /// own report sequence).
    #[command(flatten)]
    sensor: super::SensorArg,
    /// First report sequence number to pull.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Output file [default: standard output]. A file that already holds reports is not
    /// overwritten: pass --append to add to it or --force to replace it.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Add the pulled reports to the end of --output.
    #[arg(long, conflicts_with = "force")]
    append: bool,
    /// Replace --output even when it holds reports.
    #[arg(long)]
    force: bool,
    /// Output format [default: from the extension of --output, else jsonl].
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    /// Reports asked per request (smaller is more robust on a noisy line).
    #[arg(long, default_value_t = 16)]
    batch: u16,
    #[command(flatten)]
    outputs: super::report::ReportOutputs,
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
        let machine = self.outputs.machine()?;
        let existing = match &self.output {
            Some(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            None => 0,
        };
        if let (Some(path), true, false, false) = (&self.output, existing > 0, self.append, self.force) {
            anyhow::bail!(
                "{} already holds {existing} bytes of reports; pass --append to add to it or --force to \
                 replace it (pull --since the sequence after its last report to get only new ones)",
                path.display()
            );
        }
        let mut client = self.port.connect()?;
        let info = client.info()?;
        let classes = info.class_names.clone();
        let sensor = self.sensor.select(&mut client)?;
        let exports =
            self.outputs.html.is_some() || self.outputs.csv.is_some() || self.outputs.json.is_some();
        let mut out: Box<dyn Write> = match &self.output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(self.append)
                    .truncate(!self.append)
                    .open(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            )),
            None if exports => Box::new(std::io::sink()),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut pulled = Vec::new();
        // A sensor's reports say whose they are, in every output.
        let source = sensor.as_deref().map(ReportSource::sensor);
        if format == ReportFormat::Csv && !(self.append && existing > 0) {
            writeln!(out, "{}", csv_header(source.is_some()))?;
        }
        let mut count = 0u64;
        let mut failed = None;
        let next = client.pull_reports(self.since, self.batch, |r| {
            count += 1;
            let line = match (format, &source) {
                (ReportFormat::Jsonl, _) => {
                    let mut json = report_json(&r, &classes);
                    if let Some(source) = &source {
                        source.tag(&mut json);
                    }
                    json.to_string()
                }
                (ReportFormat::Csv, None) => csv_line(&r, &classes),
                (ReportFormat::Csv, Some(source)) => csv_sourced_line(&r, &classes, source),
            };
            if failed.is_none() {
                failed = writeln!(out, "{line}").err();
            }
            pulled.push(r);
        })?;
        if let Some(e) = failed {
            return Err(e).context("cannot write the reports");
        }
        out.flush()?;
        let device_next = client.status()?.next_report;
        eprintln!(
            "pulled {count} report(s); the device's next report is #{device_next}, pull --since {} for \
             new ones (retries: {})",
            next.min(device_next),
            client.stats.retries
        );
        if self.since > device_next {
            log::warn!(
                "--since {} is past the device's reports (its next is #{device_next}): nothing to pull",
                self.since
            );
        }
        if exports {
            let hash = &vigil_core::hex::encode(&info.model_hash)[..16];
            let ctx = ReportContext {
                title: match &sensor {
                    Some(s) => format!("Vigil report: {}, sensor {s}", info.device),
                    None => format!("Vigil report: {}", info.device),
                },
                device: [("device".to_owned(), info.device.clone())]
                    .into_iter()
                    .chain(sensor.iter().map(|s| ("sensor".to_owned(), s.clone())))
                    .chain([
                        ("software".into(), info.software.clone()),
                        ("port".into(), self.port.name().to_owned()),
                        ("model".into(), format!("{hash}... ({}-d embedding)", info.embedding_dim)),
                        ("head version".into(), info.head_version.to_string()),
                        ("classes".into(), classes.join(", ")),
                    ])
                    .collect(),
                class_names: classes,
                machine,
                machine_class: self.outputs.machine_class,
            };
            let sources = match &source {
                Some(source) => vec![source.clone(); pulled.len()],
                None => Vec::new(),
            };
            for path in self.outputs.write(&pulled, &sources, &ctx)? {
                eprintln!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}
