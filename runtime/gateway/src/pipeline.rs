//! The scoring pipeline of one stream with its counters and its report store: what
//! `vigil run` drives to the end of a file and what `vigil serve` shares with its agent.

use crate::error::Result;
use crate::health::HealthMonitor;
use crate::scorer::{WindowOutcome, WindowScorer};
use crate::store::ReportStore;
use crate::windower::Window;
use std::time::Duration;
use vigil_core::alarm::AlarmTransition;

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
        })
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
        if let Some(summary) =
            self.health.as_mut().map(|h| h.observe(window, &outcome)).transpose()?.flatten()
        {
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
