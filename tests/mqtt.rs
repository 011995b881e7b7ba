//! A gateway on a real MQTT broker (Eclipse Mosquitto, started here on a free loopback
//! port with its own config): store-and-forward of reports across a broker restart, the
//! host's collection once each, and the status with its last will.
#![allow(clippy::unwrap_used)]

mod common;

use common::ok;
use serialport::{SerialPort, TTYPort};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_mqtt::mosquitto::Mosquitto;

/// A Mosquitto of this test's own, or `None` (with a SKIPPED line) when it is not
/// installed and the run does not require it.
fn mosquitto(dir: &Path, listener: &str, auth: &str) -> Option<Mosquitto> {
    if Mosquitto::installed().is_none() {
        assert!(
            std::env::var_os("VIGIL_REQUIRE_MQTT").is_none(),
            "mosquitto is required (VIGIL_REQUIRE_MQTT) but not installed"
        );
        eprintln!("SKIPPED: the MQTT tests (mosquitto is not installed: apt-get install mosquitto)");
        return None;
    }
    Some(Mosquitto::start(dir, listener, auth).unwrap())
}

/// `vigil serve` scoring CSV lines written to its standard input, publishing to a broker.
struct Gateway {
    child: Child,
    input: Option<ChildStdin>,
    // The other end of the serial port the gateway serves; kept open while it runs.
    _port: (TTYPort, TTYPort),
}

impl Gateway {
    fn start(dir: &Path, broker: &str) -> Gateway {
        Gateway::named(dir, broker, "press-7", &[])
    }

    /// A gateway named `name` (its state in `dir/<name>`), with more `serve` options.
    fn named(dir: &Path, broker: &str, name: &str, extra: &[&str]) -> Gateway {
        Gateway::named_with_env(dir, broker, name, extra, ("VIGIL_TEST", "1"))
    }

    /// As [`Gateway::named`], with one more environment variable.
    fn named_with_env(dir: &Path, broker: &str, name: &str, extra: &[&str], env: (&str, &str)) -> Gateway {
        let key = dir.join("publisher");
        if !key.exists() {
            ok(&["keygen", "-o", key.to_str().unwrap()]);
        }
        let (master, slave) = TTYPort::pair().unwrap();
        let port = slave.name().unwrap();
        let state = if name == "press-7" && extra.is_empty() { dir.join("state") } else { dir.join(name) };
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--port", &port, "--state", state.to_str().unwrap()])
            .args(["--pubkey", &format!("{}.pub", key.display()), "--name", name])
            .args(["--input", "-", "--format", "csv", "--rate", "16000"])
            .args(["--mqtt", broker, "--site", "plant-1"])
            .args(extra)
            .env(env.0, env.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input = child.stdin.take();
        Gateway { child, input, _port: (master, slave) }
    }

    /// Feeds `seconds` of a simulated signal (`fault` or healthy) to the gateway.
    fn feed(&mut self, dir: &Path, seconds: u32, fault: Option<&str>, seed: u32) {
        let path = dir.join(format!("segment-{seed}.csv"));
        let mut args = vec!["simulate", "-o", path.to_str().unwrap()];
        let (seconds, seed) = (seconds.to_string(), seed.to_string());
        args.extend(["--seconds", &seconds, "--seed", &seed]);
        if let Some(fault) = fault {
            args.extend(["--fault", fault, "--onset", "0", "--severity", "0.8"]);
        }
        ok(&args);
        let text = std::fs::read_to_string(&path).unwrap();
        let samples: String =
            text.lines().filter(|l| l.parse::<f32>().is_ok()).map(|l| format!("{l}\n")).collect();
        self.input.as_mut().unwrap().write_all(samples.as_bytes()).unwrap();
        self.input.as_mut().unwrap().flush().unwrap();
    }

    /// Kills the gateway as a power cut would: no goodbye to the broker.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects with `vigil fleet reports` until `count` reports are in `file` (or 60 s pass).
fn collect_until(broker: &str, file: &Path, count: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        ok(&["fleet", "reports", "--broker", broker, "-o", file.to_str().unwrap(), "--quiet", "500ms"]);
        let reports: Vec<serde_json::Value> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if reports.len() >= count || started.elapsed() > Duration::from_secs(60) {
            return reports;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `vigil fleet status` with the broker options `broker` (and an environment variable),
/// run until its table names `device`; the table. Fails after 30 s.
fn status_until(broker: &[&str], env: Option<(&str, &str)>, device: &str) -> String {
    let started = Instant::now();
    loop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        command.args(["fleet", "status", "--quiet", "500ms"]).args(broker);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let status = String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned();
        if status.contains(device) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no status of {device} with {broker:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn status_of(broker: &str) -> String {
    ok(&["fleet", "status", "--broker", broker, "--quiet", "500ms"])
}

#[test]
fn reports_reach_the_host_once_each_across_a_broker_restart_and_the_will_marks_a_dead_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = mosquitto(dir.path(), "", "allow_anonymous true\n") else { return };
    let url = broker.url();
    let collected = dir.path().join("fleet.jsonl");
    // The host's first collection creates its session on the broker.
    collect_until(&url, &collected, 0);

    let mut gateway = Gateway::start(dir.path(), &url);
    gateway.feed(dir.path(), 4, None, 1);
    gateway.feed(dir.path(), 6, Some("outer-race"), 2);
    let first = collect_until(&url, &collected, 1);
    assert_eq!(first.len(), 1, "the alarm did not arrive: {first:?}");
    assert_eq!(
        (first[0]["kind"].as_str(), first[0]["device"].as_str()),
        (Some("AlarmRaised"), Some("press-7"))
    );
    let status = status_of(&url);
    assert!(status.contains("press-7") && status.contains("yes"), "{status}");

    // The broker goes away; the gateway goes on scoring and storing.
    broker.stop();
    gateway.feed(dir.path(), 12, None, 3);
    gateway.feed(dir.path(), 6, Some("outer-race"), 4);
    let state = dir.path().join("state");
    let started = Instant::now();
    while vigil_runtime::store::ReportStore::read_all(&state).unwrap().len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "the gateway did not store its reports");
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.restart().unwrap();
    let all = collect_until(&url, &collected, 3);
    let sequences: Vec<u64> = all.iter().map(|r| r["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, [0, 1, 2], "every report once, in order: {all:?}");
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["AlarmRaised", "AlarmCleared", "AlarmRaised"]);
    let marks = std::fs::read_to_string(dir.path().join("fleet.jsonl.marks")).unwrap();
    assert!(marks.contains("\"plant-1/press-7\": 3"), "{marks}");
    assert_eq!(std::fs::read_to_string(state.join("mqtt.next")).unwrap().trim(), "3");
    // The collection as the technician's HTML report: an overview, then the device.
    let html = dir.path().join("fleet.html");
    ok(&[
        "fleet",
        "reports",
        "--broker",
        &url,
        "-o",
        collected.to_str().unwrap(),
        "--quiet",
        "300ms",
        "--html",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"fleet\"") && page.contains("plant-1/press-7"), "no fleet overview");
    assert!(
        page.contains("id=\"d0-alarm-0\"") && page.contains("id=\"d0-alarm-2\""),
        "alarms missing from the page"
    );

    // A gateway that dies without a word is marked offline by its last will.
    gateway.kill();
    let started = Instant::now();
    loop {
        let status = status_of(&url);
        let line = status.lines().find(|l| l.contains("press-7")).unwrap_or_default().to_owned();
        if line.split_whitespace().nth(2) == Some("no") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no last will within 30 s: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn health_records_travel_on_their_own_topic_in_the_report_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = mosquitto(dir.path(), "", "allow_anonymous true\n") else { return };
    let url = broker.url();
    // The collector's session exists before the first record.
    let collected = dir.path().join("fleet.jsonl");
    ok(&["fleet", "reports", "--broker", &url, "-o", collected.to_str().unwrap(), "--quiet", "300ms"]);
    let mut gateway = Gateway::named(dir.path(), &url, "press-3", &["--health-every", "1s"]);
    gateway.feed(dir.path(), 4, None, 5);
    let reports = collect_until(&url, &collected, 3);
    let health: Vec<&serde_json::Value> = reports.iter().filter(|r| r["kind"] == "Health").collect();
    assert!(health.len() >= 3, "{reports:?}");
    for r in &health {
        assert!(r["health"]["windows"].as_u64().unwrap() >= 14, "{r}");
        assert!(r["health"]["velocity_mm_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["device"], "press-3", "{r}");
    }
    // Numbered in the one sequence of the device's reports, each once.
    let sequences: Vec<u64> = reports.iter().map(|r| r["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (0..sequences.len() as u64).collect::<Vec<_>>(), "{reports:?}");
}

#[test]
fn a_gateway_of_several_sensors_publishes_each_sensors_reports_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = mosquitto(dir.path(), "", "allow_anonymous true\n") else { return };
    let url = broker.url();
    let collected = dir.path().join("fleet.jsonl");
    ok(&["fleet", "reports", "--broker", &url, "-o", collected.to_str().unwrap(), "--quiet", "300ms"]);
    // Columns pump-de, pump-nde, motor (a developing outer-race fault from 8 s), dead.
    let (_, four) = common::four_sensor_recording(dir.path(), "20", "0.6", "8");
    let mut gateway =
        Gateway::named(dir.path(), &url, "line-2", &["--sensor-per-channel", "--commission", "4s"]);
    let stream = std::fs::read(&four).unwrap();
    gateway.input.as_mut().unwrap().write_all(&stream).unwrap();
    gateway.input.as_mut().unwrap().flush().unwrap();
    // The alarm comes under its sensor's name; the dead sensor's fault under its own.
    let started = Instant::now();
    let reports = loop {
        let reports = collect_until(&url, &collected, 2);
        let alarmed = reports.iter().any(|r| r["sensor"] == "motor" && r["kind"] == "AlarmRaised");
        if alarmed || started.elapsed() > Duration::from_secs(60) {
            break reports;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let alarm = reports.iter().find(|r| r["kind"] == "AlarmRaised").expect("an alarm was published");
    assert_eq!(
        (&alarm["sensor"], &alarm["device"], &alarm["class"]),
        (&"motor".into(), &"line-2".into(), &"outer_race".into()),
        "{alarm}"
    );
    assert!(reports.iter().all(|r| r["sensor"].is_string()), "every report names its sensor: {reports:?}");
    assert!(!reports
        .iter()
        .any(|r| r["sensor"].as_str().is_some_and(|s| s.starts_with("pump")) && r["kind"] == "AlarmRaised"));
    assert!(reports.iter().any(|r| r["sensor"] == "dead" && r["kind"] == "SensorFault"), "{reports:?}");
    // Each sensor numbers its reports from 0: sequences repeat across sensors, and none
    // is taken for a duplicate of another sensor's.
    let firsts = reports.iter().filter(|r| r["sequence"] == 0).count();
    assert!(firsts >= 2, "{reports:?}");
    let status = status_until(&["--broker", &url], None, "line-2");
    assert!(status.contains("line-2"), "{status}");
    let marks = dir.path().join("line-2/sensors/motor/mqtt.next");
    assert!(marks.exists(), "each sensor keeps its own mark");
}

#[test]
fn a_bad_broker_url_or_site_is_refused_clearly() {
    let e = common::refused(&["fleet", "status", "--broker", "mqtts://b:8883"]);
    assert!(e.contains("needs the CA certificate") && e.contains("mqtts://b:8883"), "{e}");
    let e = common::refused(&["fleet", "reports", "--broker", "http://b", "-o", "/tmp/never.jsonl"]);
    assert!(e.contains("expected mqtt://"), "{e}");
    let e = common::refused(&[
        "serve",
        "--port",
        "/dev/null",
        "--state",
        "/tmp/never",
        "--pubkey",
        "k.pub",
        "--mqtt",
        "mqtt://b",
        "--site",
        "plant/1",
    ]);
    assert!(e.contains("`plant/1` cannot be a topic level"), "{e}");
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = common::refused(&["fleet", "status", "--broker", &format!("mqtt://127.0.0.1:{port}")]);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// The head of the built-in model as a `.vup` of `version`, signed with `key`.
fn signed_head(dir: &Path, key: &Path, version: u32) -> PathBuf {
    let path = dir.join(format!("head-{version}-{}.vup", key.file_name().unwrap().to_string_lossy()));
    ok(&["export-head", "-o", path.to_str().unwrap(), "--version", &version.to_string()]);
    ok(&["sign", "--key", key.to_str().unwrap(), path.to_str().unwrap()]);
    path
}

/// The outcome column of `device` in `vigil fleet push`'s table.
fn outcome(table: &str, device: &str) -> String {
    let line =
        table.lines().find(|l| l.starts_with(device)).unwrap_or_else(|| panic!("{device} missing:\n{table}"));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn an_update_fans_out_to_the_site_or_a_group_and_each_device_checks_it_as_over_serial() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = mosquitto(dir.path(), "", "allow_anonymous true\n") else { return };
    let url = broker.url();
    let mut a = Gateway::named(dir.path(), &url, "press-7", &["--group", "line-2"]);
    let mut b = Gateway::named(dir.path(), &url, "press-8", &[]);
    // A gateway starts serving once its input has begun.
    a.feed(dir.path(), 1, None, 5);
    b.feed(dir.path(), 1, None, 6);
    let key = dir.path().join("publisher");
    let started = Instant::now();
    while status_of(&url).lines().filter(|l| l.contains("plant-1")).count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "the gateways did not announce themselves");
        std::thread::sleep(Duration::from_millis(200));
    }
    let push = |file: &Path, extra: &[&str]| {
        let mut args = vec!["fleet", "push", "--broker", &url, "--site", "plant-1", "--timeout", "20s"];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        common::vigil(&args)
    };

    let good = signed_head(dir.path(), &key, 2);
    let o = push(&good, &[]);
    let (table, err) = common::text(&o);
    assert!(o.status.success(), "{table}\n{err}");
    assert_eq!(
        (outcome(&table, "press-7"), outcome(&table, "press-8")),
        ("applied".into(), "applied".into()),
        "{table}"
    );
    // The same update again: each device already runs it, byte for byte.
    let (table, _) = common::text(&push(&good, &[]));
    assert_eq!(
        (outcome(&table, "press-7"), outcome(&table, "press-8")),
        ("already".into(), "already".into()),
        "{table}"
    );

    // Signed with another key: every device refuses it, with the reason a serial push gets.
    ok(&["keygen", "-o", dir.path().join("stranger").to_str().unwrap()]);
    let forged = signed_head(dir.path(), &dir.path().join("stranger"), 3);
    let o = push(&forged, &[]);
    let (table, err) = common::text(&o);
    assert!(!o.status.success() && err.contains("2 of 2 device(s) did not apply"), "{table}\n{err}");
    assert!(table.contains("refused") && table.contains("signature does not verify"), "{table}");
    // Unsigned: refused before anything is published.
    let unsigned = dir.path().join("unsigned.vup");
    ok(&["export-head", "-o", unsigned.to_str().unwrap(), "--version", "3"]);
    assert!(common::refused(&[
        "fleet",
        "push",
        "--broker",
        &url,
        "--site",
        "plant-1",
        unsigned.to_str().unwrap()
    ])
    .contains("is unsigned"));

    // A group's update reaches its members only.
    let grouped = signed_head(dir.path(), &key, 3);
    let (table, err) = common::text(&push(&grouped, &["--group", "line-2"]));
    assert_eq!(outcome(&table, "press-7"), "applied", "{table}\n{err}");
    assert!(!table.lines().any(|l| l.starts_with("press-8")), "{table}");
    let started = Instant::now();
    loop {
        let status = status_of(&url);
        let head = |device: &str| {
            status
                .lines()
                .find(|l| l.contains(device))
                .and_then(|l| l.split_whitespace().nth(4))
                .map(str::to_owned)
        };
        if head("press-7").as_deref() == Some("3") && head("press-8").as_deref() == Some("2") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{status}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The fleet merge reads the devices' retained snapshots from the broker, checks and
    // signs them, and the merged head goes out the same way.
    let merged = dir.path().join("merged.vup");
    let said = ok(&[
        "fleet",
        "merge",
        "--broker",
        &url,
        "--site",
        "plant-1",
        "--key",
        key.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert!(
        said.contains("plant-1/press-7: head version 3") && said.contains("plant-1/press-8: head version 2"),
        "{said}"
    );
    assert!(said.contains("merged 2 snapshots into head version 4"), "{said}");
    let (table, err) = common::text(&push(&merged, &[]));
    assert_eq!(
        (outcome(&table, "press-7"), outcome(&table, "press-8")),
        ("applied".into(), "applied".into()),
        "{table}\n{err}"
    );
}

/// A certificate authority and a broker certificate for 127.0.0.1 signed by it, made with
/// openssl in `dir` under `name`; `None` when openssl is missing.
fn certificates(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let (ca_key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Vigil test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
    )?;
    let (cert, key) = issue(dir, name, "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\n")?;
    Some((dir.join(ca), cert, key))
}

/// A certificate for `subject` signed by the authority `certificates` made under `name`;
/// the certificate and its key.
fn issue(dir: &Path, name: &str, role: &str, subject: &str, extensions: &str) -> Option<(PathBuf, PathBuf)> {
    let (key, csr, cert, ext) = (
        format!("{name}-{role}.key"),
        format!("{name}-{role}.csr"),
        format!("{name}-{role}.pem"),
        format!("{name}-{role}.ext"),
    );
    let subject = format!("/CN={subject}");
    openssl(
        dir,
        &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr],
    )?;
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    )?;
    Some((dir.join(cert), dir.join(key)))
}

/// Runs openssl in `dir`; `None` when it is missing, a failed assertion when it fails.
fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    let o = Command::new("openssl").args(args).current_dir(dir).output().ok()?;
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    Some(())
}

#[test]
fn over_tls_the_broker_is_verified_against_the_given_authority() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = certificates(dir.path(), "plant") else {
        eprintln!("SKIPPED: MQTT over TLS (openssl is not installed)");
        return;
    };
    let Some((other_ca, _, _)) = certificates(dir.path(), "other") else { return };
    let listener =
        format!("cafile {}\ncertfile {}\nkeyfile {}\n", ca.display(), cert.display(), key.display());
    // Anonymous clients are refused: a user name and password are needed as well.
    let passwords = dir.path().join("passwd");
    std::fs::write(&passwords, "").unwrap();
    // mosquitto_passwd comes with the broker: without it, skip as the broker's tests do.
    if Mosquitto::installed().is_none() {
        let _ = mosquitto(dir.path(), "", "");
        return;
    }
    let made = Command::new("mosquitto_passwd")
        .args(["-b", passwords.to_str().unwrap(), "press-9", "s3cret"])
        .status();
    assert!(made.is_ok_and(|s| s.success()), "mosquitto_passwd failed");
    let auth = format!("allow_anonymous false\npassword_file {}\n", passwords.display());
    let Some(broker) = mosquitto(dir.path(), &listener, &auth) else { return };
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let ca_s = ca.to_str().unwrap();

    let mut gateway = Gateway::named_with_env(
        dir.path(),
        &url,
        "press-9",
        &["--ca-file", ca_s, "--username", "press-9"],
        ("VIGIL_MQTT_PASSWORD", "s3cret"),
    );
    gateway.feed(dir.path(), 1, None, 7);
    status_until(
        &["--broker", &url, "--ca-file", ca_s, "--username", "press-9"],
        Some(("VIGIL_MQTT_PASSWORD", "s3cret")),
        "press-9",
    );
    // Without the credentials, or with a wrong password, the broker refuses the client.
    let e = common::refused(&["fleet", "status", "--broker", &url, "--ca-file", ca_s]);
    assert!(e.contains(&format!("127.0.0.1:{}", broker.port())), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["fleet", "status", "--broker", &url, "--ca-file", ca_s, "--username", "press-9"])
        .env("VIGIL_MQTT_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success(), "a wrong password was accepted");
    // A broker whose certificate the given authority did not sign is refused.
    let e = common::refused(&["fleet", "status", "--broker", &url, "--ca-file", other_ca.to_str().unwrap()]);
    assert!(
        e.contains(&format!("127.0.0.1:{}", broker.port())) && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    let e = common::refused(&["fleet", "status", "--broker", &url]);
    assert!(e.contains("needs the CA certificate"), "{e}");
    let e = common::refused(&[
        "fleet",
        "status",
        "--broker",
        &url,
        "--ca-file",
        key.to_str().unwrap().replace(".key", ".csr").as_str(),
    ]);
    assert!(e.contains("not a PEM file") || e.contains("certificate"), "{e}");
}

#[test]
fn a_broker_that_requires_client_certificates_takes_only_one_its_authority_signed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = certificates(dir.path(), "plant") else {
        eprintln!("SKIPPED: MQTT with client certificates (openssl is not installed)");
        return;
    };
    let (client_cert, client_key) =
        issue(dir.path(), "plant", "press-4", "press-4", "extendedKeyUsage=clientAuth\n").unwrap();
    // A client certificate from another authority, as a device from elsewhere would hold.
    certificates(dir.path(), "other").unwrap();
    let (stranger_cert, stranger_key) =
        issue(dir.path(), "other", "press-5", "press-5", "extendedKeyUsage=clientAuth\n").unwrap();
    let listener = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let Some(broker) = mosquitto(dir.path(), &listener, "allow_anonymous false\n") else { return };
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let (ca_s, cert_s, key_s) =
        (ca.to_str().unwrap(), client_cert.to_str().unwrap(), client_key.to_str().unwrap());

    let mut gateway = Gateway::named(
        dir.path(),
        &url,
        "press-4",
        &["--ca-file", ca_s, "--client-cert", cert_s, "--client-key", key_s],
    );
    gateway.feed(dir.path(), 1, None, 7);
    let status = status_until(
        &["--broker", &url, "--ca-file", ca_s, "--client-cert", cert_s, "--client-key", key_s],
        None,
        "press-4",
    );
    assert!(status.contains("online"), "{status}");
    // Without a client certificate, or with one another authority signed, the broker
    // refuses the client.
    let e = common::refused(&["fleet", "status", "--broker", &url, "--ca-file", ca_s]);
    assert!(e.contains(&format!("127.0.0.1:{}", broker.port())), "{e}");
    let e = common::refused(&[
        "fleet",
        "status",
        "--broker",
        &url,
        "--ca-file",
        ca_s,
        "--client-cert",
        stranger_cert.to_str().unwrap(),
        "--client-key",
        stranger_key.to_str().unwrap(),
    ]);
    assert!(e.contains(&format!("127.0.0.1:{}", broker.port())), "{e}");
    // A certificate without its key is a usage error named before any connection.
    let e =
        common::refused(&["fleet", "status", "--broker", &url, "--ca-file", ca_s, "--client-cert", cert_s]);
    assert!(e.contains("--client-key"), "{e}");
}

#[test]
fn the_fleet_benchmark_runs_small_and_checks_what_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    // The benchmark starts its own broker; this only checks that mosquitto is there.
    let Some(_broker) = mosquitto(dir.path(), "", "allow_anonymous true\n") else { return };
    let said = ok(&[
        "fleet", "bench", "--agents", "5", "--run", "8s", "--cycle", "2s", "--outage", "2s", "--burst", "5",
    ]);
    // Each gateway scores its machine: 16 kHz with a hop of 1,024 is 15.6 windows a second.
    let windows: u64 = number_after(&said, "8 s of stream = ");
    assert!((5 * 120..=5 * 126).contains(&windows), "{said}");
    // Alarms are raised and cleared as the machines turn faulty and healthy again.
    let reports: u64 = number_after(&said, "windows, ");
    assert!(reports >= 5 * 2, "{said}");
    assert!(
        said.contains(&format!("5 of 5 gateways delivered every report once, in order ({reports} reports)")),
        "{said}"
    );
    assert!(said.contains("update to 5 devices: 5 applied, 5 run head version"), "{said}");
    assert!(said.contains("5 applied it exactly once"), "{said}");
    assert!(said.contains("update with bad signature: refused by 5 of 5"), "{said}");
    assert!(said.contains("update with older version: refused by 5 of 5"), "{said}");
}

/// The number that follows `after` in `text`.
fn number_after(text: &str, after: &str) -> u64 {
    let rest = &text[text.find(after).unwrap_or_else(|| panic!("{after:?} not in {text}")) + after.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}
