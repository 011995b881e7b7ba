//! The firmware agent over an in-memory link, driven by the host's own protocol client.

use crate::device::{serve_once, Clock, FirmwareDevice, Identity};
use crate::flash::FlashSlots;
use crate::monitor::Monitor;
use ed25519_dalek::SigningKey;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use std::vec::Vec;
use vigil_client::client::{Client, PushOutcome};
use vigil_client::update_file::UpdateFile;
use vigil_core::agent::Agent;
use vigil_core::bearing::BearingGeometry;
use vigil_core::features::FeatureSpec;
use vigil_core::report::ReportKind;
use vigil_core::sensor::SensorFaultReason;
use vigil_core::update::slots::Slots;
use vigil_core::update::HeadUpdate;
use vigil_core::wire::{Message, NackReason};
use vigil_headfit::feature_head::{calibrated_update, simulate_set, train, TrainOptions};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

const SLOT: usize = 2048;
const SPEC: FeatureSpec =
    FeatureSpec { sample_rate_hz: 16_000.0, shaft_hz: 29.95, bearing: BearingGeometry::deep_groove_6205() };

struct NoClock;

impl Clock for NoClock {
    fn uptime_s(&self) -> u32 {
        0
    }
}

/// One end of a socket pair as the firmware's UART.
struct Uart(UnixStream);

impl embedded_io::ErrorType for Uart {
    type Error = std::io::Error;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        std::io::Read::read(&mut self.0, buf)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        std::io::Write::write(&mut self.0, buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Boots a device on `flash` (kept across boots, like flash) and serves until the host
/// hangs up; returns the flash and the head version restored at boot.
fn boot(mut flash: Vec<u8>, link: UnixStream) -> std::thread::JoinHandle<(Vec<u8>, Option<u32>)> {
    std::thread::spawn(move || {
        let identity = Identity {
            name: "pipe",
            software: "vigil-firmware test",
            class_names: "normal,outer_race,inner_race,ball",
            classes: 4,
            public_key: key().verifying_key().to_bytes(),
        };
        let mut monitor = Monitor::new(SPEC).unwrap();
        let mut device = FirmwareDevice::new(identity, &mut monitor, NoClock);
        let mut scratch = [0u8; SLOT];
        let slots = Slots::open(FlashSlots::new(&mut flash)).unwrap();
        let mut agent = Agent::new(slots, &mut scratch);
        let restored = agent.restore(&mut device).unwrap();
        let mut uart = Uart(link);
        while let Ok(n) = serve_once(&mut uart, &mut agent, &mut device) {
            if n == 0 {
                break;
            }
        }
        (flash, restored)
    })
}

fn connect() -> (Client, UnixStream) {
    let (host, device) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut client = Client::new(Box::new(host));
    client.timeout = Duration::from_secs(5);
    (client, device)
}

fn trained_head(version: u32) -> HeadUpdate {
    let set = simulate_set(&SPEC, 6, 1.0, 1).unwrap();
    let head = train(&set, 4, TrainOptions::default()).unwrap();
    calibrated_update(&SPEC, &set, &head, FaultKind::Normal.index(), version, false).unwrap()
}

fn signal(kind: FaultKind, seconds: f64, seed: u64) -> Vec<f32> {
    let fault = match kind {
        FaultKind::Normal => FaultConfig::healthy(),
        _ => FaultConfig { kind, severity: 0.6, onset_s: 0.0, growth_per_s: 0.0 },
    };
    Simulator::new(MachineConfig::reference(16_000.0, 1), fault, seed).generate(seconds)
}

fn refusal(result: vigil_client::Result<PushOutcome>) -> NackReason {
    result.unwrap_err().refusal().expect("a refusal")
}

#[test]
fn a_node_takes_a_signed_head_scores_samples_and_keeps_its_head_across_restarts() {
    let flash = std::vec![0u8; FlashSlots::memory_for(SLOT)];
    let (mut client, link) = connect();
    let device = boot(flash, link);

    let info = client.info().unwrap();
    assert_eq!(info.head_version, 0);
    assert_eq!(info.model_hash, SPEC.model_hash());
    assert_eq!(info.slot_capacity, SLOT as u32);

    // A head signed with the provisioned key is applied.
    let head = trained_head(1);
    let mut file = UpdateFile::for_head(&head).unwrap();
    file.sign(&key());
    let outcome = client.push(&file.header, &file.payload, file.signature, |_, _| {}).unwrap();
    assert!(matches!(outcome, PushOutcome::Applied(1)), "{outcome:?}");

    // Healthy running raises nothing; an outer-race fault raises an alarm classed so.
    let position = client.sample_position().unwrap();
    assert_eq!(position, 0);
    let healthy = signal(FaultKind::Normal, 2.0, 11);
    let windows = client.send_samples(0, &healthy, |_| {}).unwrap();
    assert_eq!(windows, 61);
    assert_eq!(client.status().unwrap().next_report, 0, "a healthy machine raised an alarm");
    let faulty = signal(FaultKind::OuterRace, 2.0, 12);
    client.send_samples(healthy.len() as u64, &faulty, |_| {}).unwrap();
    let mut reports = Vec::new();
    client.pull_reports(0, 16, |r| reports.push(r)).unwrap();
    let raised = reports.iter().find(|r| r.kind == ReportKind::AlarmRaised).expect("an alarm report");
    assert_eq!(raised.class_index, FaultKind::OuterRace.index() as u8, "{raised:?}");
    assert!(raised.stream_time_s > 2.0, "alarm at {} s, before the fault", raised.stream_time_s);
    assert_eq!(raised.head_version, 1);

    // A repeated chunk is ignored; one past a gap is refused with the expected index.
    let end = (healthy.len() + faulty.len()) as u64;
    let before = client.status().unwrap().windows_scored;
    client.send_samples(end - 128, &faulty[faulty.len() - 128..], |_| {}).unwrap();
    assert_eq!(client.status().unwrap().windows_scored, before);
    assert_eq!(client.sample_position().unwrap(), end);

    // Labels and the head snapshot.
    client.label(raised.sequence, FaultKind::OuterRace.index() as u8).unwrap();
    let wrong_class = client.label(raised.sequence, 9).unwrap_err();
    assert_eq!(wrong_class.refusal(), Some(NackReason::UnknownClass { classes: 4 }));
    let snapshot: HeadUpdate = postcard::from_bytes(&client.head_snapshot().unwrap()).unwrap();
    assert_eq!(snapshot, head);

    // A head signed with another key, and an unsigned one, change nothing.
    let mut forged = UpdateFile::for_head(&trained_head(2)).unwrap();
    forged.sign(&SigningKey::from_bytes(&[8; 32]));
    assert_eq!(
        refusal(client.push(&forged.header, &forged.payload, forged.signature, |_, _| {})),
        NackReason::BadSignature
    );
    assert_eq!(refusal(client.push(&forged.header, &forged.payload, None, |_, _| {})), NackReason::Unsigned);
    assert_eq!(client.info().unwrap().head_version, 1);

    // A torn update: the signed version 3 begins, 400 of its bytes arrive, then the device
    // restarts.
    let mut torn = UpdateFile::for_head(&trained_head(3)).unwrap();
    torn.sign(&key());
    let half = 400;
    let acked = |m: &Message<'_>| matches!(m, Message::Ack(_));
    client.request(&Message::UpdateBegin(torn.header), acked).unwrap();
    client.request(&Message::UpdateChunk { offset: 0, data: &torn.payload[..half] }, acked).unwrap();
    assert_eq!(client.status().unwrap().update.map(|u| u.received), Some(half as u32));
    drop(client);
    let (flash, restored) = device.join().unwrap();
    assert_eq!(restored, None, "first boot had no head");

    let (mut client, link) = connect();
    let device = boot(flash, link);
    assert_eq!(client.info().unwrap().head_version, 1, "the torn update replaced the head");
    let snapshot: HeadUpdate = postcard::from_bytes(&client.head_snapshot().unwrap()).unwrap();
    assert_eq!(snapshot, head);
    drop(client);
    assert_eq!(device.join().unwrap().1, Some(1));
}

#[test]
fn non_finite_samples_make_a_sensor_fault_report_not_a_score() {
    let mut monitor = Monitor::new(SPEC).unwrap();
    let mut bytes = Vec::new();
    for i in 0..1024 {
        let v = if i == 100 { f32::NAN } else { 0.01 * i as f32 };
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(monitor.samples(0, &bytes[..2048]), Ok(0));
    assert_eq!(monitor.samples(512, &bytes[2048..]), Ok(0));
    assert_eq!(monitor.counters().sensor_faults, 1);
    let report = monitor.report_from(0, [0; 32]).unwrap();
    assert_eq!(report.kind, ReportKind::SensorFault);
    assert_eq!(monitor.samples(5000, &bytes[..4]), Err(NackReason::SampleGap { expected: 1024 }));
    assert_eq!(monitor.samples(0, &bytes[..3]), Err(NackReason::BadPayload));
}

#[test]
fn the_report_ring_overwrites_the_oldest_and_counts_it() {
    let mut monitor = Monitor::new(SPEC).unwrap();
    let live = |i: usize| (i as f32 * 0.37).sin();
    // Episodes of a dropout (half a window of NaN) between stretches of live signal: one
    // sensor-fault report each.
    let episodes = crate::monitor::REPORT_RING + 5;
    let mut samples: Vec<f32> = (0..1024).map(live).collect();
    for _ in 0..episodes {
        samples.extend([f32::NAN; 512]);
        samples.extend((0..1024).map(live));
    }
    let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    monitor.samples(0, &bytes).unwrap();
    assert_eq!(monitor.next_sequence(), episodes as u64, "one report per dropout");
    // Each dropout spoils the two windows that overlap it.
    assert_eq!(monitor.counters().sensor_faults, 2 * episodes as u64);
    assert_eq!(monitor.counters().reports_overwritten, 5);
    assert_eq!(monitor.report_from(0, [0; 32]).unwrap().sequence, 5);
    assert!(monitor.report_from(episodes as u64, [0; 32]).is_none());
}

#[test]
fn a_dead_sensor_makes_one_report_with_its_reason_not_a_ring_full() {
    let mut monitor = Monitor::new(SPEC).unwrap();
    let bytes: Vec<u8> = [0.0f32; 512 * 40].iter().flat_map(|v| v.to_le_bytes()).collect();
    monitor.samples(0, &bytes).unwrap();
    assert_eq!(monitor.counters().sensor_faults, 39);
    assert_eq!(monitor.next_sequence(), 1);
    let report = monitor.report_from(0, [0; 32]).unwrap();
    assert_eq!(report.sensor_fault(), Some(SensorFaultReason::Flat));
}
