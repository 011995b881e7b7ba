//! `vigil transfer-eval`: the transfer-learning comparison on a labelled dataset.

use anyhow::Result;
use clap::Args;
use indicatif::ProgressBar;
use std::path::PathBuf;
use vigil_core::bearing::BearingGeometry;
use vigil_train::manifest::{windows_for, Manifest};
use vigil_train::transfer_eval::{self, MethodResult};

/// Compare, on the test recordings of a manifest, with N labelled windows per class drawn
/// from its training recordings: the textbook envelope-spectrum classifier, the shipped
/// model zero-shot, the shipped model with its head fine-tuned, and the DSP feature
/// backbone with a trained head. Prints a Markdown table (mean and range over seeds).
/// `scripts/experiment-mfpt` runs it on the MFPT bearing data.
#[derive(Debug, Args)]
pub struct TransferEvalArgs {
    /// Dataset manifest with train and test recordings, each with `speed` (shaft Hz).
    #[arg(long)]
    data: PathBuf,
    /// The monitored bearing: a designation (6205, 6203, NICE, ZA-2115, UER204) or
    /// N,ELEMENT,PITCH[,ANGLE_DEG] (MFPT's: NICE, that is 8,0.235,1.245) [default: the
    /// manifest's `bearing`].
    #[arg(long, value_parser = super::parse_bearing)]
    bearing: Option<BearingGeometry>,
    /// The dataset's classes, comma-separated, `normal` first.
    #[arg(long, value_delimiter = ',', default_value = "normal,outer_race,inner_race")]
    classes: Vec<String>,
    /// Labelled windows per class to compare at; 0 gives the rows that need no label
    /// (the envelope rule and the zero-shot model) in seconds.
    #[arg(long, value_delimiter = ',', default_value = "5,10,50")]
    shots: Vec<usize>,
    /// Draws of the labelled windows per N.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
}

impl TransferEvalArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        anyhow::ensure!(
            self.seeds > 0 && !self.shots.is_empty(),
            "--seeds and --shots must not be empty or zero"
        );
        let (model, proto, _) = vigil_runtime::builtin::load_model_and_proto(self.model.as_deref())?;
        let manifest = Manifest::load(&self.data)?;
        let bearing = match self.bearing {
            Some(b) => b,
            None => manifest.one_bearing()?,
        };
        let train = windows_for(&model, &manifest, Some("train"), &self.classes)?;
        let test = windows_for(&model, &manifest, Some("test"), &self.classes)?;
        let pb = ProgressBar::new((train.len() + test.len()) as u64).with_message("backbone (tract)");
        let results = transfer_eval::run(
            &model,
            &proto,
            &manifest,
            &self.classes,
            &train,
            &test,
            &bearing,
            &self.shots,
            self.seeds,
            || pb.inc(1),
        )?;
        pb.finish_and_clear();
        let draws = if self.shots.iter().all(|&n| n == 0) {
            "no labelled window".to_string()
        } else {
            format!("mean (min-max) over {} draws of the labelled windows", self.seeds)
        };
        println!(
            "{}: {} training and {} test windows; accuracy on the test recordings, {draws}\n",
            self.data.display(),
            train.len(),
            test.len(),
        );
        print!("{}", table(&results));
        Ok(())
    }
}

/// The results as a Markdown table, one column per N.
pub fn table(results: &[MethodResult]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let shots: Vec<usize> = results.first().map_or(Vec::new(), |r| r.accuracy.iter().map(|a| a.0).collect());
    let head: Vec<String> = shots.iter().map(|n| format!("N = {n}")).collect();
    let _ = writeln!(out, "| method | {} |", head.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(shots.len()));
    for r in results {
        let cells: Vec<String> = r
            .accuracy
            .iter()
            .map(|(_, accs)| {
                if accs.is_empty() {
                    return "-".to_string();
                }
                let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
                let (lo, hi) = accs.iter().fold((f64::MAX, f64::MIN), |(l, h), &a| (l.min(a), h.max(a)));
                format!("{:.1}% ({:.1}-{:.1})", 100.0 * mean, 100.0 * lo, 100.0 * hi)
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", r.name, cells.join(" | "));
    }
    out
}
