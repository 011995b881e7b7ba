//! Guards the cost of checking one raw window for sensor faults
//! ([`vigil_core::sensor::SensorLimits::fault_of`]), which runs on every window before it
//! is scored, on gateway and firmware alike.
//!
//! The figure guarded: a 3,072-sample window (the streamable bearing-cnn-v2's; the
//! default model's is 2,048) must stay under about a tenth of the streamed score of a
//! window (about 33 µs on the gateway, see `docs/performance.md`), so about 3 µs.

use criterion::{criterion_main, Criterion};
use std::hint::black_box;
use vigil_core::sensor::SensorLimits;

fn bench(c: &mut Criterion) {
    let window: Vec<f32> = (0..3072)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            0.3 * (2.0 * std::f32::consts::PI * 29.95 * t).sin() + 0.1 * (i as f32 * 1.3).sin()
        })
        .collect();
    let limits = SensorLimits::DEFAULT;
    assert_eq!(limits.fault_of(&window), None, "the bench window is a measurement");
    c.bench_function("sensor_fault_check_3072", |b| b.iter(|| limits.fault_of(black_box(&window))));
}

mod harness {
    criterion::criterion_group!(benches, super::bench);
}
use harness::benches;
criterion_main!(benches);
