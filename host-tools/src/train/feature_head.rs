//! A head over the DSP feature backbone of `vigil-core`, for devices that cannot run a
//! CNN: softmax regression on labelled windows, with the normal-state prototype and the
//! alarm threshold, packed as a head update.

use super::{mean_var, quantile};
use crate::sim::{FaultConfig, FaultKind, MachineConfig, Simulator};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_core::alarm::AlarmPolicy;
use vigil_core::features::{self, FeatureScratch, FeatureSpec, FEATURE_COUNT, FEATURE_HOP, FEATURE_WINDOW};
use vigil_core::head::{argmax, HeadRef, PrototypeRef};
use vigil_core::update::{quantise_rows, HeadUpdate, HeadWeights};

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
                .map_err(|e| anyhow::anyhow!("features of the window at sample {start}: {e}"))?;
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

/// Options of [`train`].
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Gradient steps over the whole set.
    pub steps: usize,
    /// Learning rate on standardised features.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub weight_decay: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { steps: 600, learning_rate: 0.5, weight_decay: 1e-3 }
    }
}

/// A trained feature head: row-major `classes x FEATURE_COUNT` weights over raw features.
#[derive(Debug, Clone)]
pub struct FeatureHead {
    /// Weights (standardisation folded in).
    pub weights: Vec<f32>,
    /// Bias per class.
    pub bias: Vec<f32>,
    /// Number of classes.
    pub classes: usize,
    /// Training loss after each step.
    pub losses: Vec<f32>,
}

impl FeatureHead {
    /// Most probable class of `row`.
    pub fn predict(&self, row: &[f32; FEATURE_COUNT]) -> usize {
        let mut logits = vec![0.0; self.classes];
        let ok = HeadRef::new(&self.weights, &self.bias, FEATURE_COUNT, self.classes)
            .and_then(|h| h.logits(row, &mut logits));
        if ok.is_err() {
            return 0;
        }
        argmax(&logits).unwrap_or(0)
    }

    /// Share of rows classed right.
    pub fn accuracy(&self, set: &LabelledFeatures) -> f64 {
        let right = set.rows.iter().zip(&set.labels).filter(|(r, &l)| self.predict(r) == l).count();
        right as f64 / set.rows.len().max(1) as f64
    }
}

/// Softmax regression by full-batch gradient descent with momentum, on features
/// standardised over `set`; the standardisation is folded into the result.
pub fn train(set: &LabelledFeatures, classes: usize, options: TrainOptions) -> Result<FeatureHead> {
    if set.rows.is_empty() {
        bail!("no labelled windows to train on");
    }
    if let Some(&bad) = set.labels.iter().find(|&&l| l >= classes) {
        bail!("label {bad} is not one of the {classes} classes");
    }
    let (mean, var) = mean_var(&set.rows);
    let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let x: Vec<[f32; FEATURE_COUNT]> =
        set.rows.iter().map(|r| std::array::from_fn(|j| (r[j] - mean[j]) / std[j])).collect();
    let n = x.len() as f32;
    let mut w = vec![0.0f32; classes * FEATURE_COUNT];
    let mut b = vec![0.0f32; classes];
    let (mut vw, mut vb) = (vec![0.0f32; w.len()], vec![0.0f32; classes]);
    let mut losses = Vec::with_capacity(options.steps);
    for _ in 0..options.steps {
        let (mut gw, mut gb) = (vec![0.0f32; w.len()], vec![0.0f32; classes]);
        let mut loss = 0.0;
        let mut p = vec![0.0f32; classes];
        for (row, &label) in x.iter().zip(&set.labels) {
            for (c, pc) in p.iter_mut().enumerate() {
                *pc = b[c]
                    + w[c * FEATURE_COUNT..(c + 1) * FEATURE_COUNT]
                        .iter()
                        .zip(row)
                        .map(|(a, b)| a * b)
                        .sum::<f32>();
            }
            vigil_core::head::softmax_in_place(&mut p);
            loss -= p[label].max(1e-12).ln();
            for c in 0..classes {
                let g = p[c] - if c == label { 1.0 } else { 0.0 };
                gb[c] += g;
                for (gw, v) in gw[c * FEATURE_COUNT..(c + 1) * FEATURE_COUNT].iter_mut().zip(row) {
                    *gw += g * v;
                }
            }
        }
        losses.push(loss / n);
        for ((wi, vi), gi) in w.iter_mut().zip(&mut vw).zip(&gw) {
            *vi = 0.9 * *vi + gi / n + options.weight_decay * *wi;
            *wi -= options.learning_rate * *vi;
        }
        for ((bi, vi), gi) in b.iter_mut().zip(&mut vb).zip(&gb) {
            *vi = 0.9 * *vi + gi / n;
            *bi -= options.learning_rate * *vi;
        }
    }
    // logits = W (x - mean) / std + b = (W / std) x + (b - sum W mean / std).
    let mut weights = w.clone();
    for c in 0..classes {
        for j in 0..FEATURE_COUNT {
            weights[c * FEATURE_COUNT + j] = w[c * FEATURE_COUNT + j] / std[j];
            b[c] -= w[c * FEATURE_COUNT + j] * mean[j] / std[j];
        }
    }
    Ok(FeatureHead { weights, bias: b, classes, losses })
}

/// The normal-state prototype: mean and variance of the rows labelled `normal`.
pub fn prototype(set: &LabelledFeatures, normal: usize) -> (Vec<f32>, Vec<f32>) {
    let rows: Vec<[f32; FEATURE_COUNT]> =
        set.rows.iter().zip(&set.labels).filter(|(_, &l)| l == normal).map(|(r, _)| *r).collect();
    mean_var(&rows)
}

/// Anomaly scores of the rows of `set` with label `class` (all rows for `None`).
pub fn scores(set: &LabelledFeatures, mean: &[f32], var: &[f32], class: Option<usize>) -> Result<Vec<f32>> {
    let proto = PrototypeRef::new(mean, var).map_err(|e| anyhow::anyhow!("prototype: {e}"))?;
    set.rows
        .iter()
        .zip(&set.labels)
        .filter(|(_, &l)| class.is_none_or(|c| c == l))
        .map(|(r, _)| proto.score(r).map_err(|e| anyhow::anyhow!("score: {e}")))
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
    let weights = if int8 {
        quantise_rows(&head.weights, FEATURE_COUNT).map_err(|e| anyhow::anyhow!("quantising: {e}"))?
    } else {
        HeadWeights::F32(head.weights.iter().copied().collect())
    };
    let update = HeadUpdate {
        model_hash: spec.model_hash(),
        version,
        inputs: FEATURE_COUNT as u16,
        classes: head.classes as u8,
        weights,
        bias: head.bias.iter().copied().collect(),
        prototype_mean: prototype.0.iter().copied().collect(),
        prototype_var: prototype.1.iter().copied().collect(),
        alarm,
    };
    update.validate().map_err(|e| anyhow::anyhow!("the trained head is not valid: {e}"))?;
    Ok(update)
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
        let accuracy = head.accuracy(&test_set);
        assert!(accuracy > 0.9, "held-out accuracy {accuracy}");
        assert!(train(&LabelledFeatures::default(), 4, TrainOptions::default()).is_err());
    }
}
