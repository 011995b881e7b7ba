//! `vigil evaluate`: how a model does on a labelled dataset.

use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vigil_core::head::argmax;
use vigil_runtime::scorer::WindowScorer;
use vigil_train::manifest::{windows_for, Manifest};
use vigil_train::roc_auc;

/// Evaluate a model on the labelled recordings of a manifest: accuracy, macro-F1, the
/// confusion matrix, accuracy per operating condition, the anomaly ROC-AUC (normal
/// against any fault) and the false- and missed-alarm rates of single windows at the
/// model's threshold.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Dataset manifest (TOML, one [[recording]] per labelled file; see docs/datasets.md).
    #[arg(long)]
    data: PathBuf,
    /// Evaluate only the recordings of this split (train, val or test) [default: all].
    #[arg(long)]
    split: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `vigil evaluate` measures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    /// Windows evaluated.
    pub windows: usize,
    /// Recordings they came from.
    pub recordings: usize,
    /// The model's classes.
    pub classes: Vec<String>,
    /// Fraction of windows whose most probable class is the label.
    pub accuracy: f64,
    /// Mean F1 over the classes that occur in the labels.
    pub macro_f1: f64,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<usize>>,
    /// Accuracy per operating condition.
    pub accuracy_by_condition: BTreeMap<String, f64>,
    /// Area under the ROC curve of the anomaly score, normal against any fault (`None`
    /// without both).
    pub anomaly_auc: Option<f64>,
    /// The model's alarm threshold.
    pub threshold: f32,
    /// Normal windows scoring above the threshold.
    pub false_alarm_rate: Option<f64>,
    /// Fault windows scoring at or below it.
    pub missed_alarm_rate: Option<f64>,
}

/// F1 of each class that occurs in the labels, averaged.
fn macro_f1(confusion: &[Vec<usize>]) -> f64 {
    let k = confusion.len();
    let mut sum = 0.0;
    let mut n = 0;
    for (c, row) in confusion.iter().enumerate() {
        let support: usize = row.iter().sum();
        if support == 0 {
            continue;
        }
        let tp = row[c] as f64;
        let predicted: usize = (0..k).map(|r| confusion[r][c]).sum();
        let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
        let recall = tp / support as f64;
        sum += if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        n += 1;
    }
    sum / n.max(1) as f64
}

impl EvaluateArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        super::stdout_is_data(self.json);
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let manifest = Manifest::load(&self.data)?;
        if let Some(s) = &self.split {
            anyhow::ensure!(
                ["train", "val", "test"].contains(&s.as_str()),
                "--split {s}: use train, val or test"
            );
        }
        let set = windows_for(&model, &manifest, self.split.as_deref(), &model.metadata().class_names)?;
        let meta = model.metadata().clone();
        let mut scorer = WindowScorer::new(model, 0)?;
        let k = meta.class_names.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let mut by_condition: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let (mut normal_scores, mut fault_scores) = (Vec::new(), Vec::new());
        for (i, window) in set.windows.iter().enumerate() {
            let (embedding, logits) = scorer.embed_and_classify(window)?;
            let predicted = argmax(&logits).unwrap_or(0);
            let truth = set.labels[i];
            confusion[truth][predicted] += 1;
            let entry = by_condition.entry(set.conditions[i].clone()).or_default();
            entry.0 += usize::from(predicted == truth);
            entry.1 += 1;
            let score = scorer.model().prototype().score(&embedding)?;
            if truth == meta.normal_class { &mut normal_scores } else { &mut fault_scores }.push(score);
        }
        let threshold = meta.alarm.threshold;
        let rate = |scores: &[f32], above: bool| {
            (!scores.is_empty()).then(|| {
                scores.iter().filter(|&&s| (s > threshold) == above).count() as f64 / scores.len() as f64
            })
        };
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let mut recordings = set.recordings.clone();
        recordings.dedup();
        let evaluation = Evaluation {
            windows: set.len(),
            recordings: recordings.len(),
            classes: meta.class_names.clone(),
            accuracy: correct as f64 / set.len() as f64,
            macro_f1: macro_f1(&confusion),
            accuracy_by_condition: by_condition
                .into_iter()
                .map(|(c, (h, n))| (c, h as f64 / n as f64))
                .collect(),
            anomaly_auc: (!normal_scores.is_empty() && !fault_scores.is_empty())
                .then(|| f64::from(roc_auc(&normal_scores, &fault_scores))),
            threshold,
            false_alarm_rate: rate(&normal_scores, true),
            missed_alarm_rate: rate(&fault_scores, false),
            confusion,
        };
        if self.json {
            println!("{}", serde_json::to_string(&evaluation)?);
        } else {
            print!("{}", evaluation.text(&self.data));
        }
        Ok(())
    }
}

impl Evaluation {
    /// The evaluation as text.
    pub fn text(&self, data: &std::path::Path) -> String {
        use std::fmt::Write;
        let pct = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.2}%", 100.0 * v));
        let mut out = String::new();
        let _ =
            writeln!(out, "{}: {} windows from {} recordings", data.display(), self.windows, self.recordings);
        let _ = writeln!(out, "accuracy: {:.2}%", 100.0 * self.accuracy);
        let _ = writeln!(out, "macro-F1: {:.4}", self.macro_f1);
        let _ = writeln!(
            out,
            "anomaly ROC-AUC (normal vs any fault): {}",
            self.anomaly_auc.map_or("n/a".into(), |a| format!("{a:.4}"))
        );
        let _ = writeln!(
            out,
            "at threshold {:.2}: false alarms {} of normal windows, missed {} of fault windows",
            self.threshold,
            pct(self.false_alarm_rate),
            pct(self.missed_alarm_rate)
        );
        let _ = writeln!(out, "accuracy by condition:");
        for (c, a) in &self.accuracy_by_condition {
            let _ = writeln!(out, "  {c}: {:.2}%", 100.0 * a);
        }
        let width = self.classes.iter().map(String::len).max().unwrap_or(6);
        let _ = writeln!(out, "confusion (rows true, columns predicted: {}):", self.classes.join(", "));
        for (name, row) in self.classes.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:>6}")).collect();
            let _ = writeln!(out, "  {name:<width$} {}", cells.join(""));
        }
        out
    }
}
