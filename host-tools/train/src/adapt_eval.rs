//! The site-adaptation experiment: a simulated fleet of machines outside the pretraining
//! range, each scored unadapted, site-adapted, label-adapted and with the fleet-merged
//! head (`vigil adapt-eval`, docs/results-adaptation.md).
//!
//! Each machine gets, from its own seeds:
//! - a healthy commissioning stream (site adaptation learns from it; alarms disarmed);
//! - a healthy held-out stream: every alarm raised is a false alarm (an alarm is
//!   dismissed when raised, as an engineer would, so a persistent condition raises again);
//! - a run-to-failure stream: healthy until `onset_s`, then a fault that grows; the
//!   detection delay is the time from onset to the first alarm after it (alarms before
//!   onset count as false alarms);
//! - labelled recordings of every class: `labels` windows per class, each from its own
//!   recording (a technician labels events days apart, not one burst), and held-out test
//!   windows from other recordings (10 windows each).
//!
//! Each label-adapted head is then fed 30 mislabels (held-out windows called the next
//! class) to measure what poisoning does to its replay accuracy.
//!
//! The backbone runs once per window; the variants differ only in head, prototype and
//! threshold, which are applied in plain Rust with the core's own adaptation code.

use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vigil_client::fleet;
use vigil_core::adapt::label::{LabelAdapter, LabelConfig, LabelOutcome};
use vigil_core::adapt::site::SiteAdapter;
use vigil_core::alarm::{AlarmPolicy, AlarmState, AlarmTransition};
use vigil_core::head::{argmax, softmax_in_place, HeadRef, PrototypeRef};
use vigil_runtime::adaptation::AdaptationSettings;
use vigil_runtime::metadata::ModelMetadata;
use vigil_runtime::model::VigilModel;
use vigil_runtime::windower::Windower;
use vigil_sim::{FaultConfig, FaultKind, MachineConfig, Simulator, SourceDomain};

/// The experiment's settings.
#[derive(Debug, Clone, Copy)]
pub struct AdaptEvalConfig {
    /// Machines in the fleet.
    pub machines: usize,
    /// Seed of the fleet.
    pub seed: u64,
    /// Seconds of healthy commissioning.
    pub commission_s: f64,
    /// Seconds of the healthy held-out stream.
    pub healthy_s: f64,
    /// Seconds of the run-to-failure stream.
    pub failure_s: f64,
    /// Fault onset in the run-to-failure stream.
    pub onset_s: f64,
    /// Labelled windows per class per machine.
    pub labels: usize,
    /// Test recordings per class per machine (10 windows each).
    pub test_recordings: usize,
}

impl Default for AdaptEvalConfig {
    fn default() -> Self {
        AdaptEvalConfig {
            machines: 5,
            seed: 11,
            commission_s: 120.0,
            healthy_s: 600.0,
            failure_s: 240.0,
            onset_s: 60.0,
            labels: 10,
            test_recordings: 3,
        }
    }
}

/// The variants compared.
/// "unadapted, as quiet" is the shipped prototype with its threshold raised until it
/// raises no more false alarms than the site-adapted variant: detection at equal false
/// alarms.
pub const VARIANTS: [&str; 5] =
    ["unadapted", "unadapted, as quiet", "site-adapted", "label-adapted", "fleet-merged"];

/// What one variant did on one machine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VariantResult {
    /// Alarms raised while the machine was healthy.
    pub false_alarms: usize,
    /// Hours of healthy stream those alarms were counted over.
    pub healthy_hours: f64,
    /// Seconds from fault onset to the first alarm after it (`None`: never raised).
    pub delay_s: Option<f64>,
    /// Accuracy of the 4-class head on the held-out labelled windows.
    pub accuracy: f64,
    /// The same on the fault windows alone (outer race, inner race, ball).
    pub fault_accuracy: f64,
}

impl VariantResult {
    /// False alarms per hour.
    pub fn false_alarms_per_hour(&self) -> f64 {
        self.false_alarms as f64 / self.healthy_hours.max(f64::MIN_POSITIVE)
    }
}

/// Results of one machine, one per [`VARIANTS`] entry.
#[derive(Debug, Clone)]
pub struct MachineResult {
    /// The machine.
    pub machine: MachineConfig,
    /// The fault of its run-to-failure stream.
    pub fault: FaultKind,
    /// Results in the order of [`VARIANTS`].
    pub variants: [VariantResult; 5],
    /// What mislabels did to the label-adapted head.
    pub poisoning: Poisoning,
}

/// Mislabels fed to a label-adapted head: each held-out window labelled as the next class.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Poisoning {
    /// Mislabels fed.
    pub labels: usize,
    /// Of those, rolled back.
    pub rolled_back: usize,
    /// Replay accuracy before the first mislabel.
    pub replay_before: f32,
    /// Lowest replay accuracy after any of them.
    pub replay_lowest: f32,
}

/// Feeds `count` mislabels (each window called the next class) to a copy of `adapter`.
fn poison(
    adapter: &LabelAdapter<Vec<f32>>,
    windows: &[(Vec<f32>, usize)],
    count: usize,
    classes: usize,
) -> Result<Poisoning> {
    let mut adapter = adapter.clone();
    let before = adapter.replay_accuracy().unwrap_or(1.0);
    let mut result = Poisoning { replay_before: before, replay_lowest: before, ..Poisoning::default() };
    for (e, class) in windows.iter().take(count) {
        let outcome = adapter.learn(e, (class + 1) % classes)?;
        result.labels += 1;
        result.rolled_back += usize::from(matches!(outcome, LabelOutcome::RolledBack { .. }));
        result.replay_lowest = result.replay_lowest.min(adapter.replay_accuracy().unwrap_or(1.0));
    }
    Ok(result)
}

/// Embeddings of a machine's streams and labelled windows.
struct MachineData {
    machine: MachineConfig,
    fault: FaultKind,
    commission: Vec<Vec<f32>>,
    healthy: Vec<Vec<f32>>,
    failure: Vec<Vec<f32>>,
    labelled: Vec<(Vec<f32>, usize)>,
    test: Vec<(Vec<f32>, usize)>,
}

/// Runs the backbone over windows of one stream.
struct Backbone {
    embedder: vigil_runtime::plan::Embedder,
    meta: ModelMetadata,
}

impl Backbone {
    /// Embeds every window of an interleaved signal at the model's rate, cut by the
    /// runtime's windower every `hop` samples.
    fn embed_signal(&mut self, signal: &[f32], hop: usize) -> Result<Vec<Vec<f32>>> {
        let meta = &self.meta;
        let mut windower =
            Windower::new(meta.channels, meta.sample_rate_hz, meta.sample_rate_hz, meta.window, hop)?;
        let mut windows = Vec::new();
        windower.push(signal, |w| windows.push(w));
        windows
            .into_iter()
            .map(|mut w| {
                meta.normalise(&mut w.samples);
                Ok(self.embedder.run(&w.samples)?)
            })
            .collect()
    }
}

fn simulate(machine: &MachineConfig, fault: FaultConfig, seed: u64, seconds: f64) -> Vec<f32> {
    Simulator::new(machine.clone(), fault, seed).generate(seconds)
}

fn machine_data(model: &VigilModel, cfg: &AdaptEvalConfig, index: usize) -> Result<MachineData> {
    let meta = model.metadata();
    let (rate, hop, window) = (meta.sample_rate_hz, meta.hop, meta.window);
    let mut backbone = Backbone { embedder: model.embedder()?, meta: meta.clone() };
    let domain = SourceDomain::shifted();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(7919).wrapping_add(index as u64));
    let machine = domain.machine(&mut rng, rate, meta.channels);
    let fault = [FaultKind::OuterRace, FaultKind::InnerRace, FaultKind::Ball][index % 3];
    let seed = |k: u64| cfg.seed.wrapping_mul(1_000_003).wrapping_add(index as u64 * 1000 + k);
    let healthy = FaultConfig::healthy();
    let commission = backbone.embed_signal(&simulate(&machine, healthy, seed(1), cfg.commission_s), hop)?;
    let healthy_stream = backbone.embed_signal(&simulate(&machine, healthy, seed(2), cfg.healthy_s), hop)?;
    let growing = FaultConfig { kind: fault, severity: 0.3, onset_s: cfg.onset_s, growth_per_s: 0.005 };
    let failure = backbone.embed_signal(&simulate(&machine, growing, seed(3), cfg.failure_s), hop)?;
    let window_s = (window * 12) as f64 / rate;
    let mut labelled_recording =
        |kind: FaultKind, k: u64, count: usize, rng: &mut ChaCha8Rng| -> Result<Vec<(Vec<f32>, usize)>> {
            let fault = domain.fault(rng, kind);
            let signal =
                simulate(&machine, fault, seed(k), window_s.max((count * window) as f64 / rate + 0.1));
            let embeddings = backbone.embed_signal(&signal, window)?;
            Ok(embeddings.into_iter().take(count).map(|e| (e, kind.index())).collect())
        };
    let mut labelled = Vec::new();
    let mut test = Vec::new();
    for (c, kind) in FaultKind::ALL.into_iter().enumerate() {
        for l in 0..cfg.labels {
            labelled.extend(labelled_recording(kind, 1000 + (c * 100 + l) as u64, 1, &mut rng)?);
        }
        for r in 0..cfg.test_recordings {
            test.extend(labelled_recording(kind, 100 + (c * 50 + r) as u64, 10, &mut rng)?);
        }
    }
    // The technician labels windows as they come, classes interleaved.
    let per_class = cfg.labels;
    let mut interleaved = Vec::with_capacity(labelled.len());
    for i in 0..per_class {
        for c in 0..FaultKind::ALL.len() {
            if let Some(s) = labelled.get(c * per_class + i) {
                interleaved.push(s.clone());
            }
        }
    }
    Ok(MachineData {
        machine,
        fault,
        commission,
        healthy: healthy_stream,
        failure,
        labelled: interleaved,
        test,
    })
}

/// How a variant scores windows: fixed prototype and policy, or an adapting site.
enum Scoring<'a> {
    Fixed { prototype: PrototypeRef<'a>, policy: AlarmPolicy },
    Site(&'a mut SiteAdapter),
}

impl Scoring<'_> {
    fn policy(&self) -> AlarmPolicy {
        match self {
            Scoring::Fixed { policy, .. } => *policy,
            Scoring::Site(site) => site.policy(),
        }
    }

    /// Scores a stream, returning the indices of the windows that raised an alarm. An
    /// alarm is dismissed (the state starts quiet again) when it is raised.
    fn raises(&mut self, stream: &[Vec<f32>], head: &HeadRef<'_>, normal: usize) -> Result<Vec<usize>> {
        let mut alarm = AlarmState::new(self.policy())?;
        let mut raised = Vec::new();
        let mut p = vec![0.0; head.classes()];
        for (i, e) in stream.iter().enumerate() {
            match self {
                Scoring::Fixed { prototype, .. } => {
                    if alarm.update(prototype.score(e)?) == AlarmTransition::Raised {
                        raised.push(i);
                        alarm = AlarmState::new(self.policy())?;
                    }
                }
                Scoring::Site(site) => {
                    let score = site.score(e)?;
                    if site.is_armed() && alarm.update(score) == AlarmTransition::Raised {
                        raised.push(i);
                        alarm = AlarmState::new(site.policy())?;
                    }
                    head.logits(e, &mut p)?;
                    softmax_in_place(&mut p);
                    let was_armed = site.is_armed();
                    site.observe(e, score, p[normal], alarm.is_active())?;
                    if !was_armed && site.is_armed() {
                        alarm = AlarmState::new(site.policy())?;
                    }
                }
            }
        }
        Ok(raised)
    }
}

/// Sets the accuracy of `head` on all of `test` and on its windows of classes other
/// than `normal`.
fn score_accuracy(
    result: &mut VariantResult,
    head: &HeadRef<'_>,
    test: &[(Vec<f32>, usize)],
    normal: usize,
) -> Result<()> {
    let mut logits = vec![0.0; head.classes()];
    let (mut hits, mut fault_hits, mut faults) = (0usize, 0usize, 0usize);
    for (e, class) in test {
        head.logits(e, &mut logits)?;
        let hit = usize::from(argmax(&logits) == Some(*class));
        hits += hit;
        if *class != normal {
            faults += 1;
            fault_hits += hit;
        }
    }
    result.accuracy = hits as f64 / test.len().max(1) as f64;
    result.fault_accuracy = fault_hits as f64 / faults.max(1) as f64;
    Ok(())
}

/// Alarm figures of one variant on a machine's held-out and run-to-failure streams.
fn alarm_figures(
    data: &MachineData,
    scoring: &mut Scoring<'_>,
    head: &HeadRef<'_>,
    normal: usize,
    window_end_s: impl Fn(usize) -> f64,
    cfg: &AdaptEvalConfig,
) -> Result<VariantResult> {
    let healthy = scoring.raises(&data.healthy, head, normal)?;
    let failure = scoring.raises(&data.failure, head, normal)?;
    let before_onset = failure.iter().filter(|&&i| window_end_s(i) < cfg.onset_s).count();
    let delay_s =
        failure.iter().map(|&i| window_end_s(i)).find(|&t| t >= cfg.onset_s).map(|t| t - cfg.onset_s);
    Ok(VariantResult {
        false_alarms: healthy.len() + before_onset,
        healthy_hours: (cfg.healthy_s + cfg.onset_s) / 3600.0,
        delay_s,
        accuracy: 0.0,
        fault_accuracy: 0.0,
    })
}

/// The shipped prototype with the lowest threshold (found by bisection on a log scale)
/// at which it raises at most `false_alarms`.
fn as_quiet_as(
    data: &MachineData,
    model: &VigilModel,
    false_alarms: usize,
    end_s: impl Fn(usize) -> f64 + Copy,
    cfg: &AdaptEvalConfig,
) -> Result<VariantResult> {
    let shipped = model.head();
    let normal = model.metadata().normal_class;
    let base = model.metadata().alarm;
    let run = |threshold: f32| {
        let policy = AlarmPolicy { threshold, ..base };
        let mut fixed = Scoring::Fixed { prototype: model.prototype(), policy };
        alarm_figures(data, &mut fixed, &shipped, normal, end_s, cfg)
    };
    let (mut low, mut high) = (base.threshold.ln(), (base.threshold * 1e6).ln());
    let mut best = run(high.exp())?;
    for _ in 0..40 {
        let mid = 0.5 * (low + high);
        let r = run(mid.exp())?;
        if r.false_alarms <= false_alarms {
            high = mid;
            best = r;
        } else {
            low = mid;
        }
    }
    Ok(best)
}

/// Runs the experiment on `model`, calling `progress` after each machine's data is ready.
pub fn run(
    model: &VigilModel,
    cfg: &AdaptEvalConfig,
    progress: impl Fn() + Sync,
) -> Result<Vec<MachineResult>> {
    let meta = model.metadata();
    let data: Vec<MachineData> = std::thread::scope(|scope| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(cfg.machines.max(1));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let progress = &progress;
                scope.spawn(move || {
                    (t..cfg.machines)
                        .step_by(threads)
                        .map(|m| {
                            let d = machine_data(model, cfg, m).map(|d| (m, d));
                            progress();
                            d
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a simulation thread panicked"))??);
        }
        all.sort_by_key(|(m, _)| *m);
        Ok::<_, anyhow::Error>(all.into_iter().map(|(_, d)| d).collect())
    })?;

    let shipped = model.head();
    let normal = meta.normal_class;
    let (hop, window, rate) = (meta.hop, meta.window, meta.sample_rate_hz);
    let end_s = |i: usize| (i * hop + window) as f64 / rate;
    let commission_windows = data.first().map_or(0, |d| d.commission.len()) as u32;
    // The gateway's own settings for this model and commissioning, one false alarm a day.
    let site_config = AdaptationSettings::for_windows(model, None, Some(commission_windows), 1.0)?.site;

    // Label adaptation on every machine, then the fleet merge of the adapted heads.
    let label_config = LabelConfig::default();
    let storage_len = LabelAdapter::<Vec<f32>>::storage_len(shipped.dim(), shipped.classes(), 16);
    let mut adapted = Vec::new();
    let mut stats = Vec::new();
    let mut poisonings = Vec::new();
    for d in &data {
        // Steps are standardised by the site's own normal state, as on a device.
        let mut site = SiteAdapter::commission(site_config, model.prototype(), meta.alarm)?;
        Scoring::Site(&mut site).raises(&d.commission, &shipped, normal)?;
        let mut adapter = LabelAdapter::new(label_config, shipped, site.prototype(), vec![0.0; storage_len])?;
        for (e, class) in &d.labelled {
            adapter.learn(e, *class)?;
        }
        // Mislabels from the held-out windows, taken across classes.
        let mut shuffled: Vec<_> = d.test.iter().step_by(7).cloned().collect();
        shuffled.extend(d.test.iter().skip(3).step_by(11).cloned());
        poisonings.push(poison(&adapter, &shuffled, 30, shipped.classes())?);
        let mut s = vigil_core::adapt::AdaptationStats::default();
        adapter.add_counts(&mut s);
        stats.push(s);
        let head = adapter.head();
        adapted.push((head.weights().to_vec(), head.bias().to_vec()));
    }
    let (merged_w, merged_b) = fleet::average_heads(&adapted, &fleet::merge_weights(&stats));
    let merged = HeadRef::new(&merged_w, &merged_b, shipped.dim(), shipped.classes())?;

    let mut results = Vec::new();
    for ((d, (w, b)), poisoning) in data.iter().zip(&adapted).zip(poisonings) {
        let own = HeadRef::new(w, b, shipped.dim(), shipped.classes())?;
        let mut variants = [VariantResult::default(); 5];
        let mut fixed = Scoring::Fixed { prototype: model.prototype(), policy: meta.alarm };
        variants[0] = alarm_figures(d, &mut fixed, &shipped, normal, end_s, cfg)?;
        score_accuracy(&mut variants[0], &shipped, &d.test, normal)?;
        for (v, head) in [(2, &shipped), (3, &own), (4, &merged)] {
            let mut site = SiteAdapter::commission(site_config, model.prototype(), meta.alarm)?;
            let mut scoring = Scoring::Site(&mut site);
            // Commissioning: alarms are disarmed, so nothing is raised.
            scoring.raises(&d.commission, head, normal)?;
            variants[v] = alarm_figures(d, &mut scoring, head, normal, end_s, cfg)?;
            score_accuracy(&mut variants[v], head, &d.test, normal)?;
        }
        variants[1] = as_quiet_as(d, model, variants[2].false_alarms, end_s, cfg)?;
        (variants[1].accuracy, variants[1].fault_accuracy) =
            (variants[0].accuracy, variants[0].fault_accuracy);
        results.push(MachineResult { machine: d.machine.clone(), fault: d.fault, variants, poisoning });
    }
    Ok(results)
}
