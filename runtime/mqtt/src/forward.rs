//! The gateway's side: status with a last will, and store-and-forward of reports.
//!
//! Reports are read from the gateway's durable store, never from memory: the forwarder
//! publishes the report with the smallest sequence number at or after its mark, waits for
//! the broker's acknowledgement (QoS 1), then moves the mark past it and persists it
//! (`mqtt.next` in the state folder, written atomically). While the broker is unreachable
//! the gateway goes on scoring and storing; on reconnection the backlog goes out in order.
//! A report whose acknowledgement was lost is published again: consumers drop duplicates
//! by (device, sequence).

use crate::{check_level, topic, update_topic, Broker, MqttError, Result, UpdateMessage};
use rumqttc::{Client, Connection, Event, LastWill, Outgoing, Packet, Publish, QoS};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vigil_core::report::{AnomalyReport, ReportKind};
use vigil_core::wire::NackReason;

/// File in the state folder holding the sequence number of the next report to publish.
pub const ACKED_FILE: &str = "mqtt.next";
/// How long the broker has to acknowledge a publish before the connection is retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the retained status is refreshed while connected.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where and as whom a gateway publishes.
#[derive(Debug, Clone)]
pub struct ForwarderSettings {
    /// The broker.
    pub broker: Broker,
    /// The site (first topic level under `vigil/`).
    pub site: String,
    /// The device name (second level).
    pub device: String,
    /// The gateway's state folder, where the mark is kept.
    pub state: PathBuf,
    /// Groups whose updates the device takes, besides its site's.
    pub groups: Vec<String>,
    /// On a gateway that watches several sensors: each one's name and the folder where
    /// its mark is kept, in the source's sensor order. Empty: one sensor, its mark in
    /// `state`.
    pub sensors: Vec<(String, PathBuf)>,
}

/// One report sequence the forwarder follows: a sensor's, or the gateway's only one.
struct Lane {
    /// The sensor's name, on a gateway of several.
    sensor: Option<String>,
    /// Where its mark is kept.
    state: PathBuf,
    /// The next sequence to publish.
    next: u64,
}

/// What the forwarder asks of the gateway.
pub trait Source: Send + 'static {
    /// Sensor `sensor`'s stored report with the smallest sequence number at or after
    /// `sequence` (sensor 0 on a gateway of one).
    fn report_from(&mut self, sensor: usize, sequence: u64) -> Option<AnomalyReport>;
    /// A report as its JSON payload (the device and site are added).
    fn report_json(&self, report: &AnomalyReport) -> serde_json::Value;
    /// The device's status as JSON (`online`, the device, site and groups are added).
    fn status_json(&self) -> serde_json::Value;
    /// Applies a signed update exactly as one pushed over serial; the version now active,
    /// or the device's refusal.
    fn apply_update(&mut self, update: &UpdateMessage) -> Result<u32, NackReason>;
    /// The head the device runs as adapted on site, as `vigil snapshot` gets it over
    /// serial (a postcard head update and the adaptation counts; of its first sensor on a
    /// gateway of several); `None` when unavailable.
    fn snapshot(&self) -> Option<Vec<u8>>;
}

/// A running forwarder; stopping it publishes the device offline and disconnects.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding on a thread of its own.
    pub fn start(settings: ForwarderSettings, source: impl Source) -> Result<Self> {
        settings.broker.check()?;
        check_level("site", &settings.site)?;
        check_level("device", &settings.device)?;
        for group in &settings.groups {
            check_level("group", group)?;
        }
        let lanes = if settings.sensors.is_empty() {
            vec![Lane { sensor: None, state: settings.state.clone(), next: read_mark(&settings.state)? }]
        } else {
            let mut lanes = Vec::with_capacity(settings.sensors.len());
            for (name, state) in &settings.sensors {
                lanes.push(Lane {
                    sensor: Some(name.clone()),
                    state: state.clone(),
                    next: read_mark(state)?,
                });
            }
            lanes
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("vigil-mqtt".into())
            .spawn(move || run(settings, source, lanes, &thread_stop))
            .map_err(|e| MqttError::File { what: "cannot start the MQTT thread".into(), source: e })?;
        Ok(Forwarder { stop, handle: Some(handle) })
    }

    /// Stops the forwarder: the device is published offline and the connection closed.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(settings: ForwarderSettings, mut source: impl Source, mut lanes: Vec<Lane>, stop: &AtomicBool) {
    let mut backoff = Duration::from_secs(1);
    // Whether the last attempt got through: one warning per outage, not one per retry.
    let mut reachable = true;
    while !stop.load(Ordering::Relaxed) {
        let mut connected = false;
        let result = session(&settings, &mut source, &mut lanes, stop, &mut connected);
        match result {
            Ok(()) => return,
            Err(e) => {
                if connected || reachable {
                    log::warn!(
                        "MQTT: {e}; reports stay in the store and are published from {} when the broker is back",
                        marks(&lanes)
                    );
                }
                reachable = connected;
                if connected {
                    backoff = Duration::from_secs(1);
                }
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection to the broker, with the messages that arrived while waiting for
/// something else.
struct Session<'b> {
    broker: &'b Broker,
    client: Client,
    connection: Connection,
    inbox: Vec<Publish>,
}

impl Session<'_> {
    /// Publishes at QoS 1 and waits for the broker's acknowledgement of this very publish.
    fn publish(&mut self, topic: &str, retain: bool, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload).map_err(|e| self.broker.failed(e))?;
        let mut ours = None;
        self.wait_for(ACK_TIMEOUT, |event| match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                ours = Some(*pkid);
                false
            }
            Event::Incoming(Packet::PubAck(ack)) => Some(ack.pkid) == ours,
            _ => false,
        })
    }

    /// Drives the connection until `done` accepts an event, the connection fails, or
    /// `timeout` passes; messages that arrive meanwhile go to the inbox.
    fn wait_for(&mut self, timeout: Duration, mut done: impl FnMut(&Event) -> bool) -> Result<()> {
        let until = Instant::now() + timeout;
        let silent = || format!("no answer within {} s", timeout.as_secs());
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.broker.failed(silent()));
            }
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.inbox.push(p),
                Ok(Ok(event)) if done(&event) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.broker.failed(e)),
                Err(_) => return Err(self.broker.failed(silent())),
            }
        }
    }

    /// Drives the connection for at most `time`, collecting messages.
    fn idle(&mut self, time: Duration) -> Result<()> {
        match self.connection.recv_timeout(time) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.inbox.push(p),
            Ok(Err(e)) => return Err(self.broker.failed(e)),
            _ => {}
        }
        Ok(())
    }
}

/// Where the lanes stand: `#12`, or `pump/DE #12, motor #3` on a gateway of sensors.
fn marks(lanes: &[Lane]) -> String {
    let mark = |l: &Lane| match &l.sensor {
        Some(name) => format!("{name} #{}", l.next),
        None => format!("#{}", l.next),
    };
    lanes.iter().map(mark).collect::<Vec<_>>().join(", ")
}

/// One connection: announce, then forward until stopped or the connection fails.
fn session(
    settings: &ForwarderSettings,
    source: &mut impl Source,
    lanes: &mut [Lane],
    stop: &AtomicBool,
    connected: &mut bool,
) -> Result<()> {
    let (site, device) = (&settings.site, &settings.device);
    let status_topic = topic(site, device, "status");
    let report_topic = topic(site, device, "report");
    let health_topic = topic(site, device, "health");
    let ack_topic = topic(site, device, "ack");
    let snapshot_topic = topic(site, device, "snapshot");
    let (mut snapshot_sent, mut first): (Option<Vec<u8>>, bool) = (None, true);
    let offline = serde_json::json!({ "online": false, "site": site, "device": device }).to_string();
    let mut options = settings.broker.options(&format!("vigil-{site}-{device}"));
    options.set_last_will(LastWill::new(&status_topic, offline.clone(), QoS::AtLeastOnce, true));
    let (client, connection) = Client::new(options, 16);
    let mut s = Session { broker: &settings.broker, client, connection, inbox: Vec::new() };
    s.wait_for(ACK_TIMEOUT, |e| matches!(e, Event::Incoming(Packet::ConnAck(_))))?;
    let status = |mut json: serde_json::Value| {
        json["online"] = true.into();
        json["site"] = site.as_str().into();
        json["device"] = device.as_str().into();
        json["groups"] = settings.groups.clone().into();
        json.to_string()
    };
    s.publish(&status_topic, true, status(source.status_json()))?;
    let updates: Vec<String> = std::iter::once(update_topic(site, None))
        .chain(settings.groups.iter().map(|g| update_topic(site, Some(g))))
        .collect();
    for filter in &updates {
        s.client.subscribe(filter, QoS::AtLeastOnce).map_err(|e| settings.broker.failed(e))?;
    }
    *connected = true;
    log::info!(
        "MQTT: connected to {} as {site}/{device}; next report to publish {}",
        settings.broker.name(),
        marks(lanes)
    );
    let mut status_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for message in std::mem::take(&mut s.inbox) {
            // An empty retained message clears a topic; it is not an update.
            if updates.contains(&message.topic) && !message.payload.is_empty() {
                let mut ack = apply(source, &message.topic, &message.payload);
                ack["site"] = site.as_str().into();
                ack["device"] = device.as_str().into();
                s.publish(&ack_topic, true, ack.to_string())?;
                s.publish(&status_topic, true, status(source.status_json()))?;
                first = true;
            }
        }
        // Each sensor's next report in turn, so one busy sensor does not hold back the rest.
        let mut published = false;
        for (i, lane) in lanes.iter_mut().enumerate() {
            let Some(report) = source.report_from(i, lane.next) else { continue };
            let mut json = source.report_json(&report);
            json["site"] = site.as_str().into();
            json["device"] = device.as_str().into();
            if let Some(sensor) = &lane.sensor {
                json["sensor"] = sensor.as_str().into();
            }
            let to = match report.kind {
                ReportKind::Health(_) => &health_topic,
                _ => &report_topic,
            };
            s.publish(to, false, json.to_string())?;
            lane.next = report.sequence + 1;
            write_mark(&lane.state, lane.next)?;
            published = true;
        }
        if published {
            continue;
        }
        if status_at.elapsed() >= STATUS_EVERY || first {
            first = false;
            s.publish(&status_topic, true, status(source.status_json()))?;
            // The snapshot goes out when it changed (adaptation, an update), for fleet merge.
            if let Some(snapshot) = source.snapshot().filter(|b| snapshot_sent.as_ref() != Some(b)) {
                s.publish(&snapshot_topic, true, snapshot.clone())?;
                snapshot_sent = Some(snapshot);
            }
            status_at = Instant::now();
        }
        s.idle(Duration::from_millis(200))?;
    }
    // A clean stop: say offline (the broker sends the will only when a device vanishes).
    let _ = s.publish(&status_topic, true, offline);
    let _ = s.client.disconnect();
    let _ = s.connection.recv_timeout(Duration::from_millis(200));
    Ok(())
}

/// Applies an update from the broker; the outcome as the `ack` payload.
fn apply(source: &mut impl Source, topic: &str, payload: &[u8]) -> serde_json::Value {
    let update = match postcard::from_bytes::<UpdateMessage>(payload) {
        Ok(update) => update,
        Err(e) => {
            log::warn!("MQTT: the update on {topic} does not decode ({e}); refused");
            return serde_json::json!({ "outcome": "refused", "reason": format!("the update does not decode: {e}") });
        }
    };
    let header = update.header;
    let (outcome, reason, version) = match source.apply_update(&update) {
        Ok(version) => ("applied", String::new(), version),
        Err(NackReason::AlreadyActive { version }) => ("already", String::new(), version),
        Err(reason) => ("refused", reason.to_string(), header.version),
    };
    log::info!("MQTT: update to head version {} from {topic}: {outcome} {reason}", header.version);
    serde_json::json!({
        "update_version": header.version,
        "update_sha256": vigil_core::hex::encode(&header.sha256),
        "outcome": outcome,
        "reason": reason,
        "head_version": version,
    })
}

/// The next sequence to publish, from the state folder (0 when none was kept).
pub(crate) fn read_mark(state: &Path) -> Result<u64> {
    let path = state.join(ACKED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            MqttError::Config(format!(
                "{} holds `{}`, not a sequence number; delete it to publish every stored report again",
                path.display(),
                text.trim()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(MqttError::File { what: format!("cannot read {}", path.display()), source: e }),
    }
}

/// Persists the mark: written to a temporary file, synced, then renamed over the old one.
fn write_mark(state: &Path, next: u64) -> Result<()> {
    let path = state.join(ACKED_FILE);
    let temporary = state.join(format!("{ACKED_FILE}.tmp"));
    let io = |e| MqttError::File { what: format!("cannot write {}", path.display()), source: e };
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        writeln!(file, "{next}").map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, &path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_survives_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), 0);
        write_mark(dir.path(), 42).unwrap();
        assert_eq!(read_mark(dir.path()).unwrap(), 42);
        std::fs::write(dir.path().join(ACKED_FILE), "forty").unwrap();
        let e = read_mark(dir.path()).unwrap_err().to_string();
        assert!(e.contains("mqtt.next") && e.contains("forty"), "{e}");
    }
}
