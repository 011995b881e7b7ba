//! Runs a sample stream through the gateway pipeline: windowing, scoring, alarms, the
//! report store. Shared by `vigil run` and `vigil demo`.

use crate::error::{Result, RuntimeError};
use crate::input::SampleSource;
use crate::model::VigilModel;
use crate::pipeline::Pipeline;
use crate::scorer::WindowOutcome;
use crate::store::{FsyncPolicy, ReportStore};
use crate::windower::Windower;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vigil_core::report::AnomalyReport;
use vigil_core::sensor::SensorLimits;

/// How to run a stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Hop between windows in model-rate samples (the model's default when `None`).
    pub hop: Option<usize>,
    /// Pace the input at its sample rate, as a live sensor would deliver it.
    pub realtime: bool,
    /// Sample rate of the stream, overriding what the input says.
    pub rate: Option<f64>,
    /// Run only each window's newest hop through the backbone (`crate::streaming`).
    pub streamed: bool,
    /// What a window must respect to be scored rather than reported as a sensor fault.
    pub sensor: SensorLimits,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            hop: None,
            realtime: false,
            rate: None,
            streamed: false,
            sensor: SensorLimits::DEFAULT,
        }
    }
}

/// Counts at the end of a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamSummary {
    /// Frames read.
    pub frames: u64,
    /// Stream duration in seconds.
    pub stream_seconds: f64,
    /// Windows scored.
    pub windows: u64,
    /// Alarms raised.
    pub alarms: u64,
    /// Windows skipped as sensor faults.
    pub sensor_faults: u64,
    /// Wall-clock time spent.
    pub wall_seconds: f64,
}

impl StreamSummary {
    /// Stream seconds processed per wall-clock second.
    pub fn realtime_factor(&self) -> f64 {
        self.stream_seconds / self.wall_seconds.max(1e-9)
    }
}

/// Checks a stream against a model and builds its windower; also returns the stream's
/// sample rate (the `--rate` override, else what the input states).
pub fn windower_for(
    model: &VigilModel,
    source: &dyn SampleSource,
    options: &StreamOptions,
) -> Result<(Windower, f64)> {
    let meta = model.metadata();
    let name = model.path().display();
    let Some(channels) = source.channels() else { return Err(empty_input()) };
    if channels != meta.channels {
        return Err(RuntimeError::StreamMismatch(format!(
            "the stream has {channels} channel(s) but model {name} expects {} (metadata vigil.channels); \
             give it one column per sensor channel the model was trained on",
            meta.channels
        )));
    }
    let Some(rate) = options.rate.or(source.sample_rate_hz()) else {
        return Err(RuntimeError::StreamMismatch(format!(
            "the input does not say its sample rate; pass --rate HZ (the model runs at {} Hz)",
            meta.sample_rate_hz
        )));
    };
    if !(rate.is_finite() && rate > 0.0) {
        return Err(RuntimeError::StreamMismatch(format!("sample rate {rate} Hz is not a positive number")));
    }
    let windower =
        Windower::new(channels, rate, meta.sample_rate_hz, meta.window, options.hop.unwrap_or(meta.hop))?;
    Ok((windower, rate))
}

/// Streams `source` through `model`, calling `on_window` for every window, `on_event` for
/// every window that produced a report, and appending reports to the store in `reports`.
/// The callbacks' error type is the caller's; the runtime's own errors convert into it.
pub fn run_stream<E: From<RuntimeError>>(
    model: VigilModel,
    source: Box<dyn SampleSource>,
    options: &StreamOptions,
    reports: Option<&Path>,
    on_event: impl FnMut(&WindowOutcome, &AnomalyReport) -> Result<(), E>,
    on_window: impl FnMut(&WindowOutcome) -> Result<(), E>,
) -> Result<StreamSummary, E> {
    let (windower, rate) = windower_for(&model, source.as_ref(), options)?;
    let store = match reports {
        Some(dir) => Some(open_store(dir)?),
        None => None,
    };
    let hop = options.hop.unwrap_or(model.metadata().hop);
    let mut pipeline = Pipeline::new(model, store)?;
    pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
    if options.streamed {
        let streamer = pipeline.scorer_mut().stream(hop)?;
        if let Some(why) = streamer.inexact_reason() {
            log::warn!("streamed scores of this model approximate its full-window scores: {why}");
        }
    }
    let pipeline = Mutex::new(pipeline);
    stream_into(&pipeline, source, (windower, rate), options, on_event, on_window)
}

/// The most memory this process has held resident (VmHWM), where the system says (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Opens the report store in `dir`, with an error that says what to do.
pub fn open_store(dir: &Path) -> Result<ReportStore> {
    ReportStore::open(dir, FsyncPolicy::EveryRecord).map_err(|e| {
        RuntimeError::Input(format!(
            "cannot use report folder {}; pick a writable folder with --reports: {e}",
            dir.display()
        ))
    })
}

/// Streams `source` into a pipeline shared with others (the serial agent of `vigil
/// serve`), locking it for each window only. `stream` is the windower and rate from
/// [`windower_for`].
pub fn stream_into<E: From<RuntimeError>>(
    pipeline: &Mutex<Pipeline>,
    mut source: Box<dyn SampleSource>,
    (mut windower, rate): (Windower, f64),
    options: &StreamOptions,
    mut on_event: impl FnMut(&WindowOutcome, &AnomalyReport) -> Result<(), E>,
    mut on_window: impl FnMut(&WindowOutcome) -> Result<(), E>,
) -> Result<StreamSummary, E> {
    let channels = source.channels().unwrap_or(1);
    let lock = || {
        pipeline
            .lock()
            .map_err(|_| RuntimeError::StreamMismatch("the scoring pipeline failed in another thread".into()))
    };
    let before = lock()?.counts();
    let mut summary = StreamSummary::default();
    let started = Instant::now();
    let mut chunk = Vec::new();
    let chunk_frames = (rate / 20.0).max(64.0) as usize;
    let mut windows = Vec::new();
    while source.read_chunk(&mut chunk, chunk_frames)? {
        summary.frames += (chunk.len() / channels) as u64;
        windows.clear();
        windower.push(&chunk, |w| windows.push(w));
        for w in &windows {
            let outcome = lock()?.process(w)?;
            on_window(&outcome)?;
            if let Some(report) = &outcome.report {
                on_event(&outcome, report)?;
            }
        }
        if options.realtime {
            let due = Duration::from_secs_f64(summary.frames as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    if summary.frames == 0 {
        return Err(empty_input().into());
    }
    let after = lock()?.counts();
    summary.windows = after.windows - before.windows;
    summary.alarms = after.alarms - before.alarms;
    summary.sensor_faults = after.sensor_faults - before.sensor_faults;
    summary.stream_seconds = summary.frames as f64 / rate;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The error for a stream with no samples.
fn empty_input() -> RuntimeError {
    RuntimeError::Input("the input is empty: no samples to score".into())
}
