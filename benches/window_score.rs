//! Guards the cost of scoring one window on a gateway: normalisation, the tract backbone
//! (f32, one thread), the Rust head, the prototype score and the alarm policy.
//!
//! Reference figure (this 2-core machine, shipped bearing-cnn-v1, 2048-sample windows):
//! see the closing note of the foundation issue; the performance issue sets the target
//! relative to onnxruntime, measured side by side by `benches/compare_onnxruntime.sh`.

use criterion::{criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;
use vigil_runtime::model::VigilModel;
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::windower::Window;
use vigil_tools::sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// The windows the onnxruntime peer scores too: `vigil simulate --seconds 4.096
/// --fault outer-race --severity 0.5 --seed 1 --format f32le`.
fn windows(window: usize) -> Vec<Window> {
    let machine = MachineConfig::reference(16_000.0, 1);
    let fault = FaultConfig { kind: FaultKind::OuterRace, severity: 0.5, onset_s: 0.0, growth_per_s: 0.0 };
    let signal = Simulator::new(machine, fault, 1).generate(4.096);
    signal
        .chunks_exact(window)
        .enumerate()
        .map(|(i, w)| Window { samples: w.to_vec(), index: i as u64, end_time_s: 0.0 })
        .collect()
}

fn bench(c: &mut Criterion) {
    let model = VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/bearing-cnn-v1.onnx"))
        .expect("shipped model loads");
    let ws = windows(model.metadata().window);
    let mut scorer = WindowScorer::new(model, 0).expect("scorer");
    let mut i = 0;
    c.bench_function("score_window_tract_f32", |b| {
        b.iter(|| {
            let w = &ws[i % ws.len()];
            i += 1;
            black_box(scorer.score(black_box(w)).expect("scores"))
        })
    });
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
use harness::benches;
criterion_main!(benches);
