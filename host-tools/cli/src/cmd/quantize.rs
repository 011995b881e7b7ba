//! `vigil quantize`: static int8 post-training quantisation.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use vigil_runtime::model::VigilModel;
use vigil_runtime::scorer::WindowScorer;
use vigil_train::manifest::{windows_for, LabelledWindows, Manifest};
use vigil_train::quantize::{calibration_tensor, quantize, QuantizeOptions, RangeMethod};

/// Quantise a model to int8 for tract's integer kernels (QLinearConv: int8 weights with
/// one scale per output channel, u8 activations with ranges calibrated on a manifest's
/// recordings), then compare it with the f32 model on held-out windows: accuracy of
/// each, agreement of their answers, both file sizes and tract's time per window.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The f32 ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Manifest whose train recordings (all, when it has no splits) calibrate the ranges;
    /// its test recordings (else val) are the held-out comparison.
    #[arg(long)]
    calib: PathBuf,
    /// How activation ranges are taken.
    #[arg(long, value_enum, default_value_t = RangeMethod::Mse)]
    method: RangeMethod,
    /// Leading convolutions kept in f32 (the first one sees the raw, impulsive signal).
    #[arg(long, default_value_t = 1)]
    float_convs: usize,
    /// Quantise the channels as the model stores them, without first equalising their
    /// ranges across consecutive convolutions.
    #[arg(long)]
    no_equalise: bool,
    /// Round each weight to its nearest int8 step, without compensating the rounding
    /// errors of a row against each other (GPTQ).
    #[arg(long)]
    plain_rounding: bool,
    /// Calibration windows at most (spread evenly over the calibration recordings).
    #[arg(long, default_value_t = 256)]
    windows: usize,
    /// Output ONNX file.
    #[arg(long, short)]
    output: PathBuf,
}

/// What a model makes of held-out windows through the runtime's path.
struct Answers {
    /// Most probable class of each window.
    classes: Vec<usize>,
    /// Embedding of each window.
    embeddings: Vec<Vec<f32>>,
    /// Microseconds per window.
    us: f64,
}

fn answers(model: VigilModel, set: &LabelledWindows) -> Result<Answers> {
    let mut scorer = WindowScorer::new(model, 0)?;
    let started = Instant::now();
    let (mut classes, mut embeddings) = (Vec::new(), Vec::new());
    for window in &set.windows {
        let (embedding, logits) = scorer.embed_and_classify(window)?;
        classes.push(vigil_core::head::argmax(&logits).unwrap_or(0));
        embeddings.push(embedding);
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / set.len().max(1) as f64;
    Ok(Answers { classes, embeddings, us })
}

/// Root-mean-square difference of `b` from `a`, over the root-mean-square of `a`.
fn relative_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        diff += (f64::from(*x) - f64::from(*y)).powi(2);
        norm += f64::from(*x).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

impl QuantizeArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        anyhow::ensure!(self.windows > 0, "--windows must be at least 1");
        let (model, proto, f32_bytes) = vigil_runtime::builtin::load_model_and_proto(self.model.as_deref())?;
        let meta = model.metadata().clone();
        let manifest = Manifest::load(&self.calib)?;
        let has = |split: &str| manifest.recordings.iter().any(|r| r.split.as_deref() == Some(split));
        let classes = &meta.class_names;
        let calib_split = has("train").then_some("train");
        let calib = windows_for(&model, &manifest, calib_split, classes)?;
        let x = calibration_tensor(&meta, &calib.windows, self.windows)?;
        let options = QuantizeOptions {
            method: self.method,
            float_convs: self.float_convs,
            equalise: !self.no_equalise,
            compensate: !self.plain_rounding,
        };
        let q = quantize(&proto, &meta, &x, options)?;
        let encoded = vigil_runtime::onnx::encode_model(&q.proto);
        std::fs::write(&self.output, &encoded)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        println!(
            "quantised {} convolutions to int8 (QLinearConv, {} rounding), {} kept in f32, {} activations equalised, ranges from {} calibration windows ({:?})",
            q.convs,
            if options.compensate { "error-compensated" } else { "nearest" },
            self.float_convs,
            q.equalised,
            x.dims()[0],
            self.method
        );
        if q.matrices > 0 {
            println!(
                "stored {} constant matrices (dense layer, spectral transform) as int8, one scale per column; \
                 tract computes with them in f32 after loading",
                q.matrices
            );
        }
        let int8 = VigilModel::load(&self.output)
            .with_context(|| format!("tract cannot load {}", self.output.display()))?;
        let held_split = if has("test") {
            Some("test")
        } else if has("val") {
            Some("val")
        } else {
            None
        };
        let held = windows_for(&model, &manifest, held_split, classes)?;
        let full = answers(model, &held)?;
        let small = answers(int8, &held)?;
        let (f32_answers, int8_answers, f32_us, int8_us) = (&full.classes, &small.classes, full.us, small.us);
        let correct = |a: &[usize]| {
            a.iter().zip(&held.labels).filter(|(p, l)| p == l).count() as f64 / held.len() as f64
        };
        let agree =
            f32_answers.iter().zip(int8_answers).filter(|(a, b)| a == b).count() as f64 / held.len() as f64;
        let name = held_split
            .map_or("all (no held-out split in the manifest)".to_owned(), |s| format!("the {s} split"));
        println!("on {} windows of {name}:", held.len());
        println!(
            "  accuracy f32 {:.2}%, int8 {:.2}% ({:+.2} points)",
            100.0 * correct(f32_answers),
            100.0 * correct(int8_answers),
            100.0 * (correct(int8_answers) - correct(f32_answers))
        );
        println!("  the int8 model gives the f32 model's answer on {:.2}% of windows", 100.0 * agree);
        println!(
            "  embeddings differ from f32 by {:.2}% (root-mean-square, relative)",
            100.0 * relative_difference(&full.embeddings, &small.embeddings)
        );
        println!("  tract, one thread, this machine: {f32_us:.0} µs per window f32, {int8_us:.0} µs int8");
        println!(
            "file: f32 {} bytes, int8 {} bytes ({:.1}%), written to {}",
            f32_bytes,
            encoded.len(),
            100.0 * encoded.len() as f64 / f32_bytes as f64,
            self.output.display()
        );
        Ok(())
    }
}
