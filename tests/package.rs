//! The Debian package: built from the tested binary, unpacked into a throwaway root, its
//! systemd unit verified, and the packaged agent started from the packaged config.

#![allow(clippy::unwrap_used)]

mod common;

use common::pty::Link;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// The binary the package installs: the gateway build without the trainer, which
/// `scripts/package-deb` (run by `scripts/test-all` before the tests) leaves in
/// target/gateway; the tested full build where it has not run.
fn gateway_binary() -> PathBuf {
    let lean = repo().join("target/gateway/vigil");
    if lean.exists() {
        lean
    } else {
        eprintln!("note: no target/gateway/vigil (run scripts/package-deb); packaging the full build");
        PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
    }
}

/// Builds the package around the gateway binary and unpacks it; `None` without dpkg.
fn unpacked(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if !have("dpkg-deb") {
        eprintln!("SKIPPED: Debian package tests (no dpkg-deb)");
        return None;
    }
    let out = run(Command::new(repo().join("scripts/package-deb")).args([
        "--binary",
        gateway_binary().to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]));
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(deb.exists() && deb.extension().is_some_and(|e| e == "deb"), "{deb:?}");
    let root = dir.join("root");
    run(Command::new("dpkg-deb").args(["-x", deb.to_str().unwrap(), root.to_str().unwrap()]));
    Some((deb, root))
}

#[test]
fn the_packaged_gateway_build_serves_runs_and_reports_but_does_not_train() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, root)) = unpacked(dir.path()) else { return };
    let vigil = root.join("usr/bin/vigil");
    let size = std::fs::metadata(&vigil).unwrap().len();
    // The full build, stripped as the package strips its binary.
    let full_copy = dir.path().join("vigil-full");
    std::fs::copy(env!("CARGO_BIN_EXE_vigil"), &full_copy).unwrap();
    if have("strip") {
        run(Command::new("strip").arg(&full_copy));
    }
    let full = std::fs::metadata(&full_copy).unwrap().len();
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!("packaged gateway vigil: {:.1} MiB; the full build stripped: {:.1} MiB", mib(size), mib(full));
    if gateway_binary() == Path::new(env!("CARGO_BIN_EXE_vigil")) {
        return;
    }
    for command in ["serve", "run", "status", "reports", "report", "push", "label", "demo"] {
        let out = Command::new(&vigil).args([command, "--help"]).output().unwrap();
        assert!(out.status.success(), "vigil {command} --help: {}", String::from_utf8_lossy(&out.stderr));
    }
    let demo = dir.path().join("demo");
    let out = Command::new(&vigil).args(["demo", "--out", demo.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("ALARM"), "{stdout}");
    let report = Command::new(&vigil)
        .args(["report", "--from", demo.join("reports.jsonl").to_str().unwrap()])
        .args(["--html", dir.path().join("r.html").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    for command in ["pretrain", "fine-tune", "quantize", "bench"] {
        let out = Command::new(&vigil).args([command, "--data", "x.toml"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "vigil {command} ran in the gateway build");
        assert!(stderr.contains("needs the full build"), "vigil {command}: {stderr}");
    }
    // Leaving the trainer out must show in the size (candle and the quantiser are gone).
    assert!(size < full, "packaged {size} bytes, full build {full} bytes");
}

#[test]
fn the_package_installs_the_binary_model_unit_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let Some((deb, root)) = unpacked(dir.path()) else { return };
    for file in [
        "usr/bin/vigil",
        "usr/share/vigil/models/bearing-cnn-v3.onnx",
        "lib/systemd/system/vigil@.service",
        "etc/vigil/vigil.toml",
        "var/lib/vigil",
    ] {
        assert!(root.join(file).exists(), "{file} missing from the package");
    }
    let fields = run(Command::new("dpkg-deb").args(["-f", deb.to_str().unwrap(), "Package", "Architecture"]));
    let fields = String::from_utf8_lossy(&fields.stdout);
    assert!(fields.contains("Package: vigil") && fields.contains("Architecture: amd64"), "{fields}");
    let conffiles = run(Command::new("dpkg-deb").args(["-I", deb.to_str().unwrap(), "conffiles"]));
    assert_eq!(String::from_utf8_lossy(&conffiles.stdout).trim(), "/etc/vigil/vigil.toml");

    let unit = std::fs::read_to_string(root.join("lib/systemd/system/vigil@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/vigil serve --config /etc/vigil/%i.toml"), "{unit}");
    if have("systemd-analyze") {
        // Verify an instance of the template inside the unpacked root, where
        // /usr/bin/vigil exists, with the host's targets and slices beside it for the
        // unit's default dependencies.
        let units = root.join("lib/systemd/system");
        std::fs::copy(units.join("vigil@.service"), units.join("vigil@vigil.service")).unwrap();
        for entry in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.ends_with(".target") || name.ends_with(".slice")) && !units.join(&*name).exists() {
                let _ = std::fs::copy(entry.path(), units.join(&*name));
            }
        }
        let o = Command::new("systemd-analyze")
            .args([
                "verify",
                &format!("--root={}", root.display()),
                "/lib/systemd/system/vigil@vigil.service",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && !err.contains("vigil@"), "systemd-analyze verify: {err}");
    } else {
        eprintln!("SKIPPED: systemd-analyze verify (no systemd-analyze)");
    }
    unit_runs_with_least_privilege(&unit, &root.join("lib/systemd/system/vigil@.service"));
    let postinst = run(Command::new("dpkg-deb").args(["-I", deb.to_str().unwrap(), "postinst"]));
    let postinst = String::from_utf8_lossy(&postinst.stdout);
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains("adduser vigil dialout"),
        "{postinst}"
    );
}

/// The unit's sandboxing: the settings themselves, and systemd's own rating of them
/// (`systemd-analyze security`, where it can run offline) at most 4.0, "OK" or better.
fn unit_runs_with_least_privilege(unit: &str, template: &Path) {
    for setting in [
        "User=vigil",
        "SupplementaryGroups=dialout",
        "StateDirectory=vigil",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "DevicePolicy=closed",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}:\n{unit}");
    }
    if !have("systemd-analyze") {
        eprintln!(
            "SKIPPED: systemd-analyze security (no systemd-analyze); the settings were checked in the unit"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("vigil@vigil.service");
    std::fs::copy(template, &instance).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=40", "--no-pager", instance.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let Some(line) = out.lines().find(|l| l.contains("Overall exposure level")) else {
        eprintln!("SKIPPED: systemd-analyze security gave no rating offline ({err}); the settings were checked in the unit");
        return;
    };
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in `{line}`"));
    eprintln!("systemd-analyze security: {}", line.trim());
    assert!(o.status.success() && exposure <= 4.0, "exposure {exposure} above 4.0:\n{out}\n{err}");
}

#[test]
fn the_packaged_agent_starts_from_its_config_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, root)) = unpacked(dir.path()) else { return };
    let vigil = root.join("usr/bin/vigil");
    let key = dir.path().join("publisher");
    run(Command::new(&vigil).args(["keygen", "-o", key.to_str().unwrap()]));
    let link = Link::new(None);
    // The packaged config, pointed at this throwaway root, a pty and a temporary state.
    let config = std::fs::read_to_string(root.join("etc/vigil/vigil.toml"))
        .unwrap()
        .replace("/usr/share/vigil", &root.join("usr/share/vigil").display().to_string())
        .replace("/dev/ttyS1", &link.device_port)
        .replace("/var/lib/vigil", &dir.path().join("state").display().to_string())
        .replace("/etc/vigil/publisher.pub", &format!("{}.pub", key.display()))
        .replace("# name = \"press-7\"", "name = \"packaged\"");
    let config_path = dir.path().join("vigil.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut agent = Command::new(&vigil)
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        let o = Command::new(&vigil)
            .args(["status", "--port", &link.host_port, "--timeout-ms", "300", "--retries", "0"])
            .output()
            .unwrap();
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        if let Some(exit) = agent.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(agent.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the packaged agent exited with {exit}: {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the packaged agent did not answer");
    };
    eprintln!("the packaged agent answered after {:.1} s", started.elapsed().as_secs_f64());
    let _ = agent.kill();
    let _ = agent.wait();
    drop(link);
    assert!(status.contains("device   packaged") && status.contains("head     version 1"), "{status}");

    // A mistyped key is named with its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(&config_path).unwrap().replace("baud = ", "baudrate = "))
        .unwrap();
    let o = Command::new(&vigil).args(["serve", "--config", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown field `baudrate`") && err.contains("line 8"),
        "{err}"
    );
}
