//! `vigil feed`: stream a recorded signal into a device that has no sensor of its own.

use super::PortArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::time::Instant;
use vigil_runtime::input::{self, InputFormat};

/// Send a recorded or simulated signal to a device without a sensor of its own (an
/// emulated board, a bench rig) as if its sensor had sampled it, then print the device's
/// status. The signal must be one channel at the device's sample rate. Samples continue
/// the device's stream where it stands, so feeding twice appends.
#[derive(Debug, Args)]
pub struct FeedArgs {
    #[command(flatten)]
    port: PortArgs,
    /// Signal file (csv, wav, f32le, forwarder) or `-` for standard input.
    input: String,
    /// Input format [default: from the file extension; csv for standard input].
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    /// Channels in the input (needed for f32le); only one-channel signals can be fed.
    #[arg(long)]
    channels: Option<usize>,
}

/// Frames read from the input per request batch.
const READ_FRAMES: usize = 4096;

impl FeedArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let format = self.format.or_else(|| InputFormat::from_path(&self.input)).unwrap_or(InputFormat::Csv);
        let mut source = input::open(&self.input, format, self.channels)?;
        // The first block, read before the device is touched, says how many channels.
        let mut chunk = Vec::new();
        let mut more = source.read_chunk(&mut chunk, READ_FRAMES)?;
        match source.channels() {
            Some(1) | None => {}
            Some(n) => bail!("{}: {n} channels; the device takes one (pick a channel first)", self.input),
        }
        if !more || chunk.is_empty() {
            bail!("{}: no samples to feed", self.input);
        }
        let mut client = self.port.connect()?;
        let info =
            client.info().with_context(|| format!("no answer from a device on {}", self.port.name()))?;
        let mut position = client.sample_position()?;
        let start = position;
        let bar = super::progress_bar(0, "feeding");
        bar.set_message("samples");
        let began = Instant::now();
        let mut windows = 0;
        while more {
            let before = position;
            windows = client
                .send_samples(position, &chunk, |sent| bar.set_position(before - start + sent as u64))?;
            position += chunk.len() as u64;
            more = source.read_chunk(&mut chunk, READ_FRAMES)?;
        }
        bar.finish_and_clear();
        let sent = position - start;
        let seconds = began.elapsed().as_secs_f64();
        let status = client.status()?;
        println!(
            "fed {sent} samples to {} in {seconds:.1} s ({:.0} samples/s); stream now at sample {position}",
            info.device,
            sent as f64 / seconds.max(1e-9)
        );
        println!(
            "windows scored {windows}, alarm {}, last score {:.2} (threshold {:.2}), next report {}",
            if status.alarm_active { "ACTIVE" } else { "quiet" },
            status.last_score,
            status.threshold,
            status.next_report
        );
        Ok(())
    }
}
