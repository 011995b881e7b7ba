//! The wire protocol over real pseudo-terminals: `vigil serve` on one side, the host
//! commands (or the host client library) on the other, through a relay that can flip,
//! drop and truncate bytes.

#![allow(clippy::unwrap_used)]

mod common;

use common::pty::{Faults, Link};
use common::{ok, refused, text, vigil};
use ed25519_dalek::SigningKey;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vigil_client::client::PushOutcome;
use vigil_client::update_file::UpdateFile;
use vigil_core::hex;
use vigil_core::report::{AnomalyReport, ReportKind};

/// A `vigil serve` process, killed when dropped.
struct Device {
    child: Child,
}

impl Device {
    fn start(link: &Link, state: &Path, pubkey: &Path, extra: &[&str]) -> Device {
        let mut args = vec!["--port", &link.device_port, "--state", state.to_str().unwrap()];
        args.extend(["--pubkey", pubkey.to_str().unwrap(), "--name", "press-7"]);
        args.extend_from_slice(extra);
        Device::serve(link, &args)
    }

    /// `vigil serve ARGS` on the link's device side.
    fn serve(link: &Link, args: &[&str]) -> Device {
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut device = Device { child };
        device.wait_ready(link);
        device
    }

    fn wait_ready(&mut self, link: &Link) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("vigil serve exited with {status}: {err}");
            }
            let o = vigil(&["status", "--port", &link.host_port, "--timeout-ms", "200", "--retries", "0"]);
            if o.status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "vigil serve did not answer: {:?}",
                text(&o)
            );
        }
    }

    /// Stops the process and returns what it printed.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    ok(&["keygen", "-o", key.to_str().unwrap()]);
    let public = dir.join(format!("{name}.pub"));
    (key, public)
}

fn signed_head(dir: &Path, key: &Path, version: u32, int8: bool) -> PathBuf {
    let file = dir.join(format!("head-v{version}.vup"));
    let mut args = vec!["export-head", "-o", file.to_str().unwrap()];
    let version = version.to_string();
    args.extend(["--version", &version]);
    if int8 {
        args.push("--int8");
    }
    ok(&args);
    ok(&["sign", "--key", key.to_str().unwrap(), file.to_str().unwrap()]);
    file
}

#[test]
fn a_technician_session_over_a_pty_status_push_pull_label_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "publisher");
    let signal = dir.path().join("faulty.csv");
    ok(&[
        "simulate",
        "-o",
        signal.to_str().unwrap(),
        "--seconds",
        "30",
        "--fault",
        "outer-race",
        "--onset",
        "10",
        "--severity",
        "0.6",
        "--seed",
        "5",
    ]);
    let link = Link::new(Some(Faults { baud: Some(115_200), ..Faults::default() }));
    let state = dir.path().join("state");
    let device = Device::start(&link, &state, &public, &["--input", signal.to_str().unwrap()]);
    let port = link.host_port.as_str();

    let status = ok(&["status", "--port", port]);
    assert!(status.contains("device   press-7") && status.contains("head     version 1"), "{status}");

    let head = signed_head(dir.path(), &key, 2, true);
    let pushed = ok(&["push", "--port", port, "--quiet", head.to_str().unwrap()]);
    assert!(pushed.contains("applied head version 2"), "{pushed}");
    assert!(pushed.contains("at 115200 baud"), "{pushed}");
    eprintln!("push over a pty paced at 115200 baud: {pushed}");
    let again = ok(&["push", "--port", port, "--quiet", head.to_str().unwrap()]);
    assert!(again.contains("already runs head version 2"), "{again}");

    // Wait for the stream to be scored, then pull its reports.
    let started = Instant::now();
    let pulled = dir.path().join("reports.jsonl");
    let reports: Vec<serde_json::Value> = loop {
        ok(&["reports", "pull", "--port", port, "-o", pulled.to_str().unwrap(), "--force"]);
        let text = std::fs::read_to_string(&pulled).unwrap();
        let reports: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if reports.iter().any(|r| r["kind"] == "AlarmRaised") || started.elapsed() > Duration::from_secs(60) {
            break reports;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let alarm = reports.iter().find(|r| r["kind"] == "AlarmRaised").expect("an alarm was pulled");
    assert_eq!(alarm["class"], "outer_race", "{alarm}");
    let sequence = alarm["sequence"].as_u64().unwrap().to_string();
    let csv = dir.path().join("reports.csv");
    ok(&["reports", "pull", "--port", port, "-o", csv.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("sequence,kind,"));
    let html = dir.path().join("reports.html");
    let bearing = ["--shaft-hz", "29.95", "--bearing", "9,7.94,39.04"];
    ok(&[&["reports", "pull", "--port", port, "--html", html.to_str().unwrap()][..], &bearing].concat());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("press-7") && page.contains(&format!("id=\"alarm-{sequence}\"")),
        "alarm missing from HTML"
    );

    let labelled = ok(&["label", "--port", port, "--report", &sequence, "--class", "outer_race"]);
    assert!(labelled.contains("labelled outer_race"), "{labelled}");
    let labels = std::fs::read_to_string(state.join("labels.jsonl")).unwrap();
    assert!(labels.contains(&format!("\"report\":{sequence}")) && labels.contains("outer_race"), "{labels}");
    let e = refused(&["label", "--port", port, "--report", "999999", "--class", "ball"]);
    assert!(e.contains("the device stores no report #999999"), "{e}");
    let e = refused(&["label", "--port", port, "--report", &sequence, "--class", "cracked_housing"]);
    assert!(e.contains("unknown class") && e.contains("outer_race"), "{e}");

    let snapshot = dir.path().join("snapshot.vup");
    let said = ok(&["snapshot", "--port", port, "-o", snapshot.to_str().unwrap()]);
    assert!(said.contains("head version 2 (128 inputs x 4 classes)"), "{said}");
    let ours = UpdateFile::read(&head).unwrap().head().unwrap();
    let theirs = UpdateFile::read(&snapshot).unwrap().head().unwrap();
    assert_eq!((theirs.version, theirs.inputs, theirs.classes), (2, ours.inputs, ours.classes));
    // The device went on adapting after the push: the label moved the head a little, and
    // the prototype follows this machine's confidently normal windows slowly.
    let moved = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    // The prototype moved, by less than 5% of its largest value.
    let largest = ours.prototype_mean.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let drift = moved(&ours.prototype_mean, &theirs.prototype_mean);
    assert!(drift > 0.0 && drift < 0.05 * largest, "prototype moved {drift} of {largest}\n{said}");
    assert!(moved(&ours.bias, &theirs.bias) < 0.1, "{said}");
    assert!(said.contains("1 labels learned"), "{said}");

    // A restart keeps the committed head.
    drop(device.stop());
    let device = Device::start(&link, &state, &public, &[]);
    let status = ok(&["status", "--port", port]);
    assert!(status.contains("head     version 2"), "{status}");
    assert!(device.stop().contains("restored committed head version 2"));
}

#[test]
fn a_gateway_of_four_sensors_and_a_device_of_one_answer_the_same_host_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "publisher");
    // Columns pump-de, pump-nde, motor (a developing outer-race fault from 15 s), dead.
    let (healthy, input) = common::four_sensor_recording(dir.path(), "30", "0.4", "15");
    let link = Link::new(None);
    let state = dir.path().join("state");
    let config = dir.path().join("vigil.toml");
    let sensors = [("pump-7/DE", 0), ("pump-7/NDE", 1), ("motor/DE", 2), ("spare", 3)];
    let mut text = format!(
        "model = {:?}\nport = {:?}\nstate = {:?}\npubkey = {:?}\nname = \"line-2\"\n\
         [input]\npath = {:?}\n",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v3.onnx"),
        link.device_port,
        state,
        public,
        input
    );
    for (name, channel) in sensors {
        text.push_str(&format!("[[sensor]]\nname = \"{name}\"\nchannel = {channel}\n"));
    }
    // A channel the input does not have is named before the port is opened.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, format!("{text}[[sensor]]\nname = \"far\"\nchannel = 9\n")).unwrap();
    let e = refused(&["serve", "--config", wrong.to_str().unwrap()]);
    assert!(e.contains("sensor far reads channel 9 but the input has 4"), "{e}");
    std::fs::write(&config, text).unwrap();
    let device = Device::serve(&link, &["--config", config.to_str().unwrap(), "--commission", "5s"]);
    let port = link.host_port.as_str();

    // The developing fault alarms on its own sensor only, under its own name.
    let pull = |sensor: &str| -> Vec<serde_json::Value> {
        let out = ok(&["reports", "pull", "--port", port, "--sensor", sensor]);
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let started = Instant::now();
    let motor = loop {
        let reports = pull("motor/DE");
        if reports.iter().any(|r| r["kind"] == "AlarmRaised") {
            break reports;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no alarm on motor/DE: {reports:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let alarm = motor.iter().find(|r| r["kind"] == "AlarmRaised").unwrap();
    assert_eq!((&alarm["class"], &alarm["sensor"]), (&"outer_race".into(), &"motor/DE".into()), "{alarm}");
    assert!(alarm["stream_time_s"].as_f64().unwrap() > 15.0, "{alarm}");
    // Wait for the end of the stream: each sensor's windows, scored or skipped as
    // sensor faults, stop growing.
    let counted = |status: &serde_json::Value| -> Vec<u64> {
        let sensors = status["sensors"].as_array().unwrap();
        sensors
            .iter()
            .map(|s| s["windows_scored"].as_u64().unwrap() + s["sensor_faults"].as_u64().unwrap())
            .collect()
    };
    let mut last = Vec::new();
    let status: serde_json::Value = loop {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["status", "--port", port, "--json"])).unwrap();
        let now = counted(&status);
        if now == last && now.iter().all(|&n| n > 0) {
            break status;
        }
        last = now;
        assert!(started.elapsed() < Duration::from_secs(120), "{status}");
        std::thread::sleep(Duration::from_millis(1000));
    };
    let windows = counted(&status);
    assert!(windows.iter().all(|&n| n == windows[0]), "every sensor saw the same windows: {status}");
    let names: Vec<&str> =
        status["sensors"].as_array().unwrap().iter().map(|s| s["sensor"].as_str().unwrap()).collect();
    assert_eq!(names, ["pump-7/DE", "pump-7/NDE", "motor/DE", "spare"], "{status}");
    for (sensor, expected) in [("pump-7/DE", false), ("pump-7/NDE", false)] {
        let alarms = pull(sensor).iter().filter(|r| r["kind"] == "AlarmRaised").count();
        assert_eq!(alarms > 0, expected, "{sensor}");
    }
    let spare = pull("spare");
    assert!(spare.iter().all(|r| r["kind"] == "SensorFault"), "{spare:?}");
    // The plain status: a line per sensor.
    let table = ok(&["status", "--port", port]);
    eprintln!("{table}");
    assert!(table.contains("device   line-2") && table.contains("sensors  4,"), "{table}");
    let line = |name: &str| table.lines().find(|l| l.trim_start().starts_with(name)).unwrap().to_owned();
    assert!(line("pump-7/DE ").contains("quiet") && line("pump-7/NDE").contains("quiet"), "{table}");
    // One sensor's status in full.
    let one = ok(&["status", "--port", port, "--sensor", "motor/DE"]);
    assert!(one.contains("reports  next sequence"), "{one}");

    // A pull, label or snapshot must say which sensor; an unknown one is named.
    let e = refused(&["reports", "pull", "--port", port]);
    assert!(e.contains("watches 4 sensors (pump-7/DE, pump-7/NDE, motor/DE, spare)"), "{e}");
    let e = refused(&["reports", "pull", "--port", port, "--sensor", "pump-9"]);
    assert!(e.contains("no sensor pump-9"), "{e}");
    let sequence = alarm["sequence"].as_u64().unwrap().to_string();
    let labelled = ok(&[
        "label",
        "--port",
        port,
        "--sensor",
        "motor/DE",
        "--report",
        &sequence,
        "--class",
        "outer_race",
    ]);
    assert!(labelled.contains("of sensor motor/DE labelled outer_race"), "{labelled}");
    let labels = std::fs::read_to_string(state.join("sensors/motor/DE/labels.jsonl")).unwrap();
    assert!(labels.contains(&format!("\"report\":{sequence}")), "{labels}");
    // The same sequence number on a quiet sensor names no report of its own.
    let e = refused(&[
        "label",
        "--port",
        port,
        "--sensor",
        "pump-7/DE",
        "--report",
        &sequence,
        "--class",
        "ball",
    ]);
    assert!(e.contains(&format!("no report #{sequence} of sensor pump-7/DE")), "{e}");
    let csv = dir.path().join("motor.csv");
    ok(&["reports", "pull", "--port", port, "--sensor", "motor/DE", "-o", csv.to_str().unwrap()]);
    let table = std::fs::read_to_string(&csv).unwrap();
    assert!(
        table.starts_with("sequence,kind,") && table.lines().next().unwrap().ends_with(",sensor"),
        "{table}"
    );
    assert!(table.lines().skip(1).all(|l| l.ends_with(",motor/DE")), "{table}");
    let html = dir.path().join("motor.html");
    ok(&["reports", "pull", "--port", port, "--sensor", "motor/DE", "--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("line-2, sensor motor/DE") && page.contains(&format!("id=\"alarm-{sequence}\"")));
    let snapshot = dir.path().join("motor.vup");
    let said = ok(&["snapshot", "--port", port, "--sensor", "motor/DE", "-o", snapshot.to_str().unwrap()]);
    assert!(said.contains("1 labels learned"), "{said}");

    // A head update is the gateway's: every sensor runs it.
    let head = signed_head(dir.path(), &key, 2, false);
    ok(&["push", "--port", port, "--quiet", head.to_str().unwrap()]);
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", "--port", port, "--json"])).unwrap();
    assert_eq!(status["head_version"], 2, "{status}");
    let out = device.stop();
    assert!(out.contains("motor/DE: ") && out.contains("outer_race"), "{out}");
    assert!(state.join("sensors/pump-7/NDE").is_dir(), "each sensor has its folder");

    // A device of one sensor answers the same tools, with or without its name.
    let link = Link::new(None);
    let single = dir.path().join("single");
    let device = Device::start(&link, &single, &public, &["--input", healthy.to_str().unwrap()]);
    let port = link.host_port.as_str();
    let status = ok(&["status", "--port", port]);
    assert!(status.contains("device   press-7") && !status.contains("sensors "), "{status}");
    ok(&["status", "--port", port, "--sensor", "press-7"]);
    ok(&["reports", "pull", "--port", port]);
    let e = refused(&["reports", "pull", "--port", port, "--sensor", "motor/DE"]);
    assert!(e.contains("no sensor motor/DE; its sensors are press-7"), "{e}");
    drop(device);
}

#[test]
fn refused_updates_say_why_and_leave_the_head_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "publisher");
    let (stranger, _) = keygen(dir.path(), "stranger");
    let link = Link::new(None);
    let _device = Device::start(&link, &dir.path().join("state"), &public, &[]);
    let port = link.host_port.as_str();
    let good = signed_head(dir.path(), &key, 3, false);
    ok(&["push", "--port", port, "--quiet", good.to_str().unwrap()]);

    let unsigned = dir.path().join("unsigned.vup");
    ok(&["export-head", "-o", unsigned.to_str().unwrap(), "--version", "4"]);
    let e = refused(&["push", "--port", port, "--quiet", unsigned.to_str().unwrap()]);
    assert!(e.contains("unsigned"), "{e}");

    let wrong = dir.path().join("wrong.vup");
    ok(&["export-head", "-o", wrong.to_str().unwrap(), "--version", "5"]);
    ok(&["sign", "--key", stranger.to_str().unwrap(), wrong.to_str().unwrap()]);
    let e = refused(&["push", "--port", port, "--quiet", wrong.to_str().unwrap()]);
    assert!(e.contains("signature does not verify"), "{e}");

    let older = signed_head(dir.path(), &key, 2, false);
    let e = refused(&["push", "--port", port, "--quiet", older.to_str().unwrap()]);
    assert!(e.contains("not above the active version 3"), "{e}");

    let mut other = UpdateFile::read(&good).unwrap();
    let mut head = other.head().unwrap();
    head.model_hash = [0x42; 32];
    head.version = 6;
    other = UpdateFile::for_head(&head).unwrap();
    other.sign(&read_secret(&key));
    let other_path = dir.path().join("other.vup");
    other.write(&other_path).unwrap();
    let e = refused(&["push", "--port", port, "--quiet", other_path.to_str().unwrap()]);
    assert!(e.contains("another model"), "{e}");

    // The same version again: "already runs" only for the very same bytes.
    let again = ok(&["push", "--port", port, "--quiet", good.to_str().unwrap()]);
    assert!(again.contains("already runs head version 3"), "{again}");
    let same_version = dir.path().join("same-version");
    std::fs::create_dir(&same_version).unwrap();
    let different = signed_head(&same_version, &key, 3, true);
    let e = refused(&["push", "--port", port, "--quiet", different.to_str().unwrap()]);
    assert!(e.contains("not above the active version 3"), "{e}");
    // A version far ahead would block every later update.
    let far = signed_head(dir.path(), &key, u32::MAX, false);
    let e = refused(&["push", "--port", port, "--quiet", far.to_str().unwrap()]);
    assert!(e.contains("more than 1000 above the active version 3; publish version 1003 at most"), "{e}");

    let status = ok(&["status", "--port", port]);
    assert!(status.contains("head     version 3"), "{status}");
}

/// A signal that alarms (an outer-race fault from 2 s) and then goes flat (a sensor fault).
fn alarm_then_flat(dir: &Path) -> PathBuf {
    let signal = dir.join("alarm-then-flat.csv");
    let sim = ["simulate", "-o", signal.to_str().unwrap(), "--seconds", "8", "--fault", "outer-race"];
    ok(&[&sim[..], &["--onset", "2", "--severity", "0.7", "--seed", "4"]].concat());
    let mut csv = std::fs::read_to_string(&signal).unwrap();
    csv.push_str(&"0\n".repeat(32_000));
    std::fs::write(&signal, csv).unwrap();
    signal
}

#[test]
fn labels_refuse_non_alarms_and_a_second_verdict_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path(), "publisher");
    let signal = alarm_then_flat(dir.path());
    let link = Link::new(None);
    let state = dir.path().join("state");
    let _device = Device::start(&link, &state, &public, &["--input", signal.to_str().unwrap()]);
    let port = link.host_port.as_str();
    let fault = wait_for_report(port, dir.path(), "SensorFault");
    let alarm = wait_for_report(port, dir.path(), "AlarmRaised");

    let fault = fault["sequence"].as_u64().unwrap().to_string();
    let e = refused(&["label", "--port", port, "--report", &fault, "--class", "normal"]);
    assert!(e.contains(&format!("report #{fault} is not a raised alarm but SENSOR FAULT")), "{e}");
    assert!(!state.join("labels.jsonl").exists(), "a refused label was recorded");
    ok(&["label", "--port", port, "--report", &fault, "--class", "normal", "--force"]);

    let alarm = alarm["sequence"].as_u64().unwrap().to_string();
    let verdicts = || {
        let text = std::fs::read_to_string(state.join("labels.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["report"].as_u64().map(|n| n.to_string()).as_deref() == Some(alarm.as_str()))
            .collect::<Vec<_>>()
    };
    ok(&["label", "--port", port, "--report", &alarm, "--class", "ball"]);
    ok(&["label", "--port", port, "--report", &alarm, "--class", "outer_race"]);
    ok(&["label", "--port", port, "--report", &alarm, "--class", "outer_race"]);
    let lines = verdicts();
    assert_eq!(lines.len(), 2, "the same verdict twice is recorded once: {lines:?}");
    assert_eq!((&lines[1]["class"], &lines[1]["replaces"]), (&"outer_race".into(), &"ball".into()));
}

#[test]
fn adapted_state_damaged_in_every_copy_is_announced_not_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path(), "publisher");
    let signal = dir.path().join("healthy.csv");
    ok(&["simulate", "-o", signal.to_str().unwrap(), "--seconds", "12", "--seed", "3"]);
    let link = Link::new(None);
    let state = dir.path().join("state");
    let device =
        Device::start(&link, &state, &public, &["--input", signal.to_str().unwrap(), "--commission", "5s"]);
    let adapted = state.join("adapted");
    let started = Instant::now();
    while !adapted.join("record-a.bin").exists() && !adapted.join("record-b.bin").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no adapted state saved within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(device.stop());
    // Flip a byte in every commit record of the adapted state.
    let mut damaged = 0;
    for entry in std::fs::read_dir(&adapted).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_str().unwrap().contains("record") {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[20] ^= 0xFF;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no commit record in {}", adapted.display());
    let printed = Device::start(&link, &state, &public, &[]).stop();
    assert!(
        printed.contains("WARNING: no saved copy of the adapted state") && printed.contains("is intact"),
        "{printed}"
    );
}

fn read_secret(path: &Path) -> SigningKey {
    vigil_client::update_file::read_secret_key(path).unwrap()
}

#[test]
fn a_missing_or_busy_port_is_named() {
    let e = refused(&["status", "--port", "/dev/ttyVIGIL-missing"]);
    assert!(e.contains("serial port /dev/ttyVIGIL-missing does not exist"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path(), "k");
    let link = Link::new(None);
    let _device = Device::start(&link, &dir.path().join("state"), &public, &[]);
    let e = refused(&["status", "--port", &link.device_port]);
    assert!(e.contains(&format!("serial port {} is busy", link.device_port)), "{e}");
    let e = refused(&[
        "serve",
        "--port",
        "/dev/ttyVIGIL-missing",
        "--state",
        dir.path().join("s2").to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert!(e.contains("/dev/ttyVIGIL-missing does not exist"), "{e}");
}

fn stored_reports(n: u64) -> Vec<AnomalyReport> {
    (0..n)
        .map(|i| AnomalyReport {
            sequence: i,
            kind: if i % 2 == 0 { ReportKind::AlarmRaised } else { ReportKind::AlarmCleared },
            stream_time_s: i as f64 * 1.5,
            score: 10.0 + i as f32,
            threshold: 9.0,
            class_index: (i % 4) as u8,
            probabilities: vigil_core::heapless::Vec::from_slice(&[0.1, 0.2, 0.3, 0.4]).unwrap(),
            model_hash: [7; 32],
            head_version: 1,
            top_bands: vigil_core::heapless::Vec::new(),
            spectrum: None,
        })
        .collect()
}

/// The link target of the wire-protocol issue: 1% of bytes corrupted or dropped, 200
/// pushes, and report pulls.
#[test]
fn on_a_link_that_corrupts_one_byte_in_a_hundred_no_corrupted_head_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "publisher");
    let secret = read_secret(&key);
    let state = dir.path().join("state");
    {
        let mut store =
            vigil_runtime::store::ReportStore::open(&state, vigil_runtime::store::FsyncPolicy::Never)
                .unwrap();
        for r in stored_reports(300) {
            store.append(&r).unwrap();
        }
    }
    let link = Link::new(Some(Faults { rate: 0.01, seed: 7, baud: None }));
    let device = Device::start(&link, &state, &public, &[]);
    let mut client = link.client();
    client.retries = 40;
    // A lost byte costs a timeout: 10 ms is ample on a pty and keeps 200 pushes quick.
    client.timeout = Duration::from_millis(10);
    let base = UpdateFile::read(&signed_head(dir.path(), &key, 1, true)).unwrap().head().unwrap();

    let (mut applied, mut failed) = (0, 0);
    let mut active = 1;
    let mut last_applied = None;
    let started = Instant::now();
    for version in 2..202u32 {
        let mut head = base.clone();
        head.version = version;
        head.bias[0] = version as f32; // every version differs
        let mut file = UpdateFile::for_head(&head).unwrap();
        file.sign(&secret);
        match client.push(&file.header, &file.payload, file.signature, |_, _| {}) {
            Ok(PushOutcome::Applied(v)) => {
                assert_eq!(v, version);
                applied += 1;
                active = version;
                last_applied = Some(head);
            }
            Ok(PushOutcome::AlreadyActive(v)) => panic!("version {v} was already active"),
            Err(e) => {
                failed += 1;
                eprintln!("push of version {version} reported failed: {e:#}");
            }
        }
    }
    let push_seconds = started.elapsed().as_secs_f64();
    assert!(applied >= 190, "only {applied} of 200 pushes applied ({failed} failed)");

    // What the device runs is exactly the last head applied, byte for byte.
    let snapshot: vigil_core::update::HeadUpdate =
        postcard::from_bytes(&client.head_snapshot().unwrap()).unwrap();
    let expected = last_applied.unwrap();
    let mut weights = vec![0.0; usize::from(expected.inputs) * usize::from(expected.classes)];
    expected.weights_into(&mut weights).unwrap();
    assert_eq!(snapshot.version, active);
    assert_eq!(snapshot.bias, expected.bias);
    assert_eq!(
        (snapshot.prototype_mean, snapshot.prototype_var),
        (expected.prototype_mean, expected.prototype_var)
    );
    let vigil_core::update::HeadWeights::F32(got) = &snapshot.weights else {
        panic!("snapshot weights not f32")
    };
    assert_eq!(got.as_slice(), weights.as_slice());

    // Pulls: every report exactly once, in order, twice over.
    for _ in 0..2 {
        let mut pulled = Vec::new();
        let next = client.pull_reports(0, 16, |r| pulled.push(r)).unwrap();
        assert_eq!(next, 300);
        assert_eq!(pulled, stored_reports(300));
    }
    let faulted = link.faulted.load(Ordering::Relaxed);
    let relayed = link.relayed.load(Ordering::Relaxed);
    eprintln!(
        "noisy link: {faulted} of {relayed} bytes corrupted or dropped ({:.2}%); {applied} pushes applied, \
         {failed} reported failed in {push_seconds:.1} s; {} retries; active head {} ({})",
        100.0 * faulted as f64 / relayed as f64,
        client.stats.retries,
        active,
        hex::encode(&snapshot.model_hash[..4])
    );
    assert!(faulted as f64 > 0.008 * relayed as f64);
    drop(device);
}

/// Polls `vigil reports pull` until a report of `kind` arrives; returns it.
fn wait_for_report(port: &str, dir: &Path, kind: &str) -> serde_json::Value {
    let started = Instant::now();
    let pulled = dir.join("wait.jsonl");
    loop {
        ok(&["reports", "pull", "--port", port, "-o", pulled.to_str().unwrap(), "--force"]);
        let text = std::fs::read_to_string(&pulled).unwrap();
        if let Some(r) = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["kind"] == kind)
        {
            return r;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no {kind} report within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_site_commissions_learns_a_label_survives_a_restart_and_takes_a_fleet_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "publisher");
    // A machine faster than the reference one: healthy for 40 s, then an outer-race fault.
    let signal = dir.path().join("site.csv");
    let sim = ["simulate", "-o", signal.to_str().unwrap(), "--seconds", "60", "--shaft-hz", "41"];
    ok(&[&sim[..], &["--fault", "outer-race", "--onset", "40", "--severity", "0.7", "--seed", "9"]].concat());
    let link = Link::new(None);
    let state = dir.path().join("state");
    let device =
        Device::start(&link, &state, &public, &["--input", signal.to_str().unwrap(), "--commission", "20s"]);
    let port = link.host_port.as_str();

    // Alarms are disarmed while commissioning: the first alarm comes after the onset.
    let alarm = wait_for_report(port, dir.path(), "AlarmRaised");
    assert!(alarm["stream_time_s"].as_f64().unwrap() > 40.0, "{alarm}");
    let status = ok(&["status", "--port", port]);
    let shipped_threshold = vigil_runtime::builtin::load_model(None).unwrap().metadata().alarm.threshold;
    assert!(
        !status.contains(&format!("threshold {shipped_threshold:.2})")),
        "threshold not calibrated: {status}"
    );

    // A technician's label teaches the head; the snapshot carries the adapted state.
    let sequence = alarm["sequence"].as_u64().unwrap().to_string();
    ok(&["label", "--port", port, "--report", &sequence, "--class", "outer_race"]);
    let fleet = dir.path().join("fleet");
    std::fs::create_dir(&fleet).unwrap();
    let snapshot = fleet.join("press-7.vup");
    let said = ok(&["snapshot", "--port", port, "-o", snapshot.to_str().unwrap()]);
    assert!(said.contains("1 labels learned, 0 rolled back"), "{said}");
    let adapted = UpdateFile::read(&snapshot).unwrap();
    let adapted_head = adapted.head().unwrap();
    let shipped = vigil_runtime::builtin::load_model(None).unwrap().head_update(1, false).unwrap();
    assert_ne!(adapted_head.bias, shipped.bias, "the label did not change the head");
    assert_ne!(adapted_head.alarm.threshold, shipped.alarm.threshold);
    let printed = device.stop();
    assert!(printed.contains("commissioned at 20.") && printed.contains("head adapted"), "{printed}");

    // A restart resumes the adapted state instead of commissioning again.
    let device = Device::start(&link, &state, &public, &["--commission", "20s"]);
    let again = dir.path().join("again.vup");
    ok(&["snapshot", "--port", port, "-o", again.to_str().unwrap()]);
    assert_eq!(
        UpdateFile::read(&again).unwrap().head().unwrap(),
        adapted_head,
        "state lost across a restart"
    );

    // Merge with a device that learned nothing (weight 0), sign, push back.
    let other = fleet.join("press-8.vup");
    ok(&["export-head", "-o", other.to_str().unwrap(), "--version", "1"]);
    let merged = dir.path().join("merged.vup");
    let said = ok(&[
        "fleet",
        "merge",
        "--snapshots",
        fleet.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(said.contains("press-7.vup: head version 1, 1 labels learned, weight 1.00"), "{said}");
    let merged_head = UpdateFile::read(&merged).unwrap().head().unwrap();
    assert_eq!((merged_head.version, &merged_head.bias), (2, &adapted_head.bias));
    let pushed = ok(&["push", "--port", port, "--quiet", merged.to_str().unwrap()]);
    assert!(pushed.contains("applied head version 2"), "{pushed}");
    let printed = device.stop();
    assert!(
        printed.contains("restored adapted state: Armed site") && printed.contains("1 labels learned"),
        "{printed}"
    );

    // After the push the device restarts on head 2 with its site kept.
    let _device = Device::start(&link, &state, &public, &[]);
    let status = ok(&["status", "--port", port]);
    assert!(status.contains("head     version 2"), "{status}");
    let after = dir.path().join("after.vup");
    ok(&["snapshot", "--port", port, "-o", after.to_str().unwrap()]);
    let after = UpdateFile::read(&after).unwrap().head().unwrap();
    assert_eq!((after.version, after.alarm.threshold), (2, adapted_head.alarm.threshold));
}
