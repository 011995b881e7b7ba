//! How well the shaft speed is read from the signal (`vigil speed-eval`,
//! docs/kinematics.md): the runtime's [`SpeedTracker`] on blocks of simulated machines
//! drawn across the whole range of kinematics, and on the recordings of a manifest that
//! states their speed.

use crate::manifest::Manifest;
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use vigil_runtime::speed::SpeedTracker;
use vigil_sim::{FaultKind, Simulator, SourceDomain};

/// One block whose speed is known.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedCase {
    /// What the block is (machine or recording).
    pub source: String,
    /// The true shaft speed in Hz.
    pub true_hz: f32,
    /// The estimate and its confidence, when the tracker gave one.
    pub estimate: Option<(f32, f32)>,
}

impl SpeedCase {
    /// Relative error of the estimate, when there is one.
    pub fn error(&self) -> Option<f32> {
        self.estimate.map(|(hz, _)| (hz - self.true_hz).abs() / self.true_hz)
    }
}

/// A sweep of simulated machines: `machines` machines, `blocks` blocks of `block_s`
/// seconds each, sample rates drawn evenly on a log scale over `rates_hz`, speeds looked
/// for in `range`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sweep {
    /// Machines drawn.
    pub machines: usize,
    /// Blocks per machine.
    pub blocks: usize,
    /// Seconds per block.
    pub block_s: f64,
    /// Sample rates, in Hz.
    pub rates_hz: (f64, f64),
    /// Seed of the machines.
    pub seed: u64,
    /// Shaft speeds looked for, in Hz.
    pub range: (f32, f32),
}

/// The blocks of `sweep` from machines of `domain` (faults cycling through normal, outer
/// race, inner race and ball).
pub fn simulated(domain: &SourceDomain, sweep: Sweep, progress: &mut dyn FnMut()) -> Result<Vec<SpeedCase>> {
    let Sweep { machines, blocks, block_s, rates_hz, seed, range } = sweep;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cases = Vec::new();
    for m in 0..machines {
        let rate = (rng.gen_range(rates_hz.0.ln()..=rates_hz.1.ln())).exp().round();
        let machine = domain.machine(&mut rng, rate, 1);
        let kind = FaultKind::ALL[m % FaultKind::ALL.len()];
        let fault = domain.fault(&mut rng, kind);
        let true_hz = machine.shaft_hz as f32;
        let source = format!("machine {m} ({}, {rate} Hz)", kind.name());
        let mut sim = Simulator::new(machine, fault, seed.wrapping_mul(7919).wrapping_add(m as u64));
        for _ in 0..blocks {
            let mut tracker = SpeedTracker::new(rate, block_s, range)?;
            tracker.push(&sim.generate(block_s));
            let estimate = tracker.estimate().map(|e| (e.shaft_hz, e.confidence));
            cases.push(SpeedCase { source: source.clone(), true_hz, estimate });
        }
        progress();
    }
    Ok(cases)
}

/// Consecutive blocks of `block_s` seconds of every recording of `manifest` that states
/// its speed (the first channel), told each recording's bearing when `use_bearing`.
pub fn recorded(
    manifest: &Manifest,
    block_s: f64,
    range: (f32, f32),
    use_bearing: bool,
) -> Result<Vec<SpeedCase>> {
    let mut cases = Vec::new();
    for (i, entry) in manifest.recordings.iter().enumerate() {
        let Some(true_hz) = entry.speed else { continue };
        let recording = manifest.read(i)?;
        let first: Vec<f32> = recording.samples.iter().step_by(recording.channels).copied().collect();
        let per_block = (block_s * recording.rate) as usize;
        for (b, block) in first.chunks_exact(per_block.max(1)).enumerate() {
            let mut tracker = SpeedTracker::new(recording.rate, block_s, range)?;
            tracker.set_bearing(entry.kinematics().bearing.filter(|_| use_bearing));
            tracker.push(block);
            cases.push(SpeedCase {
                source: format!("{} block {}", entry.path.display(), b + 1),
                true_hz: true_hz as f32,
                estimate: tracker.estimate().map(|e| (e.shaft_hz, e.confidence)),
            });
        }
    }
    if cases.is_empty() {
        bail!(
            "manifest {}: no recording states its shaft speed (`speed = HZ`) with {block_s} s of signal",
            manifest.path.display()
        );
    }
    Ok(cases)
}

/// The figures of a set of cases, by band of true speed.
#[derive(Debug, Clone)]
pub struct SpeedTable {
    /// Band edges in Hz and the cases in each.
    pub rows: Vec<((f32, f32), Vec<SpeedCase>)>,
}

/// Speed bands of the simulator sweep, in Hz.
pub const SPEED_BANDS_HZ: [f32; 6] = [2.0, 5.0, 15.0, 50.0, 100.0, 200.0];

impl SpeedTable {
    /// Groups `cases` into the bands between consecutive `edges`.
    pub fn by_band(cases: &[SpeedCase], edges: &[f32]) -> Self {
        let rows = edges
            .windows(2)
            .map(|e| {
                let within =
                    cases.iter().filter(|c| c.true_hz >= e[0] && c.true_hz < e[1]).cloned().collect();
                ((e[0], e[1]), within)
            })
            .collect();
        SpeedTable { rows }
    }
}

/// Share of `cases` whose estimate is within `tolerance` (relative).
pub fn share_within(cases: &[SpeedCase], tolerance: f32) -> f32 {
    if cases.is_empty() {
        return 0.0;
    }
    cases.iter().filter(|c| c.error().is_some_and(|e| e <= tolerance)).count() as f32 / cases.len() as f32
}

fn median_error(cases: &[SpeedCase]) -> Option<f32> {
    let mut errors: Vec<f32> = cases.iter().map(|c| c.error().unwrap_or(f32::INFINITY)).collect();
    errors.sort_by(f32::total_cmp);
    errors.get(errors.len() / 2).copied()
}

impl fmt::Display for SpeedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| shaft speed | blocks | within 1% | within 5% | no estimate | median error |")?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        let mut all = Vec::new();
        for ((lo, hi), cases) in &self.rows {
            row(f, &format!("{lo}-{hi} Hz"), cases)?;
            all.extend(cases.iter().cloned());
        }
        row(f, "all", &all)
    }
}

fn row(f: &mut fmt::Formatter<'_>, name: &str, cases: &[SpeedCase]) -> fmt::Result {
    let none = cases.iter().filter(|c| c.estimate.is_none()).count();
    let median = match median_error(cases) {
        Some(e) if e.is_finite() => format!("{:.3}%", 100.0 * e),
        Some(_) => "-".into(),
        None => "-".into(),
    };
    writeln!(
        f,
        "| {name} | {} | {:.1}% | {:.1}% | {none} | {median} |",
        cases.len(),
        100.0 * share_within(cases, 0.01),
        100.0 * share_within(cases, 0.05),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_machines_across_the_range_show_their_speed() {
        let sweep = Sweep {
            machines: 16,
            blocks: 1,
            block_s: 4.0,
            rates_hz: (8_000.0, 100_000.0),
            seed: 11,
            range: (2.0, 200.0),
        };
        let cases = simulated(&SourceDomain::wide(), sweep, &mut || {}).unwrap();
        assert_eq!(cases.len(), 16);
        let fast: Vec<SpeedCase> = cases.iter().filter(|c| c.true_hz >= 15.0).cloned().collect();
        assert!(fast.len() >= 6, "{cases:?}");
        // From 15 Hz up, 4 s hold at least 60 revolutions: every estimate within 1%.
        assert_eq!(share_within(&fast, 0.01), 1.0, "{fast:#?}");
        // Slower shafts need longer blocks for 1%; 4 s place them within 5%.
        assert!(share_within(&cases, 0.05) >= 0.9, "{cases:#?}");
        let table = SpeedTable::by_band(&cases, &SPEED_BANDS_HZ).to_string();
        assert!(table.lines().last().unwrap().starts_with("| all | 16 |"), "{table}");
    }
}
