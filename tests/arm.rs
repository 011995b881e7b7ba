//! The aarch64 build of `vigil` under qemu-user gives the same alarms and scores as this
//! machine's build on the same simulated stream (tract picks other kernels on ARM, so
//! scores agree within a tolerance, not bit for bit).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Largest relative difference of a window's anomaly score allowed between the builds.
const SCORE_TOLERANCE: f64 = 1e-3;

fn arm_binary() -> Option<PathBuf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/gateway/aarch64-unknown-linux-gnu/vigil");
    let qemu =
        Command::new("sh").args(["-c", "command -v qemu-aarch64"]).output().is_ok_and(|o| o.status.success());
    if path.exists() && qemu {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: aarch64 emulation test (needs target/gateway/aarch64-unknown-linux-gnu/vigil and qemu-aarch64; \
             scripts/test-all builds and installs them)"
        );
        None
    }
}

/// Per-window scores and the alarm reports of `vigil run --json --trace`.
fn run(command: &mut Command) -> (Vec<f64>, Vec<serde_json::Value>) {
    let o = command.output().unwrap();
    assert!(o.status.success(), "{command:?}: {}", String::from_utf8_lossy(&o.stderr));
    let mut scores = Vec::new();
    let mut reports = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(score) = v.get("window").and(v["score"].as_f64()) {
            scores.push(score);
        } else if v.get("kind").is_some() {
            reports.push(v);
        }
    }
    (scores, reports)
}

#[test]
fn the_arm_build_under_emulation_agrees_with_this_build() {
    let Some(arm) = arm_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let signal = dir.path().join("stream.wav");
    let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["simulate", "-o", signal.to_str().unwrap(), "--seconds", "20", "--fault", "outer-race"])
        .args(["--onset", "8", "--severity", "0.5", "--seed", "21"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let args = ["run", "--input", signal.to_str().unwrap(), "--json", "--trace"];
    let (x86_scores, x86_reports) = run(Command::new(env!("CARGO_BIN_EXE_vigil")).args(args));
    let (arm_scores, arm_reports) = run(Command::new("qemu-aarch64")
        .args(["-L", "/usr/aarch64-linux-gnu", arm.to_str().unwrap()])
        .args(args));

    assert_eq!(x86_scores.len(), arm_scores.len());
    assert!(!x86_scores.is_empty());
    let worst = x86_scores
        .iter()
        .zip(&arm_scores)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-6))
        .fold(0.0f64, f64::max);
    eprintln!(
        "aarch64 under qemu vs x86-64: {} windows, largest relative score difference {worst:.2e}",
        x86_scores.len()
    );
    assert!(worst <= SCORE_TOLERANCE, "scores differ by up to {worst:.2e} (relative)");

    let key = |r: &serde_json::Value| {
        (r["sequence"].clone(), r["kind"].clone(), r["class"].clone(), r["stream_time_s"].clone())
    };
    assert!(x86_reports.iter().any(|r| r["kind"] == "AlarmRaised"), "the stream should raise an alarm");
    assert_eq!(
        x86_reports.iter().map(key).collect::<Vec<_>>(),
        arm_reports.iter().map(key).collect::<Vec<_>>(),
        "the builds raised different alarms"
    );
}

/// The aarch64 binary is the gateway build the Debian package installs
/// (`scripts/package-deb --target aarch64-unknown-linux-gnu`): it serves, runs and
/// reports, and its training commands say they need the full build.
#[test]
fn the_arm_gateway_build_serves_and_reports_but_does_not_train() {
    let Some(arm) = arm_binary() else { return };
    let vigil = |args: &[&str]| {
        Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu", arm.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    for command in ["serve", "run", "status", "reports", "report"] {
        let out = vigil(&[command, "--help"]);
        assert!(out.status.success(), "vigil {command} --help: {}", String::from_utf8_lossy(&out.stderr));
    }
    for command in ["pretrain", "fine-tune"] {
        let out = vigil(&[command, "--data", "x.toml", "-o", "m.onnx"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "vigil {command} ran in the gateway build");
        assert!(stderr.contains("needs the full build"), "vigil {command}: {stderr}");
    }
}
