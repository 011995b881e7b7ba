//! The classification head and the normal-state prototype.
//!
//! The backbone turns a window into an embedding `e` of `D` floats. The head is a dense
//! `K x D` layer giving class logits; the prototype (mean and diagonal variance of the
//! embeddings of normal windows) gives the anomaly score. Both are views over borrowed
//! slices so the same code runs on a gateway (weights in a `Vec`) and in firmware (weights
//! in a flash slot).

use crate::error::check_len;
use crate::{CoreError, MAX_CLASSES};

/// Variance floor added before dividing, so a dimension that never moved on normal data
/// cannot turn a tiny deviation into an infinite score.
pub const VARIANCE_FLOOR: f32 = 1e-6;

/// A dense layer `logits = W e + b` with `W` stored row-major, one row per class.
#[derive(Debug, Clone, Copy)]
pub struct HeadRef<'a> {
    weights: &'a [f32],
    bias: &'a [f32],
    dim: usize,
    classes: usize,
}

impl<'a> HeadRef<'a> {
    /// Wraps `weights` (`classes * dim`, row-major) and `bias` (`classes`).
    pub fn new(weights: &'a [f32], bias: &'a [f32], dim: usize, classes: usize) -> Result<Self, CoreError> {
        if classes == 0 || classes > MAX_CLASSES {
            return Err(CoreError::ClassCount(classes));
        }
        check_len(classes * dim, weights.len())?;
        check_len(classes, bias.len())?;
        Ok(HeadRef { weights, bias, dim, classes })
    }

    /// A head of no classes over no inputs: every `logits` call on it fails with a
    /// length error (a stand-in where a checked head cannot be rebuilt, never a panic).
    pub fn empty() -> HeadRef<'static> {
        HeadRef { weights: &[], bias: &[], dim: 0, classes: 0 }
    }

    /// Embedding dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes `K`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The weights, row-major, one row of `D` per class.
    pub fn weights(&self) -> &'a [f32] {
        self.weights
    }

    /// The bias, one per class.
    pub fn bias(&self) -> &'a [f32] {
        self.bias
    }

    /// Writes the `K` logits of `embedding` into `out`.
    pub fn logits(&self, embedding: &[f32], out: &mut [f32]) -> Result<(), CoreError> {
        check_len(self.dim, embedding.len())?;
        check_len(self.classes, out.len())?;
        for (k, o) in out.iter_mut().enumerate() {
            let row = &self.weights[k * self.dim..(k + 1) * self.dim];
            *o = self.bias[k] + dot(row, embedding);
        }
        Ok(())
    }
}

/// Dot product of two equally long slices ([`crate::dsp::lane_sum`]: interleaved partial
/// sums where the processor has vector units; it makes a label step of on-site adaptation
/// 3x faster).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::dsp::lane_sum(a, b, |x, y| x * y)
}

/// Replaces logits by probabilities (numerically stable softmax) in place.
pub fn softmax_in_place(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    if sum > 0.0 {
        for v in values.iter_mut() {
            *v /= sum;
        }
    }
}

/// Index of the largest value (the first one on ties); `None` for an empty slice.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The normal-state prototype: per-dimension mean and variance of normal embeddings.
#[derive(Debug, Clone, Copy)]
pub struct PrototypeRef<'a> {
    mean: &'a [f32],
    var: &'a [f32],
}

impl<'a> PrototypeRef<'a> {
    /// Wraps a mean and a variance of the same length; variances must be finite and >= 0.
    pub fn new(mean: &'a [f32], var: &'a [f32]) -> Result<Self, CoreError> {
        check_len(mean.len(), var.len())?;
        if var.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(CoreError::NotPositive);
        }
        Ok(PrototypeRef { mean, var })
    }

    /// A prototype of dimension 0 (it scores only empty embeddings).
    pub fn empty() -> PrototypeRef<'static> {
        PrototypeRef { mean: &[], var: &[] }
    }

    /// Per-dimension mean.
    pub fn mean(&self) -> &'a [f32] {
        self.mean
    }

    /// Per-dimension variance.
    pub fn var(&self) -> &'a [f32] {
        self.var
    }

    /// Anomaly score: the mean squared standardised distance of `embedding` from the
    /// prototype (a diagonal Mahalanobis distance divided by `D`). Normal windows score
    /// around 1; the alarm threshold is calibrated on this scale.
    pub fn score(&self, embedding: &[f32]) -> Result<f32, CoreError> {
        check_len(self.mean.len(), embedding.len())?;
        if embedding.is_empty() {
            return Ok(0.0);
        }
        let sum: f32 = embedding
            .iter()
            .zip(self.mean)
            .zip(self.var)
            .map(|((e, m), v)| {
                let d = e - m;
                d * d / (v + VARIANCE_FLOOR)
            })
            .sum();
        Ok(sum / embedding.len() as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_are_rows_times_embedding_plus_bias() {
        let w = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let b = [0.5, -0.5];
        let head = HeadRef::new(&w, &b, 3, 2).unwrap();
        let mut out = [0.0; 2];
        head.logits(&[1.0, 1.0, 2.0], &mut out).unwrap();
        assert_eq!(out, [0.5 + 1.0 + 2.0 + 6.0, -0.5 - 1.0 + 0.5]);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert_eq!(
            HeadRef::new(&[0.0; 5], &[0.0; 2], 3, 2).unwrap_err(),
            CoreError::LengthMismatch { expected: 6, actual: 5 }
        );
        let head = HeadRef::new(&[0.0; 6], &[0.0; 2], 3, 2).unwrap();
        assert!(head.logits(&[0.0; 4], &mut [0.0; 2]).is_err());
        assert_eq!(HeadRef::new(&[], &[], 0, 0).unwrap_err(), CoreError::ClassCount(0));
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = [1000.0, 1001.0, 999.0];
        softmax_in_place(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&v), Some(1));
        assert!(v[1] > v[0] && v[0] > v[2]);
    }

    #[test]
    fn prototype_scores_one_at_one_standard_deviation() {
        let p = PrototypeRef::new(&[1.0, -1.0], &[4.0, 0.25]).unwrap();
        let s = p.score(&[3.0, -0.5]).unwrap();
        assert!((s - 1.0).abs() < 1e-4, "{s}");
        assert!(PrototypeRef::new(&[0.0], &[f32::NAN]).is_err());
    }
}
