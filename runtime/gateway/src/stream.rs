//! Runs a sample stream through the gateway pipeline: windowing, scoring, alarms, the
//! report store. Shared by `vigil run` and `vigil demo`.

use crate::adaptation::AdaptationSettings;
use crate::error::{Result, RuntimeError};
use crate::input::SampleSource;
use crate::model::VigilModel;
use crate::pipeline::{Pipeline, ShaftSpeed};
use crate::scorer::WindowOutcome;
use crate::store::{FsyncPolicy, ReportStore};
use crate::windower::Windower;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vigil_core::kinematics::Kinematics;
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
    /// How the stream learns its machine before alarms are armed, if it does.
    pub commissioning: Option<Commissioning>,
    /// Store a health record every this long of stream ([`crate::health`]), if at all.
    pub health_every: Option<Duration>,
    /// What is known of the machine; without a shaft speed it is read from the signal.
    pub kinematics: Kinematics,
    /// Shaft speeds to look for when reading the speed from the signal, in Hz.
    pub speed_range: (f32, f32),
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            hop: None,
            realtime: false,
            rate: None,
            streamed: false,
            sensor: SensorLimits::DEFAULT,
            commissioning: None,
            health_every: None,
            kinematics: Kinematics::default(),
            speed_range: crate::speed::DEFAULT_RANGE_HZ,
        }
    }
}

/// Learning a machine's normal state before arming alarms: the site adaptation of
/// `vigil serve --commission` ([`crate::adaptation`]), from healthy recordings or from the
/// first part of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Commissioning {
    /// Where the healthy windows come from.
    pub from: CommissionFrom,
    /// False alarms per day the calibrated threshold aims at.
    pub false_alarms_per_day: f32,
}

/// Where commissioning's healthy windows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CommissionFrom {
    /// The first part of the stream, this long; alarms are disarmed meanwhile.
    Stream(Duration),
    /// Healthy recordings, every window of them, scored before the stream.
    Baseline(Vec<BaselineFile>),
}

/// A healthy recording to commission on.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineFile {
    /// The file.
    pub path: String,
    /// Its format.
    pub format: crate::input::InputFormat,
    /// Its channels, when the format does not say (f32le).
    pub channels: Option<usize>,
    /// Its sample rate, when the file does not say.
    pub rate: Option<f64>,
}

/// What commissioning learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Commissioned {
    /// Windows it learned from.
    pub windows: u64,
    /// Seconds of healthy signal they span.
    pub seconds: f64,
    /// The threshold it calibrated.
    pub threshold: f32,
    /// The model's own threshold, for comparison.
    pub model_threshold: f32,
}

/// Lowest stream rate accepted, in Hz: below it no bearing frequency can be seen, and a
/// typo (`--rate 16` for 16 kHz) would score a thousand times too much signal.
pub const MIN_RATE_HZ: f64 = 100.0;
/// Highest stream rate accepted, in Hz.
pub const MAX_RATE_HZ: f64 = 10e6;

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
    /// What commissioning learned, when it ended during this run.
    pub commissioned: Option<Commissioned>,
    /// The shaft speed at the end of the stream, as given or read from the signal.
    pub shaft: Option<ShaftSpeed>,
}

impl StreamSummary {
    /// Stream seconds processed per wall-clock second.
    pub fn realtime_factor(&self) -> f64 {
        self.stream_seconds / self.wall_seconds.max(1e-9)
    }
}

/// The stream's sample rate (the `--rate` override, else what the input states), checked
/// to be one a vibration sensor delivers.
pub fn stream_rate(model: &VigilModel, source: &dyn SampleSource, options: &StreamOptions) -> Result<f64> {
    let meta = model.metadata();
    let Some(rate) = options.rate.or(source.sample_rate_hz()) else {
        return Err(RuntimeError::StreamMismatch(format!(
            "the input does not say its sample rate; pass --rate HZ (the model runs at {} Hz)",
            meta.sample_rate_hz
        )));
    };
    if !(rate.is_finite() && rate > 0.0) {
        return Err(RuntimeError::StreamMismatch(format!("sample rate {rate} Hz is not a positive number")));
    }
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate) {
        let hint =
            if rate < MIN_RATE_HZ { format!("; did you mean {} Hz?", rate * 1000.0) } else { String::new() };
        return Err(RuntimeError::StreamMismatch(format!(
            "sample rate {rate} Hz is outside what a vibration sensor delivers ({MIN_RATE_HZ} Hz to \
             {MAX_RATE_HZ:e} Hz); rates are in Hz{hint}"
        )));
    }
    if let (Some(given), Some(stated)) = (options.rate, source.sample_rate_hz()) {
        if (given - stated).abs() > 1e-9 * stated {
            log::warn!(
                "--rate {given} Hz overrides the {stated} Hz the input states; the stream is read at {given} Hz"
            );
        }
    }
    Ok(rate)
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
             give it one column per sensor channel the model was trained on, or score each channel on its \
             own with --sensor-per-channel",
            meta.channels
        )));
    }
    let rate = stream_rate(model, source, options)?;
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
    mut on_window: impl FnMut(&WindowOutcome) -> Result<(), E>,
) -> Result<StreamSummary, E> {
    let (windower, rate) = windower_for(&model, source.as_ref(), options)?;
    let store = match reports {
        Some(dir) => Some(open_store(dir)?),
        None => None,
    };
    let hop = options.hop.unwrap_or(model.metadata().hop);
    let model_threshold = model.metadata().alarm.threshold;
    let baseline = match &options.commissioning {
        Some(Commissioning { from: CommissionFrom::Baseline(files), .. }) => {
            Some(baseline_windows(&model, files, options)?)
        }
        _ => None,
    };
    let adaptation = match &options.commissioning {
        Some(Commissioning { from: CommissionFrom::Stream(d), false_alarms_per_day }) => {
            Some(AdaptationSettings::for_stream(&model, Some(hop), Some(*d), *false_alarms_per_day)?)
        }
        _ => None,
    };
    let mut pipeline = Pipeline::new(model, store)?;
    pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
    if let Some(settings) = adaptation {
        pipeline.scorer_mut().adapt(settings, None)?;
    }
    let mut commissioned = None;
    if let (Some((windows, seconds)), Some(c)) = (baseline, &options.commissioning) {
        commissioned = commission_on_baseline(&mut pipeline, &windows, seconds, hop, c.false_alarms_per_day)?;
        if commissioned.is_none() {
            return Err(RuntimeError::Input(format!(
                "the baseline's {} windows did not complete commissioning (sensor faults are not \
                 learned from); give a longer healthy recording",
                windows.len()
            ))
            .into());
        }
    }
    pipeline.set_health_every(options.health_every)?;
    pipeline.set_kinematics(options.kinematics, options.speed_range)?;
    if options.streamed {
        let streamer = pipeline.scorer_mut().stream(hop)?;
        if let Some(why) = streamer.inexact_reason() {
            log::warn!("streamed scores of this model approximate its full-window scores: {why}");
        }
    }
    let windows_per_s = crate::adaptation::windows_per_s(pipeline.scorer().model().metadata(), Some(hop));
    let pipeline = Mutex::new(pipeline);
    let mut summary = stream_into(&pipeline, source, (windower, rate), options, on_event, |o| {
        if let (Some(threshold), None) = (o.commissioned, commissioned) {
            let windows = o.index + 1;
            let seconds = windows as f64 / windows_per_s;
            commissioned = Some(Commissioned { windows, seconds, threshold, model_threshold });
        }
        on_window(o)
    })?;
    summary.commissioned = commissioned;
    summary.shaft = pipeline.lock().ok().and_then(|mut p| p.shaft_speed());
    Ok(summary)
}

/// Commissions `pipeline` on the healthy `windows` (holding `seconds` of signal), its
/// threshold calibrated to `false_alarms_per_day`: what it learned, or `None` when the
/// windows did not complete commissioning (sensor faults are not learned from).
pub(crate) fn commission_on_baseline(
    pipeline: &mut Pipeline,
    windows: &[crate::windower::Window],
    seconds: f64,
    hop: usize,
    false_alarms_per_day: f32,
) -> Result<Option<Commissioned>> {
    let model = pipeline.scorer().model();
    let model_threshold = model.metadata().alarm.threshold;
    let count = u32::try_from(windows.len()).unwrap_or(u32::MAX);
    let settings = AdaptationSettings::for_windows(model, Some(hop), Some(count), false_alarms_per_day)?;
    pipeline.scorer_mut().adapt(settings, None)?;
    let mut commissioned = None;
    for w in windows {
        if let Some(threshold) = pipeline.process(w)?.commissioned {
            let windows = windows.len() as u64;
            commissioned = Some(Commissioned { windows, seconds, threshold, model_threshold });
        }
    }
    Ok(commissioned)
}

/// Every window of the healthy recordings `files`, cut as the stream's will be, and the
/// seconds of signal they hold. Errors name the file.
fn baseline_windows(
    model: &VigilModel,
    files: &[BaselineFile],
    options: &StreamOptions,
) -> Result<(Vec<crate::windower::Window>, f64)> {
    let (mut per_channel, seconds) = read_baseline(model, files, options, None)?;
    Ok((per_channel.pop().unwrap_or_default(), seconds))
}

/// Every window of the healthy recordings `files` and the seconds of signal they hold:
/// with `sensors`, each of that many channels windowed on its own (a sensor per channel,
/// [`crate::sensors`]), the files holding the same channels as the stream; otherwise one
/// list of the model's windows. Errors name the file.
pub(crate) fn read_baseline(
    model: &VigilModel,
    files: &[BaselineFile],
    options: &StreamOptions,
    sensors: Option<usize>,
) -> Result<(Vec<Vec<crate::windower::Window>>, f64)> {
    let meta = model.metadata();
    let mut windows = vec![Vec::new(); sensors.unwrap_or(1)];
    let mut seconds = 0.0;
    for file in files {
        let named = |e: RuntimeError| RuntimeError::Input(format!("baseline {}: {e}", file.path));
        let mut source = crate::input::open(&file.path, file.format, file.channels).map_err(named)?;
        let file_options = StreamOptions { rate: file.rate, ..options.clone() };
        let channels = source.channels().unwrap_or(1);
        let (mut windowers, rate) = match sensors {
            None => {
                let (windower, rate) = windower_for(model, source.as_ref(), &file_options).map_err(named)?;
                (vec![windower], rate)
            }
            Some(n) if n != channels => {
                return Err(named(RuntimeError::StreamMismatch(format!(
                    "it has {channels} channel(s) and the stream {n}; give a healthy recording of the same \
                     sensors, one channel each"
                ))))
            }
            Some(n) => {
                let rate = stream_rate(model, source.as_ref(), &file_options).map_err(named)?;
                let hop = options.hop.unwrap_or(meta.hop);
                let one = || Windower::new(1, rate, meta.sample_rate_hz, meta.window, hop).map_err(named);
                ((0..n).map(|_| one()).collect::<Result<Vec<_>>>()?, rate)
            }
        };
        let mut chunk = Vec::new();
        let mut samples = Vec::new();
        let mut frames = 0u64;
        while source.read_chunk(&mut chunk, 65_536).map_err(named)? {
            frames += (chunk.len() / channels) as u64;
            if sensors.is_none() {
                windowers[0].push(&chunk, |w| windows[0].push(w));
                continue;
            }
            for (channel, windower) in windowers.iter_mut().enumerate() {
                samples.clear();
                samples.extend(chunk.iter().skip(channel).step_by(channels));
                windower.push(&samples, |w| windows[channel].push(w));
            }
        }
        seconds += frames as f64 / rate;
    }
    Ok((windows, seconds))
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
            for report in outcome.reports() {
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
    if after.windows + after.sensor_faults == before.windows + before.sensor_faults {
        let meta_window = lock()?.scorer().model().metadata().window;
        let model_rate = lock()?.scorer().model().metadata().sample_rate_hz;
        return Err(RuntimeError::Input(format!(
            "the input holds {} frame(s) ({:.3} s at {rate} Hz), shorter than one window of the model \
             ({meta_window} samples, {:.3} s): nothing was scored",
            summary.frames,
            summary.frames as f64 / rate,
            meta_window as f64 / model_rate
        ))
        .into());
    }
    summary.windows = after.windows - before.windows;
    summary.alarms = after.alarms - before.alarms;
    summary.sensor_faults = after.sensor_faults - before.sensor_faults;
    summary.stream_seconds = summary.frames as f64 / rate;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The error for a stream with no samples.
pub(crate) fn empty_input() -> RuntimeError {
    RuntimeError::Input("the input is empty: no samples to score".into())
}
