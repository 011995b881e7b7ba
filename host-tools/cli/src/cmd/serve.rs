//! `vigil serve`: the gateway device agent.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use vigil_client::update_file::read_public_key;
use vigil_runtime::config::{AlarmConfig, GatewayConfig};
use vigil_runtime::gateway::{self, GatewayEvent, GatewaySettings, SensorSettings};
use vigil_runtime::report_io::describe;
use vigil_runtime::sensors::sensor_names;
use vigil_serial::DEFAULT_BAUD;

/// Run the pipeline on a sensor stream and serve the device protocol on a serial port:
/// status, signed head updates (A/B slots in the state folder), report pulls, labels and
/// head snapshots.
///
/// Reports, labels and committed updates live in the state folder and survive restarts;
/// the last committed head is restored at start.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read every setting from this TOML file (see /etc/vigil/vigil.toml) instead of
    /// the options below.
    #[arg(long, conflicts_with_all = ["model", "port", "state", "pubkey", "name", "input"])]
    config: Option<PathBuf>,
    /// ONNX model with Vigil metadata [default: the built-in reference model, bearing-cnn-v3].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Serial port to serve on, such as /dev/ttyS1.
    #[arg(long, short, required_unless_present = "config")]
    port: Option<String>,
    /// Baud rate.
    #[arg(long, default_value_t = DEFAULT_BAUD)]
    baud: u32,
    /// State folder: report store, update slots, labels (created if missing).
    #[arg(long, required_unless_present = "config")]
    state: Option<PathBuf>,
    /// Public key (from `vigil keygen`) that head updates must be signed with.
    #[arg(long, required_unless_present = "config")]
    pubkey: Option<PathBuf>,
    /// Device name reported to hosts [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// The largest step by which one update may raise the head version; versions only
    /// grow, so a signed update far ahead (4294967295, say) would block every later one.
    #[arg(long, default_value_t = vigil_core::update::MAX_VERSION_STEP, conflicts_with = "config",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_version_step: u32,
    /// Sensor stream to score (file or `-`); without it the device only serves.
    #[arg(long, short)]
    input: Option<String>,
    /// Score each channel of the input as a sensor of its own with the single-channel
    /// model, named after its CSV column or ch0, ch1, ...; hosts address them with
    /// `--sensor NAME`. Each keeps its reports, labels and adapted state in
    /// STATE/sensors/NAME. The config file's `[[sensor]]` sections do the same with names
    /// and channels of your choosing.
    #[arg(long, requires = "input")]
    sensor_per_channel: bool,
    #[command(flatten)]
    stream: super::StreamInputArgs,
    /// Learn the site before arming alarms: for this long (such as 10m, 90s or 1h of
    /// stream time) learn the normal state, then calibrate the threshold to
    /// --false-alarms-per-day. Without it, alarms are armed from the start with the
    /// model's prototype. A site commissioned before (state in STATE/adapted) is resumed,
    /// not commissioned again; delete that folder to start over.
    #[arg(long, value_parser = super::parse_duration)]
    commission: Option<Duration>,
    /// False alarms per day the commissioned threshold aims at.
    #[arg(long, default_value_t = 1.0)]
    false_alarms_per_day: f32,
    /// Also publish status and every stored report to this MQTT broker
    /// (`mqtt://HOST[:PORT]`), under vigil/SITE/NAME/ (docs/mqtt.md). Credentials go in the
    /// config file's [mqtt] section.
    #[arg(long, requires = "site", conflicts_with = "config")]
    mqtt: Option<String>,
    /// The site the device belongs to on the broker (the topic level above its name).
    #[arg(long, requires = "mqtt")]
    site: Option<String>,
    /// A group whose updates the device takes on the broker, besides its site's
    /// (`vigil fleet push --group`); repeatable.
    #[arg(long, requires = "mqtt")]
    group: Vec<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
}

/// The settings `vigil serve` runs with, from its options or its config file.
struct ServeSettings {
    model: Option<PathBuf>,
    port: String,
    baud: u32,
    state: PathBuf,
    pubkey: PathBuf,
    name: Option<String>,
    max_version_step: u32,
    input: Option<(String, super::StreamInputArgs)>,
    alarm: Option<AlarmConfig>,
    commission: Option<Duration>,
    false_alarms_per_day: f32,
    mqtt: Option<vigil_runtime::gateway::MqttSettings>,
    sensors: Sensors,
}

/// Where the sensors of a gateway come from.
enum Sensors {
    /// The input is one sensor.
    One,
    /// Each channel of the input, named by its column.
    PerChannel,
    /// The config file's `[[sensor]]` sections.
    Listed(Vec<SensorSettings>),
}

impl ServeArgs {
    fn settings(self) -> Result<ServeSettings> {
        let Some(path) = &self.config else {
            let missing = |what: &str| anyhow::anyhow!("{what} is required (or give --config)");
            return Ok(ServeSettings {
                model: self.model,
                port: self.port.ok_or_else(|| missing("--port"))?,
                baud: self.baud,
                state: self.state.ok_or_else(|| missing("--state"))?,
                pubkey: self.pubkey.ok_or_else(|| missing("--pubkey"))?,
                name: self.name,
                max_version_step: self.max_version_step,
                input: self.input.map(|i| (i, self.stream)),
                alarm: None,
                commission: self.commission,
                false_alarms_per_day: self.false_alarms_per_day,
                mqtt: match (self.mqtt, self.site) {
                    (Some(url), Some(site)) => {
                        vigil_mqtt::check_level("--site", &site)?;
                        for group in &self.group {
                            vigil_mqtt::check_level("--group", group)?;
                        }
                        let broker = self.tls.broker(&url)?;
                        Some(vigil_runtime::gateway::MqttSettings { broker, site, groups: self.group })
                    }
                    _ => None,
                },
                sensors: if self.sensor_per_channel { Sensors::PerChannel } else { Sensors::One },
            });
        };
        let c = GatewayConfig::load(path)?;
        let mut sensors = Vec::with_capacity(c.sensors.len());
        for sensor in &c.sensors {
            // Checked when the config was loaded.
            let kinematics = match c.sensor_machine(sensor) {
                Some(machine) => Some(machine.kinematics().map_err(|(key, e)| {
                    anyhow::anyhow!("config {}: sensor {}: {key}: {e}", path.display(), sensor.name)
                })?),
                None => None,
            };
            sensors.push(SensorSettings {
                name: sensor.name.clone(),
                channel: sensor.channel,
                kinematics,
                alarm: c.sensor_alarm(sensor),
            });
        }
        let input = match c.input {
            Some(i) => {
                let mut stream = super::StreamInputArgs::from_config(&i, path)?;
                if let Some(machine) = &c.machine {
                    // Checked when the config was loaded.
                    let kinematics = machine.kinematics().map_err(|(key, e)| {
                        anyhow::anyhow!("config {}: [machine] {key}: {e}", path.display())
                    })?;
                    stream.set_kinematics(kinematics);
                }
                Some((i.path.clone(), stream))
            }
            None => None,
        };
        Ok(ServeSettings {
            model: Some(c.model),
            port: c.port,
            baud: c.baud,
            state: c.state,
            pubkey: c.pubkey,
            name: c.name,
            max_version_step: c.max_version_step.unwrap_or(vigil_core::update::MAX_VERSION_STEP),
            input,
            alarm: c.alarm,
            commission: self.commission,
            false_alarms_per_day: self.false_alarms_per_day,
            mqtt: match &c.mqtt {
                Some(m) => Some(m.settings()?),
                None => None,
            },
            sensors: if sensors.is_empty() { Sensors::One } else { Sensors::Listed(sensors) },
        })
    }

    /// Runs the command until the input fails or the process is stopped.
    pub fn run(self) -> Result<()> {
        let s = self.settings()?;
        let model = vigil_runtime::builtin::load_model(s.model.as_deref())?;
        let class_names = model.metadata().class_names.clone();
        let input = match &s.input {
            Some((path, stream)) => {
                let (source, mut options) = stream.open(path)?;
                options.health_every.get_or_insert(vigil_runtime::health::DEFAULT_HEALTH_EVERY);
                Some((source, options))
            }
            None => None,
        };
        let sensors = match (s.sensors, &input) {
            (Sensors::Listed(sensors), _) => sensors,
            (Sensors::PerChannel, Some((source, _))) => {
                let channels = source.channels().unwrap_or(1);
                sensor_names(source.as_ref(), channels)
                    .into_iter()
                    .enumerate()
                    .map(|(channel, name)| SensorSettings { name, channel, kinematics: None, alarm: None })
                    .collect()
            }
            _ => Vec::new(),
        };
        let name = s.name.clone().unwrap_or_else(host_name);
        let (port, baud, state) = (s.port.clone(), s.baud, s.state.clone());
        let settings = GatewaySettings {
            model,
            port: s.port,
            baud: s.baud,
            public_key: read_public_key(&s.pubkey)?,
            max_version_step: s.max_version_step,
            state: s.state,
            name: name.clone(),
            input,
            alarm: s.alarm,
            commission: s.commission,
            false_alarms_per_day: s.false_alarms_per_day,
            mqtt: s.mqtt,
            sensors,
        };
        gateway::run(settings, move |event| {
            match event {
            GatewayEvent::Restored { version } => println!("restored committed head version {version}"),
            GatewayEvent::Adaptation(said) => println!("{said}"),
            GatewayEvent::Commissioning { seconds } => {
                println!("commissioning for {seconds:.0} s of stream: alarms are armed when it ends")
            }
            GatewayEvent::Serving => {
                println!("serving {name} on {port} at {baud} baud; state in {}", state.display())
            }
            GatewayEvent::Report { sensor: None, report } => println!("{}", describe(report, &class_names)),
            GatewayEvent::Report { sensor: Some(sensor), report } => {
                println!("{sensor}: {}", describe(report, &class_names))
            }
            GatewayEvent::Commissioned { sensor, at_s, threshold } => println!(
                "{}commissioned at {at_s:.1} s: alarms armed, threshold {threshold:.2}",
                sensor.map(|s| format!("{s}: ")).unwrap_or_default()
            ),
            GatewayEvent::InputEnded(s) => println!(
                "input ended: {} windows scored, {} alarm(s), {} window(s) skipped as sensor faults; still serving",
                s.windows, s.alarms, s.sensor_faults
            ),
        }
        })?;
        Ok(())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "gateway".into())
}
