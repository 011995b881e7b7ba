//! The dense head fitted on fixed embeddings or features, on inputs standardised over the
//! training rows, in one of two ways:
//!
//! - softmax regression, by full-batch gradient descent with momentum;
//! - class means: each class's mean standardised row, scored as a Gaussian with one
//!   variance shared by every class and input (the nearest class mean, with
//!   probabilities), the logits then scaled down to the likeliest factor on the training
//!   rows. No step fits the training rows more closely than their means, so it leans
//!   less on directions that only the labelled operating conditions show.
//!
//! Either way the standardisation is folded into the result, so the head runs on raw
//! inputs and is the same dense layer everywhere a head runs.

use crate::mean_var;
use crate::{FitError, Result};
use vigil_core::head::{argmax, HeadRef};

/// How [`fit`] makes the head (also `vigil fine-tune --head`'s values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HeadKind {
    /// Softmax regression trained by gradient descent.
    #[default]
    Softmax,
    /// The nearest class mean, with probabilities, computed in one pass; no steps.
    ClassMeans,
}

/// Options of [`fit`].
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// How the head is made.
    pub kind: HeadKind,
    /// Gradient steps over the whole set.
    pub steps: usize,
    /// Learning rate on standardised inputs.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub weight_decay: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { kind: HeadKind::Softmax, steps: 600, learning_rate: 0.5, weight_decay: 1e-3 }
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
/// step and the head as it stands (standardisation folded in) after each step (once, as
/// step 0, for [`HeadKind::ClassMeans`]).
pub fn fit<R: AsRef<[f32]>>(
    rows: &[R],
    labels: &[usize],
    classes: usize,
    options: TrainOptions,
    mut on_step: impl FnMut(usize, &LinearHead),
) -> Result<LinearHead> {
    if rows.is_empty() {
        return Err(FitError::NoWindows);
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(FitError::Label { label: bad, classes });
    }
    let dim = rows[0].as_ref().len();
    let (mean, var) = mean_var(rows);
    let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let x: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| r.as_ref().iter().zip(&mean).zip(&std).map(|((v, m), s)| (v - m) / s).collect())
        .collect();
    let mut head = LinearHead { weights: Vec::new(), bias: Vec::new(), dim, classes, losses: Vec::new() };
    if options.kind == HeadKind::ClassMeans {
        let (mut w, mut b) = class_means(&x, labels, classes);
        let scale = likeliest_scale(&x, labels, &w, &b)?;
        w.iter_mut().chain(b.iter_mut()).for_each(|v| *v *= scale);
        fold(&w, &b, &mean, &std, &mut head);
        head.losses.push(head.loss(rows, labels) as f32);
        on_step(0, &head);
        return Ok(head);
    }
    let n = x.len() as f32;
    let mut w = vec![0.0f32; classes * dim];
    let mut b = vec![0.0f32; classes];
    let (mut vw, mut vb) = (vec![0.0f32; w.len()], vec![0.0f32; classes]);
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

/// Weights and biases over standardised rows `x` that score each class as a Gaussian
/// around its mean row with the pooled within-class variance `v` (averaged over the
/// inputs): logit_k = (c_k . x - |c_k|^2 / 2) / v, which orders classes as the distance to
/// their means does. A class without rows gets a bias no row can reach.
fn class_means(x: &[Vec<f32>], labels: &[usize], classes: usize) -> (Vec<f32>, Vec<f32>) {
    let dim = x.first().map_or(0, Vec::len);
    let mut centre = vec![0.0f64; classes * dim];
    let mut count = vec![0usize; classes];
    for (row, &label) in x.iter().zip(labels) {
        count[label] += 1;
        for (c, v) in centre[label * dim..(label + 1) * dim].iter_mut().zip(row) {
            *c += f64::from(*v);
        }
    }
    for (class, &n) in count.iter().enumerate() {
        centre[class * dim..(class + 1) * dim].iter_mut().for_each(|c| *c /= n.max(1) as f64);
    }
    let mut spread = 0.0f64;
    for (row, &label) in x.iter().zip(labels) {
        let c = &centre[label * dim..(label + 1) * dim];
        spread += row.iter().zip(c).map(|(v, c)| (f64::from(*v) - c).powi(2)).sum::<f64>();
    }
    // Degrees of freedom: one mean per class present is spent.
    let present = count.iter().filter(|&&n| n > 0).count();
    let dof = (x.len().saturating_sub(present) * dim) as f64;
    let variance = if dof > 0.0 && spread > 0.0 { (spread / dof).max(1e-3) } else { 1.0 };
    let mut w = vec![0.0f32; classes * dim];
    let mut b = vec![-1e9f32; classes];
    for (class, &n) in count.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let c = &centre[class * dim..(class + 1) * dim];
        for (wj, cj) in w[class * dim..(class + 1) * dim].iter_mut().zip(c) {
            *wj = (cj / variance) as f32;
        }
        b[class] = (-c.iter().map(|v| v * v).sum::<f64>() / (2.0 * variance)) as f32;
    }
    (w, b)
}

/// The factor in (0, 1] on the logits of `w` and `b` over rows `x` that gives the
/// labels the highest likelihood, from a grid of 81 factors evenly spaced in log from
/// 1e-4 to 1. The shared variance of [`class_means`] puts the logits in the hundreds on
/// well-separated embeddings, so every window's most probable class would have a
/// probability of 1; the factor keeps the order of the classes and makes their
/// probabilities say how often the head is right on its own training rows.
fn likeliest_scale(x: &[Vec<f32>], labels: &[usize], w: &[f32], b: &[f32]) -> Result<f32> {
    let dim = x.first().map_or(0, Vec::len);
    let head = HeadRef::new(w, b, dim, b.len())?;
    let mut out = vec![0.0f32; b.len()];
    let logits = x
        .iter()
        .map(|row| {
            head.logits(row, &mut out)?;
            Ok(out.iter().map(|&v| f64::from(v)).collect())
        })
        .collect::<Result<Vec<Vec<f64>>>>()?;
    let loss = |scale: f64| -> f64 {
        let mut sum = 0.0;
        for (l, &label) in logits.iter().zip(labels) {
            let top = l.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v * scale));
            let norm: f64 = l.iter().map(|v| (v * scale - top).exp()).sum();
            sum += top + norm.ln() - l[label] * scale;
        }
        sum
    };
    let (mut best, mut best_loss) = (1.0, f64::INFINITY);
    for step in 0..=80 {
        let scale = 10f64.powf(-4.0 + f64::from(step) / 20.0);
        let l = loss(scale);
        if l < best_loss {
            (best, best_loss) = (scale, l);
        }
    }
    Ok(best as f32)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows around `centres` (one per class, `per` rows each) with unit noise on every input.
    fn clusters(centres: &[Vec<f32>], per: usize, rng: &mut ChaCha8Rng) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (class, centre) in centres.iter().enumerate() {
            for _ in 0..per {
                rows.push(centre.iter().map(|c| c + rng.gen_range(-1.0f32..1.0)).collect());
                labels.push(class);
            }
        }
        (rows, labels)
    }

    fn nearest_mean(rows: &[Vec<f32>], labels: &[usize], classes: usize, row: &[f32]) -> usize {
        let z = |r: &[f32]| standardised(rows, r);
        let mut best = (f32::INFINITY, 0);
        for class in 0..classes {
            let members: Vec<Vec<f32>> =
                rows.iter().zip(labels).filter(|(_, &l)| l == class).map(|(r, _)| z(r)).collect();
            let (centre, _) = mean_var(&members);
            let d: f32 = z(row).iter().zip(&centre).map(|(a, b)| (a - b).powi(2)).sum();
            if d < best.0 {
                best = (d, class);
            }
        }
        best.1
    }

    #[test]
    fn the_class_means_head_picks_the_nearest_standardised_class_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let centres = vec![vec![0.0, 0.0, 5.0], vec![3.0, 0.0, 5.0], vec![0.0, 3.0, 20.0]];
        let (rows, labels) = clusters(&centres, 10, &mut rng);
        let options = TrainOptions { kind: HeadKind::ClassMeans, ..TrainOptions::default() };
        let mut steps = 0;
        let head = fit(&rows, &labels, 4, options, |_, _| steps += 1).unwrap();
        assert_eq!(steps, 1);
        assert!(head.accuracy(&rows, &labels) > 0.95, "{}", head.accuracy(&rows, &labels));
        // Anywhere in the plane, the same answer as the distance to the class means.
        let mut disagree = 0;
        for _ in 0..2000 {
            let row: Vec<f32> =
                (0..3).map(|j| rng.gen_range(-2.0f32..4.0) + if j == 2 { 10.0 } else { 0.0 }).collect();
            disagree += usize::from(head.predict(&row) != nearest_mean(&rows, &labels, 3, &row));
        }
        assert_eq!(disagree, 0);
        // Class 3 has no rows: never answered, and its probability stays negligible.
        assert!(rows.iter().all(|r| head.predict(r) != 3));
        let loss = head.loss(&rows, &labels);
        assert!(loss.is_finite() && loss < 0.5, "{loss}");
    }

    #[test]
    fn the_class_means_probabilities_are_not_certain_where_classes_overlap() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Two classes 1.5 apart on 20 inputs with unit noise: the nearest mean is right
        // most of the time, not always.
        let centres = vec![vec![0.0; 20], vec![0.35; 20]];
        let (rows, labels) = clusters(&centres, 40, &mut rng);
        let options = TrainOptions { kind: HeadKind::ClassMeans, ..TrainOptions::default() };
        let head = fit(&rows, &labels, 2, options, |_, _| {}).unwrap();
        let accuracy = head.accuracy(&rows, &labels);
        assert!(accuracy > 0.8 && accuracy < 1.0, "{accuracy}");
        let mut top = 0.0;
        for row in &rows {
            let mut p = vec![0.0; 2];
            HeadRef::new(&head.weights, &head.bias, 20, 2).unwrap().logits(row, &mut p).unwrap();
            vigil_core::head::softmax_in_place(&mut p);
            top += f64::from(p[0].max(p[1])) / rows.len() as f64;
        }
        // The mean top probability follows the accuracy rather than sitting at 1.
        assert!((top - accuracy).abs() < 0.1, "mean top probability {top}, accuracy {accuracy}");
        // The fitted factor beats the Gaussian's own scale on the training rows.
        let x: Vec<Vec<f32>> = rows.iter().map(|r| standardised(&rows, r)).collect();
        let (w, b) = class_means(&x, &labels, 2);
        let scale = likeliest_scale(&x, &labels, &w, &b).unwrap();
        assert!(scale < 1.0, "{scale}");
        let gaussian = LinearHead { weights: w, bias: b, dim: 20, classes: 2, losses: Vec::new() };
        let (fitted, unscaled) = (head.loss(&rows, &labels), gaussian.loss(&x, &labels));
        assert!(fitted < unscaled, "{fitted} against {unscaled}");
    }

    /// `row` standardised over `rows`, as [`fit`] standardises its inputs.
    fn standardised(rows: &[Vec<f32>], row: &[f32]) -> Vec<f32> {
        let (mean, var) = mean_var(rows);
        row.iter().zip(&mean).zip(&var).map(|((v, m), s)| (v - m) / s.sqrt().max(1e-6)).collect()
    }

    #[test]
    fn the_class_means_head_stays_finite_on_constant_inputs_and_single_rows() {
        let rows = vec![vec![1.0, 2.0], vec![1.0, 4.0]];
        let options = TrainOptions { kind: HeadKind::ClassMeans, ..TrainOptions::default() };
        let head = fit(&rows, &[0, 1], 2, options, |_, _| {}).unwrap();
        assert!(head.weights.iter().chain(&head.bias).all(|v| v.is_finite()));
        assert_eq!(head.predict(&rows[0]), 0);
        assert_eq!(head.predict(&rows[1]), 1);
    }
}
