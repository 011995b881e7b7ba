//! `vigil bench`: microseconds per scored window, full window and streamed, f32 and int8,
//! tract side by side with ONNX Runtime, in one run.
//!
//! Every row runs in a child process of its own (`vigil bench --row NAME`), so each row's
//! peak memory is its own and no row warms another's caches. The rows score the same
//! simulated windows; the table says how far each row's classes and anomaly scores are
//! from tract's f32 full-window scores.
//!
//! A harness, not a library: `vigil bench` runs [`BenchArgs`]; it is not published.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vigil_runtime::model::VigilModel;
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::stream::peak_rss_bytes;
use vigil_runtime::windower::{Window, Windower};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

#[cfg(feature = "ort-peer")]
mod ort_peer;
mod sensors;

/// Measure microseconds per scored window on one core: tract full window and streamed
/// (only each hop's new samples through the backbone), f32 and int8, side by side with
/// ONNX Runtime on the same model and windows (built with `--features ort-peer`, as
/// `scripts/bench` does), plus several streams on several cores, peak memory of
/// `vigil run` and the binary size.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ONNX model with Vigil metadata [default: the built-in default model, bearing-cnn-v3;
    /// it cannot stream, so its streamed rows are "not measured": `--model
    /// models/bearing-cnn-v2.onnx` measures them on the streamable model].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Hop between scored windows, in samples [default: the window / 8].
    #[arg(long)]
    hop: Option<usize>,
    /// Streams scored at once, one thread each, for the multi-stream row.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Seconds of simulated signal each row scores (a quarter healthy, then outer race,
    /// inner race and ball faults).
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Passes over the signal per row; the median pass is reported.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// int8 model to compare [default: the model quantised here, with ranges from 256 of
    /// the bench's own windows].
    #[arg(long)]
    int8: Option<PathBuf>,
    /// Leave out the ONNX Runtime rows.
    #[arg(long)]
    no_peer: bool,
    /// Instead of the table, print tract's time per node of the model's plans (the full
    /// window, and the pulsed backbone at the hop when the model streams), to find where
    /// a backbone spends its time.
    #[arg(long)]
    profile: bool,
    /// Instead of the table, measure many sensors on one gateway: the backbone's time per
    /// window for each number of sensors (comma-separated; 1,4,16,64 when none is given),
    /// one tract call per window against one batch per hop, on two threads, and ONNX
    /// Runtime given the same batches; at the model's hop unless --hop is given.
    #[arg(long, value_delimiter = ',', num_args = 0..=1, default_missing_value = "1,4,16,64")]
    sensors: Option<Vec<usize>>,
    /// Print every row and the ratios as JSON lines.
    #[arg(long)]
    json: bool,
    /// Measure one row in this process (the parent runs each row this way).
    #[arg(long, hide = true)]
    row: Option<String>,
    /// The signal file of the parent run (f32le).
    #[arg(long, hide = true)]
    signal: Option<PathBuf>,
}

/// What one row measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RowResult {
    row: String,
    us_per_window: f64,
    windows: usize,
    peak_rss_bytes: Option<u64>,
    /// For the multi-stream row: throughput over one stream's, measured in the same process.
    scaling: Option<f64>,
    classes: Vec<usize>,
    scores: Vec<f32>,
    note: String,
}

impl RowResult {
    /// A row that scored `windows` windows in `seconds`, with their classes and scores.
    fn timed(seconds: f64, windows: usize, classes: Vec<usize>, scores: Vec<f32>, note: String) -> Self {
        RowResult {
            row: String::new(),
            us_per_window: seconds * 1e6 / windows.max(1) as f64,
            windows,
            peak_rss_bytes: None,
            scaling: None,
            classes,
            scores,
            note,
        }
    }
}

/// The CPU's model name and the vector extensions that matter to the kernels, from
/// /proc/cpuinfo (Linux), with the number of CPUs.
pub fn cpu_model() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return "unknown".into() };
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown".into());
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|g| g == *f))
        .collect();
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{name}, {cpus} CPU(s), {}", if has.is_empty() { "no AVX2".into() } else { has.join(" ") })
}

/// The rows, in the order of the table: (name, engine and form, how windows are scored).
const ROWS: &[(&str, &str, &str)] = &[
    ("tract-f32-full", "tract f32", "full window every hop"),
    ("tract-f32-streamed", "tract f32", "streamed (tract-pulse), new hop only"),
    ("tract-int8-full", "tract int8", "full window every hop"),
    ("tract-int8-streamed", "tract int8", "streamed (tract-pulse), new hop only"),
    ("ort-f32-full", "ONNX Runtime f32", "full window every hop"),
    ("ort-f32-chunked", "ONNX Runtime f32", "chunked: new hop + context"),
    ("ort-int8-full", "ONNX Runtime int8", "full window every hop"),
    ("ort-int8-chunked", "ONNX Runtime int8", "chunked: new hop + context"),
    ("tract-f32-streamed-multi", "tract f32", "streamed, N streams on N threads"),
];

impl BenchArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        if let Some(row) = &self.row {
            let result = self.measure_row(row)?;
            println!("{}", serde_json::to_string(&result)?);
            return Ok(());
        }
        self.run_all()
    }

    fn model_path(&self, dir: &Path) -> Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => {
                let p = dir.join("model.onnx");
                std::fs::write(&p, vigil_runtime::builtin::REFERENCE_MODEL)
                    .with_context(|| format!("writing {}", p.display()))?;
                Ok(p)
            }
        }
    }

    fn run_all(&self) -> Result<()> {
        let dir = tempfile::tempdir().context("cannot make a scratch folder for the bench")?;
        let model_path = self.model_path(dir.path())?;
        let model = VigilModel::load(&model_path)
            .with_context(|| format!("cannot load model {}", model_path.display()))?;
        let meta = model.metadata().clone();
        let hop = self.hop.unwrap_or(meta.window / 8);
        let signal = simulate(&meta, self.seconds);
        if self.profile {
            return print_profile(&model, &signal, hop);
        }
        if let Some(counts) = &self.sensors {
            if counts.contains(&0) {
                bail!("--sensors takes numbers of sensors of at least 1, such as 1,4,16,64");
            }
            let hop = self.hop.unwrap_or(meta.hop);
            eprintln!("vigil bench --sensors: {}; {}", model_path.display(), cpu_model());
            return sensors::print_sensors(
                &model_path,
                &model,
                &signal,
                hop,
                counts,
                self.passes,
                !self.no_peer,
            );
        }
        let signal_path = dir.path().join("signal.f32le");
        let bytes: Vec<u8> = signal.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&signal_path, bytes).with_context(|| format!("writing {}", signal_path.display()))?;
        let int8_path = match &self.int8 {
            Some(p) => p.clone(),
            None => {
                let p = dir.path().join("model-int8.onnx");
                quantise_here(&model_path, &model, &signal, hop, &p)?;
                p
            }
        };
        let f32_size = std::fs::metadata(&model_path).map(|m| m.len()).unwrap_or(0);
        let int8_size = std::fs::metadata(&int8_path).map(|m| m.len()).unwrap_or(0);
        let exe = std::env::current_exe().context("cannot find the vigil binary to run the rows")?;
        eprintln!(
            "vigil bench: {} s of signal at {} Hz, window {} samples, hop {hop}, {} pass(es) per row, one thread per stream",
            self.seconds, meta.sample_rate_hz, meta.window, self.passes
        );
        let mut results: Vec<Result<RowResult, String>> = Vec::new();
        for (name, _, _) in ROWS {
            if self.no_peer && name.starts_with("ort-") {
                results.push(Err("left out (--no-peer)".into()));
                continue;
            }
            eprint!("  {name} ...");
            let out = Command::new(&exe)
                .args(["bench", "--row", name, "--hop", &hop.to_string()])
                .args(["--streams", &self.streams.to_string(), "--passes", &self.passes.to_string()])
                .arg("--model")
                .arg(&model_path)
                .arg("--int8")
                .arg(&int8_path)
                .arg("--signal")
                .arg(&signal_path)
                .output()
                .with_context(|| format!("cannot run {}", exe.display()))?;
            let result = if out.status.success() {
                serde_json::from_slice::<RowResult>(&out.stdout)
                    .map_err(|e| format!("unreadable row output: {e}"))
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(err.lines().last().unwrap_or("failed").trim().trim_start_matches("error: ").to_string())
            };
            match &result {
                Ok(r) => eprintln!(" {:.1} us per window", r.us_per_window),
                Err(e) => eprintln!(" not measured: {e}"),
            }
            results.push(result);
        }
        let rss_full = run_rss(&exe, &model_path, &signal_path, &meta, hop, false);
        let rss_streamed = run_rss(&exe, &model_path, &signal_path, &meta, hop, true);
        let binary = binary_sizes(&exe, dir.path());
        let report = Report {
            hop,
            window: meta.window,
            rate: meta.sample_rate_hz,
            streams: self.streams,
            results,
            f32_size,
            int8_size,
            rss_full,
            rss_streamed,
            binary,
        };
        if self.json {
            report.print_json()
        } else {
            report.print_table();
            Ok(())
        }
    }

    fn measure_row(&self, row: &str) -> Result<RowResult> {
        let model_path = self.model.clone().context("--row needs --model")?;
        let signal_path = self.signal.clone().context("--row needs --signal")?;
        let int8 = row.contains("int8");
        let path = if int8 { self.int8.clone().context("--row needs --int8")? } else { model_path };
        let model =
            VigilModel::load(&path).with_context(|| format!("cannot load model {}", path.display()))?;
        let meta = model.metadata().clone();
        let hop = self.hop.unwrap_or(meta.window / 8);
        let bytes =
            std::fs::read(&signal_path).with_context(|| format!("reading {}", signal_path.display()))?;
        let signal: Vec<f32> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let windows = windows_of(&signal, &meta, hop)?;
        let passes = self.passes.max(1);
        let mut result = match row {
            "tract-f32-full" | "tract-int8-full" => time_scorer(&model, &windows, None, passes)?,
            "tract-f32-streamed" | "tract-int8-streamed" => time_scorer(&model, &windows, Some(hop), passes)?,
            "tract-f32-streamed-multi" => time_streams(&model, &windows, hop, passes, self.streams.max(1))?,
            #[cfg(feature = "ort-peer")]
            "ort-f32-full" | "ort-int8-full" | "ort-f32-chunked" | "ort-int8-chunked" => {
                ort_peer::time_rows(&path, &model, &windows, hop, passes, row.ends_with("chunked"))?
            }
            #[cfg(not(feature = "ort-peer"))]
            r if r.starts_with("ort-") => bail!(
                "ONNX Runtime is not built into this vigil; run scripts/bench, which builds it \
                 with --features ort-peer and points ORT_DYLIB_PATH at a pip-installed onnxruntime"
            ),
            other => bail!("unknown row `{other}`"),
        };
        result.row = row.to_string();
        result.peak_rss_bytes = peak_rss_bytes();
        Ok(result)
    }
}

/// The bench signal: a quarter each of healthy, outer-race, inner-race and ball-fault
/// vibration of the reference machine, at the model's rate and channels.
fn simulate(meta: &vigil_runtime::metadata::ModelMetadata, seconds: f64) -> Vec<f32> {
    let kinds = [FaultKind::Normal, FaultKind::OuterRace, FaultKind::InnerRace, FaultKind::Ball];
    let mut out = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let machine = MachineConfig::reference(meta.sample_rate_hz, meta.channels);
        let fault = FaultConfig { kind, severity: 0.6, onset_s: 0.0, growth_per_s: 0.0 };
        out.extend(Simulator::new(machine, fault, 100 + i as u64).generate(seconds / 4.0));
    }
    out
}

/// The windows of `signal` (interleaved channels at the model's rate) at `hop`.
fn windows_of(
    signal: &[f32],
    meta: &vigil_runtime::metadata::ModelMetadata,
    hop: usize,
) -> Result<Vec<Window>> {
    let mut windower =
        Windower::new(meta.channels, meta.sample_rate_hz, meta.sample_rate_hz, meta.window, hop)?;
    let mut windows = Vec::new();
    windower.push(signal, |w| windows.push(w));
    if windows.is_empty() {
        bail!("the bench signal is shorter than one window; raise --seconds");
    }
    Ok(windows)
}

/// Prints tract's time per node of the full-window plan and of the pulsed backbone, on
/// windows and hops from the middle of `signal`.
fn print_profile(model: &VigilModel, signal: &[f32], hop: usize) -> Result<()> {
    const RUNS: usize = 2000;
    let meta = model.metadata();
    let windows = windows_of(signal, meta, hop)?;
    let middle = &windows[windows.len() / 2].samples;
    let mut window = middle.clone();
    meta.normalise(&mut window);
    let print = |title: &str, nodes: &[vigil_runtime::profile::NodeTime]| {
        let total: f64 = nodes.iter().map(|n| n.us).sum();
        println!("{title}: {total:.1} µs per run (tract's plan, and the layer the runtime runs ahead of it in Rust), mean of {RUNS} runs\n");
        println!("| node | operator | µs | share |");
        println!("|---|---|---|---|");
        for n in nodes.iter().filter(|n| n.us >= 0.05) {
            println!(
                "| {} | {} | {:.2} | {:.1}% |",
                n.name,
                n.op,
                n.us,
                100.0 * n.us / total.max(f64::MIN_POSITIVE)
            );
        }
        println!();
    };
    let full = model.embedder()?.profile(&window, RUNS)?;
    print(&format!("full window ({} samples), f32", meta.window), &full);
    match vigil_runtime::streaming::StreamingEmbedder::new(model, hop) {
        Ok(mut streamer) => {
            let nodes = streamer.profile(middle, RUNS)?;
            print(&format!("pulsed backbone, one hop of {hop} samples, f32"), &nodes);
        }
        Err(e) => println!("pulsed backbone: not profiled: {e}"),
    }
    Ok(())
}

/// The median of `passes` timings of `pass`, in seconds.
fn median_seconds(passes: usize, mut pass: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(passes);
    for _ in 0..passes {
        let started = Instant::now();
        pass()?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Scores every window with the gateway's scorer, full window or streamed at `hop`.
fn time_scorer(
    model: &VigilModel,
    windows: &[Window],
    hop: Option<usize>,
    passes: usize,
) -> Result<RowResult> {
    let mut scorer = WindowScorer::new(model.clone(), 0)?;
    let mut note = String::new();
    if let Some(hop) = hop {
        let streamer = scorer.stream(hop)?;
        if let Some(why) = streamer.inexact_reason() {
            note = format!("approximate: {why}");
        }
    }
    let (mut classes, mut scores) = (Vec::new(), Vec::new());
    // Warm up: one pass unmeasured.
    score_all(&mut scorer, windows, &mut classes, &mut scores)?;
    let seconds = median_seconds(passes, || score_all(&mut scorer, windows, &mut classes, &mut scores))?;
    Ok(RowResult::timed(seconds, windows.len(), classes, scores, note))
}

fn score_all(
    scorer: &mut WindowScorer,
    windows: &[Window],
    classes: &mut Vec<usize>,
    scores: &mut Vec<f32>,
) -> Result<()> {
    classes.clear();
    scores.clear();
    for w in windows {
        let outcome = scorer.score(w)?;
        let s = outcome.scored.context("a finite window was not scored")?;
        classes.push(s.class_index);
        scores.push(s.anomaly);
    }
    Ok(())
}

/// Scores the windows as `streams` independent streams on as many threads, all sharing
/// one loaded model; compares the throughput with one stream measured just before.
fn time_streams(
    model: &VigilModel,
    windows: &[Window],
    hop: usize,
    passes: usize,
    streams: usize,
) -> Result<RowResult> {
    let one = time_scorer(model, windows, Some(hop), passes)?;
    let mut scorers = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut scorer = WindowScorer::new(model.clone(), 0)?;
        scorer.stream(hop)?;
        scorers.push(scorer);
    }
    let run_all = |scorers: &mut Vec<WindowScorer>| -> Result<()> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = scorers
                .iter_mut()
                .map(|scorer| {
                    scope.spawn(move || {
                        let (mut c, mut s) = (Vec::new(), Vec::new());
                        score_all(scorer, windows, &mut c, &mut s)
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow::anyhow!("a stream's thread panicked"))??;
            }
            Ok(())
        })
    };
    run_all(&mut scorers)?;
    let seconds = median_seconds(passes, || run_all(&mut scorers))?;
    let mut row = RowResult::timed(seconds, windows.len() * streams, one.classes, one.scores, String::new());
    row.scaling = Some(one.us_per_window / row.us_per_window);
    Ok(row)
}

/// Quantises the model with ranges from 256 of the bench's own windows.
fn quantise_here(
    model_path: &Path,
    model: &VigilModel,
    signal: &[f32],
    hop: usize,
    out: &Path,
) -> Result<()> {
    use vigil_train::quantize::{calibration_tensor, quantize, QuantizeOptions};
    let meta = model.metadata();
    let x = calibration_tensor(meta, &windows_of(signal, meta, hop)?, 256)?;
    let bytes = std::fs::read(model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let proto = vigil_runtime::onnx::decode_model(&bytes, model_path)?;
    let q = quantize(&proto, meta, &x, QuantizeOptions::default())?;
    std::fs::write(out, vigil_runtime::onnx::encode_model(&q.proto))
        .with_context(|| format!("writing {}", out.display()))
}

/// Peak memory of `vigil run` over the bench signal, full window or streamed.
fn run_rss(
    exe: &Path,
    model: &Path,
    signal: &Path,
    meta: &vigil_runtime::metadata::ModelMetadata,
    hop: usize,
    streamed: bool,
) -> Option<u64> {
    let mut cmd = Command::new(exe);
    cmd.arg("run").arg("--model").arg(model).arg("--input").arg(signal);
    cmd.args(["--format", "f32le", "--channels", &meta.channels.to_string()]);
    cmd.args(["--rate", &meta.sample_rate_hz.to_string(), "--hop", &hop.to_string(), "--json"]);
    if streamed {
        cmd.arg("--streamed");
    }
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.contains("\"summary\""))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["summary"]["peak_rss_bytes"].as_u64()
}

/// The binary's size as built, and stripped of symbols when `strip` is at hand.
fn binary_sizes(exe: &Path, dir: &Path) -> (u64, Option<u64>) {
    let size = std::fs::metadata(exe).map(|m| m.len()).unwrap_or(0);
    let stripped_path = dir.join("vigil-stripped");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(exe)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped_path).ok())
        .map(|m| m.len());
    (size, stripped)
}

struct Report {
    hop: usize,
    window: usize,
    rate: f64,
    streams: usize,
    results: Vec<Result<RowResult, String>>,
    f32_size: u64,
    int8_size: u64,
    rss_full: Option<u64>,
    rss_streamed: Option<u64>,
    binary: (u64, Option<u64>),
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

impl Report {
    fn get(&self, name: &str) -> Option<&RowResult> {
        ROWS.iter().position(|(n, _, _)| *n == name).and_then(|i| self.results[i].as_ref().ok())
    }

    /// Class agreement (%) and largest relative anomaly-score difference against tract's
    /// f32 full-window scores.
    fn agreement(&self, r: &RowResult) -> Option<(f64, f64)> {
        let reference = self.get("tract-f32-full")?;
        let n = reference.classes.len().min(r.classes.len());
        if n == 0 {
            return None;
        }
        let same = reference.classes.iter().zip(&r.classes).filter(|(a, b)| a == b).count();
        let worst = reference
            .scores
            .iter()
            .zip(&r.scores)
            .map(|(a, b)| f64::from((a - b).abs() / a.abs().max(1e-6)))
            .fold(0.0, f64::max);
        Some((100.0 * same as f64 / n as f64, worst))
    }

    /// The ratios the performance targets are stated in.
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        let us = |name: &str| self.get(name).map(|r| r.us_per_window);
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
        let best_peer =
            [us("ort-f32-chunked"), us("ort-int8-chunked")].into_iter().flatten().reduce(f64::min);
        let streamed = us("tract-f32-streamed");
        let fastest = |rows: &[&str]| rows.iter().filter_map(|r| us(r)).reduce(f64::min);
        let vigil_fastest =
            fastest(&["tract-f32-full", "tract-f32-streamed", "tract-int8-full", "tract-int8-streamed"]);
        let peer_fastest = fastest(&["ort-f32-full", "ort-f32-chunked", "ort-int8-full", "ort-int8-chunked"]);
        let int8_fastest = fastest(&["tract-int8-full", "tract-int8-streamed"]);
        let f32_fastest = fastest(&["tract-f32-full", "tract-f32-streamed"]);
        vec![
            (
                "Vigil's fastest way / ONNX Runtime's fastest way (throughput)".into(),
                ratio(peer_fastest, vigil_fastest),
            ),
            (
                "tract int8 / tract f32, each its fastest way (throughput)".into(),
                ratio(f32_fastest, int8_fastest),
            ),
            (
                "streamed tract f32 throughput / ONNX Runtime's best chunked".into(),
                ratio(best_peer, streamed),
            ),
            (
                "streamed tract f32 throughput / ONNX Runtime full window".into(),
                ratio(us("ort-f32-full"), streamed),
            ),
            (
                "full-window latency tract f32 / ONNX Runtime f32".into(),
                ratio(us("tract-f32-full"), us("ort-f32-full")),
            ),
            (
                format!("{} streams on {} threads / one stream (throughput)", self.streams, self.streams),
                self.get("tract-f32-streamed-multi").and_then(|r| r.scaling),
            ),
        ]
    }

    fn print_table(&self) {
        let hop_s = self.hop as f64 / self.rate;
        println!("\nCPU: {}", cpu_model());
        println!(
            "\nµs per scored window, one thread (window {} samples, hop {} = {:.1} ms at {} Hz):\n",
            self.window,
            self.hop,
            hop_s * 1e3,
            self.rate
        );
        println!(
            "| engine | how | µs/window | windows/s | real-time factor | peak RSS | classes as tract f32 | max score diff |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let mut footnotes: Vec<String> = Vec::new();
        for ((_, engine, how), result) in ROWS.iter().zip(&self.results) {
            let how = how.replace('N', &self.streams.to_string());
            match result {
                Ok(r) => {
                    let per_s = 1e6 / r.us_per_window;
                    let (agree, diff) = self
                        .agreement(r)
                        .map(|(a, d)| (format!("{a:.1}%"), format!("{d:.1e}")))
                        .unwrap_or_else(|| ("-".into(), "-".into()));
                    let note = if r.note.is_empty() { String::new() } else { format!(" ({})", r.note) };
                    println!(
                        "| {engine} | {how}{note} | {:.1} | {:.0} | {:.0}x | {} | {agree} | {diff} |",
                        r.us_per_window,
                        per_s,
                        per_s * hop_s,
                        r.peak_rss_bytes.map(mib).unwrap_or_else(|| "-".into()),
                    );
                }
                Err(e) => {
                    let k = footnotes.iter().position(|f| f == e).unwrap_or_else(|| {
                        footnotes.push(e.clone());
                        footnotes.len() - 1
                    });
                    println!("| {engine} | {how} | not measured ({}) | | | | | |", k + 1);
                }
            }
        }
        for (i, e) in footnotes.iter().enumerate() {
            println!("\n({}) {e}", i + 1);
        }
        println!("\nratios (above 1 means Vigil leads, except latency, where below 1 is better):");
        for (what, value) in self.ratios() {
            match value {
                Some(v) => println!("  {what}: {v:.2}"),
                None => println!("  {what}: not measured"),
            }
        }
        println!(
            "\nmodel files: f32 {} bytes, int8 {} bytes ({:.1}%)",
            self.f32_size,
            self.int8_size,
            100.0 * self.int8_size as f64 / self.f32_size.max(1) as f64
        );
        let rss = |v: Option<u64>| v.map(mib).unwrap_or_else(|| "not measured".into());
        println!(
            "peak RSS of `vigil run` over the bench signal: {} full window, {} streamed",
            rss(self.rss_full),
            rss(self.rss_streamed)
        );
        let (size, stripped) = self.binary;
        println!(
            "vigil binary: {} as built, {}",
            mib(size),
            stripped.map(|s| format!("{} stripped", mib(s))).unwrap_or_else(|| "strip not available".into())
        );
    }

    fn print_json(&self) -> Result<()> {
        for ((name, engine, how), result) in ROWS.iter().zip(&self.results) {
            let line = match result {
                Ok(r) => {
                    let agreement = self.agreement(r);
                    serde_json::json!({
                        "row": name, "engine": engine, "how": how, "us_per_window": r.us_per_window,
                        "windows_per_s": 1e6 / r.us_per_window,
                        "realtime_factor": 1e6 / r.us_per_window * self.hop as f64 / self.rate,
                        "peak_rss_bytes": r.peak_rss_bytes, "scaling": r.scaling, "note": r.note,
                        "class_agreement_pct": agreement.map(|a| a.0), "max_score_rel_diff": agreement.map(|a| a.1),
                    })
                }
                Err(e) => serde_json::json!({ "row": name, "engine": engine, "how": how, "error": e }),
            };
            println!("{line}");
        }
        let ratios: serde_json::Map<String, serde_json::Value> =
            self.ratios().into_iter().map(|(k, v)| (k, serde_json::json!(v))).collect();
        println!(
            "{}",
            serde_json::json!({
                "ratios": ratios, "cpu": cpu_model(), "hop": self.hop, "window": self.window, "rate_hz": self.rate,
                "f32_bytes": self.f32_size, "int8_bytes": self.int8_size,
                "run_peak_rss_bytes": { "full": self.rss_full, "streamed": self.rss_streamed },
                "binary_bytes": { "built": self.binary.0, "stripped": self.binary.1 },
            })
        );
        Ok(())
    }
}
