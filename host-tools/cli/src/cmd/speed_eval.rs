//! `vigil speed-eval`: how well the shaft speed is read from the signal.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use vigil_sim::SourceDomain;
use vigil_train::manifest::Manifest;
use vigil_train::speed_eval::{self, SpeedTable, Sweep, SPEED_BANDS_HZ};

/// Read the shaft speed from the signal, as `vigil run` does when no speed is given, and
/// compare it with the truth: by default on simulated machines drawn across the whole
/// range of kinematics (shaft 2-200 Hz, sample rates 8-100 kHz, any bearing, resonance,
/// gain, noise, imbalance and misalignment; healthy and with each fault), with `--data`
/// on the recordings of a manifest that states their speed (`speed = HZ`). Prints a table
/// by speed band: blocks within 1% and 5% of the true speed, blocks with no estimate, and
/// the median error.
#[derive(Debug, Args)]
pub struct SpeedEvalArgs {
    /// A dataset manifest whose recordings state their shaft speed, instead of the
    /// simulator.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seconds of signal per estimate (the runtime's default is 4).
    #[arg(long, default_value_t = vigil_runtime::speed::DEFAULT_BLOCK_S)]
    block: f64,
    /// Simulated machines.
    #[arg(long, default_value_t = 200)]
    machines: usize,
    /// Blocks per simulated machine.
    #[arg(long, default_value_t = 2)]
    blocks: usize,
    /// Seed of the simulated machines.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shaft speeds to look for, in Hz, as LOW-HIGH.
    #[arg(long, default_value = "2-200", value_parser = vigil_runtime::speed::parse_range)]
    range: (f32, f32),
    /// Leave the manifest's bearings out: the speed from the signal alone. (Told the
    /// bearing, a fault's comb places the shaft speed, as in `vigil run --bearing`.)
    #[arg(long)]
    without_bearing: bool,
    /// List every block with its estimate and confidence.
    #[arg(long)]
    verbose: bool,
}

impl SpeedEvalArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let cases = match &self.data {
            Some(path) => {
                let manifest = Manifest::load(path)?;
                let told =
                    if self.without_bearing { "without the bearings" } else { "told the bearings it names" };
                println!("{}: shaft speed from {} s blocks, {told}", path.display(), self.block);
                speed_eval::recorded(&manifest, self.block, self.range, !self.without_bearing)?
            }
            None => {
                let pb = super::progress_bar(self.machines as u64, "machines");
                let sweep = Sweep {
                    machines: self.machines,
                    blocks: self.blocks,
                    block_s: self.block,
                    rates_hz: (8_000.0, 100_000.0),
                    seed: self.seed,
                    range: self.range,
                };
                let cases = speed_eval::simulated(&SourceDomain::wide(), sweep, &mut || pb.inc(1))?;
                pb.finish_and_clear();
                println!(
                    "{} simulated machines (seed {}), shaft 2-200 Hz, 8-100 kHz: shaft speed from {} s blocks",
                    self.machines, self.seed, self.block
                );
                cases
            }
        };
        if self.verbose {
            for c in &cases {
                match c.estimate {
                    Some((hz, confidence)) => println!(
                        "  {}: true {:.3} Hz, estimate {hz:.3} Hz ({:+.3}%), confidence {confidence:.2}",
                        c.source,
                        c.true_hz,
                        100.0 * (hz - c.true_hz) / c.true_hz
                    ),
                    None => println!("  {}: true {:.3} Hz, no estimate", c.source, c.true_hz),
                }
            }
        }
        print!("{}", SpeedTable::by_band(&cases, &SPEED_BANDS_HZ));
        Ok(())
    }
}
