//! The shaft speed from the signal, for streams whose speed nobody gave.
//!
//! A [`SpeedTracker`] keeps the last few seconds of one channel as they came; asked for
//! an estimate, it resamples them to a low analysis rate (the shaft's lines lie far below
//! the bearing's resonances), takes the envelope of the band above them, and reads the
//! speed from both spectra with [`vigil_core::kinematics::estimate_shaft_hz`]: the
//! candidate speed whose harmonics stand out most.

use crate::error::{Result, RuntimeError};
use std::collections::VecDeque;
use vigil_core::bearing::BearingGeometry;
use vigil_core::dsp::{self, Complex32};
use vigil_core::kinematics::{estimate_shaft_hz, SpeedEstimate};
use vigil_core::resample::Resampler;

/// Rate the tracker analyses at, in Hz: 12 harmonics of the fastest shaft it looks for
/// (200 Hz) lie below its Nyquist frequency.
pub const ANALYSIS_RATE_HZ: f64 = 6000.0;
/// Shaft speeds the tracker looks for by default, in Hz (120 to 12,000 rpm).
pub const DEFAULT_RANGE_HZ: (f32, f32) = (2.0, 200.0);
/// Seconds of signal an estimate reads by default.
pub const DEFAULT_BLOCK_S: f64 = 4.0;
/// The highest frequency whose lines count, in Hz.
const BAND_HZ: f32 = 2400.0;
/// The envelope is taken of the signal above this frequency, in Hz.
const ENVELOPE_HIGH_PASS_HZ: f64 = 2500.0;

/// A second-order Butterworth high-pass (the RBJ cookbook's biquad), in f64.
#[derive(Debug, Clone)]
struct HighPass {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl HighPass {
    fn new(cutoff_hz: f64, rate_hz: f64) -> Self {
        let w = 2.0 * std::f64::consts::PI * cutoff_hz / rate_hz;
        let alpha = w.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let a0 = 1.0 + alpha;
        let c = w.cos();
        HighPass {
            b: [(1.0 + c) / 2.0 / a0, -(1.0 + c) / a0, (1.0 + c) / 2.0 / a0],
            a: [-2.0 * c / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn step(&mut self, v: f64) -> f64 {
        let y = self.b[0] * v + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [v, self.x[0]];
        self.y = [y, self.y[0]];
        y
    }
}

/// Estimates the shaft speed of one channel from its last seconds. Pushing only keeps
/// the samples; the work is done when an estimate is asked for.
#[derive(Debug, Clone)]
pub struct SpeedTracker {
    rate_hz: f64,
    recent: VecDeque<f32>,
    capacity: usize,
    range: (f32, f32),
    fft: Vec<Complex32>,
    power: Vec<f32>,
    envelope_power: Vec<f32>,
    scratch: Vec<f32>,
    low: Vec<f32>,
    envelope: Vec<f32>,
    bearing: Option<BearingGeometry>,
}

impl SpeedTracker {
    /// A tracker for a channel sampled at `rate_hz`, reading `block_s` seconds per
    /// estimate and looking for speeds in `range` Hz.
    pub fn new(rate_hz: f64, block_s: f64, range: (f32, f32)) -> Result<Self> {
        Resampler::new(rate_hz, ANALYSIS_RATE_HZ)?;
        if !(block_s.is_finite() && (0.25..=600.0).contains(&block_s)) {
            return Err(RuntimeError::Input(format!(
                "a speed estimate reads 0.25 to 600 s of signal, not {block_s} s"
            )));
        }
        if !(range.0 > 0.0 && range.1 > range.0) {
            return Err(RuntimeError::Input(format!(
                "shaft speed range {}-{} Hz is empty",
                range.0, range.1
            )));
        }
        let block = (block_s * ANALYSIS_RATE_HZ) as usize;
        // Zero-padded twice over: the harmonics' peaks are sampled finely enough for the
        // comb to find them between bins.
        let n = (2 * block).next_power_of_two();
        let capacity = (block_s * rate_hz).ceil() as usize;
        Ok(SpeedTracker {
            rate_hz,
            recent: VecDeque::with_capacity(capacity),
            capacity,
            range,
            fft: vec![Complex32::default(); n],
            power: vec![0.0; n / 2],
            envelope_power: vec![0.0; n / 2],
            scratch: vec![0.0; 2 * n],
            low: Vec::with_capacity(block + 1),
            envelope: Vec::with_capacity(block + 1),
            bearing: None,
        })
    }

    /// Tells the tracker the bearing: a fault comb then places the shaft speed
    /// ([`estimate_shaft_hz`]).
    pub fn set_bearing(&mut self, bearing: Option<BearingGeometry>) {
        self.bearing = bearing;
    }

    /// Feeds samples of the channel.
    pub fn push(&mut self, samples: &[f32]) {
        let skip = samples.len().saturating_sub(self.capacity);
        for &s in &samples[skip..] {
            if self.recent.len() == self.capacity {
                self.recent.pop_front();
            }
            self.recent.push_back(s);
        }
    }

    /// The speed read from the signal held (at least a quarter of the block), when it
    /// shows one.
    pub fn estimate(&mut self) -> Option<SpeedEstimate> {
        if self.recent.len() < self.capacity / 4 {
            return None;
        }
        // The low band at the analysis rate, and the envelope of the high band: fourth-
        // order high-passed, rectified, resampled (the resampler's low-pass smooths it).
        let mut low_rate = Resampler::new(self.rate_hz, ANALYSIS_RATE_HZ).ok()?;
        let with_envelope = self.rate_hz > 2.2 * ENVELOPE_HIGH_PASS_HZ;
        let mut envelope_rate = Resampler::new(self.rate_hz, ANALYSIS_RATE_HZ).ok()?;
        let mut high_pass = [
            HighPass::new(ENVELOPE_HIGH_PASS_HZ, self.rate_hz),
            HighPass::new(ENVELOPE_HIGH_PASS_HZ, self.rate_hz),
        ];
        self.low.clear();
        self.envelope.clear();
        for &s in &self.recent {
            low_rate.push(s, |v| self.low.push(v));
            if with_envelope {
                let high = high_pass.iter_mut().fold(f64::from(s), |v, hp| hp.step(v));
                envelope_rate.push(high.abs() as f32, |v| self.envelope.push(v));
            }
        }
        let fit = self.fft.len();
        self.low.truncate(fit);
        self.envelope.truncate(fit);
        dsp::power_spectrum(&self.low, &mut self.fft, &mut self.power).ok()?;
        let envelope = if with_envelope && !self.envelope.is_empty() {
            dsp::power_spectrum(&self.envelope, &mut self.fft, &mut self.envelope_power).ok()?;
            Some(&self.envelope_power[..])
        } else {
            None
        };
        let bin_hz = (ANALYSIS_RATE_HZ / self.fft.len() as f64) as f32;
        let orders = self.bearing.map(|b| b.fault_orders());
        estimate_shaft_hz(&self.power, envelope, bin_hz, self.range, BAND_HZ, orders, &mut self.scratch)
    }
}

/// The shaft speed of a recorded channel (`rate_hz`), read from its first `block_s`
/// seconds (all of it when shorter), knowing the bearing if given.
pub fn estimate_recording(
    samples: &[f32],
    rate_hz: f64,
    block_s: f64,
    bearing: Option<BearingGeometry>,
) -> Result<Option<SpeedEstimate>> {
    let mut tracker = SpeedTracker::new(rate_hz, block_s, DEFAULT_RANGE_HZ)?;
    tracker.set_bearing(bearing);
    let take = ((block_s * rate_hz) as usize).min(samples.len());
    tracker.push(&samples[..take]);
    Ok(tracker.estimate())
}

/// Parses a speed range `LOW-HIGH` in Hz (both positive, LOW below HIGH).
pub fn parse_range(text: &str) -> std::result::Result<(f32, f32), String> {
    let parsed = text
        .split_once('-')
        .and_then(|(lo, hi)| Some((lo.trim().parse::<f32>().ok()?, hi.trim().parse::<f32>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo > 0.0 && hi > lo && hi <= vigil_core::kinematics::MAX_SHAFT_HZ => Ok((lo, hi)),
        _ => Err(format!(
            "`{text}` is not a shaft speed range LOW-HIGH in Hz (for example 2-200), with 0 < LOW < HIGH <= {}",
            vigil_core::kinematics::MAX_SHAFT_HZ
        )),
    }
}
