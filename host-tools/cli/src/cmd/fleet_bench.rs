//! `vigil fleet bench`: many gateways on one broker, measured side by side in one run.
//!
//! Each simulated gateway is an in-process agent built from the gateway's own parts: a
//! scoring pipeline running the model (the built-in default unless `--model`) over a
//! simulated machine's stream in real time, a durable report store in its own state
//! folder, the MQTT forwarder reading that store, and the protocol agent over update
//! slots in files, so an update from the broker is checked and applied to the running
//! head as on a gateway. The broker is a Mosquitto of the benchmark's own on a loopback
//! port. What is left out is the serial port.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vigil_client::update_file::UpdateFile;
use vigil_core::agent::Agent;
use vigil_core::report::{AnomalyReport, ReportKind};
use vigil_core::update::HeadUpdate;
use vigil_core::wire::NackReason;
use vigil_mqtt::mosquitto::Mosquitto;
use vigil_mqtt::{Forwarder, ForwarderSettings, Source, UpdateMessage};
use vigil_runtime::agent::GatewayDevice;
use vigil_runtime::pipeline::Pipeline;
use vigil_runtime::slots::FileSlots;
use vigil_runtime::store::ReportStore;
use vigil_runtime::windower::Windower;
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Measure many simulated gateways on one MQTT broker (a Mosquitto started here), each
/// scoring a simulated machine in real time: reports end to end across a broker outage,
/// the broker's throughput, and one signed update to every device.
#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Simulated gateways.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Seconds of stream each gateway scores in real time.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    run: Duration,
    /// Each simulated machine alternates this long healthy and this long with an
    /// outer-race fault, so that alarms are raised and cleared during the run.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    cycle: Duration,
    /// Stop the broker this long in the middle of the run.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    outage: Duration,
    /// Reports each gateway's store takes at once for the throughput phase.
    #[arg(long, default_value_t = 50)]
    burst: u64,
    /// ONNX model with Vigil metadata [default: the built-in reference model].
    #[arg(long)]
    model: Option<PathBuf>,
}

/// Seconds of stream each gateway is given at a time.
const TICK_S: f64 = 0.25;

/// One simulated gateway: the parts `vigil serve` runs, without the serial port.
#[derive(Clone)]
struct Gateway {
    pipeline: Arc<Mutex<Pipeline>>,
    store: Arc<Mutex<ReportStore>>,
    agent: Arc<Mutex<(Agent<'static, FileSlots>, GatewayDevice)>>,
}

/// Locks a part of a gateway; a panic elsewhere does not stop the benchmark's reading.
fn lock<T>(part: &Mutex<T>) -> MutexGuard<'_, T> {
    part.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The forwarder's view of one simulated gateway, as `vigil serve` gives it.
struct BenchSource {
    gateway: Gateway,
    class_names: Vec<String>,
    applied: Arc<Mutex<u32>>,
}

impl Source for BenchSource {
    fn report_from(&mut self, _sensor: usize, sequence: u64) -> Option<AnomalyReport> {
        lock(&self.gateway.store).first_from(sequence).ok().flatten()
    }
    fn report_json(&self, report: &AnomalyReport) -> serde_json::Value {
        vigil_runtime::report_io::report_json(report, &self.class_names)
    }
    fn status_json(&self) -> serde_json::Value {
        vigil_runtime::gateway::status_json(&lock(&self.gateway.pipeline))
    }
    fn apply_update(&mut self, update: &UpdateMessage) -> Result<u32, NackReason> {
        let mut shared = lock(&self.gateway.agent);
        let (agent, device) = &mut *shared;
        let before = vigil_core::agent::Device::head_version(device);
        let outcome = agent.apply_update(&update.header, &update.payload, update.signature, device);
        if outcome.is_ok_and(|version| version != before) {
            *lock(&self.applied) += 1;
        }
        outcome
    }
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }
}

/// A gateway's sensor: a simulated machine that alternates healthy and faulty, windowed
/// for the model.
struct MachineStream {
    windower: Windower,
    healthy: Simulator,
    faulty: Simulator,
    cycle_s: f64,
    offset_s: f64,
    seconds: f64,
    frames: Vec<f32>,
}

impl MachineStream {
    /// The next `seconds` of signal, cut into windows.
    fn advance(&mut self, seconds: f64, windows: &mut Vec<vigil_runtime::windower::Window>) {
        let machine = self.healthy.machine();
        let n = (seconds * machine.sample_rate_hz).round() as usize * machine.channels;
        self.frames.resize(n, 0.0);
        let faulty = ((self.seconds + self.offset_s) / self.cycle_s) as u64 % 2 == 1;
        if faulty {
            self.faulty.fill(&mut self.frames)
        } else {
            self.healthy.fill(&mut self.frames)
        }
        self.seconds += seconds;
        windows.clear();
        self.windower.push(&self.frames, |w| windows.push(w));
    }
}

/// What one scoring thread did.
#[derive(Debug, Default)]
struct Scored {
    windows: u64,
    reports: u64,
    busy: Duration,
    behind_s: f64,
}

/// Scores `streams` into `gateways` for `seconds`, paced as live sensors deliver.
fn score(
    gateways: &[Gateway],
    streams: &mut [MachineStream],
    seconds: f64,
    started: Instant,
) -> Result<Scored> {
    let mut scored = Scored::default();
    let mut windows = Vec::new();
    let ticks = (seconds / TICK_S).round() as u32;
    for tick in 0..ticks {
        // A tick's signal is complete when its time has passed.
        let due = Duration::from_secs_f64(f64::from(tick + 1) * TICK_S);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let work = Instant::now();
        for (gateway, stream) in gateways.iter().zip(streams.iter_mut()) {
            stream.advance(TICK_S, &mut windows);
            for window in &windows {
                let outcome = lock(&gateway.pipeline).process(window)?;
                scored.windows += 1;
                if let Some(report) = &outcome.report {
                    lock(&gateway.store).append(report)?;
                    scored.reports += 1;
                }
            }
        }
        scored.busy += work.elapsed();
        scored.behind_s = scored.behind_s.max(started.elapsed().as_secs_f64() - due.as_secs_f64());
    }
    Ok(scored)
}

/// A report the throughput phase stores, numbered after what the gateway stored.
fn burst_report(sequence: u64, model_hash: [u8; 32], head_version: u32) -> AnomalyReport {
    AnomalyReport {
        sequence,
        kind: if sequence.is_multiple_of(2) { ReportKind::AlarmRaised } else { ReportKind::AlarmCleared },
        stream_time_s: sequence as f64,
        score: 2.0,
        threshold: 1.0,
        class_index: 1,
        probabilities: vigil_core::heapless::Vec::from_slice(&[0.1, 0.7, 0.1, 0.1]).unwrap_or_default(),
        model_hash,
        head_version,
        top_bands: vigil_core::heapless::Vec::new(),
        spectrum: None,
    }
}

fn signed(head: &HeadUpdate, key: &SigningKey) -> Result<UpdateMessage> {
    let mut file = UpdateFile::for_head(head)?;
    file.sign(key);
    Ok(UpdateMessage { header: file.header, signature: file.signature, payload: file.payload })
}

/// Reports of the whole fleet, collected until every device has the number `want` gives
/// or `limit` passes; returns the duplicates dropped and when the last new report arrived.
fn collect(
    broker: &vigil_mqtt::Broker,
    marks: &mut BTreeMap<String, u64>,
    seen: &mut BTreeMap<String, Vec<u64>>,
    want: &BTreeMap<String, u64>,
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
        if want.iter().all(|(d, n)| seen.get(d).map_or(0, Vec::len) as u64 >= *n) {
            break;
        }
    }
    Ok((duplicates, last))
}

/// Number of reports each gateway's store holds, by device name.
fn stored(names: &[String], gateways: &[Gateway]) -> BTreeMap<String, u64> {
    names.iter().zip(gateways).map(|(n, g)| (n.clone(), lock(&g.store).next_sequence())).collect()
}

impl FleetBenchArgs {
    /// Runs the benchmark.
    pub fn run(self) -> Result<()> {
        if self.agents == 0 || self.cycle.is_zero() || self.run < Duration::from_secs_f64(TICK_S) {
            bail!("--agents, --cycle and --run must be positive (--run at least {TICK_S} s)");
        }
        // A hundred agents would each log every connection, outage and update.
        log::set_max_level(log::LevelFilter::Error);
        let model = vigil_runtime::builtin::load_model(self.model.as_deref())?;
        let meta = model.metadata().clone();
        let dir = tempfile::tempdir()?;
        let mut broker =
            Mosquitto::start(dir.path(), "", "allow_anonymous true\n").map_err(anyhow::Error::msg)?;
        let url = vigil_mqtt::Broker::parse(&broker.url())?;
        let key = SigningKey::from_bytes(&rand::random());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "fleet bench: {} gateways on Mosquitto at {}, each scoring a simulated machine in real time \
             with {} ({} Hz, window {}, hop {}), healthy and outer-race fault by turns of {} s",
            self.agents,
            url.name(),
            model.path().display(),
            meta.sample_rate_hz,
            meta.window,
            meta.hop,
            self.cycle.as_secs_f64()
        );
        // The collector's session exists before the first report.
        let (mut marks, mut seen) = (BTreeMap::new(), BTreeMap::new());
        vigil_mqtt::collect_reports(
            &url,
            Some("bench"),
            "vigil-fleet-bench",
            &mut marks,
            Duration::from_millis(200),
        )?;

        let (mut names, mut gateways, mut streams, mut forwarders, mut applied) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let progress = indicatif::ProgressBar::new(self.agents as u64)
            .with_message("starting gateways")
            .with_style(indicatif::ProgressStyle::with_template("  {msg} {bar:30} {pos}/{len}")?);
        for i in 0..self.agents {
            let name = format!("gw-{i:03}");
            let state = dir.path().join(&name);
            std::fs::create_dir_all(&state)?;
            let pipeline = Arc::new(Mutex::new(Pipeline::new(model.clone(), None)?));
            let store = Arc::new(Mutex::new(vigil_runtime::stream::open_store(&state)?));
            let device = GatewayDevice::new(&name, pipeline.clone(), key.verifying_key().to_bytes(), &state);
            let slots = vigil_core::update::slots::Slots::open(FileSlots::open(&state)?)
                .map_err(|e| anyhow!("update slots of {name}: {e:?}"))?;
            let scratch: &'static mut [u8] =
                Box::leak(vec![0u8; vigil_runtime::slots::GATEWAY_SLOT_CAPACITY as usize].into_boxed_slice());
            let agent = Arc::new(Mutex::new((Agent::new(slots, scratch), device)));
            let gateway = Gateway { pipeline, store, agent };
            let settings = ForwarderSettings {
                broker: url.clone(),
                site: "bench".into(),
                device: name.clone(),
                state,
                groups: Vec::new(),
                sensors: Vec::new(),
            };
            let count = Arc::new(Mutex::new(0));
            let source = BenchSource {
                gateway: gateway.clone(),
                class_names: meta.class_names.clone(),
                applied: count.clone(),
            };
            forwarders.push(Forwarder::start(settings, source)?);
            let machine = MachineConfig::reference(meta.sample_rate_hz, meta.channels);
            let fault =
                FaultConfig { kind: FaultKind::OuterRace, severity: 0.5, onset_s: 0.0, growth_per_s: 0.0 };
            streams.push(MachineStream {
                windower: Windower::new(
                    meta.channels,
                    meta.sample_rate_hz,
                    meta.sample_rate_hz,
                    meta.window,
                    meta.hop,
                )?,
                healthy: Simulator::new(machine.clone(), FaultConfig::healthy(), 2 * i as u64),
                faulty: Simulator::new(machine, fault, 2 * i as u64 + 1),
                cycle_s: self.cycle.as_secs_f64(),
                // The gateways change state at different moments, as a fleet's would.
                offset_s: self.cycle.as_secs_f64() * i as f64 / self.agents as f64,
                seconds: 0.0,
                frames: Vec::new(),
            });
            names.push(name);
            gateways.push(gateway);
            applied.push(count);
            progress.inc(1);
        }
        progress.finish_and_clear();

        // Phase 1: every gateway scores its machine in real time; the broker is stopped
        // for a while in the middle.
        let seconds = self.run.as_secs_f64();
        let share = self.agents.div_ceil(cores);
        let cpu_before = cpu_seconds("self");
        let started = Instant::now();
        let scored: Vec<Result<Scored>> = std::thread::scope(|scope| {
            let workers: Vec<_> = gateways
                .chunks(share)
                .zip(streams.chunks_mut(share))
                .map(|(g, s)| scope.spawn(move || score(g, s, seconds, started)))
                .collect();
            let outage = (seconds / 2.0).min((seconds - self.outage.as_secs_f64()).max(0.0) / 2.0);
            std::thread::sleep(Duration::from_secs_f64(outage));
            broker.stop();
            println!(
                "  broker stopped at {:.0} s; gateways keep scoring and storing",
                started.elapsed().as_secs_f64()
            );
            std::thread::sleep(self.outage);
            let restarted = broker.restart().map_err(anyhow::Error::msg);
            println!("  broker restarted at {:.0} s", started.elapsed().as_secs_f64());
            let mut results: Vec<Result<Scored>> = workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(anyhow!("a scoring thread panicked"))))
                .collect();
            if let Err(e) = restarted {
                results.push(Err(e));
            }
            results
        });
        let scored = scored.into_iter().collect::<Result<Vec<_>>>()?;
        let cpu = cpu_seconds("self") - cpu_before;
        let windows: u64 = scored.iter().map(|s| s.windows).sum();
        let busy: f64 = scored.iter().map(|s| s.busy.as_secs_f64()).sum();
        let behind = scored.iter().map(|s| s.behind_s).fold(0.0, f64::max);
        let want = stored(&names, &gateways);
        let reports: u64 = want.values().sum();
        println!(
            "  scoring: {} gateways x {seconds:.0} s of stream = {windows} windows, {reports} reports stored; \
             simulating and scoring took {:.1}% of one core per gateway ({busy:.1} s over {seconds:.0} s; the process's CPU \
             including forwarders and simulation {cpu:.1} s on {cores} cores); real time kept (at most {behind:.2} s \
             behind)",
            self.agents,
            100.0 * busy / seconds / self.agents as f64,
        );
        if behind > 1.0 {
            println!("  WARNING: the scoring fell {behind:.1} s behind the stream: fewer gateways keep real time here");
        }
        let drained = Instant::now();
        let (duplicates, _) = collect(&url, &mut marks, &mut seen, &want, Duration::from_secs(180))?;
        let complete = want
            .iter()
            .filter(|(d, n)| seen.get(*d).is_some_and(|s| *s == (0..**n).collect::<Vec<_>>()))
            .count();
        println!(
            "  outage {} s: {complete} of {} gateways delivered every report once, in order ({reports} reports); \
             backlog drained {:.1} s after the run; {duplicates} duplicates removed by the consumer",
            self.outage.as_secs(),
            self.agents,
            drained.elapsed().as_secs_f64()
        );

        // Phase 2: throughput, every gateway's store taking a burst at once (each record
        // synced, as the gateway stores), timed from the first write to the last
        // report the consumer receives.
        let head_version = meta.head_version;
        let burst_started = Instant::now();
        let cpu_before = (cpu_seconds("self"), cpu_seconds(&broker.pid().to_string()));
        for g in &gateways {
            let mut store = lock(&g.store);
            let base = store.next_sequence();
            for sequence in base..base + self.burst {
                store.append(&burst_report(sequence, model.hash(), head_version))?;
            }
        }
        let writing = burst_started.elapsed().as_secs_f64();
        let want = stored(&names, &gateways);
        let (_, last) = collect(&url, &mut marks, &mut seen, &want, Duration::from_secs(300))?;
        let total = self.burst * self.agents as u64;
        let took = last.map_or(f64::NAN, |t| t.duration_since(burst_started).as_secs_f64());
        let ours = cpu_seconds("self") - cpu_before.0;
        let brokers = cpu_seconds(&broker.pid().to_string()) - cpu_before.1;
        println!(
            "  throughput: {total} reports end to end in {took:.2} s = {:.0} reports/s; CPU meanwhile: gateways \
             and collector {ours:.2} s, broker {brokers:.2} s (of {:.2} s on {cores} cores). Each gateway keeps one \
             report in flight (it waits for the broker's PUBACK before the next), so one gateway's rate is one \
             report per round trip. Writing the stores took {writing:.2} s of it (one sync per record, all \
             gateways' written here by one thread)",
            total as f64 / took,
            took * cores as f64,
        );

        // Phase 3: one signed update of the running head to every device, then a forged
        // and an older one.
        let version = head_version + 1;
        let update = model.head_update(version, false).context("building the head update")?;
        let started = Instant::now();
        let outcomes = vigil_mqtt::publish_update(
            &url,
            "bench",
            None,
            &signed(&update, &key)?,
            Duration::from_secs(120),
        )?;
        let took = started.elapsed().as_secs_f64();
        let applied_ok = outcomes.iter().filter(|o| o.outcome == "applied").count();
        let running = gateways
            .iter()
            .filter(|g| lock(&g.pipeline).scorer().model().metadata().head_version == version)
            .count();
        let once = applied.iter().filter(|n| *lock(n) == 1).count();
        println!(
            "  update to {} devices: {applied_ok} applied, {running} run head version {version}, {once} applied it \
             exactly once; publish to last ack {took:.2} s",
            outcomes.len(),
        );
        let forged =
            signed(&model.head_update(version + 1, false)?, &SigningKey::from_bytes(&rand::random()))?;
        let older = signed(&model.head_update(head_version, false)?, &key)?;
        for (what, update) in [("bad signature", forged), ("older version", older)] {
            let outcomes =
                vigil_mqtt::publish_update(&url, "bench", None, &update, Duration::from_secs(120))?;
            let refused = outcomes.iter().filter(|o| o.outcome == "refused").count();
            let reason = outcomes.first().map_or("", |o| o.reason.as_str());
            println!("  update with {what}: refused by {refused} of {} devices ({reason})", outcomes.len());
        }
        drop(forwarders);
        if complete != self.agents || once != self.agents {
            bail!("not every gateway delivered every report or applied the update exactly once (see above)");
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
