//! What the gateway's integration tests share: the shipped models and a test signal.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use vigil_runtime::model::VigilModel;

/// The default model, bearing-cnn-v3 (the file the runtime builds in).
pub fn default_model() -> VigilModel {
    VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v3.onnx")).unwrap()
}

/// bearing-cnn-v1, the first shipped model: padded convolutions and no patchify layer.
pub fn v1_model() -> VigilModel {
    VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v1.onnx")).unwrap()
}

/// The streamable variant in `models/`.
pub fn streamable_model() -> VigilModel {
    VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v2.onnx")).unwrap()
}

/// A deterministic test signal: two tones, a train of decaying bursts and LCG noise.
pub fn signal(n: usize, seed: u32) -> Vec<f32> {
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
