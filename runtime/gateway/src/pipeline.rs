//! The scoring pipeline of one stream with its counters and its report store: what
//! `vigil run` drives to the end of a file and what `vigil serve` shares with its agent.

use crate::error::Result;
use crate::scorer::{WindowOutcome, WindowScorer};
use crate::store::ReportStore;
use crate::windower::Window;
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
}

impl Pipeline {
    /// A pipeline numbering its reports after those already in `store`.
    pub fn new(model: crate::model::VigilModel, store: Option<ReportStore>) -> Result<Self> {
        let first = store.as_ref().map_or(0, ReportStore::next_sequence);
        Ok(Pipeline { scorer: WindowScorer::new(model, first)?, store, counts: PipelineCounts::default() })
    }

    /// Scores one window, counts it and stores its report.
    pub fn process(&mut self, window: &Window) -> Result<WindowOutcome> {
        let outcome = self.scorer.score(window)?;
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
        if let Some(report) = &outcome.report {
            if let Some(store) = self.store.as_mut() {
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
