//! The gateway agent assembled: a model scoring a sensor stream into the report store on
//! one thread, and the device protocol served on a serial port on another, sharing one
//! pipeline (`vigil serve`). What happens is told through a callback, so the caller
//! decides what a person sees.

use crate::adaptation::AdaptationSettings;
use crate::agent::GatewayDevice;
use crate::config::AlarmConfig;
use crate::error::{Result, RuntimeError};
use crate::input::SampleSource;
use crate::model::VigilModel;
use crate::pipeline::Pipeline;
use crate::scorer::WindowOutcome;
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
    Report(&'a AnomalyReport),
    /// Commissioning ended: alarms are armed.
    Commissioned {
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
    let input = match input {
        Some((source, options)) => {
            let windower = windower_for(&model, source.as_ref(), &options)?;
            Some((source, options, windower))
        }
        None => None,
    };
    let store = open_store(&state)?;
    let mut pipeline = Pipeline::new(model, Some(store))?;
    if let Some((_, options, _)) = &input {
        pipeline.scorer_mut().set_sensor_limits(options.sensor)?;
        pipeline.set_health_every(options.health_every)?;
        pipeline.set_kinematics(options.kinematics, options.speed_range)?;
    }
    let pipeline = Arc::new(Mutex::new(pipeline));
    let mut device = GatewayDevice::new(&name, pipeline.clone(), public_key, &state);
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
    {
        let mut p = pipeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let said = p.scorer_mut().adapt(adaptation, Some(&state))?;
        on_event(GatewayEvent::Adaptation(&said));
        if let Some(c) = commission.filter(|_| !p.scorer().adaptation().is_some_and(|a| a.site().is_armed()))
        {
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
            let settings = vigil_mqtt::ForwarderSettings {
                broker,
                site,
                device: name.clone(),
                state: state.clone(),
                groups,
            };
            let source = StoreSource {
                pipeline: pipeline.clone(),
                agent: shared.clone(),
                class_names: class_names(&pipeline),
            };
            Some(
                vigil_mqtt::Forwarder::start(settings, source)
                    .map_err(|e| RuntimeError::Config(e.to_string()))?,
            )
        }
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let scoring = input.map(|(source, options, windower)| {
        let (pipeline, stop, on_event) = (pipeline.clone(), stop.clone(), on_event.clone());
        std::thread::spawn(move || {
            let on_report = |_: &WindowOutcome, r: &AnomalyReport| {
                on_event(GatewayEvent::Report(r));
                Ok(())
            };
            let on_window = |o: &WindowOutcome| {
                if let Some(threshold) = o.commissioned {
                    on_event(GatewayEvent::Commissioned { at_s: o.end_time_s, threshold });
                }
                Ok(())
            };
            let result =
                stream_into::<RuntimeError>(&pipeline, source, windower, &options, on_report, on_window);
            match &result {
                Ok(summary) => on_event(GatewayEvent::InputEnded(summary)),
                Err(_) => stop.store(true, Ordering::Relaxed),
            }
            result
        })
    });
    let served = serve_link_with(&mut link, &stop, |bytes, send| {
        let mut shared = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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

fn class_names(pipeline: &Mutex<Pipeline>) -> Vec<String> {
    let p = pipeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    p.scorer().model().metadata().class_names.clone()
}

/// What the MQTT forwarder reads: the durable store and the device's state.
struct StoreSource {
    pipeline: Arc<Mutex<Pipeline>>,
    agent: Arc<Mutex<(Agent<'static, FileSlots>, GatewayDevice)>>,
    class_names: Vec<String>,
}

impl StoreSource {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pipeline> {
        self.pipeline.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl vigil_mqtt::Source for StoreSource {
    fn report_from(&mut self, sequence: u64) -> Option<AnomalyReport> {
        match self.lock().store().map(|s| s.first_from(sequence)) {
            Some(Ok(report)) => report,
            Some(Err(e)) => {
                log::warn!("MQTT: cannot read report #{sequence} from the store: {e}");
                None
            }
            None => None,
        }
    }

    fn apply_update(&mut self, update: &vigil_mqtt::UpdateMessage) -> std::result::Result<u32, NackReason> {
        let mut shared = self.agent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (agent, device) = &mut *shared;
        agent.apply_update(&update.header, &update.payload, update.signature, device)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        let p = self.lock();
        let scorer = p.scorer();
        scorer.snapshot(scorer.model().metadata().head_version).ok()
    }

    fn report_json(&self, report: &AnomalyReport) -> serde_json::Value {
        crate::report_io::report_json(report, &self.class_names)
    }

    fn status_json(&self) -> serde_json::Value {
        status_json(&self.lock())
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
