//! The runtime's backbone (the first convolution lowered to a pointwise one, the pooling
//! in Rust) must give the embedding tract computes from the graph as written, and with
//! the Rust head the logits tract computes from the whole graph.

#![allow(clippy::unwrap_used)]

mod common;

use common::{default_model, signal, streamable_model, v1_model};
use tract_onnx::prelude::*;

#[test]
fn embedding_plus_rust_head_matches_full_model_logits() {
    let model = default_model();
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
fn a_batch_of_windows_in_one_call_embeds_each_as_one_window_alone() {
    for model in [default_model(), v1_model(), streamable_model()] {
        let meta = model.metadata().clone();
        let mut one = model.embedder().unwrap();
        let mut batched = model.batch_embedder(5).unwrap();
        assert_eq!(batched.batch(), 5);
        let mut windows = Vec::new();
        let mut alone = Vec::new();
        for seed in 0..5 {
            let mut w = signal(meta.window * meta.channels, seed + 40);
            meta.normalisation.apply(&mut w);
            alone.extend(one.run(&w).unwrap());
            windows.extend(w);
        }
        let together = batched.run_batch(&windows).unwrap();
        assert_eq!(together.len(), alone.len());
        let worst = together.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{}: max |difference| {worst}", model.path().display());
        // A batch of the wrong size is refused, naming what the plan takes.
        let err = batched.run_batch(&windows[..windows.len() - meta.window]).unwrap_err().to_string();
        assert!(err.contains("5 window(s)"), "{err}");
    }
    assert!(default_model().batch_embedder(0).is_err());
}

#[test]
fn metadata_survives_the_shipped_file() {
    let model = default_model();
    let meta = model.metadata();
    assert_eq!(meta.class_names, ["normal", "outer_race", "inner_race", "ball"]);
    assert_eq!(meta.embedding_node, "embedding");
    assert_eq!(meta.prototype_mean.len(), model.embedding_dim());
    let bytes = std::fs::read(model.path()).unwrap();
    let proto = vigil_runtime::onnx::decode_model(&bytes, model.path()).unwrap();
    let again = vigil_runtime::onnx::read_metadata(&proto).unwrap();
    assert_eq!(&again, meta);
}

#[test]
fn the_backbone_with_its_patchify_layer_in_rust_gives_the_embedding_of_the_graph_as_written() {
    for model in [default_model(), v1_model(), streamable_model()] {
        let meta = model.metadata().clone();
        let bytes = std::fs::read(model.path()).unwrap();
        let proto = vigil_runtime::onnx::decode_model(&bytes, model.path()).unwrap();
        let (front, rest) = vigil_runtime::patchify::Patchify::split(
            &proto,
            &meta.input_name,
            meta.channels,
            &meta.embedding_node,
        )
        .expect("the first convolution is a patchify layer");
        let nodes = |p: &tract_onnx::pb::ModelProto| p.graph.as_ref().unwrap().node.len();
        assert_eq!(
            nodes(&rest),
            nodes(&proto) - 2,
            "{}: the first convolution and its ReLU were not split off ({})",
            model.path().display(),
            front.names()
        );
        let mut graph = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .unwrap()
            .with_input_fact(0, f32::fact([1, meta.channels, meta.window]).into())
            .unwrap();
        graph.select_outputs_by_name([meta.embedding_node.as_str()]).unwrap();
        let as_written = graph.into_optimized().unwrap().into_runnable().unwrap();
        let mut embedder = model.embedder().unwrap();
        for seed in 0..6 {
            let mut w = signal(meta.window, seed);
            meta.normalisation.apply(&mut w);
            let ours = embedder.run(&w).unwrap();
            let input = Tensor::from_shape(&[1, meta.channels, meta.window], &w).unwrap();
            let out = as_written.run(tvec!(input.into())).unwrap();
            let reference: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
            let top = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in ours.iter().zip(&reference) {
                assert!((a - b).abs() <= 1e-5 * top, "{}: {a} against {b}", model.path().display());
            }
        }
    }
}
