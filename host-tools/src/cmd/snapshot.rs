//! `vigil snapshot`: copies the head a device runs.

use crate::update_file::UpdateFile;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use vigil_core::update::HeadUpdate;

/// Copy the head a device runs (with its prototype, threshold and alarm policy) into an
/// unsigned `.vup` file.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    port: super::PortArgs,
    /// Output file.
    #[arg(long, short)]
    output: PathBuf,
}

impl SnapshotArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let mut client = self.port.connect()?;
        let bytes = client.head_snapshot()?;
        let head: HeadUpdate =
            postcard::from_bytes(&bytes).context("the device's snapshot is not a head update")?;
        UpdateFile::for_head(&head)?.write(&self.output)?;
        println!(
            "head version {} ({} inputs x {} classes) written to {}",
            head.version,
            head.inputs,
            head.classes,
            self.output.display()
        );
        Ok(())
    }
}
