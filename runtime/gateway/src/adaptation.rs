//! On-site adaptation on a gateway: the core's [`SiteAdapter`] and [`LabelAdapter`] beside
//! the scorer, with their state kept in A/B slots in the state folder (`adapted/`), so an
//! adapted gateway comes back adapted after a restart.
//!
//! The state is saved when commissioning ends, after every label that changed the head,
//! and after every [`SAVE_EVERY_UPDATES`] prototype updates. It is saved with the head
//! version it was learned on; a gateway that starts with another head (a pushed update)
//! starts adapting afresh from that head.

use crate::error::{Result, RuntimeError};
use crate::model::VigilModel;
use crate::slots::FileSlots;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_core::adapt::label::{LabelAdapter, LabelConfig, LabelOutcome, LabelProgress};
use vigil_core::adapt::site::{SiteAdapter, SiteConfig, SiteEvent};
use vigil_core::adapt::AdaptationStats;
use vigil_core::alarm::AlarmPolicy;
use vigil_core::head::{HeadRef, PrototypeRef};
use vigil_core::update::slots::Slots;

/// Folder of the adapted state inside the state folder.
pub const ADAPTED_DIR: &str = "adapted";
/// Bytes one adapted-state slot holds (the shipped model's state is about 64 KiB).
pub const ADAPTED_SLOT_CAPACITY: u32 = 1 << 20;
/// Prototype updates between two saves of the state.
pub const SAVE_EVERY_UPDATES: u32 = 256;
/// Embeddings of recent reports kept for technicians' labels.
pub const RECENT_REPORTS: usize = 256;
/// Replay samples kept per class.
pub const REPLAY_PER_CLASS: u8 = 16;

/// How a gateway adapts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptationSettings {
    /// The site adaptation (commissioning length, false-alarm target, update rule).
    pub site: SiteConfig,
    /// Commission the site before alarms are armed; otherwise start armed from the
    /// model's prototype and threshold.
    pub commission: bool,
    /// How labels change the head.
    pub label: LabelConfig,
}

impl AdaptationSettings {
    /// The settings for `model` at the stream's hop (the model's when `None`):
    /// commissioning over `commission` of stream time (at least 4 windows), the threshold
    /// calibrated to `false_alarms_per_day`. Without `commission`, alarms are armed from
    /// the start with the model's prototype and threshold.
    pub fn for_stream(
        model: &VigilModel,
        hop: Option<usize>,
        commission: Option<Duration>,
        false_alarms_per_day: f32,
    ) -> Result<AdaptationSettings> {
        let windows_per_s = windows_per_s(model.metadata(), hop);
        let windows = commission.map(|d| (d.as_secs_f64() * windows_per_s).ceil() as u32);
        Self::for_windows(model, hop, windows, false_alarms_per_day)
    }

    /// As [`AdaptationSettings::for_stream`], commissioning over `commission_windows`.
    pub fn for_windows(
        model: &VigilModel,
        hop: Option<usize>,
        commission_windows: Option<u32>,
        false_alarms_per_day: f32,
    ) -> Result<AdaptationSettings> {
        let windows_per_s = windows_per_s(model.metadata(), hop);
        let commission = commission_windows.is_some();
        let independent_per_day = independent_windows_per_day(model.metadata(), hop) as f32;
        let mut site = SiteConfig::new(commission_windows.unwrap_or(4), independent_per_day);
        site.false_alarms_per_day = false_alarms_per_day;
        if site.commission_windows < 4 {
            return Err(RuntimeError::Config(format!(
                "commissioning is shorter than 4 windows ({:.2} s of healthy signal): {} window(s)",
                4.0 / windows_per_s,
                site.commission_windows
            )));
        }
        site.validate().map_err(|e| {
            RuntimeError::Config(format!("--false-alarms-per-day {false_alarms_per_day}: {e}"))
        })?;
        Ok(AdaptationSettings { site, commission, label: LabelConfig::default() })
    }
}

/// Independent chances of a false alarm per day for `meta`'s model at `hop` (the model's
/// when `None`): windows that overlap share their samples and rise over a threshold
/// together, so a stream offers one per window length, not one per hop (see
/// `vigil_core::adapt::site`). A threshold meant for N false alarms a day is the score a
/// window exceeds with probability N over this.
pub fn independent_windows_per_day(meta: &crate::metadata::ModelMetadata, hop: Option<usize>) -> f64 {
    let overlap = (meta.window as f64 / hop.unwrap_or(meta.hop).max(1) as f64).max(1.0);
    windows_per_s(meta, hop) * 86_400.0 / overlap
}

/// Windows per second of stream for `meta`'s model at `hop` (the model's when `None`).
pub fn windows_per_s(meta: &crate::metadata::ModelMetadata, hop: Option<usize>) -> f64 {
    meta.sample_rate_hz / hop.unwrap_or(meta.hop).max(1) as f64
}

/// What is saved.
#[derive(Debug, Serialize, Deserialize)]
struct SavedAdaptation {
    head_version: u32,
    dim: u32,
    classes: u32,
    label_config: (f32, u8, f32, u8),
    site: SiteAdapter,
    progress: LabelProgress,
    storage: Vec<f32>,
}

/// The adapters, the embeddings of recent reports and where their state is saved.
#[derive(Debug)]
pub struct Adaptation {
    site: SiteAdapter,
    labels: LabelAdapter<Vec<f32>>,
    settings: AdaptationSettings,
    head_version: u32,
    recent: VecDeque<(u64, Vec<f32>)>,
    store: Option<(Slots<FileSlots>, PathBuf)>,
    model_hash: [u8; 32],
    updates_at_save: u32,
}

fn label_config_key(c: &LabelConfig) -> (f32, u8, f32, u8) {
    (c.learning_rate, c.steps, c.anchor, c.per_class)
}

impl Adaptation {
    /// Starts adapting `head` and `prototype` (of head version `head_version` of the
    /// model `model_hash`) under `policy`, or resumes the state saved in `state_dir`
    /// when it was learned on the same model and head. Returns what happened, for the log.
    pub fn start(
        settings: AdaptationSettings,
        head: HeadRef<'_>,
        prototype: PrototypeRef<'_>,
        policy: AlarmPolicy,
        head_version: u32,
        model_hash: [u8; 32],
        state_dir: Option<&Path>,
    ) -> Result<(Self, String)> {
        let site = if settings.commission {
            SiteAdapter::commission(settings.site, prototype, policy)?
        } else {
            SiteAdapter::armed(settings.site, prototype, policy)?
        };
        let storage = vec![
            0.0;
            LabelAdapter::<Vec<f32>>::storage_len(
                head.dim(),
                head.classes(),
                usize::from(settings.label.per_class)
            )
        ];
        let labels = LabelAdapter::new(settings.label, head, prototype, storage)?;
        let mut adaptation = Adaptation {
            site,
            labels,
            settings,
            head_version,
            recent: VecDeque::new(),
            store: None,
            model_hash,
            updates_at_save: 0,
        };
        let Some(dir) = state_dir else {
            return Ok((adaptation, "adaptation state is not kept (no state folder)".into()));
        };
        let path = dir.join(ADAPTED_DIR);
        let io = |source: std::io::Error| RuntimeError::StoreIo { path: path.clone(), source };
        let files = FileSlots::with_capacity(&path, ADAPTED_SLOT_CAPACITY).map_err(io)?;
        let mut slots = Slots::open(files).map_err(io)?;
        let damaged = slots.damaged_records() > 0;
        let message = match adaptation.resume_from(&mut slots, head) {
            Ok(Some(message)) if damaged => format!(
                "{message}; fell back to the older of its two saved copies: the newer one in {} is \
                 damaged (torn by a power cut, or altered)",
                path.display()
            ),
            Ok(Some(message)) => message,
            Ok(None) if damaged => format!(
                "WARNING: no saved copy of the adapted state in {} is intact (torn by a power cut, \
                 or altered): what this site learned is lost, and adaptation starts afresh from \
                 the model's head (commission the site again)",
                path.display()
            ),
            Ok(None) => "no adapted state saved yet".to_owned(),
            Err(problem) => format!("adapted state in {} not used: {problem}", path.display()),
        };
        adaptation.store = Some((slots, path));
        Ok((adaptation, message))
    }

    fn resume_from(
        &mut self,
        slots: &mut Slots<FileSlots>,
        head: HeadRef<'_>,
    ) -> std::result::Result<Option<String>, String> {
        let Some(active) = slots.active().copied() else { return Ok(None) };
        if active.record.model_hash != self.model_hash {
            return Err("it was learned on another model".into());
        }
        let mut buf = vec![0u8; active.record.length as usize];
        let bytes =
            slots.read_active(&mut buf).map_err(|e| e.to_string())?.ok_or("its slot is unreadable")?;
        let saved: SavedAdaptation =
            postcard::from_bytes(bytes).map_err(|e| format!("it does not decode ({e})"))?;
        if saved.head_version != self.head_version {
            return Err(format!(
                "it was learned on head version {}, the gateway runs {}",
                saved.head_version, self.head_version
            ));
        }
        let shape_fits = saved.dim as usize == head.dim() && saved.classes as usize == head.classes();
        if !shape_fits || saved.label_config != label_config_key(&self.settings.label) {
            return Err("its shape or label settings differ from this gateway's".into());
        }
        let labels = LabelAdapter::resume(
            self.settings.label,
            head.dim(),
            head.classes(),
            saved.storage,
            saved.progress,
        )
        .map_err(|e| e.to_string())?;
        saved.site.prototype().score(&vec![0.0; head.dim()]).map_err(|e| e.to_string())?;
        self.site = saved.site;
        self.labels = labels;
        self.updates_at_save = self.site.counts().1;
        let stats = self.stats();
        Ok(Some(format!(
            "restored adapted state: {:?} site, {} windows seen, {} prototype updates, {} labels learned",
            self.site.phase(),
            stats.windows_seen,
            stats.prototype_updates,
            stats.labels_accepted
        )))
    }

    /// Saves the state in its A/B slots (when a state folder was given).
    pub fn save(&mut self) -> Result<()> {
        let head = self.labels.head();
        let saved = SavedAdaptation {
            head_version: self.head_version,
            dim: head.dim() as u32,
            classes: head.classes() as u32,
            label_config: label_config_key(&self.settings.label),
            site: self.site.clone(),
            progress: self.labels.progress(),
            storage: self.labels.storage().to_vec(),
        };
        let Some((slots, path)) = self.store.as_mut() else { return Ok(()) };
        let bytes = postcard::to_allocvec(&saved)?;
        let mut scratch = vec![0u8; bytes.len()];
        slots.save(&self.model_hash, self.head_version, &bytes, &mut scratch).map_err(|reason| {
            RuntimeError::StoreIo { path: path.clone(), source: std::io::Error::other(format!("{reason:?}")) }
        })?;
        self.updates_at_save = self.site.counts().1;
        Ok(())
    }

    /// The site adapter.
    pub fn site(&self) -> &SiteAdapter {
        &self.site
    }

    /// The head as adapted by labels.
    pub fn head(&self) -> HeadRef<'_> {
        self.labels.head()
    }

    /// What the adapters have learned from.
    pub fn stats(&self) -> AdaptationStats {
        let (windows_seen, prototype_updates) = self.site.counts();
        let mut stats = AdaptationStats { windows_seen, prototype_updates, ..AdaptationStats::default() };
        self.labels.add_counts(&mut stats);
        stats
    }

    /// Takes one scored window (see [`SiteAdapter::observe`]); saves the state when
    /// commissioning ends and every [`SAVE_EVERY_UPDATES`] prototype updates.
    pub fn observe(
        &mut self,
        embedding: &[f32],
        score: f32,
        normal_probability: f32,
        alarm_active: bool,
    ) -> Result<SiteEvent> {
        let event = self.site.observe(embedding, score, normal_probability, alarm_active)?;
        let due = self.site.counts().1 >= self.updates_at_save + SAVE_EVERY_UPDATES;
        if matches!(event, SiteEvent::Commissioned { .. }) || due {
            self.save()?;
        }
        Ok(event)
    }

    /// Keeps the embedding of the window report `sequence` was made from, for a label.
    pub fn remember(&mut self, sequence: u64, embedding: &[f32]) {
        if self.recent.len() == RECENT_REPORTS {
            self.recent.pop_front();
        }
        self.recent.push_back((sequence, embedding.to_vec()));
    }

    /// Learns a technician's label for report `sequence`; `None` when its window is no
    /// longer held (older than the last [`RECENT_REPORTS`] reports, or from before a
    /// restart). A label that `replaces` an earlier verdict on the same report first takes
    /// the window out of that class's replay samples, so that it is never held as both.
    /// Saves the state when the head changed.
    pub fn learn(
        &mut self,
        sequence: u64,
        class: usize,
        replaces: Option<usize>,
    ) -> Result<Option<LabelOutcome>> {
        let Some((_, embedding)) = self.recent.iter().find(|(s, _)| *s == sequence) else { return Ok(None) };
        if let Some(old) = replaces {
            self.labels.forget(embedding, old);
        }
        let outcome = self.labels.learn(embedding, class)?;
        if matches!(outcome, LabelOutcome::Accepted { .. }) {
            self.save()?;
        }
        Ok(Some(outcome))
    }

    /// Starts label adaptation afresh from a new head (a pushed update); the site keeps
    /// its prototype and threshold, which describe the backbone's embeddings of this
    /// machine and stay valid under any head.
    pub fn replace_head(&mut self, head: HeadRef<'_>, head_version: u32) -> Result<()> {
        let storage = vec![0.0; self.labels.storage().len()];
        self.labels = LabelAdapter::new(self.settings.label, head, self.site.prototype(), storage)?;
        self.head_version = head_version;
        self.save()
    }
}
