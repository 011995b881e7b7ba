//! Streaming sample-rate conversion, so a stream recorded at any rate can feed a model
//! trained at another.
//!
//! Band-limited interpolation with a Blackman-windowed sinc kernel of
//! [`HALF_TAPS`] zero crossings on each side; when converting down, the kernel's cut-off
//! follows the output's Nyquist frequency so nothing aliases. One [`Resampler`] handles one
//! channel; it keeps only the last `2 * HALF_TAPS` input samples.

use crate::CoreError;
use core::f64::consts::PI;

/// Zero crossings of the interpolation kernel on each side of the output instant.
pub const HALF_TAPS: usize = 16;
/// Input samples kept; bounds the kernel width, so conversions down by more than
/// `HISTORY / (2 * HALF_TAPS)` (8x) use a shorter kernel.
const HISTORY: usize = 256;
/// Resolution of the tabulated kernel over one half-width.
const TABLE: usize = 4096;

/// A streaming single-channel resampler.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Kernel cut-off relative to the input Nyquist frequency (1 when upsampling).
    cutoff: f64,
    /// Half-width of the kernel, in input samples.
    half_width: f64,
    ring: [f32; HISTORY],
    /// The kernel sampled at `|x| = i * half_width / TABLE`, linearly interpolated.
    table: [f32; TABLE + 1],
    /// Number of input samples pushed so far.
    pushed: u64,
    /// Position of the next output instant, in input-sample units.
    next_out: f64,
}

impl Resampler {
    /// A resampler from `from_hz` to `to_hz`; both must be finite and positive.
    pub fn new(from_hz: f64, to_hz: f64) -> Result<Self, CoreError> {
        if !(from_hz.is_finite() && from_hz > 0.0 && to_hz.is_finite() && to_hz > 0.0) {
            return Err(CoreError::NotPositive);
        }
        let step = from_hz / to_hz;
        // Down: cut off a little below the output's Nyquist frequency. Up (or equal): the
        // kernel is an ideal interpolator whose zeros fall on the input samples.
        let cutoff = if step > 1.0 { 0.95 / step } else { 1.0 };
        // Keep the kernel within the stored history: the width in input samples shrinks
        // with the cut-off only as far as the ring allows.
        let half_width = (HALF_TAPS as f64 / cutoff).min((HISTORY / 2 - 1) as f64);
        let mut r = Resampler {
            step,
            cutoff,
            half_width,
            ring: [0.0; HISTORY],
            table: [0.0; TABLE + 1],
            pushed: 0,
            next_out: 0.0,
        };
        for i in 0..=TABLE {
            r.table[i] = r.kernel(i as f64 * half_width / TABLE as f64) as f32;
        }
        Ok(r)
    }

    /// Pushes one input sample and calls `emit` for every output sample now computable.
    /// Output `n` is at input time `n * from_hz / to_hz`, so the output lags the input by
    /// about `HALF_TAPS` input samples.
    pub fn push(&mut self, sample: f32, mut emit: impl FnMut(f32)) {
        self.ring[(self.pushed % HISTORY as u64) as usize] = sample;
        self.pushed += 1;
        let newest = (self.pushed - 1) as f64;
        while self.next_out + self.half_width <= newest {
            emit(self.interpolate(self.next_out));
            self.next_out += self.step;
        }
    }

    fn interpolate(&self, t: f64) -> f32 {
        let lo = libm::ceil(t - self.half_width).max(0.0) as u64;
        let hi = libm::floor(t + self.half_width) as u64;
        let oldest = self.pushed.saturating_sub(HISTORY as u64);
        let (mut acc, mut norm) = (0.0f64, 0.0f64);
        for j in lo.max(oldest)..=hi.min(self.pushed - 1) {
            let x = j as f64 - t;
            let w = self.tabulated_kernel(x);
            acc += w * f64::from(self.ring[(j % HISTORY as u64) as usize]);
            norm += w;
        }
        if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        }
    }

    fn tabulated_kernel(&self, x: f64) -> f64 {
        let pos = x.abs() / self.half_width * TABLE as f64;
        let i = pos as usize;
        if i >= TABLE {
            return 0.0;
        }
        let frac = pos - i as f64;
        f64::from(self.table[i]) * (1.0 - frac) + f64::from(self.table[i + 1]) * frac
    }

    fn kernel(&self, x: f64) -> f64 {
        let arg = x * self.cutoff;
        let sinc = if arg.abs() < 1e-9 { 1.0 } else { libm::sin(PI * arg) / (PI * arg) };
        let u = x / self.half_width;
        if u.abs() >= 1.0 {
            return 0.0;
        }
        // Blackman window over [-1, 1].
        let p = PI * (u + 1.0);
        let window = 0.42 - 0.5 * libm::cos(p) + 0.08 * libm::cos(2.0 * p);
        sinc * window
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn resample(x: &[f32], from: f64, to: f64) -> Vec<f32> {
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for &v in x {
            r.push(v, |y| out.push(y));
        }
        out
    }

    fn tone(hz: f64, rate: f64, n: usize) -> Vec<f32> {
        (0..n).map(|i| libm::sin(2.0 * PI * hz * i as f64 / rate) as f32).collect()
    }

    #[test]
    fn same_rate_is_identity() {
        let x = tone(440.0, 16000.0, 200);
        let y = resample(&x, 16000.0, 16000.0);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn downsampled_tone_keeps_its_frequency_and_amplitude() {
        let x = tone(1000.0, 48828.0, 48828);
        let y = resample(&x, 48828.0, 16000.0);
        assert!((y.len() as i64 - 16000).abs() < 20, "{}", y.len());
        let expect = tone(1000.0, 16000.0, y.len());
        for i in 100..y.len() - 100 {
            assert!((y[i] - expect[i]).abs() < 0.02, "sample {i}: {} vs {}", y[i], expect[i]);
        }
    }

    #[test]
    fn tone_above_new_nyquist_is_suppressed() {
        let x = tone(12000.0, 48000.0, 48000);
        let y = resample(&x, 48000.0, 16000.0);
        let peak = y[100..y.len() - 100].iter().fold(0.0f32, |p, v| p.max(v.abs()));
        assert!(peak < 0.05, "aliased peak {peak}");
    }

    #[test]
    fn bad_rates_are_refused() {
        assert!(Resampler::new(0.0, 1.0).is_err());
        assert!(Resampler::new(1.0, f64::NAN).is_err());
    }
}
