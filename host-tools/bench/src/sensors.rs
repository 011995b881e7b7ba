//! `vigil bench --sensors`: many sensors on one gateway. For each number of sensors, the
//! backbone's time per window when every sensor's window is its own call of tract, when
//! the windows of all sensors at one hop go through tract as one batch, and the batched
//! form over two threads; beside them ONNX Runtime given the same windows, one call each
//! and batched, on one thread. From the fastest form: the CPU one sensor costs at the
//! model's hop and how many sensors one core keeps in real time.

use super::{median_seconds, windows_of};
use anyhow::Result;
use std::path::Path;
use vigil_runtime::model::VigilModel;

/// Windows each measurement embeds per pass, at least (whole rounds of all sensors).
const WINDOWS_PER_PASS: usize = 1024;

/// The largest batch the bench gives tract or ONNX Runtime: 64 windows in one call of
/// bearing-cnn-v3 measured 0.66x the speed of one call per window (its activations leave
/// the cache); batches of 16 measured 0.91-1.17x in tract, within the run-to-run spread.
const MAX_BATCH: usize = 16;

/// The batch for `n` sensors: the largest divisor of `n` up to [`MAX_BATCH`].
fn batch_for(n: usize) -> usize {
    (1..=n.min(MAX_BATCH)).rev().find(|b| n.is_multiple_of(*b)).unwrap_or(1)
}

/// One number of sensors: µs per window of each form (None where not measured).
struct Line {
    sensors: usize,
    /// Windows per call in the batched forms.
    batch: usize,
    tract_single: f64,
    tract_batched: f64,
    tract_two_threads: Option<f64>,
    ort_single: Result<f64, String>,
    ort_batched: Result<f64, String>,
}

/// The normalised windows sensor `i` of `n` scores in round `r`: the bench signal's
/// windows taken in turn, so every sensor sees other windows.
fn round_windows<'a>(windows: &'a [Vec<f32>], n: usize, r: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
    (0..n).map(move |i| windows[(r * n + i) % windows.len()].as_slice())
}

/// Median seconds per window over `passes` passes of `rounds` rounds of `n` sensors,
/// embedding each round with `embed` (which takes the round's windows).
fn time_rounds(
    windows: &[Vec<f32>],
    n: usize,
    passes: usize,
    mut embed: impl FnMut(&mut dyn Iterator<Item = &[f32]>) -> Result<()>,
) -> Result<f64> {
    let rounds = WINDOWS_PER_PASS.div_ceil(n);
    // One unmeasured round warms the plan's buffers.
    embed(&mut round_windows(windows, n, 0))?;
    let seconds = median_seconds(passes, || {
        for r in 0..rounds {
            embed(&mut round_windows(windows, n, r))?;
        }
        Ok(())
    })?;
    Ok(seconds * 1e6 / (rounds * n) as f64)
}

/// Embeds each round in batches of `batch` windows through `embed_batch` (`batch`
/// divides the number of sensors, so every batch is full).
fn batched<'a>(
    batch: usize,
    buffer: &'a mut Vec<f32>,
    mut embed_batch: impl FnMut(&[f32]) -> Result<Vec<f32>> + 'a,
) -> impl FnMut(&mut dyn Iterator<Item = &[f32]>) -> Result<()> + 'a {
    move |round| {
        let mut in_batch = 0;
        buffer.clear();
        for w in round {
            buffer.extend_from_slice(w);
            in_batch += 1;
            if in_batch == batch {
                embed_batch(buffer)?;
                buffer.clear();
                in_batch = 0;
            }
        }
        Ok(())
    }
}

/// tract on two threads, each embedding half of the sensors in batches.
fn tract_two_threads(model: &VigilModel, windows: &[Vec<f32>], n: usize, passes: usize) -> Result<f64> {
    let half = n / 2;
    let batch = batch_for(half);
    let mut embedders = [model.batch_embedder(batch)?, model.batch_embedder(batch)?];
    let rounds = WINDOWS_PER_PASS.div_ceil(n);
    let mut pass = || -> Result<()> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = embedders
                .iter_mut()
                .enumerate()
                .map(|(t, embedder)| {
                    scope.spawn(move || -> Result<()> {
                        let mut buffer = Vec::new();
                        let mut embed = batched(batch, &mut buffer, |b| Ok(embedder.run_batch(b)?));
                        for r in 0..rounds {
                            embed(&mut round_windows(windows, n, r).skip(t * half).take(half))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
        })
    };
    pass()?;
    let seconds = median_seconds(passes, pass)?;
    Ok(seconds * 1e6 / (rounds * n) as f64)
}

/// Measures every count of `counts` and prints the table.
pub(crate) fn print_sensors(
    model_path: &Path,
    model: &VigilModel,
    signal: &[f32],
    hop: usize,
    counts: &[usize],
    passes: usize,
    peer: bool,
) -> Result<()> {
    let meta = model.metadata();
    let windows: Vec<Vec<f32>> = windows_of(signal, meta, hop)?
        .into_iter()
        .map(|w| {
            let mut samples = w.samples;
            meta.normalise(&mut samples);
            samples
        })
        .collect();
    let passes = passes.max(1);
    let mut lines = Vec::new();
    for &n in counts {
        eprint!("  {n} sensor(s) ...");
        let mut single = model.embedder()?;
        let tract_single = time_rounds(&windows, n, passes, |round| {
            for w in round {
                single.run(w)?;
            }
            Ok(())
        })?;
        let batch = batch_for(n);
        let mut buffer = Vec::new();
        let mut embedder = model.batch_embedder(batch)?;
        let tract_batched =
            time_rounds(&windows, n, passes, batched(batch, &mut buffer, |b| Ok(embedder.run_batch(b)?)))?;
        let tract_two_threads = if n >= 2 && n.is_multiple_of(2) {
            Some(tract_two_threads(model, &windows, n, passes)?)
        } else {
            None
        };
        let (ort_single, ort_batched) = if peer {
            (
                ort(model_path, model, &windows, n, 1, passes),
                ort(model_path, model, &windows, n, batch, passes),
            )
        } else {
            (Err("left out (--no-peer)".to_string()), Err("left out (--no-peer)".to_string()))
        };
        eprintln!(" done");
        lines.push(Line {
            sensors: n,
            batch,
            tract_single,
            tract_batched,
            tract_two_threads,
            ort_single,
            ort_batched,
        });
    }
    let hop_s = hop as f64 / meta.sample_rate_hz;
    println!(
        "Sensors on one gateway: the backbone's µs per window (median of {passes} passes; window {} samples at \
         {} Hz, one window per sensor every {hop} samples = {:.1} ms)\n",
        meta.window,
        meta.sample_rate_hz,
        hop_s * 1e3
    );
    println!(
        "| sensors | batch | tract, one call per window | tract, batched | batch gain | tract batched, 2 threads \
         (throughput vs 1 thread's best) | ONNX Runtime, one call per window | ONNX Runtime, batched | Vigil / \
         ONNX Runtime, each at its best on one thread |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let show = |r: &Result<f64, String>| match r {
        Ok(us) => format!("{us:.1}"),
        Err(e) => format!("not measured: {e}"),
    };
    for l in &lines {
        let tract_best = l.tract_single.min(l.tract_batched);
        let ort_best = match (&l.ort_single, &l.ort_batched) {
            (Ok(a), Ok(b)) => Some(a.min(*b)),
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => Some(*a),
            _ => None,
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}x | {} | {} | {} | {} |",
            l.sensors,
            l.batch,
            l.tract_single,
            l.tract_batched,
            l.tract_single / l.tract_batched,
            l.tract_two_threads.map_or("-".into(), |t| format!("{t:.1} ({:.2}x)", tract_best / t)),
            show(&l.ort_single),
            show(&l.ort_batched),
            ort_best.map_or("-".into(), |o| format!("{:.2}", tract_best / o)),
        );
    }
    println!();
    if let Some(l) = lines.iter().find(|l| l.sensors == 16).or(lines.last()) {
        let best = l.tract_single.min(l.tract_batched);
        let form = if l.tract_batched < l.tract_single { "batched" } else { "one call per window" };
        let share = best * 1e-6 / hop_s;
        println!(
            "At {} sensors, tract {form}: {best:.1} µs per window, {:.2}% of one core per sensor, {:.1}% for all \
             {} (the backbone; the head, the score and windowing add the difference between the main table's \
             tract-f32-full row and its backbone)",
            l.sensors,
            100.0 * share,
            100.0 * share * l.sensors as f64,
            l.sensors
        );
        println!(
            "{}-Hz sensors one core keeps in real time (backbone only): {}",
            meta.sample_rate_hz,
            (hop_s / (best * 1e-6)).floor()
        );
    }
    Ok(())
}

/// ONNX Runtime's µs per window for `n` sensors in batches of `batch`.
#[cfg(feature = "ort-peer")]
fn ort(
    path: &Path,
    model: &VigilModel,
    windows: &[Vec<f32>],
    n: usize,
    batch: usize,
    passes: usize,
) -> Result<f64, String> {
    let run = || -> Result<f64> {
        let embed = super::ort_peer::batch_embedder(path, model, batch)?;
        let mut buffer = Vec::new();
        time_rounds(windows, n, passes, batched(batch, &mut buffer, embed))
    };
    run().map_err(|e| e.to_string())
}

/// Without the peer built in: not measured, and why.
#[cfg(not(feature = "ort-peer"))]
fn ort(_: &Path, _: &VigilModel, _: &[Vec<f32>], _: usize, _: usize, _: usize) -> Result<f64, String> {
    Err("ONNX Runtime is not built into this vigil (scripts/bench builds it)".into())
}
