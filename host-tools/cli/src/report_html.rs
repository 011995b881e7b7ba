//! The field technician's report: one self-contained HTML file (inline CSS and SVG, no
//! script, no network) with the anomaly score over time, a table of reports and, for the
//! alarms, the spectrum and envelope spectrum of the window with bearing fault-frequency
//! markers.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use vigil_core::bearing::FaultOrders;
use vigil_core::report::{AnomalyReport, HealthStats, ReportKind, SpectrumBins};
use vigil_runtime::report_io::{bands_text, finding_label, finding_probability, health_of, kind_name};

/// Alarms shown with their spectra (the highest-scoring ones); the table lists every report.
pub const MAX_DETAILED_ALARMS: usize = 12;

/// The machine's characteristic frequencies, for the markers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineFrequencies {
    /// Shaft speed in Hz.
    pub shaft_hz: f32,
    /// BPFO, BPFI, BSF and FTF in Hz at that speed.
    pub faults: FaultOrders,
}

impl MachineFrequencies {
    /// The markers drawn on spectra: fault frequencies and the first three shaft harmonics.
    pub fn markers(&self) -> Vec<(f32, String)> {
        let f = self.faults;
        let mut m = vec![
            (f.bpfo, "BPFO".to_owned()),
            (f.bpfi, "BPFI".into()),
            (f.bsf, "BSF".into()),
            (f.ftf, "FTF".into()),
        ];
        m.extend((1..=3).map(|k| (k as f32 * self.shaft_hz, format!("{k}x"))));
        m
    }
}

/// What the report says besides the reports themselves.
#[derive(Debug, Clone)]
pub struct ReportContext {
    /// Heading of the page.
    pub title: String,
    /// Device facts, as (name, value) rows.
    pub device: Vec<(String, String)>,
    /// Class names by index.
    pub class_names: Vec<String>,
    /// The machine, when known, for fault-frequency markers.
    pub machine: Option<MachineFrequencies>,
    /// The machine's class, for the vibration-severity zones of the health trend.
    pub machine_class: MachineClass,
}

/// The machine classes of ISO 10816-1, whose vibration-severity zones (RMS velocity over
/// 10-1000 Hz) the health trend draws. ISO 20816-1 keeps the same kind of zones and leaves
/// the limits to each machine type's part; these are the general guide values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MachineClass {
    /// Small machines, up to 15 kW.
    #[value(name = "I")]
    I,
    /// Medium machines, 15-75 kW, or up to 300 kW on special foundations.
    #[default]
    #[value(name = "II")]
    II,
    /// Large machines on rigid foundations.
    #[value(name = "III")]
    III,
    /// Large machines on soft foundations.
    #[value(name = "IV")]
    IV,
}

impl MachineClass {
    /// The upper limits of zones A, B and C in mm/s RMS (zone D lies above the last).
    pub fn zone_limits(self) -> [f32; 3] {
        match self {
            MachineClass::I => [0.71, 1.8, 4.5],
            MachineClass::II => [1.12, 2.8, 7.1],
            MachineClass::III => [1.8, 4.5, 11.2],
            MachineClass::IV => [2.8, 7.1, 18.0],
        }
    }

    /// The zone (`A` to `D`) a velocity falls in, with what ISO 10816 says of it.
    pub fn zone(self, velocity_mm_s: f32) -> (&'static str, &'static str) {
        let [a, b, c] = self.zone_limits();
        if velocity_mm_s <= a {
            ("A", "newly commissioned machines")
        } else if velocity_mm_s <= b {
            ("B", "acceptable for unrestricted long-term operation")
        } else if velocity_mm_s <= c {
            ("C", "unsatisfactory for long-term continuous operation")
        } else {
            ("D", "severe enough to cause damage")
        }
    }

    /// The class's name as ISO 10816-1 writes it.
    pub fn name(self) -> &'static str {
        match self {
            MachineClass::I => "I",
            MachineClass::II => "II",
            MachineClass::III => "III",
            MachineClass::IV => "IV",
        }
    }
}

/// Renders the whole page.
pub fn render(reports: &[AnomalyReport], ctx: &ReportContext) -> Result<String> {
    let mut html = page_head(&ctx.title);
    device_sections(&mut html, "", reports, &ctx.device, ctx)?;
    html.push_str("</body></html>\n");
    Ok(html)
}

/// What the groups of a page of several are: the devices of a fleet (`vigil fleet
/// reports --html`) or the sensors of one gateway (`vigil report` on `vigil run
/// --sensor-per-channel --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// One group per `site/device`.
    Devices,
    /// One group per sensor.
    Sensors,
}

/// Renders the page of several devices or sensors: an overview with one row per group,
/// worst first (most alarms, then highest score), then each group's sections as
/// [`render`] gives them for one device.
pub fn render_groups(
    groups: &[(String, Vec<AnomalyReport>)],
    grouping: Grouping,
    ctx: &ReportContext,
) -> Result<String> {
    let mut html = page_head(&ctx.title);
    let alarms = |r: &[AnomalyReport]| r.iter().filter(|r| r.kind == ReportKind::AlarmRaised).count();
    let worst = |r: &[AnomalyReport]| r.iter().map(|r| r.score).fold(0.0f32, f32::max);
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&groups[a].1, &groups[b].1);
        alarms(rb).cmp(&alarms(ra)).then(worst(rb).total_cmp(&worst(ra)))
    });
    let (id, heading, noun) = match grouping {
        Grouping::Devices => ("fleet", "Fleet", "device"),
        Grouping::Sensors => ("sensors", "Sensors", "sensor"),
    };
    let _ = write!(
        html,
        "<section id=\"{id}\"><h2>{heading}</h2><table class=\"list\"><tr><th>{noun}</th><th>reports</th><th>alarms</th><th>highest score</th></tr>"
    );
    for (n, &i) in order.iter().enumerate() {
        let (name, reports) = &groups[i];
        let _ = write!(
            html,
            "<tr><td><a href=\"#d{n}-device\">{}</a></td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            escape(name),
            reports.len(),
            alarms(reports),
            worst(reports)
        );
    }
    html.push_str("</table></section>\n");
    for (n, &i) in order.iter().enumerate() {
        let (name, reports) = &groups[i];
        let mut rows = vec![(noun.to_owned(), name.clone())];
        rows.extend(ctx.device.iter().cloned());
        let _ = writeln!(html, "<h1 class=\"device\">{}</h1>", escape(name));
        device_sections(&mut html, &format!("d{n}-"), reports, &rows, ctx)?;
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn page_head(title: &str) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    html
}

/// One device's sections (facts, score plot, alarms, report table), their ids prefixed
/// with `prefix`.
fn device_sections(
    html: &mut String,
    prefix: &str,
    reports: &[AnomalyReport],
    device: &[(String, String)],
    ctx: &ReportContext,
) -> Result<()> {
    let _ = write!(html, "<section id=\"{prefix}device\"><h2>Device</h2><table>");
    for (k, v) in device {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    let alarms = reports.iter().filter(|r| r.kind == ReportKind::AlarmRaised).count();
    let faults = reports.iter().filter(|r| r.kind == ReportKind::SensorFault).count();
    let health: Vec<(&AnomalyReport, &HealthStats)> =
        reports.iter().filter_map(|r| health_of(r).map(|h| (r, h))).collect();
    let events: Vec<AnomalyReport> = reports.iter().filter(|r| health_of(r).is_none()).cloned().collect();
    let _ = writeln!(
        html,
        "<tr><th>reports</th><td>{} ({alarms} alarms, {faults} sensor faults, {} health records)</td></tr></table></section>",
        reports.len(),
        health.len()
    );

    if !health.is_empty() {
        health_section(html, prefix, &health, ctx)?;
    }

    let _ = write!(html, "<section id=\"{prefix}score\"><h2>Anomaly score over time</h2>");
    html.push_str(&score_plot(&events)?);
    html.push_str("<p class=\"note\">Score of each report against the stream time; the dashed line is the alarm threshold. Red: alarm raised, green: cleared, grey: sensor fault.</p></section>\n");

    let _ = write!(html, "<section id=\"{prefix}alarms\"><h2>Alarms</h2>");
    let mut detailed: Vec<&AnomalyReport> =
        reports.iter().filter(|r| r.kind == ReportKind::AlarmRaised && r.spectrum.is_some()).collect();
    detailed.sort_by(|a, b| b.score.total_cmp(&a.score));
    let shown = detailed.len().min(MAX_DETAILED_ALARMS);
    if detailed.len() > shown {
        let _ = write!(html, "<p class=\"note\">Spectra of the {shown} highest-scoring of {} alarms; every report is in the table below.</p>", detailed.len());
    }
    if ctx.machine.is_none() {
        html.push_str("<p class=\"note\">No machine given: fault-frequency markers need the shaft speed and bearing (<code>--shaft-hz</code>, <code>--bearing</code>).</p>");
    }
    let mut detailed = detailed[..shown].to_vec();
    detailed.sort_by_key(|r| r.sequence);
    for r in detailed {
        html.push_str(&alarm_section(prefix, r, ctx)?);
    }
    if shown == 0 {
        html.push_str("<p>No alarm with a spectrum snapshot.</p>");
    }
    html.push_str("</section>\n");

    let _ = write!(html, "<section id=\"{prefix}reports\"><h2>Reports</h2><table class=\"list\"><tr><th>#</th><th>time (s)</th><th>kind</th><th>class</th><th>p</th><th>score</th><th>threshold</th><th>head</th><th>top bands</th></tr>");
    if !health.is_empty() {
        let _ = write!(
            html,
            "<p class=\"note\">The {} health records are in the trend above and in the CSV and JSON exports, not in this table.</p>",
            health.len()
        );
    }
    for r in &events {
        let class = finding_label(r, &ctx.class_names);
        let p = finding_probability(r).map_or_else(|| "-".to_string(), |p| format!("{p:.2}"));
        let _ = write!(
            html,
            "<tr class=\"{}\"><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{p}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            kind_name(&r.kind), r.sequence, r.stream_time_s, kind_name(&r.kind), escape(&class), r.score, r.threshold, r.head_version, escape(&bands_text(r))
        );
    }
    html.push_str("</table></section>\n");
    Ok(())
}

/// The health trend: the latest levels with their ISO zone, then velocity with the zone
/// bands and the score's median and maximum, over time.
fn health_section(
    html: &mut String,
    prefix: &str,
    health: &[(&AnomalyReport, &HealthStats)],
    ctx: &ReportContext,
) -> Result<()> {
    let class = ctx.machine_class;
    let _ = write!(html, "<section id=\"{prefix}trend\"><h2>Health trend</h2>");
    if let Some((r, h)) = health.last() {
        let (zone, meaning) = class.zone(h.velocity_mm_s);
        let _ = write!(
            html,
            "<p>Latest record (#{}, {}): velocity <b>{:.2} mm/s RMS</b> (10-1000 Hz), zone <b>{zone}</b> for an ISO 10816 class {} machine ({meaning}); acceleration {:.3} g RMS, peak {:.2} g, kurtosis {:.1}; anomaly score median {:.2}, max {:.2} (threshold {:.2}).</p>",
            r.sequence,
            time_text(r.stream_time_s),
            h.velocity_mm_s,
            class.name(),
            h.rms_g,
            h.peak_g,
            h.kurtosis,
            r.score,
            h.score_max,
            r.threshold
        );
    }
    html.push_str(&trend_plot(health, class)?);
    let [a, b, c] = class.zone_limits();
    let _ = writeln!(
        html,
        "<p class=\"note\">One point per health record against stream time. Top: RMS velocity over 10-1000 Hz with the ISO 10816-1 zones of a class {} machine (A up to {a} mm/s, B up to {b}, C up to {c}, D above; choose the class with <code>--machine-class</code>). Bottom: the anomaly score's median (blue) and maximum (red) over each record's period; the dashed line is the alarm threshold.</p></section>",
        class.name()
    );
    Ok(())
}

/// A stream time as people read it: seconds, hours or days.
fn time_text(seconds: f64) -> String {
    if seconds < 7200.0 {
        format!("{seconds:.0} s")
    } else if seconds < 2.0 * 86_400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("day {:.1}", seconds / 86_400.0)
    }
}

fn trend_plot(health: &[(&AnomalyReport, &HealthStats)], class: MachineClass) -> Result<String> {
    let span = health.iter().map(|(r, _)| r.stream_time_s).fold(1.0f64, f64::max);
    let (scale, unit) = if span < 7200.0 {
        (1.0, "s")
    } else if span < 2.0 * 86_400.0 {
        (3600.0, "h")
    } else {
        (86_400.0, "days")
    };
    let t = |r: &AnomalyReport| (r.stream_time_s / scale) as f32;
    let t_max = (span / scale) as f32 * 1.02;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH * 2, HEIGHT * 2)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(HEIGHT);
        let limits = class.zone_limits();
        let v_max = health
            .iter()
            .map(|(_, h)| h.velocity_mm_s)
            .filter(|v| v.is_finite())
            .fold(limits[2] * 1.3, f32::max);
        let x_desc = format!("stream time ({unit})");
        let mut chart = linear_axes(&top, t_max, v_max, &x_desc, "velocity (mm/s RMS)")?;
        let zones = [
            (0.0, limits[0], RGBColor(200, 235, 200)),
            (limits[0], limits[1], RGBColor(230, 245, 200)),
            (limits[1], limits[2], RGBColor(255, 230, 190)),
            (limits[2], v_max, RGBColor(255, 205, 205)),
        ];
        chart
            .draw_series(
                zones
                    .iter()
                    .map(|&(lo, hi, colour)| Rectangle::new([(0.0, lo), (t_max, hi)], colour.filled())),
            )
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                health.iter().map(|(r, h)| (t(r), h.velocity_mm_s.min(v_max))),
                &BLACK,
            ))
            .map_err(plot_error)?;

        let s_max = health
            .iter()
            .map(|(r, h)| h.score_max.max(r.threshold))
            .filter(|v| v.is_finite())
            .fold(1.0f32, f32::max)
            * 1.2;
        let mut chart = linear_axes(&bottom, t_max, s_max, &x_desc, "anomaly score")?;
        chart
            .draw_series(DashedLineSeries::new(
                health.iter().map(|(r, _)| (t(r), r.threshold.min(s_max))),
                6,
                4,
                ShapeStyle::from(&BLACK).stroke_width(1),
            ))
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(health.iter().map(|(r, h)| (t(r), h.score_max.min(s_max))), &RED))
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(health.iter().map(|(r, _)| (t(r), r.score.min(s_max))), &BLUE))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(format!("<div class=\"trend\">{svg}</div>"))
}

/// A chart on `area` from 0 to `x_max` and 0 to `y_max`, its axes labelled.
fn linear_axes<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    x_max: f32,
    y_max: f32,
    x_desc: &str,
    y_desc: &str,
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf32, plotters::coord::types::RangedCoordf32>,
    >,
> {
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f32..x_max, 0f32..y_max)
        .map_err(plot_error)?;
    chart.configure_mesh().disable_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_error)?;
    Ok(chart)
}

fn alarm_section(prefix: &str, r: &AnomalyReport, ctx: &ReportContext) -> Result<String> {
    let class = finding_label(r, &ctx.class_names);
    let mut html = String::new();
    let _ = write!(
        html,
        "<article class=\"alarm\" id=\"{prefix}alarm-{}\"><h3>Alarm #{} at {:.2} s: {} (score {:.1}, threshold {:.1})</h3><div class=\"plots\">",
        r.sequence, r.sequence, r.stream_time_s, escape(&class), r.score, r.threshold
    );
    let markers = ctx.machine.map(|m| m.markers()).unwrap_or_default();
    if let Some(s) = &r.spectrum {
        html.push_str(&spectrum_plot(&s.spectrum, "Spectrum", &markers)?);
        html.push_str(&spectrum_plot(&s.envelope, "Envelope spectrum", &markers)?);
    }
    html.push_str("</div><table class=\"probs\">");
    for (i, p) in r.probabilities.iter().enumerate() {
        let name = ctx.class_names.get(i).map_or("?", String::as_str);
        let _ = write!(
            html,
            "<tr><th>{}</th><td><div class=\"bar\" style=\"width:{:.0}px\"></div></td><td>{:.1}%</td></tr>",
            escape(name),
            p * 200.0,
            p * 100.0
        );
    }
    html.push_str("</table><ul class=\"bands\">");
    for b in &r.top_bands {
        let _ =
            write!(html, "<li>{:.0}-{:.0} Hz: {:+.1} dB above normal</li>", b.low_hz, b.high_hz, b.excess_db);
    }
    html.push_str("</ul></article>\n");
    Ok(html)
}

const WIDTH: u32 = 560;
const HEIGHT: u32 = 260;

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw a plot: {e:?}")
}

fn score_plot(reports: &[AnomalyReport]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH * 2, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let t_max = reports.iter().map(|r| r.stream_time_s as f32).fold(1.0f32, f32::max);
        let y_max =
            reports.iter().map(|r| r.score.max(r.threshold)).filter(|v| v.is_finite()).fold(1.0f32, f32::max)
                * 1.5;
        let y_min = 0.1f32;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f32..t_max * 1.02, (y_min..y_max).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("stream time (s)")
            .y_desc("anomaly score")
            .draw()
            .map_err(plot_error)?;
        let mut thresholds: Vec<(f32, f32)> =
            reports.iter().map(|r| (r.stream_time_s as f32, r.threshold)).collect();
        if let (Some(first), Some(last)) = (thresholds.first().copied(), thresholds.last().copied()) {
            thresholds.insert(0, (0.0, first.1));
            thresholds.push((t_max * 1.02, last.1));
        }
        chart
            .draw_series(DashedLineSeries::new(thresholds, 6, 4, ShapeStyle::from(&BLACK).stroke_width(1)))
            .map_err(plot_error)?;
        for (kind, colour) in [
            (ReportKind::AlarmRaised, RED),
            (ReportKind::AlarmCleared, GREEN),
            (ReportKind::SensorFault, RGBColor(128, 128, 128)),
        ] {
            let points = reports.iter().filter(|r| r.kind == kind).map(|r| {
                Circle::new((r.stream_time_s as f32, r.score.clamp(y_min, y_max)), 3, colour.filled())
            });
            chart.draw_series(points).map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn spectrum_plot(bins: &SpectrumBins, title: &str, markers: &[(f32, String)]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let max_hz = bins.bin_hz * bins.levels.len() as f32;
        let top = bins.top_db + 3.0;
        let floor = bins.top_db - 60.0;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0f32..max_hz, floor..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("Hz")
            .y_desc("dB")
            .x_labels(6)
            .y_labels(5)
            .draw()
            .map_err(plot_error)?;
        let line = (0..bins.levels.len()).map(|i| (bins.centre_hz(i), bins.db(i).max(floor)));
        chart.draw_series(LineSeries::new(line, BLUE.stroke_width(1))).map_err(plot_error)?;
        for (k, (hz, label)) in markers.iter().filter(|(hz, _)| *hz > 0.0 && *hz < max_hz).enumerate() {
            let colour = if label.ends_with('x') { RGBColor(120, 120, 120) } else { RGBColor(200, 60, 0) };
            chart
                .draw_series(DashedLineSeries::new([(*hz, floor), (*hz, top)], 3, 3, colour.stroke_width(1)))
                .map_err(plot_error)?;
            let y = top - 4.0 - (k % 3) as f32 * 6.0;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*hz, y),
                    ("sans-serif", 11).into_font().color(&colour),
                )))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc}\
h3{font-size:1em}table{border-collapse:collapse}th,td{padding:2px 8px;text-align:left;font-size:.9em}\
table.list tr:nth-child(even){background:#f4f4f4}tr.AlarmRaised td{color:#b00}.plots{display:flex;flex-wrap:wrap;gap:8px}\
.bar{height:10px;background:#36c}.note{color:#666;font-size:.85em}article.alarm{border-top:1px dashed #ccc;margin-top:1em}";
