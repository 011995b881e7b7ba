//! A head over the DSP feature backbone of `vigil-core`, for devices that cannot run a
//! CNN: softmax regression on labelled windows, with the normal-state prototype and the
//! alarm threshold, packed as a head update.

use crate::{mean_var, quantile};
use crate::{FitError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_core::alarm::AlarmPolicy;
use vigil_core::features::{self, FeatureScratch, FeatureSpec, FEATURE_COUNT, FEATURE_HOP, FEATURE_WINDOW};
use vigil_core::head::PrototypeRef;
use vigil_core::update::{HeadParts, HeadUpdate};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Feature vectors with their class.
#[derive(Debug, Default, Clone)]
pub struct LabelledFeatures {
    /// One row of [`FEATURE_COUNT`] features per window.
    pub rows: Vec<[f32; FEATURE_COUNT]>,
    /// Class index per row.
    pub labels: Vec<usize>,
}

impl LabelledFeatures {
    /// Adds the features of every window (hop [`FEATURE_HOP`]) of a one-channel signal.
    pub fn add_signal(&mut self, spec: &FeatureSpec, signal: &[f32], class: usize) -> Result<()> {
        let mut scratch = FeatureScratch::default();
        let mut start = 0;
        while start + FEATURE_WINDOW <= signal.len() {
            let mut row = [0.0; FEATURE_COUNT];
            features::extract(spec, &signal[start..start + FEATURE_WINDOW], &mut scratch, &mut row)
                .map_err(|source| FitError::Features { start, source })?;
            self.rows.push(row);
            self.labels.push(class);
            start += FEATURE_HOP;
        }
        Ok(())
    }
}

/// Simulated recordings of the machine `spec` describes: `per_class` recordings of
/// `seconds` for each class, with severity, load, noise and sensor gain drawn at random.
pub fn simulate_set(
    spec: &FeatureSpec,
    per_class: usize,
    seconds: f64,
    seed: u64,
) -> Result<LabelledFeatures> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set = LabelledFeatures::default();
    for kind in FaultKind::ALL {
        for _ in 0..per_class {
            let mut machine = MachineConfig::reference(f64::from(spec.sample_rate_hz), 1);
            machine.shaft_hz = f64::from(spec.shaft_hz);
            machine.bearing = spec.bearing;
            machine.load = rng.gen_range(0.4..1.0);
            machine.noise_rms = rng.gen_range(0.04..0.12);
            machine.sensor_gain = rng.gen_range(0.8..1.25);
            machine.imbalance = rng.gen_range(0.05..0.4);
            let fault = match kind {
                FaultKind::Normal => FaultConfig::healthy(),
                _ => FaultConfig { kind, severity: rng.gen_range(0.3..1.0), onset_s: 0.0, growth_per_s: 0.0 },
            };
            let signal = Simulator::new(machine, fault, rng.gen()).generate(seconds);
            set.add_signal(spec, &signal, kind.index())?;
        }
    }
    Ok(set)
}

pub use crate::linear::{LinearHead as FeatureHead, TrainOptions};

/// Softmax regression on the feature rows of `set` (see [`crate::linear::fit`]).
pub fn train(set: &LabelledFeatures, classes: usize, options: TrainOptions) -> Result<FeatureHead> {
    crate::linear::fit(&set.rows, &set.labels, classes, options, |_, _| {})
}

/// The normal-state prototype: mean and variance of the rows labelled `normal`.
pub fn prototype(set: &LabelledFeatures, normal: usize) -> (Vec<f32>, Vec<f32>) {
    let rows: Vec<[f32; FEATURE_COUNT]> =
        set.rows.iter().zip(&set.labels).filter(|(_, &l)| l == normal).map(|(r, _)| *r).collect();
    mean_var(&rows)
}

/// Anomaly scores of the rows of `set` with label `class` (all rows for `None`).
pub fn scores(set: &LabelledFeatures, mean: &[f32], var: &[f32], class: Option<usize>) -> Result<Vec<f32>> {
    let proto = PrototypeRef::new(mean, var)?;
    set.rows
        .iter()
        .zip(&set.labels)
        .filter(|(_, &l)| class.is_none_or(|c| c == l))
        .map(|(r, _)| Ok(proto.score(r)?))
        .collect()
}

/// Calibrates a trained head on its training set and packs it for devices running
/// `spec`'s feature backbone: the prototype from the normal windows, a threshold of twice
/// the 99th percentile of their scores, and an alarm on 3 of 5 windows above it, clearing
/// once 5 in a row fall below 0.7 of it.
pub fn calibrated_update(
    spec: &FeatureSpec,
    set: &LabelledFeatures,
    head: &FeatureHead,
    normal: usize,
    version: u32,
    int8: bool,
) -> Result<HeadUpdate> {
    let (mean, var) = prototype(set, normal);
    let threshold = 2.0 * quantile(scores(set, &mean, &var, Some(normal))?, 0.99);
    let alarm = AlarmPolicy { threshold, raise_k: 3, window_n: 5, clear_ratio: 0.7 };
    head_update(spec, head, (&mean, &var), alarm, version, int8)
}

/// Packs a trained head as an update for devices running `spec`'s feature backbone.
fn head_update(
    spec: &FeatureSpec,
    head: &FeatureHead,
    prototype: (&[f32], &[f32]),
    alarm: AlarmPolicy,
    version: u32,
    int8: bool,
) -> Result<HeadUpdate> {
    Ok(HeadUpdate::from_parts(HeadParts {
        model_hash: spec.model_hash(),
        version,
        weights: &head.weights,
        bias: &head.bias,
        prototype_mean: prototype.0,
        prototype_var: prototype.1,
        alarm,
        int8,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::bearing::BearingGeometry;

    #[test]
    fn training_lowers_the_loss_and_separates_simulated_faults() {
        let spec = FeatureSpec {
            sample_rate_hz: 16_000.0,
            shaft_hz: 29.95,
            bearing: BearingGeometry::deep_groove_6205(),
        };
        let train_set = simulate_set(&spec, 4, 0.5, 1).unwrap();
        let test_set = simulate_set(&spec, 2, 0.5, 2).unwrap();
        let head = train(&train_set, 4, TrainOptions { steps: 200, ..TrainOptions::default() }).unwrap();
        assert!(head.losses[199] < 0.5 * head.losses[0], "loss {} -> {}", head.losses[0], head.losses[199]);
        let accuracy = head.accuracy(&test_set.rows, &test_set.labels);
        assert!(accuracy > 0.9, "held-out accuracy {accuracy}");
        assert!(train(&LabelledFeatures::default(), 4, TrainOptions::default()).is_err());
    }
}
