//! Running the `vigil` binary from the end-to-end tests.
// Each test file uses the helpers it needs.
#![allow(dead_code)]

pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `vigil` with `args`.
pub fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil")).args(args).output().expect("vigil binary runs")
}

/// Standard output and standard error as text.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `vigil` and expects success; returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let o = vigil(args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "vigil {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Runs `vigil` and expects failure; returns its standard error.
pub fn refused(args: &[&str]) -> String {
    let o = vigil(args);
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success(), "vigil {args:?} should fail:\n{stdout}");
    stderr
}

/// Where tests keep what they measured or rendered (`target/test-artefacts`).
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artefacts");
    std::fs::create_dir_all(&dir).expect("target/test-artefacts can be created");
    dir
}

/// Columns of the simulated CSV files `names` in `dir` side by side, plus a dead sensor,
/// as `dir/out`.
pub fn four_sensors(dir: &Path, names: &[&Path], out_name: &str) -> PathBuf {
    let columns: Vec<Vec<String>> = names
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("the simulated recording reads");
            text.lines().filter(|l| !l.starts_with('#')).skip(1).map(str::to_owned).collect()
        })
        .collect();
    let mut out = String::from("# sample_rate_hz=16000\npump-de,pump-nde,motor,dead\n");
    for i in 0..columns[0].len() {
        let row: Vec<&str> = columns.iter().map(|c| c[i].as_str()).collect();
        out.push_str(&format!("{},0.0\n", row.join(",")));
    }
    let path = dir.join(out_name);
    std::fs::write(&path, out).expect("the four-sensor stream is written");
    path
}

/// A four-channel recording of `seconds` at 16 kHz (`four.csv` in `dir`), columns
/// `pump-de` (healthy), `pump-nde` (healthy, another speed), `motor` (an outer-race fault
/// of `severity` from `onset` seconds) and `dead` (a flat sensor); also returns the
/// healthy recording of `pump-de` alone.
pub fn four_sensor_recording(dir: &Path, seconds: &str, severity: &str, onset: &str) -> (PathBuf, PathBuf) {
    let simulate = |name: &str, args: &[&str]| {
        let out = dir.join(name);
        let path = out.to_str().expect("a UTF-8 temporary path");
        ok(&[&["simulate", "-o", path, "--seconds", seconds][..], args].concat());
        out
    };
    let healthy = simulate("a.csv", &["--seed", "1"]);
    let other = simulate("b.csv", &["--seed", "2", "--shaft-hz", "45"]);
    let fault = simulate(
        "c.csv",
        &["--seed", "3", "--fault", "outer-race", "--severity", severity, "--onset", onset],
    );
    let four = four_sensors(dir, &[&healthy, &other, &fault], "four.csv");
    (healthy, four)
}
