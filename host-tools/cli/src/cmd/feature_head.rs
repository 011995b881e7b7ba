//! `vigil feature-head`: train the head microcontroller nodes run over DSP features.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use vigil_client::update_file::UpdateFile;
use vigil_core::bearing::BearingGeometry;
use vigil_core::features::{FeatureSpec, FEATURE_COUNT};
use vigil_core::hex;
use vigil_headfit::feature_head::{calibrated_update, scores, simulate_set, train, TrainOptions};
use vigil_sim::FaultKind;

/// Train a head over the DSP features of `vigil-core` (the firmware's backbone: band
/// energies, RMS, kurtosis, crest factor, envelope spectrum at the bearing's fault
/// frequencies) on labelled simulated recordings of one machine, calibrate its normal-state
/// prototype and alarm threshold, print held-out accuracy, and write it as an unsigned head
/// update (`.vup`) for devices watching that machine. Sign it with `vigil sign`.
#[derive(Debug, Args)]
pub struct FeatureHeadArgs {
    /// Output update file.
    #[arg(long, short)]
    output: PathBuf,
    /// Sample rate of the device's stream in Hz.
    #[arg(long, default_value_t = 16_000.0)]
    rate: f32,
    /// Shaft speed of the machine in Hz [default: the reference pump's].
    #[arg(long, default_value_t = 29.95)]
    shaft_hz: f32,
    /// Labelled training recordings per class (one second each).
    #[arg(long, default_value_t = 24)]
    recordings: usize,
    /// Version of the update.
    #[arg(long, default_value_t = 1)]
    version: u32,
    /// Quantise the weights to int8 (one scale per class).
    #[arg(long)]
    int8: bool,
    /// Random seed of the simulated recordings (held-out ones use seed + 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl FeatureHeadArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let spec = FeatureSpec {
            sample_rate_hz: self.rate,
            shaft_hz: self.shaft_hz,
            bearing: BearingGeometry::deep_groove_6205(),
        };
        if spec.validate().is_err() {
            bail!(
                "a {} Hz stream cannot carry the envelope band and fault frequencies of a shaft at {} Hz: \
                 raise --rate or check --shaft-hz",
                self.rate,
                self.shaft_hz
            );
        }
        if self.recordings == 0 {
            bail!("--recordings must be at least 1");
        }
        let train_set = simulate_set(&spec, self.recordings, 1.0, self.seed)?;
        let test_set = simulate_set(&spec, self.recordings.div_ceil(2), 1.0, self.seed + 1)?;
        let classes = FaultKind::ALL.len();
        let head = train(&train_set, classes, TrainOptions::default())?;
        let normal = FaultKind::Normal.index();
        let update = calibrated_update(&spec, &train_set, &head, normal, self.version, self.int8)?;
        let (mean, var, threshold) = (&update.prototype_mean, &update.prototype_var, update.alarm.threshold);

        println!(
            "trained on {} windows ({} per class of 1 s recordings), loss {:.3} -> {:.3}",
            train_set.rows.len(),
            self.recordings,
            head.losses.first().copied().unwrap_or(0.0),
            head.losses.last().copied().unwrap_or(0.0)
        );
        println!(
            "held-out accuracy {:.2}% over {} windows (training {:.2}%)",
            100.0 * head.accuracy(&test_set.rows, &test_set.labels),
            test_set.rows.len(),
            100.0 * head.accuracy(&train_set.rows, &train_set.labels)
        );
        println!(
            "confusion (rows true, columns predicted: {}):",
            FaultKind::ALL.map(FaultKind::name).join(", ")
        );
        for kind in FaultKind::ALL {
            let mut row = vec![0usize; classes];
            for (r, _) in test_set.rows.iter().zip(&test_set.labels).filter(|(_, &l)| l == kind.index()) {
                row[head.predict(r)] += 1;
            }
            println!("  {:<12}{}", kind.name(), row.iter().map(|n| format!("{n:>5}")).collect::<String>());
        }
        let held_out = scores(&test_set, mean, var, None)?;
        let above = |class: bool| {
            let picked: Vec<f32> = held_out
                .iter()
                .zip(&test_set.labels)
                .filter(|(_, &l)| (l == normal) == class)
                .map(|(s, _)| *s)
                .collect();
            100.0 * picked.iter().filter(|&&s| s > threshold).count() as f64 / picked.len().max(1) as f64
        };
        println!(
            "threshold {threshold:.2}: held-out windows above it: {:.2}% of normal, {:.2}% of faulty",
            above(true),
            above(false)
        );
        let file = UpdateFile::for_head(&update)?;
        file.write(&self.output)?;
        println!(
            "head version {} for feature backbone {} ({} x {FEATURE_COUNT}, {}): {} payload bytes, unsigned, in {}",
            self.version,
            &hex::encode(&update.model_hash)[..16],
            classes,
            if self.int8 { "int8" } else { "f32" },
            file.payload.len(),
            self.output.display()
        );
        Ok(())
    }
}
