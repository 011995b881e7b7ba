//! The scoring pipeline of one stream with its counters and its report store: what
//! `vigil run` drives to the end of a file and what `vigil serve` shares with its agent.

use crate::error::Result;
use crate::health::HealthMonitor;
use crate::scorer::{WindowOutcome, WindowScorer};
use crate::speed::SpeedTracker;
use crate::store::ReportStore;
use crate::windower::Window;
use std::time::Duration;
use vigil_core::alarm::AlarmTransition;
use vigil_core::kinematics::Kinematics;

/// The shaft speed a pipeline works with.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ShaftSpeed {
    /// Shaft speed in Hz.
    pub hz: f32,
    /// How sure the estimate read from the signal is, 0 to 1; None for a speed given.
    pub confidence: Option<f32>,
}

/// Where a pipeline's shaft speed comes from.
#[derive(Debug)]
enum Shaft {
    /// Not asked for.
    Unknown,
    /// From the nameplate or the config.
    Given(f32),
    /// Read from the first channel's last seconds.
    Tracked { tracker: Box<SpeedTracker>, last_end_s: Option<f64> },
}

/// Counts since the pipeline started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PipelineCounts {
    /// Windows scored.
    pub windows: u64,
    /// Alarms raised.
    pub alarms: u64,
    /// Windows skipped as sensor faults.
    pub sensor_faults: u64,
    /// Anomaly score of the last scored window.
    pub last_score: f32,
}

/// A scorer, its counters and (optionally) the store its reports go to.
#[derive(Debug)]
pub struct Pipeline {
    scorer: WindowScorer,
    store: Option<ReportStore>,
    counts: PipelineCounts,
    health: Option<HealthMonitor>,
    shaft: Shaft,
}

impl Pipeline {
    /// A pipeline numbering its reports after those already in `store`.
    pub fn new(model: crate::model::VigilModel, store: Option<ReportStore>) -> Result<Self> {
        let first = store.as_ref().map_or(0, ReportStore::next_sequence);
        Ok(Pipeline {
            scorer: WindowScorer::new(model, first)?,
            store,
            counts: PipelineCounts::default(),
            health: None,
            shaft: Shaft::Unknown,
        })
    }

    /// Sets what is known of the machine. Without a shaft speed, the speed is read from
    /// the first channel's last [`crate::speed::DEFAULT_BLOCK_S`] seconds, looking in
    /// `range` Hz, helped by the bearing when known ([`crate::speed`]).
    pub fn set_kinematics(&mut self, kinematics: Kinematics, range: (f32, f32)) -> Result<()> {
        let rate = self.scorer.model().metadata().sample_rate_hz;
        self.shaft = match kinematics.shaft_hz {
            Some(hz) => Shaft::Given(hz),
            None => {
                let mut tracker = SpeedTracker::new(rate, crate::speed::DEFAULT_BLOCK_S, range)?;
                tracker.set_bearing(kinematics.bearing);
                Shaft::Tracked { tracker: Box::new(tracker), last_end_s: None }
            }
        };
        Ok(())
    }

    /// The shaft speed: as given, or read from the signal when it shows one.
    pub fn shaft_speed(&mut self) -> Option<ShaftSpeed> {
        match &mut self.shaft {
            Shaft::Unknown => None,
            Shaft::Given(hz) => Some(ShaftSpeed { hz: *hz, confidence: None }),
            Shaft::Tracked { tracker, .. } => {
                tracker.estimate().map(|e| ShaftSpeed { hz: e.shaft_hz, confidence: Some(e.confidence) })
            }
        }
    }

    /// Stores a health record every `every` of stream ([`crate::health`]); `None` stops.
    pub fn set_health_every(&mut self, every: Option<Duration>) -> Result<()> {
        let meta = self.scorer.model().metadata();
        self.health = every
            .map(|e| HealthMonitor::new(e, meta.window, meta.sample_rate_hz, meta.class_names.len()))
            .transpose()?;
        Ok(())
    }

    /// Scores one window, counts it and stores its report.
    pub fn process(&mut self, window: &Window) -> Result<WindowOutcome> {
        let mut outcome = self.scorer.score(window)?;
        if let Shaft::Tracked { tracker, last_end_s } = &mut self.shaft {
            // The window's samples not seen in the last one, of the first channel.
            let meta = self.scorer.model().metadata();
            let fresh = match last_end_s {
                Some(last) => ((window.end_time_s - *last) * meta.sample_rate_hz).round().max(0.0) as usize,
                None => meta.window,
            };
            let first = &window.samples[..meta.window.min(window.samples.len())];
            tracker.push(&first[first.len() - fresh.min(first.len())..]);
            *last_end_s = Some(window.end_time_s);
        }
        if let Some(mut summary) =
            self.health.as_mut().map(|h| h.observe(window, &outcome)).transpose()?.flatten()
        {
            summary.stats.shaft_hz = self.shaft_speed().map(|s| s.hz);
            outcome.health = Some(self.scorer.health_report(summary, window));
        }
        if let Some(score) = &outcome.scored {
            self.counts.windows += 1;
            self.counts.last_score = score.anomaly;
        }
        if outcome.transition == AlarmTransition::Raised {
            self.counts.alarms += 1;
        }
        if outcome.sensor_fault.is_some() {
            self.counts.sensor_faults += 1;
        }
        if let Some(store) = self.store.as_mut() {
            for report in outcome.reports() {
                store.append(report)?;
            }
        }
        Ok(outcome)
    }

    /// The counters.
    pub fn counts(&self) -> PipelineCounts {
        self.counts
    }

    /// The scorer.
    pub fn scorer(&self) -> &WindowScorer {
        &self.scorer
    }

    /// The scorer, to replace its head.
    pub fn scorer_mut(&mut self) -> &mut WindowScorer {
        &mut self.scorer
    }

    /// The report store, if reports are kept.
    pub fn store(&self) -> Option<&ReportStore> {
        self.store.as_ref()
    }
}
