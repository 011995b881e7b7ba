//! Many sensors in one stream: each channel of a multi-channel input scored on its own by
//! a single-channel model (`vigil run --sensor-per-channel`), every sensor with its own
//! windower, scorer, alarm state, commissioning and report store, the sensors spread over
//! the machine's cores.

use crate::adaptation::AdaptationSettings;
use crate::agent::lock;
use crate::error::{Result, RuntimeError};
use crate::input::SampleSource;
use crate::model::VigilModel;
use crate::pipeline::Pipeline;
use crate::scorer::WindowOutcome;
use crate::stream::{
    commission_on_baseline, empty_input, open_store, read_baseline, stream_rate, CommissionFrom,
    Commissioned, StreamOptions, StreamSummary,
};
use crate::windower::{Window, Windower};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_core::report::AnomalyReport;

/// The name of the sensor on channel `channel` (0-based) when the stream names none:
/// `ch0`, `ch1`, ...
pub fn channel_sensor_name(channel: usize) -> String {
    format!("ch{channel}")
}

/// Longest sensor name: it travels in one frame and names a folder.
pub const MAX_SENSOR_NAME: usize = 64;

/// Why `name` cannot name a sensor, if it cannot. A name is one or more parts separated
/// by `/` (such as `pump-7/DE/x`), each of letters, digits, `.`, `_` and `-` and not
/// starting with `.`, at most [`MAX_SENSOR_NAME`] bytes in all: it names the sensor's
/// folder of reports and state.
pub fn sensor_name_error(name: &str) -> Option<String> {
    let part_ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if name.len() > MAX_SENSOR_NAME {
        Some(format!("`{name}` is longer than {MAX_SENSOR_NAME} bytes"))
    } else if !name.split('/').all(part_ok) {
        Some(format!(
            "`{name}` cannot name a sensor's folder: use parts of letters, digits, `.`, `_` and `-` \
             separated by `/`, none empty or starting with `.`"
        ))
    } else {
        None
    }
}

/// Why `names` cannot name one gateway's sensors, if they cannot: the index of the first
/// that is not a sensor name ([`sensor_name_error`]) or repeats an earlier one, and why.
pub fn sensor_list_error<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<(usize, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in names.into_iter().enumerate() {
        if let Some(why) = sensor_name_error(name) {
            return Some((i, format!("the name {why}")));
        }
        if !seen.insert(name) {
            return Some((i, format!("another sensor is named {name}; give each its own name")));
        }
    }
    None
}

/// The sensors' names: the stream's own column names (a CSV header such as
/// `pump-de,pump-nde,motor`) when they can name its sensors ([`sensor_list_error`]), else
/// `ch0`, `ch1`, ... for all.
pub fn sensor_names(source: &dyn SampleSource, channels: usize) -> Vec<String> {
    if let Some(names) = source.channel_names() {
        match sensor_list_error(names.iter().map(String::as_str)) {
            None => return names.to_vec(),
            Some((i, why)) => log::warn!(
                "the stream's column {} cannot name its sensor: {why}; the sensors are named ch0, ch1, ...",
                i + 1
            ),
        }
    }
    (0..channels).map(channel_sensor_name).collect()
}

/// One sensor of a multi-channel stream: the channel it reads, its pipeline (shared with
/// whoever answers for it, such as the serial agent) and its windower.
pub struct SensorLane {
    channel: usize,
    pipeline: Arc<Mutex<Pipeline>>,
    windower: Windower,
    samples: Vec<f32>,
    outcomes: Vec<WindowOutcome>,
}

impl SensorLane {
    /// The sensor on channel `channel` (0-based) of a stream at `rate` Hz, scored by
    /// `pipeline` with `model`'s windows at `hop`.
    pub fn new(
        channel: usize,
        pipeline: Arc<Mutex<Pipeline>>,
        model: &VigilModel,
        rate: f64,
        hop: usize,
    ) -> Result<Self> {
        let meta = model.metadata();
        Ok(SensorLane {
            channel,
            pipeline,
            windower: Windower::new(1, rate, meta.sample_rate_hz, meta.window, hop)?,
            samples: Vec::new(),
            outcomes: Vec::new(),
        })
    }

    /// Windows and scores this sensor's samples of one interleaved chunk of `channels`.
    fn score(&mut self, chunk: &[f32], channels: usize) -> Result<()> {
        self.samples.clear();
        self.samples.extend(chunk.iter().skip(self.channel).step_by(channels));
        let mut windows: Vec<Window> = Vec::new();
        self.windower.push(&self.samples, |w| windows.push(w));
        let mut pipeline = lock(&self.pipeline);
        for w in &windows {
            self.outcomes.push(pipeline.process(w)?);
        }
        Ok(())
    }
}

/// Reads `source` (`channels` interleaved at `rate` Hz) to its end and scores each lane's
/// channel with its pipeline, the lanes spread over the machine's cores; calls
/// `on_outcome(lane, outcome)` for every window, in lane order within each chunk. Paces
/// the input at its rate when `realtime`. Returns the frames read.
pub fn stream_lanes<E: From<RuntimeError>>(
    source: &mut dyn SampleSource,
    lanes: &mut [SensorLane],
    channels: usize,
    rate: f64,
    realtime: bool,
    mut on_outcome: impl FnMut(usize, &WindowOutcome) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(lanes.len()).max(1);
    let share = lanes.len().div_ceil(threads).max(1);
    let started = Instant::now();
    let mut frames = 0u64;
    // A quarter second per chunk keeps each worker's share of a chunk worth the hand-over
    // (a twentieth, as one stream reads, left the second core half idle); paced input
    // reads a twentieth so alarms are not held back.
    let chunk_frames = (rate / if realtime { 20.0 } else { 4.0 }).max(64.0) as usize;
    let stopped = || RuntimeError::Input("a scoring thread stopped".into());
    // One long-lived worker per core, each with its share of the sensors: the sensors of
    // a chunk are independent, and threads that live as long as the stream keep their
    // buffers (a thread per chunk spent as long in the kernel as in scoring).
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<Result<Vec<(usize, Vec<WindowOutcome>)>>>();
        let mut workers = Vec::new();
        for (g, group) in lanes.chunks_mut(share).enumerate() {
            let (chunk_tx, chunk_rx) = mpsc::channel::<Arc<Vec<f32>>>();
            let done_tx = done_tx.clone();
            workers.push(chunk_tx);
            scope.spawn(move || {
                while let Ok(chunk) = chunk_rx.recv() {
                    let scored = group
                        .iter_mut()
                        .enumerate()
                        .map(|(i, lane)| {
                            lane.score(&chunk, channels)?;
                            Ok((g * share + i, std::mem::take(&mut lane.outcomes)))
                        })
                        .collect();
                    if done_tx.send(scored).is_err() {
                        return;
                    }
                }
            });
        }
        let mut chunk = Vec::new();
        while source.read_chunk(&mut chunk, chunk_frames)? {
            frames += (chunk.len() / channels) as u64;
            let shared = Arc::new(std::mem::take(&mut chunk));
            for worker in &workers {
                worker.send(shared.clone()).map_err(|_| stopped())?;
            }
            let mut scored = Vec::new();
            for _ in 0..workers.len() {
                scored.extend(done_rx.recv().map_err(|_| stopped())??);
            }
            scored.sort_by_key(|(lane, _)| *lane);
            for (lane, outcomes) in scored {
                for outcome in &outcomes {
                    on_outcome(lane, outcome)?;
                }
            }
            if realtime {
                let due = Duration::from_secs_f64(frames as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        // Dropping the senders ends the workers.
        drop(workers);
        Ok(frames)
    })
}

/// Scores every channel of `source` as a sensor of its own with `model` (single-channel),
/// named by [`sensor_names`], calling `on_event(sensor, outcome, report)` for every report
/// in stream order within each chunk. With `reports`, sensor NAME's reports go to the
/// store in `reports/NAME`. Returns each sensor's name and summary, in channel order.
pub fn run_sensors<E: From<RuntimeError>>(
    model: VigilModel,
    mut source: Box<dyn SampleSource>,
    options: &StreamOptions,
    reports: Option<&Path>,
    mut on_event: impl FnMut(&str, &WindowOutcome, &AnomalyReport) -> std::result::Result<(), E>,
) -> std::result::Result<Vec<(String, StreamSummary)>, E> {
    let meta = model.metadata().clone();
    if meta.channels != 1 {
        return Err(RuntimeError::StreamMismatch(format!(
            "--sensor-per-channel scores each channel with a single-channel model, but {} takes {} channels \
             at once; give it the stream without --sensor-per-channel",
            model.path().display(),
            meta.channels
        ))
        .into());
    }
    let Some(channels) = source.channels() else {
        return Err(empty_input().into());
    };
    let names = sensor_names(source.as_ref(), channels);
    let rate = stream_rate(&model, source.as_ref(), options)?;
    let hop = options.hop.unwrap_or(meta.hop);
    let (adaptation, baseline) = match &options.commissioning {
        None => (None, None),
        Some(c) => match &c.from {
            CommissionFrom::Stream(d) => (
                Some(AdaptationSettings::for_stream(&model, Some(hop), Some(*d), c.false_alarms_per_day)?),
                None,
            ),
            // Each sensor learns from its own channel of the healthy recordings.
            CommissionFrom::Baseline(files) => {
                (None, Some(read_baseline(&model, files, options, Some(channels))?))
            }
        },
    };
    let mut commissioned: Vec<Option<Commissioned>> = vec![None; channels];
    let mut lanes = Vec::with_capacity(channels);
    for (channel, name) in names.iter().enumerate() {
        let store = match reports {
            Some(dir) => Some(open_store(&dir.join(name))?),
            None => None,
        };
        let mut pipeline = Pipeline::new(model.clone(), store)?;
        pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
        if let Some(settings) = adaptation {
            pipeline.scorer_mut().adapt(settings, None)?;
        }
        if let (Some((windows, seconds)), Some(c)) = (&baseline, &options.commissioning) {
            let windows = &windows[channel];
            commissioned[channel] =
                commission_on_baseline(&mut pipeline, windows, *seconds, hop, c.false_alarms_per_day)?;
            if commissioned[channel].is_none() {
                // One dead or faulty channel must not keep the others from running.
                log::warn!(
                    "sensor {name}: its {} baseline windows did not complete commissioning (sensor faults are \
                     not learned from); it goes on learning from the stream, alarms disarmed until then",
                    windows.len()
                );
            }
        }
        pipeline.set_health_every(options.health_every)?;
        pipeline.set_kinematics(options.kinematics, options.speed_range)?;
        if options.streamed {
            pipeline.scorer_mut().stream(hop)?;
        }
        lanes.push(SensorLane::new(channel, Arc::new(Mutex::new(pipeline)), &model, rate, hop)?);
    }
    let windows_per_s = crate::adaptation::windows_per_s(&meta, Some(hop));
    let started = Instant::now();
    let frames = stream_lanes::<E>(
        source.as_mut(),
        &mut lanes,
        channels,
        rate,
        options.realtime,
        |channel, outcome| {
            if let (Some(threshold), None) = (outcome.commissioned, &commissioned[channel]) {
                let windows = outcome.index + 1;
                commissioned[channel] = Some(Commissioned {
                    windows,
                    seconds: windows as f64 / windows_per_s,
                    threshold,
                    model_threshold: meta.alarm.threshold,
                });
            }
            for report in outcome.reports() {
                on_event(&names[channel], outcome, report)?;
            }
            Ok(())
        },
    )?;
    if frames == 0 {
        return Err(empty_input().into());
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(lanes
        .into_iter()
        .zip(commissioned)
        .zip(names)
        .map(|((lane, commissioned), name)| {
            let mut p = lock(&lane.pipeline);
            let counts = p.counts();
            let summary = StreamSummary {
                frames,
                stream_seconds: frames as f64 / rate,
                windows: counts.windows,
                alarms: counts.alarms,
                sensor_faults: counts.sensor_faults,
                wall_seconds,
                commissioned,
                shaft: p.shaft_speed(),
            };
            (name, summary)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that only names its channels.
    struct Named(Vec<String>);

    impl SampleSource for Named {
        fn channels(&self) -> Option<usize> {
            Some(self.0.len())
        }
        fn sample_rate_hz(&self) -> Option<f64> {
            None
        }
        fn read_chunk(&mut self, _: &mut Vec<f32>, _: usize) -> Result<bool> {
            Ok(false)
        }
        fn channel_names(&self) -> Option<&[String]> {
            Some(&self.0)
        }
    }

    fn names(columns: &[&str]) -> Vec<String> {
        sensor_names(&Named(columns.iter().map(|c| (*c).to_owned()).collect()), columns.len())
    }

    #[test]
    fn a_header_names_the_sensors_when_each_name_can_name_a_folder() {
        assert_eq!(names(&["pump-de", "pump_nde", "motor.x"]), ["pump-de", "pump_nde", "motor.x"]);
        assert_eq!(names(&["a", "a"]), ["ch0", "ch1"]);
        assert_eq!(names(&["pump/DE", "motor"]), ["pump/DE", "motor"]);
        assert_eq!(names(&["pump//DE", "motor"]), ["ch0", "ch1"]);
        assert_eq!(names(&["pump/.x", "motor"]), ["ch0", "ch1"]);
        assert_eq!(names(&["..", "motor"]), ["ch0", "ch1"]);
        assert_eq!(names(&["", "motor"]), ["ch0", "ch1"]);
    }
}
