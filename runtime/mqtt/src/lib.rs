//! Vigil on an MQTT broker (`docs/mqtt.md`): a gateway announces its status with a last
//! will, forwards every stored report from its durable store, in order, resuming after the
//! last one the broker acknowledged, and takes signed head updates published to its site
//! or group; a host reads the fleet's status, collects the reports once each, and fans an
//! update out with each device's outcome.
//!
//! Topics live under `vigil/<site>/`: `<device>/status` (retained JSON; the broker
//! publishes the last will `{"online": false}` when the device vanishes), `<device>/report`
//! (one JSON object per stored report, QoS 1, with its device and sequence number),
//! `update` and `group/<group>/update` (retained postcard [`UpdateMessage`]) and
//! `<device>/ack` (the outcome). The broker is an ordinary MQTT 3.1.1 broker (Mosquitto,
//! EMQX, HiveMQ); the client is rumqttc.

mod fleet;
mod forward;

pub use fleet::{
    collect_reports, fleet_snapshots, fleet_status, publish_update, Collected, DeviceStatus, UpdateOutcome,
};
pub use forward::{Forwarder, ForwarderSettings, Source, ACKED_FILE};

use vigil_core::update::UpdateHeader;
use vigil_core::wire::Signature;

/// A signed head update as it travels on the broker (postcard): what `vigil push` sends
/// over serial, in one message. Published retained to `vigil/<site>/update` or
/// `vigil/<site>/group/<group>/update`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpdateMessage {
    /// The signed header.
    pub header: UpdateHeader,
    /// The publisher's signature over the header.
    pub signature: Option<Signature>,
    /// The payload the header describes.
    pub payload: Vec<u8>,
}

/// The topic an update for `site` (and `group`, when given) is published to.
pub fn update_topic(site: &str, group: Option<&str>) -> String {
    match group {
        Some(group) => format!("vigil/{site}/group/{group}/update"),
        None => format!("vigil/{site}/update"),
    }
}

use std::time::Duration;

/// Why talking to a broker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The broker URL or a name in a topic is not usable.
    #[error("{0}")]
    Config(String),
    /// The broker could not be reached or dropped the connection.
    #[error("broker {broker}: {why}")]
    Broker {
        /// The broker, as `host:port`.
        broker: String,
        /// What went wrong.
        why: String,
    },
    /// A file of the state folder or of the collection could not be read or written.
    #[error("{what}: {source}")]
    File {
        /// What was being done, naming the file.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The largest MQTT packet sent or taken.
const MAX_PACKET: usize = 64 * 1024;

/// Result alias of this crate.
pub type Result<T, E = MqttError> = std::result::Result<T, E>;

/// Where a broker listens, from `mqtt://host[:port]` (port 1883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name and password, when the broker asks for them.
    pub credentials: Option<(String, String)>,
}

impl Broker {
    /// Parses `mqtt://host[:port]`. `mqtts://` (TLS) is refused with a clear error: this
    /// build speaks plain MQTT only, for brokers on the plant's own network or loopback.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| MqttError::Config(format!("broker URL `{url}`: {why}"));
        let rest = if let Some(rest) = url.strip_prefix("mqtt://") {
            rest
        } else if url.starts_with("mqtts://") {
            return Err(bad(
                "TLS (mqtts://) is not in this build yet; use mqtt:// to a broker on a trusted network, \
                 or a local broker that bridges over TLS",
            ));
        } else {
            return Err(bad("expected mqtt://HOST[:PORT]"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad("the port must be 1-65535"))?;
                (host, port)
            }
            None => (rest, 1883),
        };
        if host.is_empty() || host.contains(['/', '@']) {
            return Err(bad("no host name"));
        }
        Ok(Broker { host: host.to_owned(), port, credentials: None })
    }

    /// `host:port`, for messages.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Client options for this broker with the client identifier `id`.
    fn options(&self, id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(id, &self.host, self.port);
        options.set_keep_alive(Duration::from_secs(5));
        // A head update is at most a few KiB; room for the largest a device takes.
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        options
    }

    fn failed(&self, why: impl std::fmt::Display) -> MqttError {
        MqttError::Broker { broker: self.name(), why: why.to_string() }
    }
}

/// Checks that `name` can be one level of a topic (a site or device name): not empty, no
/// `/`, `+`, `#` or control characters.
pub fn check_level(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '+', '#']) || name.chars().any(char::is_control) {
        return Err(MqttError::Config(format!(
            "{what} `{name}` cannot be a topic level: it must be non-empty, without `/`, `+`, `#` or control characters"
        )));
    }
    Ok(())
}

/// The topic `vigil/<site>/<device>/<leaf>`.
pub fn topic(site: &str, device: &str, leaf: &str) -> String {
    format!("vigil/{site}/{device}/{leaf}")
}

/// The site and device of a topic under `vigil/`, with its last level.
fn parse_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let mut levels = topic.strip_prefix("vigil/")?.split('/');
    let (site, device, leaf) = (levels.next()?, levels.next()?, levels.next()?);
    levels.next().is_none().then_some((site, device, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_read_or_refused_clearly() {
        assert_eq!(Broker::parse("mqtt://broker.plant:1884").unwrap().name(), "broker.plant:1884");
        assert_eq!(Broker::parse("mqtt://10.0.0.5").unwrap().port, 1883);
        for (url, says) in [
            ("mqtts://b:8883", "TLS"),
            ("http://b", "expected mqtt://"),
            ("mqtt://b:0", "port"),
            ("mqtt://:1883", "no host"),
        ] {
            let e = Broker::parse(url).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(url), "{url}: {e}");
        }
    }

    #[test]
    fn topics_are_built_and_read_back() {
        let t = topic("plant-1", "press-7", "report");
        assert_eq!(t, "vigil/plant-1/press-7/report");
        assert_eq!(parse_topic(&t), Some(("plant-1", "press-7", "report")));
        assert_eq!(parse_topic("vigil/a/b/c/d"), None);
        assert!(check_level("device", "press/7").is_err() && check_level("site", "").is_err());
        assert!(check_level("device", "press-7").is_ok());
    }
}
