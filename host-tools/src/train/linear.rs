//! Softmax regression: the dense head trained on fixed embeddings or features, by
//! full-batch gradient descent with momentum on inputs standardised over the training
//! rows; the standardisation is folded into the result, so the head runs on raw inputs.

use super::mean_var;
use anyhow::{bail, Result};
use vigil_core::head::{argmax, HeadRef};

/// Options of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Gradient steps over the whole set.
    pub steps: usize,
    /// Learning rate on standardised inputs.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub weight_decay: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { steps: 600, learning_rate: 0.5, weight_decay: 1e-3 }
    }
}

/// A trained dense head: row-major `classes x dim` weights over raw inputs.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// Weights (standardisation folded in).
    pub weights: Vec<f32>,
    /// Bias per class.
    pub bias: Vec<f32>,
    /// Input dimension.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
    /// Training loss after each step.
    pub losses: Vec<f32>,
}

impl LinearHead {
    /// Most probable class of `row` (0 when `row` has the wrong length).
    pub fn predict(&self, row: &[f32]) -> usize {
        let mut logits = vec![0.0; self.classes];
        let ok = HeadRef::new(&self.weights, &self.bias, self.dim, self.classes)
            .and_then(|h| h.logits(row, &mut logits));
        if ok.is_err() {
            return 0;
        }
        argmax(&logits).unwrap_or(0)
    }

    /// Mean cross-entropy of `rows` labelled `labels`.
    pub fn loss<R: AsRef<[f32]>>(&self, rows: &[R], labels: &[usize]) -> f64 {
        let mut logits = vec![0.0; self.classes];
        let mut sum = 0.0;
        for (row, &label) in rows.iter().zip(labels) {
            let ok = HeadRef::new(&self.weights, &self.bias, self.dim, self.classes)
                .and_then(|h| h.logits(row.as_ref(), &mut logits));
            if ok.is_err() {
                return f64::INFINITY;
            }
            vigil_core::head::softmax_in_place(&mut logits);
            sum -= f64::from(logits.get(label).copied().unwrap_or(0.0).max(1e-12)).ln();
        }
        sum / rows.len().max(1) as f64
    }

    /// Share of `rows` classed as `labels` says.
    pub fn accuracy<R: AsRef<[f32]>>(&self, rows: &[R], labels: &[usize]) -> f64 {
        let right = rows.iter().zip(labels).filter(|(r, &l)| self.predict(r.as_ref()) == l).count();
        right as f64 / rows.len().max(1) as f64
    }
}

/// Trains a `classes`-way head on `rows` labelled `labels`, calling `on_step` with the
/// step and the head as it stands (standardisation folded in) after each step.
pub fn fit<R: AsRef<[f32]>>(
    rows: &[R],
    labels: &[usize],
    classes: usize,
    options: TrainOptions,
    mut on_step: impl FnMut(usize, &LinearHead),
) -> Result<LinearHead> {
    if rows.is_empty() {
        bail!("no labelled windows to train on");
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        bail!("label {bad} is not one of the {classes} classes");
    }
    let dim = rows[0].as_ref().len();
    let (mean, var) = mean_var(rows);
    let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let x: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.as_ref().iter().zip(&mean).zip(&std).map(|((v, m), s)| (v - m) / s).collect())
        .collect();
    let n = x.len() as f32;
    let mut w = vec![0.0f32; classes * dim];
    let mut b = vec![0.0f32; classes];
    let (mut vw, mut vb) = (vec![0.0f32; w.len()], vec![0.0f32; classes]);
    let mut head = LinearHead { weights: Vec::new(), bias: Vec::new(), dim, classes, losses: Vec::new() };
    let mut p = vec![0.0f32; classes];
    for step in 0..options.steps {
        let (mut gw, mut gb) = (vec![0.0f32; w.len()], vec![0.0f32; classes]);
        let mut loss = 0.0;
        for (row, &label) in x.iter().zip(labels) {
            for (c, pc) in p.iter_mut().enumerate() {
                *pc = b[c] + vigil_core::head::dot(&w[c * dim..(c + 1) * dim], row);
            }
            vigil_core::head::softmax_in_place(&mut p);
            loss -= p[label].max(1e-12).ln();
            for c in 0..classes {
                let g = p[c] - if c == label { 1.0 } else { 0.0 };
                gb[c] += g;
                for (gw, v) in gw[c * dim..(c + 1) * dim].iter_mut().zip(row) {
                    *gw += g * v;
                }
            }
        }
        head.losses.push(loss / n);
        for ((wi, vi), gi) in w.iter_mut().zip(&mut vw).zip(&gw) {
            *vi = 0.9 * *vi + gi / n + options.weight_decay * *wi;
            *wi -= options.learning_rate * *vi;
        }
        for ((bi, vi), gi) in b.iter_mut().zip(&mut vb).zip(&gb) {
            *vi = 0.9 * *vi + gi / n;
            *bi -= options.learning_rate * *vi;
        }
        fold(&w, &b, &mean, &std, &mut head);
        on_step(step, &head);
    }
    Ok(head)
}

/// logits = W (x - mean) / std + b = (W / std) x + (b - sum W mean / std).
fn fold(w: &[f32], b: &[f32], mean: &[f32], std: &[f32], head: &mut LinearHead) {
    let dim = head.dim;
    head.weights.clear();
    head.bias.clear();
    for (c, &bc) in b.iter().enumerate() {
        let row = &w[c * dim..(c + 1) * dim];
        head.weights.extend(row.iter().zip(std).map(|(wj, s)| wj / s));
        head.bias.push(bc - row.iter().zip(mean).zip(std).map(|((wj, m), s)| wj * m / s).sum::<f32>());
    }
}
