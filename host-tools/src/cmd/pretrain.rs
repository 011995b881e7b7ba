//! `vigil pretrain`: trains the reference model on the simulated source domain.

use crate::train::cnn::BackboneSpec;
use crate::train::{pretrain, PretrainConfig};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Train the reference 1D-CNN with candle on simulated bearings and export it to ONNX.
#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// Where to write the ONNX model.
    #[arg(short, long, default_value = "models/bearing-cnn-v1.onnx")]
    out: PathBuf,
    /// Seed of the whole recipe (data, initialisation, shuffling).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Training recordings (each a fresh machine and fault).
    #[arg(long, default_value_t = 1600)]
    recordings: usize,
    /// Epochs (the learning rate follows a cosine over them; the best validation epoch
    /// is kept).
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// AdamW learning rate (cosine-decayed over the epochs).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Window length in samples (at 16 kHz).
    #[arg(long, default_value_t = 2048)]
    window: usize,
    /// A tiny network and data set, for smoke tests (seconds, not minutes).
    #[arg(long)]
    tiny: bool,
}

impl PretrainArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let started = Instant::now();
        let mut cfg = PretrainConfig::reference(self.seed);
        cfg.train.recordings = self.recordings;
        cfg.epochs = self.epochs;
        cfg.lr = self.lr;
        cfg.window = self.window;
        cfg.hop = self.window / 2;
        cfg.batch = self.batch;
        if self.tiny {
            cfg.spec = BackboneSpec::tiny(cfg.channels);
            cfg.val.recordings = cfg.val.recordings.min(40);
            cfg.test.recordings = cfg.test.recordings.min(40);
        }
        eprintln!(
            "pretraining on {} simulated recordings x {} windows ({} samples at {} Hz)",
            cfg.train.recordings, cfg.train.windows_per_recording, cfg.window, cfg.sample_rate_hz
        );
        let outcome = pretrain(&cfg, |e| {
            eprintln!(
                "epoch {:>2}: loss {:.4}  train acc {:.2}%  val acc {:.2}%",
                e.epoch,
                e.loss,
                100.0 * e.train_accuracy,
                100.0 * e.val_accuracy
            );
        })?;
        if let Some(dir) = self.out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&self.out, &outcome.onnx)
            .with_context(|| format!("writing {}", self.out.display()))?;
        println!("wrote {} ({} bytes)", self.out.display(), outcome.onnx.len());
        println!("parity tract vs candle: max |logit difference| = {:.2e}", outcome.parity_max_abs);
        println!("held-out simulated test set (through tract):\n{}", outcome.test);
        println!("took {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }
}
