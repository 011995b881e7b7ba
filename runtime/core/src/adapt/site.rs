//! Unsupervised site adaptation: the normal-state prototype and the alarm threshold of one
//! machine, learned on site.
//!
//! Three phases follow one another:
//!
//! 1. **Learning** (the first half of commissioning): every window's embedding goes into
//!    a running mean and variance (Welford), which become the site's prototype.
//!    Its variances are shrunk towards their average ([`shrink_variance`]), so that a
//!    dimension that barely moved during learning cannot dominate every later score.
//! 2. **Calibrating** (the second half): every window is scored against that prototype
//!    and its score counted in a log-scale histogram ([`ScoreHistogram`]). At the end the
//!    threshold becomes the score that a window exceeds with probability
//!    `p = false_alarms_per_day / windows_per_day`, counting one window per window
//!    length: overlapping windows share most of their samples, so their scores rise and
//!    fall together and a k-of-n policy gives no independent-windows discount; any
//!    excursion over the threshold may become an alarm.
//!    Such a `p` (one in millions) lies far beyond the highest of a few hundred scores, so
//!    the threshold is extrapolated from the tail: the scores above the 90th percentile
//!    `u` are taken as exponential with the mean excess `b` they show, and the threshold
//!    is `u + b ln(0.1 / p)` ([`ScoreHistogram::tail_quantile`]), never below the highest
//!    score seen.
//! 3. **Armed**: alarms count. A window whose head says "normal" with probability at
//!    least `confident_normal`, whose score is below `quiet_fraction` of the threshold and
//!    that arrives while no alarm is active moves the prototype by `momentum` (an
//!    exponential moving mean and variance), at most once every `every` windows, so a
//!    slowly developing fault cannot teach the device that it is normal.
//!
//! Commissioning assumes the machine is healthy while it runs; a fault present from the
//! start would be learned as normal (the shipped prototype does not have that blind spot,
//! which is why a site can always [`SiteAdapter::rollback`] or re-commission).

use crate::alarm::AlarmPolicy;
use crate::error::check_len;
use crate::head::PrototypeRef;
use crate::update::MAX_EMBEDDING;
use crate::CoreError;
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// Bins of the score histogram.
pub const SCORE_BINS: usize = 256;
/// Histogram bins per doubling of the score.
const BINS_PER_OCTAVE: f32 = 16.0;
/// The lowest bin starts at `2^LOWEST_OCTAVE`; the highest ends at `2^(LOWEST + 16)`.
const LOWEST_OCTAVE: f32 = -6.0;

/// Counts of anomaly scores in log-spaced bins from 2^-6 to 2^10 (16 bins per doubling,
/// so a quantile is known within 4.4%). Scores outside go to the end bins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreHistogram {
    counts: Vec<u32, SCORE_BINS>,
    total: u32,
}

impl Default for ScoreHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl ScoreHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        let mut counts = Vec::new();
        // Capacity is SCORE_BINS, the length asked for.
        let _ = counts.resize(SCORE_BINS, 0);
        ScoreHistogram { counts, total: 0 }
    }

    fn bin(score: f32) -> usize {
        if score.is_nan() {
            return SCORE_BINS - 1;
        }
        let octave = libm::log2f(score.max(f32::MIN_POSITIVE));
        let bin = (octave - LOWEST_OCTAVE) * BINS_PER_OCTAVE;
        (bin.max(0.0) as usize).min(SCORE_BINS - 1)
    }

    fn upper_edge(bin: usize) -> f32 {
        libm::exp2f(LOWEST_OCTAVE + (bin + 1) as f32 / BINS_PER_OCTAVE)
    }

    /// Counts one score (NaN counts as the highest).
    pub fn add(&mut self, score: f32) {
        let bin = Self::bin(score);
        self.counts[bin] = self.counts[bin].saturating_add(1);
        self.total = self.total.saturating_add(1);
    }

    /// Scores counted.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The smallest bin edge that at most a fraction `exceed` of the scores lie above;
    /// `None` when the histogram is empty. With fewer than `1 / exceed` scores this is the
    /// upper edge of the highest score's bin.
    pub fn upper_quantile(&self, exceed: f32) -> Option<f32> {
        if self.total == 0 {
            return None;
        }
        let allowed = (exceed.clamp(0.0, 1.0) * self.total as f32) as u32;
        let mut above = 0u32;
        for bin in (0..SCORE_BINS).rev() {
            if above + self.counts[bin] > allowed {
                return Some(Self::upper_edge(bin));
            }
            above += self.counts[bin];
        }
        Some(Self::upper_edge(0))
    }
}

/// Share of the scores whose excesses [`ScoreHistogram::tail_quantile`] fits.
const TAIL_SHARE: f32 = 0.1;
/// Fewest scores in the tail for a fit.
const TAIL_MIN: u32 = 5;

impl ScoreHistogram {
    /// The score a window exceeds with probability `exceed`, extrapolated from the
    /// histogram's tail: the scores above the upper [`TAIL_SHARE`] quantile `u`, taken as
    /// exponential with their mean excess `b`, give `u + b ln(share / exceed)`. `None`
    /// with fewer than [`TAIL_MIN`] scores in the tail, or when `exceed` is not below
    /// the tail's share (the plain quantile answers then).
    pub fn tail_quantile(&self, exceed: f32) -> Option<f32> {
        let u = self.upper_quantile(TAIL_SHARE)?;
        let first = Self::bin(u);
        let (mut count, mut excess) = (0u32, 0.0f32);
        for bin in first..SCORE_BINS {
            let n = self.counts[bin];
            if n > 0 {
                // The bin's geometric centre.
                let centre = libm::exp2f(LOWEST_OCTAVE + (bin as f32 + 0.5) / BINS_PER_OCTAVE);
                count += n;
                excess += n as f32 * (centre - u).max(0.0);
            }
        }
        let share = count as f32 / self.total as f32;
        if count < TAIL_MIN || !(exceed > 0.0 && exceed < share) {
            return None;
        }
        Some(u + excess / count as f32 * libm::logf(share / exceed))
    }

    /// The alarm threshold a window exceeds with probability `exceed`: the tail's
    /// extrapolation ([`ScoreHistogram::tail_quantile`]), never below the score the
    /// histogram itself shows exceeded that often ([`ScoreHistogram::upper_quantile`]).
    /// `None` for an empty histogram. The one rule for site commissioning and for the
    /// threshold a fine-tuned model ships with.
    pub fn threshold_for(&self, exceed: f32) -> Option<f32> {
        let seen = self.upper_quantile(exceed)?;
        Some(self.tail_quantile(exceed).map_or(seen, |t| t.max(seen)))
    }
}

/// How a site adapts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SiteConfig {
    /// Windows of commissioning: the first half learns the prototype, the second half
    /// calibrates the threshold. Alarms are disarmed until it ends.
    pub commission_windows: u32,
    /// Target false alarms per day once armed.
    pub false_alarms_per_day: f32,
    /// Independent windows the stream produces per day: windows that overlap rise and
    /// fall together, so a gateway counts one per window length (sample rate / window x
    /// 86,400), not one per hop.
    pub windows_per_day: f32,
    /// Least probability of the normal class for a window to move the prototype.
    pub confident_normal: f32,
    /// A window moves the prototype only when its score is below this fraction of the
    /// threshold.
    pub quiet_fraction: f32,
    /// At most one prototype update per this many windows.
    pub every: u32,
    /// Weight of one window in the moving mean and variance.
    pub momentum: f32,
}

impl SiteConfig {
    /// Commissioning over `commission_windows` with the defaults: one false alarm per
    /// day, confident normal at 0.9, updates from windows below half the threshold, at
    /// most every 8th window, momentum 1/512.
    pub fn new(commission_windows: u32, windows_per_day: f32) -> Self {
        SiteConfig {
            commission_windows,
            false_alarms_per_day: 1.0,
            windows_per_day,
            confident_normal: 0.9,
            quiet_fraction: 1.0,
            every: 8,
            momentum: 1.0 / 512.0,
        }
    }

    /// Checks the settings: at least 4 commissioning windows, positive rates, fractions
    /// in (0, 1].
    pub fn validate(&self) -> Result<(), CoreError> {
        let fraction = |v: f32| v > 0.0 && v <= 1.0;
        let rates = self.false_alarms_per_day > 0.0
            && self.windows_per_day.is_finite()
            && self.windows_per_day > self.false_alarms_per_day;
        if self.commission_windows < 4
            || !rates
            || !fraction(self.confident_normal)
            || !fraction(self.quiet_fraction)
            || !fraction(self.momentum)
            || self.every == 0
        {
            return Err(CoreError::NotPositive);
        }
        Ok(())
    }

    /// The probability with which one window may exceed the threshold: every excursion
    /// over it may start an alarm (see the module docs for why the k-of-n policy earns
    /// no discount on overlapping windows).
    pub fn window_exceedance(&self) -> f32 {
        (self.false_alarms_per_day / self.windows_per_day).min(1.0)
    }
}

/// Share of the average variance every dimension's variance is pulled towards.
pub const VARIANCE_SHRINKAGE: f32 = 0.1;

/// Shrinks per-dimension variances towards their average: `(1 - s) v_d + s mean(v)`. A few
/// hundred healthy windows leave some dimensions nearly constant (a feature that happened
/// not to fire); divided by their tiny variance, the first window where it fires would
/// score in the millions. Shrinking keeps every dimension's variance a sane fraction of the
/// others, as covariance estimates from few samples are regularised.
pub fn shrink_variance(var: &mut [f32]) {
    if var.is_empty() {
        return;
    }
    let mean = var.iter().sum::<f32>() / var.len() as f32;
    for v in var.iter_mut() {
        *v = (1.0 - VARIANCE_SHRINKAGE) * *v + VARIANCE_SHRINKAGE * mean;
    }
}

/// Where a site is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SitePhase {
    /// Learning the prototype; alarms disarmed.
    Learning,
    /// Calibrating the threshold; alarms disarmed.
    Calibrating,
    /// Alarms armed; the prototype follows confidently normal windows.
    Armed,
}

/// What observing one window did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SiteEvent {
    /// Nothing to report.
    None,
    /// Commissioning ended: the alarm threshold is now this.
    Commissioned {
        /// The calibrated threshold.
        threshold: f32,
    },
    /// The armed prototype moved towards this window.
    PrototypeMoved,
}

/// The site's prototype and threshold, with the frozen copy to roll back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteAdapter {
    config: SiteConfig,
    policy: AlarmPolicy,
    phase: SitePhase,
    /// Windows seen in the current phase.
    in_phase: u32,
    /// Windows since the prototype last moved.
    since_update: u32,
    mean: Vec<f32, MAX_EMBEDDING>,
    /// The variance; while learning, Welford's sum of squared deviations.
    var: Vec<f32, MAX_EMBEDDING>,
    frozen_mean: Vec<f32, MAX_EMBEDDING>,
    frozen_var: Vec<f32, MAX_EMBEDDING>,
    frozen_threshold: f32,
    histogram: ScoreHistogram,
    windows_seen: u32,
    prototype_updates: u32,
}

fn copy_into(dest: &mut Vec<f32, MAX_EMBEDDING>, src: &[f32]) -> Result<(), CoreError> {
    dest.clear();
    dest.extend_from_slice(src)
        .map_err(|_| CoreError::LengthMismatch { expected: MAX_EMBEDDING, actual: src.len() })
}

impl SiteAdapter {
    /// Starts commissioning a site, keeping `shipped` and `policy` (its threshold) as the
    /// frozen state to roll back to. Alarms stay disarmed until commissioning ends.
    pub fn commission(
        config: SiteConfig,
        shipped: PrototypeRef<'_>,
        policy: AlarmPolicy,
    ) -> Result<Self, CoreError> {
        let mut site = Self::armed(config, shipped, policy)?;
        site.restart();
        Ok(site)
    }

    /// A site armed from the start with `prototype` and `policy`, adapting as it runs.
    pub fn armed(
        config: SiteConfig,
        prototype: PrototypeRef<'_>,
        policy: AlarmPolicy,
    ) -> Result<Self, CoreError> {
        config.validate()?;
        policy.validate()?;
        let mut site = SiteAdapter {
            config,
            policy,
            phase: SitePhase::Armed,
            in_phase: 0,
            since_update: 0,
            mean: Vec::new(),
            var: Vec::new(),
            frozen_mean: Vec::new(),
            frozen_var: Vec::new(),
            frozen_threshold: policy.threshold,
            histogram: ScoreHistogram::new(),
            windows_seen: 0,
            prototype_updates: 0,
        };
        copy_into(&mut site.mean, prototype.mean())?;
        copy_into(&mut site.var, prototype.var())?;
        site.freeze();
        Ok(site)
    }

    /// Starts commissioning again from the current prototype's dimension.
    pub fn restart(&mut self) {
        self.phase = SitePhase::Learning;
        self.in_phase = 0;
        self.histogram = ScoreHistogram::new();
        self.mean.iter_mut().for_each(|m| *m = 0.0);
        self.var.iter_mut().for_each(|v| *v = 0.0);
    }

    /// The phase the site is in.
    pub fn phase(&self) -> SitePhase {
        self.phase
    }

    /// Whether alarms count.
    pub fn is_armed(&self) -> bool {
        self.phase == SitePhase::Armed
    }

    /// The alarm policy in force (its threshold is the calibrated one once commissioned).
    pub fn policy(&self) -> AlarmPolicy {
        self.policy
    }

    /// The current prototype (while learning: the frozen one, which scores meanwhile).
    pub fn prototype(&self) -> PrototypeRef<'_> {
        let (mean, var) = match self.phase {
            SitePhase::Learning => (&self.frozen_mean, &self.frozen_var),
            _ => (&self.mean, &self.var),
        };
        // Both are checked on entry and kept finite and non-negative.
        PrototypeRef::new(mean, var).unwrap_or_else(|_| PrototypeRef::empty())
    }

    /// The anomaly score of `embedding` against the current prototype.
    pub fn score(&self, embedding: &[f32]) -> Result<f32, CoreError> {
        self.prototype().score(embedding)
    }

    /// Makes the current prototype and threshold the state [`SiteAdapter::rollback`]
    /// returns to.
    pub fn freeze(&mut self) {
        self.frozen_mean.clone_from(&self.mean);
        self.frozen_var.clone_from(&self.var);
        self.frozen_threshold = self.policy.threshold;
    }

    /// Returns to the frozen prototype and threshold, armed.
    pub fn rollback(&mut self) {
        self.mean.clone_from(&self.frozen_mean);
        self.var.clone_from(&self.frozen_var);
        self.policy.threshold = self.frozen_threshold;
        self.phase = SitePhase::Armed;
        self.since_update = 0;
    }

    /// What the site has seen, for [`super::AdaptationStats`].
    pub fn counts(&self) -> (u32, u32) {
        (self.windows_seen, self.prototype_updates)
    }

    /// Takes one scored window: its embedding, its anomaly score (from
    /// [`SiteAdapter::score`]), the head's probability that it is normal and whether an
    /// alarm is active.
    pub fn observe(
        &mut self,
        embedding: &[f32],
        score: f32,
        normal_probability: f32,
        alarm_active: bool,
    ) -> Result<SiteEvent, CoreError> {
        check_len(self.mean.len(), embedding.len())?;
        if embedding.iter().any(|e| !e.is_finite()) {
            return Err(CoreError::NotFinite);
        }
        self.windows_seen = self.windows_seen.saturating_add(1);
        self.in_phase += 1;
        match self.phase {
            SitePhase::Learning => {
                let n = self.in_phase as f32;
                for ((m, s), &e) in self.mean.iter_mut().zip(self.var.iter_mut()).zip(embedding) {
                    let delta = e - *m;
                    *m += delta / n;
                    *s += delta * (e - *m);
                }
                if self.in_phase >= self.config.commission_windows / 2 {
                    let denominator = (self.in_phase - 1).max(1) as f32;
                    self.var.iter_mut().for_each(|s| *s /= denominator);
                    shrink_variance(&mut self.var);
                    self.phase = SitePhase::Calibrating;
                    self.in_phase = 0;
                }
                Ok(SiteEvent::None)
            }
            SitePhase::Calibrating => {
                self.histogram.add(score);
                if self.in_phase < self.config.commission_windows - self.config.commission_windows / 2 {
                    return Ok(SiteEvent::None);
                }
                if let Some(threshold) = self.histogram.threshold_for(self.config.window_exceedance()) {
                    self.policy.threshold = threshold;
                }
                self.phase = SitePhase::Armed;
                self.since_update = 0;
                self.freeze();
                Ok(SiteEvent::Commissioned { threshold: self.policy.threshold })
            }
            SitePhase::Armed => {
                self.since_update = self.since_update.saturating_add(1);
                let quiet = score < self.policy.threshold * self.config.quiet_fraction;
                if alarm_active
                    || !quiet
                    || normal_probability < self.config.confident_normal
                    || self.since_update < self.config.every
                {
                    return Ok(SiteEvent::None);
                }
                let a = self.config.momentum;
                for (m, &e) in self.mean.iter_mut().zip(embedding) {
                    *m += a * (e - *m);
                }
                self.since_update = 0;
                self.prototype_updates = self.prototype_updates.saturating_add(1);
                Ok(SiteEvent::PrototypeMoved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn policy() -> AlarmPolicy {
        AlarmPolicy { threshold: 2.0, raise_k: 3, window_n: 5, clear_ratio: 0.7 }
    }

    fn gaussian(rng: &mut impl Rng) -> f32 {
        // Sum of 12 uniforms: mean 6, variance 1.
        (0..12).map(|_| rng.gen::<f32>()).sum::<f32>() - 6.0
    }

    #[test]
    fn histogram_quantile_is_within_a_bin() {
        let mut h = ScoreHistogram::new();
        for i in 1..=1000 {
            h.add(i as f32 / 100.0);
        }
        // 1% of the scores (10 of them) lie above 9.9.
        let q = h.upper_quantile(0.01).unwrap();
        assert!((9.9..9.9 * 1.05).contains(&q), "{q}");
        assert_eq!(ScoreHistogram::new().upper_quantile(0.01), None);
    }

    #[test]
    fn exceedance_is_the_false_alarm_rate_per_window() {
        let config = SiteConfig::new(100, 86_400.0);
        assert!((config.window_exceedance() * 86_400.0 - 1.0).abs() < 1e-3);
    }

    #[test]
    fn the_tail_extrapolates_an_exponential_quantile() {
        // Exponential scores of mean 1: P(x > t) = e^-t, so the 1e-6 quantile is 13.8,
        // far beyond the largest of 2,000 scores (about 8).
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut h = ScoreHistogram::new();
        for _ in 0..2000 {
            h.add(-libm::logf(1.0 - rng.gen::<f32>()));
        }
        let t = h.tail_quantile(1e-6).unwrap();
        assert!((11.0..17.0).contains(&t), "{t}");
        assert_eq!(h.tail_quantile(0.5), None, "within the data, the plain quantile answers");
    }

    #[test]
    fn commissioning_learns_the_site_then_arms_at_the_target_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shipped_mean = [0.0f32; 4];
        let shipped_var = [1.0f32; 4];
        let shipped = PrototypeRef::new(&shipped_mean, &shipped_var).unwrap();
        // 86.4 windows a day and one false alarm a day: p = 1/86.4 = 1.2%.
        let config = SiteConfig::new(4000, 86.4);
        let mut site = SiteAdapter::commission(config, shipped, policy()).unwrap();
        let site_mean = [5.0f32, -3.0, 2.0, 10.0];
        let window = |rng: &mut rand::rngs::StdRng| -> [f32; 4] {
            core::array::from_fn(|i| site_mean[i] + 0.5 * gaussian(rng))
        };
        let mut commissioned = None;
        for i in 0..4000 {
            assert!(!site.is_armed(), "armed early at {i}");
            let e = window(&mut rng);
            let score = site.score(&e).unwrap();
            if let SiteEvent::Commissioned { threshold } = site.observe(&e, score, 1.0, false).unwrap() {
                commissioned = Some(threshold);
            }
        }
        let threshold = commissioned.expect("commissioning ended");
        assert!(site.is_armed());
        for (m, want) in site.prototype().mean().iter().zip(site_mean) {
            assert!((m - want).abs() < 0.05, "{m} vs {want}");
        }
        let above = (0..20_000).filter(|_| site.score(&window(&mut rng)).unwrap() > threshold).count();
        let rate = above as f32 / 20_000.0;
        assert!((0.004..0.024).contains(&rate), "exceedance {rate}, threshold {threshold}");
        // The shipped prototype would have alarmed on every window of this site.
        assert!(shipped.score(&window(&mut rng)).unwrap() > 3.0 * threshold, "{threshold}");
    }

    #[test]
    fn armed_prototype_follows_only_quiet_confident_windows_and_rolls_back() {
        let mean = [0.0f32; 2];
        let var = [1.0f32; 2];
        let proto = PrototypeRef::new(&mean, &var).unwrap();
        let mut config = SiteConfig::new(10, 86_400.0);
        config.every = 2;
        config.momentum = 0.5;
        let mut site = SiteAdapter::armed(config, proto, policy()).unwrap();
        let quiet = [0.5f32, 0.5];
        let loud = [10.0f32, 10.0];
        let mut moved = 0;
        for _ in 0..10 {
            for (e, p, alarm) in
                [(&quiet, 0.95, false), (&loud, 0.95, false), (&quiet, 0.5, false), (&quiet, 0.95, true)]
            {
                let s = site.score(e).unwrap();
                if site.observe(e, s, p, alarm).unwrap() == SiteEvent::PrototypeMoved {
                    moved += 1;
                    assert_eq!(e, &quiet);
                }
            }
        }
        assert!(moved > 0);
        assert!(site.prototype().mean()[0] > 0.4);
        site.rollback();
        assert_eq!(site.prototype().mean(), &mean);
        assert_eq!(site.counts().1, moved);
    }

    #[test]
    fn the_site_state_is_fixed_and_small() {
        // Four prototype vectors of MAX_EMBEDDING floats and the histogram: the figure
        // docs/adaptation.md states.
        let size = core::mem::size_of::<SiteAdapter>();
        assert!(size <= 5 * 1024 + 256, "{size} bytes");
        eprintln!("SiteAdapter: {size} bytes");
    }

    #[test]
    fn bad_windows_and_settings_are_refused() {
        let proto = PrototypeRef::new(&[0.0; 2], &[1.0; 2]).unwrap();
        let mut site = SiteAdapter::armed(SiteConfig::new(10, 1000.0), proto, policy()).unwrap();
        assert_eq!(
            site.observe(&[0.0; 3], 0.0, 1.0, false),
            Err(CoreError::LengthMismatch { expected: 2, actual: 3 })
        );
        assert_eq!(site.observe(&[f32::NAN, 0.0], 0.0, 1.0, false), Err(CoreError::NotFinite));
        assert!(SiteAdapter::armed(SiteConfig::new(2, 1000.0), proto, policy()).is_err());
        let mut bad = SiteConfig::new(10, 1000.0);
        bad.momentum = 0.0;
        assert!(bad.validate().is_err());
    }
}
