//! Guards the cost of scoring one window on a gateway: normalisation, the tract backbone
//! (f32, one thread), the Rust head, the prototype score and the alarm policy; full
//! window every hop, and streamed at hop W/8 (only the newest hop through the backbone).
//!
//! The figure guarded is the streamed-to-full ratio: streaming at hop W/8 must stay at
//! least 3x cheaper per window than re-running the full window (the performance target
//! against ONNX Runtime re-running the full window). `vigil bench` measures both against
//! ONNX Runtime side by side (`scripts/bench`); `docs/performance.md` has the figures.

use criterion::{criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;
use vigil_runtime::model::VigilModel;
use vigil_runtime::scorer::WindowScorer;
use vigil_runtime::windower::{Window, Windower};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Consecutive windows at `hop` of 4 s of a simulated outer-race fault.
fn windows(window: usize, hop: usize) -> Vec<Window> {
    let machine = MachineConfig::reference(16_000.0, 1);
    let fault = FaultConfig { kind: FaultKind::OuterRace, severity: 0.5, onset_s: 0.0, growth_per_s: 0.0 };
    let signal = Simulator::new(machine, fault, 1).generate(4.096);
    let mut windower = Windower::new(1, 16_000.0, 16_000.0, window, hop).expect("windower");
    let mut out = Vec::new();
    windower.push(&signal, |w| out.push(w));
    out
}

fn bench(c: &mut Criterion) {
    // The streamable variant: the default model's padded convolutions cannot stream.
    let model =
        VigilModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/bearing-cnn-v2.onnx"))
            .expect("the streamable model loads");
    let hop = model.metadata().window / 8;
    let ws = windows(model.metadata().window, hop);
    let mut full = WindowScorer::new(model.clone(), 0).expect("scorer");
    let mut streamed = WindowScorer::new(model, 0).expect("scorer");
    streamed.stream(hop).expect("the shipped model streams");
    for (name, scorer) in [
        ("score_window_tract_f32_full", &mut full),
        ("score_window_tract_f32_streamed_hop_w8", &mut streamed),
    ] {
        // Windows in stream order: the streamed scorer reuses the previous window's frames
        // (and restarts once per pass over the signal, as a stream that resumes would).
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                let w = &ws[i % ws.len()];
                i += 1;
                black_box(scorer.score(black_box(w)).expect("scores"))
            })
        });
    }
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
use harness::benches;
criterion_main!(benches);
