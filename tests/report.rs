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
    write_jsonl(&jsonl, &many, &[], &names).unwrap();
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

/// A week of one-minute health records of a pump whose outer race degrades slowly from
/// day 2: each minute is one window of the simulated machine at that minute's severity,
/// scored by the default model in the gateway's pipeline with its durable store (a full
/// week of signal would take hours to simulate; one window a minute is what a record of
/// that minute is made of at the least).
#[test]
fn a_simulated_week_of_slow_degradation_shows_its_trend_and_renders() {
    use vigil_runtime::pipeline::Pipeline;
    use vigil_runtime::windower::Window;
    use vigil_sim::{FaultConfig, FaultKind, Simulator};

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let model = vigil_runtime::builtin::load_model(None).unwrap();
    let meta = model.metadata().clone();
    let store = vigil_runtime::stream::open_store(&state).unwrap();
    let mut pipeline = Pipeline::new(model, Some(store)).unwrap();
    pipeline.set_health_every(Some(std::time::Duration::from_secs(60))).unwrap();
    let machine = MachineConfig::reference(meta.sample_rate_hz, meta.channels);
    let fault = FaultConfig {
        kind: FaultKind::OuterRace,
        severity: 0.0,
        onset_s: 2.0 * 86_400.0,
        growth_per_s: 0.6 / (5.0 * 86_400.0),
    };
    let minutes = 7 * 24 * 60;
    for minute in 0..minutes {
        let t = minute as f64 * 60.0;
        let now = FaultConfig { severity: fault.severity_at(t), onset_s: 0.0, growth_per_s: 0.0, ..fault };
        let kind = if now.severity > 0.0 { now } else { FaultConfig::healthy() };
        let mut sim = Simulator::new(machine.clone(), kind, minute as u64);
        let samples = sim.generate(meta.window as f64 / meta.sample_rate_hz);
        pipeline.process(&Window::new(samples, minute as u64, t + 60.0)).unwrap();
    }
    let store_bytes = std::fs::metadata(pipeline.store().unwrap().path()).unwrap().len();
    drop(pipeline);
    let reports = vigil_runtime::store::ReportStore::read_all(&state).unwrap();
    let health: Vec<&AnomalyReport> =
        reports.iter().filter(|r| matches!(r.kind, ReportKind::Health(_))).collect();
    assert!(health.len() >= minutes - 2, "{} health records for {minutes} minutes", health.len());
    let record_bytes = postcard::to_allocvec(health[health.len() / 2]).unwrap().len() + 8;
    eprintln!(
        "a week of one-minute health records: {} records, {record_bytes} bytes each in the store ({} KiB); \
         the store with the alarms: {store_bytes} bytes",
        health.len(),
        health.len() * record_bytes / 1024
    );
    assert!(record_bytes <= 128, "a health record takes {record_bytes} bytes");
    // The trend is in the records: the last day's scores and kurtosis stand well above the first's.
    let day = |d: usize| &health[d * 1440..(d * 1440 + 1440).min(health.len())];
    let median = |rs: &[&AnomalyReport]| {
        let mut s: Vec<f32> = rs.iter().map(|r| r.score).collect();
        s.sort_by(f32::total_cmp);
        s[s.len() / 2]
    };
    let kurtosis = |rs: &[&AnomalyReport]| {
        rs.iter()
            .map(|r| match r.kind {
                ReportKind::Health(h) => h.kurtosis,
                _ => 0.0,
            })
            .sum::<f32>()
            / rs.len() as f32
    };
    let (first, last) = (day(0), day(6));
    assert!(median(last) > 3.0 * median(first), "score {} -> {}", median(first), median(last));
    assert!(kurtosis(last) > kurtosis(first) + 1.0, "kurtosis {} -> {}", kurtosis(first), kurtosis(last));

    let jsonl = dir.path().join("week.jsonl");
    write_jsonl(&jsonl, &reports, &[], &meta.class_names).unwrap();
    let (html, csv) = (dir.path().join("week.html"), dir.path().join("week.csv"));
    ok(&[
        "report",
        "--from",
        jsonl.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--machine-class",
        "III",
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Health trend") && page.contains("class III machine"), "no trend section");
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().filter(|l| l.contains(",Health,")).count(), health.len());
    let size = page.len();
    let Some(r) = render_in_chromium(&html, &artefacts().join("report-week.png")) else { return };
    assert!(r.console.is_empty(), "console messages: {:?}", r.console);
    assert!(r.dom.contains("id=\"trend\""), "the trend section did not render");
    assert!(r.dom.contains("<div class=\"trend\"><svg"), "the trend plot did not render");
    // The trend comes above the alarm details.
    assert!(r.dom.find("id=\"trend\"") < r.dom.find("id=\"alarms\""));
    let empty = dir.path().join("empty.html");
    std::fs::write(&empty, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let Some(baseline) = render_in_chromium(&empty, &dir.path().join("empty.png")) else { return };
    let page_seconds = r.seconds - baseline.seconds;
    eprintln!("a week's HTML: {size} bytes, {page_seconds:.2} s to open beyond an empty page");
    assert!(page_seconds < 2.0, "the page took {page_seconds:.2} s to open");
}
