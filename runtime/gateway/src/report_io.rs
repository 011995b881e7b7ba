//! Reports as files: JSON lines and CSV out, JSON lines back in.

use crate::error::{Result, RuntimeError};
use serde::Deserialize;
use std::path::Path;
use vigil_core::report::{AnomalyReport, BandContribution, ReportKind, SpectrumSnapshot};

/// The name of the report's class (`?` when `class_names` does not cover it).
pub fn class_name<'a>(report: &AnomalyReport, class_names: &'a [String]) -> &'a str {
    class_names.get(usize::from(report.class_index)).map_or("?", String::as_str)
}

/// The probability the head gave the report's class.
pub fn class_probability(report: &AnomalyReport) -> f32 {
    report.probabilities.get(usize::from(report.class_index)).copied().unwrap_or(0.0)
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
        "kind": report.kind,
        "stream_time_s": report.stream_time_s,
        "score": report.score,
        "threshold": report.threshold,
        "class": class_names.get(usize::from(report.class_index)),
        "class_index": report.class_index,
        "probabilities": report.probabilities.as_slice(),
        "model_hash": vigil_core::hex::encode(&report.model_hash),
        "head_version": report.head_version,
        "top_bands": report.top_bands.as_slice(),
        "spectrum": report.spectrum,
    })
}

/// What a JSON line holds (the inverse of [`report_json`]).
#[derive(Debug, Deserialize)]
struct ReportLine {
    sequence: u64,
    kind: ReportKind,
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
}

/// Reports read back from a JSON-lines file, with the class names they mention (by
/// index). Errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<(Vec<AnomalyReport>, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::io(format!("cannot read {}", path.display()), e))?;
    let mut reports = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), i + 1);
        let r: ReportLine = serde_json::from_str(line)
            .map_err(|e| RuntimeError::Reports(format!("{}: not a Vigil report ({e})", at())))?;
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
        let too_many = |what: &str| RuntimeError::Reports(format!("{}: too many {what}", at()));
        reports.push(AnomalyReport {
            sequence: r.sequence,
            kind: r.kind,
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
        });
    }
    Ok((reports, names))
}

/// The CSV header of [`csv_line`].
pub const CSV_HEADER: &str =
    "sequence,kind,stream_time_s,score,threshold,class,probabilities,head_version,top_bands";

/// One report as a CSV line (lists inside a cell are `;`-separated).
pub fn csv_line(r: &AnomalyReport, classes: &[String]) -> String {
    let class = class_name(r, classes);
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

/// Writes reports as JSON lines.
pub fn write_jsonl(path: &Path, reports: &[AnomalyReport], classes: &[String]) -> Result<()> {
    let text: String = reports.iter().map(|r| format!("{}\n", report_json(r, classes))).collect();
    std::fs::write(path, text).map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}

/// Writes reports as CSV.
pub fn write_csv(path: &Path, reports: &[AnomalyReport], classes: &[String]) -> Result<()> {
    let mut text = format!("{CSV_HEADER}\n");
    for r in reports {
        text.push_str(&csv_line(r, classes));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}
