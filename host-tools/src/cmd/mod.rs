//! The subcommands of `vigil`, one file each.

mod demo;
mod pretrain;
mod run;
mod sim_eval;
mod simulate;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use vigil_runtime::model::VigilModel;

/// The shipped reference model, built into the binary so `vigil demo` and `vigil run`
/// work from any folder.
pub const REFERENCE_MODEL: &[u8] = include_bytes!("../../../models/bearing-cnn-v1.onnx");

/// Loads `path`, or the built-in reference model when `None`.
pub fn load_model(path: Option<&Path>) -> Result<VigilModel> {
    match path {
        Some(p) => VigilModel::load(p).with_context(|| format!("cannot load model {}", p.display())),
        None => Ok(VigilModel::from_bytes(
            REFERENCE_MODEL,
            &PathBuf::from("models/bearing-cnn-v1.onnx (built in)"),
        )?),
    }
}

/// Vigil: predictive-maintenance inference at the edge.
///
/// Simulate bearing vibration, pretrain the reference model, and run a model over a
/// sensor stream to detect and classify developing faults. Start with `vigil demo`.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a machine healthy, then developing a fault, and watch the shipped model
    /// catch it (no hardware, no download).
    Demo(demo::DemoArgs),
    /// Run a model over a sensor stream and print alarms as they happen.
    Run(run::RunArgs),
    /// Simulate bearing vibration (healthy or faulty, optionally run to failure).
    Simulate(simulate::SimulateArgs),
    /// Train the reference model on the simulated source domain and export it to ONNX.
    Pretrain(pretrain::PretrainArgs),
    /// Evaluate a model on freshly simulated held-out recordings of the source domain.
    SimEval(sim_eval::SimEvalArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Demo(a) => a.run(),
            Command::Run(a) => a.run(),
            Command::Simulate(a) => a.run(),
            Command::Pretrain(a) => a.run(),
            Command::SimEval(a) => a.run(),
        }
    }
}
