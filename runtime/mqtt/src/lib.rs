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
//! EMQX, HiveMQ), plain or over TLS; the client is rumqttc with rustls.

mod fleet;
mod forward;
pub mod mosquitto;

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

/// Where a broker listens, from `mqtt://host[:port]` (port 1883 by default) or
/// `mqtts://host[:port]` (TLS, port 8883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name and password, when the broker asks for them.
    pub credentials: Option<(String, String)>,
    /// TLS, for `mqtts://`: set with [`Broker::with_tls`].
    pub tls: Option<Tls>,
}

/// The files of a TLS connection, read when the broker is configured.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    /// The PEM certificate(s) of the authority that signed the broker's certificate.
    ca: Vec<u8>,
    /// The client's PEM certificate chain and private key, when the broker asks for one.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("Tls").field("client_certificate", &self.client.is_some()).finish_non_exhaustive()
    }
}

/// Reads a PEM file for the TLS settings, naming it in errors.
fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| MqttError::File {
        what: format!("cannot read the {what} {}", path.display()),
        source: e,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(MqttError::Config(format!(
            "{} is not a PEM file (no -----BEGIN line); the {what} must be PEM",
            path.display()
        )));
    }
    Ok(bytes)
}

impl Broker {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`; a TLS broker then needs
    /// [`Broker::with_tls`] (its CA file) before it is used.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| MqttError::Config(format!("broker URL `{url}`: {why}"));
        let (rest, default_port) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (rest, 1883)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, 8883)
        } else {
            return Err(bad("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"));
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
            None => (rest, default_port),
        };
        if host.is_empty() || host.contains(['/', '@']) {
            return Err(bad("no host name"));
        }
        let tls = url.starts_with("mqtts://").then(|| Tls { ca: Vec::new(), client: None });
        Ok(Broker { host: host.to_owned(), port, credentials: None, tls })
    }

    /// The TLS files of an `mqtts://` broker: the CA that signed its certificate and,
    /// when the broker asks for client certificates, this client's certificate and key
    /// (PEM). An `mqtt://` broker refuses them, and an `mqtts://` one needs the CA.
    pub fn with_tls(
        mut self,
        ca: Option<&std::path::Path>,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self> {
        let name = self.name();
        match (&self.tls, ca) {
            (None, None) if client.is_none() => Ok(self),
            (None, _) => Err(MqttError::Config(format!(
                "broker {name} is plain mqtt://; a CA file or client certificate needs mqtts://"
            ))),
            (Some(_), None) => Err(MqttError::Config(format!(
                "broker mqtts://{name} needs the CA certificate that signed its certificate (--ca-file, \
                 ca_file in [mqtt])"
            ))),
            (Some(_), Some(ca)) => {
                let client = match client {
                    Some((cert, key)) => {
                        Some((read_pem("client certificate", cert)?, read_pem("client key", key)?))
                    }
                    None => None,
                };
                self.tls = Some(Tls { ca: read_pem("CA certificate", ca)?, client });
                Ok(self)
            }
        }
    }

    /// `host:port`, for messages.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Checks that an `mqtts://` broker was given its CA ([`Broker::with_tls`]).
    pub fn check(&self) -> Result<()> {
        match &self.tls {
            Some(tls) if tls.ca.is_empty() => Err(MqttError::Config(format!(
                "broker mqtts://{} needs the CA certificate that signed its certificate (--ca-file, \
                 ca_file in [mqtt])",
                self.name()
            ))),
            _ => Ok(()),
        }
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
        if let Some(tls) = &self.tls {
            options.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
                ca: tls.ca.clone(),
                alpn: None,
                client_auth: tls.client.clone(),
            }));
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
    use std::path::Path;

    #[test]
    fn broker_urls_are_read_or_refused_clearly() {
        assert_eq!(Broker::parse("mqtt://broker.plant:1884").unwrap().name(), "broker.plant:1884");
        assert_eq!(Broker::parse("mqtt://10.0.0.5").unwrap().port, 1883);
        let tls = Broker::parse("mqtts://b").unwrap();
        assert_eq!(tls.port, 8883);
        assert!(tls.check().unwrap_err().to_string().contains("needs the CA certificate"));
        assert!(Broker::parse("mqtt://b").unwrap().with_tls(Some(Path::new("ca.pem")), None).is_err());
        for (url, says) in
            [("http://b", "expected mqtt://"), ("mqtt://b:0", "port"), ("mqtt://:1883", "no host")]
        {
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
