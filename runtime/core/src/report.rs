//! Anomaly reports: what a device records when something happens on its stream.

use crate::{MAX_CLASSES, MAX_TOP_BANDS};
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// What a report records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReportKind {
    /// The alarm policy raised an alarm on this window.
    AlarmRaised,
    /// The alarm cleared on this window.
    AlarmCleared,
    /// The window held NaN or infinite samples and was not scored.
    SensorFault,
}

/// One frequency band and how far its energy stands above the normal-state baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BandContribution {
    /// Lower edge of the band in Hz.
    pub low_hz: f32,
    /// Upper edge of the band in Hz.
    pub high_hz: f32,
    /// Band energy over the baseline energy of the same band, in dB.
    pub excess_db: f32,
}

/// A report of one event on a device's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyReport {
    /// Sequence number, unique and increasing per device.
    pub sequence: u64,
    /// What happened.
    pub kind: ReportKind,
    /// Time of the end of the window, in seconds since the start of the stream.
    pub stream_time_s: f64,
    /// Anomaly score of the window (0 for a sensor fault).
    pub score: f32,
    /// Threshold in force when the report was made.
    pub threshold: f32,
    /// Most probable fault class (index into the model's class names).
    pub class_index: u8,
    /// Probability of each class.
    pub probabilities: Vec<f32, MAX_CLASSES>,
    /// SHA-256 of the model file that scored the window.
    pub model_hash: [u8; 32],
    /// Version of the head that scored the window.
    pub head_version: u32,
    /// The bands whose energy stood furthest above the baseline.
    pub top_bands: Vec<BandContribution, MAX_TOP_BANDS>,
    /// The spectrum and envelope spectrum of the window (alarm reports).
    pub spectrum: Option<SpectrumSnapshot>,
}

/// Most bins of a [`SpectrumBins`].
pub const MAX_SPECTRUM_BINS: usize = 128;

/// A power spectrum in at most [`MAX_SPECTRUM_BINS`] bins from 0 Hz, each stored as its
/// level below the peak in steps of [`SpectrumBins::DB_STEP`] (one byte per bin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumBins {
    /// Width of one bin in Hz; bin `i` spans `[i, i + 1) * bin_hz`.
    pub bin_hz: f32,
    /// Level of the strongest bin, in dB.
    pub top_db: f32,
    /// Each bin's level below `top_db`, in steps of `DB_STEP` (255: at or below the floor).
    pub levels: Vec<u8, MAX_SPECTRUM_BINS>,
}

impl SpectrumBins {
    /// Resolution of the stored levels, in dB.
    pub const DB_STEP: f32 = 0.5;

    /// Reduces `power` (bins of `bin_hz` from 0 Hz) up to `max_hz`, summing neighbouring
    /// bins so that at most [`MAX_SPECTRUM_BINS`] remain.
    pub fn from_power(power: &[f32], bin_hz: f32, max_hz: f32) -> Self {
        let usable = if bin_hz > 0.0 { ((max_hz / bin_hz) as usize).min(power.len()) } else { 0 };
        let group = usable.div_ceil(MAX_SPECTRUM_BINS).max(1);
        let mut sums: Vec<f32, MAX_SPECTRUM_BINS> = Vec::new();
        for chunk in power[..usable].chunks(group) {
            // Cannot overflow: usable / group <= MAX_SPECTRUM_BINS.
            let _ = sums.push(chunk.iter().sum());
        }
        let db = |p: f32| 10.0 * libm::log10f(p.max(1e-30));
        let top_db = sums.iter().fold(f32::NEG_INFINITY, |m, &p| m.max(db(p)));
        let levels = sums
            .iter()
            .map(|&p| libm::roundf(((top_db - db(p)) / Self::DB_STEP).clamp(0.0, 255.0)) as u8)
            .collect();
        SpectrumBins {
            bin_hz: bin_hz * group as f32,
            top_db: if top_db.is_finite() { top_db } else { 0.0 },
            levels,
        }
    }

    /// Level of bin `i` in dB.
    pub fn db(&self, i: usize) -> f32 {
        self.top_db - self.levels.get(i).map_or(255.0, |&l| f32::from(l)) * Self::DB_STEP
    }

    /// Centre frequency of bin `i` in Hz.
    pub fn centre_hz(&self, i: usize) -> f32 {
        (i as f32 + 0.5) * self.bin_hz
    }

    /// The strongest bin at or above `min_hz`, if any.
    pub fn peak_from(&self, min_hz: f32) -> Option<usize> {
        (0..self.levels.len()).filter(|&i| self.centre_hz(i) >= min_hz).min_by_key(|&i| self.levels[i])
    }
}

/// What an alarm report carries to explain itself: the window's spectrum and its envelope
/// spectrum, where bearing fault frequencies show up as peaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumSnapshot {
    /// Power spectrum of the window, 0 Hz to Nyquist.
    pub spectrum: SpectrumBins,
    /// Power spectrum of the window's envelope (high-passed above the shaft-harmonic
    /// range), 0 Hz to [`ENVELOPE_MAX_HZ`].
    pub envelope: SpectrumBins,
}

/// Highest frequency kept of an envelope spectrum.
pub const ENVELOPE_MAX_HZ: f32 = 1000.0;
/// Envelope analysis looks at the signal above this frequency, where impacts ring the
/// structure and shaft harmonics are absent.
pub const ENVELOPE_HIGH_PASS_HZ: f32 = 1000.0;

/// Picks the bands with the largest excess over `baseline` (both as energies per band,
/// equally wide from 0 to `nyquist_hz`), largest first.
pub fn top_band_contributions(
    bands: &[f32],
    baseline: &[f32],
    nyquist_hz: f32,
) -> Vec<BandContribution, MAX_TOP_BANDS> {
    let n = bands.len().min(baseline.len());
    top_bands_by_excess(n, nyquist_hz, |i| 10.0 * libm::log10f((bands[i] + 1e-12) / (baseline[i] + 1e-12)))
}

/// Picks, among `n` equally wide bands from 0 to `nyquist_hz`, the ones whose excess over
/// the baseline (`excess_db(i)`, in dB) is largest, largest first; non-finite excesses are
/// skipped.
pub fn top_bands_by_excess(
    n: usize,
    nyquist_hz: f32,
    excess_db: impl Fn(usize) -> f32,
) -> Vec<BandContribution, MAX_TOP_BANDS> {
    let mut top: Vec<BandContribution, MAX_TOP_BANDS> = Vec::new();
    if n == 0 {
        return top;
    }
    let width = nyquist_hz / n as f32;
    for i in 0..n {
        let excess_db = excess_db(i);
        if !excess_db.is_finite() {
            continue;
        }
        let c = BandContribution { low_hz: i as f32 * width, high_hz: (i + 1) as f32 * width, excess_db };
        let pos = top.iter().position(|t| c.excess_db > t.excess_db).unwrap_or(top.len());
        if pos < MAX_TOP_BANDS {
            if top.is_full() {
                top.pop();
            }
            // Cannot fail: one slot was freed above when full. Swapping into place rather
            // than inserting keeps a memmove out of microcontroller builds.
            let _ = top.push(c);
            for i in (pos + 1..top.len()).rev() {
                top.swap(i, i - 1);
            }
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_bands_are_sorted_by_excess() {
        let baseline = [1.0; 8];
        let bands = [1.0, 4.0, 1.0, 100.0, 1.0, 10.0, 0.5, 1.0];
        let top = top_band_contributions(&bands, &baseline, 8000.0);
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].low_hz, 3000.0);
        assert!((top[0].excess_db - 20.0).abs() < 1e-3);
        assert_eq!(top[1].low_hz, 5000.0);
        assert_eq!(top[2].low_hz, 1000.0);
        assert!(top_band_contributions(&[], &[], 8000.0).is_empty());
    }
}
