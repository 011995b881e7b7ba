//! The firmware's scoring loop: windows of the sample stream through the DSP feature
//! backbone and the head of `vigil-core`, the alarm policy, and a fixed ring of reports.

use heapless::Vec;
use vigil_core::alarm::{AlarmPolicy, AlarmState, AlarmTransition};
use vigil_core::bearing::BearingGeometry;
use vigil_core::features::{
    self, FeatureScratch, FeatureSpec, FEATURE_COUNT, FEATURE_HOP as HOP, FEATURE_WINDOW, FIRST_POWER_BAND,
    POWER_BANDS,
};
use vigil_core::head::{argmax, softmax_in_place, HeadRef, PrototypeRef};
use vigil_core::report::{alarm_class, top_bands_by_excess, AnomalyReport, BandContribution, ReportKind};
use vigil_core::sensor::{SensorCheck, SensorLimits, SensorWatch};
use vigil_core::update::{HeadUpdate, HeadWeights};
use vigil_core::wire::NackReason;
use vigil_core::{CoreError, MAX_CLASSES, MAX_TOP_BANDS};

/// Reports the ring keeps; older ones are overwritten and counted. A power of two, so
/// that a sequence number maps to its slot without a 64-bit division, and at most 32, the
/// bits of the occupancy mask.
pub const REPORT_RING: usize = 32;
const _: () = assert!(REPORT_RING.is_power_of_two() && REPORT_RING <= 32);

fn ring_index(sequence: u64) -> usize {
    sequence as usize % REPORT_RING
}

/// The head the device scores with, unpacked to f32 for speed.
#[derive(Debug, Clone)]
pub struct ActiveHead {
    version: u32,
    classes: u8,
    weights: [f32; MAX_CLASSES * FEATURE_COUNT],
    bias: [f32; MAX_CLASSES],
    mean: [f32; FEATURE_COUNT],
    var: [f32; FEATURE_COUNT],
    alarm: AlarmPolicy,
}

impl ActiveHead {
    /// Whether `update` fits the feature backbone of the model `model_hash` names, with
    /// any number of classes.
    pub fn check(update: &HeadUpdate, model_hash: &[u8; 32]) -> Result<(), NackReason> {
        update.fits(model_hash, FEATURE_COUNT, None)
    }

    /// Unpacks a checked update.
    pub fn from_update(update: &HeadUpdate) -> Result<Self, CoreError> {
        let classes = usize::from(update.classes);
        let mut head = ActiveHead {
            version: update.version,
            classes: update.classes,
            weights: [0.0; MAX_CLASSES * FEATURE_COUNT],
            bias: [0.0; MAX_CLASSES],
            mean: [0.0; FEATURE_COUNT],
            var: [0.0; FEATURE_COUNT],
            alarm: update.alarm,
        };
        update.weights_into(&mut head.weights[..classes * FEATURE_COUNT])?;
        head.bias[..classes].copy_from_slice(&update.bias);
        head.mean.copy_from_slice(&update.prototype_mean);
        head.var.copy_from_slice(&update.prototype_var);
        Ok(head)
    }

    /// The head as an update (f32 weights), for snapshots.
    pub fn to_update(&self, model_hash: [u8; 32]) -> HeadUpdate {
        let classes = usize::from(self.classes);
        fn collect<const N: usize>(values: &[f32]) -> Vec<f32, N> {
            values.iter().copied().collect()
        }
        HeadUpdate {
            model_hash,
            version: self.version,
            inputs: FEATURE_COUNT as u16,
            classes: self.classes,
            weights: HeadWeights::F32(collect(&self.weights[..classes * FEATURE_COUNT])),
            bias: collect(&self.bias[..classes]),
            prototype_mean: collect(&self.mean),
            prototype_var: collect(&self.var),
            alarm: self.alarm,
        }
    }

    /// Version of the head.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Number of classes.
    pub fn classes(&self) -> u8 {
        self.classes
    }
}

/// A report as the ring keeps it: the device-wide fields (model hash) are added when it is
/// sent.
#[derive(Debug, Clone, Copy)]
struct StoredReport {
    sequence: u64,
    kind: ReportKind,
    /// Stream index one past the window's last sample.
    sample_end: u64,
    score: f32,
    threshold: f32,
    class: u8,
    classes: u8,
    /// Class probabilities in units of 1/65,535.
    probabilities: [u16; MAX_CLASSES],
    head_version: u32,
    /// Index of each top power band and its excess over the prototype in dB.
    top_bands: [(u8, f32); MAX_TOP_BANDS],
    top_band_count: u8,
    label: Option<u8>,
}

/// An unused ring slot (all zero bytes).
const EMPTY_REPORT: StoredReport = StoredReport {
    sequence: 0,
    kind: ReportKind::AlarmRaised,
    sample_end: 0,
    score: 0.0,
    threshold: 0.0,
    class: 0,
    classes: 0,
    probabilities: [0; MAX_CLASSES],
    head_version: 0,
    top_bands: [(0, 0.0); MAX_TOP_BANDS],
    top_band_count: 0,
    label: None,
};

/// What the monitor has done since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Windows scored.
    pub windows_scored: u64,
    /// Windows skipped as sensor faults (one report per episode).
    pub sensor_faults: u64,
    /// Reports overwritten in the ring before anyone pulled them.
    pub reports_overwritten: u64,
    /// Labels received.
    pub labels: u64,
}

/// Windows the stream, scores each window and keeps reports.
#[derive(Debug)]
pub struct Monitor {
    spec: FeatureSpec,
    window: [f32; FEATURE_WINDOW],
    filled: usize,
    /// Stream index of the next sample expected.
    next_sample: u64,
    scratch: FeatureScratch,
    features: [f32; FEATURE_COUNT],
    head: Option<ActiveHead>,
    /// Index of the healthy class, which an alarm never names.
    normal_class: u8,
    alarm: Option<AlarmState>,
    sensor: SensorWatch,
    last_score: f32,
    ring: [StoredReport; REPORT_RING],
    /// Bit `i` set: ring slot `i` holds a report.
    occupied: u32,
    next_sequence: u64,
    counters: Counters,
}

impl Monitor {
    /// A monitor for streams described by `spec`, with no head yet (windows are counted,
    /// not scored, until a head is applied).
    pub fn new(spec: FeatureSpec) -> Result<Self, CoreError> {
        let mut monitor = Self::unconfigured();
        monitor.configure(spec)?;
        Ok(monitor)
    }

    /// A monitor with no stream yet, to be configured in place with
    /// [`Monitor::configure`]: a board builds its 15 KiB monitor once, where building one
    /// through a `Result` moves it several times on the stack.
    pub const fn unconfigured() -> Self {
        let none =
            BearingGeometry { n_balls: 0, ball_diameter: 0.0, pitch_diameter: 0.0, contact_angle: 0.0 };
        Monitor {
            spec: FeatureSpec { sample_rate_hz: 0.0, shaft_hz: 0.0, bearing: none },
            window: [0.0; FEATURE_WINDOW],
            filled: 0,
            next_sample: 0,
            scratch: FeatureScratch::new(),
            features: [0.0; FEATURE_COUNT],
            head: None,
            normal_class: 0,
            alarm: None,
            sensor: SensorWatch::new(SensorLimits::DEFAULT),
            last_score: 0.0,
            ring: [EMPTY_REPORT; REPORT_RING],
            occupied: 0,
            next_sequence: 0,
            counters: Counters { windows_scored: 0, sensor_faults: 0, reports_overwritten: 0, labels: 0 },
        }
    }

    /// Sets the stream the monitor expects, once its spec validates.
    pub fn configure(&mut self, spec: FeatureSpec) -> Result<(), CoreError> {
        spec.validate()?;
        self.spec = spec;
        Ok(())
    }

    /// The stream the monitor expects.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Sets the index of the healthy class (0 unless the class names say otherwise).
    pub fn set_normal_class(&mut self, class: u8) {
        self.normal_class = class;
    }

    /// Takes windows beyond `limits` for sensor faults from now on.
    pub fn set_sensor_limits(&mut self, limits: SensorLimits) -> Result<(), CoreError> {
        limits.validate()?;
        self.sensor = SensorWatch::new(limits);
        Ok(())
    }

    /// The head in use, if any.
    pub fn head(&self) -> Option<&ActiveHead> {
        self.head.as_ref()
    }

    /// Scores with `head` from the next window on; the alarm state starts afresh.
    pub fn apply_head(&mut self, head: ActiveHead) {
        self.alarm = AlarmState::new(head.alarm).ok();
        self.head = Some(head);
    }

    /// Counters since the start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether the alarm is active.
    pub fn alarm_active(&self) -> bool {
        self.alarm.as_ref().is_some_and(AlarmState::is_active)
    }

    /// Score of the last scored window.
    pub fn last_score(&self) -> f32 {
        self.last_score
    }

    /// Threshold in force (0 without a head).
    pub fn threshold(&self) -> f32 {
        self.head.as_ref().map_or(0.0, |h| h.alarm.threshold)
    }

    /// Sequence number the next report gets.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Stream index of the next sample expected.
    pub fn next_sample(&self) -> u64 {
        self.next_sample
    }

    /// Takes little-endian f32 samples starting at stream index `first`. A chunk that ends
    /// at or before the next expected sample is a repeat and is ignored; one that starts
    /// past it is refused.
    pub fn samples(&mut self, first: u64, data: &[u8]) -> Result<u64, NackReason> {
        if !data.len().is_multiple_of(4) {
            return Err(NackReason::BadPayload);
        }
        let count = (data.len() / 4) as u64;
        if first > self.next_sample {
            return Err(NackReason::SampleGap { expected: self.next_sample });
        }
        let skip = (self.next_sample - first).min(count) as usize;
        for bytes in data.chunks_exact(4).skip(skip) {
            let sample = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            self.push(sample);
        }
        Ok(self.counters.windows_scored)
    }

    fn push(&mut self, sample: f32) {
        self.window[self.filled] = sample;
        self.filled += 1;
        self.next_sample += 1;
        if self.filled == FEATURE_WINDOW {
            self.score_window();
            // The second half becomes the first (a copy between halves, not a memmove).
            let (first, second) = self.window.split_at_mut(HOP);
            first.copy_from_slice(&second[..HOP]);
            self.filled = FEATURE_WINDOW - HOP;
        }
    }

    /// Scores the full window.
    fn score_window(&mut self) {
        let check = self.sensor.check(&self.window);
        if let Some(reason) = check.fault() {
            self.counters.sensor_faults += 1;
            if matches!(check, SensorCheck::FaultBegan(_)) {
                self.record(ReportKind::SensorFault, 0.0, reason as u8, None);
            }
            return;
        }
        if features::extract(&self.spec, &self.window, &mut self.scratch, &mut self.features).is_err() {
            return;
        }
        self.counters.windows_scored += 1;
        let Some(head) = &self.head else { return };
        let classes = usize::from(head.classes);
        let mut probabilities = [0.0f32; MAX_CLASSES];
        let scored = HeadRef::new(
            &head.weights[..classes * FEATURE_COUNT],
            &head.bias[..classes],
            FEATURE_COUNT,
            classes,
        )
        .and_then(|h| h.logits(&self.features, &mut probabilities[..classes]))
        .and_then(|()| PrototypeRef::new(&head.mean, &head.var))
        .and_then(|p| p.score(&self.features));
        let Ok(score) = scored else { return };
        softmax_in_place(&mut probabilities[..classes]);
        self.last_score = score;
        let transition = self.alarm.as_mut().map_or(AlarmTransition::None, |a| a.update(score));
        let kind = match transition {
            AlarmTransition::None => return,
            AlarmTransition::Raised => ReportKind::AlarmRaised,
            AlarmTransition::Cleared => ReportKind::AlarmCleared,
        };
        let scored = &probabilities[..classes];
        let class = match kind {
            ReportKind::AlarmRaised => alarm_class(scored, usize::from(self.normal_class)),
            _ => argmax(scored).unwrap_or(0) as u8,
        };
        self.record(kind, score, class, Some(probabilities));
    }

    /// Keeps a report naming `class` (for a sensor fault, the reason's code).
    fn record(&mut self, kind: ReportKind, score: f32, class: u8, probabilities: Option<[f32; MAX_CLASSES]>) {
        let (classes, head_version) = self.head.as_ref().map_or((0, 0), |h| (h.classes, h.version));
        let probabilities = probabilities.unwrap_or([0.0; MAX_CLASSES]);
        let mut top_bands = [(0u8, 0.0f32); MAX_TOP_BANDS];
        let mut top_band_count = 0;
        if let (Some(head), ReportKind::AlarmRaised) = (&self.head, kind) {
            // Band features are natural logs of power shares, so a band's excess over the
            // prototype in dB is the difference times 10 / ln 10.
            let (features, mean) = (&self.features, &head.mean);
            let band = |i: usize| FIRST_POWER_BAND + i;
            let excess = |i: usize| (features[band(i)] - mean[band(i)]) * (10.0 / core::f32::consts::LN_10);
            let top = top_bands_by_excess(POWER_BANDS, self.spec.sample_rate_hz / 2.0, excess);
            top_band_count = top.len() as u8;
            let width = self.spec.sample_rate_hz / 2.0 / POWER_BANDS as f32;
            for (slot, band) in top_bands.iter_mut().zip(&top) {
                *slot = ((band.low_hz / width + 0.5) as u8, band.excess_db);
            }
        }
        let report = StoredReport {
            sequence: self.next_sequence,
            kind,
            sample_end: self.next_sample,
            score,
            threshold: self.threshold(),
            class,
            classes,
            probabilities: probabilities.map(|p| (p.clamp(0.0, 1.0) * 65_535.0 + 0.5) as u16),
            head_version,
            top_bands,
            top_band_count,
            label: None,
        };
        let index = ring_index(self.next_sequence);
        if self.occupied & (1 << index) != 0 {
            self.counters.reports_overwritten += 1;
        }
        self.occupied |= 1 << index;
        self.ring[index] = report;
        self.next_sequence += 1;
    }

    fn stored(&self, sequence: u64) -> Option<&StoredReport> {
        let index = ring_index(sequence);
        let report = &self.ring[index];
        (self.occupied & (1 << index) != 0 && report.sequence == sequence).then_some(report)
    }

    /// The kept report with the smallest sequence number at or after `since`.
    pub fn report_from(&self, since: u64, model_hash: [u8; 32]) -> Option<AnomalyReport> {
        let oldest = self.next_sequence.saturating_sub(REPORT_RING as u64);
        let stored = (since.max(oldest)..self.next_sequence).find_map(|s| self.stored(s))?;
        let classes = usize::from(stored.classes);
        let width = self.spec.sample_rate_hz / 2.0 / POWER_BANDS as f32;
        Some(AnomalyReport {
            sequence: stored.sequence,
            kind: stored.kind,
            // In f32: exact to the sample for the first 2^24 samples, within 4 ms after
            // a day at 16 kHz, and no double-precision arithmetic in the firmware.
            stream_time_s: f64::from(stored.sample_end as f32 / self.spec.sample_rate_hz),
            score: stored.score,
            threshold: stored.threshold,
            class_index: stored.class,
            probabilities: stored.probabilities[..classes].iter().map(|&q| f32::from(q) / 65_535.0).collect(),
            model_hash,
            head_version: stored.head_version,
            top_bands: stored.top_bands[..usize::from(stored.top_band_count)]
                .iter()
                .map(|&(band, excess_db)| BandContribution {
                    low_hz: f32::from(band) * width,
                    high_hz: f32::from(band + 1) * width,
                    excess_db,
                })
                .collect::<Vec<_, MAX_TOP_BANDS>>(),
            spectrum: None,
        })
    }

    /// Records a technician's label for a kept report.
    pub fn label(&mut self, sequence: u64, class: u8) -> Result<(), NackReason> {
        let classes = self.head.as_ref().map_or(0, |h| h.classes);
        if class >= classes {
            return Err(NackReason::UnknownClass { classes });
        }
        let index = ring_index(sequence);
        let report = &mut self.ring[index];
        if self.occupied & (1 << index) == 0 || report.sequence != sequence {
            return Err(NackReason::UnknownReport);
        }
        // A second verdict replaces the first; the count is of labelled reports.
        if report.label.replace(class).is_none() {
            self.counters.labels += 1;
        }
        Ok(())
    }

    /// The label given to a kept report, if any.
    pub fn label_of(&self, sequence: u64) -> Option<u8> {
        self.stored(sequence).and_then(|r| r.label)
    }
}
