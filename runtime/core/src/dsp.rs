//! DSP features computed identically on gateways and microcontrollers: statistics of a
//! window (RMS, kurtosis, crest factor), an in-place FFT and band energies.

use crate::error::check_len;
use crate::CoreError;

/// A complex number, as used by [`fft_in_place`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Complex32 {
    /// Real part.
    pub re: f32,
    /// Imaginary part.
    pub im: f32,
}

/// Root mean square of `x` (0 for an empty slice).
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    libm::sqrtf(x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32)
}

/// Mean of `x` (0 for an empty slice).
pub fn mean(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().sum::<f32>() / x.len() as f32
}

/// Kurtosis (fourth standardised moment, 3 for Gaussian noise; impulsive faults raise it).
/// Returns 0 for a constant or empty window.
pub fn kurtosis(x: &[f32]) -> f32 {
    let m = mean(x);
    let (mut m2, mut m4) = (0.0f32, 0.0f32);
    for v in x {
        let d = (v - m) * (v - m);
        m2 += d;
        m4 += d * d;
    }
    if m2 <= 0.0 {
        return 0.0;
    }
    let n = x.len() as f32;
    (m4 / n) / ((m2 / n) * (m2 / n))
}

/// Crest factor: peak absolute value over RMS. Returns 0 for a silent window.
pub fn crest_factor(x: &[f32]) -> f32 {
    let r = rms(x);
    if r <= 0.0 {
        return 0.0;
    }
    x.iter().fold(0.0f32, |p, v| p.max(v.abs())) / r
}

/// Radix-2 decimation-in-time FFT, in place. `data.len()` must be a power of two.
pub fn fft_in_place(data: &mut [Complex32]) -> Result<(), CoreError> {
    let n = data.len();
    if n < 2 || !n.is_power_of_two() {
        return Err(CoreError::NotPowerOfTwo(n));
    }
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            data.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let step = -2.0 * core::f32::consts::PI / len as f32;
        for k in 0..len / 2 {
            let (s, c) = libm::sincosf(step * k as f32);
            for start in (0..n).step_by(len) {
                let a = data[start + k];
                let b = data[start + k + len / 2];
                let t = Complex32 { re: b.re * c - b.im * s, im: b.re * s + b.im * c };
                data[start + k] = Complex32 { re: a.re + t.re, im: a.im + t.im };
                data[start + k + len / 2] = Complex32 { re: a.re - t.re, im: a.im - t.im };
            }
        }
        len <<= 1;
    }
    Ok(())
}

/// Power spectrum of a real window, Hann-tapered, mean removed.
///
/// `scratch.len()` must be a power of two and at least `x.len()`; the window is
/// zero-padded to it. Writes `scratch.len() / 2` bins to `power` (bin `i` is at
/// `i * rate / scratch.len()` Hz).
pub fn power_spectrum(x: &[f32], scratch: &mut [Complex32], power: &mut [f32]) -> Result<(), CoreError> {
    let n = scratch.len();
    if n < x.len() {
        return Err(CoreError::LengthMismatch { expected: x.len(), actual: n });
    }
    check_len(n / 2, power.len())?;
    let m = mean(x);
    let denom = (x.len().max(2) - 1) as f32;
    for (i, slot) in scratch.iter_mut().enumerate() {
        let v = match x.get(i) {
            Some(v) => {
                let hann = 0.5 - 0.5 * libm::cosf(2.0 * core::f32::consts::PI * i as f32 / denom);
                (v - m) * hann
            }
            None => 0.0,
        };
        *slot = Complex32 { re: v, im: 0.0 };
    }
    fft_in_place(scratch)?;
    let norm = 1.0 / (x.len() as f32 * x.len() as f32);
    for (p, c) in power.iter_mut().zip(scratch.iter()) {
        *p = (c.re * c.re + c.im * c.im) * norm;
    }
    Ok(())
}

/// Power spectrum of the envelope of a real window: the magnitude of the analytic signal
/// of `x` high-passed above bin `high_pass_bin` (of `scratch.len()`), then mean-removed
/// and Hann-tapered like [`power_spectrum`]. `envelope` (`x.len()` values) receives the
/// envelope; `power` gets `scratch.len() / 2` bins.
pub fn envelope_spectrum(
    x: &[f32],
    high_pass_bin: usize,
    scratch: &mut [Complex32],
    envelope: &mut [f32],
    power: &mut [f32],
) -> Result<(), CoreError> {
    let n = scratch.len();
    if n < x.len() {
        return Err(CoreError::LengthMismatch { expected: x.len(), actual: n });
    }
    check_len(x.len(), envelope.len())?;
    let m = mean(x);
    for (i, slot) in scratch.iter_mut().enumerate() {
        *slot = Complex32 { re: x.get(i).map_or(0.0, |v| v - m), im: 0.0 };
    }
    fft_in_place(scratch)?;
    // Analytic signal: keep positive frequencies above the high-pass, doubled.
    for (i, c) in scratch.iter_mut().enumerate() {
        let gain = if i < high_pass_bin.max(1) || i > n / 2 {
            0.0
        } else if i == n / 2 {
            1.0
        } else {
            2.0
        };
        // Conjugate on the way in: the inverse FFT is conj(FFT(conj(X))) / n.
        *c = Complex32 { re: c.re * gain, im: -c.im * gain };
    }
    fft_in_place(scratch)?;
    let scale = 1.0 / n as f32;
    for (e, c) in envelope.iter_mut().zip(scratch.iter()) {
        *e = libm::sqrtf(c.re * c.re + c.im * c.im) * scale;
    }
    power_spectrum(envelope, scratch, power)
}

/// Sums a power spectrum into `bands.len()` equally wide bands from 0 to Nyquist.
pub fn band_energies(power: &[f32], bands: &mut [f32]) {
    bands.iter_mut().for_each(|b| *b = 0.0);
    if bands.is_empty() || power.is_empty() {
        return;
    }
    for (i, p) in power.iter().enumerate() {
        let b = i * bands.len() / power.len();
        bands[b] += p;
    }
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    #[test]
    fn the_envelope_spectrum_peaks_at_the_impact_rate() {
        // A 3 kHz resonance rung 125 times a second, decaying fast, plus a strong 30 Hz tone
        // that the high-pass removes.
        let rate = 16_000.0;
        let x: std::vec::Vec<f32> = (0..2048)
            .map(|i| {
                let t = i as f32 / rate;
                let since = t % (1.0 / 125.0);
                libm::expf(-since * 1500.0) * libm::sinf(2.0 * core::f32::consts::PI * 3000.0 * t)
                    + 2.0 * libm::sinf(2.0 * core::f32::consts::PI * 30.0 * t)
            })
            .collect();
        let mut scratch = std::vec![Complex32::default(); 2048];
        let mut envelope = std::vec![0.0; 2048];
        let mut power = std::vec![0.0; 1024];
        envelope_spectrum(&x, 128, &mut scratch, &mut envelope, &mut power).unwrap();
        let bin_hz = rate / 2048.0;
        let peak = (2..128).max_by(|&a, &b| power[a].total_cmp(&power[b])).unwrap();
        assert!((peak as f32 * bin_hz - 125.0).abs() <= bin_hz, "peak at {} Hz", peak as f32 * bin_hz);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_signals() {
        let square = [1.0f32, -1.0, 1.0, -1.0];
        assert!((rms(&square) - 1.0).abs() < 1e-6);
        assert!((crest_factor(&square) - 1.0).abs() < 1e-6);
        assert!((kurtosis(&square) - 1.0).abs() < 1e-6);
        let mut spike = [0.0f32; 100];
        spike[50] = 1.0;
        assert!(kurtosis(&spike) > 50.0);
        assert_eq!(kurtosis(&[2.0; 8]), 0.0);
        assert_eq!(crest_factor(&[0.0; 8]), 0.0);
    }

    #[test]
    fn fft_finds_a_tone_in_its_bin() {
        let n = 256;
        let mut x = [0.0f32; 256];
        for (i, v) in x.iter_mut().enumerate() {
            *v = libm::sinf(2.0 * core::f32::consts::PI * 32.0 * i as f32 / n as f32);
        }
        let mut scratch = [Complex32::default(); 256];
        let mut power = [0.0f32; 128];
        power_spectrum(&x, &mut scratch, &mut power).unwrap();
        let peak = crate::head::argmax(&power).unwrap();
        assert_eq!(peak, 32);
        let mut bands = [0.0f32; 8];
        band_energies(&power, &mut bands);
        assert_eq!(crate::head::argmax(&bands), Some(2));
    }

    #[test]
    fn fft_refuses_odd_lengths() {
        let mut d = [Complex32::default(); 6];
        assert_eq!(fft_in_place(&mut d), Err(CoreError::NotPowerOfTwo(6)));
    }
}
