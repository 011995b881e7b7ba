//! `vigil snapshot`: copies the head a device runs.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use vigil_client::update_file::UpdateFile;

/// Copy the head a device runs (with its prototype, threshold and alarm policy, as
/// adapted on site, and the counts of what it adapted on) into an unsigned `.vup` file,
/// for `vigil fleet merge`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    port: super::PortArgs,
    #[command(flatten)]
    sensor: super::SensorArg,
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
}

impl SnapshotArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let mut client = self.port.connect()?;
        self.sensor.select(&mut client)?;
        let bytes = client.head_snapshot()?;
        let file = UpdateFile::for_snapshot(bytes)?;
        let head = file.head()?;
        let stats = file.stats()?;
        file.write(&self.output)?;
        println!(
            "head version {} ({} inputs x {} classes) written to {}",
            head.version,
            head.inputs,
            head.classes,
            self.output.display()
        );
        println!(
            "adapted on {} windows: {} prototype updates, {} labels learned, {} rolled back",
            stats.windows_seen, stats.prototype_updates, stats.labels_accepted, stats.labels_rejected
        );
        Ok(())
    }
}
