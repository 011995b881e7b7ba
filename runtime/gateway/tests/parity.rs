//! The tract backbone cut at the embedding node, followed by the Rust head, must give the
//! same logits as tract running the whole graph.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use vigil_runtime::model::VigilModel;

fn shipped_model() -> VigilModel {
    VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v1.onnx")).unwrap()
}

/// A deterministic test signal: two tones, a train of decaying bursts and LCG noise.
fn signal(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let t = i as f32 / 16_000.0;
            let burst_t = (t * 107.0).fract() / 107.0;
            let burst = (-burst_t * 900.0).exp() * (2.0 * std::f32::consts::PI * 3100.0 * burst_t).sin();
            0.2 * (2.0 * std::f32::consts::PI * 30.0 * t).sin() + (seed % 3) as f32 * burst + 0.1 * noise
        })
        .collect()
}

#[test]
fn embedding_plus_rust_head_matches_full_model_logits() {
    let model = shipped_model();
    let meta = model.metadata().clone();
    let mut embedder = model.embedder().unwrap();
    let mut full = model.full_model().unwrap();
    let mut worst = 0.0f32;
    for seed in 0..12 {
        let mut w = signal(meta.window, seed);
        meta.normalisation.apply(&mut w);
        let embedding = embedder.run(&w).unwrap();
        assert_eq!(embedding.len(), model.embedding_dim());
        let mut logits = vec![0.0; meta.class_names.len()];
        model.head().logits(&embedding, &mut logits).unwrap();
        let reference = full.run(&w).unwrap();
        for (a, b) in logits.iter().zip(&reference) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst < 1e-4, "max |difference| {worst}");
}

#[test]
fn metadata_survives_the_shipped_file() {
    let model = shipped_model();
    let meta = model.metadata();
    assert_eq!(meta.class_names, ["normal", "outer_race", "inner_race", "ball"]);
    assert_eq!(meta.embedding_node, "embedding");
    assert_eq!(meta.prototype_mean.len(), model.embedding_dim());
    let bytes = std::fs::read(model.path()).unwrap();
    let proto = vigil_runtime::onnx::decode_model(&bytes, model.path()).unwrap();
    let again = vigil_runtime::onnx::read_metadata(&proto).unwrap();
    assert_eq!(&again, meta);
}
