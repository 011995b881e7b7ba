//! `vigil push`: sends a signed head update to a device.

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;
use vigil_client::client::PushOutcome;
use vigil_client::update_file::UpdateFile;

/// Push a signed head update (`.vup`) to a device over its serial port.
///
/// The transfer is chunked and resumable: an interrupted push continues where the
/// device is when run again. Lost or corrupted frames are retried. The device applies the
/// update only if the signature, hashes, model and version check out, and says why not.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    port: super::PortArgs,
    /// The update file (from `vigil export-head`, signed with `vigil sign`).
    update: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

impl PushArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let file = UpdateFile::read(&self.update)?;
        if file.signature.is_none() {
            anyhow::bail!(
                "{} is unsigned, and devices apply only signed updates; sign it first with \
                 `vigil sign --key KEY {}`",
                self.update.display(),
                self.update.display()
            );
        }
        let mut client = self.port.connect()?;
        let bar =
            if self.quiet { ProgressBar::hidden() } else { ProgressBar::new(u64::from(file.header.length)) };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("pushing head v{}", file.header.version));
        let started = Instant::now();
        let outcome = client
            .push(&file.header, &file.payload, file.signature, |done, _| bar.set_position(u64::from(done)));
        bar.finish_and_clear();
        let outcome = outcome?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = client.stats;
        let wire = stats.bytes_sent + stats.bytes_received;
        match outcome {
            PushOutcome::Applied(version) => println!(
                "applied head version {version}: {} payload bytes, {} bytes on the line ({} sent, {} received), \
                 {} retries; {seconds:.3} s wall time, {:.3} s of line time at {} baud",
                file.header.length,
                wire,
                stats.bytes_sent,
                stats.bytes_received,
                stats.retries,
                self.port.line_seconds(wire),
                self.port.baud_rate()
            ),
            PushOutcome::AlreadyActive(version) => println!("the device already runs head version {version}"),
        }
        Ok(())
    }
}
