//! `vigil fleet bench`: many gateways on one broker, measured side by side in one run.
//!
//! Each simulated gateway is an in-process agent: the real MQTT forwarder over a store of
//! reports it generates, and the real protocol agent over update slots in files, so an
//! update from the broker is checked and applied as on a gateway. What is not run is the
//! scoring (tract), which `vigil bench` measures on its own. The broker is a Mosquitto of
//! the benchmark's own on a loopback port.

use anyhow::{bail, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_client::update_file::UpdateFile;
use vigil_core::agent::{Agent, Device};
use vigil_core::alarm::AlarmPolicy;
use vigil_core::report::{AnomalyReport, ReportKind};
use vigil_core::update::{HeadParts, HeadUpdate};
use vigil_core::wire::{DeviceInfo, NackReason, Status};
use vigil_mqtt::mosquitto::Mosquitto;
use vigil_mqtt::{Forwarder, ForwarderSettings, Source, UpdateMessage};
use vigil_runtime::slots::FileSlots;

const MODEL: [u8; 32] = [0x5A; 32];
const CLASSES: &str = "normal,outer_race,inner_race,ball";

/// Measure many simulated gateways on one MQTT broker (a Mosquitto started here): reports
/// end to end, a broker outage mid-run, and one signed update to every device.
#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Simulated gateways.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Reports each gateway stores during the run (one per second).
    #[arg(long, default_value_t = 60)]
    reports: u64,
    /// Stop the broker this long in the middle of the run.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    outage: Duration,
    /// Reports each gateway stores at once for the throughput phase.
    #[arg(long, default_value_t = 50)]
    burst: u64,
}

/// What one gateway stores and runs.
struct BenchDevice {
    name: String,
    reports: Arc<Mutex<Vec<AnomalyReport>>>,
    head_version: u32,
    public_key: [u8; 32],
    applied: u32,
}

impl Device for BenchDevice {
    fn info(&self) -> DeviceInfo<'_> {
        DeviceInfo {
            device: &self.name,
            software: "vigil fleet bench",
            model_hash: MODEL,
            embedding_dim: 16,
            classes: 4,
            class_names: CLASSES,
            head_version: self.head_version,
            slot_capacity: 0,
        }
    }
    fn status(&self) -> Status {
        Status {
            uptime_s: 0,
            windows_scored: 0,
            sensor_faults: 0,
            alarm_active: false,
            last_score: 0.0,
            threshold: 1.0,
            next_report: self.reports.lock().map_or(0, |r| r.len() as u64),
            head_version: self.head_version,
            update: None,
        }
    }
    fn model_hash(&self) -> [u8; 32] {
        MODEL
    }
    fn head_version(&self) -> u32 {
        self.head_version
    }
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }
    fn report_from(&mut self, since: u64) -> Option<AnomalyReport> {
        self.reports.lock().ok()?.iter().find(|r| r.sequence >= since).cloned()
    }
    fn label(&mut self, _: u64, _: u8) -> Result<(), NackReason> {
        Err(NackReason::Unexpected)
    }
    fn check_head(&self, update: &HeadUpdate) -> Result<(), NackReason> {
        update.fits(&MODEL, 16, Some(4))
    }
    fn apply_head(&mut self, update: &HeadUpdate) {
        self.head_version = update.version;
        self.applied += 1;
    }
    fn head_snapshot(&mut self, _: u32, _: &mut [u8]) -> Option<(u32, usize)> {
        None
    }
}

/// The forwarder's view of one simulated gateway.
struct BenchSource {
    reports: Arc<Mutex<Vec<AnomalyReport>>>,
    agent: Arc<Mutex<(Agent<'static, FileSlots>, BenchDevice)>>,
}

impl Source for BenchSource {
    fn report_from(&mut self, sequence: u64) -> Option<AnomalyReport> {
        self.reports.lock().ok()?.iter().find(|r| r.sequence >= sequence).cloned()
    }
    fn report_json(&self, report: &AnomalyReport) -> serde_json::Value {
        let names: Vec<String> = CLASSES.split(',').map(str::to_owned).collect();
        vigil_runtime::report_io::report_json(report, &names)
    }
    fn status_json(&self) -> serde_json::Value {
        let version = self.agent.lock().map_or(0, |a| a.1.head_version);
        serde_json::json!({ "head_version": version, "alarm_active": false, "model": "5a5a5a5a5a5a5a5a" })
    }
    fn apply_update(&mut self, update: &UpdateMessage) -> Result<u32, NackReason> {
        let mut shared = self.agent.lock().map_err(|_| NackReason::Storage)?;
        let (agent, device) = &mut *shared;
        agent.apply_update(&update.header, &update.payload, update.signature, device)
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }
}

fn report(sequence: u64) -> AnomalyReport {
    AnomalyReport {
        sequence,
        kind: if sequence.is_multiple_of(2) { ReportKind::AlarmRaised } else { ReportKind::AlarmCleared },
        stream_time_s: sequence as f64,
        score: 2.0,
        threshold: 1.0,
        class_index: 1,
        probabilities: vigil_core::heapless::Vec::from_slice(&[0.1, 0.7, 0.1, 0.1]).unwrap_or_default(),
        model_hash: MODEL,
        head_version: 1,
        top_bands: vigil_core::heapless::Vec::new(),
        spectrum: None,
    }
}

fn head(version: u32) -> Result<HeadUpdate> {
    let weights: Vec<f32> = (0..64).map(|i| (i % 7) as f32 * 0.1).collect();
    Ok(HeadUpdate::from_parts(HeadParts {
        model_hash: MODEL,
        version,
        weights: &weights,
        bias: &[0.0; 4],
        prototype_mean: &[0.0; 16],
        prototype_var: &[1.0; 16],
        alarm: AlarmPolicy { threshold: 1.0, raise_k: 1, window_n: 1, clear_ratio: 0.5 },
        int8: false,
    })?)
}

fn signed(version: u32, key: &SigningKey) -> Result<UpdateMessage> {
    let mut file = UpdateFile::for_head(&head(version)?)?;
    file.sign(key);
    Ok(UpdateMessage { header: file.header, signature: file.signature, payload: file.payload })
}

/// Reports of the whole fleet, collected until every device has `want` of them or
/// `limit` passes; returns the duplicates dropped and when the last new report arrived.
fn collect(
    broker: &vigil_mqtt::Broker,
    marks: &mut BTreeMap<String, u64>,
    seen: &mut BTreeMap<String, Vec<u64>>,
    devices: usize,
    want: u64,
    limit: Duration,
) -> Result<(usize, Option<Instant>)> {
    let started = Instant::now();
    let (mut duplicates, mut last) = (0, None);
    while started.elapsed() < limit {
        let got = vigil_mqtt::collect_reports(
            broker,
            Some("bench"),
            "vigil-fleet-bench",
            marks,
            Duration::from_millis(300),
        )?;
        duplicates += got.duplicates;
        if !got.reports.is_empty() {
            // The collection ends after a quiet spell; the last report came before it.
            last = Some(Instant::now() - Duration::from_millis(300));
        }
        for r in got.reports {
            let device = r["device"].as_str().unwrap_or("?").to_owned();
            seen.entry(device).or_default().push(r["sequence"].as_u64().unwrap_or(u64::MAX));
        }
        if seen.len() == devices && seen.values().all(|s| s.len() as u64 >= want) {
            break;
        }
    }
    Ok((duplicates, last))
}

impl FleetBenchArgs {
    /// Runs the benchmark.
    pub fn run(self) -> Result<()> {
        // A hundred agents would each log every connection, outage and update.
        log::set_max_level(log::LevelFilter::Error);
        let dir = tempfile::tempdir()?;
        let mut broker =
            Mosquitto::start(dir.path(), "", "allow_anonymous true\n").map_err(anyhow::Error::msg)?;
        let url = vigil_mqtt::Broker::parse(&broker.url())?;
        let key = SigningKey::from_bytes(&rand::random());
        println!("fleet bench: {} gateways on Mosquitto at {}", self.agents, url.name());
        // The collector's session exists before the first report.
        let (mut marks, mut seen) = (BTreeMap::new(), BTreeMap::new());
        vigil_mqtt::collect_reports(
            &url,
            Some("bench"),
            "vigil-fleet-bench",
            &mut marks,
            Duration::from_millis(200),
        )?;

        let mut stores = Vec::new();
        let mut devices = Vec::new();
        let mut forwarders = Vec::new();
        for i in 0..self.agents {
            let name = format!("gw-{i:03}");
            let state = dir.path().join(&name);
            std::fs::create_dir_all(&state)?;
            let reports = Arc::new(Mutex::new(Vec::new()));
            let slots = vigil_core::update::slots::Slots::open(FileSlots::open(&state)?)
                .map_err(|e| anyhow::anyhow!("update slots of {name}: {e:?}"))?;
            let scratch: &'static mut [u8] = Box::leak(vec![0u8; 16 * 1024].into_boxed_slice());
            let device = BenchDevice {
                name: name.clone(),
                reports: reports.clone(),
                head_version: 1,
                public_key: key.verifying_key().to_bytes(),
                applied: 0,
            };
            let agent = Arc::new(Mutex::new((Agent::new(slots, scratch), device)));
            let settings = ForwarderSettings {
                broker: url.clone(),
                site: "bench".into(),
                device: name,
                state,
                groups: Vec::new(),
            };
            forwarders.push(Forwarder::start(
                settings,
                BenchSource { reports: reports.clone(), agent: agent.clone() },
            )?);
            stores.push(reports);
            devices.push(agent);
        }

        // Phase 1: one report per second per gateway, the broker stopped mid-run.
        let run = Instant::now();
        let outage_at = self.reports / 2;
        let mut outage = None;
        for second in 0..self.reports {
            for store in &stores {
                store.lock().map_err(|_| anyhow::anyhow!("a store lock was poisoned"))?.push(report(second));
            }
            if second == outage_at {
                broker.stop();
                outage = Some(Instant::now());
                println!("  broker stopped at {:.0} s; gateways keep storing", run.elapsed().as_secs_f64());
            }
            if outage.is_some_and(|at| at.elapsed() >= self.outage) {
                broker.restart().map_err(anyhow::Error::msg)?;
                outage = None;
                println!("  broker restarted at {:.0} s", run.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if outage.is_some() {
            broker.restart().map_err(anyhow::Error::msg)?;
            println!("  broker restarted at {:.0} s", run.elapsed().as_secs_f64());
        }
        let drained = Instant::now();
        let (duplicates, _) =
            collect(&url, &mut marks, &mut seen, self.agents, self.reports, Duration::from_secs(180))?;
        let expected: Vec<u64> = (0..self.reports).collect();
        let complete = seen.values().filter(|s| **s == expected).count();
        println!(
            "  outage {} s: {complete} of {} gateways delivered every report once, in order ({} reports); \
             backlog drained {:.1} s after the run; {duplicates} duplicates removed by the consumer",
            self.outage.as_secs(),
            self.agents,
            self.reports * self.agents as u64,
            drained.elapsed().as_secs_f64()
        );

        // Phase 2: throughput, every gateway storing a burst at once.
        let base = self.reports;
        let burst_started = Instant::now();
        let cpu_before = (cpu_seconds("self"), cpu_seconds(&broker.pid().to_string()));
        for store in &stores {
            let mut s = store.lock().map_err(|_| anyhow::anyhow!("a store lock was poisoned"))?;
            s.extend((base..base + self.burst).map(report));
        }
        let (_, last) =
            collect(&url, &mut marks, &mut seen, self.agents, base + self.burst, Duration::from_secs(300))?;
        let total = self.burst * self.agents as u64;
        let seconds = last.map_or(f64::NAN, |t| t.duration_since(burst_started).as_secs_f64());
        let ours = cpu_seconds("self") - cpu_before.0;
        let brokers = cpu_seconds(&broker.pid().to_string()) - cpu_before.1;
        println!(
            "  throughput: {total} reports end to end in {seconds:.2} s = {:.0} reports/s; CPU meanwhile: gateways \
             and collector {ours:.2} s, broker {brokers:.2} s (of {:.2} s on {} cores). Each gateway keeps one report \
             in flight (it waits for the broker's PUBACK before the next), so one gateway's rate is one report \
             per round trip",
            total as f64 / seconds,
            seconds * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );

        // Phase 3: one signed update to every device, then a forged and an older one.
        let version = 2;
        let started = Instant::now();
        let outcomes = vigil_mqtt::publish_update(
            &url,
            "bench",
            None,
            &signed(version, &key)?,
            Duration::from_secs(120),
        )?;
        let applied = outcomes.iter().filter(|o| o.outcome == "applied").count();
        let once = devices.iter().filter(|d| d.lock().is_ok_and(|d| d.1.applied == 1)).count();
        println!(
            "  update to {} devices: {applied} applied, {once} applied it exactly once; publish to last ack {:.2} s",
            outcomes.len(),
            started.elapsed().as_secs_f64()
        );
        let forged = signed(version + 1, &SigningKey::from_bytes(&rand::random()))?;
        let older = signed(version - 1, &key)?;
        for (what, update) in [("bad signature", forged), ("older version", older)] {
            let outcomes =
                vigil_mqtt::publish_update(&url, "bench", None, &update, Duration::from_secs(120))?;
            let refused = outcomes.iter().filter(|o| o.outcome == "refused").count();
            let reason = outcomes.first().map_or("", |o| o.reason.as_str());
            println!("  update with {what}: refused by {refused} of {} devices ({reason})", outcomes.len());
        }
        drop(forwarders);
        if complete != self.agents || applied != self.agents {
            bail!("not every gateway delivered every report or applied the update (see above)");
        }
        Ok(())
    }
}

/// CPU seconds (user and system) a process used so far, from /proc (NaN elsewhere).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in
    // clock ticks, 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
