//! The technician's HTML report: what it shows, its size, and that it renders in a real
//! browser (headless Chromium) without console errors.

#![allow(clippy::unwrap_used)]

mod common;

use common::{artefacts, ok, vigil};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vigil_core::report::{AnomalyReport, ReportKind};
use vigil_runtime::report_io::{read_jsonl, write_jsonl};
use vigil_sim::MachineConfig;

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// What Chromium did with a page.
struct Rendered {
    /// Console messages the page produced.
    console: Vec<String>,
    /// The DOM after load.
    dom: String,
    /// Wall time of the screenshot run, browser start included.
    seconds: f64,
}

/// One browser at a time, so timings are not shared with another test's browser.
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn render_in_chromium(page: &Path, screenshot: &Path) -> Option<Rendered> {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: headless Chromium tests (no /usr/bin/chromium; scripts/test-all installs it)");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let shot_arg = format!("--screenshot={}", screenshot.display());
    let started = Instant::now();
    let shot = Command::new(&chromium)
        .args(common)
        .args([
            profile_arg.as_str(),
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
            &shot_arg,
            &url,
        ])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(screenshot.exists(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    let console = String::from_utf8_lossy(&shot.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let dom = Command::new(&chromium)
        .args(common)
        .args([profile_arg.as_str(), "--dump-dom", &url])
        .output()
        .unwrap();
    Some(Rendered { console, dom: String::from_utf8_lossy(&dom.stdout).into_owned(), seconds })
}

#[test]
fn the_console_check_catches_a_page_that_logs_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>")
        .unwrap();
    let Some(r) = render_in_chromium(&page, &dir.path().join("broken.png")) else { return };
    assert!(r.console.iter().any(|l| l.contains("boom")), "{:?}", r.console);
}

#[test]
fn the_demo_report_marks_bpfo_on_the_dominant_envelope_peak_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let said = ok(&["demo", "--out", out.to_str().unwrap()]);
    let html_path = out.join("report.html");
    assert!(
        said.contains(&format!("Technician's report (open in a browser): {}", html_path.display())),
        "{said}"
    );

    let machine = MachineConfig::reference(16_000.0, 1);
    let shaft_hz = machine.shaft_hz as f32;
    let bpfo = machine.bearing.fault_orders().at_shaft_hz(shaft_hz).bpfo;
    let (reports, names) = read_jsonl(&out.join("reports.jsonl")).unwrap();
    let alarm = reports
        .iter()
        .find(|r| r.kind == ReportKind::AlarmRaised && names[usize::from(r.class_index)] == "outer_race")
        .expect("an outer-race alarm");
    let envelope = &alarm.spectrum.as_ref().expect("alarm reports carry spectra").envelope;
    let peak = envelope.peak_from(shaft_hz / 2.0).unwrap();
    let peak_hz = envelope.centre_hz(peak);
    assert!(
        (peak_hz - bpfo).abs() <= envelope.bin_hz,
        "dominant envelope peak at {peak_hz:.1} Hz, BPFO at {bpfo:.1} Hz (bins of {:.1} Hz)",
        envelope.bin_hz
    );

    let html = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: no script, no stylesheet link, nothing fetched (SVG namespace URIs are names).
    for fetch in ["<script", "<link", "src=", "href=", "url("] {
        assert!(!html.contains(fetch), "the page holds `{fetch}`");
    }
    let envelope_svg = html.split("Envelope spectrum").nth(1).unwrap();
    assert!(envelope_svg.contains("\nBPFO\n</text>"), "no BPFO marker on the envelope spectrum");

    let shot = artefacts().join("demo-report.png");
    let Some(r) = render_in_chromium(&html_path, &shot) else { return };
    assert!(r.console.is_empty(), "console messages: {:?}", r.console);
    // The score plot, then a spectrum and an envelope spectrum per alarm.
    let alarms = reports.iter().filter(|r| r.kind == ReportKind::AlarmRaised).count();
    assert_eq!(r.dom.matches("<svg").count(), 1 + 2 * alarms, "plots missing from the rendered page");
    assert!(r.dom.contains("id=\"alarm-"));
}

/// A pull of 1,000 reports, half of them alarms with spectra.
fn thousand_reports(template: &AnomalyReport) -> Vec<AnomalyReport> {
    (0..1000u64)
        .map(|i| {
            let mut r = template.clone();
            r.sequence = i;
            r.stream_time_s = i as f64 * 3.6;
            r.score = 9.5 + (i % 37) as f32;
            if i % 2 == 1 {
                r.kind = ReportKind::AlarmCleared;
                r.spectrum = None;
            }
            r
        })
        .collect()
}

#[test]
fn a_1000_report_pull_stays_under_2_mb_and_opens_in_under_2_s() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    ok(&["demo", "--out", out.to_str().unwrap()]);
    let (reports, names) = read_jsonl(&out.join("reports.jsonl")).unwrap();
    let alarm = reports.iter().find(|r| r.kind == ReportKind::AlarmRaised).unwrap();
    let many = thousand_reports(alarm);
    let jsonl = dir.path().join("pulled.jsonl");
    write_jsonl(&jsonl, &many, &names).unwrap();
    let (html, csv, json) = (dir.path().join("r.html"), dir.path().join("r.csv"), dir.path().join("r.jsonl"));
    ok(&[
        "report",
        "--from",
        jsonl.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--shaft-hz",
        "29.95",
        "--bearing",
        "9,7.94,39.04",
    ]);
    let size = std::fs::metadata(&html).unwrap().len();
    assert!(size < 2_000_000, "HTML of 1,000 reports is {size} bytes");
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 1001);
    let back = read_jsonl(&json).unwrap().0;
    for (a, b) in back.iter().zip(&many) {
        assert_eq!(a, b, "JSON export round-trips");
    }
    assert_eq!(back.len(), many.len());

    // The browser's own start-up, measured on an empty page in the same run, is not the page's.
    let empty = dir.path().join("empty.html");
    std::fs::write(&empty, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let Some(baseline) = render_in_chromium(&empty, &dir.path().join("empty.png")) else { return };
    let Some(r) = render_in_chromium(&html, &artefacts().join("report-1000.png")) else { return };
    let page_seconds = r.seconds - baseline.seconds;
    eprintln!(
        "1,000-report HTML: {size} bytes; Chromium took {:.2} s for it and {:.2} s for an empty page: {page_seconds:.2} s for the page",
        r.seconds, baseline.seconds
    );
    assert!(r.console.is_empty(), "console messages: {:?}", r.console);
    assert!(page_seconds < 2.0, "the page took {page_seconds:.2} s to open");
    let detailed = vigil::report_html::MAX_DETAILED_ALARMS;
    assert_eq!(r.dom.matches("<svg").count(), 1 + 2 * detailed);
    assert_eq!(r.dom.matches("<tr class=").count(), 1000);
}

#[test]
fn bad_report_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let o = vigil(&["report", "--from", missing.to_str().unwrap(), "--html", "x.html"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("missing.jsonl"), "{err}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"sequence\": 1}\n").unwrap();
    let o = vigil(&[
        "report",
        "--from",
        bad.to_str().unwrap(),
        "--html",
        dir.path().join("x.html").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bad.jsonl line 1"), "{err}");
    let o = vigil(&["report", "--from", bad.to_str().unwrap(), "--html", "x.html", "--shaft-hz", "30"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--bearing"));
}
