//! `vigil report`: the technician's report from pulled reports.

use crate::report_html::{render, render_groups, Grouping, MachineClass, MachineFrequencies, ReportContext};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use vigil_core::bearing::BearingGeometry;
use vigil_runtime::report_io::{group_by_source, read_jsonl_sourced, write_csv, write_jsonl, ReportSource};

/// Turn pulled reports (JSON lines, from `vigil reports pull` or `vigil run --json`) into a
/// self-contained HTML report with spectra and fault-frequency markers, and/or CSV and JSON.
///
/// Reports of several sensors (`vigil run --sensor-per-channel --json`) make a page with
/// one part per sensor, the worst first.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Reports as JSON lines.
    #[arg(long)]
    from: PathBuf,
    #[command(flatten)]
    outputs: ReportOutputs,
}

/// Where reports go and how the HTML marks fault frequencies (shared with `reports pull`).
#[derive(Debug, Clone, Args, Default)]
pub struct ReportOutputs {
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the reports as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the reports as JSON lines here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Shaft speed in Hz, for the fault-frequency markers (with --bearing).
    #[arg(long, value_name = "HZ", value_parser = super::parse_shaft_hz, allow_negative_numbers = true)]
    pub shaft_hz: Option<f32>,
    /// The bearing, for the fault-frequency markers: a designation (6205, 6203, NICE,
    /// ZA-2115, UER204) or N,ELEMENT,PITCH[,ANGLE_DEG], such as 9,7.94,39.04 for a 6205.
    #[arg(long, value_parser = super::parse_bearing)]
    pub bearing: Option<BearingGeometry>,
    /// The machine's ISO 10816-1 class, for the vibration-severity zones of the health
    /// trend: I (small, up to 15 kW), II (medium, 15-75 kW), III (large, rigid
    /// foundation), IV (large, soft foundation).
    #[arg(long, value_enum, default_value_t = MachineClass::II)]
    pub machine_class: MachineClass,
}

impl ReportOutputs {
    /// The machine frequencies from --shaft-hz and --bearing.
    pub fn machine(&self) -> Result<Option<MachineFrequencies>> {
        match (self.shaft_hz, &self.bearing) {
            (None, None) => Ok(None),
            (Some(shaft_hz), Some(geometry)) => Ok(Some(MachineFrequencies {
                shaft_hz,
                faults: geometry.fault_orders().at_shaft_hz(shaft_hz),
            })),
            _ => bail!("fault-frequency markers need both --shaft-hz and --bearing"),
        }
    }

    /// Writes every requested output; returns the paths written. `sources`, when not
    /// empty, says where each report came from: the CSV and JSON name it.
    pub fn write(
        &self,
        reports: &[vigil_core::report::AnomalyReport],
        sources: &[ReportSource],
        ctx: &ReportContext,
    ) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        if let Some(path) = &self.html {
            let html = render(reports, ctx)?;
            std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path.clone());
        }
        if let Some(path) = &self.csv {
            write_csv(path, reports, sources, &ctx.class_names)?;
            written.push(path.clone());
        }
        if let Some(path) = &self.json {
            write_jsonl(path, reports, sources, &ctx.class_names)?;
            written.push(path.clone());
        }
        Ok(written)
    }
}

impl ReportArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let o = &self.outputs;
        if o.html.is_none() && o.csv.is_none() && o.json.is_none() {
            bail!("nothing to write: give --html, --csv and/or --json");
        }
        let machine = o.machine()?;
        let (lines, class_names) = read_jsonl_sourced(&self.from)?;
        let (sources, reports): (Vec<ReportSource>, Vec<_>) = lines.iter().cloned().unzip();
        let ctx = ReportContext {
            title: format!("Vigil report: {}", file_name(&self.from)),
            device: source_rows(&self.from, &reports),
            class_names,
            machine,
            machine_class: o.machine_class,
        };
        // Reports of several sensors (`vigil run --sensor-per-channel --json`): the HTML
        // page has one part per sensor, worst first; CSV and JSON keep the file's order
        // and name each report's sensor (or site and device).
        let mut rest = o.clone();
        if let Some(path) = &o.html {
            let groups = group_by_source(&lines);
            if groups.len() > 1 {
                let page = render_groups(&groups, Grouping::Sensors, &ctx)?;
                std::fs::write(path, page).with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
                rest.html = None;
            }
        }
        for path in rest.write(&reports, &sources, &ctx)? {
            println!("{}", path.display());
        }
        Ok(())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Device rows known from the reports alone.
pub fn source_rows(from: &Path, reports: &[vigil_core::report::AnomalyReport]) -> Vec<(String, String)> {
    let mut rows = vec![("source".to_owned(), from.display().to_string())];
    if let Some(r) = reports.first() {
        let hash = &vigil_core::hex::encode(&r.model_hash)[..16];
        rows.push(("model".into(), format!("{hash}...")));
    }
    let mut versions: Vec<u32> = reports.iter().map(|r| r.head_version).collect();
    versions.dedup();
    if !versions.is_empty() {
        rows.push((
            "head versions".into(),
            versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        ));
    }
    rows
}
