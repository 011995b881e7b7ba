//! Many sensors in one stream: each channel of a multi-channel input scored on its own by
//! a single-channel model (`vigil run --sensor-per-channel`), every sensor with its own
//! windower, scorer, alarm state, commissioning and report store, the sensors spread over
//! the machine's cores.

use crate::adaptation::AdaptationSettings;
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
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vigil_core::report::AnomalyReport;

/// The name of the sensor on channel `channel` (0-based) when the stream names none:
/// `ch0`, `ch1`, ...
pub fn channel_sensor_name(channel: usize) -> String {
    format!("ch{channel}")
}

/// The sensors' names: the stream's own column names (a CSV header such as
/// `pump-de,pump-nde,motor`) when each is a distinct folder name for its store (letters,
/// digits, `.`, `_` and `-`, not starting with `.`), else `ch0`, `ch1`, ... for all.
pub fn sensor_names(source: &dyn SampleSource, channels: usize) -> Vec<String> {
    let usable = |name: &str| {
        !name.is_empty()
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if let Some(names) = source.channel_names() {
        let distinct = names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len();
        match names.iter().find(|n| !usable(n)) {
            None if distinct => return names.to_vec(),
            None => log::warn!("the stream's column names repeat; the sensors are named ch0, ch1, ..."),
            Some(bad) => log::warn!(
                "the stream's column name `{bad}` cannot name a sensor's report folder (letters, digits, \
                 `.`, `_`, `-`); the sensors are named ch0, ch1, ..."
            ),
        }
    }
    (0..channels).map(channel_sensor_name).collect()
}

/// One sensor: its pipeline and windower.
struct Sensor {
    pipeline: Pipeline,
    windower: Windower,
    samples: Vec<f32>,
    outcomes: Vec<WindowOutcome>,
}

impl Sensor {
    /// Windows and scores this sensor's samples of one chunk.
    fn score(&mut self) -> Result<()> {
        let mut windows: Vec<Window> = Vec::new();
        self.windower.push(&self.samples, |w| windows.push(w));
        for w in &windows {
            self.outcomes.push(self.pipeline.process(w)?);
        }
        Ok(())
    }
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
    let mut sensors = Vec::with_capacity(channels);
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
        sensors.push(Sensor {
            pipeline,
            windower: Windower::new(1, rate, meta.sample_rate_hz, meta.window, hop)?,
            samples: Vec::new(),
            outcomes: Vec::new(),
        });
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(channels);
    let share = channels.div_ceil(threads);
    let windows_per_s = crate::adaptation::windows_per_s(&meta, Some(hop));
    let started = Instant::now();
    let mut frames = 0u64;
    // A quarter second per chunk keeps each worker's share of a chunk worth the hand-over
    // (a twentieth, as one stream reads, left the second core half idle); paced input
    // reads a twentieth so alarms are not held back.
    let chunk_frames = (rate / if options.realtime { 20.0 } else { 4.0 }).max(64.0) as usize;
    // One long-lived worker per core, each with its share of the sensors: the sensors of
    // a chunk are independent, and threads that live as long as the stream keep their
    // buffers (a thread per chunk spent as long in the kernel as in scoring).
    let streamed: std::result::Result<(), E> = std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<Result<Vec<(usize, Vec<WindowOutcome>)>>>();
        let mut workers = Vec::new();
        for (g, group) in sensors.chunks_mut(share).enumerate() {
            let (chunk_tx, chunk_rx) = mpsc::channel::<Arc<Vec<f32>>>();
            let done_tx = done_tx.clone();
            workers.push(chunk_tx);
            scope.spawn(move || {
                while let Ok(chunk) = chunk_rx.recv() {
                    let scored = group
                        .iter_mut()
                        .enumerate()
                        .map(|(i, sensor)| {
                            let channel = g * share + i;
                            sensor.samples.clear();
                            sensor.samples.extend(chunk.iter().skip(channel).step_by(channels));
                            sensor.score()?;
                            Ok((channel, std::mem::take(&mut sensor.outcomes)))
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
                worker
                    .send(shared.clone())
                    .map_err(|_| RuntimeError::Input("a scoring thread stopped".into()))?;
            }
            let mut scored = Vec::with_capacity(channels);
            for _ in 0..workers.len() {
                let group =
                    done_rx.recv().map_err(|_| RuntimeError::Input("a scoring thread stopped".into()))?;
                scored.extend(group?);
            }
            scored.sort_by_key(|(channel, _)| *channel);
            for (channel, outcomes) in scored {
                for outcome in outcomes {
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
                        on_event(&names[channel], &outcome, report)?;
                    }
                }
            }
            if options.realtime {
                let due = Duration::from_secs_f64(frames as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        // Dropping the senders ends the workers.
        drop(workers);
        Ok(())
    });
    streamed?;
    if frames == 0 {
        return Err(empty_input().into());
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(sensors
        .into_iter()
        .zip(commissioned)
        .zip(names)
        .map(|((mut s, commissioned), name)| {
            let counts = s.pipeline.counts();
            let summary = StreamSummary {
                frames,
                stream_seconds: frames as f64 / rate,
                windows: counts.windows,
                alarms: counts.alarms,
                sensor_faults: counts.sensor_faults,
                wall_seconds,
                commissioned,
                shaft: s.pipeline.shaft_speed(),
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
        assert_eq!(names(&["pump/DE", "motor"]), ["ch0", "ch1"]);
        assert_eq!(names(&["..", "motor"]), ["ch0", "ch1"]);
        assert_eq!(names(&["", "motor"]), ["ch0", "ch1"]);
    }
}
