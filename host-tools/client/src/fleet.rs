//! Fleet merge: federated averaging of the heads that many devices adapted.
//!
//! Each device's head snapshot carries its [`AdaptationStats`]; the merged head is the
//! average of the heads weighted by the labels each device learned from (equal weights
//! when no device learned from any). The prototype is pooled: the weighted mean of the
//! means, and the weighted mean of the variances plus the spread of the means, so the
//! merged prototype covers every device's normal state. The alarm policy is the first
//! device's with the largest threshold, so no device alarms more often than it did.

use crate::{ClientError, Result};
use vigil_core::adapt::AdaptationStats;
use vigil_core::update::{HeadParts, HeadUpdate};

/// Weighted average of equally long vectors; `weights` sum to more than zero.
fn weighted_mean<'a>(rows: impl Iterator<Item = (&'a [f32], f64)>, len: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; len];
    let mut total = 0.0;
    for (row, w) in rows {
        for (s, &x) in sum.iter_mut().zip(row) {
            *s += w * f64::from(x);
        }
        total += w;
    }
    sum.iter().map(|s| (s / total) as f32).collect()
}

/// The weight of each snapshot: its accepted labels, or 1 each when none learned any.
pub fn merge_weights(stats: &[AdaptationStats]) -> Vec<f64> {
    let labels: Vec<f64> = stats.iter().map(|s| f64::from(s.labels_accepted)).collect();
    if labels.iter().sum::<f64>() > 0.0 {
        labels
    } else {
        vec![1.0; stats.len()]
    }
}

/// Averages `(weights, bias)` heads with the given weights.
pub fn average_heads(heads: &[(Vec<f32>, Vec<f32>)], weights: &[f64]) -> (Vec<f32>, Vec<f32>) {
    let w_len = heads.first().map_or(0, |h| h.0.len());
    let b_len = heads.first().map_or(0, |h| h.1.len());
    let w = weighted_mean(heads.iter().zip(weights).map(|(h, &w)| (h.0.as_slice(), w)), w_len);
    let b = weighted_mean(heads.iter().zip(weights).map(|(h, &w)| (h.1.as_slice(), w)), b_len);
    (w, b)
}

/// Merges head snapshots of one model into version `version`.
pub fn merge(snapshots: &[(HeadUpdate, AdaptationStats)], version: u32) -> Result<HeadUpdate> {
    let Some((first, _)) = snapshots.first() else {
        return Err(ClientError::Merge("no snapshots to merge".into()));
    };
    for (head, _) in snapshots {
        head.validate()?;
        if head.model_hash != first.model_hash {
            return Err(ClientError::Merge(
                "snapshots of different models cannot be merged (model hashes differ)".into(),
            ));
        }
        if (head.inputs, head.classes) != (first.inputs, first.classes) {
            return Err(ClientError::Merge(format!(
                "snapshots of different shapes: {} x {} and {} x {}",
                first.inputs, first.classes, head.inputs, head.classes
            )));
        }
    }
    let stats: Vec<_> = snapshots.iter().map(|s| s.1).collect();
    let weights = merge_weights(&stats);
    let heads = snapshots
        .iter()
        .map(|(h, _)| {
            let mut w = vec![0.0; usize::from(h.inputs) * usize::from(h.classes)];
            h.weights_into(&mut w)?;
            Ok((w, h.bias.to_vec()))
        })
        .collect::<Result<Vec<_>>>()?;
    let (w, b) = average_heads(&heads, &weights);
    let dim = usize::from(first.inputs);
    let mean = weighted_mean(snapshots.iter().zip(&weights).map(|(s, &w)| (&s.0.prototype_mean[..], w)), dim);
    let spread: Vec<Vec<f32>> = snapshots
        .iter()
        .map(|(h, _)| {
            h.prototype_var
                .iter()
                .zip(&h.prototype_mean)
                .zip(&mean)
                .map(|((v, m), c)| v + (m - c) * (m - c))
                .collect()
        })
        .collect();
    let var = weighted_mean(spread.iter().zip(&weights).map(|(v, &w)| (v.as_slice(), w)), dim);
    let alarm = snapshots.iter().map(|s| s.0.alarm).fold(first.alarm, |best, a| {
        if a.threshold > best.threshold {
            a
        } else {
            best
        }
    });
    Ok(HeadUpdate::from_parts(HeadParts {
        model_hash: first.model_hash,
        version,
        weights: &w,
        bias: &b,
        prototype_mean: &mean,
        prototype_var: &var,
        alarm,
        int8: false,
    })?)
}
