//! The gateway and the firmware, fed the same samples, say the same thing about them: an
//! anomaly their classifier finds normal is "no known fault pattern" on both, never a
//! fault class with p = 0.00, and a dead or absurd signal is the same sensor fault.
#![allow(clippy::unwrap_used)]

use vigil_core::alarm::AlarmPolicy;
use vigil_core::features::{FeatureSpec, FEATURE_COUNT};
use vigil_core::report::{AnomalyReport, Finding, ReportKind};
use vigil_core::sensor::SensorFaultReason;
use vigil_core::update::{HeadParts, HeadUpdate};
use vigil_firmware::monitor::{ActiveHead, Monitor};
use vigil_runtime::report_io::describe;
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::windower::Windower;
use vigil_sim::{FaultConfig, MachineConfig, Simulator};

const RATE: f64 = 16_000.0;
const NAMES: [&str; 4] = ["normal", "outer_race", "inner_race", "ball"];

/// A policy that alarms on the first window above a threshold of 1.
const HAIR_TRIGGER: AlarmPolicy = AlarmPolicy { threshold: 1.0, raise_k: 1, window_n: 1, clear_ratio: 0.5 };

/// A head sure that every window is normal, over a prototype no real window is near: the
/// alarm can only come from the anomaly score.
fn sure_normal_far_prototype(model_hash: [u8; 32], inputs: usize) -> HeadUpdate {
    let bias = [30.0, 0.0, 0.0, 0.0];
    HeadUpdate::from_parts(HeadParts {
        model_hash,
        version: 2,
        weights: &vec![0.0; 4 * inputs],
        bias: &bias,
        prototype_mean: &vec![1e3; inputs],
        prototype_var: &vec![1.0; inputs],
        alarm: HAIR_TRIGGER,
        int8: false,
    })
    .unwrap()
}

/// The reports the gateway's scorer makes of `samples` with the built-in model.
fn gateway_reports(samples: &[f32], head: bool) -> Vec<AnomalyReport> {
    let model = vigil_runtime::builtin::load_model(None).unwrap();
    let meta = model.metadata().clone();
    let update = sure_normal_far_prototype(model.hash(), model.embedding_dim());
    let mut scorer = WindowScorer::new(model, 0).unwrap();
    if head {
        scorer.apply_head(&update).unwrap();
    }
    let mut windower = Windower::new(1, RATE, meta.sample_rate_hz, meta.window, meta.window / 2).unwrap();
    let mut reports = Vec::new();
    windower.push(samples, |w| reports.extend(scorer.score(&w).unwrap().report));
    reports
}

/// The reports the firmware's monitor makes of `samples`, as its host pulls them.
fn firmware_reports(samples: &[f32], head: bool) -> Vec<AnomalyReport> {
    let spec = FeatureSpec {
        sample_rate_hz: RATE as f32,
        shaft_hz: 29.95,
        bearing: vigil_core::bearing::BearingGeometry::deep_groove_6205(),
    };
    let mut monitor = Monitor::new(spec).unwrap();
    if head {
        let update = sure_normal_far_prototype(spec.model_hash(), FEATURE_COUNT);
        monitor.apply_head(ActiveHead::from_update(&update).unwrap());
    }
    let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
    monitor.samples(0, &bytes).unwrap();
    (0..monitor.next_sequence()).filter_map(|s| monitor.report_from(s, [0; 32])).collect()
}

/// A report's wording without its sequence, time and numbers, which differ between a
/// CNN and a feature backbone: what it says was found.
fn finding_text(report: &AnomalyReport) -> String {
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    let line = describe(report, &names);
    let after_time = line.split_once(" s: ").map_or(line.as_str(), |(_, rest)| rest);
    after_time.split(", score").next().unwrap_or_default().to_string()
}

fn healthy(seconds: f64) -> Vec<f32> {
    Simulator::new(MachineConfig::reference(RATE, 1), FaultConfig::healthy(), 11).generate(seconds)
}

#[test]
fn an_anomaly_the_classifier_calls_normal_reads_the_same_on_gateway_and_firmware() {
    let samples = healthy(1.0);
    let gateway = gateway_reports(&samples, true);
    let firmware = firmware_reports(&samples, true);
    for reports in [&gateway, &firmware] {
        let first = reports.first().expect("the far prototype raises an alarm");
        assert_eq!(first.kind, ReportKind::AlarmRaised);
        assert_eq!(first.finding(), Finding::Unrecognised { hint: None });
    }
    let (g, f) = (finding_text(&gateway[0]), finding_text(&firmware[0]));
    assert_eq!(g, f);
    assert_eq!(g, "anomaly, unlike this machine's normal; no known fault pattern");
    for line in gateway.iter().chain(&firmware).map(|r| describe(r, &[])) {
        assert!(!line.contains("p=0.00"), "{line}");
    }
}

#[test]
fn dead_and_absurd_signals_are_the_same_sensor_fault_on_gateway_and_firmware() {
    let live = healthy(1.0);
    let cases: Vec<(SensorFaultReason, Vec<f32>)> = vec![
        (SensorFaultReason::Flat, vec![0.0; live.len()]),
        (SensorFaultReason::OutOfRange, vec![1e30; live.len()]),
        (SensorFaultReason::NotFinite, live.iter().map(|v| v / 0.0).collect()),
        (SensorFaultReason::OutOfRange, live.iter().map(|v| v * 1e20).collect()),
    ];
    for (reason, samples) in cases {
        let gateway = gateway_reports(&samples, false);
        let firmware = firmware_reports(&samples, false);
        assert_eq!(gateway.len(), 1, "{reason:?}: one report for the whole episode");
        assert_eq!(firmware.len(), 1, "{reason:?}: one report for the whole episode");
        assert_eq!(gateway[0].sensor_fault(), Some(reason));
        assert_eq!(firmware[0].sensor_fault(), Some(reason));
        assert_eq!(finding_text(&gateway[0]), finding_text(&firmware[0]));
    }
}
