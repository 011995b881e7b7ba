//! The periodic health record: what a machine's vibration and scores looked like over the
//! last period (a minute by default), stored beside the alarms so that a slow
//! degradation shows as a trend (`docs/health.md`).

use crate::error::{Result, RuntimeError};
use crate::scorer::WindowOutcome;
use crate::windower::Window;
use std::time::Duration;
use vigil_core::dsp::{self, Complex32, Moments};
use vigil_core::report::HealthStats;

/// How often a gateway stores a health record unless told otherwise.
pub const DEFAULT_HEALTH_EVERY: Duration = Duration::from_secs(60);

/// The band ISO 10816 / ISO 20816 take the overall velocity over, in Hz.
pub const VELOCITY_BAND_HZ: (f32, f32) = (10.0, 1000.0);

/// One health record's figures, before the scorer numbers it as a report.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSummary {
    /// The levels and worst score.
    pub stats: HealthStats,
    /// Median anomaly score of the period (0 without a scored window).
    pub median_score: f32,
    /// Share of the scored windows whose likeliest class is each class.
    pub class_mix: Vec<f32>,
}

/// Sums up windows into a health record every period of stream time.
#[derive(Debug)]
pub struct HealthMonitor {
    every_s: f64,
    window: usize,
    window_s: f64,
    bin_hz: f32,
    started_s: Option<f64>,
    squares: f64,
    samples: u64,
    peak: f32,
    kurtosis: f64,
    velocity_squares: f64,
    measured: u32,
    faults: u32,
    scores: Vec<f32>,
    classes: Vec<u32>,
    fft: Vec<Complex32>,
    power: Vec<f32>,
}

impl HealthMonitor {
    /// A record every `every` of stream, for windows of `window` samples a channel at
    /// `sample_rate_hz`, with `classes` classes.
    pub fn new(every: Duration, window: usize, sample_rate_hz: f64, classes: usize) -> Result<Self> {
        if every.is_zero() {
            return Err(RuntimeError::Config("the health record period must be longer than zero".into()));
        }
        let n = window.next_power_of_two();
        Ok(HealthMonitor {
            every_s: every.as_secs_f64(),
            window,
            window_s: window as f64 / sample_rate_hz,
            bin_hz: (sample_rate_hz / n as f64) as f32,
            started_s: None,
            squares: 0.0,
            samples: 0,
            peak: 0.0,
            kurtosis: 0.0,
            velocity_squares: 0.0,
            measured: 0,
            faults: 0,
            scores: Vec::new(),
            classes: vec![0; classes],
            fft: vec![Complex32::default(); n],
            power: vec![0.0; n / 2],
        })
    }

    /// Takes in one window and what scoring made of it; the period's record once the
    /// window ends it.
    pub fn observe(&mut self, window: &Window, outcome: &WindowOutcome) -> Result<Option<HealthSummary>> {
        // The first period begins with the first window; each later one where the last
        // ended.
        let started = *self.started_s.get_or_insert(window.end_time_s - self.window_s);
        if outcome.sensor_fault.is_some() {
            self.faults += 1;
        } else if let Some(score) = &outcome.scored {
            let first = &window.samples[..self.window.min(window.samples.len())];
            let m = Moments::of(first);
            self.squares += f64::from(m.rms) * f64::from(m.rms) * first.len() as f64;
            self.samples += first.len() as u64;
            self.peak = self.peak.max(m.peak);
            self.kurtosis += f64::from(m.kurtosis);
            dsp::power_spectrum(first, &mut self.fft, &mut self.power)?;
            let v = dsp::velocity_rms_mm_s(&self.power, self.bin_hz, VELOCITY_BAND_HZ.0, VELOCITY_BAND_HZ.1);
            self.velocity_squares += f64::from(v) * f64::from(v);
            self.measured += 1;
            self.scores.push(score.anomaly);
            if let Some(c) = self.classes.get_mut(score.class_index) {
                *c += 1;
            }
        }
        if window.end_time_s - started < self.every_s {
            return Ok(None);
        }
        let summary = self.take(window.end_time_s - started);
        self.started_s = Some(window.end_time_s);
        Ok(Some(summary))
    }

    /// The record of what was observed over `period_s`; the sums start again.
    fn take(&mut self, period_s: f64) -> HealthSummary {
        let n = self.measured.max(1) as f64;
        let mut scores = std::mem::take(&mut self.scores);
        scores.sort_by(f32::total_cmp);
        let median = scores.get(scores.len() / 2).copied().unwrap_or(0.0);
        let total: u32 = self.classes.iter().sum();
        let class_mix = self.classes.iter().map(|&c| c as f32 / total.max(1) as f32).collect();
        let stats = HealthStats {
            period_s: period_s as f32,
            windows: self.measured,
            sensor_faults: self.faults,
            rms_g: (self.squares / self.samples.max(1) as f64).sqrt() as f32,
            velocity_mm_s: (self.velocity_squares / n).sqrt() as f32,
            peak_g: self.peak,
            kurtosis: (self.kurtosis / n) as f32,
            score_max: scores.last().copied().unwrap_or(0.0),
            shaft_hz: None,
        };
        (self.squares, self.samples, self.peak, self.kurtosis, self.velocity_squares) =
            (0.0, 0, 0.0, 0.0, 0.0);
        (self.measured, self.faults) = (0, 0);
        self.classes.iter_mut().for_each(|c| *c = 0);
        scores.clear();
        self.scores = scores;
        HealthSummary { stats, median_score: median, class_mix }
    }
}
