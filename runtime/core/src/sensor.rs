//! Sensor faults: windows that say something about the sensor, not about the machine.
//!
//! A disconnected channel reads zeros or a constant, a saturated amplifier pins samples at
//! its rail, a loose cable or a bad cast gives absurd magnitudes, a broken driver NaN. None
//! of these is a bearing fault, and scoring them would name one (a flat window is far from
//! any healthy embedding). [`SensorWatch`] checks each raw window before it is scored and
//! turns what it finds into one sensor-fault report per episode, with its
//! [`SensorFaultReason`], so a sensor dead for a day does not fill the report store.
//!
//! ```
//! use vigil_core::sensor::{SensorCheck, SensorFaultReason, SensorLimits, SensorWatch};
//!
//! let mut watch = SensorWatch::new(SensorLimits::DEFAULT);
//! let dead = [0.0f32; 256];
//! assert_eq!(watch.check(&dead), SensorCheck::FaultBegan(SensorFaultReason::Flat));
//! assert_eq!(watch.check(&dead), SensorCheck::FaultContinues(SensorFaultReason::Flat));
//! let live: Vec<f32> = (0..256).map(|i| (i as f32 * 0.7).sin()).collect();
//! assert_eq!(watch.check(&live), SensorCheck::Healthy);
//! ```

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// Why a window was taken for a sensor fault. The discriminant is the code carried on
/// the wire (see [`crate::report::AnomalyReport::sensor_fault`]); 0 is the only reason
/// devices gave before the others existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
#[repr(u8)]
pub enum SensorFaultReason {
    /// A sample is NaN or infinite.
    NotFinite = 0,
    /// The whole window stays within [`SensorLimits::flat_g`] of one value: a
    /// disconnected or dead channel.
    Flat = 1,
    /// Most consecutive samples repeat exactly: a stuck converter or a frozen buffer.
    Stuck = 2,
    /// Many samples sit exactly at the window's extreme: the signal is clipped.
    Clipped = 3,
    /// A few samples lie beyond [`SensorLimits::range_g`]: spikes no accelerometer of
    /// the configured range could have measured.
    Spikes = 4,
    /// Much of the window lies beyond [`SensorLimits::range_g`]: wrong units or scale.
    OutOfRange = 5,
}

impl SensorFaultReason {
    /// Every reason, in code order.
    pub const ALL: [SensorFaultReason; 6] = [
        SensorFaultReason::NotFinite,
        SensorFaultReason::Flat,
        SensorFaultReason::Stuck,
        SensorFaultReason::Clipped,
        SensorFaultReason::Spikes,
        SensorFaultReason::OutOfRange,
    ];

    /// The reason with wire code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// The reason as a short name (`flat`, `out_of_range`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SensorFaultReason::NotFinite => "not_finite",
            SensorFaultReason::Flat => "flat",
            SensorFaultReason::Stuck => "stuck",
            SensorFaultReason::Clipped => "clipped",
            SensorFaultReason::Spikes => "spikes",
            SensorFaultReason::OutOfRange => "out_of_range",
        }
    }

    /// What a person reads: what the window showed and what to look at.
    pub fn explanation(self) -> &'static str {
        match self {
            SensorFaultReason::NotFinite => "the window holds NaN or infinite samples",
            SensorFaultReason::Flat => "the signal is flat (a dead or disconnected sensor)",
            SensorFaultReason::Stuck => "the samples repeat (a stuck converter or frozen input)",
            SensorFaultReason::Clipped => "the signal is clipped at a constant extreme (saturated input)",
            SensorFaultReason::Spikes => "spikes beyond the sensor's range (a loose cable or connector)",
            SensorFaultReason::OutOfRange => {
                "the level is beyond the sensor's range (check the units and scale)"
            }
        }
    }
}

/// What a window must respect to be taken for a measurement, in the stream's units
/// (g for an accelerometer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SensorLimits {
    /// Largest magnitude the sensor can measure; beyond it a sample is not a measurement.
    pub range_g: f32,
    /// A window whose samples all lie within this distance of one value is flat.
    pub flat_g: f32,
}

/// Share of consecutive pairs that may repeat exactly before a window is stuck.
const STUCK_SHARE: f32 = 0.5;
/// Share of samples that may sit exactly at the window's extremes before it is clipped.
const CLIPPED_SHARE: f32 = 0.01;
/// Fewest samples at the extremes that make a window clipped, however short it is.
const CLIPPED_MIN: usize = 4;
/// Share of samples beyond the range above which the level, not spikes, is wrong.
const OUT_OF_RANGE_SHARE: f32 = 0.01;

impl SensorLimits {
    /// Defaults for industrial accelerometers read in g: a range of 500 g (the widest
    /// common ICP range) and a flatness floor well under any live sensor's noise.
    pub const DEFAULT: SensorLimits = SensorLimits { range_g: 500.0, flat_g: 1e-6 };

    /// Checks that both limits are finite and positive.
    pub fn validate(&self) -> Result<(), CoreError> {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        if ok(self.range_g) && ok(self.flat_g) && self.flat_g < self.range_g {
            Ok(())
        } else {
            Err(CoreError::NotPositive)
        }
    }

    /// The first thing wrong with `samples` as a measurement, if any. One pass over the
    /// window; an empty window is healthy (there is nothing to score).
    pub fn fault_of(&self, samples: &[f32]) -> Option<SensorFaultReason> {
        if samples.is_empty() {
            return None;
        }
        let stats = WindowStats::of(samples);
        let n = samples.len();
        if stats.not_finite > 0 {
            return Some(SensorFaultReason::NotFinite);
        }
        let beyond = stats.beyond(self.range_g, samples);
        if beyond > 0 {
            let level = beyond as f32 > OUT_OF_RANGE_SHARE * n as f32;
            return Some(if level { SensorFaultReason::OutOfRange } else { SensorFaultReason::Spikes });
        }
        if stats.max - stats.min <= self.flat_g {
            return Some(SensorFaultReason::Flat);
        }
        if n > 1 && stats.repeats as f32 > STUCK_SHARE * (n - 1) as f32 {
            return Some(SensorFaultReason::Stuck);
        }
        if stats.at_extremes(samples) >= CLIPPED_MIN.max((CLIPPED_SHARE * n as f32) as usize) {
            return Some(SensorFaultReason::Clipped);
        }
        None
    }
}

/// What one pass over a window gathers, in lanes the compiler can vectorise.
struct WindowStats {
    min: f32,
    max: f32,
    not_finite: usize,
    repeats: usize,
}

/// Lanes of the pass: eight f32 make one AVX register and two Cortex-M loop unrolls.
const LANES: usize = 8;

impl WindowStats {
    /// One pass: each sample with its successor, eight at a time.
    fn of(samples: &[f32]) -> Self {
        let (mut min, mut max) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
        let (mut not_finite, mut repeats) = ([0u32; LANES], [0u32; LANES]);
        let head = &samples[..samples.len() - 1];
        let pairs = head.chunks_exact(LANES).zip(samples[1..].chunks_exact(LANES));
        let done = head.len() - head.len() % LANES;
        for (chunk, next) in pairs {
            for l in 0..LANES {
                let v = chunk[l];
                // Comparisons rather than f32::min, so the loop becomes vector min/max;
                // NaN is counted apart.
                min[l] = if v < min[l] { v } else { min[l] };
                max[l] = if v > max[l] { v } else { max[l] };
                not_finite[l] += u32::from(!v.is_finite());
                repeats[l] += u32::from(v == next[l]);
            }
        }
        let mut stats = WindowStats {
            min: min.iter().fold(f32::INFINITY, |m, &v| m.min(v)),
            max: max.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
            not_finite: not_finite.iter().map(|&c| c as usize).sum(),
            repeats: repeats.iter().map(|&c| c as usize).sum(),
        };
        for (i, &v) in samples.iter().enumerate().skip(done) {
            stats.min = stats.min.min(v);
            stats.max = stats.max.max(v);
            stats.not_finite += usize::from(!v.is_finite());
            stats.repeats += usize::from(samples.get(i + 1) == Some(&v));
        }
        stats
    }

    /// Samples exactly at the window's minimum or maximum.
    fn at_extremes(&self, samples: &[f32]) -> usize {
        let mut count = [0u32; LANES];
        let chunks = samples.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for l in 0..LANES {
                count[l] += u32::from(chunk[l] == self.min) + u32::from(chunk[l] == self.max);
            }
        }
        let tail = tail.iter().map(|&v| usize::from(v == self.min) + usize::from(v == self.max));
        count.iter().map(|&c| c as usize).sum::<usize>() + tail.sum::<usize>()
    }

    /// Samples beyond `range` (a second pass, taken only when the extremes exceed it).
    fn beyond(&self, range: f32, samples: &[f32]) -> usize {
        if self.max <= range && self.min >= -range {
            return 0;
        }
        samples.iter().filter(|v| v.abs() > range).count()
    }
}

impl Default for SensorLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What [`SensorWatch::check`] found in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SensorCheck {
    /// The window is a measurement: score it.
    Healthy,
    /// A sensor fault starts here, or its reason changed: report it, do not score.
    FaultBegan(SensorFaultReason),
    /// The fault already reported goes on: do not score, do not report again.
    FaultContinues(SensorFaultReason),
}

impl SensorCheck {
    /// The fault's reason, if the window is not a measurement.
    pub fn fault(self) -> Option<SensorFaultReason> {
        match self {
            SensorCheck::Healthy => None,
            SensorCheck::FaultBegan(r) | SensorCheck::FaultContinues(r) => Some(r),
        }
    }
}

/// The sensor's state over a stream: one report per fault episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorWatch {
    limits: SensorLimits,
    active: Option<SensorFaultReason>,
}

impl SensorWatch {
    /// A watch with no fault active.
    pub const fn new(limits: SensorLimits) -> Self {
        SensorWatch { limits, active: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> &SensorLimits {
        &self.limits
    }

    /// The fault in progress, if any.
    pub fn active(&self) -> Option<SensorFaultReason> {
        self.active
    }

    /// Checks one raw window (before any normalisation).
    pub fn check(&mut self, samples: &[f32]) -> SensorCheck {
        let found = self.limits.fault_of(samples);
        let was = core::mem::replace(&mut self.active, found);
        match found {
            None => SensorCheck::Healthy,
            Some(r) if was == Some(r) => SensorCheck::FaultContinues(r),
            Some(r) => SensorCheck::FaultBegan(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy-looking signal in g: a shaft tone, a resonance and deterministic noise.
    fn live(n: usize) -> [f32; 2048] {
        let mut x = [0.0f32; 2048];
        let mut state = 12345u32;
        for (i, v) in x.iter_mut().take(n).enumerate() {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let t = i as f32 / 16_000.0;
            *v = 0.3 * libm::sinf(2.0 * core::f32::consts::PI * 25.0 * t)
                + 0.1 * libm::sinf(2.0 * core::f32::consts::PI * 3100.0 * t)
                + 0.05 * noise;
        }
        x
    }

    fn fault(x: &[f32]) -> Option<SensorFaultReason> {
        SensorLimits::DEFAULT.fault_of(x)
    }

    #[test]
    fn a_live_signal_is_healthy() {
        assert_eq!(fault(&live(2048)), None);
        assert_eq!(fault(&[]), None);
    }

    #[test]
    fn each_fault_is_named() {
        let mut x = live(2048);
        x[700] = f32::NAN;
        assert_eq!(fault(&x), Some(SensorFaultReason::NotFinite));
        assert_eq!(fault(&[0.0; 2048]), Some(SensorFaultReason::Flat));
        assert_eq!(fault(&[0.42; 2048]), Some(SensorFaultReason::Flat));
        // A converter that updates one sample in four.
        let mut x = live(2048);
        for i in 0..2048 {
            x[i] = x[i - i % 4];
        }
        assert_eq!(fault(&x), Some(SensorFaultReason::Stuck));
        let mut x = live(2048);
        x.iter_mut().for_each(|v| *v = v.clamp(-0.25, 0.25));
        assert_eq!(fault(&x), Some(SensorFaultReason::Clipped));
        let mut x = live(2048);
        for i in [100, 900, 1500] {
            x[i] = 1e30;
        }
        assert_eq!(fault(&x), Some(SensorFaultReason::Spikes));
        let mut x = live(2048);
        x.iter_mut().for_each(|v| *v *= 1e20);
        assert_eq!(fault(&x), Some(SensorFaultReason::OutOfRange));
        assert_eq!(fault(&[1e30; 2048]), Some(SensorFaultReason::OutOfRange));
    }

    #[test]
    fn one_report_per_episode() {
        let mut watch = SensorWatch::new(SensorLimits::DEFAULT);
        let dead = [0.0f32; 64];
        let live = live(2048);
        assert_eq!(watch.check(&live), SensorCheck::Healthy);
        assert_eq!(watch.check(&dead), SensorCheck::FaultBegan(SensorFaultReason::Flat));
        assert_eq!(watch.check(&dead), SensorCheck::FaultContinues(SensorFaultReason::Flat));
        assert_eq!(watch.check(&[1e30; 64]), SensorCheck::FaultBegan(SensorFaultReason::OutOfRange));
        assert_eq!(watch.check(&live), SensorCheck::Healthy);
        assert_eq!(watch.check(&dead), SensorCheck::FaultBegan(SensorFaultReason::Flat));
    }

    #[test]
    fn codes_round_trip_and_limits_are_checked() {
        for r in SensorFaultReason::ALL {
            assert_eq!(SensorFaultReason::from_code(r as u8), Some(r));
        }
        assert_eq!(SensorFaultReason::from_code(6), None);
        assert!(SensorLimits::DEFAULT.validate().is_ok());
        assert!(SensorLimits { range_g: f32::NAN, flat_g: 1e-6 }.validate().is_err());
        assert!(SensorLimits { range_g: 1.0, flat_g: 2.0 }.validate().is_err());
    }
}
