//! The DSP feature backbone: 64 features of one 1,024-sample window, computed the same
//! way on microcontrollers (where tract cannot run) and on the host that trains their head.
//!
//! | features | what |
//! |---|---|
//! | 0-3 | log RMS, log kurtosis, log crest factor, log shape factor |
//! | 4-35 | log share of the window's power in 32 equal bands from 0 Hz to Nyquist |
//! | 36-55 | envelope spectrum at the shaft speed, FTF, BPFO, BPFI and twice BSF, harmonics 1-4 |
//! | 56-59 | envelope spectrum at BPFI x 1, 2 minus and plus the shaft speed (inner-race sidebands) |
//! | 60-63 | envelope spectrum at 2 BSF x 1, 2 minus and plus FTF (rolling-element sidebands) |
//!
//! Envelope levels are the log of the strongest envelope-spectrum bin within 2% (slip) of
//! the frequency, over the mean level of the envelope spectrum. The envelope is that of the
//! 256-bin-wide band (a quarter of the sample rate) with the most energy above
//! [`ENVELOPE_HIGH_PASS_HZ`], demodulated to baseband and transformed at 256 points, so a
//! window costs one 512-point and two 256-point complex FFTs, in one 4 KiB buffer.

use crate::bearing::BearingGeometry;
use crate::dsp::{self, Complex32};
use crate::error::check_len;
use crate::report::ENVELOPE_HIGH_PASS_HZ;
use crate::CoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Samples in one window of the feature backbone.
pub const FEATURE_WINDOW: usize = 1024;
/// Samples between the starts of consecutive windows (half a window).
pub const FEATURE_HOP: usize = FEATURE_WINDOW / 2;
/// Features per window.
pub const FEATURE_COUNT: usize = 64;
/// Equal-width power bands from 0 Hz to Nyquist.
pub const POWER_BANDS: usize = 32;
/// Index of the first power-band feature: feature `FIRST_POWER_BAND + i` is the natural
/// log of band `i`'s share of the window's power.
pub const FIRST_POWER_BAND: usize = 4;
/// Points of the demodulated envelope.
const ZOOM: usize = 256;
/// Bins of the window's spectrum.
const BINS: usize = FEATURE_WINDOW / 2;
/// Relative width of the search around a fault frequency (rolling elements slip 1-2%).
const SLIP: f32 = 0.02;
/// Added inside every logarithm so that silence gives a finite feature.
const FLOOR: f32 = 1e-12;
/// Hashed with the spec to name the backbone: changes when the features change.
const BACKBONE_ID: &[u8] = b"vigil-dsp-features-v1\0";

/// What the features depend on: the stream's sample rate and the machine's kinematics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FeatureSpec {
    /// Sample rate of the stream in Hz.
    pub sample_rate_hz: f32,
    /// Shaft speed in Hz.
    pub shaft_hz: f32,
    /// The monitored bearing.
    pub bearing: BearingGeometry,
}

impl FeatureSpec {
    /// Checks that the rates are finite and positive and that the envelope band and the
    /// fault frequencies fit below Nyquist.
    pub fn validate(&self) -> Result<(), CoreError> {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        let geometry = &self.bearing;
        if !positive(self.sample_rate_hz)
            || !positive(self.shaft_hz)
            || geometry.n_balls == 0
            || !positive(geometry.ball_diameter)
            || !positive(geometry.pitch_diameter)
            || geometry.ball_diameter >= geometry.pitch_diameter
            || self.high_pass_bin() + ZOOM > BINS
            || self.orders_hz().iter().fold(0.0f32, |m, &o| m.max(o)) * 4.5 >= self.envelope_nyquist_hz()
        {
            return Err(CoreError::NotPositive);
        }
        Ok(())
    }

    /// SHA-256 naming this backbone (feature definitions and spec): heads trained for
    /// another spec are refused, as a head for another ONNX model is.
    pub fn model_hash(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(BACKBONE_ID);
        hash.update(self.sample_rate_hz.to_le_bytes());
        hash.update(self.shaft_hz.to_le_bytes());
        hash.update(self.bearing.n_balls.to_le_bytes());
        hash.update(self.bearing.ball_diameter.to_le_bytes());
        hash.update(self.bearing.pitch_diameter.to_le_bytes());
        hash.update(self.bearing.contact_angle.to_le_bytes());
        hash.finalize().into()
    }

    /// Shaft, FTF, BPFO, BPFI and twice BSF in Hz.
    pub fn orders_hz(&self) -> [f32; 5] {
        let o = self.bearing.fault_orders().at_shaft_hz(self.shaft_hz);
        [self.shaft_hz, o.ftf, o.bpfo, o.bpfi, 2.0 * o.bsf]
    }

    fn bin_hz(&self) -> f32 {
        self.sample_rate_hz / FEATURE_WINDOW as f32
    }

    fn high_pass_bin(&self) -> usize {
        ceil(ENVELOPE_HIGH_PASS_HZ / self.bin_hz())
    }

    fn envelope_nyquist_hz(&self) -> f32 {
        self.bin_hz() * (ZOOM / 2) as f32
    }
}

/// Working memory of [`extract`], 4 KiB: keep one per device.
#[derive(Debug, Clone)]
pub struct FeatureScratch {
    spectrum: [Complex32; BINS],
}

impl FeatureScratch {
    /// Zeroed scratch (a `const`, so a `static` of it costs no flash).
    pub const fn new() -> Self {
        FeatureScratch { spectrum: [Complex32::new(0.0, 0.0); BINS] }
    }
}

impl Default for FeatureScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Computes the [`FEATURE_COUNT`] features of one [`FEATURE_WINDOW`]-sample window.
pub fn extract(
    spec: &FeatureSpec,
    window: &[f32],
    scratch: &mut FeatureScratch,
    out: &mut [f32],
) -> Result<(), CoreError> {
    check_len(FEATURE_WINDOW, window.len())?;
    check_len(FEATURE_COUNT, out.len())?;
    if window.iter().any(|v| !v.is_finite()) {
        return Err(CoreError::NotFinite);
    }
    let moments = dsp::Moments::of(window);
    out[0] = ln(moments.rms);
    out[1] = ln(moments.kurtosis);
    out[2] = ln(moments.crest_factor());
    out[3] = ln(moments.rms / (moments.mean_abs + FLOOR));
    dsp::real_fft_tapered(window, moments.mean, &mut scratch.spectrum)?;
    power_bands(&scratch.spectrum, &mut out[FIRST_POWER_BAND..FIRST_POWER_BAND + POWER_BANDS]);

    let band = envelope_power(spec, &mut scratch.spectrum)?;
    let envelope = &scratch.spectrum[band..band + ZOOM / 2];
    let mean_level = envelope[1..].iter().map(|c| c.re).sum::<f32>() / (ZOOM / 2 - 1) as f32;
    let level = |hz: f32| ln(peak_near(envelope, hz, spec.bin_hz()) / (mean_level + FLOOR));
    let [shaft, ftf, bpfo, bpfi, two_bsf] = spec.orders_hz();
    let mut i = FIRST_POWER_BAND + POWER_BANDS;
    for base in [shaft, ftf, bpfo, bpfi, two_bsf] {
        for harmonic in 1..=4 {
            out[i] = level(base * harmonic as f32);
            i += 1;
        }
    }
    for (carrier, modulation) in [(bpfi, shaft), (two_bsf, ftf)] {
        for harmonic in 1..=2 {
            let centre = carrier * harmonic as f32;
            out[i] = level(centre - modulation);
            out[i + 1] = level(centre + modulation);
            i += 2;
        }
    }
    Ok(())
}

/// The ceiling of a non-negative `x`, without libm's general `ceilf`.
fn ceil(x: f32) -> usize {
    let whole = x as usize;
    if (whole as f32) < x {
        whole + 1
    } else {
        whole
    }
}

fn ln(v: f32) -> f32 {
    libm::logf(v + FLOOR)
}

/// Log share of the total power in each band.
fn power_bands(spectrum: &[Complex32], bands: &mut [f32]) {
    let per_band = spectrum.len() / bands.len();
    let total = spectrum.iter().map(|c| c.norm_sqr()).sum::<f32>() + FLOOR;
    for (band, bins) in bands.iter_mut().zip(spectrum.chunks_exact(per_band)) {
        *band = ln(bins.iter().map(|c| c.norm_sqr()).sum::<f32>() / total);
    }
}

/// Overwrites the richest band of the window's spectrum with the envelope's power
/// spectrum, in the real parts of `ZOOM / 2` bins from the returned index, at the same bin
/// spacing.
fn envelope_power(spec: &FeatureSpec, spectrum: &mut [Complex32]) -> Result<usize, CoreError> {
    // The band of ZOOM bins, starting on a multiple of an eighth of it above the
    // high-pass, that holds the most energy: where impacts ring the structure.
    let step = ZOOM / 8;
    let first = spec.high_pass_bin();
    // Band energies slide by `step` bins at a time.
    let energy = |bins: &[Complex32]| bins.iter().map(|c| c.norm_sqr()).sum::<f32>();
    let mut current = energy(&spectrum[first..first + ZOOM]);
    let mut best = (first, current);
    let mut start = first;
    while start + step + ZOOM <= spectrum.len() {
        current +=
            energy(&spectrum[start + ZOOM..start + ZOOM + step]) - energy(&spectrum[start..start + step]);
        start += step;
        if current > best.1 {
            best = (start, current);
        }
    }
    // Analytic signal of the band, shifted to baseband (transformed where it lies); inverse
    // FFT through conjugates.
    let zoom = &mut spectrum[best.0..best.0 + ZOOM];
    for z in zoom.iter_mut() {
        z.im = -z.im;
    }
    dsp::fft_in_place(zoom)?;
    let magnitude = |c: &Complex32| libm::sqrtf(c.norm_sqr());
    let mean = zoom.iter().map(magnitude).sum::<f32>() / ZOOM as f32;
    for z in zoom.iter_mut() {
        *z = Complex32::new(magnitude(z) - mean, 0.0);
    }
    dsp::fft_in_place(zoom)?;
    for z in zoom.iter_mut() {
        *z = Complex32::new(z.norm_sqr(), 0.0);
    }
    Ok(best.0)
}

/// The largest level within [`SLIP`] (at least one bin) of `hz`; 0 outside the spectrum.
fn peak_near(envelope: &[Complex32], hz: f32, bin_hz: f32) -> f32 {
    let centre = hz / bin_hz;
    let reach = (centre * SLIP).max(1.0);
    // Truncation is the floor here: below 1 the bound is 1 anyway.
    let low = (centre - reach).max(1.0) as usize;
    let high = ceil(centre + reach).min(envelope.len().saturating_sub(1));
    envelope.get(low..=high).map_or(0.0, |bins| bins.iter().fold(0.0f32, |m, c| m.max(c.re)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::f32::consts::PI;
    use std::vec::Vec;

    fn spec() -> FeatureSpec {
        FeatureSpec { sample_rate_hz: 16_000.0, shaft_hz: 30.0, bearing: BearingGeometry::deep_groove_6205() }
    }

    /// A 3 kHz resonance rung at `rate` impacts per second over broadband noise.
    fn impacts(rate: f32) -> Vec<f32> {
        let mut noise = 12_345u32;
        (0..FEATURE_WINDOW)
            .map(|i| {
                noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let n = (noise >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let t = i as f32 / 16_000.0;
                let since = t % (1.0 / rate);
                libm::expf(-since * 1200.0) * libm::sinf(2.0 * PI * 3000.0 * t) + 0.05 * n
            })
            .collect()
    }

    #[test]
    fn impacts_at_bpfo_raise_the_bpfo_features_above_the_bpfi_ones() {
        let spec = spec();
        let [_, _, bpfo, bpfi, _] = spec.orders_hz();
        let mut scratch = FeatureScratch::default();
        let mut outer = [0.0; FEATURE_COUNT];
        extract(&spec, &impacts(bpfo), &mut scratch, &mut outer).unwrap();
        let mut inner = [0.0; FEATURE_COUNT];
        extract(&spec, &impacts(bpfi), &mut scratch, &mut inner).unwrap();
        // Feature 44 is BPFO x1, 48 is BPFI x1.
        assert!(outer[44] > outer[48] + 1.0, "outer: bpfo {} bpfi {}", outer[44], outer[48]);
        assert!(inner[48] > inner[44] + 1.0, "inner: bpfo {} bpfi {}", inner[44], inner[48]);
        assert!(outer.iter().chain(inner.iter()).all(|v| v.is_finite()));
        // Impacts are impulsive: kurtosis well above the 3 of noise.
        assert!(outer[1] > libm::logf(3.0), "log kurtosis {}", outer[1]);
    }

    #[test]
    fn silence_and_bad_windows() {
        let spec = spec();
        let mut scratch = FeatureScratch::default();
        let mut out = [0.0; FEATURE_COUNT];
        extract(&spec, &[0.0; FEATURE_WINDOW], &mut scratch, &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        let mut nan = [0.1; FEATURE_WINDOW];
        nan[7] = f32::NAN;
        assert_eq!(extract(&spec, &nan, &mut scratch, &mut out), Err(CoreError::NotFinite));
        assert!(extract(&spec, &[0.0; 100], &mut scratch, &mut out).is_err());
    }

    #[test]
    fn specs_that_do_not_fit_are_refused_and_hashes_differ() {
        assert_eq!(spec().validate(), Ok(()));
        assert!(FeatureSpec { sample_rate_hz: 2_000.0, ..spec() }.validate().is_err());
        assert!(FeatureSpec { shaft_hz: f32::NAN, ..spec() }.validate().is_err());
        assert!(FeatureSpec { shaft_hz: 400.0, ..spec() }.validate().is_err());
        assert_ne!(spec().model_hash(), FeatureSpec { shaft_hz: 29.0, ..spec() }.model_hash());
    }
}
