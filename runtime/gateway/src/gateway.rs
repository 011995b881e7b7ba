//! The gateway agent assembled: a model scoring a sensor stream into the report store on
//! one thread, and the device protocol served on a serial port on another, sharing one
//! pipeline (`vigil serve`). What happens is told through a callback, so the caller
//! decides what a person sees.

use crate::adaptation::AdaptationSettings;
use crate::agent::{lock, DeviceSensor, GatewayDevice};
use crate::config::AlarmConfig;
use crate::error::{Result, RuntimeError};
use crate::input::SampleSource;
use crate::model::VigilModel;
use crate::pipeline::Pipeline;
use crate::scorer::WindowOutcome;
use crate::sensors::{stream_lanes, SensorLane};
use crate::slots::{FileSlots, GATEWAY_SLOT_CAPACITY};
use crate::stream::{open_store, stream_into, windower_for, StreamOptions, StreamSummary};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_core::agent::Agent;
use vigil_core::report::AnomalyReport;
use vigil_core::update::slots::Slots;
use vigil_core::wire::NackReason;
use vigil_serial::{open_port, serve_link_with};

/// Everything a gateway agent runs with.
pub struct GatewaySettings {
    /// The model, loaded.
    pub model: VigilModel,
    /// Serial port to serve the protocol on.
    pub port: String,
    /// Its baud rate.
    pub baud: u32,
    /// State folder: report store, update slots, labels, adapted state.
    pub state: PathBuf,
    /// The Ed25519 public key head updates must be signed with.
    pub public_key: [u8; 32],
    /// The largest step by which one update may raise the head version.
    pub max_version_step: u32,
    /// The name the device reports to hosts.
    pub name: String,
    /// The sensor stream to score, with its options; `None` only serves.
    pub input: Option<(Box<dyn SampleSource>, StreamOptions)>,
    /// Overrides of the model's alarm policy.
    pub alarm: Option<AlarmConfig>,
    /// Learn the site for this long of stream time before arming alarms.
    pub commission: Option<Duration>,
    /// False alarms per day the commissioned threshold aims at.
    pub false_alarms_per_day: f32,
    /// The broker to publish status and reports to, and take updates from.
    pub mqtt: Option<MqttSettings>,
    /// The sensors, each a channel of the input scored on its own with the (single-channel)
    /// model; empty: the input is the device's one sensor, as many channels as the model
    /// takes.
    pub sensors: Vec<SensorSettings>,
}

/// One sensor of a gateway that watches several: a channel of its input, with what is
/// known of its machine and its own alarm settings. Its reports, labels and adapted state
/// live in `STATE/sensors/NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSettings {
    /// Its name ([`crate::sensors::sensor_name_error`] says what a name may hold).
    pub name: String,
    /// The input channel it reads, from 0.
    pub channel: usize,
    /// What is known of its machine, when it differs from the input's.
    pub kinematics: Option<vigil_core::kinematics::Kinematics>,
    /// Overrides of the alarm policy, over the gateway's.
    pub alarm: Option<AlarmConfig>,
}

/// The folder of sensor `name`'s reports, labels and adapted state in `state`.
pub fn sensor_state_dir(state: &std::path::Path, name: &str) -> PathBuf {
    state.join("sensors").join(name)
}

/// Where a gateway meets its fleet on a broker (`docs/mqtt.md`).
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// The broker.
    pub broker: vigil_mqtt::Broker,
    /// The device's site (the topic level above its name).
    pub site: String,
    /// Groups whose updates the device takes, besides its site's.
    pub groups: Vec<String>,
}

/// What a running gateway tells its operator.
#[derive(Debug)]
pub enum GatewayEvent<'a> {
    /// The head committed before the restart is active again.
    Restored {
        /// Its version.
        version: u32,
    },
    /// What site adaptation resumed or starts from.
    Adaptation(&'a str),
    /// Alarms wait until this many seconds of stream have been learned.
    Commissioning {
        /// Stream seconds.
        seconds: f64,
    },
    /// The port is open and answering.
    Serving,
    /// A report was stored.
    Report {
        /// The sensor, on a gateway of several.
        sensor: Option<&'a str>,
        /// The report.
        report: &'a AnomalyReport,
    },
    /// Commissioning ended: alarms are armed.
    Commissioned {
        /// The sensor, on a gateway of several.
        sensor: Option<&'a str>,
        /// Stream time at which it ended, in seconds.
        at_s: f64,
        /// The calibrated threshold.
        threshold: f32,
    },
    /// The input ended; the port is still served.
    InputEnded(&'a StreamSummary),
}

/// Runs the gateway until the serial link or the input fails (the process is stopped
/// from outside otherwise), calling `on_event` from either thread.
pub fn run(
    settings: GatewaySettings,
    on_event: impl Fn(GatewayEvent<'_>) + Send + Sync + 'static,
) -> Result<()> {
    let on_event = Arc::new(on_event);
    let GatewaySettings {
        mut model,
        port,
        baud,
        state,
        public_key,
        max_version_step,
        name,
        input,
        alarm,
        commission,
        false_alarms_per_day,
        mqtt,
        sensors,
    } = settings;
    if let Some(alarm) = &alarm {
        model
            .set_alarm_policy(alarm.apply(model.metadata().alarm))
            .map_err(|e| RuntimeError::Config(format!("alarm settings of the config: {e}")))?;
    }
    let adaptation = AdaptationSettings::for_stream(
        &model,
        input.as_ref().and_then(|i| i.1.hop),
        commission,
        false_alarms_per_day,
    )?;
    let several = !sensors.is_empty();
    let input = match input {
        Some((source, options)) if several => {
            let rate = check_sensors(&model, source.as_ref(), &options, &sensors)?;
            Some((source, options, Lanes::Several(rate)))
        }
        Some((source, options)) => {
            let windower = windower_for(&model, source.as_ref(), &options)?;
            Some((source, options, Lanes::One(windower)))
        }
        None if several => {
            return Err(RuntimeError::Config(
                "[[sensor]] sections name channels of an input: add an [input] section".into(),
            ))
        }
        None => None,
    };
    // Each sensor's name, state folder and settings (none: the device's one sensor).
    let plans: Vec<(String, PathBuf, Option<&SensorSettings>)> = if several {
        sensors.iter().map(|s| (s.name.clone(), sensor_state_dir(&state, &s.name), Some(s))).collect()
    } else {
        vec![(name.clone(), state.clone(), None)]
    };
    let mut device_sensors = Vec::with_capacity(plans.len());
    for (sensor_name, dir, sensor) in &plans {
        let mut model = model.clone();
        if let Some(alarm) = sensor.and_then(|s| s.alarm.as_ref()) {
            model
                .set_alarm_policy(alarm.apply(model.metadata().alarm))
                .map_err(|e| RuntimeError::Config(format!("alarm settings of sensor {sensor_name}: {e}")))?;
        }
        let store = open_store(dir)?;
        let mut pipeline = Pipeline::new(model, Some(store))?;
        if let Some((_, options, _)) = &input {
            pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
            pipeline.set_health_every(options.health_every)?;
            let kinematics = sensor.and_then(|s| s.kinematics).unwrap_or(options.kinematics);
            pipeline.set_kinematics(kinematics, options.speed_range)?;
        }
        let pipeline = Arc::new(Mutex::new(pipeline));
        device_sensors.push(DeviceSensor::new(sensor_name, pipeline, dir));
    }
    let pipelines: Vec<Arc<Mutex<Pipeline>>> = device_sensors.iter().map(|s| s.pipeline.clone()).collect();
    let mut device = GatewayDevice::with_sensors(&name, device_sensors, public_key);
    device.set_max_version_step(max_version_step);
    let in_state = |what: &str, e: &dyn std::fmt::Display| {
        RuntimeError::Input(format!("cannot {what} in state folder {}: {e}", state.display()))
    };
    let slots = FileSlots::open(&state).map_err(|e| in_state("use update slots", &e))?;
    let slots = Slots::open(slots).map_err(|e| in_state("read update slots", &e))?;
    // The agent lives as long as the process; the serial line and the broker share it.
    let scratch: &'static mut [u8] = Box::leak(vec![0u8; GATEWAY_SLOT_CAPACITY as usize].into_boxed_slice());
    let mut agent = Agent::new(slots, scratch);
    if let Some(version) =
        agent.restore(&mut device).map_err(|e| in_state("restore the committed head", &e))?
    {
        on_event(GatewayEvent::Restored { version });
    }
    // Site adaptation resumes after the committed head is restored: the head a site was
    // adapted on comes first, then what the site learned on it.
    for (pipeline, (sensor_name, dir, _)) in pipelines.iter().zip(&plans) {
        let said = lock(pipeline).scorer_mut().adapt(adaptation, Some(dir))?;
        if several {
            on_event(GatewayEvent::Adaptation(&format!("sensor {sensor_name}: {said}")));
        } else {
            on_event(GatewayEvent::Adaptation(&said));
        }
    }
    if let Some(c) = commission {
        let armed = |p: &Arc<Mutex<Pipeline>>| {
            let p = lock(p);
            p.scorer().adaptation().is_some_and(|a| a.site().is_armed())
        };
        if !pipelines.iter().all(armed) {
            on_event(GatewayEvent::Commissioning { seconds: c.as_secs_f64() });
        }
    }
    let mut link = open_port(&port, baud, Duration::from_millis(50))?;
    on_event(GatewayEvent::Serving);
    // The serial line and the broker share one agent: an update is checked and applied by
    // the same code whichever way it came.
    let shared = Arc::new(Mutex::new((agent, device)));
    let forwarder = match mqtt {
        Some(MqttSettings { broker, site, groups }) => {
            let forwarded = if several {
                plans.iter().map(|(sensor, dir, _)| (sensor.clone(), dir.clone())).collect()
            } else {
                Vec::new()
            };
            let settings = vigil_mqtt::ForwarderSettings {
                broker,
                site,
                device: name.clone(),
                state: state.clone(),
                groups,
                sensors: forwarded.clone(),
            };
            let source = StoreSource {
                pipelines: pipelines.clone(),
                names: forwarded.into_iter().map(|(sensor, _)| sensor).collect(),
                agent: shared.clone(),
                class_names: class_names(&pipelines[0]),
            };
            Some(
                vigil_mqtt::Forwarder::start(settings, source)
                    .map_err(|e| RuntimeError::Config(e.to_string()))?,
            )
        }
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let scoring = input.map(|(source, options, lanes)| {
        let (stop, on_event) = (stop.clone(), on_event.clone());
        std::thread::spawn(move || {
            let result = match lanes {
                Lanes::One(windower) => score_one(&pipelines[0], source, windower, &options, &*on_event),
                Lanes::Several(rate) => {
                    score_several(&model, &pipelines, &sensors, source, rate, &options, &*on_event)
                }
            };
            match &result {
                Ok(summary) => on_event(GatewayEvent::InputEnded(summary)),
                Err(_) => stop.store(true, Ordering::Relaxed),
            }
            result
        })
    });
    let served = serve_link_with(&mut link, &stop, |bytes, send| {
        let mut shared = lock(&shared);
        let (agent, device) = &mut *shared;
        agent.receive(bytes, device, &mut |frame| send(frame));
    })
    .map_err(|e| RuntimeError::io(format!("serial port {port} failed"), e));
    if let Some(forwarder) = forwarder {
        forwarder.stop();
    }
    served?;
    if let Some(handle) = scoring {
        handle.join().map_err(|_| RuntimeError::Input("the scoring thread panicked".into()))??;
    }
    Ok(())
}

/// How the input is cut into the sensors' windows.
enum Lanes {
    /// The whole input is one sensor: its windower and rate.
    One((crate::windower::Windower, f64)),
    /// Each sensor reads a channel; the input's rate.
    Several(f64),
}

/// Checks that each sensor names a distinct, usable name and a channel the input has, and
/// that the model scores one channel; returns the input's rate.
fn check_sensors(
    model: &VigilModel,
    source: &dyn SampleSource,
    options: &StreamOptions,
    sensors: &[SensorSettings],
) -> Result<f64> {
    let meta = model.metadata();
    if meta.channels != 1 {
        return Err(RuntimeError::StreamMismatch(format!(
            "[[sensor]] sections score one input channel each, but model {} takes {} channels at once; \
             give a single-channel model, or leave out the [[sensor]] sections",
            model.path().display(),
            meta.channels
        )));
    }
    if sensors.len() > usize::from(u8::MAX) {
        return Err(RuntimeError::Config(format!("{} sensors: a gateway serves at most 255", sensors.len())));
    }
    let Some(channels) = source.channels() else { return Err(crate::stream::empty_input()) };
    if let Some((i, why)) = crate::sensors::sensor_list_error(sensors.iter().map(|s| s.name.as_str())) {
        return Err(RuntimeError::Config(format!("sensor {}: {why}", i + 1)));
    }
    for s in sensors {
        if s.channel >= channels {
            return Err(RuntimeError::StreamMismatch(format!(
                "sensor {} reads channel {} but the input has {channels} (channels count from 0)",
                s.name, s.channel
            )));
        }
    }
    crate::stream::stream_rate(model, source, options)
}

/// Scores the input as the device's one sensor.
fn score_one(
    pipeline: &Mutex<Pipeline>,
    source: Box<dyn SampleSource>,
    windower: (crate::windower::Windower, f64),
    options: &StreamOptions,
    on_event: &(impl Fn(GatewayEvent<'_>) + ?Sized),
) -> Result<StreamSummary> {
    let on_report = |_: &WindowOutcome, report: &AnomalyReport| {
        on_event(GatewayEvent::Report { sensor: None, report });
        Ok(())
    };
    let on_window = |o: &WindowOutcome| {
        if let Some(threshold) = o.commissioned {
            on_event(GatewayEvent::Commissioned { sensor: None, at_s: o.end_time_s, threshold });
        }
        Ok(())
    };
    stream_into::<RuntimeError>(pipeline, source, windower, options, on_report, on_window)
}

/// Scores each sensor's channel of the input (`pipelines` in the order of `sensors`) with
/// `model`'s windows; the summary adds up the sensors'.
fn score_several(
    model: &VigilModel,
    pipelines: &[Arc<Mutex<Pipeline>>],
    sensors: &[SensorSettings],
    mut source: Box<dyn SampleSource>,
    rate: f64,
    options: &StreamOptions,
    on_event: &(impl Fn(GatewayEvent<'_>) + ?Sized),
) -> Result<StreamSummary> {
    let hop = options.hop.unwrap_or(model.metadata().hop);
    let mut lanes = Vec::with_capacity(pipelines.len());
    for (pipeline, sensor) in pipelines.iter().zip(sensors) {
        lanes.push(SensorLane::new(sensor.channel, pipeline.clone(), model, rate, hop)?);
    }
    let inputs = source.channels().unwrap_or(1);
    let started = std::time::Instant::now();
    let frames = stream_lanes::<RuntimeError>(
        source.as_mut(),
        &mut lanes,
        inputs,
        rate,
        options.realtime,
        |lane, o| {
            let sensor = Some(sensors[lane].name.as_str());
            if let Some(threshold) = o.commissioned {
                on_event(GatewayEvent::Commissioned { sensor, at_s: o.end_time_s, threshold });
            }
            for report in o.reports() {
                on_event(GatewayEvent::Report { sensor, report });
            }
            Ok(())
        },
    )?;
    let mut summary = StreamSummary {
        frames,
        stream_seconds: frames as f64 / rate,
        wall_seconds: started.elapsed().as_secs_f64(),
        ..StreamSummary::default()
    };
    for pipeline in pipelines {
        let counts = lock(pipeline).counts();
        summary.windows += counts.windows;
        summary.alarms += counts.alarms;
        summary.sensor_faults += counts.sensor_faults;
    }
    Ok(summary)
}

fn class_names(pipeline: &Mutex<Pipeline>) -> Vec<String> {
    let p = lock(pipeline);
    p.scorer().model().metadata().class_names.clone()
}

/// What the MQTT forwarder reads: the durable stores and the device's state.
struct StoreSource {
    /// Each sensor's pipeline (one on a gateway of one sensor).
    pipelines: Vec<Arc<Mutex<Pipeline>>>,
    /// The sensors' names on a gateway of several; empty otherwise.
    names: Vec<String>,
    agent: Arc<Mutex<(Agent<'static, FileSlots>, GatewayDevice)>>,
    class_names: Vec<String>,
}

impl vigil_mqtt::Source for StoreSource {
    fn report_from(&mut self, sensor: usize, sequence: u64) -> Option<AnomalyReport> {
        let pipeline = lock(self.pipelines.get(sensor)?);
        match pipeline.store().map(|s| s.first_from(sequence)) {
            Some(Ok(report)) => report,
            Some(Err(e)) => {
                let of = self.names.get(sensor).map(|n| format!(" of sensor {n}")).unwrap_or_default();
                log::warn!("MQTT: cannot read report #{sequence}{of} from the store: {e}");
                None
            }
            None => None,
        }
    }

    fn apply_update(&mut self, update: &vigil_mqtt::UpdateMessage) -> std::result::Result<u32, NackReason> {
        let mut shared = lock(&self.agent);
        let (agent, device) = &mut *shared;
        agent.apply_update(&update.header, &update.payload, update.signature, device)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let p = lock(&self.pipelines[0]);
        let scorer = p.scorer();
        scorer.snapshot(scorer.model().metadata().head_version).ok()
    }

    fn report_json(&self, report: &AnomalyReport) -> serde_json::Value {
        crate::report_io::report_json(report, &self.class_names)
    }

    fn status_json(&self) -> serde_json::Value {
        let mut status = status_json(&lock(&self.pipelines[0]));
        if self.names.is_empty() {
            return status;
        }
        // A gateway of several sensors: the device's figures add up its sensors', each of
        // which has a line of its own.
        let sensors: Vec<serde_json::Value> = self
            .names
            .iter()
            .zip(&self.pipelines)
            .map(|(name, p)| {
                let mut line = status_json(&lock(p));
                line["sensor"] = name.as_str().into();
                for key in ["software", "model", "head_version"] {
                    line.as_object_mut().map(|o| o.remove(key));
                }
                line
            })
            .collect();
        let any = |key: &str| sensors.iter().any(|s| s[key].as_bool() == Some(true));
        let sum = |key: &str| sensors.iter().filter_map(|s| s[key].as_u64()).sum::<u64>();
        status["alarm_active"] = any("alarm_active").into();
        status["windows_scored"] = sum("windows_scored").into();
        status["sensor_faults"] = sum("sensor_faults").into();
        // Each sensor numbers its own reports: no one next report for the gateway.
        status["next_report"] = serde_json::Value::Null;
        status["threshold"] = serde_json::Value::Null;
        status["sensors"] = sensors.into();
        status
    }
}

/// A gateway's status as the broker's `status` topic carries it (`docs/mqtt.md`).
pub fn status_json(pipeline: &Pipeline) -> serde_json::Value {
    let counts = pipeline.counts();
    let scorer = pipeline.scorer();
    serde_json::json!({
        "software": format!("vigil {}", env!("CARGO_PKG_VERSION")),
        "model": vigil_core::hex::encode(&scorer.model().hash()[..8]),
        "head_version": scorer.model().metadata().head_version,
        "alarm_active": scorer.alarm_active(),
        "windows_scored": counts.windows,
        "sensor_faults": counts.sensor_faults,
        "threshold": scorer.policy().threshold,
        "next_report": scorer.next_sequence(),
    })
}
