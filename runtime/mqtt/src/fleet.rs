//! The host's side: the fleet's status, and every device's reports collected once.

use crate::{parse_topic, Broker, Result};
use rumqttc::{Client, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One device's retained status.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    /// Its site.
    pub site: String,
    /// Its name.
    pub device: String,
    /// What it last said (`{"online": false, ...}` once it went away).
    pub status: serde_json::Value,
}

/// What one collection brought.
#[derive(Debug, Default)]
pub struct Collected {
    /// New reports, in arrival order (in sequence order per device), each with `site` and
    /// `device`.
    pub reports: Vec<serde_json::Value>,
    /// Reports received again (QoS 1 redelivery, or already collected) and dropped.
    pub duplicates: usize,
    /// Per device (`site/device`): the sequence numbers never received, as (from, to).
    pub gaps: Vec<(String, u64, u64)>,
}

/// Reads every device's retained status under `vigil/<site>/` (every site when `None`),
/// waiting until the broker has been quiet for `quiet`.
pub fn fleet_status(broker: &Broker, site: Option<&str>, quiet: Duration) -> Result<Vec<DeviceStatus>> {
    let id = format!("vigil-status-{}", std::process::id());
    let filter = format!("vigil/{}/+/status", site.unwrap_or("+"));
    let mut found = BTreeMap::new();
    receive(broker, &id, true, std::slice::from_ref(&filter), quiet, |topic, payload| {
        if let (Some((site, device, "status")), Ok(status)) =
            (parse_topic(topic), serde_json::from_slice::<serde_json::Value>(payload))
        {
            found.insert(
                (site.to_owned(), device.to_owned()),
                DeviceStatus { site: site.to_owned(), device: device.to_owned(), status },
            );
        }
    })?;
    Ok(found.into_values().collect())
}

/// Reads every device's retained head snapshot under `vigil/<site>/` (every site when
/// `None`): `(site/device, bytes)`, the bytes as `vigil snapshot` gets them over serial.
pub fn fleet_snapshots(
    broker: &Broker,
    site: Option<&str>,
    quiet: Duration,
) -> Result<Vec<(String, Vec<u8>)>> {
    let id = format!("vigil-snapshots-{}", std::process::id());
    let filter = format!("vigil/{}/+/snapshot", site.unwrap_or("+"));
    let mut found = BTreeMap::new();
    receive(broker, &id, true, std::slice::from_ref(&filter), quiet, |topic, payload| {
        if let Some((site, device, "snapshot")) = parse_topic(topic) {
            if !payload.is_empty() {
                found.insert(format!("{site}/{device}"), payload.to_vec());
            }
        }
    })?;
    Ok(found.into_iter().collect())
}

/// Collects the reports devices published under `vigil/<site>/` (every site when `None`)
/// with the persistent session `client_id`: the broker keeps reports for this session
/// while the host is away, from the first collection on. `marks` holds, per device
/// (`site/device`, or `site/device/sensor` for each sensor of a gateway of several), the
/// next sequence expected; what is below it is a duplicate, and it
/// moves past every report kept. Returns once the broker has been quiet for `quiet`.
pub fn collect_reports(
    broker: &Broker,
    site: Option<&str>,
    client_id: &str,
    marks: &mut BTreeMap<String, u64>,
    quiet: Duration,
) -> Result<Collected> {
    // Health records are reports too, numbered in the same sequence, on a topic of their own.
    let filters = ["report", "health"].map(|leaf| format!("vigil/{}/+/{leaf}", site.unwrap_or("+")));
    let mut collected = Collected::default();
    receive(broker, client_id, false, &filters, quiet, |topic, payload| {
        let Some((site, device, "report" | "health")) = parse_topic(topic) else { return };
        let Ok(mut report) = serde_json::from_slice::<serde_json::Value>(payload) else {
            log::warn!("{topic}: a payload that is not JSON was skipped");
            return;
        };
        let Some(sequence) = report["sequence"].as_u64() else {
            log::warn!("{topic}: a report without a sequence number was skipped");
            return;
        };
        // A gateway of several sensors numbers each sensor's reports on its own.
        let key = match report["sensor"].as_str() {
            Some(sensor) => format!("{site}/{device}/{sensor}"),
            None => format!("{site}/{device}"),
        };
        let expected = marks.get(&key).copied();
        if expected.is_some_and(|next| sequence < next) {
            collected.duplicates += 1;
            return;
        }
        if let Some(next) = expected.filter(|&next| sequence > next) {
            collected.gaps.push((key.clone(), next, sequence - 1));
        }
        marks.insert(key, sequence + 1);
        report["site"] = site.into();
        report["device"] = device.into();
        collected.reports.push(report);
    })?;
    Ok(collected)
}

/// Subscribes to `filter` at QoS 1 and hands every message to `on_message` until the
/// broker has been quiet for `quiet` after the subscription was granted.
fn receive(
    broker: &Broker,
    id: &str,
    clean: bool,
    filters: &[String],
    quiet: Duration,
    mut on_message: impl FnMut(&str, &[u8]),
) -> Result<()> {
    broker.check()?;
    let mut options = broker.options(id);
    options.set_clean_session(clean);
    let (client, mut connection) = Client::new(options, 64);
    client
        .subscribe_many(filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)))
        .map_err(|e| broker.failed(e))?;
    let connect_by = Instant::now() + Duration::from_secs(10);
    let mut subscribed = false;
    let mut last = Instant::now();
    loop {
        let wait = if subscribed {
            match quiet.checked_sub(last.elapsed()) {
                Some(left) if !left.is_zero() => left,
                _ => break,
            }
        } else if Instant::now() >= connect_by {
            return Err(broker.failed("no answer within 10 s (is the broker running?)"));
        } else {
            Duration::from_millis(200)
        };
        match connection.recv_timeout(wait) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed = true;
                last = Instant::now();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                on_message(&p.topic, &p.payload);
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(broker.failed(e)),
            Err(_) if subscribed => break,
            Err(_) => {}
        }
    }
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
    Ok(())
}

/// One device's answer to an update published on the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOutcome {
    /// The device's site.
    pub site: String,
    /// The device.
    pub device: String,
    /// `applied`, `already` (it ran this very update), `refused`, or `no answer`.
    pub outcome: String,
    /// Why it refused (the same reasons as over serial).
    pub reason: String,
    /// The head version it runs after the update, when it answered.
    pub head_version: Option<u64>,
}

/// Publishes `update` (retained, QoS 1) to `vigil/<site>/update` or to a group's topic,
/// then waits until every online device of the site (or of the group) has answered on its
/// `ack` topic, or `timeout` passed. One outcome per device that was online.
pub fn publish_update(
    broker: &Broker,
    site: &str,
    group: Option<&str>,
    update: &crate::UpdateMessage,
    timeout: Duration,
) -> Result<Vec<UpdateOutcome>> {
    broker.check()?;
    crate::check_level("site", site)?;
    if let Some(group) = group {
        crate::check_level("group", group)?;
    }
    let payload = postcard::to_allocvec(update)
        .map_err(|e| crate::MqttError::Config(format!("cannot encode the update: {e}")))?;
    let sha256 = vigil_core::hex::encode(&update.header.sha256);
    let version = u64::from(update.header.version);
    let mut options = broker.options(&format!("vigil-push-{}", std::process::id()));
    options.set_clean_session(true);
    let (client, mut connection) = Client::new(options, 64);
    let failed = |e: &dyn std::fmt::Display| broker.failed(e);
    for leaf in ["status", "ack"] {
        client.subscribe(format!("vigil/{site}/+/{leaf}"), QoS::AtLeastOnce).map_err(|e| failed(&e))?;
    }
    let mut statuses: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut acks: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let take = |p: &rumqttc::Publish,
                statuses: &mut BTreeMap<String, serde_json::Value>,
                acks: &mut BTreeMap<String, serde_json::Value>| {
        let Some((_, device, leaf)) = parse_topic(&p.topic) else { return };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&p.payload) else { return };
        match leaf {
            "status" => {
                statuses.insert(device.to_owned(), json);
            }
            // A retained ack is an answer to an earlier publish; only live ones count.
            "ack"
                if !p.retain
                    && json["update_version"].as_u64() == Some(version)
                    && json["update_sha256"].as_str() == Some(sha256.as_str()) =>
            {
                acks.insert(device.to_owned(), json);
            }
            _ => {}
        }
    };
    // The retained statuses say which devices are online and in which groups.
    let started = Instant::now();
    let (mut subscribed, mut last) = (0, Instant::now());
    while subscribed < 2 || last.elapsed() < Duration::from_millis(700) {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(failed(&"no answer within 10 s (is the broker running?)"));
        }
        match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed += 1;
                last = Instant::now();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                take(&p, &mut statuses, &mut acks);
                last = Instant::now();
            }
            Ok(Err(e)) => return Err(failed(&e)),
            _ => {}
        }
    }
    let in_scope = |status: &serde_json::Value| {
        status["online"] == true
            && group.is_none_or(|g| status["groups"].as_array().is_some_and(|gs| gs.iter().any(|x| x == g)))
    };
    let targets: Vec<String> = statuses.iter().filter(|(_, s)| in_scope(s)).map(|(d, _)| d.clone()).collect();
    client
        .publish(crate::update_topic(site, group), QoS::AtLeastOnce, true, payload)
        .map_err(|e| failed(&e))?;
    let until = Instant::now() + timeout;
    while Instant::now() < until && !targets.iter().all(|d| acks.contains_key(d)) {
        match connection.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => take(&p, &mut statuses, &mut acks),
            Ok(Err(e)) => return Err(failed(&e)),
            _ => {}
        }
    }
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
    Ok(targets
        .into_iter()
        .map(|device| match acks.get(&device) {
            Some(ack) => UpdateOutcome {
                site: site.to_owned(),
                device,
                outcome: ack["outcome"].as_str().unwrap_or("?").to_owned(),
                reason: ack["reason"].as_str().unwrap_or_default().to_owned(),
                head_version: ack["head_version"].as_u64(),
            },
            None => UpdateOutcome {
                site: site.to_owned(),
                device,
                outcome: "no answer".into(),
                reason: format!("no answer within {} s", timeout.as_secs()),
                head_version: None,
            },
        })
        .collect())
}
