//! The gateway as a device on the wire protocol: what `vigil serve` answers over its serial
//! port, backed by the running pipeline, the report store and files in the state folder.

use crate::pipeline::Pipeline;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use vigil_core::adapt::label::LabelOutcome;
use vigil_core::agent::Device;
use vigil_core::report::AnomalyReport;
use vigil_core::update::HeadUpdate;
use vigil_core::wire::{DeviceInfo, NackReason, Status};

/// File of technician labels in the state folder, one JSON object per line.
pub const LABELS_FILE: &str = "labels.jsonl";

/// One sensor of the gateway as the protocol sees it: its pipeline (scorer, alarm state,
/// report store) and its labels.
#[derive(Debug)]
pub struct DeviceSensor {
    /// The sensor's name, such as `pump-7/DE`.
    pub name: String,
    /// Its pipeline, shared with the scoring thread.
    pub pipeline: Arc<Mutex<Pipeline>>,
    /// Its labels file ([`LABELS_FILE`] in its state folder).
    pub labels: PathBuf,
    snapshot: Vec<u8>,
}

impl DeviceSensor {
    /// Sensor `name` scored by `pipeline`, its labels kept in `state_dir`.
    pub fn new(name: &str, pipeline: Arc<Mutex<Pipeline>>, state_dir: &Path) -> Self {
        let mut sensor = DeviceSensor {
            name: name.to_owned(),
            pipeline,
            labels: state_dir.join(LABELS_FILE),
            snapshot: Vec::new(),
        };
        sensor.refresh_snapshot();
        sensor
    }

    fn refresh_snapshot(&mut self) {
        let p = lock(&self.pipeline);
        let scorer = p.scorer();
        self.snapshot = scorer.snapshot(scorer.model().metadata().head_version).unwrap_or_default();
    }

    /// The class of the latest verdict on `report` in the labels file, if any.
    fn verdict_on(&self, report: u64) -> std::io::Result<Option<u8>> {
        let text = match std::fs::read_to_string(&self.labels) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["report"].as_u64() == Some(report))
            .find_map(|v| v["class_index"].as_u64().and_then(|c| u8::try_from(c).ok())))
    }
}

/// The gateway's side of the protocol: one model and head-update state for the device,
/// and one or more sensors, each with its own pipeline, reports and labels.
#[derive(Debug)]
pub struct GatewayDevice {
    sensors: Vec<DeviceSensor>,
    name: String,
    software: String,
    model_hash: [u8; 32],
    dim: usize,
    class_names: Vec<String>,
    class_list: String,
    public_key: [u8; 32],
    max_version_step: u32,
    started: Instant,
}

impl GatewayDevice {
    /// A device of one sensor named `name` serving `pipeline`, accepting updates signed
    /// for `public_key`, keeping labels in `state_dir`.
    pub fn new(name: &str, pipeline: Arc<Mutex<Pipeline>>, public_key: [u8; 32], state_dir: &Path) -> Self {
        Self::with_sensors(name, vec![DeviceSensor::new(name, pipeline, state_dir)], public_key)
    }

    /// A device named `name` watching `sensors` (at least one, at most 255, all running
    /// the same model), accepting updates signed for `public_key`.
    pub fn with_sensors(name: &str, sensors: Vec<DeviceSensor>, public_key: [u8; 32]) -> Self {
        assert!(
            (1..=usize::from(u8::MAX)).contains(&sensors.len()),
            "a device has 1 to 255 sensors, not {}",
            sensors.len()
        );
        let (model_hash, dim, class_names) = {
            let p = lock(&sensors[0].pipeline);
            let model = p.scorer().model();
            (model.hash(), model.embedding_dim(), model.metadata().class_names.clone())
        };
        GatewayDevice {
            sensors,
            name: name.to_owned(),
            software: format!("vigil {}", env!("CARGO_PKG_VERSION")),
            model_hash,
            dim,
            class_list: class_names.join(","),
            class_names,
            public_key,
            max_version_step: vigil_core::update::MAX_VERSION_STEP,
            started: Instant::now(),
        }
    }

    /// Sets the largest step by which one update may raise the head version.
    pub fn set_max_version_step(&mut self, step: u32) {
        self.max_version_step = step;
    }

    /// Where sensor `sensor` is in the list; the agent checks the index against
    /// `sensors()` first, and an index past the end is the last sensor, not a panic.
    fn index(&self, sensor: u8) -> usize {
        usize::from(sensor).min(self.sensors.len() - 1)
    }

    fn sensor(&self, sensor: u8) -> &DeviceSensor {
        &self.sensors[self.index(sensor)]
    }

    /// Teaches sensor `sensor`'s head the label, when its scorer adapts and still holds
    /// the window.
    fn learn(&mut self, sensor: u8, report: u64, class: u8, replaces: Option<u8>) {
        let name = self.class_names.get(usize::from(class)).map_or("?", String::as_str);
        let i = self.index(sensor);
        let s = &mut self.sensors[i];
        let outcome =
            lock(&s.pipeline).scorer_mut().learn_label(report, usize::from(class), replaces.map(usize::from));
        let who = &s.name;
        match outcome {
            Ok(Some(LabelOutcome::Accepted { replay_accuracy, .. })) => log::info!(
                "{who}: label {name} for report {report}: head adapted (replay accuracy {:.0}%)",
                100.0 * replay_accuracy
            ),
            Ok(Some(LabelOutcome::RolledBack { correct_before, correct_after })) => log::info!(
                "{who}: label {name} for report {report}: rolled back (it would have cut replay accuracy from {correct_before} to {correct_after} samples)"
            ),
            Ok(None) => log::info!("{who}: label {name} for report {report}: recorded; its window is no longer held, so the head did not learn from it"),
            Err(e) => log::warn!("{who}: label {name} for report {report} not learned: {e}"),
        }
        s.refresh_snapshot();
    }

    fn append_label(&self, sensor: u8, report: u64, class: u8, replaces: Option<u8>) -> std::io::Result<()> {
        let mut line = serde_json::json!({
            "report": report,
            "class_index": class,
            "class": self.class_names.get(usize::from(class)),
        });
        if let Some(old) = replaces {
            line["replaces"] = serde_json::json!(self.class_names.get(usize::from(old)));
        }
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.sensor(sensor).labels)?;
        writeln!(file, "{line}")?;
        file.sync_data()
    }
}

/// Locks what the agent shares with the scoring threads (a pipeline, the agent itself); a
/// panic in another thread holding it does not stop the agent.
pub(crate) fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Device for GatewayDevice {
    fn info(&self) -> DeviceInfo<'_> {
        DeviceInfo {
            device: &self.name,
            software: &self.software,
            model_hash: self.model_hash,
            embedding_dim: self.dim as u16,
            classes: self.class_names.len() as u8,
            class_names: &self.class_list,
            head_version: self.head_version(),
            slot_capacity: 0,
        }
    }

    fn sensors(&self) -> u8 {
        self.sensors.len() as u8
    }

    fn sensor_name(&self, sensor: u8) -> &str {
        &self.sensor(sensor).name
    }

    fn status(&self, sensor: u8) -> Status {
        let p = lock(&self.sensor(sensor).pipeline);
        let counts = p.counts();
        Status {
            uptime_s: self.started.elapsed().as_secs() as u32,
            windows_scored: counts.windows,
            sensor_faults: counts.sensor_faults,
            alarm_active: p.scorer().alarm_active(),
            last_score: counts.last_score,
            threshold: p.scorer().policy().threshold,
            next_report: p.scorer().next_sequence(),
            head_version: p.scorer().model().metadata().head_version,
            update: None,
        }
    }

    fn model_hash(&self) -> [u8; 32] {
        self.model_hash
    }

    fn head_version(&self) -> u32 {
        lock(&self.sensors[0].pipeline).scorer().model().metadata().head_version
    }

    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    fn max_version_step(&self) -> u32 {
        self.max_version_step
    }

    fn report_from(&mut self, sensor: u8, since: u64) -> Option<AnomalyReport> {
        lock(&self.sensor(sensor).pipeline).store()?.first_from(since).ok().flatten()
    }

    fn label(&mut self, sensor: u8, report: u64, class: u8) -> Result<(), NackReason> {
        if usize::from(class) >= self.class_names.len() {
            return Err(NackReason::UnknownClass { classes: self.class_names.len() as u8 });
        }
        if !lock(&self.sensor(sensor).pipeline).store().is_some_and(|s| s.contains(report)) {
            return Err(NackReason::UnknownReport);
        }
        // One verdict per report: the same one again changes nothing; another replaces it.
        let earlier = self.sensor(sensor).verdict_on(report).map_err(|_| NackReason::Storage)?;
        if earlier == Some(class) {
            return Ok(());
        }
        self.append_label(sensor, report, class, earlier).map_err(|_| NackReason::Storage)?;
        self.learn(sensor, report, class, earlier);
        Ok(())
    }

    fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason> {
        update.fits(&self.model_hash, self.dim, Some(self.class_names.len()))
    }

    /// A head update is the device's: every sensor runs it from now on.
    fn apply_head(&mut self, update: &HeadUpdate) {
        for s in &mut self.sensors {
            if let Err(e) = lock(&s.pipeline).scorer_mut().apply_head(update) {
                log::warn!("{}: committed head version {} cannot run: {e}", s.name, update.version);
            }
            s.refresh_snapshot();
        }
    }

    fn head_snapshot(&mut self, sensor: u8, offset: u32, out: &mut [u8]) -> Option<(u32, usize)> {
        let i = self.index(sensor);
        let s = &mut self.sensors[i];
        // A transfer starts at offset 0: take the head as adapted by then.
        if offset == 0 {
            s.refresh_snapshot();
        }
        let rest = s.snapshot.get(offset as usize..)?;
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        Some((s.snapshot.len() as u32, n))
    }
}
