//! What the nameplate says of a machine, on every path that carries it: `vigil run`'s
//! options, the dataset manifest and the gateway config, and the shaft speed read from
//! the signal when nothing is given.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ok, refused, vigil};
use std::path::Path;

fn simulate(dir: &Path, name: &str, args: &[&str]) -> String {
    let out = dir.join(name).to_str().unwrap().to_string();
    let mut all = vec!["simulate", "-o", out.as_str(), "--seconds", "8"];
    all.extend_from_slice(args);
    ok(&all);
    out
}

/// The shaft speed `vigil run` reports in its summary, and whether it was read from the
/// signal.
fn shaft_line(stdout: &str) -> (f32, bool) {
    let line = stdout.lines().find(|l| l.starts_with("shaft speed: ")).unwrap_or_else(|| panic!("{stdout}"));
    let hz = line["shaft speed: ".len()..].split(' ').next().unwrap().parse().unwrap();
    (hz, line.contains("read from the signal"))
}

#[test]
fn run_reads_the_shaft_speed_from_the_signal_or_takes_the_one_given() {
    let dir = tempfile::tempdir().unwrap();
    for (shaft, fault) in [("47.3", "normal"), ("12.5", "inner-race"), ("150", "outer-race")] {
        let input = simulate(dir.path(), &format!("{shaft}.wav"), &["--shaft-hz", shaft, "--fault", fault]);
        let (hz, read) = shaft_line(&ok(&["run", "-i", &input]));
        let truth: f32 = shaft.parse().unwrap();
        assert!(read && (hz - truth).abs() / truth < 0.01, "{fault} at {shaft} Hz read as {hz} Hz");
    }
    let input = dir.path().join("47.3.wav");
    let input = input.to_str().unwrap();
    let said = ok(&["run", "-i", input, "--shaft-hz", "47", "--bearing", "6205"]);
    assert_eq!(shaft_line(&said), (47.0, false), "{said}");
    let json = ok(&["run", "-i", input, "--json"]);
    let summary: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    let hz = summary["summary"]["shaft_hz"].as_f64().unwrap();
    assert!((hz - 47.3).abs() < 0.47, "{summary}");
    assert!(summary["summary"]["shaft_hz_confidence"].as_f64().is_some(), "{summary}");
}

#[test]
fn impossible_kinematics_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let input = simulate(dir.path(), "s.wav", &[]);
    for (args, needle) in [
        (vec!["--shaft-hz=-3"], "not a positive speed"),
        (vec!["--shaft-hz", "-3"], "not a positive speed"),
        (vec!["--shaft-hz", "fast"], "is not a shaft speed in Hz"),
        (vec!["--bearing", "6205-XYZ"], "not a known designation"),
        (
            vec!["--bearing", "30,0.5,1.0"],
            "30 rolling elements of this diameter do not fit on the pitch circle",
        ),
        (vec!["--bearing", "9,39,7.9"], "as large as the pitch circle"),
        (vec!["--shaft-range", "200-2"], "is not a shaft speed range"),
    ] {
        let mut all = vec!["run", "-i", input.as_str()];
        all.extend_from_slice(&args);
        let stderr = refused(&all);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_manifest_carries_the_bearing_and_refuses_an_impossible_one() {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), "n.csv", &[]);
    simulate(dir.path(), "o.csv", &["--fault", "outer-race"]);
    simulate(dir.path(), "n2.csv", &["--seed", "2"]);
    simulate(dir.path(), "o2.csv", &["--fault", "outer-race", "--seed", "2"]);
    let write = |bearing: &str, speed: &str| {
        let m = dir.path().join("m.toml");
        let entry = |file: &str, label: &str, split: &str| {
            format!(
                "[[recording]]\npath = \"{file}\"\nlabel = \"{label}\"\nsplit = \"{split}\"\nspeed = {speed}\nbearing = \"{bearing}\"\n"
            )
        };
        let body = [
            entry("n.csv", "normal", "train"),
            entry("o.csv", "outer_race", "train"),
            entry("n2.csv", "normal", "test"),
            entry("o2.csv", "outer_race", "test"),
        ];
        std::fs::write(&m, body.join("\n")).unwrap();
        m.to_str().unwrap().to_string()
    };
    // The bearing comes from the manifest: no --bearing needed.
    let m = write("6205", "29.95");
    let said = ok(&["transfer-eval", "--data", &m, "--classes", "normal,outer_race", "--shots", "0"]);
    let rule = said.lines().find(|l| l.contains("envelope rule")).unwrap_or_else(|| panic!("{said}"));
    assert!(rule.contains('%'), "{rule}");
    let m = write("2,1,10", "29.95");
    let stderr = refused(&["transfer-eval", "--data", &m, "--classes", "normal,outer_race", "--shots", "0"]);
    assert!(
        stderr.contains("recording 1 (n.csv): bearing `2,1,10`") && stderr.contains("at least 3"),
        "{stderr}"
    );
    let m = write("6205", "-25.0");
    let stderr = refused(&["evaluate", "--data", &m]);
    assert!(
        stderr.contains("recording 1 (n.csv): speed: shaft speed -25 Hz is not a positive speed"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // One file written two ways is still one recording: it may not train and test.
    let m = write("6205", "29.95");
    let text = std::fs::read_to_string(&m).unwrap().replace("\"n2.csv\"", "\"./n.csv\"");
    std::fs::write(&m, text).unwrap();
    let stderr = refused(&["evaluate", "--data", &m]);
    assert!(stderr.contains("in split `train` there and `test` here"), "{stderr}");
}

#[test]
fn speed_eval_measures_the_estimate_on_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), "a.csv", &["--shaft-hz", "33.3"]);
    let m = dir.path().join("m.toml");
    std::fs::write(&m, "[[recording]]\npath = \"a.csv\"\nlabel = \"normal\"\nspeed = 33.3\n").unwrap();
    let said = ok(&["speed-eval", "--data", m.to_str().unwrap(), "--block", "2"]);
    assert!(said.contains("| 15-50 Hz | 4 | 100.0% | 100.0% | 0 |"), "{said}");
    let o = vigil(&["speed-eval", "--data", m.to_str().unwrap(), "--range", "1-x"]);
    assert!(!o.status.success());
}
