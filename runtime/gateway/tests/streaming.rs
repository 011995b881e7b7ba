//! Streamed scoring of the shipped streamable model (bearing-cnn-v2): only each window's
//! newest hop runs through the backbone; its frames are the full-window frames, and its
//! scores track full-window scores. A model with padded convolutions (bearing-cnn-v1) is
//! refused: they reach past a window's edges.

#![allow(clippy::unwrap_used)]

mod common;

use common::{signal, streamable_model, v1_model};
use std::path::Path;
use vigil_core::normalise::{Centre, Normalisation, Scaling};
use vigil_runtime::model::VigilModel;
use vigil_runtime::onnx;
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::streaming::StreamingEmbedder;
use vigil_runtime::windower::Windower;

/// The common test signal with an offset and an amplitude that drift, so per-window
/// centring and scaling change from window to window.
fn drifting_signal(n: usize) -> Vec<f32> {
    signal(n, 1)
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let t = i as f32 / 16_000.0;
            0.5 + 0.1 * t + (1.0 + 0.6 * (t * 1.3).sin()) * x
        })
        .collect()
}

/// The streamable model with its normalisation replaced by a fixed one (no centring, divide by
/// 1): every sample is normalised alike, so streaming is exact where no frame reaches past
/// a window's edge, which for the unpadded backbone is every frame.
fn streamable_model_with_fixed_normalisation() -> VigilModel {
    let model = streamable_model();
    let bytes = std::fs::read(model.path()).unwrap();
    let mut proto = onnx::decode_model(&bytes, model.path()).unwrap();
    let mut meta = onnx::read_metadata(&proto).unwrap();
    meta.normalisation = Normalisation { centre: Centre::None, scaling: Scaling::Fixed(1.0) };
    onnx::write_metadata(&mut proto, &meta);
    VigilModel::from_bytes(&onnx::encode_model(&proto), Path::new("<fixed normalisation>")).unwrap()
}

#[test]
fn every_frame_of_the_streamable_backbone_streams_exactly() {
    let model = streamable_model_with_fixed_normalisation();
    let meta = model.metadata().clone();
    let mut full = model.embedder().unwrap();
    let x = drifting_signal(16_000 * 3);
    for hop in [meta.window / 8, meta.window / 4, meta.window / 2] {
        let mut streamer = StreamingEmbedder::new(&model, hop).unwrap();
        assert!(streamer.exact(), "hop {hop}: {:?}", streamer.inexact_reason());
        assert_eq!((streamer.edge_frames(), streamer.delay_samples()), (0, 0));
        let mut compared = 0;
        for (k, chunk) in x.chunks_exact(hop).enumerate() {
            let Some(streamed) = streamer.push(chunk).unwrap() else {
                assert!((k + 1) * hop < meta.window, "no embedding after a whole window");
                continue;
            };
            let end = (k + 1) * hop;
            let mut w = x[end - meta.window..end].to_vec();
            meta.normalise(&mut w);
            let reference = full.run(&w).unwrap();
            let size = reference.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            let worst = streamed.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4 * size, "hop {hop}, window ending at {end}: off by {worst} of {size}");
            compared += 1;
        }
        assert_eq!(compared, (x.len() - meta.window) / hop + 1);
    }
}

#[test]
fn the_streamable_model_streams_with_per_hop_normalisation() {
    let model = streamable_model();
    let streamer = StreamingEmbedder::new(&model, model.metadata().window / 8).unwrap();
    assert_eq!((streamer.edge_frames(), streamer.delay_samples()), (0, 0));
    assert!(!streamer.exact());
    let why = streamer.inexact_reason().unwrap();
    assert!(why.contains("normalised by the window it completes"), "{why}");
}

/// A window's class and anomaly score, when it was scored.
type Scored = Option<(usize, f32)>;

/// Scores of every window of `x` at `hop` by a full-window and a streamed scorer.
fn scored_both_ways(model: &VigilModel, x: &[f32], hop: usize) -> Vec<(Scored, Scored)> {
    let meta = model.metadata().clone();
    let mut windower = Windower::new(1, 16_000.0, meta.sample_rate_hz, meta.window, hop).unwrap();
    let mut windows = Vec::new();
    windower.push(x, |w| windows.push(w));
    let mut full = WindowScorer::new(model.clone(), 0).unwrap();
    let mut streamed = WindowScorer::new(model.clone(), 0).unwrap();
    streamed.stream(hop).unwrap();
    let pick = |s: Option<vigil_runtime::scorer::WindowScore>| s.map(|s| (s.class_index, s.anomaly));
    windows
        .iter()
        .map(|w| (pick(full.score(w).unwrap().scored), pick(streamed.score(w).unwrap().scored)))
        .collect()
}

#[test]
fn streamed_scores_track_full_window_scores_and_restart_exactly_after_a_sensor_fault() {
    let model = streamable_model();
    let meta = model.metadata().clone();
    let hop = meta.window / 8;
    let mut x = drifting_signal(16_000 * 6);
    // A dropout of NaN samples: the windows over it are sensor faults, and the streamer
    // restarts from the first clean window after it, which it normalises whole.
    x[40_000..40_100].iter_mut().for_each(|v| *v = f32::NAN);
    let scores = scored_both_ways(&model, &x, hop);
    let over_dropout =
        (0..scores.len()).filter(|k| k * hop < 40_100 && k * hop + meta.window > 40_000).count();
    assert_eq!(scores.iter().filter(|(a, b)| a.is_none() && b.is_none()).count(), over_dropout);
    let pairs: Vec<((usize, f32), (usize, f32))> = scores.iter().filter_map(|(a, b)| a.zip(*b)).collect();
    assert_eq!(pairs.len() + over_dropout, scores.len(), "one scorer skipped a window the other scored");
    let rel = |(a, b): &((usize, f32), (usize, f32))| (a.1 - b.1).abs() / a.1.abs().max(1e-6);
    // The first window of the stream and the first after the dropout are scored whole.
    let restart = scores.iter().position(|(a, _)| a.is_none()).unwrap() + over_dropout;
    for k in [0, restart] {
        let (a, b) = (scores[k].0.unwrap(), scores[k].1.unwrap());
        assert_eq!(a.0, b.0);
        assert!(rel(&(a, b)) < 1e-4, "window {k}: {a:?} full, {b:?} streamed");
    }
    let agree = pairs.iter().filter(|(a, b)| a.0 == b.0).count() as f64 / pairs.len() as f64;
    let mut diffs: Vec<f32> = pairs.iter().map(rel).collect();
    diffs.sort_by(f32::total_cmp);
    let median = diffs[diffs.len() / 2];
    assert!(agree >= 0.95, "classes agree on {:.1}% of windows", 100.0 * agree);
    assert!(median < 0.05, "median relative anomaly difference {median}");
}

#[test]
fn a_hop_off_the_backbone_stride_is_refused_with_the_hop_to_use() {
    let model = streamable_model();
    let err = StreamingEmbedder::new(&model, 300).unwrap_err().to_string();
    assert!(err.contains("hop 300 is not a multiple of the backbone's stride of 128"), "{err}");
    assert!(err.contains("use a hop of 256"), "{err}");
    let err = StreamingEmbedder::new(&model, 0).unwrap_err().to_string();
    assert!(err.contains("between 1 and the model's window"), "{err}");
}

#[test]
fn a_padded_model_has_edge_frames_and_is_refused_by_the_scorer() {
    let model = v1_model();
    let streamer = StreamingEmbedder::new(&model, 256).unwrap();
    assert_eq!((streamer.edge_frames(), streamer.delay_samples()), (14, 896));
    assert!(streamer.inexact_reason().unwrap().contains("14 of 16 frames reach past the window's edge"));
    let mut scorer = WindowScorer::new(model, 0).unwrap();
    let err = scorer.stream(256).unwrap_err().to_string();
    assert!(err.contains("look 896 samples ahead"), "{err}");
}
