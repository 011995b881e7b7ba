//! Guards the cost of on-device adaptation on a gateway: one technician label
//! ([`LabelAdapter::learn`]: SGD steps with replay, the replay check, rollback when it
//! fails) must stay under 20 µs per labelled sample; one window's site update
//! ([`SiteAdapter::observe`]) is measured beside it.
//!
//! The embeddings are the shipped bearing-cnn-v1's (192 floats, 4 classes) of a
//! simulated machine; the adapter already holds 10 labels per class in its replay
//! buffer, as after the adaptation experiment's labelling.

use criterion::{criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use vigil_core::adapt::label::{LabelAdapter, LabelConfig};
use vigil_core::adapt::site::{SiteAdapter, SiteConfig};
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator};

/// Embeddings of `count` windows of `kind` on the reference machine.
fn embeddings(kind: FaultKind, count: usize, seed: u64) -> Vec<Vec<f32>> {
    let model = vigil_runtime::builtin::load_model(None).expect("the shipped model loads");
    let meta = model.metadata().clone();
    let mut embedder = model.embedder().expect("the backbone runs");
    let fault = FaultConfig { kind, severity: 0.6, onset_s: 0.0, growth_per_s: 0.0 };
    let signal = Simulator::new(MachineConfig::reference(meta.sample_rate_hz, 1), fault, seed)
        .generate((count * meta.window) as f64 / meta.sample_rate_hz);
    signal
        .chunks_exact(meta.window)
        .map(|w| {
            let mut w = w.to_vec();
            meta.normalisation.apply(&mut w);
            embedder.run(&w).expect("the backbone runs")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let model = vigil_runtime::builtin::load_model(None).expect("the shipped model loads");
    let (head, prototype) = (model.head(), model.prototype());
    let per_class: Vec<Vec<Vec<f32>>> =
        FaultKind::ALL.iter().enumerate().map(|(i, &k)| embeddings(k, 12, 40 + i as u64)).collect();
    let config = LabelConfig::default();
    let storage = vec![0.0; LabelAdapter::<Vec<f32>>::storage_len(head.dim(), head.classes(), 16)];
    let mut adapter = LabelAdapter::new(config, head, prototype, storage).expect("the adapter fits");
    for i in 0..10 {
        for (class, windows) in per_class.iter().enumerate() {
            adapter.learn(&windows[i], class).expect("a label is learned");
        }
    }
    let mut group = c.benchmark_group("adaptation");
    group.bench_function("label step (honest label, 40 in replay)", |b| {
        b.iter_batched(
            || adapter.clone(),
            |mut a| black_box(a.learn(&per_class[2][10], 2)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("label step (poisoned label, 40 in replay)", |b| {
        b.iter_batched(
            || adapter.clone(),
            |mut a| black_box(a.learn(&per_class[1][11], 0)),
            BatchSize::SmallInput,
        )
    });
    let site = SiteAdapter::armed(SiteConfig::new(1000, 1_350_000.0), prototype, model.metadata().alarm)
        .expect("the site fits");
    let window = &per_class[0][11];
    group.bench_function("site update (one window)", |b| {
        b.iter_batched(
            || site.clone(),
            |mut s| {
                let score = s.score(window).unwrap_or(0.0);
                black_box(s.observe(window, score, 1.0, false))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
