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

/// The largest head weight a snapshot may hold. No head Vigil trains comes near it: the
/// reference models' weights stay below 2, fine-tuned heads below 10 and class-means heads
/// below 100.
pub const MAX_PLAUSIBLE_WEIGHT: f32 = 1.0e4;
/// How many times larger than the fleet's smallest a snapshot's largest weight may be.
/// Adapting on site moves a head's weights by a few percent, not by this factor.
pub const MAX_WEIGHT_RATIO: f32 = 100.0;

/// The largest magnitude among a head's weights.
fn largest_weight(head: &HeadUpdate) -> Result<f32> {
    let mut w = vec![0.0; usize::from(head.inputs) * usize::from(head.classes)];
    head.weights_into(&mut w)?;
    Ok(w.iter().fold(0.0f32, |m, x| m.max(x.abs())))
}

/// Checks every snapshot before a merge: a valid head (finite values, consistent
/// dimensions), of the same model and shape as the first, with plausible weights (at most
/// [`MAX_PLAUSIBLE_WEIGHT`], and at most [`MAX_WEIGHT_RATIO`] times the fleet's smallest
/// largest weight). Returns, per snapshot, why it is not fit to merge (`None`: fit). The
/// snapshots' hashes and header fields are checked when their files are read
/// ([`crate::update_file::UpdateFile::check`]).
pub fn check_snapshots(heads: &[&HeadUpdate]) -> Vec<Option<String>> {
    let largest: Vec<Option<f32>> = heads.iter().map(|h| largest_weight(h).ok()).collect();
    let smallest = largest.iter().flatten().fold(f32::INFINITY, |m, &x| m.min(x));
    let first = heads.first();
    heads
        .iter()
        .zip(&largest)
        .map(|(head, largest)| {
            if let Err(e) = head.validate() {
                return Some(format!("not a valid head: {e}"));
            }
            let first = first?;
            if head.model_hash != first.model_hash {
                return Some(
                    "snapshots of different models cannot be merged: its model hash differs from the \
                     first snapshot's"
                        .into(),
                );
            }
            if (head.inputs, head.classes) != (first.inputs, first.classes) {
                return Some(format!(
                    "{} inputs x {} classes, the first snapshot {} x {}",
                    head.inputs, head.classes, first.inputs, first.classes
                ));
            }
            let largest = (*largest)?;
            if largest > MAX_PLAUSIBLE_WEIGHT {
                return Some(format!(
                    "a weight of magnitude {largest:.3e}, above the plausible {MAX_PLAUSIBLE_WEIGHT:.0e}"
                ));
            }
            if largest > MAX_WEIGHT_RATIO * smallest.max(f32::MIN_POSITIVE) {
                return Some(format!(
                    "its largest weight ({largest:.4}) is over {MAX_WEIGHT_RATIO:.0} times the fleet's \
                     smallest ({smallest:.4})"
                ));
            }
            None
        })
        .collect()
}

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
    let heads: Vec<&HeadUpdate> = snapshots.iter().map(|s| &s.0).collect();
    if let Some((i, why)) = check_snapshots(&heads).into_iter().enumerate().find_map(|(i, w)| Some((i, w?))) {
        return Err(ClientError::Merge(format!("snapshot {} of {}: {why}", i + 1, snapshots.len())));
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
