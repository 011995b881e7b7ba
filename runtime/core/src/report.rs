//! Anomaly reports: what a device records when something happens on its stream.

use crate::head::argmax;
use crate::sensor::SensorFaultReason;
use crate::{MAX_CLASSES, MAX_TOP_BANDS};
use core::fmt;
use heapless::Vec;
use serde::{Deserialize, Serialize};

/// What a report records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReportKind {
    /// The alarm policy raised an alarm on this window.
    AlarmRaised,
    /// The alarm cleared on this window.
    AlarmCleared,
    /// The window was not a measurement (see [`crate::sensor`]) and was not scored; the
    /// reason is [`AnomalyReport::sensor_fault`].
    SensorFault,
    /// A periodic health record of the machine (`score` is the period's median score,
    /// `class_index` its commonest class, `probabilities` the share of windows in each
    /// class). Gateways and hosts only (feature `std`): the firmware keeps no health
    /// records, and without the variant its report ring stays the size it was.
    #[cfg(feature = "std")]
    Health(HealthStats),
}

/// What a health record sums up over its period, beside the median score: the overall
/// levels a technician compares with ISO 10816 / ISO 20816 zones, and the worst score.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HealthStats {
    /// Seconds of stream the record covers.
    pub period_s: f32,
    /// Windows scored in it.
    pub windows: u32,
    /// Windows not scored because the sensor was at fault.
    pub sensor_faults: u32,
    /// Overall RMS acceleration, in g.
    pub rms_g: f32,
    /// RMS velocity over 10-1000 Hz, in mm/s.
    pub velocity_mm_s: f32,
    /// Largest absolute acceleration, in g.
    pub peak_g: f32,
    /// Mean kurtosis of the windows (3 for Gaussian vibration; impacts raise it).
    pub kurtosis: f32,
    /// Largest anomaly score of the period.
    pub score_max: f32,
    /// The shaft speed in Hz, where the gateway knows it.
    pub shaft_hz: Option<f32>,
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
    /// For an alarm, the class it names ([`alarm_class`]; [`NO_KNOWN_CLASS`] when the
    /// window is unlike normal but like no known fault); for a cleared alarm, the likeliest
    /// class; for a sensor fault, the [`SensorFaultReason`] code. Read it through
    /// [`AnomalyReport::finding`].
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

/// The `class_index` of an alarm whose window is unlike normal but whose classifier still
/// finds it likeliest normal: no known fault pattern.
pub const NO_KNOWN_CLASS: u8 = u8::MAX;

/// Below this probability the likeliest fault class of an unrecognised anomaly is not
/// worth naming even as a hint.
pub const HINT_MIN_PROBABILITY: f32 = 0.2;

/// The class an alarm names, from the classifier's `probabilities` and the index of the
/// normal class: the likeliest class when it is a fault, [`NO_KNOWN_CLASS`] when the
/// likeliest is normal (the anomaly score, not the classifier, raised the alarm). The one
/// rule for gateway and firmware alike.
pub fn alarm_class(probabilities: &[f32], normal_class: usize) -> u8 {
    match argmax(probabilities) {
        Some(top) if top != normal_class => top as u8,
        _ => NO_KNOWN_CLASS,
    }
}

/// The index of the class named `normal` in comma-separated class names (0 when none is).
pub fn normal_class_of(class_names: &str) -> usize {
    class_names.split(',').position(|n| n.trim_ascii() == "normal").unwrap_or(0)
}

/// What a report says it found, as derived from its fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finding {
    /// An alarm on a known fault pattern.
    Fault {
        /// The class's index.
        class: u8,
        /// The classifier's probability of it.
        probability: f32,
    },
    /// An alarm on a window unlike this machine's normal that matches no known fault.
    Unrecognised {
        /// The likeliest other class and its probability, when at least
        /// [`HINT_MIN_PROBABILITY`].
        hint: Option<(u8, f32)>,
    },
    /// The alarm cleared.
    Cleared,
    /// The window was not a measurement.
    SensorFault(Option<SensorFaultReason>),
    /// A periodic health record.
    #[cfg(feature = "std")]
    Health(HealthStats),
}

impl AnomalyReport {
    /// What the report found.
    pub fn finding(&self) -> Finding {
        let p = |i: u8| self.probabilities.get(usize::from(i)).copied().unwrap_or(0.0);
        match self.kind {
            ReportKind::AlarmCleared => Finding::Cleared,
            ReportKind::SensorFault => Finding::SensorFault(self.sensor_fault()),
            #[cfg(feature = "std")]
            ReportKind::Health(stats) => Finding::Health(stats),
            ReportKind::AlarmRaised if self.class_index != NO_KNOWN_CLASS => {
                Finding::Fault { class: self.class_index, probability: p(self.class_index) }
            }
            ReportKind::AlarmRaised => {
                // The likeliest class is normal, so the runner-up is the likeliest fault.
                let top = argmax(&self.probabilities);
                let runner_up = (0..self.probabilities.len())
                    .filter(|&i| Some(i) != top)
                    .max_by(|&a, &b| self.probabilities[a].total_cmp(&self.probabilities[b]))
                    .map(|i| i as u8);
                let hint = runner_up.map(|i| (i, p(i))).filter(|&(_, q)| q >= HINT_MIN_PROBABILITY);
                Finding::Unrecognised { hint }
            }
        }
    }

    /// The reason of a sensor-fault report (`None` for other reports, or a reason this
    /// build does not know).
    pub fn sensor_fault(&self) -> Option<SensorFaultReason> {
        (self.kind == ReportKind::SensorFault)
            .then(|| SensorFaultReason::from_code(self.class_index))
            .flatten()
    }

    /// The report in one line for people, with the model's class names
    /// (`names(i)` is class `i`'s name, if known).
    pub fn describe<'a, N: Fn(u8) -> Option<&'a str>>(&'a self, names: N) -> Description<'a, N> {
        Description { report: self, names }
    }
}

/// A report as one line of text: see [`AnomalyReport::describe`].
pub struct Description<'a, N> {
    report: &'a AnomalyReport,
    names: N,
}

impl<'a, N: Fn(u8) -> Option<&'a str>> fmt::Display for Description<'a, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        let name = |i: u8| (self.names)(i).unwrap_or("?");
        let at = (r.sequence, r.stream_time_s);
        match r.finding() {
            Finding::Fault { class, probability } => write!(
                f,
                "ALARM #{} at {:.2} s: {} (p={probability:.2}), score {:.1} > threshold {:.1}",
                at.0,
                at.1,
                name(class),
                r.score,
                r.threshold
            )?,
            Finding::Unrecognised { hint } => {
                write!(
                    f,
                    "ALARM #{} at {:.2} s: anomaly, unlike this machine's normal; no known fault pattern",
                    at.0, at.1
                )?;
                if let Some((class, p)) = hint {
                    write!(f, " (nearest: {}, p={p:.2})", name(class))?;
                }
                write!(f, ", score {:.1} > threshold {:.1}", r.score, r.threshold)?;
            }
            Finding::Cleared => {
                return write!(
                    f,
                    "cleared #{} at {:.2} s: score {:.1} back under {:.1}",
                    at.0, at.1, r.score, r.threshold
                )
            }
            Finding::SensorFault(reason) => {
                let why = reason.map_or("a sensor fault this build does not know", |r| r.explanation());
                return write!(f, "SENSOR FAULT #{} at {:.2} s: {why}; not scored", at.0, at.1);
            }
            #[cfg(feature = "std")]
            Finding::Health(h) => {
                return write!(
                    f,
                    "health #{} at {:.2} s: {:.3} g RMS, {:.2} mm/s RMS (10-1000 Hz), peak {:.2} g, kurtosis {:.1}; \
                     score median {:.2}, max {:.2} (threshold {:.2}); {} windows over {:.0} s",
                    at.0,
                    at.1,
                    h.rms_g,
                    h.velocity_mm_s,
                    h.peak_g,
                    h.kurtosis,
                    r.score,
                    h.score_max,
                    r.threshold,
                    h.windows,
                    h.period_s
                )
            }
        }
        if !r.top_bands.is_empty() {
            f.write_str("; top bands: ")?;
            for (i, b) in r.top_bands.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{:.0}-{:.0} Hz {:+.1} dB", b.low_hz, b.high_hz, b.excess_db)?;
            }
        }
        Ok(())
    }
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

    fn alarm(kind: ReportKind, probabilities: &[f32], normal: usize) -> AnomalyReport {
        AnomalyReport {
            sequence: 7,
            kind,
            stream_time_s: 12.5,
            score: 31.0,
            threshold: 20.0,
            class_index: alarm_class(probabilities, normal),
            probabilities: probabilities.iter().copied().collect(),
            model_hash: [0; 32],
            head_version: 1,
            top_bands: Vec::new(),
            spectrum: None,
        }
    }

    fn text(r: &AnomalyReport) -> std::string::String {
        let names = ["normal", "outer_race", "inner_race", "ball"];
        r.describe(|i| names.get(usize::from(i)).copied()).to_string()
    }

    #[test]
    fn an_alarm_names_a_fault_only_when_the_classifier_finds_one() {
        let r = alarm(ReportKind::AlarmRaised, &[0.05, 0.9, 0.03, 0.02], 0);
        assert_eq!(r.finding(), Finding::Fault { class: 1, probability: 0.9 });
        assert_eq!(text(&r), "ALARM #7 at 12.50 s: outer_race (p=0.90), score 31.0 > threshold 20.0");
        // Sure the window is normal, yet the score is anomalous: no fault is named.
        let r = alarm(ReportKind::AlarmRaised, &[1.0, 0.0, 0.0, 0.0], 0);
        assert_eq!(r.class_index, NO_KNOWN_CLASS);
        assert_eq!(r.finding(), Finding::Unrecognised { hint: None });
        assert_eq!(
            text(&r),
            "ALARM #7 at 12.50 s: anomaly, unlike this machine's normal; no known fault pattern, \
             score 31.0 > threshold 20.0"
        );
        assert!(!text(&r).contains("p=0.00"));
        // A runner-up fault worth a hint.
        let r = alarm(ReportKind::AlarmRaised, &[0.5, 0.1, 0.1, 0.3], 0);
        assert_eq!(r.finding(), Finding::Unrecognised { hint: Some((3, 0.3)) });
        assert!(text(&r).contains("no known fault pattern (nearest: ball, p=0.30)"), "{}", text(&r));
        // The normal class need not be first.
        assert_eq!(alarm_class(&[0.1, 0.8, 0.1], 1), NO_KNOWN_CLASS);
        assert_eq!(alarm_class(&[0.7, 0.2, 0.1], 1), 0);
        assert_eq!(normal_class_of("outer,inner, normal"), 2);
        assert_eq!(normal_class_of("a,b"), 0);
    }

    #[test]
    fn a_sensor_fault_says_why() {
        let mut r = alarm(ReportKind::SensorFault, &[], 0);
        r.class_index = SensorFaultReason::Flat as u8;
        assert_eq!(r.finding(), Finding::SensorFault(Some(SensorFaultReason::Flat)));
        assert_eq!(
            text(&r),
            "SENSOR FAULT #7 at 12.50 s: the signal is flat (a dead or disconnected sensor); not scored"
        );
        // Reports from devices that knew only one reason carry code 0.
        r.class_index = 0;
        assert_eq!(r.sensor_fault(), Some(SensorFaultReason::NotFinite));
    }
}
