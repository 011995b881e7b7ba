//! The alarm policy: threshold, k-of-n confirmation and hysteresis.
//!
//! A single noisy window must not raise an alarm, and an alarm must not flicker while the
//! score hovers at the threshold. The alarm is *raised* when at least `raise_k` of the last
//! `window_n` scores are above `threshold`, and *cleared* when all of the last `window_n`
//! scores are below `threshold * clear_ratio`.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Configuration of the alarm logic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AlarmPolicy {
    /// Anomaly score above which a window counts as abnormal.
    pub threshold: f32,
    /// Abnormal windows among the last `window_n` needed to raise the alarm.
    pub raise_k: u8,
    /// Length of the history the policy looks at (at most 32).
    pub window_n: u8,
    /// Hysteresis: the alarm clears once every recent score is below
    /// `threshold * clear_ratio` (a value in `(0, 1]`).
    pub clear_ratio: f32,
}

impl AlarmPolicy {
    /// Checks the policy's invariants.
    pub fn validate(&self) -> Result<(), CoreError> {
        let threshold_ok = self.threshold.is_finite() && self.threshold > 0.0;
        let ratio_ok = self.clear_ratio > 0.0 && self.clear_ratio <= 1.0;
        if !(threshold_ok && ratio_ok) {
            return Err(CoreError::NotPositive);
        }
        if self.raise_k == 0 || self.raise_k > self.window_n || self.window_n > 32 {
            return Err(CoreError::AlarmWindow { k: self.raise_k, n: self.window_n });
        }
        Ok(())
    }
}

/// What one new score did to the alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AlarmTransition {
    /// Nothing changed.
    None,
    /// The alarm went from quiet to active.
    Raised,
    /// The alarm went from active to quiet.
    Cleared,
}

/// The running state of the alarm policy over a stream of scores.
#[derive(Debug, Clone)]
pub struct AlarmState {
    policy: AlarmPolicy,
    /// Bit i set: the i-th most recent score was above the threshold.
    above: u32,
    /// Bit i set: the i-th most recent score was at or above the clearing level.
    not_clear: u32,
    seen: u32,
    active: bool,
}

impl AlarmState {
    /// Starts quiet, with no history.
    pub fn new(policy: AlarmPolicy) -> Result<Self, CoreError> {
        policy.validate()?;
        Ok(AlarmState { policy, above: 0, not_clear: 0, seen: 0, active: false })
    }

    /// The policy in force.
    pub fn policy(&self) -> &AlarmPolicy {
        &self.policy
    }

    /// Whether the alarm is currently active.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Feeds one window's score. A NaN score counts as abnormal (it never silences an
    /// alarm), but callers should report sensor faults separately and not feed them here.
    pub fn update(&mut self, score: f32) -> AlarmTransition {
        let n = u32::from(self.policy.window_n);
        let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        let is_above = score.is_nan() || score > self.policy.threshold;
        let is_not_clear = score.is_nan() || score >= self.policy.threshold * self.policy.clear_ratio;
        self.above = ((self.above << 1) | u32::from(is_above)) & mask;
        self.not_clear = ((self.not_clear << 1) | u32::from(is_not_clear)) & mask;
        self.seen = (self.seen + 1).min(n);
        if !self.active && self.above.count_ones() >= u32::from(self.policy.raise_k) {
            self.active = true;
            AlarmTransition::Raised
        } else if self.active && self.seen == n && self.not_clear == 0 {
            self.active = false;
            AlarmTransition::Cleared
        } else {
            AlarmTransition::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AlarmPolicy {
        AlarmPolicy { threshold: 1.0, raise_k: 3, window_n: 5, clear_ratio: 0.5 }
    }

    #[test]
    fn isolated_spikes_do_not_raise() {
        let mut s = AlarmState::new(policy()).unwrap();
        for i in 0..100 {
            let score = if i % 3 == 0 { 5.0 } else { 0.1 };
            assert_eq!(s.update(score), AlarmTransition::None, "window {i}");
        }
    }

    #[test]
    fn k_of_n_raises_then_hysteresis_clears() {
        let mut s = AlarmState::new(policy()).unwrap();
        let seq = [2.0, 0.1, 2.0, 2.0];
        let got: [AlarmTransition; 4] = core::array::from_fn(|i| s.update(seq[i]));
        assert_eq!(got[3], AlarmTransition::Raised);
        // Scores between clear level and threshold keep the alarm active.
        for _ in 0..10 {
            assert_eq!(s.update(0.7), AlarmTransition::None);
        }
        assert!(s.is_active());
        let mut cleared_at = None;
        for i in 0..10 {
            if s.update(0.1) == AlarmTransition::Cleared {
                cleared_at = Some(i);
                break;
            }
        }
        assert_eq!(cleared_at, Some(4));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let mut p = policy();
        p.raise_k = 6;
        assert!(AlarmState::new(p).is_err());
        p.raise_k = 0;
        assert!(AlarmState::new(p).is_err());
        let mut p = policy();
        p.threshold = f32::NAN;
        assert!(AlarmState::new(p).is_err());
    }
}
