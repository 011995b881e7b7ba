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

/// The sum of `term(a[i], b[i])` over the shorter of two slices.
///
/// On processors with vector units the sum runs in eight interleaved partial sums, which
/// the compiler keeps in vector registers: one running sum must be added in order and
/// does not vectorise (it took 4 µs of a gateway's 3,072-sample window, for the mean and
/// again for the RMS). A Cortex-M4F has no f32 vectors, so there the plain loop is as
/// fast and smaller.
#[cfg(not(target_os = "none"))]
#[inline]
pub fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| term(*x, *y)).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += term(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The sum of `term(a[i], b[i])` over the shorter of two slices (see the hosted version
/// for why there are two).
#[cfg(target_os = "none")]
#[inline]
pub fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    a.iter().zip(b).map(|(x, y)| term(*x, *y)).sum()
}

/// Root mean square of `x` (0 for an empty slice).
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    libm::sqrtf(lane_sum(x, x, |v, w| v * w) / x.len() as f32)
}

/// Mean of `x` (0 for an empty slice).
pub fn mean(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    lane_sum(x, x, |v, _| v) / x.len() as f32
}

/// Statistics of a window, from two passes over it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    /// Mean.
    pub mean: f32,
    /// Root mean square (about zero, not the mean).
    pub rms: f32,
    /// Mean absolute value.
    pub mean_abs: f32,
    /// Largest absolute value.
    pub peak: f32,
    /// Fourth standardised moment (3 for Gaussian noise; impulsive faults raise it); 0
    /// for a constant window.
    pub kurtosis: f32,
}

impl Moments {
    /// The statistics of `x` (all 0 for an empty slice).
    pub fn of(x: &[f32]) -> Moments {
        if x.is_empty() {
            return Moments::default();
        }
        let n = x.len() as f32;
        let mean = mean(x);
        let (mut squares, mut abs, mut peak, mut m2, mut m4) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &v in x {
            squares += v * v;
            abs += v.abs();
            peak = peak.max(v.abs());
            let d = (v - mean) * (v - mean);
            m2 += d;
            m4 += d * d;
        }
        let kurtosis = if m2 > 0.0 { (m4 / n) / ((m2 / n) * (m2 / n)) } else { 0.0 };
        Moments { mean, rms: libm::sqrtf(squares / n), mean_abs: abs / n, peak, kurtosis }
    }

    /// Peak over RMS; 0 for a silent window.
    pub fn crest_factor(&self) -> f32 {
        if self.rms > 0.0 {
            self.peak / self.rms
        } else {
            0.0
        }
    }
}

/// Kurtosis (fourth standardised moment, 3 for Gaussian noise; impulsive faults raise it).
/// Returns 0 for a constant or empty window.
pub fn kurtosis(x: &[f32]) -> f32 {
    Moments::of(x).kurtosis
}

/// Crest factor: peak absolute value over RMS. Returns 0 for a silent window.
pub fn crest_factor(x: &[f32]) -> f32 {
    Moments::of(x).crest_factor()
}

impl Complex32 {
    /// `re + i im`.
    pub const fn new(re: f32, im: f32) -> Self {
        Complex32 { re, im }
    }

    /// Squared magnitude.
    #[inline]
    pub fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
}

impl core::ops::Mul for Complex32 {
    type Output = Complex32;

    #[inline]
    fn mul(self, other: Complex32) -> Complex32 {
        Complex32 { re: self.re * other.re - self.im * other.im, im: self.re * other.im + self.im * other.re }
    }
}

/// `e^{i angle}`, the rotation twiddle factors are stepped by (`|angle| <= 2 pi`).
pub fn unit(angle: f32) -> Complex32 {
    let (s, c) = sin_cos(angle);
    Complex32 { re: c, im: s }
}

/// Sine and cosine of `x` for `|x| <= 2 pi`, within 3e-7: the reduction to a quarter turn
/// and two short polynomials, without the large-argument reduction of a general `sinf`
/// (2.5 KiB of flash on a microcontroller).
pub fn sin_cos(x: f32) -> (f32, f32) {
    let quarter = core::f32::consts::FRAC_PI_2;
    let turns = x / quarter;
    // Nearest integer (`as` truncates towards zero).
    let k = if turns >= 0.0 { (turns + 0.5) as i32 } else { (turns - 0.5) as i32 };
    let r = x - k as f32 * quarter;
    let r2 = r * r;
    let sin = r * (1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0))));
    let cos = 1.0 - r2 / 2.0 * (1.0 - r2 / 12.0 * (1.0 - r2 / 30.0 * (1.0 - r2 / 56.0)));
    match k.rem_euclid(4) {
        0 => (sin, cos),
        1 => (cos, -sin),
        2 => (-sin, -cos),
        _ => (-cos, sin),
    }
}

/// Radix-2 decimation-in-time FFT, in place. `data.len()` must be a power of two.
///
/// Twiddle factors are stepped by complex rotation (one `sincos` per stage), which keeps
/// the transform cheap on microcontrollers; the relative error stays below 1e-5 up to
/// 4,096 points.
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
    let mut half = 1;
    while half < n {
        let rotation = unit(-core::f32::consts::PI / half as f32);
        for block in data.chunks_exact_mut(2 * half) {
            let (low, high) = block.split_at_mut(half);
            let mut w = Complex32::new(1.0, 0.0);
            for (a, b) in low.iter_mut().zip(high.iter_mut()) {
                let t = w * *b;
                *b = Complex32 { re: a.re - t.re, im: a.im - t.im };
                *a = Complex32 { re: a.re + t.re, im: a.im + t.im };
                w = w * rotation;
            }
        }
        half <<= 1;
    }
    Ok(())
}

/// FFT of a real signal of even length `2 * spectrum.len()` through one complex FFT of
/// half the length. `spectrum` receives bins `0..len` (bin `k` is at `k * rate / (2 * len)`
/// Hz); the Nyquist bin is dropped. `spectrum.len()` must be a power of two.
pub fn real_fft(x: &[f32], spectrum: &mut [Complex32]) -> Result<(), CoreError> {
    check_len(2 * spectrum.len(), x.len())?;
    for (c, pair) in spectrum.iter_mut().zip(x.chunks_exact(2)) {
        *c = Complex32 { re: pair[0], im: pair[1] };
    }
    split_real_fft(spectrum)
}

/// [`real_fft`] of `x` less `m` (its mean) with a Hann taper over its length, without a
/// buffer for the tapered copy.
pub fn real_fft_tapered(x: &[f32], m: f32, spectrum: &mut [Complex32]) -> Result<(), CoreError> {
    check_len(2 * spectrum.len(), x.len())?;
    let mut taper = HannTaper::new(x.len());
    for (c, pair) in spectrum.iter_mut().zip(x.chunks_exact(2)) {
        let re = (pair[0] - m) * taper.next();
        *c = Complex32 { re, im: (pair[1] - m) * taper.next() };
    }
    split_real_fft(spectrum)
}

/// The Hann taper over a window, one value per sample in order, stepped by rotation like
/// the FFT's twiddles.
struct HannTaper {
    w: Complex32,
    rotation: Complex32,
}

impl HannTaper {
    fn new(len: usize) -> Self {
        HannTaper {
            w: Complex32::new(1.0, 0.0),
            rotation: unit(2.0 * core::f32::consts::PI / (len.max(2) - 1) as f32),
        }
    }

    #[inline(always)]
    fn next(&mut self) -> f32 {
        let t = 0.5 - 0.5 * self.w.re;
        self.w = self.w * self.rotation;
        t
    }
}

/// Transforms even/odd samples packed as complex pairs, then splits the result into the
/// transform of the real signal.
fn split_real_fft(spectrum: &mut [Complex32]) -> Result<(), CoreError> {
    let half = spectrum.len();
    fft_in_place(spectrum)?;
    // X[k] = (Z[k] + conj Z[h-k]) / 2 - i W^k (Z[k] - conj Z[h-k]) / 2, W = e^{-i pi / h}.
    let z0 = spectrum[0];
    spectrum[0] = Complex32::new(z0.re + z0.im, 0.0);
    let rotation = unit(-core::f32::consts::PI / half as f32);
    let mut w = rotation;
    for k in 1..=half / 2 {
        let (zk, zm) = (spectrum[k], spectrum[half - k]);
        let even = Complex32::new(0.5 * (zk.re + zm.re), 0.5 * (zk.im - zm.im));
        let odd = Complex32::new(0.5 * (zk.im + zm.im), -0.5 * (zk.re - zm.re));
        let t = w * odd;
        spectrum[k] = Complex32::new(even.re + t.re, even.im + t.im);
        // Bin h-k: the same terms, conjugated, with W^{h-k} = -conj W^k.
        spectrum[half - k] = Complex32::new(even.re - t.re, -(even.im - t.im));
        w = w * rotation;
    }
    Ok(())
}

/// Standard gravity, in mm/s² per g.
const MM_S2_PER_G: f32 = 9_806.65;

/// RMS velocity in mm/s between `low_hz` and `high_hz` of an acceleration window in g, from
/// its [`power_spectrum`] (`power`, bins of `bin_hz` from 0 Hz, Hann-tapered over the
/// window's own length): each bin's acceleration divided by 2πf, the taper's power (3/8)
/// restored, one-sided bins doubled.
pub fn velocity_rms_mm_s(power: &[f32], bin_hz: f32, low_hz: f32, high_hz: f32) -> f32 {
    if bin_hz.is_nan() || bin_hz <= 0.0 {
        return 0.0;
    }
    let first = libm::ceilf(low_hz / bin_hz).max(1.0) as usize;
    let last = ((high_hz / bin_hz) as usize).min(power.len().saturating_sub(1));
    let mut sum = 0.0f32;
    for (k, &p) in power.iter().enumerate().take(last + 1).skip(first) {
        let v = MM_S2_PER_G / (2.0 * core::f32::consts::PI * k as f32 * bin_hz);
        sum += 2.0 * p * v * v;
    }
    libm::sqrtf(sum / 0.375)
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
    let mut taper = HannTaper::new(x.len());
    for (i, slot) in scratch.iter_mut().enumerate() {
        let v = match x.get(i) {
            Some(v) => (v - m) * taper.next(),
            None => 0.0,
        };
        *slot = Complex32 { re: v, im: 0.0 };
    }
    fft_in_place(scratch)?;
    let norm = 1.0 / (x.len() as f32 * x.len() as f32);
    for (p, c) in power.iter_mut().zip(scratch.iter()) {
        *p = c.norm_sqr() * norm;
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
        *e = libm::sqrtf(c.norm_sqr()) * scale;
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
    fn velocity_of_a_sine_is_its_acceleration_over_two_pi_f() {
        // 0.5 g at 100 Hz and at 3 kHz (outside 10-1000 Hz), sampled at 16 kHz.
        let (rate, n) = (16_000.0f32, 2048);
        let x: std::vec::Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / rate;
                0.5 * libm::sinf(2.0 * core::f32::consts::PI * 100.0 * t)
                    + 0.5 * libm::sinf(2.0 * core::f32::consts::PI * 3000.0 * t)
            })
            .collect();
        let mut scratch = std::vec![Complex32::default(); n];
        let mut power = std::vec![0.0; n / 2];
        power_spectrum(&x, &mut scratch, &mut power).unwrap();
        let v = velocity_rms_mm_s(&power, rate / n as f32, 10.0, 1000.0);
        let expected = 0.5 * 9806.65 / (2.0 * core::f32::consts::PI * 100.0) / core::f32::consts::SQRT_2;
        assert!((v / expected - 1.0).abs() < 0.03, "{v} mm/s, expected {expected}");
        assert_eq!(velocity_rms_mm_s(&[0.0; 16], 0.0, 10.0, 1000.0), 0.0);
    }

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
    fn real_fft_equals_the_complex_fft_of_the_same_signal() {
        let x: std::vec::Vec<f32> =
            (0..64).map(|i| libm::sinf(i as f32 * 0.37) + 0.5 * libm::cosf(i as f32 * 1.9) + 0.1).collect();
        let mut full: std::vec::Vec<Complex32> = x.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        fft_in_place(&mut full).unwrap();
        let mut half = [Complex32::default(); 32];
        real_fft(&x, &mut half).unwrap();
        for (k, (a, b)) in half.iter().zip(full.iter()).enumerate() {
            assert!((a.re - b.re).abs() < 1e-4 && (a.im - b.im).abs() < 1e-4, "bin {k}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_4096_point_fft_stays_accurate() {
        // A tone of amplitude 1 at bin 1000: the peak must read n/2 and leakage stay tiny.
        let n = 4096;
        let mut data: std::vec::Vec<Complex32> = (0..n)
            .map(|i| {
                Complex32::new(
                    libm::cosf(2.0 * core::f32::consts::PI * ((1000 * i) % n) as f32 / n as f32),
                    0.0,
                )
            })
            .collect();
        fft_in_place(&mut data).unwrap();
        let peak = libm::sqrtf(data[1000].norm_sqr());
        assert!((peak - n as f32 / 2.0).abs() / (n as f32 / 2.0) < 1e-4, "peak {peak}");
        let leak = data.iter().enumerate().filter(|&(k, _)| k != 1000 && k != n - 1000);
        let worst = leak.map(|(_, c)| libm::sqrtf(c.norm_sqr())).fold(0.0f32, f32::max);
        assert!(worst < 0.05, "largest leakage {worst}");
    }

    #[test]
    fn sin_cos_matches_the_library_over_two_turns() {
        let mut worst = 0.0f32;
        for i in -2000..=2000 {
            let x = i as f32 * core::f32::consts::PI / 1000.0;
            let (s, c) = sin_cos(x);
            worst = worst.max((s - libm::sinf(x)).abs()).max((c - libm::cosf(x)).abs());
        }
        assert!(worst < 3e-7, "largest error {worst}");
    }

    #[test]
    fn fft_refuses_odd_lengths() {
        let mut d = [Complex32::default(); 6];
        assert_eq!(fft_in_place(&mut d), Err(CoreError::NotPowerOfTwo(6)));
    }
}
