//! Reports as files: JSON lines and CSV out, JSON lines back in.

use crate::error::{Result, RuntimeError};
use serde::Deserialize;
use std::path::Path;
use vigil_core::report::{
    AnomalyReport, BandContribution, Finding, HealthStats, ReportKind, SpectrumSnapshot,
};

/// What the report found, in a table cell: the fault class's name, `no known pattern`,
/// the likeliest class of a cleared alarm, or `sensor: <reason>`.
pub fn finding_label(report: &AnomalyReport, class_names: &[String]) -> String {
    let name = |i: u8| class_names.get(usize::from(i)).map_or("?", String::as_str).to_string();
    match report.finding() {
        Finding::Fault { class, .. } => name(class),
        Finding::Unrecognised { .. } => "no known pattern".into(),
        Finding::Cleared => name(report.class_index),
        Finding::SensorFault(reason) => format!("sensor: {}", reason.map_or("unknown", |r| r.name())),
        Finding::Health(_) => "health".into(),
    }
}

/// The kind of a report as files name it: `AlarmRaised`, `AlarmCleared`, `SensorFault`
/// or `Health` (whose figures go in a `health` field of their own).
pub fn kind_name(kind: &ReportKind) -> &'static str {
    match kind {
        ReportKind::AlarmRaised => "AlarmRaised",
        ReportKind::AlarmCleared => "AlarmCleared",
        ReportKind::SensorFault => "SensorFault",
        ReportKind::Health(_) => "Health",
    }
}

/// The health figures of a health record.
pub fn health_of(report: &AnomalyReport) -> Option<&HealthStats> {
    match &report.kind {
        ReportKind::Health(stats) => Some(stats),
        _ => None,
    }
}

/// The probability the head gave the class an alarm names (none for other findings).
pub fn finding_probability(report: &AnomalyReport) -> Option<f32> {
    match report.finding() {
        Finding::Fault { probability, .. } => Some(probability),
        _ => None,
    }
}

/// The class name of the report's `class_index`, when that index is a class.
fn indexed_class<'a>(report: &AnomalyReport, class_names: &'a [String]) -> Option<&'a String> {
    match report.finding() {
        Finding::Fault { .. } | Finding::Cleared => class_names.get(usize::from(report.class_index)),
        Finding::Unrecognised { .. } | Finding::SensorFault(_) | Finding::Health(_) => None,
    }
}

/// One line describing a report, for people (the wording every Vigil device shares:
/// [`AnomalyReport::describe`]).
pub fn describe(report: &AnomalyReport, class_names: &[String]) -> String {
    report.describe(|i| class_names.get(usize::from(i)).map(String::as_str)).to_string()
}

/// The report's top bands as people read them: `3000-3500 Hz +17.5 dB, ...`.
pub fn bands_text(report: &AnomalyReport) -> String {
    let bands: Vec<String> = report
        .top_bands
        .iter()
        .map(|b| format!("{:.0}-{:.0} Hz {:+.1} dB", b.low_hz, b.high_hz, b.excess_db))
        .collect();
    bands.join(", ")
}

/// A report as a JSON object, with the class name and a hex model hash.
pub fn report_json(report: &AnomalyReport, class_names: &[String]) -> serde_json::Value {
    serde_json::json!({
        "sequence": report.sequence,
        "kind": kind_name(&report.kind),
        "stream_time_s": report.stream_time_s,
        "score": report.score,
        "threshold": report.threshold,
        "class": indexed_class(report, class_names),
        "class_index": report.class_index,
        "finding": finding_label(report, class_names),
        "probabilities": report.probabilities.as_slice(),
        "model_hash": vigil_core::hex::encode(&report.model_hash),
        "head_version": report.head_version,
        "top_bands": report.top_bands.as_slice(),
        "spectrum": report.spectrum,
        "health": health_of(report),
    })
}

/// What a JSON line holds (the inverse of [`report_json`]).
#[derive(Debug, Deserialize)]
struct ReportLine {
    sequence: u64,
    kind: String,
    stream_time_s: f64,
    score: f32,
    threshold: f32,
    class: Option<String>,
    class_index: u8,
    probabilities: Vec<f32>,
    model_hash: String,
    head_version: u32,
    top_bands: Vec<BandContribution>,
    #[serde(default)]
    spectrum: Option<SpectrumSnapshot>,
    #[serde(default)]
    health: Option<HealthStats>,
    /// The device's site and name, in reports collected from a broker.
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    device: Option<String>,
    /// The sensor, in reports of a gateway with several (`vigil run --sensor-per-channel`).
    #[serde(default)]
    sensor: Option<String>,
}

/// One device's or sensor's reports: its `site/device/sensor` and the reports, in file order.
pub type DeviceReports = (String, Vec<AnomalyReport>);

/// Where a report came from, as its JSON line names it: the site and device of a fleet
/// file (`vigil fleet reports`), the sensor of a gateway or run of several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportSource {
    /// The device's site.
    pub site: Option<String>,
    /// The device.
    pub device: Option<String>,
    /// The sensor.
    pub sensor: Option<String>,
}

impl ReportSource {
    /// A source that names only a sensor.
    pub fn sensor(name: &str) -> Self {
        ReportSource { sensor: Some(name.to_owned()), ..ReportSource::default() }
    }

    /// `site/device/sensor`, of the parts it names ("" for none).
    pub fn key(&self) -> String {
        let device = match (&self.site, &self.device) {
            (Some(site), Some(device)) => vec![site.as_str(), device.as_str()],
            (None, Some(device)) => vec![device.as_str()],
            _ => Vec::new(),
        };
        device.into_iter().chain(self.sensor.as_deref()).collect::<Vec<_>>().join("/")
    }

    /// Adds the parts it names to a report's JSON (`site`, `device`, `sensor`).
    pub fn tag(&self, json: &mut serde_json::Value) {
        for (key, value) in [("site", &self.site), ("device", &self.device), ("sensor", &self.sensor)] {
            if let Some(value) = value {
                json[key] = value.as_str().into();
            }
        }
    }
}

/// A report with where it came from.
pub type SourcedReport = (ReportSource, AnomalyReport);

/// Reports read back from a JSON-lines file of many devices (`vigil fleet reports`) or
/// sensors (`vigil run --sensor-per-channel --json`), grouped by `site/device/sensor` (the
/// parts the lines name) in the order each first appears (reports that name none go under
/// ""), with the class names they mention.
pub fn read_jsonl_by_device(path: &Path) -> Result<(Vec<DeviceReports>, Vec<String>)> {
    let (lines, names) = read_jsonl_sourced(path)?;
    Ok((group_by_source(&lines), names))
}

/// `reports` grouped by [`ReportSource::key`], in the order each first appears.
pub fn group_by_source(reports: &[SourcedReport]) -> Vec<DeviceReports> {
    let mut groups: Vec<DeviceReports> = Vec::new();
    for (source, report) in reports {
        let key = source.key();
        match groups.iter_mut().find(|(s, _)| *s == key) {
            Some((_, reports)) => reports.push(report.clone()),
            None => groups.push((key, vec![report.clone()])),
        }
    }
    groups
}

/// Reports read back from a JSON-lines file, with the class names they mention (by
/// index). Errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<(Vec<AnomalyReport>, Vec<String>)> {
    let (lines, names) = read_jsonl_sourced(path)?;
    Ok((lines.into_iter().map(|(_, r)| r).collect(), names))
}

/// Every report of a JSON-lines file with where it came from, and the class names they
/// mention. Errors name the file and line.
pub fn read_jsonl_sourced(path: &Path) -> Result<(Vec<SourcedReport>, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::io(format!("cannot read {}", path.display()), e))?;
    let mut reports = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), i + 1);
        let not_a_report =
            |e: serde_json::Error| RuntimeError::Reports(format!("{}: not a Vigil report ({e})", at()));
        let value: serde_json::Value = serde_json::from_str(line).map_err(not_a_report)?;
        // `vigil run --json` also prints its summary, and with --trace each window's score.
        if value.get("summary").is_some() || value.get("window").is_some() {
            continue;
        }
        let r: ReportLine = serde_json::from_value(value).map_err(not_a_report)?;
        let Some(model_hash) = vigil_core::hex::decode_32(&r.model_hash) else {
            return Err(RuntimeError::Reports(format!("{}: model_hash must be 64 hex digits", at())));
        };
        if let Some(name) = r.class {
            let k = usize::from(r.class_index);
            if names.len() <= k {
                names.resize(k + 1, String::new());
            }
            names[k] = name;
        }
        let kind = match (r.kind.as_str(), r.health) {
            ("AlarmRaised", _) => ReportKind::AlarmRaised,
            ("AlarmCleared", _) => ReportKind::AlarmCleared,
            ("SensorFault", _) => ReportKind::SensorFault,
            ("Health", Some(stats)) => ReportKind::Health(stats),
            ("Health", None) => {
                return Err(RuntimeError::Reports(format!(
                    "{}: a Health record without its health figures",
                    at()
                )))
            }
            (other, _) => {
                return Err(RuntimeError::Reports(format!(
                    "{}: unknown report kind {other:?} (AlarmRaised, AlarmCleared, SensorFault or Health)",
                    at()
                )))
            }
        };
        let too_many = |what: &str| RuntimeError::Reports(format!("{}: too many {what}", at()));
        reports.push((
            ReportSource { site: r.site, device: r.device, sensor: r.sensor },
            AnomalyReport {
                sequence: r.sequence,
                kind,
                stream_time_s: r.stream_time_s,
                score: r.score,
                threshold: r.threshold,
                class_index: r.class_index,
                probabilities: vigil_core::heapless::Vec::from_slice(&r.probabilities)
                    .map_err(|_| too_many("probabilities"))?,
                model_hash,
                head_version: r.head_version,
                top_bands: vigil_core::heapless::Vec::from_slice(&r.top_bands)
                    .map_err(|_| too_many("top bands"))?,
                spectrum: r.spectrum,
            },
        ));
    }
    Ok((reports, names))
}

/// The CSV header of [`csv_line`].
pub const CSV_HEADER: &str =
    "sequence,kind,stream_time_s,score,threshold,class,probabilities,head_version,top_bands,\
     rms_g,velocity_mm_s,peak_g,kurtosis,score_max,windows";

/// One report as a CSV line (lists inside a cell are `;`-separated).
pub fn csv_line(r: &AnomalyReport, classes: &[String]) -> String {
    let class = finding_label(r, classes);
    let probs: Vec<String> = r.probabilities.iter().map(|p| format!("{p:.4}")).collect();
    let bands: Vec<String> = r
        .top_bands
        .iter()
        .map(|b| format!("{:.0}-{:.0}Hz:{:+.1}dB", b.low_hz, b.high_hz, b.excess_db))
        .collect();
    // Health records fill the last columns; other reports leave them empty.
    let health = health_of(r).map_or(",,,,,".to_string(), |h| {
        format!(
            "{:.4},{:.3},{:.3},{:.2},{:.3},{}",
            h.rms_g, h.velocity_mm_s, h.peak_g, h.kurtosis, h.score_max, h.windows
        )
    });
    format!(
        "{},{},{:.3},{:.3},{:.3},{class},{},{},{},{health}",
        r.sequence,
        kind_name(&r.kind),
        r.stream_time_s,
        r.score,
        r.threshold,
        probs.join(";"),
        r.head_version,
        bands.join(";")
    )
}

/// The CSV header, with the `site,device,sensor` columns of [`csv_sourced_line`] when
/// `sourced`.
pub fn csv_header(sourced: bool) -> String {
    if sourced {
        format!("{CSV_HEADER},site,device,sensor")
    } else {
        CSV_HEADER.to_owned()
    }
}

/// [`csv_line`] followed by where the report came from (empty cells for what it does
/// not name).
pub fn csv_sourced_line(r: &AnomalyReport, classes: &[String], source: &ReportSource) -> String {
    let part = |p: &Option<String>| p.clone().unwrap_or_default();
    format!(
        "{},{},{},{}",
        csv_line(r, classes),
        part(&source.site),
        part(&source.device),
        part(&source.sensor)
    )
}

/// Writes reports as JSON lines; `sources`, when not empty, says where each came from
/// (one per report), and each line names it.
pub fn write_jsonl(
    path: &Path,
    reports: &[AnomalyReport],
    sources: &[ReportSource],
    classes: &[String],
) -> Result<()> {
    let text: String = reports
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut json = report_json(r, classes);
            if let Some(source) = sources.get(i) {
                source.tag(&mut json);
            }
            format!("{json}\n")
        })
        .collect();
    std::fs::write(path, text).map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}

/// Writes reports as CSV; `sources`, when any names a site, device or sensor, adds
/// `site,device,sensor` columns.
pub fn write_csv(
    path: &Path,
    reports: &[AnomalyReport],
    sources: &[ReportSource],
    classes: &[String],
) -> Result<()> {
    let sourced = sources.iter().any(|s| *s != ReportSource::default());
    let mut text = csv_header(sourced);
    text.push('\n');
    for (i, r) in reports.iter().enumerate() {
        if sourced {
            text.push_str(&csv_sourced_line(r, classes, sources.get(i).unwrap_or(&ReportSource::default())));
        } else {
            text.push_str(&csv_line(r, classes));
        }
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}
