//! `vigil label`: a technician's verdict on a report.

use anyhow::{bail, Result};
use clap::Args;
use vigil_core::report::ReportKind;

/// Label a stored report with the class a technician found (by name or index).
#[derive(Debug, Args)]
pub struct LabelArgs {
    #[command(flatten)]
    port: super::PortArgs,
    #[command(flatten)]
    sensor: super::SensorArg,
    /// Sequence number of the report.
    #[arg(long)]
    report: u64,
    /// Class name (as in `vigil status`) or index.
    #[arg(long)]
    class: String,
    /// Label a report that is not a raised alarm (a cleared alarm, a sensor fault).
    #[arg(long)]
    force: bool,
}

impl LabelArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let mut client = self.port.connect()?;
        let classes = client.info()?.class_names;
        let sensor = self.sensor.select(&mut client)?;
        let of = sensor.as_deref().map(|s| format!(" of sensor {s}")).unwrap_or_default();
        let index = match classes.iter().position(|c| *c == self.class) {
            Some(i) => i,
            None => match self.class.parse::<usize>() {
                Ok(i) if i < classes.len() => i,
                _ => bail!("unknown class `{}`; the device's classes are {}", self.class, classes.join(", ")),
            },
        };
        if !self.force {
            let mut found = None;
            client.pull_reports(self.report, 1, |r| {
                if r.sequence == self.report {
                    found = Some(r);
                }
            })?;
            let Some(report) = found else {
                bail!("the device stores no report #{}{of}; list them with `vigil reports pull`", self.report)
            };
            if report.kind != ReportKind::AlarmRaised {
                bail!(
                    "report #{} is not a raised alarm but {}: a verdict on it would teach the head from \
                     a window that did not alarm; pass --force if that is what you mean",
                    self.report,
                    report.describe(|i| classes.get(usize::from(i)).map(String::as_str))
                );
            }
        }
        client.label(self.report, index as u8)?;
        println!("report {}{of} labelled {}", self.report, classes[index]);
        Ok(())
    }
}
