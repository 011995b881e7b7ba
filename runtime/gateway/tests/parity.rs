//! The tract backbone cut at the embedding node, followed by the Rust head, must give the
//! same logits as tract running the whole graph.

#![allow(clippy::unwrap_used)]

mod common;

use common::{shipped_model, signal};

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
