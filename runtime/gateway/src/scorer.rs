//! Scores windows: normalise, run the backbone in tract, the head and the prototype in
//! Rust, apply the alarm policy and turn what happened into reports.

use crate::adaptation::{Adaptation, AdaptationSettings};
use crate::error::{Result, RuntimeError};
use crate::model::VigilModel;
use crate::plan::Embedder;
use crate::streaming::StreamingEmbedder;
use crate::windower::Window;
use vigil_core::adapt::label::LabelOutcome;
use vigil_core::adapt::site::SiteEvent;
use vigil_core::adapt::{AdaptationStats, HeadSnapshot};
use vigil_core::alarm::{AlarmPolicy, AlarmState, AlarmTransition};
use vigil_core::dsp::{self, Complex32};
use vigil_core::head::{argmax, softmax_in_place};
use vigil_core::report::{
    alarm_class, top_band_contributions, AnomalyReport, ReportKind, SpectrumBins, SpectrumSnapshot,
    ENVELOPE_HIGH_PASS_HZ, ENVELOPE_MAX_HZ,
};
use vigil_core::sensor::{SensorCheck, SensorFaultReason, SensorLimits, SensorWatch};
use vigil_core::update::{HeadParts, HeadUpdate};

/// What scoring one window produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOutcome {
    /// Index of the window in the stream.
    pub index: u64,
    /// Time of the window's end, in seconds since the stream began.
    pub end_time_s: f64,
    /// `None` when the window was not a measurement and was skipped.
    pub scored: Option<WindowScore>,
    /// Why the window was skipped as a sensor fault (the report comes with the first
    /// window of each episode only).
    pub sensor_fault: Option<SensorFaultReason>,
    /// What the alarm did on this window.
    pub transition: AlarmTransition,
    /// The report this window produced, if any (alarm raised or cleared, sensor fault).
    pub report: Option<AnomalyReport>,
    /// The threshold commissioning calibrated, on the window where it ended.
    pub commissioned: Option<f32>,
    /// The health record this window completed, if any ([`crate::health`]).
    pub health: Option<AnomalyReport>,
}

impl WindowOutcome {
    /// The reports this window produced: its event, then the health record it completed.
    pub fn reports(&self) -> impl Iterator<Item = &AnomalyReport> {
        self.report.iter().chain(self.health.iter())
    }
}

/// The numbers computed for one scored window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScore {
    /// Anomaly score against the normal-state prototype.
    pub anomaly: f32,
    /// Class probabilities from the head.
    pub probabilities: Vec<f32>,
    /// Most probable class.
    pub class_index: usize,
}

/// The per-stream scoring pipeline for one model.
#[derive(Debug)]
pub struct WindowScorer {
    model: VigilModel,
    embedder: Embedder,
    alarm: AlarmState,
    next_sequence: u64,
    normalised: Vec<f32>,
    fft: Vec<Complex32>,
    power: Vec<f32>,
    bands: Vec<f32>,
    envelope: Vec<f32>,
    adaptation: Option<Adaptation>,
    streamer: Option<StreamingEmbedder>,
    sensor: SensorWatch,
}

impl WindowScorer {
    /// A scorer whose reports are numbered from `first_sequence`.
    pub fn new(model: VigilModel, first_sequence: u64) -> Result<Self> {
        let embedder = model.embedder()?;
        let meta = model.metadata();
        let alarm = AlarmState::new(meta.alarm)?;
        let n_fft = meta.window.next_power_of_two().max(2);
        let bands = vec![0.0; meta.baseline_bands.len()];
        Ok(WindowScorer {
            embedder,
            alarm,
            next_sequence: first_sequence,
            normalised: Vec::with_capacity(meta.window * meta.channels),
            fft: vec![Complex32::default(); n_fft],
            power: vec![0.0; n_fft / 2],
            bands,
            envelope: Vec::new(),
            adaptation: None,
            streamer: None,
            sensor: SensorWatch::new(SensorLimits::DEFAULT),
            model,
        })
    }

    /// Takes windows beyond `limits` for sensor faults from now on.
    pub fn set_sensor_limits(&mut self, limits: SensorLimits) -> Result<()> {
        limits.validate().map_err(|_| {
            RuntimeError::Config(format!(
                "sensor limits must be finite and positive with flat_g below range_g, got range_g {} \
                 and flat_g {}",
                limits.range_g, limits.flat_g
            ))
        })?;
        self.sensor = SensorWatch::new(limits);
        Ok(())
    }

    /// From now on, windows that follow one another at `hop` samples share their
    /// backbone work: only each window's newest hop runs through the backbone (see
    /// [`crate::streaming`]). Windows must then come at that hop. Returns the streamer,
    /// for saying whether its embeddings are exact.
    pub fn stream(&mut self, hop: usize) -> Result<&StreamingEmbedder> {
        let streamer = StreamingEmbedder::new(&self.model, hop)?;
        let window = self.model.metadata().window;
        if !window.is_multiple_of(hop) {
            let stride = streamer.layout().stride;
            let fits: Vec<String> = (1..=window / stride)
                .map(|k| k * stride)
                .filter(|h| window.is_multiple_of(*h))
                .map(|h| h.to_string())
                .collect();
            return Err(RuntimeError::StreamMismatch(format!(
                "hop {hop} does not divide the model's window of {window} samples, so streamed windows \
                 would not end on a hop; use one of {}",
                fits.join(", ")
            )));
        }
        if streamer.delay_samples() != 0 {
            return Err(RuntimeError::StreamMismatch(format!(
                "the model cannot be streamed: its padded convolutions look {} samples ahead, so a \
                 streamed score would describe an earlier window; score full windows instead",
                streamer.delay_samples()
            )));
        }
        Ok(self.streamer.insert(streamer))
    }

    /// Adapts to the site from now on (see [`crate::adaptation`]), resuming the state
    /// saved in `state_dir` when it fits. Returns what happened, for the log.
    pub fn adapt(
        &mut self,
        settings: AdaptationSettings,
        state_dir: Option<&std::path::Path>,
    ) -> Result<String> {
        let meta = self.model.metadata();
        let (adaptation, message) = Adaptation::start(
            settings,
            self.model.head(),
            self.model.prototype(),
            meta.alarm,
            meta.head_version,
            self.model.hash(),
            state_dir,
        )?;
        self.alarm = AlarmState::new(adaptation.site().policy())?;
        self.adaptation = Some(adaptation);
        Ok(message)
    }

    /// The adaptation, when the scorer adapts.
    pub fn adaptation(&self) -> Option<&Adaptation> {
        self.adaptation.as_ref()
    }

    /// The alarm policy in force (with the commissioned threshold on an adapted site).
    pub fn policy(&self) -> AlarmPolicy {
        *self.alarm.policy()
    }

    /// Learns a technician's label for report `sequence` (see [`Adaptation::learn`]);
    /// `None` when the scorer does not adapt or no longer holds that report's window.
    /// `replaces` is the class of an earlier verdict on the same report, if any.
    pub fn learn_label(
        &mut self,
        sequence: u64,
        class: usize,
        replaces: Option<usize>,
    ) -> Result<Option<LabelOutcome>> {
        match self.adaptation.as_mut() {
            Some(a) => a.learn(sequence, class, replaces),
            None => Ok(None),
        }
    }

    /// The running head, prototype and alarm policy as a head update of `version`,
    /// followed by what adaptation learned from ([`AdaptationStats`]): a head snapshot.
    pub fn snapshot(&self, version: u32) -> Result<Vec<u8>> {
        let (update, stats) = match &self.adaptation {
            Some(a) => {
                let site = a.site().prototype();
                let update = HeadUpdate::from_parts(HeadParts {
                    model_hash: self.model.hash(),
                    version,
                    weights: a.head().weights(),
                    bias: a.head().bias(),
                    prototype_mean: site.mean(),
                    prototype_var: site.var(),
                    alarm: a.site().policy(),
                    int8: false,
                })?;
                (update, a.stats())
            }
            None => (self.model.head_update(version, false)?, AdaptationStats::default()),
        };
        Ok(postcard::to_allocvec(&HeadSnapshot { head: update, stats })?)
    }

    /// The model being run.
    pub fn model(&self) -> &VigilModel {
        &self.model
    }

    /// Scores with the head, prototype and alarm policy of `update` from the next window
    /// on; the alarm starts quiet under the new policy.
    pub fn apply_head(&mut self, update: &vigil_core::update::HeadUpdate) -> Result<()> {
        self.model.apply_head(update)?;
        self.alarm = AlarmState::new(self.model.metadata().alarm)?;
        if let Some(a) = self.adaptation.as_mut() {
            a.replace_head(self.model.head(), update.version)?;
            if a.site().is_armed() {
                self.alarm = AlarmState::new(a.site().policy())?;
            }
        }
        Ok(())
    }

    /// A health record ending with `window`, numbered as the next report.
    pub fn health_report(&mut self, summary: crate::health::HealthSummary, window: &Window) -> AnomalyReport {
        let mut probabilities = vigil_core::heapless::Vec::new();
        for &share in summary.class_mix.iter().take(vigil_core::MAX_CLASSES) {
            let _ = probabilities.push(share);
        }
        let report = AnomalyReport {
            sequence: self.next_sequence,
            kind: ReportKind::Health(summary.stats),
            stream_time_s: window.end_time_s,
            score: summary.median_score,
            threshold: self.alarm.policy().threshold,
            class_index: argmax(&summary.class_mix).unwrap_or(self.model.metadata().normal_class) as u8,
            probabilities,
            model_hash: self.model.hash(),
            head_version: self.model.metadata().head_version,
            top_bands: vigil_core::heapless::Vec::new(),
            spectrum: None,
        };
        self.next_sequence += 1;
        report
    }

    /// The sequence number the next report will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Whether the alarm is active.
    pub fn alarm_active(&self) -> bool {
        self.alarm.is_active()
    }

    /// Runs the backbone and the head on one window and returns the embedding and the
    /// class logits, without touching the alarm state.
    pub fn embed_and_classify(&mut self, window: &Window) -> Result<(Vec<f32>, Vec<f32>)> {
        let embedding = match self.streamer.as_mut() {
            // The streamer scales the raw stream itself; a report normalises its window.
            Some(streamer) => streamer.embed_window(&window.samples, window.index)?,
            None => {
                self.normalise(window);
                self.embedder.run(&self.normalised)?
            }
        };
        let mut logits = vec![0.0; self.model.metadata().class_names.len()];
        match &self.adaptation {
            Some(a) => a.head().logits(&embedding, &mut logits)?,
            None => self.model.head().logits(&embedding, &mut logits)?,
        }
        Ok((embedding, logits))
    }

    fn normalise(&mut self, window: &Window) {
        let meta = self.model.metadata();
        self.normalised.clear();
        self.normalised.extend_from_slice(&window.samples);
        meta.normalise(&mut self.normalised);
    }

    /// Scores one window and updates the alarm.
    pub fn score(&mut self, window: &Window) -> Result<WindowOutcome> {
        let mut outcome = WindowOutcome {
            index: window.index,
            end_time_s: window.end_time_s,
            scored: None,
            sensor_fault: None,
            transition: AlarmTransition::None,
            report: None,
            commissioned: None,
            health: None,
        };
        let check = self.sensor.check(&window.samples);
        outcome.sensor_fault = check.fault();
        if let SensorCheck::FaultBegan(reason) = check {
            let mut report = self.report(ReportKind::SensorFault, window, None)?;
            report.class_index = reason as u8;
            outcome.report = Some(report);
        }
        if outcome.sensor_fault.is_some() {
            return Ok(outcome);
        }
        let (embedding, mut probabilities) = self.embed_and_classify(window)?;
        softmax_in_place(&mut probabilities);
        let anomaly = match &self.adaptation {
            Some(a) => a.site().score(&embedding)?,
            None => self.model.prototype().score(&embedding)?,
        };
        let class_index = argmax(&probabilities).unwrap_or(0);
        let armed = self.adaptation.as_ref().is_none_or(|a| a.site().is_armed());
        if armed {
            outcome.transition = self.alarm.update(anomaly);
        }
        if let Some(a) = self.adaptation.as_mut() {
            let normal = probabilities.get(self.model.metadata().normal_class).copied().unwrap_or(0.0);
            if let SiteEvent::Commissioned { threshold } =
                a.observe(&embedding, anomaly, normal, self.alarm.is_active())?
            {
                self.alarm = AlarmState::new(a.site().policy())?;
                outcome.commissioned = Some(threshold);
            }
        }
        let score = WindowScore { anomaly, probabilities, class_index };
        outcome.report = match outcome.transition {
            AlarmTransition::Raised => Some(self.report(ReportKind::AlarmRaised, window, Some(&score))?),
            AlarmTransition::Cleared => Some(self.report(ReportKind::AlarmCleared, window, Some(&score))?),
            AlarmTransition::None => None,
        };
        if let (Some(a), Some(r)) = (self.adaptation.as_mut(), &outcome.report) {
            a.remember(r.sequence, &embedding);
        }
        outcome.scored = Some(score);
        Ok(outcome)
    }

    /// Spectrum and envelope spectrum of the first channel of the normalised window;
    /// `self.power` must hold that window's power spectrum, and is overwritten.
    fn spectrum_snapshot(&mut self) -> Result<SpectrumSnapshot> {
        let meta = self.model.metadata();
        let first = &self.normalised[..meta.window];
        let bin_hz = (meta.sample_rate_hz / self.fft.len() as f64) as f32;
        let spectrum = SpectrumBins::from_power(&self.power, bin_hz, (meta.sample_rate_hz / 2.0) as f32);
        let high_pass = (ENVELOPE_HIGH_PASS_HZ / bin_hz) as usize;
        self.envelope.resize(first.len(), 0.0);
        dsp::envelope_spectrum(first, high_pass, &mut self.fft, &mut self.envelope, &mut self.power)?;
        let envelope = SpectrumBins::from_power(&self.power, bin_hz, ENVELOPE_MAX_HZ);
        Ok(SpectrumSnapshot { spectrum, envelope })
    }

    fn report(
        &mut self,
        kind: ReportKind,
        window: &Window,
        score: Option<&WindowScore>,
    ) -> Result<AnomalyReport> {
        if self.streamer.is_some() && score.is_some() {
            // Scoring left the window raw; its spectra are of the normalised window.
            self.normalise(window);
        }
        let meta = self.model.metadata();
        let mut report = AnomalyReport {
            sequence: self.next_sequence,
            kind,
            stream_time_s: window.end_time_s,
            score: 0.0,
            threshold: self.alarm.policy().threshold,
            class_index: meta.normal_class as u8,
            probabilities: vigil_core::heapless::Vec::new(),
            model_hash: self.model.hash(),
            head_version: meta.head_version,
            top_bands: vigil_core::heapless::Vec::new(),
            spectrum: None,
        };
        if let Some(score) = score {
            report.score = score.anomaly;
            report.class_index = match kind {
                ReportKind::AlarmRaised => alarm_class(&score.probabilities, meta.normal_class),
                _ => score.class_index as u8,
            };
            for &p in &score.probabilities {
                // Capacity is MAX_CLASSES and the head has at most that many classes.
                let _ = report.probabilities.push(p);
            }
            let wants_bands = !self.bands.is_empty();
            if wants_bands || kind == ReportKind::AlarmRaised {
                // Power spectrum of the first channel of the normalised window (set by the
                // scoring), once for the bands and the snapshot.
                let first = &self.normalised[..meta.window];
                dsp::power_spectrum(first, &mut self.fft, &mut self.power)?;
            }
            if wants_bands {
                dsp::band_energies(&self.power, &mut self.bands);
                report.top_bands = top_band_contributions(
                    &self.bands,
                    &meta.baseline_bands,
                    (meta.sample_rate_hz / 2.0) as f32,
                );
            }
            if kind == ReportKind::AlarmRaised {
                report.spectrum = Some(self.spectrum_snapshot()?);
            }
        }
        self.next_sequence += 1;
        Ok(report)
    }
}
