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
use crate::stream::{open_store, stream_rate, CommissionFrom, Commissioned, StreamOptions, StreamSummary};
use crate::windower::{Window, Windower};
use std::path::Path;
use std::time::{Duration, Instant};
use vigil_core::report::AnomalyReport;

/// The name of the sensor on channel `channel` (0-based): `ch0`, `ch1`, ...
pub fn channel_sensor_name(channel: usize) -> String {
    format!("ch{channel}")
}

/// One sensor: its pipeline and windower.
struct Sensor {
    pipeline: Pipeline,
    windower: Windower,
    samples: Vec<f32>,
    outcomes: Vec<WindowOutcome>,
    commissioned: Option<Commissioned>,
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
/// calling `on_event(sensor, outcome, report)` for every report in stream order within
/// each chunk. With `reports`, sensor `chN`'s reports go to the store in `reports/chN`.
/// Returns each sensor's summary, in channel order.
pub fn run_sensors<E: From<RuntimeError>>(
    model: VigilModel,
    mut source: Box<dyn SampleSource>,
    options: &StreamOptions,
    reports: Option<&Path>,
    mut on_event: impl FnMut(usize, &WindowOutcome, &AnomalyReport) -> std::result::Result<(), E>,
) -> std::result::Result<Vec<StreamSummary>, E> {
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
        return Err(RuntimeError::Input("the input is empty: no samples to score".into()).into());
    };
    let rate = stream_rate(&model, source.as_ref(), options)?;
    let hop = options.hop.unwrap_or(meta.hop);
    let adaptation =
        match &options.commissioning {
            None => None,
            Some(c) => match &c.from {
                CommissionFrom::Stream(d) => {
                    Some(AdaptationSettings::for_stream(&model, Some(hop), Some(*d), c.false_alarms_per_day)?)
                }
                CommissionFrom::Baseline(_) => return Err(RuntimeError::Config(
                    "--baseline is not taken with --sensor-per-channel yet (each sensor would need its own \
                     healthy recording); commission each sensor from the stream with --commission"
                        .into(),
                )
                .into()),
            },
        };
    let mut sensors = Vec::with_capacity(channels);
    for channel in 0..channels {
        let store = match reports {
            Some(dir) => Some(open_store(&dir.join(channel_sensor_name(channel)))?),
            None => None,
        };
        let mut pipeline = Pipeline::new(model.clone(), store)?;
        pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
        if let Some(settings) = adaptation {
            pipeline.scorer_mut().adapt(settings, None)?;
        }
        pipeline.set_health_every(options.health_every)?;
        if options.streamed {
            pipeline.scorer_mut().stream(hop)?;
        }
        sensors.push(Sensor {
            pipeline,
            windower: Windower::new(1, rate, meta.sample_rate_hz, meta.window, hop)?,
            samples: Vec::new(),
            outcomes: Vec::new(),
            commissioned: None,
        });
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(channels);
    let share = channels.div_ceil(threads);
    let windows_per_s = crate::adaptation::windows_per_s(&meta, Some(hop));
    let started = Instant::now();
    let mut frames = 0u64;
    let mut chunk = Vec::new();
    let chunk_frames = (rate / 20.0).max(64.0) as usize;
    while source.read_chunk(&mut chunk, chunk_frames)? {
        frames += (chunk.len() / channels) as u64;
        for (c, sensor) in sensors.iter_mut().enumerate() {
            sensor.samples.clear();
            sensor.samples.extend(chunk.iter().skip(c).step_by(channels));
        }
        // The sensors of one chunk are independent: score them on every core.
        let scored: Vec<Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = sensors
                .chunks_mut(share)
                .map(|group| scope.spawn(move || group.iter_mut().try_for_each(Sensor::score)))
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| Err(RuntimeError::Input("a scoring thread panicked".into())))
                })
                .collect()
        });
        scored.into_iter().collect::<Result<Vec<()>>>()?;
        for (c, sensor) in sensors.iter_mut().enumerate() {
            for outcome in sensor.outcomes.drain(..) {
                if let (Some(threshold), None) = (outcome.commissioned, &sensor.commissioned) {
                    let windows = outcome.index + 1;
                    sensor.commissioned = Some(Commissioned {
                        windows,
                        seconds: windows as f64 / windows_per_s,
                        threshold,
                        model_threshold: meta.alarm.threshold,
                    });
                }
                for report in outcome.reports() {
                    on_event(c, &outcome, report)?;
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
    if frames == 0 {
        return Err(RuntimeError::Input("the input is empty: no samples to score".into()).into());
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(sensors
        .into_iter()
        .map(|s| {
            let counts = s.pipeline.counts();
            StreamSummary {
                frames,
                stream_seconds: frames as f64 / rate,
                windows: counts.windows,
                alarms: counts.alarms,
                sensor_faults: counts.sensor_faults,
                wall_seconds,
                commissioned: s.commissioned,
            }
        })
        .collect())
}
