//! `vigil label`: a technician's verdict on a report.

use anyhow::{bail, Result};
use clap::Args;

/// Label a stored report with the class a technician found (by name or index).
#[derive(Debug, Args)]
pub struct LabelArgs {
    #[command(flatten)]
    port: super::PortArgs,
    /// Sequence number of the report.
    #[arg(long)]
    report: u64,
    /// Class name (as in `vigil status`) or index.
    #[arg(long)]
    class: String,
}

impl LabelArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let mut client = self.port.connect()?;
        let classes = client.info()?.class_names;
        let index = match classes.iter().position(|c| *c == self.class) {
            Some(i) => i,
            None => match self.class.parse::<usize>() {
                Ok(i) if i < classes.len() => i,
                _ => bail!("unknown class `{}`; the device's classes are {}", self.class, classes.join(", ")),
            },
        };
        client.label(self.report, index as u8)?;
        println!("report {} labelled {}", self.report, classes[index]);
        Ok(())
    }
}
