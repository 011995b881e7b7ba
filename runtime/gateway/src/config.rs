//! The gateway agent's configuration file (`/etc/vigil/vigil.toml`), read by
//! `vigil serve --config`.
//!
//! Errors name the file, the key and the line, with the offending line quoted.

use crate::error::{Result, RuntimeError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use vigil_core::bearing::BearingGeometry;
use vigil_core::kinematics::{check_shaft_hz, Kinematics, KinematicsError};
use vigil_core::sensor::SensorLimits;

/// What `vigil serve` runs, as a file (see `packaging/vigil.toml` for every key).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// ONNX model with Vigil metadata.
    pub model: PathBuf,
    /// Serial port to serve the protocol on.
    pub port: String,
    /// Baud rate of the port.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// State folder: report store, update slots, labels.
    pub state: PathBuf,
    /// Public key head updates must be signed with.
    pub pubkey: PathBuf,
    /// Device name reported to hosts [default: the host name].
    pub name: Option<String>,
    /// The largest step by which one update may raise the head version
    /// [default: `vigil_core::update::MAX_VERSION_STEP`, 1000].
    pub max_version_step: Option<u32>,
    /// The sensor stream to score.
    pub input: Option<InputConfig>,
    /// Overrides of the model's alarm policy.
    pub alarm: Option<AlarmConfig>,
    /// The MQTT broker to publish status and reports to.
    pub mqtt: Option<MqttConfig>,
    /// What the nameplate says of the machine: shaft speed and bearing.
    pub machine: Option<MachineConfig>,
    /// The sensors (`[[sensor]]`), each a channel of the input scored on its own; none:
    /// the input is the device's one sensor.
    #[serde(default, rename = "sensor")]
    pub sensors: Vec<SensorConfig>,
}

/// One measurement point of a gateway that watches several (`[[sensor]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Its name, such as `pump-7/DE`: it names its folder in the state folder and what the
    /// host tools address (`vigil reports pull --sensor pump-7/DE`).
    pub name: String,
    /// The input channel it reads, counted from 0.
    pub channel: usize,
    /// Its machine, where it differs from `[machine]` (`[sensor.machine]`); unset keys
    /// keep `[machine]`'s.
    pub machine: Option<MachineConfig>,
    /// Its alarm policy overrides, over `[alarm]`'s (`[sensor.alarm]`).
    pub alarm: Option<AlarmConfig>,
}

impl GatewayConfig {
    /// Sensor `sensor`'s machine: its own `[sensor.machine]` keys over `[machine]`'s.
    pub fn sensor_machine(&self, sensor: &SensorConfig) -> Option<MachineConfig> {
        match (&self.machine, &sensor.machine) {
            (None, None) => None,
            (Some(m), None) | (None, Some(m)) => Some(m.clone()),
            (Some(g), Some(s)) => Some(MachineConfig {
                shaft_hz: s.shaft_hz.or(g.shaft_hz),
                bearing: s.bearing.clone().or_else(|| g.bearing.clone()),
            }),
        }
    }

    /// Sensor `sensor`'s alarm overrides: its own keys over `[alarm]`'s.
    pub fn sensor_alarm(&self, sensor: &SensorConfig) -> Option<AlarmConfig> {
        match (&self.alarm, &sensor.alarm) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(*a),
            (Some(g), Some(s)) => Some(AlarmConfig {
                threshold: s.threshold.or(g.threshold),
                raise_k: s.raise_k.or(g.raise_k),
                window_n: s.window_n.or(g.window_n),
                clear_ratio: s.clear_ratio.or(g.clear_ratio),
            }),
        }
    }
}

/// The machine's kinematics (`docs/kinematics.md`); what is left out is read from the
/// signal (the speed) or unknown (the bearing).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Shaft speed in Hz.
    pub shaft_hz: Option<f32>,
    /// The bearing: a designation such as `6205`, or `N,ELEMENT,PITCH[,ANGLE_DEG]`.
    pub bearing: Option<String>,
}

impl MachineConfig {
    /// The kinematics, checked; errors name the key.
    pub fn kinematics(&self) -> std::result::Result<Kinematics, (&'static str, KinematicsError)> {
        let shaft_hz = self.shaft_hz.map(check_shaft_hz).transpose().map_err(|e| ("shaft_hz", e))?;
        let bearing =
            self.bearing.as_deref().map(BearingGeometry::parse).transpose().map_err(|e| ("bearing", e))?;
        Ok(Kinematics { shaft_hz, bearing })
    }
}

/// The broker (`docs/mqtt.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]`.
    pub broker: String,
    /// The site: the topic level above the device's name.
    pub site: String,
    /// User name, when the broker asks for one.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// Groups whose updates the device takes, besides its site's (`vigil fleet push
    /// --group`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// For `mqtts://`: the PEM certificate of the authority that signed the broker's.
    pub ca_file: Option<PathBuf>,
    /// For brokers that ask for client certificates: this gateway's PEM certificate...
    pub client_cert: Option<PathBuf>,
    /// ... and its PEM private key.
    pub client_key: Option<PathBuf>,
}

impl MqttConfig {
    /// The broker, site and groups, checked.
    pub fn settings(&self) -> Result<crate::gateway::MqttSettings> {
        for group in &self.groups {
            vigil_mqtt::check_level("[mqtt] groups:", group)
                .map_err(|e| RuntimeError::Config(e.to_string()))?;
        }
        Ok(crate::gateway::MqttSettings {
            broker: self.broker()?,
            site: self.site.clone(),
            groups: self.groups.clone(),
        })
    }

    /// The broker, checked.
    pub fn broker(&self) -> Result<vigil_mqtt::Broker> {
        let mut broker = vigil_mqtt::Broker::parse(&self.broker)
            .map_err(|e| RuntimeError::Config(format!("[mqtt] broker: {e}")))?;
        match (&self.username, &self.password) {
            (Some(user), Some(password)) => broker.credentials = Some((user.clone(), password.clone())),
            (None, None) => {}
            _ => {
                return Err(RuntimeError::Config(
                    "[mqtt] needs both username and password, or neither".into(),
                ))
            }
        }
        vigil_mqtt::check_level("[mqtt] site", &self.site)
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => {
                return Err(RuntimeError::Config(
                    "[mqtt] needs both client_cert and client_key, or neither".into(),
                ))
            }
        };
        broker
            .with_tls(self.ca_file.as_deref(), client)
            .map_err(|e| RuntimeError::Config(format!("[mqtt]: {e}")))
    }
}

/// The sensor stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// File, FIFO or `-` for standard input.
    pub path: String,
    /// `csv`, `wav`, `f32le` or `forwarder` [default: from the extension].
    pub format: Option<String>,
    /// Sample rate in Hz (when the input does not say).
    pub rate: Option<f64>,
    /// Channels (needed for f32le).
    pub channels: Option<usize>,
    /// Pace a file input at its sample rate.
    #[serde(default)]
    pub realtime: bool,
    /// Largest magnitude the sensor measures, in the stream's units (g); samples beyond
    /// it make a sensor-fault report [default: 500].
    pub range_g: Option<f32>,
    /// How often a health record is stored, as `90s`, `1m`, `1h` [default: 1m].
    pub health_every: Option<String>,
}

/// Alarm policy overrides; unset keys keep the model's values.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// Anomaly score above which a window counts as abnormal.
    pub threshold: Option<f32>,
    /// Abnormal windows among the last `window_n` that raise the alarm.
    pub raise_k: Option<u8>,
    /// Length of the recent-window history.
    pub window_n: Option<u8>,
    /// The alarm clears below `threshold * clear_ratio`.
    pub clear_ratio: Option<f32>,
}

impl AlarmConfig {
    /// `policy` with these overrides applied.
    pub fn apply(&self, mut policy: vigil_core::alarm::AlarmPolicy) -> vigil_core::alarm::AlarmPolicy {
        policy.threshold = self.threshold.unwrap_or(policy.threshold);
        policy.raise_k = self.raise_k.unwrap_or(policy.raise_k);
        policy.window_n = self.window_n.unwrap_or(policy.window_n);
        policy.clear_ratio = self.clear_ratio.unwrap_or(policy.clear_ratio);
        policy
    }
}

fn default_baud() -> u32 {
    vigil_serial::DEFAULT_BAUD
}

impl GatewayConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RuntimeError::io(format!("cannot read config {}", path.display()), e))?;
        let config: GatewayConfig = match toml::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                return Err(RuntimeError::Config(format!(
                    "config {}: {}",
                    path.display(),
                    e.to_string().trim_end()
                )))
            }
        };
        config.check(&text, path)?;
        Ok(config)
    }

    /// Checks values the types alone do not.
    fn check(&self, text: &str, path: &Path) -> Result<()> {
        let at = |key: &str| match line_of(text, key) {
            Some(n) => format!("config {} line {n}, key `{key}`", path.display()),
            None => format!("config {}, key `{key}`", path.display()),
        };
        if self.port.trim().is_empty() {
            return Err(RuntimeError::Config(format!(
                "{}: the serial port is empty; give a device such as /dev/ttyS1",
                at("port")
            )));
        }
        if self.baud == 0 {
            return Err(RuntimeError::Config(format!("{}: the baud rate must be positive", at("baud"))));
        }
        if let Some(input) = &self.input {
            if let Some(format) = &input.format {
                if format.parse::<crate::input::InputFormat>().is_err() {
                    return Err(RuntimeError::Config(format!(
                        "{}: `{format}` is not one of csv, wav, f32le, forwarder",
                        at("format")
                    )));
                }
            }
            if input.range_g.is_some_and(|r| !(r.is_finite() && r > SensorLimits::DEFAULT.flat_g)) {
                return Err(RuntimeError::Config(format!(
                    "{}: the sensor's range must be a positive number of g, such as 50",
                    at("range_g")
                )));
            }
            if input.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(RuntimeError::Config(format!(
                    "{}: the sample rate must be a positive number of Hz",
                    at("rate")
                )));
            }
        }
        if let Some(machine) = &self.machine {
            if let Err((key, e)) = machine.kinematics() {
                return Err(RuntimeError::Config(format!("{}: {e}", at(key))));
            }
        }
        if let Some(alarm) = &self.alarm {
            check_alarm(alarm).map_err(|(key, e)| RuntimeError::Config(format!("{}: {e}", at(key))))?;
        }
        if !self.sensors.is_empty() && self.input.is_none() {
            return Err(RuntimeError::Config(format!(
                "config {}: [[sensor]] sections name channels of an input: add an [input] section",
                path.display()
            )));
        }
        let sensor_at = |i: usize, key: &str| {
            let name = &self.sensors[i].name;
            format!("config {}, [[sensor]] number {} ({name}), key `{key}`", path.display(), i + 1)
        };
        if let Some((i, why)) =
            crate::sensors::sensor_list_error(self.sensors.iter().map(|s| s.name.as_str()))
        {
            return Err(RuntimeError::Config(format!("{}: {why}", sensor_at(i, "name"))));
        }
        for (i, sensor) in self.sensors.iter().enumerate() {
            let at = |key: &str| sensor_at(i, key);
            if let Some(machine) = &sensor.machine {
                if let Err((key, e)) = machine.kinematics() {
                    return Err(RuntimeError::Config(format!("{}: {e}", at(key))));
                }
            }
            if let Some(alarm) = self.sensor_alarm(sensor) {
                check_alarm(&alarm).map_err(|(key, e)| RuntimeError::Config(format!("{}: {e}", at(key))))?;
            }
        }
        Ok(())
    }
}

/// Checks alarm overrides as a policy would take them; the error names the key. Keys
/// left unset take the loosest values here (the model's own are checked when it is
/// loaded), so `raise_k = 2` alone is not refused for want of a `window_n`.
fn check_alarm(alarm: &AlarmConfig) -> std::result::Result<(), (&'static str, vigil_core::CoreError)> {
    let policy = alarm.apply(vigil_core::alarm::AlarmPolicy {
        threshold: 1.0,
        raise_k: 1,
        window_n: 32,
        clear_ratio: 1.0,
    });
    policy.validate().map_err(|e| {
        let key =
            if matches!(e, vigil_core::CoreError::AlarmWindow { .. }) { "raise_k" } else { "threshold" };
        (key, e)
    })
}

/// The 1-based line where `key = ...` is set, if any.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<GatewayConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(&path, text).unwrap();
        GatewayConfig::load(&path)
    }

    const GOOD: &str =
        "model = \"m.onnx\"\nport = \"/dev/ttyS1\"\nstate = \"/var/lib/vigil\"\npubkey = \"k.pub\"\n";

    #[test]
    fn the_shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/vigil.toml");
        let c = GatewayConfig::load(&path).unwrap();
        assert_eq!(c.state, PathBuf::from("/var/lib/vigil"));
        assert_eq!(c.baud, 115_200);
    }

    #[test]
    fn bad_configs_name_the_key_and_line() {
        assert_eq!(load(GOOD).unwrap().port, "/dev/ttyS1");
        let e = format!("{:#}", load(&format!("{GOOD}baud = \"fast\"\n")).unwrap_err());
        assert!(e.contains("line 5") && e.contains("baud"), "{e}");
        let e = format!("{:#}", load(&format!("{GOOD}prot = 1\n")).unwrap_err());
        assert!(e.contains("line 5") && e.contains("unknown field `prot`"), "{e}");
        let e = format!("{:#}", load("model = \"m.onnx\"\n").unwrap_err());
        assert!(e.contains("missing field `port`"), "{e}");
        let e =
            format!("{:#}", load(&format!("{GOOD}[input]\npath = \"-\"\nformat = \"mp3\"\n")).unwrap_err());
        assert!(e.contains("line 7, key `format`"), "{e}");
        let e = format!("{:#}", load(&format!("{GOOD}[alarm]\nraise_k = 9\nwindow_n = 5\n")).unwrap_err());
        assert!(e.contains("line 6, key `raise_k`"), "{e}");
    }

    #[test]
    fn sensors_are_read_with_their_own_machine_and_alarm_over_the_gateways() {
        let input = "[input]\npath = \"-\"\nformat = \"f32le\"\nchannels = 4\n";
        let text = format!(
            "{GOOD}{input}[machine]\nshaft_hz = 25.0\nbearing = \"6205\"\n[alarm]\nraise_k = 2\n\
             [[sensor]]\nname = \"pump-7/DE\"\nchannel = 0\n\
             [[sensor]]\nname = \"motor\"\nchannel = 2\n[sensor.machine]\nshaft_hz = 49.5\n[sensor.alarm]\nthreshold = 12.0\n"
        );
        let c = load(&text).unwrap();
        assert_eq!(c.sensors.len(), 2);
        assert_eq!((c.sensors[0].name.as_str(), c.sensors[0].channel), ("pump-7/DE", 0));
        let pump = c.sensor_machine(&c.sensors[0]).unwrap().kinematics().unwrap();
        assert_eq!(pump.shaft_hz, Some(25.0));
        let motor = c.sensor_machine(&c.sensors[1]).unwrap().kinematics().unwrap();
        assert_eq!(motor.shaft_hz, Some(49.5));
        assert_eq!(motor.bearing.unwrap().n_balls, 9, "the gateway's bearing where the sensor names none");
        let alarm = c.sensor_alarm(&c.sensors[1]).unwrap();
        assert_eq!((alarm.threshold, alarm.raise_k), (Some(12.0), Some(2)));

        let e = format!("{:#}", load(&format!("{GOOD}[[sensor]]\nname = \"a\"\nchannel = 0\n")).unwrap_err());
        assert!(e.contains("add an [input] section"), "{e}");
        let twice = format!(
            "{GOOD}{input}[[sensor]]\nname = \"a\"\nchannel = 0\n[[sensor]]\nname = \"a\"\nchannel = 1\n"
        );
        let e = format!("{:#}", load(&twice).unwrap_err());
        assert!(e.contains("[[sensor]] number 2 (a), key `name`") && e.contains("another sensor"), "{e}");
        let e = format!(
            "{:#}",
            load(&format!("{GOOD}{input}[[sensor]]\nname = \"../etc\"\nchannel = 0\n")).unwrap_err()
        );
        assert!(e.contains("cannot name a sensor's folder"), "{e}");
        let e = format!("{:#}", load(&format!("{GOOD}{input}[[sensor]]\nname = \"a\"\n")).unwrap_err());
        assert!(e.contains("missing field `channel`"), "{e}");
        let bad_speed = format!(
            "{GOOD}{input}[[sensor]]\nname = \"a\"\nchannel = 0\n[sensor.machine]\nshaft_hz = -1.0\n"
        );
        let e = format!("{:#}", load(&bad_speed).unwrap_err());
        assert!(e.contains("key `shaft_hz`") && e.contains("not a positive speed"), "{e}");
    }

    #[test]
    fn the_readmes_multi_sensor_gateway_and_the_templates_sensors_parse() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
        let section = readme.split("**Several measurement points on one gateway.**").nth(1).unwrap();
        let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
        let c = load(&format!("{GOOD}{block}")).unwrap();
        let names: Vec<&str> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pump-7/DE", "motor-3/NDE"]);
        assert_eq!(c.sensor_machine(&c.sensors[1]).unwrap().shaft_hz, Some(49.6));

        // The package's template, its [[sensor]] block uncommented (with an input).
        let template =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/vigil.toml"))
                .unwrap();
        let start = template.find("# [[sensor]]").unwrap();
        let block: String = template[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim_start())
            .map(|l| format!("{l}\n"))
            .collect();
        let c = load(&format!("{GOOD}[input]\npath = \"-\"\n{block}")).unwrap();
        assert_eq!(c.sensors.len(), 2, "{block}");
    }

    #[test]
    fn the_machine_kinematics_are_read_and_impossible_ones_refused() {
        let c = load(&format!("{GOOD}[machine]\nshaft_hz = 29.95\nbearing = \"6205\"\n")).unwrap();
        let k = c.machine.unwrap().kinematics().unwrap();
        assert_eq!(k.shaft_hz, Some(29.95));
        assert_eq!(k.bearing.unwrap().n_balls, 9);
        let c = load(&format!("{GOOD}[machine]\nbearing = \"8, 0.235, 1.245\"\n")).unwrap();
        assert_eq!(c.machine.unwrap().kinematics().unwrap().shaft_hz, None);
        let e = format!("{:#}", load(&format!("{GOOD}[machine]\nshaft_hz = -3.0\n")).unwrap_err());
        assert!(e.contains("line 6, key `shaft_hz`") && e.contains("not a positive speed"), "{e}");
        let e = format!("{:#}", load(&format!("{GOOD}[machine]\nbearing = \"6205-XYZ\"\n")).unwrap_err());
        assert!(e.contains("line 6, key `bearing`") && e.contains("not a known designation"), "{e}");
        let e = format!("{:#}", load(&format!("{GOOD}[machine]\nbearing = \"30,0.5,1.0\"\n")).unwrap_err());
        assert!(e.contains("do not fit on the pitch circle (room for 6)"), "{e}");
    }
}
